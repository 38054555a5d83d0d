//! The Step-Audio 2 text tokenizer: the HF `tokenizer.json` of the checkpoint, with every
//! special token looked up by its string when it is loaded.
//!
//! Two encodings exist, and choosing between them is a security decision:
//!
//! - [`StepTokenizer::encode_trusted`] turns special-token strings into their ids. Use it only
//!   for text this program writes itself: the chat template (`"<|BOT|>system\n"`), generation
//!   prompts (`"<tts_start>"`).
//! - [`StepTokenizer::encode_untrusted`] never produces the id of an added token (any token in
//!   the tokenizer's added vocabulary: `<|EOT|>`, `<tool_call>`, `<audio_123>`, ...). A web
//!   page, a tool result or a user message that contains the literal text `<|EOT|>` becomes the
//!   ordinary text tokens of `<`, `|`, `EOT`, ... and cannot end a turn or forge a tool call.
//!
//! Why a second tokenizer: in `tokenizers` 0.21, `Tokenizer::encode` splits the input on the
//! added vocabulary before anything else, whatever `add_special_tokens` says, and
//! `set_encode_special_tokens(true)` only stops the matching of tokens flagged `special`.
//! Qwen2.5-style vocabularies (Step-Audio 2's included) register `<tool_call>` and
//! `</tool_call>` as added tokens that are *not* special, so that switch is not enough. The
//! untrusted path therefore uses a copy of the same pipeline (normalizer, pre-tokenizer, BPE
//! model) built from the same `tokenizer.json` with its `added_tokens` list emptied, and checks
//! its output for added-token ids as a second line of defence.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use tokenizers::Tokenizer;

use crate::{Error, Result};

/// Number of speech codes of the CosyVoice-2 S3 tokenizer: `<audio_0>` ..= `<audio_6560>`.
pub const AUDIO_CODES: u16 = 6561;

/// The token strings looked up at load time, in the order they are checked.
const BOT: &str = "<|BOT|>";
const EOT: &str = "<|EOT|>";
const ENDOFTEXT: &str = "<|endoftext|>";
const AUDIO_START: &str = "<audio_start>";
const AUDIO_END: &str = "<audio_end>";
const AUDIO_PATCH: &str = "<audio_patch>";
const TTS_START: &str = "<tts_start>";
const TTS_END: &str = "<tts_end>";
const TTS_PAD: &str = "<tts_pad>";
const TOOL_CALL_START: &str = "<tool_call>";
const TOOL_CALL_END: &str = "</tool_call>";

/// What a generated id is, for the stream demultiplexer: the ranges stepfun-ai/Step-Audio2
/// `stepaudio2.py` splits its output by (text below `<audio_start>`, speech codes from
/// `<audio_0>`, control ids between).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenClass {
    /// `<audio_N>` for N in 0..=6560: a 25 Hz speech code.
    AudioCode(u16),
    /// `<audio_6561>`: padding on the audio side of the interleaved stream.
    AudioPad,
    /// An id in the control range `[<audio_start>, <audio_0>)`: `<audio_start>`,
    /// `<audio_end>`, `<audio_patch>`, `<tts_start>`, `<tts_end>`, `<tts_pad>` and the ids
    /// between them.
    Control,
    /// Anything below `<audio_start>`: ordinary text, and the turn and tool-call markers
    /// (`<|BOT|>`, `<|EOT|>`, `<tool_call>`, ...), which callers compare by id.
    Text,
    /// An id above `<audio_6561>`: an embedding row with no token.
    Unused,
}

