//! The body of `POST /v1/chat/completions`: parsed, checked against what voxloop supports
//! (every refusal names the parameter, in OpenAI's error shape), and its messages turned into
//! a session history.
//!
//! Messages become turns as Step-Audio 2 reads them (stepfun-ai/Step-Audio2 `stepaudio2.py`
//! `apply_chat_template`; the `input` role for results as in its `examples.py`):
//!
//! | message | turn |
//! |---|---|
//! | leading `system` / `developer` (text; several are joined by a line break) | the system turn; without one, the service's default system prompt with its date line |
//! | `tools` (when declared) | the `tool_json_schemas` turn after it |
//! | `user` (a string, or `text` and `input_audio` parts) | a human turn; audio decoded into the model's chunks |
//! | `assistant` | the ids this service generated for it when it is one of its recent answers (by `audio.id`, else by content and calls), else its text and calls tokenized (an unknown `audio.id` is an error only when there is no text or call to rebuild from) |
//! | `tool` | an `input` turn answering the call its `tool_call_id` names |

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{AssistantTurn, HumanPart, ToolResultTurn, Turn};
use voxloop_core::tool::{ToolCall, ToolDefinition};

use super::memory::{TurnKey, TurnMemory};
use super::ChatError;
use crate::http::upload;
use crate::runtime::setup::AgentRuntime;

/// The request body, as far as voxloop reads it. Fields voxloop does not know are ignored
/// (SDKs send `user`, `store`, `metadata`, ...); fields it knows but cannot honour are refused
/// by [`ChatRequest::check`].
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub modalities: Option<Vec<String>>,
    pub audio: Option<AudioOutput>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// vLLM's extra sampling parameter (StepFun's server takes it too): a top-k cut, 0 for
    /// none.
    pub top_k: Option<usize>,
    /// vLLM's extra sampling parameter: the repetition penalty (1 for none).
    pub repetition_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub max_completion_tokens: Option<usize>,
    pub max_tokens: Option<usize>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub response_format: Option<Value>,
    pub logit_bias: Option<Map<String, Value>>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `none` answers without a think phase; `minimal`, `low`, `medium` or `high` with one
    /// (of at most `[agent] reasoning_max_tokens`); unset: as `[agent] think` says.
    pub reasoning_effort: Option<String>,
}

/// `audio`: how to speak the answer.
#[derive(Debug, Clone, Deserialize)]
pub struct AudioOutput {
    /// A voice-library name.
    pub voice: String,
    pub format: AudioFormat,
}

