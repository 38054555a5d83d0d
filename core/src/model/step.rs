//! [`StepModel`] for [`StepAudio2`]: segments in, logits out.

use tch::Tensor;

use super::{KvSnapshot, StepAudio2};
use crate::generate::{Segment, StepModel};
use crate::{Error, Result};

impl StepAudio2 {
    fn checked_id(&self, id: i64) -> Result<u32> {
        let vocab = self.config.text.vocab_size;
        u32::try_from(id)
            .ok()
            .filter(|&t| (t as usize) < vocab)
            .ok_or(Error::UnknownTokenId { id, vocab_size: vocab })
    }
}

impl StepModel for StepAudio2 {
    fn prefill(&mut self, segments: &[Segment]) -> Result<Tensor> {
        let mut tokens = Vec::new();
        let mut mels = Vec::new();
        for segment in segments {
            match segment {
                Segment::Tokens(ids) => {
                    for &id in ids {
                        tokens.push(self.checked_id(id)?);
                    }
                }
                Segment::Audio(chunk) => {
                    let frames = chunk.frames();
                    let gives = self.patch_count(frames);
                    if gives != chunk.patches() {
                        return Err(Error::InvalidPrompt(format!(
                            "audio segment {} declares {} patches but its {frames} mel frames give {gives}",
                            mels.len(),
                            chunk.patches()
                        )));
                    }
                    mels.push(chunk.to_tensor()?);
                }
            }
        }
        let patch_id = match self.audio_patch_id {
            Some(id) => id,
            // No token id reaches u32::MAX (ids are checked against the vocabulary).
            None if mels.is_empty() => u32::MAX,
            None => {
                return Err(Error::InvalidPrompt(
                    "audio given but the model has no <audio_patch> id (set_audio_patch_id)".into(),
                ))
            }
        };
        StepAudio2::prefill(self, &tokens, &mels, patch_id)
    }

    fn decode(&mut self, token: i64) -> Result<Tensor> {
        let token = self.checked_id(token)?;
        StepAudio2::decode(self, token)
    }

    fn cache_len(&self) -> usize {
        StepAudio2::cache_len(self)
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        StepAudio2::truncate(self, len)
    }

    fn clear(&mut self) {
        StepAudio2::clear(self);
    }

    fn save_prefix(&self, len: usize) -> Result<Option<KvSnapshot>> {
        self.cache.snapshot(len).map(Some)
    }

    fn restore_prefix(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        self.cache.restore(snapshot)
    }
}
