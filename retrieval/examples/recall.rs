//! Prints recall@k per retriever (bm25, vector, hybrid) on the labelled set in
//! `retrieval/tests/fixtures/quality/`, with the misses.
//!
//!     cargo run -p voxloop-retrieval --example recall            # k = 5
//!     cargo run -p voxloop-retrieval --example recall -- 10      # another k
//!
//! Uses all-MiniLM-L6-v2 from $VOXLOOP_MINILM_DIR or .cache/models/all-minilm-l6-v2
//! (`scripts/minilm.sh` puts it there).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use voxloop_retrieval::embed::Device;
use voxloop_retrieval::eval::LabelledSet;
use voxloop_retrieval::index::IndexOptions;
use voxloop_retrieval::search::Retriever;
use voxloop_retrieval::{AudioIndex, MiniLm};

fn main() -> anyhow::Result<()> {
    let k: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(5);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_dir = std::env::var_os("VOXLOOP_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.cache/models/all-minilm-l6-v2"));
    let model = MiniLm::load(&model_dir, Device::Cpu).with_context(|| {
        format!("loading MiniLM from {} (run scripts/minilm.sh)", model_dir.display())
    })?;
    let set = LabelledSet::load(&root.join("tests/fixtures/quality"))?;
    let dir = tempfile::tempdir()?;
    let index = AudioIndex::open(dir.path(), Arc::new(model), IndexOptions::default())?;
    set.index_into(&index)?;
    println!("{} items, {} queries; recall@{k}", set.items.len(), set.queries.len());
    let mut table = Vec::new();
    for retriever in Retriever::ALL {
        let eval = set.evaluate(&index, retriever, k)?;
        println!("\n{retriever}: {:.3}", eval.recall);
        for q in eval.per_query.iter().filter(|q| q.recall < 1.0) {
            println!("  miss {:.2}  {}  -> {}", q.recall, q.query, q.returned.join(", "));
        }
        table.push((retriever, eval.recall));
    }
    println!("\n| mode | recall@{k} |\n|---|---|");
    for (retriever, recall) in table {
        println!("| {retriever} | {recall:.3} |");
    }
    Ok(())
}
