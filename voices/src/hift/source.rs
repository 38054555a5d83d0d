//! HiFT's neural source filter: f0 predictor, harmonic sine source (`SineGen2`,
//! `SourceModuleHnNSF2`) and the random numbers it draws.

use tch::{Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::config::HiftConfig;
use crate::nn::{join, load_linear, Conv1d, ConvSpec, Linear};
use crate::{Error, Result};

/// Where the NSF source's random numbers come from.
///
/// Upstream draws them from torch's global RNG on every call: `torch.rand(1, harmonics+1)`
/// initial phases (the fundamental's is then zeroed) and `torch.randn_like` additive noise
/// `[1, samples, harmonics+1]`, scaled by 0.003 where voiced and 0.1/3 where not.
#[derive(Debug, Default)]
pub enum NsfRandom {
    /// Fresh draws from libtorch's global RNG, as upstream.
    #[default]
    Torch,
    /// Fixed numbers (tests, reproducible renders): every call uses `phase` `[1, h+1]` and the
    /// first `samples` rows of `noise` `[1, rows, h+1]` (an error if it has too few rows).
    Fixed { phase: Tensor, noise: Tensor },
}

impl NsfRandom {
    fn phase(&self, dim: i64, device: tch::Device) -> Result<Tensor> {
        match self {
            Self::Torch => Ok(Tensor::f_rand([1, dim], (Kind::Float, device))?),
            Self::Fixed { phase, .. } => {
                if phase.size() != [1, dim] {
                    return Err(Error::InvalidInput(format!(
                        "NSF phase must be [1, {dim}], got {:?}",
                        phase.size()
                    )));
                }
                Ok(phase.f_to_kind(Kind::Float)?.f_to_device(device)?)
            }
        }
    }

    fn noise(&self, like: &Tensor) -> Result<Tensor> {
        match self {
            Self::Torch => Ok(like.f_randn_like()?),
            Self::Fixed { noise, .. } => {
                let (want, have) = (like.size(), noise.size());
                if have.len() != 3 || have[0] != 1 || have[2] != want[2] || have[1] < want[1] {
                    return Err(Error::InvalidInput(format!(
                        "NSF noise must be [1, ≥{}, {}], got {have:?}",
                        want[1], want[2]
                    )));
                }
                Ok(noise
                    .f_narrow(1, 0, want[1])?
                    .f_to_kind(Kind::Float)?
                    .f_to_device(like.device())?)
            }
        }
    }
}

/// `ConvRNNF0Predictor`: five weight-normalised convs (k=3) with ELU, then a Linear to one
/// value per frame, absolute value = f0 in Hz.
#[derive(Debug)]
pub(crate) struct F0Predictor {
    convs: Vec<Conv1d>,
    classifier: Linear,
}

impl F0Predictor {
    pub(crate) fn load(sd: &mut StateDict, prefix: &str, c: &HiftConfig) -> Result<Self> {
        let cond = c.f0_cond_channels;
        let convs = (0..5)
            .map(|i| {
                let inp = if i == 0 { c.in_channels } else { cond };
                let name = join(prefix, &format!("condnet.{}", 2 * i));
                Conv1d::load(sd, &name, ConvSpec::new(inp, cond, 3).padding(1), true)
            })
            .collect::<Result<Vec<_>>>()?;
        let classifier = load_linear(sd, &join(prefix, "classifier"), cond, 1, true)?;
        Ok(Self { convs, classifier })
    }

    /// `mel` `[b, 80, t]` → f0 `[b, t]`.
    pub(crate) fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let mut x = mel.shallow_clone();
        for conv in &self.convs {
            x = conv.forward(&x)?.f_elu()?;
        }
        let y = self.classifier.forward(&x.f_transpose(1, 2)?)?;
        Ok(y.f_squeeze_dim(-1)?.f_abs()?)
    }
}

/// `SourceModuleHnNSF2` with its `SineGen2`: f0 (per sample) → one excitation channel.
#[derive(Debug)]
pub(crate) struct SourceModule {
    linear: Linear,
    harmonics: i64,
    sampling_rate: f64,
    upsample_scale: i64,
    sine_amp: f64,
    noise_std: f64,
    voiced_threshold: f64,
}

impl SourceModule {
    pub(crate) fn load(sd: &mut StateDict, prefix: &str, c: &HiftConfig) -> Result<Self> {
        let harmonics = c.nb_harmonics + 1;
        Ok(Self {
            linear: load_linear(sd, &join(prefix, "l_linear"), harmonics, 1, true)?,
            harmonics,
            sampling_rate: c.sampling_rate as f64,
            upsample_scale: c.samples_per_frame(),
            sine_amp: c.nsf_alpha,
            noise_std: c.nsf_sigma,
            voiced_threshold: c.nsf_voiced_threshold,
        })
    }

    /// `f0` `[b, samples, 1]` → `tanh(Linear(harmonic sines))` `[b, samples, 1]`.
    pub(crate) fn forward(&self, f0: &Tensor, random: &NsfRandom) -> Result<Tensor> {
        let device = f0.device();
        let multiples = Tensor::f_arange_start(1, self.harmonics + 1, (Kind::Float, device))?
            .f_reshape([1, 1, self.harmonics])?;
        let fn_ = f0.f_mul(&multiples)?; // [b, L, h]

        // SineGen2._f02sine: phase increments per sample, a random initial phase on every
        // harmonic but the fundamental, integrated at frame rate and interpolated back.
        let rad = fn_.f_div_scalar(self.sampling_rate)?.f_remainder(1)?;
        let phase0 = random.phase(self.harmonics, device)?;
        let phase0 = Tensor::f_cat(
            &[
                phase0.f_narrow(1, 0, 1)?.f_zeros_like()?,
                phase0.f_narrow(1, 1, self.harmonics - 1)?,
            ],
            1,
        )?;
        let first = rad.f_narrow(1, 0, 1)?.f_add(&phase0.f_unsqueeze(1)?)?;
        let samples = rad.size()[1];
        let rad = Tensor::f_cat(&[first, rad.f_narrow(1, 1, samples - 1)?], 1)?;
        let scale = self.upsample_scale as f64;
        let down =
            rad.f_transpose(1, 2)?.f_upsample_linear1d_vec(None::<&[i64]>, false, [1.0 / scale])?;
        let phase = down
            .f_transpose(1, 2)?
            .f_cumsum(1, None::<Kind>)?
            .f_mul_scalar(2.0 * std::f64::consts::PI)?;
        let up = phase
            .f_transpose(1, 2)?
            .f_mul_scalar(self.upsample_scale)?
            .f_upsample_linear1d_vec(None::<&[i64]>, false, [scale])?;
        let sines = up.f_transpose(1, 2)?.f_sin()?.f_mul_scalar(self.sine_amp)?;

        let uv = f0.f_gt(self.voiced_threshold)?.f_to_kind(Kind::Float)?;
        let noise_amp = uv
            .f_mul_scalar(self.noise_std)?
            .f_add(&uv.f_neg()?.f_add_scalar(1)?.f_mul_scalar(self.sine_amp)?.f_div_scalar(3)?)?;
        let noise = noise_amp.f_mul(&random.noise(&sines)?)?;
        let sines = sines.f_mul(&uv)?.f_add(&noise)?;
        Ok(self.linear.forward(&sines)?.f_tanh()?)
    }
}
