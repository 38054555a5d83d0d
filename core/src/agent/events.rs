//! What a turn reports while it runs: [`AgentEvent`].

use std::time::Duration;

use serde_json::Value;

use crate::tool::{ApprovalRequest, ToolError};

/// Token counts of one generation step, or of a whole turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Ids prefilled into the KV cache (new turns and the generation prompt; audio
    /// placeholders included). Only what was added: history already in the cache does not
    /// count again.
    pub input_tokens: usize,
    /// Ids generated (the stop token excluded).
    pub output_tokens: usize,
    /// Of the generated ids, the speech codes (`<audio_N>`, N < 6561).
    pub audio_tokens: usize,
    /// Of the generated ids, those of think phases ([`AgentEvent::Reasoning`]).
    pub reasoning_tokens: usize,
    /// Ids of the prompt that were in the KV cache already, not prefilled again (the
    /// session's own history, or a prefix shared with the conversation the model ran last;
    /// see the agent module documentation). Summed over the steps of a turn.
    pub cached_tokens: usize,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.audio_tokens += other.audio_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// Why a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEndReason {
    /// A generation step made no tool call (it ended on `<|EOT|>` or on the token limit).
    Completed,
    /// The last step allowed to call tools did, and the answer was generated without tools.
    MaxSteps,
    /// The step called tools the client runs ([`ClientTools`](super::ClientTools)): the
    /// calls were reported as [`AgentEvent::ToolCallRequested`]; the turn goes on when their
    /// results are in the history.
    ToolCalls,
    /// The turn was cancelled (barge-in) or its stream dropped.
    Cancelled,
    /// Something failed (the model, the prompt, the constraint); the history stays
    /// consistent.
    Error(String),
}

impl TurnEndReason {
    /// The span attribute `gen_ai.agent.invocation.end_reason`: `completed`, `max_steps`,
    /// `tool_calls`, `interrupted` (the GenAI voice-agent draft's word for a barge-in) or
    /// `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TurnEndReason::Completed => "completed",
            TurnEndReason::MaxSteps => "max_steps",
            TurnEndReason::ToolCalls => "tool_calls",
            TurnEndReason::Cancelled => "interrupted",
            TurnEndReason::Error(_) => "error",
        }
    }
}

/// One event of a turn, in the order things happen. Every turn ends with exactly one
/// [`AgentEvent::TurnFinished`].
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// Generated text. `in_speech`: the transcript of what is being spoken (inside
    /// `<tts_start>` … `<tts_end>`), otherwise written content. Tool-call text is not
    /// reported here.
    TextDelta { text: String, in_speech: bool },
    /// Text of the think phase ([`SessionSettings::think`](crate::session::SessionSettings::think)),
    /// without its `<think>` / `</think>` marks: for the client's eyes, never spoken, and not
    /// kept in the history. Comes before the step's answer.
    Reasoning { text: String },
    /// Speech codes (0..=6560, 25 Hz) for the vocoder.
    AudioTokens(Vec<u16>),
    /// Rendered speech (turns run with [`Agent::speak_turn`](super::Agent::speak_turn)):
    /// mono samples in [-1, 1], as the vocoder's chunks complete, so they interleave with
    /// the events after the codes; all of a turn's audio comes before its `TurnFinished`.
    Audio { pcm: Vec<f32>, sample_rate: u32 },
    /// Rendering failed; the rest of that utterance is not spoken (the turn goes on).
    SpeechFailed { message: String },
    /// A tool call starts running (or, for a malformed call, is answered at once).
    ToolCallStarted {
        /// The call id (`gen_ai.tool.call.id`).
        id: String,
        /// The tool's name as the model wrote it (empty when it could not be read).
        name: String,
        /// The arguments as the model wrote them (`null` when they could not be read).
        arguments: Value,
    },
    /// The model called a tool the client runs ([`ClientTools`](super::ClientTools)); it is
    /// not run here. Comes before the step's `Usage`; the turn then ends with
    /// [`TurnEndReason::ToolCalls`].
    ToolCallRequested {
        /// The call id, for the result the client sends back.
        id: String,
        /// The declared tool's name.
        name: String,
        /// The arguments (a JSON object valid under the tool's schema).
        arguments: Value,
    },
    /// A tool call waits for approval (a policy asks before running it): answer through
    /// the request. Comes after the call's `ToolCallStarted`, before its `ToolCallFinished`.
    ApprovalRequested(ApprovalRequest),
    /// Non-text content a running call returned (an MCP image, audio or resource block, as
    /// the server gave it): for the client, not the model, which reads the call's text.
    /// Comes between the call's `ToolCallStarted` and `ToolCallFinished`.
    ToolAttachment {
        /// The call id.
        id: String,
        /// The content.
        content: Value,
    },
    /// A tool call ended; its result (or error message) is what the model reads next.
    ToolCallFinished {
        /// The call id.
        id: String,
        /// The tool's name as called.
        name: String,
        /// The output text, or the error.
        outcome: Result<String, ToolError>,
        /// Wall time of the call.
        duration: Duration,
    },
    /// One generation step ended (numbered from 1).
    Usage { step: usize, usage: Usage },
    /// The turn is over: why, and the total usage.
    TurnFinished { reason: TurnEndReason, usage: Usage },
}
