//! The full-text side: a Tantivy index of items, scored by BM25.
//!
//! Schema (one document per item):
//!
//! | field | options | role |
//! |---|---|---|
//! | `id` | u64 `INDEXED \| FAST \| STORED` | the [`ItemId`]; join key with the vector store |
//! | `description`, `tags`, `transcript` | text, [`tokenize::ANALYZER`], freqs + positions | BM25 |
//! | `kind`, `gender`, `age`, `language`, `style`, `source`, `license` | `STRING \| FAST` | filters |
//! | `duration_ms` | u64 `INDEXED \| FAST` | duration range filter |
//! | `facets` | facet `/field/value` for each keyword field | counts for `stats` and filter checks |
//! | `item` | stored JSON of the whole [`AudioItem`] | hydrating hits |
//!
//! Text queries are built from the analyzed query terms directly (one `TermQuery` per term and
//! field, OR-ed), not through Tantivy's query parser: user and model text is never query syntax.
//! Filters are `ConstScoreQuery(…, 0)` clauses, so they select without changing BM25 scores.
//!
//! One `IndexWriter` (single-threaded, for deterministic doc ids) lives behind a mutex; each
//! [`TextIndex::write`] stages its upserts and deletes and commits them as one unit, so a batch
//! is either fully visible or not at all. Holding the writer also holds Tantivy's directory lock:
//! a second process opening the same directory gets [`Error::Locked`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::directory::error::LockError;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Facet, FacetOptions, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing,
    TextOptions, Value, FAST, STORED, STRING,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term,
};

use crate::filter::{fields, ItemFilter};
use crate::item::{AudioItem, ItemId};
use crate::tokenize::{self, ANALYZER};
use crate::{Error, Result};

/// Writer memory budget (Tantivy's per-thread minimum is 15 MB).
const WRITER_BUDGET: usize = 50_000_000;

/// The facet that counts an item's aliases (`/aliases/N`), for `stats`.
const ALIASES_FACET: &str = "aliases";

/// BM25 field boosts: description and tags count fully, the transcript (what is said, not how
/// it sounds) a bit less.
const TEXT_FIELDS: [(&str, f32); 3] = [("description", 1.0), ("tags", 1.0), ("transcript", 0.7)];

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    text: [Field; 3],
    keywords: [Field; 7],
    duration_ms: Field,
    facets: Field,
    item: Field,
}

fn schema() -> (Schema, Fields) {
    let mut sb = Schema::builder();
    let id =
        sb.add_u64_field("id", NumericOptions::default().set_indexed().set_fast().set_stored());
    let text_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let text = TEXT_FIELDS.map(|(name, _)| sb.add_text_field(name, text_opts.clone()));
    let keywords = fields::KEYWORDS.map(|name| sb.add_text_field(name, STRING | FAST));
    let duration_ms =
        sb.add_u64_field(fields::DURATION_MS, NumericOptions::default().set_indexed().set_fast());
    let facets = sb.add_facet_field("facets", FacetOptions::default());
    let item = sb.add_text_field("item", STORED);
    (sb.build(), Fields { id, text, keywords, duration_ms, facets, item })
}

/// A BM25 hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextHit {
    /// The item.
    pub id: ItemId,
    /// Its BM25 score (boosted sum over fields and terms).
    pub score: f32,
}

/// The Tantivy index of items. See the module docs.
pub struct TextIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
    label: String,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").field("at", &self.label).finish_non_exhaustive()
    }
}

