//! Hyper-parameters: the official `flow.yaml`, read as data, and HiFT's constructor defaults.
//!
//! `flow.yaml` is a hyperpyyaml file: upstream *executes* its `!new:` tags (they name Python
//! classes to instantiate). Here the file is plain YAML data: the four tags of the official
//! file are accepted exactly where the official file has them and are then dropped; any other
//! tag (`!ref`, `!apply`, `!name`, another class) is an error, so nothing in the file can ask
//! for code to run. Field names are upstream's constructor arguments; unknown fields are
//! errors (they would be settings this implementation silently ignores).
//!
//! `hift.pt` comes with no config: upstream builds `HiFTGenerator()` with its defaults, which
//! [`HiftConfig::default`] mirrors.

use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::{Error, Result};

/// The `!new:` tags of the official `flow.yaml`, by the dotted path of the node they tag.
pub const FLOW_TAGS: [(&str, &str); 4] = [
    ("flow", "!new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec"),
    ("flow.encoder", "!new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2"),
    ("flow.decoder", "!new:cosyvoice2.flow.flow_matching.CausalConditionalCFM"),
    ("flow.decoder.estimator", "!new:cosyvoice2.flow.decoder_dit.DiT"),
];

/// `CausalMaskedDiffWithXvec` (the `flow:` node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Token embedding width.
    pub input_size: i64,
    /// Mel bins (80).
    pub output_size: i64,
    /// Speaker embedding width (CAM++ x-vector, 192).
    pub spk_embed_dim: i64,
    /// Always `mel`.
    #[serde(default = "default_output_type")]
    pub output_type: String,
    /// Speech-token codebook size (6561).
    pub vocab_size: i64,
    /// The `encoder:` node.
    pub encoder: EncoderConfig,
    /// The `decoder:` node.
    pub decoder: DecoderConfig,
}

fn default_output_type() -> String {
    "mel".into()
}

/// `UpsampleConformerEncoderV2` (the `encoder:` node). Defaults are upstream's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub input_size: i64,
    #[serde(default = "d256")]
    pub output_size: i64,
    #[serde(default = "d_linear")]
    pub input_layer: String,
    #[serde(default = "d3")]
    pub pre_lookahead_len: i64,
    #[serde(default = "d6")]
    pub num_blocks: i64,
    #[serde(default = "d4")]
    pub num_up_blocks: i64,
    #[serde(default = "d2")]
    pub up_stride: i64,
    #[serde(default = "d2f")]
    pub up_scale_factor: f64,
    #[serde(default = "d4")]
    pub attention_heads: i64,
    #[serde(default = "d_rel_pos")]
    pub pos_enc_layer_type: String,
    #[serde(default = "d_rel_attn")]
    pub selfattention_layer_type: String,
    #[serde(default = "d_true")]
    pub key_bias: bool,
    #[serde(default = "d2048")]
    pub linear_units: i64,
    /// Training only (dropout is inactive at inference).
    #[serde(default)]
    pub dropout_rate: f64,
    /// Training only.
    #[serde(default)]
    pub positional_dropout_rate: f64,
    /// Training only.
    #[serde(default)]
    pub attention_dropout_rate: f64,
    #[serde(default = "d_true")]
    pub normalize_before: bool,
    #[serde(default = "d_swish")]
    pub activation_type: String,
}

/// `CausalConditionalCFM` (the `decoder:` node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Classifier-free guidance: `(1 + r)·cond − r·uncond`.
    #[serde(default = "d07")]
    pub inference_cfg_rate: f64,
    /// The `estimator:` node.
    pub estimator: DitConfig,
}

/// `DiT` (the `estimator:` node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// `x`, `mu`, speaker and condition stacked: 4 × mel bins.
    pub in_channels: i64,
    pub out_channels: i64,
    #[serde(default = "d4f")]
    pub mlp_ratio: f64,
    #[serde(default = "d28")]
    pub depth: i64,
    #[serde(default = "d8")]
    pub num_heads: i64,
    #[serde(default = "d64")]
    pub head_dim: i64,
    #[serde(default = "d256")]
    pub hidden_size: i64,
}

