//! Barge-in on the tiny checkpoint: a cancelled generation stops within one decode step and
//! keeps what was said; a cancel while tools run keeps finished results once and answers the
//! others as cancelled; a dropped turn is forgotten. After each, the cache matches the
//! history and the next turn extends it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_support::{
    agent, assert_cache_matches_history, basic_tools, call_ids, finished, finished_calls, run,
    settings, step_usages, tokenizer, Clock, Script, Sleepy,
};
use futures::StreamExt;
use voxloop_core::agent::{AgentConfig, AgentEvent, TurnEndReason, TurnInput};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, Turn};
use voxloop_core::tool::{ToolErrorKind, ToolRegistry};

/// The input tokens a follow-up turn must prefill when the history is otherwise cached:
/// the open turn's `<|EOT|>`, `uncached` turns, the generation prompt.
fn follow_up_input(session: &Session, uncached: std::ops::Range<usize>, prompt: usize) -> usize {
    1 + uncached.map(|i| session.turn_ids(i).unwrap().len()).sum::<usize>() + prompt
}

#[tokio::test]
async fn agent_cancel_mid_generation_stops_within_one_step() {
    let tok = tokenizer();
    let script = Arc::new(Script::new(&tok, Vec::new()).slow(Duration::from_millis(2)));
    let agent = agent(basic_tools(), AgentConfig::default()).with_constraints(script.clone());
    let mut session = Session::new(settings(ToolChoice::Auto, true, 2000));

    let mut stream = agent.run_turn(&mut session, TurnInput::text("Tell me a long story."));
    let cancel = stream.cancel_handle();
    let mut deltas = 0;
    let mut sampled_at_cancel = None;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        if matches!(event, AgentEvent::TextDelta { .. } | AgentEvent::AudioTokens(_)) {
            deltas += 1;
            if deltas == 5 {
                cancel.cancel();
                sampled_at_cancel = Some(script.sampled.load(Ordering::SeqCst));
            }
        }
        events.push(event);
    }
    drop(stream);
    let (reason, usage) = finished(&events);
    assert_eq!(reason, TurnEndReason::Cancelled);
    let sampled_at_cancel = sampled_at_cancel.unwrap();
    assert!(
        usage.output_tokens <= sampled_at_cancel + 1,
        "{} ids generated, {sampled_at_cancel} sampled when the cancel came",
        usage.output_tokens
    );
    assert!(script.sampled.load(Ordering::SeqCst) <= sampled_at_cancel + 1);

    // What was generated stays as the (open) assistant turn: it is what the user heard.
    let Some(Turn::Assistant(partial)) = session.history().last() else {
        panic!("no partial turn")
    };
    assert_eq!(partial.ids.len(), usage.output_tokens);
    assert!(partial.calls.is_empty());
    assert_cache_matches_history(&agent, &session).await;

    session.settings_mut().sampling.max_new_tokens = 6;
    let events = run(&agent, &mut session, "Stop. Just say hi.").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    let human = session.history().len() - 2;
    let steps = step_usages(&events);
    let Turn::Assistant(answer) = &session.history()[human + 1] else { panic!() };
    let prompt_len = session.turn_ids(human + 1).unwrap().len() - answer.ids.len();
    assert_eq!(steps[0].input_tokens, follow_up_input(&session, human..human + 1, prompt_len));
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_cancel_inside_a_tool_call_drops_the_call() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Clock).unwrap();
    let preamble = tok.encode_untrusted("Let me check.").unwrap();
    let forced = [preamble.clone(), call_ids(&tok, "get_date_time", "{}")].concat();
    let script = Arc::new(Script::new(&tok, vec![forced]).slow(Duration::from_millis(3)));
    let agent = agent(tools, AgentConfig::default()).with_constraints(script.clone());
    let mut session = Session::new(settings(ToolChoice::Auto, false, 200));

    let stream = agent.run_turn(&mut session, TurnInput::text("What time is it?"));
    // Cancel once the model is a few ids into the call (`<tool_call>` is id `preamble.len()`).
    let cancel = stream.cancel_handle();
    let sampled = Arc::clone(&script.sampled);
    let inside = preamble.len() + 3;
    let watcher = std::thread::spawn(move || {
        while sampled.load(Ordering::SeqCst) < inside {
            std::thread::sleep(Duration::from_micros(100));
        }
        cancel.cancel();
    });
    let events: Vec<_> = stream.collect().await;
    watcher.join().unwrap();

    assert_eq!(finished(&events).0, TurnEndReason::Cancelled, "{events:#?}");
    assert!(finished_calls(&events).is_empty(), "no call ran");
    let Some(Turn::Assistant(partial)) = session.history().last() else {
        panic!("no partial turn")
    };
    assert_eq!(partial.ids, preamble, "the spoken preamble stays, the unfinished call goes");
    assert!(partial.calls.is_empty());
    assert!(session.history().iter().all(|t| !matches!(t, Turn::ToolResult(_))));
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_cancel_while_tools_run_keeps_finished_results_once() {
    let tok = tokenizer();
    let sleepy = Sleepy::default();
    let mut tools = ToolRegistry::new();
    tools.register(Clock).unwrap();
    tools.register(sleepy.clone()).unwrap();
    let calls = [call_ids(&tok, "get_date_time", "{}"), call_ids(&tok, "sleepy", "{}")].concat();
    let agent = agent(tools, AgentConfig::default())
        .with_constraints(Arc::new(Script::new(&tok, vec![calls])));
    let mut session = Session::new(settings(ToolChoice::Auto, true, 120));

    let mut stream = agent.run_turn(&mut session, TurnInput::text("Time, then sleep."));
    let cancel = stream.cancel_handle();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        if matches!(&event, AgentEvent::ToolCallFinished { name, .. } if name == "get_date_time") {
            cancel.cancel();
        }
        events.push(event);
    }
    drop(stream);
    assert_eq!(finished(&events).0, TurnEndReason::Cancelled);
    let outcomes: Vec<_> = finished_calls(&events)
        .into_iter()
        .map(|(_, name, outcome)| (name, outcome.map_err(|e| e.kind)))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("get_date_time".to_owned(), Ok("2025-08-28 15:30".to_owned())),
            ("sleepy".to_owned(), Err(ToolErrorKind::Cancelled)),
        ]
    );
    assert_eq!(sleepy.completed.load(Ordering::SeqCst), 0);

    // The calling turn and one result per call, each exactly once; the results wait for the
    // next prefill.
    let history = session.history();
    let Turn::Assistant(calling) = &history[history.len() - 3] else { panic!("{history:#?}") };
    let result_ids: Vec<&str> = history[history.len() - 2..]
        .iter()
        .map(|t| match t {
            Turn::ToolResult(r) => r.call_id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    let call_ids: Vec<&str> = calling.calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(result_ids, call_ids);
    assert_eq!(session.cached_turns(), history.len() - 2);

    session.settings_mut().sampling.max_new_tokens = 6;
    let events = run(&agent, &mut session, "Never mind.").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    let n = session.history().len();
    let Turn::Assistant(answer) = &session.history()[n - 1] else { panic!() };
    let prompt = session.turn_ids(n - 1).unwrap().len() - answer.ids.len();
    assert_eq!(
        step_usages(&events)[0].input_tokens,
        follow_up_input(&session, n - 4..n - 1, prompt)
    );
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_cancel_before_start_and_dropped_turns_leave_history_consistent() {
    let tok = tokenizer();
    let script = Arc::new(Script::new(&tok, Vec::new()).slow(Duration::from_millis(2)));
    let agent = agent(basic_tools(), AgentConfig::default()).with_constraints(script);
    let mut session = Session::new(settings(ToolChoice::Auto, true, 2000));

    let stream = agent.run_turn(&mut session, TurnInput::text("Hello?"));
    stream.cancel_handle().cancel();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 1);
    assert_eq!(finished(&events).0, TurnEndReason::Cancelled);
    assert!(session.history().is_empty());

    // A turn dropped mid-generation: the step is forgotten, the cache trimmed next time.
    let mut stream = agent.run_turn(&mut session, TurnInput::text("Tell me everything."));
    let mut seen = 0;
    while let Some(event) = stream.next().await {
        if matches!(event, AgentEvent::AudioTokens(_) | AgentEvent::TextDelta { .. }) {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    drop(stream);
    assert!(matches!(session.history().last(), Some(Turn::Human { .. })));
    session.settings_mut().sampling.max_new_tokens = 6;
    let events = run(&agent, &mut session, "Sorry, go on.").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    assert_cache_matches_history(&agent, &session).await;
}
