//! Shared loading code for the protocol_* tests: the reference data written by
//! scripts/fixtures/protocol.py and the test tokenizer.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use voxloop_core::tokenizer::StepTokenizer;

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub special_tokens: std::collections::HashMap<String, i64>,
    pub summary_instruction: String,
    pub clips: std::collections::BTreeMap<String, Clip>,
    pub patch_counts: Vec<usize>,
    pub conversations: Vec<Conversation>,
    pub generations: Vec<Generation>,
    pub json_cases: Vec<JsonCase>,
    pub float_cases: Vec<FloatCase>,
}

#[derive(Debug, Deserialize)]
pub struct Clip {
    pub seed: u32,
    pub samples: usize,
    pub sum: i64,
    pub head: Vec<i16>,
}

#[derive(Debug, Deserialize)]
pub struct Conversation {
    pub name: String,
    pub source: String,
    pub mirrors: String,
    #[serde(default)]
    pub builder: Option<String>,
    #[serde(default)]
    pub tools: Option<Value>,
    /// Upstream message dicts: role, content (string, list of items or null), optional eot.
    pub messages: Vec<Value>,
    pub segments: Vec<Segment>,
    pub mels: Vec<Mel>,
}

/// One element of upstream's segment list: a string (with its upstream and untrusted ids) or
/// a token list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Segment {
    Text { text: String, ids: Vec<i64>, untrusted_ids: Vec<i64> },
    Tokens { tokens: Vec<i64> },
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
pub struct Mel {
    pub frames: usize,
    pub patches: usize,
}

#[derive(Debug, Deserialize)]
pub struct Generation {
    pub name: String,
    pub mode: String,
    pub note: String,
    pub ids: Vec<i64>,
    pub calls: Vec<ExpectedCall>,
    pub spoken: String,
    pub content: String,
    pub hf_text: String,
    pub hf_audio: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedCall {
    Ok { name: String, arguments: serde_json::Map<String, Value> },
    Error(String),
}

#[derive(Debug, Deserialize)]
pub struct JsonCase {
    pub name: String,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub text: Option<String>,
    pub expected: String,
}

#[derive(Debug, Deserialize)]
pub struct FloatCase {
    pub bits: String,
    pub repr: String,
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = fixtures().join("protocol/reference.json");
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

pub fn tokenizer() -> &'static StepTokenizer {
    static TOKENIZER: OnceLock<StepTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        StepTokenizer::from_file(fixtures().join("tokenizer/tokenizer.json")).unwrap()
    })
}

/// The clip samples scripts/fixtures/protocol.py writes: a 32-bit LCG, top 16 bits, centred,
/// shifted right by 2.
pub fn clip_samples(seed: u32, n: usize) -> Vec<i16> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let centred = (state >> 16) as i32 - 32768;
            (centred >> 2) as i16
        })
        .collect()
}
