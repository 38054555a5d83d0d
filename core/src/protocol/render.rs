//! The chat template of Step-Audio 2, piece for piece as StepFun's
//! `StepAudio2.apply_chat_template` builds it (stepfun-ai/Step-Audio2 `stepaudio2.py`).
//!
//! A turn is `<|BOT|>{role}\n{content}<|EOT|>`, with no separator between turns and no BOS.
//! Upstream returns a list of segments that are tokenized one by one and concatenated; the
//! segment boundaries are kept here ([`RenderedPiece`]) so that the ids match upstream's
//! exactly:
//!
//! | [`Content`] | upstream `content` | pieces |
//! |---|---|---|
//! | [`Content::Text`] | a string | one: `<|BOT|>{role}\n{text}` + `<|EOT|>` if `eot` |
//! | [`Content::Parts`] | a list of items | `<|BOT|>{role}\n`, one piece per part (an audio clip gives one per 25-s chunk), then `<|EOT|>` if `eot` |
//! | [`Content::Open`] | `None` | `<|BOT|>{role}\n` only (`eot` is ignored) |
//!
//! Parts: [`Part::Text`] is text this program wrote, tokenized with special tokens on;
//! [`Part::Untrusted`] is text from outside (a user, a tool, a web page), tokenized with
//! special tokens off, so `<|EOT|>` in a web page stays plain text (upstream would tokenize
//! it as the real token); [`Part::Tokens`] replays generated ids verbatim; [`Part::Audio`]
//! becomes `<audio_start>` + N × `<audio_patch>` + `<audio_end>` per chunk.
//!
//! [`Message`]'s constructors build the turns the official examples use: the tool
//! declaration, the speech-turn replay, the `input` turn for tool results and the two
//! generation prompts.

use serde_json::Value;

use crate::audio::AudioChunk;
use crate::pyjson::python_json_dumps;
use crate::tokenizer::StepTokenizer;
use crate::Result;

/// `<|BOT|>`: begins a turn.
pub const BOT: &str = "<|BOT|>";
/// `<|EOT|>`: ends a turn; the generation stop token.
pub const EOT: &str = "<|EOT|>";
/// `<tts_start>`: prefilled to ask for a spoken answer; starts every replayed speech turn.
pub const TTS_START: &str = "<tts_start>";
/// `<audio_start>`: opens the placeholders of one audio chunk.
pub const AUDIO_START: &str = "<audio_start>";
/// `<audio_patch>`: one placeholder, replaced by an audio-adaptor output row.
pub const AUDIO_PATCH: &str = "<audio_patch>";
/// `<audio_end>`: closes the placeholders of one audio chunk.
pub const AUDIO_END: &str = "<audio_end>";

/// The instruction StepFun's example appends to a web-search result in the `input` turn
/// ("summarise the retrieved results colloquially and answer the user's question briefly").
pub const SEARCH_SUMMARY_INSTRUCTION: &str =
    "\n\n\n请用口语化形式总结检索结果，简短地回答用户的问题。";

/// Who speaks a turn; rendered as the word after `<|BOT|>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// `system`.
    System,
    /// `human` (upstream maps `user` to it).
    Human,
    /// `assistant`.
    Assistant,
    /// `tool_json_schemas`: the tool declaration turn, right after the system turn.
    ToolJsonSchemas,
    /// `input`: tool and retrieval results.
    Input,
    /// Any other role, rendered verbatim (e.g. `function_output` of StepFun's vLLM template).
    Other(String),
}

impl Role {
    /// The role's name as rendered.
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Human => "human",
            Role::Assistant => "assistant",
            Role::ToolJsonSchemas => "tool_json_schemas",
            Role::Input => "input",
            Role::Other(name) => name,
        }
    }

    /// The role of an upstream message's `role` field (`user` is `human`).
    pub fn from_name(name: &str) -> Role {
        match name {
            "system" => Role::System,
            "human" | "user" => Role::Human,
            "assistant" => Role::Assistant,
            "tool_json_schemas" => Role::ToolJsonSchemas,
            "input" => Role::Input,
            other => Role::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An audio input of a conversation: the patch count of each of its 25-s chunks, and a key
/// the caller chooses to find the chunks' mels again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioClip {
    /// The caller's handle for this clip (an index into its own store, for instance).
    pub key: u64,
    /// `<audio_patch>` count of each chunk, in order (`compute_token_num` of its mel frames).
    pub chunk_patches: Vec<usize>,
}

impl AudioClip {
    /// A clip with the given chunk patch counts.
    pub fn new(key: u64, chunk_patches: Vec<usize>) -> Self {
        Self { key, chunk_patches }
    }

    /// The clip of chunks made by [`crate::audio::prepare_audio`] or
    /// [`crate::audio::log_mel_chunks`].
    pub fn from_chunks(key: u64, chunks: &[AudioChunk]) -> Self {
        Self { key, chunk_patches: chunks.iter().map(AudioChunk::patches).collect() }
    }
}

/// One item of a list-content turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text this program wrote (template text, instructions): special-token strings in it
    /// become their tokens.
    Text(String),
    /// Text from outside (user text, tool results, web pages): tokenized with special tokens
    /// off.
    Untrusted(String),
    /// Generated ids replayed verbatim.
    Tokens(Vec<i64>),
    /// An audio input: one placeholder piece per chunk.
    Audio(AudioClip),
}

