//! # A tool of your own, end to end
//!
//! ```text
//! cargo run --example custom_tool [CHECKPOINT_DIR]
//! ```
//!
//! This program defines a unit converter in Rust, gives it to an agent, and runs one turn in
//! which the model calls it. Without an argument it uses the tiny random-weight checkpoint of
//! the test fixtures (`core/tests/fixtures/llm/tiny_a`): its "answers" are noise, but the loop
//! around them is the real one, so you can watch every event a turn produces. Point it at a
//! Step-Audio 2 checkpoint directory (the official layout, with `tokenizer.json`) to hear from
//! the real model.
//!
//! ## 1. The tool: one struct and one impl
//!
//! A tool's arguments are an ordinary `Deserialize` struct; deriving `JsonSchema` turns it
//! into the JSON Schema the model is shown, and the field doc comments become the
//! descriptions it reads.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use voxloop_core::agent::{Agent, AgentConfig, AgentEvent, TurnEndReason, TurnInput};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, SessionSettings};
use voxloop_core::tool::{Tool, ToolRegistry};
use voxloop_core::DeviceSpec;

/// A unit of length.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Length {
    Metre,
    Kilometre,
    Mile,
    Foot,
}

impl Length {
    /// How many metres one of this unit is.
    fn metres(self) -> f64 {
        match self {
            Length::Metre => 1.0,
            Length::Kilometre => 1000.0,
            Length::Mile => 1609.344,
            Length::Foot => 0.3048,
        }
    }
}

/// What the model fills in when it calls the converter.
#[derive(Debug, Deserialize, JsonSchema)]
struct ConvertArgs {
    /// The length to convert, as a number. The range is part of the schema, so the grammar
    /// keeps the model's number within it (an unbounded JSON number can overflow an f64).
    #[schemars(range(min = 0.0, max = 1.0e9))]
    value: f64,
    /// The unit `value` is in.
    from: Length,
    /// The unit to convert to.
    to: Length,
}

/// The tool itself holds no state.
struct UnitConverter;

/// What can go wrong; its `Display` is what the model is told.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a length that can be converted")]
struct NotALength(f64);

#[async_trait::async_trait]
impl Tool for UnitConverter {
    const NAME: &'static str = "convert_length";
    type Args = ConvertArgs;
    type Output = String;
    type Error = NotALength;

    fn description(&self) -> String {
        "Converts a length between metres, kilometres, miles and feet.".to_owned()
    }

    async fn call(&self, args: ConvertArgs) -> Result<String, NotALength> {
        if !args.value.is_finite() {
            return Err(NotALength(args.value));
        }
        let converted = args.value * args.from.metres() / args.to.metres();
        Ok(format!("{} {:?} is {converted:.4} {:?}", args.value, args.from, args.to))
    }
}

// ## 2. An agent with the tool
//
// The registry validates every call's arguments against the schema before the tool runs,
// and wraps each call in an `execute_tool` tracing span. `Agent::load` starts the model on
// its own inference thread, so the async code below never runs libtorch itself.
//
// ## 3. One turn
//
// `tool_choice: Named` makes the step begin with a call to our tool, grammar-constrained to
// its schema, which is how even a random model produces a valid call. The result goes back to
// the model as an `input` turn on the same KV cache, and the model answers. Every step of the
// way is an event on the turn's stream.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("core/tests/fixtures/llm/tiny_a");
    let checkpoint = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or(fixture.clone());
    let tiny = checkpoint == fixture;

    let mut tools = ToolRegistry::new();
    tools.register(UnitConverter)?;
    println!("The model is shown:\n{}\n", tools.tool_json_schemas()?);

    // The system prompt states the date; on the random fixture model a fixed one keeps the
    // run the same on every day (a real model does not need it).
    let agent_config = AgentConfig {
        fixed_now: tiny.then(|| UNIX_EPOCH + Duration::from_secs(1_756_353_600)), // 2025-08-28
        ..AgentConfig::default()
    };
    let agent = Agent::load(&checkpoint, DeviceSpec::Auto, tools, agent_config)
        .with_context(|| format!("loading {}", checkpoint.display()))?;

    let mut settings = SessionSettings {
        tool_choice: ToolChoice::Named(UnitConverter::NAME.to_owned()),
        ..SessionSettings::default()
    };
    if tiny {
        // Random weights never say <|EOT|>: keep their rambling short and reproducible.
        settings.sampling.max_new_tokens = 96;
        settings.sampling.seed = Some(7);
    }
    let mut session = Session::new(settings);

    let input = TurnInput::text("How many kilometres is a marathon of 26.2 miles?");
    let mut turn = agent.run_turn(&mut session, input);
    let mut called = false;
    let mut end = None;
    while let Some(event) = turn.next().await {
        match &event {
            AgentEvent::TextDelta { text, in_speech } => {
                println!("text{}: {text:?}", if *in_speech { " (spoken)" } else { "" })
            }
            AgentEvent::AudioTokens(codes) => println!("speech codes: {codes:?}"),
            // Only sessions that think (`SessionSettings::think`) have a think phase to show.
            AgentEvent::Reasoning { text } => println!("thinking: {text:?}"),
            AgentEvent::ToolCallStarted { id, name, arguments } => {
                println!("call {id}: {name}({arguments})");
                called |= name == UnitConverter::NAME;
            }
            // Only turns with client-run tools (`Agent::continue_turn`) hand calls back.
            AgentEvent::ToolCallRequested { id, name, .. } => println!("client call {id}: {name}"),
            AgentEvent::ToolCallFinished { name, outcome, duration, .. } => match outcome {
                Ok(text) => println!("{name} answered in {duration:?}: {text}"),
                Err(error) => println!("{name} failed: {}", error.model_message),
            },
            // Only `Agent::speak_turn` with a renderer (token2wav) turns codes into audio.
            AgentEvent::Audio { pcm, sample_rate } => {
                println!("audio: {} samples at {sample_rate} Hz", pcm.len())
            }
            AgentEvent::SpeechFailed { message } => println!("speech failed: {message}"),
            // Non-text content of a call (a tool calls `ToolContext::attach`), for the client.
            AgentEvent::ToolAttachment { id, content } => {
                println!("call {id} attached {}", content["type"])
            }
            AgentEvent::ApprovalRequested(request) => {
                // No tool here is behind an approval policy; a front door would ask a person.
                println!("approval asked for call {}", request.call_id)
            }
            AgentEvent::Usage { step, usage } => println!("step {step}: {usage:?}"),
            AgentEvent::TurnFinished { reason, usage } => {
                println!("turn finished: {reason:?}, {usage:?}");
                end = Some(reason.clone());
            }
        }
    }
    drop(turn);

    // ## 4. What the turn left behind
    //
    // The session now holds the whole exchange, tool result included; `session.save(path)`
    // would write it to disk to resume later.
    println!("\nThe session holds {} turns.", session.history().len());
    assert!(called, "the model did not call {}", UnitConverter::NAME);
    assert_eq!(end, Some(TurnEndReason::Completed), "the turn did not complete");
    Ok(())
}
