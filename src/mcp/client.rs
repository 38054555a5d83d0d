//! Tools from MCP servers: each `[[mcp.servers]]` entry is a child process speaking MCP on
//! stdio, or a server reached over streamable HTTP (the official Rust SDK, `rmcp`, as the
//! client); its tools join the agent's registry
//! as `<server>__<tool>` (tool names follow OpenAI's `[A-Za-z0-9_-]{1,64}`, so no `.`), with
//! their input schemas feeding the call grammar like Rust tools and their calls going through
//! the `[agent.policies]` stacks under that name. A tool whose name or schema the registry
//! cannot take is left out with a warning; the rest are unaffected.
//!
//! A result's text content is what the model reads; images, audio and resources are named
//! with their media type and size (`[image/png, 2048 bytes]`) and passed to the turn's
//! clients as they are (`ToolContext::attach`: the session API's `tool_attachment` event). A result flagged `isError` is
//! a failed call whose message the model reads. A server whose process died (or whose HTTP
//! session ended) is started (connected) again
//! at the next call to one of its tools, at most once per backoff period (1 s, doubling to
//! 60 s while it keeps failing); meanwhile its tools answer that it is down and why. A call
//! abandoned by its caller (a timeout policy, a cancelled turn) is cancelled on the server:
//! dropping an rmcp request sends `notifications/cancelled`.
//!
//! A server's `notifications/tools/list_changed` (and its restart) makes [`super::refresh`]
//! list its tools again and rebuild the agent's registry.
//!
//! Each call runs in a `tools/call {tool}` client span (the OpenTelemetry MCP conventions:
//! `mcp.method.name`, `gen_ai.tool.name`, and the server's name) under the registry's
//! `execute_tool` span, and carries its W3C `traceparent` in `params._meta`, so a traced server
//! continues the same trace.
//!
//! A tool that declares `destructiveHint: true` (and is not read-only) waits for a person's
//! approval of each call, as `approval = true` in its `[agent.policies.tools.NAME]` would,
//! unless that table sets `approval` itself.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use opentelemetry::trace::TraceContextExt as _;
use rmcp::model::{CallToolRequestParams, ContentBlock, RequestMetaObject, ResourceContents};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceExt};
use serde_json::Value;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Mutex;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use voxloop_core::tool::{
    DynTool, Tool, ToolContext, ToolDefinition, ToolError, ToolErrorKind, ToolType,
};
use voxloop_tools::{AudioSearch, DateTimeTool, TimbreRag, VoiceList, WeatherTool, WebSearch};

use crate::config::mcp::{HttpTransport, McpServerConfig};

/// The longest wait between two restarts of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest message read from a stdio server. rmcp's default (16 MiB) drops the answer of
/// a call returning 10 MB of text, which the Python SDK sends twice (as text content and as
/// structured content), and a dropped answer leaves its call waiting for the timeout; what
/// passes is cut to the result cap before the model reads it.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

type Client = RunningService<RoleClient, Listener>;

/// One configured server: its process (when running), its restart schedule, and the tools it
/// listed last.
pub struct McpServer {
    config: McpServerConfig,
    state: Mutex<State>,
    /// The last error while it is down (`None`: running), for `/healthz`.
    down_since: std::sync::Mutex<Option<String>>,
    listed: std::sync::Mutex<Listed>,
    /// Hears its `notifications/tools/list_changed` (see [`super::refresh`]).
    listener: Listener,
}

/// A server's tools as registry entries, and the names of those that say they may destroy
/// something (`destructiveHint: true`, not read-only).
#[derive(Default, Clone)]
struct Listed {
    tools: Vec<Arc<dyn DynTool>>,
    destructive: Vec<String>,
}

enum State {
    Running(Client),
    Down { error: String, retry_at: Instant, backoff: Duration },
}

