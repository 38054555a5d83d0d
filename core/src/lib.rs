//! # voxloop-core
//!
//! The speech LLM and the reason-then-act loop, knowing no concrete tool, store or vocoder.
//!
//! - [`device`]: where tensors live (CPU or a CUDA device), parsed from configuration.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

pub mod device;
mod error;

pub use device::DeviceSpec;
pub use error::{Error, Result};
