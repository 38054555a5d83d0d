//! The decoding loop: prefill, then sample and decode one token at a time.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{LogitsMask, Sampler, Segment, StepModel};
use crate::{Error, Result};

/// What to generate from.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    /// The ids already in the model's cache, in order (earlier turns). Its length must equal
    /// `cache_len()` when generation starts; the repetition penalty sees these ids too.
    pub cached: &'a [i64],
    /// The new segments to prefill.
    pub segments: &'a [Segment],
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was sampled. It is not in the output tokens nor in the cache.
    Stop(i64),
    /// `max_new_tokens` tokens were generated.
    Length,
    /// The cancel flag was set.
    Cancelled,
    /// The `on_token` callback returned `ControlFlow::Break` (after that token).
    Callback,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationTimings {
    /// Number of prompt ids prefilled.
    pub prompt_tokens: usize,
    /// Time in `prefill`.
    pub prefill: Duration,
    /// Time in `decode` calls, summed.
    pub decode: Duration,
    /// Time in the sampler (mask included), summed.
    pub sampling: Duration,
    /// From the start of the call until the first generated token was known.
    pub first_token: Option<Duration>,
    /// The whole call.
    pub total: Duration,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// The generated ids, stop token excluded, in order. All of them are in the cache.
    pub tokens: Vec<i64>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Timings.
    pub timings: GenerationTimings,
}

/// Prefills `prompt` and generates until a stop token, `max_new_tokens`, cancellation or a
/// `Break` from `on_token`.
///
/// - `on_token` sees each generated id (never the stop token) as soon as it is sampled,
///   before the model decodes it.
/// - `cancel` is checked before the prefill and before every sampling step; a set flag ends
///   the generation with [`FinishReason::Cancelled`].
/// - `mask` edits the logits before each draw ([`LogitsMask`]).
///
/// On success the cache holds `prompt.cached`, the prompt's ids and every id of
/// [`GenerationOutput::tokens`], in that order, whatever the finish reason: a stop token is
/// never decoded, and every other sampled token is (so the turn can be continued, or closed
/// by prefilling `<|EOT|>`). The whole call runs under `tch::no_grad_guard()`.
pub fn generate(
    model: &mut dyn StepModel,
    prompt: Prompt<'_>,
    sampler: &mut Sampler,
    mut mask: Option<&mut dyn LogitsMask>,
    cancel: &AtomicBool,
    mut on_token: impl FnMut(i64) -> ControlFlow<()>,
) -> Result<GenerationOutput> {
    let _no_grad = tch::no_grad_guard();
    let start = Instant::now();
    let mut timings = GenerationTimings::default();

    if model.cache_len() != prompt.cached.len() {
        return Err(Error::InvalidPrompt(format!(
            "the caller lists {} cached ids but the model's cache holds {} positions",
            prompt.cached.len(),
            model.cache_len()
        )));
    }
    let mut context: Vec<i64> = prompt.cached.to_vec();
    for segment in prompt.segments {
        context.extend_from_slice(segment.ids());
    }
    let prompt_tokens = context.len() - prompt.cached.len();
    timings.prompt_tokens = prompt_tokens;
    if prompt_tokens == 0 {
        return Err(Error::InvalidPrompt(
            "the prompt has no token ids (audio alone adds no position)".to_owned(),
        ));
    }

    let finish = |tokens: Vec<i64>, reason, mut timings: GenerationTimings| {
        timings.total = start.elapsed();
        Ok(GenerationOutput { tokens, finish_reason: reason, timings })
    };
    if cancel.load(Ordering::Relaxed) {
        return finish(Vec::new(), FinishReason::Cancelled, timings);
    }

    let t = Instant::now();
    let mut logits = model.prefill(prompt.segments)?;
    timings.prefill = t.elapsed();
    if model.cache_len() != context.len() {
        return Err(Error::InvalidPrompt(format!(
            "after prefilling {prompt_tokens} ids the cache holds {} positions, expected {}",
            model.cache_len(),
            context.len()
        )));
    }

    let max_new_tokens = sampler.params().max_new_tokens;
    let generated_from = context.len();
    loop {
        let step = context.len() - generated_from;
        if step >= max_new_tokens {
            return finish(context.split_off(generated_from), FinishReason::Length, timings);
        }
        if cancel.load(Ordering::Relaxed) {
            return finish(context.split_off(generated_from), FinishReason::Cancelled, timings);
        }

        let t = Instant::now();
        let token = sampler.sample(
            &logits,
            &context,
            &context[generated_from..],
            mask.as_mut().map(|m| &mut **m as &mut dyn LogitsMask),
            step,
        )?;
        timings.sampling += t.elapsed();
        if timings.first_token.is_none() {
            timings.first_token = Some(start.elapsed());
        }
        if sampler.params().is_stop(token) {
            return finish(context.split_off(generated_from), FinishReason::Stop(token), timings);
        }

        context.push(token);
        let flow = on_token(token);
        let t = Instant::now();
        logits = model.decode(token)?;
        timings.decode += t.elapsed();
        if flow.is_break() {
            return finish(context.split_off(generated_from), FinishReason::Callback, timings);
        }
    }
}
