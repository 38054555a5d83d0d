//! Decoding FLAC, MP3 and Ogg Vorbis files committed under core/tests/fixtures/audio/ (written
//! by scripts/fixtures/mel.py with libsndfile): stereo files with a different sine on each
//! channel, described in encoded.json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use voxloop_core::audio::{decode_audio, prepare_audio, AudioInput, AudioLimits};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio")
}

struct Expected {
    sample_rate: u32,
    frames: usize,
    freqs: Vec<f64>,
    amplitude: f64,
}

fn expected(file: &str) -> Expected {
    let text = std::fs::read_to_string(fixtures().join("encoded.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &json[file];
    Expected {
        sample_rate: entry["sample_rate"].as_u64().unwrap() as u32,
        frames: entry["frames"].as_u64().unwrap() as usize,
        freqs: entry["channel_freqs_hz"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap())
            .collect(),
        amplitude: entry["amplitude"].as_f64().unwrap(),
    }
}

/// Amplitude of the `freq` component of `x` (quadrature projection, insensitive to delay).
fn tone_amplitude(x: &[f32], rate: u32, freq: f64) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let phase = 2.0 * PI * freq * i as f64 / f64::from(rate);
        s += f64::from(v) * phase.sin();
        c += f64::from(v) * phase.cos();
    }
    2.0 * (s * s + c * c).sqrt() / x.len() as f64
}

#[test]
fn flac_decodes_losslessly_to_channel_zero() {
    let want = expected("tone.flac");
    let got = decode_audio(fixtures().join("tone.flac"), &AudioLimits::default()).unwrap();
    assert_eq!((got.sample_rate, got.channels), (want.sample_rate, 2));
    let reference: Vec<(String, Tensor)> =
        Tensor::read_safetensors(fixtures().join("encoded.safetensors")).unwrap();
    let ch0 = reference.iter().find(|(name, _)| name == "flac_ch0").unwrap();
    let ch0: Vec<f32> = Vec::<f32>::try_from(ch0.1.to_kind(Kind::Float) / 32768.0).unwrap();
    assert_eq!(ch0.len(), want.frames);
    assert_eq!(got.samples, ch0);
}

#[test]
fn lossy_formats_decode_to_channel_zero() {
    for file in ["tone.mp3", "tone.ogg", "tone.flac"] {
        let want = expected(file);
        let got = decode_audio(fixtures().join(file), &AudioLimits::default()).unwrap();
        assert_eq!(got.sample_rate, want.sample_rate, "{file}");
        assert_eq!(got.channels, 2, "{file}");
        // Encoder delay and padding are trimmed (gapless): the length is within one MP3 frame.
        let frames = got.samples.len() as i64;
        assert!((frames - want.frames as i64).abs() <= 1152, "{file}: {frames} frames");
        let body = &got.samples[got.samples.len() / 8..got.samples.len() * 7 / 8];
        let own = tone_amplitude(body, got.sample_rate, want.freqs[0]);
        let other = tone_amplitude(body, got.sample_rate, want.freqs[1]);
        println!("{file}: {frames} frames, channel-0 tone {own:.4}, channel-1 tone {other:.5}");
        assert!((own / want.amplitude - 1.0).abs() < 0.05, "{file}: channel-0 tone at {own}");
        assert!(other < 0.01 * want.amplitude, "{file}: channel 1 leaks in ({other})");
    }
}

#[test]
fn uploads_are_decoded_from_memory_with_a_name() {
    let data = std::fs::read(fixtures().join("tone.ogg")).unwrap();
    let input = AudioInput::Bytes { name: "voice-note.ogg".into(), data };
    let chunks = prepare_audio(input, &AudioLimits::default()).unwrap();
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].patches() > 0);
}

#[test]
fn compressed_audio_longer_than_the_limit_is_rejected() {
    for file in ["tone.mp3", "tone.ogg", "tone.flac"] {
        let limits = AudioLimits { max_seconds: 0.25, ..Default::default() };
        match decode_audio(fixtures().join(file), &limits) {
            Err(voxloop_core::Error::AudioTooLong { .. }) => {}
            other => panic!("{file}: expected AudioTooLong, got {other:?}"),
        }
    }
}
