//! Server-side turn detection: OpenAI Realtime's `server_vad` over [`SileroVad`].
//!
//! A [`TurnDetector`] takes 16 kHz audio in pieces of any length, runs the VAD on each whole
//! 32-ms window and turns the probabilities into [`VadEvent`]s, the two `server_vad` events of
//! the Realtime API (`input_audio_buffer.speech_started` / `.speech_stopped`):
//!
//! - speech starts at the first window whose probability reaches `threshold`;
//!   `audio_start_ms` is that window's start minus `prefix_padding_ms` (never below 0), so the
//!   item keeps a little audio from before the first loud syllable;
//! - while in speech, only a window below `threshold - 0.15` (at least 0.01) counts as silence:
//!   the hysteresis that upstream's streaming detector uses (`VADIterator` in
//!   `src/silero_vad/utils_vad.py` of snakers4/silero-vad), so that a word fading out at 0.4
//!   does not end the turn. Once silence has begun, windows between the two thresholds neither
//!   end it nor cancel it (as in `VADIterator`); a window at `threshold` or above cancels it, so
//!   short pauses inside the utterance do not end speech;
//! - speech stops once `silence_duration_ms` have passed since that silence began, checked on
//!   each silent window; `audio_end_ms` is the end of the last speech window (where the silence
//!   began), without padding.
//!
//! Times are milliseconds of the audio stream (the origin given to
//! [`TurnDetector::starting_at`], 0 for [`TurnDetector::new`]), always on the 32-ms window grid.
//!
//! Two differences from `VADIterator`, both on purpose: it counts the silence from the end of
//! the first silent window rather than from the end of speech, so it stops one window later
//! than `silence_duration_ms` asks; and it pads the end by the same amount as the start, which
//! `server_vad` does not.
//!
//! The state machine ([`Gate`]) is separate from the model so that it can be tested on
//! hand-made probabilities.

use serde::{Deserialize, Serialize};

use super::vad::{SileroVad, VadError, SAMPLE_RATE, WINDOW};

/// Milliseconds per VAD window (512 samples at 16 kHz: exactly 32).
const WINDOW_MS: u64 = (WINDOW as u64) * 1000 / SAMPLE_RATE as u64;
/// How far below `threshold` a window must fall to count as silence during speech.
const HYSTERESIS: f32 = 0.15;
/// The least silence threshold, however low `threshold` is.
const MIN_SILENCE_THRESHOLD: f32 = 0.01;

/// `turn_detection` of type `server_vad` (OpenAI Realtime), with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerVad {
    /// Speech probability at which speech starts, in (0, 1).
    pub threshold: f32,
    /// Audio kept before the start of speech (ms).
    pub prefix_padding_ms: u32,
    /// Silence that ends speech (ms).
    pub silence_duration_ms: u32,
}

impl Default for ServerVad {
    fn default() -> Self {
        Self { threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 }
    }
}

/// A change of speech state; times in ms of the stream fed to the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began: `input_audio_buffer.speech_started`.
    SpeechStarted { audio_start_ms: u64 },
    /// Speech ended, `silence_duration_ms` ago: `input_audio_buffer.speech_stopped`.
    SpeechStopped { audio_end_ms: u64 },
}

/// The `server_vad` state machine over window probabilities; see the module docs.
#[derive(Debug, Clone)]
struct Gate {
    threshold: f32,
    silence_threshold: f32,
    prefix_padding_ms: u64,
    silence_duration_ms: u64,
    /// The stream time the first window starts at.
    origin_ms: u64,
    /// The end of the windows seen so far.
    position_ms: u64,
    in_speech: bool,
    /// Where the current or last speech started (`audio_start_ms`).
    speech_start_ms: u64,
    /// During speech, where the current silence began (the end of the last speech window).
    silence_from_ms: Option<u64>,
}

impl Gate {
    fn new(params: &ServerVad, origin_ms: u64) -> Self {
        Self {
            threshold: params.threshold,
            silence_threshold: (params.threshold - HYSTERESIS).max(MIN_SILENCE_THRESHOLD),
            prefix_padding_ms: u64::from(params.prefix_padding_ms),
            silence_duration_ms: u64::from(params.silence_duration_ms),
            origin_ms,
            position_ms: origin_ms,
            in_speech: false,
            speech_start_ms: 0,
            silence_from_ms: None,
        }
    }

