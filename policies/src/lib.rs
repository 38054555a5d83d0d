//! # voxloop-policies
//!
//! Tower layers that wrap any tool service: timeout, retry with backoff, rate limit,
//! concurrency limit and load shedding, allow/deny lists, argument guards, output caps and an
//! approval gate. Depends only on `voxloop-core`.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

/// Everything that can go wrong in `voxloop-policies`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
