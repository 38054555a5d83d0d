//! Decoding audio files and uploads into mono `f32` samples.
//!
//! Containers and codecs (through symphonia): WAV with PCM samples (8-bit unsigned, 16/24/32-bit
//! signed int, 32/64-bit float, A-law, µ-law), FLAC, MP3, Ogg Vorbis. The input must *start* with
//! one of their signatures (`RIFF`, `fLaC`, `OggS`, an `ID3` tag, an MPEG frame sync): symphonia's
//! own probe scans up to 1 MB for a marker anywhere, which lets arbitrary bytes that happen to
//! contain an MP3 sync word "decode" into noise.
//!
//! Policies (the model's input is only as good as this step, so each is explicit):
//!
//! - **Channel 0**, not a downmix: StepFun's `load_audio` (Step-Audio2 `utils.py`) keeps
//!   `waveform[0]`, and the model was tuned on what that function returns.
//! - **Integer PCM** maps to `[-1, 1)` by dividing by 2^(bits-1) (8-bit WAV is unsigned and
//!   centred on 128 first), the convention of soundfile/torchaudio.
//! - **Limits before work**: the byte size is checked before reading; the duration a header
//!   states is checked before the first packet is decoded; the duration is checked again after
//!   every packet, so a header that lies (or states nothing) cannot make the decoder run or
//!   allocate past [`AudioLimits::max_seconds`]. Memory is reserved for at most the smaller of
//!   the header's claim, the limit and the input's byte count.
//! - **Truncation**: WAV and FLAC headers state an exact frame count. A stream that ends before
//!   it is an error ([`Error::AudioTruncated`]), not a silently shorter question: a cut upload
//!   usually means a broken request. MP3 and Vorbis give no exact count that can be trusted, so a
//!   cut MP3/Ogg decodes up to the cut.
//! - **Corrupt packets** are reported ([`Error::AudioCorrupt`]), never skipped silently. A panic
//!   inside the third-party decoder on hostile input is caught and reported the same way.

use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{CodecType, DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_NULL};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

use crate::{Error, Result};

/// Lowest and highest sample rates accepted, in Hz. The resampler's filter table grows with the
/// rate; these bounds keep it under ~20 MB while covering every real recording rate.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// See [`MIN_SAMPLE_RATE`].
pub const MAX_SAMPLE_RATE: u32 = 384_000;

/// Bounds on what one audio input may cost, checked before and during decoding.
///
/// A server fed uploads should keep these tight; the defaults fit a long voice message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioLimits {
    /// Longest accepted duration in seconds (default 600).
    pub max_seconds: f64,
    /// Largest accepted input in bytes (default 256 MiB: 10 minutes of 48 kHz stereo f32 WAV
    /// is 230 MB).
    pub max_bytes: u64,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self { max_seconds: 600.0, max_bytes: 256 * 1024 * 1024 }
    }
}

/// Where audio comes from: a file, or bytes already in memory (an HTTP upload).
#[derive(Debug, Clone)]
pub enum AudioInput {
    /// A file on disk; errors name its path and its extension hints the format.
    Path(PathBuf),
    /// Bytes in memory. `name` labels errors (a file name, or "upload"); its extension, if
    /// any, hints the format.
    Bytes { name: String, data: Vec<u8> },
}

impl From<PathBuf> for AudioInput {
    fn from(path: PathBuf) -> Self {
        Self::Path(path)
    }
}

impl From<&Path> for AudioInput {
    fn from(path: &Path) -> Self {
        Self::Path(path.to_path_buf())
    }
}

impl From<Vec<u8>> for AudioInput {
    fn from(data: Vec<u8>) -> Self {
        Self::Bytes { name: "<bytes>".to_string(), data }
    }
}

impl AudioInput {
    /// The label errors use for this input.
    pub fn name(&self) -> String {
        match self {
            Self::Path(path) => path.display().to_string(),
            Self::Bytes { name, .. } => name.clone(),
        }
    }
}

/// Channel 0 (or the channel mean, see [`ChannelMix`]) of a decoded stream, at the stream's
/// own sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Samples of channel 0 in `[-1, 1]` (float sources may exceed it; they are not clipped).
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// How many channels the stream had (only channel 0, or their mean, is kept).
    pub channels: usize,
}

impl DecodedAudio {
    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate)
    }
}

