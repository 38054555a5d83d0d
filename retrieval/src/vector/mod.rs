//! The vector side: one trait, [`VectorStore`], with an embedded backend ([`EdgeStore`],
//! qdrant-edge, on disk under the data dir; the default) and a server backend
//! (`ServerStore`, qdrant-client, behind the `qdrant-server` cargo feature).
//!
//! Every point is an item: its id is the [`ItemId`] as a numeric point id, it has a `text`
//! vector (the description embedding) and optionally a `speaker` vector (a voice fingerprint,
//! for "voices like this one"), and a payload with the filter fields of
//! [`crate::filter::fields`], each with a payload index. Both vectors use cosine distance.
//!
//! **Blocking.** Every method blocks (disk I/O, HNSW search, or for the server backend a
//! network round trip on its own runtime). From async code, call them inside
//! `tokio::task::spawn_blocking`.
//!
//! The behaviour all backends share is pinned by one conformance suite,
//! `retrieval/tests/vector_backends.rs`, run against every backend.

mod edge;
#[cfg(feature = "qdrant-server")]
mod server;

use std::fmt;

use serde_json::{Map, Value};

pub use edge::EdgeStore;
#[cfg(feature = "qdrant-server")]
pub use server::ServerStore;

use crate::filter::{fields, ItemFilter};
use crate::item::{AudioItem, ItemId};
use crate::{Error, Result};

/// Name of the description-embedding vector.
pub const TEXT_VECTOR: &str = "text";
/// Name of the optional speaker-embedding vector.
pub const SPEAKER_VECTOR: &str = "speaker";

/// Which named vector a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorSpace {
    /// Description embeddings ([`TEXT_VECTOR`]).
    Text,
    /// Speaker embeddings ([`SPEAKER_VECTOR`]).
    Speaker,
}

impl VectorSpace {
    /// The vector's name in the store.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => TEXT_VECTOR,
            Self::Speaker => SPEAKER_VECTOR,
        }
    }
}

impl fmt::Display for VectorSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dimensions of the two named vectors; fixed when a store is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorConfig {
    /// Dimension of the `text` vector.
    pub text_dim: usize,
    /// Dimension of the `speaker` vector.
    pub speaker_dim: usize,
}

impl VectorConfig {
    /// The dimension of `space`.
    pub fn dim(&self, space: VectorSpace) -> usize {
        match space {
            VectorSpace::Text => self.text_dim,
            VectorSpace::Speaker => self.speaker_dim,
        }
    }

    /// Checks that `v` fits `space`: the right length, finite, not all zeros (cosine of a zero
    /// vector is undefined).
    pub fn check(&self, space: VectorSpace, v: &[f32]) -> Result<()> {
        let invalid = |message: String| Error::InvalidVector { space: space.to_string(), message };
        if v.len() != self.dim(space) {
            return Err(invalid(format!(
                "has {} dimensions, expected {}",
                v.len(),
                self.dim(space)
            )));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(invalid(format!("component {i} is {}", v[i])));
        }
        if v.iter().all(|x| *x == 0.0) {
            return Err(invalid("is all zeros".to_string()));
        }
        Ok(())
    }
}

/// One point to write: an item's vectors and its filter payload.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    /// The item id (the point id).
    pub id: ItemId,
    /// The `text` vector.
    pub text: Vec<f32>,
    /// The `speaker` vector, if the item has one.
    pub speaker: Option<Vec<f32>>,
    /// Filter fields: the keyword fields that are set (strings) and `duration_ms` (integer).
    pub payload: Map<String, Value>,
}

impl VectorPoint {
    /// The point for `item` with these vectors; the payload holds its filter fields.
    pub fn for_item(item: &AudioItem, text: Vec<f32>, speaker: Option<Vec<f32>>) -> Self {
        Self { id: item.id, text, speaker, payload: filter_payload(item) }
    }
}

/// The filter payload of an item: each set keyword field of [`fields::KEYWORDS`] as a string,
/// and [`fields::DURATION_MS`] as an integer.
pub fn filter_payload(item: &AudioItem) -> Map<String, Value> {
    let a = &item.attributes;
    let mut map = Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            map.insert(k.to_string(), Value::String(v.to_string()));
        }
    };
    put(fields::KIND, Some(item.kind.as_str()));
    put(fields::GENDER, a.gender.map(|g| g.as_str()));
    put(fields::AGE, a.age.map(|g| g.as_str()));
    put(fields::LANGUAGE, a.language.as_deref());
    put(fields::STYLE, a.style.as_deref());
    put(fields::SOURCE, a.source.as_deref());
    put(fields::LICENSE, a.license.as_deref());
    map.insert(fields::DURATION_MS.to_string(), Value::from(item.duration_ms()));
    map
}

/// A search hit on the vector side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    /// The item.
    pub id: ItemId,
    /// Cosine similarity to the query, in `[-1, 1]`.
    pub score: f32,
}

/// How a search is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// The backend's index (HNSW once built; exact while the data is small).
    #[default]
    Indexed,
    /// Exhaustive exact search: the baseline and the ground truth for recall.
    Exact,
}

/// A vector store of items. All methods block; see the module docs.
pub trait VectorStore: Send + Sync + fmt::Debug {
    /// `qdrant-edge` or `qdrant-server`: names the backend in errors and stats.
    fn backend(&self) -> &'static str;

    /// The vector dimensions.
    fn config(&self) -> VectorConfig;

    /// Inserts or replaces points (all vectors and the payload of each). Vectors are checked
    /// with [`VectorConfig::check`] before anything is written.
    fn upsert(&self, points: &[VectorPoint]) -> Result<()>;

    /// Deletes points; ids that are absent are ignored.
    fn delete(&self, ids: &[ItemId]) -> Result<()>;

    /// The `limit` nearest points in `space` that pass `filter`, best first (ties by id).
    /// Points without a vector in `space` never match.
    fn search(
        &self,
        space: VectorSpace,
        query: &[f32],
        filter: &ItemFilter,
        limit: usize,
        mode: SearchMode,
    ) -> Result<Vec<VectorHit>>;

    /// The stored vector of `id` in `space`, if the point exists and has one.
    fn vector(&self, space: VectorSpace, id: ItemId) -> Result<Option<Vec<f32>>>;

    /// Every point id, ascending.
    fn ids(&self) -> Result<Vec<ItemId>>;

    /// How many points there are.
    fn count(&self) -> Result<usize>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;

    /// Builds or refreshes search indexes (HNSW) after a bulk load; a no-op where the backend
    /// does it by itself. Blocks until done.
    fn optimize(&self) -> Result<()> {
        Ok(())
    }
}

/// Sorts hits by descending score, then ascending id (the trait's documented order).
pub(crate) fn sort_hits(hits: &mut [VectorHit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
}
