//! Searching an [`AudioIndex`]: by description (hybrid, BM25 or vector) and by example.

use std::collections::HashMap;

use super::{AudioIndex, Example};
use crate::filter::{fields, ItemFilter};
use crate::fusion::rrf;
use crate::item::ItemId;
use crate::search::{check_k, Hit, MatchReason, Rank, Retriever, SearchRequest, MAX_CANDIDATES};
use crate::vector::{SearchMode, VectorSpace};
use crate::{Error, Result};

impl AudioIndex {
    /// Errors if an open-vocabulary filter value (language, style, source, license) is held by
    /// no indexed item: a typo should not look like "no results".
    fn check_filter_values(&self, filter: &ItemFilter) -> Result<()> {
        let open = [fields::LANGUAGE, fields::STYLE, fields::SOURCE, fields::LICENSE];
        let conditions = filter.keyword_conditions();
        if !conditions.iter().any(|(f, _)| open.contains(f)) {
            return Ok(());
        }
        let counts = self.text.facet_counts()?;
        for (field, value) in conditions.iter().filter(|(f, _)| open.contains(f)) {
            let known = counts.get(field);
            if !known.is_some_and(|k| k.contains_key(value)) {
                let listed: Vec<&str> =
                    known.map(|k| k.keys().map(String::as_str).collect()).unwrap_or_default();
                return Err(Error::UnknownFilterValue {
                    field,
                    value: value.clone(),
                    expected: if listed.is_empty() {
                        "a value some indexed item has (none has any)".to_string()
                    } else {
                        format!("one of the indexed values: {}", listed.join(", "))
                    },
                });
            }
        }
        Ok(())
    }

    /// Searches by description. See [`SearchRequest`] for the parameters and
    /// [`crate::search`] for what is validated.
    pub fn search(&self, request: &SearchRequest) -> Result<Vec<Hit>> {
        request.validate()?;
        self.check_filter_values(&request.filter)?;
        let candidates = request.candidate_count();
        let use_bm25 = request.retriever != Retriever::Vector;
        let use_vector = request.retriever != Retriever::Bm25;
        let bm25 = if use_bm25 {
            self.text.search(&request.text, &request.filter, candidates)?
        } else {
            Vec::new()
        };
        let vector = if use_vector {
            let query = self
                .embedder
                .embed_query(&[request.text.as_str()])?
                .pop()
                .ok_or_else(|| Error::Tokenize("the embedder returned no vector".into()))?;
            self.vectors.search(
                VectorSpace::Text,
                &query,
                &request.filter,
                candidates,
                request.vector_mode,
            )?
        } else {
            Vec::new()
        };
        let bm25_ranks: HashMap<ItemId, Rank> = bm25
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id, Rank { rank: i + 1, score: h.score }))
            .collect();
        let vector_ranks: HashMap<ItemId, Rank> = vector
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id, Rank { rank: i + 1, score: h.score }))
            .collect();
        let ranked: Vec<(ItemId, f64)> = match request.retriever {
            Retriever::Hybrid => {
                let lists =
                    [bm25.iter().map(|h| h.id).collect(), vector.iter().map(|h| h.id).collect()];
                rrf(&lists, &request.fusion)?.into_iter().map(|f| (f.id, f.score)).collect()
            }
            Retriever::Bm25 => bm25.iter().map(|h| (h.id, f64::from(h.score))).collect(),
            Retriever::Vector => vector.iter().map(|h| (h.id, f64::from(h.score))).collect(),
        };
        self.hydrate(ranked, request.k, |id| MatchReason {
            bm25: bm25_ranks.get(&id).copied(),
            vector: vector_ranks.get(&id).copied(),
            space: VectorSpace::Text,
        })
    }

    /// Turns ranked ids into hits with their stored items, skipping ids without a committed
    /// document (orphan vectors), until `k` hits.
    fn hydrate(
        &self,
        ranked: Vec<(ItemId, f64)>,
        k: usize,
        reason: impl Fn(ItemId) -> MatchReason,
    ) -> Result<Vec<Hit>> {
        let mut hits = Vec::with_capacity(k);
        // Look items up in slices of 2k: usually one round.
        for chunk in ranked.chunks((2 * k).max(1)) {
            let ids: Vec<ItemId> = chunk.iter().map(|(id, _)| *id).collect();
            let mut items = self.text.get_many(&ids)?;
            for (id, score) in chunk {
                if let Some(item) = items.remove(id) {
                    hits.push(Hit { item, score: *score, reason: reason(*id) });
                    if hits.len() == k {
                        return Ok(hits);
                    }
                }
            }
        }
        Ok(hits)
    }

    /// Nearest voices to an example (see [`Example`]), best first, the example item itself
    /// excluded. `filter` applies as in [`AudioIndex::search`].
    pub fn similar(&self, example: &Example, k: usize, filter: &ItemFilter) -> Result<Vec<Hit>> {
        check_k(k)?;
        filter.validate()?;
        self.check_filter_values(filter)?;
        let (space, query, exclude) = match example {
            Example::Item(id) => {
                if self.text.get(*id)?.is_none() {
                    return Err(Error::NotFound(id.to_string()));
                }
                match self.vectors.vector(VectorSpace::Speaker, *id)? {
                    Some(v) => (VectorSpace::Speaker, v, Some(*id)),
                    None => {
                        let v = self.vectors.vector(VectorSpace::Text, *id)?.ok_or_else(|| {
                            Error::NotFound(format!("{id} (no vector; run a repair)"))
                        })?;
                        (VectorSpace::Text, v, Some(*id))
                    }
                }
            }
            Example::Audio { samples, sample_rate } => (
                VectorSpace::Speaker,
                crate::speaker::fingerprint(samples, *sample_rate, "example audio")?,
                None,
            ),
        };
        let limit = (k + 1).min(MAX_CANDIDATES);
        let found = self.vectors.search(space, &query, filter, limit, SearchMode::Indexed)?;
        let ranked: Vec<(ItemId, f64)> = found
            .iter()
            .filter(|h| Some(h.id) != exclude)
            .map(|h| (h.id, f64::from(h.score)))
            .collect();
        let ranks: HashMap<ItemId, Rank> = found
            .iter()
            .filter(|h| Some(h.id) != exclude)
            .enumerate()
            .map(|(i, h)| (h.id, Rank { rank: i + 1, score: h.score }))
            .collect();
        self.hydrate(ranked, k, |id| MatchReason {
            bm25: None,
            vector: ranks.get(&id).copied(),
            space,
        })
    }
}
