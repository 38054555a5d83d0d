//! Retrieval quality on the labelled set in `fixtures/quality/` (66 items, 60 queries in English
//! and Chinese, written as people ask): recall@5 per retriever, printed; hybrid must be at least
//! as good as the better single retriever. Needs the MiniLM model (skipped without it unless
//! VOXLOOP_REQUIRE_MODELS=1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use voxloop_retrieval::eval::LabelledSet;
use voxloop_retrieval::index::IndexOptions;
use voxloop_retrieval::search::Retriever;
use voxloop_retrieval::{AudioIndex, TextEmbedder};

#[test]
fn hybrid_recall_at_5_is_at_least_the_best_single_retriever() {
    let Some(model) = common::minilm() else { return };
    let set =
        LabelledSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quality"))
            .unwrap();
    assert!(set.items.len() >= 60 && set.queries.len() >= 40);
    let dir = tempfile::tempdir().unwrap();
    let embedder: Arc<dyn TextEmbedder> = model;
    let index = AudioIndex::open(dir.path(), embedder, IndexOptions::default()).unwrap();
    set.index_into(&index).unwrap();

    let mut recall = std::collections::HashMap::new();
    for retriever in Retriever::ALL {
        let eval = set.evaluate(&index, retriever, 5).unwrap();
        eprintln!("recall@5 {:<6} {:.3}", retriever.as_str(), eval.recall);
        for q in eval.per_query.iter().filter(|q| q.recall < 1.0) {
            eprintln!("    {:.2} {:?} -> {:?}", q.recall, q.query, q.returned);
        }
        recall.insert(retriever, eval.recall);
    }
    let (bm25, vector, hybrid) =
        (recall[&Retriever::Bm25], recall[&Retriever::Vector], recall[&Retriever::Hybrid]);
    assert!(
        hybrid >= bm25.max(vector),
        "hybrid {hybrid:.3} < max(bm25 {bm25:.3}, vector {vector:.3})"
    );
}
