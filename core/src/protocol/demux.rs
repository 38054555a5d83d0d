//! Streaming demultiplexer of generated ids: the output split of stepfun-ai/Step-Audio2
//! `stepaudio2.py`, the speech section of StepFun's vLLM fork's ta4 parser
//! (`vllm/audio_parser/step_audio_2_tts_ta4_parser.py`) and its tool parser
//! (`vllm/entrypoints/openai/tool_parsers/step_audio_2_tool_parser.py`), one id at a time.
//!
//! Step-Audio 2 writes one id stream that mixes spoken text, speech codes, padding, control
//! tokens and tool calls:
//!
//! ```text
//! [<tts_start>] T A A A A T A A A A … <tts_pad> A A A A … <tts_end> [text] [<tool_call>…</tool_call>]* <|EOT|>
//! ```
//!
//! [`Demux`] classifies each id as it is sampled and emits [`DemuxEvent`]s:
//!
//! | id | event |
//! |---|---|
//! | text (below `<audio_start>`) outside a call | [`DemuxEvent::TextDelta`], `in_speech` telling spoken text from written content |
//! | `<audio_N>`, N < 6561 | [`DemuxEvent::AudioTokens`] (`<audio_6561>`, the audio padding, is dropped) |
//! | control range `[<audio_start>, <audio_0>)` (`<tts_start>`, `<tts_end>`, `<tts_pad>`, …) | [`DemuxEvent::Control`]; `<tts_start>`/`<tts_end>` also switch the speech flag |
//! | an id above `<audio_6561>` (no token) | [`DemuxEvent::Control`] |
//! | `<tool_call>` | [`DemuxEvent::ToolCallStart`]; text ids are buffered until … |
//! | `</tool_call>` | [`DemuxEvent::ToolCall`] with the buffered ids decoded and parsed |
//! | `<|EOT|>` or `<|endoftext|>` | [`DemuxEvent::End`]; later ids are ignored |
//!
//! Inside a call only text ids are buffered: speech codes and control ids keep their events,
//! so a call the model writes inside the speech section (its text interleaved with audio and
//! pads, which the research notes could not rule out) parses like one written after
//! `<tts_end>`. Malformed sequences never stop the stream: a `<tool_call>` inside an open call
//! fails the open one ([`ToolCallError::Nested`]) and starts a new one, a stray `</tool_call>`
//! gives [`ToolCallError::UnmatchedClose`], and a call still open at the end gives
//! [`ToolCallError::Unclosed`] before [`DemuxEvent::End`].

use super::render::GenerationMode;
use super::toolcall::{excerpt, parse_tool_call, ParsedToolCall, ToolCallError};
use crate::tokenizer::{SpecialTokens, StepTokenizer, TokenClass};
use crate::Result;

/// Turns the buffered ids of a tool call into text (the tokenizer, in practice).
pub trait TextDecoder {
    /// Decodes `ids` to text, keeping added tokens as their literal strings.
    fn decode_text(&self, ids: &[i64]) -> Result<String>;
}

impl TextDecoder for StepTokenizer {
    fn decode_text(&self, ids: &[i64]) -> Result<String> {
        self.decode(ids)
    }
}

impl<T: TextDecoder + ?Sized> TextDecoder for &T {
    fn decode_text(&self, ids: &[i64]) -> Result<String> {
        (**self).decode_text(ids)
    }
}

/// A closure as a [`TextDecoder`].
#[derive(Debug, Clone, Copy)]
pub struct DecodeFn<F>(pub F);

impl<F: Fn(&[i64]) -> Result<String>> TextDecoder for DecodeFn<F> {
    fn decode_text(&self, ids: &[i64]) -> Result<String> {
        (self.0)(ids)
    }
}

/// What a generated id means; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub enum DemuxEvent {
    /// Text ids outside a tool call. `in_speech`: inside `<tts_start>` … `<tts_end>` (the
    /// transcript of the speech), otherwise written content.
    TextDelta { ids: Vec<i64>, in_speech: bool },
    /// Speech codes 0..=6560 (25 Hz), for the vocoder.
    AudioTokens(Vec<u16>),
    /// A control id (`<tts_start>`, `<tts_end>`, `<tts_pad>`, `<audio_start>`, …) or an id
    /// with no token.
    Control(i64),
    /// `<tool_call>`: a call begins.
    ToolCallStart,
    /// A call ended (or failed); see [`ToolCallError`] for the failures.
    ToolCall(std::result::Result<ParsedToolCall, ToolCallError>),
    /// `<|EOT|>` / `<|endoftext|>`, or [`Demux::finish`]: the turn is over.
    End,
}

/// The streaming state machine; see the module documentation.
#[derive(Debug, Clone)]
pub struct Demux<D> {
    special: SpecialTokens,
    decoder: D,
    in_speech: bool,
    /// The text ids of the open call, if one is open.
    call: Option<Vec<i64>>,
    finished: bool,
}

