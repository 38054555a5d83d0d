//! # Voice profiles from a recording: the S3 speech tokenizer and CAM++ on ONNX Runtime
//!
//! The official token2wav release ships two ONNX models next to `flow.pt` and `hift.pt`:
//!
//! | file | model | input | output |
//! |---|---|---|---|
//! | `speech_tokenizer_v2_25hz.onnx` | S3 tokenizer v2 (Whisper-style encoder + FSQ) | log-mel `[1, 128, T]` f32, length `[T]` i32 | 25-Hz speech tokens `[1, ⌈T/4⌉]` |
//! | `campplus.onnx` | CAM++ speaker verification | fbank minus its mean `[1, frames, 80]` f32 | x-vector `[1, 192]` f32 |
//!
//! [`ProfileExtractor`] runs both on a checked [`PromptAudio`] and, with the prompt mel computed
//! in [`crate::prompt`], makes a [`VoiceProfile`] as upstream's `Token2wav._prepare_prompt`
//! does:
//!
//! - tokens: Whisper's 128-bin log-mel of the 16 kHz samples (channel 0) **without** the 479
//!   samples of padding Step-Audio 2's own encoder front end appends
//!   ([`log_mel_spectrogram_padded`] with 0), fed to the tokenizer the way CosyVoice's front end
//!   feeds it (`inputs[0]` = mel, `inputs[1]` = frame count);
//! - speaker embedding: [`speaker_fbank`] (Kaldi fbank of the same samples minus its time mean)
//!   through CAM++;
//! - prompt mel: [`prompt_mel`] of the 24 kHz channel mean, fitted to 2 frames per token by
//!   [`VoiceProfile::new`].
//!
//! Models are addressed by input position, not by name, as upstream does: the official files
//! name their inputs differently from re-exports.
//!
//! ## ONNX Runtime
//!
//! voxloop does not link ONNX Runtime: [`onnx_runtime`] loads its shared library at run time
//! (the `ort` crate's load-dynamic mode), once per process, from the path given, else from
//! `ORT_DYLIB_PATH`. `scripts/onnxruntime.sh` fetches the library from the PyPI `onnxruntime`
//! wheel into `.cache/` (the Makefile exports `ORT_DYLIB_PATH`). Without it, profiles can still
//! be imported precomputed ([`VoiceProfile::from_file`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor as OrtTensor, TensorElementType, ValueType};
use tch::Tensor;
use voxloop_core::audio::{log_mel_spectrogram_padded, N_MELS};

use crate::profile::{VoiceProfile, SPEAKER_DIM};
use crate::prompt::{prompt_mel, speaker_fbank, PromptAudio, FBANK_BINS};
use crate::{Error, Result};

/// The S3 tokenizer's file name in a token2wav directory.
pub const TOKENIZER_FILE: &str = "speech_tokenizer_v2_25hz.onnx";
/// The CAM++ model's file name in a token2wav directory.
pub const SPEAKER_MODEL_FILE: &str = "campplus.onnx";
/// The environment variable naming ONNX Runtime's shared library.
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";
/// Speech tokens of the S3 tokenizer (`3^8`, the FSQ codebook).
pub const SPEECH_CODEBOOK: i64 = 6561;

static RUNTIME: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// ONNX Runtime, loaded on first use from `library` (else `$ORT_DYLIB_PATH`).
///
/// A process loads one library: later calls return the first one whatever path they name (the
/// path it came from is in [`ProfileExtractor::runtime_library`]). A failed first load is
/// reported again on every call.
pub fn onnx_runtime(library: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    let loaded = RUNTIME.get_or_init(|| {
        let path = match library {
            Some(path) => path.to_path_buf(),
            None => match std::env::var_os(ORT_LIBRARY_ENV) {
                Some(path) if !path.is_empty() => PathBuf::from(path),
                _ => {
                    return Err(format!(
                        "ONNX Runtime is not configured: set {ORT_LIBRARY_ENV} to its shared \
                         library (scripts/onnxruntime.sh fetches one into .cache/)"
                    ))
                }
            },
        };
        // ort resolves relative paths against the executable's directory: be explicit.
        let path = std::path::absolute(&path).unwrap_or(path);
        if !path.is_file() {
            return Err(format!("ONNX Runtime library {} does not exist", path.display()));
        }
        let environment = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("voxloop")
            .build()
            .map_err(|e| format!("ONNX Runtime from {}: {e}", path.display()))?;
        Ok((path, environment))
    });
    match loaded {
        Ok((_, environment)) => Ok(environment),
        Err(message) => Err(Error::OnnxRuntime(message.clone())),
    }
}

