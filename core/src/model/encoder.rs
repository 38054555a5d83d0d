//! The audio encoder (`encoder.*`) and adaptor (`adapter.*`) of Step-Audio 2.
//!
//! Structure as in StepFun's vLLM fork (`mm_step_audio.py`: `AudioEncoder`, `Adaptor`) and the
//! official HF remote code:
//! - `conv1` (n_mels → n_state, k3, p1) + GELU, `conv2` (k3, stride 2, p1) + GELU: 50 Hz;
//! - plus the learned positional table's first rows (`positional_embedding.weight`);
//! - pre-LN residual blocks: attention (`query` and `value` with bias, `key` without, `out`),
//!   scale `(n_state / heads)^-0.5` (upstream splits it as `^-0.25` on q and on k), padded
//!   frames masked with an additive `-1e10`; MLP `n_state → 4·n_state → n_state` with GELU;
//! - average pooling (2, stride 2): 25 Hz, then `after_norm`;
//! - adaptor: `conv` (k = kernel_size, stride = adapter_stride, p1) + GELU, `linear1` + ReLU,
//!   `linear2` to the decoder width: 12.5 Hz.
//!
//! Chunks are encoded as one zero-padded batch with valid length `T_i - 2` each, as the
//! official HF wrapper (`padding_mels`) does, so even a short last chunk matches upstream.

use tch::nn;
use tch::{Kind, Tensor};

use super::config::AudioEncoderConfig;
use super::layers::{gelu, Conv1d, Embedding};
use crate::nn::{LayerNorm, Linear};
use crate::{Error, Result};

/// The encoder's LayerNorms use PyTorch's default epsilon (`nn.LayerNorm(width)`).
const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Debug)]
struct EncoderAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    heads: i64,
}

impl EncoderAttention {
    fn new(p: nn::Path<'_>, width: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            query: Linear::new(&p / "query", width, width, true)?,
            key: Linear::new(&p / "key", width, width, false)?,
            value: Linear::new(&p / "value", width, width, true)?,
            out: Linear::new(&p / "out", width, width, true)?,
            heads: heads as i64,
        })
    }

    /// `x` `[B, T, D]`, `bias` `[B, 1, 1, T]` (0 for valid keys, -1e10 for padding).
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let size = x.size();
        let (b, t, d) = (size[0], size[1], size[2]);
        let per_head = d / self.heads;
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.f_view([b, t, self.heads, per_head])?.f_transpose(1, 2)?)
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scale = (per_head as f64).powf(-0.5);
        let y = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(bias),
            0.0,
            false,
            scale,
            false,
        )?;
        self.out.forward(&y.f_transpose(1, 2)?.f_reshape([b, t, d])?)
    }
}

#[derive(Debug)]
struct Block {
    attn: EncoderAttention,
    attn_ln: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    mlp_ln: LayerNorm,
}

impl Block {
    fn new(p: nn::Path<'_>, width: usize, heads: usize) -> Result<Self> {
        let mlp = &p / "mlp";
        Ok(Self {
            attn: EncoderAttention::new(&p / "attn", width, heads)?,
            attn_ln: LayerNorm::new(&p / "attn_ln", width, LAYER_NORM_EPS)?,
            mlp_in: Linear::new(&mlp / 0, width, 4 * width, true)?,
            mlp_out: Linear::new(&mlp / 2, 4 * width, width, true)?,
            mlp_ln: LayerNorm::new(&p / "mlp_ln", width, LAYER_NORM_EPS)?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let x = x.f_add(&self.attn.forward(&self.attn_ln.forward(x)?, bias)?)?;
        let hidden = gelu(&self.mlp_in.forward(&self.mlp_ln.forward(&x)?)?)?;
        Ok(x.f_add(&self.mlp_out.forward(&hidden)?)?)
    }
}

/// The Whisper-style audio encoder (`encoder.*`).
#[derive(Debug)]
pub(crate) struct AudioEncoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positional_embedding: Embedding,
    blocks: Vec<Block>,
    after_norm: LayerNorm,
}

impl AudioEncoder {
    pub(crate) fn new(p: nn::Path<'_>, cfg: &AudioEncoderConfig) -> Result<Self> {
        let w = cfg.n_audio_state;
        let blocks = (0..cfg.n_audio_layer)
            .map(|i| Block::new(&p / "blocks" / i, w, cfg.n_audio_head))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: Conv1d::new(&p / "conv1", cfg.n_mels, w, 3, 1, 1)?,
            conv2: Conv1d::new(&p / "conv2", w, w, 3, 2, 1)?,
            positional_embedding: Embedding::new(&p / "positional_embedding", cfg.n_audio_ctx, w)?,
            blocks,
            after_norm: LayerNorm::new(&p / "after_norm", w, LAYER_NORM_EPS)?,
        })
    }

    /// `mels` `[B, n_mels, T]` (zero-padded), `lengths` the valid mel frames of each row.
    /// Returns `[B, T'', n_state]` (25 Hz) and each row's valid encoder frames.
    fn forward(&self, mels: &Tensor, lengths: &[i64]) -> Result<(Tensor, Vec<i64>)> {
        let frames = mels.size()[2];
        let x = gelu(&self.conv1.forward(mels)?)?;
        let x = gelu(&self.conv2.forward(&x)?)?.f_transpose(1, 2)?;
        let t = x.size()[1];
        // Mask over mel frames, then every other one starting at (T + 1) % 2: the parity
        // upstream subsamples with (`mask[:, :, (T + 1) % 2::2]`).
        let device = mels.device();
        let lens = Tensor::f_from_slice(lengths)?.f_to_device(device)?.f_unsqueeze(1)?;
        let picked =
            Tensor::f_arange_start_step((frames + 1) % 2, frames, 2, (Kind::Int64, device))?
                .f_narrow(0, 0, t)?
                .f_unsqueeze(0)?;
        let padding = picked.f_ge_tensor(&lens)?.f_to_kind(x.kind())?;
        let bias = padding.f_mul_scalar(-1.0e10)?.f_unsqueeze(1)?.f_unsqueeze(1)?;
        let table = self.positional_embedding.weight.f_narrow(0, 0, t)?;
        let mut x = x.f_add(&table)?;
        for block in &self.blocks {
            x = block.forward(&x, &bias)?;
        }
        let x = x.f_transpose(1, 2)?.f_avg_pool1d([2], [2], [0], false, true)?.f_transpose(1, 2)?;
        let x = self.after_norm.forward(&x)?;
        Ok((x, lengths.iter().map(|l| (l + 1) / 2 / 2).collect()))
    }
}

