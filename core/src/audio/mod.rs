//! # Audio front end: from a file or an upload to the encoder's log-mel chunks
//!
//! What Step-Audio 2 expects (StepFun's Step-Audio2 `utils.py` and their vLLM fork's
//! `vllm/model_executor/models/mm_step_audio.py`):
//!
//! | step | upstream | here |
//! |---|---|---|
//! | load | `torchaudio.load`, keep channel 0 | [`decode_audio`] (symphonia: WAV, FLAC, MP3, Ogg Vorbis) |
//! | resample | `torchaudio.transforms.Resample(sr, 16000)` | [`resample_to_16k`], same filter taps |
//! | chunk | `for i in range(0, len, 16000 * 25)` | [`log_mel_chunks`], [`CHUNK_SAMPLES`] |
//! | features | `log_mel_spectrogram(chunk, 128, padding=479)` | [`log_mel_spectrogram`] |
//! | placeholders | `compute_token_num(T)` `<audio_patch>` tokens | [`audio_patch_count`] |
//!
//! [`prepare_audio`] runs the whole chain. Each chunk becomes one
//! `<audio_start>` + `patches` × `<audio_patch>` + `<audio_end>` block in the prompt, and its mel
//! is encoded separately. Chunks are 25 s because the encoder's positional table holds 1500
//! frames (30 s at 50 Hz after its stride-2 conv). The last chunk may be very short; a chunk of
//! a few samples gives 0 patches, exactly as upstream (the encoder then yields 0 frames for it).
//!
//! An [`AudioChunk`] is the one form the features take from here on: the session keeps it for
//! a spoken turn and the prompt hands it to the model. Everything here runs on the CPU; the
//! model moves the mel to its device.

mod chunk;
mod decode;
mod mel;
mod resample;
mod wav;

use tch::Tensor;

use crate::Result;

pub use chunk::AudioChunk;
pub use decode::{
    decode_audio, decode_audio_mixed, AudioInput, AudioLimits, ChannelMix, DecodedAudio,
    MAX_SAMPLE_RATE, MIN_SAMPLE_RATE,
};
pub use mel::{
    log_mel_spectrogram, log_mel_spectrogram_padded, mel_filters, slaney_mel_filters, HOP, N_FFT,
    N_FREQS, N_MELS, RIGHT_PAD,
};
pub use resample::{resample, resample_to_16k};
pub use wav::wav_file;

/// The model's input sample rate in Hz.
pub const SAMPLE_RATE: u32 = 16_000;

/// Samples per chunk: 25 s at 16 kHz.
pub const CHUNK_SAMPLES: usize = SAMPLE_RATE as usize * 25;

/// How many `<audio_patch>` tokens (adaptor outputs, 12.5 Hz) a mel of `mel_frames` frames
/// produces: upstream `compute_token_num`.
///
/// Upstream drops 2 frames of padding, then the encoder's stride-2 conv and stride-2 average
/// pool give `(L + 1) // 2 // 2` frames, and the adaptor's conv (kernel 3, stride 2, padding 1)
/// gives `(enc - 1) // 2 + 1`. Python's floor division is kept, so tiny inputs give 0.
/// 25 s → 2502 frames → 313 patches.
pub fn audio_patch_count(mel_frames: usize) -> usize {
    let len = mel_frames as i64 - 2;
    let encoder = (len + 1).div_euclid(2).div_euclid(2);
    let adaptor = (encoder + 2 - 3).div_euclid(2) + 1;
    usize::try_from(adaptor).unwrap_or(0)
}

/// Splits 16 kHz samples into 25-s chunks and computes each chunk's log-mel and patch count.
/// Empty input gives no chunks.
pub fn log_mel_chunks(samples_16k: &[f32]) -> Result<Vec<AudioChunk>> {
    let filters = Tensor::f_from_slice(&mel_filters())?.f_view([N_MELS as i64, N_FREQS as i64])?;
    samples_16k
        .chunks(CHUNK_SAMPLES)
        .map(|chunk| {
            let mel = mel::log_mel_with(chunk, RIGHT_PAD, &filters)?;
            let frames = usize::try_from(mel.size()[1]).unwrap_or(0);
            Ok(AudioChunk::from_tensor(&mel, audio_patch_count(frames))?.with_samples(chunk))
        })
        .collect()
}

/// Decodes a file or upload, resamples channel 0 to 16 kHz and returns its log-mel chunks:
/// everything the prompt builder and the audio encoder need from an audio input.
///
/// ```no_run
/// use voxloop_core::audio::{prepare_audio, AudioLimits};
/// let chunks = prepare_audio(std::path::Path::new("question.wav"), &AudioLimits::default())?;
/// let placeholders: usize = chunks.iter().map(|c| c.patches()).sum();
/// # Ok::<(), voxloop_core::Error>(())
/// ```
pub fn prepare_audio(
    input: impl Into<AudioInput>,
    limits: &AudioLimits,
) -> Result<Vec<AudioChunk>> {
    // decode_audio has validated the sample rate, so resampling cannot fail on it.
    let decoded = decode_audio(input, limits)?;
    let samples = resample_to_16k(&decoded.samples, decoded.sample_rate)?;
    log_mel_chunks(&samples)
}
