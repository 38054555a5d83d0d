//! Audio a client uploads in a JSON body: base64 (optionally a data URL) decoded, then the
//! file decoded and cut into the model's chunks off the executor. Shared by the session API
//! and Chat Completions (`input_audio`).

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine as _;
use voxloop_core::audio::{prepare_audio, AudioChunk, AudioInput, AudioLimits};

/// The bytes of base64 `text` in the field `field` (named in the error), which may be a data
/// URL (`data:audio/wav;base64,....`) and may hold whitespace; empty is an error.
pub fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, String> {
    let payload = match text.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => text,
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("\"{field}\" is not base64 (standard alphabet, padded): {e}"))?;
    if bytes.is_empty() {
        return Err(format!("\"{field}\" is empty"));
    }
    Ok(bytes)
}

/// An audio file (WAV, FLAC, MP3, Ogg Vorbis) decoded and cut into the model's chunks on
/// the blocking pool: 413 over `limits`, 400 when it is not audio, each with the reason.
pub async fn decode_audio(
    limits: AudioLimits,
    data: Vec<u8>,
) -> Result<Vec<AudioChunk>, (StatusCode, String)> {
    let input = AudioInput::Bytes { name: "audio".into(), data };
    match tokio::task::spawn_blocking(move || prepare_audio(input, &limits)).await {
        Ok(Ok(chunks)) => Ok(chunks),
        Ok(Err(e)) => {
            let status = match e {
                voxloop_core::Error::AudioTooLarge { .. }
                | voxloop_core::Error::AudioTooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            Err((status, e.to_string()))
        }
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("audio task failed: {e}"))),
    }
}

/// Largest request body of the JSON APIs (a turn or a chat request with base64 audio).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The body length a request declares (`Content-Length`).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `router` with bodies limited to [`MAX_BODY_BYTES`]: a request whose `Content-Length` is
/// over it gets `refuse(length)` at once, instead of being read that far first, and a body
/// without a length is cut at the limit (413 from [`DefaultBodyLimit`]).
pub fn limit_body<S>(router: Router<S>, refuse: fn(u64) -> Response) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            match declared_length(request.headers()) {
                Some(n) if n > MAX_BODY_BYTES as u64 => refuse(n),
                _ => next.run(request).await,
            }
        },
    ))
}
