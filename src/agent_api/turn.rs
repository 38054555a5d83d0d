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
use crate::agent_setup::AgentRuntime;
use crate::approvals;
use crate::sessions::{SessionState, Slot};
use crate::speech::{pcm16_le, Rendered, Utterances, SAMPLE_RATE};

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
    })
}

fn audio_json(pcm: &[f32]) -> Value {
    json!({
        "sample_rate": SAMPLE_RATE,
        "samples": pcm.len(),
        "pcm16": base64::engine::general_purpose::STANDARD.encode(pcm16_le(pcm)),
    })
}

/// The next rendered output, or never when there is no renderer.
async fn next_rendered(speech: &mut Option<Utterances>) -> Option<Rendered> {
    match speech {
        Some(s) => s.output.recv().await,
        None => std::future::pending().await,
    }
}

async fn forward_rendered(out: &mut Out, speech: &mut Option<Utterances>, rendered: Rendered) {
    match rendered {
        Rendered::Pcm(pcm) => out.send("audio", audio_json(&pcm)).await,
        Rendered::Failed(message) => {
            out.send("error", json!({ "message": format!("speech rendering: {message}") })).await
        }
        Rendered::Flushed => {
            if let Some(s) = speech.as_mut() {
                s.flushed();
            }
        }
    }
}

/// Runs one turn of `slot`'s session and streams it to `tx`, with the approval requests of
/// its tool calls from `questions`; saves the session before `done` (see
/// [`stored::save`]). See the module docs of [`crate::agent_api`].
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
    let mut speech = None;
    if let (Some(voice), Some(current)) = (&rt.voice, &state.voice) {
        if state.session.settings().speech {
            speech = voice.renderer.open(Arc::clone(current));
        }
    }
    let session_id = state.session.id().to_owned();

    let mut stream = rt.agent.run_turn(&mut state.session, input);
    let cancel = stream.cancel_handle();
    slot.set_running(Some(cancel.clone()));
    let mut finished: Option<(TurnEndReason, Usage)> = None;
    let mut closed = false;
    loop {
        tokio::select! {
            _ = out.tx.closed(), if !closed => {
                closed = true;
                out.gone = true;
            }
            rendered = next_rendered(&mut speech) => match rendered {
                Some(r) => forward_rendered(&mut out, &mut speech, r).await,
                None => speech = None,
            },
            event = stream.next() => {
                let Some(event) = event else { break };
                if let AgentEvent::ApprovalRequested(request) = &event {
                    rt.approvals.register(&session_id, request.clone());
                }
                handle_event(&mut out, &mut speech, event, &mut finished).await;
            }
        }
        if out.gone && !cancel.is_cancelled() {
            tracing::info!(session = %slot.summary().id, "client went away: cancelling the turn");
            cancel.cancel();
            // Nothing more is said to nobody.
            speech = None;
        }
    }
    drop(stream);

    // The speech of the last step, before `done`.
    if let Some(s) = speech.as_mut() {
        s.flush();
    }
    while speech.as_ref().is_some_and(|s| s.pending_flushes() > 0) {
        match next_rendered(&mut speech).await {
            Some(r) => forward_rendered(&mut out, &mut speech, r).await,
            None => break,
        }
    }
    drop(speech);

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

async fn handle_event(
    out: &mut Out,
    speech: &mut Option<Utterances>,
    event: AgentEvent,
    finished: &mut Option<(TurnEndReason, Usage)>,
) {
    match event {
        AgentEvent::TextDelta { text, in_speech } => {
            out.send("text", json!({ "text": text, "in_speech": in_speech })).await
        }
        AgentEvent::AudioTokens(codes) => {
            if let Some(s) = speech.as_mut() {
                s.push(codes.clone());
            }
            out.send("audio_tokens", json!({ "codes": codes })).await
        }
        AgentEvent::ToolCallStarted { id, name, arguments } => {
            out.send("tool_call", json!({ "id": id, "name": name, "arguments": arguments })).await
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
            // A step ends: its speech is one utterance, rendered to the end now (before a
            // tool runs).
            if let Some(s) = speech.as_mut() {
                s.flush();
            }
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
