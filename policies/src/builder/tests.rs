//! The composed stacks, end to end through a `ToolRegistry` and real `Tool`s.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use schemars::JsonSchema;
use serde::Deserialize;
use voxloop_core::tool::{Tool, ToolErrorKind, ToolRegistry, Transient};

use super::*;
use crate::approval::ChannelApprover;
use crate::guard::guard_fn;
use crate::testing::{advance_ms, settle};

/// What a probe tool does on one call.
#[derive(Debug, Clone)]
enum Reply {
    /// Fails like an HTTP provider.
    Http(u16, Option<Duration>),
    /// Answers after a while.
    Slow(Duration, &'static str),
    /// Answers at once.
    Text(String),
}

/// A tool's name and whether it is idempotent.
trait Kind: Send + Sync + 'static {
    const NAME: &'static str;
    const IDEMPOTENT: bool = true;
}

struct Search;
impl Kind for Search {
    const NAME: &'static str = "web_search";
}

struct Fetch;
impl Kind for Fetch {
    const NAME: &'static str = "fetch";
}

struct SendMessage;
impl Kind for SendMessage {
    const NAME: &'static str = "send_message";
    const IDEMPOTENT: bool = false;
}

/// A tool that follows a script (then echoes its query) and counts its calls.
struct Probe<K> {
    calls: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    kind: PhantomData<K>,
}

impl<K: Kind> Probe<K> {
    fn new(script: Vec<Reply>) -> (Self, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = Self {
            calls: Arc::clone(&calls),
            script: Arc::new(Mutex::new(script.into())),
            kind: PhantomData,
        };
        (probe, calls)
    }
}

#[derive(Deserialize, JsonSchema)]
struct ProbeArgs {
    /// What to look for.
    #[serde(default)]
    query: Option<String>,
    /// A page to fetch.
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}")]
struct HttpError {
    status: u16,
    retry_after: Option<Duration>,
}

#[async_trait::async_trait]
impl<K: Kind> Tool for Probe<K> {
    const NAME: &'static str = K::NAME;
    type Args = ProbeArgs;
    type Output = String;
    type Error = HttpError;

    fn description(&self) -> String {
        "A probe.".into()
    }

    fn idempotent(&self) -> bool {
        K::IDEMPOTENT
    }

    fn transient(&self, error: &HttpError) -> Option<Transient> {
        (error.status == 429 || error.status >= 500)
            .then_some(Transient { retry_after: error.retry_after })
    }

    async fn call(&self, args: ProbeArgs) -> Result<String, HttpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = self.script.lock().unwrap().pop_front();
        match reply {
            Some(Reply::Http(status, retry_after)) => Err(HttpError { status, retry_after }),
            Some(Reply::Slow(delay, text)) => {
                tokio::time::sleep(delay).await;
                Ok(text.to_owned())
            }
            Some(Reply::Text(text)) => Ok(text),
            None => Ok(args.query.or(args.url).unwrap_or_default()),
        }
    }
}

fn policies(toml: &str) -> Policies {
    Policies::new(toml::from_str(toml).unwrap()).unwrap().with_jitter(Jitter::none())
}

fn search(query: &str) -> ToolCall {
    ToolCall::new("web_search", serde_json::json!({ "query": query }))
}

