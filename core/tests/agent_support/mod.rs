//! Shared code of the `agent_*` tests: the tiny checkpoint behind an agent, test tools, a
//! scripted logits mask (the real model generates; the mask decides which id it may pick, so
//! a test can make a step write exact tool calls) and helpers over events and sessions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;
use voxloop_core::agent::{
    Agent, AgentConfig, AgentEvent, ConstraintFactory, TurnEndReason, TurnInput, Usage,
};
use voxloop_core::generate::{allow_only_ids, forbid_ids, LogitsMask};
use voxloop_core::protocol::{encode_pieces, prompt_ids, render, GenerationMode, ToolChoice};
use voxloop_core::session::{Session, SessionSettings, Turn};
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::tool::{
    NoArgs, Tool, ToolCall, ToolError, ToolErrorKind, ToolRegistry, ToolResult,
};
use voxloop_core::{DeviceSpec, Result};

/// `core/tests/fixtures/llm/tiny_a`.
pub fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/tiny_a")
}

pub fn tokenizer() -> StepTokenizer {
    StepTokenizer::from_file(checkpoint().join("tokenizer.json")).unwrap()
}

/// The instant the test agents' system prompts are dated by (2025-08-28 04:00 UTC): the
/// date line is part of the prompt, and a random-weight model's sampled ids follow it, so a
/// test run on another day must see the same prompt.
pub fn test_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(20_328 * 86_400 + 4 * 3600)
}

/// The tiny random checkpoint behind an agent with `tools`, its clock fixed at
/// [`test_now`] unless `config` fixes another.
pub fn agent(tools: ToolRegistry, mut config: AgentConfig) -> Agent {
    config.fixed_now.get_or_insert_with(test_now);
    Agent::load(&checkpoint(), DeviceSpec::Cpu, tools, config).unwrap()
}

/// Settings for the random model: seeded, short steps, no tool call after the first step.
pub fn settings(choice: ToolChoice, speech: bool, max_new_tokens: usize) -> SessionSettings {
    let mut s = SessionSettings { speech, tool_choice: choice, ..SessionSettings::default() };
    s.follow_up_tool_choice = ToolChoice::None;
    s.sampling.seed = Some(1234);
    s.sampling.max_new_tokens = max_new_tokens;
    s
}

/// Runs one turn to its end and returns every event.
pub async fn run(agent: &Agent, session: &mut Session, input: &str) -> Vec<AgentEvent> {
    agent.run_turn(session, TurnInput::text(input)).collect().await
}

pub fn finished(events: &[AgentEvent]) -> (TurnEndReason, Usage) {
    match events.last() {
        Some(AgentEvent::TurnFinished { reason, usage }) => (reason.clone(), *usage),
        other => panic!("the last event is not TurnFinished: {other:?}"),
    }
}

/// The usage of each step, in order.
pub fn step_usages(events: &[AgentEvent]) -> Vec<Usage> {
    let mut out = Vec::new();
    for event in events {
        if let AgentEvent::Usage { step, usage } = event {
            assert_eq!(*step, out.len() + 1, "steps are numbered from 1 in order");
            out.push(*usage);
        }
    }
    out
}

/// `(id, name, arguments)` of every ToolCallStarted.
pub fn started(events: &[AgentEvent]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallStarted { id, name, arguments } => {
                Some((id.clone(), name.clone(), arguments.clone()))
            }
            _ => None,
        })
        .collect()
}