/// Computes [`VoiceProfile`]s from recordings with the release's two ONNX models.
///
/// The sessions are behind mutexes (ONNX Runtime's `Run` takes the session mutably in `ort`), so
/// one extractor serves many threads, one profile at a time per model. Runs are blocking CPU
/// work: call them from a blocking thread, not from an async executor.
pub struct ProfileExtractor {
    tokenizer: Mutex<Session>,
    speaker: Mutex<Session>,
    tokenizer_file: PathBuf,
    speaker_file: PathBuf,
}

impl std::fmt::Debug for ProfileExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileExtractor")
            .field("tokenizer_file", &self.tokenizer_file)
            .field("speaker_file", &self.speaker_file)
            .finish()
    }
}

impl ProfileExtractor {
    /// Loads `speech_tokenizer_v2_25hz.onnx` and `campplus.onnx` from a token2wav directory.
    pub fn from_dir(token2wav_dir: &Path, options: &ExtractorOptions) -> Result<Self> {
        Self::load(
            &token2wav_dir.join(TOKENIZER_FILE),
            &token2wav_dir.join(SPEAKER_MODEL_FILE),
            options,
        )
    }

    /// Loads the two models from their files and checks that their inputs and outputs have
    /// the kinds and ranks described in the module docs.
    pub fn load(
        tokenizer_file: &Path,
        speaker_file: &Path,
        options: &ExtractorOptions,
    ) -> Result<Self> {
        let environment = onnx_runtime(options.runtime_library.as_deref())?;
        let tokenizer = open_session(environment, tokenizer_file, options.threads)?;
        check_signature(
            &tokenizer,
            tokenizer_file,
            &[(TensorElementType::Float32, 3), (TensorElementType::Int32, 1)],
            &[TensorElementType::Int64, TensorElementType::Int32],
        )?;
        let speaker = open_session(environment, speaker_file, options.threads)?;
        check_signature(
            &speaker,
            speaker_file,
            &[(TensorElementType::Float32, 3)],
            &[TensorElementType::Float32],
        )?;
        Ok(Self {
            tokenizer: Mutex::new(tokenizer),
            speaker: Mutex::new(speaker),
            tokenizer_file: tokenizer_file.to_path_buf(),
            speaker_file: speaker_file.to_path_buf(),
        })
    }

    /// The shared library ONNX Runtime was loaded from.
    pub fn runtime_library() -> Option<&'static Path> {
        match RUNTIME.get() {
            Some(Ok((path, _))) => Some(path.as_path()),
            _ => None,
        }
    }

    /// The 25-Hz speech tokens of a prompt.
    pub fn speech_tokens(&self, audio: &PromptAudio) -> Result<Vec<i64>> {
        let mel = log_mel_spectrogram_padded(audio.samples_16k(), 0)?;
        self.tokens_of_mel(&mel)
    }

    /// The tokenizer on a Whisper log-mel `[128, T]` (CPU f32).
    pub fn tokens_of_mel(&self, mel: &Tensor) -> Result<Vec<i64>> {
        let size = mel.size();
        if size.len() != 2 || size[0] != N_MELS as i64 || size[1] < 1 {
            return Err(Error::InvalidInput(format!(
                "speech tokenizer input: expected a log-mel [{N_MELS}, frames], got {size:?}"
            )));
        }
        let frames = size[1];
        let values = tensor_values(mel)?;
        let onnx = |e: ort::Error| model_error(&self.tokenizer_file, e);
        let feats = OrtTensor::from_array(([1, N_MELS as i64, frames], values)).map_err(onnx)?;
        let frame_count = i32::try_from(frames).map_err(|_| {
            Error::InvalidInput(format!("speech tokenizer input: {frames} frames is too many"))
        })?;
        let lengths = OrtTensor::from_array(([1i64], vec![frame_count])).map_err(onnx)?;
        let mut session = lock(&self.tokenizer, &self.tokenizer_file)?;
        let outputs = session.run(ort::inputs![feats, lengths]).map_err(onnx)?;
        let output = &outputs[0];
        let tokens: Vec<i64> = match output.try_extract_tensor::<i64>() {
            Ok((_, data)) => data.to_vec(),
            Err(_) => {
                let (_, data) = output.try_extract_tensor::<i32>().map_err(onnx)?;
                data.iter().map(|&t| i64::from(t)).collect()
            }
        };
        if tokens.is_empty() {
            return Err(model_error(&self.tokenizer_file, "produced no speech tokens"));
        }
        if let Some(bad) = tokens.iter().find(|&&t| !(0..SPEECH_CODEBOOK).contains(&t)) {
            return Err(model_error(
                &self.tokenizer_file,
                format!("produced token {bad}, outside the {SPEECH_CODEBOOK}-code codebook"),
            ));
        }
        Ok(tokens)
    }

    /// The 192-d CAM++ x-vector of a prompt.
    pub fn speaker_embedding(&self, audio: &PromptAudio) -> Result<Vec<f32>> {
        let features = speaker_fbank(audio)?;
        self.embedding_of_fbank(&features)
    }

    /// CAM++ on mean-normalised fbank features `[frames, 80]` (CPU f32).
    pub fn embedding_of_fbank(&self, features: &Tensor) -> Result<Vec<f32>> {
        let size = features.size();
        if size.len() != 2 || size[1] != FBANK_BINS as i64 || size[0] < 1 {
            return Err(Error::InvalidInput(format!(
                "speaker model input: expected fbank [frames, {FBANK_BINS}], got {size:?}"
            )));
        }
        let values = tensor_values(features)?;
        let onnx = |e: ort::Error| model_error(&self.speaker_file, e);
        let input =
            OrtTensor::from_array(([1, size[0], FBANK_BINS as i64], values)).map_err(onnx)?;
        let mut session = lock(&self.speaker, &self.speaker_file)?;
        let outputs = session.run(ort::inputs![input]).map_err(onnx)?;
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(onnx)?;
        if data.len() != SPEAKER_DIM {
            return Err(model_error(
                &self.speaker_file,
                format!("produced {} values, a speaker embedding has {SPEAKER_DIM}", data.len()),
            ));
        }
        Ok(data.to_vec())
    }

    /// A profile named `name` from a checked prompt recording: tokens, prompt mel and speaker
    /// embedding, with the recording's path (when it came from a file) as `source_wav`.
    pub fn profile(&self, name: &str, audio: &PromptAudio) -> Result<VoiceProfile> {
        let tokens = self.speech_tokens(audio)?;
        let embedding = self.speaker_embedding(audio)?;
        let mel = prompt_mel(audio)?;
        let mut profile = VoiceProfile::new(name, tokens, mel, embedding)?;
        let source = Path::new(audio.name());
        if source.is_file() {
            profile.source_wav = Some(std::path::absolute(source).unwrap_or(source.to_path_buf()));
        }
        Ok(profile)
    }

    /// [`PromptAudio::load`] then [`ProfileExtractor::profile`].
    pub fn profile_from_file(&self, name: &str, wav: &Path) -> Result<VoiceProfile> {
        self.profile(name, &PromptAudio::load(wav)?)
    }
}

