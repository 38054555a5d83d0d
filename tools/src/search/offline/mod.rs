//! [`OfflineSearch`]: `web_search` over a local document collection, for air-gapped
//! deployments. The default provider.
//!
//! The collection (see the `corpus` module for the formats) is indexed with Tantivy on first use:
//! in memory, or under `index_dir`, where the index is reused until the collection's files
//! change. Title and body are tokenized with a mixed Chinese/English tokenizer (the
//! `tokenizer` module) and ranked with BM25, title matches weighted double; the snippet is the
//! passage of the body that best matches the query.

mod corpus;
mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use super::{SearchProvider, SearchResult};
use crate::config::OfflineConfig;
use crate::{Error, Result};

/// The default collection path, relative to the working directory.
pub const DEFAULT_DOCUMENTS: &str = "data/search_docs";

/// Title matches count this many times a body match.
const TITLE_BOOST: f32 = 2.0;

/// Characters of the best-matching passage shown as the snippet.
const SNIPPET_CHARS: usize = 280;

/// The file in `index_dir` that records which collection the index was built from.
const FINGERPRINT_FILE: &str = "voxloop-collection.txt";

/// Indexing memory budget (Tantivy's minimum is 15 MB per thread).
const WRITER_BYTES: usize = 32 << 20;

/// The offline provider. The index is built on the first search.
pub struct OfflineSearch {
    documents: PathBuf,
    index_dir: Option<PathBuf>,
    index: tokio::sync::OnceCell<Arc<Loaded>>,
}

impl std::fmt::Debug for OfflineSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineSearch")
            .field("documents", &self.documents)
            .field("index_dir", &self.index_dir)
            .field("built", &self.index.initialized())
            .finish()
    }
}

struct Loaded {
    reader: IndexReader,
    fields: Fields,
    documents: usize,
}

#[derive(Clone, Copy)]
struct Fields {
    title: Field,
    body: Field,
    url: Field,
    date: Field,
    source: Field,
}

impl OfflineSearch {
    /// A provider over the collection at `documents` (a directory or a `.jsonl` file),
    /// indexed in memory.
    pub fn new(documents: impl Into<PathBuf>) -> Self {
        Self { documents: documents.into(), index_dir: None, index: tokio::sync::OnceCell::new() }
    }

    /// The provider a `[tools.web_search.offline]` table describes.
    pub fn from_config(config: &OfflineConfig) -> Self {
        let documents = config.documents.clone().unwrap_or_else(|| DEFAULT_DOCUMENTS.into());
        let mut provider = Self::new(documents);
        provider.index_dir = config.index_dir.clone();
        provider
    }

    /// Keeps the index in `dir` (created if missing; it must be empty or hold an index
    /// this provider wrote).
    #[must_use]
    pub fn with_index_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.index_dir = Some(dir.into());
        self
    }

    /// Builds (or opens) the index now instead of on the first search; returns how many
    /// documents it holds.
    pub async fn prepare(&self) -> Result<usize> {
        Ok(self.loaded().await?.documents)
    }

    async fn loaded(&self) -> Result<&Arc<Loaded>> {
        self.index
            .get_or_try_init(|| async {
                let documents = self.documents.clone();
                let index_dir = self.index_dir.clone();
                tokio::task::spawn_blocking(move || build(&documents, index_dir.as_deref()))
                    .await
                    .map_err(|e| Error::Background {
                        what: "offline search index build",
                        detail: e.to_string(),
                    })?
                    .map(Arc::new)
            })
            .await
    }
}

#[async_trait::async_trait]
impl SearchProvider for OfflineSearch {
    fn name(&self) -> &'static str {
        "offline search"
    }

    async fn search(&self, query: &str, max_results: usize) -> Result<Vec<SearchResult>> {
        let loaded = Arc::clone(self.loaded().await?);
        let query = query.to_owned();
        tokio::task::spawn_blocking(move || loaded.search(&query, max_results))
            .await
            .map_err(|e| Error::Background { what: "offline search", detail: e.to_string() })?
    }
}

fn index_error(location: &str) -> impl FnOnce(tantivy::TantivyError) -> Error + '_ {
    move |source| Error::Index { location: location.to_owned(), source }
}

