//! Silero VAD: the probability that a 32-ms window of 16 kHz audio holds speech.
//!
//! The model is `silero_vad.onnx` from the `silero-vad` package (snakers4/silero-vad; the
//! wheel ships it under `silero_vad/data/`; `scripts/silero_vad.sh` takes it out into
//! `.cache/`). It is a small recurrent network, run here on the ONNX Runtime that the voice
//! profiles load ([`voxloop_voices::extract::onnx_runtime`]), the way upstream's own ONNX
//! wrapper runs it (`OnnxWrapper` in `src/silero_vad/utils_vad.py` of that repository):
//!
//! | input | shape | what |
//! |---|---|---|
//! | `input` | `[1, 576]` f32 | the last 64 samples of the previous window, then the 512 new ones |
//! | `state` | `[2, 1, 128]` f32 | the recurrent state of the previous call (zeros at first) |
//! | `sr` | scalar i64 | the sample rate, 16000 |
//!
//! and it answers the speech probability `[1, 1]` and the next state `[2, 1, 128]`. Both the
//! state and the 64 samples of context carry from one window to the next, so a [`SileroVad`]
//! is a stream: one per audio stream, fed its windows in order. The model also takes 8 kHz
//! audio (256-sample windows, 32 of context); voxloop resamples everything to 16 kHz and uses
//! the 16 kHz path only.
//!
//! Parity with upstream: the tests below run the committed fixture
//! (`tests/fixtures/silero_vad/`, made by `scripts/fixtures/silero_vad.py` with upstream's
//! `OnnxWrapper.audio_forward`) window by window and compare every probability.

use std::path::{Path, PathBuf};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};

/// Samples per window at 16 kHz (32 ms): the only window length the 16 kHz model takes.
pub const WINDOW: usize = 512;
/// The sample rate [`SileroVad`] runs at.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples of the previous window put in front of each new one (upstream's 16 kHz context).
const CONTEXT: usize = 64;
/// Values in the recurrent state `[2, 1, 128]`.
const STATE_LEN: usize = 2 * 128;

/// What can go wrong loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// ONNX Runtime's shared library could not be loaded.
    #[error("Silero VAD needs ONNX Runtime: {0}")]
    Runtime(String),
    /// The model file is missing, is not the Silero VAD model, or a run failed.
    #[error("Silero VAD model {}: {message}", file.display())]
    Model { file: PathBuf, message: String },
    /// A window of the wrong length.
    #[error("Silero VAD takes windows of exactly {WINDOW} samples at 16 kHz, got {got}")]
    WindowLength { got: usize },
    /// A sample that is NaN or infinite (it would poison the recurrent state for good).
    #[error("Silero VAD input sample {index} is not a finite number")]
    NonFinite { index: usize },
}

