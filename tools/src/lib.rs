//! # voxloop-tools
//!
//! Built-in tools on core's `Tool` trait: web search (several providers and an offline
//! one), audio search, timbre swap, date/time and weather.
//!
//! | Tool | Arguments | Module |
//! |---|---|---|
//! | `web_search` | `{"query": "…"}` | [`search`]: SearXNG, Brave, Tavily or the offline Tantivy index, plus optional page fetch ([`fetch`]) |
//! | `get_date_time` | `{}` | [`datetime`] |
//! | `get_weather` | `{"location": "…"}` | [`weather`]: Open-Meteo by default |
//! | `audio_search` | `{"query": "…", "kind"?: "timbre" \| "sound", "limit"?: n}` | [`audio`]: the audio index |
//! | `timbre_rag` | `{"query": "…"}` | [`audio`]: voice swap through `voxloop-voices` |
//!
//! Every tool is configured by one serde struct of [`config`] (the `[tools.*]` tables of
//! the TOML file) and built with its `from_config` constructor;
//! [`register_builtin_tools`] registers all the enabled ones.
//!
//! Results are plain text for the model (the upstream search results are prose, not JSON).
//! Network failures come back as an [`Error`] that says whether they are transient
//! ([`Error::is_transient`], [`Error::retry_after`]), so that a retry policy can tell a
//! `429`/`5xx`/timeout from a bad key.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

use std::path::PathBuf;
use std::time::Duration;

pub mod audio;
pub mod config;
pub mod datetime;
mod error_text;
pub mod fetch;
pub mod html;
mod http;
pub mod search;
pub mod text;
pub mod voice_list;
pub mod weather;

pub use audio::{AudioSearch, AudioSearchArgs, TimbreArgs, TimbreRag};
pub use config::{Language, ToolsConfig};
pub use datetime::{DateTimeTool, SessionTimeZone};
pub use fetch::{AddressPolicy, HostLookup, Page, PageFetcher};
pub use search::{SearchProvider, SearchResult, WebSearch, WebSearchArgs};
pub use voice_list::{VoiceEntry, VoiceList};
pub use weather::{OpenMeteo, WeatherArgs, WeatherProvider, WeatherReport, WeatherTool};

use voxloop_core::tool::{ToolRegistry, Transient};

