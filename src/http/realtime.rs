//! `GET /v1/realtime`: a WebSocket speaking OpenAI's Realtime API (GA event names), so that
//! realtime clients (the `openai` SDK's `client.realtime.connect`, LiveKit, Pipecat) talk to
//! voxloop's agent unchanged.
//!
//! ```text
//! client → server   session.update, input_audio_buffer.append / .commit / .clear,
//!                   conversation.item.create (user message: input_text / input_audio;
//!                   function_call_output; mcp_approval_response), conversation.item.truncate,
//!                   response.create, response.cancel
//! server → client   session.created / .updated, input_audio_buffer.speech_started /
//!                   .speech_stopped / .committed / .cleared, conversation.item.added / .done /
//!                   .truncated, response.created, response.output_item.added / .done,
//!                   response.content_part.added / .done, response.output_audio.delta / .done,
//!                   response.output_audio_transcript.delta / .done, response.output_text.delta /
//!                   .done, response.function_call_arguments.delta / .done, response.done, error
//! ```
//!
//! Audio both ways is base64 of 16-bit little-endian mono PCM at 24 kHz. Each connection is a
//! voxloop session (`session.id`, saved like those of `/v1/sessions` and listed there); the
//! session is the connection's for as long as it lasts.
//!
//! **Turn detection.** With `turn_detection: {"type": "server_vad", ...}` (the default when a
//! Silero VAD model is configured: `[realtime] vad_model`) the server hears where speech
//! starts and stops, commits it as a user item and answers; speech that starts while a
//! response runs cancels it (`interrupt_response`), and the answer stays in the history only
//! as far as its audio was sent. `turn_detection: null`: the client commits and asks for
//! responses itself.
//!
//! **Tools.** voxloop's own tools run here, through their policy stacks, shown as
//! `function_call` items followed by `function_call_output` items. Tools the client declares
//! in `session.update` run on the client: the response ends with their `function_call` items,
//! and the client sends `function_call_output` items and `response.create`. A call that
//! needs approval adds an `mcp_approval_request` item (`server_label: "voxloop"`); the client
//! answers with an `mcp_approval_response` item.
//!
//! **Errors.** A bad event (not JSON, unknown type, bad field, audio that is not PCM16, a
//! full buffer, events out of order) gets an `error` event naming its `event_id`; the
//! connection and the session stay as they were. Without a model the upgrade is refused with
//! 503; so is one connection over `[realtime] max_connections`, with `Retry-After`.

mod connection;
mod filler;
mod protocol;
mod response;
mod settings;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;
use voxloop_core::session::Session;
use voxloop_retrieval::AudioIndex;

use crate::config::RealtimeConfig;
use crate::http::sessions::stored;
use crate::realtime::vad::VadPool;
use crate::runtime::sessions::SessionState;
use crate::runtime::setup::AgentRuntime;
use connection::{Connection, Shared};

/// What the route needs.
pub struct RealtimeState {
    pub agent: Option<Arc<AgentRuntime>>,
    pub config: RealtimeConfig,
    connections: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl RealtimeState {
    /// `index`: the audio index the filler is looked up in.
    pub fn new(
        agent: Option<Arc<AgentRuntime>>,
        config: RealtimeConfig,
        index: Option<Arc<AudioIndex>>,
    ) -> Self {
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let shared = Arc::new(Shared {
            vads: VadPool::new(config.max_connections),
            own_tools: tokio::sync::OnceCell::new(),
            index,
            filler: tokio::sync::OnceCell::new(),
        });
        Self { agent, config, connections, shared }
    }
}

/// The realtime route.
pub fn router(state: RealtimeState) -> Router {
    Router::new().route("/v1/realtime", get(upgrade)).with_state(Arc::new(state))
}

fn refuse(status: StatusCode, message: String) -> Response {
    let body = Json(json!({ "error": { "type": "server_error", "message": message } }));
    let mut response = (status, body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn upgrade(State(state): State<Arc<RealtimeState>>, ws: WebSocketUpgrade) -> Response {
    let Some(rt) = state.agent.clone() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model is configured: set [model] dir in the config file".into(),
        );
    };
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} realtime connections are open ([realtime] max_connections); try again later",
                state.config.max_connections
            ),
        );
    };
    let voice = rt.voice.as_ref().map(|v| Arc::clone(&v.start));
    let session = SessionState::new(Session::new(rt.defaults.clone()), voice);
    let (session, save_error) = match stored::save_new(&rt, session).await {
        Ok(saved) => saved,
        Err(e) => return e.into_response(),
    };
    let (id, evicted) = match rt.sessions.insert(session) {
        Ok(inserted) => inserted,
        Err(full) => return stored::table_full(full).into_response(),
    };
    stored::log_eviction(evicted);
    let Some(slot) = rt.sessions.get(&id) else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the new session vanished".into());
    };
    slot.set_save_error(save_error);
    let Some(guard) = slot.try_begin() else {
        return refuse(StatusCode::CONFLICT, format!("session {id:?} is busy"));
    };
    let config = state.config.clone();
    let shared = Arc::clone(&state.shared);
    ws.max_message_size(protocol::MAX_FRAME_BYTES).on_upgrade(move |socket| async move {
        tracing::info!(session = %id, "realtime connection opened");
        Connection::serve(rt, config, slot, guard, shared, socket).await;
        tracing::info!(session = %id, "realtime connection closed");
        drop(permit);
    })
}