impl<D: TextDecoder> Demux<D> {
    /// A demultiplexer for a turn whose prompt ended as `mode` says: after
    /// `<|BOT|>assistant\n<tts_start>` ([`GenerationMode::Speech`]) the first ids are inside the
    /// speech section.
    pub fn new(special: SpecialTokens, decoder: D, mode: GenerationMode) -> Self {
        Self {
            special,
            decoder,
            in_speech: mode == GenerationMode::Speech,
            call: None,
            finished: false,
        }
    }

    /// Whether the next text id would be spoken text.
    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Whether a `<tool_call>` is open.
    pub fn in_tool_call(&self) -> bool {
        self.call.is_some()
    }

    /// Whether [`DemuxEvent::End`] has been emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The events of one generated id (often none or one).
    pub fn push(&mut self, id: i64) -> Vec<DemuxEvent> {
        let mut events = Vec::new();
        self.push_into(id, &mut events);
        events
    }

    /// The events of several ids, consecutive text and audio merged.
    pub fn push_all(&mut self, ids: &[i64]) -> Vec<DemuxEvent> {
        let mut events = Vec::new();
        for &id in ids {
            self.push_into(id, &mut events);
        }
        events
    }

    /// Appends the events of `id` to `events`, extending the last event when it is text of the
    /// same kind or audio.
    pub fn push_into(&mut self, id: i64, events: &mut Vec<DemuxEvent>) {
        if self.finished {
            return;
        }
        let s = &self.special;
        if id == s.eot || id == s.endoftext {
            self.end(events);
        } else if id == s.tool_call_start {
            if let Some(ids) = self.call.take() {
                let text = self.excerpt_of(&ids);
                events.push(DemuxEvent::ToolCall(Err(ToolCallError::Nested { text })));
            }
            events.push(DemuxEvent::ToolCallStart);
            self.call = Some(Vec::new());
        } else if id == s.tool_call_end {
            let result = match self.call.take() {
                Some(ids) => self.parse_call(&ids),
                None => Err(ToolCallError::UnmatchedClose),
            };
            events.push(DemuxEvent::ToolCall(result));
        } else {
            match s.classify(id) {
                TokenClass::AudioCode(code) => push_audio(events, code),
                TokenClass::AudioPad => {}
                TokenClass::Control => {
                    if id == s.tts_start {
                        self.in_speech = true;
                    } else if id == s.tts_end {
                        self.in_speech = false;
                    }
                    events.push(DemuxEvent::Control(id));
                }
                TokenClass::Unused => events.push(DemuxEvent::Control(id)),
                TokenClass::Text => match &mut self.call {
                    Some(buffer) => buffer.push(id),
                    None => push_text(events, id, self.in_speech),
                },
            }
        }
    }

    /// Ends the turn when generation stopped without `<|EOT|>` (token limit, cancellation):
    /// an open call fails as [`ToolCallError::Unclosed`], then [`DemuxEvent::End`]. Nothing
    /// if the turn already ended.
    pub fn finish(&mut self) -> Vec<DemuxEvent> {
        let mut events = Vec::new();
        if !self.finished {
            self.end(&mut events);
        }
        events
    }

    fn end(&mut self, events: &mut Vec<DemuxEvent>) {
        if let Some(ids) = self.call.take() {
            let text = self.excerpt_of(&ids);
            events.push(DemuxEvent::ToolCall(Err(ToolCallError::Unclosed { text })));
        }
        self.finished = true;
        events.push(DemuxEvent::End);
    }

    fn parse_call(&self, ids: &[i64]) -> std::result::Result<ParsedToolCall, ToolCallError> {
        let text = self
            .decoder
            .decode_text(ids)
            .map_err(|e| ToolCallError::Undecodable { message: e.to_string() })?;
        parse_tool_call(&text)
    }

    /// The start of a call's text for an error message (empty if it does not decode).
    fn excerpt_of(&self, ids: &[i64]) -> String {
        self.decoder.decode_text(ids).map(|text| excerpt(&text)).unwrap_or_default()
    }
}

fn push_text(events: &mut Vec<DemuxEvent>, id: i64, in_speech: bool) {
    if let Some(DemuxEvent::TextDelta { ids, in_speech: last }) = events.last_mut() {
        if *last == in_speech {
            ids.push(id);
            return;
        }
    }
    events.push(DemuxEvent::TextDelta { ids: vec![id], in_speech });
}

fn push_audio(events: &mut Vec<DemuxEvent>, code: u16) {
    if let Some(DemuxEvent::AudioTokens(codes)) = events.last_mut() {
        codes.push(code);
        return;
    }
    events.push(DemuxEvent::AudioTokens(vec![code]));
}
