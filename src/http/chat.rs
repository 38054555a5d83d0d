//! OpenAI's Chat Completions API over the agent, so that the `openai` SDKs and the
//! frameworks built on them (Pipecat, LiveKit Agents, LangChain) can use voxloop as their
//! speech LLM.
//!
//! ```text
//! GET  /v1/models             → {"object": "list", "data": [{"id": "step-audio-2-mini", ...}]}
//! POST /v1/chat/completions   → a chat.completion, or with "stream": true server-sent
//!                               chat.completion.chunk events ending with `data: [DONE]`
//! ```
//!
//! Each request carries the whole conversation; it becomes a session history
//! ([`request`]: text and `input_audio` parts, replayed assistant turns, tool results) that the
//! agent answers with one generation step ([`Agent::continue_turn`]). The request's `tools`
//! are the client's: the model is told of them and its calls are constrained to their schemas
//! (as for voxloop's own tools), but they are not run here: a call ends the answer with
//! `finish_reason: "tool_calls"`, and the client sends the result back as a `tool` message.
//! voxloop's built-in tools are not offered on this API (use the session API or MCP).
//!
//! `modalities: ["text", "audio"]` answers in speech, rendered by token2wav in the voice the
//! `audio.voice` names (a voice-library name): `message.audio` (WAV or raw PCM16 at the
//! renderer's rate, 24 kHz) and StepFun's `tts_content`; see [`reply`]. A text answer never
//! holds speech codes (the audio vocabulary is masked).
//!
//! A think phase (a reasoning checkpoint, `[agent] think`, or `reasoning_effort` other than
//! `none`) comes first as `message.reasoning_content` (streamed: `delta.reasoning_content`),
//! as vLLM's reasoning parsers give it; it is never spoken and the replayed history leaves it
//! out, as upstream's think example does.
//!
//! Stateless does not mean cold: the model's KV cache keeps the conversation it ran last, and a
//! request that extends it prefills only what is new (`usage.prompt_tokens_details.
//! cached_tokens` says how much was reused). For that the assistant turns a client sends back
//! are replayed with the ids they were generated with ([`memory`]).
//!
//! Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a
//! malformed or unsupported request (the `param` named), 404 `model_not_found`, 413 for a body
//! over 32 MiB or audio over the limits, 503 without a model, 500 when generation fails. A
//! refused request changes nothing. A streaming client that goes away cancels the answer.
//!
//! [`Agent::continue_turn`]: voxloop_core::agent::Agent::continue_turn

mod memory;
mod reply;
mod request;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use voxloop_core::agent::ClientTools;
use voxloop_core::session::{HumanPart, Session, SessionSettings, Turn};
use voxloop_voices::SessionVoice;

use crate::http::upload::{self, MAX_BODY_BYTES};
use crate::runtime::setup::AgentRuntime;
use memory::{TurnKey, TurnMemory};
use reply::{Collector, Envelope};
use request::{ChatRequest, HistoryContext};

/// Assistant turns kept for replay ([`memory`]).
const REMEMBERED_TURNS: usize = 1024;
/// How long a spoken answer's `audio.id` is promised to be recognised (`expires_at`); the
/// memory is bounded by count, so this is the most a client may rely on.
const AUDIO_TTL: Duration = Duration::from_secs(3600);
/// Chunks a stream may queue for a slow client before the answer waits.
const CHUNK_QUEUE: usize = 256;