fn d2() -> i64 {
    2
}
fn d3() -> i64 {
    3
}
fn d4() -> i64 {
    4
}
fn d6() -> i64 {
    6
}
fn d8() -> i64 {
    8
}
fn d28() -> i64 {
    28
}
fn d64() -> i64 {
    64
}
fn d256() -> i64 {
    256
}
fn d2048() -> i64 {
    2048
}
fn d2f() -> f64 {
    2.0
}
fn d4f() -> f64 {
    4.0
}
fn d07() -> f64 {
    0.7
}
fn d_true() -> bool {
    true
}
fn d_linear() -> String {
    "linear".into()
}
fn d_rel_pos() -> String {
    "rel_pos_espnet".into()
}
fn d_rel_attn() -> String {
    "rel_selfattn".into()
}
fn d_swish() -> String {
    "swish".into()
}

impl FlowConfig {
    /// Reads and validates `flow.yaml`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::File { path: path.to_path_buf(), source })?;
        Self::from_yaml(&text)
            .map_err(|message| Error::Config { path: path.to_path_buf(), message })
    }

    /// Parses and validates the text of a `flow.yaml`; the error is a message naming the field.
    pub fn from_yaml(text: &str) -> std::result::Result<Self, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let Value::Mapping(top) = doc else {
            return Err("the top level must be a mapping with a `flow` key".into());
        };
        let mut flow = None;
        for (key, value) in top {
            match key.as_str() {
                Some("flow") => flow = Some(value),
                Some(other) => return Err(format!("unsupported top-level key `{other}`")),
                None => return Err(format!("unsupported top-level key {key:?}")),
            }
        }
        let flow = flow.ok_or("no `flow` key")?;
        let flow = untag(flow, "flow")?;
        let config: FlowConfig = serde_yaml::from_value(flow).map_err(|e| format!("flow: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings the Rust graph does not implement.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let e = &self.encoder;
        let d = &self.decoder.estimator;
        let checks: [(bool, String); 14] = [
            (self.output_type == "mel", format!("flow.output_type `{}`: only `mel`", self.output_type)),
            (e.input_layer == "linear", format!("flow.encoder.input_layer `{}`: only `linear`", e.input_layer)),
            (
                e.pos_enc_layer_type == "rel_pos_espnet",
                format!("flow.encoder.pos_enc_layer_type `{}`: only `rel_pos_espnet`", e.pos_enc_layer_type),
            ),
            (
                e.selfattention_layer_type == "rel_selfattn",
                format!(
                    "flow.encoder.selfattention_layer_type `{}`: only `rel_selfattn`",
                    e.selfattention_layer_type
                ),
            ),
            (e.activation_type == "swish", format!("flow.encoder.activation_type `{}`: only `swish`", e.activation_type)),
            (e.normalize_before, "flow.encoder.normalize_before: only `true`".into()),
            (
                e.input_size == self.input_size,
                format!("flow.encoder.input_size {} differs from flow.input_size {}", e.input_size, self.input_size),
            ),
            (
                e.input_size == e.output_size,
                format!(
                    "flow.encoder.input_size {} must equal output_size {} (the up-sampled stream re-enters a Linear(input_size, output_size))",
                    e.input_size, e.output_size
                ),
            ),
            (
                e.up_scale_factor == e.up_stride as f64,
                format!("flow.encoder.up_scale_factor {} must equal up_stride {}", e.up_scale_factor, e.up_stride),
            ),
            (
                e.attention_heads > 0 && e.output_size % e.attention_heads == 0,
                format!("flow.encoder.attention_heads {} must divide output_size {}", e.attention_heads, e.output_size),
            ),
            (
                d.in_channels == 4 * self.output_size,
                format!("flow.decoder.estimator.in_channels {} must be 4 × output_size {}", d.in_channels, self.output_size),
            ),
            (
                d.out_channels == self.output_size,
                format!("flow.decoder.estimator.out_channels {} must equal output_size {}", d.out_channels, self.output_size),
            ),
            (
                e.pre_lookahead_len >= 1 && e.up_stride >= 1 && e.num_blocks >= 0 && e.num_up_blocks >= 0,
                "flow.encoder: pre_lookahead_len and up_stride must be ≥ 1".into(),
            ),
            (
                self.vocab_size > 0 && d.depth >= 1 && d.num_heads >= 1 && d.head_dim >= 1 && d.mlp_ratio > 0.0,
                "flow: vocab_size, estimator depth/num_heads/head_dim/mlp_ratio must be positive".into(),
            ),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(message),
            None => Ok(()),
        }
    }
}

