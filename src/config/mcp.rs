//! `[mcp]`: voxloop's tools offered over the Model Context Protocol (see `src/mcp.rs`).

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
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            http: true,
            calls_per_minute: 120,
            bearer_token: None,
            allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
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
    fn the_token_comes_from_the_environment_and_is_never_printed() {
        let mut config = McpConfig::default();
        config.apply_env(&|k: &str| (k == "VOXLOOP_MCP_TOKEN").then(|| "t0ken".to_owned()));
        assert_eq!(config.bearer_token.as_deref(), Some("t0ken"));
        let printed = toml::to_string(&config).unwrap_or_default();
        assert!(!printed.contains("t0ken"), "{printed}");
    }
}
