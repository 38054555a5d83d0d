//! The agent over HTTP: sessions and turns, each turn streamed as server-sent events.
//!
//! ```text
//! POST   /v1/sessions              {"mode"?, "tool_choice"?, "think"?, sampling?} → 201 {"id", ...}
//! GET    /v1/sessions              → {"sessions": [{id, created_unix, turns, in_memory}]}
//! POST   /v1/sessions/{id}/turns   {"text"?, "audio"? (base64 file), "tool_choice"?}
//!                                  → 200 text/event-stream
//! GET    /v1/sessions/{id}         → the session's summary
//! DELETE /v1/sessions/{id}         → 204 (cancels a running turn, deletes its files)
//! POST   /v1/sessions/{id}/approvals/{call_id}
//!                                  {"approve": true} | {"approve": false, "reason"?} → 204
//! ```
//!
//! A turn's events (`event:` name, JSON `data:`), in the order things happen:
//! `reasoning` {text} (the think phase of a session created with `"think": true`, or of a
//! reasoning checkpoint: shown, never spoken, not kept in the history), `text` {text, in_speech}, `audio_tokens` {codes}, `audio` {sample_rate, samples, pcm16}
//! (base64 of 16-bit little-endian mono PCM; only when a voice is loaded), `tool_call`
//! {id, name, arguments}, `approval_request` {id, name, arguments, timeout_ms} (see below),
//! `tool_result` {id, name, ok, output | error, duration_ms},
//! `usage` {step, input_tokens, output_tokens, audio_tokens, reasoning_tokens, cached_tokens},
//! `error` {message}
//! (speech rendering failed; the turn goes on), and last, exactly once, `done` {reason, usage,
//! turns, error?, save_error?}.
//!
//! Errors are `{"error": "..."}`: 400 for a malformed request (bad JSON, base64 or audio),
//! 404 for an unknown session, 409 while the session is in another turn, 413 for a body over
//! 32 MiB or audio over the limits, 503 without a model or when every session slot is busy.
//! A refused request changes nothing in the session.
//!
//! # Saved sessions
//!
//! With `[agent] persist_sessions` (the default) every session is saved in `[agent]
//! sessions_dir` (default `<data_dir>/sessions`, see [`crate::runtime::store`]) when it is
//! created and after each turn, before the turn's `done`. A request naming a session that is
//! not in memory (the service restarted, or the session was evicted past `max_sessions`)
//! loads it from there first; its next turn prefills the history again. A saved file that
//! cannot be read or parsed answers `500` with the session and the problem (and is logged);
//! it leaves other sessions alone. A save that fails does not fail the turn: it is logged at
//! warn, reported as `save_error` in the `done` event and in the session's summary (until a
//! later save succeeds). Ids other than the form the service gives out never touch the disk
//! (`404`).
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
//! waiting calls, and a shutdown denies them (see [`crate::runtime::approvals`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use voxloop_core::agent::{TurnInput, Usage};
use voxloop_core::audio::AudioChunk;
use voxloop_core::session::{Session, SessionSettings};
use voxloop_policies::Approval;

use crate::config::AnswerMode;
use crate::http::upload;
use crate::runtime::approvals::AnswerError;
use crate::runtime::sessions::{SessionState, Summary};
use crate::runtime::setup::{parse_tool_choice, AgentRuntime};
use extract::{ApiError, JsonBody, RequestBody, Runtime, SessionSlot};

mod extract;
pub(crate) mod stored;
mod turn;

pub use crate::http::upload::MAX_BODY_BYTES;
/// Events a turn may queue for a slow client before the turn waits.
const EVENT_QUEUE: usize = 256;
/// SSE comments sent while a turn is quiet (a slow tool): they keep proxies from timing out
/// and reveal a client that went away.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The routes' state: the agent, or `None` when no model is configured.
pub type ApiState = Option<Arc<AgentRuntime>>;

/// The session routes.
pub fn router(state: ApiState) -> Router {
    let routes = Router::new()
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{id}/turns", post(post_turn))
        .route("/v1/sessions/{id}/approvals/{call_id}", post(answer_approval));
    upload::limit_body(routes, too_large).with_state(state)
}

/// The 413 of a body over [`MAX_BODY_BYTES`].
fn too_large(length: u64) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body ({length} bytes) exceeds the limit of {MAX_BODY_BYTES} bytes"),
    )
    .into_response()
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
    /// Whether answers start with a think phase (default: `[agent] think`).
    think: Option<bool>,
    /// The most tokens of one think phase.
    reasoning_max_tokens: Option<usize>,
}