/// The ids of the special tokens, looked up by string when the tokenizer was loaded.
///
/// Invariants checked at load time: `<audio_N>` has id `audio_first + N` for every N in
/// 0..=6561, and the six control tokens lie in `[audio_start, audio_first)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|BOT|>`: begins a turn (`<|BOT|>{role}\n`).
    pub bot: i64,
    /// `<|EOT|>`: ends a turn; the generation stop token.
    pub eot: i64,
    /// `<|endoftext|>`: the tokenizer's own eos / pad token.
    pub endoftext: i64,
    /// `<audio_start>`: opens an input audio chunk; first id of the control range.
    pub audio_start: i64,
    /// `<audio_end>`: closes an input audio chunk.
    pub audio_end: i64,
    /// `<audio_patch>`: placeholder whose embedding the audio adaptor output replaces.
    pub audio_patch: i64,
    /// `<tts_start>`: opens the interleaved text/speech section.
    pub tts_start: i64,
    /// `<tts_end>`: closes the interleaved text/speech section.
    pub tts_end: i64,
    /// `<tts_pad>`: padding on the text side of the interleaved stream.
    pub tts_pad: i64,
    /// `<tool_call>`.
    pub tool_call_start: i64,
    /// `</tool_call>`.
    pub tool_call_end: i64,
    /// `<audio_0>`: the first speech-code id; the end of the control range.
    pub audio_first: i64,
    /// `<audio_6561>`: audio-side padding, the last audio id.
    pub audio_pad: i64,
}

impl SpecialTokens {
    /// The speech code of `id`, if `id` is `<audio_0>` ..= `<audio_6560>`; `None` for the
    /// padding `<audio_6561>` and for every other id.
    pub fn audio_code(&self, id: i64) -> Option<u16> {
        let code = id.checked_sub(self.audio_first)?;
        if (0..i64::from(AUDIO_CODES)).contains(&code) {
            u16::try_from(code).ok()
        } else {
            None
        }
    }

    /// The id of speech code `code`, if `code` < 6561.
    pub fn audio_id(&self, code: u16) -> Option<i64> {
        (code < AUDIO_CODES).then(|| self.audio_first + i64::from(code))
    }

    /// Whether `id` is `<audio_6561>` (audio-side padding).
    pub fn is_audio_pad(&self, id: i64) -> bool {
        id == self.audio_pad
    }

    /// Whether `id` is in the control range `[<audio_start>, <audio_0>)`, which the official
    /// wrapper drops from both the text and the audio output.
    pub fn is_control(&self, id: i64) -> bool {
        (self.audio_start..self.audio_first).contains(&id)
    }

    /// Classifies a generated id; see [`TokenClass`].
    pub fn classify(&self, id: i64) -> TokenClass {
        if let Some(code) = self.audio_code(id) {
            TokenClass::AudioCode(code)
        } else if id == self.audio_pad {
            TokenClass::AudioPad
        } else if self.is_control(id) {
            TokenClass::Control
        } else if id < self.audio_start {
            TokenClass::Text
        } else {
            TokenClass::Unused
        }
    }
}

/// The checkpoint's tokenizer; see the module documentation for the two encodings.
///
/// Token ids are `i64` here, as the model's tensors hold them.
#[derive(Debug, Clone)]
pub struct StepTokenizer {
    /// The tokenizer as the checkpoint defines it: trusted encoding and decoding.
    full: Tokenizer,
    /// The same pipeline without the added vocabulary: untrusted encoding.
    plain: Tokenizer,
    /// `is_added[id]`: whether `id` belongs to the added vocabulary.
    is_added: Vec<bool>,
    special: SpecialTokens,
    vocab_size: usize,
    /// The most bytes of normalized input one token of the untrusted path can cover.
    longest_token_bytes: usize,
    /// The most tokens an untrusted text may need (the model's context): see
    /// [`StepTokenizer::with_untrusted_token_cap`].
    untrusted_token_cap: Option<usize>,
}

