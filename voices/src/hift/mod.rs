//! The mel → waveform vocoder: upstream's `HiFTGenerator` (NSF + iSTFTNet, "HiFT"), 24 kHz.
//!
//! 1. f0 per mel frame ([`source::F0Predictor`]), repeated to the sample rate (×480), turned
//!    into a harmonic excitation by the neural source filter ([`source::SourceModule`]).
//! 2. The excitation's STFT (n_fft 16, hop 4) is fed, down-sampled by strided convs and
//!    resblocks, into every stage of the generator: `conv_pre` → 3 × (LeakyReLU 0.1 →
//!    transposed conv ×8/×5/×3 → + source branch → mean of 3 Snake resblocks) →
//!    LeakyReLU → `conv_post` → 9 log-magnitudes + 9 phases.
//! 3. Inverse STFT (n_fft 16, hop 4: 480 samples per mel frame), clamped to ±0.99.
//!
//! All weights but the source-down convs and `l_linear` are weight-normalised in the file;
//! both the current (`parametrizations.weight.original0/1`) and the older
//! (`weight_g`/`weight_v`) forms are read. The source draws random numbers on every call:
//! see [`NsfRandom`].

pub mod source;

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::config::HiftConfig;
use crate::nn::{join, leaky_relu, Conv1d, ConvSpec, ConvTranspose1d};
use crate::{Error, Result};

pub use source::NsfRandom;
use source::{F0Predictor, SourceModule};

/// A Snake-activated residual block (`ResBlock` with `Snake` activations).
#[derive(Debug)]
struct ResBlock {
    convs1: Vec<Conv1d>,
    convs2: Vec<Conv1d>,
    /// Per conv pair: (alpha `[1, c, 1]`, `1 / (alpha + 1e-9)` `[1, c, 1]`) for each Snake.
    snakes1: Vec<(Tensor, Tensor)>,
    snakes2: Vec<(Tensor, Tensor)>,
}

fn snake_params(sd: &mut StateDict, name: &str, channels: i64) -> Result<(Tensor, Tensor)> {
    let alpha = sd.take(name, &[channels])?.f_unsqueeze(0)?.f_unsqueeze(-1)?;
    let inv = alpha.f_add_scalar(1e-9)?.f_reciprocal()?;
    Ok((alpha, inv))
}

/// `x + 1/(α + 1e-9) · sin(α·x)²`.
fn snake(x: &Tensor, (alpha, inv): &(Tensor, Tensor)) -> Result<Tensor> {
    let s = x.f_mul(alpha)?.f_sin()?.f_pow_tensor_scalar(2)?;
    Ok(x.f_add(&inv.f_mul(&s)?)?)
}

impl ResBlock {
    fn load(
        sd: &mut StateDict,
        prefix: &str,
        channels: i64,
        kernel: i64,
        dilations: &[i64],
    ) -> Result<Self> {
        let mut block = Self { convs1: vec![], convs2: vec![], snakes1: vec![], snakes2: vec![] };
        for (i, &d) in dilations.iter().enumerate() {
            let spec = ConvSpec::new(channels, channels, kernel);
            let c1 = spec.dilation(d).padding((kernel * d - d) / 2);
            let c2 = spec.padding((kernel - 1) / 2);
            block.convs1.push(Conv1d::load(sd, &join(prefix, &format!("convs1.{i}")), c1, true)?);
            block.convs2.push(Conv1d::load(sd, &join(prefix, &format!("convs2.{i}")), c2, true)?);
            block.snakes1.push(snake_params(
                sd,
                &join(prefix, &format!("activations1.{i}.alpha")),
                channels,
            )?);
            block.snakes2.push(snake_params(
                sd,
                &join(prefix, &format!("activations2.{i}.alpha")),
                channels,
            )?);
        }
        Ok(block)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for i in 0..self.convs1.len() {
            let y = self.convs1[i].forward(&snake(&x, &self.snakes1[i])?)?;
            let y = self.convs2[i].forward(&snake(&y, &self.snakes2[i])?)?;
            x = y.f_add(&x)?;
        }
        Ok(x)
    }
}