/// Everything that can go wrong in `voxloop-tools`.
///
/// The `Display` text is for logs and spans (it names the service, URL, path or field); what
/// the model is told is [`model_message`](Self::model_message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
    /// The service refused the credentials (HTTP 401 or 403), or none are configured.
    #[error("{service}: authentication failed (HTTP {status}): {detail}")]
    Auth { service: &'static str, status: u16, detail: String },
    /// The service asked the client to slow down (HTTP 429).
    #[error("{service}: rate limited (HTTP 429{}): {detail}", error_text::retry_after_suffix(*retry_after))]
    RateLimited { service: &'static str, retry_after: Option<Duration>, detail: String },
    /// The service failed (HTTP 5xx).
    #[error("{service}: server error (HTTP {status}{}): {detail}", error_text::retry_after_suffix(*retry_after))]
    ServerError {
        service: &'static str,
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The service rejected the request (another HTTP 4xx, or an unexpected status).
    #[error("{service}: request rejected (HTTP {status}): {detail}")]
    Rejected { service: &'static str, status: u16, detail: String },
    /// No complete response within the configured timeout.
    #[error("{service}: no response from {url} within {} ms", timeout.as_millis())]
    Timeout { service: &'static str, url: String, timeout: Duration },
    /// The request could not be sent or the connection broke. `transient` is true for
    /// connection failures (refused, reset), which a retry may get past.
    #[error("{service}: request to {url} failed: {}", error_text::chain(source))]
    Request {
        service: &'static str,
        url: String,
        transient: bool,
        #[source]
        source: reqwest::Error,
    },
    /// The response body is not the JSON the service documents.
    #[error("{service}: malformed response from {url}: {detail}")]
    MalformedResponse { service: &'static str, url: String, detail: String },
    /// The response body is larger than the configured cap.
    #[error("{service}: the response from {url} exceeds the limit of {limit} bytes")]
    BodyTooLarge { service: &'static str, url: String, limit: usize },
    /// A page fetch refused by the address policy (SSRF guard) or by its URL scheme.
    #[error("fetch of {url} refused: {reason}")]
    Blocked { url: String, reason: String },
    /// A page whose `Content-Type` is neither HTML nor plain text.
    #[error("fetch of {url}: unsupported content type {content_type:?}")]
    UnsupportedContentType { url: String, content_type: String },
    /// A page that redirected more often than allowed.
    #[error("fetch of {url}: more than {limit} redirects")]
    TooManyRedirects { url: String, limit: usize },
    /// The weather provider knows no place of that name.
    #[error("weather: no place named {0:?} was found")]
    LocationNotFound(String),
    /// A tool argument that is empty or unusable.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// A configuration value that cannot be used.
    #[error("config {field}: {reason}")]
    Config { field: String, reason: String },
    /// A file or directory that could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A local document the offline search provider cannot use.
    #[error("offline search document {}: {reason}", path.display())]
    Document { path: PathBuf, reason: String },
    /// The offline search index failed.
    #[error("offline search index ({location}): {source}")]
    Index {
        location: String,
        #[source]
        source: tantivy::TantivyError,
    },
    /// The audio index failed or refused the query (`audio_search`, `timbre_rag`).
    #[error("audio index: {0}")]
    Retrieval(#[from] voxloop_retrieval::Error),
    /// The voice library or swap failed (`timbre_rag`).
    #[error("voices: {0}")]
    Voices(#[from] voxloop_voices::Error),
    /// `timbre_rag` was called in a session that has no voice (it does not speak, or the
    /// call came from outside a session).
    #[error("timbre_rag: the calling session has no voice to swap")]
    NoSessionVoice,
    /// A blocking task (index build or search) panicked or was cancelled.
    #[error("{what}: background task failed: {detail}")]
    Background { what: &'static str, detail: String },
}

impl Error {
    /// Whether trying the same call again later may succeed: rate limits (429), server
    /// errors (5xx), timeouts and broken connections. Authentication failures, rejected
    /// requests, malformed or oversized responses and refused fetches are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::ServerError { .. } | Self::Timeout { .. } => true,
            Self::Request { transient, .. } => *transient,
            _ => false,
        }
    }

    /// How long the service asked the client to wait (`Retry-After`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::ServerError { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The core tool error's transient mark for this error: `Some` (with the `Retry-After`
    /// hint, if any) when [`is_transient`](Self::is_transient), else `None`. Retry policies
    /// read it from the `ToolError`.
    pub fn transient(&self) -> Option<Transient> {
        if !self.is_transient() {
            return None;
        }
        Some(match self.retry_after() {
            Some(wait) => Transient::retry_after(wait),
            None => Transient::new(),
        })
    }

    /// A short message for the model: what failed and whether trying again may help, with
    /// no URLs, keys, paths or response bodies.
    pub fn model_message(&self) -> String {
        error_text::model_message(self)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registers every tool that `config` enables: `web_search`, `get_date_time` and
/// `get_weather`. Fails if a configuration value is unusable (an unknown time zone, a
/// provider whose base URL does not parse, a missing offline document collection path).
///
/// The API keys are read from the environment variables the config names, now.
pub fn register_builtin_tools(registry: &mut ToolRegistry, config: &ToolsConfig) -> Result<()> {
    if config.web_search.enabled {
        registry.register(WebSearch::from_config(&config.web_search)?)?;
    }
    if config.date_time.enabled {
        registry.register(DateTimeTool::from_config(&config.date_time)?)?;
    }
    if config.weather.enabled {
        registry.register(WeatherTool::from_config(&config.weather)?)?;
    }
    Ok(())
}
