//! Small building blocks whose variables are named like the checkpoint's tensors.
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

/// `y = x Wᵀ + b` with `weight` `[out, in]` and an optional `bias` `[out]`.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(p: nn::Path<'_>, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = zeros(&p, "weight", &[out as i64, inp as i64])?;
        let bias = if bias { Some(zeros(&p, "bias", &[out as i64])?) } else { None };
        Ok(Self { weight, bias })
    }

    /// Wraps an existing weight (a tied LM head).
    pub(crate) fn from_weight(weight: Tensor) -> Self {
        Self { weight, bias: None }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_one_row(x)? {
            return Ok(y);
        }
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }

    /// The product of a single f32 row on the CPU (a decode step), computed as a batched
    /// product over `b` blocks of the weight's rows, `b` dividing the output width and at most
    /// the intra-op thread count: `bmm([b, 1, in], [b, in, out / b])` with the weight only
    /// viewed, never copied. libtorch's single-row `linear` (a BLAS GEMV) runs on one thread
    /// and streams the weight at about half the memory bandwidth, while the batched product
    /// spreads the blocks over the threads; on 2 cores that is about twice the decode speed
    /// of a large model (BENCHMARKS.md, "Speech LLM"). `None` when the plain path applies.
    fn forward_one_row(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let dims = x.size();
        let Some((&inp, lead)) = dims.split_last() else { return Ok(None) };
        let w = self.weight.size();
        let single_row = lead.iter().product::<i64>() == 1;
        if !single_row
            || x.device() != tch::Device::Cpu
            || x.kind() != tch::Kind::Float
            || self.weight.kind() != tch::Kind::Float
            || w.len() != 2
            || w[1] != inp
            || w[0] * w[1] < SPLIT_MIN_ELEMENTS
        {
            return Ok(None);
        }
        let out = w[0];
        let threads = i64::from(tch::get_num_threads());
        match (2..=threads.min(out)).rev().find(|b| out % b == 0) {
            Some(blocks) => Ok(Some(self.blocked_row_product(x, blocks)?)),
            None => Ok(None),
        }
    }

    /// `x W^T + b` for `x` holding one row of `in` values (any leading dims of size 1), as
    /// `blocks` row blocks of the weight in one batched product; `blocks` divides `out`.
    fn blocked_row_product(&self, x: &Tensor, blocks: i64) -> Result<Tensor> {
        let w = self.weight.size();
        let (out, inp) = (w[0], w[1]);
        let rows = x.f_reshape([1, 1, inp])?.f_expand([blocks, 1, inp], false)?;
        let weight = self.weight.f_view([blocks, out / blocks, inp])?.f_transpose(1, 2)?;
        let mut out_dims = x.size();
        if let Some(last) = out_dims.last_mut() {
            *last = out;
        }
        // [blocks, 1, out / blocks] is the output row in order: block-major, as the weight.
        let mut y = rows.f_bmm(&weight)?.f_reshape(out_dims.as_slice())?;
        if let Some(bias) = &self.bias {
            let _ = y.f_add_(bias)?;
        }
        Ok(y)
    }
}

/// Weights smaller than this (in elements) keep the plain single-row product: they are cheap
/// and mostly cached, and the batched call's overhead would outweigh its parallelism.
const SPLIT_MIN_ELEMENTS: i64 = 1 << 16;

/// LayerNorm over the last dimension with `weight` and `bias` (eps 1e-5, PyTorch's default).
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    width: i64,
}

impl LayerNorm {
    pub(crate) fn new(p: nn::Path<'_>, width: usize) -> Result<Self> {
        Ok(Self {
            weight: zeros(&p, "weight", &[width as i64])?,
            bias: zeros(&p, "bias", &[width as i64])?,
            width: width as i64,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm([self.width], Some(&self.weight), Some(&self.bias), 1e-5, true)?)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_blocked_row_product_equals_linear() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let weight = Tensor::randn([512, 256], opts);
        let bias = Tensor::randn([512], opts);
        let x = Tensor::randn([1, 1, 256], opts);
        for linear in [
            Linear { weight: weight.shallow_clone(), bias: Some(bias.shallow_clone()) },
            Linear::from_weight(weight.shallow_clone()),
        ] {
            let want = x.linear(&linear.weight, linear.bias.as_ref());
            for blocks in [2, 4, 8] {
                let got = linear.blocked_row_product(&x, blocks).unwrap();
                assert_eq!(got.size(), [1, 1, 512]);
                let err = (&got - &want).abs().max().double_value(&[]);
                assert!(err < 1e-4, "{blocks} blocks: max abs error {err}");
            }
            // Several rows, or a small weight, take the plain path.
            let two = Tensor::randn([2, 256], opts);
            assert!(linear.forward_one_row(&two).unwrap().is_none());
            let got = linear.forward(&x).unwrap();
            assert!((&got - &want).abs().max().double_value(&[]) < 1e-4);
        }
    }
}
