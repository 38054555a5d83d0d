//! Log-mel parity with the upstream recipe (librosa filterbank + torch.stft), chunking and patch
//! counts. Reference data: core/tests/fixtures/mel/, written by scripts/fixtures/mel.py.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use voxloop_core::audio::{
    audio_patch_count, log_mel_chunks, mel_filters, prepare_audio, AudioChunk, AudioLimits,
    N_FREQS, N_MELS,
};

/// Largest accepted |rust - python| on a log-mel value (values span about [-1.5, 2.5]).
const MEL_TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mel")
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("reference.safetensors"))
        .expect("read reference.safetensors")
        .into_iter()
        .collect()
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("tensor to Vec<f32>")
}

fn to_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).expect("tensor to Vec<i64>")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The fixture's 16-bit samples, scaled like every PCM decoder does (÷ 32768).
fn read_wav(name: &str) -> Vec<f32> {
    let mut reader = hound::WavReader::open(fixtures().join(format!("{name}.wav"))).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    reader.samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect()
}

/// Compares chunks with the reference `<name>.chunk<i>` tensors and `<name>.patches`.
fn check_chunks(name: &str, chunks: &[AudioChunk], reference: &HashMap<String, Tensor>) {
    let patches = to_i64(&reference[&format!("{name}.patches")]);
    assert_eq!(chunks.len(), patches.len(), "{name}: chunk count");
    for (i, (chunk, &want_patches)) in chunks.iter().zip(&patches).enumerate() {
        let want = &reference[&format!("{name}.chunk{i}")];
        let mel = chunk.to_tensor().unwrap();
        assert_eq!(mel.size(), want.size(), "{name} chunk {i}: shape");
        assert_eq!(mel.kind(), Kind::Float);
        assert_eq!(chunk.frames() as i64, want.size()[1]);
        assert_eq!(chunk.patches() as i64, want_patches, "{name} chunk {i}: patches");
        let err = max_abs_diff(chunk.mel(), &to_f32(want));
        println!("{name} chunk {i}: {:?}, max abs err {err:e}", want.size());
        assert!(err <= MEL_TOLERANCE, "{name} chunk {i}: max abs err {err} > {MEL_TOLERANCE}");
    }
}

#[test]
fn parity_mel_filterbank_matches_librosa() {
    let reference = reference();
    let want = &reference["mel_filters"];
    assert_eq!(want.size(), [N_MELS as i64, N_FREQS as i64]);
    let want = to_f32(want);
    let got = mel_filters();
    let err = max_abs_diff(&got, &want);
    let peak = want.iter().copied().fold(0.0, f32::max);
    println!("mel filterbank: max abs err {err:e} (peak weight {peak:e})");
    assert!(err <= 1e-6 * peak, "filterbank max abs err {err}");
}

#[test]
fn parity_mel_chirp_noise() {
    check_chunks("chirp_noise", &log_mel_chunks(&read_wav("chirp_noise")).unwrap(), &reference());
}

#[test]
fn parity_mel_odd_short() {
    check_chunks("odd_short", &log_mel_chunks(&read_wav("odd_short")).unwrap(), &reference());
}

#[test]
fn parity_mel_long_two_chunks() {
    let reference = reference();
    let chunks = log_mel_chunks(&read_wav("long_two_chunks")).unwrap();
    check_chunks("long_two_chunks", &chunks, &reference);
}

#[test]
fn parity_mel_prepare_audio_end_to_end() {
    // Decoding (symphonia), the 16 kHz identity resample and chunking, on the fixture files.
    let reference = reference();
    for name in ["chirp_noise", "odd_short", "long_two_chunks"] {
        let path = fixtures().join(format!("{name}.wav"));
        let chunks = prepare_audio(path.as_path(), &AudioLimits::default()).unwrap();
        check_chunks(name, &chunks, &reference);
    }
}

#[test]
fn parity_mel_patch_count_table() {
    let table = to_i64(&reference()["patch_table"]);
    assert!(table.len() > 2502);
    for (frames, &want) in table.iter().enumerate() {
        assert_eq!(audio_patch_count(frames) as i64, want, "frames = {frames}");
    }
}