impl TextIndex {
    /// Opens the index in `dir`, creating it (and `dir`) if needed, and takes its writer lock.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mmap = MmapDirectory::open(dir).map_err(|e| {
            Error::tantivy(format!("open {}", dir.display()), TantivyError::from(e))
        })?;
        let (schema, f) = schema();
        let index = Index::open_or_create(mmap, schema)
            .map_err(|e| Error::tantivy(format!("open {}", dir.display()), e))?;
        Self::with_index(index, f, dir.display().to_string())
    }

    /// A fresh index in memory (tests, benchmarks).
    pub fn in_ram() -> Result<Self> {
        let (schema, f) = schema();
        Self::with_index(Index::create_in_ram(schema), f, "<memory>".into())
    }

    fn with_index(index: Index, f: Fields, label: String) -> Result<Self> {
        index.tokenizers().register(ANALYZER, tokenize::analyzer());
        let writer = match index.writer_with_num_threads(1, WRITER_BUDGET) {
            Ok(w) => w,
            Err(TantivyError::LockFailure(LockError::LockBusy, _)) => {
                return Err(Error::Locked { path: label.into() })
            }
            Err(e) => return Err(Error::tantivy(format!("take the writer of {label}"), e)),
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| Error::tantivy(format!("open a reader on {label}"), e))?;
        Ok(Self { reader, writer: Mutex::new(writer), f, label })
    }

    fn document(&self, item: &AudioItem) -> Result<TantivyDocument> {
        let f = &self.f;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.id, item.id.0);
        doc.add_text(f.text[0], &item.description);
        for tag in &item.tags {
            doc.add_text(f.text[1], tag);
        }
        // Entries of the same audio under other names are found by their words too.
        for alias in &item.aliases {
            doc.add_text(f.text[0], &alias.description);
            for tag in &alias.tags {
                doc.add_text(f.text[1], tag);
            }
        }
        if let Some(caption) = &item.caption {
            doc.add_text(f.text[0], &caption.en);
            doc.add_text(f.text[0], &caption.zh);
        }
        if !item.aliases.is_empty() {
            let count = item.aliases.len().to_string();
            doc.add_facet(f.facets, Facet::from_path([ALIASES_FACET, count.as_str()]));
        }
        if let Some(t) = &item.transcript {
            doc.add_text(f.text[2], t);
        }
        let a = &item.attributes;
        let values: [Option<&str>; 7] = [
            Some(item.kind.as_str()),
            a.gender.map(|g| g.as_str()),
            a.age.map(|g| g.as_str()),
            a.language.as_deref(),
            a.style.as_deref(),
            a.source.as_deref(),
            a.license.as_deref(),
        ];
        for ((field, name), value) in f.keywords.iter().zip(fields::KEYWORDS).zip(values) {
            if let Some(v) = value {
                doc.add_text(*field, v);
                doc.add_facet(f.facets, Facet::from_path([name, v]));
            }
        }
        doc.add_u64(f.duration_ms, item.duration_ms());
        let json = serde_json::to_string(item).map_err(|e| Error::InvalidItem {
            item: item.id.to_string(),
            message: format!("cannot serialise: {e}"),
        })?;
        doc.add_text(f.item, json);
        Ok(doc)
    }

    /// Replaces the documents of `upserts` (by id) and deletes `deletes`, as one commit, then
    /// makes the result visible to searches. On failure nothing of it is visible.
    pub fn write(&self, upserts: &[AudioItem], deletes: &[ItemId]) -> Result<()> {
        let docs = upserts.iter().map(|i| self.document(i)).collect::<Result<Vec<_>>>()?;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let staged = (|| -> tantivy::Result<()> {
            for id in deletes.iter().chain(upserts.iter().map(|i| &i.id)) {
                writer.delete_term(Term::from_field_u64(self.f.id, id.0));
            }
            for doc in docs {
                writer.add_document(doc)?;
            }
            writer.commit()?;
            Ok(())
        })();
        if let Err(e) = staged {
            // Drop whatever was staged so the next batch does not commit it.
            let _ = writer.rollback();
            return Err(Error::tantivy(format!("commit to {}", self.label), e));
        }
        drop(writer);
        self.reader.reload().map_err(|e| Error::tantivy(format!("reload {}", self.label), e))
    }

    /// Number of (live) documents.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The id of every live document, ascending, with repeats if an id has several documents
    /// (which [`TextIndex::write`] never produces; audits look for it).
    pub fn ids(&self) -> Result<Vec<ItemId>> {
        let searcher = self.reader.searcher();
        let mut ids = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let column = segment
                .fast_fields()
                .u64("id")
                .map_err(|e| Error::tantivy(format!("read ids of {}", self.label), e))?;
            for doc in segment.doc_ids_alive() {
                if let Some(id) = column.first(doc) {
                    ids.push(ItemId(id));
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn item_at(&self, searcher: &tantivy::Searcher, addr: DocAddress) -> Result<AudioItem> {
        let doc: TantivyDocument = searcher
            .doc(addr)
            .map_err(|e| Error::tantivy(format!("read a document of {}", self.label), e))?;
        let json = doc.get_first(self.f.item).and_then(|v| v.as_str()).unwrap_or_default();
        serde_json::from_str(json).map_err(|e| Error::IndexMeta {
            path: self.label.clone().into(),
            message: format!("a stored item does not parse: {e}"),
        })
    }

    /// The stored items for `ids` (absent ids are left out).
    pub fn get_many(&self, ids: &[ItemId]) -> Result<HashMap<ItemId, AudioItem>> {
        let searcher = self.reader.searcher();
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            let q = TermQuery::new(Term::from_field_u64(self.f.id, id.0), IndexRecordOption::Basic);
            let top = searcher
                .search(&q, &TopDocs::with_limit(1).order_by_score())
                .map_err(|e| Error::tantivy(format!("look up {id}"), e))?;
            if let Some((_, addr)) = top.first() {
                out.insert(*id, self.item_at(&searcher, *addr)?);
            }
        }
        Ok(out)
    }

    /// The stored item `id`, if present.
    pub fn get(&self, id: ItemId) -> Result<Option<AudioItem>> {
        Ok(self.get_many(&[id])?.remove(&id))
    }

    fn filter_clauses(&self, filter: &ItemFilter) -> Vec<(Occur, Box<dyn Query>)> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (name, value) in filter.keyword_conditions() {
            if let Some(i) = fields::KEYWORDS.iter().position(|f| *f == name) {
                let term = Term::from_field_text(self.f.keywords[i], &value);
                let q = TermQuery::new(term, IndexRecordOption::Basic);
                clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(q), 0.0))));
            }
        }
        let (lo, hi) = filter.duration_ms_range();
        if lo.is_some() || hi.is_some() {
            let bound = |v: Option<u64>| {
                v.map_or(Bound::Unbounded, |v| {
                    Bound::Included(Term::from_field_u64(self.f.duration_ms, v))
                })
            };
            let q = RangeQuery::new(bound(lo), bound(hi));
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(q), 0.0))));
        }
        clauses
    }

    /// The `limit` best BM25 matches of `text` that pass `filter`, best first (ties by id).
    /// A text with no searchable term (only stop words or punctuation) matches nothing.
    pub fn search(&self, text: &str, filter: &ItemFilter, limit: usize) -> Result<Vec<TextHit>> {
        let terms = tokenize::terms(text);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, (_, boost)) in self.f.text.iter().zip(TEXT_FIELDS) {
            for t in &terms {
                let q =
                    TermQuery::new(Term::from_field_text(*field, t), IndexRecordOption::WithFreqs);
                should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let mut clauses = self.filter_clauses(filter);
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(should))));
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(|e| Error::tantivy(format!("search {}", self.label), e))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let column = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("id")
                .map_err(|e| Error::tantivy(format!("read ids of {}", self.label), e))?;
            if let Some(id) = column.first(addr.doc_id) {
                hits.push(TextHit { id: ItemId(id), score });
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(hits)
    }

    /// How many documents pass `filter`.
    pub fn count(&self, filter: &ItemFilter) -> Result<usize> {
        let mut clauses = self.filter_clauses(filter);
        clauses.push((Occur::Must, Box::new(tantivy::query::AllQuery)));
        let searcher = self.reader.searcher();
        searcher
            .search(&BooleanQuery::new(clauses), &Count)
            .map_err(|e| Error::tantivy(format!("count {}", self.label), e))
    }

    /// For each keyword field, how many documents have each value.
    /// How many entries are kept as aliases of other items (their sum over the items).
    pub fn alias_count(&self) -> Result<u64> {
        let mut collector = FacetCollector::for_field("facets");
        collector.add_facet(Facet::from_path([ALIASES_FACET]));
        let counts = self
            .reader
            .searcher()
            .search(&tantivy::query::AllQuery, &collector)
            .map_err(|e| Error::tantivy(format!("count the aliases of {}", self.label), e))?;
        Ok(counts
            .get(Facet::from_path([ALIASES_FACET]))
            .filter_map(|(facet, items)| {
                facet.to_path().last().and_then(|n| n.parse::<u64>().ok()).map(|n| n * items)
            })
            .sum())
    }

    pub fn facet_counts(&self) -> Result<BTreeMap<&'static str, BTreeMap<String, u64>>> {
        let mut collector = FacetCollector::for_field("facets");
        for name in fields::KEYWORDS {
            collector.add_facet(Facet::from_path([name]));
        }
        let searcher = self.reader.searcher();
        let counts = searcher
            .search(&tantivy::query::AllQuery, &collector)
            .map_err(|e| Error::tantivy(format!("count facets of {}", self.label), e))?;
        let mut out = BTreeMap::new();
        for name in fields::KEYWORDS {
            let values: BTreeMap<String, u64> = counts
                .get(Facet::from_path([name]))
                .filter_map(|(facet, n)| facet.to_path().last().map(|v| (v.to_string(), n)))
                .collect();
            out.insert(name, values);
        }
        Ok(out)
    }
}