/// The names of the agent's built-in tools, which no alias may take.
const BUILT_IN_TOOLS: [&str; 6] = [
    <WebSearch as Tool>::NAME,
    <DateTimeTool as Tool>::NAME,
    <WeatherTool as Tool>::NAME,
    <AudioSearch as Tool>::NAME,
    <TimbreRag as Tool>::NAME,
    <VoiceList as Tool>::NAME,
];

/// The registry name of the server's tool `remote`: its alias, unless that is a built-in
/// tool's name, else `<server>__<remote>`.
fn registered_name(config: &McpServerConfig, remote: &str) -> String {
    let prefixed = format!("{}__{remote}", config.name);
    match config.aliases.get(remote) {
        Some(alias) if BUILT_IN_TOOLS.contains(&alias.as_str()) => {
            tracing::warn!(
                server = %config.name,
                tool = remote,
                alias = %alias,
                name = %prefixed,
                "the alias is a built-in tool's name: the tool keeps its prefixed name"
            );
            prefixed
        }
        Some(alias) => alias.clone(),
        None => prefixed,
    }
}

impl McpServer {
    /// The server's name (the prefix of its tools).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// `running` or `down` (as `/healthz` and `/v1/tools` say it), and why it is down.
    fn state(&self) -> (&'static str, Option<String>) {
        let error = self.down_since.lock().map(|e| e.clone()).unwrap_or_default();
        (if error.is_some() { "down" } else { "running" }, error)
    }

