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
    /// What plays while a tool runs long: an audio file, or words found (BM25) among the
    /// audio index's sounds; the first hit is used, at most [`FILLER_MAX_SECONDS`]. Empty:
    /// no filler.
    pub filler_sound: String,
    /// How long a tool call runs before the filler plays (never over the model's own
    /// speech: it waits until what was sent has played).
    pub filler_delay_ms: u64,
}

/// The longest filler played; a longer sound is cut (with a short fade).
pub const FILLER_MAX_SECONDS: f64 = 3.0;

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            vad_model: None,
            max_buffer_seconds: 120.0,
            turn_detection: ServerVad::default(),
            // The sample library's two-tone chime; in another library, any sound described
            // with the word.
            filler_sound: "chime".into(),
            filler_delay_ms: 1500,
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
        if self.filler_delay_ms > 60_000 {
            return Err(field("filler_delay_ms", "must be at most 60000 (a minute)"));
        }
        let t = self.turn_detection.threshold;
        if !(t > 0.0 && t < 1.0) {
            return Err(field("turn_detection.threshold", "must be in (0, 1)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_their_field() {
        let bad = |edit: fn(&mut RealtimeConfig)| {
            let mut config = RealtimeConfig::default();
            edit(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.max_connections = 0).contains("realtime.max_connections"));
        assert!(bad(|c| c.max_buffer_seconds = 0.0).contains("realtime.max_buffer_seconds"));
        assert!(bad(|c| c.filler_delay_ms = 90_000).contains("realtime.filler_delay_ms"));
        assert!(bad(|c| c.turn_detection.threshold = 1.0).contains("turn_detection.threshold"));
        assert!(RealtimeConfig::default().validate().is_ok());
    }
}