    /// The next window's speech probability.
    fn on_probability(&mut self, p: f32) -> Option<VadEvent> {
        let start = self.position_ms;
        let end = start + WINDOW_MS;
        self.position_ms = end;
        if p >= self.threshold {
            self.silence_from_ms = None;
            if !self.in_speech {
                self.in_speech = true;
                self.speech_start_ms = start.saturating_sub(self.prefix_padding_ms);
                return Some(VadEvent::SpeechStarted { audio_start_ms: self.speech_start_ms });
            }
            return None;
        }
        if self.in_speech && p < self.silence_threshold {
            let from = *self.silence_from_ms.get_or_insert(start);
            if end - from >= self.silence_duration_ms {
                self.in_speech = false;
                self.silence_from_ms = None;
                return Some(VadEvent::SpeechStopped { audio_end_ms: from });
            }
        }
        None
    }

    /// A window without a probability (the model failed): time passes, nothing else changes.
    fn skip_window(&mut self) {
        self.position_ms += WINDOW_MS;
    }

    /// Out of speech, without an event; the position stays.
    fn end_speech(&mut self) {
        self.in_speech = false;
        self.silence_from_ms = None;
    }

    /// Back to the start.
    fn reset(&mut self) {
        self.position_ms = self.origin_ms;
        self.speech_start_ms = 0;
        self.end_speech();
    }
}

/// `server_vad` turn detection over one 16 kHz audio stream; see the module docs.
///
/// [`TurnDetector::push`] runs the model: blocking CPU work, for a blocking thread.
#[derive(Debug)]
pub struct TurnDetector {
    vad: SileroVad,
    gate: Gate,
    /// Samples short of a whole window, kept for the next push.
    pending: Vec<f32>,
    /// Samples pushed since the origin, `pending` included.
    pushed: u64,
}

