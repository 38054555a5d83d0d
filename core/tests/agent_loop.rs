//! End-to-end turns on the tiny random checkpoint through the real tch model and the real
//! grammar constraint: named and required tool choices give schema-valid calls, results go
//! back by extending the KV cache (no re-prefill), `max_steps` is honoured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use agent_support::{
    agent, assert_cache_matches_history, basic_tools, extension_vs_fresh_prefill, finished,
    finished_calls, run, settings, started, step_usages,
};
use serde_json::Value;
use voxloop_core::agent::{AgentConfig, AgentEvent, TurnEndReason};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, Turn};
use voxloop_core::tool::{ToolErrorKind, ToolRegistry};

fn assert_schema_valid(tools: &ToolRegistry, name: &str, arguments: &Value) {
    let definition =
        tools.get(name).unwrap_or_else(|| panic!("undeclared tool {name}")).definition();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&definition.parameters)
        .unwrap();
    assert!(
        validator.is_valid(arguments),
        "{name} arguments {arguments} break {}",
        definition.parameters
    );
}

/// The turns of a one-round tool turn: system, declarations, human, the calling assistant
/// turn, one result per call written (`parsed` of them well-formed, in order, then at most one
/// that `max_new_tokens` cut short), the answer.
fn assert_tool_round(session: &Session, written: usize, parsed: usize) {
    let history = session.history();
    assert_eq!(history.len(), 5 + written, "{history:#?}");
    assert!(matches!(history[0], Turn::System { .. }));
    assert!(matches!(history[1], Turn::ToolSchemas { .. }));
    assert!(matches!(history[2], Turn::Human { .. }));
    let Turn::Assistant(calling) = &history[3] else { panic!("turn 3 is {:?}", history[3]) };
    assert_eq!(calling.calls.len(), parsed);
    for i in 0..written {
        let Turn::ToolResult(result) = &history[4 + i] else {
            panic!("turn {} is not a result", 4 + i)
        };
        if let Some(call) = calling.calls.get(i) {
            assert_eq!(result.call_id, call.id, "results follow the calls' order");
        }
    }
    let Turn::Assistant(answer) = history.last().unwrap() else { panic!("no final answer") };
    assert!(answer.calls.is_empty());
}

/// The calls of a step the grammar constrained: after a completed call the model may write
/// another, so a random model chains calls until `max_new_tokens` cuts the last one short.
/// Returns how many were written and how many of them were well-formed; checks that only the
/// last may be cut (answered with an invalid-arguments error, not run), the others ran with
/// their call ids.
fn constrained_calls(events: &[AgentEvent]) -> (usize, usize) {
    let calls = started(events);
    let results = finished_calls(events);
    assert!(!calls.is_empty(), "no call: {events:#?}");
    assert_eq!(results.len(), calls.len());
    let parsed = calls.iter().take_while(|(_, name, _)| !name.is_empty()).count();
    assert!(calls.len() - parsed <= 1, "only the last call may be cut short: {calls:?}");
    // A cut call is answered at once, the others as they finish: match results by call id.
    for (i, (id, _, _)) in calls.iter().enumerate() {
        let matching: Vec<_> = results.iter().filter(|(result_id, _, _)| result_id == id).collect();
        assert_eq!(matching.len(), 1, "call {id}: {results:?}");
        let outcome = &matching[0].2;
        if i == parsed {
            let error = outcome.as_ref().unwrap_err();
            assert_eq!(error.kind, ToolErrorKind::InvalidArguments, "{error:?}");
        } else {
            assert!(outcome.is_ok(), "{outcome:?}");
        }
    }
    (calls.len(), parsed)
}

#[tokio::test]
async fn agent_named_choice_calls_each_declared_tool_and_extends_the_cache() {
    let tools = basic_tools();
    let agent = agent(tools.clone(), AgentConfig::default());
    let tokenizer = agent.tokenizer();
    let mut compared = false;
    for name in tools.names().map(str::to_owned).collect::<Vec<_>>() {
        let mut session = Session::new(settings(ToolChoice::Named(name.clone()), true, 64));
        let events = run(&agent, &mut session, "Could you help me with this?").await;
        let (reason, total) = finished(&events);
        assert_eq!(reason, TurnEndReason::Completed, "{name}: {events:#?}");

        let (written, parsed) = constrained_calls(&events);
        assert!(parsed >= 1, "{name}: no call was completed within the step");
        for (_, called, arguments) in &started(&events)[..parsed] {
            assert_eq!(called, &name);
            assert_schema_valid(&tools, &name, arguments);
        }
        assert_tool_round(&session, written, parsed);

        // The speech-mode call comes after an empty spoken segment.
        let Turn::Assistant(calling) = &session.history()[3] else { unreachable!() };
        assert!(calling.speech);
        assert_eq!(calling.ids[0], tokenizer.special().tts_end);

        // Step 2 prefilled exactly the closing <|EOT|>, the result turns and the generation
        // prompt: the history before them was not prefilled again.
        let steps = step_usages(&events);
        assert_eq!(steps.len(), 2);
        let last = session.history().len() - 1;
        let results_len: usize = (4..last).map(|i| session.turn_ids(i).unwrap().len()).sum();
        let Turn::Assistant(answer) = &session.history()[last] else { unreachable!() };
        let generation_prompt = session.turn_ids(last).unwrap().len() - answer.ids.len();
        assert_eq!(steps[1].input_tokens, 1 + results_len + generation_prompt);
        // A later session may start from the system and tool turns an earlier one left in
        // the cache (tests/agent_prefix.rs): only the rest is prefilled.
        let reused = steps[0].cached_tokens;
        assert_eq!(reused + total.input_tokens + total.output_tokens, session.cached_ids().len());
        assert_cache_matches_history(&agent, &session).await;

        if !compared {
            let diff = extension_vs_fresh_prefill(&agent, &session).await;
            assert!(diff < 1e-4, "extended cache vs fresh prefill: max logit difference {diff}");
            compared = true;
        }
    }
}

