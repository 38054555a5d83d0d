//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use voxloop_retrieval::embed::Device;
use voxloop_retrieval::SentenceEncoder;

/// A parity fixture's `reference.json` (`scripts/fixtures/minilm.py`, `xlmr.py`): what
/// sentence-transformers made of each text.
#[derive(Deserialize)]
pub struct Reference {
    pub max_seq_length: usize,
    pub dim: usize,
    pub cases: Vec<Case>,
}

/// One text, its token ids after truncation and its embedding.
#[derive(Deserialize)]
pub struct Case {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

/// Reads `reference.json` from a fixture directory.
pub fn reference(dir: &Path) -> Reference {
    let path = dir.join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The all-MiniLM-L6-v2 directory: `$VOXLOOP_MINILM_DIR`, else where `scripts/minilm.sh`
/// puts it. `None` if absent — unless `VOXLOOP_REQUIRE_MODELS=1` (as `make test` sets), which
/// turns absence into a failure instead of a skip.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VOXLOOP_MINILM_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-minilm-l6-v2")
    });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() != Ok("1"),
        "VOXLOOP_REQUIRE_MODELS=1 but no MiniLM model in {} (run scripts/minilm.sh)",
        dir.display()
    );
    eprintln!("skipped: no MiniLM model in {} (run scripts/minilm.sh)", dir.display());
    None
}

/// The model, loaded once per test binary.
pub fn minilm() -> Option<Arc<SentenceEncoder>> {
    static MODEL: OnceLock<Option<Arc<SentenceEncoder>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            minilm_dir().map(|d| Arc::new(SentenceEncoder::load(&d, Device::Cpu).unwrap()))
        })
        .clone()
}

/// A 16-bit mono WAV of `seconds` of a tone at `hz`, at `rate` Hz, as bytes.
pub fn wav_bytes(hz: f32, seconds: f32, rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
        let n = (rate as f32 * seconds) as usize;
        for i in 0..n {
            let t = i as f32 / rate as f32;
            let v = (2.0 * std::f32::consts::PI * hz * t).sin() * 0.3
                + (2.0 * std::f32::consts::PI * hz * 2.0 * t).sin() * 0.1;
            w.write_sample((v * i16::MAX as f32) as i16).unwrap();
        }
        w.finalize().unwrap();
    }
    cursor.into_inner()
}