impl TurnDetector {
    /// A detector whose stream starts at 0 ms.
    // Not called by the service (yet): the stream API the tests and later callers use.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn new(vad: SileroVad, params: ServerVad) -> Self {
        Self::starting_at(vad, params, 0)
    }

    /// A detector whose first sample is at `origin_ms` of the stream (when detection starts
    /// after some audio arrived): event times count from the stream's start, and the prefix
    /// padding may reach back before `origin_ms`.
    pub fn starting_at(vad: SileroVad, params: ServerVad, origin_ms: u64) -> Self {
        Self {
            vad,
            gate: Gate::new(&params, origin_ms),
            pending: Vec::with_capacity(WINDOW),
            pushed: 0,
        }
    }

    /// Feeds 16 kHz samples (any number; a partial window waits for the next push) and returns
    /// the events of the windows completed, in order.
    ///
    /// A sample that is not a finite number is refused before anything is consumed (the
    /// detector is left as it was). Should the model itself fail, the failed window passes as
    /// time without a verdict, the rest of `samples_16k` is dropped and so are the events of
    /// this push: positions stay on the window grid, but the caller may have missed a change
    /// of state, so [`TurnDetector::reset_speech`] or [`TurnDetector::reset`] is in order.
    pub fn push(&mut self, samples_16k: &[f32]) -> Result<Vec<VadEvent>, VadError> {
        if let Some(index) = samples_16k.iter().position(|s| !s.is_finite()) {
            return Err(VadError::NonFinite { index });
        }
        let mut events = Vec::new();
        let mut rest = samples_16k;
        if !self.pending.is_empty() {
            let take = rest.len().min(WINDOW - self.pending.len());
            self.pending.extend_from_slice(&rest[..take]);
            self.pushed += take as u64;
            rest = &rest[take..];
            if self.pending.len() < WINDOW {
                return Ok(events);
            }
            let mut window = std::mem::take(&mut self.pending);
            let event = self.run_window(&window);
            window.clear();
            self.pending = window;
            events.extend(event?);
        }
        let mut windows = rest.chunks_exact(WINDOW);
        for window in windows.by_ref() {
            self.pushed += WINDOW as u64;
            events.extend(self.run_window(window)?);
        }
        let tail = windows.remainder();
        self.pending.extend_from_slice(tail);
        self.pushed += tail.len() as u64;
        Ok(events)
    }

    fn run_window(&mut self, window: &[f32]) -> Result<Option<VadEvent>, VadError> {
        match self.vad.probability(window) {
            Ok(p) => Ok(self.gate.on_probability(p)),
            Err(e) => {
                self.gate.skip_window();
                Err(e)
            }
        }
    }

    /// Starts over at the origin: no partial window, the model's state cleared, out of speech.
    // Not called by the service (yet): the stream API the tests and later callers use.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn reset(&mut self) {
        self.vad.reset();
        self.gate.reset();
        self.pending.clear();
        self.pushed = 0;
    }

    /// Forgets the current speech without a [`VadEvent::SpeechStopped`] (the audio buffer was
    /// committed or cleared), keeping the position, the partial window and the model's state:
    /// the audio goes on, and speech that continues starts again at its next loud window.
    pub fn reset_speech(&mut self) {
        self.gate.end_speech();
    }

    /// The end of the audio pushed so far (ms of the stream, a partial window included).
    // Not called by the service (yet): the stream API the tests and later callers use.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn position_ms(&self) -> u64 {
        self.gate.origin_ms + self.pushed * 1000 / u64::from(SAMPLE_RATE)
    }

    /// The model back, its state reset, for another stream.
    pub fn into_vad(mut self) -> SileroVad {
        self.vad.reset();
        self.vad
    }

    /// Whether speech has started and not yet stopped.
    pub fn in_speech(&self) -> bool {
        self.gate.in_speech
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of a probability sequence, with the window index each came at.
    fn run(params: &ServerVad, probabilities: &[f32]) -> Vec<(usize, VadEvent)> {
        let mut gate = Gate::new(params, 0);
        let events = probabilities
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| gate.on_probability(p).map(|e| (i, e)));
        events.collect()
    }

    /// `n` windows of probability `p`.
    fn windows(parts: &[(f32, usize)]) -> Vec<f32> {
        parts.iter().flat_map(|&(p, n)| std::iter::repeat_n(p, n)).collect()
    }

    fn started(ms: u64) -> VadEvent {
        VadEvent::SpeechStarted { audio_start_ms: ms }
    }

    fn stopped(ms: u64) -> VadEvent {
        VadEvent::SpeechStopped { audio_end_ms: ms }
    }

    #[test]
    fn defaults_are_openai_server_vad() {
        let params: ServerVad = serde_json::from_str("{}").unwrap();
        assert_eq!(
            params,
            ServerVad { threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 }
        );
        let params: ServerVad = serde_json::from_str(r#"{"silence_duration_ms": 200}"#).unwrap();
        assert_eq!(params.silence_duration_ms, 200);
        assert_eq!(params.threshold, 0.5);
        assert!(serde_json::from_str::<ServerVad>(r#"{"silence_ms": 200}"#).is_err());
        assert_eq!(WINDOW_MS, 32);
    }

    #[test]
    fn speech_starts_at_the_first_loud_window_minus_the_padding() {
        // 20 quiet windows (640 ms), then speech: it starts at 640 - 300 ms.
        let p = windows(&[(0.1, 20), (0.49, 1), (0.5, 1), (0.9, 5)]);
        assert_eq!(run(&ServerVad::default(), &p), [(21, started(672 - 300))]);
    }

    #[test]
    fn padding_is_clamped_at_the_start_of_the_stream() {
        let p = windows(&[(0.0, 3), (0.8, 2)]);
        assert_eq!(run(&ServerVad::default(), &p), [(3, started(0))]);
        let params = ServerVad { prefix_padding_ms: 0, ..ServerVad::default() };
        assert_eq!(run(&params, &p), [(3, started(96))]);
        // From an origin, the padding may reach back before it, but not below 0.
        let mut gate = Gate::new(&ServerVad::default(), 1000);
        assert_eq!(gate.on_probability(0.9), Some(started(700)));
    }

    #[test]
    fn speech_stops_after_the_silence_duration_at_the_end_of_speech() {
        // Speech in windows 0..10 (0..320 ms); silence from 320 ms. 500 ms of it have passed
        // at the end of window 25 (832 ms): 16 silent windows, the stop comes at window 25.
        let p = windows(&[(0.9, 10), (0.05, 30)]);
        assert_eq!(run(&ServerVad::default(), &p), [(0, started(0)), (25, stopped(320))]);
        let params = ServerVad { silence_duration_ms: 0, ..ServerVad::default() };
        assert_eq!(run(&params, &p), [(0, started(0)), (10, stopped(320))]);
        // 64 ms: exactly two windows.
        let params = ServerVad { silence_duration_ms: 64, ..ServerVad::default() };
        assert_eq!(run(&params, &p), [(0, started(0)), (11, stopped(320))]);
    }

    #[test]
    fn short_pauses_do_not_end_speech() {
        // Pauses of 15 windows (480 ms < 500 ms) inside the utterance, then a long one.
        let p = windows(&[(0.9, 5), (0.0, 15), (0.9, 5), (0.0, 15), (0.9, 2), (0.0, 20)]);
        let events = run(&ServerVad::default(), &p);
        // The last speech window is 41 (ends at 42 * 32 ms); 16 silent windows later, 57.
        assert_eq!(events, [(0, started(0)), (57, stopped(42 * 32))]);
    }

    #[test]
    fn hysteresis_keeps_fading_speech_in() {
        let params = ServerVad::default();
        // 0.4 is below the threshold but above 0.35: still speech, however long it lasts.
        let p = windows(&[(0.9, 3), (0.4, 40), (0.3, 16)]);
        assert_eq!(run(&params, &p), [(0, started(0)), (58, stopped(43 * 32))]);
        // 0.36 does not start speech either: only the threshold does.
        assert_eq!(run(&params, &windows(&[(0.36, 30)])), []);
        // Once silence has begun, windows between the thresholds neither end it nor cancel
        // it (as in VADIterator): the stop still counts from where the silence began...
        let p = windows(&[(0.9, 3), (0.1, 1), (0.4, 14), (0.1, 3)]);
        assert_eq!(run(&params, &p), [(0, started(0)), (18, stopped(96))]);
        // ...but only a silent window ends speech.
        let p = windows(&[(0.9, 3), (0.1, 1), (0.4, 30)]);
        assert_eq!(run(&params, &p), [(0, started(0))]);
        // A window at the threshold cancels the silence: speech goes on from there.
        let p = windows(&[(0.9, 3), (0.1, 10), (0.5, 1), (0.1, 16)]);
        assert_eq!(run(&params, &p), [(0, started(0)), (29, stopped(14 * 32))]);
    }

    #[test]
    fn silence_threshold_is_at_least_001() {
        let params = ServerVad { threshold: 0.1, silence_duration_ms: 32, ..ServerVad::default() };
        // 0.1 - 0.15 < 0: the silence threshold is 0.01, so 0.005 is silence and 0.02 is not.
        assert_eq!(run(&params, &windows(&[(0.2, 1), (0.02, 10)])), [(0, started(0))]);
        let p = windows(&[(0.2, 1), (0.005, 1)]);
        assert_eq!(run(&params, &p), [(0, started(0)), (1, stopped(32))]);
    }

    #[test]
    fn speech_after_a_stop_starts_again() {
        let p = windows(&[(0.9, 2), (0.0, 16), (0.0, 4), (0.9, 1)]);
        let events = run(&ServerVad::default(), &p);
        assert_eq!(events, [(0, started(0)), (17, stopped(64)), (22, started(22 * 32 - 300))]);
    }

    #[test]
    fn ending_speech_without_an_event_keeps_the_position() {
        let mut gate = Gate::new(&ServerVad::default(), 0);
        assert_eq!(gate.on_probability(0.9), Some(started(0)));
        gate.end_speech();
        assert!(!gate.in_speech);
        assert_eq!(gate.on_probability(0.9), Some(started(0)));
        assert_eq!(gate.position_ms, 64);
        gate.reset();
        assert_eq!((gate.position_ms, gate.in_speech, gate.speech_start_ms), (0, false, 0));
    }
}
