//! The agent over HTTP: sessions and turns, each turn streamed as server-sent events.
//!
//! ```text
//! POST   /v1/sessions              {"mode"?, "tool_choice"?, sampling?}  → 201 {"id", ...}
//! POST   /v1/sessions/{id}/turns   {"text"?, "audio"? (base64 file), "tool_choice"?}
//!                                  → 200 text/event-stream
//! GET    /v1/sessions/{id}         → the session's summary
//! DELETE /v1/sessions/{id}         → 204 (cancels a running turn)
//! POST   /v1/sessions/{id}/approvals/{call_id}
//!                                  {"approve": true} | {"approve": false, "reason"?} → 204
//! ```
//!
//! A turn's events (`event:` name, JSON `data:`), in the order things happen:
//! `text` {text, in_speech}, `audio_tokens` {codes}, `audio` {sample_rate, samples, pcm16}
//! (base64 of 16-bit little-endian mono PCM; only when a voice is loaded), `tool_call`
//! {id, name, arguments}, `approval_request` {id, name, arguments, timeout_ms} (see below),
//! `tool_result` {id, name, ok, output | error, duration_ms},
//! `usage` {step, input_tokens, output_tokens, audio_tokens}, `error` {message} (speech
//! rendering failed; the turn goes on), and last, exactly once, `done` {reason, usage, turns,
//! error?}.
//!
//! Errors are `{"error": "..."}`: 400 for a malformed request (bad JSON, base64 or audio),
//! 404 for an unknown session, 409 while the session is in another turn, 413 for a body over
//! 32 MiB or audio over the limits, 503 without a model or when every session slot is busy.
//! A refused request changes nothing in the session.
//!
//! A client that disconnects mid-turn cancels the turn (the agent's barge-in): the history
//! keeps what was generated and the answered tool calls, and the session takes its next turn.
//!
//! # Approvals
//!
//! A call of a tool configured with `approval = true` (`[agent.policies.tools.NAME]`) waits,
//! after its `tool_call` event, for the client: the turn sends `approval_request` with the
//! call's `id`, `name`, `arguments` and `timeout_ms` (the tool's `approval_timeout_ms`;
//! `null`: no limit), and the client answers
//! `POST /v1/sessions/{id}/approvals/{call_id}` with `{"approve": true}` or
//! `{"approve": false, "reason": "..."}` (`204`). An approved call runs; a denied one, or one
//! not answered in time, gets a `tool_result` with `ok: false` and error kind `denied` whose
//! message (the reason included) is what the model reads. Answering an unknown call id is
//! `404`; a call that no longer waits (answered, timed out, its turn cancelled) `409`; a
//! malformed body `400`. A turn cancelled by a client that leaves or by `DELETE` withdraws its
//! waiting calls, and a shutdown denies them (see [`crate::approvals`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedMutexGuard};
use voxloop_core::agent::{AgentEvent, TurnEndReason, TurnInput, Usage};
use voxloop_core::audio::{prepare_audio, AudioInput};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, SessionSettings};
use voxloop_policies::Approval;

use crate::agent_setup::{parse_tool_choice, AgentRuntime};
use crate::approvals::{self, AnswerError, Question, TurnApprovals};
use crate::config::AnswerMode;
use crate::sessions::{SessionState, Slot};
use crate::speech::{pcm16_le, Rendered, Utterances, SAMPLE_RATE};

/// Largest request body (a turn with base64 audio).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Events a turn may queue for a slow client before the turn waits.
const EVENT_QUEUE: usize = 256;
/// SSE comments sent while a turn is quiet (a slow tool): they keep proxies from timing out
/// and reveal a client that went away.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The routes' state: the agent, or `None` when no model is configured.
pub type ApiState = Option<Arc<AgentRuntime>>;

/// The session routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{id}/turns", post(post_turn))
        .route("/v1/sessions/{id}/approvals/{call_id}", post(answer_approval))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .with_state(state)
}

/// Answers 413 at once to a request whose `Content-Length` is over the limit, instead of
/// reading [`MAX_BODY_BYTES`] of it first (a body without a length is cut at the limit by
/// [`DefaultBodyLimit`]).
async fn refuse_large_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let length = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_BODY_BYTES as u64 => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body ({n} bytes) exceeds the limit of {MAX_BODY_BYTES} bytes"),
        ),
        _ => next.run(request).await,
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn no_model() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no speech LLM is loaded: set [model] dir in the config file (or VOXLOOP_MODEL_DIR) to \
         a Step-Audio 2 checkpoint directory and restart",
    )
}

fn unknown_session(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no session {id:?} (it may have been deleted or evicted)"))
}