/// An error answer in OpenAI's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ChatError {
    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::with_status(StatusCode::BAD_REQUEST, message, param)
    }

    /// `status` (400 or 413) `invalid_request_error` about `param`.
    pub fn with_status(
        status: StatusCode,
        message: impl Into<String>,
        param: impl Into<String>,
    ) -> Self {
        let param = param.into();
        Self {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            param: (!param.is_empty()).then_some(param),
            code: None,
        }
    }

    /// 400 for a parameter voxloop knows but does not support, saying what it supports.
    pub fn unsupported(param: &str, supported: &str) -> Self {
        Self {
            code: Some("unsupported_parameter"),
            ..Self::invalid(format!("unsupported value of {param}: {supported}"), param)
        }
    }

    /// 404 `model_not_found`.
    pub fn unknown_model(asked: &str, served: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..Self::invalid(
                format!("the model {asked:?} does not exist here; this server runs {served:?}"),
                "model",
            )
        }
    }

    /// 503 without a model.
    pub fn no_model() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "service_unavailable",
            ..Self::invalid(
                "no speech LLM is loaded: set [model] dir in the config file (or \
                 VOXLOOP_MODEL_DIR) to a Step-Audio 2 checkpoint directory and restart",
                "",
            )
        }
    }

    /// 503 `server_error` `overloaded`, with `Retry-After: 1`: every `[agent] max_requests`
    /// slot is taken (the official clients retry it).
    pub fn overloaded(max: usize) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: Some("overloaded"),
            ..Self::invalid(
                format!(
                    "{max} requests are running or waiting for the model ([agent] max_requests); \
                     retry later"
                ),
                "",
            )
        }
    }

    /// A slot of `rt` for one request, or [`ChatError::overloaded`].
    pub fn slot(rt: &AgentRuntime) -> Result<tokio::sync::OwnedSemaphorePermit, Self> {
        rt.request_slot().ok_or_else(|| Self::overloaded(rt.max_requests))
    }

    /// 500 `server_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            ..Self::invalid(message, "")
        }
    }

    fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The library voice `name`, or a 400 about `param` listing the voices.
pub fn library_voice(
    voices: &crate::runtime::setup::VoiceRuntime,
    name: &str,
    param: &str,
) -> Result<Arc<voxloop_voices::VoiceProfile>, ChatError> {
    voices.library.get(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = voices.library.profiles().map(|p| p.name.as_str()).collect();
        ChatError::invalid(
            format!("no voice {name:?} in the voice library (voices: {})", names.join(", ")),
            param,
        )
    })
}

/// The routes' state.
#[derive(Clone)]
struct ChatState {
    runtime: Option<Arc<AgentRuntime>>,
    memory: Arc<TurnMemory>,
}

/// The Chat Completions routes (`runtime`: the loaded agent, `None` without a model).
pub fn router(runtime: Option<Arc<AgentRuntime>>) -> Router {
    let state = ChatState { runtime, memory: Arc::new(TurnMemory::new(REMEMBERED_TURNS)) };
    let routes = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(completions));
    upload::limit_body(routes, too_large).with_state(state)
}

