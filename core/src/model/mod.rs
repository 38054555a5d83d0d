//! Step-Audio 2 on libtorch: audio encoder + adaptor + Qwen2 decoder + LM head, with an
//! extendable KV cache.
//!
//! A checkpoint directory in the official layout (`config.json`,
//! `model.safetensors.index.json` + shards, or `model.safetensors`) loads with
//! [`StepAudio2::load`] into the dtype and device asked for. The model is then driven step by
//! step:
//!
//! - [`StepAudio2::prefill`] appends a run of prompt tokens to the cache. Audio arrives as log-mel
//!   chunks `[n_mels, frames]` (one per 25-s slice, see [`crate::audio`]); their adaptor rows
//!   replace, in order, the embeddings of the prompt's `<audio_patch>` tokens, whose id the
//!   caller passes (it comes from the tokenizer, see [`crate::tokenizer`]). A prefill on a
//!   non-empty cache continues the conversation (a new turn, a tool result).
//! - [`StepAudio2::decode`] appends one token and returns the next logits.
//! - [`StepAudio2::truncate`] rolls the cache back, [`StepAudio2::clear`] empties it.
//!
//! [`StepAudio2::forward_full`] runs a whole sequence without the cache (tests, references).
//!
//! Parity with upstream (transformers' Qwen2 and the vLLM fork's encoder) is checked by
//! `core/tests/parity_llm.rs` on tiny random checkpoints from `scripts/fixtures/llm.py`.

pub mod config;
mod encoder;
pub mod kv_cache;
mod layers;
mod qwen2;
mod step;
pub mod weights;

use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub use config::{AudioEncoderConfig, Config, TextConfig, TokenIds};
pub use kv_cache::{KvCache, KvSnapshot};

use crate::nn::Linear;
use encoder::{Adaptor, AudioEncoder};
use qwen2::Qwen2;

use crate::{Error, Result};

/// Whether the checkpoint in `dir` was trained to think before it answers, as
/// stepfun-ai/Step-Audio-2-mini-Think is: its architecture and config are those of the plain
/// release, so only its name tells (the directory's, or the `_name_or_path` its `config.json`
/// was saved with), holding the word `Think`. A service's `[agent] think` setting overrides it.
pub fn is_reasoning_checkpoint(dir: &Path) -> bool {
    let saved_as = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|config| config.get("_name_or_path")?.as_str().map(str::to_owned));
    let names = [dir.file_name().and_then(|n| n.to_str()).map(str::to_owned), saved_as];
    names.iter().flatten().any(|name| {
        let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
        last.split(|c: char| !c.is_alphanumeric()).any(|word| word.eq_ignore_ascii_case("think"))
    })
}

/// A loaded Step-Audio 2 model and its KV cache.
#[derive(Debug)]
pub struct StepAudio2 {
    config: Config,
    encoder: AudioEncoder,
    adapter: Adaptor,
    model: Qwen2,
    lm_head: Linear,
    cache: KvCache,
    device: Device,
    kind: Kind,
    /// The `<audio_patch>` id used by the [`crate::generate::StepModel`] impl.
    audio_patch_id: Option<u32>,
    /// Owns the variables the modules hold views of.
    _vars: VarStore,
}

