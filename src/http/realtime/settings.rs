//! A realtime session's configuration as `session.update` sets it, and its JSON for
//! `session.created` / `session.updated`. Every update is checked whole before any of it
//! applies: a refused update changes nothing.

use serde_json::{json, Value};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::tool::ToolDefinition;

use super::protocol::EventError;
use crate::config::RealtimeConfig;
use crate::realtime::detect::ServerVad;

/// The only audio format in and out: 16-bit little-endian mono PCM at 24 kHz.
pub const PCM_RATE: u32 = 24_000;

/// `turn_detection` of type `server_vad`.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnDetection {
    pub vad: ServerVad,
    /// Whether the end of speech starts a response.
    pub create_response: bool,
    /// Whether speech that starts during a response cancels it (barge-in).
    pub interrupt_response: bool,
}

/// What `session.update` may change.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeSettings {
    /// The system prompt (`None`: the service's).
    pub instructions: Option<String>,
    /// A voice-library name (`None`: the voice the session starts in).
    pub voice: Option<String>,
    /// Spoken answers (`output_modalities: ["audio"]`) or written ones (`["text"]`).
    pub audio_out: bool,
    /// Function tools the client runs itself.
    pub tools: Vec<ToolDefinition>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    /// `None`: the client commits the input buffer itself.
    pub turn_detection: Option<TurnDetection>,
    pub temperature: Option<f64>,
    /// `None`: `"inf"` (the service's generation limit).
    pub max_output_tokens: Option<usize>,
}

/// What an update changed that the connection must act on.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Changed {
    pub instructions: bool,
    pub tools: bool,
    pub voice: bool,
}

impl RealtimeSettings {
    /// A new connection's settings: server VAD with the service's defaults.
    pub fn new(config: &RealtimeConfig, audio_out: bool) -> Self {
        Self {
            instructions: None,
            voice: None,
            audio_out,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            turn_detection: Some(TurnDetection {
                vad: config.turn_detection.clone(),
                create_response: true,
                interrupt_response: true,
            }),
            temperature: None,
            max_output_tokens: None,
        }
    }

    /// Applies the `session` object of a `session.update`; `voice_known` says whether a
    /// voice name is in the library (`Err` with the names when it is not).
    pub fn update(
        &mut self,
        session: &Value,
        agent_tools: &[String],
        voice_known: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Changed, EventError> {
        let Value::Object(fields) = session else {
            return Err(invalid("session.update needs a \"session\" object", "session"));
        };
        let mut next = self.clone();
        let mut changed = Changed::default();
        for (key, value) in fields {
            match key.as_str() {
                "type" if value == "realtime" => {}
                "type" => {
                    return Err(invalid("only \"realtime\" sessions are served", "session.type"))
                }
                // One model serves; the name is informational.
                "model" | "tracing" | "include" | "truncation" | "prompt" => {}
                "instructions" => {
                    let text = value.as_str().ok_or_else(|| {
                        invalid("instructions must be a string", "session.instructions")
                    })?;
                    next.instructions = Some(text.to_owned()).filter(|t| !t.trim().is_empty());
                    changed.instructions = next.instructions != self.instructions;
                }
                "output_modalities" => next.audio_out = modalities(value)?,
                "tools" => {
                    next.tools = tools(value, agent_tools)?;
                    changed.tools = next.tools != self.tools;
                }
                "tool_choice" => next.tool_choice = tool_choice(value)?,
                "parallel_tool_calls" => {
                    next.parallel_tool_calls = value.as_bool().ok_or_else(|| {
                        invalid(
                            "parallel_tool_calls must be a boolean",
                            "session.parallel_tool_calls",
                        )
                    })?
                }
                "temperature" => {
                    let t =
                        value.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or_else(|| {
                            invalid("temperature must be a number in [0, 2]", "session.temperature")
                        })?;
                    next.temperature = Some(t);
                }
                "max_output_tokens" => next.max_output_tokens = max_tokens(value)?,
                "audio" => audio(&mut next, value, &voice_known)?,
                other => {
                    return Err(invalid(
                        format!("session.{other} is not supported by voxloop"),
                        format!("session.{other}"),
                    ))
                }
            }
        }
        if let ToolChoice::Named(name) = &next.tool_choice {
            let declared =
                next.tools.iter().any(|t| &t.name == name) || agent_tools.iter().any(|t| t == name);
            if !declared {
                return Err(invalid(
                    format!("tool_choice names {name:?}, which is neither a session tool nor one of voxloop's"),
                    "session.tool_choice",
                ));
            }
        }
        changed.voice = next.voice != self.voice;
        *self = next;
        Ok(changed)
    }

    /// The session object of `session.created` / `session.updated`.
    pub fn to_json(&self, id: &str, model: &str, voice: Option<&str>) -> Value {
        let format = json!({ "type": "audio/pcm", "rate": PCM_RATE });
        let turn_detection = self.turn_detection.as_ref().map(|t| {
            json!({
                "type": "server_vad",
                "threshold": t.vad.threshold,
                "prefix_padding_ms": t.vad.prefix_padding_ms,
                "silence_duration_ms": t.vad.silence_duration_ms,
                "create_response": t.create_response,
                "interrupt_response": t.interrupt_response,
            })
        });
        let tools: Vec<Value> = self
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function", "name": t.name, "description": t.description,
                    "parameters": t.parameters,
                })
            })
            .collect();
        let tool_choice = match &self.tool_choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({ "type": "function", "name": name }),
        };
        json!({
            "type": "realtime",
            "object": "realtime.session",
            "id": id,
            "model": model,
            "output_modalities": [if self.audio_out { "audio" } else { "text" }],
            "instructions": self.instructions,
            "audio": {
                "input": { "format": format, "turn_detection": turn_detection },
                "output": { "format": format, "voice": voice },
            },
            "tools": tools,
            "tool_choice": tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens.map_or(json!("inf"), |n| json!(n)),
        })
    }
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> EventError {
    EventError::invalid("invalid_value", message).param(param)
}

