//! From the agent's events to OpenAI's answer: a [`Collector`] reads a turn's events, cuts
//! the text at the request's stop strings and yields the [`Delta`]s a stream sends; what it
//! gathered becomes the non-streamed `chat.completion`. Both shapes come from the same
//! events, so a streamed answer reassembles to the non-streamed one.
//!
//! Spoken answers carry their transcript in `audio.transcript` (`content` holds only text
//! written outside the speech, `null` when there is none), the audio in `audio.data`, and
//! StepFun's `tts_content` (`tts_text`, and `tts_audio` as `<audio_N>` codes) so that the
//! clients of StepFun's vLLM server read them as they do there. A think phase comes as
//! `reasoning_content`, the field vLLM's reasoning parsers (StepFun's `step-audio2` one
//! included) fill; its tokens are counted in `completion_tokens_details.reasoning_tokens`.

use base64::Engine as _;
use serde_json::{json, Value};
use voxloop_core::agent::{AgentEvent, TurnEndReason, Usage};

use super::request::AudioFormat;
use crate::http::pcm::{pcm16_le, wav_bytes};

/// A call the model made to a client tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (what `function.arguments` carries).
    pub arguments: String,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Text of the think phase.
    Reasoning(String),
    /// Written text.
    Content(String),
    /// Text of the speech.
    Transcript(String),
    /// Speech codes.
    Codes(Vec<u16>),
    /// Rendered speech.
    Audio(Vec<f32>),
    /// A call; `index` counts the answer's calls from 0.
    Call { index: usize, call: Call },
}

/// Finds stop strings in text that arrives in pieces, holding back a tail that may be the
/// start of one.
#[derive(Debug, Default)]
struct StopScan {
    stops: Vec<String>,
    held: String,
}

impl StopScan {
    /// The text that can be sent now, and whether a stop string was met (nothing after it
    /// is sent).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest tail that begins some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len()).rev().filter(|&n| stop.is_char_boundary(n)).find(|&n| {
                    self.held.len() >= n
                        && self.held.is_char_boundary(self.held.len() - n)
                        && self.held.ends_with(&stop[..n])
                })
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        (out, false)
    }

    /// What is still held, at the end.
    fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Reads a turn's events; see the module documentation.
#[derive(Debug, Default)]
pub struct Collector {
    content_scan: StopScan,
    transcript_scan: StopScan,
    /// A stop string was met: the rest of the turn is not reported (it is being cancelled).
    stopped: bool,
    pub reasoning: String,
    pub content: String,
    pub transcript: String,
    pub codes: Vec<u16>,
    pub pcm: Vec<f32>,
    pub sample_rate: u32,
    pub calls: Vec<Call>,
    pub end: Option<(TurnEndReason, Usage)>,
    /// Rendering failed; the answer has no (or part of its) audio.
    pub speech_error: Option<String>,
}

