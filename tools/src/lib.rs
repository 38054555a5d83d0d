//! # voxloop-tools
//!
//! Built-in tools on core's `Tool` trait: web search (several providers and an offline
//! one), audio search, timbre swap, date/time and weather.
//!
//! Every fallible function returns [`Result`], whose error is [`Error`].

/// Everything that can go wrong in `voxloop-tools`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
