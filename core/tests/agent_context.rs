//! Every tool call of a turn carries its turn's context: the session id, what the front door
//! attached to that session, and the channel that turns an approval question into an event
//! of the same turn's stream. On the tiny checkpoint, with a scripted mask writing the calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use std::sync::{Arc, Mutex};

use agent_support::{agent, call_ids, finished, run, settings, tokenizer, Never, Script};
use futures::StreamExt;
use voxloop_core::agent::{AgentConfig, AgentEvent, TurnEndReason, TurnInput};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::Session;
use voxloop_core::tool::{Approval, NoArgs, Tool, ToolContext, ToolRegistry};

/// State a front door attaches to one session (as the service attaches its voice).
#[derive(Default)]
struct Notebook(Mutex<Vec<String>>);

/// Writes the calling session's id into that session's notebook.
struct Mark;

#[async_trait::async_trait]
impl Tool for Mark {
    const NAME: &'static str = "mark";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Marks the conversation.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Never> {
        Ok("no session".to_owned())
    }

    async fn call_with_context(&self, _: NoArgs, context: &ToolContext) -> Result<String, Never> {
        let id = context.session_id.clone().unwrap_or_default();
        match context.get::<Arc<Notebook>>() {
            Some(notebook) => notebook.0.lock().unwrap().push(id),
            None => return Ok("no notebook".to_owned()),
        }
        Ok("marked".to_owned())
    }
}

/// Asks the turn before it "pays", as an approval policy does.
struct Pay;

#[async_trait::async_trait]
impl Tool for Pay {
    const NAME: &'static str = "pay";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Pays.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Never> {
        Ok("nobody to ask".to_owned())
    }

    async fn call_with_context(&self, _: NoArgs, context: &ToolContext) -> Result<String, Never> {
        let Some(asker) = &context.approvals else { return Ok("nobody to ask".to_owned()) };
        Ok(match asker.ask("ignored-by-test", Self::NAME, &serde_json::json!({}), None).await {
            Approval::Approved => "paid".to_owned(),
            Approval::Denied { reason } => format!("not paid: {}", reason.unwrap_or_default()),
        })
    }
}

fn session_with_notebook() -> (Session, Arc<Notebook>) {
    let mut session = Session::new(settings(ToolChoice::Auto, false, 24));
    let notebook = Arc::new(Notebook::default());
    session.extensions_mut().insert(Arc::clone(&notebook));
    (session, notebook)
}

#[tokio::test]
async fn concurrent_sessions_each_see_only_their_own_extensions() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Mark).unwrap();
    // Turns of one agent queue on its model: each turn is a call step then an answer step.
    let call = call_ids(&tok, "mark", "{}");
    let script = Script::new(&tok, vec![call.clone(), vec![], call, vec![]]);
    let agent = agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let (mut a, notebook_a) = session_with_notebook();
    let (mut b, notebook_b) = session_with_notebook();
    let (id_a, id_b) = (a.id().to_owned(), b.id().to_owned());

    let (events_a, events_b) =
        tokio::join!(run(&agent, &mut a, "Mark it."), run(&agent, &mut b, "Mark it."));
    assert_eq!(finished(&events_a).0, TurnEndReason::Completed, "{events_a:#?}");
    assert_eq!(finished(&events_b).0, TurnEndReason::Completed, "{events_b:#?}");
    assert_eq!(*notebook_a.0.lock().unwrap(), vec![id_a]);
    assert_eq!(*notebook_b.0.lock().unwrap(), vec![id_b]);

    // A session without the extension: the tool sees none (nothing leaks from the others).
    let mut tools = ToolRegistry::new();
    tools.register(Mark).unwrap();
    let script = Script::new(&tok, vec![call_ids(&tok, "mark", "{}")]);
    let agent =
        agent_support::agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let mut bare = Session::new(settings(ToolChoice::Auto, false, 24));
    let events = run(&agent, &mut bare, "Mark it.").await;
    let outputs: Vec<_> = agent_support::finished_calls(&events)
        .into_iter()
        .map(|(_, _, outcome)| outcome.unwrap())
        .collect();
    assert_eq!(outputs, ["no notebook"]);
}

#[tokio::test]
async fn approval_questions_are_events_of_the_turn_in_order() {
    let tok = tokenizer();
    let mut tools = ToolRegistry::new();
    tools.register(Pay).unwrap();
    let script = Script::new(&tok, vec![call_ids(&tok, "pay", "{}")]);
    let agent = agent(tools, AgentConfig::default()).with_constraints(Arc::new(script));
    let mut session = Session::new(settings(ToolChoice::Auto, false, 24));

    let mut stream = agent.run_turn(&mut session, TurnInput::text("Pay."));
    let mut order = Vec::new();
    while let Some(event) = stream.next().await {
        match &event {
            AgentEvent::ToolCallStarted { .. } => order.push("started".to_owned()),
            AgentEvent::ApprovalRequested(request) => {
                order.push("asked".to_owned());
                assert_eq!(request.name, "pay");
                assert!(request.is_waiting());
                request.answer(Approval::denied_because("over budget")).unwrap();
            }
            AgentEvent::ToolCallFinished { outcome, .. } => {
                order.push(format!("finished: {}", outcome.as_ref().unwrap()))
            }
            AgentEvent::TurnFinished { reason, .. } => {
                assert_eq!(*reason, TurnEndReason::Completed)
            }
            _ => {}
        }
    }
    assert_eq!(order, ["started", "asked", "finished: not paid: over budget"]);
}
