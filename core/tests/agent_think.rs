//! Think mode (`SessionSettings::think`) on the tiny checkpoint, with scripted think phases:
//! the phase streams as `Reasoning` events without its marks, is never spoken, never joins the
//! history, is counted and traced, and the cache stays the rendering of the history (the trace: agent_spans.rs) (as
//! upstream's `examples-think.py` drops the think text from its history).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use std::sync::Arc;
use std::time::Duration;

use agent_support::{
    agent, assert_cache_matches_history, call_ids, extension_vs_fresh_prefill, finished,
    finished_calls, rendered_ids, run, settings, step_usages, tokenizer, Convert, Script,
};
use futures::StreamExt;
use voxloop_core::agent::{AgentConfig, AgentEvent, TurnEndReason, TurnInput};
use voxloop_core::model::is_reasoning_checkpoint;
use voxloop_core::protocol::{encode_pieces, prompt_ids, render, ToolChoice};
use voxloop_core::session::{Session, SessionSettings, Turn};
use voxloop_core::tokenizer::{StepTokenizer, TokenClass};
use voxloop_core::tool::ToolRegistry;

const THOUGHT: &str = "ten miles, so convert to km";

fn thinking(speech: bool, budget: usize) -> SessionSettings {
    let mut s = settings(ToolChoice::Auto, speech, 48);
    s.think = true;
    s.reasoning_max_tokens = budget;
    s
}

/// The ids of `text` as the model would write it (plain text, no special token).
fn text_ids(tok: &StepTokenizer, text: &str) -> Vec<i64> {
    tok.encode_untrusted(text).unwrap()
}

