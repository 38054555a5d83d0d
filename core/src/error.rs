//! The one error type of `voxloop-core`.

/// Everything that can go wrong in `voxloop-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device string that is neither `cpu`, `cuda`, `cuda:N` nor `auto`.
    #[error("invalid device {0:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")]
    InvalidDevice(String),
    /// A CUDA device was asked for but libtorch sees fewer devices.
    #[error("device cuda:{index} requested but libtorch sees {available} CUDA device(s)")]
    CudaUnavailable { index: usize, available: usize },
    /// An error raised inside libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A tokenizer file that could not be read or parsed.
    #[error("tokenizer {source_name}: {message}")]
    TokenizerLoad { source_name: String, message: String },
    /// A special token the runtime needs is absent from the tokenizer.
    #[error("tokenizer {source_name}: special token {token:?} is missing")]
    MissingSpecialToken { source_name: String, token: String },
    /// The special tokens are present but not laid out as Step-Audio 2 lays them out.
    #[error("tokenizer {source_name}: unexpected special-token layout: {message}")]
    TokenLayout { source_name: String, message: String },
    /// The tokenizers crate failed to encode or decode.
    #[error("tokenizer: {operation} failed: {message}")]
    Tokenize { operation: &'static str, message: String },
    /// A token id outside the vocabulary (of the tokenizer or of the logits).
    #[error("token id {id} is outside the vocabulary of {vocab_size} ids")]
    UnknownTokenId { id: i64, vocab_size: usize },
    /// Untrusted text encoded to an added-token id: the base vocabulary contains that token.
    #[error("untrusted text encoded to the added token {token:?} (id {id})")]
    UntrustedSpecialToken { id: i64, token: String },
    /// Untrusted text longer than the model's context can hold, refused before tokenizing.
    #[error(
        "the text is {bytes} bytes, at least {at_least} tokens, more than the {cap} the model's \
         context holds"
    )]
    TextTooLong { bytes: usize, at_least: usize, cap: usize },
    /// A sampling parameter out of its range.
    #[error("sampling parameter {name}: {message}")]
    InvalidSamplingParams { name: &'static str, message: String },
    /// Logits that are not a 1-D float vector over the vocabulary, or hold NaN.
    #[error("logits: {0}")]
    InvalidLogits(String),
    /// The logits mask (or the logits) left no token with a finite logit.
    #[error("no token is allowed at generation step {step}: every logit is -inf")]
    AllTokensMasked { step: usize },
    /// A prompt that breaks the step-API contract (see `generate::StepModel`).
    #[error("prompt: {0}")]
    InvalidPrompt(String),
    /// The inference thread is gone, or dropped a job before finishing it.
    #[error("inference thread: {0}")]
    InferenceWorkerStopped(String),
    /// An audio file that could not be opened or read.
    #[error("audio {}: cannot read the file: {source}", path.display())]
    AudioRead { path: std::path::PathBuf, source: std::io::Error },
    /// An audio input of zero bytes.
    #[error("audio {input}: empty input (0 bytes)")]
    AudioEmpty { input: String },
    /// An audio input larger than `AudioLimits::max_bytes`.
    #[error("audio {input}: {bytes} bytes exceed the limit of {max_bytes} bytes")]
    AudioTooLarge { input: String, bytes: u64, max_bytes: u64 },
    /// Bytes that are not audio, or a container/codec the decoder does not support.
    #[error(
        "audio {input}: not a supported audio file ({reason}); accepted: WAV (PCM, 8/16/24/32-bit \
         int or 32/64-bit float), FLAC, MP3, Ogg Vorbis"
    )]
    AudioUnsupported { input: String, reason: String },
    /// A stream that broke while being decoded (bad packet, I/O error, decoder failure).
    #[error("audio {input}: corrupt stream after {decoded_frames} decoded frames: {reason}")]
    AudioCorrupt { input: String, decoded_frames: u64, reason: String },
    /// A WAV or FLAC stream whose header promises more frames than the data holds.
    #[error(
        "audio {input}: truncated: the header promises {expected_frames} frames but the data \
         ends after {decoded_frames}"
    )]
    AudioTruncated { input: String, expected_frames: u64, decoded_frames: u64 },
    /// A stream that decoded to no samples at all.
    #[error("audio {input}: no samples after decoding")]
    AudioNoSamples { input: String },
    /// Audio longer than `AudioLimits::max_seconds` (from the header, or found while decoding).
    #[error("audio {input}: {seconds:.2} s is longer than the limit of {max_seconds} s")]
    AudioTooLong { input: String, seconds: f64, max_seconds: f64 },
    /// A sample rate outside the range the resampler accepts.
    #[error("audio {input}: unsupported sample rate {rate} Hz (accepted: {min}..={max} Hz)")]
    AudioSampleRate { input: String, rate: u64, min: u32, max: u32 },
    /// A model file that could not be opened or read.
    #[error("{}: {source}", path.display())]
    ModelFileRead { path: std::path::PathBuf, source: std::io::Error },
    /// A model `config.json` that is malformed, lacks a field or describes an unsupported model.
    #[error("model config {}: {message}", path.display())]
    ModelConfig { path: std::path::PathBuf, message: String },
    /// A checkpoint file that is malformed (bad index, corrupt safetensors header, no weights).
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: std::path::PathBuf, message: String },
    /// A shard named in `model.safetensors.index.json` that is not in the directory.
    #[error("checkpoint shard {} (listed in {}) does not exist", shard.display(), index.display())]
    MissingShard { shard: std::path::PathBuf, index: std::path::PathBuf },
    /// A parameter of the model that the checkpoint does not hold.
    #[error("checkpoint {} lacks tensor {name} ({others} other model tensors are missing too)", dir.display())]
    MissingTensor { name: String, dir: std::path::PathBuf, others: usize },
    /// A checkpoint tensor that is not a parameter of the model.
    #[error("tensor {name} in {} is not a parameter of the model ({others} other unexpected tensors)", file.display())]
    UnexpectedTensor { name: String, file: std::path::PathBuf, others: usize },
    /// A checkpoint tensor whose shape differs from the parameter's.
    #[error("tensor {name} in {}: the model expects shape {expected:?}, the file holds {found:?}", file.display())]
    TensorShape { name: String, file: std::path::PathBuf, expected: Vec<i64>, found: Vec<i64> },
    /// Audio placeholders in a prompt that do not match the rows the audio chunks produce.
    #[error("the prompt has {placeholders} <audio_patch> tokens (id {patch_id}) but the audio chunks give {rows} rows")]
    AudioPatchMismatch { patch_id: u32, placeholders: usize, rows: usize },
    /// A mel chunk the audio encoder cannot take (wrong bin count, too short, too long).
    #[error("audio chunk {index}: {message}")]
    InvalidAudioChunk { index: usize, message: String },
    /// Log-mel features that are not `[128, frames]`, so no
    /// [`AudioChunk`](crate::audio::AudioChunk).
    #[error("log-mel features: {0}")]
    InvalidMel(String),
    /// A prefill or decode that would run past the model's context.
    #[error("context overflow: {needed} positions needed, the model holds at most {max}")]
    ContextOverflow { needed: usize, max: usize },
    /// A KV-cache truncation to more positions than the cache holds.
    #[error("cannot truncate the KV cache to {requested} positions: it holds {len}")]
    InvalidTruncate { requested: usize, len: usize },
    /// A tool that cannot be registered or declared: an invalid or duplicate name, an
    /// argument schema that is not an object schema or does not compile.
    #[error("tool {name:?}: {message}")]
    Tool { name: String, message: String },
    /// A tool call the model wrote that cannot be used (its message is meant for the model).
    #[error(transparent)]
    ToolCall(#[from] crate::protocol::ToolCallError),
    /// The tool-call grammar constraint saw a token it did not allow (the logits were not
    /// masked with it), or its grammar engine failed.
    #[error("tool-call constraint: {0}")]
    ToolConstraint(String),
    /// A session file that could not be read or written.
    #[error("session file {}: {source}", path.display())]
    SessionIo { path: std::path::PathBuf, source: std::io::Error },
    /// A session file that is not valid JSON of a session, or of another format version.
    #[error("session file {}: {message}", path.display())]
    SessionFormat { path: std::path::PathBuf, message: String },
    /// A turn that cannot start (empty input) or an agent misused.
    #[error("agent: {0}")]
    Agent(String),
    /// The remote model backend failed: unreachable, an error answer, a broken stream.
    #[error("remote model: {0}")]
    Remote(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
