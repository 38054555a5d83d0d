//! # voxloop-retrieval
//!
//! The audio index: items (timbres and sound clips), a Tantivy full-text side, a vector-store
//! trait with qdrant-edge and qdrant-client backends, a MiniLM text embedder on tch, and
//! reciprocal-rank fusion. Depends only on `voxloop-core`.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

/// Everything that can go wrong in `voxloop-retrieval`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
