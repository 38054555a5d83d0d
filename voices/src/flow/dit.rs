//! The flow-matching estimator: upstream's `DiT` ("DiT-v5").
//!
//! Input channels are `[x; mu; speaker; cond]` (4 × 80), projected to `hidden_size`; each
//! `DiTBlock` applies adaLN-Zero-modulated self-attention (QK LayerNorm), a causal conv block
//! (conv k=3 → LayerNorm → Mish → conv k=3) and a tanh-GELU MLP, all three gated by the
//! timestep embedding; the final layer modulates and projects back to 80 mel bins.
//!
//! Streaming ([`Dit::forward_chunk`]) keeps, per block, the two causal convs' last two input
//! frames (`[b, 2·hidden, 2]`) and the attention keys/values `[b, heads, t, 2·head_dim]`.
//! As upstream, the new frames' keys/values are put *before* the cached ones.

use tch::{Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::config::DitConfig;
use crate::nn::{join, load_layer_norm, load_linear, Conv1d, ConvSpec, LayerNorm, Linear};
use crate::{Error, Result};

/// Width of the sinusoidal timestep features.
const FREQ_DIM: i64 = 256;

/// `TimestepEmbedder`: sinusoidal features of `1000·t`, then Linear → SiLU → Linear.
#[derive(Debug)]
struct TimestepEmbedder {
    l1: Linear,
    l2: Linear,
}

impl TimestepEmbedder {
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let half = FREQ_DIM / 2;
        let freqs = Tensor::f_arange(half, (Kind::Int64, t.device()))?
            .f_mul_scalar(-(10000f64.ln()))?
            .f_div_scalar(half as f64)?
            .f_exp()?
            .f_to_kind(t.kind())?;
        let args = t.f_mul_scalar(1000)?.f_unsqueeze(1)?.f_mul(&freqs.f_unsqueeze(0)?)?;
        let features = Tensor::f_cat(&[args.f_cos()?, args.f_sin()?], -1)?;
        Ok(self.l2.forward(&self.l1.forward(&features)?.f_silu()?)?)
    }
}

/// Multi-head self-attention with LayerNorm on queries and keys.
#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: LayerNorm,
    k_norm: LayerNorm,
    proj: Linear,
    heads: i64,
    head_dim: i64,
}

impl Attention {
    fn load(sd: &mut StateDict, prefix: &str, c: &DitConfig) -> Result<Self> {
        let (dim, inner) = (c.hidden_size, c.num_heads * c.head_dim);
        let p = |n: &str| join(prefix, n);
        Ok(Self {
            q: load_linear(sd, &p("to_q"), dim, inner, true)?,
            k: load_linear(sd, &p("to_k"), dim, inner, true)?,
            v: load_linear(sd, &p("to_v"), dim, inner, true)?,
            q_norm: load_layer_norm(sd, &p("q_norm"), c.head_dim, 1e-5)?,
            k_norm: load_layer_norm(sd, &p("k_norm"), c.head_dim, 1e-5)?,
            proj: load_linear(sd, &p("proj"), inner, dim, true)?,
            heads: c.num_heads,
            head_dim: c.head_dim,
        })
    }

    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        Ok(x.f_reshape([s[0], s[1], self.heads, s[2] / self.heads])?.f_transpose(1, 2)?)
    }

    /// `x` `[b, t, c]`; `mask` `[b, 1, 1, t]` (bool) or none. `chunk`: `None` offline (no
    /// cache is built); `Some(cache)` streaming, with the previous keys/values
    /// `[b, h, t', 2·hd]` (`None` on the first chunk). Returns the output and, when
    /// streaming, the new cache (new keys/values first, as upstream).
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        chunk: Option<Option<&Tensor>>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let s = x.size();
        let q = self.q_norm.forward(&self.heads(&self.q.forward(x)?)?)?;
        let k = self.k_norm.forward(&self.heads(&self.k.forward(x)?)?)?;
        let v = self.heads(&self.v.forward(x)?)?;
        let (k, v, new_cache) = match chunk {
            None => (k, v, None),
            Some(cache) => {
                // Build the new cache once and attend to views of it, rather than joining
                // keys and values separately and then again into the cache.
                let mut kv = Tensor::f_cat(&[&k, &v], 3)?;
                if let Some(cache) = cache {
                    kv = Tensor::f_cat(&[&kv, cache], 2)?;
                }
                let k = kv.f_narrow(3, 0, self.head_dim)?;
                let v = kv.f_narrow(3, self.head_dim, self.head_dim)?;
                (k, v, Some(kv))
            }
        };
        let y = Tensor::f_scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, None, false)?;
        let y = y.f_transpose(1, 2)?.f_reshape([s[0], s[1], -1])?;
        Ok((self.proj.forward(&y)?, new_cache))
    }
}

