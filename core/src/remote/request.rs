//! The Chat Completions request of one generation step: the session's history as OpenAI
//! messages, the declared tools, the step's tool choice and the session's sampling.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::RemoteConfig;
use crate::audio::{wav_file, AudioChunk, SAMPLE_RATE};
use crate::protocol::ToolChoice;
use crate::session::{HumanPart, SamplingSettings, Turn};
use crate::tool::ToolDefinition;
use crate::{Error, Result};

/// What one step asks the remote model for.
#[derive(Debug, Clone, Copy)]
pub struct StepRequest<'a> {
    /// The conversation so far (it ends with a human turn or tool results).
    pub history: &'a [Turn],
    /// The tools the model is told of.
    pub tools: &'a [ToolDefinition],
    /// The step's tool choice.
    pub choice: &'a ToolChoice,
    /// A spoken answer (`modalities: ["text", "audio"]`) or a written one.
    pub speech: bool,
    /// Temperature, top-p, top-k, repetition penalty, seed and token limit. The seed is sent
    /// as it is: the server offsets it by the context position as voxloop does.
    pub sampling: &'a SamplingSettings,
}

/// The streaming request body of `step`.
pub fn chat_body(config: &RemoteConfig, step: &StepRequest<'_>) -> Result<Value> {
    let mut body = json!({
        "model": config.model,
        "messages": messages(step.history)?,
        "stream": true,
        "stream_options": { "include_usage": true },
        "temperature": step.sampling.temperature,
        "top_p": step.sampling.top_p,
        "max_completion_tokens": step.sampling.max_new_tokens,
        // Not OpenAI's, but vLLM's (and voxloop's) extra sampling parameters.
        "top_k": step.sampling.top_k,
        "repetition_penalty": step.sampling.repetition_penalty,
    });
    if let Some(seed) = step.sampling.seed {
        // OpenAI's seed is a signed 64-bit integer; the bits are kept.
        body["seed"] = json!(seed as i64);
    }
    if !step.tools.is_empty() {
        let tools: Vec<Value> = step
            .tools
            .iter()
            .map(|t| serde_json::to_value(t.openai()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Remote(format!("serialising the tools: {e}")))?;
        body["tools"] = Value::Array(tools);
        body["tool_choice"] = match step.choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({ "type": "function", "function": { "name": name } }),
        };
    }
    if step.speech {
        body["modalities"] = json!(["text", "audio"]);
        body["audio"] = json!({ "voice": config.voice, "format": "pcm16" });
    } else {
        body["modalities"] = json!(["text"]);
    }
    Ok(body)
}

/// The history as messages (the `tool_json_schemas` turn is the request's `tools`).
pub fn messages(history: &[Turn]) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(history.len());
    for (index, turn) in history.iter().enumerate() {
        match turn {
            Turn::System { text } => out.push(json!({ "role": "system", "content": text })),
            Turn::ToolSchemas { .. } => {}
            Turn::Human { parts } => out.push(user_message(index, parts)?),
            Turn::Assistant(turn) => {
                let mut message = json!({ "role": "assistant", "content": turn.text });
                if !turn.calls.is_empty() {
                    let calls: Vec<Value> = turn
                        .calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {
                                    "name": call.name,
                                    "arguments": call.arguments.to_string(),
                                },
                            })
                        })
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                if let Some(id) = &turn.reply_id {
                    message["audio"] = json!({ "id": id });
                }
                out.push(message);
            }
            Turn::ToolResult(result) => {
                let mut content = result.text.clone();
                if let Some(instruction) = &result.instruction {
                    content.push_str(instruction);
                }
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": result.call_id,
                    "content": content,
                }));
            }
        }
    }
    Ok(out)
}

fn user_message(index: usize, parts: &[HumanPart]) -> Result<Value> {
    if let [HumanPart::Text { text }] = parts {
        return Ok(json!({ "role": "user", "content": text }));
    }
    let mut content = Vec::new();
    for part in parts {
        match part {
            HumanPart::Text { text } => content.push(json!({ "type": "text", "text": text })),
            HumanPart::Audio { chunks } => {
                for chunk in chunks {
                    content.push(json!({
                        "type": "input_audio",
                        "input_audio": { "data": STANDARD.encode(wav(index, chunk)?), "format": "wav" },
                    }));
                }
            }
        }
    }
    Ok(json!({ "role": "user", "content": content }))
}

