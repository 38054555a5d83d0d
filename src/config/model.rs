//! `[model]`: which Step-Audio 2 the agent runs, here or on a server.
//!
//! ```toml
//! [model]
//! dir = "models/Step-Audio-2-mini"   # the checkpoint (backend "openai": its tokenizer.json)
//! device = "auto"
//!
//! # Generation on a GPU server elsewhere (StepFun's vLLM fork, or another voxloop):
//! backend = "openai"
//! url = "http://gpu-host:8000/v1"
//! model = "step-audio-2-mini"
//! api_key_env = "VOXLOOP_MODEL_API_KEY"  # the variable that holds the key, if any
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use voxloop_core::remote::RemoteConfig;
use voxloop_core::DeviceSpec;

use super::ConfigError;

/// Where generation runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelBackend {
    /// The checkpoint in `[model] dir`, in this process (libtorch).
    #[default]
    Local,
    /// A remote OpenAI-compatible Step-Audio 2 server at `[model] url`.
    Openai,
}

/// `[model]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A Step-Audio 2 checkpoint directory, as downloaded (`VOXLOOP_MODEL_DIR`). Optional: the
    /// service starts without a model and reports it on `/healthz`. With backend `openai` only
    /// its `tokenizer.json` is read.
    pub dir: Option<PathBuf>,
    /// A Hugging Face hub repository (`stepfun-ai/Step-Audio-2-mini`) that `voxloop serve`
    /// pulls on its first start into `dir` (default `models/<name>`) when that directory is not
    /// a complete pull (`VOXLOOP_MODEL_ID`); `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`
    /// apply as for `voxloop model pull`.
    pub id: Option<String>,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (`VOXLOOP_DEVICE`).
    #[serde(with = "device_string")]
    pub device: DeviceSpec,
    /// `local` (default) or `openai` (set by `VOXLOOP_MODEL_URL` too).
    pub backend: ModelBackend,
    /// The remote server's API base URL, to which `/chat/completions` is appended
    /// (`VOXLOOP_MODEL_URL`).
    pub url: Option<String>,
    /// The remote model's name, sent as `model` (and the name this service reports).
    pub model: String,
    /// The environment variable holding the remote server's API key (sent as a bearer token
    /// when set and not empty); the key itself never goes in the file.
    pub api_key_env: String,
    /// The `audio.voice` of spoken requests to the server; unset: `[voice] name`, else the
    /// default voice's name. The speech is rendered here, in the session's voice.
    pub remote_voice: Option<String>,
    /// The longest wait for a connection to the server, in milliseconds.
    pub connect_timeout_ms: u64,
    /// The longest wait for the next piece of an answer, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Retries of a request that failed before any answer arrived.
    pub retries: u32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        let remote = RemoteConfig::default();
        Self {
            dir: None,
            id: None,
            device: DeviceSpec::default(),
            backend: ModelBackend::Local,
            url: None,
            model: remote.model,
            api_key_env: "VOXLOOP_MODEL_API_KEY".to_owned(),
            remote_voice: None,
            connect_timeout_ms: millis(remote.connect_timeout),
            idle_timeout_ms: millis(remote.idle_timeout),
            retries: remote.retries,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ModelConfig {
    /// Checks the values TOML types cannot; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str| ConfigError::Value {
            field: format!("model.{field}"),
            message: message.to_owned(),
        };
        if self.model.trim().is_empty() {
            return Err(bad("model", "is empty"));
        }
        if let Some(id) = &self.id {
            crate::cli::pull::repo_name(id).map_err(|e| bad("id", &e.to_string()))?;
        }
        if self.backend == ModelBackend::Openai {
            let Some(url) = &self.url else {
                return Err(bad(
                    "url",
                    "backend \"openai\" needs the server's URL (http://host:port/v1)",
                ));
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("url", "must start with http:// or https://"));
            }
            if self.dir.is_none() {
                return Err(bad(
                    "dir",
                    "backend \"openai\" still needs the checkpoint's tokenizer.json: set dir to a \
                     directory that holds it",
                ));
            }
            if self.idle_timeout_ms == 0 || self.connect_timeout_ms == 0 {
                return Err(bad("idle_timeout_ms", "timeouts must be at least 1 ms"));
            }
        }
        Ok(())
    }

    /// The remote backend's settings, the API key read through `env`; `default_voice` when
    /// `remote_voice` is unset.
    pub fn remote(
        &self,
        default_voice: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> RemoteConfig {
        RemoteConfig {
            url: self.url.clone().unwrap_or_default(),
            api_key: env(&self.api_key_env).filter(|k| !k.trim().is_empty()),
            model: self.model.clone(),
            voice: self.remote_voice.clone().unwrap_or_else(|| default_voice.to_owned()),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            retries: self.retries,
        }
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
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn a_remote_backend_needs_a_url_and_a_tokenizer_directory() {
        let load = |text: &str| {
            let config = Config::from_toml(text, Path::new("v.toml")).unwrap();
            config.model.validate().map_err(|e| e.to_string())
        };
        let err = load("[model]\nbackend = \"openai\"\ndir = \"m\"\n").unwrap_err();
        assert!(err.contains("model.url"), "{err}");
        let err =
            load("[model]\nbackend = \"openai\"\nurl = \"ftp://x\"\ndir = \"m\"\n").unwrap_err();
        assert!(err.contains("http://"), "{err}");
        let err = load("[model]\nbackend = \"openai\"\nurl = \"http://x/v1\"\n").unwrap_err();
        assert!(err.contains("tokenizer.json"), "{err}");
        load("[model]\nbackend = \"openai\"\nurl = \"http://x/v1\"\ndir = \"m\"\n").unwrap();
        let err = Config::from_toml("[model]\nbackend = \"grpc\"\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend"), "{err}");
    }

    #[test]
    fn a_model_id_names_a_repository() {
        let load = |text: &str| {
            let config = Config::from_toml(text, Path::new("v.toml")).unwrap();
            config.model.validate().map_err(|e| e.to_string())
        };
        load("[model]\nid = \"stepfun-ai/Step-Audio-2-mini\"\n").unwrap();
        for bad in ["nobody", "a/b/c", "../x", "owner/"] {
            let err = load(&format!("[model]\nid = {bad:?}\n")).unwrap_err();
            assert!(err.contains("model.id"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_key_comes_from_the_named_variable_and_the_voice_defaults() {
        let text = "[model]\nbackend = \"openai\"\nurl = \"http://x/v1\"\ndir = \"m\"\n\
                    api_key_env = \"MY_KEY\"\nretries = 0\n";
        let config = Config::from_toml(text, Path::new("v.toml")).unwrap();
        let env = |name: &str| (name == "MY_KEY").then(|| "sk-1".to_owned());
        let remote = config.model.remote("fixture", env);
        assert_eq!(remote.api_key.as_deref(), Some("sk-1"));
        assert_eq!(remote.voice, "fixture");
        assert_eq!(remote.retries, 0);
        assert_eq!(config.model.remote("v", |_| Some("  ".into())).api_key, None);
    }
}
