//! Service configuration: a TOML file, then `VOXLOOP_*` environment overrides, then CLI flags.
//!
//! Every field has a default, so an empty file (or none) is a valid configuration. Unknown
//! fields are rejected so that a typo is an error and not a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

mod index;
pub mod mcp;
mod model;
mod realtime;
mod telemetry;

pub use index::IndexConfig;
pub use model::{ModelBackend, ModelConfig};
pub use realtime::{RealtimeConfig, FILLER_MAX_SECONDS};
pub use telemetry::{OtlpProtocol, TelemetryConfig};

/// Where configuration is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "data/voxloop.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// Where voxloop keeps its data.
    pub paths: PathsConfig,
    /// The speech LLM.
    pub model: ModelConfig,
    /// Logging.
    pub log: LogConfig,
    /// The built-in tools (`[tools.web_search]`, `[tools.date_time]`, `[tools.weather]`): see
    /// `voxloop_tools::config`.
    pub tools: voxloop_tools::ToolsConfig,
    /// The agent behind `/v1/sessions`: prompt, generation, sessions, tool policies.
    pub agent: AgentSection,
    /// Speech output: token2wav and the voice library.
    pub voice: VoiceSection,
    /// Traces exported over OTLP (`[telemetry]`); off unless an endpoint is set.
    pub telemetry: TelemetryConfig,
    /// The tools as an MCP server (`[mcp]`): `voxloop mcp` and `/mcp`.
    pub mcp: mcp::McpConfig,
    /// The realtime WebSocket (`[realtime]`): connections, server VAD.
    pub realtime: RealtimeConfig,
    /// The audio index (`[index]`): its text embedder.
    pub index: IndexConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`VOXLOOP_ADDR`).
    pub addr: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

/// `[paths]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// Root of everything voxloop stores: indexes, voices, sessions (`VOXLOOP_DATA_DIR`).
    pub data_dir: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("data") }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `voxloop=debug,tower=warn` (`VOXLOOP_LOG`).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".to_owned() }
    }
}

/// Spoken or written answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// Interleaved text and speech codes (rendered to audio when a voice is loaded).
    #[default]
    Speech,
    /// Text only.
    Text,
}

/// Whether answers start with a think phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ThinkSetting {
    /// When the checkpoint is a reasoning one (its name holds `Think`, as
    /// stepfun-ai/Step-Audio-2-mini-Think does).
    #[default]
    Auto,
    /// Always (a checkpoint not trained for it only rambles).
    On,
    /// Never.
    Off,
}

