//! Small layers holding tensors taken from a [`StateDict`] under their upstream names
//! (`Linear` and `LayerNorm` are core's, [`voxloop_core::nn`], loaded here).
//!
//! Every layer calls the same ATen operator its PyTorch counterpart calls (`linear`,
//! `layer_norm`, `conv1d`, `conv_transpose1d`, `_weight_norm`), so results match upstream to
//! the last few ulps.

use tch::Tensor;
pub(crate) use voxloop_core::nn::{LayerNorm, Linear};

use crate::checkpoint::StateDict;
use crate::Result;

/// Joins a module prefix and a child name with `.` (the state-dict separator).
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `torch.nn.Linear` `[inp → out]` from the state dict's `{prefix}.weight` (and `.bias`).
pub(crate) fn load_linear(
    sd: &mut StateDict,
    prefix: &str,
    inp: i64,
    out: i64,
    bias: bool,
) -> Result<Linear> {
    let weight = sd.take(&join(prefix, "weight"), &[out, inp])?;
    let bias = if bias { Some(sd.take(&join(prefix, "bias"), &[out])?) } else { None };
    Ok(Linear::from_tensors(weight, bias))
}

/// `torch.nn.LayerNorm(width, eps)` from the state dict's `{prefix}.weight` and `.bias`.
pub(crate) fn load_layer_norm(
    sd: &mut StateDict,
    prefix: &str,
    width: i64,
    eps: f64,
) -> Result<LayerNorm> {
    let weight = sd.take(&join(prefix, "weight"), &[width])?;
    let bias = sd.take(&join(prefix, "bias"), &[width])?;
    Ok(LayerNorm::from_tensors(weight, bias, eps))
}

/// Geometry of a 1-D convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub(crate) inp: i64,
    pub(crate) out: i64,
    pub(crate) kernel: i64,
    pub(crate) stride: i64,
    pub(crate) padding: i64,
    pub(crate) dilation: i64,
}

impl ConvSpec {
    pub(crate) fn new(inp: i64, out: i64, kernel: i64) -> Self {
        Self { inp, out, kernel, stride: 1, padding: 0, dilation: 1 }
    }

    pub(crate) fn stride(self, stride: i64) -> Self {
        Self { stride, ..self }
    }

    pub(crate) fn padding(self, padding: i64) -> Self {
        Self { padding, ..self }
    }

    pub(crate) fn dilation(self, dilation: i64) -> Self {
        Self { dilation, ..self }
    }
}

/// Reads a weight that may be stored plainly (`weight`) or under weight normalisation, in the
/// current form (`parametrizations.weight.original0` = g, `original1` = v) or the older one
/// (`weight_g`, `weight_v`); the normalised weight is `g · v / ‖v‖` over all dims but 0.
fn take_weight(
    sd: &mut StateDict,
    prefix: &str,
    shape: &[i64],
    weight_norm: bool,
) -> Result<Tensor> {
    if !weight_norm {
        return sd.take(&join(prefix, "weight"), shape);
    }
    let mut g_shape = vec![1; shape.len()];
    g_shape[0] = shape[0];
    let current = join(prefix, "parametrizations.weight.original0");
    let (g, v) = if sd.contains(&current) || !sd.contains(&join(prefix, "weight_g")) {
        (
            sd.take(&current, &g_shape)?,
            sd.take(&join(prefix, "parametrizations.weight.original1"), shape)?,
        )
    } else {
        (sd.take(&join(prefix, "weight_g"), &g_shape)?, sd.take(&join(prefix, "weight_v"), shape)?)
    };
    Ok(Tensor::f_internal_weight_norm(&v, &g, 0)?)
}

/// `torch.nn.Conv1d` (optionally weight-normalised), with bias.
#[derive(Debug)]
pub(crate) struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    spec: ConvSpec,
}

impl Conv1d {
    pub(crate) fn load(
        sd: &mut StateDict,
        prefix: &str,
        spec: ConvSpec,
        weight_norm: bool,
    ) -> Result<Self> {
        let weight = take_weight(sd, prefix, &[spec.out, spec.inp, spec.kernel], weight_norm)?;
        let bias = Some(sd.take(&join(prefix, "bias"), &[spec.out])?);
        Ok(Self { weight, bias, spec })
    }

    /// `x`: `[batch, in, time]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = &self.spec;
        Ok(x.f_conv1d(&self.weight, self.bias.as_ref(), [s.stride], [s.padding], [s.dilation], 1)?)
    }
}

/// `torch.nn.ConvTranspose1d` (weight-normalised, as in HiFT), with bias.
#[derive(Debug)]
pub(crate) struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    spec: ConvSpec,
}

impl ConvTranspose1d {
    pub(crate) fn load(
        sd: &mut StateDict,
        prefix: &str,
        spec: ConvSpec,
        weight_norm: bool,
    ) -> Result<Self> {
        // PyTorch stores transposed-convolution weights as [in, out, kernel].
        let weight = take_weight(sd, prefix, &[spec.inp, spec.out, spec.kernel], weight_norm)?;
        let bias = sd.take(&join(prefix, "bias"), &[spec.out])?;
        Ok(Self { weight, bias, spec })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = &self.spec;
        Ok(x.f_conv_transpose1d(
            &self.weight,
            Some(&self.bias),
            [s.stride],
            [s.padding],
            [0],
            1,
            [s.dilation],
        )?)
    }
}

/// `F.leaky_relu(x, slope)`: `x` where positive, `slope · x` elsewhere (for 0 < slope < 1 this
/// is `max(x, slope · x)`, bit for bit).
pub(crate) fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(x.f_maximum(&x.f_mul_scalar(slope)?)?)
}
