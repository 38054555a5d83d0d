//! Decoding WAV files written here with hound (every PCM sample format, stereo, other rates),
//! and the typed errors for bad input: empty, not audio, truncated, too long, too large.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use voxloop_core::audio::{
    decode_audio, prepare_audio, AudioInput, AudioLimits, CHUNK_SAMPLES, HOP, RIGHT_PAD,
};
use voxloop_core::Error;

/// A deterministic test signal in [-0.9, 0.9] (distinct per channel).
fn signal(n: usize, channel: usize) -> Vec<f64> {
    (0..n).map(|i| 0.9 * ((i * (channel + 3)) as f64 * 0.0123).sin()).collect()
}

/// Writes an interleaved WAV with `channels` channels of [`signal`], quantised by `quantise`.
fn write_wav<S: hound::Sample + Copy>(
    path: &Path,
    spec: hound::WavSpec,
    frames: usize,
    quantise: impl Fn(f64) -> S,
) {
    let per_channel: Vec<Vec<f64>> =
        (0..spec.channels as usize).map(|c| signal(frames, c)).collect();
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..frames {
        for channel in &per_channel {
            writer.write_sample(quantise(channel[i])).unwrap();
        }
    }
    writer.finalize().unwrap();
}

fn int_spec(bits: u16, channels: u16, rate: u32) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    }
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn integer_pcm_of_every_width_decodes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let frames = 4000;
    for bits in [8u16, 16, 24, 32] {
        let path = dir.path().join(format!("int{bits}.wav"));
        let full_scale = f64::from(1u32 << (bits - 1));
        let q = |x: f64| (x * (full_scale - 1.0)).round();
        // hound takes 8-bit samples as i8 and stores them unsigned, as WAV requires.
        match bits {
            8 => write_wav(&path, int_spec(8, 1, 16_000), frames, |x| q(x) as i8),
            16 => write_wav(&path, int_spec(16, 1, 16_000), frames, |x| q(x) as i16),
            _ => write_wav(&path, int_spec(bits, 1, 16_000), frames, |x| q(x) as i32),
        }
        let got = decode_audio(path.as_path(), &AudioLimits::default()).unwrap();
        assert_eq!((got.sample_rate, got.channels), (16_000, 1), "{bits}-bit");
        let want: Vec<f32> =
            signal(frames, 0).iter().map(|&x| (q(x) / full_scale) as f32).collect();
        let err = max_err(&got.samples, &want);
        assert!(err <= 1e-7, "{bits}-bit: max err {err}");
    }
}

#[test]
fn float_pcm_decodes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f32.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22_050,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    write_wav(&path, spec, 3000, |x| x as f32);
    let got = decode_audio(path.as_path(), &AudioLimits::default()).unwrap();
    assert_eq!(got.sample_rate, 22_050);
    let want: Vec<f32> = signal(3000, 0).iter().map(|&x| x as f32).collect();
    assert_eq!(got.samples, want);
}

/// hound cannot write 64-bit float, so this builds the WAV bytes by hand (format tag 3).
fn f64_wav_bytes(samples: &[f64], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 8) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    b.extend_from_slice(&1u16.to_le_bytes()); // channels
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 8).to_le_bytes()); // byte rate
    b.extend_from_slice(&8u16.to_le_bytes()); // block align
    b.extend_from_slice(&64u16.to_le_bytes()); // bits
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

#[test]
fn f64_pcm_decodes_from_bytes() {
    let samples = signal(2500, 0);
    let input = AudioInput::Bytes { name: "f64.wav".into(), data: f64_wav_bytes(&samples, 16_000) };
    let got = decode_audio(input, &AudioLimits::default()).unwrap();
    let want: Vec<f32> = samples.iter().map(|&x| x as f32).collect();
    assert_eq!(got.samples, want);
}

#[test]
fn stereo_keeps_channel_zero() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [16u16, 24] {
        let path = dir.path().join(format!("stereo{bits}.wav"));
        let full_scale = f64::from(1u32 << (bits - 1));
        let q = |x: f64| (x * (full_scale - 1.0)).round();
        if bits == 16 {
            write_wav(&path, int_spec(16, 2, 16_000), 2000, |x| q(x) as i16);
        } else {
            write_wav(&path, int_spec(24, 2, 16_000), 2000, |x| q(x) as i32);
        }
        let got = decode_audio(path.as_path(), &AudioLimits::default()).unwrap();
        assert_eq!(got.channels, 2);
        let ch0: Vec<f32> = signal(2000, 0).iter().map(|&x| (q(x) / full_scale) as f32).collect();
        assert!(max_err(&got.samples, &ch0) <= 1e-7, "{bits}-bit stereo is not channel 0");
    }
}

