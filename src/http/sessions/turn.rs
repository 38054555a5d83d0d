//! One turn of a session, streamed: the agent's events become server-sent events, speech is
//! rendered beside them, and at the end the session is saved (when sessions are persisted)
//! before the `done` event.

use std::sync::Arc;

use axum::response::sse::Event;
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedMutexGuard};
use voxloop_core::agent::{AgentEvent, TurnEndReason, TurnInput, Usage};
use voxloop_core::protocol::ToolChoice;

use super::stored;
use crate::http::pcm::pcm16_le;
use crate::runtime::approvals;
use crate::runtime::sessions::{SessionState, Slot};
use crate::runtime::setup::AgentRuntime;

/// Where a turn's events go; notices a client that went away.
struct Out {
    tx: mpsc::Sender<Event>,
    gone: bool,
}

impl Out {
    async fn send(&mut self, name: &str, data: Value) {
        if self.gone {
            return;
        }
        let event = Event::default().event(name).data(data.to_string());
        if self.tx.send(event).await.is_err() {
            self.gone = true;
        }
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "audio_tokens": u.audio_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cached_tokens": u.cached_tokens,
    })
}

fn audio_json(pcm: &[f32], sample_rate: u32) -> Value {
    json!({
        "sample_rate": sample_rate,
        "samples": pcm.len(),
        "pcm16": base64::engine::general_purpose::STANDARD.encode(pcm16_le(pcm)),
    })
}

/// Runs one turn of `slot`'s session (core's spoken turn: text, speech and its audio, tool
/// calls, approval questions, filed in [`crate::runtime::approvals`] for the client's answer) and
/// streams it to `tx`; saves the session before `done` (see [`stored::save`]). See the module
/// docs of [`crate::http::sessions`].
pub(super) async fn run_turn(
    rt: Arc<AgentRuntime>,
    slot: Arc<Slot>,
    mut guard: OwnedMutexGuard<SessionState>,
    input: TurnInput,
    choice: Option<ToolChoice>,
    tx: mpsc::Sender<Event>,
) {
    let mut out = Out { tx, gone: false };
    let state = &mut *guard;
    let session_choice =
        choice.map(|c| std::mem::replace(&mut state.session.settings_mut().tool_choice, c));
    let session_id = state.session.id().to_owned();
    let renderer = rt.voice.as_ref().map(|v| &v.renderer);
    let mut stream = rt.agent.speak_turn(&mut state.session, input, renderer);
    let cancel = stream.cancel_handle();
    slot.set_running(Some(cancel.clone()));
    let mut finished: Option<(TurnEndReason, Usage)> = None;
    loop {
        tokio::select! {
            _ = out.tx.closed(), if !out.gone => out.gone = true,
            event = stream.next() => {
                let Some(event) = event else { break };
                if let AgentEvent::ApprovalRequested(request) = &event {
                    rt.approvals.register(&session_id, request.clone());
                }
                handle_event(&mut out, event, &mut finished).await;
            }
        }
        if out.gone && !cancel.is_cancelled() {
            tracing::info!(session = %session_id, "client went away: cancelling the turn");
            cancel.cancel();
        }
    }
    drop(stream);

    if let Some(choice) = session_choice {
        state.session.settings_mut().tool_choice = choice;
    }
    let (reason, usage) = finished.unwrap_or((
        TurnEndReason::Error("the turn ended without finishing".into()),
        Usage::default(),
    ));
    slot.record(state, usage, Some(reason.as_str()));
    // Saved while still held (and busy): the next turn starts from the saved state.
    let (guard, save_error) = stored::save(&rt, &slot, guard).await;
    slot.idle();
    drop(guard);
    let summary = slot.summary();
    let mut done = json!({
        "reason": reason.as_str(),
        "usage": usage_json(&usage),
        "turns": summary.turns,
    });
    if let TurnEndReason::Error(message) = &reason {
        tracing::warn!(session = %summary.id, error = %message, "turn failed");
        done["error"] = Value::String(message.clone());
    }
    if let Some(message) = save_error {
        done["save_error"] = Value::String(message);
    }
    out.send("done", done).await;
}

/// Sends `event` as its SSE event (see the module docs of [`crate::http::sessions`]).
async fn handle_event(
    out: &mut Out,
    event: AgentEvent,
    finished: &mut Option<(TurnEndReason, Usage)>,
) {
    match event {
        AgentEvent::TextDelta { text, in_speech } => {
            out.send("text", json!({ "text": text, "in_speech": in_speech })).await
        }
        AgentEvent::Reasoning { text } => out.send("reasoning", json!({ "text": text })).await,
        AgentEvent::AudioTokens(codes) => out.send("audio_tokens", json!({ "codes": codes })).await,
        AgentEvent::Audio { pcm, sample_rate } => {
            out.send("audio", audio_json(&pcm, sample_rate)).await
        }
        AgentEvent::SpeechFailed { message } => {
            out.send("error", json!({ "message": format!("speech rendering: {message}") })).await
        }
        AgentEvent::ToolCallStarted { id, name, arguments } => {
            out.send("tool_call", json!({ "id": id, "name": name, "arguments": arguments })).await
        }
        // Session turns run the agent's own tools; no client declares any.
        AgentEvent::ToolCallRequested { id, name, arguments } => {
            out.send("tool_call", json!({ "id": id, "name": name, "arguments": arguments })).await
        }
        // Non-text content of a call, as the tool gave it (the model read its description).
        AgentEvent::ToolAttachment { id, content } => {
            out.send("tool_attachment", json!({ "id": id, "content": content })).await
        }
        AgentEvent::ToolCallFinished { id, name, outcome, duration } => {
            let mut data = json!({
                "id": id,
                "name": name,
                "ok": outcome.is_ok(),
                "duration_ms": duration.as_secs_f64() * 1000.0,
            });
            match outcome {
                Ok(output) => data["output"] = Value::String(output),
                Err(e) => {
                    data["error"] = json!({ "kind": e.kind.as_str(), "message": e.model_message })
                }
            }
            out.send("tool_result", data).await
        }
        AgentEvent::Usage { step, usage } => {
            let mut data = usage_json(&usage);
            data["step"] = json!(step);
            out.send("usage", data).await
        }
        AgentEvent::ApprovalRequested(request) => {
            out.send("approval_request", approvals::request_json(&request)).await
        }
        AgentEvent::TurnFinished { reason, usage } => *finished = Some((reason, usage)),
    }
}
