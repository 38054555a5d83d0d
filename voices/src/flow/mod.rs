//! The token → mel model: upstream's `CausalMaskedDiffWithXvec` with its
//! `CausalConditionalCFM` decoder.
//!
//! 1. Speaker: `F.normalize(x-vector)` → `spk_embed_affine_layer` (Linear 192 → 80).
//! 2. Tokens `[prompt ; generated]` → `input_embedding` → [`encoder`] (25 → 50 Hz) →
//!    `encoder_proj` (→ 80) = `mu`.
//! 3. Condition: the prompt mel over the prompt frames, zeros after.
//! 4. Conditional flow matching: start from the fixed noise buffer, 10 Euler steps on the
//!    cosine schedule `t = 1 − cos(t·π/2)`, velocity from the [`dit`] estimator run on the
//!    batch `[conditional ; unconditional]` (mu, speaker and condition zeroed) and mixed as
//!    `(1 + r)·v_cond − r·v_uncond` with `r = inference_cfg_rate` (0.7).
//! 5. The prompt frames are cut off the output.
//!
//! Streaming ([`Flow::setup_cache`], [`Flow::inference_chunk`]) follows upstream's
//! `setup_cache`/`inference_chunk`, caches included (see [`FlowCache`]).

pub mod dit;
pub mod encoder;

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::config::FlowConfig;
use crate::nn::{load_linear, Linear};
use crate::noise::{standard_normal_at, FLOW_NOISE_FRAMES, FLOW_NOISE_SEED};
use crate::{Error, Result};

use dit::{BlockCache, Dit, TimeConditioning};
use encoder::{EncoderCache, UpsampleEncoder};

/// Euler steps of the released token2wav.
pub const N_TIMESTEPS: usize = 10;

/// Streaming caches of the flow (upstream's `cache` dict).
#[derive(Debug)]
pub struct FlowCache {
    /// `conformer_cnn_cache` and `conformer_att_cache`.
    pub encoder: EncoderCache,
    /// `estimator_cnn_cache` / `estimator_att_cache`: per Euler step, per DiT block.
    pub estimator: Vec<Vec<BlockCache>>,
}

impl FlowCache {
    /// Another handle on the same tensors (chunks read caches and return new ones, so handles
    /// can be shared between streams).
    pub fn shallow_clone(&self) -> Self {
        let block =
            |b: &BlockCache| BlockCache { cnn: b.cnn.shallow_clone(), att: b.att.shallow_clone() };
        Self {
            encoder: EncoderCache {
                cnn: self.encoder.cnn.shallow_clone(),
                att: self.encoder.att.shallow_clone(),
            },
            estimator: self.estimator.iter().map(|step| step.iter().map(block).collect()).collect(),
        }
    }

    /// Frames in the estimator attention cache (the noise offset of the next chunk).
    pub fn estimator_frames(&self) -> i64 {
        self.estimator.first().and_then(|b| b.first()).map_or(0, |c| c.att.size()[2])
    }

    /// Upstream `Token2wav.stream`'s bound on cache growth: when a cache holds more than
    /// `keep_head + keep_tail` frames, keep its first `keep_head` and last `keep_tail` frames
    /// (the estimator cache along its time axis, the encoder attention cache along its own).
    pub fn trim(&mut self, keep_head: i64, keep_tail: i64) -> Result<()> {
        let limit = keep_head + keep_tail;
        let cut = |t: &Tensor, dim: i64| -> Result<Tensor> {
            let n = t.size()[dim as usize];
            Ok(Tensor::f_cat(
                &[t.f_narrow(dim, 0, keep_head)?, t.f_narrow(dim, n - keep_tail, keep_tail)?],
                dim,
            )?)
        };
        if self.estimator_frames() > limit {
            for step in &mut self.estimator {
                for block in step.iter_mut() {
                    block.att = cut(&block.att, 2)?;
                }
            }
        }
        if self.encoder.att.size()[3] > limit {
            self.encoder.att = cut(&self.encoder.att, 3)?;
        }
        Ok(())
    }
}

/// One step of the Euler solver: its step size and the estimator's time conditioning for the
/// CFG batch of two.
#[derive(Debug)]
struct EulerStep {
    dt: Tensor,
    time: TimeConditioning,
}

