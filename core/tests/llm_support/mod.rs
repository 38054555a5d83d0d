//! Shared helpers of the model tests: fixture paths, reference tensors, comparisons.
//! The fixtures come from `scripts/fixtures/llm.py` (see core/tests/fixtures/llm/README.md).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use voxloop_core::model::StepAudio2;

/// `core/tests/fixtures/llm`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm")
}

/// A tiny checkpoint directory: `"a"` or `"b"`.
pub fn checkpoint(name: &str) -> PathBuf {
    fixture_dir().join(format!("tiny_{name}"))
}

/// Loads a tiny checkpoint in f32 on the CPU.
pub fn load(name: &str) -> StepAudio2 {
    StepAudio2::load(&checkpoint(name), Device::Cpu, Kind::Float).expect("load the tiny checkpoint")
}

/// Every tensor of a safetensors file, by name.
pub fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// The reference outputs of one checkpoint (`ref_<name>.json` and `.safetensors`).
pub struct Reference {
    pub meta: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Reference {
    pub fn load(name: &str) -> Self {
        let dir = fixture_dir();
        let text = std::fs::read_to_string(dir.join(format!("ref_{name}.json"))).unwrap();
        Self {
            meta: serde_json::from_str(&text).unwrap(),
            tensors: read_tensors(&dir.join(format!("ref_{name}.safetensors"))),
        }
    }

    pub fn tensor(&self, key: &str) -> &Tensor {
        self.tensors.get(key).unwrap_or_else(|| panic!("reference tensor {key} is missing"))
    }

    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.meta[key]
            .as_array()
            .unwrap_or_else(|| panic!("reference field {key} is missing"))
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }

    pub fn audio_patch_id(&self) -> u32 {
        self.meta["audio_patch_id"].as_u64().unwrap() as u32
    }
}

/// The input mels: `mel_odd` and the two chunks of the mel fixture's `long_two_chunks`, each
/// checked against the checksums the fixture script recorded.
pub struct Inputs {
    pub mel_odd: Tensor,
    pub two_chunks: Vec<Tensor>,
}

fn checked(entry: &serde_json::Value, tensors: &HashMap<String, Tensor>) -> Tensor {
    let name = entry["tensor"].as_str().unwrap();
    let t = tensors.get(name).unwrap_or_else(|| panic!("input mel {name} is missing"));
    let t = t.to_kind(Kind::Float);
    let sum = t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
    let abs_sum = t.to_kind(Kind::Double).abs().sum(Kind::Double).double_value(&[]);
    let want = entry["sum"].as_f64().unwrap();
    let want_abs = entry["abs_sum"].as_f64().unwrap();
    assert!(
        (sum - want).abs() <= 1e-6 * want_abs.max(1.0) && (abs_sum - want_abs).abs() <= 1e-6 * want_abs,
        "input mel {name} changed since scripts/fixtures/llm.py ran (sum {sum} vs {want}); rerun it"
    );
    t
}

impl Inputs {
    pub fn load() -> Self {
        let dir = fixture_dir();
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap())
                .unwrap();
        let ours = read_tensors(&dir.join("inputs.safetensors"));
        let mel_odd = checked(&index["mel_odd"], &ours);
        let chunks = index["two_chunks"].as_array().unwrap();
        let file = dir.join(chunks[0]["file"].as_str().unwrap());
        let theirs = read_tensors(&file);
        let two_chunks = chunks.iter().map(|c| checked(c, &theirs)).collect();
        Self { mel_odd, two_chunks }
    }
}

/// Largest absolute difference between two tensors of the same shape (as f64).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Index of the largest entry of a 1-D tensor.
pub fn argmax(t: &Tensor) -> u32 {
    t.argmax(0, false).int64_value(&[]) as u32
}