fn modalities(value: &Value) -> Result<bool, EventError> {
    let param = "session.output_modalities";
    let list =
        value.as_array().ok_or_else(|| invalid("output_modalities must be an array", param))?;
    match list.iter().map(Value::as_str).collect::<Vec<_>>().as_slice() {
        [Some("audio")] | [Some("audio"), Some("text")] | [Some("text"), Some("audio")] => Ok(true),
        [Some("text")] => Ok(false),
        _ => Err(invalid("output_modalities must be [\"audio\"] or [\"text\"]", param)),
    }
}

fn max_tokens(value: &Value) -> Result<Option<usize>, EventError> {
    match value {
        Value::String(s) if s == "inf" => Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(n @ 1..=4096) => Ok(Some(n as usize)),
            _ => Err(invalid(
                "max_output_tokens must be 1..=4096 or \"inf\"",
                "session.max_output_tokens",
            )),
        },
        _ => Err(invalid(
            "max_output_tokens must be a number or \"inf\"",
            "session.max_output_tokens",
        )),
    }
}

fn tools(value: &Value, agent_tools: &[String]) -> Result<Vec<ToolDefinition>, EventError> {
    let list =
        value.as_array().ok_or_else(|| invalid("tools must be an array", "session.tools"))?;
    let mut out: Vec<ToolDefinition> = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let param = format!("session.tools[{i}]");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid("only tools of type \"function\" are supported", param));
        }
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(invalid(
                "a tool name must be 1-64 of a-z, A-Z, 0-9, _ and -",
                param + ".name",
            ));
        }
        if agent_tools.iter().any(|t| t == name) || out.iter().any(|t| t.name == name) {
            return Err(invalid(
                format!(
                    "the tool name {name:?} is already taken (voxloop's own tools: {})",
                    agent_tools.join(", ")
                ),
                param + ".name",
            ));
        }
        let parameters = tool
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        if !parameters.is_object() {
            return Err(invalid("parameters must be a JSON Schema object", param + ".parameters"));
        }
        let description =
            tool.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
        out.push(ToolDefinition { name: name.to_owned(), description, parameters });
    }
    Ok(out)
}

fn tool_choice(value: &Value) -> Result<ToolChoice, EventError> {
    let param = "session.tool_choice";
    match value {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(format!("tool_choice {other:?}: use auto, none, required or {{\"type\": \"function\", \"name\": ...}}"), param)),
        },
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("function") => {
            let name = map.get("name").and_then(Value::as_str).ok_or_else(|| invalid("a named tool_choice needs \"name\"", param))?;
            Ok(ToolChoice::Named(name.to_owned()))
        }
        _ => Err(invalid("tool_choice must be a string or {\"type\": \"function\", \"name\": ...}", param)),
    }
}

fn audio(
    next: &mut RealtimeSettings,
    value: &Value,
    voice_known: &impl Fn(&str) -> Result<(), String>,
) -> Result<(), EventError> {
    let Value::Object(audio) = value else {
        return Err(invalid("audio must be an object", "session.audio"));
    };
    for (side, config) in audio {
        let Value::Object(config) = config else {
            return Err(invalid(
                format!("audio.{side} must be an object"),
                format!("session.audio.{side}"),
            ));
        };
        for (key, value) in config {
            let param = format!("session.audio.{side}.{key}");
            match (side.as_str(), key.as_str()) {
                (_, "format") => format(value, &param)?,
                ("input", "turn_detection") => next.turn_detection = turn_detection(value, &param)?,
                ("input", "noise_reduction" | "transcription") if value.is_null() => {}
                ("output", "voice") => {
                    let name = match value {
                        Value::String(name) => name.clone(),
                        Value::Object(v) => {
                            v.get("id").and_then(Value::as_str).unwrap_or("").to_owned()
                        }
                        _ => String::new(),
                    };
                    voice_known(&name).map_err(|message| invalid(message, param))?;
                    next.voice = Some(name);
                }
                ("output", "speed") if value.as_f64() == Some(1.0) => {}
                _ => return Err(invalid(format!("{param} is not supported by voxloop"), param)),
            }
        }
    }
    Ok(())
}

