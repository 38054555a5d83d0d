//! all-MiniLM-L6-v2 on tch: a 6-layer BERT encoder, mean pooling over real tokens, L2 norm.
//!
//! What sentence-transformers does with this model (its `modules.json`: Transformer → Pooling
//! → Normalize; `sentence_bert_config.json`: `max_seq_length` 256), and what is done here:
//!
//! | step | sentence-transformers / transformers `BertModel` | here |
//! |---|---|---|
//! | tokenize | BERT WordPiece, lowercase, `[CLS] … [SEP]`, truncated to 256 | `tokenizer.json` via `tokenizers`, its own 128-token truncation and padding replaced by 256 / none |
//! | embed | word + absolute position + token-type-0 embeddings, LayerNorm | same |
//! | encode | 6 × (self-attention with padding mask → add & LayerNorm → GELU MLP → add & LayerNorm) | same, exact-erf GELU |
//! | pool | mean of token states weighted by the attention mask | same, denominator clamped at 1e-9 |
//! | normalise | `F.normalize(p=2)` | same (eps 1e-12) |
//!
//! Batches are padded to their longest text; padded positions are masked out of attention and
//! pooling, so a text's vector does not depend on its batch.
//!
//! Tensor names follow the checkpoint (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, …); the checkpoint's pooler and
//! `position_ids` buffer are not used.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use tch::nn::{self, Init, VarStore};
use tch::{Device, Kind, Tensor};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};
use voxloop_core::nn::{LayerNorm, Linear};

use super::TextEmbedder;
use crate::{Error, Result};

/// Identifier of this embedder in index metadata.
pub const MINILM_ID: &str = "sentence-transformers/all-MiniLM-L6-v2 mean-pool l2";

/// Texts per forward pass.
const BATCH: usize = 32;

/// The fields of the checkpoint's `config.json` that the encoder needs.
#[derive(Debug, Clone, Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".to_string()
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Model { path: path.to_path_buf(), message: e.to_string() })
}

fn var(p: &nn::Path<'_>, name: &str, dims: &[usize]) -> Result<Tensor> {
    let dims: Vec<i64> = dims.iter().map(|d| *d as i64).collect();
    Ok(p.f_var(name, &dims, Init::Const(0.0))?)
}

#[derive(Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn new(p: nn::Path<'_>, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: var(&(&p / "word_embeddings"), "weight", &[cfg.vocab_size, h])?,
            position: var(
                &(&p / "position_embeddings"),
                "weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: var(&(&p / "token_type_embeddings"), "weight", &[cfg.type_vocab_size, h])?,
            norm: LayerNorm::new(&p / "LayerNorm", h, cfg.layer_norm_eps)?,
        })
    }

    /// `ids` `[B, L]` → `[B, L, H]`; every token has type 0 (single-segment input).
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let len = ids.size()[1];
        let words = Tensor::f_embedding(&self.word, ids, -1, false, false)?;
        let positions = self.position.f_narrow(0, 0, len)?.f_unsqueeze(0)?;
        let types = self.token_type.f_narrow(0, 0, 1)?.f_unsqueeze(0)?;
        Ok(self.norm.forward(&words.f_add(&positions)?.f_add(&types)?)?)
    }
}

#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: i64,
}

impl Layer {
    fn new(p: nn::Path<'_>, cfg: &BertConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let att = &p / "attention";
        Ok(Self {
            query: Linear::new(&att / "self" / "query", h, h, true)?,
            key: Linear::new(&att / "self" / "key", h, h, true)?,
            value: Linear::new(&att / "self" / "value", h, h, true)?,
            attn_out: Linear::new(&att / "output" / "dense", h, h, true)?,
            attn_norm: LayerNorm::new(&att / "output" / "LayerNorm", h, eps)?,
            intermediate: Linear::new(&p / "intermediate" / "dense", h, i, true)?,
            output: Linear::new(&p / "output" / "dense", i, h, true)?,
            out_norm: LayerNorm::new(&p / "output" / "LayerNorm", h, eps)?,
            heads: cfg.num_attention_heads as i64,
        })
    }

    /// `x` `[B, L, H]`, `bias` `[B, 1, 1, L]` (0 for tokens, a large negative for padding).
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, l, h) = (x.size()[0], x.size()[1], x.size()[2]);
        let d = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.f_view([b, l, self.heads, d])?.f_transpose(1, 2)?)
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = q.f_matmul(&k.f_transpose(-1, -2)?)?.f_div_scalar((d as f64).sqrt())?;
        let probs = scores.f_add(bias)?.f_softmax(-1, Kind::Float)?;
        let ctx = probs.f_matmul(&v)?.f_transpose(1, 2)?.f_contiguous()?.f_view([b, l, h])?;
        let x = self.attn_norm.forward(&self.attn_out.forward(&ctx)?.f_add(x)?)?;
        let inner = self.intermediate.forward(&x)?.f_gelu("none")?;
        Ok(self.out_norm.forward(&self.output.forward(&inner)?.f_add(&x)?)?)
    }
}

