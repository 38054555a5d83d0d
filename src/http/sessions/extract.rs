//! What the session handlers take and give: [`ApiError`] (every error answer, as
//! `{"error": "..."}`) and the extractors that refuse a request before its handler runs —
//! [`Runtime`] (503 without a model), [`SessionSlot`] (404 / 500 / 503 from the session
//! table and the store) and [`JsonBody`] (400 / 413 for the body).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{stored, ApiState, MAX_BODY_BYTES};
use crate::runtime::sessions::Slot;
use crate::runtime::setup::AgentRuntime;

/// An error answer: a status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for a passing overload.
    retry_after: Option<u32>,
}

impl ApiError {
    /// `status` with `message`.
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self { status, message: message.to_string(), retry_after: None }
    }

    /// The same error, telling the client to retry after `seconds`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400.
    pub fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 404 for a session that is neither in memory nor saved.
    pub fn unknown_session(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("no session {id:?} (it may have been deleted or evicted)"),
        )
    }

    /// 503 without a model.
    pub fn no_model() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no speech LLM is loaded: set [model] dir in the config file (or VOXLOOP_MODEL_DIR) \
             to a Step-Audio 2 checkpoint directory and restart",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// The loaded agent, or 503.
pub struct Runtime(pub Arc<AgentRuntime>);

impl FromRequestParts<ApiState> for Runtime {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state.clone().map(Runtime).ok_or_else(ApiError::no_model)
    }
}

/// The session the path's `{id}` names: in memory, else loaded from the store.
pub struct SessionSlot(pub Arc<Slot>);

impl FromRequestParts<ApiState> for SessionSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Runtime(rt) = Runtime::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let id = params.get("id").cloned().unwrap_or_default();
        Ok(Self(stored::find(&rt, &id).await?))
    }
}

/// A JSON request body of type `T`: 413 over [`MAX_BODY_BYTES`], 400 (naming `T`'s
/// [`RequestBody::WHAT`] and the problem) when it does not parse.
pub struct JsonBody<T>(pub T);

/// A request body type.
pub trait RequestBody: DeserializeOwned {
    /// What it is, for error messages (`session`, `turn`).
    const WHAT: &'static str;

    /// What an empty (or all-whitespace) body means; `None`: an error.
    fn when_empty() -> Option<Self> {
        None
    }

    /// What to add to a parse error (how a valid body looks).
    fn hint() -> &'static str {
        ""
    }
}

impl<T: RequestBody> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    format!("the request body exceeds the limit of {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(status, rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            if let Some(empty) = T::when_empty() {
                return Ok(Self(empty));
            }
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(format!("invalid {} JSON: {e}{}", T::WHAT, T::hint()))
        })
    }
}
