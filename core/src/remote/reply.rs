//! Reading a streamed answer: [`ReplyReader`] turns each `chat.completion.chunk` into the
//! pieces the agent reports ([`Piece`]) and gathers the calls, the server's `audio.id`, the
//! finish reason and the usage.
//!
//! Where things are (OpenAI's chunk shape; StepFun's vLLM fork adds `tts_content`, see
//! `vllm/audio_parser/step_audio_2_tts_ta4_parser.py` there):
//!
//! | in the delta | piece |
//! |---|---|
//! | `content` (outside `<tool_call>` … `</tool_call>`) | [`Piece::Content`] |
//! | `tts_content.tts_text`, else `audio.transcript` | [`Piece::Speech`] |
//! | `tts_content.tts_audio` (`<audio_N>` …) | [`Piece::Codes`] |
//! | `tool_calls[i]` (id and name first, the arguments text in pieces) | a call |
//! | `<tool_call>function\n{name}\n{json}</tool_call>` in `content` | a call |
//!
//! `audio.data` is not read: the speech is rendered again here from its codes.

use serde_json::{Map, Value};

use crate::protocol::{
    parse_tool_call, ParsedToolCall, ToolCallError, TOOL_CALL_END, TOOL_CALL_START,
};

/// One reported piece of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Written text.
    Content(String),
    /// Text of the speech.
    Speech(String),
    /// Speech codes.
    Codes(Vec<u16>),
}

/// A call of the answer: the server's call id (absent for calls written in the content), or
/// why it cannot be used.
pub type RemoteCall = Result<(Option<String>, ParsedToolCall), ToolCallError>;

/// A structured call being streamed.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Reads one answer's chunks; see the module documentation.
#[derive(Debug, Default)]
pub struct ReplyReader {
    content: TagScan,
    structured: Vec<PartialCall>,
    /// The server's `message.audio.id` (a voxloop server recognises it in a later request).
    pub reply_id: Option<String>,
    /// The choice's `finish_reason`, once given.
    pub finish_reason: Option<String>,
    /// The last `usage` object the server sent.
    pub usage: Option<Value>,
}

impl ReplyReader {
    /// The pieces of one chunk.
    pub fn push(&mut self, chunk: &Value) -> Vec<Piece> {
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return Vec::new() };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta").or_else(|| choice.get("message")) else {
            return Vec::new();
        };
        let mut pieces = Vec::new();
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            pieces.extend(self.content.push(text).into_iter().map(Piece::Content));
        }
        if let Some(id) = delta.pointer("/audio/id").and_then(Value::as_str) {
            if !id.is_empty() {
                self.reply_id = Some(id.to_owned());
            }
        }
        let tts = delta.get("tts_content");
        let spoken = tts
            .and_then(|t| t.get("tts_text"))
            .or_else(|| delta.pointer("/audio/transcript"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        if let Some(text) = spoken {
            pieces.push(Piece::Speech(text.to_owned()));
        }
        if let Some(codes) = tts.and_then(|t| t.get("tts_audio")).and_then(Value::as_str) {
            let codes = audio_codes(codes);
            if !codes.is_empty() {
                pieces.push(Piece::Codes(codes));
            }
        }
        for (position, call) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(position);
            if index > self.structured.len() + 64 {
                continue; // a nonsense index would make us allocate without bound
            }
            if self.structured.len() <= index {
                self.structured.resize_with(index + 1, PartialCall::default);
            }
            let slot = &mut self.structured[index];
            if let Some(id) = call.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                slot.id = Some(id.to_owned());
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                slot.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                slot.arguments.push_str(args);
            }
        }
        pieces
    }

    /// Ends the answer: the content still held back, and the calls in order (structured
    /// ones first, then those written in the content).
    pub fn finish(&mut self) -> (Vec<Piece>, Vec<RemoteCall>) {
        let (rest, written) = self.content.finish();
        let pieces = rest.into_iter().map(Piece::Content).collect();
        let mut calls: Vec<RemoteCall> =
            std::mem::take(&mut self.structured).into_iter().map(structured_call).collect();
        calls.extend(written.into_iter().map(|call| call.map(|call| (None, call))));
        (pieces, calls)
    }
}

fn structured_call(call: PartialCall) -> RemoteCall {
    let name = call.name.trim().to_owned();
    if name.is_empty() {
        return Err(ToolCallError::EmptyName);
    }
    let text = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
    let arguments: Map<String, Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            let found = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(ToolCallError::ArgumentsNotObject { name, found });
        }
        Err(e) => return Err(ToolCallError::InvalidJson { name, message: e.to_string() }),
    };
    Ok((call.id, ParsedToolCall { name, arguments }))
}

/// The codes of a `tts_audio` string (`<audio_12><audio_345>`); anything else is skipped.
fn audio_codes(text: &str) -> Vec<u16> {
    text.split("<audio_")
        .skip(1)
        .filter_map(|rest| rest.split_once('>'))
        .filter_map(|(digits, _)| digits.parse::<u16>().ok())
        .collect()
}

/// Splits content that arrives in pieces into text and `<tool_call>` bodies, holding back a
/// tail that may be the start of a tag.
#[derive(Debug, Default)]
struct TagScan {
    held: String,
    /// Inside a call: `held` is its body so far.
    open: bool,
    calls: Vec<Result<ParsedToolCall, ToolCallError>>,
}