/// A turn's content; see the module documentation for how each renders.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Upstream string content: header, text and `<|EOT|>` in one trusted piece.
    Text(String),
    /// Upstream list content: one piece per part.
    Parts(Vec<Part>),
    /// Upstream `None`: only `<|BOT|>{role}\n`, the open turn of a generation prompt.
    Open,
}

/// Which answer a generation prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationMode {
    /// `<|BOT|>assistant\n`: a text answer.
    Text,
    /// `<|BOT|>assistant\n<tts_start>`: a spoken answer (interleaved text and speech codes).
    Speech,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What the turn holds.
    pub content: Content,
    /// Whether `<|EOT|>` closes the turn (upstream's `eot`, default true); false leaves the
    /// turn open for the model to continue.
    pub eot: bool,
}

impl Message {
    /// A closed turn.
    pub fn new(role: Role, content: Content) -> Self {
        Self { role, content, eot: true }
    }

    /// The system prompt (trusted text, upstream string content).
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, Content::Text(text.into()))
    }

    /// The tool declaration turn, `<|BOT|>tool_json_schemas\n{json}<|EOT|>`: `tools` (an
    /// OpenAI `tools` array) serialised as Python's `json.dumps(tools, ensure_ascii=False)`.
    /// The schemas are operator configuration and are trusted like the system prompt.
    pub fn tool_schemas(tools: &Value) -> Self {
        Self::new(Role::ToolJsonSchemas, Content::Text(python_json_dumps(tools)))
    }

    /// A user's text turn; the text is untrusted.
    pub fn human_text(text: impl Into<String>) -> Self {
        Self::new(Role::Human, Content::Parts(vec![Part::Untrusted(text.into())]))
    }

    /// A user's spoken turn.
    pub fn human_audio(clip: AudioClip) -> Self {
        Self::new(Role::Human, Content::Parts(vec![Part::Audio(clip)]))
    }

    /// A tool result turn, `<|BOT|>input\n{result}{instruction}<|EOT|>`: the result is
    /// untrusted; the optional instruction (e.g. [`SEARCH_SUMMARY_INSTRUCTION`]) is trusted.
    pub fn tool_result(result: impl Into<String>, instruction: Option<&str>) -> Self {
        let mut parts = vec![Part::Untrusted(result.into())];
        if let Some(instruction) = instruction {
            parts.push(Part::Text(instruction.to_owned()));
        }
        Self::new(Role::Input, Content::Parts(parts))
    }

    /// History replay of a spoken answer: `<tts_start>`, the generated ids verbatim (text,
    /// speech codes, pads, `<tts_end>`, tool calls; without the final `<|EOT|>`), `<|EOT|>`.
    pub fn assistant_speech_replay(generated: Vec<i64>) -> Self {
        Self::new(
            Role::Assistant,
            Content::Parts(vec![Part::Text(TTS_START.to_owned()), Part::Tokens(generated)]),
        )
    }

    /// History replay of a text answer: the generated ids verbatim (without the final
    /// `<|EOT|>`), then `<|EOT|>`.
    pub fn assistant_text_replay(generated: Vec<i64>) -> Self {
        Self::new(Role::Assistant, Content::Parts(vec![Part::Tokens(generated)]))
    }

    /// The open assistant turn the model continues: `<|BOT|>assistant\n` for
    /// [`GenerationMode::Text`], `<|BOT|>assistant\n<tts_start>` for
    /// [`GenerationMode::Speech`].
    pub fn generation_prompt(mode: GenerationMode) -> Self {
        let content = match mode {
            GenerationMode::Text => Content::Open,
            GenerationMode::Speech => Content::Text(TTS_START.to_owned()),
        };
        Self { role: Role::Assistant, content, eot: false }
    }
}

/// One audio chunk's place in a rendered prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioPiece {
    /// Index over every audio chunk of the conversation, in render order (upstream's `mels`
    /// list).
    pub chunk_index: usize,
    /// The [`AudioClip::key`] of the clip it belongs to.
    pub clip_key: u64,
    /// Index of the chunk within its clip.
    pub chunk_in_clip: usize,
    /// `<audio_patch>` placeholders.
    pub patches: usize,
}

