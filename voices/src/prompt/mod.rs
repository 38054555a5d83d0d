//! # Prompt audio: the recording a voice profile is computed from
//!
//! A voice profile (see [`crate::profile`]) needs three things computed from a prompt recording;
//! upstream computes them in `Token2wav._prepare_prompt` (StepFun's `stepaudio2/token2wav.py`,
//! PyPI `token2wav-cosyvoice-stepaudio2`):
//!
//! | what | upstream | here |
//! |---|---|---|
//! | 16 kHz samples | `s3tokenizer.load_audio(wav, sr=16000)`: `torchaudio.load`, `Resample(sr, 16000)`, channel 0 | [`PromptAudio::samples_16k`] |
//! | 24 kHz samples | `torchaudio.load`, mean over channels, `Resample(sr, 24000)` | [`PromptAudio::samples_24k`] |
//! | prompt mel | flashcosyvoice `mel_spectrogram` of the 24 kHz samples | [`prompt_mel`] |
//! | CAM++ input | `kaldi.fbank(num_mel_bins=80, dither=0, sample_frequency=16000)` minus its time mean | [`speaker_fbank`] |
//! | S3 tokens | Whisper-style log-mel → `speech_tokenizer_v2_25hz.onnx` | not here (ONNX) |
//! | x-vector | `campplus.onnx` on the CAM++ input | not here (ONNX) |
//!
//! Resampling uses voxloop-core's resampler, which reproduces `torchaudio.transforms.Resample`
//! at its defaults for any pair of rates ([`voxloop_core::audio::resample`]).
//!
//! ## Checks
//!
//! [`PromptAudio::load`] decodes whatever voxloop-core's decoder reads (WAV, FLAC, MP3, Ogg
//! Vorbis) and [`PromptAudio::from_samples`] takes samples already in memory. Either rejects, with
//! an [`Error::PromptAudio`] naming the input:
//!
//! - input that is not audio, cannot be decoded, or is truncated (the decoder's error, reworded);
//! - samples that are NaN or infinite;
//! - **too short**: under [`MIN_PROMPT_SECONDS`] (1 s). The prompt must yield speech tokens and a
//!   speaker embedding worth the name: 1 s is 25 S3 tokens, 50 mel frames and 98 fbank frames.
//!   (The hard floors upstream has are far lower: `kaldi.fbank` asserts at least one 25-ms
//!   frame, the mel's reflect padding needs more than 720 samples at 24 kHz; a prompt that short
//!   gives token2wav nothing to imitate.)
//! - **too long**: over [`MAX_PROMPT_SECONDS`] (30 s). The S3 tokenizer is a Whisper-style encoder
//!   with 1500 positions after its stride-2 conv, i.e. 30 s of 100-Hz mel frames, and CosyVoice's
//!   front end (`cosyvoice/cli/frontend.py`, `_extract_speech_token`) asserts
//!   `speech.shape[1] / 16000 <= 30` ("do not support extract speech token for audio longer than
//!   30s"). The 30-s limit is handed to the decoder, so a longer file is refused from its header
//!   (or, without a length in the header, as soon as 30 s have been decoded).
//! - **silent**: an RMS level below [`SILENCE_DBFS`] (−60 dBFS, relative to a full-scale
//!   square wave: RMS 1.0 = 0 dBFS), measured on the decoded samples. Speech recordings sit
//!   around −20 to −35 dBFS; −60 dBFS is the noise floor of a quiet room through a decent
//!   microphone, and digital silence gives CAM++ a constant fbank (`log(f32::EPSILON)`
//!   everywhere, all zeros after mean normalisation).
//!
//! ## Channels
//!
//! As upstream: the 16 kHz path (S3 tokens, CAM++) reads channel 0, the 24 kHz mel path the mean
//! of the channels (a multi-channel file is decoded a second time with
//! [`ChannelMix::Mean`](voxloop_core::audio::ChannelMix)). The checks run on channel 0.
//! [`PromptAudio::channels`] reports how many channels the file had.

mod fbank;
mod mel;

use std::path::Path;

use voxloop_core::audio::{
    decode_audio, decode_audio_mixed, resample, AudioInput, AudioLimits, ChannelMix,
    MAX_SAMPLE_RATE, MIN_SAMPLE_RATE,
};

use crate::{Error, Result};

pub use fbank::{kaldi_fbank, kaldi_mel_banks, speaker_fbank, FBANK_BINS};
pub use mel::{librosa_mel_filters, prompt_mel, prompt_mel_tensor, MEL_HOP, MEL_N_FFT};

/// Shortest accepted prompt, in seconds (see the module docs).
pub const MIN_PROMPT_SECONDS: f64 = 1.0;
/// Longest accepted prompt, in seconds: the S3 tokenizer's 30-s window (see the module docs).
pub const MAX_PROMPT_SECONDS: f64 = 30.0;
/// A prompt whose RMS level is below this many dBFS is rejected as silent.
pub const SILENCE_DBFS: f64 = -60.0;
/// Sample rate of the prompt mel (and of token2wav's output).
pub const MEL_SAMPLE_RATE: u32 = 24_000;
/// Sample rate of the S3 tokenizer's and CAM++'s input.
pub const SPEAKER_SAMPLE_RATE: u32 = 16_000;

