//! # voxloop-core
//!
//! The speech LLM and the reason-then-act loop, knowing no concrete tool, store or vocoder.
//!
//! - [`device`]: where tensors live (CPU or a CUDA device), parsed from configuration.
//! - [`fs`]: files replaced atomically (sessions, profiles, index metadata).
//! - [`audio`]: decoding, resampling to 16 kHz, the Whisper-style log-mel, 25-second chunks.
//! - [`model`]: the Step-Audio 2 checkpoint: config, audio encoder + adaptor, Qwen2 decoder
//!   with an extendable KV cache.
//! - [`tokenizer`]: the HF tokenizer with every special token looked up by its string.
//! - [`generate`]: the step API, the sampler and the inference thread.
//! - [`pyjson`]: JSON text byte for byte as Python's `json.dumps` writes it (what the model
//!   saw in training).
//! - [`protocol`]: the chat template, tool-declaration JSON, the generated-id demultiplexer
//!   and the tool-call parser.
//! - [`tool`]: the `Tool` trait, tool schemas, the tower service per tool and the registry.
//! - [`agent`]: the reason-then-act loop: turns, tool runs, events, cancellation, spans.
//! - [`session`]: a conversation's history and settings, saved to disk and resumed.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

pub mod agent;
pub mod audio;
pub mod device;
mod error;
pub mod fs;
pub mod generate;
pub mod model;
pub mod nn;
pub mod protocol;
pub mod pyjson;
pub mod remote;
pub mod session;
pub mod tokenizer;
pub mod tool;

pub use device::DeviceSpec;
pub use error::{Error, Result};
