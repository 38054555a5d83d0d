//! [`AudioIndex`]: the text index and the vector store kept consistent, and searched together.
//!
//! ## Layout (under the index directory)
//!
//! | path | what |
//! |---|---|
//! | `meta.json` | format version, text embedder id and dimension, speaker fingerprint id and dimension, the vector store's directory name |
//! | `text/` | the Tantivy index ([`TextIndex`]) |
//! | `vectors/` | the qdrant-edge shard ([`EdgeStore`]); after a re-embedding `vectors-<hash>/` (see [`AudioIndex::reembed`]) |
//! | `write.pending` | present while a write is in progress (see below) |
//!
//! ## Consistency protocol: an item is visible in both stores or in neither
//!
//! The Tantivy document is the item's **commit record**: an item exists exactly when its
//! document is committed. Searches only return items whose document exists (vector hits are
//! hydrated from Tantivy, and ids it lacks are dropped), so a half-written item is never
//! visible.
//!
//! - **Add / update** a batch: (1) create `write.pending`; (2) upsert the vectors (durable on
//!   return: the edge store flushes each write); (3) commit the Tantivy documents, all in one commit; (4) remove
//!   `write.pending`. A crash before (3) leaves vectors without documents (orphans, invisible);
//!   a crash after (3) leaves a complete batch.
//! - **Remove**: (1) `write.pending`; (2) commit the Tantivy deletions; (3) delete the vectors;
//!   (4) remove the marker. A crash between (2) and (3) leaves orphans, invisible.
//! - **Repair on open** ([`AudioIndex::reconcile`]), when `write.pending` exists (or when asked):
//!   delete every vector whose id has no document; re-embed and upsert every document that has
//!   no vector (possible only if the OS lost WAL pages that Tantivy had already fsynced, e.g.
//!   power loss). Then remove the marker. Re-running the interrupted ingestion completes it:
//!   ids come from content hashes, so items already committed are recognised and skipped.
//!
//! A single writer is guaranteed by Tantivy's directory lock, taken when the index opens (a
//! second process gets [`Error::Locked`]); within a process, writes are serialised by a mutex,
//! and searches run concurrently with them.
//!
//! ## Blocking
//!
//! Every method blocks (disk, HNSW, libtorch). From async code use
//! `tokio::task::spawn_blocking`; share the index with an `Arc` (it is `Send + Sync`).

mod query;
mod reembed;
mod room;

pub use room::{OPEN_FREE_BYTES, WRITE_FREE_BYTES};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::embed::TextEmbedder;
use crate::item::{AudioItem, ItemId, ItemKind};
use crate::speaker::{SPEAKER_DIM, SPEAKER_ID};
use crate::text_index::TextIndex;
use crate::vector::{EdgeStore, VectorConfig, VectorPoint, VectorStore};
use crate::{Error, Result};

pub use reembed::{ReembedProgress, ReembedReport};

/// Version of the on-disk layout and schema.
pub const FORMAT_VERSION: u32 = 1;
const META_FILE: &str = "meta.json";
const PENDING_FILE: &str = "write.pending";

/// What `meta.json` records: an index only opens with the embedder it was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// [`FORMAT_VERSION`] at creation.
    pub format: u32,
    /// [`TextEmbedder::id`] of the text embedder.
    pub text_embedder: String,
    /// Its dimension.
    pub text_dim: usize,
    /// The speaker fingerprint's id ([`SPEAKER_ID`]).
    pub speaker_embedder: String,
    /// Its dimension.
    pub speaker_dim: usize,
    /// The vector store's directory inside the index directory: `vectors` until a
    /// re-embedding writes a new store beside it (absent from older metadata files).
    #[serde(default = "default_vectors_dir", skip_serializing_if = "is_default_vectors_dir")]
    pub vectors_dir: String,
}

const DEFAULT_VECTORS_DIR: &str = "vectors";

fn default_vectors_dir() -> String {
    DEFAULT_VECTORS_DIR.to_string()
}

fn is_default_vectors_dir(name: &String) -> bool {
    name == DEFAULT_VECTORS_DIR
}

impl IndexMeta {
    /// The metadata of a new index with `embedder`.
    fn new_for(embedder: &dyn TextEmbedder, vectors_dir: String) -> Self {
        Self {
            format: FORMAT_VERSION,
            text_embedder: embedder.id().to_string(),
            text_dim: embedder.dim(),
            speaker_embedder: SPEAKER_ID.to_string(),
            speaker_dim: SPEAKER_DIM,
            vectors_dir,
        }
    }

