//! The input audio buffer of a connection, and server VAD over it: appended PCM, speech
//! start and stop heard by Silero VAD, and commits into user items.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;

use super::{Connection, Deferred, MIN_COMMIT_MS, PRE_SPEECH_SLACK_MS};
use crate::http::realtime::protocol::{new_id, EventError};
use crate::http::realtime::response::CancelReason;
use crate::http::realtime::settings::PCM_RATE;
use crate::realtime::detect::{TurnDetector, VadEvent};

/// The input audio buffer: 24 kHz samples since the last commit, positioned on the
/// connection's audio clock.
#[derive(Default)]
pub(super) struct InputBuffer {
    pub(super) samples: Vec<f32>,
    /// The index (on the connection's clock) of `samples[0]`.
    pub(super) start: u64,
}

impl InputBuffer {
    pub(super) fn end(&self) -> u64 {
        self.start + self.samples.len() as u64
    }

    /// Takes `[from, to)` (clock samples) out, dropping everything before `to`.
    pub(super) fn take(&mut self, from: u64, to: u64) -> Vec<f32> {
        let lo = from.saturating_sub(self.start).min(self.samples.len() as u64) as usize;
        let hi = to.saturating_sub(self.start).min(self.samples.len() as u64) as usize;
        let taken = self.samples[lo..hi.max(lo)].to_vec();
        self.drop_before(to);
        taken
    }

    pub(super) fn drop_before(&mut self, at: u64) {
        let n = at.saturating_sub(self.start).min(self.samples.len() as u64) as usize;
        self.samples.drain(..n);
        self.start += n as u64;
    }

    pub(super) fn clear(&mut self) {
        let end = self.end();
        self.samples.clear();
        self.start = end;
    }
}

pub(super) fn ms_to_samples(ms: u64) -> u64 {
    ms * u64::from(PCM_RATE) / 1000
}

/// Base64 of 16-bit little-endian mono PCM as samples in [-1, 1); errors name `param`.
pub(super) fn decode_pcm16(base64: &str, param: &str) -> Result<Vec<f32>, EventError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(base64.trim()).map_err(|e| {
        EventError::invalid("invalid_value", format!("audio is not base64: {e}")).param(param)
    })?;
    if bytes.len() % 2 != 0 {
        return Err(EventError::invalid(
            "invalid_value",
            "audio must be 16-bit PCM: an even number of bytes",
        )
        .param(param));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect())
}

impl Connection {
    pub(super) async fn append(&mut self, audio: &str) -> Result<(), EventError> {
        let samples = decode_pcm16(audio, "audio")?;
        let limit = (self.config.max_buffer_seconds * f64::from(PCM_RATE)) as usize;
        if self.buffer.samples.len() + samples.len() > limit {
            return Err(EventError::invalid(
                "input_audio_buffer_full",
                format!(
                    "the input audio buffer holds at most {} s ([realtime] max_buffer_seconds); commit or clear it",
                    self.config.max_buffer_seconds
                ),
            ));
        }
        self.buffer.samples.extend_from_slice(&samples);
        self.detect(samples).await;
        Ok(())
    }

