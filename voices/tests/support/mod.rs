//! Shared helpers for the token2wav tests: the fixtures written by
//! scripts/fixtures/token2wav.py (upstream StepFun code, tiny random weights).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use voxloop_voices::config::HiftConfig;
use voxloop_voices::hift::NsfRandom;
use voxloop_voices::VoiceProfile;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/token2wav")
}

pub fn tensors(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir().join(name)).expect(name).into_iter().collect()
}

pub fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("meta.json")).unwrap()).unwrap()
}

/// The tiny HiFT's constructor arguments (`meta.json` → `hift` or `hift_micro`).
pub fn hift_config(key: &str) -> HiftConfig {
    serde_json::from_value(meta()[key].clone()).unwrap()
}

/// The fixture script's `nsf_table(rows)`: an integer hash of the element index.
pub fn nsf_table(rows: usize) -> Tensor {
    let values: Vec<f32> = (0..rows as u64 * 9)
        .map(|i| {
            let mut h = (i.wrapping_mul(2654435761).wrapping_add(12345)) & 0xFFFF_FFFF;
            h ^= h >> 15;
            h = h.wrapping_mul(2246822519) & 0xFFFF_FFFF;
            h ^= h >> 13;
            (h >> 16) as f32 / 32768.0 - 1.0
        })
        .collect();
    Tensor::from_slice(&values).reshape([1, rows as i64, 9])
}

/// The NSF random numbers upstream was fed.
pub fn nsf_random(inputs: &HashMap<String, Tensor>) -> NsfRandom {
    let rows = meta()["nsf_noise_rows"].as_u64().unwrap() as usize;
    NsfRandom::Fixed { phase: inputs["nsf_phase"].shallow_clone(), noise: nsf_table(rows) }
}

pub fn ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).unwrap()
}

pub fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

/// The fixture's voice: prompt tokens, prompt mel [1, 2·n, 80], speaker embedding [1, 192].
pub fn profile(inputs: &HashMap<String, Tensor>) -> VoiceProfile {
    let mel = floats(&inputs["prompt_mel"]);
    let rows = mel.chunks(80).map(<[f32]>::to_vec).collect();
    VoiceProfile::new("fixture", ints(&inputs["prompt_tokens"]), rows, floats(&inputs["spk_emb"]))
        .unwrap()
}

/// max |a − b| after checking the shapes agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_device(Device::Cpu) - b.to_device(Device::Cpu)).abs().max().double_value(&[])
}

/// The loosest agreement with an upstream waveform that still means "the same sound": the
/// error's RMS at least 60 dB below the reference's, and no sample off by more than 0.5 % of
/// full scale. An exact bound would test the machine instead: the NSF source integrates the
/// phase with a float32 cumulative sum, whose rounding depends on the summation order of the
/// CPU kernels (upstream `SineGen2` in CosyVoice's `hifigan/generator.py` does the same), and
/// the random-weight vocoder amplifies it. Measured: fixtures written on an AMD EPYC, checked on
/// an Intel Xeon, 83 dB and 4.1e-4 (1.3e-3 with `ATEN_CPU_CAPABILITY=default`).
pub fn assert_same_sound(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
    let mut max = 0.0f64;
    let (mut err_energy, mut ref_energy) = (0.0f64, 0.0f64);
    for (&a, &b) in ours.iter().zip(reference) {
        let d = (a as f64 - b as f64).abs();
        max = max.max(d);
        err_energy += d * d;
        ref_energy += (b as f64) * (b as f64);
    }
    let snr_db = 10.0 * (ref_energy / err_energy.max(f64::MIN_POSITIVE)).log10();
    println!("{what}: {} samples, max |Δ| = {max:.3e}, SNR {snr_db:.1} dB", ours.len());
    assert!(ref_energy > 0.0, "{what}: the reference is silent, nothing is compared");
    assert!(snr_db >= 60.0, "{what}: SNR against upstream {snr_db:.1} dB (< 60 dB)");
    assert!(max <= 5e-3, "{what}: a sample differs from upstream by {max}");
}
