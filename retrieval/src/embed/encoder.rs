//! [`SentenceEncoder`]: a sentence-transformers BERT or XLM-RoBERTa checkpoint on tch —
//! all-MiniLM-L6-v2 (the default), paraphrase-multilingual-MiniLM-L12-v2, multilingual-e5-*.
//!
//! What sentence-transformers does (Transformer → Pooling → Normalize) and what is done here:
//!
//! | step | sentence-transformers / transformers | here |
//! |---|---|---|
//! | tokenize | the checkpoint's tokenizer, truncated to `max_seq_length` | `tokenizer.json` via `tokenizers`, its own truncation and padding replaced by `max_seq_length` / none |
//! | embed | word + position + token-type-0 embeddings, LayerNorm | same |
//! | positions | BERT: 0, 1, …; XLM-R: `pad + 1`, `pad + 2`, … over non-pad ids (`create_position_ids_from_input_ids` in transformers `models/xlm_roberta/modeling_xlm_roberta.py`) | same |
//! | encode | N × (self-attention with padding mask → add & LayerNorm → GELU MLP → add & LayerNorm) | same, exact-erf GELU |
//! | pool | mean of token states weighted by the attention mask, or the first token | same, mean denominator clamped at 1e-9 |
//! | normalise | `F.normalize(p=2)` | same (eps 1e-12), always (see [`super::checkpoint`]) |
//!
//! Batches are padded to their longest text (with the padding id, so XLM-R's padded positions
//! get the padding position as in transformers); padded positions are masked out of attention
//! and pooling, so a text's vector does not depend on its batch.
//!
//! Tensor names follow the checkpoint (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, …). transformers' `save_pretrained` of a
//! `BertModel` / `XLMRobertaModel` writes them bare, which is what sentence-transformers saves;
//! checkpoints saved from a task model carry a `bert.` / `roberta.` prefix, which is stripped.
//! The pooler and buffers (`position_ids`) are not used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use tch::nn::{self, Init, VarStore};
use tch::{Device, Kind, Tensor};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};
use voxloop_core::nn::{LayerNorm, Linear};

use super::checkpoint::{Checkpoint, Family, ModelConfig, Pooling, Prefixes};
use super::TextEmbedder;
use crate::{Error, Result};

/// Identifier that indexes built before embedders were pluggable recorded for
/// all-MiniLM-L6-v2; [`SentenceEncoder::accepts`] still opens them with that checkpoint.
pub const MINILM_ID: &str = "sentence-transformers/all-MiniLM-L6-v2 mean-pool l2";

/// Texts per forward pass.
const BATCH: usize = 32;

/// Prefixes checkpoints may have in front of the encoder's tensor names.
const KEY_PREFIXES: [&str; 3] = ["", "bert.", "roberta."];

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
    family: Family,
    pad_id: i64,
}

impl Embeddings {
    fn new(p: nn::Path<'_>, cfg: &ModelConfig, family: Family, pad_id: i64) -> Result<Self> {
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
            family,
            pad_id,
        })
    }

    /// Position ids `[B, L]` (BERT) or `[1, L]` broadcast (XLM-R is per row).
    fn positions(&self, ids: &Tensor) -> Result<Tensor> {
        match self.family {
            Family::Bert => {
                let len = ids.size()[1];
                Ok(self.position.f_narrow(0, 0, len)?.f_unsqueeze(0)?)
            }
            Family::XlmRoberta => {
                // Every non-pad token counts up from pad + 1; pad tokens sit at `pad`.
                let real = ids.f_ne(self.pad_id)?.f_to_kind(Kind::Int64)?;
                let rank = real.f_cumsum(1, Kind::Int64)?.f_mul(&real)?;
                let pos = rank.f_add_scalar(self.pad_id)?;
                Ok(Tensor::f_embedding(&self.position, &pos, -1, false, false)?)
            }
        }
    }

    /// `ids` `[B, L]` → `[B, L, H]`; every token has type 0 (single-segment input).
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let words = Tensor::f_embedding(&self.word, ids, -1, false, false)?;
        let positions = self.positions(ids)?;
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
    fn new(p: nn::Path<'_>, cfg: &ModelConfig) -> Result<Self> {
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
struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooling: Pooling,
    device: Device,
    // Owns the variables the layers hold handles to.
    _vars: VarStore,
}

impl Encoder {
    /// Pooled, L2-normalised sentence vectors for `ids`/`mask` `[B, L]` (Int64).
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
        let pooled = match self.pooling {
            Pooling::Mean => {
                let m = maskf.f_unsqueeze(-1)?;
                let summed = x.f_mul(&m)?.f_sum_dim_intlist(1, false, Kind::Float)?;
                let counts = m.f_sum_dim_intlist(1, false, Kind::Float)?.f_clamp_min(1e-9)?;
                summed.f_div(&counts)?
            }
            Pooling::Cls => x.f_select(1, 0)?,
        };
        let norm = pooled.f_norm_scalaropt_dim(2.0, 1, true)?.f_clamp_min(1e-12)?;
        Ok(pooled.f_div(&norm)?)
    }
}

