//! The think phase of a reasoning checkpoint (Step-Audio-2-mini-Think), as upstream runs it
//! (stepfun-ai/Step-Audio2 `examples-think.py`, `think_test`):
//!
//! 1. the assistant turn is opened with `\n<think>\n` (no `<tts_start>`), and the model writes
//!    until the text holds `</think>`;
//! 2. `\n\n<tts_start>` is appended after the `</think>` and the answer is generated as usual;
//! 3. the think text is dropped: the history keeps `<|BOT|>assistant\n<tts_start>{answer}`.
//!
//! `<think>` is no added token of the Step-Audio 2 vocabulary: the marks are plain text, so the
//! end is found in the decoded text (upstream's `stop_strings=['</think>']`), not by an id.

use std::sync::Arc;

use super::super::stream::Emitter;
use super::AgentEvent;
use crate::protocol::GenerationMode;
use crate::tokenizer::{StepTokenizer, TextStream, TokenClass};
use crate::Result;

/// What opens the think phase after `<|BOT|>assistant\n` (upstream's HF example; its vLLM
/// example writes `<think>` alone).
pub(super) const THINK_OPEN: &str = "\n<think>\n";
/// The mark that ends the phase.
const THINK_CLOSE: &str = "</think>";
/// What separates the closed phase from the answer.
const AFTER_THINK: &str = "\n\n";
/// The most text ids `</think>` can take (one per character).
const CLOSE_WINDOW: usize = THINK_CLOSE.len();

/// Watches the ids of a think phase, on the inference thread, for the end of its text: the
/// generation stops right after the id that completes `</think>`.
pub(super) struct ThinkEnd {
    tokenizer: Arc<StepTokenizer>,
    /// The last text ids (at most [`CLOSE_WINDOW`]).
    window: Vec<i64>,
}

impl ThinkEnd {
    pub(super) fn new(tokenizer: Arc<StepTokenizer>) -> Self {
        Self { tokenizer, window: Vec::with_capacity(CLOSE_WINDOW + 1) }
    }

    /// Feeds one generated id; `true` once the text ends the phase.
    pub(super) fn push(&mut self, id: i64) -> bool {
        if self.tokenizer.special().classify(id) != TokenClass::Text {
            return false;
        }
        if self.window.len() == CLOSE_WINDOW {
            self.window.remove(0);
        }
        self.window.push(id);
        // A cut character decodes to U+FFFD, which cannot hide an ASCII mark.
        self.tokenizer.decode(&self.window).is_ok_and(|text| text.contains(THINK_CLOSE))
    }
}

/// Reads the ids of a think phase as they come: its text out as [`AgentEvent::Reasoning`]
/// (the closing mark held back, never shown), the whole text kept.
pub(super) struct ReasoningReader<'t> {
    tokenizer: &'t StepTokenizer,
    stream: TextStream<'t>,
    out: &'t Emitter,
    /// Everything decoded so far, marks included.
    text: String,
    /// How much of `text` went out.
    emitted: usize,
    /// The phase's generated ids.
    pub(super) tokens: usize,
}

impl<'t> ReasoningReader<'t> {
    pub(super) fn new(tokenizer: &'t StepTokenizer, out: &'t Emitter) -> Self {
        Self {
            tokenizer,
            stream: tokenizer.decode_stream(),
            out,
            text: String::new(),
            emitted: 0,
            tokens: 0,
        }
    }

    pub(super) fn push(&mut self, id: i64) {
        self.tokens += 1;
        if self.tokenizer.special().classify(id) != TokenClass::Text {
            return;
        }
        if let Ok(Some(piece)) = self.stream.step(id) {
            self.text.push_str(&piece);
            self.emit(false);
        }
    }

    /// Sends what may be shown: text before `</think>`, and while the mark is not there, all
    /// but a tail that could begin it (or everything, at the end of the phase).
    fn emit(&mut self, end: bool) {
        let upto = match self.text.find(THINK_CLOSE) {
            Some(at) => at,
            None if end => self.text.len(),
            None => self.text.len() - partial_close(&self.text),
        };
        if upto > self.emitted {
            let text = self.text[self.emitted..upto].to_owned();
            self.emitted = upto;
            self.out.emit(AgentEvent::Reasoning { text });
        }
    }

    /// Ends the phase: the rest of its text goes out; returns the whole text.
    pub(super) fn finish(mut self) -> String {
        self.emit(true);
        self.text
    }
}

/// The length of the longest end of `text` that begins `</think>` (ASCII, so a char boundary).
fn partial_close(text: &str) -> usize {
    (1..CLOSE_WINDOW).rev().find(|&n| text.ends_with(&THINK_CLOSE[..n])).unwrap_or(0)
}

/// The ids that follow a think phase whose text is `text`, up to where the answer starts:
/// what is missing of `</think>\n\n` (a phase cut by its budget or by `<|EOT|>` gets the whole
/// mark), then `<tts_start>` for a spoken answer.
pub(super) fn after_think(
    tokenizer: &StepTokenizer,
    text: &str,
    mode: GenerationMode,
) -> Result<Vec<i64>> {
    let rest = match text.find(THINK_CLOSE) {
        Some(at) => {
            let tail = &text[at + THINK_CLOSE.len()..];
            AFTER_THINK.strip_prefix(tail).unwrap_or(AFTER_THINK).to_owned()
        }
        None => format!("\n{THINK_CLOSE}{AFTER_THINK}"),
    };
    let mut ids = if rest.is_empty() { Vec::new() } else { tokenizer.encode_trusted(&rest)? };
    if mode == GenerationMode::Speech {
        ids.push(tokenizer.special().tts_start);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_mark_is_held_back() {
        assert_eq!(partial_close("I think </th"), 4);
        assert_eq!(partial_close("a <"), 1);
        assert_eq!(partial_close("a > b"), 0);
        assert_eq!(partial_close("</think"), 7);
    }
}
