//! `voxloop index` / `voxloop search` as a user runs them, and the crash test: `index add` of
//! 1000 small files is killed mid-way (once by an injected abort between a vector write and its
//! text commit, once by SIGKILL at an arbitrary moment), then restarted and re-run; every item
//! must end up present exactly once in both stores, with no orphan.
//!
//! Uses the model-free `hashing` embedder so it needs no downloaded model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use voxloop_retrieval::index::IndexOptions;
use voxloop_retrieval::{AudioIndex, HashingEmbedder, ItemId};

const ITEMS: usize = 1000;

fn voxloop(index_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("VOXLOOP_CONFIG")
        .env_remove("VOXLOOP_FAULT_ABORT_AFTER_VECTOR_WRITES")
        .env("VOXLOOP_INDEX_DIR", index_dir)
        .env("NO_COLOR", "1");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("voxloop runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn open(index_dir: &Path, repair: bool) -> AudioIndex {
    let meta = AudioIndex::read_meta(index_dir).unwrap().expect("an index exists");
    let dim = meta.text_dim;
    AudioIndex::open(
        index_dir,
        Arc::new(HashingEmbedder::new(dim).unwrap()),
        IndexOptions { repair },
    )
    .unwrap()
}

fn add(index_dir: &Path, lib: &Path, batch: usize) -> Command {
    let mut cmd = voxloop(index_dir);
    cmd.args(["index", "add", "--embedder", "hashing", "--batch", &batch.to_string()]).arg(lib);
    cmd
}

/// After a restart and a complete re-run: every expected id once in both stores, nothing else.
fn assert_complete(index_dir: &Path, expected: &BTreeSet<ItemId>) {
    let index = open(index_dir, true);
    let audit = index.audit().unwrap();
    assert!(audit.is_consistent(), "{audit:?}");
    assert_eq!(audit.text_docs, expected.len());
    assert_eq!(audit.vector_points, expected.len());
    let text_ids: BTreeSet<ItemId> = index.text().ids().unwrap().into_iter().collect();
    let vector_ids: BTreeSet<ItemId> = index.vectors().ids().unwrap().into_iter().collect();
    assert_eq!(&text_ids, expected);
    assert_eq!(&vector_ids, expected);
}

#[test]
fn injected_abort_between_vector_write_and_text_commit_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, index_dir) = (tmp.path().join("lib"), tmp.path().join("index"));
    let expected = support::tone_library(&lib, ITEMS);

    let out = run(add(&index_dir, &lib, 50).env("VOXLOOP_FAULT_ABORT_AFTER_VECTOR_WRITES", "3"));
    assert!(!out.status.success(), "the injected abort must kill the run");
    assert!(text(&out.stderr).contains("fault injection"), "{}", text(&out.stderr));

    // Two batches committed; the third has vectors and no documents, and the marker is set.
    {
        let index = open(&index_dir, false);
        let audit = index.audit().unwrap();
        assert_eq!(audit.text_docs, 100, "{audit:?}");
        assert_eq!(audit.orphan_vectors.len(), 50, "{audit:?}");
        assert!(audit.missing_vectors.is_empty() && audit.write_pending);
    }

    let out = run(&mut add(&index_dir, &lib, 50));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("900 added") && stdout.contains("100 unchanged"), "{stdout}");
    assert_complete(&index_dir, &expected);
}

#[test]
fn kill_9_during_index_add_then_rerun_leaves_every_item_once_in_both_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, index_dir) = (tmp.path().join("lib"), tmp.path().join("index"));
    let expected = support::tone_library(&lib, ITEMS);

    let mut child =
        add(&index_dir, &lib, 20).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut killed_at = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        // "indexed N/1000 (0 skipped)" after each committed batch.
        let done = line
            .strip_prefix("indexed ")
            .and_then(|rest| rest.split('/').next())
            .and_then(|n| n.parse::<usize>().ok());
        if done.is_some_and(|n| n >= 300) {
            child.kill().unwrap(); // SIGKILL
            killed_at = done;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed_at.is_some(), "the run ended before it could be killed");
    assert!(!status.success());

    // Killed mid-way: part of the library is in, the rest is not; the audit may show orphans.
    let before = {
        let index = open(&index_dir, false);
        index.audit().unwrap()
    };
    assert!(before.text_docs >= 300 && before.text_docs < ITEMS, "{before:?}");
    assert!(before.duplicate_docs.is_empty() && before.missing_vectors.is_empty(), "{before:?}");

    // Restart: opening repairs; re-running (in bigger batches, to be quick) completes.
    let out = run(&mut add(&index_dir, &lib, 100));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{} unchanged", before.text_docs)),
        "{}",
        text(&out.stdout)
    );
    assert_complete(&index_dir, &expected);

    // The CLI's own audit agrees, and search finds a specific item.
    let out = run(voxloop(&index_dir).args(["index", "stats", "--audit", "--json"]));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["stats"]["items"], ITEMS);
    assert_eq!(stats["audit"]["orphan_vectors"].as_array().unwrap().len(), 0);
    let out = run(voxloop(&index_dir).args(["search", "tone number 417", "-k", "1", "--json"]));
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(hits[0]["item"]["path"].as_str().unwrap().ends_with("tone_0417.wav"), "{hits}");
}

