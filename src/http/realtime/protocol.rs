//! The wire format of the realtime API: client events parsed from JSON text frames, server
//! events written as JSON. Names and shapes follow OpenAI's Realtime API (GA event names), as
//! the official `openai` Python package models them (`openai/types/realtime/*.py`).

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The largest client event frame taken (a second of 24 kHz PCM16 is 64 KiB of base64).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A client event the server acts on.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum ClientEvent {
    #[serde(rename = "session.update")]
    SessionUpdate { session: Value },
    #[serde(rename = "input_audio_buffer.append")]
    AppendAudio { audio: String },
    #[serde(rename = "input_audio_buffer.commit")]
    CommitAudio {},
    #[serde(rename = "input_audio_buffer.clear")]
    ClearAudio {},
    #[serde(rename = "conversation.item.create")]
    /// (`previous_item_id` is not taken: items are appended.)
    CreateItem { item: Value },
    #[serde(rename = "conversation.item.truncate")]
    TruncateItem { item_id: String, content_index: u32, audio_end_ms: u64 },
    #[serde(rename = "response.create")]
    CreateResponse {
        #[serde(default)]
        response: Option<Value>,
    },
    #[serde(rename = "response.cancel")]
    CancelResponse {
        #[serde(default)]
        response_id: Option<String>,
    },
}

/// The client event types this server knows (the rest are refused with an `error` naming
/// them).
const KNOWN: &[&str] = &[
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
];

/// A client event as it arrived: its `event_id` (for the `error` it may cause) and what it
/// asks.
#[derive(Debug)]
pub struct Incoming {
    pub event_id: Option<String>,
    pub event: ClientEvent,
}

/// Why an event was refused: the `error` event's `error` object.
#[derive(Debug, Clone, PartialEq)]
pub struct EventError {
    /// `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// The offending field, where there is one.
    pub param: Option<String>,
    /// The client event it is about.
    pub event_id: Option<String>,
}

impl EventError {
    /// A request the client can correct.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
            event_id: None,
        }
    }

    /// A failure on this side.
    pub fn server(message: impl Into<String>) -> Self {
        Self { kind: "server_error", ..Self::invalid("server_error", message) }
    }

    /// Names the offending field.
    #[must_use]
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Ties the error to the client event that caused it.
    #[must_use]
    pub fn about(mut self, event_id: Option<String>) -> Self {
        self.event_id = event_id;
        self
    }

    /// The `error` server event.
    pub fn to_event(&self) -> String {
        server_event(
            "error",
            json!({ "error": {
                "type": self.kind,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "event_id": self.event_id,
            }}),
        )
    }
}

/// Parses one text frame. Errors name the event (when its `event_id` could be read) and
/// say what was wrong: not JSON, not an object, no `type`, an unknown type, a bad field.
pub fn parse(text: &str) -> Result<Incoming, EventError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        EventError::invalid("invalid_json", format!("the event is not valid JSON: {e}"))
    })?;
    let Value::Object(map) = value else {
        return Err(EventError::invalid("invalid_event", "an event must be a JSON object"));
    };
    let event_id = map.get("event_id").and_then(Value::as_str).map(str::to_owned);
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => {
            return Err(EventError::invalid("invalid_event", "the event has no string \"type\"")
                .param("type")
                .about(event_id))
        }
    };
    if !KNOWN.contains(&kind.as_str()) {
        return Err(EventError::invalid(
            "unknown_event_type",
            format!("unknown or unsupported event type {kind:?} (supported: {})", KNOWN.join(", ")),
        )
        .param("type")
        .about(event_id));
    }
    let mut fields: Map<String, Value> = map;
    fields.remove("event_id");
    let event = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        EventError::invalid("invalid_event", format!("{kind}: {e}")).about(event_id.clone())
    })?;
    Ok(Incoming { event_id, event })
}

/// A new id with `prefix` (`item_…`, `resp_…`, `event_…`).
pub fn new_id(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &uuid[..20])
}

