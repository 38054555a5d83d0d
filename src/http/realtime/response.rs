//! One response of a realtime connection: the agent's turn, streamed as Realtime server
//! events. The task owns the session while it runs and hands it back when the turn ends.
//!
//! Items, in the order things happen: what the model says in a step is one assistant
//! message item (its audio as `response.output_audio.delta`, its words as
//! `response.output_audio_transcript.delta`, or `response.output_text.delta` in text mode);
//! each tool call is a `function_call` item, whether voxloop runs it (its result follows as a
//! `function_call_output` item) or the client does (the response ends and waits for the
//! client's `function_call_output`); a call waiting for approval adds an
//! `mcp_approval_request` item. A cancelled response stops sending audio at once: what the
//! client got is what counts as heard.
//!
//! While voxloop's tools run longer than `[realtime] filler_delay_ms`, the filler (see
//! [`super::filler`]) plays once as an assistant message item of its own: after what the model
//! said before the call has played (the server follows the client's playback by the audio it
//! sent), and only if the tools are still running then. Filler items are not in the history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};
use voxloop_core::agent::{AgentEvent, ClientTools, TurnEndReason, Usage};

use super::filler::Filler;
use super::protocol::{
    approval_item, assistant_item, function_call_item, function_output_item, new_id, server_event,
};
use super::settings::PCM_RATE;
use crate::http::pcm::pcm16_le;
use crate::runtime::sessions::SessionState;
use crate::runtime::setup::AgentRuntime;

/// Why a response was cancelled (`status_details.reason` of its `response.done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The client sent `response.cancel`.
    Client,
    /// Server VAD heard the user start speaking (barge-in).
    TurnDetected,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Client => "client_cancelled",
            CancelReason::TurnDetected => "turn_detected",
        }
    }
}

/// The assistant message of one generation step.
#[derive(Debug, Clone)]
pub struct StepMessage {
    pub item_id: String,
    /// Samples of its audio sent to the client (at [`PCM_RATE`]).
    pub samples_sent: usize,
}

/// A finished response, for the connection to record and report.
pub struct Finished {
    /// The session, back (`None` only if the task panicked).
    pub guard: Option<OwnedMutexGuard<SessionState>>,
    pub reason: TurnEndReason,
    pub usage: Usage,
    pub cancelled: Option<CancelReason>,
    /// Per generation step, in order: its message, if it said anything.
    pub steps: Vec<Option<StepMessage>>,
    /// The output items as they ended.
    pub output: Vec<Value>,
    /// The ids of the filler items played (not in the history).
    pub fillers: Vec<String>,
}

/// What a response needs.
pub struct Launch {
    pub rt: Arc<AgentRuntime>,
    pub guard: OwnedMutexGuard<SessionState>,
    pub tools: Arc<ClientTools>,
    pub out: mpsc::Sender<String>,
    pub response_id: String,
    pub audio_out: bool,
    pub cancel: oneshot::Receiver<CancelReason>,
    /// What plays while tools run long.
    pub filler: Option<Arc<Filler>>,
}

/// The message being spoken or written.
struct Open {
    item_id: String,
    output_index: usize,
    text: String,
    samples_sent: usize,
}

struct Emitter {
    out: mpsc::Sender<String>,
    response_id: String,
    audio_out: bool,
    output: Vec<Value>,
    open: Option<Open>,
    step_message: Option<StepMessage>,
    steps: Vec<Option<StepMessage>>,
    cancelled: bool,
    /// When the audio sent so far will have played, if the client plays it as it comes.
    playback_end: Option<Instant>,
    fillers: Vec<String>,
}

/// When the filler of the tool calls running now is due (see the module documentation).
#[derive(Debug, Default)]
struct FillerClock {
    running: usize,
    due: Option<Instant>,
}

impl FillerClock {
    /// Follows an event: a call of voxloop's starting or ending, or one waiting for approval
    /// (the user is deciding: no filler for that call).
    fn on_event(
        &mut self,
        event: &AgentEvent,
        filler: Option<&Filler>,
        playback_end: Option<Instant>,
    ) {
        match event {
            AgentEvent::ToolCallStarted { .. } => {
                if self.running == 0 {
                    self.due = filler.map(|f| {
                        let after_delay = Instant::now() + f.delay;
                        playback_end.map_or(after_delay, |end| end.max(after_delay))
                    });
                }
                self.running += 1;
            }
            AgentEvent::ToolCallFinished { .. } => {
                self.running = self.running.saturating_sub(1);
                if self.running == 0 {
                    self.due = None;
                }
            }
            AgentEvent::ApprovalRequested(_) => self.due = None,
            _ => {}
        }
    }
}