/// Copies the checkpoint's tensors into `vars`, whose names are the checkpoint's keys without
/// a model prefix. Every variable must be found with its shape; extra tensors (the pooler, a
/// task head) are ignored. Half-precision checkpoints are widened to f32.
fn load_weights(vars: &mut VarStore, path: &Path) -> Result<()> {
    let model_err = |message: String| Error::Model { path: path.to_path_buf(), message };
    let named: HashMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(|e| model_err(e.to_string()))?.into_iter().collect();
    let prefix = KEY_PREFIXES
        .iter()
        .find(|p| named.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
        .ok_or_else(|| {
            model_err(
                "no embeddings.word_embeddings.weight (bare or under bert./roberta.): not a \
                 BERT / XLM-R checkpoint"
                    .into(),
            )
        })?;
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vars.variables() {
        let key = format!("{prefix}{name}");
        let src = named.get(&key).ok_or_else(|| model_err(format!("no tensor {key:?}")))?;
        if src.size() != var.size() {
            return Err(model_err(format!(
                "{key}: shape {:?} in the file, {:?} from config.json",
                src.size(),
                var.size()
            )));
        }
        var.f_copy_(&src.f_to_kind(Kind::Float)?)?;
    }
    Ok(())
}

/// A sentence-transformers BERT or XLM-R checkpoint on libtorch. See the module docs.
///
/// `embed` takes an internal lock (a libtorch tensor is not `Sync`): concurrent calls run one
/// after another, each using libtorch's intra-op threads.
#[derive(Debug)]
pub struct SentenceEncoder {
    model: Mutex<Encoder>,
    tokenizer: Tokenizer,
    checkpoint: Checkpoint,
    prefixes: Prefixes,
    id: String,
}

/// The name callers used when the only checkpoint was all-MiniLM-L6-v2.
pub type MiniLm = SentenceEncoder;

impl SentenceEncoder {
    /// Loads the checkpoint in `dir` (see [`super::checkpoint`] for the files it needs) onto
    /// `device`, with no query or document prefix.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        Self::load_with_prefixes(dir, device, Prefixes::default())
    }

    /// Loads `dir` with the given query / document prefixes (e5: `"query: "`, `"passage: "`).
    pub fn load_with_prefixes(dir: &Path, device: Device, prefixes: Prefixes) -> Result<Self> {
        let checkpoint = Checkpoint::read(dir)?;
        if !checkpoint.include_prompt && prefixes != Prefixes::default() {
            // sentence-transformers would then pool only the text's tokens; not implemented.
            return Err(Error::Model {
                path: dir.to_path_buf(),
                message: "the pooling config has include_prompt = false, which is not \
                          implemented with a query or document prefix"
                    .into(),
            });
        }
        let tok_path = dir.join("tokenizer.json");
        let tok_err =
            |e: tokenizers::Error| Error::Model { path: tok_path.clone(), message: e.to_string() };
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(tok_err)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: checkpoint.max_len,
                ..Default::default()
            }))
            .map_err(tok_err)?;
        tokenizer.with_padding(None::<PaddingParams>);

        let cfg = &checkpoint.config;
        let mut vars = VarStore::new(device);
        let root = vars.root();
        let embeddings =
            Embeddings::new(&root / "embeddings", cfg, checkpoint.family, checkpoint.pad_id)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(&root / "encoder" / "layer" / i, cfg))
            .collect::<Result<Vec<_>>>()?;
        load_weights(&mut vars, &dir.join("model.safetensors"))?;
        let model =
            Encoder { embeddings, layers, pooling: checkpoint.pooling, device, _vars: vars };
        let id = checkpoint.id(&prefixes);
        Ok(Self { model: Mutex::new(model), tokenizer, checkpoint, prefixes, id })
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.checkpoint.dir
    }

    /// The checkpoint as read (config, family, pooling).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The longest input in tokens (longer texts are truncated, as sentence-transformers does).
    pub fn max_len(&self) -> usize {
        self.checkpoint.max_len
    }

    /// The token ids of `text` as the model sees them (`[CLS] … [SEP]` / `<s> … </s>`,
    /// truncated), without any prefix.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenize(format!("{text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.token_ids(t)).collect::<Result<_>>()?;
        let len = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat_ids = vec![self.checkpoint.pad_id; texts.len() * len];
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
        Ok(flat.chunks(self.checkpoint.config.hidden_size).map(<[f32]>::to_vec).collect())
    }

    fn embed_prefixed(&self, prefix: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let prefixed: Vec<String> = chunk.iter().map(|t| format!("{prefix}{t}")).collect();
            out.extend(self.embed_batch(&prefixed)?);
        }
        Ok(out)
    }
}

impl TextEmbedder for SentenceEncoder {
    fn id(&self) -> &str {
        &self.id
    }

    fn accepts(&self, recorded: &str) -> bool {
        recorded == self.id
            || (recorded == MINILM_ID && self.checkpoint.is_legacy_minilm(&self.prefixes))
    }

    fn dim(&self) -> usize {
        self.checkpoint.config.hidden_size
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_prefixed(&self.prefixes.document, texts)
    }

    fn embed_query(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_prefixed(&self.prefixes.query, texts)
    }
}
