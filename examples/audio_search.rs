//! Index a folder of audio files, then search it by description.
//!
//! ```text
//! scripts/sample_library.sh data/samples                 # or any folder of WAV/FLAC/MP3/Ogg
//! cargo run --example audio_search -- data/samples "a bell ringing" "低沉的男声"
//! ```
//!
//! Every file in the folder (recursively) becomes an item; a `metadata.jsonl` next to the files
//! describes them (see `voxloop_retrieval::ingest`), files it does not cover get a description
//! from their names. The index lives in a temporary directory and is gone when the example
//! ends; `voxloop index add` / `voxloop search` keep one in the data dir.
//!
//! The text embedder is all-MiniLM-L6-v2 from `$VOXLOOP_MINILM_DIR` or
//! `.cache/models/all-minilm-l6-v2` (`scripts/minilm.sh`); without it the example falls back to
//! the model-free hashing embedder and says so — unless `VOXLOOP_REQUIRE_MODELS=1` (as
//! `make test` sets it), where a missing model is an error.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use voxloop_retrieval::embed::Device;
use voxloop_retrieval::index::IndexOptions;
use voxloop_retrieval::ingest::{ingest, IngestOptions, Source};
use voxloop_retrieval::search::SearchRequest;
use voxloop_retrieval::{AudioIndex, HashingEmbedder, MiniLm, TextEmbedder};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(folder) = args.next().map(PathBuf::from) else {
        bail!("usage: audio_search FOLDER [QUERY...]");
    };
    let mut queries: Vec<String> = args.collect();
    if queries.is_empty() {
        queries = vec!["a bell ringing".into(), "rain".into(), "门铃".into()];
    }

    // 1. The text embedder: MiniLM if it is there.
    let model_dir = std::env::var_os("VOXLOOP_MINILM_DIR")
        .map_or_else(|| PathBuf::from(".cache/models/all-minilm-l6-v2"), PathBuf::from);
    let require_models = std::env::var("VOXLOOP_REQUIRE_MODELS").is_ok_and(|v| v == "1");
    let embedder: Arc<dyn TextEmbedder> = match MiniLm::load(&model_dir, Device::Cpu) {
        Ok(model) => Arc::new(model),
        Err(e) if require_models => {
            return Err(e).with_context(|| {
                format!("VOXLOOP_REQUIRE_MODELS=1 and MiniLM is not in {}", model_dir.display())
            });
        }
        Err(e) => {
            eprintln!("MiniLM unavailable ({e}); using the hashing embedder (lexical only)");
            Arc::new(HashingEmbedder::new(384)?)
        }
    };

    // 2. An index in a temporary directory (text in Tantivy, vectors in qdrant-edge).
    let dir = tempfile::tempdir()?;
    let index = AudioIndex::open(dir.path(), embedder, IndexOptions::default())?;

    // 3. Ingest the folder; bad files are reported, not fatal.
    let report =
        ingest(&index, &Source::Dir(folder.clone()), &IngestOptions::default(), &mut |_| {})
            .with_context(|| format!("indexing {}", folder.display()))?;
    let items = report.items.added + report.items.updated + report.items.unchanged;
    println!("indexed {items} of {} files from {}", report.total, folder.display());
    for bad in &report.failed {
        println!("  skipped {}: {}", bad.path, bad.reason);
    }

    // 4. Search: hybrid (BM25 + vectors, fused by reciprocal rank), top 3 per query.
    let mut total_hits = 0;
    for query in &queries {
        println!("\n{query:?}");
        let hits = index.search(&SearchRequest::new(query.clone(), 3))?;
        for (i, hit) in hits.iter().enumerate() {
            println!("  {}. [{}] {}  ({})", i + 1, hit.item.kind, hit.item.description, hit.reason);
            println!("     {}", hit.item.path.display());
        }
        total_hits += hits.len();
    }

    // Every item is in both stores, once, and each query got the 3 best items (or all of a
    // smaller library): the vector side ranks every item, however weak the match.
    assert!(index.audit()?.is_consistent());
    assert!(items > 0, "nothing indexed from {}", folder.display());
    assert_eq!(total_hits, queries.len() * items.min(3), "a query found too few items");
    Ok(())
}
