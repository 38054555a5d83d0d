//! Voice profiles: what token2wav needs to speak in a timbre.
//!
//! A profile holds the prompt's 25-Hz speech tokens (S3 tokenizer), its 80-bin log-mel at 50 Hz
//! (24 kHz, n_fft 1920, hop 480, fmax 8000, `center=False`), the 192-d CAM++ speaker embedding,
//! and descriptive data (source wav, description, attributes) for the voice library.
//!
//! As upstream (`Token2wav._prepare_prompt`, the fix of Step-Audio2 issues #30/#38) the mel is
//! made exactly `2 × len(prompt_tokens)` frames long: replicate-padded with its last frame, or
//! cut, whenever a profile is built.
//!
//! Precomputed profiles are imported from JSON ([`VoiceProfile::from_json_file`]) or
//! safetensors ([`VoiceProfile::from_safetensors_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Mel bins of the prompt mel.
pub const MEL_BINS: usize = 80;
/// Width of the CAM++ speaker embedding.
pub const SPEAKER_DIM: usize = 192;
/// Mel frames per speech token.
pub const FRAMES_PER_TOKEN: usize = 2;

/// A voice (timbre) token2wav can speak in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceProfile {
    /// Short unique name (`default_female`, ...).
    pub name: String,
    /// What the voice sounds like, for retrieval ("warm low male voice, slow").
    #[serde(default)]
    pub description: String,
    /// Free-form attributes (gender, age, language, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The prompt wav the profile was computed from, if known.
    #[serde(default)]
    pub source_wav: Option<PathBuf>,
    /// 25-Hz speech tokens of the prompt.
    pub prompt_tokens: Vec<i64>,
    /// Prompt log-mel, `[frames][80]`, `frames = 2 · len(prompt_tokens)`.
    pub prompt_mel: Vec<Vec<f32>>,
    /// CAM++ x-vector (192 values, not normalised: the flow normalises it).
    pub speaker_embedding: Vec<f32>,
}

impl VoiceProfile {
    /// Builds a profile, fitting the mel to `2 · len(prompt_tokens)` frames and checking the
    /// shapes and values.
    pub fn new(
        name: impl Into<String>,
        prompt_tokens: Vec<i64>,
        prompt_mel: Vec<Vec<f32>>,
        speaker_embedding: Vec<f32>,
    ) -> Result<Self> {
        let mut profile = Self {
            name: name.into(),
            description: String::new(),
            attributes: BTreeMap::new(),
            source_wav: None,
            prompt_tokens,
            prompt_mel,
            speaker_embedding,
        };
        profile.normalize()?;
        Ok(profile)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Profile { name: self.name.clone(), message: message.into() }
    }

    /// Checks the profile and fits the mel length as upstream does.
    fn normalize(&mut self) -> Result<()> {
        if self.prompt_tokens.is_empty() {
            return Err(self.err("no prompt speech tokens"));
        }
        if let Some(t) = self.prompt_tokens.iter().find(|&&t| t < 0) {
            return Err(self.err(format!("negative prompt token {t}")));
        }
        if self.speaker_embedding.len() != SPEAKER_DIM {
            return Err(self.err(format!(
                "speaker embedding has {} values, expected {SPEAKER_DIM}",
                self.speaker_embedding.len()
            )));
        }
        if self.speaker_embedding.iter().any(|v| !v.is_finite()) {
            return Err(self.err("speaker embedding holds NaN or infinity"));
        }
        if self.speaker_embedding.iter().all(|&v| v == 0.0) {
            return Err(self.err("speaker embedding is all zeros"));
        }
        if self.prompt_mel.is_empty() {
            return Err(self.err("empty prompt mel"));
        }
        if let Some((i, row)) =
            self.prompt_mel.iter().enumerate().find(|(_, r)| r.len() != MEL_BINS)
        {
            return Err(self
                .err(format!("prompt mel frame {i} has {} bins, expected {MEL_BINS}", row.len())));
        }
        if self.prompt_mel.iter().flatten().any(|v| !v.is_finite()) {
            return Err(self.err("prompt mel holds NaN or infinity"));
        }
        let want = self.prompt_tokens.len() * FRAMES_PER_TOKEN;
        if self.prompt_mel.len() > want {
            self.prompt_mel.truncate(want);
        }
        while self.prompt_mel.len() < want {
            let last = self.prompt_mel[self.prompt_mel.len() - 1].clone();
            self.prompt_mel.push(last);
        }
        Ok(())
    }

    /// Sets the description (builder style).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// `[1, frames, 80]` f32 on the CPU.
    pub fn prompt_mel_tensor(&self) -> Result<Tensor> {
        let flat: Vec<f32> = self.prompt_mel.iter().flatten().copied().collect();
        Ok(Tensor::from_slice(&flat).f_reshape([
            1,
            self.prompt_mel.len() as i64,
            MEL_BINS as i64,
        ])?)
    }