    /// Whether the format and speaker fingerprint are this build's: only the text embedder
    /// may then differ, which [`AudioIndex::reembed`] can fix.
    fn same_layout(&self) -> bool {
        self.format == FORMAT_VERSION
            && self.speaker_embedder == SPEAKER_ID
            && self.speaker_dim == SPEAKER_DIM
    }

    /// Whether the index's text vectors are `embedder`'s.
    fn text_matches(&self, embedder: &dyn TextEmbedder) -> bool {
        embedder.accepts(&self.text_embedder) && self.text_dim == embedder.dim()
    }
}

/// How to open an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// Run [`AudioIndex::reconcile`] on open if a write was interrupted (default true).
    pub repair: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self { repair: true }
    }
}

/// An item to add, with its optional speaker fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    /// The item (normalised on add).
    pub item: AudioItem,
    /// Its `speaker` vector, if it is a voice.
    pub speaker: Option<Vec<f32>>,
}

/// What [`AudioIndex::add`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddReport {
    /// New ids.
    pub added: usize,
    /// Ids already present whose metadata changed (replaced).
    pub updated: usize,
    /// Ids already present with identical metadata (nothing written).
    pub unchanged: usize,
    /// Entries whose audio another entry (another path) already has: kept as aliases of that
    /// item (see [`AudioItem::merge`]).
    pub merged: usize,
    /// Those entries: each merged path and the path of the item it joined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merges: Vec<Merge>,
}

/// An entry kept as an alias of an item with the same audio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merge {
    /// The entry's file.
    pub path: PathBuf,
    /// The file of the item it joined.
    pub into: PathBuf,
}

/// What [`AudioIndex::reconcile`] repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Vectors without a document, deleted.
    pub orphans_deleted: usize,
    /// Documents without a vector, re-embedded.
    pub vectors_restored: usize,
}

/// The two stores compared, without changing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Live Tantivy documents.
    pub text_docs: usize,
    /// Distinct ids among them.
    pub text_ids: usize,
    /// Points in the vector store.
    pub vector_points: usize,
    /// Ids with a vector but no document.
    pub orphan_vectors: Vec<ItemId>,
    /// Ids with a document but no vector.
    pub missing_vectors: Vec<ItemId>,
    /// Ids with more than one document.
    pub duplicate_docs: Vec<ItemId>,
    /// Whether an interrupted write's marker is present.
    pub write_pending: bool,
}

impl Audit {
    /// Every item present once in both stores, nothing else in either.
    pub fn is_consistent(&self) -> bool {
        self.orphan_vectors.is_empty()
            && self.missing_vectors.is_empty()
            && self.duplicate_docs.is_empty()
            && self.text_docs == self.vector_points
    }
}

/// Counts for `voxloop index stats`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    /// The index directory (`None` in memory).
    pub dir: Option<PathBuf>,
    /// Items (committed documents).
    pub items: u64,
    /// Points in the vector store.
    pub vector_points: usize,
    /// The vector backend.
    pub backend: &'static str,
    /// The text embedder.
    pub text_embedder: String,
    /// Entries kept as aliases of an item with the same audio.
    pub merged_entries: u64,
    /// Per keyword field, items per value.
    pub values: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

/// A query by example: nearest voices to an indexed item or to audio samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// An indexed item: its `speaker` vector if it has one, else its `text` vector.
    Item(ItemId),
    /// Mono samples and their rate (a decoded WAV): compared by speaker fingerprint.
    Audio {
        /// The samples.
        samples: Vec<f32>,
        /// Their sample rate in Hz.
        sample_rate: u32,
    },
}

/// The audio index. See the module docs.
#[derive(Debug)]
pub struct AudioIndex {
    dir: Option<PathBuf>,
    text: TextIndex,
    vectors: Box<dyn VectorStore>,
    embedder: Arc<dyn TextEmbedder>,
    /// The vector store's directory name (meta's `vectors_dir`); `None` in memory.
    vectors_dir: Option<String>,
    writes: Mutex<()>,
    abort_after_vector_writes: Mutex<Option<usize>>,
}

fn write_json_atomically(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| Error::IndexMeta { path: path.to_path_buf(), message: e.to_string() })?;
    voxloop_core::fs::write_atomically(path, (json + "\n").as_bytes())
        .map_err(|e| Error::io(path, e))
}

