//! The spans of a turn, after the OpenTelemetry GenAI semantic conventions (peers.md §2):
//!
//! ```text
//! invoke_agent {agent}            one per turn
//! ├── chat {model}                one per generation step
//! ├── execute_tool {tool}         one per call (from the tool registry)
//! └── chat {model}                …
//! ```
//!
//! `tracing` fields carry the attribute names; `otel.name` and `otel.kind` are what
//! `tracing-opentelemetry` turns into the OpenTelemetry span name and kind. Where the
//! conventions are still drafts, the names chosen are: `gen_ai.usage.output_audio_tokens`
//! (the voice-agent draft's name) for generated speech codes,
//! `gen_ai.agent.invocation.end_reason` for how the turn ended, and
//! `gen_ai.response.time_to_first_chunk` (seconds, from submitting the step to the first
//! generated id) for time to first token, and (the incubating conventions' name)
//! `gen_ai.usage.reasoning.output_tokens` for the ids of think phases, which
//! `gen_ai.usage.output_tokens` includes; each think phase is also a `reasoning` event on its
//! step's span. `gen_ai.response.finish_reasons` is an array in
//! OpenTelemetry; `tracing` records it as its JSON text (`["tool_calls"]`).
//!
//! Counts are recorded as `i64`: `tracing-opentelemetry` exports an `i64` as an integer
//! attribute but a `u64` as its text.

use std::time::Duration;

use tracing::field::Empty;
use tracing::Span;

use super::events::{TurnEndReason, Usage};
use super::AgentConfig;
use crate::generate::{FinishReason, SamplingParams};
use crate::protocol::{GenerationMode, ToolChoice};

/// `gen_ai.provider.name`: a custom value, as the conventions allow.
pub(crate) const PROVIDER: &str = "stepfun";

/// The `invoke_agent` span of a turn (not entered).
pub(crate) fn invoke_agent(config: &AgentConfig, conversation: &str) -> Span {
    tracing::info_span!(
        "invoke_agent",
        otel.name = %format_args!("invoke_agent {}", config.agent_name),
        otel.kind = "internal",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.provider.name = PROVIDER,
        gen_ai.agent.name = %config.agent_name,
        gen_ai.conversation.id = %conversation,
        gen_ai.request.model = %config.model_name,
        gen_ai.agent.invocation.end_reason = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.output_audio_tokens = Empty,
        gen_ai.usage.reasoning.output_tokens = Empty,
        voxloop.steps = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
    )
}

/// Records how the turn ended and its total usage.
pub(crate) fn end_invoke(span: &Span, reason: &TurnEndReason, usage: Usage, steps: usize) {
    span.record("gen_ai.agent.invocation.end_reason", reason.as_str());
    record_usage(span, usage);
    span.record("voxloop.steps", steps as i64);
    if let TurnEndReason::Error(message) = reason {
        span.record("error.type", "agent_error");
        span.record("otel.status_code", "ERROR");
        tracing::error!(parent: span, error = %message, "turn failed");
    }
}

/// What a `chat` span describes.
pub(crate) struct ChatStep<'a> {
    pub(crate) config: &'a AgentConfig,
    pub(crate) conversation: &'a str,
    pub(crate) step: usize,
    pub(crate) mode: GenerationMode,
    pub(crate) params: &'a SamplingParams,
    pub(crate) choice: &'a ToolChoice,
    /// The remote model's host and port (`server.address`, `server.port`); `None`: the model
    /// runs in this process.
    pub(crate) server: Option<(&'a str, u16)>,
}

/// The `chat` span of one generation step, a child of `parent`.
pub(crate) fn chat(parent: &Span, step: &ChatStep<'_>) -> Span {
    let output_type = match step.mode {
        GenerationMode::Speech => "speech",
        GenerationMode::Text => "text",
    };
    let choice = match step.choice {
        ToolChoice::Auto => "auto".to_owned(),
        ToolChoice::None => "none".to_owned(),
        ToolChoice::Required => "required".to_owned(),
        ToolChoice::Named(name) => format!("named:{name}"),
    };
    let p = step.params;
    let span = tracing::info_span!(
        parent: parent,
        "chat",
        otel.name = %format_args!("chat {}", step.config.model_name),
        otel.kind = if step.server.is_some() { "client" } else { "internal" },
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = PROVIDER,
        gen_ai.request.model = %step.config.model_name,
        gen_ai.conversation.id = %step.conversation,
        gen_ai.output.type = output_type,
        gen_ai.request.max_tokens = p.max_new_tokens as i64,
        gen_ai.request.temperature = p.temperature,
        gen_ai.request.top_p = p.top_p,
        gen_ai.request.top_k = p.top_k as i64,
        gen_ai.request.seed = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.output_audio_tokens = Empty,
        gen_ai.usage.reasoning.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.response.time_to_first_chunk = Empty,
        voxloop.step = step.step as i64,
        voxloop.tool_choice = %choice,
        server.address = Empty,
        server.port = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
    );
    if let Some((address, port)) = step.server {
        span.record("server.address", address);
        span.record("server.port", i64::from(port));
    }
    if let Some(seed) = p.seed {
        match i64::try_from(seed) {
            Ok(seed) => span.record("gen_ai.request.seed", seed),
            Err(_) => span.record("gen_ai.request.seed", seed),
        };
    }
    span
}

/// Records a step's outcome: usage, the finish reason (`stop`, `length`, `tool_calls`,
/// `cancelled` or `error`) and the time to the first generated id.
pub(crate) fn end_chat(span: &Span, usage: Usage, finish: &str, first_token: Option<Duration>) {
    record_usage(span, usage);
    span.record("gen_ai.response.finish_reasons", format!("[\"{finish}\"]"));
    if let Some(first) = first_token {
        span.record("gen_ai.response.time_to_first_chunk", first.as_secs_f64());
    }
    if finish == "error" {
        span.record("error.type", "generation_error");
        span.record("otel.status_code", "ERROR");
    }
}

/// Marks the end of a step's think phase with an event on its `chat` span: the phase's
/// token count (also `gen_ai.usage.reasoning.output_tokens` of the step and the turn) and how
/// it ended (`closed` by `</think>`, `budget`, `eot` or `cancelled`).
pub(crate) fn reasoned(span: &Span, tokens: usize, finish: FinishReason) {
    let end = match finish {
        FinishReason::Callback => "closed",
        FinishReason::Length => "budget",
        FinishReason::Stop(_) => "eot",
        FinishReason::Cancelled => "cancelled",
    };
    tracing::info!(
        parent: span,
        gen_ai.usage.reasoning.output_tokens = tokens as i64,
        voxloop.reasoning.end = end,
        "reasoning"
    );
}

fn record_usage(span: &Span, usage: Usage) {
    span.record("gen_ai.usage.input_tokens", usage.input_tokens as i64);
    span.record("gen_ai.usage.output_tokens", usage.output_tokens as i64);
    span.record("gen_ai.usage.output_audio_tokens", usage.audio_tokens as i64);
    if usage.reasoning_tokens > 0 {
        span.record("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens as i64);
    }
}