/// Which samples of a multi-channel stream a decode keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelMix {
    /// Channel 0 only (what the speech LLM's front end reads, as upstream's `load_audio`).
    #[default]
    First,
    /// The mean of all channels, frame by frame (torchaudio's `load(...).mean(0)`, what
    /// token2wav's prompt mel reads).
    Mean,
}

/// Decodes a file or in-memory bytes into channel 0 at the native sample rate, enforcing
/// `limits`. See the module docs for the policies.
pub fn decode_audio(input: impl Into<AudioInput>, limits: &AudioLimits) -> Result<DecodedAudio> {
    decode_audio_mixed(input, limits, ChannelMix::First)
}

/// [`decode_audio`], keeping the samples `mix` says (`DecodedAudio::samples` then holds them).
pub fn decode_audio_mixed(
    input: impl Into<AudioInput>,
    limits: &AudioLimits,
    mix: ChannelMix,
) -> Result<DecodedAudio> {
    let input = input.into();
    let name = input.name();
    let hint_ext = match &input {
        AudioInput::Path(path) => extension_of(&path.to_string_lossy()),
        AudioInput::Bytes { name, .. } => extension_of(name),
    };
    let (source, size, head): (Box<dyn MediaSource>, u64, Vec<u8>) = match input {
        AudioInput::Path(path) => {
            let read_err = |source| Error::AudioRead { path: path.clone(), source };
            let mut file = File::open(&path).map_err(read_err)?;
            let size = file.metadata().map_err(read_err)?.len();
            check_size(&name, size, limits)?;
            let mut head = Vec::with_capacity(4);
            (&mut file).take(4).read_to_end(&mut head).map_err(read_err)?;
            file.rewind().map_err(read_err)?;
            (Box::new(file), size, head)
        }
        AudioInput::Bytes { data, .. } => {
            let size = data.len() as u64;
            check_size(&name, size, limits)?;
            let head = data.iter().take(4).copied().collect();
            (Box::new(Cursor::new(data)), size, head)
        }
    };
    check_signature(&name, &head)?;

    let job = || decode_stream(&name, source, hint_ext.as_deref(), size, limits, mix);
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Error::AudioCorrupt {
                input: name,
                decoded_frames: 0,
                reason: format!("the decoder panicked: {what}"),
            })
        }
    }
}

fn extension_of(name: &str) -> Option<String> {
    let ext = Path::new(name).extension()?.to_str()?;
    Some(ext.to_ascii_lowercase())
}

fn check_size(name: &str, size: u64, limits: &AudioLimits) -> Result<()> {
    if size == 0 {
        return Err(Error::AudioEmpty { input: name.to_string() });
    }
    if size > limits.max_bytes {
        return Err(Error::AudioTooLarge {
            input: name.to_string(),
            bytes: size,
            max_bytes: limits.max_bytes,
        });
    }
    Ok(())
}

/// Accepts only inputs that start like one of the supported containers.
fn check_signature(name: &str, head: &[u8]) -> Result<()> {
    let known = head.starts_with(b"RIFF")
        || head.starts_with(b"fLaC")
        || head.starts_with(b"OggS")
        || head.starts_with(b"ID3")
        || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0);
    if known {
        return Ok(());
    }
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    Err(Error::AudioUnsupported {
        input: name.to_string(),
        reason: format!("unrecognised leading bytes [{}]", hex.join(" ")),
    })
}

fn too_long(name: &str, frames: u64, rate: u32, limits: &AudioLimits) -> Option<Error> {
    let seconds = frames as f64 / f64::from(rate);
    // Written so that a NaN limit rejects everything instead of nothing.
    if seconds <= limits.max_seconds {
        return None;
    }
    Some(Error::AudioTooLong { input: name.to_string(), seconds, max_seconds: limits.max_seconds })
}

fn check_rate(name: &str, rate: u32) -> Result<()> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Ok(());
    }
    Err(Error::AudioSampleRate {
        input: name.to_string(),
        rate: u64::from(rate),
        min: MIN_SAMPLE_RATE,
        max: MAX_SAMPLE_RATE,
    })
}