/// The HiFT generator.
#[derive(Debug)]
pub struct Hift {
    config: HiftConfig,
    f0_predictor: F0Predictor,
    source: SourceModule,
    conv_pre: Conv1d,
    ups: Vec<ConvTranspose1d>,
    source_downs: Vec<Conv1d>,
    source_resblocks: Vec<ResBlock>,
    resblocks: Vec<ResBlock>,
    conv_post: Conv1d,
    window: Tensor,
    device: Device,
}

impl Hift {
    /// Loads `hift.pt` (keys under `generator.`) into a generator with `config`
    /// ([`HiftConfig::default`] for the official file).
    pub fn load(path: &Path, config: HiftConfig, device: Device) -> Result<Self> {
        let mut sd = StateDict::load(path, Some("generator."), device)?;
        let hift = Self::from_state_dict(config, &mut sd, device)?;
        sd.finish()?;
        Ok(hift)
    }

    /// Builds the generator from a state dict whose keys have no `generator.` prefix.
    pub fn from_state_dict(config: HiftConfig, sd: &mut StateDict, device: Device) -> Result<Self> {
        config
            .validate()
            .map_err(|message| Error::Config { path: sd.path().to_path_buf(), message })?;
        let c = &config;
        let base = c.base_channels;
        let n_fft = c.istft_n_fft;
        let f0_predictor = F0Predictor::load(sd, "f0_predictor", c)?;
        let source = SourceModule::load(sd, "m_source", c)?;
        let conv_pre =
            Conv1d::load(sd, "conv_pre", ConvSpec::new(c.in_channels, base, 7).padding(3), true)?;

        let mut ups = Vec::new();
        for (i, (&u, &k)) in c.upsample_rates.iter().zip(&c.upsample_kernel_sizes).enumerate() {
            let spec = ConvSpec::new(base >> i, base >> (i + 1), k).stride(u).padding((k - u) / 2);
            ups.push(ConvTranspose1d::load(sd, &format!("ups.{i}"), spec, true)?);
        }

        // Source branch: the STFT frames are down-sampled to each stage's rate, finest last.
        let n = c.upsample_rates.len();
        let mut cum = vec![1i64; n];
        for i in 1..n {
            cum[i] = cum[i - 1] * c.upsample_rates[n - i];
        }
        cum.reverse();
        let mut source_downs = Vec::new();
        let mut source_resblocks = Vec::new();
        for (i, &u) in cum.iter().enumerate() {
            let ch = base >> (i + 1);
            let spec = if u == 1 {
                ConvSpec::new(n_fft + 2, ch, 1)
            } else {
                ConvSpec::new(n_fft + 2, ch, u * 2).stride(u).padding(u / 2)
            };
            source_downs.push(Conv1d::load(sd, &format!("source_downs.{i}"), spec, false)?);
            source_resblocks.push(ResBlock::load(
                sd,
                &format!("source_resblocks.{i}"),
                ch,
                c.source_resblock_kernel_sizes[i],
                &c.source_resblock_dilation_sizes[i],
            )?);
        }

        let mut resblocks = Vec::new();
        for i in 0..n {
            let ch = base >> (i + 1);
            for (j, (&k, d)) in
                c.resblock_kernel_sizes.iter().zip(&c.resblock_dilation_sizes).enumerate()
            {
                let idx = i * c.resblock_kernel_sizes.len() + j;
                resblocks.push(ResBlock::load(sd, &format!("resblocks.{idx}"), ch, k, d)?);
            }
        }
        let last = base >> n;
        let conv_post =
            Conv1d::load(sd, "conv_post", ConvSpec::new(last, n_fft + 2, 7).padding(3), true)?;
        let window = periodic_hann(n_fft)?.f_to_device(device)?;
        Ok(Self {
            config,
            f0_predictor,
            source,
            conv_pre,
            ups,
            source_downs,
            source_resblocks,
            resblocks,
            conv_post,
            window,
            device,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &HiftConfig {
        &self.config
    }

    /// Upstream `HiFTGenerator.forward`: `mel` `[1, 80, frames]` → (speech `[1, 480·frames]`,
    /// excitation `[1, 1, 480·frames]`). `cache_source` (`[1, 1, n]`, streaming) replaces the
    /// first `n` excitation samples, to avoid glitches at chunk joins.
    pub fn forward(
        &self,
        mel: &Tensor,
        cache_source: Option<&Tensor>,
        random: &NsfRandom,
    ) -> Result<(Tensor, Tensor)> {
        let s = mel.size();
        if s.len() != 3 || s[1] != self.config.in_channels || s[2] < 1 {
            return Err(Error::InvalidInput(format!(
                "HiFT input must be [batch, {}, frames ≥ 1], got {s:?}",
                self.config.in_channels
            )));
        }
        let mel = mel.f_to_kind(Kind::Float)?.f_to_device(self.device)?;
        let f0 = self.f0_predictor.forward(&mel)?;
        let scale = self.config.samples_per_frame() as f64;
        let f0 = f0
            .f_unsqueeze(1)?
            .f_upsample_nearest1d_vec(None::<&[i64]>, [scale])?
            .f_transpose(1, 2)?;
        let mut excitation = self.source.forward(&f0, random)?.f_transpose(1, 2)?;
        if let Some(cache) = cache_source {
            let n = cache.size().get(2).copied().unwrap_or(0);
            if n > 0 {
                if n > excitation.size()[2] {
                    return Err(Error::InvalidInput(format!(
                        "cached excitation of {n} samples is longer than the {} generated",
                        excitation.size()[2]
                    )));
                }
                excitation = excitation.f_contiguous()?;
                excitation.f_narrow(2, 0, n)?.f_copy_(cache)?;
            }
        }
        let speech = self.decode(&mel, &excitation)?;
        Ok((speech, excitation))
    }

    fn decode(&self, mel: &Tensor, excitation: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (n_fft, hop) = (c.istft_n_fft, c.istft_hop_len);
        // torch.stft(center=True): reflect-pad n_fft/2 on both sides, then frame.
        let signal = excitation.f_squeeze_dim(1)?;
        let padded = signal
            .f_unsqueeze(0)?
            .f_pad([n_fft / 2, n_fft / 2], "reflect", None)?
            .f_squeeze_dim(0)?;
        let spec =
            padded.f_stft(n_fft, hop, n_fft, Some(&self.window), false, true, true, false)?;
        let spec = spec.f_view_as_real()?;
        let s_stft = Tensor::f_cat(&[spec.f_select(-1, 0)?, spec.f_select(-1, 1)?], 1)?;

        let mut x = self.conv_pre.forward(mel)?;
        let n = self.ups.len();
        let kernels = c.resblock_kernel_sizes.len();
        for i in 0..n {
            x = leaky_relu(&x, c.lrelu_slope)?;
            x = self.ups[i].forward(&x)?;
            if i == n - 1 {
                x = x.f_reflection_pad1d([1, 0])?;
            }
            let si = self.source_resblocks[i].forward(&self.source_downs[i].forward(&s_stft)?)?;
            x = x.f_add(&si)?;
            let mut sum = self.resblocks[i * kernels].forward(&x)?;
            for j in 1..kernels {
                sum = sum.f_add(&self.resblocks[i * kernels + j].forward(&x)?)?;
            }
            x = sum.f_div_scalar(kernels as i64)?;
        }
        x = self.conv_post.forward(&x.f_leaky_relu()?)?;
        let bins = n_fft / 2 + 1;
        let magnitude = x.f_narrow(1, 0, bins)?.f_exp()?.f_clamp_max(100.0)?;
        let phase = x.f_narrow(1, bins, x.size()[1] - bins)?.f_sin()?;
        let real = magnitude.f_mul(&phase.f_cos()?)?;
        let imag = magnitude.f_mul(&phase.f_sin()?)?;
        let complex = Tensor::f_complex(&real, &imag)?;
        let wav = complex.f_istft(
            n_fft,
            hop,
            n_fft,
            Some(&self.window),
            true,
            false,
            true,
            None::<i64>,
            false,
        )?;
        Ok(wav.f_clamp(-c.audio_limit, c.audio_limit)?)
    }
}

/// scipy's `get_window("hann", n, fftbins=True)` (computed in f64, stored as f32 as upstream).
fn periodic_hann(n: i64) -> Result<Tensor> {
    let step = 2.0 * std::f64::consts::PI / n as f64;
    let w: Vec<f32> = (0..n)
        .map(|k| {
            let fac = -std::f64::consts::PI + step * k as f64;
            (0.5 + 0.5 * fac.cos()) as f32
        })
        .collect();
    Ok(Tensor::from_slice(&w))
}
