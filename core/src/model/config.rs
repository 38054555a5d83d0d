//! `config.json` of a Step-Audio 2 checkpoint.
//!
//! The structs mirror the file's field names (those of Step-Audio-2-mini's `config.json`, read by
//! StepFun's vLLM fork in `vllm/transformers_utils/configs/step_audio.py`). Unknown fields are
//! ignored; a missing required field is an error that names the field, its section and the file.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{Error, Result};

/// Width of the adaptor's hidden layer when `audio_encoder_config` does not say: upstream
/// (`Adaptor` in the vLLM fork and the HF remote code) hard-codes 2048.
pub const DEFAULT_ADAPTER_STATE: usize = 2048;

/// The whole `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `model_type` (`"step_audio_2"` for the released checkpoints), if the file has one.
    pub model_type: Option<String>,
    /// `architectures`, if the file has them.
    pub architectures: Vec<String>,
    /// The Qwen2 decoder (`text_config`).
    pub text: TextConfig,
    /// The audio encoder and adaptor (`audio_encoder_config`).
    pub audio: AudioEncoderConfig,
}

/// An `eos_token_id` field: one id or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

/// `text_config`: a plain Qwen2 decoder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// Key/value heads. Step-Audio 2's own config class calls them `num_attention_groups`; the
    /// released file has both keys. At least one must be present.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub num_attention_groups: Option<usize>,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    /// Per-head width; Qwen2 derives it as `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Only `null` (plain RoPE) is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Qwen2's default: the LM head has its own weight (`lm_head.weight`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Only `"silu"` is supported.
    #[serde(default)]
    pub hidden_act: Option<String>,
}

/// `audio_encoder_config`: the Whisper-style encoder and the adaptor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AudioEncoderConfig {
    pub n_mels: usize,
    /// Length of the positional table: the most encoder frames (after conv2) one chunk may have.
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    /// Width of the adaptor output, the decoder's hidden size.
    pub llm_dim: usize,
    /// Adaptor convolution kernel (padding is 1).
    pub kernel_size: usize,
    /// Adaptor convolution stride.
    pub adapter_stride: usize,
    #[serde(default)]
    pub n_codebook_size: Option<usize>,
    /// Adaptor hidden width. Not an upstream key (upstream hard-codes 2048, the default here);
    /// tiny test checkpoints set it to stay small.
    #[serde(default = "default_adapter_state")]
    pub adapter_state: usize,
}

fn default_adapter_state() -> usize {
    DEFAULT_ADAPTER_STATE
}

impl TextConfig {
    /// Key/value heads (`num_key_value_heads`, else `num_attention_groups`).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.or(self.num_attention_groups).unwrap_or(0)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The most positions the decoder handles (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }
}

impl AudioEncoderConfig {
    /// Number of `<audio_patch>` rows the adaptor yields for one mel chunk of `mel_frames`
    /// frames (upstream `compute_token_num`: the last 2 frames are padding, conv2 and the
    /// average pool halve the rest, the adaptor convolution downsamples by its stride).
    pub fn patch_count(&self, mel_frames: usize) -> usize {
        let valid = mel_frames as i64 - 2;
        let encoded = patch_div(patch_div(valid + 1, 2), 2);
        self.adaptor_len(encoded)
    }

    /// Output length of the adaptor convolution for `len` encoder frames.
    pub(crate) fn adaptor_len(&self, len: i64) -> usize {
        let span = len + 2 - self.kernel_size as i64;
        let out = patch_div(span, self.adapter_stride.max(1) as i64) + 1;
        out.max(0) as usize
    }
}

/// Floor division, as Python's `//` (for the negative spans of very short chunks).
fn patch_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

impl Config {
    /// Reads and checks `path` (a checkpoint's `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ModelFileRead { path: path.to_path_buf(), source })?;
        Self::from_json_str(&text, path)
    }

    /// Parses and checks the text of a `config.json`; `path` only names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let fail = |message: String| Error::ModelConfig { path: path.to_path_buf(), message };
        let root: serde_json::Value =
            serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        let obj = root.as_object().ok_or_else(|| fail("not a JSON object".into()))?;
        let section =
            |key: &str| obj.get(key).cloned().ok_or_else(|| fail(format!("missing field `{key}`")));
        let text: TextConfig = parse_section("text_config", section("text_config")?, &fail)?;
        let audio: AudioEncoderConfig =
            parse_section("audio_encoder_config", section("audio_encoder_config")?, &fail)?;
        let model_type = obj.get("model_type").and_then(|v| v.as_str()).map(str::to_owned);
        let architectures = obj
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let cfg = Self { model_type, architectures, text, audio };
        cfg.validate().map_err(fail)?;
        Ok(cfg)
    }

    /// Checks the relations the model code relies on.
    fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.text;
        let a = &self.audio;
        let positive = [
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_attention_heads", t.num_attention_heads),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.max_position_embeddings", t.max_position_embeddings),
            ("audio_encoder_config.n_mels", a.n_mels),
            ("audio_encoder_config.n_audio_ctx", a.n_audio_ctx),
            ("audio_encoder_config.n_audio_state", a.n_audio_state),
            ("audio_encoder_config.n_audio_head", a.n_audio_head),
            ("audio_encoder_config.llm_dim", a.llm_dim),
            ("audio_encoder_config.kernel_size", a.kernel_size),
            ("audio_encoder_config.adapter_stride", a.adapter_stride),
            ("audio_encoder_config.adapter_state", a.adapter_state),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("field `{name}` must be positive"));
        }
        if t.num_key_value_heads.is_none() && t.num_attention_groups.is_none() {
            return Err("text_config: missing field `num_key_value_heads`".into());
        }
        let kv = t.kv_heads();
        if kv == 0 || t.num_attention_heads % kv != 0 {
            return Err(format!(
                "text_config: num_attention_heads ({}) is not a multiple of num_key_value_heads ({kv})",
                t.num_attention_heads
            ));
        }
        if t.head_dim.is_none() && t.hidden_size % t.num_attention_heads != 0 {
            return Err(format!(
                "text_config: hidden_size ({}) is not a multiple of num_attention_heads ({})",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if t.head_dim() % 2 != 0 {
            return Err(format!("text_config: head_dim {} is odd; RoPE needs pairs", t.head_dim()));
        }
        if !(t.rope_theta > 0.0 && t.rms_norm_eps > 0.0) {
            return Err("text_config: rope_theta and rms_norm_eps must be positive".into());
        }
        if t.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("text_config: rope_scaling is not supported (only null)".into());
        }
        if let Some(act) = t.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(format!("text_config: hidden_act {act:?} is not supported (only silu)"));
        }
        if a.n_audio_state % a.n_audio_head != 0 {
            return Err(format!(
                "audio_encoder_config: n_audio_state ({}) is not a multiple of n_audio_head ({})",
                a.n_audio_state, a.n_audio_head
            ));
        }
        if a.llm_dim != t.hidden_size {
            return Err(format!(
                "audio_encoder_config.llm_dim ({}) differs from text_config.hidden_size ({})",
                a.llm_dim, t.hidden_size
            ));
        }
        Ok(())
    }
}

