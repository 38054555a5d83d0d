//! voxloop's tools as a Model Context Protocol server, on the official Rust SDK (`rmcp`):
//! `voxloop mcp` speaks it on stdin/stdout (Claude Desktop, IDEs, other agents start it as a
//! child process) and the service answers it at `/mcp` (streamable HTTP).
//!
//! The tools are the agent's built-ins that need no session, plus `voice_list`
//! (`runtime::setup::build_mcp_tools`), `audio_clip` (see [`clip`]), and `voice_add` and
//! `speak` when token2wav is configured (see [`voice`]): their JSON schemas
//! are the MCP input schemas, and each call runs through its `[agent.policies]` stack
//! (timeouts, retries, output caps). Tools whose calls need a person's approval are refused,
//! as there is no session to ask in. Every failure of a call (unknown tool,
//! arguments that do not fit the schema, a tool error, the client's rate limit) is a result
//! with `isError: true` and a sentence the caller can act on, as the MCP specification asks
//! for tool errors; protocol errors stay for malformed requests.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ErrorData as McpError;
use voxloop_core::tool::{ToolCall, ToolDefinition, ToolRegistry};
use voxloop_policies::TokenBucket;
use voxloop_retrieval::AudioIndex;

use crate::config::mcp::McpConfig;
use crate::http::upload;

pub mod client;
mod clip;
pub mod refresh;
mod sse;
pub mod voice;

use voice::VoiceTools;

/// One client's view of the tools: the shared registry, the audio index `audio_clip` reads
/// clips through, and the client's own rate limit.
#[derive(Debug, Clone)]
pub struct ToolServer {
    tools: Arc<ToolRegistry>,
    index: Option<Arc<AudioIndex>>,
    /// `voice_add` and `speak`, when token2wav is configured.
    voices: Option<Arc<VoiceTools>>,
    calls: Arc<TokenBucket>,
}

impl ToolServer {
    /// A server for one client, allowed `calls_per_minute` calls a minute (bursts as large).
    pub fn new(
        tools: Arc<ToolRegistry>,
        index: Option<Arc<AudioIndex>>,
        voices: Option<Arc<VoiceTools>>,
        calls_per_minute: u32,
    ) -> Self {
        let per_second = f64::from(calls_per_minute.max(1)) / 60.0;
        // No waiting: a call over the limit is refused at once, so a client learns of it.
        let calls = Arc::new(TokenBucket::new(per_second, calls_per_minute, Duration::ZERO));
        Self { tools, index, voices, calls }
    }

    /// The registry's tools as MCP tools, `audio_clip` when there is an index, and
    /// `voice_add` and `speak` when token2wav is configured.
    pub fn tool_list(&self) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self.tools.definitions().into_iter().map(mcp_tool).collect();
        if self.index.is_some() {
            tools.push(clip::definition());
        }
        if let Some(voices) = &self.voices {
            tools.extend(voices.definitions());
        }
        tools
    }

    /// Runs one call through the registry; every failure is an error result.
    pub async fn call(&self, name: &str, arguments: Option<JsonObject>) -> CallToolResult {
        if self.calls.reserve().is_err() {
            return error_result(format!(
                "rate limit: too many tool calls from this client; try `{name}` again later"
            ));
        }
        if name == clip::NAME && self.index.is_some() {
            return clip::fetch(self.index.clone(), arguments).await;
        }
        if let Some(voices) =
            self.voices.as_ref().filter(|_| [voice::VOICE_ADD, voice::SPEAK].contains(&name))
        {
            return voices.call(name, arguments).await;
        }
        if !self.tools.contains(name) {
            let known: Vec<&str> = self.tools.names().collect();
            return error_result(format!(
                "no tool named `{name}`; the tools are: {}",
                known.join(", ")
            ));
        }
        let arguments = serde_json::Value::Object(arguments.unwrap_or_default());
        let result = self.tools.call(ToolCall::new(name, arguments)).await;
        match result.outcome {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(err) => error_result(err.to_string()),
        }
    }
}

