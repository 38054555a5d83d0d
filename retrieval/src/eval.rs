//! Retrieval quality on a labelled set: recall@k per retriever.
//!
//! The set lives in `retrieval/tests/fixtures/quality/`:
//! - `items.jsonl`: one [`LabelledItem`] per line (metadata only: quality is about text);
//! - `queries.jsonl`: one [`LabelledQuery`] per line, written as people ask, in English and
//!   Chinese, each with the keys of the items that answer it.
//!
//! Recall@k of a query is the fraction of its relevant items among the top k hits; a set's
//! recall is the mean over queries. `cargo run -p voxloop-retrieval --example recall` prints it
//! per retriever; `retrieval/tests/quality.rs` checks hybrid ≥ max(BM25, vector).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::index::{AudioIndex, NewItem};
use crate::item::{AgeBand, Attributes, AudioItem, Gender, ItemId, ItemKind};
use crate::search::{Retriever, SearchRequest};
use crate::{Error, Result};

/// An item of the labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledItem {
    /// Unique key, referenced by queries.
    pub key: String,
    /// Timbre or sound.
    pub kind: ItemKind,
    /// Description.
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Transcript.
    #[serde(default)]
    pub transcript: Option<String>,
    /// Gender.
    #[serde(default)]
    pub gender: Option<Gender>,
    /// Age band.
    #[serde(default)]
    pub age: Option<AgeBand>,
    /// Language.
    #[serde(default)]
    pub language: Option<String>,
    /// Style.
    #[serde(default)]
    pub style: Option<String>,
    /// Source.
    #[serde(default)]
    pub source: Option<String>,
}

impl LabelledItem {
    /// The item's id: the content hash of its key (the set has no audio files).
    pub fn id(&self) -> ItemId {
        ItemId::from_content(self.key.as_bytes())
    }

    /// As an indexable item (a placeholder path, 3 s at 16 kHz).
    pub fn to_item(&self) -> AudioItem {
        AudioItem {
            id: self.id(),
            kind: self.kind,
            path: PathBuf::from(format!("quality/{}.wav", self.key)),
            duration_s: 3.0,
            sample_rate: 16_000,
            description: self.description.clone(),
            tags: self.tags.clone(),
            transcript: self.transcript.clone(),
            attributes: Attributes {
                gender: self.gender,
                age: self.age,
                language: self.language.clone(),
                style: self.style.clone(),
                source: self.source.clone(),
                license: None,
            },
            aliases: Vec::new(),
            caption: None,
        }
    }
}

/// A query of the labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledQuery {
    /// The query as a person would type or say it.
    pub query: String,
    /// Keys of the items that answer it.
    pub relevant: Vec<String>,
}

/// The labelled set.
#[derive(Debug, Clone)]
pub struct LabelledSet {
    /// Items.
    pub items: Vec<LabelledItem>,
    /// Queries.
    pub queries: Vec<LabelledQuery>,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Manifest {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

impl LabelledSet {
    /// Reads `items.jsonl` and `queries.jsonl` from `dir`, checking that every relevant key
    /// names an item and that keys are unique.
    pub fn load(dir: &Path) -> Result<Self> {
        let items: Vec<LabelledItem> = read_lines(&dir.join("items.jsonl"))?;
        let queries: Vec<LabelledQuery> = read_lines(&dir.join("queries.jsonl"))?;
        let mut seen = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if seen.insert(item.key.as_str(), i).is_some() {
                return Err(Error::Manifest {
                    path: dir.join("items.jsonl"),
                    line: i + 1,
                    message: format!("duplicate key {:?}", item.key),
                });
            }
        }
        for (i, q) in queries.iter().enumerate() {
            if let Some(bad) = q.relevant.iter().find(|k| !seen.contains_key(k.as_str())) {
                return Err(Error::Manifest {
                    path: dir.join("queries.jsonl"),
                    line: i + 1,
                    message: format!("relevant key {bad:?} is not an item"),
                });
            }
            if q.relevant.is_empty() {
                return Err(Error::Manifest {
                    path: dir.join("queries.jsonl"),
                    line: i + 1,
                    message: "no relevant item".into(),
                });
            }
        }
        Ok(Self { items, queries })
    }

    /// Adds every item to `index`.
    pub fn index_into(&self, index: &AudioIndex) -> Result<()> {
        let items =
            self.items.iter().map(|i| NewItem { item: i.to_item(), speaker: None }).collect();
        index.add(items)?;
        Ok(())
    }

    /// Per-query recall@k and the keys returned, for one retriever.
    pub fn evaluate(
        &self,
        index: &AudioIndex,
        retriever: Retriever,
        k: usize,
    ) -> Result<Evaluation> {
        let key_of: HashMap<ItemId, &str> =
            self.items.iter().map(|i| (i.id(), i.key.as_str())).collect();
        let mut per_query = Vec::with_capacity(self.queries.len());
        for q in &self.queries {
            let hits =
                index.search(&SearchRequest::new(q.query.clone(), k).with_retriever(retriever))?;
            let returned: Vec<String> = hits
                .iter()
                .map(|h| {
                    key_of.get(&h.item.id).map_or_else(|| h.item.id.to_string(), |k| k.to_string())
                })
                .collect();
            let found = q.relevant.iter().filter(|r| returned.contains(r)).count();
            per_query.push(QueryResult {
                query: q.query.clone(),
                recall: found as f64 / q.relevant.len() as f64,
                returned,
            });
        }
        let recall =
            per_query.iter().map(|q| q.recall).sum::<f64>() / per_query.len().max(1) as f64;
        Ok(Evaluation { retriever, k, recall, per_query })
    }
}

/// One query's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// The query.
    pub query: String,
    /// Its recall@k.
    pub recall: f64,
    /// Keys of the top-k hits, best first.
    pub returned: Vec<String>,
}

/// A retriever's outcome on the set.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The retriever.
    pub retriever: Retriever,
    /// The cut-off.
    pub k: usize,
    /// Mean recall@k over queries.
    pub recall: f64,
    /// Per query.
    pub per_query: Vec<QueryResult>,
}
