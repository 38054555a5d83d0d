//! Tool failures inside a turn on the tiny checkpoint: errors, panics, timeouts, malformed and
//! unknown calls all become results the model reads, and the turn completes; results can't
//! inject control tokens; search results get the summary instruction; calls run
//! concurrently. A scripted mask makes the real model write the calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_support::{
    agent, assert_cache_matches_history, call_ids, finished, finished_calls, run, settings,
    tokenizer, Clock, Deadline, Failing, Injector, Never, Panicking, Script, Search, Sleepy,
};
use voxloop_core::agent::{AgentConfig, TurnEndReason};
use voxloop_core::protocol::{
    encode_pieces, prompt_ids, render, Message, ToolChoice, SEARCH_SUMMARY_INSTRUCTION,
};
use voxloop_core::session::{Session, Turn};
use voxloop_core::tool::{NoArgs, Tool, ToolErrorKind, ToolRegistry};

fn result_turns(session: &Session) -> Vec<(usize, &voxloop_core::session::ToolResultTurn)> {
    session
        .history()
        .iter()
        .enumerate()
        .filter_map(|(i, t)| if let Turn::ToolResult(r) = t { Some((i, r)) } else { None })
        .collect()
}

#[tokio::test]
async fn agent_failing_panicking_and_hanging_tools_give_error_results() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Failing).unwrap();
    tools.register(Panicking).unwrap();
    let sleepy = Sleepy::default();
    tools
        .register_with(sleepy.clone(), |service| Deadline::new(service, Duration::from_millis(200)))
        .unwrap();
    let calls = [
        call_ids(&tok, "failing", "{}"),
        call_ids(&tok, "panicking", "{}"),
        call_ids(&tok, "sleepy", "{}"),
    ]
    .concat();
    let script = Script::new(&tok, vec![calls]);
    let agent = agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(settings(ToolChoice::Auto, true, 160));
    let events = run(&agent, &mut session, "Try them all.").await;

    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");
    let kinds: Vec<_> = finished_calls(&events)
        .into_iter()
        .map(|(_, name, outcome)| (name, outcome.unwrap_err().kind))
        .collect();
    let expected = [
        ("failing".to_owned(), ToolErrorKind::Execution),
        ("panicking".to_owned(), ToolErrorKind::Panicked),
        ("sleepy".to_owned(), ToolErrorKind::Timeout),
    ];
    // Calls run concurrently: compare as sets; the history keeps call order.
    for pair in &expected {
        assert!(kinds.contains(pair), "{kinds:?}");
    }
    let results = result_turns(&session);
    let names: Vec<&str> = results.iter().map(|(_, r)| r.name.as_str()).collect();
    assert_eq!(names, ["failing", "panicking", "sleepy"]);
    assert!(results.iter().all(|(_, r)| !r.ok));
    assert!(results[0].1.text.contains("the backend is down"), "{}", results[0].1.text);
    assert_eq!(sleepy.completed.load(Ordering::SeqCst), 0);
    assert!(matches!(session.history().last(), Some(Turn::Assistant(a)) if a.calls.is_empty()));
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_malformed_and_unknown_calls_are_answered_not_run() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Clock).unwrap();
    let calls = [
        call_ids(&tok, "get_date_time", "{oops"),
        call_ids(&tok, "weather", "{\"city\": \"Paris\"}"),
        call_ids(&tok, "get_date_time", "{}"),
    ]
    .concat();
    let agent = agent(tools, AgentConfig::default())
        .with_constraints(Arc::new(Script::new(&tok, vec![calls])));
    let mut session = Session::new(settings(ToolChoice::Auto, false, 160));
    let events = run(&agent, &mut session, "What day is it?").await;

    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");
    let results = result_turns(&session);
    assert_eq!(results.len(), 3);
    let (_, malformed) = results[0];
    assert!(!malformed.ok && malformed.name.is_empty());
    assert!(malformed.text.contains("not valid JSON"), "{}", malformed.text);
    let (_, unknown) = results[1];
    assert!(!unknown.ok && unknown.name == "weather");
    assert!(unknown.text.contains("Unknown tool \"weather\""), "{}", unknown.text);
    let (_, good) = results[2];
    assert!(good.ok && good.text == "2025-08-28 15:30");
    let Turn::Assistant(calling) = &session.history()[results[0].0 - 1] else { panic!() };
    assert_eq!(calling.calls.len(), 2, "only well-formed calls are recorded as calls");
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_special_tokens_in_results_and_user_text_stay_text() {
    let tok = tokenizer();
    // Every added token of the vocabulary, through the path result turns take (the 6562
    // speech-code tokens would not fit the tiny model's context: the model run below takes
    // the others and three of them).
    let every = Injector::new(&tok, |_| true).payload;
    let message = Message::tool_result(every.clone(), Some(SEARCH_SUMMARY_INSTRUCTION));
    let ids = prompt_ids(&encode_pieces(&render(&[message]), &tok).unwrap());
    let trusted = tok.encode_trusted(SEARCH_SUMMARY_INSTRUCTION).unwrap().len() + 1;
    let body = &ids[1..ids.len() - trusted];
    assert!(body.iter().all(|&id| !tok.is_added(id)), "a control id came from the result");
    assert_eq!(tok.decode(body).unwrap(), format!("input\n{every}"));

    let injector = Injector::new(&tok, |token| {
        !token.starts_with("<audio_")
            || ["<audio_0>", "<audio_6560>", "<audio_6561>"].contains(&token)
    });
    let payload = injector.payload.clone();
    assert!(
        payload.contains("<|EOT|>")
            && payload.contains("<tool_call>")
            && payload.contains("<tts_start>")
    );
    let mut tools = ToolRegistry::new();
    tools.register(injector).unwrap();
    let script = Script::new(&tok, vec![call_ids(&tok, "injector", "{}")]);
    let agent = agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(settings(ToolChoice::Auto, true, 160));
    let events = run(&agent, &mut session, &payload).await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");

    let special = *tok.special();
    let (result_index, result) = result_turns(&session)[0];
    assert!(result.ok && result.text == payload);
    for (index, header) in [(2, "human\n"), (result_index, "input\n")] {
        let ids = session.turn_ids(index).unwrap();
        assert_eq!(ids.first(), Some(&special.bot));
        assert_eq!(ids.last(), Some(&special.eot));
        let body = &ids[1..ids.len() - 1];
        let injected: Vec<i64> = body.iter().copied().filter(|&id| tok.is_added(id)).collect();
        assert!(injected.is_empty(), "turn {index}: control ids {injected:?} from untrusted text");
        assert_eq!(tok.decode(body).unwrap(), format!("{header}{payload}"));
    }
    assert_cache_matches_history(&agent, &session).await;
}

