//! Generation: the step API a model implements ([`StepModel`]), the sampler, the decoding loop
//! ([`generate`]) and the inference thread ([`InferenceWorker`]).
//!
//! # The step API contract
//!
//! A [`StepModel`] owns one sequence and its KV cache. Positions are counted in tokens: the
//! cache holds `cache_len()` positions, each with an input id.
//!
//! - [`StepModel::prefill`] appends a prompt to whatever the cache already holds and returns
//!   the logits at the last new position. A prompt is a list of [`Segment`]s:
//!   - [`Segment::Tokens`] carries ids. The prompt's ids are the concatenation of all
//!     `Tokens` segments, in order; they are all the new positions (an empty `Tokens` adds
//!     none).
//!   - [`Segment::Audio`] carries one log-mel [`AudioChunk`] (as decoding made it and the
//!     session keeps it) and adds **no** position and no id. The prompt renderer writes the
//!     placeholders itself, inside `Tokens`: `<audio_start>`, `patches` times
//!     `<audio_patch>`, `<audio_end>`. The model runs every `Audio` segment through the
//!     encoder and adaptor (each must give exactly `patches` embeddings) and puts the
//!     resulting rows, in segment order, in place of the embeddings of the `<audio_patch>`
//!     positions, in position order. The number of `<audio_patch>` ids in the prompt must
//!     equal the sum of `patches`, or `prefill` fails and the cache is left as it was. By
//!     convention the renderer puts each `Audio` segment right after the `Tokens` segment
//!     that holds its placeholders; only the order matters.
//!
//!   After `prefill`, `cache_len()` has grown by exactly the number of prompt ids.
//! - [`StepModel::decode`] appends one id and returns the logits for the next position.
//! - [`StepModel::truncate`] drops positions from the end (`len <= cache_len()`), so a
//!   conversation can be rewound to a shared prefix and continued; [`StepModel::clear`]
//!   empties the cache.
//!
//! Logits are a 1-D float tensor of the model's (embedding) vocabulary size, on the model's
//! device. Models run their forward passes under `tch::no_grad_guard()` (the loop below also
//! holds one).

mod run;
mod sampler;
mod worker;

use tch::Tensor;

pub use run::{generate, FinishReason, GenerationOutput, GenerationTimings, Prompt};
pub use sampler::{
    allow_only_ids, forbid_ids, repetition_penalty, Candidates, LogitsMask, Sampler, SamplingParams,
};
pub use worker::{GenerationEvent, GenerationRequest, GenerationStream, InferenceWorker, Reply};

use crate::audio::AudioChunk;
use crate::model::KvSnapshot;
use crate::Result;

/// A piece of a prompt; see the module documentation.
#[derive(Debug)]
pub enum Segment {
    /// Token ids, one position each.
    Tokens(Vec<i64>),
    /// The audio behind the next `patches()` `<audio_patch>` positions; adds no position.
    Audio(AudioChunk),
}

impl Segment {
    /// The ids this segment adds (none for audio).
    pub fn ids(&self) -> &[i64] {
        match self {
            Segment::Tokens(ids) => ids,
            Segment::Audio(_) => &[],
        }
    }
}

/// A language model driven one step at a time, owning one sequence and its KV cache.
///
/// See the module documentation for the contract. Implementations are used from a single
/// thread (the [`InferenceWorker`]'s); they need not be `Send`.
pub trait StepModel {
    /// Appends `segments` to the cache and returns the logits `[vocab]` at the last new
    /// position. Fails (leaving the cache unchanged) if the segments add no position or break
    /// the audio placeholder rule.
    fn prefill(&mut self, segments: &[Segment]) -> Result<Tensor>;

    /// Appends `token` and returns the logits `[vocab]` for the next position.
    fn decode(&mut self, token: i64) -> Result<Tensor>;

    /// Number of positions in the cache.
    fn cache_len(&self) -> usize;

    /// Keeps the first `len` positions; fails if `len > cache_len()`.
    fn truncate(&mut self, len: usize) -> Result<()>;

    /// Empties the cache.
    fn clear(&mut self);

    /// A copy of the first `len` positions of the cache, to restore later; `None` when the
    /// model cannot (the default).
    fn save_prefix(&self, len: usize) -> Result<Option<KvSnapshot>> {
        let _ = len;
        Ok(None)
    }

    /// Replaces the cache with a copy [`StepModel::save_prefix`] made.
    fn restore_prefix(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        let _ = snapshot;
        Err(crate::Error::InvalidPrompt("this model cannot restore a KV snapshot".to_owned()))
    }
}
