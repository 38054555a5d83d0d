//! The body of one turn: generation steps and tool runs, with the session's history and
//! cache record updated only at consistent points (see the module documentation of
//! [`super`] for the cancellation rules).

mod remote;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tracing::{Instrument, Span};

use super::events::{AgentEvent, TurnEndReason, Usage};
use super::prompt::{step_prompt, StepPrompt};
use super::stream::{CancelHandle, Emitter};
use super::telemetry::{self, ChatStep};
use super::toolset::ToolSet;
use super::{step_choice, Agent, ClientTools, TurnInput};
use crate::generate::{FinishReason, GenerationEvent, GenerationRequest};
use crate::protocol::{Demux, DemuxEvent, GenerationMode, ToolCallError, ToolChoice};
use crate::session::{AssistantTurn, Session, SessionSettings, ToolResultTurn, Turn};
use crate::tokenizer::{SpecialTokens, StepTokenizer, TextStream, TokenClass};
use crate::tool::{
    new_call_id, truncate_output, ApprovalAsker, AttachmentSink, ToolCall, ToolContext, ToolError,
    ToolErrorKind, ToolResult,
};
use crate::{Error, Result};

/// What the model is told about a call abandoned by a cancelled turn.
const CANCELLED_RESULT: &str = "Tool call cancelled: the user interrupted the turn.";
/// What the model is told about a call made when no more calls were allowed.
const REFUSED_RESULT: &str =
    "Tool call not run: the step limit of this turn was reached; answer with what you have.";

/// How a turn starts.
pub(super) enum Begin {
    /// With the user's input (and, in a new session, the system and tool turns).
    Input(TurnInput),
    /// From the history as the caller wrote it, with the tools its client runs, if any.
    Continue(Option<Arc<ClientTools>>),
}

/// Runs a turn and reports its end; the stream's driver.
pub(super) async fn drive(
    agent: &Agent,
    session: &mut Session,
    begin: Begin,
    out: Emitter,
    cancel: CancelHandle,
) {
    let span = telemetry::invoke_agent(&agent.config, session.id());
    let (asker, attached) = (out.clone(), out.clone());
    let context = ToolContext {
        session_id: Some(session.id().to_owned()),
        extensions: session.extensions().clone(),
        approvals: Some(ApprovalAsker::new(move |request| {
            asker.emit(AgentEvent::ApprovalRequested(request));
        })),
        call_id: None,
        attachments: Some(AttachmentSink::new(move |id, content| {
            attached.emit(AgentEvent::ToolAttachment { id: id.to_owned(), content });
        })),
    };
    let (input, client) = match begin {
        Begin::Input(input) => (Some(input), None),
        Begin::Continue(client) => (None, client),
    };
    let mut run = TurnRun {
        agent,
        tools: agent.tool_set(),
        out: &out,
        cancel: &cancel,
        context,
        client: client.as_deref(),
        span: span.clone(),
        usage: Usage::default(),
        steps: 0,
    };
    let reason = run.run(session, input).instrument(span.clone()).await;
    agent.remember_cache(session);
    telemetry::end_invoke(&span, &reason, run.usage, run.steps);
    out.emit(AgentEvent::TurnFinished { reason, usage: run.usage });
}

/// One running turn.
struct TurnRun<'a> {
    agent: &'a Agent,
    /// The agent's tools when the turn started (they may be replaced while it runs).
    tools: Arc<ToolSet>,
    out: &'a Emitter,
    cancel: &'a CancelHandle,
    /// What each tool call of the turn carries.
    context: ToolContext,
    /// The tools the client runs; `None`: the agent's registry.
    client: Option<&'a ClientTools>,
    span: Span,
    usage: Usage,
    steps: usize,
}

/// A call as the demultiplexer delivered it: ready to run, or malformed.
type CallSlot = std::result::Result<ToolCall, ToolCallError>;

/// A step that generated to its end.
struct Generated {
    /// The generation prompt ids (already in the cache, before `turn.ids`).
    prompt: Vec<i64>,
    /// The assistant turn, not yet in the session.
    turn: AssistantTurn,
    /// Its calls, in order.
    calls: Vec<CallSlot>,
}

enum Step {
    Generated(Generated),
    Cancelled,
}

