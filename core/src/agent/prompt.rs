//! The prompt of one generation step: the turns of the session that the cache does not hold
//! yet, then the generation prompt, as step-API segments.

use std::ops::Range;

use crate::audio::AudioChunk;
use crate::generate::Segment;
use crate::protocol::{encode_pieces, render, GenerationMode, Message, PromptPiece};
use crate::session::{Session, Turn};
use crate::tokenizer::StepTokenizer;
use crate::{Error, Result};

/// What one step prefills.
#[derive(Debug)]
pub(crate) struct StepPrompt {
    /// The segments to prefill, in order (their ids: `pending` then `generation`).
    pub(crate) segments: Vec<Segment>,
    /// The ids that complete the history: the open assistant turn's `<|EOT|>`, if any, then
    /// every turn not in the cache.
    pub(crate) pending: Vec<i64>,
    /// The absolute cache positions of each newly cached turn, in history order.
    pub(crate) ranges: Vec<Range<usize>>,
    /// Whether `pending` starts with the open assistant turn's `<|EOT|>`.
    pub(crate) closes_open: bool,
    /// The generation prompt: `<|BOT|>assistant\n`, plus `<tts_start>` for speech.
    pub(crate) generation: Vec<i64>,
}

/// The prompt that brings `session`'s cache up to date and opens an assistant turn in `mode`.
/// The session must have a cache record (possibly empty).
pub(crate) fn step_prompt(
    session: &Session,
    tokenizer: &StepTokenizer,
    mode: GenerationMode,
) -> Result<StepPrompt> {
    let cache = session
        .cache()
        .ok_or_else(|| Error::Agent("the session has no cache record".to_owned()))?;
    let start = cache.ids.len();
    let mut builder = SegmentBuilder::default();
    let closes_open = cache.open;
    if closes_open {
        builder.tokens(&[tokenizer.special().eot]);
    }
    let mut ranges = Vec::new();
    for turn in &session.history()[cache.turns.len()..] {
        let from = start + builder.ids.len();
        encode_turn(turn, tokenizer, &mut builder)?;
        ranges.push(from..start + builder.ids.len());
    }
    let pending = builder.ids.clone();
    let pieces = render(&[Message::generation_prompt(mode)]);
    for piece in encode_pieces(&pieces, tokenizer)? {
        if let PromptPiece::Tokens(ids) = piece {
            builder.tokens(&ids);
        }
    }
    let generation = builder.ids[pending.len()..].to_vec();
    Ok(StepPrompt { segments: builder.finish(), pending, ranges, closes_open, generation })
}

/// Appends the segments of one turn.
fn encode_turn(turn: &Turn, tokenizer: &StepTokenizer, builder: &mut SegmentBuilder) -> Result<()> {
    let pieces = render(&[turn.message()]);
    for piece in encode_pieces(&pieces, tokenizer)? {
        match piece {
            PromptPiece::Tokens(ids) => builder.tokens(&ids),
            PromptPiece::Audio(audio) => {
                let chunk = usize::try_from(audio.clip_key)
                    .ok()
                    .and_then(|part| turn.mel_chunk(part, audio.chunk_in_clip))
                    .ok_or_else(|| {
                        Error::Agent(format!(
                            "audio part {} chunk {} of a human turn has no mel features",
                            audio.clip_key, audio.chunk_in_clip
                        ))
                    })?;
                builder.audio(chunk.clone());
            }
        }
    }
    Ok(())
}

/// Collects segments, merging consecutive ids into one `Tokens` segment and putting each
/// audio segment right after the ids that hold its placeholders.
#[derive(Default)]
struct SegmentBuilder {
    segments: Vec<Segment>,
    /// Every id so far.
    ids: Vec<i64>,
    /// Ids not yet in a segment.
    open: Vec<i64>,
}

impl SegmentBuilder {
    fn tokens(&mut self, ids: &[i64]) {
        self.ids.extend_from_slice(ids);
        self.open.extend_from_slice(ids);
    }

    fn audio(&mut self, chunk: AudioChunk) {
        self.flush();
        self.segments.push(Segment::Audio(chunk));
    }

    fn flush(&mut self) {
        if !self.open.is_empty() {
            self.segments.push(Segment::Tokens(std::mem::take(&mut self.open)));
        }
    }

    fn finish(mut self) -> Vec<Segment> {
        self.flush();
        self.segments
    }
}