/// A conv of width 3 padded with the previous two frames (zeros at the start).
#[derive(Debug)]
struct CausalConv {
    conv: Conv1d,
    channels: i64,
}

impl CausalConv {
    /// `x` `[b, c, t]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&x.f_constant_pad_nd([2, 0])?)
    }

    fn forward_chunk(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let cache = match cache {
            Some(c) => c.shallow_clone(),
            None => Tensor::f_zeros([x.size()[0], self.channels, 2], (x.kind(), x.device()))?,
        };
        let x = Tensor::f_cat(&[&cache, x], 2)?;
        let n = x.size()[2];
        let new_cache = x.f_narrow(2, n - 2, 2)?;
        Ok((self.conv.forward(&x)?, new_cache))
    }
}

/// `CausalConvBlock`: conv → LayerNorm → Mish → conv, on `[b, t, c]`.
#[derive(Debug)]
struct ConvBlock {
    conv1: CausalConv,
    norm: LayerNorm,
    conv2: CausalConv,
    channels: i64,
}

impl ConvBlock {
    fn load(sd: &mut StateDict, prefix: &str, c: i64) -> Result<Self> {
        let conv = |sd: &mut StateDict, i: usize| -> Result<CausalConv> {
            let conv = Conv1d::load(
                sd,
                &join(prefix, &format!("block.{i}")),
                ConvSpec::new(c, c, 3),
                false,
            )?;
            Ok(CausalConv { conv, channels: c })
        };
        Ok(Self {
            conv1: conv(sd, 1)?,
            norm: load_layer_norm(sd, &join(prefix, "block.3"), c, 1e-5)?,
            conv2: conv(sd, 6)?,
            channels: c,
        })
    }

    /// With `cache` = `Some(..)` (streaming, possibly an empty first cache) the convs run in
    /// chunk mode and the new `[b, 2c, 2]` cache is returned.
    fn forward(
        &self,
        x: &Tensor,
        chunk: Option<Option<&Tensor>>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let y = x.f_transpose(1, 2)?;
        match chunk {
            None => {
                let y = self.conv1.forward(&y)?.f_transpose(1, 2)?;
                let y = self.norm.forward(&y)?.f_mish()?.f_transpose(1, 2)?;
                Ok((self.conv2.forward(&y)?.f_transpose(1, 2)?, None))
            }
            Some(cache) => {
                let (c1, c2) = match cache {
                    Some(c) => {
                        let parts = c.f_split_with_sizes([self.channels, self.channels], 1)?;
                        (Some(parts[0].shallow_clone()), Some(parts[1].shallow_clone()))
                    }
                    None => (None, None),
                };
                let (y, n1) = self.conv1.forward_chunk(&y, c1.as_ref())?;
                let y = self.norm.forward(&y.f_transpose(1, 2)?)?.f_mish()?.f_transpose(1, 2)?;
                let (y, n2) = self.conv2.forward_chunk(&y, c2.as_ref())?;
                Ok((y.f_transpose(1, 2)?, Some(Tensor::f_cat(&[n1, n2], 1)?)))
            }
        }
    }
}

/// An adaLN modulation: `shift` and `1 + scale`, each `[b, 1, hidden]`.
#[derive(Debug)]
struct Modulation {
    shift: Tensor,
    scale1: Tensor,
}

impl Modulation {
    fn new(shift: &Tensor, scale: &Tensor) -> Result<Self> {
        Ok(Self { shift: shift.shallow_clone(), scale1: scale.f_add_scalar(1)? })
    }

    /// `x · (1 + scale) + shift`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_mul(&self.scale1)?.f_add(&self.shift)?)
    }
}

/// The modulations and gates of one block (attention, MLP, conv) for one timestep.
#[derive(Debug)]
struct BlockTime {
    msa: Modulation,
    msa_gate: Tensor,
    mlp: Modulation,
    mlp_gate: Tensor,
    conv: Modulation,
    conv_gate: Tensor,
}