/// The encodings of `message.audio.data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// A RIFF WAV file (16-bit mono); not while streaming.
    Wav,
    /// Raw 16-bit little-endian mono samples.
    Pcm16,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The most stop strings a request may give (OpenAI's limit).
const MAX_STOP: usize = 4;

impl ChatRequest {
    /// Whether the answer starts with a think phase: `Some` when `reasoning_effort` says.
    pub fn thinks(&self) -> Result<Option<bool>, ChatError> {
        match self.reasoning_effort.as_deref() {
            None => Ok(None),
            Some("none") => Ok(Some(false)),
            Some("minimal" | "low" | "medium" | "high") => Ok(Some(true)),
            Some(other) => Err(ChatError::invalid(
                format!(
                    "reasoning_effort {other:?} is not one of none, minimal, low, medium, high"
                ),
                "reasoning_effort",
            )),
        }
    }

    /// Refuses what voxloop cannot honour: more than one choice, log probabilities, other
    /// response formats, logit biases and penalties, audio output without `audio`, a WAV
    /// stream.
    pub fn check(&self) -> Result<(), ChatError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ChatError::unsupported("n", "only one choice per request (n = 1)"));
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some_and(|n| n > 0) {
            return Err(ChatError::unsupported("logprobs", "log probabilities are not returned"));
        }
        if let Some(format) = &self.response_format {
            if format.get("type").and_then(Value::as_str) != Some("text") {
                return Err(ChatError::unsupported(
                    "response_format",
                    "only {\"type\": \"text\"} (tool schemas constrain calls instead)",
                ));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|bias| !bias.is_empty()) {
            return Err(ChatError::unsupported("logit_bias", "logit biases are not applied"));
        }
        for (param, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ChatError::unsupported(param, "only 0 (no penalty)"));
            }
        }
        for modality in self.modalities.iter().flatten() {
            if modality != "text" && modality != "audio" {
                return Err(ChatError::invalid(
                    format!("unknown modality {modality:?}: use \"text\" and \"audio\""),
                    "modalities",
                ));
            }
        }
        if self.speaks() && self.audio.is_none() {
            return Err(ChatError::invalid(
                "modalities [\"text\", \"audio\"] needs the \"audio\" parameter: {\"voice\": ..., \
                 \"format\": \"wav\" | \"pcm16\"}",
                "audio",
            ));
        }
        if self.stream && self.speaks() {
            if let Some(AudioOutput { format: AudioFormat::Wav, .. }) = &self.audio {
                return Err(ChatError::invalid(
                    "audio.format \"wav\" cannot be streamed: use \"pcm16\" with stream: true",
                    "audio.format",
                ));
            }
        }
        if self.stops().len() > MAX_STOP {
            return Err(ChatError::invalid(format!("at most {MAX_STOP} stop strings"), "stop"));
        }
        Ok(())
    }

    /// Whether the answer is spoken (`modalities` holds `audio`).
    pub fn speaks(&self) -> bool {
        self.modalities.iter().flatten().any(|m| m == "audio")
    }

    /// The stop strings, without empty ones.
    pub fn stops(&self) -> Vec<String> {
        let all = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        all.into_iter().filter(|s| !s.is_empty()).collect()
    }

    /// The most tokens to generate (`max_completion_tokens`, else the legacy `max_tokens`).
    pub fn max_new_tokens(&self) -> Option<usize> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The declared tools, checked for shape (the grammar checks the schemas).
    pub fn tool_definitions(&self) -> Result<Vec<ToolDefinition>, ChatError> {
        self.tools.iter().enumerate().map(|(i, tool)| tool_definition(i, tool)).collect()
    }

    /// `tool_choice` (default `auto`) against the declared `tools`.
    pub fn tool_choice(&self, tools: &[ToolDefinition]) -> Result<ToolChoice, ChatError> {
        let param = "tool_choice";
        let choice = match &self.tool_choice {
            None => return Ok(if tools.is_empty() { ToolChoice::None } else { ToolChoice::Auto }),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(ChatError::invalid(
                        format!("tool_choice {other:?}: use \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"),
                        param,
                    ))
                }
            },
            Some(value) => {
                let name = value
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .filter(|_| value.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or_else(|| {
                        ChatError::invalid(
                            "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                            param,
                        )
                    })?;
                ToolChoice::Named(name.to_owned())
            }
        };
        match &choice {
            ToolChoice::Required if tools.is_empty() => {
                Err(ChatError::invalid("tool_choice \"required\" needs declared tools", param))
            }
            ToolChoice::Named(name) if !tools.iter().any(|t| &t.name == name) => {
                Err(ChatError::invalid(
                    format!("tool_choice names {name:?}, which is not in tools"),
                    param,
                ))
            }
            _ => Ok(choice),
        }
    }
}

fn tool_definition(index: usize, tool: &Value) -> Result<ToolDefinition, ChatError> {
    let param = format!("tools[{index}]");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ChatError::invalid("only tools of type \"function\" are supported", &param));
    }
    let function = tool
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| ChatError::invalid("a function tool needs a \"function\" object", &param))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ChatError::invalid("a function needs a non-empty \"name\"", &param))?;
    let description =
        function.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
    let parameters = match function.get("parameters") {
        None => serde_json::json!({ "type": "object", "properties": {} }),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => {
            return Err(ChatError::invalid(
                format!("the parameters of {name:?} must be a JSON Schema object"),
                format!("{param}.function.parameters"),
            ))
        }
    };
    Ok(ToolDefinition { name: name.to_owned(), description, parameters })
}

/// What [`history`] needs besides the request.
pub struct HistoryContext<'a> {
    pub runtime: &'a AgentRuntime,
    pub memory: &'a TurnMemory,
    /// The system turn when the request brings none.
    pub default_system: String,
    /// The `tool_json_schemas` turn's text, when tools are declared.
    pub tool_schemas: Option<String>,
}