fn decode_stream(
    name: &str,
    source: Box<dyn MediaSource>,
    hint_ext: Option<&str>,
    size: u64,
    limits: &AudioLimits,
    mix: ChannelMix,
) -> Result<DecodedAudio> {
    let unsupported = |reason: String| Error::AudioUnsupported { input: name.to_string(), reason };
    let corrupt = |decoded_frames: u64, err: &SymphoniaError| Error::AudioCorrupt {
        input: name.to_string(),
        decoded_frames,
        reason: err.to_string(),
    };

    let mut hint = Hint::new();
    if let Some(ext) = hint_ext {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(source, Default::default());
    let format_opts = FormatOptions { enable_gapless: true, ..Default::default() };
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &format_opts, &MetadataOptions::default())
        .map_err(|err| match err {
            SymphoniaError::Unsupported(what) => unsupported(what.to_string()),
            other => corrupt(0, &other),
        })?;
    let mut format = probed.format;

    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| unsupported("no audio track".to_string()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|err| unsupported(err.to_string()))?;

    // Limits from the header, before decoding anything.
    let header_frames = params.n_frames;
    let exact_length = is_pcm(params.codec) || params.codec == CODEC_TYPE_FLAC;
    if let Some(rate) = params.sample_rate {
        check_rate(name, rate)?;
        if let Some(err) = header_frames.and_then(|n| too_long(name, n, rate, limits)) {
            return Err(err);
        }
    }
    let mut samples: Vec<f32> = Vec::new();
    if let (Some(rate), Some(n)) = (params.sample_rate, header_frames) {
        let limit_frames = (limits.max_seconds.max(0.0) * f64::from(rate)) as u64;
        let reserve = n.min(limit_frames).min(size);
        samples.reserve(usize::try_from(reserve).unwrap_or(0));
    }

    let mut rate: Option<u32> = params.sample_rate;
    let mut channels = 0usize;
    let mut frames: u64 = 0;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(err))
                if err.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                break
            }
            Err(SymphoniaError::ResetRequired) => {
                return Err(unsupported("the stream changes its parameters midway".to_string()))
            }
            Err(err) => return Err(corrupt(frames, &err)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet).map_err(|err| corrupt(frames, &err))?;
        let spec = *decoded.spec();
        match rate {
            None => {
                check_rate(name, spec.rate)?;
                rate = Some(spec.rate);
            }
            Some(r) if r != spec.rate => {
                return Err(unsupported(format!(
                    "the sample rate changes from {r} Hz to {} Hz midway",
                    spec.rate
                )))
            }
            Some(_) => {}
        }
        channels = spec.channels.count();
        if channels == 0 {
            return Err(unsupported("a stream with zero channels".to_string()));
        }
        push_frames(&decoded, mix, &mut samples);
        frames = samples.len() as u64;
        if let Some(err) = rate.and_then(|r| too_long(name, frames, r, limits)) {
            return Err(err);
        }
    }

    if let (true, Some(expected)) = (exact_length, header_frames) {
        if frames < expected {
            return Err(Error::AudioTruncated {
                input: name.to_string(),
                expected_frames: expected,
                decoded_frames: frames,
            });
        }
    }
    match rate {
        Some(sample_rate) if !samples.is_empty() => {
            Ok(DecodedAudio { samples, sample_rate, channels })
        }
        _ => Err(Error::AudioNoSamples { input: name.to_string() }),
    }
}

/// Whether a codec is one of symphonia's PCM variants, whose length the WAV header states exactly.
fn is_pcm(codec: CodecType) -> bool {
    use symphonia::core::codecs as c;
    const PCM: [CodecType; 38] = [
        c::CODEC_TYPE_PCM_S32LE,
        c::CODEC_TYPE_PCM_S32LE_PLANAR,
        c::CODEC_TYPE_PCM_S32BE,
        c::CODEC_TYPE_PCM_S32BE_PLANAR,
        c::CODEC_TYPE_PCM_S24LE,
        c::CODEC_TYPE_PCM_S24LE_PLANAR,
        c::CODEC_TYPE_PCM_S24BE,
        c::CODEC_TYPE_PCM_S24BE_PLANAR,
        c::CODEC_TYPE_PCM_S16LE,
        c::CODEC_TYPE_PCM_S16LE_PLANAR,
        c::CODEC_TYPE_PCM_S16BE,
        c::CODEC_TYPE_PCM_S16BE_PLANAR,
        c::CODEC_TYPE_PCM_U32LE,
        c::CODEC_TYPE_PCM_U32LE_PLANAR,
        c::CODEC_TYPE_PCM_U32BE,
        c::CODEC_TYPE_PCM_U32BE_PLANAR,
        c::CODEC_TYPE_PCM_U24LE,
        c::CODEC_TYPE_PCM_U24LE_PLANAR,
        c::CODEC_TYPE_PCM_U24BE,
        c::CODEC_TYPE_PCM_U24BE_PLANAR,
        c::CODEC_TYPE_PCM_U16LE,
        c::CODEC_TYPE_PCM_U16LE_PLANAR,
        c::CODEC_TYPE_PCM_U16BE,
        c::CODEC_TYPE_PCM_U16BE_PLANAR,
        c::CODEC_TYPE_PCM_F32LE,
        c::CODEC_TYPE_PCM_F32LE_PLANAR,
        c::CODEC_TYPE_PCM_F32BE,
        c::CODEC_TYPE_PCM_F32BE_PLANAR,
        c::CODEC_TYPE_PCM_F64LE,
        c::CODEC_TYPE_PCM_F64LE_PLANAR,
        c::CODEC_TYPE_PCM_F64BE,
        c::CODEC_TYPE_PCM_F64BE_PLANAR,
        c::CODEC_TYPE_PCM_S8,
        c::CODEC_TYPE_PCM_S8_PLANAR,
        c::CODEC_TYPE_PCM_U8,
        c::CODEC_TYPE_PCM_U8_PLANAR,
        c::CODEC_TYPE_PCM_ALAW,
        c::CODEC_TYPE_PCM_MULAW,
    ];
    PCM.contains(&codec)
}