impl AudioIndex {
    /// The metadata of the index in `dir`, if one exists there.
    pub fn read_meta(dir: &Path) -> Result<Option<IndexMeta>> {
        let path = dir.join(META_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::IndexMeta { path, message: format!("unreadable: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Opens (or creates) the index in `dir` with the embedded qdrant-edge vector store.
    ///
    /// Fails with [`Error::Locked`] if another process has it open, with
    /// [`Error::IndexMeta`] if it was built with another embedder, and with
    /// [`Error::DiskFull`] when its disk has less than [`OPEN_FREE_BYTES`] free. Repairs an interrupted write
    /// first (unless `options.repair` is false).
    pub fn open(
        dir: &Path,
        embedder: Arc<dyn TextEmbedder>,
        options: IndexOptions,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Opening the vector store writes through its memory maps too (a search on a full
        // disk died with SIGBUS as an add did).
        room::ensure_room(dir, OPEN_FREE_BYTES)?;
        // The Tantivy writer lock doubles as the lock on the whole directory: take it first.
        let text = TextIndex::open(&dir.join("text"))?;
        let meta = match Self::read_meta(dir)? {
            Some(found) if found.same_layout() && found.text_matches(embedder.as_ref()) => found,
            Some(found) if found.same_layout() => {
                return Err(Error::IndexMeta {
                    path: dir.join(META_FILE),
                    message: format!(
                        "built with text embedder {:?} ({} dims), opened with {:?} ({} dims): \
                         re-embed it with the new one (`voxloop index reembed`, \
                         AudioIndex::reembed) or use the embedder it was built with",
                        found.text_embedder,
                        found.text_dim,
                        embedder.id(),
                        embedder.dim()
                    ),
                })
            }
            Some(found) => {
                let wanted = IndexMeta::new_for(embedder.as_ref(), found.vectors_dir.clone());
                return Err(Error::IndexMeta {
                    path: dir.join(META_FILE),
                    message: format!(
                        "built with format {} / text embedder {:?} ({} dims) / speaker {:?} ({} \
                         dims), opened with format {} / {:?} ({} dims) / {:?} ({} dims); use a \
                         new index directory",
                        found.format,
                        found.text_embedder,
                        found.text_dim,
                        found.speaker_embedder,
                        found.speaker_dim,
                        wanted.format,
                        wanted.text_embedder,
                        wanted.text_dim,
                        wanted.speaker_embedder,
                        wanted.speaker_dim
                    ),
                });
            }
            None => {
                let meta = IndexMeta::new_for(embedder.as_ref(), default_vectors_dir());
                write_json_atomically(&dir.join(META_FILE), &meta)?;
                meta
            }
        };
        let config = VectorConfig { text_dim: embedder.dim(), speaker_dim: SPEAKER_DIM };
        let vectors = EdgeStore::open(&dir.join(&meta.vectors_dir), config)?;
        let index = Self {
            dir: Some(dir.to_path_buf()),
            text,
            vectors: Box::new(vectors),
            embedder,
            vectors_dir: Some(meta.vectors_dir),
            writes: Mutex::new(()),
            abort_after_vector_writes: Mutex::new(None),
        };
        if options.repair && index.write_pending() {
            let report = index.reconcile()?;
            tracing::info!(
                orphans_deleted = report.orphans_deleted,
                vectors_restored = report.vectors_restored,
                "repaired an interrupted write"
            );
        }
        Ok(index)
    }

    /// An index over given stores, with no directory (no pending-write marker): tests, other
    /// vector backends, benchmarks. The vector store's text dimension must match the embedder.
    pub fn from_parts(
        text: TextIndex,
        vectors: Box<dyn VectorStore>,
        embedder: Arc<dyn TextEmbedder>,
    ) -> Result<Self> {
        if vectors.config().text_dim != embedder.dim() {
            return Err(Error::InvalidVector {
                space: "text".into(),
                message: format!(
                    "the store holds {}-dimensional vectors but the embedder {:?} makes {}",
                    vectors.config().text_dim,
                    embedder.id(),
                    embedder.dim()
                ),
            });
        }
        Ok(Self {
            dir: None,
            text,
            vectors,
            embedder,
            vectors_dir: None,
            writes: Mutex::new(()),
            abort_after_vector_writes: Mutex::new(None),
        })
    }

    /// The index directory, if on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The text embedder.
    pub fn embedder(&self) -> &Arc<dyn TextEmbedder> {
        &self.embedder
    }

    /// The vector store.
    pub fn vectors(&self) -> &dyn VectorStore {
        self.vectors.as_ref()
    }

    /// The text index.
    pub fn text(&self) -> &TextIndex {
        &self.text
    }

    /// **Fault injection for crash tests**: abort the process (as `kill -9` would) right after
    /// the `n`-th vector write of an add, before its Tantivy commit. Never set in normal use.
    pub fn abort_after_vector_writes(&self, n: Option<usize>) {
        *self.abort_after_vector_writes.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    fn pending_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(PENDING_FILE))
    }

    /// Whether an interrupted write's marker is present.
    pub fn write_pending(&self) -> bool {
        self.pending_path().is_some_and(|p| p.exists())
    }

    fn mark_pending(&self) -> Result<()> {
        if let Some(dir) = &self.dir {
            room::ensure_room(dir, WRITE_FREE_BYTES)?;
        }
        if let Some(p) = self.pending_path() {
            std::fs::write(&p, b"").map_err(|e| Error::io(&p, e))?;
        }
        // A re-embedding cut short must not be resumed over items this write changes.
        if let (Some(dir), Some(active)) = (&self.dir, &self.vectors_dir) {
            reembed::discard_partial(dir, active, None)?;
        }
        Ok(())
    }

    fn clear_pending(&self) -> Result<()> {
        if let Some(p) = self.pending_path() {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
        Ok(())
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn embed_items(&self, items: &[&AudioItem]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = items.iter().map(|i| i.embedding_text()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.embedder.embed(&refs)
    }

    /// Adds or updates items (one consistent batch; see the module docs). Items whose id is
    /// already indexed with identical metadata are skipped without embedding; within the batch
    /// the last item with a given id wins.
    pub fn add(&self, items: Vec<NewItem>) -> Result<AddReport> {
        let mut report = AddReport::default();
        // Entries of one audio: the first path's entry is the item, the others its aliases;
        // a later entry of the same path replaces that path's metadata.
        let mut by_id: BTreeMap<ItemId, NewItem> = BTreeMap::new();
        for mut new in items {
            new.item = new.item.normalized()?;
            match by_id.get_mut(&new.item.id) {
                Some(first) if first.item.path != new.item.path => {
                    first.item.merge(&new.item);
                    report.merged += 1;
                    report
                        .merges
                        .push(Merge { path: new.item.path, into: first.item.path.clone() });
                }
                _ => {
                    by_id.insert(new.item.id, new);
                }
            }
        }
        let _writing = self.lock_writes();
        let ids: Vec<ItemId> = by_id.keys().copied().collect();
        let existing = self.text.get_many(&ids)?;
        let mut todo: Vec<NewItem> = Vec::new();
        for (id, mut new) in by_id {
            let Some(old) = existing.get(&id) else {
                report.added += 1;
                todo.push(new);
                continue;
            };
            if old.path == new.item.path {
                // The same entry again: its metadata replaces the old, its aliases stay.
                let mut aliases = old.aliases.clone();
                for alias in std::mem::take(&mut new.item.aliases) {
                    match aliases.iter_mut().find(|a| a.path == alias.path) {
                        Some(kept) => *kept = alias,
                        None => aliases.push(alias),
                    }
                }
                new.item.aliases = aliases;
                if *old == new.item {
                    report.unchanged += 1;
                } else {
                    report.updated += 1;
                    todo.push(new);
                }
                continue;
            }
            // Another entry of audio already indexed: an alias of the indexed item.
            let mut merged = old.clone();
            let mut changed = merged.merge(&new.item);
            for alias in &new.item.aliases {
                let entry = AudioItem {
                    path: alias.path.clone(),
                    description: alias.description.clone(),
                    tags: alias.tags.clone(),
                    aliases: Vec::new(),
                    caption: None,
                    ..old.clone()
                };
                changed |= alias.path != merged.path && merged.merge(&entry);
            }
            if changed {
                report.merged += 1;
                report.merges.push(Merge { path: new.item.path.clone(), into: old.path.clone() });
                todo.push(NewItem { item: merged.normalized()?, speaker: new.speaker });
            } else {
                report.unchanged += 1;
            }
        }
        if todo.is_empty() {
            return Ok(report);
        }
        let vectors = self.embed_items(&todo.iter().map(|n| &n.item).collect::<Vec<_>>())?;
        let points: Vec<VectorPoint> = todo
            .iter()
            .zip(vectors)
            .map(|(n, v)| VectorPoint::for_item(&n.item, v, n.speaker.clone()))
            .collect();
        self.mark_pending()?;
        self.vectors.upsert(&points)?;
        self.maybe_abort();
        let items: Vec<AudioItem> = todo.into_iter().map(|n| n.item).collect();
        self.text.write(&items, &[])?;
        self.clear_pending()?;
        Ok(report)
    }

    fn maybe_abort(&self) {
        let mut left = self.abort_after_vector_writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = left.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                eprintln!("fault injection: aborting after a vector write, before the text commit");
                std::process::abort();
            }
        }
    }

    /// Removes items; returns how many of `ids` were present. See the module docs.
    pub fn remove(&self, ids: &[ItemId]) -> Result<usize> {
        let _writing = self.lock_writes();
        let present = self.text.get_many(ids)?.len();
        self.mark_pending()?;
        self.text.write(&[], ids)?;
        self.vectors.delete(ids)?;
        self.clear_pending()?;
        Ok(present)
    }

    /// The stored item `id`.
    pub fn get(&self, id: ItemId) -> Result<Option<AudioItem>> {
        self.text.get(id)
    }

    /// Compares the two stores without changing anything.
    pub fn audit(&self) -> Result<Audit> {
        let text_ids = self.text.ids()?;
        let mut duplicate_docs: Vec<ItemId> =
            text_ids.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
        duplicate_docs.dedup();
        let text_set: BTreeSet<ItemId> = text_ids.iter().copied().collect();
        let vec_set: BTreeSet<ItemId> = self.vectors.ids()?.into_iter().collect();
        Ok(Audit {
            text_docs: text_ids.len(),
            text_ids: text_set.len(),
            vector_points: self.vectors.count()?,
            orphan_vectors: vec_set.difference(&text_set).copied().collect(),
            missing_vectors: text_set.difference(&vec_set).copied().collect(),
            duplicate_docs,
            write_pending: self.write_pending(),
        })
    }

    /// Makes the stores agree (see the module docs) and clears the pending-write marker.
    pub fn reconcile(&self) -> Result<RepairReport> {
        let _writing = self.lock_writes();
        if let Some(dir) = &self.dir {
            room::ensure_room(dir, WRITE_FREE_BYTES)?;
        }
        let audit = self.audit()?;
        self.vectors.delete(&audit.orphan_vectors)?;
        let missing = self.text.get_many(&audit.missing_vectors)?;
        let mut items: Vec<&AudioItem> = missing.values().collect();
        items.sort_by_key(|i| i.id);
        if !items.is_empty() {
            let vectors = self.embed_items(&items)?;
            let points: Vec<VectorPoint> = items
                .iter()
                .zip(vectors)
                .map(|(item, v)| VectorPoint::for_item(item, v, restore_speaker(item)))
                .collect();
            self.vectors.upsert(&points)?;
        }
        self.vectors.flush()?;
        self.clear_pending()?;
        Ok(RepairReport {
            orphans_deleted: audit.orphan_vectors.len(),
            vectors_restored: items.len(),
        })
    }

    /// Builds the vector store's search index (HNSW) after a bulk load. Blocks.
    pub fn optimize(&self) -> Result<()> {
        let _writing = self.lock_writes();
        self.vectors.optimize()
    }

    /// Counts per field value, items and points.
    pub fn stats(&self) -> Result<IndexStats> {
        Ok(IndexStats {
            dir: self.dir.clone(),
            items: self.text.num_docs(),
            vector_points: self.vectors.count()?,
            backend: self.vectors.backend(),
            text_embedder: self.embedder.id().to_string(),
            merged_entries: self.text.alias_count()?,
            values: self.text.facet_counts()?,
        })
    }
}

/// The speaker fingerprint of a timbre item, recomputed from its file (a repair, or new
/// metadata of an indexed voice); `None` for sounds or when the file is no longer readable (the
/// text vector is written regardless).
pub fn restore_speaker(item: &AudioItem) -> Option<Vec<f32>> {
    if item.kind != ItemKind::Timbre {
        return None;
    }
    let audio = voxloop_core::audio::decode_audio(item.path.as_path(), &Default::default()).ok()?;
    crate::speaker::fingerprint(&audio.samples, audio.sample_rate, &item.path.display().to_string())
        .ok()
}
