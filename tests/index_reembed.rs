//! `voxloop index reembed`: an index built with one text embedder is switched to another (the
//! tiny XLM-R sentence-transformers checkpoint in `retrieval/tests/fixtures/xlmr`, committed,
//! so no model download is needed); the old embedder is then refused, search works with the
//! new one, and a re-embedding cut short by a failing embedder leaves the old index usable
//! and is resumed by the next run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use voxloop_retrieval::index::{IndexOptions, ReembedProgress};
use voxloop_retrieval::search::{Retriever, SearchRequest};
use voxloop_retrieval::{AudioIndex, Error, HashingEmbedder, TextEmbedder};

const ITEMS: usize = 23;

fn xlmr_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("retrieval/tests/fixtures/xlmr")
}

fn voxloop(index_dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("VOXLOOP_EMBEDDER_DIR")
        .env("VOXLOOP_CONFIG", config)
        .env("VOXLOOP_INDEX_DIR", index_dir)
        .env("NO_COLOR", "1");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("voxloop runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `ITEMS` distinct tones with English and Chinese descriptions.
fn library(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sidecar = String::new();
    for i in 0..ITEMS {
        let hz = 200.0 + 7.0 * i as f32;
        let samples: Vec<i16> = (0..400)
            .map(|t| ((2.0 * std::f32::consts::PI * hz * t as f32 / 8000.0).sin() * 8000.0) as i16)
            .collect();
        let name = format!("tone_{i:02}.wav");
        std::fs::write(dir.join(&name), voxloop_core::audio::wav_file(&samples, 8000)).unwrap();
        let description = if i % 2 == 0 {
            format!("rain on a tin roof, take {i}")
        } else {
            format!("门铃响的音效 {i}")
        };
        sidecar.push_str(&format!("{{\"path\":\"{name}\",\"description\":\"{description}\"}}\n"));
    }
    std::fs::write(dir.join("metadata.jsonl"), sidecar).unwrap();
}

fn config(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, body).unwrap();
    path.to_path_buf()
}

#[test]
fn reembed_switches_a_hashing_index_to_an_xlmr_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, index) = (tmp.path().join("lib"), tmp.path().join("index"));
    library(&lib);
    let xlmr = xlmr_dir().display().to_string();
    let plain =
        config(&tmp.path().join("plain.toml"), &format!("[index]\nembedder_dir = {xlmr:?}\n"));
    let e5 = config(
        &tmp.path().join("e5.toml"),
        &format!(
            "[index]\nembedder_dir = {xlmr:?}\nquery_prefix = \"query: \"\n\
             document_prefix = \"passage: \"\n"
        ),
    );

    let mut add = voxloop(&index, &plain);
    add.args(["index", "add", "--embedder", "hashing"]).arg(&lib);
    ok(&run(&mut add));
    let before = AudioIndex::read_meta(&index).unwrap().unwrap();
    assert!(before.text_embedder.starts_with("hashing-v1"), "{before:?}");

    let out =
        ok(&run(voxloop(&index, &plain).args(["index", "reembed", "--batch", "5", "--json"])));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["items"], ITEMS);
    assert_eq!(report["embedded"], ITEMS);
    assert_eq!(report["from"], before.text_embedder.as_str());
    let after = AudioIndex::read_meta(&index).unwrap().unwrap();
    assert_eq!(after.text_dim, 32);
    assert!(after.text_embedder.starts_with("xlm-roberta xlmr 32d"), "{after:?}");
    assert_eq!(report["to"], after.text_embedder.as_str());
    // The old store is gone; only the one the metadata names is left.
    let stores: Vec<String> = std::fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vectors"))
        .collect();
    assert_eq!(stores, vec![after.vectors_dir.clone()]);

    // Vector search runs on the new vectors: every item is found, the nearest to a Chinese
    // query is a Chinese description.
    let out = ok(&run(voxloop(&index, &plain).args([
        "search",
        "门铃响的音效",
        "--mode",
        "vector",
        "--json",
        "-k",
        "30",
    ])));
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), ITEMS);
    assert!(hits[0]["item"]["description"].as_str().unwrap().contains("门铃"), "{hits:?}");
    let stats = ok(&run(voxloop(&index, &plain).args(["index", "stats", "--audit"])));
    assert!(stats.contains("audit: consistent"), "{stats}");

    // The old embedder is refused, pointing at reembed.
    let err = AudioIndex::open(
        &index,
        Arc::new(HashingEmbedder::new(before.text_dim).unwrap()),
        IndexOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::IndexMeta { .. }) && err.to_string().contains("reembed"), "{err}");
    // So is the same checkpoint with other prefixes (they change every vector).
    let out = run(voxloop(&index, &e5).args(["search", "rain"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("voxloop index reembed") && stderr.contains("fixtures/xlmr"),
        "{stderr}"
    );
    ok(&run(voxloop(&index, &e5).args(["index", "reembed"])));
    ok(&run(voxloop(&index, &e5).args(["search", "rain", "--mode", "vector"])));
    // A second run has nothing to do.
    let out = ok(&run(voxloop(&index, &e5).args(["index", "reembed"])));
    assert!(out.contains("already embedded"), "{out}");
}

/// The hashing embedder, failing on its `fail_on`-th call.
#[derive(Debug)]
struct Failing {
    inner: HashingEmbedder,
    calls: AtomicUsize,
    fail_on: usize,
}

impl TextEmbedder for Failing {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, texts: &[&str]) -> voxloop_retrieval::Result<Vec<Vec<f32>>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_on {
            return Err(Error::Tokenize("injected failure".into()));
        }
        self.inner.embed(texts)
    }
}

