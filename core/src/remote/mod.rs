//! A Step-Audio 2 that runs elsewhere, behind OpenAI's Chat Completions: StepFun's vLLM fork
//! (`stepfun-ai/vllm`, branch `step-audio2-mini`, `vllm/entrypoints/openai/serving_chat.py`) or
//! another voxloop (`POST /v1/chat/completions`).
//!
//! An agent built with [`Agent::remote`](crate::agent::Agent::remote) keeps everything above
//! the model here (sessions, tools and their policies, the grammar's checks of call
//! arguments, speech rendering, traces) and sends each generation step to the server:
//!
//! - the history becomes OpenAI messages ([`request`]): the system turn, user turns with text
//!   and `input_audio` parts (one 16 kHz 16-bit WAV per 25-s chunk, as StepFun's
//!   `stepaudio2vllm.py` sends them), assistant turns with their `tool_calls` (and the server's
//!   `audio.id`, so that a voxloop server replays its own generated ids), tool results as
//!   `tool` messages; the agent's tools go in `tools`, the step's choice in `tool_choice`;
//! - the answer streams back ([`reply`]): text in `delta.content`, spoken text and speech codes
//!   in StepFun's `tts_content` (`tts_text`, `tts_audio` as `<audio_N>`), calls in
//!   `delta.tool_calls` or as `<tool_call>` text in the content (StepFun's server without its
//!   tool parser), usage in the last chunk.
//!
//! The connection is retried on connect errors, 429 and 5xx answers before any chunk arrived
//! (doubling waits from 250 ms); a stream that stalls longer than the idle timeout, or breaks
//! off before its end, fails the step with the reason (the turn reports it; the session keeps
//! its history and takes the next turn).

pub mod reply;
pub mod request;
mod sse;

use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

pub use sse::{ChunkStream, EventStream, SseEvent};

/// Where the remote model is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// The API's base URL, to which `/chat/completions` is appended
    /// (`http://gpu-host:8000/v1`).
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// The `model` of each request.
    pub model: String,
    /// The `audio.voice` of spoken requests (a voxloop server needs one of its voices; the
    /// speech is rendered here again, in the session's voice, from the codes).
    pub voice: String,
    /// The longest wait for a connection.
    pub connect_timeout: Duration,
    /// The longest wait for the answer's next chunk (its first included).
    pub idle_timeout: Duration,
    /// Retries of a request that failed before any answer arrived.
    pub retries: u32,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000/v1".to_owned(),
            api_key: None,
            model: "step-audio-2-mini".to_owned(),
            voice: "default".to_owned(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            retries: 2,
        }
    }
}

/// The first wait between retries (doubled at each).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A remote OpenAI-compatible Step-Audio 2 server; see the module documentation.
#[derive(Debug, Clone)]
pub struct RemoteModel {
    config: RemoteConfig,
    client: reqwest::Client,
    endpoint: reqwest::Url,
}

impl RemoteModel {
    /// A client for the server at `config.url`; fails for a URL that is not http(s).
    pub fn new(config: RemoteConfig) -> Result<Self> {
        let base = config.url.trim_end_matches('/');
        let endpoint = reqwest::Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| Error::Remote(format!("url {:?}: {e}", config.url)))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(Error::Remote(format!("url {:?}: not an http(s) URL", config.url)));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::Remote(format!("building the HTTP client: {e}")))?;
        Ok(Self { config, client, endpoint })
    }

    /// The configuration.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The server's host and port (`server.address`, `server.port` of the `chat` spans).
    pub fn server(&self) -> (String, u16) {
        let host = self.endpoint.host_str().unwrap_or_default().to_owned();
        (host, self.endpoint.port_or_known_default().unwrap_or(0))
    }

    /// Posts a streaming request; the stream of its chunks once the server answered 200.
    /// Retries as the module documentation says.
    pub async fn stream(&self, body: &Value) -> Result<ChunkStream> {
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.attempt(body).await {
                Ok(stream) => return Ok(stream),
                Err((error, retryable)) if retryable && attempt < self.config.retries => {
                    tracing::warn!(%error, attempt, "remote model request failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// One try: the stream, or the error and whether another try may help.
    async fn attempt(&self, body: &Value) -> std::result::Result<ChunkStream, (Error, bool)> {
        let mut request = self.client.post(self.endpoint.clone()).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let sent = tokio::time::timeout(self.config.idle_timeout, request.send()).await;
        let response = match sent {
            Err(_) => {
                let message = format!(
                    "{} did not answer within {:?}",
                    self.endpoint, self.config.idle_timeout
                );
                return Err((Error::Remote(message), true));
            }
            Ok(Err(e)) => {
                let retryable = e.is_connect() || e.is_timeout() || e.is_request();
                return Err((Error::Remote(format!("{}: {e}", self.endpoint)), retryable));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(ChunkStream::new(response, self.config.idle_timeout));
        }
        let retryable = status.as_u16() == 429 || status.is_server_error();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(300).collect());
        Err((Error::Remote(format!("{} answered {status}: {message}", self.endpoint)), retryable))
    }
}
