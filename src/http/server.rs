//! The HTTP service: routes, listening, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use voxloop_retrieval::AudioIndex;

use crate::config::Config;
use crate::http::{audio, chat, page, realtime, sessions, speech};
use crate::mcp::client::{McpClients, McpServerHealth};
use crate::runtime::setup::AgentRuntime;

/// What `/healthz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    /// Whether a speech LLM checkpoint is configured.
    pub model_configured: bool,
    /// Items in the audio index, if the service opened one.
    pub audio_index_items: Option<u64>,
    /// The loaded agent (`null` without a model).
    pub agent: Option<AgentHealth>,
    /// The `[[mcp.servers]]` whose tools the agent gets, each with its state.
    pub mcp_servers: Vec<McpServerHealth>,
}

/// The agent part of `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentHealth {
    /// The checkpoint directory.
    pub model_dir: String,
    /// Where generation runs: `local`, or `openai` (a remote server).
    pub backend: &'static str,
    /// The remote server's API base URL (`null` for a local model).
    pub model_url: Option<String>,
    /// Where the weights are (`cpu`, `cuda:0`) and in which dtype (`f32`, `bf16`); `null`
    /// for a remote model.
    pub device: Option<String>,
    pub dtype: Option<&'static str>,
    /// The tools the model is told of.
    pub tools: Vec<String>,
    /// Those of them whose calls wait for the client's approval.
    pub approval_required: Vec<String>,
    /// Tool calls waiting for an approval now, in all sessions.
    pub pending_approvals: usize,
    /// `speech` or `text`: how new sessions answer by default.
    pub mode: &'static str,
    /// Sessions in memory, and the most kept.
    pub sessions: usize,
    pub max_sessions: usize,
    /// Speech rendering (`null`: speech codes are streamed without audio).
    pub voice: Option<VoiceHealth>,
}

/// Speech rendering in `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceHealth {
    /// The voice sessions start in.
    pub name: String,
    /// The token2wav directory.
    pub token2wav: String,
    /// The output sample rate.
    pub sample_rate: u32,
}

fn health(config: &Config, parts: &Parts) -> Health {
    let (index, agent) = (parts.index.as_ref(), parts.agent.as_deref());
    Health {
        mcp_servers: parts.mcp_clients.health(),
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        model_configured: config.model.dir.is_some(),
        audio_index_items: index.map(|i| i.text().num_docs()),
        agent: agent.map(|rt| AgentHealth {
            model_dir: rt.model_dir.display().to_string(),
            backend: if rt.agent.remote_model().is_some() { "openai" } else { "local" },
            model_url: rt.agent.remote_model().map(|m| m.config().url.clone()),
            device: rt.agent.placement().map(|(device, _)| match device {
                tch::Device::Cuda(n) => format!("cuda:{n}"),
                _ => "cpu".to_owned(),
            }),
            dtype: rt.agent.placement().map(|(_, kind)| match kind {
                tch::Kind::BFloat16 => "bf16",
                tch::Kind::Half => "f16",
                _ => "f32",
            }),
            tools: rt.agent.tools().names().map(str::to_owned).collect(),
            approval_required: rt
                .agent
                .tools()
                .names()
                .filter(|name| rt.approvals.required(name))
                .map(str::to_owned)
                .collect(),
            pending_approvals: rt.approvals.pending(),
            mode: if rt.defaults.speech { "speech" } else { "text" },
            sessions: rt.sessions.len(),
            max_sessions: rt.sessions.max(),
            voice: rt.voice.as_ref().map(|v| VoiceHealth {
                name: v.start.name.clone(),
                token2wav: v.token2wav_dir.display().to_string(),
                sample_rate: v.renderer.sample_rate(),
            }),
        }),
    }
}

/// The `/v1/tools` listing: the schemas the model is told of, each MCP tool's entry with
/// `"mcp": {"server", "state"}` (its server and whether it runs now) beside them.
fn with_servers(json: String, clients: &McpClients) -> String {
    let servers = clients.tool_servers();
    let Ok(serde_json::Value::Array(mut tools)) = serde_json::from_str(&json) else {
        return json;
    };
    if servers.is_empty() {
        return json;
    }
    for tool in &mut tools {
        let name = tool["function"]["name"].as_str().unwrap_or_default();
        if let Some((server, state)) = servers.get(name) {
            tool["mcp"] = serde_json::json!({ "server": server, "state": state });
        }
    }
    serde_json::Value::Array(tools).to_string()
}

