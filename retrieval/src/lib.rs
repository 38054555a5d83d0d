//! # voxloop-retrieval
//!
//! Audio retrieval by description: find a voice ("a calm low male voice", "温柔的女声") or a
//! sound ("rain on a tin roof") in a library of audio items.
//!
//! - [`item`]: the data model ([`AudioItem`], content-hash [`ItemId`]s, attributes).
//! - [`text_index`]: the Tantivy side (BM25 over description, tags and transcript; Chinese and
//!   English through [`tokenize`]).
//! - [`vector`]: the [`VectorStore`] trait, with the embedded qdrant-edge backend
//!   ([`EdgeStore`]) and, behind the `qdrant-server` feature, a Qdrant server backend.
//! - [`embed`]: text embedders ([`SentenceEncoder`]: sentence-transformers BERT / XLM-R
//!   checkpoints on tch, all-MiniLM-L6-v2 by default).
//! - [`fusion`]: reciprocal-rank fusion.
//! - [`index`]: [`AudioIndex`], both stores kept consistent (see its docs for the protocol),
//!   hybrid search and query-by-example.
//! - [`ingest`]: folders and JSONL manifests into the index, bad files reported and skipped.
//! - [`search`]: requests (validated up front) and hits with the reason each one matched.
//! - [`speaker`]: the `speaker` vector (a log-mel fingerprint, not a trained speaker model).
//! - [`eval`]: recall@k per retriever on the labelled set in `tests/fixtures/quality`.
//!
//! **Blocking.** The API is synchronous: Tantivy commits, qdrant-edge and libtorch all block
//! the calling thread. From async code, call it inside `tokio::task::spawn_blocking` (an
//! [`AudioIndex`] is `Send + Sync`; share it with an `Arc`).
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

pub mod embed;
mod error;
pub mod eval;
pub mod filter;
pub mod fusion;
pub mod index;
pub mod ingest;
pub mod item;
pub mod search;
pub mod speaker;
pub mod text_index;
pub mod tokenize;
pub mod vector;

pub use embed::{HashingEmbedder, MiniLm, SentenceEncoder, TextEmbedder};
pub use error::{Error, Result};
pub use filter::ItemFilter;
pub use index::{AudioIndex, Audit, IndexOptions, IndexStats};
pub use item::{AgeBand, Alias, Attributes, AudioItem, Caption, Gender, ItemId, ItemKind};
pub use search::{Hit, MatchReason, Retriever, SearchRequest};
pub use vector::{EdgeStore, VectorStore};