impl TurnRun<'_> {
    async fn run(&mut self, session: &mut Session, input: Option<TurnInput>) -> TurnEndReason {
        match self.steps_of(session, input).await {
            Ok(reason) => reason,
            Err(error) => TurnEndReason::Error(error.to_string()),
        }
    }

    async fn steps_of(
        &mut self,
        session: &mut Session,
        input: Option<TurnInput>,
    ) -> Result<TurnEndReason> {
        match &input {
            Some(input) if input.is_empty() => {
                return Err(Error::Agent("the turn input has no text and no audio".to_owned()))
            }
            Some(_) => {}
            None => {
                match session.history().last() {
                    Some(Turn::Human { .. } | Turn::ToolResult(_)) => {}
                    _ => return Err(Error::Agent(
                        "nothing to answer: the history must end with a human turn or tool results"
                            .to_owned(),
                    )),
                }
            }
        }
        let _lease = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Ok(TurnEndReason::Cancelled),
            lease = self.agent.lease.lock() => lease,
        };
        if let Some(input) = input {
            if session.history().is_empty() {
                let text = session.settings().system_text(self.agent.config.now());
                session.push_turn(Turn::System { text });
            }
            // A new session is told of the tools; an older one of any change since its turns.
            self.tools.declare_in(session)?;
            session.push_turn(Turn::Human { parts: input.parts });
        }
        // After the turns are in: a new session may share its first turns with the
        // conversation the model ran last.
        self.agent.prepare_cache(session).await?;

        let settings = session.settings().clone();
        for step in 1.. {
            self.steps = step;
            let last = step > settings.max_steps;
            let choice = step_choice(&settings, step);
            let generated = match self.generate(session, step, &settings, &choice).await? {
                Step::Generated(generated) => generated,
                Step::Cancelled => return Ok(TurnEndReason::Cancelled),
            };
            let finished =
                if last && step > 1 { TurnEndReason::MaxSteps } else { TurnEndReason::Completed };
            if generated.calls.is_empty() {
                session.commit_assistant(&generated.prompt, generated.turn);
                return Ok(finished);
            }
            let client_calls = self.client.map(|client| {
                let theirs = |call: &ToolCall| !client.beside_own() || client.runs(&call.name);
                generated.turn.calls.iter().filter(|c| theirs(c)).cloned().collect::<Vec<_>>()
            });
            if let Some(requested) = client_calls.filter(|calls| !calls.is_empty()) {
                // Beside the agent's own tools: those of the step's calls run first (their
                // results join the history in call order), then the client gets its own.
                let beside = self.client.is_some_and(ClientTools::beside_own);
                let ours: Vec<CallSlot> = generated
                    .calls
                    .iter()
                    .filter(|_| beside)
                    .filter(|slot| match slot {
                        Ok(call) => !requested.iter().any(|r| r.id == call.id),
                        Err(_) => true,
                    })
                    .cloned()
                    .collect();
                let (results, cancelled) =
                    if ours.is_empty() { (Vec::new(), false) } else { self.run_tools(&ours).await };
                for call in &requested {
                    self.out.emit(AgentEvent::ToolCallRequested {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                }
                session.commit_assistant(&generated.prompt, generated.turn);
                for result in results {
                    session.push_turn(Turn::ToolResult(self.result_turn(result)));
                }
                return Ok(if cancelled {
                    TurnEndReason::Cancelled
                } else {
                    TurnEndReason::ToolCalls
                });
            }
            if self.client.is_some_and(|client| !client.beside_own()) {
                // Only malformed calls, which no client can run: the step ends the turn.
                session.commit_assistant(&generated.prompt, generated.turn);
                return Ok(finished);
            }
            let (results, cancelled) = if last {
                // The step's mask forbade calls; a custom factory may not have.
                (self.refuse(&generated.calls), false)
            } else {
                self.run_tools(&generated.calls).await
            };
            session.commit_assistant(&generated.prompt, generated.turn);
            for result in results {
                session.push_turn(Turn::ToolResult(self.result_turn(result)));
            }
            if cancelled {
                return Ok(TurnEndReason::Cancelled);
            }
            if last {
                return Ok(finished);
            }
        }
        Ok(TurnEndReason::Completed)
    }

    /// One generation step: prefill what the cache lacks, generate, stream the events.
    async fn generate(
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
        let StepPrompt { segments, pending, ranges, closes_open, generation } =
            step_prompt(session, tokenizer, mode)?;
        let before = session.cached_ids().len();
        let prompt_len = pending.len() + generation.len();
        let params =
            settings.sampling.params(vec![special.eot, special.endoftext], before + prompt_len);
        params.validate()?;
        let span = self.chat_span(session, step, mode, &params, choice, None);
        let mask = match self.client {
            Some(client) => client.constraints().build(choice, mode)?,
            None => self.tools.constraints.build(choice, mode)?,
        };
        let request = GenerationRequest {
            cached: session.cached_ids().to_vec(),
            segments,
            params,
            mask,
            cancel: self.cancel.flag(),
        };

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let submitted = Instant::now();
        let worker = agent.worker().ok_or_else(|| Error::Agent("no local model".to_owned()))?;
        worker.generate(request, move |event| match tx.send(event) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        })?;
        let mut reader = StepReader::new(special, tokenizer, mode, self.out);
        let mut first_token = None;
        let result = loop {
            match rx.recv().await {
                Some(GenerationEvent::Token(id)) => {
                    first_token.get_or_insert_with(|| submitted.elapsed());
                    reader.push(id);
                }
                Some(GenerationEvent::Finished(result)) => break result,
                None => {
                    break Err(Error::InferenceWorkerStopped(
                        "the generation ended without a result".to_owned(),
                    ))
                }
            }
        };
        reader.finish();
        let mut usage = Usage {
            input_tokens: prompt_len,
            output_tokens: reader.output_tokens,
            audio_tokens: reader.audio_tokens,
            cached_tokens: before,
        };

        let output = match result {
            Ok(output) => output,
            Err(error) => {
                self.roll_back(session, before).await;
                usage.input_tokens = 0;
                self.end_step(&span, step, usage, "error", first_token);
                return Err(error);
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
            let kept = if keep.is_empty() { 0 } else { generation.len() + keep.len() };
            let target = before + pending.len() + kept;
            let prefilled = agent
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
                    session.commit_prefill(&pending, &ranges, closes_open);
                    if !keep.is_empty() {
                        let text = transcript(tokenizer, &keep);
                        let turn = AssistantTurn {
                            speech: mode == GenerationMode::Speech,
                            ids: keep,
                            text,
                            calls: Vec::new(),
                            reply_id: None,
                        };
                        session.commit_assistant(&generation, turn);
                    }
                }
                Ok(Ok(false)) => usage.input_tokens = 0,
                Ok(Err(_)) | Err(_) => session.invalidate_cache(),
            }
            self.end_step(&span, step, usage, "cancelled", first_token);
            return Ok(Step::Cancelled);
        }

        session.commit_prefill(&pending, &ranges, closes_open);
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
        Ok(Step::Generated(Generated { prompt: generation, turn, calls }))
    }

    /// The `chat` span of a step (`server`: the remote model's host and port).
    fn chat_span(
        &self,
        session: &Session,
        step: usize,
        mode: GenerationMode,
        params: &crate::generate::SamplingParams,
        choice: &ToolChoice,
        server: Option<(&str, u16)>,
    ) -> Span {
        let config = &self.agent.config;
        let conversation = session.id();
        telemetry::chat(
            &self.span,
            &ChatStep { config, conversation, step, mode, params, choice, server },
        )
    }

    fn end_step(
        &mut self,
        span: &Span,
        step: usize,
        usage: Usage,
        finish: &str,
        first: Option<Duration>,
    ) {
        telemetry::end_chat(span, usage, finish, first);
        self.usage += usage;
        self.out.emit(AgentEvent::Usage { step, usage });
    }

    /// After a failed generation: cut the cache back to the session's record (or forget the
    /// record when that is impossible). The turns the step meant to prefill stay uncached.
    async fn roll_back(&self, session: &mut Session, before: usize) {
        let cut = self
            .agent
            .on_worker(move |model| {
                if model.cache_len() < before {
                    return Err(Error::InvalidTruncate {
                        requested: before,
                        len: model.cache_len(),
                    });
                }
                model.truncate(before)
            })
            .await;
        if !matches!(cut, Ok(Ok(()))) {
            session.invalidate_cache();
        }
    }

    /// Runs the step's calls concurrently; returns one result per call, in order, and
    /// whether the turn was cancelled meanwhile.
    async fn run_tools(&self, calls: &[CallSlot]) -> (Vec<ToolResult>, bool) {
        let mut results: Vec<Option<ToolResult>> = vec![None; calls.len()];
        let mut runnable = Vec::new();
        for (i, slot) in calls.iter().enumerate() {
            match slot {
                Ok(call) => {
                    self.started(&call.id, &call.name, call.arguments.clone());
                    let mut call = call.clone();
                    call.context = self.context.clone();
                    call.context.call_id = Some(call.id.clone());
                    runnable.push((i, call));
                }
                Err(error) => {
                    let call = ToolCall::with_id(new_call_id(), "", Value::Null);
                    self.started(&call.id, "", Value::Null);
                    let error = ToolError::new(ToolErrorKind::InvalidArguments, error.to_string());
                    let result = ToolResult::failed(&call, error, Duration::ZERO);
                    self.finished(&result);
                    results[i] = Some(result);
                }
            }
        }
        let tools = Arc::clone(&self.tools.registry);
        let concurrency = self.agent.config.tool_concurrency.max(1);
        let mut running = futures::stream::iter(runnable)
            .map(|(i, call)| tools.call(call).map(move |result| (i, result)))
            .buffer_unordered(concurrency);
        let mut cancelled = false;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    cancelled = true;
                    break;
                }
                next = running.next() => match next {
                    Some((i, result)) => {
                        self.finished(&result);
                        results[i] = Some(result);
                    }
                    None => break,
                },
            }
        }
        drop(running);
        let results = results
            .into_iter()
            .zip(calls)
            .map(|(result, slot)| {
                result.unwrap_or_else(|| {
                    let call = match slot {
                        Ok(call) => call.clone(),
                        Err(_) => ToolCall::with_id(new_call_id(), "", Value::Null),
                    };
                    let error = ToolError::new(ToolErrorKind::Cancelled, CANCELLED_RESULT);
                    let result = ToolResult::failed(&call, error, Duration::ZERO);
                    self.finished(&result);
                    result
                })
            })
            .collect();
        (results, cancelled)
    }

    /// Results for calls made when no more were allowed: each gets an error, none runs.
    fn refuse(&self, calls: &[CallSlot]) -> Vec<ToolResult> {
        calls
            .iter()
            .map(|slot| {
                let call = match slot {
                    Ok(call) => call.clone(),
                    Err(_) => ToolCall::with_id(new_call_id(), "", Value::Null),
                };
                self.started(&call.id, &call.name, call.arguments.clone());
                let error = ToolError::new(ToolErrorKind::Denied, REFUSED_RESULT);
                let result = ToolResult::failed(&call, error, Duration::ZERO);
                self.finished(&result);
                result
            })
            .collect()
    }

    fn started(&self, id: &str, name: &str, arguments: Value) {
        self.out.emit(AgentEvent::ToolCallStarted {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments,
        });
    }

    fn finished(&self, result: &ToolResult) {
        self.out.emit(AgentEvent::ToolCallFinished {
            id: result.call_id.clone(),
            name: result.name.clone(),
            outcome: result.outcome.clone(),
            duration: result.duration,
        });
    }

    /// The `input` turn of a result: its text capped, the tool's instruction after a
    /// success.
    fn result_turn(&self, result: ToolResult) -> ToolResultTurn {
        let config = &self.agent.config;
        let ok = result.is_ok();
        let mut text = result.model_text().to_owned();
        truncate_output(&mut text, config.max_result_bytes);
        let instruction =
            if ok { config.result_instructions.get(&result.name).cloned() } else { None };
        ToolResultTurn { call_id: result.call_id, name: result.name, ok, text, instruction }
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

/// The text of generated ids (speech codes and control ids left out).
fn transcript(tokenizer: &StepTokenizer, ids: &[i64]) -> String {
    let special = tokenizer.special();
    let text: Vec<i64> =
        ids.iter().copied().filter(|&id| special.classify(id) == TokenClass::Text).collect();
    tokenizer.decode(&text).unwrap_or_default()
}
