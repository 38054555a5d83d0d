//! `Linear` and `LayerNorm`, the two layers every model here uses (the speech LLM in
//! `model`, token2wav in `voxloop-voices`, MiniLM in `voxloop-retrieval`).
//!
//! Each calls the ATen operator its PyTorch counterpart calls (`linear`, `layer_norm`), so
//! results match upstream to the last few ulps. They are built either on a `tch` var store,
//! zero-initialised under checkpoint-named paths (`new`), or from tensors loaded elsewhere
//! (`from_tensors`, token2wav's state dicts).

use tch::nn::{self, Init};
use tch::Tensor;

use crate::Result;

fn zeros(p: &nn::Path<'_>, name: &str, dims: &[i64]) -> Result<Tensor> {
    Ok(p.f_var(name, dims, Init::Const(0.0))?)
}

/// `y = x Wᵀ + b` with `weight` `[out, in]` and an optional `bias` `[out]`.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Zero-initialised `weight` (and `bias`) under `p`, for a checkpoint to overwrite.
    pub fn new(p: nn::Path<'_>, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = zeros(&p, "weight", &[out as i64, inp as i64])?;
        let bias = if bias { Some(zeros(&p, "bias", &[out as i64])?) } else { None };
        Ok(Self { weight, bias })
    }

    /// Wraps tensors loaded elsewhere (a tied LM head, a state dict): `weight` `[out, in]`,
    /// `bias` `[out]`.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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

/// `torch.nn.LayerNorm` over the last dimension, with or without the affine parameters.
#[derive(Debug)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    width: i64,
    eps: f64,
}

impl LayerNorm {
    /// Zero-initialised `weight` and `bias` under `p`, for a checkpoint to overwrite.
    pub fn new(p: nn::Path<'_>, width: usize, eps: f64) -> Result<Self> {
        let dims = [width as i64];
        Ok(Self::from_tensors(zeros(&p, "weight", &dims)?, zeros(&p, "bias", &dims)?, eps))
    }

    /// The affine parameters loaded elsewhere (both `[width]`).
    pub fn from_tensors(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        let width = weight.size().first().copied().unwrap_or(0);
        Self { weight: Some(weight), bias: Some(bias), width, eps }
    }

    /// `elementwise_affine=False`: normalisation only.
    pub fn plain(width: i64, eps: f64) -> Self {
        Self { weight: None, bias: None, width, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm([self.width], self.weight.as_ref(), self.bias.as_ref(), self.eps, true)?)
    }
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
            Linear::from_tensors(weight.shallow_clone(), None),
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
