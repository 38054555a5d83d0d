//! `UpsampleConformerEncoderV2`: speech-token embeddings (25 Hz) → features at 50 Hz.
//!
//! `embed` (Linear + LayerNorm, ×√d, ESPnet relative positions) → `pre_lookahead_layer`
//! (a conv that looks 3 tokens ahead) → `num_blocks` Conformer layers (relative-position
//! self-attention + feed-forward, pre-norm, no conv module) → `up_layer` (nearest ×2, causal
//! conv) → `up_embed` → `num_up_blocks` Conformer layers → `after_norm`.
//!
//! Streaming ([`UpsampleEncoder::forward_chunk`]) keeps upstream's cache layout exactly:
//! `cnn_cache` `[1, d, 2 + 2·stride]` (look-ahead conv tail, then up-sampling conv tail) and
//! `att_cache` `[blocks + up_blocks, 1, heads, 2·t, 2·d_k]` where the first `blocks` entries
//! hold the 25-Hz keys/values tiled twice along time, so both halves stack. Keeping the layout
//! keeps upstream's cache trimming (`Token2wav.stream`) bit-compatible.

use tch::{Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::config::EncoderConfig;
use crate::nn::{
    join, leaky_relu, load_layer_norm, load_linear, Conv1d, ConvSpec, LayerNorm, Linear,
};
use crate::Result;

/// ESPnet's relative positional encoding for `size` positions: `[1, 2·size − 1, d]`, rows for
/// relative positions `size−1, …, 1, 0, −1, …, −(size−1)`, sin on even and cos on odd columns.
fn rel_positions(size: i64, d: i64) -> Result<Tensor> {
    let opts = (Kind::Float, tch::Device::Cpu);
    let position = Tensor::f_arange(size, opts)?.f_unsqueeze(1)?;
    let div_term = Tensor::f_arange_start_step(0, d, 2, opts)?
        .f_mul_scalar(-(10000f64.ln() / d as f64))?
        .f_exp()?;
    let interleave = |angle: &Tensor| -> Result<Tensor> {
        Ok(Tensor::f_stack(&[angle.f_sin()?, angle.f_cos()?], 2)?.f_reshape([size, d])?)
    };
    let positive = interleave(&position.f_mul(&div_term)?)?.f_flip([0])?;
    let negative = interleave(&position.f_mul_scalar(-1)?.f_mul(&div_term)?)?;
    let negative = negative.f_narrow(0, 1, size - 1)?;
    Ok(Tensor::f_cat(&[positive, negative], 0)?.f_unsqueeze(0)?)
}

/// `LinearNoSubsampling` + `EspnetRelPositionalEncoding`.
#[derive(Debug)]
struct Embed {
    linear: Linear,
    norm: LayerNorm,
    xscale: f64,
}

impl Embed {
    fn load(sd: &mut StateDict, prefix: &str, inp: i64, d: i64) -> Result<Self> {
        Ok(Self {
            linear: load_linear(sd, &join(prefix, "out.0"), inp, d, true)?,
            norm: load_layer_norm(sd, &join(prefix, "out.1"), d, 1e-5)?,
            xscale: (d as f64).sqrt(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.norm.forward(&self.linear.forward(x)?)?.f_mul_scalar(self.xscale)?)
    }
}

/// `RelPositionMultiHeadedAttention`.
#[derive(Debug)]
struct RelAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    pos: Linear,
    bias_u: Tensor,
    bias_v: Tensor,
    heads: i64,
    d_k: i64,
}

impl RelAttention {
    fn load(sd: &mut StateDict, prefix: &str, d: i64, heads: i64, key_bias: bool) -> Result<Self> {
        let d_k = d / heads;
        Ok(Self {
            q: load_linear(sd, &join(prefix, "linear_q"), d, d, true)?,
            k: load_linear(sd, &join(prefix, "linear_k"), d, d, key_bias)?,
            v: load_linear(sd, &join(prefix, "linear_v"), d, d, true)?,
            out: load_linear(sd, &join(prefix, "linear_out"), d, d, true)?,
            pos: load_linear(sd, &join(prefix, "linear_pos"), d, d, false)?,
            bias_u: sd.take(&join(prefix, "pos_bias_u"), &[heads, d_k])?,
            bias_v: sd.take(&join(prefix, "pos_bias_v"), &[heads, d_k])?,
            heads,
            d_k,
        })
    }

    /// `x` `[b, t, d]`, `pos_emb` `[1, 2·T − 1, d]` with `T` = cached + new frames; returns the
    /// output and the new cache `[b, h, T, 2·d_k]` (cached keys/values first).
    fn forward(
        &self,
        x: &Tensor,
        pos_emb: &Tensor,
        cache: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, h, dk) = (x.size()[0], self.heads, self.d_k);
        let heads =
            |t: Tensor| -> Result<Tensor> { Ok(t.f_view([b, -1, h, dk])?.f_transpose(1, 2)?) };
        let q = self.q.forward(x)?.f_view([b, -1, h, dk])?; // [b, t, h, dk]
        let mut k = heads(self.k.forward(x)?)?;
        let mut v = heads(self.v.forward(x)?)?;
        if let Some(cache) = cache {
            let kv = cache.f_split(dk, -1)?;
            k = Tensor::f_cat(&[&kv[0], &k], 2)?;
            v = Tensor::f_cat(&[&kv[1], &v], 2)?;
        }
        let new_cache = Tensor::f_cat(&[&k, &v], -1)?;

        let p =
            self.pos.forward(pos_emb)?.f_view([pos_emb.size()[0], -1, h, dk])?.f_transpose(1, 2)?;
        let q_u = q.f_add(&self.bias_u)?.f_transpose(1, 2)?;
        let q_v = q.f_add(&self.bias_v)?.f_transpose(1, 2)?;
        let ac = q_u.f_matmul(&k.f_transpose(-2, -1)?)?;
        let mut bd = q_v.f_matmul(&p.f_transpose(-2, -1)?)?;
        if ac.size() != bd.size() {
            bd = rel_shift(&bd)?;
        }
        let scores = ac.f_add(&bd)?.f_div_scalar((dk as f64).sqrt())?;
        let attn = scores.f_softmax(-1, Kind::Float)?;
        let ctx = attn.f_matmul(&v)?.f_transpose(1, 2)?.f_contiguous()?.f_view([b, -1, h * dk])?;
        Ok((self.out.forward(&ctx)?, new_cache))
    }
}

/// Transformer-XL's shift: turns scores against the `2T − 1` relative positions into scores
/// against the `T` keys (upstream's exact pad/reshape sequence, valid for any query count).
fn rel_shift(x: &Tensor) -> Result<Tensor> {
    let s = x.size();
    let (b, h, t1, n) = (s[0], s[1], s[2], s[3]);
    let zero = Tensor::f_zeros([b, h, t1, 1], (x.kind(), x.device()))?;
    let padded = Tensor::f_cat(&[&zero, x], -1)?.f_view([b, h, n + 1, t1])?;
    let shifted = padded.f_narrow(2, 1, n)?.f_view([b, h, t1, n])?;
    Ok(shifted.f_narrow(3, 0, n / 2 + 1)?)
}

/// `ConformerEncoderLayer` without macaron feed-forward or conv module, pre-norm.
#[derive(Debug)]
struct ConformerLayer {
    attn: RelAttention,
    norm_mha: LayerNorm,
    norm_ff: LayerNorm,
    w1: Linear,
    w2: Linear,
}

impl ConformerLayer {
    fn load(sd: &mut StateDict, prefix: &str, c: &EncoderConfig) -> Result<Self> {
        let d = c.output_size;
        Ok(Self {
            attn: RelAttention::load(
                sd,
                &join(prefix, "self_attn"),
                d,
                c.attention_heads,
                c.key_bias,
            )?,
            norm_mha: load_layer_norm(sd, &join(prefix, "norm_mha"), d, 1e-12)?,
            norm_ff: load_layer_norm(sd, &join(prefix, "norm_ff"), d, 1e-12)?,
            w1: load_linear(sd, &join(prefix, "feed_forward.w_1"), d, c.linear_units, true)?,
            w2: load_linear(sd, &join(prefix, "feed_forward.w_2"), c.linear_units, d, true)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        pos_emb: &Tensor,
        cache: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (att, new_cache) = self.attn.forward(&self.norm_mha.forward(x)?, pos_emb, cache)?;
        let x = x.f_add(&att)?;
        let ff = self.w2.forward(&self.w1.forward(&self.norm_ff.forward(&x)?)?.f_silu()?)?;
        Ok((x.f_add(&ff)?, new_cache))
    }
}

/// `PreLookaheadLayer`: `conv1` sees `lookahead` future tokens, `conv2` two past ones.
#[derive(Debug)]
struct PreLookahead {
    conv1: Conv1d,
    conv2: Conv1d,
    lookahead: i64,
}

impl PreLookahead {
    /// `x` `[b, t, d]` → `[b, t, d]` (future tokens past the end are zeros).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.f_transpose(1, 2)?.f_contiguous()?;
        let y = y.f_constant_pad_nd([0, self.lookahead])?;
        let y = leaky_relu(&self.conv1.forward(&y)?, 0.01)?;
        let y = self.conv2.forward(&y.f_constant_pad_nd([2, 0])?)?;
        Ok(y.f_transpose(1, 2)?.f_contiguous()?.f_add(x)?)
    }

    /// Streaming: `x` `[b, t, d]` includes the look-ahead tokens; returns `t − lookahead`
    /// frames and the new 2-frame cache of `conv1`'s output.
    fn forward_chunk(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let y = x.f_transpose(1, 2)?.f_contiguous()?;
        let y = leaky_relu(&self.conv1.forward(&y)?, 0.01)?;
        let s = y.size();
        let cache = match cache {
            Some(c) => c.shallow_clone(),
            None => Tensor::f_zeros([s[0], s[1], 2], (y.kind(), y.device()))?,
        };
        let new_cache = y.f_narrow(2, s[2] - 2, 2)?;
        let y = self.conv2.forward(&Tensor::f_cat(&[&cache, &y], 2)?)?;
        let t = x.size()[1];
        let residual = x.f_narrow(1, 0, t - self.lookahead)?;
        Ok((y.f_transpose(1, 2)?.f_contiguous()?.f_add(&residual)?, new_cache))
    }
}

/// `Upsample1D`: nearest-neighbour ×stride, then a causal conv of width `2·stride + 1`.
#[derive(Debug)]
struct Upsample {
    conv: Conv1d,
    stride: i64,
    scale: f64,
}

impl Upsample {
    fn nearest(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_upsample_nearest1d_vec(None::<&[i64]>, [self.scale])?)
    }

    /// `x` `[b, d, t]` → `[b, d, stride·t]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.nearest(x)?.f_constant_pad_nd([self.stride * 2, 0])?;
        self.conv.forward(&y)
    }

    fn forward_chunk(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let y = self.nearest(x)?;
        let s = y.size();
        let cache = match cache {
            Some(c) => c.shallow_clone(),
            None => Tensor::f_zeros([s[0], s[1], self.stride * 2], (y.kind(), y.device()))?,
        };
        let y = Tensor::f_cat(&[&cache, &y], 2)?;
        let n = y.size()[2];
        let new_cache = y.f_narrow(2, n - self.stride * 2, self.stride * 2)?;
        Ok((self.conv.forward(&y)?, new_cache))
    }
}

