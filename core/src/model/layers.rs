//! Small building blocks whose variables are named like the checkpoint's tensors
//! (`Linear` and `LayerNorm`, shared with the other model crates, live in [`crate::nn`]).
//!
//! Variables are created as zeros in the var store's kind and device (no random init: the
//! checkpoint overwrites them) through the fallible `f_var`, so an allocation failure is an
//! error, not a panic.

use tch::nn::{self, Init};
use tch::Tensor;

use crate::Result;

fn zeros(p: &nn::Path<'_>, name: &str, dims: &[i64]) -> Result<Tensor> {
    Ok(p.f_var(name, dims, Init::Const(0.0))?)
}

/// Qwen2's RMSNorm: normalise in f32, cast back, then scale by `weight`.
#[derive(Debug)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    width: i64,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(p: nn::Path<'_>, width: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: zeros(&p, "weight", &[width as i64])?, width: width as i64, eps })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.kind() == tch::Kind::Float {
            return Ok(x.f_rms_norm([self.width], Some(&self.weight), self.eps)?);
        }
        // Reduced precision: as transformers does, normalise in f32 and scale after the cast.
        let kind = x.kind();
        let normed =
            x.f_to_kind(tch::Kind::Float)?.f_rms_norm([self.width], None::<&Tensor>, self.eps)?;
        Ok(normed.f_to_kind(kind)?.f_mul(&self.weight)?)
    }
}

/// 1-D convolution `[B, C_in, T] → [B, C_out, T']` with bias.
#[derive(Debug)]
pub(crate) struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv1d {
    pub(crate) fn new(
        p: nn::Path<'_>,
        inp: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: zeros(&p, "weight", &[out as i64, inp as i64, kernel as i64])?,
            bias: zeros(&p, "bias", &[out as i64])?,
            stride: stride as i64,
            padding: padding as i64,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv1d(&self.weight, Some(&self.bias), [self.stride], [self.padding], [1], 1)?)
    }
}

/// A lookup table `[rows, width]` (`weight`).
#[derive(Debug)]
pub(crate) struct Embedding {
    pub(crate) weight: Tensor,
}

impl Embedding {
    pub(crate) fn new(p: nn::Path<'_>, rows: usize, width: usize) -> Result<Self> {
        Ok(Self { weight: zeros(&p, "weight", &[rows as i64, width as i64])? })
    }

    /// Rows for `ids` (any shape, Int64) → `[..ids, width]`.
    pub(crate) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.weight, ids, -1, false, false)?)
    }
}

/// Exact (erf) GELU, PyTorch's `nn.GELU()` default.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_gelu("none")?)
}
