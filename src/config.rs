//! Service configuration: a TOML file, then `VOXLOOP_*` environment overrides, then CLI flags.
//!
//! Every field has a default, so an empty file (or none) is a valid configuration. Unknown
//! fields are rejected so that a typo is an error and not a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voxloop_core::DeviceSpec;

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

/// `[model]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A Step-Audio 2 checkpoint directory, as downloaded (`VOXLOOP_MODEL_DIR`). Optional: the
    /// service starts without a model and reports it on `/healthz`.
    pub dir: Option<PathBuf>,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (`VOXLOOP_DEVICE`).
    #[serde(with = "device_string")]
    pub device: DeviceSpec,
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

/// A configuration problem, with the file and the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: field `{field}`: {message}")]
    Field { path: PathBuf, field: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
}

impl Config {
    /// Reads `path` if given (it must exist), else [`DEFAULT_CONFIG_PATH`] if it exists, else
    /// starts from defaults; then applies environment overrides from `env`.
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
        if let Some(device) = env("VOXLOOP_DEVICE") {
            self.model.device = device.parse().map_err(|e: voxloop_core::Error| {
                ConfigError::Env { var: "VOXLOOP_DEVICE", message: e.to_string() }
            })?;
        }
        if let Some(filter) = env("VOXLOOP_LOG") {
            self.log.filter = filter;
        }
        Ok(())
    }
}

mod device_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use voxloop_core::DeviceSpec;

    pub fn serialize<S: Serializer>(spec: &DeviceSpec, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(spec)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceSpec, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
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
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/v.toml")), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
