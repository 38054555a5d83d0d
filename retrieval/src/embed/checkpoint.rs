//! Reading a sentence-transformers checkpoint directory: which files it must have, what they
//! say, and the fingerprint that names it in index metadata.
//!
//! The layout is what sentence-transformers' `SentenceTransformer.save` writes (and what the
//! hub's `sentence-transformers/*` and `intfloat/multilingual-e5-*` repositories hold):
//!
//! | file | used for |
//! |---|---|
//! | `config.json` | the transformers model config ([`ModelConfig`]): `model_type` `bert` or `xlm-roberta` |
//! | `model.safetensors` | the weights |
//! | `tokenizer.json` | the `tokenizers` tokenizer |
//! | `sentence_bert_config.json` | `max_seq_length` (sentence-transformers ≤ 5); optional |
//! | `tokenizer_config.json` | `model_max_length`, where sentence-transformers 6 keeps the limit instead |
//! | `modules.json` | the module chain: Transformer → Pooling (→ Normalize); optional, see below |
//! | `<pooling path>/config.json` | mean or CLS pooling (`1_Pooling/config.json` by default): the `pooling_mode_*_tokens` flags of sentence-transformers ≤ 5 or the `pooling_mode` string of 6 |
//!
//! The token limit is the first of `max_seq_length`, `model_max_length` and the position table
//! that is set, capped by the position table (sentence-transformers 6 reads it from the
//! tokenizer, `base/modules/transformer.py` `max_seq_length`, and an explicit
//! `max_seq_length` overrides that).
//!
//! Without `modules.json` (sentence-transformers then builds Transformer → mean Pooling) the
//! pooling config is looked for in `1_Pooling/`. A chain with any other module (a `Dense`
//! projection, as LaBSE has, or a custom one) is refused rather than embedded wrongly. The
//! vectors are always L2-normalised, with or without a `Normalize` module, because the index
//! compares them by cosine, which normalisation does not change.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The encoder families the checkpoint's `model_type` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `bert` (all-MiniLM-L6-v2, paraphrase-multilingual-MiniLM-L12-v2 — the latter is BERT
    /// with a 250k multilingual vocabulary).
    Bert,
    /// `xlm-roberta` (multilingual-e5-*, paraphrase-xlm-r-multilingual-v1): BERT layers, but
    /// position ids start after the padding id and there is one token type (see
    /// transformers `models/xlm_roberta/modeling_xlm_roberta.py`, `XLMRobertaEmbeddings`).
    XlmRoberta,
}

impl Family {
    /// The `model_type` string.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::XlmRoberta => "xlm-roberta",
        }
    }
}

/// How token states become one vector (sentence-transformers `Pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the attended tokens.
    Mean,
    /// The first token's state (`<s>` / `[CLS]`).
    Cls,
}

impl Pooling {
    fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
        }
    }
}

/// The fields of transformers' `config.json` that the encoder needs (a subset: unknown fields
/// are ignored, as transformers' own configs carry many).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ModelConfig {
    /// `bert` or `xlm-roberta`.
    pub model_type: String,
    /// Rows of the word embedding.
    pub vocab_size: usize,
    /// Model width; the vector dimension.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position embedding.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding (2 in BERT, 1 in XLM-R).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Only `gelu` (exact erf) is implemented.
    pub hidden_act: String,
    /// Only `absolute` is implemented.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
    /// The padding id: XLM-R's position ids start right after it.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

fn yes() -> bool {
    true
}

fn absolute() -> String {
    "absolute".to_string()
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct TokenizerConfig {
    // A float in some files (transformers writes 1e30 for "no limit").
    #[serde(default)]
    model_max_length: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    /// sentence-transformers 6: `"mean"`, `"cls"`, … or a list of them.
    #[serde(default)]
    pooling_mode: Option<serde_json::Value>,
    /// sentence-transformers 6: whether prompt tokens count in the pooling (default true).
    #[serde(default = "yes")]
    include_prompt: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

/// Text put in front of queries and of documents before tokenizing. The e5 models were
/// trained with `"query: "` and `"passage: "` and expect them; most models want none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// Before search queries.
    pub query: String,
    /// Before indexed descriptions.
    pub document: String,
}

/// A validated checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: ModelConfig,
    /// From `config.json`'s `model_type`.
    pub family: Family,
    /// From the pooling module.
    pub pooling: Pooling,
    /// Longest input in tokens (`max_seq_length`, capped by the position table).
    pub max_len: usize,
    /// The padding id (XLM-R: the position offset, and what batches are padded with).
    pub pad_id: i64,
    /// Whether a prefix's tokens are pooled with the text's (sentence-transformers
    /// `include_prompt`); only `true` is implemented with a prefix.
    pub include_prompt: bool,
    /// Sha-256 over the files that decide the vectors (configs and tokenizer), hex.
    pub fingerprint: String,
}