#[test]
fn a_44k1_file_is_resampled_before_the_mel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cd.wav");
    let frames = 44_100 * 2 + 17;
    write_wav(&path, int_spec(16, 2, 44_100), frames, |x| (x * 32767.0).round() as i16);
    let chunks = prepare_audio(path.as_path(), &AudioLimits::default()).unwrap();
    // ceil(n * 160 / 441) samples at 16 kHz, then floor((n16 + 479) / 160) mel frames.
    let n16 = (frames * 160).div_ceil(441);
    assert!(n16 < CHUNK_SAMPLES);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].frames(), (n16 + RIGHT_PAD) / HOP);
}

fn assert_err(result: Result<impl std::fmt::Debug, Error>, check: impl Fn(&Error) -> bool) {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            assert!(check(&e), "unexpected error: {e}");
            println!("{e}");
        }
    }
}

#[test]
fn empty_inputs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.wav");
    fs::write(&path, b"").unwrap();
    let limits = AudioLimits::default();
    assert_err(
        decode_audio(path.as_path(), &limits),
        |e| matches!(e, Error::AudioEmpty { input } if input.ends_with("empty.wav")),
    );
    assert_err(decode_audio(Vec::new(), &limits), |e| matches!(e, Error::AudioEmpty { .. }));
}

#[test]
fn missing_files_name_the_path() {
    let path = PathBuf::from("/nonexistent/voxloop/question.wav");
    assert_err(
        decode_audio(path.clone(), &AudioLimits::default()),
        |e| matches!(e, Error::AudioRead { path: p, .. } if *p == path),
    );
}

#[test]
fn bytes_that_are_not_audio_are_rejected() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let limits = AudioLimits::default();
    let mut inputs: Vec<Vec<u8>> = vec![
        b"{\"question\": \"what's the weather\"}".to_vec(),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        b"RIFF\x10\0\0\0AVI LIST".to_vec(),
    ];
    for _ in 0..20 {
        let n = rng.gen_range(1..5000);
        let mut bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        bytes[0] = rng.gen_range(0..0xFF); // not an MPEG sync byte
        inputs.push(bytes);
    }
    for data in inputs {
        let input = AudioInput::Bytes { name: "upload".into(), data };
        assert_err(
            decode_audio(input, &limits),
            |e| matches!(e, Error::AudioUnsupported { input, .. } if input == "upload"),
        );
    }
}

/// A valid 16-bit mono WAV of `frames` frames, as bytes.
fn wav_bytes(frames: usize, rate: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.wav");
    write_wav(&path, int_spec(16, 1, rate), frames, |x| (x * 32767.0).round() as i16);
    fs::read(path).unwrap()
}

#[test]
fn a_truncated_wav_is_an_error() {
    let full = wav_bytes(16_000, 16_000);
    for keep in [full.len() / 2, full.len() - 1, 200] {
        let input = AudioInput::Bytes { name: "cut.wav".into(), data: full[..keep].to_vec() };
        assert_err(decode_audio(input, &AudioLimits::default()), |e| {
            matches!(e, Error::AudioTruncated { expected_frames: 16_000, decoded_frames, .. }
                if *decoded_frames < 16_000)
        });
    }
    // Cut inside the header: nothing to decode at all.
    let input = AudioInput::Bytes { name: "cut.wav".into(), data: full[..30].to_vec() };
    assert_err(decode_audio(input, &AudioLimits::default()), |e| {
        matches!(e, Error::AudioCorrupt { .. } | Error::AudioUnsupported { .. })
    });
}

/// Makes a WAV's header claim `len` bytes of sample data (the `data` chunk length, and the RIFF
/// length to match), whatever the file really holds.
fn set_data_len(bytes: &mut [u8], len: u32) {
    let at = bytes.windows(4).position(|w| w == b"data").unwrap() + 4;
    bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
    let riff_len = (at as u32 + 4 - 8).saturating_add(len);
    bytes[4..8].copy_from_slice(&riff_len.to_le_bytes());
}