/// `(id, name, outcome)` of every ToolCallFinished.
pub fn finished_calls(
    events: &[AgentEvent],
) -> Vec<(String, String, std::result::Result<String, ToolError>)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallFinished { id, name, outcome, .. } => {
                Some((id.clone(), name.clone(), outcome.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The ids the whole history renders to (every turn closed), as a fresh prefill would see
/// them.
pub fn rendered_ids(session: &Session, tokenizer: &StepTokenizer) -> Vec<i64> {
    let messages: Vec<_> = session.history().iter().map(Turn::message).collect();
    prompt_ids(&encode_pieces(&render(&messages), tokenizer).unwrap())
}

/// Checks that the session's cache record is the rendering of its history (the last
/// assistant turn's `<|EOT|>` still to come) and that the model's cache is that long.
pub async fn assert_cache_matches_history(agent: &Agent, session: &Session) {
    let tokenizer = agent.tokenizer();
    let mut expected = rendered_ids(session, tokenizer);
    assert_eq!(session.cached_turns(), session.history().len(), "every turn is cached");
    if matches!(session.history().last(), Some(Turn::Assistant(_))) {
        assert_eq!(expected.pop(), Some(tokenizer.special().eot));
    }
    assert_eq!(session.cached_ids(), expected.as_slice(), "cache record vs rendered history");
    assert_eq!(agent.cache_len().await.unwrap(), expected.len(), "model cache length");
}

/// Logits of the next position after `<|EOT|>` on top of the model's cache, and after a
/// fresh prefill of the same ids: the largest difference. Clears the model's cache (and
/// tells the agent so).
pub async fn extension_vs_fresh_prefill(agent: &Agent, session: &Session) -> f64 {
    let eot = agent.tokenizer().special().eot;
    let mut all = session.cached_ids().to_vec();
    all.push(eot);
    let diff = agent
        .worker()
        .expect("a local model")
        .call(move |model| {
            use voxloop_core::generate::Segment;
            let extended = model.prefill(&[Segment::Tokens(vec![eot])]).unwrap();
            model.clear();
            let fresh = model.prefill(&[Segment::Tokens(all)]).unwrap();
            model.clear();
            (extended - fresh).abs().max().double_value(&[])
        })
        .unwrap();
    let diff = tokio::task::spawn_blocking(move || diff.wait().unwrap()).await.unwrap();
    agent.forget_cache();
    diff
}

// ===== scripted masks =====

/// The ids of `<tool_call>function\n{name}\n{args}</tool_call>`.
pub fn call_ids(tokenizer: &StepTokenizer, name: &str, args: &str) -> Vec<i64> {
    let special = tokenizer.special();
    let mut ids = vec![special.tool_call_start];
    ids.extend(tokenizer.encode_untrusted(&format!("function\n{name}\n{args}")).unwrap());
    ids.push(special.tool_call_end);
    ids
}

/// A mask that forces `ids`, then `<|EOT|>`; optionally slow, counting its steps.
pub struct Forced {
    ids: Vec<i64>,
    eot: i64,
    delay: Duration,
    steps: Arc<AtomicUsize>,
}

impl LogitsMask for Forced {
    fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> Result<()> {
        self.steps.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let next = self.ids.get(generated.len()).copied().unwrap_or(self.eot);
        allow_only_ids(logits, &[next])
    }
}

/// A mask that only forbids tool calls; optionally slow, counting its steps.
pub struct NoCalls {
    forbidden: [i64; 2],
    delay: Duration,
    steps: Arc<AtomicUsize>,
}

impl LogitsMask for NoCalls {
    fn apply(&mut self, logits: &mut Tensor, _generated: &[i64]) -> Result<()> {
        self.steps.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        forbid_ids(logits, &self.forbidden)
    }
}

/// Forces the scripted id sequences, one per generation step, then lets the model generate
/// without tool calls. Records the choice and mode of every step; `sampled` counts the
/// sampling steps of all its masks, each of which sleeps `delay`.
pub struct Script {
    steps: Mutex<VecDeque<Vec<i64>>>,
    eot: i64,
    forbidden: [i64; 2],
    pub delay: Duration,
    pub sampled: Arc<AtomicUsize>,
    pub seen: Mutex<Vec<(ToolChoice, GenerationMode)>>,
}

impl Script {
    pub fn new(tokenizer: &StepTokenizer, steps: Vec<Vec<i64>>) -> Self {
        let s = tokenizer.special();
        Self {
            steps: Mutex::new(steps.into()),
            eot: s.eot,
            forbidden: [s.tool_call_start, s.tool_call_end],
            delay: Duration::ZERO,
            sampled: Arc::new(AtomicUsize::new(0)),
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl ConstraintFactory for Script {
    fn build(
        &self,
        choice: &ToolChoice,
        mode: GenerationMode,
    ) -> Result<Option<Box<dyn LogitsMask + Send>>> {
        self.seen.lock().unwrap().push((choice.clone(), mode));
        Ok(Some(match self.steps.lock().unwrap().pop_front() {
            Some(ids) => Box::new(Forced {
                ids,
                eot: self.eot,
                delay: self.delay,
                steps: Arc::clone(&self.sampled),
            }),
            None => Box::new(NoCalls {
                forbidden: self.forbidden,
                delay: self.delay,
                steps: Arc::clone(&self.sampled),
            }),
        }))
    }
}

// ===== tools =====

/// A length unit.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Km,
    Mi,
}

/// Arguments of the unit converter.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConvertArgs {
    /// The unit to convert to.
    pub to: Unit,
    /// Whether to round to whole units.
    pub round: bool,
}

/// Converts 10 of the other unit into `to`.
pub struct Convert;

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

#[async_trait::async_trait]
impl Tool for Convert {
    const NAME: &'static str = "convert";
    type Args = ConvertArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Converts ten miles to kilometres or ten kilometres to miles.".to_owned()
    }

    async fn call(&self, args: ConvertArgs) -> std::result::Result<String, Never> {
        let value = match args.to {
            Unit::Km => 16.09344,
            Unit::Mi => 6.21371,
        };
        Ok(if args.round { format!("{value:.0}") } else { format!("{value:.3}") })
    }
}

/// Tells the time (a fixed one).
pub struct Clock;

#[async_trait::async_trait]
impl Tool for Clock {
    const NAME: &'static str = "get_date_time";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Returns the current date and time.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> std::result::Result<String, Never> {
        Ok("2025-08-28 15:30".to_owned())
    }
}

/// Returns fixed search results.
pub struct Search;

/// Arguments of the search tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// What to look for. (Bounded so that a random model's constrained string ends.)
    #[schemars(length(max = 12))]
    pub query: String,
}

#[async_trait::async_trait]
impl Tool for Search {
    const NAME: &'static str = "web_search";
    type Args = SearchArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Searches the web.".to_owned()
    }

    async fn call(&self, args: SearchArgs) -> std::result::Result<String, Never> {
        Ok(format!("The index opened at 3796.71 points ({}).", args.query))
    }
}