/// Deserializes one section, prefixing serde's message ("missing field `x`") with its name.
fn parse_section<T: DeserializeOwned>(
    name: &str,
    value: serde_json::Value,
    fail: &impl Fn(String) -> Error,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| fail(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{
      "architectures": ["StepAudio2ForCausalLM"], "model_type": "step_audio_2",
      "text_config": {
        "hidden_size": 3584, "intermediate_size": 18944,
        "num_attention_heads": 28, "num_attention_groups": 4, "num_key_value_heads": 4,
        "num_hidden_layers": 28, "max_seq_len": 16384, "vocab_size": 158720,
        "rms_norm_eps": 1e-06, "eos_token_id": 151643, "pad_token_id": 151643,
        "rope_theta": 1000000.0, "max_position_embeddings": 16384,
        "rope_scaling": null, "torch_dtype": "bfloat16", "some_future_key": [1, 2] },
      "audio_encoder_config": {
        "n_mels": 128, "n_audio_ctx": 1500, "n_audio_state": 1280, "n_audio_head": 20,
        "n_audio_layer": 32, "n_codebook_size": 4096, "llm_dim": 3584,
        "kernel_size": 3, "adapter_stride": 2 }
    }"#;

    fn parse(text: &str) -> Result<Config> {
        Config::from_json_str(text, Path::new("/ckpt/config.json"))
    }

    #[test]
    fn parses_the_released_mini_config() {
        let cfg = parse(MINI).unwrap();
        assert_eq!(cfg.model_type.as_deref(), Some("step_audio_2"));
        assert_eq!(cfg.text.kv_heads(), 4);
        assert_eq!(cfg.text.head_dim(), 128);
        assert_eq!(cfg.text.eos_token_id, Some(TokenIds::One(151643)));
        assert_eq!(cfg.audio.adapter_state, DEFAULT_ADAPTER_STATE);
        assert!(!cfg.text.tie_word_embeddings);
    }

    #[test]
    fn patch_count_follows_the_upstream_formula() {
        let cfg = parse(MINI).unwrap();
        // 25 s = 2502 frames → 313 patches (stepfun-ai/Step-Audio2 `utils.py`
        // `compute_token_num`); tiny chunks give none.
        let upstream = |t: i64| {
            let enc = (t - 2 + 1).div_euclid(2).div_euclid(2);
            ((enc + 2 - 3).div_euclid(2) + 1).max(0) as usize
        };
        assert_eq!(cfg.audio.patch_count(2502), 313);
        for t in 0..3100 {
            assert_eq!(cfg.audio.patch_count(t as usize), upstream(t), "frames {t}");
        }
    }

    #[test]
    fn a_missing_field_is_named_with_its_section_and_file() {
        let text = MINI.replace("\"rope_theta\": 1000000.0,", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("text_config") && err.contains("rope_theta"), "{err}");
        assert!(err.contains("/ckpt/config.json"), "{err}");
        let text = MINI.replace("\"n_audio_head\": 20,", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("audio_encoder_config") && err.contains("n_audio_head"), "{err}");
    }

    #[test]
    fn kv_heads_fall_back_to_attention_groups_and_one_is_required() {
        let cfg = parse(&MINI.replace("\"num_key_value_heads\": 4,", "")).unwrap();
        assert_eq!(cfg.text.kv_heads(), 4);
        let text = MINI
            .replace("\"num_key_value_heads\": 4,", "")
            .replace("\"num_attention_groups\": 4,", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn inconsistent_shapes_are_rejected() {
        let err = parse(&MINI.replace("\"llm_dim\": 3584", "\"llm_dim\": 4096")).unwrap_err();
        assert!(err.to_string().contains("llm_dim"), "{err}");
        let err = parse(&MINI.replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 5"))
            .unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
        let err = parse(
            &MINI.replace("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\"}"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("rope_scaling"), "{err}");
    }
}