/// The flow model.
#[derive(Debug)]
pub struct Flow {
    config: FlowConfig,
    embedding: Tensor,
    spk_affine: Linear,
    encoder: UpsampleEncoder,
    encoder_proj: Linear,
    estimator: Dit,
    /// An injected noise buffer; `None`: voxloop's seeded buffer, computed slice by slice.
    noise: Option<Tensor>,
    /// The [`N_TIMESTEPS`]-step schedule, computed once (it depends on the weights only).
    steps: Vec<EulerStep>,
    device: Device,
}

impl Flow {
    /// Builds the flow from `flow.yaml` and `flow.pt` on `device`.
    pub fn load(config_path: &Path, weights_path: &Path, device: Device) -> Result<Self> {
        let config = FlowConfig::from_file(config_path)?;
        let mut sd = StateDict::load(weights_path, None, device)?;
        let flow = Self::from_state_dict(config, &mut sd, device)?;
        sd.finish()?;
        Ok(flow)
    }

    /// Builds the flow from a validated config and a state dict (tensors are taken from it).
    pub fn from_state_dict(config: FlowConfig, sd: &mut StateDict, device: Device) -> Result<Self> {
        config
            .validate()
            .map_err(|message| Error::Config { path: sd.path().to_path_buf(), message })?;
        let c = &config;
        let embedding = sd.take("input_embedding.weight", &[c.vocab_size, c.input_size])?;
        let spk_affine =
            load_linear(sd, "spk_embed_affine_layer", c.spk_embed_dim, c.output_size, true)?;
        let encoder = UpsampleEncoder::load(sd, "encoder", &c.encoder)?;
        let encoder_proj =
            load_linear(sd, "encoder_proj", encoder.output_size(), c.output_size, true)?;
        let estimator = Dit::load(sd, "decoder.estimator", &c.decoder.estimator)?;
        let mut flow = Self {
            config,
            embedding,
            spk_affine,
            encoder,
            encoder_proj,
            estimator,
            noise: None,
            steps: Vec::new(),
            device,
        };
        let _guard = tch::no_grad_guard();
        flow.steps = flow.euler_steps(N_TIMESTEPS)?;
        Ok(flow)
    }

    /// The configuration read from `flow.yaml`.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Mel frames per token (2).
    pub fn up_rate(&self) -> i64 {
        self.encoder.up_rate()
    }

    /// Look-ahead tokens of the encoder (3).
    pub fn pre_lookahead_len(&self) -> i64 {
        self.encoder.lookahead()
    }

    /// Replaces the noise buffer the ODE starts from (`[1, 80, frames]`); upstream's values
    /// come from torch's RNG at build time, so parity tests inject them here.
    pub fn set_noise(&mut self, noise: &Tensor) -> Result<()> {
        let s = noise.size();
        if s.len() != 3 || s[0] != 1 || s[1] != self.config.output_size {
            return Err(Error::InvalidInput(format!(
                "flow noise must be [1, {}, frames], got {s:?}",
                self.config.output_size
            )));
        }
        self.noise = Some(noise.f_to_kind(Kind::Float)?.f_to_device(self.device)?);
        Ok(())
    }