    /// Runs server VAD over appended samples and acts on what it hears.
    pub(super) async fn detect(&mut self, samples: Vec<f32>) {
        let Some(turn_detection) = self.settings.turn_detection.clone() else { return };
        if self.detector.is_none() && self.vad_problem.is_none() {
            match self.load_detector().await {
                Ok(detector) => self.detector = Some(detector),
                Err(problem) => {
                    self.vad_problem = Some(problem.clone());
                    self.error(EventError::server(format!(
                        "server VAD is off: {problem}; commit the audio with input_audio_buffer.commit"
                    )))
                    .await;
                }
            }
        }
        let Some(mut detector) = self.detector.take() else { return };
        let pushed = tokio::task::spawn_blocking(move || {
            let events = voxloop_core::audio::resample(&samples, PCM_RATE, 16_000)
                .map_err(|e| e.to_string())
                .and_then(|s| detector.push(&s).map_err(|e| e.to_string()));
            (detector, events)
        })
        .await;
        let events = match pushed {
            Ok((detector, events)) => {
                self.detector = Some(detector);
                events
            }
            Err(e) => Err(format!("the VAD task failed: {e}")),
        };
        let events = match events {
            Ok(events) => events,
            Err(message) => {
                self.error(EventError::server(format!("voice activity detection: {message}")))
                    .await;
                return;
            }
        };
        for event in events {
            match event {
                VadEvent::SpeechStarted { audio_start_ms } => {
                    let item_id = new_id("item");
                    self.send(
                        "input_audio_buffer.speech_started",
                        json!({ "audio_start_ms": audio_start_ms, "item_id": item_id }),
                    )
                    .await;
                    self.speech_item = Some((item_id, audio_start_ms));
                    if turn_detection.interrupt_response {
                        if let Some(cancel) = self.running.as_mut().and_then(|r| r.cancel.take()) {
                            let _ = cancel.send(CancelReason::TurnDetected);
                        }
                    }
                }
                VadEvent::SpeechStopped { audio_end_ms } => {
                    // The start of this speech (a later one may have begun in the same push).
                    let (item_id, start_ms) =
                        self.speech_item.take().unwrap_or_else(|| (new_id("item"), 0));
                    self.send(
                        "input_audio_buffer.speech_stopped",
                        json!({ "audio_end_ms": audio_end_ms, "item_id": item_id }),
                    )
                    .await;
                    let samples =
                        self.buffer.take(ms_to_samples(start_ms), ms_to_samples(audio_end_ms));
                    self.committed(&item_id).await;
                    let speech = Deferred::Speech {
                        item_id,
                        samples,
                        respond: turn_detection.create_response,
                    };
                    if self.running.is_some() {
                        self.deferred.push_back(speech);
                    } else {
                        self.apply_deferred(speech).await;
                    }
                }
            }
        }
        if self.detector.as_ref().is_some_and(|d| !d.in_speech()) {
            // Keep only what the next speech's prefix padding may need.
            let keep =
                ms_to_samples(turn_detection.vad.prefix_padding_ms as u64 + PRE_SPEECH_SLACK_MS);
            let end = self.buffer.end();
            self.buffer.drop_before(end.saturating_sub(keep));
        }
    }

    /// Gives the detector's model back to the pool (server VAD off or changed, or the
    /// connection closing).
    pub(super) fn drop_detector(&mut self) {
        if let Some(detector) = self.detector.take() {
            self.shared.vads.give_back(detector.into_vad());
        }
    }

    pub(super) async fn load_detector(&self) -> Result<TurnDetector, String> {
        let Some(model) = self.config.vad_model.clone() else {
            return Err("no Silero VAD model is configured ([realtime] vad_model or VOXLOOP_SILERO_VAD; scripts/silero_vad.sh fetches it)".into());
        };
        let params =
            self.settings.turn_detection.as_ref().map(|t| t.vad.clone()).unwrap_or_default();
        let start_ms = self.buffer.end() * 1000 / u64::from(PCM_RATE);
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let vad = shared.vads.take(&model, None).map_err(|e| e.to_string())?;
            Ok(TurnDetector::starting_at(vad, params, start_ms))
        })
        .await
        .map_err(|e| format!("the VAD loading task failed: {e}"))?
    }

    pub(super) async fn committed(&mut self, item_id: &str) {
        self.send(
            "input_audio_buffer.committed",
            json!({ "item_id": item_id, "previous_item_id": self.last_item }),
        )
        .await;
    }

    /// `input_audio_buffer.commit`: the whole buffer becomes a user item.
    pub(super) async fn commit(&mut self) -> Result<(), EventError> {
        if (self.buffer.samples.len() as u64) < ms_to_samples(MIN_COMMIT_MS) {
            return Err(EventError::invalid(
                "input_audio_buffer_commit_empty",
                format!(
                    "the input audio buffer holds {} ms of audio; a commit needs at least {MIN_COMMIT_MS} ms",
                    self.buffer.samples.len() as u64 * 1000 / u64::from(PCM_RATE)
                ),
            ));
        }
        let item_id = self.speech_item.take().map_or_else(|| new_id("item"), |(id, _)| id);
        let end = self.buffer.end();
        let samples = self.buffer.take(self.buffer.start, end);
        if let Some(detector) = self.detector.as_mut() {
            detector.reset_speech();
        }
        self.committed(&item_id).await;
        self.add_audio_item(&item_id, samples, None).await
    }
}