#[tokio::test(start_paused = true)]
async fn retries_429_and_500_then_answers() {
    let policies = policies("[defaults]\nretries = 3");
    let (tool, calls) = Probe::<Search>::new(vec![Reply::Http(429, None), Reply::Http(500, None)]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();
    let result = tools.call(search("rust")).await;
    assert_eq!(result.outcome, Ok("rust".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_from_the_tool() {
    let policies = policies("[defaults]\nretries = 3");
    let (tool, calls) = Probe::<Search>::new(vec![Reply::Http(429, Some(Duration::from_secs(3)))]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();
    let task = tokio::spawn(async move { tools.call(search("rust")).await });
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    advance_ms(2999).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    advance_ms(1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_and_side_effects_are_not_retried() {
    let policies = policies("[defaults]\nretries = 3\n[tools.fetch]\nidempotent = false");
    let (search_tool, search_calls) = Probe::<Search>::new(vec![Reply::Http(401, None)]);
    let (send_tool, send_calls) = Probe::<SendMessage>::new(vec![Reply::Http(503, None)]);
    let (fetch_tool, fetch_calls) = Probe::<Fetch>::new(vec![Reply::Http(503, None)]);
    let mut tools = ToolRegistry::new();
    tools.register_with(search_tool, policies.layers()).unwrap();
    tools.register_with(send_tool, policies.layers()).unwrap();
    tools.register_with(fetch_tool, policies.layers()).unwrap();

    let unauthorised = tools.call(search("rust")).await;
    assert_eq!(unauthorised.model_text(), "Tool \"web_search\" failed: HTTP 401");
    let sent = tools.call(ToolCall::new("send_message", serde_json::json!({}))).await;
    assert_eq!(sent.error_kind(), Some(ToolErrorKind::Execution));
    let fetched = tools.call(ToolCall::new("fetch", serde_json::json!({}))).await;
    assert!(!fetched.is_ok());
    let counts = [&search_calls, &send_calls, &fetch_calls].map(|c| c.load(Ordering::SeqCst));
    assert_eq!(counts, [1, 1, 1], "401, a non-idempotent tool, idempotent = false");
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_then_reported() {
    let policies = policies("[defaults]\ntimeout_ms = 1000\nretries = 1");
    let slow = Reply::Slow(Duration::from_secs(5), "late");
    let (tool, calls) = Probe::<Search>::new(vec![slow.clone(), slow]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();
    let result = tools.call(search("rust")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(result.error_kind(), Some(ToolErrorKind::Timeout));
    assert_eq!(result.model_text(), "Tool \"web_search\" timed out after 1 s.");
    let error = result.outcome.unwrap_err();
    assert!(error.detail.ends_with("(gave up after 2 attempts)"), "{}", error.detail);
}

#[tokio::test]
async fn denied_and_disabled_tools_are_refused_without_running() {
    let policies = policies("deny = [\"web_*\"]\n[tools.fetch]\nenable = false");
    let (search_tool, search_calls) = Probe::<Search>::new(vec![]);
    let (fetch_tool, fetch_calls) = Probe::<Fetch>::new(vec![]);
    let mut tools = ToolRegistry::new();
    tools.register_with(search_tool, policies.layers()).unwrap();
    tools.register_with(fetch_tool, policies.layers()).unwrap();
    let denied = tools.call(search("rust")).await;
    assert_eq!(denied.model_text(), "Tool \"web_search\" is not allowed here. Answer without it.");
    let disabled = tools.call(ToolCall::new("fetch", serde_json::json!({}))).await;
    assert_eq!(disabled.error_kind(), Some(ToolErrorKind::Denied));
    assert_eq!(search_calls.load(Ordering::SeqCst) + fetch_calls.load(Ordering::SeqCst), 0);
    assert!(!policies.enabled("web_search") && !policies.enabled("fetch"));
}

#[tokio::test]
async fn guards_run_before_the_approver_is_asked() {
    let (approver, mut questions) = ChannelApprover::new(4);
    let policies = policies("[tools.fetch]\napproval = true\nallow_domains = [\"example.com\"]")
        .with_approver(Arc::new(approver))
        .with_guard(
            "fetch",
            guard_fn("no query strings", |args: &serde_json::Value| {
                let url = args.get("url").and_then(serde_json::Value::as_str).unwrap_or("");
                if url.contains('?') {
                    Err("query strings are not allowed".into())
                } else {
                    Ok(())
                }
            }),
        );
    let (tool, calls) = Probe::<Fetch>::new(vec![]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();

    let fetch = |url: &str| ToolCall::new("fetch", serde_json::json!({ "url": url }));
    let evil = tools.call(fetch("https://evil.com/")).await;
    assert_eq!(
        evil.model_text(),
        "Call to tool \"fetch\" refused: the domain \"evil.com\" is not allowed."
    );
    let query = tools.call(fetch("https://example.com/?q=1")).await;
    assert_eq!(
        query.model_text(),
        "Call to tool \"fetch\" refused: query strings are not allowed."
    );
    assert!(questions.try_recv().is_err(), "no question for calls the guards refused");

    let tools2 = tools.clone();
    let approved = tokio::spawn(async move { tools2.call(fetch("https://example.com/a")).await });
    questions.recv().await.unwrap().approve();
    assert_eq!(approved.await.unwrap().outcome, Ok("https://example.com/a".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_waiting_for_approval_holds_no_concurrency_slot() {
    let (approver, mut questions) = ChannelApprover::new(4);
    let policies = policies("[tools.send_message]\napproval = true\nconcurrency = 1")
        .with_approver(Arc::new(approver));
    let (tool, calls) = Probe::<SendMessage>::new(vec![]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();
    let send = |to: &str| ToolCall::new("send_message", serde_json::json!({ "query": to }));

    let (t1, t2) = (tools.clone(), tools.clone());
    let first = tokio::spawn(async move { t1.call(send("ann")).await });
    let first_question = questions.recv().await.unwrap();
    let second = tokio::spawn(async move { t2.call(send("bob")).await });
    questions.recv().await.unwrap().approve();
    assert_eq!(second.await.unwrap().outcome, Ok("bob".to_owned()), "not shed");
    first_question.approve();
    assert_eq!(first.await.unwrap().outcome, Ok("ann".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_sheds_and_limits_are_shared_by_name() {
    let policies = policies("[tools.web_search]\nconcurrency = 1\ntimeout_ms = 0");
    let slow = Reply::Slow(Duration::from_secs(1), "done");
    let (first_tool, _) = Probe::<Search>::new(vec![slow]);
    let (second_tool, second_calls) = Probe::<Search>::new(vec![]);
    // Two registries (two sessions), one limit.
    let mut a = ToolRegistry::new();
    a.register_with(first_tool, policies.layers()).unwrap();
    let mut b = ToolRegistry::new();
    b.register_with(second_tool, policies.layers()).unwrap();

    let running = tokio::spawn(async move { a.call(search("one")).await });
    settle().await;
    let shed = b.call(search("two")).await;
    assert_eq!(shed.error_kind(), Some(ToolErrorKind::Overloaded));
    assert_eq!(second_calls.load(Ordering::SeqCst), 0);
    assert_eq!(running.await.unwrap().outcome, Ok("done".to_owned()));
    assert!(b.call(search("three")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_calls_of_a_tool() {
    let policies = policies("[tools.web_search]\nrate = { per_second = 1.0 }");
    let (tool, calls) = Probe::<Search>::new(vec![]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            let tools = tools.clone();
            tokio::spawn(async move { tools.call(search(&i.to_string())).await })
        })
        .collect();
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    advance_ms(1000).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn output_is_capped_on_the_way_out() {
    let policies = policies("[tools.web_search]\nmax_output_bytes = 100");
    let long = "北京今天晴，最高气温二十五度。".repeat(50);
    let (tool, _) = Probe::<Search>::new(vec![Reply::Text(long.clone())]);
    let mut tools = ToolRegistry::new();
    tools.register_with(tool, policies.layers()).unwrap();
    let result = tools.call(search("weather")).await;
    let text = result.outcome.unwrap();
    assert!(text.len() <= 100, "{}", text.len());
    let marker = format!("\n[… output truncated: {} bytes in all]", long.len());
    assert!(long.starts_with(text.strip_suffix(&marker).unwrap()));
}

#[test]
fn invalid_configs_are_refused_at_construction() {
    let config: PolicyConfig = toml::from_str("[tools.x]\nconcurrency = 0").unwrap();
    let error = Policies::new(config).unwrap_err();
    assert!(error.to_string().contains("[tools.x] concurrency"), "{error}");
}