/// `[agent]`: how the service runs conversations. Sessions may override the mode, the tool
/// choice and the sampling fields when they are created.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Replaces the built-in system prompt (the date line and voice instruction still follow).
    pub system_prompt: Option<String>,
    /// `speech` (default) or `text`.
    pub mode: AnswerMode,
    /// `auto` (default), `none`, `required`, or the name of a tool every turn must start by
    /// calling.
    pub tool_choice: String,
    /// Generation steps of one turn that may call tools.
    pub max_steps: usize,
    /// The most tokens one generation step may produce.
    pub max_new_tokens: usize,
    /// `auto` (default: when the checkpoint is a reasoning one), `on` or `off`: answers to the
    /// user start with a `<think>` phase, streamed as reasoning, never spoken, not kept.
    pub think: ThinkSetting,
    /// The most tokens one think phase may take.
    pub reasoning_max_tokens: usize,
    /// Sampling temperature (0 is greedy); unset: the model's default.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1]; unset: the model's default.
    pub top_p: Option<f64>,
    /// Top-k cut (0 = none); unset: the model's default.
    pub top_k: Option<usize>,
    /// Base seed, for reproducible conversations; unset: seeded by the OS.
    pub seed: Option<u64>,
    /// An RFC 3339 instant (`2025-08-28T04:00:00Z`) that new sessions' system prompts are
    /// dated by, and that `get_date_time` reports, instead of the clock (`VOXLOOP_FIXED_NOW`):
    /// with `seed`, a conversation then replays identically on any day (tests, evaluations).
    pub fixed_now: Option<String>,
    /// Sessions kept in memory; creating one more evicts the longest idle one (a session in a
    /// turn is never evicted; if all are, creation answers 503).
    pub max_sessions: usize,
    /// Requests without a session (Chat Completions, transcriptions, translations, speech)
    /// that may run or wait for the model at once; one more answers 503 with `Retry-After`
    /// instead of joining an unbounded queue.
    pub max_requests: usize,
    /// Longest audio input of one turn, in seconds.
    pub max_audio_seconds: f64,
    /// Whether sessions are saved to disk (after their creation and every turn) and found
    /// there again after a restart or an eviction.
    pub persist_sessions: bool,
    /// Where saved sessions live; unset: `<data_dir>/sessions`.
    pub sessions_dir: Option<PathBuf>,
    /// Memory for copies of the KV caches of conversations the model switched away from, in
    /// MiB (0: keep none): a conversation that comes back (another session's turn came in
    /// between, or a Chat Completions client resends its history) restores its prefix instead
    /// of prefilling it again.
    pub prefix_cache_mb: usize,
    /// Tower policies around every tool call (`[agent.policies]`, `[agent.policies.defaults]`,
    /// `[agent.policies.tools.NAME]`): see `voxloop_policies::PolicyConfig`.
    pub policies: voxloop_policies::PolicyConfig,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            system_prompt: None,
            mode: AnswerMode::Speech,
            tool_choice: "auto".to_owned(),
            max_steps: 3,
            max_new_tokens: voxloop_core::generate::SamplingParams::default().max_new_tokens,
            think: ThinkSetting::Auto,
            reasoning_max_tokens: voxloop_core::session::SessionSettings::default()
                .reasoning_max_tokens,
            temperature: None,
            top_p: None,
            top_k: None,
            seed: None,
            fixed_now: None,
            max_sessions: 64,
            max_requests: 64,
            max_audio_seconds: 120.0,
            persist_sessions: true,
            sessions_dir: None,
            prefix_cache_mb: 256,
            policies: voxloop_policies::PolicyConfig::default(),
        }
    }
}

/// `[voice]`: how speech codes become audio. Speech is rendered when token2wav and the
/// starting voice's profile are both found; otherwise turns stream speech codes only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceSection {
    /// The token2wav directory (`flow.yaml`, `flow.pt`, `hift.pt`); unset:
    /// `<model dir>/token2wav` when it exists (`VOXLOOP_TOKEN2WAV_DIR`).
    pub token2wav: Option<PathBuf>,
    /// The voice library (profile files); unset: `<data_dir>/voices` when it exists.
    pub dir: Option<PathBuf>,
    /// The voice sessions start in; unset: `default_female` when the library has it.
    pub name: Option<String>,
}

/// The voice a session starts in when `[voice] name` is unset.
pub const DEFAULT_VOICE_NAME: &str = "default_female";

/// A configuration problem, with the file and the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: field `{field}`: {message}")]
    Field { path: PathBuf, field: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("config field `{field}`: {message}")]
    Value { field: String, message: String },
}