/// Silero VAD over one stream of 16 kHz audio; see the module docs.
///
/// Runs are blocking CPU work (about 0.15 ms a 32-ms window on one core): call them
/// from a blocking thread, not from an async executor.
pub struct SileroVad {
    session: Session,
    file: PathBuf,
    /// The model's `input`: [`CONTEXT`] samples carried over, then the current window.
    input: Vec<f32>,
    /// The model's `state`, as the last run returned it.
    state: Vec<f32>,
    /// The model's `sr`, made once.
    sample_rate: Tensor<i64>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").field("file", &self.file).finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Loads `silero_vad.onnx` on ONNX Runtime (from `onnx_library`, else `$ORT_DYLIB_PATH`;
    /// a process loads one library, see [`voxloop_voices::extract::onnx_runtime`]) and checks
    /// that its inputs and outputs are the ones in the module docs.
    ///
    /// The session uses one intra-op thread, as upstream's wrapper does: the model is tiny, so
    /// more threads only add hand-off cost, and the service runs one detector per connection
    /// side by side, where a per-session pool sized to the cores would oversubscribe them.
    pub fn load(model: &Path, onnx_library: Option<&Path>) -> Result<Self, VadError> {
        let file = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
        let fail = |message: String| VadError::Model { file: file.clone(), message };
        if !file.is_file() {
            return Err(fail(
                "no such file (scripts/silero_vad.sh fetches it; VOXLOOP_SILERO_VAD or \
                 [realtime] vad_model names it)"
                    .into(),
            ));
        }
        let environment = voxloop_voices::extract::onnx_runtime(onnx_library)
            .map_err(|e| VadError::Runtime(e.to_string()))?;
        let onnx = |e: ort::Error| fail(e.to_string());
        let session = Session::builder(environment)
            .map_err(onnx)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| onnx(e.into()))?
            .with_intra_threads(1)
            .map_err(|e| onnx(e.into()))?
            .commit_from_file(&file)
            .map_err(onnx)?;
        check_signature(&session).map_err(fail)?;
        let sample_rate = Tensor::from_array(((), vec![i64::from(SAMPLE_RATE)])).map_err(onnx)?;
        Ok(Self {
            session,
            file,
            input: vec![0.0; CONTEXT + WINDOW],
            state: vec![0.0; STATE_LEN],
            sample_rate,
        })
    }

    /// The speech probability of the next window: exactly [`WINDOW`] samples at 16 kHz,
    /// nominally in [-1, 1]. Carries the state and the last 64 samples on to the next call; a
    /// failed call changes neither.
    pub fn probability(&mut self, window: &[f32]) -> Result<f32, VadError> {
        check_window(window)?;
        self.input[CONTEXT..].copy_from_slice(window);
        let fail = |message: String| VadError::Model { file: self.file.clone(), message };
        let onnx = |e: ort::Error| fail(e.to_string());
        let input = TensorRef::from_array_view(([1usize, CONTEXT + WINDOW], &self.input[..]))
            .map_err(onnx)?;
        let state =
            TensorRef::from_array_view(([2usize, 1, 128], &self.state[..])).map_err(onnx)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "state" => state, "sr" => &self.sample_rate])
            .map_err(onnx)?;
        // check_signature made sure there are two outputs: the probability, then the state.
        let (_, probability) = outputs[0].try_extract_tensor::<f32>().map_err(onnx)?;
        let (_, next_state) = outputs[1].try_extract_tensor::<f32>().map_err(onnx)?;
        let probability = match (probability, next_state.len()) {
            (&[p], STATE_LEN) => p,
            _ => {
                return Err(fail(format!(
                    "answered {} probabilities and {} state values, expected 1 and {STATE_LEN}",
                    probability.len(),
                    next_state.len()
                )))
            }
        };
        self.state.copy_from_slice(next_state);
        // The window's last 64 samples are the next window's context.
        self.input.copy_within(WINDOW.., 0);
        Ok(probability)
    }

    /// Forgets the stream: zero state and context, as at load.
    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }
}

/// A window's length and values.
fn check_window(window: &[f32]) -> Result<(), VadError> {
    if window.len() != WINDOW {
        return Err(VadError::WindowLength { got: window.len() });
    }
    match window.iter().position(|s| !s.is_finite()) {
        Some(index) => Err(VadError::NonFinite { index }),
        None => Ok(()),
    }
}

