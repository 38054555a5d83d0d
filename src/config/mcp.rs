//! `[mcp]`: voxloop's tools offered over the Model Context Protocol (see `src/mcp.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[mcp]`: `voxloop mcp` (stdio) and the service's `/mcp` endpoint (streamable HTTP).
///
/// ```toml
/// [mcp]
/// http = true                # serve /mcp beside the other endpoints
/// calls_per_minute = 60      # per client; more are refused
/// bearer_token = "s3cret"    # or VOXLOOP_MCP_TOKEN; unset: /mcp is open
/// allowed_hosts = ["localhost", "127.0.0.1", "::1", "voice.example.com"]
///
/// [[mcp.servers]]            # tools from an MCP server, as `files__read_file`, ...
/// name = "files"
/// command = "npx"
/// args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
/// env = { LOG_LEVEL = "warn" }
///
/// [[mcp.servers]]            # one that speaks streamable HTTP
/// name = "crm"
/// url = "https://crm.example.com/mcp"
/// bearer_token_env = "CRM_TOKEN"   # Authorization: Bearer $CRM_TOKEN
/// headers = { "X-Team" = "voice" }
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Serve `/mcp` on the HTTP service.
    pub http: bool,
    /// Tool calls one client (a stdio process, an HTTP session) may make per minute, with
    /// bursts up to the same number; a call beyond that is refused with an error result. The
    /// MCP specification requires servers to rate-limit tool invocations.
    pub calls_per_minute: u32,
    /// When set, every `/mcp` request must carry `Authorization: Bearer <token>`
    /// (`VOXLOOP_MCP_TOKEN`). `voxloop config` does not print it.
    #[serde(skip_serializing)]
    pub bearer_token: Option<String>,
    /// The `Host` headers `/mcp` answers (a name, or `name:port`); others get `403`, which
    /// guards a local server against DNS rebinding. Add the names clients use when the
    /// service listens beyond loopback; an empty list allows any host.
    pub allowed_hosts: Vec<String>,
    /// MCP servers whose tools the agent gets (see `crate::mcp::client`).
    pub servers: Vec<McpServerConfig>,
}

/// `[[mcp.servers]]`: one MCP server, run as a child process speaking MCP on stdio
/// (`command`) or reached over streamable HTTP (`url`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The prefix of its tools' names (`<name>__<tool>`): letters, digits, `_` and `-`.
    pub name: String,
    /// The program to run.
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for it (on top of voxloop's own).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A streamable-HTTP server's endpoint (`http://` or `https://`), instead of `command`.
    pub url: Option<String>,
    /// Headers sent with every HTTP request (with `url`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The environment variable whose value is sent as `Authorization: Bearer …` (with `url`).
    pub bearer_token_env: Option<String>,
    /// How long starting it (the handshake and the tool list) may take, in ms.
    #[serde(default = "default_startup_ms")]
    pub startup_timeout_ms: u64,
    /// With `url`: `streamable-http` or `sse` (the older HTTP+SSE transport); unset: streamable
    /// HTTP, and SSE when the server refuses it.
    #[serde(default)]
    pub transport: Option<HttpTransport>,
    /// Names to register its tools under instead of `<name>__<tool>`, by the server's tool
    /// name (`aliases = { search_issues = "issues" }`). An alias that is a built-in tool's
    /// name is not taken: that tool keeps its `<name>__<tool>` name (with a warning).
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

/// The HTTP transports of an MCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpTransport {
    /// Streamable HTTP (protocol revisions from 2025-03-26).
    StreamableHttp,
    /// HTTP+SSE (revision 2024-11-05).
    Sse,
}

fn default_startup_ms() -> u64 {
    20_000
}

impl McpServerConfig {
    /// [`Self::startup_timeout_ms`].
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            http: true,
            calls_per_minute: 120,
            bearer_token: None,
            allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
            servers: Vec::new(),
        }
    }
}