/// The history the request's messages render to (see the module documentation); the last
/// message must be the user's or answer the last calls.
pub async fn history(
    messages: &[Value],
    context: &HistoryContext<'_>,
) -> Result<Vec<Turn>, ChatError> {
    // Texts the context cannot hold are refused before they cost any tokenizing.
    context.runtime.agent.check_texts_fit(message_texts(messages)).map_err(|e| {
        ChatError::with_status(StatusCode::PAYLOAD_TOO_LARGE, e.to_string(), "messages")
    })?;
    let mut system = Vec::new();
    let mut rest = messages;
    while let Some((first, tail)) = rest.split_first() {
        match role_of(first, system.len())? {
            "system" | "developer" => {
                system.push(text_content(first, system.len(), &["text"])?);
                rest = tail;
            }
            _ => break,
        }
    }
    let mut turns = vec![Turn::System {
        text: if system.is_empty() { context.default_system.clone() } else { system.join("\n") },
    }];
    if let Some(json) = &context.tool_schemas {
        turns.push(Turn::ToolSchemas { json: json.clone() });
    }
    // The calls of the last assistant message that no tool message answered yet.
    let mut open: Vec<ToolCall> = Vec::new();
    let offset = messages.len() - rest.len();
    for (i, message) in rest.iter().enumerate() {
        let index = offset + i;
        let role = role_of(message, index)?;
        if role != "tool" {
            if let Some(call) = open.first() {
                return Err(ChatError::invalid(
                    format!(
                        "the tool call {:?} ({}) has no tool message before messages[{index}]",
                        call.id, call.name
                    ),
                    format!("messages[{index}]"),
                ));
            }
        }
        match role {
            "user" => turns.push(human_turn(message, index, context).await?),
            "assistant" => {
                let turn = assistant_turn(message, index, context)?;
                open = turn.calls.clone();
                turns.push(Turn::Assistant(turn));
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let position = open.iter().position(|call| call.id == id).ok_or_else(|| {
                    ChatError::invalid(
                        format!("tool_call_id {id:?} answers no call of the assistant message before it"),
                        format!("messages[{index}].tool_call_id"),
                    )
                })?;
                let call = open.remove(position);
                let text = text_content(message, index, &["text"])?;
                turns.push(Turn::ToolResult(ToolResultTurn {
                    call_id: call.id,
                    name: call.name,
                    ok: true,
                    text,
                    instruction: None,
                }));
            }
            "system" | "developer" => {
                return Err(ChatError::invalid(
                    "system and developer messages must come before the conversation",
                    format!("messages[{index}]"),
                ))
            }
            other => {
                return Err(ChatError::invalid(
                    format!(
                        "unknown role {other:?}: use system, developer, user, assistant or tool"
                    ),
                    format!("messages[{index}].role"),
                ))
            }
        }
    }
    match turns.last() {
        Some(Turn::Human { .. }) => Ok(turns),
        Some(Turn::ToolResult(_)) if open.is_empty() => Ok(turns),
        Some(Turn::ToolResult(_)) => Err(ChatError::invalid(
            format!("the tool call {:?} has no tool message", open[0].id),
            "messages",
        )),
        _ => Err(ChatError::invalid(
            "the last message must be the user's or a tool result",
            "messages",
        )),
    }
}

fn role_of(message: &Value, index: usize) -> Result<&str, ChatError> {
    message.get("role").and_then(Value::as_str).ok_or_else(|| {
        ChatError::invalid("a message needs a string \"role\"", format!("messages[{index}]"))
    })
}

/// Every text in `messages`: string contents and the `text` of content parts.
fn message_texts(messages: &[Value]) -> impl Iterator<Item = &str> {
    messages.iter().flat_map(|message| match message.get("content") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect()
        }
        _ => Vec::new(),
    })
}

/// A message's text: a string, or the text of its parts (of the `kinds` allowed), joined;
/// `null` or absent is empty.
fn text_content(message: &Value, index: usize, kinds: &[&str]) -> Result<String, ChatError> {
    let param = || format!("messages[{index}].content");
    match message.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                if !kinds.contains(&kind) {
                    return Err(ChatError::invalid(
                        format!(
                            "content parts of type {kind:?} are not supported here (use {})",
                            kinds.join(", ")
                        ),
                        param(),
                    ));
                }
                text.push_str(part.get(kind).and_then(Value::as_str).unwrap_or_default());
            }
            Ok(text)
        }
        Some(_) => Err(ChatError::invalid("content must be a string or a list of parts", param())),
    }
}