fn reasoning_text(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Reasoning { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// After an answer that thought and called no tool: the cache holds every turn but that
/// answer (whose think phase was cut off), and the record says so; the next turn prefills
/// the answer as the history has it.
async fn assert_cached_before_answer(agent: &voxloop_core::agent::Agent, session: &Session) {
    let tok = agent.tokenizer();
    let history = session.history();
    assert!(matches!(history.last(), Some(Turn::Assistant(_))));
    assert_eq!(session.cached_turns(), history.len() - 1, "all but the answer are cached");
    let messages: Vec<_> = history[..history.len() - 1].iter().map(Turn::message).collect();
    let expected = prompt_ids(&encode_pieces(&render(&messages), tok).unwrap());
    assert_eq!(session.cached_ids(), expected.as_slice());
    assert_eq!(agent.cache_len().await.unwrap(), expected.len(), "model cache length");
}

/// Every id of the session's history as a fresh prefill would see it, decoded.
/// (Only the text ids: a random model's speech may use ids past the tokenizer's vocabulary.)
fn history_text(session: &Session, tok: &StepTokenizer) -> String {
    let special = tok.special();
    let text = rendered_ids(session, tok)
        .into_iter()
        .filter(|&id| special.classify(id) == TokenClass::Text);
    tok.decode(&text.collect::<Vec<_>>()).unwrap()
}

#[tokio::test]
async fn agent_think_phase_is_shown_not_spoken_not_kept() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Convert).unwrap();
    let think = text_ids(&tok, &format!("{THOUGHT}</think>"));
    let call = call_ids(&tok, "convert", r#"{"to": "km", "round": true}"#);
    let script = Script::new(&tok, vec![think.clone(), call.clone()]);
    let agent = agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(thinking(true, 64));
    let events = run(&agent, &mut session, "How far is ten miles in km?").await;
    let (reason, total) = finished(&events);
    assert_eq!(reason, TurnEndReason::Completed, "{events:?}");

    // Shown first, without its marks; nothing of it spoken.
    assert_eq!(reasoning_text(&events), THOUGHT);
    let first_other = events.iter().position(|e| !matches!(e, AgentEvent::Reasoning { .. }));
    let last_reasoning = events.iter().rposition(|e| matches!(e, AgentEvent::Reasoning { .. }));
    assert!(last_reasoning < first_other, "the thinking comes before the answer: {events:?}");
    for event in &events {
        if let AgentEvent::TextDelta { text, .. } = event {
            assert!(!text.contains("think"), "the think text is not said: {text:?}");
        }
    }
    // The thought led to the call, which ran.
    let calls = finished_calls(&events);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "convert", "{calls:?}");
    assert_eq!(calls[0].2.as_deref(), Ok("16"));

    // Counted: the think ids are the first step's reasoning tokens, among its output.
    let steps = step_usages(&events);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].reasoning_tokens, think.len());
    assert_eq!(steps[0].output_tokens, think.len() + call.len());
    assert_eq!(steps[1].reasoning_tokens, 0, "the step after tool results does not think");
    assert_eq!(total.reasoning_tokens, think.len());

    // Not kept: the first answer is the call alone, opened with `<tts_start>` as upstream
    // replays a spoken answer; the cache is the rendering of that history.
    let answers: Vec<_> = session
        .history()
        .iter()
        .filter_map(|t| match t {
            Turn::Assistant(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].ids, call);
    assert!(answers[0].speech);
    let text = history_text(&session, &tok);
    assert!(!text.contains("<think>") && !text.contains(THOUGHT), "{text}");
    assert_cache_matches_history(&agent, &session).await;
    assert!(extension_vs_fresh_prefill(&agent, &session).await < 1e-4);

    // The next turn thinks again (the script is spent: the model writes until the budget).
    let events = run(&agent, &mut session, "And twenty?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    let steps = step_usages(&events);
    let thought = steps[0].reasoning_tokens;
    assert!(thought > 0 && thought <= 64, "at most the budget: {events:?}");
    assert!(!history_text(&session, &tok).contains("<think>"));
    assert_cached_before_answer(&agent, &session).await;
}

#[tokio::test]
async fn agent_think_budget_closes_the_phase_and_the_answer_follows() {
    let tok = tokenizer();
    let long = text_ids(&tok, "a long thought that never ends and goes on");
    let answer = text_ids(&tok, "Sixteen.");
    let script = Script::new(&tok, vec![long.clone(), answer.clone()]);
    let agent =
        agent(ToolRegistry::new(), AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(thinking(false, 5));
    let events = run(&agent, &mut session, "How far?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:?}");
    assert_eq!(reasoning_text(&events), tok.decode(&long[..5]).unwrap());
    let said: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta { text, in_speech: false } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(said, "Sixteen.");
    let Some(Turn::Assistant(turn)) = session.history().last() else { panic!("no answer") };
    assert_eq!(turn.ids, answer);
    assert_cached_before_answer(&agent, &session).await;
}

#[tokio::test]
async fn agent_think_text_answer_after_a_closed_mark() {
    // A text answer whose think phase ends with `</think>` itself: the answer's prompt is
    // `\n\n` (nothing of a `<tts_start>`), and the answer is kept alone.
    let tok = tokenizer();
    let think = text_ids(&tok, "ponder</think>");
    let answer = text_ids(&tok, "Yes.");
    let script = Script::new(&tok, vec![think, answer.clone()]);
    let agent =
        agent(ToolRegistry::new(), AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(thinking(false, 32));
    let events = run(&agent, &mut session, "Is it far?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    assert_eq!(reasoning_text(&events), "ponder");
    let Some(Turn::Assistant(turn)) = session.history().last() else { panic!("no answer") };
    assert_eq!((turn.ids.clone(), turn.speech), (answer, false));
    assert_cached_before_answer(&agent, &session).await;
    // The next turn prefills the answer on top and the cache is the history again.
    let events = run(&agent, &mut session, "Sure?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    assert_cached_before_answer(&agent, &session).await;
    let text = history_text(&session, &tok);
    assert!(!text.contains("ponder"), "{text}");
}

#[tokio::test]
async fn agent_think_cancelled_while_thinking_keeps_only_the_question() {
    let tok = tokenizer();
    let long = text_ids(&tok, &"thinking hard ".repeat(20));
    let script = Script::new(&tok, vec![long]).slow(Duration::from_millis(20));
    let sampled = Arc::clone(&script.sampled);
    let agent =
        agent(ToolRegistry::new(), AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(thinking(true, 200));
    let mut stream = agent.run_turn(&mut session, TurnInput::text("Think about it."));
    let cancel = stream.cancel_handle();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        if matches!(event, AgentEvent::Reasoning { .. })
            && sampled.load(std::sync::atomic::Ordering::SeqCst) > 3
        {
            cancel.cancel();
        }
        events.push(event);
    }
    drop(stream);
    assert_eq!(finished(&events).0, TurnEndReason::Cancelled);
    assert!(!reasoning_text(&events).is_empty());
    assert!(
        matches!(session.history().last(), Some(Turn::Human { .. })),
        "{:?}",
        session.history()
    );
    assert!(!history_text(&session, &tok).contains("thinking"));
    // The question is cached; the next turn goes on from it.
    let expected = rendered_ids(&session, &tok);
    assert_eq!(session.cached_ids(), expected.as_slice());
    assert_eq!(agent.cache_len().await.unwrap(), expected.len());
}

#[tokio::test]
async fn agent_think_off_by_default_and_for_tasks() {
    let tok = tokenizer();
    let think = text_ids(&tok, "x</think>");
    let script = Script::new(&tok, vec![think.clone()]);
    let agent =
        agent(ToolRegistry::new(), AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(settings(ToolChoice::Auto, false, 4));
    assert!(!session.settings().think);
    let events = run(&agent, &mut session, "Hello").await;
    assert!(reasoning_text(&events).is_empty());
    assert_eq!(step_usages(&events)[0].reasoning_tokens, 0);
}

#[test]
fn reasoning_checkpoints_are_known_by_name() {
    let root = tempfile::tempdir().unwrap();
    let think = root.path().join("Step-Audio-2-mini-Think");
    let plain = root.path().join("Step-Audio-2-mini");
    let renamed = root.path().join("checkpoint");
    let thinking_word = root.path().join("rethinking");
    for dir in [&think, &plain, &renamed, &thinking_word] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(
        renamed.join("config.json"),
        r#"{"_name_or_path": "stepfun-ai/Step-Audio-2-mini-Think", "model_type": "step_audio_2"}"#,
    )
    .unwrap();
    std::fs::write(plain.join("config.json"), r#"{"_name_or_path": "Step-Audio-2-mini"}"#).unwrap();
    assert!(is_reasoning_checkpoint(&think));
    assert!(is_reasoning_checkpoint(&renamed), "named by its saved config");
    assert!(!is_reasoning_checkpoint(&plain));
    assert!(!is_reasoning_checkpoint(&thinking_word), "a word, not a substring");
}
