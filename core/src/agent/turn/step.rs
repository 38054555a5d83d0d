//! One generation step of a turn: prefill what the cache lacks, generate (after a think phase
//! when the session thinks), read the ids as they come, and keep the session's record in step
//! with the model's cache whatever the outcome.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Span;

use super::reasoning::{after_think, ReasoningReader, ThinkEnd, THINK_OPEN};
use super::{commit, CallSlot, Generated, Step, TurnRun};
use crate::agent::constraints::ConstraintFactory;
use crate::agent::events::{AgentEvent, Usage};
use crate::agent::prompt::{step_prompt, StepPrompt};
use crate::agent::stream::Emitter;
use crate::agent::telemetry;
use crate::generate::{
    FinishReason, GenerationEvent, GenerationOutput, GenerationRequest, Segment,
};
use crate::protocol::{Demux, DemuxEvent, GenerationMode, ToolChoice};
use crate::session::{AssistantTurn, Session, SessionSettings, Turn};
use crate::tokenizer::{SpecialTokens, StepTokenizer, TextStream, TokenClass};
use crate::tool::ToolCall;
use crate::{Error, Result};

impl TurnRun<'_> {
    /// One generation step: prefill what the cache lacks, generate (after a think phase,
    /// when the session thinks), stream the events.
    pub(super) async fn generate(
        &mut self,
        session: &mut Session,
        step: usize,
        settings: &SessionSettings,
        choice: &ToolChoice,
    ) -> Result<Step> {
        let agent = self.agent;
        if let Some(model) = agent.remote_model() {
            return self.generate_remote(model, session, step, settings, choice).await;
        }
        let tokenizer: &StepTokenizer = &agent.tokenizer;
        let special = *tokenizer.special();
        let mode = settings.mode();
        let think = thinks(session, settings);
        // A think phase opens the turn without `<tts_start>`: that comes after `</think>`.
        let opening = if think { GenerationMode::Text } else { mode };
        let StepPrompt { mut segments, pending, ranges, closes_open, mut generation } =
            step_prompt(session, tokenizer, opening)?;
        if think {
            let open = tokenizer.encode_trusted(THINK_OPEN)?;
            generation.extend_from_slice(&open);
            segments.push(Segment::Tokens(open));
        }
        let before = session.cached_ids().len();
        let stops = vec![special.eot, special.endoftext];
        let params =
            settings.sampling.params(stops.clone(), before + pending.len() + generation.len());
        params.validate()?;
        let span = self.chat_span(session, step, mode, &params, choice, None);
        let mut usage = Usage {
            input_tokens: pending.len() + generation.len(),
            cached_tokens: before,
            ..Usage::default()
        };
        let mut cached = session.cached_ids().to_vec();
        let mut first_token = None;

        if think {
            let mut params = params.clone();
            params.max_new_tokens = settings.reasoning_max_tokens;
            let request = GenerationRequest {
                cached: cached.clone(),
                segments,
                params,
                mask: self.constraints().build_reasoning()?,
                cancel: self.cancel.flag(),
            };
            let end = ThinkEnd::new(Arc::clone(&agent.tokenizer));
            let mut reader = ReasoningReader::new(tokenizer, self.out);
            let (result, first) =
                self.run_generation(request, Some(end), |id| reader.push(id)).await;
            first_token = first;
            usage.output_tokens += reader.tokens;
            usage.reasoning_tokens += reader.tokens;
            let text = reader.finish();
            let output = match result {
                Ok(output) => output,
                Err(error) => {
                    return Err(self
                        .failed(session, before, &span, step, usage, first_token, error)
                        .await)
                }
            };
            telemetry::reasoned(&span, usage.reasoning_tokens, output.finish_reason);
            if output.finish_reason == FinishReason::Cancelled {
                let prefill = (&pending[..], &ranges[..], closes_open);
                self.keep_cancelled(session, before, prefill, None, None, &mut usage).await;
                self.end_step(&span, step, usage, "cancelled", first_token);
                return Ok(Step::Cancelled);
            }
            cached.extend_from_slice(&pending);
            cached.extend_from_slice(&generation);
            cached.extend_from_slice(&output.tokens);
            let mut close = after_think(tokenizer, &text, mode)?;
            if close.is_empty() {
                // The phase's last id already wrote `</think>\n\n` of a text answer: a prompt
                // needs an id, so that one is taken back and prefilled again.
                let last =
                    cached.pop().ok_or_else(|| Error::Agent("an empty prompt".to_owned()))?;
                let len = cached.len();
                agent.on_worker(move |model| model.truncate(len)).await??;
                close.push(last);
            }
            usage.input_tokens += close.len();
            segments = vec![Segment::Tokens(close)];
        }

        let position = cached.len() + segments.iter().map(|s| s.ids().len()).sum::<usize>();
        let params = settings.sampling.params(stops, position);
        let request = GenerationRequest {
            cached,
            segments,
            params,
            mask: self.constraints().build(choice, mode)?,
            cancel: self.cancel.flag(),
        };
        let mut reader = StepReader::new(special, tokenizer, mode, self.out);
        let (result, first) = self.run_generation(request, None, |id| reader.push(id)).await;
        first_token = first_token.or(first);
        reader.finish();
        usage.output_tokens += reader.output_tokens;
        usage.audio_tokens += reader.audio_tokens;

        let output = match result {
            Ok(output) => output,
            Err(error) => {
                return Err(self
                    .failed(session, before, &span, step, usage, first_token, error)
                    .await)
            }
        };
        if output.finish_reason == FinishReason::Cancelled {
            // Keep what was said, cut before any tool call: no call may lack its result.
            let keep_len = output
                .tokens
                .iter()
                .position(|&id| id == special.tool_call_start)
                .unwrap_or(output.tokens.len());
            let keep = output.tokens[..keep_len].to_vec();
            let kept_turn = (!keep.is_empty()).then(|| AssistantTurn {
                speech: mode == GenerationMode::Speech,
                text: transcript(tokenizer, &keep),
                ids: keep,
                calls: Vec::new(),
                reply_id: None,
            });
            let prefill = (&pending[..], &ranges[..], closes_open);
            let prompt = (!think).then_some(&generation[..]);
            self.keep_cancelled(session, before, prefill, kept_turn, prompt, &mut usage).await;
            self.end_step(&span, step, usage, "cancelled", first_token);
            return Ok(Step::Cancelled);
        }

        if think {
            // The answer joins the history without its think phase (as upstream drops it):
            // the cache is cut back to the end of the prefilled turns to match.
            let target = before + pending.len();
            match agent.on_worker(move |model| model.truncate(target)).await {
                Ok(Ok(())) => session.commit_prefill(&pending, &ranges, closes_open),
                Ok(Err(_)) | Err(_) => session.invalidate_cache(),
            }
        } else {
            session.commit_prefill(&pending, &ranges, closes_open);
        }
        let finish = if !reader.calls.is_empty() {
            "tool_calls"
        } else if output.finish_reason == FinishReason::Length {
            "length"
        } else {
            "stop"
        };
        self.end_step(&span, step, usage, finish, first_token);
        let calls = reader.calls;
        let turn = AssistantTurn {
            speech: mode == GenerationMode::Speech,
            ids: output.tokens,
            text: reader.transcript,
            calls: calls.iter().filter_map(|call| call.as_ref().ok().cloned()).collect(),
            reply_id: None,
        };
        let prompt = (!think).then_some(generation);
        Ok(Step::Generated(Generated { prompt, turn, calls }))
    }

    /// The mask factory of the turn's steps: the client's, else the agent's.
    fn constraints(&self) -> &dyn ConstraintFactory {
        match self.client {
            Some(client) => client.constraints(),
            None => self.tools.constraints.as_ref(),
        }
    }

    /// Runs one generation on the model's thread, feeding each id to `on_id` as it comes;
    /// `think_end` stops it after the id that closes a think phase. Also returns the time
    /// from submission to the first id.
    async fn run_generation(
        &self,
        request: GenerationRequest,
        mut think_end: Option<ThinkEnd>,
        mut on_id: impl FnMut(i64),
    ) -> (Result<GenerationOutput>, Option<Duration>) {
        let Some(worker) = self.agent.worker() else {
            return (Err(Error::Agent("no local model".to_owned())), None);
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let submitted = Instant::now();
        let sent = worker.generate(request, move |event| {
            let ends = match (&event, think_end.as_mut()) {
                (GenerationEvent::Token(id), Some(end)) => end.push(*id),
                _ => false,
            };
            match tx.send(event) {
                Ok(()) if !ends => ControlFlow::Continue(()),
                _ => ControlFlow::Break(()),
            }
        });
        if let Err(error) = sent {
            return (Err(error), None);
        }
        let mut first_token = None;
        let result = loop {
            match rx.recv().await {
                Some(GenerationEvent::Token(id)) => {
                    first_token.get_or_insert_with(|| submitted.elapsed());
                    on_id(id);
                }
                Some(GenerationEvent::Finished(result)) => break result,
                None => {
                    break Err(Error::InferenceWorkerStopped(
                        "the generation ended without a result".to_owned(),
                    ))
                }
            }
        };
        (result, first_token)
    }

    /// A failed generation: the cache is cut back to the session's record, the step is ended
    /// as an error; returns the error.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &mut self,
        session: &mut Session,
        before: usize,
        span: &Span,
        step: usize,
        mut usage: Usage,
        first_token: Option<Duration>,
        error: Error,
    ) -> Error {
        self.roll_back(session, before).await;
        usage.input_tokens = 0;
        self.end_step(span, step, usage, "error", first_token);
        error
    }

    /// After a cancelled step: the cache is cut back to the prefilled turns and, after the
    /// generation `prompt`, what was `said`, which joins the history. Without a `prompt` (a
    /// thinking step: its think phase is in the cache but never joins the history) what was
    /// said joins it uncached.
    async fn keep_cancelled(
        &self,
        session: &mut Session,
        before: usize,
        (pending, ranges, closes_open): (&[i64], &[std::ops::Range<usize>], bool),
        said: Option<AssistantTurn>,
        prompt: Option<&[i64]>,
        usage: &mut Usage,
    ) {
        let kept = match (prompt, &said) {
            (Some(prompt), Some(turn)) => prompt.len() + turn.ids.len(),
            _ => 0,
        };
        let target = before + pending.len() + kept;
        let prefilled = self
            .agent
            .on_worker(move |model| -> Result<bool> {
                if model.cache_len() == before {
                    return Ok(false);
                }
                model.truncate(target)?;
                Ok(true)
            })
            .await;
        match prefilled {
            Ok(Ok(true)) => {
                session.commit_prefill(pending, ranges, closes_open);
                if let Some(turn) = said {
                    commit(session, prompt, turn);
                }
            }
            Ok(Ok(false)) => usage.input_tokens = 0,
            Ok(Err(_)) | Err(_) => {
                session.invalidate_cache();
                if let Some(turn) = said {
                    session.push_turn(Turn::Assistant(turn));
                }
            }
        }
    }
}

