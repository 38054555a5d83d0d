//! The HTTP service: routes, listening, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use voxloop_retrieval::AudioIndex;

use crate::audio_api;
use crate::config::Config;

/// What `/healthz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    /// Whether a speech LLM checkpoint is configured.
    pub model_configured: bool,
    /// Items in the audio index, if the service opened one.
    pub audio_index_items: Option<u64>,
}

/// The router of the service: `/healthz`, `/v1/tools` (the JSON schemas of the configured
/// built-in tools, as the model sees them) and `/v1/audio/search` (see [`audio_api`]).
pub fn router(config: &Config, index: Option<Arc<AudioIndex>>, tool_schemas: String) -> Router {
    let health = Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        model_configured: config.model.dir.is_some(),
        audio_index_items: index.as_ref().map(|i| i.text().num_docs()),
    };
    Router::new()
        .route("/healthz", get(move || async move { Json(health) }))
        .route(
            "/v1/tools",
            get(move || async move {
                ([(axum::http::header::CONTENT_TYPE, "application/json")], tool_schemas)
            }),
        )
        .route("/v1/audio/search", get(audio_api::search))
        .with_state(index)
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

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish.
///
/// The signal handlers are installed here, before the first request is accepted: a handler
/// installed lazily (when the shutdown future is first polled, on a task of its own) leaves a
/// window in which a SIGTERM still kills the process the default way.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    index: Option<Arc<AudioIndex>>,
    tool_schemas: String,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("Ctrl-C received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    };
    axum::serve(listener, router(config, index, tool_schemas))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