    /// Records whether it runs, for `/healthz`.
    fn note(&self, error: Option<String>) {
        *self.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// Starts the server and lists its tools; `listener` hears its tool-list changes.
    async fn start(config: McpServerConfig, listener: Listener) -> anyhow::Result<Arc<McpServer>> {
        let client = spawn(&config, &listener).await?;
        let listed = tokio::time::timeout(config.startup_timeout(), client.list_all_tools())
            .await
            .map_err(|_| anyhow::anyhow!("listing its tools timed out"))?
            .map_err(|e| anyhow::anyhow!("listing its tools failed: {e}"))?;
        let server = Arc::new(McpServer {
            config,
            state: Mutex::new(State::Running(client)),
            down_since: std::sync::Mutex::new(None),
            listed: std::sync::Mutex::new(Listed::default()),
            listener,
        });
        server.keep(listed);
        Ok(server)
    }

    /// Lists the server's tools again (after it said they changed, or it was restarted).
    pub(super) async fn relist(self: &Arc<Self>) -> anyhow::Result<()> {
        let peer = self.peer().await.map_err(|e| anyhow::anyhow!("{}", e.model_message))?;
        let listed = tokio::time::timeout(self.config.startup_timeout(), peer.list_all_tools())
            .await
            .map_err(|_| anyhow::anyhow!("listing its tools timed out"))?
            .map_err(|e| anyhow::anyhow!("listing its tools failed: {e}"))?;
        self.keep(listed);
        Ok(())
    }

    /// Makes registry entries of the listed tools and keeps them.
    fn keep(self: &Arc<Self>, listed: Vec<rmcp::model::Tool>) {
        let mut kept = Listed::default();
        for tool in listed {
            let remote = tool.name.to_string();
            let name = registered_name(&self.config, &remote);
            let annotations = tool.annotations.clone().unwrap_or_default();
            if annotations.destructive_hint == Some(true)
                && annotations.read_only_hint != Some(true)
            {
                kept.destructive.push(name.clone());
            }
            let definition = ToolDefinition {
                name: name.clone(),
                description: tool.description.as_deref().unwrap_or_default().to_owned(),
                parameters: Value::Object((*tool.input_schema).clone()),
            };
            kept.tools.push(Arc::new(McpTool {
                server: Arc::clone(self),
                remote,
                definition,
                // A retry is safe only for a call the server says changes nothing twice.
                idempotent: annotations.idempotent_hint == Some(true)
                    || annotations.read_only_hint == Some(true),
            }));
        }
        *self.listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = kept;
    }

    fn listed(&self) -> Listed {
        self.listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A handle on the running client, started again first if the process died and its
    /// backoff is over.
    async fn peer(&self) -> Result<Peer<RoleClient>, ToolError> {
        let mut state = self.state.lock().await;
        if let State::Running(client) = &*state {
            if client.is_transport_closed() {
                let backoff = Duration::from_secs(1);
                *state = State::Down {
                    error: "its process exited".to_owned(),
                    retry_at: Instant::now(),
                    backoff,
                };
            }
        }
        if let State::Down { error, retry_at, backoff } = &*state {
            let (error, backoff) = (error.clone(), *backoff);
            if Instant::now() < *retry_at {
                let wait = retry_at.saturating_duration_since(Instant::now());
                return Err(down(self.name(), &error, Some(wait)));
            }
            tracing::info!(server = self.name(), "starting the MCP server again");
            match spawn(&self.config, &self.listener).await {
                Ok(client) => {
                    *state = State::Running(client);
                    self.note(None);
                    // A restarted server may list other tools.
                    self.listener.changed();
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    self.note(Some(error.clone()));
                    tracing::warn!(server = self.name(), %error, "the MCP server did not start");
                    let next = (backoff * 2).min(MAX_BACKOFF);
                    *state = State::Down {
                        error: error.clone(),
                        retry_at: Instant::now() + backoff,
                        backoff: next,
                    };
                    return Err(down(self.name(), &error, Some(backoff)));
                }
            }
        }
        match &*state {
            State::Running(client) => Ok(client.peer().clone()),
            State::Down { error, .. } => Err(down(self.name(), error, None)),
        }
    }

    /// Marks the server down after a call found its transport gone.
    async fn failed(&self, error: String) {
        self.note(Some(error.clone()));
        let mut state = self.state.lock().await;
        *state = State::Down { error, retry_at: Instant::now(), backoff: Duration::from_secs(1) };
    }
}

fn down(server: &str, error: &str, retry_in: Option<Duration>) -> ToolError {
    let when = retry_in
        .map_or(String::new(), |d| format!("; it is started again in {} s", d.as_secs().max(1)));
    ToolError::new(
        ToolErrorKind::Overloaded,
        format!("The MCP server {server:?} is down ({error}){when}."),
    )
}

/// Starts the server (or connects to it) and runs the MCP handshake.
async fn spawn(config: &McpServerConfig, listener: &Listener) -> anyhow::Result<Client> {
    match &config.url {
        Some(url) => connect_http(config, url, listener).await,
        None => spawn_stdio(config, listener).await,
    }
}

/// The MCP handshake with an HTTP server: streamable HTTP, else (for a server that refuses
/// it, or `transport = "sse"`) the older HTTP+SSE transport ([`super::sse`]).
async fn connect_http(
    config: &McpServerConfig,
    url: &str,
    listener: &Listener,
) -> anyhow::Result<Client> {
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in &config.headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes())?;
        let value = axum::http::HeaderValue::from_str(value)
            .map_err(|e| anyhow::anyhow!("header {name}: {e}"))?;
        headers.insert(name, value);
    }
    let token = match &config.bearer_token_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| anyhow::anyhow!("bearer_token_env names {var}, which is not set"))?,
        ),
        None => None,
    };
    let streamable = match config.transport {
        Some(HttpTransport::Sse) => None,
        _ => Some(connect_streamable(config, url, headers.clone(), token.clone(), listener).await),
    };
    match streamable {
        Some(Ok(client)) => Ok(client),
        Some(Err(e)) if config.transport == Some(HttpTransport::StreamableHttp) => Err(e),
        tried => {
            if let Some(Err(e)) = tried {
                tracing::info!(server = %config.name, error = %e, "no streamable HTTP: trying HTTP+SSE");
            }
            if let Some(token) = &token {
                let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))?;
                headers.insert(axum::http::header::AUTHORIZATION, value);
            }
            let (outgoing, incoming) =
                super::sse::connect(url, headers, config.startup_timeout()).await?;
            let client = tokio::time::timeout(
                config.startup_timeout(),
                listener.clone().serve((outgoing, incoming)),
            )
            .await
            .map_err(|_| anyhow::anyhow!("the MCP handshake with {url} (SSE) timed out"))?
            .map_err(|e| anyhow::anyhow!("the MCP handshake with {url} (SSE) failed: {e}"))?;
            Ok(client)
        }
    }
}

