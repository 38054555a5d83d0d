//! Stream setups kept per voice.
//!
//! Starting a stream runs the flow over the voice's whole prompt (the encoder over the prompt
//! tokens and all Euler steps of the estimator over the prompt mel) to fill the caches every
//! chunk attends to. Upstream repeats that for every stream (`Token2wav.set_stream_cache`);
//! for the same voice the result is always the same (the flow's noise is a fixed buffer), so
//! [`Token2Wav`](crate::Token2Wav) keeps the last few setups and a stream in a voice it has
//! seen recently starts from a copy: its first chunk then costs one chunk, not a prompt plus a
//! chunk.
//!
//! Chunks never modify the caches they read (each returns new ones), so streams share a
//! setup's tensors without copying them. An entry is keyed by a fingerprint of everything the
//! setup depends on in the profile: prompt tokens, prompt mel and speaker embedding (a profile
//! replaced under the same name gets a new entry). Memory: a setup holds the prompt's share of
//! every estimator block's attention cache per Euler step, ~130 MB for the release's flow and a
//! 10-s prompt, so the default capacity is [`DEFAULT_SETUP_CACHE`] voices.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use tch::Tensor;

use crate::flow::FlowCache;
use crate::profile::VoiceProfile;

/// Voices whose stream setup is kept by default.
pub const DEFAULT_SETUP_CACHE: usize = 4;

/// A stream's flow state for one voice, right after setup or after any chunk.
#[derive(Debug)]
pub(crate) struct VoiceState {
    pub(crate) prompt_frames: i64,
    pub(crate) speaker: Tensor,
    pub(crate) cache: FlowCache,
}

impl VoiceState {
    /// Another handle on the same tensors.
    pub(crate) fn share(&self) -> Self {
        Self {
            prompt_frames: self.prompt_frames,
            speaker: self.speaker.shallow_clone(),
            cache: self.cache.shallow_clone(),
        }
    }
}

/// Hit and miss counts of the setup cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupCacheStats {
    /// Streams (or swaps) that started from a kept setup.
    pub hits: u64,
    /// Setups computed.
    pub misses: u64,
    /// Voices whose setup is kept now.
    pub voices: usize,
}

/// The most recently used setups, most recent last.
#[derive(Debug)]
pub(crate) struct SetupCache {
    inner: Mutex<Entries>,
}

#[derive(Debug)]
struct Entries {
    capacity: usize,
    kept: VecDeque<(u64, VoiceState)>,
    hits: u64,
    misses: u64,
}

impl SetupCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Entries { capacity, kept: VecDeque::new(), hits: 0, misses: 0 }) }
    }

    /// The state for `voice`: a shared copy of a kept setup, or `compute()`'s result (kept
    /// for next time when the capacity allows). The lock is not held while computing, so two
    /// first streams of one voice may both compute it; the second result replaces the first.
    pub(crate) fn get_or_compute<E>(
        &self,
        voice: &VoiceProfile,
        compute: impl FnOnce() -> Result<VoiceState, E>,
    ) -> Result<VoiceState, E> {
        let key = fingerprint(voice);
        if let Some(state) = self.with_entries(|e| e.take_hit(key)).flatten() {
            return Ok(state);
        }
        let state = compute()?;
        self.with_entries(|e| {
            e.misses += 1;
            if e.capacity > 0 {
                e.kept.retain(|(k, _)| *k != key);
                e.kept.push_back((key, state.share()));
                while e.kept.len() > e.capacity {
                    e.kept.pop_front();
                }
            }
        });
        Ok(state)
    }

    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.with_entries(|e| {
            e.capacity = capacity;
            while e.kept.len() > capacity {
                e.kept.pop_front();
            }
        });
    }

    pub(crate) fn clear(&self) {
        self.with_entries(|e| e.kept.clear());
    }

    pub(crate) fn stats(&self) -> SetupCacheStats {
        self.with_entries(|e| SetupCacheStats {
            hits: e.hits,
            misses: e.misses,
            voices: e.kept.len(),
        })
        .unwrap_or_default()
    }

    /// Runs `f` under the lock; a poisoned lock (a panic elsewhere) only means the cache is
    /// skipped.
    fn with_entries<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut entries| f(&mut entries))
    }
}

impl Entries {
    fn take_hit(&mut self, key: u64) -> Option<VoiceState> {
        let at = self.kept.iter().position(|(k, _)| *k == key)?;
        let entry = self.kept.remove(at)?;
        let state = entry.1.share();
        self.kept.push_back(entry);
        self.hits += 1;
        Some(state)
    }
}

/// Everything a setup depends on in a profile (the name is not: two names for one recording
/// share a setup).
fn fingerprint(voice: &VoiceProfile) -> u64 {
    let mut hasher = DefaultHasher::new();
    voice.prompt_tokens.hash(&mut hasher);
    voice.prompt_mel.len().hash(&mut hasher);
    for value in voice.prompt_mel.iter().flatten().chain(&voice.speaker_embedding) {
        value.to_bits().hash(&mut hasher);
    }
    hasher.finish()
}
