//! [`AudioIndex::reembed`]: every item's text vector recomputed with another embedder.
//!
//! The new vectors go into a new vector store beside the old one (`vectors-<hash of the new
//! embedder id>/`); items are read from the Tantivy documents (the commit records, see the
//! module docs of [`super`]) and their speaker fingerprints copied from the old store. The
//! switch is one atomic write of `meta.json` naming the new embedder and the new store's
//! directory:
//!
//! - a crash before it leaves `meta.json`, and so the index, as they were: it opens with the old
//!   embedder and the half-built store is ignored;
//! - running `reembed` again with the same embedder resumes: items already in the half-built
//!   store are skipped (any write through the old embedder in between discards that store, so
//!   it never holds a vector of a description that has since changed);
//! - after it, the old store is deleted (a crash there leaves a directory that the next write
//!   or re-embedding removes).
//!
//! The Tantivy writer lock is held throughout, so no other process writes meanwhile.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{restore_speaker, write_json_atomically, AudioIndex, IndexMeta, META_FILE};
use super::{DEFAULT_VECTORS_DIR, PENDING_FILE};
use crate::embed::TextEmbedder;
use crate::item::ItemId;
use crate::speaker::SPEAKER_DIM;
use crate::text_index::TextIndex;
use crate::vector::{EdgeStore, VectorConfig, VectorPoint, VectorSpace, VectorStore};
use crate::{Error, Result};

/// How far a re-embedding is: `done` of `total` items have their new vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReembedProgress {
    /// Items with a new vector (including those found from an interrupted run).
    pub done: usize,
    /// Items in the index.
    pub total: usize,
}

/// What [`AudioIndex::reembed`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReembedReport {
    /// The embedder id the index had.
    pub from: String,
    /// The embedder id it has now.
    pub to: String,
    /// Items in the index.
    pub items: usize,
    /// Items embedded by this run.
    pub embedded: usize,
    /// Items an interrupted run had already embedded.
    pub resumed: usize,
    /// The index already used this embedder; nothing was done.
    pub unchanged: bool,
}

/// The directory name of the vector store for embedder `id`.
fn store_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{DEFAULT_VECTORS_DIR}-{hex}")
}

/// Removes vector stores in `dir` other than `active` and `keep`: stores of re-embeddings cut
/// short, or the old store of one that finished.
pub(super) fn discard_partial(dir: &Path, active: &str, keep: Option<&str>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_store = name == DEFAULT_VECTORS_DIR
            || name.strip_prefix(DEFAULT_VECTORS_DIR).is_some_and(|rest| rest.starts_with('-'));
        if is_store && name != active && Some(name.as_str()) != keep && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

impl AudioIndex {
    /// Recomputes every item's text vector in the index in `dir` with `embedder`, `batch` items
    /// per embedding call, reporting progress after each batch; then the index opens with
    /// `embedder` (and no longer with the old one). Atomic and resumable: see the module docs.
    ///
    /// Fails with [`Error::Locked`] if another process has the index open, and with
    /// [`Error::IndexMeta`] if there is no index or its format or speaker fingerprint differ
    /// from this build's. Blocks (it embeds every item).
    pub fn reembed(
        dir: &Path,
        embedder: Arc<dyn TextEmbedder>,
        batch: usize,
        progress: &mut dyn FnMut(ReembedProgress),
    ) -> Result<ReembedReport> {
        let meta_path = dir.join(META_FILE);
        let meta = Self::read_meta(dir)?.ok_or_else(|| Error::IndexMeta {
            path: meta_path.clone(),
            message: "no index here to re-embed".into(),
        })?;
        if !meta.same_layout() {
            return Err(Error::IndexMeta {
                path: meta_path,
                message: format!(
                    "format {} / speaker {:?} ({} dims) is not this build's: re-embedding only \
                     replaces text vectors; build a new index",
                    meta.format, meta.speaker_embedder, meta.speaker_dim
                ),
            });
        }
        // The writer lock, held until the new metadata is written.
        let text = TextIndex::open(&dir.join("text"))?;
        let mut ids = text.ids()?;
        ids.sort_unstable();
        ids.dedup();
        let total = ids.len();
        if meta.text_matches(embedder.as_ref()) {
            return Ok(ReembedReport {
                from: meta.text_embedder.clone(),
                to: meta.text_embedder,
                items: total,
                embedded: 0,
                resumed: 0,
                unchanged: true,
            });
        }
        let target = store_name(embedder.id());
        discard_partial(dir, &meta.vectors_dir, Some(&target))?;
        super::room::ensure_room(dir, super::OPEN_FREE_BYTES)?;
        let old = EdgeStore::open(
            &dir.join(&meta.vectors_dir),
            VectorConfig { text_dim: meta.text_dim, speaker_dim: SPEAKER_DIM },
        )?;
        let new = EdgeStore::open(
            &dir.join(&target),
            VectorConfig { text_dim: embedder.dim(), speaker_dim: SPEAKER_DIM },
        )?;
        let present: BTreeSet<ItemId> = new.ids()?.into_iter().collect();
        let todo: Vec<ItemId> = ids.iter().copied().filter(|id| !present.contains(id)).collect();
        let resumed = total - todo.len();
        let mut done = resumed;
        progress(ReembedProgress { done, total });
        for chunk in todo.chunks(batch.max(1)) {
            super::room::ensure_room(dir, super::WRITE_FREE_BYTES)?;
            let found = text.get_many(chunk)?;
            let items: Vec<_> = chunk.iter().filter_map(|id| found.get(id)).collect();
            let texts: Vec<String> = items.iter().map(|i| i.embedding_text()).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = embedder.embed(&refs)?;
            let mut points = Vec::with_capacity(items.len());
            for (item, v) in items.iter().zip(vectors) {
                let speaker = match old.vector(VectorSpace::Speaker, item.id)? {
                    Some(s) => Some(s),
                    None => restore_speaker(item),
                };
                points.push(VectorPoint::for_item(item, v, speaker));
            }
            new.upsert(&points)?;
            done += chunk.len();
            progress(ReembedProgress { done, total });
        }
        new.flush()?;
        new.optimize()?;
        drop(new);
        drop(old);
        // The commit point: from here on the index is the new embedder's.
        let updated = IndexMeta {
            text_embedder: embedder.id().to_string(),
            text_dim: embedder.dim(),
            vectors_dir: target.clone(),
            ..meta.clone()
        };
        write_json_atomically(&meta_path, &updated)?;
        // The new store was built from the committed documents alone, so an interrupted
        // write's leftovers (orphan vectors in the old store) are gone with the old store.
        let pending = dir.join(PENDING_FILE);
        if pending.exists() {
            std::fs::remove_file(&pending).map_err(|e| Error::io(&pending, e))?;
        }
        if let Err(e) = discard_partial(dir, &target, None) {
            tracing::warn!(error = %e, "re-embedded, but the old vector store is left behind");
        }
        drop(text);
        Ok(ReembedReport {
            from: meta.text_embedder,
            to: updated.text_embedder,
            items: total,
            embedded: total - resumed,
            resumed,
            unchanged: false,
        })
    }
}