fn read_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(path)),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn missing(path: &Path) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        message: "missing: a sentence-transformers checkpoint directory needs config.json, \
                  model.safetensors, tokenizer.json and a pooling config \
                  (1_Pooling/config.json, or the Pooling module's in modules.json)"
            .into(),
    }
}

fn model_err(path: PathBuf, message: impl Into<String>) -> Error {
    Error::Model { path, message: message.into() }
}

/// The last segment of a module type: sentence-transformers has moved its modules between
/// packages across versions (`sentence_transformers.models.Pooling`, ...), the class name stays.
fn module_class(kind: &str) -> &str {
    kind.rsplit('.').next().unwrap_or(kind)
}

impl Checkpoint {
    /// Reads and validates `dir`; errors name the file that is missing or wrong.
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(model_err(dir.to_path_buf(), "not a directory"));
        }
        let config_path = dir.join("config.json");
        let config_text = read_text(&config_path)?;
        let config: ModelConfig = serde_json::from_str(&config_text)
            .map_err(|e| model_err(config_path.clone(), e.to_string()))?;
        let family = match config.model_type.as_str() {
            "bert" => Family::Bert,
            "xlm-roberta" => Family::XlmRoberta,
            other => {
                return Err(model_err(
                    config_path,
                    format!(
                        "model_type {other:?}: only \"bert\" and \"xlm-roberta\" are implemented"
                    ),
                ))
            }
        };
        if config.hidden_act != "gelu" || config.position_embedding_type != "absolute" {
            return Err(model_err(
                config_path,
                format!(
                    "hidden_act {:?} / position_embedding_type {:?}: only \"gelu\" / \"absolute\" \
                     are implemented",
                    config.hidden_act, config.position_embedding_type
                ),
            ));
        }
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(model_err(
                config_path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        if config.type_vocab_size == 0 {
            return Err(model_err(config_path, "type_vocab_size is 0"));
        }
        let pad_id = config.pad_token_id.unwrap_or(match family {
            Family::Bert => 0,
            Family::XlmRoberta => 1,
        });
        // XLM-R positions run from pad_id + 1 (transformers `create_position_ids_from_input_ids`),
        // so a table of N rows holds N - pad_id - 1 tokens (514 rows: 512 tokens).
        let positions = match family {
            Family::Bert => config.max_position_embeddings,
            Family::XlmRoberta => config
                .max_position_embeddings
                .saturating_sub(usize::try_from(pad_id + 1).unwrap_or(0)),
        };
        if positions == 0 || pad_id < 0 {
            return Err(model_err(
                config_path,
                format!(
                    "max_position_embeddings {} leaves no positions after pad_token_id {pad_id}",
                    config.max_position_embeddings
                ),
            ));
        }

        let st_path = dir.join("sentence_bert_config.json");
        let (st_text, st) = match std::fs::read_to_string(&st_path) {
            Ok(text) => {
                let st: SentenceBertConfig = serde_json::from_str(&text)
                    .map_err(|e| model_err(st_path.clone(), e.to_string()))?;
                (text, st)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (String::new(), SentenceBertConfig { max_seq_length: None })
            }
            Err(e) => return Err(Error::io(&st_path, e)),
        };
        let mut limit_text = String::new();
        let limit = match st.max_seq_length {
            Some(n) => n,
            None => {
                let path = dir.join("tokenizer_config.json");
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let tc: TokenizerConfig = serde_json::from_str(&text)
                            .map_err(|e| model_err(path.clone(), e.to_string()))?;
                        limit_text = text;
                        // Saturating float-to-int: 1e30 becomes usize::MAX, capped below.
                        tc.model_max_length.map_or(positions, |n| n.max(1.0) as usize)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => positions,
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
        };
        let max_len = limit.min(positions);

        let (pool_path, modules_text) = Self::pooling_path(dir)?;
        let pool_text = read_text(&pool_path)?;
        let pool: PoolingConfig = serde_json::from_str(&pool_text)
            .map_err(|e| model_err(pool_path.clone(), e.to_string()))?;
        let pooling = Self::pooling_mode(&pool).ok_or_else(|| {
            model_err(pool_path.clone(), "only one of mean or CLS pooling is implemented")
        })?;

        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(missing(&tokenizer_path));
        }
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(missing(&weights));
        }
        let mut hash = Sha256::new();
        for part in [&config_text, &st_text, &limit_text, &modules_text, &pool_text] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        let tokenizer_bytes =
            std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        hash.update(&tokenizer_bytes);
        let fingerprint: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            family,
            pooling,
            max_len,
            pad_id,
            include_prompt: pool.include_prompt,
            fingerprint,
        })
    }

    /// The one pooling `pool` asks for, in either config format; `None` for anything else.
    fn pooling_mode(pool: &PoolingConfig) -> Option<Pooling> {
        if let Some(mode) = &pool.pooling_mode {
            let one = match mode {
                serde_json::Value::String(s) => Some(s.as_str()),
                serde_json::Value::Array(list) if list.len() == 1 => list[0].as_str(),
                _ => None,
            };
            return match one? {
                "mean" => Some(Pooling::Mean),
                "cls" => Some(Pooling::Cls),
                _ => None,
            };
        }
        let others = pool.pooling_mode_max_tokens
            || pool.pooling_mode_mean_sqrt_len_tokens
            || pool.pooling_mode_weightedmean_tokens
            || pool.pooling_mode_lasttoken;
        match (pool.pooling_mode_mean_tokens, pool.pooling_mode_cls_token, others) {
            (true, false, false) => Some(Pooling::Mean),
            (false, true, false) => Some(Pooling::Cls),
            _ => None,
        }
    }

    /// The pooling config named by `modules.json` (and that file's text, for the
    /// fingerprint), or `1_Pooling/config.json` when there is no `modules.json`.
    fn pooling_path(dir: &Path) -> Result<(PathBuf, String)> {
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Ok((dir.join("1_Pooling").join("config.json"), String::new()));
        }
        let text = read_text(&modules_path)?;
        let modules: Vec<ModuleEntry> = serde_json::from_str(&text)
            .map_err(|e| model_err(modules_path.clone(), e.to_string()))?;
        let classes: Vec<&str> = modules.iter().map(|m| module_class(&m.kind)).collect();
        let pooling = match classes.as_slice() {
            ["Transformer", "Pooling"] | ["Transformer", "Pooling", "Normalize"] => &modules[1],
            _ => {
                return Err(model_err(
                    modules_path,
                    format!(
                        "modules {classes:?}: only Transformer → Pooling (→ Normalize) is \
                         implemented"
                    ),
                ))
            }
        };
        Ok((dir.join(&pooling.path).join("config.json"), text))
    }

    /// The index-metadata id: family, checkpoint directory name, width, pooling, the start of
    /// the fingerprint, and the prefixes when set (they change every vector).
    pub fn id(&self, prefixes: &Prefixes) -> String {
        let name = self
            .dir
            .file_name()
            .map_or_else(|| self.dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let mut id = format!(
            "{} {name} {}d {}-pool l2 cfg:{}",
            self.family.name(),
            self.config.hidden_size,
            self.pooling.name(),
            &self.fingerprint[..12]
        );
        if !prefixes.query.is_empty() || !prefixes.document.is_empty() {
            id.push_str(&format!(" query:{:?} document:{:?}", prefixes.query, prefixes.document));
        }
        id
    }

    /// Whether this is the checkpoint indexes made before embedders were pluggable recorded
    /// as `legacy_id` ("sentence-transformers/all-MiniLM-L6-v2 mean-pool l2"): the loader
    /// then took any BERT with mean pooling, so the shape of all-MiniLM-L6-v2 (6 × 384, the
    /// 30522 uncased WordPiece vocabulary, 256 tokens) is what identifies it.
    pub fn is_legacy_minilm(&self, prefixes: &Prefixes) -> bool {
        let c = &self.config;
        self.family == Family::Bert
            && self.pooling == Pooling::Mean
            && c.hidden_size == 384
            && c.num_hidden_layers == 6
            && c.vocab_size == 30522
            && self.max_len == 256
            && *prefixes == Prefixes::default()
    }
}