/// The adaptor from encoder frames to decoder embeddings (`adapter.*`).
#[derive(Debug)]
pub(crate) struct Adaptor {
    conv: Conv1d,
    linear1: Linear,
    linear2: Linear,
}

impl Adaptor {
    pub(crate) fn new(p: nn::Path<'_>, cfg: &AudioEncoderConfig) -> Result<Self> {
        let w = cfg.n_audio_state;
        Ok(Self {
            conv: Conv1d::new(&p / "conv", w, w, cfg.kernel_size, cfg.adapter_stride, 1)?,
            linear1: Linear::new(&p / "linear1", w, cfg.adapter_state, true)?,
            linear2: Linear::new(&p / "linear2", cfg.adapter_state, cfg.llm_dim, true)?,
        })
    }

    /// `x` `[B, T, n_state]` → `[B, T', llm_dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = gelu(&self.conv.forward(&x.f_transpose(1, 2)?)?)?.f_transpose(1, 2)?;
        self.linear2.forward(&self.linear1.forward(&x)?.f_relu()?)
    }
}

/// Encodes mel chunks `[n_mels, T_i]` as one padded batch and returns each chunk's adaptor
/// rows `[patches_i, llm_dim]`, in order.
///
/// A chunk too short to give a row (a few trailing samples of a long recording; upstream writes
/// `<audio_start><audio_end>` for it) gets an empty `[0, llm_dim]` and is left out of the batch;
/// it is never the longest chunk unless all are that short, so the batch is what upstream's
/// would be.
pub(crate) fn encode_chunks(
    encoder: &AudioEncoder,
    adaptor: &Adaptor,
    cfg: &AudioEncoderConfig,
    chunks: &[Tensor],
    kind: Kind,
    device: tch::Device,
) -> Result<Vec<Tensor>> {
    let mut frames = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.iter().enumerate() {
        let bad = |message: String| Error::InvalidAudioChunk { index, message };
        let size = chunk.size();
        if size.len() != 2 || size[0] != cfg.n_mels as i64 {
            return Err(bad(format!(
                "expected a mel of shape [{}, frames], got {size:?}",
                cfg.n_mels
            )));
        }
        let encoded = (size[1] + 1) / 2;
        if encoded > cfg.n_audio_ctx as i64 {
            return Err(bad(format!(
                "{} mel frames give {encoded} encoder positions, more than n_audio_ctx {}",
                size[1], cfg.n_audio_ctx
            )));
        }
        frames.push(size[1]);
    }
    let used: Vec<usize> =
        (0..chunks.len()).filter(|&i| cfg.patch_count(frames[i] as usize) > 0).collect();
    let mut out: Vec<Tensor> = Vec::with_capacity(chunks.len());
    for _ in 0..chunks.len() {
        out.push(Tensor::f_zeros([0, cfg.llm_dim as i64], (kind, device))?);
    }
    let Some(longest) = used.iter().map(|&i| frames[i]).max() else {
        return Ok(out);
    };
    let mut padded = Vec::with_capacity(used.len());
    for &i in &used {
        let chunk = chunks[i].f_to_device(device)?.f_to_kind(kind)?;
        padded.push(chunk.f_constant_pad_nd([0, longest - frames[i]])?);
    }
    let batch = Tensor::f_stack(&padded, 0)?;
    let lengths: Vec<i64> = used.iter().map(|&i| frames[i] - 2).collect();
    let (x, encoded) = encoder.forward(&batch, &lengths)?;
    let rows = adaptor.forward(&x)?;
    for (row, (&i, len)) in used.iter().zip(&encoded).enumerate() {
        let count = cfg.adaptor_len(*len) as i64;
        out[i] = rows.f_select(0, row as i64)?.f_narrow(0, 0, count)?;
    }
    Ok(out)
}
