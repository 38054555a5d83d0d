//! [`AudioChunk`]: the one form audio features take from decoding to the model.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::Error as _;
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Device, Kind, Tensor};

use super::mel::N_MELS;
use crate::{Error, Result};

/// One ≤ 25-s piece of an audio input, as the audio encoder reads it: its log-mel features
/// `[128, T]` and how many `<audio_patch>` placeholders the prompt writes for them.
///
/// [`super::log_mel_chunks`] makes it, a spoken turn keeps it in the session history (so that a
/// resumed session can prefill the turn again), and the prompt hands it to the model as a
/// [`Segment::Audio`](crate::generate::Segment::Audio). The features are plain CPU `f32`s, so
/// that a history can be compared, shared between threads and saved, behind an `Arc`, so that
/// cloning a chunk (into a prompt, or a history to save it) shares them; the model copies them
/// to its device ([`AudioChunk::to_tensor`]) when it encodes them.
///
/// A chunk made from samples ([`super::log_mel_chunks`]) also keeps those 16 kHz samples as
/// 16-bit PCM ([`AudioChunk::pcm16`], 0.8 MB per 25 s): a remote model backend is sent audio,
/// not features. They are derived data: two chunks are equal when their features are.
///
/// It serialises as the session files have always stored a chunk, `{"frames": T, "patches": P,
/// "mel": "…"}` with the features as base64 of their little-endian bytes (about 1.7 MB per
/// 25 s), plus `"pcm16": "…"` (base64 of the little-endian samples) when it keeps them;
/// deserialising refuses features that are not `128 × frames` finite values.
#[derive(Clone)]
pub struct AudioChunk {
    /// `[128, T]` row-major: a whole number of frames of [`N_MELS`] values.
    mel: Arc<[f32]>,
    patches: usize,
    /// The chunk's 16 kHz samples, when it was made from them.
    pcm16: Option<Arc<[i16]>>,
}

impl PartialEq for AudioChunk {
    fn eq(&self, other: &Self) -> bool {
        self.patches == other.patches && self.mel == other.mel
    }
}

impl AudioChunk {
    /// A chunk of row-major `[128, T]` features (`T = mel.len() / 128`) that fills `patches`
    /// placeholders. Fails unless `mel.len()` is a multiple of 128.
    pub fn new(mel: Vec<f32>, patches: usize) -> Result<Self> {
        if mel.len() % N_MELS != 0 {
            return Err(Error::InvalidMel(format!(
                "{} values are not a whole number of {N_MELS}-band frames",
                mel.len()
            )));
        }
        Ok(Self { mel: mel.into(), patches, pcm16: None })
    }

    /// A copy of a `[128, T]` float tensor (any device) as a chunk that fills `patches`
    /// placeholders.
    pub fn from_tensor(mel: &Tensor, patches: usize) -> Result<Self> {
        let size = mel.size();
        if size.len() != 2 || size[0] != N_MELS as i64 {
            return Err(Error::InvalidMel(format!(
                "expected a [{N_MELS}, T] log-mel, got {size:?}"
            )));
        }
        let flat = mel
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_view([size[0] * size[1]])?;
        Ok(Self { mel: Vec::<f32>::try_from(&flat)?.into(), patches, pcm16: None })
    }

    /// Mel frames `T`: `floor((samples + 479) / 160)` for a chunk of 16 kHz samples.
    pub fn frames(&self) -> usize {
        self.mel.len() / N_MELS
    }

    /// How many `<audio_patch>` placeholders the prompt writes for the chunk:
    /// [`super::audio_patch_count`] of its frames for the chunks decoding makes. The model
    /// refuses a chunk whose frames give another count.
    pub fn patches(&self) -> usize {
        self.patches
    }

    /// The features, `[128, T]` row-major.
    pub fn mel(&self) -> &[f32] {
        &self.mel
    }

    /// The chunk with the 16 kHz samples it was computed from, kept as 16-bit PCM at the
    /// scale decoders read it (`i16 / 32768`, so a 16-bit 16 kHz upload is kept exactly);
    /// values outside it are clipped.
    #[must_use]
    pub fn with_samples(mut self, samples_16k: &[f32]) -> Self {
        let pcm: Vec<i16> = samples_16k
            .iter()
            .map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        self.pcm16 = Some(pcm.into());
        self
    }

    /// The chunk's 16 kHz samples as 16-bit PCM, when it keeps them (chunks made from
    /// samples do; chunks of features alone, and those of session files written before
    /// samples were kept, do not).
    pub fn pcm16(&self) -> Option<&[i16]> {
        self.pcm16.as_deref()
    }

    /// The features as a CPU `f32` tensor `[128, T]` (a copy), the audio encoder's input.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&self.mel)?.f_view([N_MELS as i64, self.frames() as i64])?)
    }
}

impl std::fmt::Debug for AudioChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // 25 s of features are 320 256 numbers: the shape says what a reader needs.
        f.debug_struct("AudioChunk")
            .field("frames", &self.frames())
            .field("patches", &self.patches)
            .finish_non_exhaustive()
    }
}

impl Serialize for AudioChunk {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.mel.iter().flat_map(|v| v.to_le_bytes()).collect();
        let fields = if self.pcm16.is_some() { 4 } else { 3 };
        let mut chunk = serializer.serialize_struct("AudioChunk", fields)?;
        chunk.serialize_field("frames", &self.frames())?;
        chunk.serialize_field("patches", &self.patches)?;
        chunk.serialize_field("mel", &STANDARD.encode(bytes))?;
        if let Some(pcm) = &self.pcm16 {
            let bytes: Vec<u8> = pcm.iter().flat_map(|v| v.to_le_bytes()).collect();
            chunk.serialize_field("pcm16", &STANDARD.encode(bytes))?;
        }
        chunk.end()
    }
}