/// Streaming caches of the encoder, in upstream's layout (see the module docs).
#[derive(Debug)]
pub struct EncoderCache {
    /// `[1, d, 2 + 2·stride]`.
    pub cnn: Tensor,
    /// `[blocks + up_blocks, 1, heads, 2·t, 2·d_k]`.
    pub att: Tensor,
}

/// The encoder.
#[derive(Debug)]
pub struct UpsampleEncoder {
    embed: Embed,
    pre_lookahead: PreLookahead,
    encoders: Vec<ConformerLayer>,
    up: Upsample,
    up_embed: Embed,
    up_encoders: Vec<ConformerLayer>,
    after_norm: LayerNorm,
    d: i64,
}

impl UpsampleEncoder {
    pub(crate) fn load(sd: &mut StateDict, prefix: &str, c: &EncoderConfig) -> Result<Self> {
        let d = c.output_size;
        let la = c.pre_lookahead_len;
        let p = |name: &str| join(prefix, name);
        let pre_lookahead = PreLookahead {
            conv1: Conv1d::load(
                sd,
                &p("pre_lookahead_layer.conv1"),
                ConvSpec::new(d, d, la + 1),
                false,
            )?,
            conv2: Conv1d::load(
                sd,
                &p("pre_lookahead_layer.conv2"),
                ConvSpec::new(d, d, 3),
                false,
            )?,
            lookahead: la,
        };
        let encoders = (0..c.num_blocks)
            .map(|i| ConformerLayer::load(sd, &p(&format!("encoders.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        let up = Upsample {
            conv: Conv1d::load(
                sd,
                &p("up_layer.conv"),
                ConvSpec::new(d, d, c.up_stride * 2 + 1),
                false,
            )?,
            stride: c.up_stride,
            scale: c.up_scale_factor,
        };
        let up_encoders = (0..c.num_up_blocks)
            .map(|i| ConformerLayer::load(sd, &p(&format!("up_encoders.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: Embed::load(sd, &p("embed"), c.input_size, d)?,
            pre_lookahead,
            encoders,
            up,
            up_embed: Embed::load(sd, &p("up_embed"), c.input_size, d)?,
            up_encoders,
            after_norm: load_layer_norm(sd, &p("after_norm"), d, 1e-5)?,
            d,
        })
    }

    /// Output width.
    pub fn output_size(&self) -> i64 {
        self.d
    }

    /// Up-sampling factor (2).
    pub fn up_rate(&self) -> i64 {
        self.up.stride
    }

    /// Look-ahead tokens (3).
    pub fn lookahead(&self) -> i64 {
        self.pre_lookahead.lookahead
    }

    fn positions(&self, size: i64, like: &Tensor) -> Result<Tensor> {
        Ok(rel_positions(size, self.d)?.f_to_device(like.device())?)
    }

    /// Offline: `xs` `[1, t, d_in]` embedded tokens → `[1, stride·t, d]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut x = self.embed.forward(xs)?;
        let pos = self.positions(x.size()[1], &x)?;
        x = self.pre_lookahead.forward(&x)?;
        for layer in &self.encoders {
            x = layer.forward(&x, &pos, None)?.0;
        }
        x = self.up.forward(&x.f_transpose(1, 2)?.f_contiguous()?)?;
        x = self.up_embed.forward(&x.f_transpose(1, 2)?.f_contiguous()?)?;
        let pos = self.positions(x.size()[1], &x)?;
        for layer in &self.up_encoders {
            x = layer.forward(&x, &pos, None)?.0;
        }
        Ok(self.after_norm.forward(&x)?)
    }

    /// Streaming (upstream `forward_chunk`): `xs` `[1, t, d_in]` embedded tokens including
    /// the look-ahead tokens (on the last chunk the look-ahead is zero padding added here).
    /// Returns `stride · (t − lookahead)` frames (`stride · t` on the last chunk).
    pub fn forward_chunk(
        &self,
        xs: &Tensor,
        last_chunk: bool,
        cache: Option<&EncoderCache>,
    ) -> Result<(Tensor, EncoderCache)> {
        let n_enc = self.encoders.len() as i64;
        let offset1 = match cache {
            Some(c) => c.att.size()[3] / 2,
            None => 0,
        };
        let mut x = self.embed.forward(xs)?;
        if last_chunk {
            x = x.f_constant_pad_nd([0, 0, 0, self.pre_lookahead.lookahead])?;
        }
        let cnn1 = cache.map(|c| c.cnn.f_narrow(2, 0, 2)).transpose()?;
        let cnn2 = cache.map(|c| c.cnn.f_narrow(2, 2, self.up.stride * 2)).transpose()?;
        let (mut x, new_cnn1) = self.pre_lookahead.forward_chunk(&x, cnn1.as_ref())?;

        let pos = self.positions(offset1 + x.size()[1], &x)?;
        let mut new_att1 = Vec::with_capacity(self.encoders.len());
        for (i, layer) in self.encoders.iter().enumerate() {
            let layer_cache =
                cache.map(|c| c.att.f_get(i as i64)?.f_narrow(2, 0, offset1)).transpose()?;
            let (y, kv) = layer.forward(&x, &pos, layer_cache.as_ref())?;
            x = y;
            new_att1.push(kv);
        }

        let (y, new_cnn2) =
            self.up.forward_chunk(&x.f_transpose(1, 2)?.f_contiguous()?, cnn2.as_ref())?;
        let mut x = self.up_embed.forward(&y.f_transpose(1, 2)?.f_contiguous()?)?;
        let pos = self.positions(offset1 * self.up.stride + x.size()[1], &x)?;
        let mut new_att2 = Vec::with_capacity(self.up_encoders.len());
        for (i, layer) in self.up_encoders.iter().enumerate() {
            let layer_cache = cache.map(|c| c.att.f_get(n_enc + i as i64)).transpose()?;
            let (y, kv) = layer.forward(&x, &pos, layer_cache.as_ref())?;
            x = y;
            new_att2.push(kv);
        }
        let x = self.after_norm.forward(&x)?;

        let mut parts = Vec::with_capacity(2);
        if !new_att1.is_empty() {
            parts.push(Tensor::f_stack(&new_att1, 0)?.f_repeat([1, 1, 1, 2, 1])?);
        }
        if !new_att2.is_empty() {
            parts.push(Tensor::f_stack(&new_att2, 0)?);
        }
        let att = Tensor::f_cat(&parts, 0)?;
        let cnn = Tensor::f_cat(&[new_cnn1, new_cnn2], 2)?;
        Ok((x, EncoderCache { cnn, att }))
    }
}
