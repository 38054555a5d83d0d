//! The Qwen2 decoder of Step-Audio 2 (`model.*` in the checkpoint).
//!
//! - Grouped-query attention: `num_attention_heads` query heads share `num_key_value_heads`
//!   key/value heads (query head `h` reads kv head `h / groups`, as transformers' `repeat_kv`).
//! - q/k/v projections have a bias, the output projection has none.
//! - RoPE with the `rotate_half` convention of transformers (the two halves of each head are
//!   the pair), θ = `rope_theta`; tables computed in f32 as transformers computes them.
//! - SwiGLU MLP (`down(silu(gate(x)) * up(x))`), RMSNorm before attention and MLP, a final
//!   RMSNorm (`model.norm`).
//!
//! Attention goes through libtorch's `scaled_dot_product_attention`: `is_causal` for a prefill
//! on an empty cache, an explicit mask for a prefill on top of cached positions, no mask for a
//! single decoded token.

use tch::nn;
use tch::{Device, Kind, Tensor};

use super::config::TextConfig;
use super::kv_cache::KvCache;
use super::layers::{Embedding, RmsNorm};
use crate::nn::Linear;
use crate::Result;

/// Cosine and sine tables `[max_positions, head_dim]` for RoPE.
#[derive(Debug)]
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
    half: i64,
}

impl Rope {
    pub(crate) fn new(cfg: &TextConfig, kind: Kind, device: Device) -> Result<Self> {
        let dim = cfg.head_dim() as i64;
        let f32_cpu = (Kind::Float, Device::Cpu);
        // inv_freq = 1 / θ^(2i/d) and the angles position · inv_freq, both in f32.
        let exponents = Tensor::f_arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(dim as f64)?;
        let inv_freq = Tensor::f_pow_scalar(cfg.rope_theta, &exponents)?.f_reciprocal()?;
        let positions = Tensor::f_arange(cfg.max_positions() as i64, f32_cpu)?;
        let angles = positions.f_outer(&inv_freq)?;
        let angles = Tensor::f_cat(&[&angles, &angles], 1)?;
        Ok(Self {
            cos: angles.f_cos()?.f_to_kind(kind)?.f_to_device(device)?,
            sin: angles.f_sin()?.f_to_kind(kind)?.f_to_device(device)?,
            half: dim / 2,
        })
    }

    /// Rotates `x` `[1, heads, n, head_dim]` holding positions `offset..offset + n`.
    fn apply(&self, x: &Tensor, offset: i64, n: i64) -> Result<Tensor> {
        let cos = self.cos.f_narrow(0, offset, n)?;
        let sin = self.sin.f_narrow(0, offset, n)?;
        let first = x.f_narrow(3, 0, self.half)?;
        let second = x.f_narrow(3, self.half, self.half)?;
        let rotated = Tensor::f_cat(&[&second.f_neg()?, &first], 3)?;
        let mut out = x.f_mul(&cos)?;
        let _ = out.f_add_(&rotated.f_mul(&sin)?)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: nn::Path<'_>, cfg: &TextConfig) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv) = (cfg.num_attention_heads, cfg.kv_heads());
        Ok(Self {
            q_proj: Linear::new(&p / "q_proj", h, heads * hd, true)?,
            k_proj: Linear::new(&p / "k_proj", h, kv * hd, true)?,
            v_proj: Linear::new(&p / "v_proj", h, kv * hd, true)?,
            o_proj: Linear::new(&p / "o_proj", heads * hd, h, false)?,
            heads: heads as i64,
            kv_heads: kv as i64,
            head_dim: hd as i64,
        })
    }