/// Removes the tag of the node at `path` after checking it is the official one, recursing into
/// mappings; any tag elsewhere, or a different tag, is an error.
fn untag(value: Value, path: &str) -> std::result::Result<Value, String> {
    let expected = FLOW_TAGS.iter().find(|(p, _)| *p == path).map(|(_, tag)| *tag);
    let inner = match (value, expected) {
        (Value::Tagged(tagged), Some(tag)) => {
            let found = tagged.tag.to_string();
            if found != tag {
                return Err(format!("`{path}` has tag {found}, expected {tag}"));
            }
            tagged.value
        }
        (Value::Tagged(tagged), None) => {
            return Err(format!("`{path}` has the unsupported tag {}", tagged.tag));
        }
        (_, Some(tag)) => return Err(format!("`{path}` must be tagged {tag}")),
        (other, None) => other,
    };
    match inner {
        Value::Mapping(map) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, child) in map {
                let name = key
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{path}` has a non-string key {key:?}"))?;
                let child = untag(child, &format!("{path}.{name}"))?;
                out.insert(key, child);
            }
            Ok(Value::Mapping(out))
        }
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| untag(item, &format!("{path}[{i}]")))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Value::Sequence),
        other => Ok(other),
    }
}

/// `HiFTGenerator` hyper-parameters; [`Default`] is upstream's `HiFTGenerator()`, which is what
/// the official `hift.pt` is loaded into. The NSF source uses `SourceModuleHnNSF2` (any
/// sampling rate but 22050).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HiftConfig {
    pub in_channels: i64,
    pub base_channels: i64,
    pub nb_harmonics: i64,
    pub sampling_rate: i64,
    pub nsf_alpha: f64,
    pub nsf_sigma: f64,
    pub nsf_voiced_threshold: f64,
    pub upsample_rates: Vec<i64>,
    pub upsample_kernel_sizes: Vec<i64>,
    pub istft_n_fft: i64,
    pub istft_hop_len: i64,
    pub resblock_kernel_sizes: Vec<i64>,
    pub resblock_dilation_sizes: Vec<Vec<i64>>,
    pub source_resblock_kernel_sizes: Vec<i64>,
    pub source_resblock_dilation_sizes: Vec<Vec<i64>>,
    pub lrelu_slope: f64,
    pub audio_limit: f64,
    /// `ConvRNNF0Predictor(cond_channels=…)`.
    pub f0_cond_channels: i64,
}

impl Default for HiftConfig {
    fn default() -> Self {
        Self {
            in_channels: 80,
            base_channels: 512,
            nb_harmonics: 8,
            sampling_rate: 24000,
            nsf_alpha: 0.1,
            nsf_sigma: 0.003,
            nsf_voiced_threshold: 10.0,
            upsample_rates: vec![8, 5, 3],
            upsample_kernel_sizes: vec![16, 11, 7],
            istft_n_fft: 16,
            istft_hop_len: 4,
            resblock_kernel_sizes: vec![3, 7, 11],
            resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            source_resblock_kernel_sizes: vec![7, 7, 11],
            source_resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            lrelu_slope: 0.1,
            audio_limit: 0.99,
            f0_cond_channels: 512,
        }
    }
}

impl HiftConfig {
    /// Waveform samples per mel frame (`prod(upsample_rates) · hop`, 480 at 24 kHz).
    pub fn samples_per_frame(&self) -> i64 {
        self.upsample_rates.iter().product::<i64>() * self.istft_hop_len
    }

    /// Rejects configurations the generator cannot be built from.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.upsample_rates.len();
        if n == 0 || self.upsample_kernel_sizes.len() != n {
            return Err("hift: upsample_rates and upsample_kernel_sizes must have the same, non-zero length".into());
        }
        if self.source_resblock_kernel_sizes.len() != n
            || self.source_resblock_dilation_sizes.len() != n
        {
            return Err("hift: one source resblock per up-sampling stage is needed".into());
        }
        if self.resblock_kernel_sizes.is_empty()
            || self.resblock_kernel_sizes.len() != self.resblock_dilation_sizes.len()
        {
            return Err("hift: resblock_kernel_sizes and resblock_dilation_sizes must match".into());
        }
        if self.sampling_rate == 22050 {
            return Err("hift: sampling_rate 22050 selects upstream's older SourceModuleHnNSF, which is not implemented".into());
        }
        if self.base_channels >> n < 1 || self.istft_n_fft < 2 || self.istft_hop_len < 1 {
            return Err(
                "hift: base_channels too small for the up-sampling stages, or bad iSTFT sizes"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICIAL: &str = "\
flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: 512
        output_size: 512
        input_layer: 'linear'
        pre_lookahead_len: 3
        num_blocks: 6
        num_up_blocks: 4
        up_stride: 2
        up_scale_factor: 2
        attention_heads: 8
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: true
        linear_units: 2048
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: true
    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:cosyvoice2.flow.decoder_dit.DiT
            in_channels: 320
            out_channels: 80
            mlp_ratio: 4.0
            depth: 16
            num_heads: 8
            head_dim: 64
            hidden_size: 512
";

    #[test]
    fn reads_the_official_layout() {
        let c = FlowConfig::from_yaml(OFFICIAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.vocab_size, 6561);
        assert_eq!(c.encoder.num_blocks, 6);
        assert_eq!(c.encoder.num_up_blocks, 4);
        assert_eq!(c.encoder.attention_heads, 8);
        assert_eq!(c.decoder.inference_cfg_rate, 0.7);
        assert_eq!(c.decoder.estimator.depth, 16);
        assert_eq!(c.decoder.estimator.hidden_size, 512);
    }

    #[test]
    fn rejects_other_tags_and_untagged_nodes() {
        let code = OFFICIAL.replace("!new:cosyvoice2.flow.decoder_dit.DiT", "!new:os.system");
        let err = FlowConfig::from_yaml(&code).unwrap_err();
        assert!(err.contains("flow.decoder.estimator") && err.contains("!new:os.system"), "{err}");

        let reference = OFFICIAL.replace("vocab_size: 6561", "vocab_size: !ref <vocab>");
        let err = FlowConfig::from_yaml(&reference).unwrap_err();
        assert!(err.contains("flow.vocab_size") && err.contains("!ref"), "{err}");

        let untagged =
            OFFICIAL.replace(" !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM", "");
        let err = FlowConfig::from_yaml(&untagged).unwrap_err();
        assert!(err.contains("`flow.decoder` must be tagged"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_and_unsupported_settings() {
        let extra =
            OFFICIAL.replace("    vocab_size: 6561\n", "    vocab_size: 6561\n    speed: 2\n");
        let err = FlowConfig::from_yaml(&extra).unwrap_err();
        assert!(err.contains("speed"), "{err}");

        let attn = OFFICIAL.replace("'rel_selfattn'", "'selfattn'");
        let err = FlowConfig::from_yaml(&attn).unwrap_err();
        assert!(err.contains("selfattention_layer_type"), "{err}");

        let missing = OFFICIAL.replace("    vocab_size: 6561\n", "");
        let err = FlowConfig::from_yaml(&missing).unwrap_err();
        assert!(err.contains("vocab_size"), "{err}");

        let top = format!("{OFFICIAL}hift: 1\n");
        let err = FlowConfig::from_yaml(&top).unwrap_err();
        assert!(err.contains("hift"), "{err}");
    }

    #[test]
    fn hift_defaults_are_upstreams() {
        let c = HiftConfig::default();
        assert_eq!(c.samples_per_frame(), 480);
        assert!(c.validate().is_ok());
        let partial: HiftConfig =
            serde_json::from_str(r#"{"base_channels": 16, "f0_cond_channels": 16}"#)
                .unwrap_or_default();
        assert_eq!(partial.base_channels, 16);
        assert_eq!(partial.upsample_rates, vec![8, 5, 3]);
    }
}