#[test]
fn audio_longer_than_the_limit_is_rejected() {
    let limits = AudioLimits { max_seconds: 1.5, ..Default::default() };
    let two_seconds = wav_bytes(32_000, 16_000);
    assert_err(decode_audio(two_seconds.clone(), &limits), |e| {
        matches!(e, Error::AudioTooLong { seconds, max_seconds, .. }
            if (*seconds - 2.0).abs() < 1e-9 && *max_seconds == 1.5)
    });

    // A header claiming ~18 hours (2 GB of data) in a 64 KB file: rejected from the header,
    // before anything is decoded or allocated.
    let mut lying = two_seconds.clone();
    set_data_len(&mut lying, 0x7FFF_FFF0);
    assert_err(
        decode_audio(lying, &AudioLimits::default()),
        |e| matches!(e, Error::AudioTooLong { seconds, .. } if *seconds > 60_000.0),
    );

    // A header claiming 3 s (under a 10-s limit) over 2 s of data: truncated.
    let mut short = two_seconds;
    set_data_len(&mut short, 3 * 32_000);
    let limits = AudioLimits { max_seconds: 10.0, ..Default::default() };
    assert_err(decode_audio(short, &limits), |e| {
        matches!(e, Error::AudioTruncated { expected_frames: 48_000, decoded_frames: 32_000, .. })
    });
}

#[test]
fn inputs_over_the_byte_limit_are_rejected_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.wav");
    fs::write(&path, wav_bytes(8_000, 16_000)).unwrap();
    let limits = AudioLimits { max_bytes: 1000, ..Default::default() };
    assert_err(
        decode_audio(path.as_path(), &limits),
        |e| matches!(e, Error::AudioTooLarge { max_bytes: 1000, bytes, .. } if *bytes > 1000),
    );
}

#[test]
fn header_only_and_zero_rate_wavs_are_rejected() {
    let mut empty_data = wav_bytes(0, 16_000);
    set_data_len(&mut empty_data, 0);
    assert_err(decode_audio(empty_data, &AudioLimits::default()), |e| {
        matches!(e, Error::AudioNoSamples { .. })
    });

    let mut zero_rate = wav_bytes(100, 16_000);
    zero_rate[24..28].copy_from_slice(&0u32.to_le_bytes()); // fmt sample rate
                                                            // symphonia's WAV reader panics on a 0 Hz header; that must come back as an error.
    assert_err(decode_audio(zero_rate, &AudioLimits::default()), |e| match e {
        Error::AudioCorrupt { reason, .. } => reason.contains("panicked"),
        Error::AudioSampleRate { rate: 0, .. } | Error::AudioUnsupported { .. } => true,
        _ => false,
    });
}

#[test]
fn garbage_behind_valid_signatures_never_panics() {
    // Hostile uploads: a real signature followed by random bytes, and real files cut anywhere.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let limits = AudioLimits::default();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for prefix in [&b"RIFF"[..], b"fLaC", b"OggS", b"ID3", b"\xff\xfb\x90\x64"] {
        for _ in 0..25 {
            let n = rng.gen_range(0..3000);
            let mut bytes = prefix.to_vec();
            bytes.extend((0..n).map(|_| rng.gen::<u8>()));
            inputs.push(bytes);
        }
    }
    for name in ["tone.flac", "tone.mp3", "tone.ogg", "resample_8000.wav"] {
        let full = fs::read(fixtures.join(name)).unwrap();
        for _ in 0..12 {
            inputs.push(full[..rng.gen_range(1..full.len())].to_vec());
        }
        let mut flipped = full.clone();
        for _ in 0..40 {
            let at = rng.gen_range(0..flipped.len());
            flipped[at] ^= 1 << rng.gen_range(0..8);
        }
        inputs.push(flipped);
    }
    let (mut ok, mut err) = (0, 0);
    for data in inputs {
        match decode_audio(data, &limits) {
            Ok(audio) => {
                assert!(audio.samples.iter().all(|s| s.is_finite()));
                ok += 1;
            }
            Err(_) => err += 1,
        }
    }
    println!("{ok} decoded, {err} rejected");
    assert!(err > 0);
}
