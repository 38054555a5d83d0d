//! `GET /v1/audio/search`: the audio index over HTTP.
//!
//! ```text
//! curl 'http://127.0.0.1:8080/v1/audio/search?q=rain+on+a+roof&kind=sound&k=5'
//! ```
//!
//! Query parameters: `q` (the description, required), `kind` (`timbre` | `sound`), `k` (1–1000,
//! default 10), `mode` (`hybrid` (default), `bm25`, `vector`), and the filters `gender`,
//! `language`, `min_seconds`, `max_seconds`. The answer is `{"query", "hits": [...]}` with each
//! hit's item, score and match reason, as `voxloop search --json` prints them. A bad query is
//! `400 {"error": "..."}`; a service started without an index answers `503`.
//!
//! The search runs on the blocking pool: Tantivy, qdrant-edge and MiniLM on libtorch block.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use voxloop_retrieval::search::{Retriever, SearchRequest};
use voxloop_retrieval::{AudioIndex, Gender, ItemFilter, ItemKind};

/// The query string of `/v1/audio/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    q: Option<String>,
    kind: Option<String>,
    k: Option<usize>,
    mode: Option<String>,
    gender: Option<String>,
    language: Option<String>,
    min_seconds: Option<f64>,
    max_seconds: Option<f64>,
}

const DEFAULT_K: usize = 10;

/// The media type of an audio file, by its extension (for HTTP and MCP answers carrying it).
pub fn audio_media_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("wav") => "audio/wav",
        Some("flac") => "audio/flac",
        Some("mp3") => "audio/mpeg",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("m4a" | "mp4" | "aac") => "audio/mp4",
        Some("webm") => "audio/webm",
        _ => "application/octet-stream",
    }
}

/// `status` with `{"error": message}`, the shape every JSON endpoint of the service answers.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn request(params: SearchParams) -> Result<SearchRequest, String> {
    let text = params.q.ok_or("missing query parameter q (what the audio sounds like)")?;
    let filter = ItemFilter {
        kind: params
            .kind
            .as_deref()
            .map(str::parse::<ItemKind>)
            .transpose()
            .map_err(|e| e.to_string())?,
        gender: params
            .gender
            .as_deref()
            .map(str::parse::<Gender>)
            .transpose()
            .map_err(|e| e.to_string())?,
        language: params.language,
        min_duration_s: params.min_seconds,
        max_duration_s: params.max_seconds,
        ..ItemFilter::default()
    };
    let retriever = params
        .mode
        .as_deref()
        .unwrap_or("hybrid")
        .parse::<Retriever>()
        .map_err(|e| e.to_string())?;
    let request = SearchRequest::new(text, params.k.unwrap_or(DEFAULT_K))
        .with_filter(filter)
        .with_retriever(retriever);
    request.validate().map_err(|e| e.to_string())?;
    Ok(request)
}

/// The handler.
pub async fn search(
    State(index): State<Option<Arc<AudioIndex>>>,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(index) = index else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no audio index: build one with `voxloop index add <folder>` and restart",
        );
    };
    let request = match params.map_err(|e| e.body_text()).and_then(|Query(p)| request(p)) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let query = request.text.clone();
    match tokio::task::spawn_blocking(move || index.search(&request)).await {
        Ok(Ok(hits)) => Json(json!({ "query": query, "hits": hits })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "audio search failed");
            let status = match e {
                voxloop_retrieval::Error::EmptyQuery
                | voxloop_retrieval::Error::InvalidLimit { .. }
                | voxloop_retrieval::Error::UnknownFilterValue { .. }
                | voxloop_retrieval::Error::InvalidFusion(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("search task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn media_types_follow_the_extension() {
        assert_eq!(audio_media_type(Path::new("a/bell.WAV")), "audio/wav");
        assert_eq!(audio_media_type(Path::new("bell.oga")), "audio/ogg");
        assert_eq!(audio_media_type(Path::new("x.mp3")), "audio/mpeg");
        assert_eq!(audio_media_type(Path::new("x.flac")), "audio/flac");
        assert_eq!(audio_media_type(Path::new("noext")), "application/octet-stream");
    }
}