/// The chunk's samples as a 16 kHz mono 16-bit WAV file.
fn wav(turn: usize, chunk: &AudioChunk) -> Result<Vec<u8>> {
    let samples = chunk.pcm16().ok_or_else(|| {
        Error::Remote(format!(
            "turn {turn} holds audio without its samples (a session saved before voxloop kept \
             them): a remote model cannot be sent it"
        ))
    })?;
    if samples.len() > (u32::MAX as usize - 44) / 2 {
        return Err(Error::Remote("an audio chunk is too long for a WAV file".to_owned()));
    }
    Ok(wav_file(samples, SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{decode_audio, log_mel_chunks, AudioLimits};
    use crate::session::{AssistantTurn, ToolResultTurn};
    use crate::tool::ToolCall;

    #[test]
    fn a_history_becomes_openai_messages() {
        let samples: Vec<f32> = (0..1600).map(|i| ((i as f32) * 0.05).sin() * 0.3).collect();
        let chunks = log_mel_chunks(&samples).unwrap();
        let call = ToolCall::with_id("call_1", "get_date_time", json!({}));
        let history = vec![
            Turn::System { text: "be brief".into() },
            Turn::ToolSchemas { json: "[]".into() },
            Turn::Human {
                parts: vec![HumanPart::Text { text: "hi".into() }, HumanPart::Audio { chunks }],
            },
            Turn::Assistant(AssistantTurn {
                speech: true,
                ids: Vec::new(),
                text: "let me see".into(),
                calls: vec![call],
                reply_id: Some("audio_7".into()),
            }),
            Turn::ToolResult(ToolResultTurn {
                call_id: "call_1".into(),
                name: "get_date_time".into(),
                ok: true,
                text: "noon".into(),
                instruction: Some(" Summarise.".into()),
            }),
        ];
        let messages = messages(&history).unwrap();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(messages[0], json!({ "role": "system", "content": "be brief" }));
        let parts = messages[1]["content"].as_array().unwrap();
        assert_eq!(parts[0], json!({ "type": "text", "text": "hi" }));
        let data = parts[1]["input_audio"]["data"].as_str().unwrap();
        let wav = STANDARD.decode(data).unwrap();
        let decoded = decode_audio(wav, &AudioLimits::default()).unwrap();
        assert_eq!(decoded.sample_rate, 16_000);
        let back: Vec<i16> = decoded.samples.iter().map(|v| (v * 32768.0).round() as i16).collect();
        let sent = log_mel_chunks(&samples).unwrap()[0].pcm16().unwrap().to_vec();
        assert_eq!(back, sent, "the samples arrive exactly");
        assert_eq!(messages[2]["audio"], json!({ "id": "audio_7" }));
        assert_eq!(messages[2]["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(
            messages[3],
            json!({ "role": "tool", "tool_call_id": "call_1", "content": "noon Summarise." })
        );
    }

    #[test]
    fn the_body_carries_tools_choice_sampling_and_modalities() {
        let history = vec![Turn::Human { parts: vec![HumanPart::Text { text: "hi".into() }] }];
        let tools = vec![ToolDefinition {
            name: "f".into(),
            description: "d".into(),
            parameters: json!({ "type": "object", "properties": {} }),
        }];
        let sampling = SamplingSettings { seed: Some(7), ..SamplingSettings::default() };
        let step = StepRequest {
            history: &history,
            tools: &tools,
            choice: &ToolChoice::Named("f".into()),
            speech: true,
            sampling: &sampling,
        };
        let body = chat_body(&RemoteConfig::default(), &step).unwrap();
        assert_eq!(body["tool_choice"]["function"]["name"], "f");
        assert_eq!(body["tools"][0]["function"]["name"], "f");
        assert_eq!(body["seed"], 7);
        assert_eq!(body["modalities"], json!(["text", "audio"]));
        assert_eq!(body["audio"]["format"], "pcm16");
        assert_eq!(body["stream"], true);
        let text = StepRequest { tools: &[], speech: false, ..step };
        let body = chat_body(&RemoteConfig::default(), &text).unwrap();
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
        assert_eq!(body["modalities"], json!(["text"]));
    }

    #[test]
    fn audio_without_samples_is_refused_with_the_reason() {
        let chunk = AudioChunk::new(vec![0.0; 128], 0).unwrap();
        let history = vec![Turn::Human { parts: vec![HumanPart::Audio { chunks: vec![chunk] }] }];
        let error = messages(&history).unwrap_err().to_string();
        assert!(error.contains("without its samples"), "{error}");
    }
}
