//! The one error type of `voxloop-retrieval`.

use std::path::PathBuf;

/// Everything that can go wrong in `voxloop-retrieval`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core` (audio decoding, mostly; it names the file).
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
    /// Too little free space on an index's disk to open or write to it safely (see
    /// [`crate::index::OPEN_FREE_BYTES`]).
    #[error(
        "not enough free space on the disk of {}: {} MiB free, the index needs {} MiB \
         (the vector store writes through memory-mapped files, which a full disk turns into a \
         crash); free some space and run it again",
        path.display(), free >> 20, need >> 20
    )]
    DiskFull { path: PathBuf, free: u64, need: u64 },
    /// A file or directory that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Tantivy failed; `context` says at what.
    #[error("full-text index: {context}: {source}")]
    Tantivy { context: String, source: tantivy::TantivyError },
    /// A vector backend failed; `backend` is `qdrant-edge` or `qdrant-server`.
    #[error("vector store ({backend}): {operation}: {message}")]
    Vector { backend: &'static str, operation: String, message: String },
    /// libtorch failed while running the text embedder.
    #[error("embedder: libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Model files that are missing or malformed (a MiniLM directory, its config or tokenizer).
    #[error("embedder model {}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// The embedder's tokenizer failed on a text.
    #[error("embedder tokenizer: {0}")]
    Tokenize(String),
    /// A query with no text in it.
    #[error("empty query: give a description to search for")]
    EmptyQuery,
    /// `k` (or a candidate count) outside `1..=max`.
    #[error("invalid {name} = {value}: must be between 1 and {max}")]
    InvalidLimit { name: &'static str, value: usize, max: usize },
    /// A filter value outside the field's vocabulary, or one no indexed item has.
    #[error("unknown {field} {value:?}: expected {expected}")]
    UnknownFilterValue { field: &'static str, value: String, expected: String },
    /// Invalid fusion parameters (weights count, a negative or NaN weight, k ≤ 0).
    #[error("fusion: {0}")]
    InvalidFusion(String),
    /// A vector of the wrong dimension or with NaN/inf in it.
    #[error("vector {space}: {message}")]
    InvalidVector { space: String, message: String },
    /// An item that breaks the data model (named by id or path).
    #[error("item {item}: {message}")]
    InvalidItem { item: String, message: String },
    /// A manifest line that is not a valid item description.
    #[error("{}:{line}: {message}", path.display())]
    Manifest { path: PathBuf, line: usize, message: String },
    /// The index on disk was built differently from what is asked now (schema version,
    /// embedder, dimension) or its metadata is unreadable.
    #[error("index {}: {message}", path.display())]
    IndexMeta { path: PathBuf, message: String },
    /// Another process holds the index open.
    #[error("index {} is in use by another process (its writer lock is held)", path.display())]
    Locked { path: PathBuf },
    /// An id that is not in the index.
    #[error("no item with id {0}")]
    NotFound(String),
    /// A string that is not an item id (16 lowercase hex digits).
    #[error("invalid item id {0:?}: expected 16 hexadecimal digits")]
    InvalidId(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn tantivy(context: impl Into<String>, source: tantivy::TantivyError) -> Self {
        Self::Tantivy { context: context.into(), source }
    }
}