/// The JSON body of `POST /v1/sessions`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    mode: Option<AnswerMode>,
    tool_choice: Option<String>,
    max_steps: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<usize>,
    repetition_penalty: Option<f64>,
    seed: Option<u64>,
    max_new_tokens: Option<usize>,
}

/// The JSON body of `POST /v1/sessions/{id}/turns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnRequest {
    text: Option<String>,
    /// Base64 of a WAV, FLAC, MP3 or Ogg Vorbis file.
    audio: Option<String>,
    /// This turn's tool choice, instead of the session's.
    tool_choice: Option<String>,
}

fn settings_for(rt: &AgentRuntime, req: CreateSession) -> Result<SessionSettings, String> {
    let mut s = rt.defaults.clone();
    if let Some(mode) = req.mode {
        s.speech = mode == AnswerMode::Speech;
    }
    if let Some(choice) = &req.tool_choice {
        s.tool_choice = parse_tool_choice(choice, rt.agent.tools())?;
    }
    if let Some(steps) = req.max_steps {
        if steps == 0 {
            return Err("max_steps must be at least 1".into());
        }
        s.max_steps = steps;
    }
    let sampling = &mut s.sampling;
    sampling.temperature = req.temperature.unwrap_or(sampling.temperature);
    sampling.top_p = req.top_p.unwrap_or(sampling.top_p);
    sampling.top_k = req.top_k.unwrap_or(sampling.top_k);
    sampling.repetition_penalty = req.repetition_penalty.unwrap_or(sampling.repetition_penalty);
    sampling.seed = req.seed.or(sampling.seed);
    sampling.max_new_tokens = req.max_new_tokens.unwrap_or(sampling.max_new_tokens);
    if sampling.max_new_tokens == 0 {
        return Err("max_new_tokens must be at least 1".into());
    }
    sampling.params(Vec::new(), 0).validate().map_err(|e| e.to_string())?;
    Ok(s)
}

async fn create_session(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let Some(rt) = state else { return no_model() };
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSession::default()
    } else {
        match serde_json::from_slice::<CreateSession>(&body) {
            Ok(req) => req,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid session JSON: {e}")),
        }
    };
    let settings = match settings_for(&rt, req) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let voice = rt.voice.as_ref().map(|v| Arc::clone(&v.start));
    let state = SessionState { session: Session::new(settings), voice };
    match rt.sessions.insert(state) {
        Ok((id, evicted)) => {
            if let Some(old) = evicted {
                tracing::info!(session = %old, "session evicted (max_sessions reached)");
            }
            let summary = rt.sessions.get(&id).map(|s| s.summary());
            (StatusCode::CREATED, Json(json!({ "id": id, "session": summary }))).into_response()
        }
        Err(full) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "all {} session slots are in a turn; retry later or raise [agent] max_sessions",
                full.max
            ),
        ),
    }
}

async fn get_session(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(rt) = state else { return no_model() };
    match rt.sessions.get(&id) {
        Some(slot) => Json(slot.summary()).into_response(),
        None => unknown_session(&id),
    }
}