#[test]
fn cli_reports_bad_files_bad_queries_and_removes_items() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, index_dir) = (tmp.path().join("lib"), tmp.path().join("index"));
    support::tone_library(&lib, 3);
    std::fs::write(lib.join("broken.wav"), b"RIFF\x04\x00\x00\x00WAVE").unwrap();
    let out = run(&mut add(&index_dir, &lib, 64));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("skipped") && stderr.contains("broken.wav"), "{stderr}");
    assert!(text(&out.stdout).contains("3 added") && text(&out.stdout).contains("1 skipped"));

    for (args, needle) in [
        (vec!["search", "  "], "empty query"),
        (vec!["search", "tone", "-k", "0"], "k = 0"),
        (vec!["search", "tone", "-k", "5000"], "between 1 and 1000"),
        (vec!["search", "tone", "--kind", "voice"], "expected timbre, sound"),
        (vec!["search", "tone", "--language", "xx"], "unknown language"),
    ] {
        let out = run(voxloop(&index_dir).args(&args));
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }

    let out = run(voxloop(&index_dir).args(["search", "tone number 1", "-k", "1", "--json"]));
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = hits[0]["item"]["id"].as_str().unwrap().to_string();
    assert!(hits[0]["reason"]["bm25"]["rank"].is_number(), "{hits}");
    let out = run(voxloop(&index_dir).args(["index", "rm", &id]));
    assert!(text(&out.stdout).contains("removed 1 of 1"), "{}", text(&out.stdout));
    let out = run(voxloop(&index_dir).args(["index", "stats"]));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("items: 2 (2 vectors, qdrant-edge)"), "{stdout}");
    let out = run(voxloop(&index_dir).args(["index", "rm", "not-an-id"]));
    assert!(text(&out.stderr).contains("invalid item id"), "{}", text(&out.stderr));
}

/// `voxloop serve` opens the index of its data dir and answers `/v1/audio/search`.
#[test]
fn the_service_searches_the_index_of_its_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let lib = tmp.path().join("lib");
    support::tone_library(&lib, 20);
    let out = run(&mut add(&data.join("index"), &lib, 8));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut serve = voxloop(&data.join("index"));
    serve.env_remove("VOXLOOP_ADDR").env("VOXLOOP_DATA_DIR", &data);
    let (mut child, addr) = support::start_server(serve);
    let health = support::http_get(addr, "/healthz");
    assert!(health.contains("\"audio_index_items\":20"), "{health}");

    let found = support::http_get(addr, "/v1/audio/search?q=test+tone+number+7&k=3&mode=bm25");
    assert!(found.starts_with("HTTP/1.1 200"), "{found}");
    let body: serde_json::Value =
        serde_json::from_str(found.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits[0]["item"]["path"].as_str().unwrap().ends_with("tone_0007.wav"), "{body}");
    assert_eq!(body["query"], "test tone number 7");

    for (path, want) in [
        ("/v1/audio/search?k=3", "missing query parameter q"),
        ("/v1/audio/search?q=tone&k=0", "invalid k = 0"),
        ("/v1/audio/search?q=tone&kind=music", "expected timbre, sound"),
        ("/v1/audio/search?q=+", "empty query"),
        ("/v1/audio/search?q=tone&k=ten", "k"),
    ] {
        let response = support::http_get(addr, path);
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(response.contains(want), "{path}: {response}");
    }
    support::signal(&child, "INT");
    assert_eq!(support::wait_exit(&mut child).code(), Some(0));
}