async fn connect_streamable(
    config: &McpServerConfig,
    url: &str,
    headers: axum::http::HeaderMap,
    token: Option<String>,
    listener: &Listener,
) -> anyhow::Result<Client> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::StreamableHttpClientTransport;
    let mut transport = StreamableHttpClientTransportConfig::with_uri(url);
    for (name, value) in &headers {
        transport.custom_headers.insert(name.clone(), value.clone());
    }
    transport.auth_header = token;
    let transport = StreamableHttpClientTransport::from_config(transport);
    let client = tokio::time::timeout(config.startup_timeout(), listener.clone().serve(transport))
        .await
        .map_err(|_| anyhow::anyhow!("the MCP handshake with {url} timed out"))?
        .map_err(|e| anyhow::anyhow!("the MCP handshake with {url} failed: {e}"))?;
    Ok(client)
}

/// Starts the process and runs the MCP handshake on its stdio.
async fn spawn_stdio(config: &McpServerConfig, listener: &Listener) -> anyhow::Result<Client> {
    let command = config.command.as_deref().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(&config.args)
        .envs(&config.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot run {command:?}: {e}"))?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        anyhow::bail!("the child process has no stdio");
    };
    // The child lives as long as its stdio: reap it when it exits.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let transport = rmcp::transport::async_rw::AsyncRwTransport::new_client(stdout, stdin)
        .with_max_line_length(MAX_MESSAGE_BYTES);
    let client = tokio::time::timeout(config.startup_timeout(), listener.clone().serve(transport))
        .await
        .map_err(|_| anyhow::anyhow!("the MCP handshake timed out"))?
        .map_err(|e| anyhow::anyhow!("the MCP handshake failed: {e}"))?;
    Ok(client)
}

/// One tool of an MCP server in the registry.
struct McpTool {
    server: Arc<McpServer>,
    /// The name on the server.
    remote: String,
    definition: ToolDefinition,
    idempotent: bool,
}

impl DynTool for McpTool {
    fn name(&self) -> &str {
        &self.definition.name
    }

    fn definition(&self) -> voxloop_core::Result<ToolDefinition> {
        Ok(self.definition.clone())
    }

    fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    fn gen_ai_tool_type(&self) -> ToolType {
        ToolType::Extension
    }

    fn call_json<'a>(
        &'a self,
        args: Value,
        context: &'a ToolContext,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let arguments = match args {
                Value::Object(map) => Some(map),
                Value::Null => None,
                other => {
                    return Err(ToolError::new(
                        ToolErrorKind::InvalidArguments,
                        format!("The arguments must be a JSON object, not {other}."),
                    ))
                }
            };
            let span = tracing::info_span!(
                "mcp_call",
                otel.name = %format!("tools/call {}", self.remote),
                otel.kind = "client",
                mcp.method.name = "tools/call",
                gen_ai.tool.name = %self.remote,
                mcp.server.name = %self.server.name(),
            );
            let mut params = CallToolRequestParams::new(self.remote.clone());
            params.arguments = arguments;
            if let Some(traceparent) = traceparent(&span) {
                let mut meta = RequestMetaObject::new();
                meta.insert("traceparent".to_owned(), Value::String(traceparent));
                params.meta = Some(meta);
            }
            let peer = self.server.peer().await?;
            match peer.call_tool(params).instrument(span).await {
                Ok(result) => {
                    // Images, audio and resources go to the turn's clients as the server gave
                    // them; the model reads their description in the text.
                    for block in
                        result.content.iter().filter(|b| !matches!(b, ContentBlock::Text(_)))
                    {
                        if let Ok(content) = serde_json::to_value(block) {
                            context.attach(content);
                        }
                    }
                    let text = render_content(&result.content, result.structured_content.as_ref());
                    if result.is_error == Some(true) {
                        Err(ToolError::new(ToolErrorKind::Execution, text))
                    } else {
                        Ok(text)
                    }
                }
                Err(e) => {
                    let error = e.to_string();
                    if peer.is_transport_closed() {
                        self.server.failed(error.clone()).await;
                        return Err(down(self.server.name(), &error, None));
                    }
                    Err(ToolError::new(
                        ToolErrorKind::Execution,
                        format!("The MCP call failed: {error}"),
                    ))
                }
            }
        })
    }
}