async fn delete_session(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(rt) = state else { return no_model() };
    match rt.sessions.remove(&id) {
        Some(slot) => {
            slot.cancel_running();
            rt.approvals.withdraw_session(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => unknown_session(&id),
    }
}

async fn post_turn(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let Some(rt) = state else { return no_model() };
    let req: TurnRequest = match body {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(req) => req,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid turn JSON: {e}")),
        },
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the request body exceeds the limit of {MAX_BODY_BYTES} bytes")
            } else {
                rejection.body_text()
            };
            return error(status, message);
        }
    };
    let text = req.text.filter(|t| !t.trim().is_empty());
    if text.is_none() && req.audio.is_none() {
        return error(StatusCode::BAD_REQUEST, "a turn needs \"text\", \"audio\" or both");
    }
    let audio = match req.audio.as_deref().map(decode_base64).transpose() {
        Ok(audio) => audio,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let choice = match req.tool_choice.as_deref().map(|c| parse_tool_choice(c, rt.agent.tools())) {
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, message),
        Some(Ok(choice)) => Some(choice),
        None => None,
    };
    let Some(slot) = rt.sessions.get(&id) else { return unknown_session(&id) };
    let Some(guard) = slot.try_begin() else {
        return error(
            StatusCode::CONFLICT,
            format!("session {id:?} is in another turn; wait for its `done` event"),
        );
    };
    // Audio is decoded while the session is held but before it is touched: a bad upload
    // leaves it as it was.
    let mut input = TurnInput::default();
    if let Some(data) = audio {
        let limits = rt.audio_limits;
        let input_name = AudioInput::Bytes { name: "audio".into(), data };
        let prepared =
            tokio::task::spawn_blocking(move || prepare_audio(input_name, &limits)).await;
        let chunks = match prepared {
            Ok(Ok(chunks)) => chunks,
            Ok(Err(e)) => {
                slot.end(&guard, Usage::default(), None);
                let status = match e {
                    voxloop_core::Error::AudioTooLarge { .. }
                    | voxloop_core::Error::AudioTooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return error(status, e);
            }
            Err(e) => {
                slot.end(&guard, Usage::default(), None);
                return error(StatusCode::INTERNAL_SERVER_ERROR, format!("audio task failed: {e}"));
            }
        };
        input = match input.and_audio(&chunks) {
            Ok(input) => input,
            Err(e) => {
                slot.end(&guard, Usage::default(), None);
                return error(StatusCode::BAD_REQUEST, e);
            }
        };
    }
    if let Some(text) = text {
        input = input.and_text(text);
    }

    let (tx, rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let (turn_approvals, questions) = TurnApprovals::new(id);
    let turn = run_turn(rt, slot, guard, input, choice, tx, questions);
    tokio::spawn(approvals::scope(turn_approvals, turn));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// The JSON body of `POST /v1/sessions/{id}/approvals/{call_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalAnswer {
    approve: bool,
    /// Why not, for the model (ignored with an approval).
    reason: Option<String>,
}

async fn answer_approval(
    State(state): State<ApiState>,
    Path((id, call_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Some(rt) = state else { return no_model() };
    if rt.sessions.get(&id).is_none() {
        return unknown_session(&id);
    }
    let answer: ApprovalAnswer = match serde_json::from_slice(&body) {
        Ok(answer) => answer,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid approval JSON ({e}): send {{\"approve\": true}} or \
                     {{\"approve\": false, \"reason\": \"...\"}}"
                ),
            )
        }
    };
    let approval = if answer.approve {
        Approval::Approved
    } else {
        // The refusal the model reads ends the reason with its own full stop.
        let reason = answer.reason.map(|r| r.trim().trim_end_matches('.').trim_end().to_owned());
        let reason = reason.filter(|r| !r.is_empty());
        Approval::Denied { reason }
    };
    match rt.approvals.answer(&id, &call_id, approval) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let status = match e {
                AnswerError::Unknown => StatusCode::NOT_FOUND,
                AnswerError::Settled(_) => StatusCode::CONFLICT,
            };
            error(status, e.message(&id, &call_id))
        }
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    // A data URL's header is allowed: `data:audio/wav;base64,....`
    let payload = match text.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => text,
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("\"audio\" is not base64 (standard alphabet, padded): {e}"))?;
    if bytes.is_empty() {
        return Err("\"audio\" is empty".into());
    }
    Ok(bytes)
}

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
/// its tool calls from `questions`; see the module docs.
async fn run_turn(
    rt: Arc<AgentRuntime>,
    slot: Arc<Slot>,
    mut guard: OwnedMutexGuard<SessionState>,
    input: TurnInput,
    choice: Option<ToolChoice>,
    tx: mpsc::Sender<Event>,
    mut questions: mpsc::UnboundedReceiver<Question>,
) {
    let mut out = Out { tx, gone: false };
    // One turn on the model at a time; a turn of another session waits here.
    let _model = rt.model_lock.lock().await;
    let state = &mut *guard;
    let session_choice =
        choice.map(|c| std::mem::replace(&mut state.session.settings_mut().tool_choice, c));
    let mut speech = None;
    if let (Some(voice), Some(current)) = (&rt.voice, &state.voice) {
        voice.active.set(Arc::clone(current));
        if state.session.settings().speech {
            speech = voice.renderer.open(Arc::clone(&voice.active));
        }
    }

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
                handle_event(&mut out, &mut speech, event, &mut finished).await;
            }
            Some(question) = questions.recv() => {
                // The call's `tool_call` event may still wait in the stream: it goes first.
                while let Some(Some(event)) = stream.next().now_or_never() {
                    handle_event(&mut out, &mut speech, event, &mut finished).await;
                }
                out.send("approval_request", question.to_json()).await;
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
    if let Some(voice) = &rt.voice {
        state.voice = Some(voice.active.current());
    }
    let (reason, usage) = finished.unwrap_or((
        TurnEndReason::Error("the turn ended without finishing".into()),
        Usage::default(),
    ));
    slot.end(state, usage, Some(reason.as_str()));
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
        AgentEvent::TurnFinished { reason, usage } => *finished = Some((reason, usage)),
    }
}