impl Collector {
    /// A collector cutting text at `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            content_scan: StopScan { stops: stops.clone(), held: String::new() },
            transcript_scan: StopScan { stops, held: String::new() },
            ..Self::default()
        }
    }

    /// Whether a stop string ended the answer (the caller cancels the turn).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes one event; returns what a stream sends for it.
    pub fn push(&mut self, event: AgentEvent) -> Vec<Delta> {
        if let AgentEvent::TurnFinished { reason, usage } = event {
            self.end = Some((reason, usage));
            return self.flush();
        }
        if self.stopped {
            return Vec::new();
        }
        match event {
            // Stop strings cut the answer, not the thinking before it.
            AgentEvent::Reasoning { text } => {
                self.reasoning.push_str(&text);
                vec![Delta::Reasoning(text)]
            }
            AgentEvent::TextDelta { text, in_speech: false } => {
                let (out, hit) = self.content_scan.push(&text);
                self.stopped = hit;
                self.content.push_str(&out);
                non_empty(out).map(Delta::Content).into_iter().collect()
            }
            AgentEvent::TextDelta { text, in_speech: true } => {
                let (out, hit) = self.transcript_scan.push(&text);
                self.stopped = hit;
                self.transcript.push_str(&out);
                non_empty(out).map(Delta::Transcript).into_iter().collect()
            }
            AgentEvent::AudioTokens(codes) => {
                self.codes.extend_from_slice(&codes);
                vec![Delta::Codes(codes)]
            }
            AgentEvent::Audio { pcm, sample_rate } => {
                self.sample_rate = sample_rate;
                self.pcm.extend_from_slice(&pcm);
                vec![Delta::Audio(pcm)]
            }
            AgentEvent::SpeechFailed { message } => {
                self.speech_error = Some(message);
                Vec::new()
            }
            AgentEvent::ToolCallRequested { id, name, arguments } => {
                let call = Call { id, name, arguments: arguments.to_string() };
                self.calls.push(call.clone());
                vec![Delta::Call { index: self.calls.len() - 1, call }]
            }
            // Only client tools are declared: nothing runs here, nothing asks for approval.
            AgentEvent::ToolCallStarted { .. }
            | AgentEvent::ToolCallFinished { .. }
            | AgentEvent::ToolAttachment { .. }
            | AgentEvent::ApprovalRequested(_)
            | AgentEvent::Usage { .. }
            | AgentEvent::TurnFinished { .. } => Vec::new(),
        }
    }

    fn flush(&mut self) -> Vec<Delta> {
        if self.stopped {
            return Vec::new();
        }
        let content = self.content_scan.flush();
        let transcript = self.transcript_scan.flush();
        self.content.push_str(&content);
        self.transcript.push_str(&transcript);
        let mut deltas = Vec::new();
        deltas.extend(non_empty(content).map(Delta::Content));
        deltas.extend(non_empty(transcript).map(Delta::Transcript));
        deltas
    }

    /// The usage of the turn.
    pub fn usage(&self) -> Usage {
        self.end.as_ref().map(|(_, usage)| *usage).unwrap_or_default()
    }

    /// OpenAI's `finish_reason`, or the error that ended the turn.
    pub fn finish_reason(&self, max_new_tokens: usize) -> Result<&'static str, String> {
        match &self.end {
            _ if self.stopped => Ok("stop"),
            Some((TurnEndReason::ToolCalls, _)) => Ok("tool_calls"),
            Some((TurnEndReason::Error(message), _)) => Err(message.clone()),
            Some((_, usage)) if usage.output_tokens >= max_new_tokens => Ok("length"),
            Some(_) => Ok("stop"),
            None => Err("the turn ended without finishing".to_owned()),
        }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// What every object of one answer shares.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `chatcmpl-…`.
    pub id: String,
    pub created: u64,
    pub model: String,
    /// The spoken answer's `audio.id` and encoding (`None`: a text answer).
    pub audio: Option<(String, AudioFormat)>,
    /// `<audio_patch>` positions of the prompt (`prompt_tokens_details.audio_tokens`).
    pub prompt_audio_tokens: usize,
    /// When `audio.id` stops being recognised in a replayed history, in Unix seconds.
    pub audio_expires_at: u64,
}

/// `usage` in OpenAI's shape.
pub fn usage_json(usage: &Usage, envelope: &Envelope) -> Value {
    let prompt = usage.input_tokens + usage.cached_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "audio_tokens": envelope.prompt_audio_tokens,
        },
        "completion_tokens_details": {
            "audio_tokens": usage.audio_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        },
    })
}

fn codes_text(codes: &[u16]) -> String {
    codes.iter().map(|c| format!("<audio_{c}>")).collect()
}

fn tool_call_json(index: Option<usize>, call: &Call) -> Value {
    let mut value = json!({
        "id": call.id,
        "type": "function",
        "function": { "name": call.name, "arguments": call.arguments },
    });
    if let Some(index) = index {
        value["index"] = json!(index);
    }
    value
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The non-streamed `chat.completion`.
pub fn completion(envelope: &Envelope, answer: &Collector, finish: &str) -> Value {
    let content = if answer.content.is_empty() && envelope.audio.is_some() {
        Value::Null
    } else {
        Value::String(answer.content.clone())
    };
    let mut message = json!({ "role": "assistant", "content": content });
    if !answer.reasoning.is_empty() {
        message["reasoning_content"] = Value::String(answer.reasoning.clone());
    }
    if !answer.calls.is_empty() {
        message["tool_calls"] =
            answer.calls.iter().map(|call| tool_call_json(None, call)).collect();
    }
    if let Some((id, format)) = &envelope.audio {
        let data = match format {
            AudioFormat::Wav => wav_bytes(&answer.pcm, answer.sample_rate),
            AudioFormat::Pcm16 => pcm16_le(&answer.pcm),
        };
        message["audio"] = json!({
            "id": id,
            "data": base64(&data),
            "transcript": answer.transcript,
            "expires_at": envelope.audio_expires_at,
        });
        message["tts_content"] =
            json!({ "tts_text": answer.transcript, "tts_audio": codes_text(&answer.codes) });
    }
    json!({
        "id": envelope.id,
        "object": "chat.completion",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": usage_json(&answer.usage(), envelope),
    })
}

/// One `chat.completion.chunk` with `delta` (and `finish_reason` on the last choice chunk).
pub fn chunk(envelope: &Envelope, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": envelope.id,
        "object": "chat.completion.chunk",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    })
}

/// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
pub fn usage_chunk(envelope: &Envelope, usage: &Usage) -> Value {
    json!({
        "id": envelope.id,
        "object": "chat.completion.chunk",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [],
        "usage": usage_json(usage, envelope),
    })
}

/// The `delta` object of a streamed piece.
pub fn delta_json(envelope: &Envelope, delta: &Delta) -> Value {
    let audio_id = envelope.audio.as_ref().map(|(id, _)| id.as_str()).unwrap_or_default();
    match delta {
        Delta::Reasoning(text) => json!({ "reasoning_content": text }),
        Delta::Content(text) => json!({ "content": text }),
        Delta::Transcript(text) => json!({
            "audio": { "id": audio_id, "transcript": text },
            "tts_content": { "tts_text": text },
        }),
        Delta::Codes(codes) => json!({ "tts_content": { "tts_audio": codes_text(codes) } }),
        Delta::Audio(pcm) => json!({ "audio": { "id": audio_id, "data": base64(&pcm16_le(pcm)) } }),
        Delta::Call { index, call } => {
            json!({ "tool_calls": [tool_call_json(Some(*index), call)] })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut scan =
            StopScan { stops: stops.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let mut out = Vec::new();
        for piece in pieces {
            let (text, hit) = scan.push(piece);
            out.push(text);
            if hit {
                return (out, true);
            }
        }
        out.push(scan.flush());
        (out, false)
    }

    #[test]
    fn stop_strings_are_found_across_pieces_and_nothing_after_them_is_sent() {
        assert_eq!(
            scan(&["END"], &["abc E", "N", "D tail"]),
            (vec!["abc ".into(), "".into(), "".into()], true)
        );
        assert_eq!(
            scan(&["END"], &["abc E", "x"]),
            (vec!["abc ".into(), "Ex".into(), "".into()], false)
        );
        assert_eq!(
            scan(&["é!"], &["caf", "é", "!"]),
            (vec!["caf".into(), "".into(), "".into()], true)
        );
        assert_eq!(scan(&[], &["a", "b"]), (vec!["a".into(), "b".into(), "".into()], false));
    }

    #[test]
    fn a_collector_sorts_the_events_and_reports_the_finish() {
        let mut collector = Collector::new(Vec::new());
        collector.push(AgentEvent::TextDelta { text: "Hi".into(), in_speech: true });
        collector.push(AgentEvent::AudioTokens(vec![1, 2]));
        let deltas = collector.push(AgentEvent::ToolCallRequested {
            id: "call_1".into(),
            name: "f".into(),
            arguments: json!({ "a": 1 }),
        });
        assert_eq!(
            deltas,
            [Delta::Call {
                index: 0,
                call: Call { id: "call_1".into(), name: "f".into(), arguments: "{\"a\":1}".into() }
            }]
        );
        let usage = Usage { output_tokens: 9, ..Usage::default() };
        collector.push(AgentEvent::TurnFinished { reason: TurnEndReason::ToolCalls, usage });
        assert_eq!(collector.transcript, "Hi");
        assert_eq!(collector.codes, [1, 2]);
        assert_eq!(collector.finish_reason(9), Ok("tool_calls"));

        let mut cut = Collector::new(Vec::new());
        let usage = Usage { output_tokens: 9, ..Usage::default() };
        cut.push(AgentEvent::TurnFinished { reason: TurnEndReason::Completed, usage });
        assert_eq!(cut.finish_reason(9), Ok("length"));
        assert_eq!(cut.finish_reason(10), Ok("stop"));
    }
}