fn format(value: &Value, param: &str) -> Result<(), EventError> {
    let kind = value.get("type").and_then(Value::as_str);
    let rate = value.get("rate").and_then(Value::as_u64);
    match (kind, rate) {
        (Some("audio/pcm") | None, Some(24_000) | None) => Ok(()),
        _ => Err(invalid("only {\"type\": \"audio/pcm\", \"rate\": 24000} is supported", param)),
    }
}

fn turn_detection(value: &Value, param: &str) -> Result<Option<TurnDetection>, EventError> {
    let Value::Object(map) = value else {
        return if value.is_null() {
            Ok(None)
        } else {
            Err(invalid("turn_detection must be an object or null", param))
        };
    };
    if map.get("type").and_then(Value::as_str) != Some("server_vad") {
        return Err(invalid(
            "turn_detection.type must be \"server_vad\" (semantic_vad is not served)",
            param,
        ));
    }
    let mut vad = ServerVad::default();
    let mut detection =
        TurnDetection { vad: vad.clone(), create_response: true, interrupt_response: true };
    for (key, value) in map {
        let field = format!("{param}.{key}");
        match key.as_str() {
            "type" => {}
            "threshold" => {
                vad.threshold = value
                    .as_f64()
                    .filter(|t| *t > 0.0 && *t < 1.0)
                    .ok_or_else(|| invalid("threshold must be in (0, 1)", field))?
                    as f32
            }
            "prefix_padding_ms" => vad.prefix_padding_ms = ms(value, &field)?,
            "silence_duration_ms" => vad.silence_duration_ms = ms(value, &field)?,
            "create_response" => {
                detection.create_response =
                    value.as_bool().ok_or_else(|| invalid("must be a boolean", field))?
            }
            "interrupt_response" => {
                detection.interrupt_response =
                    value.as_bool().ok_or_else(|| invalid("must be a boolean", field))?
            }
            "idle_timeout_ms" if value.is_null() => {}
            _ => return Err(invalid(format!("{field} is not supported by voxloop"), field)),
        }
    }
    detection.vad = vad;
    Ok(Some(detection))
}

fn ms(value: &Value, field: &str) -> Result<u32, EventError> {
    value
        .as_u64()
        .filter(|ms| *ms <= 10_000)
        .map(|ms| ms as u32)
        .ok_or_else(|| invalid("must be a whole number of milliseconds, at most 10000", field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RealtimeSettings {
        RealtimeSettings::new(&RealtimeConfig::default(), true)
    }

    fn no_voice(name: &str) -> Result<(), String> {
        if name == "alto" {
            Ok(())
        } else {
            Err(format!("no voice {name:?}"))
        }
    }

    #[test]
    fn an_update_applies_what_it_names() {
        let mut s = settings();
        let update = json!({
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["text"],
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "lookup"},
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}},
                      "output": {"voice": "alto"}},
        });
        let changed = s.update(&update, &["web_search".into()], no_voice).unwrap();
        assert_eq!(changed, Changed { instructions: true, tools: true, voice: true });
        assert!(!s.audio_out);
        assert_eq!(s.turn_detection.as_ref().unwrap().vad.silence_duration_ms, 200);
        assert_eq!(s.tool_choice, ToolChoice::Named("lookup".into()));
        let json = s.to_json("conv_1", "step-audio-2-mini", Some("alto"));
        assert_eq!(json["tools"][0]["name"], "lookup");
        assert_eq!(json["audio"]["input"]["turn_detection"]["silence_duration_ms"], 200);
        s.update(&json!({"audio": {"input": {"turn_detection": null}}}), &[], no_voice).unwrap();
        assert!(s.turn_detection.is_none());
    }

    #[test]
    fn a_refused_update_changes_nothing() {
        let mut s = settings();
        let before = s.clone();
        for (update, param) in [
            (
                json!({"instructions": "x", "output_modalities": ["video"]}),
                "session.output_modalities",
            ),
            (
                json!({"tools": [{"type": "function", "name": "web_search"}]}),
                "session.tools[0].name",
            ),
            (json!({"audio": {"output": {"voice": "nobody"}}}), "session.audio.output.voice"),
            (
                json!({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}),
                "session.audio.input.format",
            ),
            (
                json!({"tool_choice": {"type": "function", "name": "missing"}}),
                "session.tool_choice",
            ),
            (json!({"modalities": ["text"]}), "session.modalities"),
        ] {
            let e = s.update(&update, &["web_search".into()], no_voice).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{update}: {}", e.message);
            assert_eq!(s, before);
        }
    }
}