impl StepTokenizer {
    /// Loads `tokenizer.json` from `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| Error::TokenizerLoad {
            source_name: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// Parses the contents of a `tokenizer.json`; `source_name` names it in errors.
    pub fn from_json(json: &str, source_name: &str) -> Result<Self> {
        let load_err =
            |message: String| Error::TokenizerLoad { source_name: source_name.to_owned(), message };
        let mut full =
            Tokenizer::from_str(json).map_err(|e| load_err(format!("invalid tokenizer: {e}")))?;
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| load_err(format!("invalid JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| load_err("the top-level JSON value is not an object".to_owned()))?;
        object.insert("added_tokens".to_owned(), serde_json::Value::Array(Vec::new()));
        let mut plain = Tokenizer::from_str(&value.to_string())
            .map_err(|e| load_err(format!("invalid tokenizer without added tokens: {e}")))?;
        // Encoding must never cut or pad a prompt behind our back.
        for tokenizer in [&mut full, &mut plain] {
            tokenizer
                .with_truncation(None)
                .map_err(|e| load_err(format!("cannot disable truncation: {e}")))?;
            tokenizer.with_padding(None);
        }

        let added = full.get_added_tokens_decoder();
        let max_model_id = full.get_vocab(false).into_values().max();
        let max_id = added.keys().copied().chain(max_model_id).max();
        let vocab_size = max_id.map_or(0, |id| id as usize + 1);
        let mut is_added = vec![false; vocab_size];
        for &id in added.keys() {
            is_added[id as usize] = true;
        }

        let special = lookup_special_tokens(&full, source_name)?;
        let longest_token_bytes = longest_token_bytes(&plain);
        Ok(Self {
            full,
            plain,
            is_added,
            special,
            vocab_size,
            longest_token_bytes,
            untrusted_token_cap: None,
        })
    }

    /// Refuses, before tokenizing it, any untrusted text that cannot fit in `cap` tokens
    /// ([`Error::TextTooLong`]): an agent sets its model's context here, so that a request
    /// with megabytes of text costs a length check, not a minute of BPE work whose result
    /// would overflow the context anyway.
    #[must_use]
    pub fn with_untrusted_token_cap(mut self, cap: usize) -> Self {
        self.untrusted_token_cap = Some(cap);
        self
    }

    /// The cap set by [`StepTokenizer::with_untrusted_token_cap`].
    pub fn untrusted_token_cap(&self) -> Option<usize> {
        self.untrusted_token_cap
    }

    /// A lower bound on the number of tokens [`StepTokenizer::encode_untrusted`] gives for
    /// `text`, found without tokenizing: the normalized text's bytes over the most bytes one
    /// token covers (128 for Step-Audio 2's vocabulary, a run of spaces). Exact for text
    /// made of the longest token repeated.
    pub fn min_untrusted_tokens(&self, text: &str) -> Result<usize> {
        use tokenizers::NormalizerWrapper;
        use unicode_normalization::UnicodeNormalization as _;
        let bytes = match self.plain.get_normalizer() {
            None => text.len(),
            // Step-Audio 2's (Qwen2's) normalizer, counted without building the normalized
            // text or tokenizers' alignment table (16 bytes per input byte).
            // ASCII text, and text already in NFC (the quick check), is its own NFC.
            Some(NormalizerWrapper::NFC(_)) => {
                let unchanged = text.is_ascii()
                    || unicode_normalization::is_nfc_quick(text.chars())
                        == unicode_normalization::IsNormalized::Yes;
                if unchanged {
                    text.len()
                } else {
                    text.nfc().map(char::len_utf8).sum()
                }
            }
            Some(normalizer) => {
                use tokenizers::Normalizer as _;
                let mut normalized = tokenizers::NormalizedString::from(text);
                normalizer.normalize(&mut normalized).map_err(|e| Error::Tokenize {
                    operation: "normalize",
                    message: e.to_string(),
                })?;
                normalized.get().len()
            }
        };
        Ok(bytes.div_ceil(self.longest_token_bytes.max(1)))
    }

    /// [`Error::TextTooLong`] when untrusted `text` cannot fit in the cap (no cap: `Ok`).
    pub fn check_untrusted_len(&self, text: &str) -> Result<()> {
        self.check_untrusted_lens(std::iter::once(text))
    }

    /// [`Error::TextTooLong`] when `texts`, each encoded on its own, cannot fit in the cap
    /// together (no cap: `Ok`).
    pub fn check_untrusted_lens<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let Some(cap) = self.untrusted_token_cap else { return Ok(()) };
        let texts: Vec<&str> = texts.into_iter().collect();
        let bytes: usize = texts.iter().map(|t| t.len()).sum();
        // The check is for the megabyte case: texts of no more bytes than the cap are let
        // through without normalizing them (the model's cache still refuses an overflow).
        if bytes <= cap {
            return Ok(());
        }
        // NFC keeps at least a third of a text's bytes (a composed character is at most three
        // times shorter than what composes to it: U+0390 from 6 bytes to 2, a Hangul syllable
        // from 9 to 3), so a text over three times the cap's bytes is refused unnormalized;
        // only texts under that bound (6 MiB for a 16k context) are normalized to count them.
        let longest = self.longest_token_bytes.max(1);
        let quick: usize = texts.iter().map(|t| t.len() / 3 / longest).sum();
        let at_least = if quick > cap {
            quick
        } else {
            let mut sum = 0;
            for text in texts {
                sum += self.min_untrusted_tokens(text)?;
            }
            sum
        };
        if at_least > cap {
            return Err(Error::TextTooLong { bytes, at_least, cap });
        }
        Ok(())
    }

    /// The special-token ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// One more than the largest id the tokenizer knows (added tokens included). The model's
    /// embedding table may be larger.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The `tokenizers` tokenizer with the full added vocabulary, for bridges that need it
    /// (llguidance's token trie). Never encode untrusted text with it.
    pub(crate) fn hf_tokenizer(&self) -> &Tokenizer {
        &self.full
    }

    /// The id of `token` (a vocabulary entry or an added token), if any.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.full.token_to_id(token).map(i64::from)
    }

