//! Writing a connection's session history: the system and tool turns, user items (text and
//! audio), function call outputs, approval answers, and truncation of spoken answers.

use std::sync::Arc;

use serde_json::{json, Value};
use voxloop_core::session::{HumanPart, ToolResultTurn, Turn};
use voxloop_policies::Approval;

use super::audio::decode_pcm16;
use super::{Connection, CODES_PER_SECOND};
use crate::http::realtime::protocol::{self, new_id, EventError};
use crate::http::realtime::settings::PCM_RATE;

/// What the model reads for a client call that never got its output.
const FORGOTTEN_CALL: &str =
    "No result: the client sent no output for this call before the conversation went on.";

impl Connection {
    /// Writes the system and tool turns into an empty history, and rewrites them when the
    /// instructions or tools changed since.
    pub(super) async fn write_preamble(&mut self) -> Result<(), EventError> {
        let tools = self.compile_tools().await?;
        let schemas = if tools.declares_nothing() {
            None
        } else {
            Some(tools.tool_json_schemas().map_err(|e| EventError::server(e.to_string()))?)
        };
        let prompt = self.settings.instructions.clone();
        let defaults = self.rt.defaults.system_prompt.clone();
        let now = self.rt.agent.config().now();
        let session = &mut self.state()?.session;
        session.settings_mut().system_prompt = prompt.unwrap_or(defaults);
        let system = Turn::System { text: session.settings().system_text(now) };
        let internal = |e: voxloop_core::Error| EventError::server(e.to_string());
        if session.history().is_empty() {
            session.push_turn(system);
            if let Some(json) = schemas {
                session.push_turn(Turn::ToolSchemas { json });
            }
            return Ok(());
        }
        // A turn that is already as it should be is left alone: editing it cuts the cache.
        if session.history()[0] != system {
            session.replace_turn(0, system).map_err(internal)?;
        }
        let has_schemas = matches!(session.history().get(1), Some(Turn::ToolSchemas { .. }));
        match (has_schemas, schemas.map(|json| Turn::ToolSchemas { json })) {
            (true, Some(turn)) if session.history()[1] != turn => {
                session.replace_turn(1, turn).map_err(internal)?
            }
            (true, None) => drop(session.remove_turn(1).map_err(internal)?),
            (false, Some(turn)) => session.insert_turn(1, turn).map_err(internal)?,
            _ => {}
        }
        Ok(())
    }

    pub(super) async fn add_user_turn(
        &mut self,
        item_id: &str,
        parts: Vec<HumanPart>,
        text: Option<&str>,
    ) -> Result<(), EventError> {
        self.write_preamble().await?;
        self.answer_forgotten_calls().await?;
        let audio = parts.iter().any(|p| matches!(p, HumanPart::Audio { .. }));
        self.state()?.session.push_turn(Turn::Human { parts });
        let item = protocol::user_item(item_id, text, audio);
        self.item_added(item).await;
        Ok(())
    }

    /// The calls of the last assistant turn the client was asked to run and never answered:
    /// before the conversation goes on, each gets a result saying so (the history never holds
    /// a call without its result), shown to the client as a `function_call_output` item.
    async fn answer_forgotten_calls(&mut self) -> Result<(), EventError> {
        let session = &mut self.state()?.session;
        let history = session.history();
        let last_calls = history.iter().enumerate().rev().find_map(|(i, turn)| match turn {
            Turn::Assistant(assistant) => Some((i, assistant.calls.clone())),
            _ => None,
        });
        let Some((index, calls)) = last_calls else { return Ok(()) };
        let answered: Vec<String> = history[index + 1..]
            .iter()
            .filter_map(|turn| match turn {
                Turn::ToolResult(result) => Some(result.call_id.clone()),
                _ => None,
            })
            .collect();
        let forgotten: Vec<_> = calls.into_iter().filter(|c| !answered.contains(&c.id)).collect();
        for call in &forgotten {
            session.push_turn(Turn::ToolResult(ToolResultTurn {
                call_id: call.id.clone(),
                name: call.name.clone(),
                ok: false,
                text: FORGOTTEN_CALL.to_owned(),
                instruction: None,
            }));
        }
        for call in forgotten {
            let item = protocol::function_output_item(&new_id("item"), &call.id, FORGOTTEN_CALL);
            self.item_added(item).await;
        }
        Ok(())
    }

