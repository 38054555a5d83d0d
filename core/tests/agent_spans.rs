//! The spans of a turn, recorded in-process by a small subscriber: `invoke_agent` with the
//! conversation id and end reason, a `chat {model}` child per step with usage, finish reason
//! and time to first token, and the tool layer's `execute_tool` spans as children of
//! `invoke_agent`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod span_recorder;

use std::sync::Arc;
use std::time::Duration;

use agent_support::{agent, call_ids, finished, run, settings, started, step_usages, tokenizer};
use agent_support::{Clock, Script};
use futures::StreamExt;
use span_recorder::Recorder;
use voxloop_core::agent::{AgentConfig, AgentEvent, TurnEndReason, TurnInput};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, SessionSettings};
use voxloop_core::tool::ToolRegistry;

#[tokio::test]
async fn agent_turn_spans_follow_the_genai_conventions() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Clock).unwrap();
    let script = Script::new(&tok, vec![call_ids(&tok, "get_date_time", "{}")]);
    let agent = agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(settings(ToolChoice::Auto, true, 40));
    let events = run(&agent, &mut session, "What time is it?").await;
    let (reason, total) = finished(&events);
    assert_eq!(reason, TurnEndReason::Completed);

    let invokes = recorder.named("invoke_agent");
    assert_eq!(invokes.len(), 1);
    let invoke = &invokes[0];
    assert_eq!(invoke.parent, None);
    let f = &invoke.fields;
    assert_eq!(f["otel.name"], "invoke_agent voxloop");
    assert_eq!(f["otel.kind"], "internal");
    assert_eq!(f["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(f["gen_ai.provider.name"], "stepfun");
    assert_eq!(f["gen_ai.agent.name"], "voxloop");
    assert_eq!(f["gen_ai.conversation.id"], session.id());
    assert_eq!(f["gen_ai.request.model"], "step-audio-2-mini");
    assert_eq!(f["gen_ai.agent.invocation.end_reason"], "completed");
    assert_eq!(f["gen_ai.usage.input_tokens"], total.input_tokens.to_string());
    assert_eq!(f["gen_ai.usage.output_tokens"], total.output_tokens.to_string());
    assert_eq!(f["gen_ai.usage.output_audio_tokens"], total.audio_tokens.to_string());
    assert!(!f.contains_key("error.type"));

    let chats = recorder.named("chat");
    let steps = step_usages(&events);
    assert_eq!(chats.len(), 2);
    for (i, (chat, usage)) in chats.iter().zip(&steps).enumerate() {
        assert_eq!(chat.parent, Some(invoke.id), "chat spans are children of invoke_agent");
        let f = &chat.fields;
        assert_eq!(f["otel.name"], "chat step-audio-2-mini");
        assert_eq!(f["gen_ai.operation.name"], "chat");
        assert_eq!(f["gen_ai.conversation.id"], session.id());
        assert_eq!(f["gen_ai.output.type"], "speech");
        assert_eq!(f["gen_ai.request.max_tokens"], "40");
        assert_eq!(f["voxloop.step"], (i + 1).to_string());
        assert_eq!(f["gen_ai.usage.input_tokens"], usage.input_tokens.to_string());
        assert_eq!(f["gen_ai.usage.output_tokens"], usage.output_tokens.to_string());
        assert_eq!(f["gen_ai.usage.output_audio_tokens"], usage.audio_tokens.to_string());
        let first: f64 = f["gen_ai.response.time_to_first_chunk"].parse().unwrap();
        assert!(first > 0.0 && first < 60.0);
    }
    assert_eq!(chats[0].fields["gen_ai.response.finish_reasons"], r#"["tool_calls"]"#);
    let second = &chats[1].fields["gen_ai.response.finish_reasons"];
    assert!(second == r#"["length"]"# || second == r#"["stop"]"#, "{second}");

    let tools = recorder.named("execute_tool");
    let calls = started(&events);
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].parent, Some(invoke.id), "execute_tool is a child of invoke_agent");
    assert_eq!(tools[0].fields["gen_ai.tool.call.id"], calls[0].0);
    assert_eq!(tools[0].fields["gen_ai.tool.name"], "get_date_time");
}

#[tokio::test]
async fn agent_interrupted_turns_say_so() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let tok = tokenizer();
    let script = Script::new(&tok, Vec::new()).slow(Duration::from_millis(2));
    let agent =
        agent(ToolRegistry::new(), AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(settings(ToolChoice::Auto, false, 2000));
    let mut stream = agent.run_turn(&mut session, TurnInput::text("Talk."));
    let cancel = stream.cancel_handle();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        if matches!(event, AgentEvent::AudioTokens(_) | AgentEvent::TextDelta { .. }) {
            cancel.cancel();
        }
        events.push(event);
    }
    assert_eq!(finished(&events).0, TurnEndReason::Cancelled);
    let invoke = &recorder.named("invoke_agent")[0];
    assert_eq!(invoke.fields["gen_ai.agent.invocation.end_reason"], "interrupted");
    let chat = &recorder.named("chat")[0];
    assert_eq!(chat.fields["gen_ai.response.finish_reasons"], r#"["cancelled"]"#);
    assert_eq!(chat.fields["gen_ai.output.type"], "text");
}

/// A think phase: `gen_ai.usage.reasoning.output_tokens` on the step and the turn, and a
/// `reasoning` event on the step's span with its count and how it ended.
#[tokio::test]
async fn agent_think_phase_is_traced_with_its_token_count() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let tok = tokenizer();
    let think = tok.encode_untrusted("hmm</think>").unwrap();
    let script = Script::new(&tok, vec![think.clone()]);
    let agent =
        agent(ToolRegistry::new(), AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(SessionSettings {
        think: true,
        reasoning_max_tokens: 32,
        ..settings(ToolChoice::Auto, true, 16)
    });
    let events = run(&agent, &mut session, "Hello").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);

    let chats = recorder.named("chat");
    assert_eq!(chats.len(), 1);
    let n = think.len().to_string();
    assert_eq!(chats[0].fields["gen_ai.usage.reasoning.output_tokens"], n);
    assert_eq!(recorder.named("invoke_agent")[0].fields["gen_ai.usage.reasoning.output_tokens"], n);
    let phases = recorder.events("reasoning");
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].parent, Some(chats[0].id), "an event of the step's span");
    assert_eq!(phases[0].fields["gen_ai.usage.reasoning.output_tokens"], n);
    assert_eq!(phases[0].fields["voxloop.reasoning.end"], "closed");
}