    /// The vocabulary string of `id` (byte-level symbols for BPE entries), if any.
    pub fn token_str(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.full.id_to_token(id))
    }

    /// Whether `id` belongs to the added vocabulary (every special token, every `<audio_N>`).
    pub fn is_added(&self, id: i64) -> bool {
        usize::try_from(id).is_ok_and(|i| self.is_added.get(i).copied().unwrap_or(false))
    }

    /// Encodes text this program wrote: added-token strings become their ids.
    ///
    /// Nothing is prepended or appended (no BOS, no EOS), as in the official template.
    pub fn encode_trusted(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .full
            .encode(text, false)
            .map_err(|e| Error::Tokenize { operation: "encode_trusted", message: e.to_string() })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Encodes text from outside (users, tools, web pages): it never yields an added-token
    /// id. The literal text `<|EOT|>` becomes ordinary text tokens, and decoding the result
    /// gives `text` back.
    ///
    /// Text that cannot fit in the cap ([`StepTokenizer::with_untrusted_token_cap`]) is
    /// refused before any tokenizing.
    pub fn encode_untrusted(&self, text: &str) -> Result<Vec<i64>> {
        self.check_untrusted_len(text)?;
        let encoding = self.plain.encode(text, false).map_err(|e| Error::Tokenize {
            operation: "encode_untrusted",
            message: e.to_string(),
        })?;
        let ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
        // Only a BPE vocabulary that itself contains an added token's string could get here.
        if let Some(&id) = ids.iter().find(|&&id| self.is_added(id)) {
            return Err(Error::UntrustedSpecialToken {
                id,
                token: self.token_str(id).unwrap_or_default(),
            });
        }
        Ok(ids)
    }

    /// Decodes ids to text. Nothing is skipped: added tokens, special or not, appear as their
    /// literal strings (`<|EOT|>`, `<audio_12>`), so split audio and control ids off first
    /// (see [`SpecialTokens::classify`]). An id the tokenizer does not know is an error, not
    /// silently dropped. Byte sequences that are not valid UTF-8 (a character cut between
    /// tokens) decode to U+FFFD; use [`StepTokenizer::decode_stream`] for streaming text.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids = ids.iter().map(|&id| self.checked_id(id)).collect::<Result<Vec<u32>>>()?;
        self.full
            .decode(&ids, false)
            .map_err(|e| Error::Tokenize { operation: "decode", message: e.to_string() })
    }

    /// An incremental decoder for streamed ids: each step returns the new text once it is
    /// valid UTF-8, so a character split across tokens is emitted whole. Concatenating the
    /// chunks gives [`StepTokenizer::decode`] of all the ids.
    pub fn decode_stream(&self) -> TextStream<'_> {
        TextStream { tokenizer: self, inner: self.full.decode_stream(false) }
    }

    fn checked_id(&self, id: i64) -> Result<u32> {
        u32::try_from(id)
            .ok()
            .filter(|&u| self.full.id_to_token(u).is_some())
            .ok_or(Error::UnknownTokenId { id, vocab_size: self.vocab_size })
    }
}