async fn human_turn(
    message: &Value,
    index: usize,
    context: &HistoryContext<'_>,
) -> Result<Turn, ChatError> {
    let param = format!("messages[{index}].content");
    let mut parts = Vec::new();
    match message.get("content") {
        Some(Value::String(text)) => parts.push(HumanPart::Text { text: text.clone() }),
        Some(Value::Array(items)) => {
            for (j, item) in items.iter().enumerate() {
                let part_param = format!("{param}[{j}]");
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = item.get("text").and_then(Value::as_str).ok_or_else(|| {
                            ChatError::invalid("a text part needs \"text\"", &part_param)
                        })?;
                        parts.push(HumanPart::Text { text: text.to_owned() });
                    }
                    Some("input_audio") => {
                        let data = item
                            .pointer("/input_audio/data")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                ChatError::invalid(
                                    "an input_audio part needs input_audio.data (base64)",
                                    &part_param,
                                )
                            })?;
                        let field = format!("{part_param}.input_audio.data");
                        let bytes = upload::decode_base64(data, &field)
                            .map_err(|message| ChatError::invalid(message, &field))?;
                        let chunks = upload::decode_audio(context.runtime.audio_limits, bytes)
                            .await
                            .map_err(|(status, message)| {
                                ChatError::with_status(status, message, &field)
                            })?;
                        parts.push(HumanPart::Audio { chunks });
                    }
                    other => {
                        return Err(ChatError::invalid(
                            format!(
                                "user content parts of type {:?} are not supported (use text or input_audio)",
                                other.unwrap_or_default()
                            ),
                            &part_param,
                        ))
                    }
                }
            }
        }
        _ => return Err(ChatError::invalid("content must be a string or a list of parts", &param)),
    }
    if parts.is_empty() {
        return Err(ChatError::invalid("a user message needs content", &param));
    }
    Ok(Turn::Human { parts })
}

fn assistant_turn(
    message: &Value,
    index: usize,
    context: &HistoryContext<'_>,
) -> Result<AssistantTurn, ChatError> {
    if let Some(id) = message.pointer("/audio/id").and_then(Value::as_str) {
        if let Some(turn) = context.memory.recall(&TurnKey::Audio(id.to_owned())) {
            return Ok(turn);
        }
        // An answer this service no longer knows (a restart, an old one) is rebuilt from
        // its text and calls when the message has them (voxloop's remote backend sends both).
        let has_text = message.get("content").is_some_and(|c| !c.is_null() && c != "");
        let has_calls = message.get("tool_calls").is_some_and(|c| !c.is_null());
        if !has_text && !has_calls {
            return Err(ChatError::invalid(
                format!("audio {id:?} is not (or no longer) known to this service; send the assistant's content instead"),
                format!("messages[{index}].audio.id"),
            ));
        }
    }
    let content = text_content(message, index, &["text", "refusal"])?;
    let mut calls = Vec::new();
    let mut keys = Vec::new();
    let listed = match message.get("tool_calls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => {
            return Err(ChatError::invalid(
                "tool_calls must be a list",
                format!("messages[{index}].tool_calls"),
            ))
        }
    };
    for (j, call) in listed.iter().enumerate() {
        let param = format!("messages[{index}].tool_calls[{j}]");
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
        let text = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        if id.is_empty() || name.is_empty() {
            return Err(ChatError::invalid("a tool call needs an id and function.name", &param));
        }
        let arguments: Value =
            serde_json::from_str(text).ok().filter(Value::is_object).ok_or_else(|| {
                ChatError::invalid(
                    "function.arguments must be the text of a JSON object",
                    format!("{param}.function.arguments"),
                )
            })?;
        keys.push((id.to_owned(), name.to_owned(), text.to_owned()));
        calls.push(ToolCall::with_id(id, name, arguments));
    }
    if let Some(turn) =
        context.memory.recall(&TurnKey::Text { content: content.clone(), calls: keys })
    {
        return Ok(turn);
    }
    AssistantTurn::from_text(context.runtime.agent.tokenizer(), &content, calls)
        .map_err(|e| ChatError::invalid(e.to_string(), format!("messages[{index}]")))
}