/// Reads the ids of one step as they come: events out, calls and counts kept.
struct StepReader<'t> {
    demux: Demux<&'t StepTokenizer>,
    text: TextStream<'t>,
    out: &'t Emitter,
    transcript: String,
    calls: Vec<CallSlot>,
    output_tokens: usize,
    audio_tokens: usize,
}

impl<'t> StepReader<'t> {
    fn new(
        special: SpecialTokens,
        tokenizer: &'t StepTokenizer,
        mode: GenerationMode,
        out: &'t Emitter,
    ) -> Self {
        Self {
            demux: Demux::new(special, tokenizer, mode),
            text: tokenizer.decode_stream(),
            out,
            transcript: String::new(),
            calls: Vec::new(),
            output_tokens: 0,
            audio_tokens: 0,
        }
    }

    fn push(&mut self, id: i64) {
        self.output_tokens += 1;
        for event in self.demux.push(id) {
            self.handle(event);
        }
    }

    /// Ends the step (closing a call left open by the token limit or a cancel).
    fn finish(&mut self) {
        for event in self.demux.finish() {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: DemuxEvent) {
        match event {
            DemuxEvent::TextDelta { ids, in_speech } => {
                let mut text = String::new();
                for id in ids {
                    if let Ok(Some(piece)) = self.text.step(id) {
                        text.push_str(&piece);
                    }
                }
                if !text.is_empty() {
                    self.transcript.push_str(&text);
                    self.out.emit(AgentEvent::TextDelta { text, in_speech });
                }
            }
            DemuxEvent::AudioTokens(codes) => {
                self.audio_tokens += codes.len();
                self.out.emit(AgentEvent::AudioTokens(codes));
            }
            DemuxEvent::ToolCall(parsed) => self
                .calls
                .push(parsed.map(|call| ToolCall::new(call.name, Value::Object(call.arguments)))),
            DemuxEvent::Control(_) | DemuxEvent::ToolCallStart | DemuxEvent::End => {}
        }
    }
}

/// Whether the step that comes next thinks first: the session thinks, and the step answers
/// a human turn. Upstream's example thinks once per user turn; the steps after tool results
/// answer from them directly.
fn thinks(session: &Session, settings: &SessionSettings) -> bool {
    settings.think
        && settings.reasoning_max_tokens > 0
        && matches!(session.history().last(), Some(Turn::Human { .. }))
}

/// The text of generated ids (speech codes and control ids left out).
fn transcript(tokenizer: &StepTokenizer, ids: &[i64]) -> String {
    let special = tokenizer.special();
    let text: Vec<i64> =
        ids.iter().copied().filter(|&id| special.classify(id) == TokenClass::Text).collect();
    tokenizer.decode(&text).unwrap_or_default()
}