fn error_result(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// A tool definition as MCP lists it. A schema that is not an object (which no registered
/// tool has) becomes an empty-object schema rather than an invalid listing.
fn mcp_tool(definition: ToolDefinition) -> Tool {
    let schema = match definition.parameters {
        serde_json::Value::Object(map) => map,
        _ => {
            let mut map = JsonObject::new();
            map.insert("type".into(), "object".into());
            map
        }
    };
    Tool::new(definition.name, definition.description, Arc::new(schema))
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("voxloop", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "voxloop's tools: audio retrieval over the local index (audio_search), web \
                 search, date and time, weather, the voice library (voice_list), and indexed \
                 clips as audio (audio_clip). Each call is rate-limited per client.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tool_list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        Ok(self.call(&request.name, request.arguments).await.into())
    }
}

/// Serves `tools` on stdin/stdout until the client closes them.
pub async fn serve_stdio(
    tools: Arc<ToolRegistry>,
    index: Option<Arc<AudioIndex>>,
    voices: Option<Arc<VoiceTools>>,
    config: &McpConfig,
) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let server = ToolServer::new(tools, index, voices, config.calls_per_minute)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP over stdio: {e}"))?;
    server.waiting().await.map_err(|e| anyhow::anyhow!("MCP over stdio: {e}"))?;
    Ok(())
}

/// `/mcp`: streamable HTTP, one [`ToolServer`] (so one rate limit) per MCP session, behind
/// the bearer token when one is configured.
pub fn router(
    tools: Arc<ToolRegistry>,
    index: Option<Arc<AudioIndex>>,
    voices: Option<Arc<VoiceTools>>,
    config: &McpConfig,
) -> Router {
    let calls_per_minute = config.calls_per_minute;
    let service: StreamableHttpService<ToolServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || {
                Ok(ToolServer::new(
                    Arc::clone(&tools),
                    index.clone(),
                    voices.clone(),
                    calls_per_minute,
                ))
            },
            Arc::default(),
            StreamableHttpServerConfig::default().with_allowed_hosts(config.allowed_hosts.clone()),
        );
    // rmcp cuts a body at 4 MiB only as it streams in: a client that declares a huge body and
    // sends it slowly would hold the connection; refuse it from its length, as the API does.
    let router = upload::limit_body(Router::new().nest_service("/mcp", service), too_large);
    match &config.bearer_token {
        Some(token) => router.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token.as_str()),
            require_bearer,
        )),
        None => router,
    }
}

/// The 413 of a body declared over [`upload::MAX_BODY_BYTES`].
fn too_large(length: u64) -> Response {
    let limit = upload::MAX_BODY_BYTES;
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body ({length} bytes) exceeds {limit} bytes\n"),
    )
        .into_response()
}

/// Lets a request through only with `Authorization: Bearer <token>`.
async fn require_bearer(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the MCP endpoint needs `Authorization: Bearer <token>` ([mcp] bearer_token)\n",
    )
        .into_response()
}

/// Compares in time independent of where the first difference is, so response times do not
/// reveal how much of a guessed token was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_secret(b"t0ken", b"t0ken"));
        assert!(!same_secret(b"t0kex", b"t0ken"));
        assert!(!same_secret(b"t0ke", b"t0ken"));
        assert!(!same_secret(b"", b"t0ken"));
    }

    #[test]
    fn a_schema_that_is_not_an_object_is_listed_as_an_empty_object() {
        let definition = ToolDefinition {
            name: "odd".into(),
            description: "a tool with a non-object schema".into(),
            parameters: serde_json::json!(true),
        };
        let tool = mcp_tool(definition);
        assert_eq!(tool.name, "odd");
        assert_eq!(
            serde_json::Value::Object((*tool.input_schema).clone()),
            serde_json::json!({"type": "object"})
        );
    }
}