    pub(super) async fn item_added(&mut self, item: Value) {
        let previous = self.last_item.clone();
        self.send("conversation.item.added", json!({ "item": item, "previous_item_id": previous }))
            .await;
        self.send("conversation.item.done", json!({ "item": item, "previous_item_id": previous }))
            .await;
        self.last_item = item.get("id").and_then(Value::as_str).map(str::to_owned);
    }

    /// 24 kHz speech (and optional text) as a user item.
    pub(super) async fn add_audio_item(
        &mut self,
        item_id: &str,
        samples: Vec<f32>,
        text: Option<String>,
    ) -> Result<(), EventError> {
        let limits = self.rt.audio_limits;
        let seconds = samples.len() as f64 / f64::from(PCM_RATE);
        if seconds > limits.max_seconds {
            return Err(EventError::invalid(
                "audio_too_long",
                format!(
                    "the audio lasts {seconds:.1} s; the limit is {} s ([agent] max_audio_seconds)",
                    limits.max_seconds
                ),
            ));
        }
        let chunks = tokio::task::spawn_blocking(move || {
            let samples_16k = voxloop_core::audio::resample(&samples, PCM_RATE, 16_000)?;
            voxloop_core::audio::log_mel_chunks(&samples_16k)
        })
        .await
        .map_err(|e| EventError::server(format!("the audio task failed: {e}")))?
        .map_err(|e| {
            EventError::invalid("invalid_audio", format!("the audio cannot be read: {e}"))
        })?;
        let mut parts = vec![HumanPart::Audio { chunks }];
        if let Some(text) = &text {
            parts.push(HumanPart::Text { text: text.clone() });
        }
        self.add_user_turn(item_id, parts, text.as_deref()).await
    }