/// Everything the estimator computes from the timestep alone: the adaLN modulations of every
/// block and of the final layer. Upstream recomputes them in every call; they depend only on
/// `t`, so the flow computes them once per Euler step of its schedule ([`Dit::time`]).
#[derive(Debug)]
pub struct TimeConditioning {
    blocks: Vec<BlockTime>,
    /// The final layer's.
    last: Modulation,
    batch: i64,
}

impl TimeConditioning {
    /// The batch size it was computed for.
    pub fn batch(&self) -> i64 {
        self.batch
    }
}

/// One `DiTBlock`.
#[derive(Debug)]
struct Block {
    norm: LayerNorm,
    attn: Attention,
    fc1: Linear,
    fc2: Linear,
    conv: ConvBlock,
    ada: Linear,
}

/// Per-block streaming caches.
#[derive(Debug)]
pub struct BlockCache {
    /// `[b, 2·hidden, 2]`.
    pub cnn: Tensor,
    /// `[b, heads, t, 2·head_dim]`.
    pub att: Tensor,
}

impl Block {
    fn load(sd: &mut StateDict, prefix: &str, c: &DitConfig) -> Result<Self> {
        let h = c.hidden_size;
        let mlp = (h as f64 * c.mlp_ratio) as i64;
        let p = |n: &str| join(prefix, n);
        Ok(Self {
            norm: LayerNorm::plain(h, 1e-6),
            attn: Attention::load(sd, &p("attn"), c)?,
            fc1: load_linear(sd, &p("mlp.fc1"), h, mlp, true)?,
            fc2: load_linear(sd, &p("mlp.fc2"), mlp, h, true)?,
            conv: ConvBlock::load(sd, &p("conv"), h)?,
            ada: load_linear(sd, &p("adaLN_modulation.1"), h, 9 * h, true)?,
        })
    }