impl TagScan {
    /// The text that can be reported now.
    fn push(&mut self, piece: &str) -> Vec<String> {
        self.held.push_str(piece);
        let mut out = Vec::new();
        loop {
            if self.open {
                let Some(at) = self.held.find(TOOL_CALL_END) else { break };
                let body: String = self.held.drain(..at + TOOL_CALL_END.len()).collect();
                let body = &body[..at];
                self.calls.push(match body.find(TOOL_CALL_START) {
                    // The rule of the id-level demultiplexer: a new call drops the open one.
                    Some(_) => Err(ToolCallError::Nested { text: body.chars().take(60).collect() }),
                    None => parse_tool_call(body),
                });
                self.open = false;
                continue;
            }
            let start = self.held.find(TOOL_CALL_START);
            let stray = self.held.find(TOOL_CALL_END).filter(|e| start.is_none_or(|s| *e < s));
            if let Some(at) = stray {
                let text: String = self.held.drain(..at + TOOL_CALL_END.len()).collect();
                out.push(text[..at].to_owned());
                self.calls.push(Err(ToolCallError::UnmatchedClose));
                continue;
            }
            if let Some(at) = start {
                let text: String = self.held.drain(..at + TOOL_CALL_START.len()).collect();
                out.push(text[..at].to_owned());
                self.open = true;
                continue;
            }
            let keep = [TOOL_CALL_START, TOOL_CALL_END]
                .iter()
                .flat_map(|tag| (1..tag.len()).filter(|&n| self.held.ends_with(&tag[..n])))
                .max()
                .unwrap_or(0);
            let cut = self.held.len() - keep;
            out.push(self.held.drain(..cut).collect());
            break;
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// The held text and the calls, at the end.
    fn finish(&mut self) -> (Vec<String>, Vec<Result<ParsedToolCall, ToolCallError>>) {
        let held = std::mem::take(&mut self.held);
        let mut calls = std::mem::take(&mut self.calls);
        if self.open {
            calls.push(Err(ToolCallError::Unclosed { text: held.chars().take(60).collect() }));
            return (Vec::new(), calls);
        }
        (if held.is_empty() { Vec::new() } else { vec![held] }, calls)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn delta(delta: Value) -> Value {
        json!({ "choices": [{ "index": 0, "delta": delta, "finish_reason": null }] })
    }

    #[test]
    fn speech_codes_content_and_structured_calls_are_read() {
        let mut reader = ReplyReader::default();
        let pieces = reader.push(&delta(json!({
            "audio": { "id": "audio_1", "transcript": "Hel" },
            "tts_content": { "tts_text": "Hel" },
        })));
        assert_eq!(pieces, [Piece::Speech("Hel".into())], "tts_text, not twice");
        let pieces = reader
            .push(&delta(json!({ "tts_content": { "tts_audio": "<audio_12><audio_6560>" } })));
        assert_eq!(pieces, [Piece::Codes(vec![12, 6560])]);
        reader.push(&delta(json!({ "tool_calls": [{
            "index": 0, "id": "call_9", "type": "function",
            "function": { "name": "get_weather", "arguments": "{\"city\": " }
        }]})));
        reader.push(&delta(json!({ "tool_calls": [{
            "index": 0, "function": { "arguments": "\"Paris\"}" }
        }]})));
        let last = json!({
            "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }],
        });
        reader.push(&last);
        reader.push(&json!({ "choices": [], "usage": { "prompt_tokens": 5 } }));
        let (rest, calls) = reader.finish();
        assert!(rest.is_empty());
        let (id, call) = calls[0].clone().unwrap();
        assert_eq!(id.as_deref(), Some("call_9"));
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments["city"], "Paris");
        assert_eq!(reader.reply_id.as_deref(), Some("audio_1"));
        assert_eq!(reader.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(reader.usage.unwrap()["prompt_tokens"], 5);
    }

    #[test]
    fn calls_written_in_the_content_are_parsed_even_when_their_tags_are_split() {
        let mut reader = ReplyReader::default();
        let mut text = Vec::new();
        for piece in ["Sure.<tool", "_call>function\nget_date_time\n{}</tool", "_call> done <"] {
            for p in reader.push(&delta(json!({ "content": piece }))) {
                text.push(p);
            }
        }
        let (rest, calls) = reader.finish();
        text.extend(rest);
        let joined: String = text
            .iter()
            .map(|p| match p {
                Piece::Content(t) => t.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(joined, "Sure. done <");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].as_ref().unwrap().1.name, "get_date_time");
    }

    #[test]
    fn broken_calls_become_errors_the_model_can_read() {
        let mut reader = ReplyReader::default();
        reader.push(&delta(json!({ "tool_calls": [
            { "index": 0, "id": "a", "function": { "name": "f", "arguments": "[1]" } },
            { "index": 1, "id": "b", "function": { "name": "g", "arguments": "{oops" } },
            { "index": 2, "id": "c", "function": { "name": "", "arguments": "{}" } },
            { "index": 100000, "function": { "name": "h" } },
        ]})));
        reader.push(&delta(json!({ "content": "x</tool_call><tool_call>function\nf\n{" })));
        let (_, calls) = reader.finish();
        assert!(matches!(calls[0], Err(ToolCallError::ArgumentsNotObject { .. })));
        assert!(matches!(calls[1], Err(ToolCallError::InvalidJson { .. })));
        assert!(matches!(calls[2], Err(ToolCallError::EmptyName)));
        assert!(matches!(calls[3], Err(ToolCallError::UnmatchedClose)));
        assert!(matches!(calls[4], Err(ToolCallError::Unclosed { .. })));
        assert_eq!(calls.len(), 5, "the huge index was skipped");
    }
}
