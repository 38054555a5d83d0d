//! Search requests and hits.
//!
//! A [`SearchRequest`] is checked before any work ([`SearchRequest::validate`]): an empty
//! query, `k = 0`, `k` above [`MAX_K`], bad fusion parameters or bad duration bounds are
//! errors, each saying what is accepted. (Filter values no indexed item has are checked by
//! [`crate::AudioIndex::search`], which knows the indexed values.)

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::filter::ItemFilter;
use crate::fusion::RrfParams;
use crate::item::AudioItem;
use crate::vector::{SearchMode, VectorSpace};
use crate::{Error, Result};

/// The largest `k` a search accepts.
pub const MAX_K: usize = 1000;
/// The largest candidate count per retriever.
pub const MAX_CANDIDATES: usize = 10_000;
/// The least candidates each retriever contributes to fusion.
pub const MIN_CANDIDATES: usize = 50;

/// Which retrievers answer a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    /// BM25 and vector candidates fused by reciprocal rank (the default).
    #[default]
    Hybrid,
    /// BM25 only.
    Bm25,
    /// Description embeddings only.
    Vector,
}

impl Retriever {
    /// Every retriever, in the order reports list them.
    pub const ALL: [Self; 3] = [Self::Bm25, Self::Vector, Self::Hybrid];

    /// Its lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Bm25 => "bm25",
            Self::Vector => "vector",
        }
    }
}

impl fmt::Display for Retriever {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Retriever {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s.trim().to_lowercase()).ok_or_else(|| {
            Error::UnknownFilterValue {
                field: "search mode",
                value: s.to_string(),
                expected: "hybrid, bm25, vector".into(),
            }
        })
    }
}

/// A search by description.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// What to look for, in words (English, Chinese, or both).
    pub text: String,
    /// How many hits to return (1..=[`MAX_K`]).
    pub k: usize,
    /// Conditions every hit meets (applied inside both retrievers, not after).
    pub filter: ItemFilter,
    /// Which retrievers to use.
    pub retriever: Retriever,
    /// Fusion parameters (hybrid only): k = 60 and equal weights by default; weights are
    /// `[bm25, vector]`.
    pub fusion: RrfParams,
    /// Candidates per retriever before fusion; default `max(4k, 50)`.
    pub candidates: Option<usize>,
    /// How the vector side searches: the HNSW index (default) or exhaustively
    /// ([`SearchMode::Exact`], the brute-force baseline of the benchmarks).
    pub vector_mode: SearchMode,
}

impl SearchRequest {
    /// A hybrid search for `text` returning `k` hits, no filter.
    pub fn new(text: impl Into<String>, k: usize) -> Self {
        Self {
            text: text.into(),
            k,
            filter: ItemFilter::default(),
            retriever: Retriever::Hybrid,
            fusion: RrfParams::default(),
            candidates: None,
            vector_mode: SearchMode::Indexed,
        }
    }

    /// Sets the filter.
    pub fn with_filter(mut self, filter: ItemFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the retriever.
    pub fn with_retriever(mut self, retriever: Retriever) -> Self {
        self.retriever = retriever;
        self
    }

    /// The candidate count per retriever.
    pub fn candidate_count(&self) -> usize {
        self.candidates
            .unwrap_or_else(|| (self.k.saturating_mul(4)).max(MIN_CANDIDATES))
            .min(MAX_CANDIDATES)
    }

    /// Checks everything that does not need the index. See the module docs.
    pub fn validate(&self) -> Result<()> {
        if self.text.trim().is_empty() {
            return Err(Error::EmptyQuery);
        }
        check_k(self.k)?;
        if let Some(c) = self.candidates {
            if c == 0 || c > MAX_CANDIDATES || c < self.k {
                return Err(Error::InvalidLimit {
                    name: "candidates",
                    value: c,
                    max: MAX_CANDIDATES,
                });
            }
        }
        self.filter.validate()?;
        // Fusion parameters are checked even when unused, so a bad request fails the same way in
        // every mode.
        crate::fusion::rrf::<u64>(&[vec![], vec![]], &self.fusion)?;
        Ok(())
    }
}

/// Checks `k` against `1..=MAX_K`.
pub fn check_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(Error::InvalidLimit { name: "k", value: k, max: MAX_K });
    }
    Ok(())
}

/// One retriever's opinion of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rank {
    /// 1-based rank among that retriever's candidates.
    pub rank: usize,
    /// That retriever's own score (BM25, or cosine similarity).
    pub score: f32,
}

/// Why an item was returned: its rank in each retriever that found it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MatchReason {
    /// Rank among the BM25 candidates, if it was one.
    pub bm25: Option<Rank>,
    /// Rank among the vector candidates, if it was one.
    pub vector: Option<Rank>,
    /// Which vector space the vector rank refers to.
    #[serde(serialize_with = "space_name")]
    pub space: VectorSpace,
}

fn space_name<S: serde::Serializer>(
    space: &VectorSpace,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(space.name())
}

impl fmt::Display for MatchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.bm25 {
            parts.push(format!("bm25 #{} ({:.2})", r.rank, r.score));
        }
        if let Some(r) = self.vector {
            parts.push(format!("{} vector #{} (cos {:.3})", self.space, r.rank, r.score));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The item, as stored.
    pub item: AudioItem,
    /// The ranking score: the fused RRF score for hybrid searches, otherwise the single
    /// retriever's own score (BM25, or cosine similarity).
    pub score: f64,
    /// Why it matched.
    pub reason: MatchReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated_before_any_work() {
        assert!(matches!(SearchRequest::new("  \n", 5).validate(), Err(Error::EmptyQuery)));
        let err = SearchRequest::new("rain", 0).validate().unwrap_err().to_string();
        assert!(err.contains("k = 0") && err.contains("1000"), "{err}");
        assert!(SearchRequest::new("rain", MAX_K + 1).validate().is_err());
        SearchRequest::new("rain", MAX_K).validate().unwrap();
        let mut r = SearchRequest::new("rain", 10);
        r.candidates = Some(5);
        assert!(r.validate().unwrap_err().to_string().contains("candidates"));
        let mut r = SearchRequest::new("rain", 10);
        r.fusion.weights = Some(vec![1.0]);
        assert!(matches!(r.validate(), Err(Error::InvalidFusion(_))));
    }

    #[test]
    fn candidate_count_defaults_to_four_k_at_least_fifty() {
        assert_eq!(SearchRequest::new("x", 5).candidate_count(), 50);
        assert_eq!(SearchRequest::new("x", 100).candidate_count(), 400);
        assert_eq!(SearchRequest::new("x", 1000).candidate_count(), 4000);
    }

    #[test]
    fn retriever_names_parse() {
        assert_eq!("BM25".parse::<Retriever>().unwrap(), Retriever::Bm25);
        assert!("dense".parse::<Retriever>().unwrap_err().to_string().contains("hybrid, bm25"));
    }
}
