//! `[realtime]`: the OpenAI Realtime-compatible WebSocket (`GET /v1/realtime`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::realtime::detect::ServerVad;

/// `[realtime]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Connections served at once; one more is refused with 503 before the upgrade.
    pub max_connections: usize,
    /// Silero VAD's ONNX model (`VOXLOOP_SILERO_VAD`; `scripts/silero_vad.sh` fetches it).
    /// Unset: server VAD is off and clients commit their audio themselves.
    pub vad_model: Option<PathBuf>,
    /// The most audio the input buffer holds before a commit; more is refused with an
    /// `error` event (the buffer keeps what it had).
    pub max_buffer_seconds: f64,
    /// The `server_vad` settings a connection starts with.
    pub turn_detection: ServerVad,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            vad_model: None,
            max_buffer_seconds: 120.0,
            turn_detection: ServerVad::default(),
        }
    }
}

impl RealtimeConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |name: &str, message: &str| ConfigError::Value {
            field: format!("realtime.{name}"),
            message: message.to_owned(),
        };
        if self.max_connections == 0 {
            return Err(field("max_connections", "must be at least 1"));
        }
        if !(self.max_buffer_seconds > 0.0 && self.max_buffer_seconds <= 3600.0) {
            return Err(field("max_buffer_seconds", "must be in (0, 3600]"));
        }
        let t = self.turn_detection.threshold;
        if !(t > 0.0 && t < 1.0) {
            return Err(field("turn_detection.threshold", "must be in (0, 1)"));
        }
        Ok(())
    }
}