impl StepAudio2 {
    /// Loads the checkpoint in `dir` as `kind` (`Float`, `Half` or `BFloat16`) on `device`.
    ///
    /// The modules are built first (their variable names are the checkpoint's tensor names),
    /// then every tensor is checked and copied in; see [`weights`] for the errors.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16) {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                message: format!("cannot load as {kind:?}: use Float, Half or BFloat16"),
            });
        }
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut vars = VarStore::new(device);
        vars.set_kind(kind);
        let root = vars.root();
        let encoder = AudioEncoder::new(&root / "encoder", &config.audio)?;
        let adapter = Adaptor::new(&root / "adapter", &config.audio)?;
        let model = Qwen2::new(&root / "model", &config.text)?;
        let text = &config.text;
        let lm_head = if text.tie_word_embeddings {
            Linear::from_tensors(model.embed_tokens.weight.shallow_clone(), None)
        } else {
            Linear::new(&root / "lm_head", text.hidden_size, text.vocab_size, false)?
        };
        let mut variables = vars.variables();
        let ignored: &[&str] = if text.tie_word_embeddings { &["lm_head.weight"] } else { &[] };
        weights::load_checkpoint(dir, &mut variables, ignored)?;
        drop(variables);
        vars.freeze();
        let cache = KvCache::new(
            text.num_hidden_layers,
            text.kv_heads(),
            text.head_dim(),
            text.max_positions(),
            kind,
            device,
        );
        Ok(Self {
            config,
            encoder,
            adapter,
            model,
            lm_head,
            cache,
            device,
            kind,
            audio_patch_id: None,
            _vars: vars,
        })
    }

    /// Sets the `<audio_patch>` id (from the tokenizer) that [`crate::generate::StepModel`]
    /// prefills replace with audio rows; without one, such a prefill with audio fails.
    pub fn set_audio_patch_id(&mut self, id: u32) {
        self.audio_patch_id = Some(id);
    }

    /// The `<audio_patch>` id set with [`Self::set_audio_patch_id`].
    pub fn audio_patch_id(&self) -> Option<u32> {
        self.audio_patch_id
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the weights live.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The weights' dtype.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Positions in the KV cache.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The most positions the model (and so the cache) holds.
    pub fn max_positions(&self) -> usize {
        self.config.text.max_positions()
    }

    /// `<audio_patch>` tokens one mel chunk of `mel_frames` frames needs.
    pub fn patch_count(&self, mel_frames: usize) -> usize {
        self.config.audio.patch_count(mel_frames)
    }

    /// Encodes mel chunks `[n_mels, frames]` (as one padded batch) into their adaptor rows
    /// `[patches_i, hidden]`, in the model's dtype.
    pub fn encode_audio(&self, chunks: &[Tensor]) -> Result<Vec<Tensor>> {
        let _guard = tch::no_grad_guard();
        encoder::encode_chunks(
            &self.encoder,
            &self.adapter,
            &self.config.audio,
            chunks,
            self.kind,
            self.device,
        )
    }

    /// Appends `tokens` to the cache and returns the logits `[vocab]` (f32) after the last one.
    ///
    /// The adaptor rows of `audio` (mel chunks, encoded together) replace, in order, the
    /// embeddings at the positions of `audio_patch_id`; their counts must agree.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        audio: &[Tensor],
        audio_patch_id: u32,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        if tokens.is_empty() {
            return Err(Error::InvalidPrompt("prefill of zero tokens".into()));
        }
        let embeds = self.embed(tokens, audio, audio_patch_id)?;
        let hidden = self.model.forward(&embeds, Some(&mut self.cache), true)?;
        self.logits(&hidden)
    }

    /// Appends one token to the cache and returns the logits `[vocab]` (f32) after it.
    pub fn decode(&mut self, token: u32) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let ids = self.token_tensor(&[token])?;
        let embeds = self.model.embed_tokens.forward(&ids)?;
        let hidden = self.model.forward(&embeds, Some(&mut self.cache), true)?;
        self.logits(&hidden)
    }

    /// Keeps only the first `len` cached positions (`len` ≤ [`Self::cache_len`]).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.cache.truncate(len)
    }

    /// Empties the cache (keeping its buffers for the next conversation).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Empties the cache and frees its buffers.
    pub fn release_cache(&mut self) {
        self.cache.release();
    }

    /// Runs the whole sequence without touching the cache and returns the logits of every
    /// position `[n, vocab]` (f32). For tests and references.
    pub fn forward_full(
        &self,
        tokens: &[u32],
        audio: &[Tensor],
        audio_patch_id: u32,
    ) -> Result<Tensor> {
        let rows = self.encode_audio(audio)?;
        self.forward_full_with_rows(tokens, &rows, audio_patch_id)
    }

    /// [`Self::forward_full`] with the audio given as adaptor rows (from [`Self::encode_audio`],
    /// possibly of several batches) instead of mels.
    pub fn forward_full_with_rows(
        &self,
        tokens: &[u32],
        rows: &[Tensor],
        audio_patch_id: u32,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        if tokens.len() > self.max_positions() {
            return Err(Error::ContextOverflow { needed: tokens.len(), max: self.max_positions() });
        }
        if tokens.is_empty() {
            return Err(Error::InvalidPrompt("forward of zero tokens".into()));
        }
        let embeds = self.embed_with_rows(tokens, rows, audio_patch_id)?;
        let hidden = self.model.forward(&embeds, None, false)?;
        let logits = self.lm_head.forward(&hidden)?;
        Ok(logits.f_squeeze_dim(0)?.f_to_kind(Kind::Float)?)
    }

    /// Ids `[1, n]` (Int64, on the model's device), checked against the vocabulary.
    fn token_tensor(&self, tokens: &[u32]) -> Result<Tensor> {
        let vocab = self.config.text.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::UnknownTokenId { id: i64::from(bad), vocab_size: vocab });
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        Ok(Tensor::f_from_slice(&ids)?.f_to_device(self.device)?.f_view([1, -1])?)
    }

    /// Token embeddings `[1, n, hidden]` with the rows of the encoded `audio` merged in.
    fn embed(&self, tokens: &[u32], audio: &[Tensor], audio_patch_id: u32) -> Result<Tensor> {
        let rows = self.encode_audio(audio)?;
        self.embed_with_rows(tokens, &rows, audio_patch_id)
    }

    /// Token embeddings `[1, n, hidden]` whose `audio_patch_id` positions are replaced, in
    /// order, by `rows`; the counts must agree.
    fn embed_with_rows(
        &self,
        tokens: &[u32],
        rows: &[Tensor],
        audio_patch_id: u32,
    ) -> Result<Tensor> {
        let ids = self.token_tensor(tokens)?;
        let mut embeds = self.model.embed_tokens.forward(&ids)?;
        let places: Vec<i64> = tokens
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == audio_patch_id)
            .map(|(i, _)| i as i64)
            .collect();
        let count: i64 = rows.iter().map(|r| r.size()[0]).sum();
        if count != places.len() as i64 {
            return Err(Error::AudioPatchMismatch {
                patch_id: audio_patch_id,
                placeholders: places.len(),
                rows: count as usize,
            });
        }
        if !places.is_empty() {
            let rows = Tensor::f_cat(rows, 0)?.f_to_device(self.device)?.f_to_kind(self.kind)?;
            let rows = rows.f_unsqueeze(0)?;
            let index = Tensor::f_from_slice(&places)?.f_to_device(self.device)?;
            embeds = embeds.f_index_copy(1, &index, &rows)?;
        }
        Ok(embeds)
    }

    /// LM-head logits `[vocab]` (f32) of a single normed position `[1, 1, hidden]`.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(hidden)?;
        Ok(logits.f_reshape([-1])?.f_to_kind(Kind::Float)?)
    }
}