    pub(super) async fn create_item(&mut self, item: &Value) -> Result<(), EventError> {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        let item_id =
            item.get("id").and_then(Value::as_str).map_or_else(|| new_id("item"), str::to_owned);
        match kind {
            "message" => {
                if item.get("role").and_then(Value::as_str) != Some("user") {
                    return Err(EventError::invalid("invalid_value", "voxloop takes user messages only (the assistant's come from the model; instructions go in session.update)").param("item.role"));
                }
                let content = item.get("content").and_then(Value::as_array).ok_or_else(|| {
                    EventError::invalid("invalid_value", "a message needs a content array").param("item.content")
                })?;
                let mut text: Option<String> = None;
                let mut audio: Option<Vec<f32>> = None;
                for (i, part) in content.iter().enumerate() {
                    let param = format!("item.content[{i}]");
                    match part.get("type").and_then(Value::as_str) {
                        Some("input_text") => {
                            let t = part.get("text").and_then(Value::as_str).ok_or_else(|| EventError::invalid("invalid_value", "input_text needs text").param(param.clone()))?;
                            text.get_or_insert_with(String::new).push_str(t);
                        }
                        Some("input_audio") => {
                            let b64 = part.get("audio").and_then(Value::as_str).ok_or_else(|| EventError::invalid("invalid_value", "input_audio needs base64 PCM16 audio").param(param.clone()))?;
                            audio.get_or_insert_with(Vec::new).extend(decode_pcm16(b64, &param)?);
                        }
                        _ => return Err(EventError::invalid("invalid_value", "content parts must be input_text or input_audio").param(param)),
                    }
                }
                match audio {
                    Some(samples) => self.add_audio_item(&item_id, samples, text).await,
                    None => {
                        let text = text.filter(|t| !t.trim().is_empty()).ok_or_else(|| EventError::invalid("invalid_value", "the message has no text and no audio").param("item.content"))?;
                        self.add_user_turn(&item_id, vec![HumanPart::Text { text: text.clone() }], Some(&text)).await
                    }
                }
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| EventError::invalid("invalid_value", "function_call_output needs call_id").param("item.call_id"))?;
                let output = item.get("output").and_then(Value::as_str).ok_or_else(|| EventError::invalid("invalid_value", "function_call_output needs an output string").param("item.output"))?;
                let session = &mut self.state()?.session;
                let history = session.history();
                let name = history.iter().find_map(|turn| match turn {
                    Turn::Assistant(a) => a.calls.iter().find(|c| c.id == call_id).map(|c| c.name.clone()),
                    _ => None,
                });
                let Some(name) = name else {
                    return Err(EventError::invalid("invalid_value", format!("no function call {call_id:?} in this conversation")).param("item.call_id"));
                };
                if history.iter().any(|t| matches!(t, Turn::ToolResult(r) if r.call_id == call_id)) {
                    return Err(EventError::invalid("invalid_value", format!("the call {call_id:?} already has its output")).param("item.call_id"));
                }
                session.push_turn(Turn::ToolResult(ToolResultTurn { call_id: call_id.to_owned(), name, ok: true, text: output.to_owned(), instruction: None }));
                let item = protocol::function_output_item(&item_id, call_id, output);
                self.item_added(item).await;
                Ok(())
            }
            "mcp_approval_response" => {
                let call_id = item.get("approval_request_id").and_then(Value::as_str).ok_or_else(|| EventError::invalid("invalid_value", "mcp_approval_response needs approval_request_id").param("item.approval_request_id"))?;
                let approve = item.get("approve").and_then(Value::as_bool).ok_or_else(|| EventError::invalid("invalid_value", "mcp_approval_response needs approve: true or false").param("item.approve"))?;
                let approval = if approve {
                    Approval::Approved
                } else {
                    let reason = item.get("reason").and_then(Value::as_str).map(|r| r.trim().trim_end_matches('.').to_owned()).filter(|r| !r.is_empty());
                    Approval::Denied { reason }
                };
                self.rt.approvals.answer(&self.session_id, call_id, approval).map_err(|e| {
                    EventError::invalid("invalid_value", e.message(&self.session_id, call_id)).param("item.approval_request_id")
                })?;
                let item = json!({ "id": item_id, "type": "mcp_approval_response", "approval_request_id": call_id, "approve": approve });
                self.item_added(item).await;
                Ok(())
            }
            other => Err(EventError::invalid("invalid_value", format!("items of type {other:?} cannot be created (message, function_call_output, mcp_approval_response)")).param("item.type")),
        }
    }

    pub(super) async fn truncate(
        &mut self,
        item_id: &str,
        content_index: u32,
        audio_end_ms: u64,
    ) -> Result<(), EventError> {
        let filler = self.fillers.contains(item_id);
        let found = self.assistant_items.iter().find(|(id, _)| id == item_id);
        let Some(&(_, index)) = found else {
            if filler && content_index == 0 {
                // A filler is not in the history: there is nothing to cut.
                self.send(
                    "conversation.item.truncated",
                    json!({ "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms }),
                )
                .await;
                return Ok(());
            }
            return Err(EventError::invalid(
                "invalid_value",
                format!("no assistant message item {item_id:?} in this conversation"),
            )
            .param("item_id"));
        };
        if content_index != 0 {
            return Err(EventError::invalid(
                "invalid_value",
                "assistant items have one content part: content_index 0",
            )
            .param("content_index"));
        }
        let codes = (audio_end_ms * CODES_PER_SECOND / 1000) as usize;
        self.cut_assistant(index, codes)?;
        self.send(
            "conversation.item.truncated",
            json!({ "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms }),
        )
        .await;
        Ok(())
    }

    /// Cuts the assistant turn `index` to its first `codes` speech codes.
    pub(super) fn cut_assistant(&mut self, index: usize, codes: usize) -> Result<(), EventError> {
        let rt = Arc::clone(&self.rt);
        let session = &mut self.state()?.session;
        let Some(Turn::Assistant(turn)) = session.history().get(index) else {
            return Err(EventError::server("the item's turn is not in the history any more"));
        };
        if !turn.speech {
            return Err(EventError::invalid("invalid_value", "the item has no audio to truncate")
                .param("item_id"));
        }
        let tokenizer = rt.agent.tokenizer();
        if codes >= turn.speech_codes(tokenizer) {
            return Ok(());
        }
        let cut = turn.truncated_to_codes(tokenizer, codes);
        session
            .replace_turn(index, Turn::Assistant(cut))
            .map_err(|e| EventError::server(e.to_string()))
    }
}
