//! The Step-Audio 2 chat protocol (stepfun-ai/Step-Audio2 `stepaudio2.py` and `examples.py`):
//! what goes into the model and how to read what comes out.
//!
//! - [`render`](render()): conversations ([`Message`]) to prompt pieces, exactly as StepFun's
//!   `StepAudio2.apply_chat_template`; [`encode_pieces`] turns them into ids, untrusted text
//!   with special tokens off.
//! - [`python_json_dumps`]: the tool declaration JSON, byte for byte as Python writes it.
//! - [`Demux`]: the generated id stream split into spoken text, content, speech codes,
//!   control ids and tool calls, one id at a time.
//! - [`parse_tool_call`] / [`parse_turn_text`]: the `function\n{name}\n{json}` call syntax, with
//!   errors worded for the model.

mod call_schema;
mod constraint;
mod demux;
mod render;
mod toolcall;

pub use crate::pyjson::{python_float_repr, python_json_dumps, python_json_dumps_object};
pub use constraint::{ToolCallConstraint, ToolCallGrammar, ToolChoice};
pub use demux::{DecodeFn, Demux, DemuxEvent, TextDecoder};
pub use render::{
    encode_pieces, prompt_ids, render, AudioClip, AudioPiece, Content, GenerationMode, Message,
    Part, PromptPiece, RenderedPiece, Role, AUDIO_END, AUDIO_PATCH, AUDIO_START, BOT, EOT,
    SEARCH_SUMMARY_INSTRUCTION, TTS_START,
};
pub use toolcall::{
    parse_tool_call, parse_turn_text, render_tool_call, ParsedToolCall, ParsedTurn, ToolCallError,
    FUNCTION_KEYWORD, TOOL_CALL_END, TOOL_CALL_START,
};