impl<'de> Deserialize<'de> for AudioChunk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The stored fields, as [`AudioChunk`]'s `Serialize` writes them.
        #[derive(Deserialize)]
        struct Stored {
            frames: usize,
            patches: usize,
            mel: String,
            #[serde(default)]
            pcm16: Option<String>,
        }
        let stored = Stored::deserialize(deserializer)?;
        let bytes = STANDARD.decode(stored.mel.as_bytes()).map_err(D::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(D::Error::custom(format!(
                "{} bytes of mel features are not a whole number of f32 values",
                bytes.len()
            )));
        }
        let values = bytes.len() / 4;
        if N_MELS.checked_mul(stored.frames) != Some(values) {
            return Err(D::Error::custom(format!(
                "a mel chunk of {} frames holds {values} values, expected {N_MELS} per frame",
                stored.frames
            )));
        }
        let mel: Arc<[f32]> =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        // Log-mel features are finite; a NaN or infinity is a damaged file (the fuzzer's
        // session_file target found one loading silently), and would reach the model.
        if let Some(at) = mel.iter().position(|v| !v.is_finite()) {
            return Err(D::Error::custom(format!(
                "mel value {at} of a {}-frame chunk is {} (the features are damaged)",
                stored.frames, mel[at]
            )));
        }
        let pcm16 = match stored.pcm16 {
            None => None,
            Some(text) => {
                let bytes = STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?;
                if bytes.len() % 2 != 0 {
                    return Err(D::Error::custom("the pcm16 samples have an odd number of bytes"));
                }
                Some(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
            }
        };
        Ok(Self { mel, patches: stored.patches, pcm16 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(frames: usize, patches: usize) -> AudioChunk {
        let mel = (0..frames * N_MELS).map(|i| i as f32 * 0.5 - 3.25).collect();
        AudioChunk::new(mel, patches).unwrap()
    }

    #[test]
    fn a_stored_chunk_with_a_nan_feature_is_refused() {
        let mut json: serde_json::Value = serde_json::to_value(chunk(1, 0)).unwrap();
        let mut bytes = STANDARD.decode(json["mel"].as_str().unwrap()).unwrap();
        bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        json["mel"] = STANDARD.encode(&bytes).into();
        let error = serde_json::from_value::<AudioChunk>(json).unwrap_err().to_string();
        assert!(error.contains("mel value 2 of a 1-frame chunk is NaN"), "{error}");
    }

    #[test]
    fn features_round_trip_through_base64_json() {
        let chunk = chunk(2, 7);
        let json = serde_json::to_string(&chunk).unwrap();
        let bytes: Vec<u8> = chunk.mel().iter().flat_map(|v| v.to_le_bytes()).collect();
        let want = format!(r#"{{"frames":2,"patches":7,"mel":"{}"}}"#, STANDARD.encode(bytes));
        assert_eq!(json, want, "the session files' form");
        let back: AudioChunk = serde_json::from_str(&json).unwrap();
        assert_eq!(back, chunk);
    }

    #[test]
    fn kept_samples_round_trip_and_do_not_change_equality() {
        let plain = chunk(2, 7);
        let with = plain.clone().with_samples(&[0.0, 0.5, -1.0, 2.0]);
        assert_eq!(with.pcm16(), Some(&[0, 16384, -32768, 32767][..]));
        assert_eq!(with, plain, "samples are derived data");
        let json = serde_json::to_string(&with).unwrap();
        assert!(json.contains("\"pcm16\":"), "{json}");
        let back: AudioChunk = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pcm16(), with.pcm16());
        assert!(!serde_json::to_string(&plain).unwrap().contains("pcm16"));
    }

    #[test]
    fn features_that_are_not_whole_frames_are_refused() {
        assert!(matches!(AudioChunk::new(vec![0.0; N_MELS + 1], 0), Err(Error::InvalidMel(_))));
        let two_frames = STANDARD.encode(vec![0u8; 2 * N_MELS * 4]);
        let json = format!(r#"{{"frames":3,"patches":0,"mel":"{two_frames}"}}"#);
        let err = serde_json::from_str::<AudioChunk>(&json).unwrap_err();
        assert!(err.to_string().contains("3 frames holds 256 values"), "{err}");
        let json = r#"{"frames":0,"patches":0,"mel":"AAA="}"#;
        assert!(serde_json::from_str::<AudioChunk>(json).is_err());
    }

    #[test]
    fn tensors_keep_their_shape_and_values() {
        let chunk = chunk(3, 0);
        let tensor = chunk.to_tensor().unwrap();
        assert_eq!(tensor.size(), [N_MELS as i64, 3]);
        assert_eq!(AudioChunk::from_tensor(&tensor, 0).unwrap(), chunk);
        let empty = AudioChunk::new(Vec::new(), 0).unwrap();
        assert_eq!(empty.to_tensor().unwrap().size(), [N_MELS as i64, 0]);
        assert_eq!(AudioChunk::from_tensor(&empty.to_tensor().unwrap(), 0).unwrap(), empty);
        let wrong = Tensor::zeros([80, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(AudioChunk::from_tensor(&wrong, 0), Err(Error::InvalidMel(_))));
    }
}