#[test]
fn an_interrupted_reembed_leaves_the_old_index_and_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, index) = (tmp.path().join("lib"), tmp.path().join("index"));
    library(&lib);
    let none = config(&tmp.path().join("none.toml"), "");
    ok(&run(voxloop(&index, &none)
        .arg("index")
        .arg("add")
        .args(["--embedder", "hashing"])
        .arg(&lib)));
    let old = AudioIndex::read_meta(&index).unwrap().unwrap();

    let failing = Arc::new(Failing {
        inner: HashingEmbedder::new(64).unwrap(),
        calls: AtomicUsize::new(0),
        fail_on: 3,
    });
    let err = AudioIndex::reembed(&index, failing, 4, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(AudioIndex::read_meta(&index).unwrap().unwrap(), old);
    {
        let opened = AudioIndex::open(
            &index,
            Arc::new(HashingEmbedder::new(old.text_dim).unwrap()),
            IndexOptions::default(),
        )
        .unwrap();
        let hits = opened
            .search(&SearchRequest::new("rain".to_string(), 5).with_retriever(Retriever::Vector))
            .unwrap();
        assert_eq!(hits.len(), 5);
    }

    let mut seen = Vec::new();
    let report = AudioIndex::reembed(
        &index,
        Arc::new(HashingEmbedder::new(64).unwrap()),
        4,
        &mut |p: ReembedProgress| seen.push(p.done),
    )
    .unwrap();
    // Two batches of 4 were written before the failure.
    assert_eq!((report.resumed, report.embedded, report.items), (8, ITEMS - 8, ITEMS));
    assert_eq!(seen.first(), Some(&8));
    assert_eq!(seen.last(), Some(&ITEMS));
    let meta = AudioIndex::read_meta(&index).unwrap().unwrap();
    assert_eq!((meta.text_embedder.as_str(), meta.text_dim), ("hashing-v1-64", 64));
    let opened = AudioIndex::open(
        &index,
        Arc::new(HashingEmbedder::new(64).unwrap()),
        IndexOptions::default(),
    )
    .unwrap();
    assert!(opened.audit().unwrap().is_consistent());
}