#[tokio::test]
async fn agent_required_choice_makes_schema_valid_calls_in_text_mode() {
    let tools = basic_tools();
    let agent = agent(tools.clone(), AgentConfig::default());
    let mut session = Session::new(settings(ToolChoice::Required, false, 64));
    let events = run(&agent, &mut session, "What time is it?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");
    let (written, parsed) = constrained_calls(&events);
    assert!(parsed >= 1, "no call was completed within the step");
    for (_, name, arguments) in &started(&events)[..parsed] {
        assert_schema_valid(&tools, name, arguments);
    }
    assert_tool_round(&session, written, parsed);
    let Turn::Assistant(calling) = &session.history()[3] else { unreachable!() };
    assert!(!calling.speech);
    assert_eq!(calling.ids[0], agent.tokenizer().special().tool_call_start);
    assert_cache_matches_history(&agent, &session).await;

    // A second turn (no tools this time) extends the same cache: <|EOT|>, the human turn,
    // the generation prompt.
    session.settings_mut().tool_choice = ToolChoice::None;
    let before = session.cached_ids().len();
    let events = run(&agent, &mut session, "Thanks.").await;
    let human = session.history().len() - 2;
    let steps = step_usages(&events);
    let generation_prompt = agent.tokenizer().encode_trusted("<|BOT|>assistant\n").unwrap().len();
    assert_eq!(
        steps[0].input_tokens,
        1 + session.turn_ids(human).unwrap().len() + generation_prompt
    );
    let human_ids = session.turn_ids(human).unwrap();
    assert_eq!(human_ids, &session.cached_ids()[before + 1..before + 1 + human_ids.len()]);
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_max_steps_is_honoured() {
    let tools = basic_tools();
    let agent = agent(tools, AgentConfig::default());
    let mut always = settings(ToolChoice::Required, true, 48);
    always.follow_up_tool_choice = ToolChoice::Required;
    always.max_steps = 2;
    let mut session = Session::new(always);
    let events = run(&agent, &mut session, "Check everything.").await;
    assert_eq!(finished(&events).0, TurnEndReason::MaxSteps, "{events:#?}");
    assert_eq!(step_usages(&events).len(), 3, "two tool steps and the answer");
    let assistants: Vec<_> = session
        .history()
        .iter()
        .filter_map(|t| if let Turn::Assistant(a) = t { Some(a) } else { None })
        .collect();
    assert_eq!(assistants.len(), 3);
    // Both tool steps wrote calls (the grammar opens each with <tool_call>); a call that
    // `max_new_tokens` cut short is malformed: it gets an error result but is not one of the
    // assistant turn's parsed `calls`.
    let tool_call = agent.tokenizer().special().tool_call_start;
    assert!(assistants[..2].iter().all(|a| a.ids.contains(&tool_call)));
    assert!(!assistants[2].ids.contains(&tool_call), "the last step may not call tools");
    // Every call written, well-formed or not, was answered once, in the history and the events.
    let results = session.history().iter().filter(|t| matches!(t, Turn::ToolResult(_))).count();
    assert_eq!(results, started(&events).len());
    assert_eq!(results, finished_calls(&events).len());
    let parsed = assistants[0].calls.len() + assistants[1].calls.len();
    let malformed = finished_calls(&events).iter().filter(|(_, name, _)| name.is_empty()).count();
    assert_eq!(results, parsed + malformed, "{events:#?}");
    assert_cache_matches_history(&agent, &session).await;

    // max_steps = 0: tools are declared but the only step runs without them.
    let mut none = settings(ToolChoice::Required, true, 24);
    none.max_steps = 0;
    let mut session = Session::new(none);
    let events = run(&agent, &mut session, "Hi.").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    assert_eq!(step_usages(&events).len(), 1);
    assert!(started(&events).is_empty());
}
