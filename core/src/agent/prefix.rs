//! The conversations whose KV cache can be reused: the one the model holds now, and copies of
//! earlier ones the model had to give up ([`PrefixStore`]).
//!
//! A session the cache does not hold (new, loaded, rebuilt by a stateless front door for each
//! request, or one whose cache another session took) starts from the longest run of leading
//! turns it shares with one of them: with the live conversation, by cutting the cache back; with
//! a saved one, by copying its snapshot into the cache. Only the rest is prefilled. When a turn
//! is about to cut or clear the live conversation, its cache is copied first (one copy per
//! switch, none while a conversation keeps the model), and the copies are kept most recent
//! first within a byte budget ([`AgentConfig::prefix_cache_bytes`](super::AgentConfig)).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::model::KvSnapshot;
use crate::session::{CacheState, Turn};

/// The turns a cache holds and their positions.
#[derive(Debug, Clone)]
pub(crate) struct CacheLine {
    pub(crate) turns: Vec<Turn>,
    pub(crate) cache: CacheState,
}

impl CacheLine {
    /// How many leading turns `history` shares with it (0: none).
    fn shared_turns(&self, history: &[Turn]) -> usize {
        self.turns.iter().zip(history).take_while(|(a, b)| a == b).count()
    }

    /// The cache record of the first `shared` turns (at least one).
    fn prefix(&self, shared: usize) -> CacheState {
        let cache = &self.cache;
        let end = cache.turns[shared - 1].end;
        CacheState {
            owner: cache.owner,
            epoch: cache.epoch,
            ids: cache.ids[..end].to_vec(),
            turns: cache.turns[..shared].to_vec(),
            // Only the very last turn can be an assistant turn without its `<|EOT|>`.
            open: cache.open && shared == cache.turns.len(),
        }
    }

    /// The record of what `history` shares with it, if anything.
    pub(crate) fn shared_with(&self, history: &[Turn]) -> Option<CacheState> {
        match self.shared_turns(history) {
            0 => None,
            shared => Some(self.prefix(shared)),
        }
    }
}

/// A snapshot shared between the store and a restore job on the inference thread (tensors
/// may move between threads but not be shared, hence the mutex).
pub(crate) type SharedSnapshot = Arc<Mutex<KvSnapshot>>;

/// A conversation's cache as it was when the model gave it up.
#[derive(Debug)]
struct Saved {
    line: CacheLine,
    snapshot: SharedSnapshot,
    bytes: usize,
}

/// The live conversation and the saved ones; see the module documentation.
#[derive(Debug)]
pub(crate) struct PrefixStore {
    live: Option<CacheLine>,
    /// Oldest first.
    saved: VecDeque<Saved>,
    max_bytes: usize,
    bytes: usize,
}

impl PrefixStore {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self { live: None, saved: VecDeque::new(), max_bytes, bytes: 0 }
    }

    /// Takes the record of the live conversation (until a turn ends cleanly, nobody may trust
    /// it).
    pub(crate) fn take_live(&mut self) -> Option<CacheLine> {
        self.live.take()
    }

    pub(crate) fn set_live(&mut self, line: Option<CacheLine>) {
        self.live = line;
    }

    /// Forgets the live conversation (the cache was changed behind the agent's back); the
    /// saved copies stay valid.
    pub(crate) fn forget_live(&mut self) {
        self.live = None;
    }

    /// Whether copies may be kept at all.
    pub(crate) fn saves(&self) -> bool {
        self.max_bytes > 0
    }

    /// The saved conversation `history` shares the most ids with, as its snapshot and the
    /// record of the shared turns; it becomes the most recently used.
    pub(crate) fn best_saved(&mut self, history: &[Turn]) -> Option<(SharedSnapshot, CacheState)> {
        let (index, shared) = self
            .saved
            .iter()
            .enumerate()
            .filter_map(|(i, saved)| saved.line.shared_with(history).map(|c| (i, c)))
            .max_by_key(|(_, cache)| cache.ids.len())?;
        let saved = self.saved.remove(index)?;
        let snapshot = Arc::clone(&saved.snapshot);
        self.saved.push_back(saved);
        Some((snapshot, shared))
    }

    /// Keeps a copy of `line`'s cache, dropping the least recently used copies beyond the
    /// budget (a copy larger than the whole budget is not kept).
    pub(crate) fn save(&mut self, line: CacheLine, snapshot: KvSnapshot) {
        let bytes = snapshot.bytes();
        if bytes > self.max_bytes {
            return;
        }
        // A copy whose turns the new one starts with says nothing the new one does not.
        let before = self.saved.len();
        self.saved.retain(|old| old.line.shared_turns(&line.turns) < old.line.turns.len());
        if self.saved.len() != before {
            self.bytes = self.saved.iter().map(|s| s.bytes).sum();
        }
        self.bytes += bytes;
        self.saved.push_back(Saved { line, snapshot: Arc::new(Mutex::new(snapshot)), bytes });
        while self.bytes > self.max_bytes {
            match self.saved.pop_front() {
                Some(old) => self.bytes -= old.bytes,
                None => break,
            }
        }
    }

    /// How many copies are kept and their bytes.
    pub(crate) fn saved_stats(&self) -> (usize, usize) {
        (self.saved.len(), self.bytes)
    }
}