/// The inputs `input` (rank-2 f32), `state` (rank-3 f32) and `sr` (i64 scalar), and two f32
/// outputs, as `silero_vad.onnx` has them. Inputs are passed by name, as upstream does.
fn check_signature(session: &Session) -> Result<(), String> {
    let expected = [
        ("input", TensorElementType::Float32, 2),
        ("state", TensorElementType::Float32, 3),
        ("sr", TensorElementType::Int64, 0),
    ];
    let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    if names.len() != expected.len() {
        return Err(format!(
            "the model takes the inputs {names:?}, not Silero VAD's [\"input\", \"state\", \"sr\"]"
        ));
    }
    for (name, kind, rank) in expected {
        let Some(outlet) = session.inputs().iter().find(|i| i.name() == name) else {
            return Err(format!("the model has no input `{name}` (its inputs: {names:?})"));
        };
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } if *ty == kind && shape.len() == rank => {}
            other => {
                return Err(format!(
                    "input `{name}` is {other:?}, expected a rank-{rank} {kind:?} tensor"
                ))
            }
        }
    }
    let outputs = session.outputs();
    let float = |i: usize| {
        matches!(
            outputs.get(i).map(|o| o.dtype()),
            Some(ValueType::Tensor { ty: TensorElementType::Float32, .. })
        )
    };
    if outputs.len() != 2 || !float(0) || !float(1) {
        return Err(format!(
            "the model has {} outputs, expected two f32 tensors (probability, state)",
            outputs.len()
        ));
    }
    Ok(())
}

/// Loaded models waiting for a stream: loading one takes an ONNX Runtime session (tens of
/// milliseconds, more when many connections open at once), so a connection that closes gives
/// its model back for the next. Holds at most `max` models.
#[derive(Debug)]
pub struct VadPool {
    idle: std::sync::Mutex<Vec<SileroVad>>,
    max: usize,
}

impl VadPool {
    pub fn new(max: usize) -> Self {
        Self { idle: std::sync::Mutex::new(Vec::new()), max }
    }

