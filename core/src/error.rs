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
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