/// An [`Error::Onnx`] about `file`.
fn model_error(file: &Path, message: impl std::fmt::Display) -> Error {
    Error::Onnx { file: file.to_path_buf(), message: message.to_string() }
}

/// How a [`ProfileExtractor`] runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractorOptions {
    /// ONNX Runtime's shared library; `None`: `$ORT_DYLIB_PATH`.
    pub runtime_library: Option<PathBuf>,
    /// Intra-op threads per model; `None`: ONNX Runtime's default (one per core).
    pub threads: Option<usize>,
}

fn open_session(
    environment: &ort::environment::Environment,
    file: &Path,
    threads: Option<usize>,
) -> Result<Session> {
    if !file.is_file() {
        return Err(model_error(
            file,
            "no such model file (the token2wav directory of the release has it)",
        ));
    }
    let onnx = |e: ort::Error| model_error(file, e);
    let mut builder = Session::builder(environment)
        .map_err(onnx)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| onnx(e.into()))?;
    if let Some(threads) = threads {
        builder = builder.with_intra_threads(threads).map_err(|e| onnx(e.into()))?;
    }
    builder.commit_from_file(file).map_err(onnx)
}

/// Checks input element types and ranks (in order) and the first output's element type.
fn check_signature(
    session: &Session,
    file: &Path,
    inputs: &[(TensorElementType, usize)],
    first_output: &[TensorElementType],
) -> Result<()> {
    let wrong = |message: String| model_error(file, message);
    if session.inputs().len() != inputs.len() {
        return Err(wrong(format!(
            "the model takes {} inputs, expected {}",
            session.inputs().len(),
            inputs.len()
        )));
    }
    for (i, (outlet, (kind, rank))) in session.inputs().iter().zip(inputs).enumerate() {
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } if ty == kind && shape.len() == *rank => {}
            other => {
                return Err(wrong(format!(
                    "input {i} ({}) is {other:?}, expected a rank-{rank} {kind:?} tensor",
                    outlet.name()
                )))
            }
        }
    }
    match session.outputs().first().map(|o| o.dtype()) {
        Some(ValueType::Tensor { ty, .. }) if first_output.contains(ty) => Ok(()),
        other => Err(wrong(format!("first output is {other:?}, expected one of {first_output:?}"))),
    }
}

fn tensor_values(tensor: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(tensor.f_to_kind(tch::Kind::Float)?.f_contiguous()?.f_view([-1])?)?)
}

fn lock<'a>(
    session: &'a Mutex<Session>,
    file: &Path,
) -> Result<std::sync::MutexGuard<'a, Session>> {
    session
        .lock()
        .map_err(|_| model_error(file, "an earlier run panicked while holding the session"))
}
