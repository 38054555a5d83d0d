//! Prompt files that cannot make a voice profile get an `Error::PromptAudio` that names the file
//! and says why. Inputs are written into a temporary directory with hound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use voxloop_voices::prompt::{PromptAudio, MAX_PROMPT_SECONDS, MIN_PROMPT_SECONDS, SILENCE_DBFS};
use voxloop_voices::Error;

/// Writes 16-bit PCM with `channels` interleaved channels; channel c carries a sine of
/// 220·(c+1) Hz at `amplitude` (0 gives digital silence).
fn write_wav(path: &Path, rate: u32, channels: u16, seconds: f64, amplitude: f32) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let frames = (seconds * f64::from(rate)).round() as usize;
    for i in 0..frames {
        for c in 0..channels {
            let f = 220.0 * f32::from(c + 1);
            let v = amplitude * (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin();
            w.write_sample((v * 32767.0).round() as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// The error of loading `path`, checked to be `PromptAudio` naming the file.
fn prompt_error(path: &Path) -> String {
    let err = PromptAudio::load(path).expect_err("the prompt should be rejected");
    let text = err.to_string();
    match err {
        Error::PromptAudio { input, .. } => assert_eq!(input, path.display().to_string()),
        other => panic!("expected Error::PromptAudio, got {other:?}"),
    }
    assert!(text.starts_with(&format!("prompt audio {}: ", path.display())), "{text}");
    println!("{text}");
    text
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn a_good_prompt_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "good.wav");
    write_wav(&path, 22_050, 2, 1.5, 0.3);
    let audio = PromptAudio::load(&path).unwrap();
    assert_eq!((audio.source_rate(), audio.channels()), (22_050, 2));
    assert_eq!(audio.name(), path.display().to_string());
    assert_eq!(audio.samples_16k().len(), 24_000);
    assert_eq!(audio.samples_24k().len(), 36_000);
    // Channel 0 (220 Hz at 0.3) was kept: RMS 0.3/sqrt(2).
    let want = 20.0 * (0.3f64 / 2f64.sqrt()).log10();
    assert!((audio.rms_dbfs() - want).abs() < 0.05, "{}", audio.rms_dbfs());
    // The 24 kHz (prompt mel) path is the channel mean, as upstream's `load(...).mean(0)`.
    let channel = |c: u16| -> Vec<f32> {
        let mut r = hound::WavReader::open(&path).unwrap();
        let all: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        all.iter().skip(usize::from(c)).step_by(2).map(|&v| f32::from(v) / 32768.0).collect()
    };
    let (left, right) = (channel(0), channel(1));
    let mean: Vec<f32> = left.iter().zip(&right).map(|(a, b)| (a + b) / 2.0).collect();
    let resample = |x: &[f32]| voxloop_core::audio::resample(x, 22_050, 24_000).unwrap();
    let max_diff =
        |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(max_diff(audio.samples_24k(), &resample(&mean)) < 1e-6);
    assert!(max_diff(audio.samples_24k(), &resample(&left)) > 0.05, "not channel 0 alone");
    assert!(
        max_diff(
            audio.samples_16k(),
            &voxloop_core::audio::resample(&left, 22_050, 16_000).unwrap()
        ) < 1e-6
    );
}

#[test]
fn silent_wav() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "silent.wav");
    write_wav(&path, 16_000, 1, 2.0, 0.0);
    let text = prompt_error(&path);
    assert!(text.contains("silent: RMS level -inf"), "{text}");
    assert!(text.contains(&format!("below {SILENCE_DBFS} dBFS")), "{text}");

    // Barely audible (about -69 dBFS RMS) is still too quiet.
    let path = tmp(&dir, "whisper.wav");
    write_wav(&path, 16_000, 1, 2.0, 0.0005);
    let text = prompt_error(&path);
    assert!(text.contains("silent: RMS level -69."), "{text}");
}

#[test]
fn too_short_wav() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "short.wav");
    write_wav(&path, 24_000, 1, 0.2, 0.3);
    let text = prompt_error(&path);
    assert!(text.contains("too short: 0.20 s"), "{text}");
    assert!(text.contains(&format!("at least {MIN_PROMPT_SECONDS} s")), "{text}");
}

#[test]
fn too_long_wav() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "long.wav");
    write_wav(&path, 16_000, 1, 40.0, 0.3);
    let text = prompt_error(&path);
    assert!(text.contains("too long: 40.00 s"), "{text}");
    assert!(text.contains(&format!("at most {MAX_PROMPT_SECONDS} s")), "{text}");
}

#[test]
fn text_file_named_wav() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "notes.wav");
    std::fs::write(&path, "These are my meeting notes, not a recording.\n").unwrap();
    let text = prompt_error(&path);
    assert!(text.contains("not audio in a supported format"), "{text}");

    let path = tmp(&dir, "empty.wav");
    std::fs::write(&path, b"").unwrap();
    let text = prompt_error(&path);
    assert!(text.contains("not audio: the file is empty"), "{text}");
}

#[test]
fn truncated_wav() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "cut.wav");
    write_wav(&path, 16_000, 1, 2.0, 0.3);
    let bytes = std::fs::read(&path).unwrap();
    // Keep the header and about half of the 32 000 frames.
    std::fs::write(&path, &bytes[..44 + 32_000]).unwrap();
    let text = prompt_error(&path);
    assert!(text.contains("truncated: the header states 32000 frames"), "{text}");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "nowhere.wav");
    let text = prompt_error(&path);
    assert!(text.contains("cannot read the file"), "{text}");
}

#[test]
fn flac_mp3_and_ogg_are_decoded_before_the_checks() {
    // voxloop-core's 0.5-s stereo tones: each decodes, then fails the duration check.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/audio");
    for file in ["tone.flac", "tone.mp3", "tone.ogg"] {
        let path = fixtures.join(file);
        let text = prompt_error(&path);
        assert!(text.contains("too short: 0.5"), "{file}: {text}");
    }
}