/// The W3C `traceparent` of `span` (`00-{trace id}-{span id}-{flags}`), when it is traced.
fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The text the model reads from a result: text blocks as they are, other blocks named by
/// type and size; the structured content when there is no block.
fn render_content(blocks: &[ContentBlock], structured: Option<&Value>) -> String {
    let mut parts = Vec::new();
    for block in blocks {
        parts.push(match block {
            ContentBlock::Text(text) => text.text.clone(),
            ContentBlock::Image(image) => {
                format!("[image {}, {} bytes]", image.mime_type, base64_len(&image.data))
            }
            ContentBlock::Audio(audio) => {
                format!("[audio {}, {} bytes]", audio.mime_type, base64_len(&audio.data))
            }
            ContentBlock::Resource(resource) => match &resource.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    format!("[resource {uri}]\n{text}")
                }
                ResourceContents::BlobResourceContents { uri, blob, .. } => {
                    format!("[resource {uri}, {} bytes]", base64_len(blob))
                }
                _ => "[resource]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => format!("[resource link {}]", link.uri),
            // Kinds a later protocol version adds.
            _ => "[content of another kind]".to_owned(),
        });
    }
    if parts.is_empty() {
        if let Some(value) = structured {
            return value.to_string();
        }
    }
    parts.join("\n")
}

/// The decoded size of base64 text.
fn base64_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

/// What `/healthz` says about one server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct McpServerHealth {
    pub name: String,
    /// `running`, `down` (its process died; started again at the next call) or `failed` (it
    /// did not start; its tools are not registered).
    pub state: &'static str,
    /// The tools it gave.
    pub tools: usize,
    /// Why it is down or failed.
    pub error: Option<String>,
}

/// The configured servers and their tools.
#[derive(Default)]
pub struct McpClients {
    started: Vec<Arc<McpServer>>,
    failed: Vec<(String, String)>,
    /// The names of the servers whose tools changed, for [`super::refresh`].
    changes: std::sync::Mutex<Option<UnboundedReceiver<String>>>,
}

impl McpClients {
    /// Their tools, for the registry, as the servers listed them last.
    pub fn tools(&self) -> Vec<Arc<dyn DynTool>> {
        self.started.iter().flat_map(|server| server.listed().tools).collect()
    }

    /// Makes the calls of destructive tools wait for a person's approval, unless
    /// `[agent.policies.tools.NAME] approval` says otherwise.
    pub fn require_approvals(&self, policies: &mut voxloop_policies::PolicyConfig) {
        for server in &self.started {
            for name in server.listed().destructive {
                let policy = policies.tools.entry(name).or_default();
                if policy.approval.is_none() {
                    policy.approval = Some(true);
                }
            }
        }
    }

    /// The started server called `name`.
    pub(super) fn server(&self, name: &str) -> Option<&Arc<McpServer>> {
        self.started.iter().find(|server| server.name() == name)
    }