impl RequestBody for CreateSession {
    const WHAT: &'static str = "session";

    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
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

impl RequestBody for TurnRequest {
    const WHAT: &'static str = "turn";
}

fn settings_for(rt: &AgentRuntime, req: CreateSession) -> Result<SessionSettings, String> {
    let mut s = rt.defaults.clone();
    if let Some(mode) = req.mode {
        s.speech = mode == AnswerMode::Speech;
    }
    if let Some(choice) = &req.tool_choice {
        s.tool_choice = parse_tool_choice(choice, &rt.agent.tools())?;
    }
    if let Some(steps) = req.max_steps {
        if steps == 0 {
            return Err("max_steps must be at least 1".into());
        }
        s.max_steps = steps;
    }
    s.think = req.think.unwrap_or(s.think);
    s.reasoning_max_tokens = req.reasoning_max_tokens.unwrap_or(s.reasoning_max_tokens);
    if s.reasoning_max_tokens == 0 {
        return Err(
            "reasoning_max_tokens must be at least 1 (`think: false` turns thinking off)".into()
        );
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

async fn create_session(
    Runtime(rt): Runtime,
    JsonBody(req): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let settings = settings_for(&rt, req).map_err(ApiError::bad_request)?;
    let voice = rt.voice.as_ref().map(|v| Arc::clone(&v.start));
    let state = SessionState::new(Session::new(settings), voice);
    let (state, save_error) = stored::save_new(&rt, state).await?;
    let new_id = state.session.id().to_owned();
    let (id, evicted) = match rt.sessions.insert(state) {
        Ok(placed) => placed,
        Err(full) => {
            // Refused: the session saved a moment ago must not outlive the answer.
            if let Err(e) = stored::remove(&rt, &new_id).await {
                tracing::warn!(session = %new_id, error = %e, "cannot delete a refused session");
            }
            return Err(stored::table_full(full));
        }
    };
    stored::log_eviction(evicted);
    let slot = rt.sessions.get(&id);
    if let Some(slot) = &slot {
        slot.set_save_error(save_error);
    }
    let summary = slot.map(|s| s.summary());
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "session": summary }))).into_response())
}

async fn list_sessions(Runtime(rt): Runtime) -> Result<Response, ApiError> {
    let sessions = stored::list(&rt).await.map_err(|message| {
        tracing::warn!(error = %message, "cannot list the saved sessions");
        ApiError::internal(message)
    })?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

async fn get_session(SessionSlot(slot): SessionSlot) -> Json<Summary> {
    Json(slot.summary())
}

async fn delete_session(
    Runtime(rt): Runtime,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let slot = rt.sessions.remove(&id);
    if let Some(slot) = &slot {
        // Before the files go: a turn that ends now does not write them again.
        slot.mark_deleted();
        slot.cancel_running();
        rt.approvals.withdraw_session(&id);
    }
    match stored::remove(&rt, &id).await {
        Ok(on_disk) if on_disk || slot.is_some() => Ok(StatusCode::NO_CONTENT),
        Ok(_) => Err(ApiError::unknown_session(&id)),
        Err(message) => {
            tracing::warn!(session = %id, error = %message, "cannot delete the saved session");
            Err(ApiError::internal(message))
        }
    }
}

async fn post_turn(
    Runtime(rt): Runtime,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TurnRequest>,
) -> Result<Response, ApiError> {
    let text = req.text.filter(|t| !t.trim().is_empty());
    if text.is_none() && req.audio.is_none() {
        return Err(ApiError::bad_request("a turn needs \"text\", \"audio\" or both"));
    }
    if let Some(text) = &text {
        // A text the context cannot hold is refused before it costs any tokenizing.
        rt.agent
            .check_text_fits(text)
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    }
    let audio =
        req.audio.as_deref().map(decode_base64).transpose().map_err(ApiError::bad_request)?;
    let choice = req
        .tool_choice
        .as_deref()
        .map(|c| parse_tool_choice(c, &rt.agent.tools()))
        .transpose()
        .map_err(ApiError::bad_request)?;
    // Found only once the request is well formed: a bad request loads nothing from disk.
    let slot = stored::find(&rt, &id).await?;
    let Some(guard) = slot.try_begin() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("session {id:?} is in another turn; wait for its `done` event"),
        ));
    };
    // Audio is decoded while the session is held but before it is touched: a bad upload
    // leaves it as it was.
    let mut input = TurnInput::default();
    if let Some(data) = audio {
        match decode_audio(&rt, data).await {
            Ok(chunks) => input = input.and_audio(chunks),
            Err(error) => {
                slot.end(&guard, Usage::default(), None);
                return Err(error);
            }
        }
    }
    if let Some(text) = text {
        input = input.and_text(text);
    }

    let (tx, rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    tokio::spawn(turn::run_turn(rt, slot, guard, input, choice, tx));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// A turn's uploaded audio, decoded and cut into the model's chunks off the executor: 413
/// over the limits, 400 when it is not audio.
async fn decode_audio(rt: &AgentRuntime, data: Vec<u8>) -> Result<Vec<AudioChunk>, ApiError> {
    upload::decode_audio(rt.audio_limits, data)
        .await
        .map_err(|(status, message)| ApiError::new(status, message))
}

/// The JSON body of `POST /v1/sessions/{id}/approvals/{call_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalAnswer {
    approve: bool,
    /// Why not, for the model (ignored with an approval).
    reason: Option<String>,
}

impl RequestBody for ApprovalAnswer {
    const WHAT: &'static str = "approval";

    fn hint() -> &'static str {
        "; send {\"approve\": true} or {\"approve\": false, \"reason\": \"...\"}"
    }
}

async fn answer_approval(
    Runtime(rt): Runtime,
    Path((id, call_id)): Path<(String, String)>,
    JsonBody(answer): JsonBody<ApprovalAnswer>,
) -> Result<StatusCode, ApiError> {
    // Only a session in memory can have a call waiting.
    if rt.sessions.get(&id).is_none() {
        return Err(ApiError::unknown_session(&id));
    }
    let approval = if answer.approve {
        Approval::Approved
    } else {
        // The refusal the model reads ends the reason with its own full stop.
        let reason = answer.reason.map(|r| r.trim().trim_end_matches('.').trim_end().to_owned());
        let reason = reason.filter(|r| !r.is_empty());
        Approval::Denied { reason }
    };
    rt.approvals.answer(&id, &call_id, approval).map_err(|e| {
        let status = match e {
            AnswerError::Unknown => StatusCode::NOT_FOUND,
            AnswerError::Settled(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.message(&id, &call_id))
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    upload::decode_base64(text, "audio")
}