impl AudioPiece {
    /// The placeholder text upstream writes: `<audio_start>` + patches × `<audio_patch>` +
    /// `<audio_end>`.
    pub fn placeholder_text(&self) -> String {
        let mut text = String::with_capacity(
            AUDIO_START.len() + self.patches * AUDIO_PATCH.len() + AUDIO_END.len(),
        );
        text.push_str(AUDIO_START);
        for _ in 0..self.patches {
            text.push_str(AUDIO_PATCH);
        }
        text.push_str(AUDIO_END);
        text
    }
}

/// One segment of a rendered conversation (one element of upstream's result list).
#[derive(Debug, Clone, PartialEq)]
pub enum RenderedPiece {
    /// Template text: encode with special tokens on.
    Trusted(String),
    /// Outside text: encode with special tokens off.
    Untrusted(String),
    /// Ids to splice in verbatim.
    Ids(Vec<i64>),
    /// One audio chunk's placeholders.
    Audio(AudioPiece),
}

impl RenderedPiece {
    /// The piece as upstream's segment text (audio as its placeholder string); `None` for ids.
    pub fn text(&self) -> Option<String> {
        match self {
            RenderedPiece::Trusted(text) | RenderedPiece::Untrusted(text) => Some(text.clone()),
            RenderedPiece::Audio(audio) => Some(audio.placeholder_text()),
            RenderedPiece::Ids(_) => None,
        }
    }
}

/// Renders a conversation as upstream's `apply_chat_template`; see the module documentation.
pub fn render(messages: &[Message]) -> Vec<RenderedPiece> {
    let mut pieces = Vec::new();
    let mut chunk_index = 0;
    for message in messages {
        let header = format!("{BOT}{}\n", message.role);
        match &message.content {
            Content::Text(text) => {
                let mut piece = header;
                piece.push_str(text);
                if message.eot {
                    piece.push_str(EOT);
                }
                pieces.push(RenderedPiece::Trusted(piece));
            }
            Content::Open => pieces.push(RenderedPiece::Trusted(header)),
            Content::Parts(parts) => {
                pieces.push(RenderedPiece::Trusted(header));
                for part in parts {
                    match part {
                        Part::Text(text) => pieces.push(RenderedPiece::Trusted(text.clone())),
                        Part::Untrusted(text) => {
                            pieces.push(RenderedPiece::Untrusted(text.clone()))
                        }
                        Part::Tokens(ids) => pieces.push(RenderedPiece::Ids(ids.clone())),
                        Part::Audio(clip) => {
                            for (chunk_in_clip, &patches) in clip.chunk_patches.iter().enumerate() {
                                pieces.push(RenderedPiece::Audio(AudioPiece {
                                    chunk_index,
                                    clip_key: clip.key,
                                    chunk_in_clip,
                                    patches,
                                }));
                                chunk_index += 1;
                            }
                        }
                    }
                }
                if message.eot {
                    pieces.push(RenderedPiece::Trusted(EOT.to_owned()));
                }
            }
        }
    }
    pieces
}

/// A rendered piece turned into ids.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPiece {
    /// Ids, one position each.
    Tokens(Vec<i64>),
    /// The audio chunk whose placeholders are in the `Tokens` piece right before this one
    /// (the convention of [`crate::generate::Segment`]); adds no position.
    Audio(AudioPiece),
}

/// Encodes rendered pieces: trusted text with special tokens on, untrusted text with them
/// off, ids as given, and each audio chunk as `<audio_start>`, `patches` × `<audio_patch>`,
/// `<audio_end>` (the ids upstream's tokenizer gives for the placeholder string) followed by
/// a [`PromptPiece::Audio`] marker.
pub fn encode_pieces(
    pieces: &[RenderedPiece],
    tokenizer: &StepTokenizer,
) -> Result<Vec<PromptPiece>> {
    let special = tokenizer.special();
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match piece {
            RenderedPiece::Trusted(text) => {
                out.push(PromptPiece::Tokens(tokenizer.encode_trusted(text)?))
            }
            RenderedPiece::Untrusted(text) => {
                out.push(PromptPiece::Tokens(tokenizer.encode_untrusted(text)?))
            }
            RenderedPiece::Ids(ids) => out.push(PromptPiece::Tokens(ids.clone())),
            RenderedPiece::Audio(audio) => {
                let mut ids = Vec::with_capacity(audio.patches + 2);
                ids.push(special.audio_start);
                ids.extend(std::iter::repeat_n(special.audio_patch, audio.patches));
                ids.push(special.audio_end);
                out.push(PromptPiece::Tokens(ids));
                out.push(PromptPiece::Audio(*audio));
            }
        }
    }
    Ok(out)
}

/// All the ids of encoded pieces, concatenated (audio markers add none).
pub fn prompt_ids(pieces: &[PromptPiece]) -> Vec<i64> {
    pieces
        .iter()
        .flat_map(|piece| match piece {
            PromptPiece::Tokens(ids) => ids.as_slice(),
            PromptPiece::Audio(_) => &[],
        })
        .copied()
        .collect()
}