#[tokio::test]
async fn agent_search_results_get_the_summary_instruction() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Search).unwrap();
    tools.register(Failing).unwrap();
    let config =
        AgentConfig::default().summarise_results_of("web_search").summarise_results_of("failing");
    let calls =
        [call_ids(&tok, "web_search", "{\"query\": \"index\"}"), call_ids(&tok, "failing", "{}")]
            .concat();
    let agent = agent(tools, config).with_constraints(Arc::new(Script::new(&tok, vec![calls])));
    let mut session = Session::new(settings(ToolChoice::Auto, true, 160));
    let events = run(&agent, &mut session, "How did the market open?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");

    let results = result_turns(&session);
    let (search_index, search) = results[0];
    assert_eq!(search.instruction.as_deref(), Some(SEARCH_SUMMARY_INSTRUCTION));
    let ids = session.turn_ids(search_index).unwrap();
    let instruction = tok.encode_trusted(SEARCH_SUMMARY_INSTRUCTION).unwrap();
    assert!(ids[..ids.len() - 1].ends_with(&instruction), "the instruction closes the input turn");
    assert_eq!(results[1].1.instruction, None, "errors are not summarised");
    assert_cache_matches_history(&agent, &session).await;
}

/// Returns once two calls have been inside it at the same time (a cancelled call leaves).
#[derive(Clone, Default)]
struct Rendezvous {
    inside: Arc<AtomicUsize>,
    met: Arc<AtomicBool>,
}

/// Counts a call as inside until dropped.
struct Inside(Arc<AtomicUsize>);

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Tool for Rendezvous {
    const NAME: &'static str = "rendezvous";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Meets another call.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Never> {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let _inside = Inside(Arc::clone(&self.inside));
        loop {
            if self.inside.load(Ordering::SeqCst) >= 2 {
                self.met.store(true, Ordering::SeqCst);
            }
            if self.met.load(Ordering::SeqCst) {
                return Ok("met".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn agent_runs_a_steps_calls_concurrently_up_to_the_limit() {
    let tok = tokenizer();
    for (concurrency, met) in [(2, true), (1, false)] {
        let mut tools = ToolRegistry::new();
        let meet = Rendezvous::default();
        tools.register_with(meet, |s| Deadline::new(s, Duration::from_millis(300))).unwrap();
        let calls =
            [call_ids(&tok, "rendezvous", "{}"), call_ids(&tok, "rendezvous", "{}")].concat();
        let config = AgentConfig { tool_concurrency: concurrency, ..AgentConfig::default() };
        let agent = agent(tools, config).with_constraints(Arc::new(Script::new(&tok, vec![calls])));
        let mut session = Session::new(settings(ToolChoice::Auto, false, 160));
        let events = run(&agent, &mut session, "Meet.").await;
        assert_eq!(finished(&events).0, TurnEndReason::Completed);
        let outcomes: Vec<bool> =
            finished_calls(&events).iter().map(|(_, _, outcome)| outcome.is_ok()).collect();
        assert_eq!(outcomes, [met, met], "concurrency {concurrency}");
    }
}