impl Config {
    /// Reads `path` if given (it must exist), else [`DEFAULT_CONFIG_PATH`] if it exists, else
    /// starts from defaults; then applies environment overrides from `env` and checks the
    /// values ([`Config::validate_agent`]).
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.validate_agent()?;
        config.model.validate()?;
        config.mcp.validate()?;
        config.realtime.validate()?;
        config.index.validate()?;
        Ok(config)
    }

    /// Parses one TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let field = err.path().to_string();
            let inner = err.into_inner();
            let mut message = inner.message().trim().replace('\n', " ");
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("{message} (line {line})");
            }
            ConfigError::Field { path: path.to_owned(), field, message }
        })
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(path) = env("VOXLOOP_SILERO_VAD").filter(|p| !p.is_empty()) {
            self.realtime.vad_model = Some(PathBuf::from(path));
        }
        if let Some(addr) = env("VOXLOOP_ADDR") {
            self.server.addr = addr.parse().map_err(|e| ConfigError::Env {
                var: "VOXLOOP_ADDR",
                message: format!("{addr:?} is not a socket address: {e}"),
            })?;
        }
        if let Some(dir) = env("VOXLOOP_DATA_DIR") {
            self.paths.data_dir = PathBuf::from(dir);
        }
        if let Some(dir) = env("VOXLOOP_MODEL_DIR") {
            self.model.dir = Some(PathBuf::from(dir));
        }
        if let Some(id) = env("VOXLOOP_MODEL_ID").filter(|id| !id.trim().is_empty()) {
            self.model.id = Some(id);
        }
        if let Some(url) = env("VOXLOOP_MODEL_URL").filter(|u| !u.is_empty()) {
            self.model.url = Some(url);
            self.model.backend = ModelBackend::Openai;
        }
        if let Some(device) = env("VOXLOOP_DEVICE") {
            self.model.device = device.parse().map_err(|e: voxloop_core::Error| {
                ConfigError::Env { var: "VOXLOOP_DEVICE", message: e.to_string() }
            })?;
        }
        if let Some(dir) = env("VOXLOOP_EMBEDDER_DIR").filter(|d| !d.is_empty()) {
            self.index.embedder_dir = Some(PathBuf::from(dir));
        }
        if let Some(dir) = env("VOXLOOP_TOKEN2WAV_DIR") {
            self.voice.token2wav = Some(PathBuf::from(dir));
        }
        if let Some(now) = env("VOXLOOP_FIXED_NOW") {
            self.agent.fixed_now = Some(now);
        }
        if let Some(filter) = env("VOXLOOP_LOG") {
            self.log.filter = filter;
        }
        self.telemetry.apply_env(&env)?;
        self.mcp.apply_env(&env);
        Ok(())
    }
}

impl Config {
    /// The token2wav directory: `[voice] token2wav`, else `<model dir>/token2wav`; and
    /// whether it was configured explicitly (then it must exist).
    pub fn token2wav_dir(&self) -> Option<(PathBuf, bool)> {
        match (&self.voice.token2wav, &self.model.dir) {
            (Some(dir), _) => Some((dir.clone(), true)),
            (None, Some(model)) => Some((model.join("token2wav"), false)),
            (None, None) => None,
        }
    }

    /// The voice library directory: `[voice] dir`, else `<data_dir>/voices`; and whether it
    /// was configured explicitly.
    pub fn voices_dir(&self) -> (PathBuf, bool) {
        match &self.voice.dir {
            Some(dir) => (dir.clone(), true),
            None => (self.paths.data_dir.join("voices"), false),
        }
    }

    /// The directory of saved sessions: `[agent] sessions_dir`, else `<data_dir>/sessions`;
    /// `None` when `[agent] persist_sessions` is false.
    pub fn sessions_dir(&self) -> Option<PathBuf> {
        if !self.agent.persist_sessions {
            return None;
        }
        Some(match &self.agent.sessions_dir {
            Some(dir) => dir.clone(),
            None => self.paths.data_dir.join("sessions"),
        })
    }

    /// `[agent] fixed_now` as an instant (`None`: the clock), or why it is not one.
    pub fn fixed_now(&self) -> Result<Option<SystemTime>, String> {
        self.agent.fixed_now.as_deref().map(parse_instant).transpose()
    }

    /// Checks the `[agent]` and `[voice]` values that TOML types cannot: ranges and names.
    /// The errors name the field.
    pub fn validate_agent(&self) -> Result<(), ConfigError> {
        let a = &self.agent;
        let bad = |field: &str, message: String| ConfigError::Value {
            field: format!("agent.{field}"),
            message,
        };
        if a.max_steps == 0 {
            return Err(bad("max_steps", "must be at least 1".into()));
        }
        if a.max_new_tokens == 0 {
            return Err(bad("max_new_tokens", "must be at least 1".into()));
        }
        if a.reasoning_max_tokens == 0 {
            return Err(bad(
                "reasoning_max_tokens",
                "must be at least 1 (`think = \"off\"` turns thinking off)".into(),
            ));
        }
        if a.max_sessions == 0 {
            return Err(bad("max_sessions", "must be at least 1".into()));
        }
        if a.max_requests == 0 {
            return Err(bad("max_requests", "must be at least 1".into()));
        }
        if !(a.max_audio_seconds.is_finite() && a.max_audio_seconds > 0.0) {
            return Err(bad("max_audio_seconds", format!("{} is not > 0", a.max_audio_seconds)));
        }
        if let Some(t) = a.temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(bad("temperature", format!("{t} is not a finite value >= 0")));
        }
        if let Some(p) = a.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(bad("top_p", format!("{p} is not in (0, 1]")));
        }
        if let Err(message) = self.fixed_now() {
            return Err(bad("fixed_now", message));
        }
        if a.sessions_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(bad(
                "sessions_dir",
                "is empty: remove it (for <data_dir>/sessions) or name a directory".into(),
            ));
        }
        if a.tool_choice.trim().is_empty() {
            return Err(bad(
                "tool_choice",
                "is empty: use auto, none, required or a tool name".into(),
            ));
        }
        if let Some(name) = &self.voice.name {
            if name.trim().is_empty() {
                return Err(ConfigError::Value {
                    field: "voice.name".into(),
                    message: "is empty".into(),
                });
            }
        }
        Ok(())
    }
}