    fn check_tokens(&self, tokens: &[i64], what: &str) -> Result<()> {
        if let Some(&bad) = tokens.iter().find(|&&t| t < 0 || t >= self.config.vocab_size) {
            return Err(Error::InvalidTokens(format!(
                "{what} token {bad} is outside the codebook 0..{}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    fn embed(&self, tokens: &[i64]) -> Result<Tensor> {
        let ids = Tensor::from_slice(tokens).f_to_device(self.device)?;
        Ok(self.embedding.f_index_select(0, &ids)?.f_unsqueeze(0)?)
    }

    /// `F.normalize` then the affine layer: `[1, 192]` → `[1, 80]`.
    fn speaker(&self, spk: &Tensor) -> Result<Tensor> {
        let s = spk.size();
        if s != [1, self.config.spk_embed_dim] {
            return Err(Error::InvalidInput(format!(
                "speaker embedding must be [1, {}], got {s:?}",
                self.config.spk_embed_dim
            )));
        }
        let spk = spk.f_to_kind(Kind::Float)?.f_to_device(self.device)?;
        let norm = spk.f_norm_scalaropt_dim(2, [1], true)?.f_clamp_min(1e-12)?;
        Ok(self.spk_affine.forward(&spk.f_div(&norm)?)?)
    }

    fn noise_slice(&self, offset: i64, frames: i64) -> Result<Tensor> {
        let available = self.noise.as_ref().map_or(FLOW_NOISE_FRAMES, |n| n.size()[2]);
        if offset + frames > available {
            return Err(Error::InvalidInput(format!(
                "{} mel frames exceed the flow's noise buffer of {available} frames",
                offset + frames
            )));
        }
        match &self.noise {
            Some(noise) => Ok(noise.f_narrow(2, offset, frames)?),
            None => default_noise(self.config.output_size, offset, frames, self.device),
        }
    }

    /// The cosine time grid `1 − cos(linspace(0, 1, n + 1) · π/2)` (as upstream, in f32).
    fn t_span(&self, n: usize) -> Result<Tensor> {
        let t = Tensor::f_linspace(0.0, 1.0, n as i64 + 1, (Kind::Float, self.device))?;
        Ok(t.f_mul_scalar(0.5)?
            .f_mul_scalar(std::f64::consts::PI)?
            .f_cos()?
            .f_neg()?
            .f_add_scalar(1)?)
    }

    /// Offline inference (upstream `inference`): `tokens` generated speech tokens, `prompt_*`
    /// the voice (`prompt_mel` `[1, 2·len(prompt_tokens), 80]`), `spk` `[1, 192]`.
    /// Returns the mel of the generated tokens, `[1, 80, 2·len(tokens)]`.
    pub fn inference(
        &self,
        tokens: &[i64],
        prompt_tokens: &[i64],
        prompt_mel: &Tensor,
        spk: &Tensor,
        n_timesteps: usize,
    ) -> Result<Tensor> {
        self.check_tokens(tokens, "generated")?;
        self.check_tokens(prompt_tokens, "prompt")?;
        if tokens.is_empty() {
            return Err(Error::InvalidTokens("no speech tokens to render".into()));
        }
        let spks = self.speaker(spk)?;
        let all: Vec<i64> = prompt_tokens.iter().chain(tokens).copied().collect();
        let h = self.encoder.forward(&self.embed(&all)?)?;
        let h = self.encoder_proj.forward(&h)?; // [1, T, 80]
        let total = h.size()[1];
        let prompt_frames = self.check_prompt_mel(prompt_mel, Some(total))?;
        let cond = h.f_zeros_like()?;
        if prompt_frames > 0 {
            cond.f_narrow(1, 0, prompt_frames)?.f_copy_(&prompt_mel.f_to_device(self.device)?)?;
        }
        let mu = h.f_transpose(1, 2)?.f_contiguous()?;
        let cond = cond.f_transpose(1, 2)?.f_contiguous()?;
        let mask = Tensor::f_ones([1, 1, total], (Kind::Float, self.device))?;
        let z = self.noise_slice(0, total)?;
        let feat = self.solve_euler(z, &mu, &mask, &spks, &cond, n_timesteps)?;
        Ok(feat.f_narrow(2, prompt_frames, total - prompt_frames)?)
    }

    fn check_prompt_mel(&self, prompt_mel: &Tensor, max_frames: Option<i64>) -> Result<i64> {
        let s = prompt_mel.size();
        if s.len() != 3 || s[0] != 1 || s[2] != self.config.output_size {
            return Err(Error::InvalidInput(format!(
                "prompt mel must be [1, frames, {}], got {s:?}",
                self.config.output_size
            )));
        }
        if let Some(max) = max_frames {
            if s[1] > max {
                return Err(Error::InvalidInput(format!(
                    "prompt mel has {} frames, more than the {max} the tokens give",
                    s[1]
                )));
            }
        }
        Ok(s[1])
    }

    /// The `n` Euler steps of upstream's solver loop: `t` starts at the grid's first point,
    /// then `t += dt` with `dt` the distance from `t` to the next grid point (both in f32, so
    /// every step is bit-identical to upstream's), and the estimator's time conditioning for
    /// the CFG batch `[t, t]`.
    fn euler_steps(&self, n: usize) -> Result<Vec<EulerStep>> {
        let t_span = self.t_span(n)?;
        let mut t = t_span.f_get(0)?.f_unsqueeze(0)?;
        let mut dt = t_span.f_get(1)?.f_sub(&t_span.f_get(0)?)?;
        let mut steps = Vec::with_capacity(n);
        for step in 1..=n {
            let time = self.estimator.time(&t.f_repeat([2])?)?;
            steps.push(EulerStep { dt: dt.shallow_clone(), time });
            t = t.f_add(&dt)?;
            if step < n {
                dt = t_span.f_get(step as i64 + 1)?.f_sub(&t)?;
            }
        }
        Ok(steps)
    }

    /// Runs `f` with the steps of an `n`-step solve (cached for [`N_TIMESTEPS`]).
    fn with_steps<T>(&self, n: usize, f: impl FnOnce(&[EulerStep]) -> Result<T>) -> Result<T> {
        if n == 0 {
            return Err(Error::InvalidInput("the flow needs at least one Euler step".into()));
        }
        if n == self.steps.len() {
            f(&self.steps)
        } else {
            f(&self.euler_steps(n)?)
        }
    }

    /// Upstream `solve_euler` with classifier-free guidance on a batch of two.
    fn solve_euler(
        &self,
        mut x: Tensor,
        mu: &Tensor,
        mask: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
        n: usize,
    ) -> Result<Tensor> {
        let rate = self.config.decoder.inference_cfg_rate;
        let mask_in = Tensor::f_cat(&[mask, mask], 0)?;
        let mu_in = Tensor::f_cat(&[mu, &mu.f_zeros_like()?], 0)?;
        let spks_in = Tensor::f_cat(&[spks, &spks.f_zeros_like()?], 0)?;
        let cond_in = Tensor::f_cat(&[cond, &cond.f_zeros_like()?], 0)?;
        self.with_steps(n, |steps| {
            for step in steps {
                let x_in = Tensor::f_cat(&[&x, &x], 0)?;
                let v = self
                    .estimator
                    .forward(&x_in, &mask_in, &mu_in, &step.time, &spks_in, &cond_in)?;
                x = x.f_add(&step.dt.f_mul(&guide(&v, rate)?)?)?;
            }
            Ok(x)
        })
    }

    /// Streaming setup (upstream `setup_cache`): runs the prompt through encoder and estimator
    /// to fill the caches. `tokens` = prompt tokens plus `pre_lookahead_len` look-ahead tokens;
    /// `prompt_mel` `[1, 2·len(prompt), 80]`.
    pub fn setup_cache(
        &self,
        tokens: &[i64],
        prompt_mel: &Tensor,
        spk: &Tensor,
        n_timesteps: usize,
    ) -> Result<FlowCache> {
        self.check_tokens(tokens, "prompt")?;
        let frames = self.check_prompt_mel(prompt_mel, None)?;
        let la = self.pre_lookahead_len();
        if (tokens.len() as i64 - la) * self.up_rate() != frames {
            return Err(Error::InvalidInput(format!(
                "setup_cache: ({} tokens − {la} look-ahead) × {} must equal the {frames} prompt mel frames",
                tokens.len(),
                self.up_rate()
            )));
        }
        let spks = self.speaker(spk)?;
        let (h, encoder) = self.encoder.forward_chunk(&self.embed(tokens)?, false, None)?;
        let mu = self.encoder_proj.forward(&h)?.f_transpose(1, 2)?.f_contiguous()?;
        let cond = prompt_mel.f_to_device(self.device)?.f_transpose(1, 2)?.f_contiguous()?;
        let (_, estimator) = self.solve_euler_chunk(&mu, &spks, &cond, n_timesteps, None)?;
        Ok(FlowCache { encoder, estimator })
    }

    /// One streaming chunk (upstream `inference_chunk`): `tokens` includes the
    /// `pre_lookahead_len` look-ahead tokens unless `last_chunk`. Returns the chunk's mel
    /// `[1, 80, frames]` and the updated cache.
    pub fn inference_chunk(
        &self,
        tokens: &[i64],
        spk: &Tensor,
        cache: &FlowCache,
        last_chunk: bool,
        n_timesteps: usize,
    ) -> Result<(Tensor, FlowCache)> {
        self.check_tokens(tokens, "generated")?;
        let la = self.pre_lookahead_len() as usize;
        if tokens.is_empty() || (!last_chunk && tokens.len() <= la) {
            return Err(Error::InvalidTokens(format!(
                "a streaming chunk needs more than {la} tokens (look-ahead) unless it is the last; got {}",
                tokens.len()
            )));
        }
        let spks = self.speaker(spk)?;
        let (h, encoder) =
            self.encoder.forward_chunk(&self.embed(tokens)?, last_chunk, Some(&cache.encoder))?;
        let mu = self.encoder_proj.forward(&h)?.f_transpose(1, 2)?.f_contiguous()?;
        let cond = mu.f_zeros_like()?;
        let (feat, estimator) =
            self.solve_euler_chunk(&mu, &spks, &cond, n_timesteps, Some(&cache.estimator))?;
        Ok((feat, FlowCache { encoder, estimator }))
    }

    /// Upstream `forward_chunk` + `solve_euler_chunk`: the noise starts at the estimator
    /// cache length; every Euler step has its own caches.
    fn solve_euler_chunk(
        &self,
        mu: &Tensor,
        spks: &Tensor,
        cond: &Tensor,
        n: usize,
        cache: Option<&Vec<Vec<BlockCache>>>,
    ) -> Result<(Tensor, Vec<Vec<BlockCache>>)> {
        let rate = self.config.decoder.inference_cfg_rate;
        let offset =
            cache.and_then(|c| c.first()).and_then(|b| b.first()).map_or(0, |c| c.att.size()[2]);
        let mut x = self.noise_slice(offset, mu.size()[2])?;
        let mu_in = Tensor::f_cat(&[mu, &mu.f_zeros_like()?], 0)?;
        let spks_in = Tensor::f_cat(&[spks, &spks.f_zeros_like()?], 0)?;
        let cond_in = Tensor::f_cat(&[cond, &cond.f_zeros_like()?], 0)?;
        let mut new_cache = Vec::with_capacity(n);
        self.with_steps(n, |steps| {
            for (i, step) in steps.iter().enumerate() {
                let step_cache = cache.and_then(|c| c.get(i)).map(Vec::as_slice);
                let x_in = x.f_repeat([2, 1, 1])?;
                let (v, c) = self
                    .estimator
                    .forward_chunk(&x_in, &mu_in, &step.time, &spks_in, &cond_in, step_cache)?;
                x = x.f_add(&step.dt.f_mul(&guide(&v, rate)?)?)?;
                new_cache.push(c);
            }
            Ok(())
        })?;
        Ok((x, new_cache))
    }
}

/// `(1 + r)·v_cond − r·v_uncond` from the stacked `[v_cond ; v_uncond]`.
fn guide(v: &Tensor, rate: f64) -> Result<Tensor> {
    let b = v.size()[0] / 2;
    let cond = v.f_narrow(0, 0, b)?;
    let uncond = v.f_narrow(0, b, b)?;
    Ok(cond.f_mul_scalar(1.0 + rate)?.f_sub(&uncond.f_mul_scalar(rate)?)?)
}

/// Frames `offset..offset + frames` of voxloop's fixed noise buffer `[1, mel_bins, 30000]`
/// (row-major, see [`crate::noise`]).
fn default_noise(mel_bins: i64, offset: i64, frames: i64, device: Device) -> Result<Tensor> {
    let mut values = Vec::with_capacity((mel_bins * frames) as usize);
    for bin in 0..mel_bins {
        let row = bin * FLOW_NOISE_FRAMES;
        values.extend(
            (offset..offset + frames)
                .map(|t| standard_normal_at(FLOW_NOISE_SEED, (row + t) as u64)),
        );
    }
    Ok(Tensor::from_slice(&values).f_reshape([1, mel_bins, frames])?.f_to_device(device)?)
}
