//! Every committed fuzz corpus input (`fuzz/corpus/<target>/`, seeds and whatever the fuzzer
//! found) through its target's check (`fuzz/checks.rs`), on the stable toolchain: an input
//! that once broke voxloop keeps passing, and `make test` needs no nightly toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_corpus_input_passes_its_fuzz_check() {
    let tokenizer = checks::tokenizer(&repo());
    for target in checks::TARGETS {
        let dir = repo().join("fuzz/corpus").join(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{target} has no corpus");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| checks::check(target, &data, tokenizer));
            assert!(outcome.is_ok(), "{target}: {} fails its check", input.display());
        }
        eprintln!("{target}: {} inputs pass", inputs.len());
    }
}