    /// `[1, 192]` f32 on the CPU.
    pub fn speaker_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.speaker_embedding).f_reshape([1, SPEAKER_DIM as i64])?)
    }

    /// Reads a profile saved as JSON (the fields of this struct).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::File { path: path.to_path_buf(), source })?;
        let mut profile: Self = serde_json::from_str(&text).map_err(|e| Error::Profile {
            name: path.display().to_string(),
            message: format!("not a voice profile JSON: {e}"),
        })?;
        profile.normalize()?;
        Ok(profile)
    }

    /// Writes the profile as JSON, atomically (a crash leaves the old file or the new one).
    pub fn to_json_file(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| self.err(e.to_string()))?;
        voxloop_core::fs::write_atomically(path, text.as_bytes())
            .map_err(|source| Error::File { path: path.to_path_buf(), source })
    }

    /// Reads a profile saved as safetensors: tensors `prompt_tokens` (integer `[n]` or
    /// `[1, n]`), `prompt_mel` (float `[frames, 80]` or `[1, frames, 80]`),
    /// `speaker_embedding` (float `[192]` or `[1, 192]`); header metadata `name`,
    /// `description`, `source_wav` and `attributes` (a JSON object of strings), all optional
    /// (the name defaults to the file stem).
    pub fn from_safetensors_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|source| Error::File { path: path.to_path_buf(), source })?;
        let name_of_file =
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let fail = |message: String| Error::Profile { name: path.display().to_string(), message };
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| fail(format!("not safetensors: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| fail(format!("not safetensors: {e}")))?;
        let tensor = |name: &str| -> Result<Tensor> {
            let view = st.tensor(name).map_err(|_| fail(format!("lacks tensor {name}")))?;
            let kind = match view.dtype() {
                safetensors::Dtype::F32 => Kind::Float,
                safetensors::Dtype::F16 => Kind::Half,
                safetensors::Dtype::BF16 => Kind::BFloat16,
                safetensors::Dtype::F64 => Kind::Double,
                safetensors::Dtype::I64 => Kind::Int64,
                safetensors::Dtype::I32 => Kind::Int,
                other => {
                    return Err(fail(format!("tensor {name} has unsupported dtype {other:?}")))
                }
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
        };
        let tokens = tensor("prompt_tokens")?;
        if tokens.is_floating_point() {
            return Err(fail("tensor prompt_tokens must hold integers".into()));
        }
        let tokens: Vec<i64> =
            Vec::<i64>::try_from(tokens.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?)?;
        let mel = tensor("prompt_mel")?.f_to_kind(Kind::Float)?;
        let dims = mel.size();
        if dims.last() != Some(&(MEL_BINS as i64)) || dims.iter().rev().skip(2).any(|&d| d != 1) {
            return Err(fail(format!(
                "tensor prompt_mel must be [frames, {MEL_BINS}], got {dims:?}"
            )));
        }
        let flat: Vec<f32> = Vec::<f32>::try_from(mel.f_flatten(0, -1)?)?;
        let rows: Vec<Vec<f32>> = flat.chunks(MEL_BINS).map(<[f32]>::to_vec).collect();
        let spk: Vec<f32> = Vec::<f32>::try_from(
            tensor("speaker_embedding")?.f_to_kind(Kind::Float)?.f_flatten(0, -1)?,
        )?;
        let name = meta.get("name").cloned().unwrap_or(name_of_file);
        let mut profile = Self::new(name, tokens, rows, spk)?;
        profile.description = meta.get("description").cloned().unwrap_or_default();
        profile.source_wav = meta.get("source_wav").map(PathBuf::from);
        if let Some(attrs) = meta.get("attributes") {
            profile.attributes = serde_json::from_str(attrs).map_err(|e| {
                fail(format!("metadata `attributes` is not a JSON object of strings: {e}"))
            })?;
        }
        Ok(profile)
    }

    /// Reads a profile by extension: `.json` or `.safetensors`.
    pub fn from_file(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json_file(path),
            Some("safetensors") => Self::from_safetensors_file(path),
            _ => Err(Error::Profile {
                name: path.display().to_string(),
                message: "expected a .json or .safetensors voice profile".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mel(frames: usize) -> Vec<Vec<f32>> {
        (0..frames).map(|i| vec![i as f32; MEL_BINS]).collect()
    }

    #[test]
    fn mel_is_fitted_to_twice_the_tokens() {
        let p = VoiceProfile::new("v", vec![1, 2, 3], mel(4), vec![0.5; SPEAKER_DIM]).unwrap();
        assert_eq!(p.prompt_mel.len(), 6);
        assert_eq!(p.prompt_mel[5], vec![3.0; MEL_BINS], "replicate-padded with the last frame");
        let p = VoiceProfile::new("v", vec![1, 2], mel(7), vec![0.5; SPEAKER_DIM]).unwrap();
        assert_eq!(p.prompt_mel.len(), 4);
        assert_eq!(p.prompt_mel[3], vec![3.0; MEL_BINS]);
        assert_eq!(p.prompt_mel_tensor().unwrap().size(), [1, 4, 80]);
    }

    #[test]
    fn bad_profiles_are_named_errors() {
        let e = VoiceProfile::new("v", vec![], mel(2), vec![0.5; SPEAKER_DIM]).unwrap_err();
        assert!(e.to_string().contains("voice profile v: no prompt speech tokens"), "{e}");
        let e = VoiceProfile::new("v", vec![1], mel(2), vec![0.5; 10]).unwrap_err();
        assert!(e.to_string().contains("192"), "{e}");
        let e = VoiceProfile::new("v", vec![1], vec![vec![0.0; 79]], vec![0.5; SPEAKER_DIM])
            .unwrap_err();
        assert!(e.to_string().contains("frame 0 has 79 bins"), "{e}");
    }

    #[test]
    fn json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let mut p = VoiceProfile::new("v", vec![5, 6], mel(4), vec![0.25; SPEAKER_DIM]).unwrap();
        p.description = "test voice".into();
        p.attributes.insert("gender".into(), "female".into());
        p.to_json_file(&path).unwrap();
        assert_eq!(VoiceProfile::from_file(&path).unwrap(), p);
    }
}