#[derive(Debug)]
struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    device: Device,
    // Owns the variables the layers hold handles to.
    _vars: VarStore,
}

impl Bert {
    /// Mean-pooled, L2-normalised sentence vectors for `ids`/`mask` `[B, L]` (Int64).
    fn sentence_vectors(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let maskf = mask.f_to_kind(Kind::Float)?;
        // [B, 1, 1, L]: 0 where attended, the most negative f32 where padded (as transformers).
        let bias = maskf
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_mul_scalar(f64::from(f32::MIN))?
            .f_view([mask.size()[0], 1, 1, mask.size()[1]])?;
        let mut x = self.embeddings.forward(ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        let m = maskf.f_unsqueeze(-1)?;
        let summed = x.f_mul(&m)?.f_sum_dim_intlist(1, false, Kind::Float)?;
        let counts = m.f_sum_dim_intlist(1, false, Kind::Float)?.f_clamp_min(1e-9)?;
        let mean = summed.f_div(&counts)?;
        let norm = mean.f_norm_scalaropt_dim(2.0, 1, true)?.f_clamp_min(1e-12)?;
        Ok(mean.f_div(&norm)?)
    }
}

/// sentence-transformers/all-MiniLM-L6-v2 on libtorch. See the module docs.
///
/// `embed` takes an internal lock (a libtorch tensor is not `Sync`): concurrent calls run one
/// after another, each using libtorch's intra-op threads.
#[derive(Debug)]
pub struct MiniLm {
    model: Mutex<Bert>,
    tokenizer: Tokenizer,
    dim: usize,
    max_len: usize,
    dir: PathBuf,
}

impl MiniLm {
    /// Loads the model from a directory holding `config.json`, `model.safetensors`,
    /// `tokenizer.json`, `sentence_bert_config.json` and `1_Pooling/config.json` (what
    /// `scripts/minilm.sh` prints), onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let model_err = |path: PathBuf, message: String| Error::Model { path, message };
        let cfg: BertConfig = read_json(&dir.join("config.json"))?;
        if cfg.hidden_act != "gelu" || cfg.position_embedding_type != "absolute" {
            return Err(model_err(
                dir.join("config.json"),
                format!(
                    "hidden_act {:?} / position_embedding_type {:?}: only \"gelu\" / \"absolute\" \
                     are implemented",
                    cfg.hidden_act, cfg.position_embedding_type
                ),
            ));
        }
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(model_err(
                dir.join("config.json"),
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    cfg.hidden_size, cfg.num_attention_heads
                ),
            ));
        }
        let st: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let max_len = st.max_seq_length.min(cfg.max_position_embeddings);
        let pool_path = dir.join("1_Pooling").join("config.json");
        let pool: PoolingConfig = read_json(&pool_path)?;
        if !pool.pooling_mode_mean_tokens
            || pool.pooling_mode_cls_token
            || pool.pooling_mode_max_tokens
            || pool.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(model_err(pool_path, "only mean pooling is implemented".into()));
        }

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| model_err(tok_path.clone(), e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| model_err(tok_path.clone(), e.to_string()))?;
        tokenizer.with_padding(None::<PaddingParams>);

        let mut vars = VarStore::new(device);
        let root = vars.root();
        let embeddings = Embeddings::new(&root / "embeddings", &cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(&root / "encoder" / "layer" / i, &cfg))
            .collect::<Result<Vec<_>>>()?;
        let weights = dir.join("model.safetensors");
        vars.load(&weights).map_err(|e| model_err(weights.clone(), e.to_string()))?;
        let model = Bert { embeddings, layers, device, _vars: vars };
        Ok(Self {
            model: Mutex::new(model),
            tokenizer,
            dim: cfg.hidden_size,
            max_len,
            dir: dir.to_path_buf(),
        })
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The longest input in tokens (longer texts are truncated, as sentence-transformers does).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The token ids of `text` as the model sees them (`[CLS] … [SEP]`, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenize(format!("{text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.token_ids(t)).collect::<Result<_>>()?;
        let len = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat_ids = vec![0i64; texts.len() * len];
        let mut flat_mask = vec![0i64; texts.len() * len];
        for (row, seq) in ids.iter().enumerate() {
            for (col, id) in seq.iter().enumerate() {
                flat_ids[row * len + col] = i64::from(*id);
                flat_mask[row * len + col] = 1;
            }
        }
        let shape = [texts.len() as i64, len as i64];
        let model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ids_t = Tensor::from_slice(&flat_ids).f_view(shape)?.f_to_device(model.device)?;
        let mask_t = Tensor::from_slice(&flat_mask).f_view(shape)?.f_to_device(model.device)?;
        let out = model.sentence_vectors(&ids_t, &mask_t)?.f_to_device(Device::Cpu)?;
        drop(model);
        let flat: Vec<f32> = Vec::<f32>::try_from(out.f_flatten(0, -1)?)?;
        Ok(flat.chunks(self.dim).map(<[f32]>::to_vec).collect())
    }
}

impl TextEmbedder for MiniLm {
    fn id(&self) -> &str {
        MINILM_ID
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }
}
