//! The tool-call syntax Step-Audio 2 emits (as StepFun's vLLM fork parses it,
//! `vllm/entrypoints/openai/tool_parsers/step_audio_2_tool_parser.py`):
//!
//! ```text
//! <tool_call>function\n{name}\n{JSON object of arguments}</tool_call>
//! ```
//!
//! The released benchmark dialogues (StepEval-Audio-Toolcall) pad the lines with spaces
//! (`function  \ntimbre_rag  \n{...}`, `function\n get_date_time\n{}`), so
//! [`parse_tool_call`] splits the body on its first two `'\n'` and trims each of the three
//! parts. StepFun's vLLM parser splits the same way but does not trim the name, so it drops
//! such calls when it checks the name against the declared tools; trimming is the fix the
//! research notes recommend.
//!
//! A malformed call becomes a [`ToolCallError`] whose message is short and addressed to the
//! model, so the agent loop can send it back as the tool result. Nothing here panics, whatever
//! the input.

use serde_json::{Map, Value};

use crate::pyjson::python_json_dumps_object;

/// The literal opening tag (a single token id in the vocabulary).
pub const TOOL_CALL_START: &str = "<tool_call>";
/// The literal closing tag (a single token id in the vocabulary).
pub const TOOL_CALL_END: &str = "</tool_call>";
/// The first line of every call body.
pub const FUNCTION_KEYWORD: &str = "function";

/// The longest excerpt of model text quoted in an error message, in characters.
const EXCERPT_CHARS: usize = 60;

/// A well-formed tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedToolCall {
    /// The function name, trimmed.
    pub name: String,
    /// The arguments: always a JSON object (key order as written).
    pub arguments: Map<String, Value>,
}

impl ParsedToolCall {
    /// The call as the model writes it (see [`render_tool_call`]).
    pub fn render(&self) -> String {
        render_tool_call(&self.name, &self.arguments)
    }
}

/// Why a tool call could not be used. `Display` gives a one-line message meant for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    /// Nothing between the tags.
    #[error(
        "invalid tool call: it is empty; write function, the name and a JSON object on three lines"
    )]
    Empty,
    /// The first line is not `function`.
    #[error("invalid tool call: the first line must be \"function\", found {found:?}")]
    NotAFunction { found: String },
    /// `function` alone, without a name line.
    #[error("invalid tool call: the function name line is missing after \"function\"")]
    MissingName,
    /// A name line that is blank.
    #[error("invalid tool call: the function name is empty")]
    EmptyName,
    /// No arguments line after the name (or a blank one).
    #[error(
        "invalid tool call to {name:?}: the JSON arguments line is missing; write {{}} for none"
    )]
    MissingArguments { name: String },
    /// Arguments that are not JSON.
    #[error("invalid tool call to {name:?}: the arguments are not valid JSON ({message})")]
    InvalidJson { name: String, message: String },
    /// JSON arguments that are not an object.
    #[error("invalid tool call to {name:?}: the arguments must be a JSON object, found {found}")]
    ArgumentsNotObject { name: String, found: &'static str },
    /// More text after the JSON value.
    #[error(
        "invalid tool call to {name:?}: unexpected text after the JSON arguments: {trailing:?}"
    )]
    TrailingText { name: String, trailing: String },
    /// Generation ended inside a call. `text` is what the call held (possibly cut).
    #[error("invalid tool call: it was not closed with </tool_call> before the turn ended")]
    Unclosed { text: String },
    /// A new `<tool_call>` began before the previous one was closed; the previous one is
    /// dropped. `text` is what it held (possibly cut).
    #[error("invalid tool call: a new <tool_call> began before the previous one was closed")]
    Nested { text: String },
    /// `</tool_call>` with no open call.
    #[error("invalid tool call: </tool_call> without a matching <tool_call>")]
    UnmatchedClose,
    /// The call's token ids could not be decoded to text.
    #[error("invalid tool call: its tokens could not be decoded ({message})")]
    Undecodable { message: String },
}

/// Parses the body of a call (the text between `<tool_call>` and `</tool_call>`):
/// `function\n{name}\n{json}`. The body is trimmed, split on its first two `'\n'`, and each of
/// the three parts trimmed.
pub fn parse_tool_call(body: &str) -> Result<ParsedToolCall, ToolCallError> {
    // Blank lines around the whole body are dropped first (as StepFun's streaming parser does).
    let body = body.trim();
    if body.is_empty() {
        return Err(ToolCallError::Empty);
    }
    let (keyword, rest) = split_line(body);
    let keyword = keyword.trim();
    if keyword != FUNCTION_KEYWORD {
        return Err(ToolCallError::NotAFunction { found: excerpt(keyword) });
    }
    let Some(rest) = rest else {
        return Err(ToolCallError::MissingName);
    };
    let (name, arguments) = split_line(rest);
    let name = name.trim();
    if name.is_empty() {
        return Err(ToolCallError::EmptyName);
    }
    let name = name.to_owned();
    let arguments = arguments.map(str::trim).unwrap_or_default();
    if arguments.is_empty() {
        return Err(ToolCallError::MissingArguments { name });
    }
    let arguments = parse_arguments(&name, arguments)?;
    Ok(ParsedToolCall { name, arguments })
}