/// A server event of type `kind` with `fields` (an object) and a fresh `event_id`.
pub fn server_event(kind: &str, fields: Value) -> String {
    let mut event = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    event.insert("type".into(), Value::String(kind.to_owned()));
    event.insert("event_id".into(), Value::String(new_id("event")));
    Value::Object(event).to_string()
}

/// A user message item with a text part and/or an audio part (the audio itself is not
/// echoed back: OpenAI leaves it out of server events too).
pub fn user_item(id: &str, text: Option<&str>, audio: bool) -> Value {
    let mut content = Vec::new();
    if audio {
        content.push(json!({ "type": "input_audio", "transcript": null }));
    }
    if let Some(text) = text {
        content.push(json!({ "type": "input_text", "text": text }));
    }
    json!({
        "id": id, "object": "realtime.item", "type": "message", "role": "user",
        "status": "completed", "content": content,
    })
}

/// An assistant message item; `audio`: spoken (`output_audio` with its transcript), else
/// written (`output_text`).
pub fn assistant_item(id: &str, status: &str, audio: bool, text: &str) -> Value {
    let part = if audio {
        json!({ "type": "output_audio", "transcript": text })
    } else {
        json!({ "type": "output_text", "text": text })
    };
    json!({
        "id": id, "object": "realtime.item", "type": "message", "role": "assistant",
        "status": status, "content": [part],
    })
}

/// A function call item.
pub fn function_call_item(id: &str, status: &str, call_id: &str, name: &str, args: &str) -> Value {
    json!({
        "id": id, "object": "realtime.item", "type": "function_call", "status": status,
        "call_id": call_id, "name": name, "arguments": args,
    })
}

/// A function call output item.
pub fn function_output_item(id: &str, call_id: &str, output: &str) -> Value {
    json!({
        "id": id, "object": "realtime.item", "type": "function_call_output",
        "status": "completed", "call_id": call_id, "output": output,
    })
}

/// An approval request item (OpenAI's `mcp_approval_request`, the realtime API's approval
/// shape; `server_label` names voxloop's own tools).
pub fn approval_item(id: &str, call_id: &str, name: &str, arguments: &Value) -> Value {
    json!({
        "id": id, "type": "mcp_approval_request", "server_label": "voxloop",
        "approval_request_id": call_id, "name": name, "arguments": arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_events_and_keeps_the_event_id() {
        let incoming =
            parse(r#"{"type":"input_audio_buffer.append","event_id":"e1","audio":"AAA="}"#)
                .unwrap();
        assert_eq!(incoming.event_id.as_deref(), Some("e1"));
        assert!(
            matches!(incoming.event, ClientEvent::AppendAudio { ref audio } if audio == "AAA=")
        );
        let commit = parse(r#"{"type":"input_audio_buffer.commit"}"#).unwrap();
        assert!(matches!(commit.event, ClientEvent::CommitAudio {}));
    }

    #[test]
    fn refusals_name_the_event_and_the_problem() {
        let e = parse("not json").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse(r#"{"type":"response.teleport","event_id":"e7"}"#).unwrap_err();
        assert_eq!((e.code, e.event_id.as_deref()), ("unknown_event_type", Some("e7")));
        assert!(e.message.contains("response.teleport"), "{}", e.message);
        let e = parse(r#"{"type":"conversation.item.truncate","event_id":"e8","item_id":"x"}"#)
            .unwrap_err();
        assert_eq!((e.code, e.event_id.as_deref()), ("invalid_event", Some("e8")));
        assert!(e.message.contains("content_index") || e.message.contains("audio_end_ms"));
        let e = parse("[1]").unwrap_err();
        assert_eq!(e.code, "invalid_event");
    }

    #[test]
    fn server_events_carry_type_and_a_fresh_id() {
        let a: Value =
            serde_json::from_str(&server_event("session.created", json!({"x": 1}))).unwrap();
        let b: Value = serde_json::from_str(&server_event("session.created", json!({}))).unwrap();
        assert_eq!(a["type"], "session.created");
        assert_eq!(a["x"], 1);
        assert_ne!(a["event_id"], b["event_id"]);
    }
}