    /// An idle model of `model`'s file, else a new one loaded (blocking: call it on a blocking
    /// thread).
    pub fn take(&self, model: &Path, onnx_library: Option<&Path>) -> Result<SileroVad, VadError> {
        let file = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            idle.iter().position(|v| v.file == file).map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(vad) => Ok(vad),
            None => SileroVad::load(model, onnx_library),
        }
    }

    /// Gives `vad` back (its state reset).
    pub fn give_back(&self, mut vad: SileroVad) {
        vad.reset();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max {
            idle.push(vad);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::Value;

    use super::*;
    use crate::realtime::detect::{ServerVad, TurnDetector, VadEvent};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/silero_vad").join(name)
    }

    /// The model from `VOXLOOP_SILERO_VAD` on the ONNX Runtime of `ORT_DYLIB_PATH`, or `None`
    /// (the test is skipped, saying so) when either is unset — unless
    /// `VOXLOOP_REQUIRE_MODELS=1` (as `make test` sets), where that fails the test.
    fn vad() -> Option<SileroVad> {
        let require = std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() == Ok("1");
        for var in ["VOXLOOP_SILERO_VAD", "ORT_DYLIB_PATH"] {
            if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                assert!(
                    !require,
                    "VOXLOOP_REQUIRE_MODELS=1 but {var} is not set (scripts/silero_vad.sh \
                     and scripts/onnxruntime.sh fetch the model and the library)"
                );
                eprintln!("skipped: {var} is not set (see scripts/silero_vad.sh)");
                return None;
            }
        }
        let model = PathBuf::from(std::env::var_os("VOXLOOP_SILERO_VAD")?);
        Some(SileroVad::load(&model, None).unwrap())
    }

    fn reference() -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap()
    }

    /// speech.wav as f32 in [-1, 1) (int16 / 32768, as the fixture script computes it).
    fn speech() -> Vec<f32> {
        let mut reader = hound::WavReader::open(fixture("speech.wav")).unwrap();
        let spec = reader.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (1, SAMPLE_RATE, 16));
        reader.samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect()
    }

    fn reference_probabilities(reference: &Value) -> Vec<f32> {
        let values = reference["probabilities"].as_array().unwrap();
        values.iter().map(|p| p.as_f64().unwrap() as f32).collect()
    }

    fn u64_at(value: &Value, pointer: &str) -> u64 {
        value.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no {pointer}"))
    }

    #[test]
    fn window_must_be_512_finite_samples() {
        let message = check_window(&[0.0; 480]).unwrap_err().to_string();
        assert_eq!(message, "Silero VAD takes windows of exactly 512 samples at 16 kHz, got 480");
        assert!(matches!(check_window(&[]), Err(VadError::WindowLength { got: 0 })));
        let mut window = [0.0; WINDOW];
        window[7] = f32::NAN;
        assert!(matches!(check_window(&window), Err(VadError::NonFinite { index: 7 })));
        assert!(check_window(&[0.25; WINDOW]).is_ok());
    }

    #[test]
    fn missing_model_file_is_named() {
        let error = SileroVad::load(Path::new("/nonexistent/silero_vad.onnx"), None).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/nonexistent/silero_vad.onnx"), "{message}");
        assert!(message.contains("no such file"), "{message}");
    }

    #[test]
    fn wrong_window_is_an_error_and_changes_nothing() {
        let Some(mut vad) = vad() else { return };
        let samples = speech();
        let first = vad.probability(&samples[..WINDOW]).unwrap();
        let error = vad.probability(&samples[WINDOW..2 * WINDOW + 1]).unwrap_err();
        assert!(matches!(error, VadError::WindowLength { got: 513 }), "{error}");
        // The refused window left the stream as it was: the next probability is upstream's.
        let second = vad.probability(&samples[WINDOW..2 * WINDOW]).unwrap();
        let expected = reference_probabilities(&reference());
        assert!((first - expected[0]).abs() < 1e-4 && (second - expected[1]).abs() < 1e-4);
    }

    #[test]
    fn not_a_model_is_a_clear_error() {
        if vad().is_none() {
            return;
        }
        let error = SileroVad::load(&fixture("speech.wav"), None).unwrap_err().to_string();
        assert!(error.starts_with("Silero VAD model ") && error.contains("speech.wav"), "{error}");
    }

    #[test]
    fn parity_probabilities_match_upstream_onnx_wrapper() {
        let Some(mut vad) = vad() else { return };
        let reference = reference();
        let expected = reference_probabilities(&reference);
        let samples = speech();
        assert_eq!(samples.len() as u64, u64_at(&reference, "/samples"));
        assert_eq!(samples.len(), expected.len() * WINDOW, "the fixture is whole windows");
        let run = |vad: &mut SileroVad| -> Vec<f32> {
            samples.chunks(WINDOW).map(|w| vad.probability(w).unwrap()).collect()
        };
        let got = run(&mut vad);
        let mut worst = (0.0f32, 0);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            if (g - e).abs() > worst.0 {
                worst = ((g - e).abs(), i);
            }
        }
        eprintln!("Silero VAD parity: max |Δp| = {:.3e} at window {}", worst.0, worst.1);
        assert!(
            worst.0 < 1e-4,
            "window {}: {} vs upstream {}",
            worst.1,
            got[worst.1],
            expected[worst.1]
        );
        // The fixture has speech and silence, so this compared something.
        assert!(expected.iter().any(|&p| p > 0.9) && expected.iter().any(|&p| p < 0.05));
        // reset() starts the stream over: the same run gives the same numbers, bit for bit.
        vad.reset();
        assert_eq!(run(&mut vad), got);
    }

    #[test]
    fn parity_turn_detector_on_the_fixture() {
        let Some(vad) = vad() else { return };
        let reference = reference();
        let samples = speech();
        let iterator = &reference["vad_iterator"];
        let pad_ms = u64_at(iterator, "/speech_pad_ms");
        let params = ServerVad {
            threshold: iterator["threshold"].as_f64().unwrap() as f32,
            prefix_padding_ms: pad_ms as u32,
            silence_duration_ms: u64_at(iterator, "/min_silence_duration_ms") as u32,
        };
        assert_eq!(params, ServerVad::default(), "the fixture uses server_vad's defaults");
        let ms = |sample: u64| sample * 1000 / u64::from(SAMPLE_RATE);
        let window_ms = ms(WINDOW as u64);
        let events = iterator["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["event"], "start");
        assert_eq!(events[1]["event"], "end");
        let upstream_start = ms(u64_at(&events[0], "/sample"));
        // VADIterator pads the end too; server_vad's audio_end_ms is the end of speech itself.
        let upstream_end = ms(u64_at(&events[1], "/sample")) - pad_ms;
        let upstream_stop_seen = ms(u64_at(&events[1], "/emitted_at_sample"));
        let utterance_start = ms(u64_at(&reference, "/utterance/start_sample"));
        let utterance_end = ms(u64_at(&reference, "/utterance/end_sample"));

        // Window by window, noting where each event came.
        let mut detector = TurnDetector::new(vad, params);
        let mut seen = Vec::new();
        for window in samples.chunks(WINDOW) {
            for event in detector.push(window).unwrap() {
                seen.push((event, detector.position_ms()));
            }
        }
        use VadEvent::{SpeechStarted as Started, SpeechStopped as Stopped};
        let (audio_start_ms, audio_end_ms, stop_seen) = match seen[..] {
            [(Started { audio_start_ms }, _), (Stopped { audio_end_ms }, at)] => {
                (audio_start_ms, audio_end_ms, at)
            }
            _ => panic!("expected one start and one stop, got {seen:?}"),
        };
        eprintln!(
            "turn detector: start {audio_start_ms} ms (upstream {upstream_start}), end \
             {audio_end_ms} ms (upstream {upstream_end}), stop seen at {stop_seen} ms (upstream \
             {upstream_stop_seen}); utterance {utterance_start}..{utterance_end} ms"
        );
        assert!(audio_start_ms < utterance_start && audio_end_ms > utterance_end);
        assert!(audio_start_ms.abs_diff(upstream_start) <= window_ms);
        assert!(audio_end_ms.abs_diff(upstream_end) <= window_ms);
        // VADIterator counts the silence from the end of the first silent window, server_vad
        // from the end of speech: the stop comes one window sooner here.
        assert_eq!(stop_seen + window_ms, upstream_stop_seen);
        assert!(!detector.in_speech());

        // Chunks of any length (here 10 ms at a time, and a few odd sizes) give the same events.
        let expected: Vec<VadEvent> = seen.iter().map(|(e, _)| *e).collect();
        for chunk in [160, 1000, 7919] {
            detector.reset();
            assert_eq!(detector.position_ms(), 0);
            let mut events = Vec::new();
            for piece in samples.chunks(chunk) {
                events.extend(detector.push(piece).unwrap());
            }
            assert_eq!(events, expected, "chunks of {chunk}");
            assert_eq!(detector.position_ms(), ms(samples.len() as u64));
        }

        // A bad sample is refused whole: nothing of that push is consumed.
        detector.reset();
        detector.push(&samples[..100]).unwrap();
        let mut bad = samples[100..2000].to_vec();
        bad[1500] = f32::INFINITY;
        let error = detector.push(&bad).unwrap_err();
        assert!(matches!(error, VadError::NonFinite { index: 1500 }), "{error}");
        assert_eq!(detector.position_ms(), ms(100));
        assert_eq!(detector.push(&samples[100..]).unwrap(), expected);
    }

    /// The cost of one window (one core): `cargo test --bin voxloop realtime::vad -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_per_window() {
        let Some(mut vad) = vad() else { return };
        let samples = speech();
        let windows: Vec<&[f32]> = samples.chunks(WINDOW).collect();
        for window in &windows {
            vad.probability(window).unwrap();
        }
        let rounds = 20;
        let started = Instant::now();
        for _ in 0..rounds {
            vad.reset();
            for window in &windows {
                vad.probability(window).unwrap();
            }
        }
        let per_window = started.elapsed() / (rounds * windows.len()) as u32;
        eprintln!(
            "Silero VAD: {per_window:?} per {WINDOW}-sample window (32 ms of audio), {:.0}x real \
             time on one thread",
            0.032 / per_window.as_secs_f64()
        );
    }
}