/// An RFC 3339 instant with its offset (`2025-08-28T04:00:00Z`, `2025-08-28T12:00:00+08:00`).
pub fn parse_instant(text: &str) -> Result<SystemTime, String> {
    let instant: jiff::Timestamp = text.trim().parse().map_err(|e| {
        format!("{text:?} is not an RFC 3339 instant such as 2025-08-28T04:00:00Z: {e}")
    })?;
    SystemTime::try_from(instant).map_err(|e| format!("{text:?} is out of range: {e}"))
}

#[cfg(test)]
mod tests {
    use voxloop_core::DeviceSpec;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.paths.data_dir, PathBuf::from("data"));
    }

    #[test]
    fn tool_tables_are_read_and_checked() {
        let text = "[tools.web_search]\nprovider = \"searxng\"\n[tools.date_time]\ntimezone = \"Asia/Shanghai\"\n";
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.tools.date_time.timezone, "Asia/Shanghai");
        let err = Config::from_toml("[tools.weather]\nretries = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tools.weather"), "{err}");
    }

    #[test]
    fn fields_are_read() {
        let text = "[server]\naddr = \"0.0.0.0:9000\"\n[model]\ndevice = \"cuda:1\"\ndir = \"m\"\n";
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.server.addr.port(), 9000);
        assert_eq!(config.model.device, DeviceSpec::Cuda(1));
        assert_eq!(config.model.dir, Some(PathBuf::from("m")));
    }

    #[test]
    fn errors_name_file_field_and_line() {
        let text = "[server]\naddr = \"nowhere\"\n";
        let err = Config::from_toml(text, Path::new("conf/v.toml")).unwrap_err().to_string();
        assert!(err.contains("conf/v.toml") && err.contains("server.addr"), "{err}");
        assert!(err.contains("line 2") && !err.contains('\n'), "{err}");

        let err = Config::from_toml("[model]\ndevice = \"tpu\"\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.device") && err.contains("tpu"), "{err}");

        let err = Config::from_toml("[server]\nadress = \"x\"\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let env = |key: &str| match key {
            "VOXLOOP_ADDR" => Some("127.0.0.1:0".to_owned()),
            "VOXLOOP_DEVICE" => Some("cpu".to_owned()),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(&path, "[server]\naddr = \"127.0.0.1:9\"\n").unwrap();
        let config = Config::load(Some(&path), env).unwrap();
        assert_eq!(config.server.addr.port(), 0);
        assert_eq!(config.model.device, DeviceSpec::Cpu);

        let bad = |key: &str| (key == "VOXLOOP_ADDR").then(|| "x".to_owned());
        let err = Config::load(Some(&path), bad).unwrap_err().to_string();
        assert!(err.contains("VOXLOOP_ADDR"), "{err}");
    }

    #[test]
    fn agent_and_voice_tables_are_read() {
        let text =
            "[model]\ndir = \"m\"\n[agent]\nmode = \"text\"\nmax_new_tokens = 64\nseed = 3\n\
                    tool_choice = \"none\"\n[agent.policies]\ndeny = [\"get_weather\"]\n\
                    [agent.policies.tools.web_search]\ntimeout_ms = 8000\n\
                    [voice]\nname = \"alto\"\n";
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.agent.mode, AnswerMode::Text);
        assert_eq!((config.agent.max_new_tokens, config.agent.seed), (64, Some(3)));
        assert_eq!(config.agent.policies.deny, vec!["get_weather".to_owned()]);
        assert_eq!(config.agent.policies.tools["web_search"].timeout_ms, Some(8000));
        assert_eq!(config.voice.name.as_deref(), Some("alto"));
        config.validate_agent().unwrap();
        // token2wav next to the checkpoint, voices under the data dir, unless configured
        assert_eq!(config.token2wav_dir(), Some((PathBuf::from("m/token2wav"), false)));
        assert_eq!(config.voices_dir(), (PathBuf::from("data/voices"), false));
        let env = |k: &str| (k == "VOXLOOP_TOKEN2WAV_DIR").then(|| "t2w".to_owned());
        let mut config = config;
        config.apply_env(env).unwrap();
        assert_eq!(config.token2wav_dir(), Some((PathBuf::from("t2w"), true)));
        // the printed configuration reads back the same
        let printed = toml::to_string_pretty(&config).unwrap();
        assert_eq!(Config::from_toml(&printed, Path::new("p.toml")).unwrap(), config);
    }

    #[test]
    fn agent_values_are_checked() {
        let err = Config::from_toml("[agent]\nmax_tokens = 5\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_tokens"), "{err}");
        let err =
            Config::from_toml("[agent.policies.defaults]\ntimeout = 5\n", Path::new("v.toml"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("agent.policies.defaults") && err.contains("timeout"), "{err}");
        for (text, field) in [
            ("[agent]\nmax_steps = 0\n", "agent.max_steps"),
            ("[agent]\nmax_new_tokens = 0\n", "agent.max_new_tokens"),
            ("[agent]\nreasoning_max_tokens = 0\n", "agent.reasoning_max_tokens"),
            ("[agent]\ntop_p = 1.5\n", "agent.top_p"),
            ("[agent]\ntemperature = -1.0\n", "agent.temperature"),
            ("[agent]\nmax_sessions = 0\n", "agent.max_sessions"),
            ("[agent]\nmax_requests = 0\n", "agent.max_requests"),
            ("[agent]\nfixed_now = \"yesterday\"\n", "agent.fixed_now"),
            ("[agent]\nsessions_dir = \"\"\n", "agent.sessions_dir"),
            ("[voice]\nname = \" \"\n", "voice.name"),
        ] {
            let config = Config::from_toml(text, Path::new("v.toml")).unwrap();
            let err = config.validate_agent().unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn fixed_now_is_an_rfc3339_instant() {
        let want =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(20_328 * 86_400 + 4 * 3600);
        assert_eq!(parse_instant("2025-08-28T04:00:00Z"), Ok(want));
        assert_eq!(parse_instant(" 2025-08-28T12:00:00+08:00 "), Ok(want));
        assert!(parse_instant("2025-08-28").unwrap_err().contains("RFC 3339"));
        let env = |k: &str| (k == "VOXLOOP_FIXED_NOW").then(|| "2025-08-28T04:00:00Z".to_owned());
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.fixed_now(), Ok(Some(want)));
        assert_eq!(Config::load(None, no_env).unwrap().fixed_now(), Ok(None));
    }

    #[test]
    fn sessions_are_kept_under_the_data_dir_unless_configured_or_off() {
        let config = Config::from_toml("[paths]\ndata_dir = \"d\"\n", Path::new("v.toml")).unwrap();
        assert!(config.agent.persist_sessions);
        assert_eq!(config.sessions_dir(), Some(PathBuf::from("d/sessions")));
        let text = "[agent]\nsessions_dir = \"/var/lib/vox/s\"\n";
        let config = Config::from_toml(text, Path::new("v.toml")).unwrap();
        assert_eq!(config.sessions_dir(), Some(PathBuf::from("/var/lib/vox/s")));
        let text = "[agent]\npersist_sessions = false\nsessions_dir = \"s\"\n";
        let config = Config::from_toml(text, Path::new("v.toml")).unwrap();
        config.validate_agent().unwrap();
        assert_eq!(config.sessions_dir(), None);
        let err = Config::from_toml("[agent]\npersist_sessions = \"yes\"\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.persist_sessions"), "{err}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/v.toml")), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
