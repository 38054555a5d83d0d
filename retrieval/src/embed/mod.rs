//! Text embedders: text → unit-length vectors whose cosine similarity tracks meaning.
//!
//! - [`SentenceEncoder`]: a sentence-transformers BERT or XLM-R checkpoint run on libtorch (tch)
//!   — all-MiniLM-L6-v2 by default (cosine ≥ 0.9999 against sentence-transformers on the
//!   committed fixture), or a multilingual one (paraphrase-multilingual-MiniLM-L12-v2,
//!   multilingual-e5-small; parity checked on a tiny XLM-R fixture). [`MiniLm`] is its old name.
//! - [`HashingEmbedder`]: signed feature hashing of words and CJK characters/bigrams. No model,
//!   no semantics beyond shared words; deterministic and instant. It exists for tests of the
//!   storage and ingestion machinery and as an explicit `--embedder hashing` choice where no
//!   model can be had. It is never picked silently.
//!
//! **Blocking.** `embed` runs the model on the calling thread (tens of milliseconds per batch on
//! a CPU); from async code call it inside `tokio::task::spawn_blocking`.

pub mod checkpoint;
mod encoder;

use std::fmt;

pub use checkpoint::{Checkpoint, Family, ModelConfig, Pooling, Prefixes};
pub use encoder::{MiniLm, SentenceEncoder, MINILM_ID};
/// The libtorch device type [`SentenceEncoder::load`] takes.
pub use tch::Device;

use crate::{Error, Result};

/// Turns texts into L2-normalised vectors of a fixed dimension.
pub trait TextEmbedder: Send + Sync + fmt::Debug {
    /// A stable name of the model and pooling, recorded in the index: an index built with one
    /// embedder refuses to open with another.
    fn id(&self) -> &str;

    /// Whether an index whose metadata records `recorded` holds this embedder's vectors:
    /// normally `recorded == self.id()`; an embedder may also recognise an older name of
    /// itself.
    fn accepts(&self, recorded: &str) -> bool {
        recorded == self.id()
    }

    /// The vector dimension.
    fn dim(&self) -> usize;

    /// One unit-length vector per text (an indexed description), in order. Errors name the
    /// text that failed.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// The vectors of search queries. The same as [`TextEmbedder::embed`] unless the model
    /// treats queries differently (e5's `"query: "` prefix).
    fn embed_query(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts)
    }
}

/// Identifier of [`HashingEmbedder`] in index metadata (with its dimension appended).
pub const HASHING_ID: &str = "hashing-v1";

/// Feature-hashing embedder: each lowercase word (letters/digits run), each CJK character and
/// each pair of adjacent CJK characters adds ±1 to one of `dim` buckets (64-bit FNV-1a hash;
/// the sign is one hash bit); the sum is L2-normalised.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dim: usize,
    id: String,
}

impl HashingEmbedder {
    /// An embedder with `dim` buckets (≥ 8).
    pub fn new(dim: usize) -> Result<Self> {
        if dim < 8 {
            return Err(Error::InvalidVector {
                space: "text".into(),
                message: format!("a hashing embedder needs at least 8 dimensions, got {dim}"),
            });
        }
        Ok(Self { dim, id: format!("{HASHING_ID}-{dim}") })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// The hashed features of `text`: lowercase words, CJK characters and CJK bigrams.
fn features(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_cjk: Option<char> = None;
    for c in text.chars().flat_map(char::to_lowercase) {
        if is_cjk(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
            if let Some(p) = prev_cjk {
                out.push(format!("{p}{c}"));
            }
            prev_cjk = Some(c);
        } else {
            prev_cjk = None;
            if c.is_alphanumeric() {
                word.push(c);
            } else if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

impl TextEmbedder for HashingEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        texts
            .iter()
            .map(|text| {
                let mut v = vec![0f32; self.dim];
                for f in features(text) {
                    let h = fnv1a(f.as_bytes());
                    let bucket = (h % self.dim as u64) as usize;
                    v[bucket] += if h >> 63 == 0 { 1.0 } else { -1.0 };
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm == 0.0 {
                    return Err(Error::Tokenize(format!("{text:?} has no words to embed")));
                }
                v.iter_mut().for_each(|x| *x /= norm);
                Ok(v)
            })
            .collect()
    }
}

/// Cosine similarity of two equal-length vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_split_words_and_cjk() {
        assert_eq!(features("Rain, ON tin-roof!"), vec!["rain", "on", "tin", "roof"]);
        assert_eq!(features("下雨天ok"), vec!["下", "雨", "下雨", "天", "雨天", "ok"]);
    }

    #[test]
    fn hashing_vectors_are_unit_length_deterministic_and_word_sensitive() {
        let e = HashingEmbedder::new(64).unwrap();
        let v = e.embed(&["rain on a tin roof", "rain on a tin roof", "dog barking"]).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], v[1]);
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        let shared = e.embed(&["heavy rain"]).unwrap();
        assert!(cosine(&v[0], &shared[0]) > cosine(&v[2], &shared[0]));
        assert_eq!(e.id(), "hashing-v1-64");
    }

    #[test]
    fn texts_without_words_are_errors() {
        let e = HashingEmbedder::new(16).unwrap();
        let err = e.embed(&["ok", "?!"]).unwrap_err().to_string();
        assert!(err.contains("\"?!\""), "{err}");
        assert!(HashingEmbedder::new(4).is_err());
    }
}