    /// The receiver of tool-list changes (once: the refresh task takes it).
    pub(super) fn take_changes(&self) -> Option<UnboundedReceiver<String>> {
        self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// The server each MCP tool comes from, by registered tool name: `(server, state)` with
    /// the state as [`health`](Self::health) says it.
    pub fn tool_servers(&self) -> std::collections::HashMap<String, (String, &'static str)> {
        let mut servers = std::collections::HashMap::new();
        for server in &self.started {
            let (state, _) = server.state();
            for tool in server.listed().tools {
                servers.insert(tool.name().to_owned(), (server.name().to_owned(), state));
            }
        }
        servers
    }

    /// Each server's state.
    pub fn health(&self) -> Vec<McpServerHealth> {
        let started = self.started.iter().map(|server| {
            let (state, error) = server.state();
            McpServerHealth {
                name: server.name().to_owned(),
                state,
                tools: server.listed().tools.len(),
                error,
            }
        });
        let failed = self.failed.iter().map(|(name, error)| McpServerHealth {
            name: name.clone(),
            state: "failed",
            tools: 0,
            error: Some(error.clone()),
        });
        started.chain(failed).collect()
    }
}

/// Starts every configured server and lists its tools; a server that fails is reported and
/// left out (the others and the built-in tools are not affected).
pub async fn start_all(servers: &[McpServerConfig]) -> McpClients {
    let (changes, receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut clients =
        McpClients { changes: std::sync::Mutex::new(Some(receiver)), ..McpClients::default() };
    for config in servers {
        let name = config.name.clone();
        let listener = Listener { server: name.clone(), changes: changes.clone() };
        match McpServer::start(config.clone(), listener).await {
            Ok(server) => {
                let listed = server.listed();
                let names: Vec<&str> = listed.tools.iter().map(|t| t.name()).collect();
                tracing::info!(server = %name, tools = ?names, "MCP server started");
                clients.started.push(server);
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!(server = %name, %error, "MCP server left out");
                clients.failed.push((name, error));
            }
        }
    }
    clients
}

/// The client side's handler: it hears a server's `notifications/tools/list_changed` and
/// tells the refresh task (see [`super::refresh`]); everything else is rmcp's default.
#[derive(Clone)]
pub(super) struct Listener {
    server: String,
    changes: UnboundedSender<String>,
}

impl Listener {
    fn changed(&self) {
        // No receiver: nothing keeps the agent's tools up to date (`voxloop serve` without a
        // model); the change has nowhere to go.
        let _ = self.changes.send(self.server.clone());
    }
}

impl rmcp::ClientHandler for Listener {
    fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + rmcp::service::MaybeSendFuture + '_ {
        tracing::info!(server = %self.server, "the MCP server's tools changed");
        self.changed();
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_text_content_is_named_with_its_size() {
        let blocks: Vec<ContentBlock> = serde_json::from_value(serde_json::json!([
            {"type": "text", "text": "hello"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"},
            {"type": "audio", "data": "AAA=", "mimeType": "audio/wav"},
        ]))
        .unwrap();
        assert_eq!(
            render_content(&blocks, None),
            "hello\n[image image/png, 3 bytes]\n[audio audio/wav, 2 bytes]"
        );
        assert_eq!(render_content(&[], Some(&serde_json::json!({"a": 1}))), "{\"a\":1}");
    }

    #[test]
    fn aliases_rename_tools_but_never_take_a_built_in_name() {
        let config: McpServerConfig = toml::from_str(
            "name = \"files\"\ncommand = \"x\"\n\
             aliases = { search = \"find\", clock = \"get_date_time\" }\n",
        )
        .unwrap();
        assert_eq!(registered_name(&config, "search"), "find");
        assert_eq!(registered_name(&config, "clock"), "files__clock", "a built-in's name");
        assert_eq!(registered_name(&config, "read"), "files__read");
    }
}
