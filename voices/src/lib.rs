//! # voxloop-voices
//!
//! token2wav (flow matching + HiFT) on tch, voice profiles, the voice library and the
//! per-session current voice that voice swap changes. Implements core's speech sink.
//!
//! Step-Audio 2 speaks in CosyVoice-2 speech tokens (25 Hz, 6561 codes). [`Token2Wav`] turns
//! them into 24 kHz audio in the timbre of a [`VoiceProfile`], reading the official
//! `token2wav/` directory unchanged (`flow.yaml`, `flow.pt`, `hift.pt`):
//!
//! - [`flow`]: the token → mel model (`CausalMaskedDiffWithXvec`: token embedding,
//!   `UpsampleConformerEncoderV2`, projection, speaker affine, conditional flow matching with a
//!   DiT estimator, 10 Euler steps on a cosine schedule, classifier-free guidance 0.7);
//! - [`hift`]: the mel → waveform vocoder (`HiFTGenerator`: NSF source + iSTFTNet);
//! - [`checkpoint`]: reading PyTorch `torch.save` state dicts and checking them tensor by tensor;
//! - [`config`]: `flow.yaml` read as data and the HiFT hyper-parameters;
//! - [`prompt`]: a voice's prompt recording (loaded and checked) and the prompt mel and CAM++
//!   fbank computed from it as upstream's `Token2wav._prepare_prompt` does;
//! - [`extract`]: profiles computed from a recording with the release's ONNX models (S3
//!   tokenizer, CAM++) on ONNX Runtime, loaded at run time;
//! - [`library`]: named profiles cached on disk, the default voices, their `timbre` items in
//!   the audio index;
//! - [`swap`]: the per-session current voice, voice swap by description, and the stream that
//!   follows a swap at the next chunk boundary.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

pub mod checkpoint;
pub mod config;
pub mod extract;
pub mod flow;
pub mod hift;
pub mod library;
mod nn;
pub mod noise;
pub mod profile;
pub mod prompt;
pub mod setup_cache;
pub mod speak;
pub mod swap;
pub mod token2wav;

pub use extract::{ExtractorOptions, ProfileExtractor};
pub use library::{DefaultVoice, VoiceLibrary};
pub use profile::VoiceProfile;
pub use setup_cache::SetupCacheStats;
pub use swap::{SessionVoice, SwapOutcome, VoiceStream, VoiceSwapper};
pub use token2wav::{Token2Wav, Token2WavStream};

use std::path::PathBuf;

/// Everything that can go wrong in `voxloop-voices`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
    /// An error raised inside libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file that could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    /// A file that is not a PyTorch state dict (`torch.save` zip/pickle of named tensors).
    #[error("{}: not a PyTorch state dict saved with torch.save: {message}", path.display())]
    StateDict { path: PathBuf, message: String },
    /// A tensor the model needs that the state dict does not hold.
    #[error("{} lacks tensor {name}", file.display())]
    MissingTensor { name: String, file: PathBuf },
    /// State-dict tensors that are no parameter of the model (a different config or file).
    #[error("tensor {name} in {} is not a parameter of the model ({others} other unexpected tensors)", file.display())]
    UnexpectedTensor { name: String, file: PathBuf, others: usize },
    /// A state-dict tensor whose shape differs from the parameter's.
    #[error("tensor {name} in {}: the model expects shape {expected:?}, the file holds {found:?}", file.display())]
    TensorShape { name: String, file: PathBuf, expected: Vec<i64>, found: Vec<i64> },
    /// A `flow.yaml` (or other config) that is malformed, lacks a field or asks for something
    /// this implementation does not support.
    #[error("config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// Speech tokens token2wav cannot render (out of the codebook, or none at all).
    #[error("speech tokens: {0}")]
    InvalidTokens(String),
    /// A voice profile that is inconsistent or cannot be read.
    #[error("voice profile {name}: {message}")]
    Profile { name: String, message: String },
    /// A call that breaks an API contract (wrong tensor shape, stream used after its end).
    #[error("{0}")]
    InvalidInput(String),
    /// A prompt recording a voice profile cannot be built from: not decodable audio, silent,
    /// too short or too long ([`prompt`] documents the limits).
    #[error("prompt audio {input}: {message}")]
    PromptAudio { input: String, message: String },
    /// An error from the audio index (voice search, registering voices).
    #[error(transparent)]
    Retrieval(voxloop_retrieval::Error),
    /// ONNX Runtime could not be loaded (no library configured, a wrong file, too old).
    #[error("{0}")]
    OnnxRuntime(String),
    /// An ONNX model (S3 tokenizer, CAM++) that cannot be loaded, has the wrong inputs or
    /// outputs, or fails to run.
    #[error("ONNX model {}: {message}", file.display())]
    Onnx { file: PathBuf, message: String },
    /// No voice of the library answers a voice-swap request.
    #[error("no voice for {query:?}: {message}")]
    VoiceNotFound { query: String, message: String },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
