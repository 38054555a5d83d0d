//! `Agent::replace_tools` (what an MCP server's `notifications/tools/list_changed` ends in):
//! on the tiny checkpoint, a session begun under one tool set is told of the new one at its
//! next turn (its `tool_json_schemas` turn replaced, added or removed, and prefilled again from
//! there), the new tools' grammar and services are the ones that turn uses, and the model's
//! cache still equals the history's rendering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use agent_support::*;
use voxloop_core::agent::AgentConfig;
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, Turn};
use voxloop_core::tool::ToolRegistry;

/// The session's `tool_json_schemas` turn, if it has one (it follows the system turn).
fn declared(session: &Session) -> Option<String> {
    session.history().iter().find_map(|turn| match turn {
        Turn::ToolSchemas { json } => Some(json.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn replaced_tools_reach_each_session_at_its_next_turn() {
    let mut converter_only = ToolRegistry::new();
    converter_only.register(Convert).unwrap();
    let agent = agent(converter_only, AgentConfig::default());
    let mut session = Session::new(settings(ToolChoice::Auto, false, 24));
    run(&agent, &mut session, "Hello.").await;
    let before = declared(&session).unwrap();
    assert!(before.contains("\"convert\"") && !before.contains("get_date_time"), "{before}");
    assert!(matches!(session.history()[1], Turn::ToolSchemas { .. }), "after the system turn");

    // New tools: the next turn declares them in place, prefilled again from there.
    agent.replace_tools(basic_tools()).unwrap();
    assert!(agent.tools().contains("get_date_time"));
    let turns_before = session.history().len();
    let events = run(&agent, &mut session, "Again.").await;
    let after = declared(&session).unwrap();
    assert!(after.contains("get_date_time") && after.contains("web_search"), "{after}");
    assert!(matches!(session.history()[1], Turn::ToolSchemas { .. }));
    assert!(session.history().len() > turns_before, "the turn was added, nothing removed");
    let system_ids = session.turn_ids(0).unwrap().len();
    assert_eq!(
        step_usages(&events)[0].cached_tokens,
        system_ids,
        "the change is at turn 1: only the system turn is reused"
    );
    assert_cache_matches_history(&agent, &session).await;

    // The new tool set's grammar and services are the turn's: a named new tool is called and runs.
    session.settings_mut().tool_choice = ToolChoice::Named("get_date_time".to_owned());
    let events = run(&agent, &mut session, "What time is it?").await;
    let calls = finished_calls(&events);
    assert!(
        calls.iter().any(|(_, name, outcome)| name == "get_date_time" && outcome.is_ok()),
        "{calls:?}"
    );
    assert_cache_matches_history(&agent, &session).await;

    // No tools at all: the declaration goes; a session without one gets one when tools come.
    agent.replace_tools(ToolRegistry::new()).unwrap();
    session.settings_mut().tool_choice = ToolChoice::Auto;
    run(&agent, &mut session, "Bye.").await;
    assert_eq!(declared(&session), None);
    assert_cache_matches_history(&agent, &session).await;
    let mut fresh = Session::new(settings(ToolChoice::Auto, false, 16));
    run(&agent, &mut fresh, "Hi.").await;
    assert_eq!(declared(&fresh), None);
    agent.replace_tools(basic_tools()).unwrap();
    run(&agent, &mut fresh, "Hi again.").await;
    assert!(declared(&fresh).unwrap().contains("convert"));
    assert!(matches!(fresh.history()[1], Turn::ToolSchemas { .. }));
    assert_cache_matches_history(&agent, &fresh).await;
}