/// Runs the response to its end; see the module documentation.
pub async fn run(launch: Launch) -> Finished {
    let Launch { rt, mut guard, tools, out, response_id, audio_out, mut cancel, filler } = launch;
    let mut emitter = Emitter {
        out,
        response_id,
        audio_out,
        output: Vec::new(),
        open: None,
        step_message: None,
        steps: Vec::new(),
        cancelled: false,
        playback_end: None,
        fillers: Vec::new(),
    };
    let mut filler_clock = FillerClock::default();
    let state = &mut *guard;
    let session_id = state.session.id().to_owned();
    let renderer = rt.voice.as_ref().map(|v| &v.renderer);
    let mut stream = rt.agent.continue_turn(&mut state.session, Some(tools), renderer);
    let handle = stream.cancel_handle();
    let mut cancelled = None;
    let mut finished = None;
    loop {
        tokio::select! {
            reason = &mut cancel, if cancelled.is_none() => {
                // A dropped sender (the connection went away) cancels too.
                cancelled = Some(reason.unwrap_or(CancelReason::Client));
                emitter.cancelled = true;
                handle.cancel();
            }
            () = sleep_until(filler_clock.due), if filler_clock.due.is_some() && !emitter.cancelled => {
                filler_clock.due = None;
                if let Some(filler) = &filler {
                    emitter.play_filler(filler).await;
                }
            }
            event = stream.next() => {
                let Some(event) = event else { break };
                if audio_out {
                    filler_clock.on_event(&event, filler.as_deref(), emitter.playback_end);
                }
                if let AgentEvent::ApprovalRequested(request) = &event {
                    rt.approvals.register(&session_id, request.clone());
                }
                if let AgentEvent::TurnFinished { reason, usage } = event {
                    finished = Some((reason, usage));
                } else {
                    emitter.on_event(event).await;
                }
            }
        }
    }
    drop(stream);
    emitter.close_message().await;
    if let Some(message) = emitter.step_message.take() {
        emitter.steps.push(Some(message));
    }
    let (reason, usage) = finished.unwrap_or((
        TurnEndReason::Error("the turn ended without finishing".into()),
        Usage::default(),
    ));
    Finished {
        guard: Some(guard),
        reason,
        usage,
        cancelled,
        steps: emitter.steps,
        output: emitter.output,
        fillers: emitter.fillers,
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// The ids a content event names.
fn refs(response_id: &str, open: &Open) -> Value {
    json!({
        "response_id": response_id,
        "item_id": open.item_id,
        "output_index": open.output_index,
        "content_index": 0,
    })
}

impl Emitter {
    async fn send(&self, kind: &str, fields: Value) {
        // A client that went away ends the connection, which cancels this response.
        let _ = self.out.send(server_event(kind, fields)).await;
    }

    fn refs(&self, open: &Open) -> Value {
        refs(&self.response_id, open)
    }

    async fn on_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::TextDelta { text, .. } => {
                if self.cancelled {
                    return;
                }
                self.open_message().await;
                let Some(open) = self.open.as_mut() else { return };
                open.text.push_str(&text);
                let mut fields = refs(&self.response_id, open);
                fields["delta"] = Value::String(text);
                let kind = if self.audio_out {
                    "response.output_audio_transcript.delta"
                } else {
                    "response.output_text.delta"
                };
                self.send(kind, fields).await;
            }
            AgentEvent::Audio { pcm, sample_rate } => {
                if self.cancelled || !self.audio_out {
                    return;
                }
                let pcm = if sample_rate == PCM_RATE {
                    pcm
                } else {
                    match voxloop_core::audio::resample(&pcm, sample_rate, PCM_RATE) {
                        Ok(pcm) => pcm,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot resample the speech to 24 kHz");
                            return;
                        }
                    }
                };
                self.open_message().await;
                self.send_audio(&pcm16_le(&pcm)).await;
            }
            AgentEvent::SpeechFailed { message } => {
                tracing::warn!(error = %message, "speech rendering failed in a realtime response");
            }
            AgentEvent::AudioTokens(_) => {}
            // The think phase: the Realtime API has no event for it (its models do not show
            // their reasoning), so it goes as voxloop's own, shaped like the Responses API's
            // `response.reasoning_text.delta`; it is not part of any output item.
            AgentEvent::Reasoning { text } => {
                if self.cancelled {
                    return;
                }
                let fields = json!({ "response_id": self.response_id, "delta": text });
                self.send("voxloop.reasoning.delta", fields).await;
            }
            // Non-text content of a server-side call: no Realtime event carries it, so it
            // goes as voxloop's own (clients ignore event types they do not know).
            AgentEvent::ToolAttachment { id, content } => {
                let fields =
                    json!({ "response_id": self.response_id, "call_id": id, "content": content });
                self.send("voxloop.tool_attachment", fields).await;
            }
            AgentEvent::ToolCallStarted { id, name, arguments }
            | AgentEvent::ToolCallRequested { id, name, arguments } => {
                self.close_message().await;
                self.function_call(&id, &name, &arguments).await;
            }
            AgentEvent::ApprovalRequested(request) => {
                let item = approval_item(
                    &new_id("item"),
                    &request.call_id,
                    &request.name,
                    &request.arguments,
                );
                self.send("conversation.item.added", json!({ "item": item })).await;
                self.send("conversation.item.done", json!({ "item": item })).await;
            }
            AgentEvent::ToolCallFinished { id, outcome, .. } => {
                let output = match outcome {
                    Ok(text) => text,
                    Err(e) => {
                        json!({ "error": { "kind": e.kind.as_str(), "message": e.model_message } })
                            .to_string()
                    }
                };
                let item = function_output_item(&new_id("item"), &id, &output);
                self.send("conversation.item.added", json!({ "item": item })).await;
                self.send("conversation.item.done", json!({ "item": item })).await;
                self.output.push(item);
            }
            AgentEvent::Usage { .. } => {
                self.close_message().await;
                self.steps.push(self.step_message.take());
            }
            AgentEvent::TurnFinished { .. } => {}
        }
    }

    /// Sends PCM16 bytes as the open message's audio.
    async fn send_audio(&mut self, pcm16: &[u8]) {
        let Some(open) = self.open.as_mut() else { return };
        let samples = pcm16.len() / 2;
        open.samples_sent += samples;
        let mut fields = refs(&self.response_id, open);
        fields["delta"] = Value::String(base64::engine::general_purpose::STANDARD.encode(pcm16));
        self.send("response.output_audio.delta", fields).await;
        let now = Instant::now();
        let start = self.playback_end.map_or(now, |end| end.max(now));
        self.playback_end =
            Some(start + Duration::from_secs_f64(samples as f64 / f64::from(PCM_RATE)));
    }

    /// Plays the filler as a message item of its own, in 200 ms deltas.
    async fn play_filler(&mut self, filler: &Filler) {
        // The step's own message stays the step's: the filler is not the model's.
        if self.open.is_some() {
            return; // the model is speaking after all
        }
        let step_message = self.step_message.take();
        self.open_message().await;
        if let Some(open) = &self.open {
            self.fillers.push(open.item_id.clone());
            let seconds = filler.samples() as f64 / f64::from(PCM_RATE);
            tracing::debug!(item = %open.item_id, source = %filler.source, seconds, "a tool runs long: the filler plays");
        }
        for chunk in filler.pcm.chunks(PCM_RATE as usize / 5 * 2) {
            self.send_audio(chunk).await;
        }
        self.close_message().await;
        self.step_message = step_message;
    }

    async fn open_message(&mut self) {
        if self.open.is_some() {
            return;
        }
        let open = Open {
            item_id: new_id("item"),
            output_index: self.output.len(),
            text: String::new(),
            samples_sent: 0,
        };
        let item = assistant_item(&open.item_id, "in_progress", self.audio_out, "");
        self.send(
            "response.output_item.added",
            json!({ "response_id": self.response_id, "output_index": open.output_index, "item": item }),
        )
        .await;
        self.send("conversation.item.added", json!({ "item": item })).await;
        let part = if self.audio_out {
            json!({ "type": "audio", "transcript": "" })
        } else {
            json!({ "type": "text", "text": "" })
        };
        let mut fields = self.refs(&open);
        fields["part"] = part;
        self.send("response.content_part.added", fields).await;
        self.output.push(item);
        self.open = Some(open);
    }

    async fn close_message(&mut self) {
        let Some(open) = self.open.take() else { return };
        let refs = self.refs(&open);
        let with = |key: &str, value: Value| {
            let mut fields = refs.clone();
            fields[key] = value;
            fields
        };
        if self.audio_out {
            self.send("response.output_audio.done", refs.clone()).await;
            self.send(
                "response.output_audio_transcript.done",
                with("transcript", json!(open.text)),
            )
            .await;
            self.send(
                "response.content_part.done",
                with("part", json!({ "type": "audio", "transcript": open.text })),
            )
            .await;
        } else {
            self.send("response.output_text.done", with("text", json!(open.text))).await;
            self.send(
                "response.content_part.done",
                with("part", json!({ "type": "text", "text": open.text })),
            )
            .await;
        }
        let status = if self.cancelled { "incomplete" } else { "completed" };
        let item = assistant_item(&open.item_id, status, self.audio_out, &open.text);
        self.send(
            "response.output_item.done",
            json!({ "response_id": self.response_id, "output_index": open.output_index, "item": item }),
        )
        .await;
        self.send("conversation.item.done", json!({ "item": item })).await;
        self.output[open.output_index] = item;
        self.step_message =
            Some(StepMessage { item_id: open.item_id, samples_sent: open.samples_sent });
    }

    async fn function_call(&mut self, call_id: &str, name: &str, arguments: &Value) {
        let item_id = new_id("item");
        let output_index = self.output.len();
        let args = if arguments.is_null() { "{}".to_owned() } else { arguments.to_string() };
        let added = function_call_item(&item_id, "in_progress", call_id, name, "");
        let refs = json!({
            "response_id": self.response_id, "item_id": item_id, "output_index": output_index,
        });
        self.send(
            "response.output_item.added",
            json!({ "response_id": self.response_id, "output_index": output_index, "item": added }),
        )
        .await;
        self.send("conversation.item.added", json!({ "item": added })).await;
        let mut delta = refs.clone();
        delta["call_id"] = json!(call_id);
        delta["delta"] = json!(args);
        self.send("response.function_call_arguments.delta", delta).await;
        let mut done = refs;
        done["call_id"] = json!(call_id);
        done["name"] = json!(name);
        done["arguments"] = json!(args);
        self.send("response.function_call_arguments.done", done).await;
        let item = function_call_item(&item_id, "completed", call_id, name, &args);
        self.send(
            "response.output_item.done",
            json!({ "response_id": self.response_id, "output_index": output_index, "item": item }),
        )
        .await;
        self.send("conversation.item.done", json!({ "item": item })).await;
        self.output.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filler(delay_ms: u64) -> Filler {
        Filler { pcm: vec![0; 480], delay: Duration::from_millis(delay_ms), source: "test".into() }
    }

    fn started() -> AgentEvent {
        AgentEvent::ToolCallStarted { id: "c1".into(), name: "t".into(), arguments: json!({}) }
    }

    #[test]
    fn the_filler_waits_for_the_delay_and_for_the_speech_already_sent() {
        let f = filler(300);
        let mut clock = FillerClock::default();
        let before = Instant::now();
        clock.on_event(&started(), Some(&f), None);
        let due = clock.due.unwrap();
        assert!(due >= before + Duration::from_millis(300), "after the delay");

        // Speech that plays for 5 s more: the filler comes after it, not over it.
        let mut clock = FillerClock::default();
        let speech_end = Instant::now() + Duration::from_secs(5);
        clock.on_event(&started(), Some(&f), Some(speech_end));
        assert_eq!(clock.due, Some(speech_end));

        // A second call in parallel does not move it; the last one ending cancels it.
        clock.on_event(&started(), Some(&f), None);
        assert_eq!(clock.due, Some(speech_end));
        let finished = AgentEvent::ToolCallFinished {
            id: "c1".into(),
            name: "t".into(),
            outcome: Ok("x".into()),
            duration: Duration::ZERO,
        };
        clock.on_event(&finished, Some(&f), None);
        assert!(clock.due.is_some(), "one call still runs");
        clock.on_event(&finished, Some(&f), None);
        assert_eq!(clock.due, None);
    }

    #[test]
    fn no_filler_without_one_or_while_a_person_decides() {
        let mut clock = FillerClock::default();
        clock.on_event(&started(), None, None);
        assert_eq!(clock.due, None);
        let f = filler(0);
        let mut clock = FillerClock::default();
        clock.on_event(&started(), Some(&f), None);
        assert!(clock.due.is_some());
        // A request as the agent loop makes them (the asking future, polled once, sends it).
        let (tx, rx) = std::sync::mpsc::channel();
        let asker = voxloop_core::tool::ApprovalAsker::new(move |r| tx.send(r).unwrap());
        let _ = futures::FutureExt::now_or_never(asker.ask("c1", "t", &json!({}), None));
        let request = rx.recv().unwrap();
        clock.on_event(&AgentEvent::ApprovalRequested(request), Some(&f), None);
        assert_eq!(clock.due, None);
    }
}