/// The 413 of a body over [`MAX_BODY_BYTES`], in OpenAI's error shape.
pub fn too_large(length: u64) -> Response {
    ChatError::with_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body ({length} bytes) exceeds the limit of {MAX_BODY_BYTES} bytes"),
        "",
    )
    .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn models(State(state): State<ChatState>) -> Response {
    let data: Vec<Value> = state
        .runtime
        .iter()
        .map(|rt| {
            json!({
                "id": rt.agent.config().model_name,
                "object": "model",
                "created": 0,
                "owned_by": "voxloop",
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

async fn completions(
    State(state): State<ChatState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match answer(state, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Everything one answer runs with.
struct Prepared {
    session: Session,
    client: Arc<ClientTools>,
    envelope: Envelope,
    stops: Vec<String>,
    max_new_tokens: usize,
    include_usage: bool,
}

async fn answer(
    state: ChatState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ChatError> {
    let rt = state.runtime.clone().ok_or_else(ChatError::no_model)?;
    // Held until the answer is complete, the stream's included: the request's share of the
    // queue on the model.
    let slot = ChatError::slot(&rt)?;
    let body = body.map_err(|e| ChatError::with_status(e.status(), e.body_text(), ""))?;
    let request: ChatRequest = serde_json::from_slice(&body).map_err(|e| {
        ChatError::invalid(format!("the body is not a chat completion request: {e}"), "")
    })?;
    let stream = request.stream;
    let prepared = prepare(&rt, &state.memory, request).await?;
    if stream {
        let (tx, rx) = mpsc::channel::<Event>(CHUNK_QUEUE);
        tokio::spawn(async move {
            stream_answer(rt, state.memory, prepared, tx).await;
            drop(slot);
        });
        let events = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (Ok::<_, Infallible>(event), rx))
        });
        return Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response());
    }
    let Prepared { mut session, client, envelope, stops, max_new_tokens, .. } = prepared;
    let mut collector = Collector::new(stops);
    let renderer = rt.voice.as_ref().map(|v| &v.renderer);
    let mut turn = rt.agent.continue_turn(&mut session, Some(client), renderer);
    let cancel = turn.cancel_handle();
    while let Some(event) = turn.next().await {
        collector.push(event);
        if collector.stopped() && !cancel.is_cancelled() {
            cancel.cancel();
        }
    }
    drop(turn);
    let finish = collector.finish_reason(max_new_tokens).map_err(ChatError::internal)?;
    remember(&state.memory, &session, &envelope, &collector);
    drop(slot);
    Ok(Json(reply::completion(&envelope, &collector, finish)).into_response())
}

/// Checks the request and builds its session.
async fn prepare(
    rt: &Arc<AgentRuntime>,
    memory: &TurnMemory,
    request: ChatRequest,
) -> Result<Prepared, ChatError> {
    request.check()?;
    let served = &rt.agent.config().model_name;
    if &request.model != served {
        return Err(ChatError::unknown_model(&request.model, served));
    }
    let tools = request.tool_definitions()?;
    let choice = request.tool_choice(&tools)?;
    let parallel = request.parallel_tool_calls.unwrap_or(true);
    // Compiling the grammar of the tools takes milliseconds: off the executor.
    let compiled = {
        let rt = Arc::clone(rt);
        tokio::task::spawn_blocking(move || rt.agent.client_tools(tools, parallel))
            .await
            .map_err(|e| ChatError::internal(format!("compiling the tools failed: {e}")))?
    };
    let client = Arc::new(compiled.map_err(|e| ChatError::invalid(e.to_string(), "tools"))?);

    let mut settings: SessionSettings = rt.defaults.clone();
    settings.speech = request.speaks();
    settings.tool_choice = choice;
    settings.follow_up_tool_choice = voxloop_core::protocol::ToolChoice::None;
    settings.max_steps = 1;
    settings.think = request.thinks()?.unwrap_or(settings.think);
    let sampling = &mut settings.sampling;
    if let Some(t) = request.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = request.top_p {
        sampling.top_p = p;
    }
    if let Some(k) = request.top_k {
        sampling.top_k = k;
    }
    if let Some(penalty) = request.repetition_penalty {
        sampling.repetition_penalty = penalty;
    }
    if let Some(seed) = request.seed {
        sampling.seed = Some(seed as u64);
    }
    if let Some(n) = request.max_new_tokens() {
        if n == 0 {
            return Err(ChatError::invalid(
                "max_completion_tokens must be at least 1",
                "max_completion_tokens",
            ));
        }
        sampling.max_new_tokens = n;
    }
    sampling.params(Vec::new(), 0).validate().map_err(|e| ChatError::invalid(e.to_string(), ""))?;

    let voice = match &request.audio {
        Some(audio) if request.speaks() => {
            let runtime = rt.voice.as_ref().ok_or_else(|| {
                ChatError::invalid(
                    "audio answers need token2wav: set [voice] token2wav in the config file",
                    "modalities",
                )
            })?;
            let profile = library_voice(runtime, &audio.voice, "audio.voice")?;
            Some((profile, audio.format))
        }
        _ => None,
    };

    let context = HistoryContext {
        runtime: rt,
        memory,
        default_system: settings.system_text(rt.agent.config().now()),
        tool_schemas: if client.is_empty() {
            None
        } else {
            Some(
                client
                    .tool_json_schemas()
                    .map_err(|e| ChatError::invalid(e.to_string(), "tools"))?,
            )
        },
    };
    let history = request::history(&request.messages, &context).await?;
    let prompt_audio_tokens = history
        .iter()
        .flat_map(|turn| match turn {
            Turn::Human { parts } => parts.as_slice(),
            _ => &[],
        })
        .map(|part| match part {
            HumanPart::Audio { chunks } => chunks.iter().map(|c| c.patches()).sum(),
            HumanPart::Text { .. } => 0,
        })
        .sum();

    let max_new_tokens = settings.sampling.max_new_tokens;
    let mut session = Session::with_history(settings, history);
    let audio = voice.map(|(profile, format)| {
        session.extensions_mut().insert(Arc::new(SessionVoice::new(profile)));
        (format!("audio_{}", uuid::Uuid::new_v4().simple()), format)
    });
    let created = unix_now();
    let envelope = Envelope {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created,
        model: served.clone(),
        audio,
        prompt_audio_tokens,
        audio_expires_at: created + AUDIO_TTL.as_secs(),
    };
    Ok(Prepared {
        session,
        client,
        envelope,
        stops: request.stops(),
        max_new_tokens,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// Keeps the answer's generated ids for a client that replays it (not an answer cut at a
/// stop string: what the client holds is not what was generated).
fn remember(memory: &TurnMemory, session: &Session, envelope: &Envelope, answer: &Collector) {
    let Some(Turn::Assistant(turn)) = session.history().last() else { return };
    if answer.stopped() {
        return;
    }
    let mut keys = Vec::new();
    if let Some((id, _)) = &envelope.audio {
        keys.push(TurnKey::Audio(id.clone()));
    }
    let calls: Vec<_> =
        answer.calls.iter().map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone())).collect();
    // An empty text answer without calls says nothing that tells it apart from another.
    if !answer.content.is_empty() || !calls.is_empty() {
        keys.push(TurnKey::Text { content: answer.content.clone(), calls });
    }
    memory.remember(keys, turn);
}

/// Runs a streamed answer, sending its chunks to `tx`; a client that goes away cancels it.
async fn stream_answer(
    rt: Arc<AgentRuntime>,
    memory: Arc<TurnMemory>,
    prepared: Prepared,
    tx: mpsc::Sender<Event>,
) {
    let Prepared { mut session, client, envelope, stops, max_new_tokens, include_usage } = prepared;
    let send = |value: Value| {
        let tx = tx.clone();
        async move { tx.send(Event::default().data(value.to_string())).await.is_ok() }
    };
    let mut gone =
        !send(reply::chunk(&envelope, json!({ "role": "assistant", "content": "" }), None)).await;
    let mut collector = Collector::new(stops);
    {
        let renderer = rt.voice.as_ref().map(|v| &v.renderer);
        let mut turn = rt.agent.continue_turn(&mut session, Some(client), renderer);
        let cancel = turn.cancel_handle();
        loop {
            let event = tokio::select! {
                () = tx.closed(), if !gone => {
                    gone = true;
                    continue;
                }
                event = turn.next() => event,
            };
            let Some(event) = event else { break };
            for delta in collector.push(event) {
                let value = reply::chunk(&envelope, reply::delta_json(&envelope, &delta), None);
                gone = gone || !send(value).await;
            }
            if (gone || collector.stopped()) && !cancel.is_cancelled() {
                cancel.cancel();
            }
        }
    }
    if gone {
        return;
    }
    match collector.finish_reason(max_new_tokens) {
        Ok(finish) => {
            remember(&memory, &session, &envelope, &collector);
            send(reply::chunk(&envelope, json!({}), Some(finish))).await;
            if include_usage {
                send(reply::usage_chunk(&envelope, &collector.usage())).await;
            }
        }
        Err(message) => {
            tracing::warn!(error = %message, "chat completion failed");
            send(ChatError::internal(message).body()).await;
        }
    }
    let _ = tx.send(Event::default().data("[DONE]")).await;
}
