//! The browser page at `/`, and the two small endpoints only it needs besides the API.
//!
//! The page is four static files compiled into the binary (no build step, no CDN): `index.html`,
//! `app.js` (the realtime client: microphone, playback, transcript, tool timeline), `capture.js`
//! (the AudioWorklet that turns the microphone into PCM16 at 24 kHz) and `style.css`. It talks
//! to `/v1/realtime` like any other realtime client, and reads `/healthz`, `/v1/voices` and
//! `/v1/audio/search`.
//!
//! - `GET /v1/voices`: the voice library, `{"default": name, "voices": [{name, description,
//!   attributes}]}` (an empty list and a `note` when speech is not rendered).
//! - `GET /v1/audio/items/{id}/audio`: the audio file of an indexed item, for playing search hits.
//!   Only files the index holds are served: the id is looked up, never a path.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use voxloop_retrieval::{AudioIndex, ItemId};

use crate::http::audio::{audio_media_type, error};
use crate::runtime::setup::AgentRuntime;

/// A static file of the page: its URL path, content type and body.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("page/index.html"),
    },
    Asset {
        path: "/page/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("page/app.js"),
    },
    Asset {
        path: "/page/capture.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("page/capture.js"),
    },
    Asset {
        path: "/page/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("page/style.css"),
    },
];

/// What the page's endpoints read.
#[derive(Clone)]
pub struct PageState {
    pub index: Option<Arc<AudioIndex>>,
    pub agent: Option<Arc<AgentRuntime>>,
}

/// The page's routes.
pub fn router(state: PageState) -> Router {
    let mut router = Router::new();
    for asset in ASSETS {
        let (content_type, body) = (asset.content_type, asset.body);
        router = router.route(
            asset.path,
            get(move || async move {
                // The page is small and changes with the binary: always revalidate.
                ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
            }),
        );
    }
    router
        .route("/v1/voices", get(voices))
        .route("/v1/audio/items/{id}/audio", get(item_audio))
        .with_state(state)
}

async fn voices(State(state): State<PageState>) -> Response {
    let Some(voice) = state.agent.as_ref().and_then(|rt| rt.voice.as_ref()) else {
        let note = if state.agent.is_none() {
            "no model loaded: set [model] dir (or VOXLOOP_MODEL_DIR) to a Step-Audio 2 checkpoint"
        } else {
            "speech is not rendered: token2wav or a voice profile is missing (see `voxloop voice add`)"
        };
        return Json(json!({ "default": null, "voices": [], "note": note })).into_response();
    };
    let voices: Vec<_> = voice
        .library
        .profiles()
        .map(
            |p| json!({ "name": p.name, "description": p.description, "attributes": p.attributes }),
        )
        .collect();
    Json(json!({ "default": voice.start.name, "voices": voices })).into_response()
}

async fn item_audio(State(state): State<PageState>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(index) = state.index else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no audio index");
    };
    let Ok(id) = id.parse::<ItemId>() else {
        return error(StatusCode::BAD_REQUEST, format!("{id:?} is not an item id"));
    };
    let item = match tokio::task::spawn_blocking(move || index.get(id)).await {
        Ok(Ok(Some(item))) => item,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, format!("no item {id} in the index")),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("lookup failed: {e}")),
    };
    match tokio::fs::read(&item.path).await {
        Ok(bytes) => {
            ([(header::CONTENT_TYPE, audio_media_type(&item.path))], bytes).into_response()
        }
        Err(e) => error(
            StatusCode::GONE,
            format!(
                "item {id} is indexed but its file {} cannot be read: {e}",
                item.path.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_loads_is_served() {
        let html = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            let referenced = html.contains(asset.path)
                || ASSETS.iter().any(|a| a.body.contains(&format!("'{}'", asset.path)));
            assert!(referenced, "{} is served but nothing loads it", asset.path);
        }
        // And nothing outside the binary: no CDN, no remote fonts.
        for asset in ASSETS {
            assert!(!asset.body.contains("https://"), "{} loads something remote", asset.path);
        }
    }
}
