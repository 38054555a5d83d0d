//! [`Turn`]: one turn of a conversation's history, and how it renders.

use serde::{Deserialize, Serialize};

use crate::audio::AudioChunk;
use crate::protocol::{
    python_json_dumps_object, AudioClip, Content, Message, Part, Role, FUNCTION_KEYWORD,
};
use crate::tokenizer::StepTokenizer;
use crate::tool::ToolCall;
use crate::{Error, Result};

/// One part of a human turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HumanPart {
    /// Text the user typed (untrusted).
    Text { text: String },
    /// Speech, as its 25-s log-mel chunks (kept so the turn can be prefilled again).
    Audio { chunks: Vec<AudioChunk> },
}

/// A generated assistant turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantTurn {
    /// Whether it was generated after `<tts_start>` (a spoken answer).
    pub speech: bool,
    /// The generated ids, verbatim, without the closing `<|EOT|>`: what is replayed.
    pub ids: Vec<i64>,
    /// The text of the turn (spoken transcript and written content, tool calls left out),
    /// for reading; not rendered.
    pub text: String,
    /// The tool calls the turn made, with their ids; not rendered (the ids say it).
    #[serde(default)]
    pub calls: Vec<ToolCall>,
    /// The `audio.id` a remote model backend gave the answer (sent back with the history, so
    /// that a voxloop server replays its own ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<String>,
}

impl AssistantTurn {
    /// A text answer the caller wrote (a client replaying history it holds only as text):
    /// `text` tokenized as untrusted text, then each call as the model writes it,
    /// `<tool_call>function\n{name}\n{arguments}</tool_call>` (the tags as their tokens, the
    /// body as untrusted text, the arguments as Python's `json.dumps`). The arguments of each
    /// call must be a JSON object.
    pub fn from_text(tokenizer: &StepTokenizer, text: &str, calls: Vec<ToolCall>) -> Result<Self> {
        let mut ids = tokenizer.encode_untrusted(text)?;
        for call in &calls {
            ids.extend(call_ids(tokenizer, call)?);
        }
        Ok(Self { speech: false, ids, text: text.to_owned(), calls, reply_id: None })
    }
}

/// A call as the model writes it, `<tool_call>function\n{name}\n{arguments}</tool_call>`: the
/// tags as their tokens, the body as untrusted text, the arguments (a JSON object) as Python's
/// `json.dumps`.
pub(crate) fn call_ids(tokenizer: &StepTokenizer, call: &ToolCall) -> Result<Vec<i64>> {
    let special = tokenizer.special();
    let arguments = call.arguments.as_object().ok_or_else(|| {
        Error::Agent(format!("the arguments of the call to {:?} are not an object", call.name))
    })?;
    let body =
        format!("{FUNCTION_KEYWORD}\n{}\n{}", call.name, python_json_dumps_object(arguments));
    let mut ids = vec![special.tool_call_start];
    ids.extend(tokenizer.encode_untrusted(&body)?);
    ids.push(special.tool_call_end);
    Ok(ids)
}

impl AssistantTurn {
    /// The turn as far as its first `codes` speech codes (40 ms each at 25 Hz): what a
    /// listener who stopped it there heard. The text between those codes is kept, later
    /// speech and text are dropped; its tool calls are kept whole (their results follow in
    /// the history). `text` becomes the kept transcript.
    pub fn truncated_to_codes(&self, tokenizer: &StepTokenizer, codes: usize) -> Self {
        let special = tokenizer.special();
        let calls_start =
            self.ids.iter().position(|&id| id == special.tool_call_start).unwrap_or(self.ids.len());
        let mut seen = 0;
        let cut = self.ids[..calls_start]
            .iter()
            .position(|&id| {
                let is_code = special.audio_code(id).is_some();
                seen += usize::from(is_code);
                is_code && seen > codes
            })
            .unwrap_or(calls_start);
        let mut ids = self.ids[..cut].to_vec();
        ids.extend_from_slice(&self.ids[calls_start..]);
        let spoken: Vec<i64> = self.ids[..cut]
            .iter()
            .copied()
            .filter(|&id| special.classify(id) == crate::tokenizer::TokenClass::Text)
            .collect();
        let text = tokenizer.decode(&spoken).unwrap_or_default();
        Self {
            speech: self.speech,
            ids,
            text,
            calls: self.calls.clone(),
            reply_id: self.reply_id.clone(),
        }
    }

    /// How many speech codes the turn holds.
    pub fn speech_codes(&self, tokenizer: &StepTokenizer) -> usize {
        let special = tokenizer.special();
        self.ids.iter().filter(|&&id| special.audio_code(id).is_some()).count()
    }
}

/// The result of one tool call, shown to the model in an `input` turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResultTurn {
    /// The call it answers.
    pub call_id: String,
    /// The tool's name as called.
    pub name: String,
    /// Whether the call produced output (else `text` is the error message).
    pub ok: bool,
    /// What the model reads (untrusted).
    pub text: String,
    /// Trusted text appended after the result (the search summary instruction).
    #[serde(default)]
    pub instruction: Option<String>,
}

/// One turn of the conversation; see the module documentation for how each renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Turn {
    /// The system prompt.
    System { text: String },
    /// The tool declarations (Python-style JSON of the OpenAI `tools` array).
    ToolSchemas { json: String },
    /// What the user said or typed.
    Human { parts: Vec<HumanPart> },
    /// What the model generated.
    Assistant(AssistantTurn),
    /// A tool's result.
    ToolResult(ToolResultTurn),
}

impl Turn {
    /// The turn as a protocol message. Audio parts become clips keyed by their index among
    /// the turn's parts.
    pub fn message(&self) -> Message {
        match self {
            Turn::System { text } => Message::system(text.clone()),
            Turn::ToolSchemas { json } => {
                Message::new(Role::ToolJsonSchemas, Content::Text(json.clone()))
            }
            Turn::Human { parts } => {
                let parts = parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| match part {
                        HumanPart::Text { text } => Part::Untrusted(text.clone()),
                        HumanPart::Audio { chunks } => Part::Audio(AudioClip::new(
                            i as u64,
                            chunks.iter().map(AudioChunk::patches).collect(),
                        )),
                    })
                    .collect();
                Message::new(Role::Human, Content::Parts(parts))
            }
            Turn::Assistant(turn) if turn.speech => {
                Message::assistant_speech_replay(turn.ids.clone())
            }
            Turn::Assistant(turn) => Message::assistant_text_replay(turn.ids.clone()),
            Turn::ToolResult(result) => {
                Message::tool_result(result.text.clone(), result.instruction.as_deref())
            }
        }
    }

    /// The mel chunk `chunk` of the turn's part `part`, if there is one.
    pub fn mel_chunk(&self, part: usize, chunk: usize) -> Option<&AudioChunk> {
        match self {
            Turn::Human { parts } => match parts.get(part)? {
                HumanPart::Audio { chunks } => chunks.get(chunk),
                HumanPart::Text { .. } => None,
            },
            _ => None,
        }
    }
}