/// Renders a call as the model writes it, arguments serialised like Python's
/// `json.dumps(arguments, ensure_ascii=False)` (the layout of StepFun's vLLM template):
/// `<tool_call>function\n{name}\n{json}</tool_call>`.
pub fn render_tool_call(name: &str, arguments: &Map<String, Value>) -> String {
    format!(
        "{TOOL_CALL_START}{FUNCTION_KEYWORD}\n{name}\n{}{TOOL_CALL_END}",
        python_json_dumps_object(arguments)
    )
}

/// A whole assistant turn given as text, split into prose and calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTurn {
    /// The text outside every call, in order (the preamble, text between and after calls).
    pub content: String,
    /// One entry per call, or per malformed tag sequence, in order.
    pub calls: Vec<Result<ParsedToolCall, ToolCallError>>,
}

/// Splits a decoded assistant turn such as
/// `没问题，我现在确认一下！<tool_call>function\n get_date_time\n{}</tool_call>` into its prose and
/// its calls. Tags are matched as literal text; the rules are those of the id-level
/// demultiplexer ([`super::Demux`]): a `<tool_call>` inside an open call drops the open one
/// ([`ToolCallError::Nested`]), a stray `</tool_call>` gives [`ToolCallError::UnmatchedClose`],
/// and text ending inside a call gives [`ToolCallError::Unclosed`].
pub fn parse_turn_text(text: &str) -> ParsedTurn {
    let mut content = String::new();
    let mut calls = Vec::new();
    // Whether a call is open; if so, `rest` starts right after its `<tool_call>`.
    let mut open = false;
    let mut rest = text;
    loop {
        let start = rest.find(TOOL_CALL_START);
        let end = rest.find(TOOL_CALL_END);
        // The earliest tag, if any.
        let tag = match (start, end) {
            (Some(s), Some(e)) if s < e => Some((s, true)),
            (_, Some(e)) => Some((e, false)),
            (Some(s), None) => Some((s, true)),
            (None, None) => None,
        };
        let Some((at, is_start)) = tag else {
            if open {
                calls.push(Err(ToolCallError::Unclosed { text: excerpt(rest) }));
            } else {
                content.push_str(rest);
            }
            break;
        };
        let before = &rest[..at];
        if is_start {
            if open {
                calls.push(Err(ToolCallError::Nested { text: excerpt(before) }));
            } else {
                content.push_str(before);
            }
            rest = &rest[at + TOOL_CALL_START.len()..];
            open = true;
        } else {
            if open {
                calls.push(parse_tool_call(before));
            } else {
                content.push_str(before);
                calls.push(Err(ToolCallError::UnmatchedClose));
            }
            rest = &rest[at + TOOL_CALL_END.len()..];
            open = false;
        }
    }
    ParsedTurn { content, calls }
}

/// Splits at the first `'\n'`: the line before it and, if there is one, the rest after it.
fn split_line(text: &str) -> (&str, Option<&str>) {
    match text.split_once('\n') {
        Some((line, rest)) => (line, Some(rest)),
        None => (text, None),
    }
}

fn parse_arguments(name: &str, text: &str) -> Result<Map<String, Value>, ToolCallError> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = match values.next() {
        Some(Ok(value)) => value,
        Some(Err(e)) => {
            return Err(ToolCallError::InvalidJson {
                name: name.to_owned(),
                message: e.to_string(),
            })
        }
        None => return Err(ToolCallError::MissingArguments { name: name.to_owned() }),
    };
    let trailing = text.get(values.byte_offset()..).unwrap_or_default().trim();
    if !trailing.is_empty() {
        return Err(ToolCallError::TrailingText {
            name: name.to_owned(),
            trailing: excerpt(trailing),
        });
    }
    match value {
        Value::Object(object) => Ok(object),
        other => Err(ToolCallError::ArgumentsNotObject {
            name: name.to_owned(),
            found: json_kind(&other),
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most [`EXCERPT_CHARS`] characters of `text`, with `...` when cut.
pub(crate) fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}