/// Loads the collection and builds or reopens its index.
fn build(documents: &Path, index_dir: Option<&Path>) -> Result<Loaded> {
    let (docs, fingerprint) = corpus::load(documents)?;
    let mut schema = Schema::builder();
    let text = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer::TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        title: schema.add_text_field("title", text.clone()),
        body: schema.add_text_field("body", text),
        url: schema.add_text_field("url", STORED),
        date: schema.add_text_field("date", STORED),
        source: schema.add_text_field("source", STORED),
    };
    let schema = schema.build();
    let location = match index_dir {
        Some(dir) => dir.display().to_string(),
        None => "in memory".to_owned(),
    };
    let (index, fresh) = match index_dir {
        None => (Index::create_in_ram(schema), true),
        Some(dir) => open_or_create(dir, schema, &fingerprint, &location)?,
    };
    index.tokenizers().register(tokenizer::TOKENIZER_NAME, tokenizer::analyzer());
    if fresh {
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, WRITER_BYTES)
            .map_err(index_error(&location))?;
        for doc in &docs {
            let mut tantivy_doc = TantivyDocument::default();
            tantivy_doc.add_text(fields.title, &doc.title);
            tantivy_doc.add_text(fields.body, &doc.body);
            tantivy_doc.add_text(fields.url, &doc.url);
            if let Some(date) = &doc.date {
                tantivy_doc.add_text(fields.date, date);
            }
            tantivy_doc.add_text(fields.source, &doc.source);
            writer.add_document(tantivy_doc).map_err(index_error(&location))?;
        }
        writer.commit().map_err(index_error(&location))?;
        writer.wait_merging_threads().map_err(index_error(&location))?;
        if let Some(dir) = index_dir {
            let path = dir.join(FINGERPRINT_FILE);
            std::fs::write(&path, &fingerprint).map_err(|source| Error::Io {
                what: "offline search index",
                path,
                source,
            })?;
        }
    }
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(index_error(&location))?;
    tracing::info!(documents = docs.len(), index = %location, rebuilt = fresh, "offline search index ready");
    Ok(Loaded { reader, fields, documents: docs.len() })
}

/// Opens the index in `dir` if it was built from this collection (`fresh == false`), else
/// clears what an earlier build left there and creates a new one (`fresh == true`).
fn open_or_create(
    dir: &Path,
    schema: Schema,
    fingerprint: &str,
    location: &str,
) -> Result<(Index, bool)> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what: "offline search index", path, source }
    };
    let marker = dir.join(FINGERPRINT_FILE);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    match std::fs::read_to_string(&marker) {
        Ok(previous) if previous == fingerprint => {
            if let Ok(index) = Index::open_in_dir(dir) {
                if index.schema() == schema {
                    return Ok((index, false));
                }
            }
        }
        Ok(_) => {}
        Err(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
            if entries.next().is_some() {
                return Err(Error::Config {
                    field: "tools.web_search.offline.index_dir".into(),
                    reason: format!(
                        "{} is not empty and holds no index written by voxloop; refusing to clear it",
                        dir.display()
                    ),
                });
            }
        }
    }
    std::fs::remove_dir_all(dir).map_err(io(dir))?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let index = Index::create_in_dir(dir, schema).map_err(index_error(location))?;
    Ok((index, true))
}

impl Loaded {
    fn search(&self, query: &str, max_results: usize) -> Result<Vec<SearchResult>> {
        let location = "search";
        let terms = tokenizer::terms(query);
        if terms.is_empty() || max_results == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(terms.len() * 2);
        for term in &terms {
            let body = Term::from_field_text(self.fields.body, term);
            let title = Term::from_field_text(self.fields.title, term);
            clauses.push((
                Occur::Should,
                Box::new(TermQuery::new(body, IndexRecordOption::WithFreqs)),
            ));
            let title_query = TermQuery::new(title, IndexRecordOption::WithFreqs);
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(title_query), TITLE_BOOST)),
            ));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let hits = searcher
            .search(&query, &TopDocs::with_limit(max_results).order_by_score())
            .map_err(index_error(location))?;
        let mut snippets = SnippetGenerator::create(&searcher, &query, self.fields.body)
            .map_err(index_error(location))?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut results = Vec::with_capacity(hits.len());
        for (_score, address) in hits {
            let doc: TantivyDocument = searcher.doc(address).map_err(index_error(location))?;
            let text = |field: Field| {
                doc.get_first(field).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            };
            let fragment = snippets.snippet_from_doc(&doc).fragment().trim().to_owned();
            let snippet = if fragment.is_empty() {
                crate::text::truncate_chars(&text(self.fields.body), SNIPPET_CHARS)
            } else {
                fragment
            };
            let date = text(self.fields.date);
            results.push(SearchResult {
                title: text(self.fields.title),
                url: text(self.fields.url),
                snippet,
                date: (!date.is_empty()).then_some(date),
                source: text(self.fields.source),
            });
        }
        Ok(results)
    }
}