/// The most bytes of normalized input one vocabulary entry of `tokenizer` stands for. A
/// byte-level BPE entry is written one character per byte (`Ġ` is the space byte), so its
/// length in characters; any other entry is a piece of the normalized text itself, so its
/// length in bytes (an upper bound also for markers such as `▁` or `##`).
fn longest_token_bytes(tokenizer: &Tokenizer) -> usize {
    let byte_level =
        matches!(tokenizer.get_decoder(), Some(tokenizers::DecoderWrapper::ByteLevel(_)));
    let vocab = tokenizer.get_vocab(false);
    let length = |token: &String| if byte_level { token.chars().count() } else { token.len() };
    vocab.keys().map(length).max().unwrap_or(1)
}

/// Incremental decoding; see [`StepTokenizer::decode_stream`].
pub struct TextStream<'a> {
    tokenizer: &'a StepTokenizer,
    inner: tokenizers::DecodeStream<
        'a,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl std::fmt::Debug for TextStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStream").finish_non_exhaustive()
    }
}

impl TextStream<'_> {
    /// Feeds one id; returns the text it completes, or `None` while a character is still
    /// incomplete.
    pub fn step(&mut self, id: i64) -> Result<Option<String>> {
        let id = self.tokenizer.checked_id(id)?;
        self.inner
            .step(id)
            .map_err(|e| Error::Tokenize { operation: "decode_stream", message: e.to_string() })
    }
}

fn lookup_special_tokens(tokenizer: &Tokenizer, source_name: &str) -> Result<SpecialTokens> {
    let id = |token: &str| -> Result<i64> {
        tokenizer.token_to_id(token).map(i64::from).ok_or_else(|| Error::MissingSpecialToken {
            source_name: source_name.to_owned(),
            token: token.to_owned(),
        })
    };
    let layout_err =
        |message: String| Error::TokenLayout { source_name: source_name.to_owned(), message };

    let special = SpecialTokens {
        bot: id(BOT)?,
        eot: id(EOT)?,
        endoftext: id(ENDOFTEXT)?,
        audio_start: id(AUDIO_START)?,
        audio_end: id(AUDIO_END)?,
        audio_patch: id(AUDIO_PATCH)?,
        tts_start: id(TTS_START)?,
        tts_end: id(TTS_END)?,
        tts_pad: id(TTS_PAD)?,
        tool_call_start: id(TOOL_CALL_START)?,
        tool_call_end: id(TOOL_CALL_END)?,
        audio_first: id("<audio_0>")?,
        audio_pad: id(&format!("<audio_{AUDIO_CODES}>"))?,
    };

    // Every <audio_N>, padding included, must sit at audio_first + N.
    for n in 0..=AUDIO_CODES {
        let token = format!("<audio_{n}>");
        let found = id(&token)?;
        let expected = special.audio_first + i64::from(n);
        if found != expected {
            return Err(layout_err(format!(
                "{token:?} has id {found}, expected {expected} (<audio_0> + {n})"
            )));
        }
    }

    // The demultiplexer relies on the control range [<audio_start>, <audio_0>).
    let controls = [
        (AUDIO_START, special.audio_start),
        (AUDIO_END, special.audio_end),
        (AUDIO_PATCH, special.audio_patch),
        (TTS_START, special.tts_start),
        (TTS_END, special.tts_end),
        (TTS_PAD, special.tts_pad),
    ];
    for (token, token_id) in controls {
        if !special.is_control(token_id) {
            return Err(layout_err(format!(
                "{token:?} (id {token_id}) is outside the control range [{}, {})",
                special.audio_start, special.audio_first
            )));
        }
    }

    // Turn and tool-call markers are text-range ids, and all thirteen ids are distinct.
    let markers = [
        (BOT, special.bot),
        (EOT, special.eot),
        (ENDOFTEXT, special.endoftext),
        (TOOL_CALL_START, special.tool_call_start),
        (TOOL_CALL_END, special.tool_call_end),
    ];
    for (token, token_id) in markers {
        if token_id >= special.audio_start {
            return Err(layout_err(format!(
                "{token:?} (id {token_id}) is not below <audio_start> ({})",
                special.audio_start
            )));
        }
    }
    let mut seen: HashMap<i64, &str> = HashMap::new();
    for (token, token_id) in markers.into_iter().chain(controls) {
        if let Some(other) = seen.insert(token_id, token) {
            return Err(layout_err(format!("{token:?} and {other:?} share the id {token_id}")));
        }
    }
    Ok(special)
}