/// Always fails.
pub struct Failing;

#[derive(Debug, thiserror::Error)]
#[error("the backend is down")]
pub struct Down;

#[async_trait::async_trait]
impl Tool for Failing {
    const NAME: &'static str = "failing";
    type Args = NoArgs;
    type Output = String;
    type Error = Down;

    fn description(&self) -> String {
        "Fails.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> std::result::Result<String, Down> {
        Err(Down)
    }
}

/// Panics.
pub struct Panicking;

#[async_trait::async_trait]
impl Tool for Panicking {
    const NAME: &'static str = "panicking";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Panics.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> std::result::Result<String, Never> {
        panic!("the tool lost its mind")
    }
}

/// Sleeps for a minute, counting the calls that finished.
#[derive(Default, Clone)]
pub struct Sleepy {
    pub completed: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Tool for Sleepy {
    const NAME: &'static str = "sleepy";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Takes a minute.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> std::result::Result<String, Never> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok("done".to_owned())
    }
}

/// Returns added-token strings of the vocabulary, concatenated.
pub struct Injector {
    pub payload: String,
}

impl Injector {
    /// The added tokens for which `keep` holds.
    pub fn new(tokenizer: &StepTokenizer, keep: impl Fn(&str) -> bool) -> Self {
        let payload = (0..tokenizer.vocab_size() as i64)
            .filter(|&id| tokenizer.is_added(id))
            .map(|id| tokenizer.token_str(id).unwrap())
            .filter(|token| keep(token))
            .collect();
        Self { payload }
    }
}

#[async_trait::async_trait]
impl Tool for Injector {
    const NAME: &'static str = "injector";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Returns hostile text.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> std::result::Result<String, Never> {
        Ok(self.payload.clone())
    }
}

/// A deadline layer for tests: the call fails with a `Timeout` error after `after`.
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    after: Duration,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, after: Duration) -> Self {
        Self { inner, after }
    }
}

impl<S> tower::Service<ToolCall> for Deadline<S>
where
    S: tower::Service<ToolCall, Response = ToolResult, Error = ToolError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = futures::future::BoxFuture<'static, std::result::Result<ToolResult, ToolError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), ToolError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let name = call.name.clone();
        let after = self.after;
        let future = self.inner.call(call);
        Box::pin(async move {
            match tokio::time::timeout(after, future).await {
                Ok(result) => result,
                Err(_) => Err(ToolError::new(
                    ToolErrorKind::Timeout,
                    format!("Tool \"{name}\" took longer than {} ms.", after.as_millis()),
                )),
            }
        })
    }
}

/// The registry most tests use: converter, clock, search.
pub fn basic_tools() -> ToolRegistry {
    let mut tools = ToolRegistry::new();
    tools.register(Convert).unwrap();
    tools.register(Clock).unwrap();
    tools.register(Search).unwrap();
    tools
}