    /// `chunk`: `None` offline; `Some(cache)` streaming (cache `None` on the first chunk).
    /// The block's modulations from `silu(temb)` `[b, 1, hidden]`.
    fn time(&self, c: &Tensor) -> Result<BlockTime> {
        let m = self.ada.forward(c)?.f_chunk(9, -1)?;
        Ok(BlockTime {
            msa: Modulation::new(&m[0], &m[1])?,
            msa_gate: m[2].shallow_clone(),
            mlp: Modulation::new(&m[3], &m[4])?,
            mlp_gate: m[5].shallow_clone(),
            conv: Modulation::new(&m[6], &m[7])?,
            conv_gate: m[8].shallow_clone(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        m: &BlockTime,
        mask: Option<&Tensor>,
        chunk: Option<Option<&BlockCache>>,
    ) -> Result<(Tensor, Option<BlockCache>)> {
        let h = m.msa.apply(&self.norm.forward(x)?)?;
        let (att, new_att) = self.attn.forward(&h, mask, chunk.map(|c| c.map(|c| &c.att)))?;
        let x = x.f_add(&m.msa_gate.f_mul(&att)?)?;

        let h = m.conv.apply(&self.norm.forward(&x)?)?;
        let (conv, new_cnn) = self.conv.forward(&h, chunk.map(|c| c.map(|c| &c.cnn)))?;
        let x = x.f_add(&m.conv_gate.f_mul(&conv)?)?;

        let h = m.mlp.apply(&self.norm.forward(&x)?)?;
        let mlp = self.fc2.forward(&self.fc1.forward(&h)?.f_gelu("tanh")?)?;
        let x = x.f_add(&m.mlp_gate.f_mul(&mlp)?)?;
        let cache = new_cnn.zip(new_att).map(|(cnn, att)| BlockCache { cnn, att });
        Ok((x, cache))
    }
}

/// The DiT estimator.
#[derive(Debug)]
pub struct Dit {
    t_embedder: TimestepEmbedder,
    in_proj: Linear,
    blocks: Vec<Block>,
    final_ada: Linear,
    final_norm: LayerNorm,
    final_linear: Linear,
}

impl Dit {
    pub(crate) fn load(sd: &mut StateDict, prefix: &str, c: &DitConfig) -> Result<Self> {
        let h = c.hidden_size;
        let p = |n: &str| join(prefix, n);
        let blocks = (0..c.depth)
            .map(|i| Block::load(sd, &p(&format!("blocks.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            t_embedder: TimestepEmbedder {
                l1: load_linear(sd, &p("t_embedder.mlp.0"), FREQ_DIM, h, true)?,
                l2: load_linear(sd, &p("t_embedder.mlp.2"), h, h, true)?,
            },
            in_proj: load_linear(sd, &p("in_proj"), c.in_channels, h, true)?,
            blocks,
            final_ada: load_linear(sd, &p("final_layer.adaLN_modulation.1"), h, 2 * h, true)?,
            final_norm: LayerNorm::plain(h, 1e-6),
            final_linear: load_linear(sd, &p("final_layer.linear"), h, c.out_channels, true)?,
        })
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// The time conditioning for timesteps `t` `[b]`: the timestep embedding and, from it,
    /// the adaLN modulations of every block and of the final layer.
    pub fn time(&self, t: &Tensor) -> Result<TimeConditioning> {
        let c = self.t_embedder.forward(t)?.f_unsqueeze(1)?.f_silu()?;
        let blocks = self.blocks.iter().map(|b| b.time(&c)).collect::<Result<Vec<_>>>()?;
        let m = self.final_ada.forward(&c)?.f_chunk(2, -1)?;
        Ok(TimeConditioning { blocks, last: Modulation::new(&m[0], &m[1])?, batch: t.size()[0] })
    }

    /// `[x; mu; spks (repeated over time); cond]` → `[b, t, 4·80]` → in_proj.
    fn prepare(&self, x: &Tensor, mu: &Tensor, spks: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let frames = x.size()[2];
        let spks = spks.f_unsqueeze(2)?.f_expand([-1, -1, frames], false)?;
        let h = Tensor::f_cat(&[x, mu, &spks, cond], 1)?.f_transpose(1, 2)?;
        Ok(self.in_proj.forward(&h)?)
    }

    fn finish(&self, x: &Tensor, time: &TimeConditioning) -> Result<Tensor> {
        let x = time.last.apply(&self.final_norm.forward(x)?)?;
        Ok(self.final_linear.forward(&x)?.f_transpose(1, 2)?)
    }

    fn check_time(&self, time: &TimeConditioning, x: &Tensor) -> Result<()> {
        if time.blocks.len() != self.blocks.len() || time.batch != x.size()[0] {
            return Err(Error::InvalidInput(format!(
                "time conditioning for {} blocks and batch {} used with {} blocks and batch {}",
                time.blocks.len(),
                time.batch,
                self.blocks.len(),
                x.size()[0]
            )));
        }
        Ok(())
    }

    /// Offline velocity: `x`, `mu`, `cond` `[b, 80, t]`, `mask` `[b, 1, t]`, the time
    /// conditioning of timesteps `[b]` ([`Dit::time`]), `spks` `[b, 80]` → `[b, 80, t]`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        mu: &Tensor,
        time: &TimeConditioning,
        spks: &Tensor,
        cond: &Tensor,
    ) -> Result<Tensor> {
        self.check_time(time, x)?;
        let mut h = self.prepare(x, mu, spks, cond)?;
        let attn_mask = mask.f_to_kind(Kind::Bool)?;
        // A mask that keeps every frame (always the case for one utterance) changes nothing:
        // attention without one takes the faster kernel path.
        let attn_mask = if attn_mask.f_all()?.f_int64_value(&[])? != 0 {
            None
        } else {
            Some(attn_mask.f_unsqueeze(1)?)
        };
        for (block, m) in self.blocks.iter().zip(&time.blocks) {
            h = block.forward(&h, m, attn_mask.as_ref(), None)?.0;
        }
        self.finish(&h, time)
    }

    /// Streaming velocity with per-block caches (`None` on the first chunk).
    pub fn forward_chunk(
        &self,
        x: &Tensor,
        mu: &Tensor,
        time: &TimeConditioning,
        spks: &Tensor,
        cond: &Tensor,
        cache: Option<&[BlockCache]>,
    ) -> Result<(Tensor, Vec<BlockCache>)> {
        self.check_time(time, x)?;
        let mut h = self.prepare(x, mu, spks, cond)?;
        let mut new_cache = Vec::with_capacity(self.blocks.len());
        for (i, (block, m)) in self.blocks.iter().zip(&time.blocks).enumerate() {
            let (y, c) = block.forward(&h, m, None, Some(cache.and_then(|c| c.get(i))))?;
            h = y;
            if let Some(c) = c {
                new_cache.push(c);
            }
        }
        Ok((self.finish(&h, time)?, new_cache))
    }
}