impl McpConfig {
    /// Reads `VOXLOOP_MCP_TOKEN`.
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        if let Some(token) = env("VOXLOOP_MCP_TOKEN") {
            self.bearer_token = Some(token);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str| ConfigError::Value {
            field: format!("mcp.{field}"),
            message: message.to_owned(),
        };
        if self.calls_per_minute == 0 {
            return Err(bad("calls_per_minute", "must be at least 1"));
        }
        if self.bearer_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(bad("bearer_token", "must not be empty (leave it unset for no token)"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let field = |name: &str| format!("servers[{i}].{name}");
            let name_ok = !server.name.is_empty()
                && server.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(bad(&field("name"), "must be letters, digits, _ or - (not empty)"));
            }
            if !names.insert(server.name.as_str()) {
                return Err(bad(&field("name"), "is given to two servers"));
            }
            match (&server.command, &server.url) {
                (Some(_), Some(_)) => {
                    return Err(bad(&field("url"), "give either command (stdio) or url, not both"))
                }
                (None, Some(url))
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    return Err(bad(&field("url"), "must be an http:// or https:// URL"))
                }
                (None, Some(_)) => {}
                (Some(command), None) if !command.trim().is_empty() => {}
                _ => {
                    return Err(bad(
                        &field("command"),
                        "is required (the program to run), or give url for an HTTP server",
                    ))
                }
            }
            for name in server.headers.keys() {
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(bad(
                        &field("headers"),
                        "holds a name that is not an HTTP header name",
                    ));
                }
            }
            let bad_alias = server.aliases.values().find(|alias| {
                alias.is_empty()
                    || alias.len() > 64
                    || !alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            if let Some(alias) = bad_alias {
                return Err(bad(
                    &field("aliases"),
                    &format!("{alias:?} is not a tool name: 1 to 64 letters, digits, _ or -"),
                ));
            }
            if server.startup_timeout_ms == 0 {
                return Err(bad(&field("startup_timeout_ms"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_calls_and_an_empty_token_are_refused() {
        let zero = McpConfig { calls_per_minute: 0, ..McpConfig::default() };
        assert!(zero.validate().unwrap_err().to_string().contains("mcp.calls_per_minute"));
        let empty = McpConfig { bearer_token: Some(" ".into()), ..McpConfig::default() };
        assert!(empty.validate().unwrap_err().to_string().contains("mcp.bearer_token"));
        assert!(McpConfig::default().validate().is_ok());
    }

    #[test]
    fn servers_need_a_clean_unique_name_and_a_command() {
        let server = |name: &str, command: Option<&str>| McpServerConfig {
            name: name.into(),
            command: command.map(Into::into),
            args: Vec::new(),
            env: BTreeMap::new(),
            url: None,
            headers: BTreeMap::new(),
            bearer_token_env: None,
            startup_timeout_ms: 1000,
            transport: None,
            aliases: BTreeMap::new(),
        };
        let with = |servers| McpConfig { servers, ..McpConfig::default() };
        assert!(with(vec![server("files", Some("npx"))]).validate().is_ok());
        let error = |c: McpConfig| c.validate().unwrap_err().to_string();
        assert!(error(with(vec![server("a.b", Some("x"))])).contains("servers[0].name"));
        assert!(error(with(vec![server("a", None)])).contains("servers[0].command"));
        let twice = with(vec![server("a", Some("x")), server("a", Some("y"))]);
        assert!(error(twice).contains("servers[1].name"));
        let mut aliased = server("a", Some("x"));
        aliased.aliases.insert("t".into(), "has space".into());
        assert!(error(with(vec![aliased])).contains("servers[0].aliases"));
        let mut http = server("web", None);
        http.url = Some("http://localhost:1234/mcp".into());
        assert!(with(vec![http.clone()]).validate().is_ok());
        http.url = Some("ftp://localhost/mcp".into());
        assert!(error(with(vec![http.clone()])).contains("servers[0].url"));
        http.command = Some("x".into());
        http.url = Some("http://localhost:1234/mcp".into());
        assert!(error(with(vec![http])).contains("not both"));
    }

    #[test]
    fn the_token_comes_from_the_environment_and_is_never_printed() {
        let mut config = McpConfig::default();
        config.apply_env(&|k: &str| (k == "VOXLOOP_MCP_TOKEN").then(|| "t0ken".to_owned()));
        assert_eq!(config.bearer_token.as_deref(), Some("t0ken"));
        let printed = toml::to_string(&config).unwrap_or_default();
        assert!(!printed.contains("t0ken"), "{printed}");
    }
}