/// What the service serves, besides its configuration.
pub struct Parts {
    /// The audio index, when one exists.
    pub index: Option<Arc<AudioIndex>>,
    /// The JSON schemas of the tools the model would be told of (`/v1/tools` without an
    /// agent; with one, its tools of the moment).
    pub tool_schemas: String,
    /// The loaded agent (`None` without a model).
    pub agent: Option<Arc<AgentRuntime>>,
    /// `/mcp`, when it is on (see `crate::mcp`).
    pub mcp: Option<Router>,
    /// The MCP servers the agent's tools come from.
    pub mcp_clients: Arc<McpClients>,
}

/// The router of the service: `/healthz`, `/v1/tools` (the JSON schemas of the tools the
/// model is told of), `/v1/audio/search` (see [`audio`]), the session endpoints (see
/// [`sessions`]), Chat Completions (`/v1/models`, `/v1/chat/completions`, see [`chat`]), the realtime
/// WebSocket (`/v1/realtime`, see [`realtime`]), the browser page (`/`, `/v1/voices`,
/// `/v1/audio/items/{id}/audio`, see [`page`]), and `/mcp` when given (see `crate::mcp`).
pub fn router(config: &Config, parts: Parts) -> Router {
    let realtime_config = config.realtime.clone();
    let config = Arc::new(config.clone());
    let index = parts.index.clone();
    let agent = parts.agent.clone();
    let tool_schemas = parts.tool_schemas.clone();
    let agent_tools = parts.agent.clone();
    let mcp_clients = Arc::clone(&parts.mcp_clients);
    let mcp = parts.mcp.clone();
    let parts = Arc::new(parts);
    Router::new()
        .route("/healthz", get(move || async move { Json(health(&config, &parts)) }))
        .route(
            "/v1/tools",
            get(move || async move {
                // The agent's tools change with its MCP servers' lists (`crate::mcp::refresh`).
                let live = agent_tools.as_ref().map(|rt| rt.agent.tools().tool_json_schemas());
                let json = match live {
                    Some(Ok(json)) => json,
                    Some(Err(e)) => {
                        let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        return Err((status, e.to_string()));
                    }
                    None => tool_schemas,
                };
                Ok((
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    with_servers(json, &mcp_clients),
                ))
            }),
        )
        .route("/v1/audio/search", get(audio::search))
        .with_state(index.clone())
        .merge(sessions::router(agent.clone()))
        .merge(chat::router(agent.clone()))
        .merge(speech::router(agent.clone()))
        .merge(page::router(page::PageState { index: index.clone(), agent: agent.clone() }))
        .merge(realtime::router(realtime::RealtimeState::new(agent, realtime_config, index)))
        .merge(mcp.unwrap_or_default())
}

/// Binds the listener, turning "address in use" and friends into one clear sentence.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        let hint = match err.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there; pick another with --addr or VOXLOOP_ADDR)"
            }
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {err}{hint}")
    })
}

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish (tool calls waiting
/// for an approval are denied).
///
/// The signal handlers are installed here, before the first request is accepted: a handler
/// installed lazily (when the shutdown future is first polled, on a task of its own) leaves a
/// window in which a SIGTERM still kills the process the default way.
pub async fn serve(listener: TcpListener, config: &Config, parts: Parts) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
    let approvals = parts.agent.as_ref().map(|rt| Arc::clone(&rt.approvals));
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("Ctrl-C received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        // A turn waiting for an approval would hold the shutdown up: deny, and let it end.
        if let Some(approvals) = approvals {
            approvals.withdraw_all();
        }
    };
    // Streams (SSE, WebSocket frames) are many small writes: with Nagle's algorithm each one
    // after the first waits for the client's delayed ACK (up to 40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(config, parts)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