/// A checked prompt recording, resampled to the two rates the profile features need.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptAudio {
    name: String,
    source_rate: u32,
    channels: usize,
    seconds: f64,
    rms_dbfs: f64,
    samples_16k: Vec<f32>,
    samples_24k: Vec<f32>,
}

impl PromptAudio {
    /// Decodes a prompt file (WAV, FLAC, MP3 or Ogg Vorbis), checks it (module docs) and
    /// resamples channel 0 to 16 kHz and the channel mean to 24 kHz. Errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::decode(AudioInput::Path(path.to_path_buf()))
    }

    /// [`load`](Self::load) of a file's bytes in memory (an upload); `name` labels errors.
    pub fn from_bytes(data: Vec<u8>, name: impl Into<String>) -> Result<Self> {
        Self::decode(AudioInput::Bytes { name: name.into(), data })
    }

    fn decode(input: AudioInput) -> Result<Self> {
        let name = input.name();
        let limits = AudioLimits { max_seconds: MAX_PROMPT_SECONDS, ..AudioLimits::default() };
        let decoded = decode_audio(input.clone(), &limits).map_err(|e| decode_error(&name, e))?;
        let mean = if decoded.channels > 1 {
            let mixed = decode_audio_mixed(input, &limits, ChannelMix::Mean)
                .map_err(|e| decode_error(&name, e))?;
            Some(mixed.samples)
        } else {
            None
        };
        let rate = decoded.sample_rate;
        Self::build(&decoded.samples, mean.as_deref(), rate, decoded.channels, name)
    }

    /// Checks mono samples at `rate` Hz (full scale ±1.0) and resamples them to 16 and 24 kHz.
    /// `name` labels errors.
    pub fn from_samples(samples: &[f32], rate: u32, name: impl Into<String>) -> Result<Self> {
        Self::build(samples, None, rate, 1, name.into())
    }

    /// `samples`: channel 0; `mean`: the channel mean of a multi-channel source.
    fn build(
        samples: &[f32],
        mean: Option<&[f32]>,
        rate: u32,
        channels: usize,
        name: String,
    ) -> Result<Self> {
        let fail = |message: String| Error::PromptAudio { input: name.clone(), message };
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(fail(format!(
                "unsupported sample rate {rate} Hz (accepted: {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz)"
            )));
        }
        if samples.is_empty() {
            return Err(fail("no samples".into()));
        }
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            return Err(fail(format!("sample {i} is NaN or infinite")));
        }
        let seconds = samples.len() as f64 / f64::from(rate);
        if seconds < MIN_PROMPT_SECONDS {
            return Err(fail(too_short_message(seconds)));
        }
        if seconds > MAX_PROMPT_SECONDS {
            return Err(fail(too_long_message(seconds)));
        }
        let rms_dbfs = rms_dbfs(samples);
        // A NaN level (impossible after the finiteness check) would count as silent.
        if rms_dbfs < SILENCE_DBFS || rms_dbfs.is_nan() {
            return Err(fail(format!(
                "silent: RMS level {} is below {SILENCE_DBFS} dBFS",
                if rms_dbfs.is_finite() {
                    format!("{rms_dbfs:.1} dBFS")
                } else {
                    "-inf dBFS".into()
                }
            )));
        }
        let samples_16k = resample(samples, rate, SPEAKER_SAMPLE_RATE)?;
        let samples_24k = resample(mean.unwrap_or(samples), rate, MEL_SAMPLE_RATE)?;
        Ok(Self { name, source_rate: rate, channels, seconds, rms_dbfs, samples_16k, samples_24k })
    }

    /// The label errors use: the file's path, or the name given to [`Self::from_samples`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sample rate of the file (or of the samples given), in Hz.
    pub fn source_rate(&self) -> u32 {
        self.source_rate
    }

    /// Channels the file had (only channel 0 is used; see the module docs).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Duration in seconds at the source rate.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// RMS level of the source samples in dBFS.
    pub fn rms_dbfs(&self) -> f64 {
        self.rms_dbfs
    }

    /// The prompt at 16 kHz: the S3 tokenizer's and CAM++'s input.
    pub fn samples_16k(&self) -> &[f32] {
        &self.samples_16k
    }

    /// The prompt at 24 kHz: the prompt mel's input.
    pub fn samples_24k(&self) -> &[f32] {
        &self.samples_24k
    }
}

/// RMS level in dBFS (`-inf` for digital silence), accumulated in f64.
fn rms_dbfs(samples: &[f32]) -> f64 {
    let energy: f64 = samples.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let rms = (energy / samples.len().max(1) as f64).sqrt();
    20.0 * rms.log10()
}

fn too_short_message(seconds: f64) -> String {
    format!(
        "too short: {seconds:.2} s, a voice prompt needs at least {MIN_PROMPT_SECONDS} s \
         (25 speech tokens per second)"
    )
}

