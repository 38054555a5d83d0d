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
