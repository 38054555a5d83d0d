//! `SentenceEncoder` on an XLM-RoBERTa checkpoint against sentence-transformers: a tiny
//! random-weight model with a Unigram tokenizer (`fixtures/xlmr/`, written with its reference
//! token ids and embeddings by `scripts/fixtures/xlmr.py`). Small enough to commit, so this
//! runs everywhere; what it pins is the XLM-R path (position ids after the padding id, one
//! token type, the sentence-transformers 6 layout), which all-MiniLM-L6-v2 does not exercise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use voxloop_retrieval::embed::{Device, Family, Pooling, Prefixes, SentenceEncoder};
use voxloop_retrieval::TextEmbedder;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xlmr"))
}

fn reference() -> common::Reference {
    common::reference(&dir())
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_checkpoint_reads_as_xlm_roberta_with_mean_pooling() {
    let model = SentenceEncoder::load(&dir(), Device::Cpu).unwrap();
    let ck = model.checkpoint();
    assert_eq!(ck.family, Family::XlmRoberta);
    assert_eq!(ck.pooling, Pooling::Mean);
    assert_eq!(ck.pad_id, 1);
    assert_eq!(model.max_len(), reference().max_seq_length);
    // The id names the family, the directory and the width.
    assert!(model.id().starts_with("xlm-roberta xlmr 32d mean-pool l2 cfg:"), "{}", model.id());
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let model = SentenceEncoder::load(&dir(), Device::Cpu).unwrap();
    let r = reference();
    assert!(r.cases.iter().any(|c| c.input_ids.len() == r.max_seq_length), "no truncated case");
    for case in &r.cases {
        assert_eq!(model.token_ids(&case.text).unwrap(), case.input_ids, "{:?}", case.text);
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let model = SentenceEncoder::load(&dir(), Device::Cpu).unwrap();
    let r = reference();
    assert_eq!(model.dim(), r.dim);
    // All cases in one padded batch, and each alone: padding must not change a vector.
    let texts: Vec<&str> = r.cases.iter().map(|c| c.text.as_str()).collect();
    let batched = model.embed(&texts).unwrap();
    let mut worst = 0.0f32;
    for (case, got) in r.cases.iter().zip(&batched) {
        let single = model.embed(&[case.text.as_str()]).unwrap().remove(0);
        for v in [got, &single] {
            let err = max_abs(v, &case.embedding);
            worst = worst.max(err);
            assert!(err <= 1e-4, "{:?}: max abs diff {err}", case.text);
        }
    }
    eprintln!("{} cases: max abs diff {worst:.2e}", r.cases.len());
}

/// A copy of the fixture with `edit` applied to its `config.json` and `modules.json` text.
fn edited_copy(tmp: &Path, edit: impl Fn(&str, &str) -> String) -> PathBuf {
    let out = tmp.join("xlmr-edited");
    copy_dir(&dir(), &out);
    for name in ["config.json", "modules.json"] {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(name, &text)).unwrap();
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn missing_files_and_unsupported_checkpoints_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    copy_dir(&dir(), &copy);
    std::fs::remove_file(copy.join("tokenizer.json")).unwrap();
    let err = SentenceEncoder::load(&copy, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("missing"), "{err}");

    let dense = edited_copy(tmp.path(), |name, text| {
        if name == "modules.json" {
            text.replace("normalize.Normalize", "dense.Dense")
        } else {
            text.to_string()
        }
    });
    let err = SentenceEncoder::load(&dense, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("modules.json") && err.contains("Dense"), "{err}");

    let t5 = tmp.path().join("t5");
    copy_dir(&dir(), &t5);
    let config = std::fs::read_to_string(t5.join("config.json")).unwrap();
    std::fs::write(t5.join("config.json"), config.replace("\"xlm-roberta\"", "\"t5\"")).unwrap();
    let err = SentenceEncoder::load(&t5, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("\"t5\""), "{err}");
}

#[test]
fn prefixes_change_vectors_and_the_id() {
    let plain = SentenceEncoder::load(&dir(), Device::Cpu).unwrap();
    let e5 = SentenceEncoder::load_with_prefixes(
        &dir(),
        Device::Cpu,
        Prefixes { query: "query: ".into(), document: "passage: ".into() },
    )
    .unwrap();
    assert_ne!(plain.id(), e5.id());
    assert!(!e5.accepts(plain.id()));
    let text = "rain on a tin roof";
    let q = e5.embed_query(&[text]).unwrap().remove(0);
    let d = e5.embed(&[text]).unwrap().remove(0);
    // The prefixed texts are what the model sees: equal to the plain model on them.
    let q_plain = plain.embed(&[&format!("query: {text}")]).unwrap().remove(0);
    let d_plain = plain.embed(&[&format!("passage: {text}")]).unwrap().remove(0);
    assert!(max_abs(&q, &q_plain) < 1e-6 && max_abs(&d, &d_plain) < 1e-6);
    assert!(max_abs(&q, &d) > 1e-3, "query and document prefixes made the same vector");
}
