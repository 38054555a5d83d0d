//! `[index]`: the audio index's text embedder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[index]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// A sentence-transformers checkpoint directory of the BERT or XLM-R family
    /// (all-MiniLM-L6-v2, paraphrase-multilingual-MiniLM-L12-v2, multilingual-e5-small, …)
    /// that embeds descriptions and queries (`VOXLOOP_EMBEDDER_DIR`). Unset:
    /// `$VOXLOOP_MINILM_DIR`, else `.cache/models/all-minilm-l6-v2` (`scripts/minilm.sh`).
    /// An index remembers its embedder: after changing this, run `voxloop index reembed`.
    pub embedder_dir: Option<PathBuf>,
    /// Put before every search query (e5 models: `"query: "`). Default none.
    pub query_prefix: String,
    /// Put before every indexed description (e5 models: `"passage: "`). Default none.
    pub document_prefix: String,
}

/// The files a checkpoint directory cannot do without (the loader reports the rest).
const REQUIRED: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

impl IndexConfig {
    /// `embedder_dir`, when set, must be a directory holding the checkpoint's files: the
    /// error names the first one missing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(dir) = &self.embedder_dir else { return Ok(()) };
        let bad =
            |message: String| ConfigError::Value { field: "index.embedder_dir".into(), message };
        if dir.as_os_str().is_empty() {
            return Err(bad(
                "is empty: remove it (for all-MiniLM-L6-v2) or name a directory".into()
            ));
        }
        if !dir.is_dir() {
            return Err(bad(format!("{} is not a directory", dir.display())));
        }
        if let Some(missing) = REQUIRED.iter().map(|f| dir.join(f)).find(|p| !p.is_file()) {
            return Err(bad(format!(
                "{} is missing: not a sentence-transformers checkpoint directory",
                missing.display()
            )));
        }
        Ok(())
    }

    /// The configured directory, if any.
    pub fn embedder_dir(&self) -> Option<&Path> {
        self.embedder_dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_checkpoint_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        for f in ["config.json", "model.safetensors"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        let config = IndexConfig { embedder_dir: Some(dir.clone()), ..Default::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("index.embedder_dir") && err.contains("tokenizer.json"), "{err}");
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        config.validate().unwrap();
        let none = IndexConfig { embedder_dir: Some(dir.join("nope")), ..Default::default() };
        assert!(none.validate().unwrap_err().to_string().contains("not a directory"));
        IndexConfig::default().validate().unwrap();
    }
}