fn push_frames(decoded: &AudioBufferRef<'_>, mix: ChannelMix, out: &mut Vec<f32>) {
    fn extend<S: Sample + IntoSample<f32>>(
        buf: &AudioBuffer<S>,
        mix: ChannelMix,
        out: &mut Vec<f32>,
    ) {
        let channels = buf.spec().channels.count();
        if mix == ChannelMix::First || channels == 1 {
            out.extend(buf.chan(0).iter().map(|&s| s.into_sample()));
            return;
        }
        // f32 sums in channel order, then one division: torch's mean over two channels.
        let start = out.len();
        out.extend(buf.chan(0).iter().map(|&s| -> f32 { s.into_sample() }));
        for c in 1..channels {
            for (acc, &s) in out[start..].iter_mut().zip(buf.chan(c)) {
                *acc += IntoSample::<f32>::into_sample(s);
            }
        }
        for acc in &mut out[start..] {
            *acc /= channels as f32;
        }
    }
    match decoded {
        AudioBufferRef::U8(b) => extend(b, mix, out),
        AudioBufferRef::U16(b) => extend(b, mix, out),
        AudioBufferRef::U24(b) => extend(b, mix, out),
        AudioBufferRef::U32(b) => extend(b, mix, out),
        AudioBufferRef::S8(b) => extend(b, mix, out),
        AudioBufferRef::S16(b) => extend(b, mix, out),
        AudioBufferRef::S24(b) => extend(b, mix, out),
        AudioBufferRef::S32(b) => extend(b, mix, out),
        AudioBufferRef::F32(b) => extend(b, mix, out),
        AudioBufferRef::F64(b) => extend(b, mix, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_is_checked_against_the_rate() {
        let limits = AudioLimits { max_seconds: 2.0, ..Default::default() };
        assert!(too_long("x", 32_000, 16_000, &limits).is_none());
        assert!(matches!(too_long("x", 32_001, 16_000, &limits), Some(Error::AudioTooLong { .. })));
        let nan = AudioLimits { max_seconds: f64::NAN, ..Default::default() };
        assert!(too_long("x", 1, 16_000, &nan).is_some());
    }

    #[test]
    fn signatures() {
        for ok in [&b"RIFF...."[..], b"fLaC", b"OggS", b"ID3\x04", b"\xff\xfb\x90\x00"] {
            assert!(check_signature("x", ok).is_ok(), "{ok:?}");
        }
        for bad in [&b"\x89PNG"[..], b"{\"a\"", b"\xff\x00", b"RIF"] {
            assert!(matches!(check_signature("x", bad), Err(Error::AudioUnsupported { .. })));
        }
    }

    #[test]
    fn pcm_codecs_are_recognised() {
        use symphonia::core::codecs as c;
        assert!(is_pcm(c::CODEC_TYPE_PCM_S32LE));
        assert!(is_pcm(c::CODEC_TYPE_PCM_F64BE));
        assert!(is_pcm(c::CODEC_TYPE_PCM_MULAW));
        assert!(!is_pcm(c::CODEC_TYPE_FLAC));
        assert!(!is_pcm(c::CODEC_TYPE_MP3));
        assert!(!is_pcm(c::CODEC_TYPE_VORBIS));
    }
}
