//! The body of one turn: generation steps and tool runs, with the session's history and
//! cache record updated only at consistent points (see the module documentation of
//! [`super`] for the cancellation rules).

mod reasoning;
mod remote;
mod step;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tracing::{Instrument, Span};

use super::events::{AgentEvent, TurnEndReason, Usage};
use super::stream::{CancelHandle, Emitter};
use super::telemetry::{self, ChatStep};
use super::toolset::ToolSet;
use super::{step_choice, Agent, ClientTools, TurnInput};
use crate::protocol::{GenerationMode, ToolCallError, ToolChoice};
use crate::session::{AssistantTurn, Session, ToolResultTurn, Turn};
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
    /// The generation prompt ids (already in the cache, before `turn.ids`); `None`: the
    /// turn is not in the cache (its think phase was, and was cut off).
    prompt: Option<Vec<i64>>,
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
                commit(session, generated.prompt.as_deref(), generated.turn);
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
                commit(session, generated.prompt.as_deref(), generated.turn);
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
                commit(session, generated.prompt.as_deref(), generated.turn);
                return Ok(finished);
            }
            let (results, cancelled) = if last {
                // The step's mask forbade calls; a custom factory may not have.
                (self.refuse(&generated.calls), false)
            } else {
                self.run_tools(&generated.calls).await
            };
            commit(session, generated.prompt.as_deref(), generated.turn);
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

/// Adds a generated turn to the history: as cached after `prompt`, or (`None`) uncached.
fn commit(session: &mut Session, prompt: Option<&[i64]>, turn: AssistantTurn) {
    match prompt {
        Some(prompt) => session.commit_assistant(prompt, turn),
        None => session.push_turn(Turn::Assistant(turn)),
    }
}
