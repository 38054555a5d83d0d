//! # voxloop-voices
//!
//! token2wav (flow matching + HiFT) on tch, voice profiles, the voice library and the
//! per-session current voice that voice swap changes. Implements core's speech sink.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

/// Everything that can go wrong in `voxloop-voices`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