    /// `x` `[1, n, hidden]` at positions `offset..offset + n`; with a cache, the new keys and
    /// values are appended to layer `layer`'s slot and attention covers every cached position.
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: i64,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let n = x.size()[1];
        let split = |t: Tensor, heads: i64| -> Result<Tensor> {
            Ok(t.f_view([1, n, heads, self.head_dim])?.f_transpose(1, 2)?)
        };
        let q = split(self.q_proj.forward(x)?, self.heads)?;
        let k = split(self.k_proj.forward(x)?, self.kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        let q = rope.apply(&q, offset, n)?;
        let k = rope.apply(&k, offset, n)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.write(layer, &k, &v)?,
            None => (k, v),
        };
        let y = self.attend(&q, &k, &v, offset, n)?;
        let y = y.f_transpose(1, 2)?.f_reshape([1, n, self.heads * self.head_dim])?;
        self.o_proj.forward(&y)
    }

    /// Scaled dot-product attention of `q` `[1, heads, n, d]` over `k`/`v`
    /// `[1, kv_heads, offset + n, d]`, query `i` seeing keys `0..=offset + i`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, offset: i64, n: i64) -> Result<Tensor> {
        let groups = self.heads / self.kv_heads;
        if n == 1 {
            // One new token sees every cached key: fold the query heads of each kv head into
            // rows, so the kv heads are read once and never repeated.
            let folded = q.f_reshape([1, self.kv_heads, groups, self.head_dim])?;
            let y = Tensor::f_scaled_dot_product_attention(
                &folded,
                k,
                v,
                None::<&Tensor>,
                0.0,
                false,
                None,
                false,
            )?;
            return Ok(y.f_reshape([1, self.heads, 1, self.head_dim])?);
        }
        let gqa = groups > 1;
        if offset == 0 {
            return Ok(Tensor::f_scaled_dot_product_attention(
                q,
                k,
                v,
                None::<&Tensor>,
                0.0,
                true,
                None,
                gqa,
            )?);
        }
        // A prefill on top of `offset` cached positions: the causal mask is shifted right.
        let device = q.device();
        let keys = Tensor::f_arange(offset + n, (Kind::Int64, device))?.f_unsqueeze(0)?;
        let last =
            Tensor::f_arange_start(offset, offset + n, (Kind::Int64, device))?.f_unsqueeze(1)?;
        let mask = keys.f_le_tensor(&last)?;
        Ok(Tensor::f_scaled_dot_product_attention(q, k, v, Some(&mask), 0.0, false, None, gqa)?)
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: nn::Path<'_>, cfg: &TextConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(&p / "gate_proj", h, i, false)?,
            up_proj: Linear::new(&p / "up_proj", h, i, false)?,
            down_proj: Linear::new(&p / "down_proj", i, h, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // In place on the fresh projection outputs: no extra [n, intermediate] buffers.
        let mut gate = self.gate_proj.forward(x)?;
        let _ = gate.f_silu_()?;
        let _ = gate.f_mul_(&self.up_proj.forward(x)?)?;
        self.down_proj.forward(&gate)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(p: nn::Path<'_>, cfg: &TextConfig) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: Attention::new(&p / "self_attn", cfg)?,
            mlp: Mlp::new(&p / "mlp", cfg)?,
            input_layernorm: RmsNorm::new(&p / "input_layernorm", h, eps)?,
            post_attention_layernorm: RmsNorm::new(&p / "post_attention_layernorm", h, eps)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: i64,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        // Residual sums are accumulated in place into the sublayers' fresh outputs.
        let mut h =
            self.self_attn.forward(&self.input_layernorm.forward(x)?, rope, offset, cache)?;
        let _ = h.f_add_(x)?;
        let mut out = self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?;
        let _ = out.f_add_(&h)?;
        Ok(out)
    }
}

/// The decoder body: embeddings, layers, final norm (`model.*`).
#[derive(Debug)]
pub(crate) struct Qwen2 {
    pub(crate) embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: Rope,
}

impl Qwen2 {
    /// Builds the variables under `p` (the checkpoint's `model` prefix).
    pub(crate) fn new(p: nn::Path<'_>, cfg: &TextConfig) -> Result<Self> {
        let rope = Rope::new(cfg, p.kind(), p.device())?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&p / "layers" / i, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: Embedding::new(&p / "embed_tokens", cfg.vocab_size, cfg.hidden_size)?,
            layers,
            norm: RmsNorm::new(&p / "norm", cfg.hidden_size, cfg.rms_norm_eps)?,
            rope,
        })
    }

    /// Runs `embeds` `[1, n, hidden]` through the layers and the final norm. With a cache, the
    /// positions continue after the cached ones and are appended to it; without, they start at
    /// 0 and nothing is kept. With `last_only`, only the last position is normed and returned.
    pub(crate) fn forward(
        &self,
        embeds: &Tensor,
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Tensor> {
        let n = embeds.size()[1];
        let offset = cache.as_ref().map_or(0, |c| c.len() as i64);
        if let Some(c) = cache.as_deref_mut() {
            c.reserve(n as usize)?;
        }
        let mut x = embeds.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, &self.rope, offset, slot)?;
        }
        if let Some(c) = cache {
            c.advance(n as usize);
        }
        if last_only {
            x = x.f_narrow(1, n - 1, 1)?;
        }
        self.norm.forward(&x)
    }
}