fn too_long_message(seconds: f64) -> String {
    format!(
        "too long: {seconds:.2} s, the speech tokenizer takes at most {MAX_PROMPT_SECONDS} s; \
         cut the prompt to one or a few sentences"
    )
}

/// Rewords a decoder error for a prompt file, keeping the decoder's reason.
fn decode_error(name: &str, err: voxloop_core::Error) -> Error {
    use voxloop_core::Error as Core;
    let message = match err {
        Core::AudioRead { source, .. } => format!("cannot read the file: {source}"),
        Core::AudioEmpty { .. } => "not audio: the file is empty".to_string(),
        Core::AudioUnsupported { reason, .. } => {
            format!("not audio in a supported format (WAV, FLAC, MP3, Ogg Vorbis): {reason}")
        }
        Core::AudioCorrupt { decoded_frames, reason, .. } => {
            format!("undecodable: corrupt stream after {decoded_frames} frames: {reason}")
        }
        Core::AudioTruncated { expected_frames, decoded_frames, .. } => format!(
            "truncated: the header states {expected_frames} frames but the file holds \
             {decoded_frames}"
        ),
        Core::AudioNoSamples { .. } => "no samples after decoding".to_string(),
        // Without a length in the header the decoder stops at the limit, so this may be a
        // lower bound of the real duration.
        Core::AudioTooLong { seconds, .. } => too_long_message(seconds),
        Core::AudioTooLarge { bytes, max_bytes, .. } => {
            format!("{bytes} bytes exceed the limit of {max_bytes} bytes")
        }
        Core::AudioSampleRate { rate, min, max, .. } => {
            format!("unsupported sample rate {rate} Hz (accepted: {min}..={max} Hz)")
        }
        other => other.to_string(),
    };
    Error::PromptAudio { input: name.to_string(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, seconds: f64, amplitude: f32) -> Vec<f32> {
        let n = (seconds * f64::from(rate)) as usize;
        (0..n)
            .map(|i| {
                amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 200.0 / rate as f32).sin()
            })
            .collect()
    }

    #[test]
    fn resamples_to_both_rates() {
        let p = PromptAudio::from_samples(&tone(44_100, 1.5, 0.3), 44_100, "t").unwrap();
        assert_eq!(p.samples_16k().len(), 24_000);
        assert_eq!(p.samples_24k().len(), 36_000);
        assert_eq!((p.source_rate(), p.channels(), p.name()), (44_100, 1, "t"));
        assert!((p.seconds() - 1.5).abs() < 1e-9);
        // A sine of amplitude a has an RMS of a/sqrt(2).
        let want = 20.0 * (0.3f64 / 2f64.sqrt()).log10();
        assert!((p.rms_dbfs() - want).abs() < 0.01, "{}", p.rms_dbfs());
    }

    #[test]
    fn limits_are_inclusive_and_named() {
        assert!(PromptAudio::from_samples(&tone(16_000, 1.0, 0.1), 16_000, "a").is_ok());
        assert!(PromptAudio::from_samples(&tone(16_000, 30.0, 0.1), 16_000, "a").is_ok());
        let mut short = tone(16_000, 1.0, 0.1);
        short.pop();
        let e = PromptAudio::from_samples(&short, 16_000, "short one").unwrap_err();
        assert!(e.to_string().starts_with("prompt audio short one: too short: 1.00 s"), "{e}");
        let mut long = tone(16_000, 30.0, 0.1);
        long.push(0.0);
        let e = PromptAudio::from_samples(&long, 16_000, "x").unwrap_err();
        assert!(e.to_string().contains("too long: 30.00 s"), "{e}");
    }

    #[test]
    fn silence_threshold() {
        // -57 dBFS RMS passes, -63 dBFS does not, digital silence does not.
        let amp = |db: f64| (10f64.powf(db / 20.0) * 2f64.sqrt()) as f32;
        assert!(PromptAudio::from_samples(&tone(24_000, 1.2, amp(-57.0)), 24_000, "q").is_ok());
        let e = PromptAudio::from_samples(&tone(24_000, 1.2, amp(-63.0)), 24_000, "q").unwrap_err();
        assert!(e.to_string().contains("silent: RMS level -63.0 dBFS"), "{e}");
        let e = PromptAudio::from_samples(&[0.0; 30_000], 24_000, "z").unwrap_err();
        assert!(e.to_string().contains("silent: RMS level -inf"), "{e}");
    }

    #[test]
    fn bad_samples() {
        let mut x = tone(16_000, 1.5, 0.1);
        x[7] = f32::NAN;
        let e = PromptAudio::from_samples(&x, 16_000, "n").unwrap_err();
        assert!(e.to_string().contains("sample 7 is NaN"), "{e}");
        let e = PromptAudio::from_samples(&[], 16_000, "e").unwrap_err();
        assert!(e.to_string().contains("no samples"), "{e}");
        let e = PromptAudio::from_samples(&[0.1; 100], 10, "r").unwrap_err();
        assert!(e.to_string().contains("unsupported sample rate 10 Hz"), "{e}");
    }
}
