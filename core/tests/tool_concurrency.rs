//! `ToolRegistry::call_all`: bounded concurrency, results in call order. Tools wait on
//! notifications the test sends: no sleeps, and no assertion on durations (the timeouts only
//! turn a hang into a failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, Barrier, Notify};
use voxloop_core::tool::{NoArgs, Tool, ToolCall, ToolErrorKind, ToolRegistry};

/// A guard against hangs: generous, and never reached when the code is right.
const HANG: Duration = Duration::from_secs(20);

/// Calls that report when they start and then wait until the test releases them.
struct Held {
    started: mpsc::UnboundedSender<usize>,
    release: Vec<Notify>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    finished: Mutex<Vec<usize>>,
}

struct HeldTool(Arc<Held>);

#[derive(Deserialize, JsonSchema)]
struct HeldArgs {
    /// Which call this is.
    id: usize,
}

#[async_trait::async_trait]
impl Tool for HeldTool {
    const NAME: &'static str = "held";
    type Args = HeldArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Waits until released.".to_owned()
    }

    async fn call(&self, args: HeldArgs) -> Result<String, Self::Error> {
        let state = &self.0;
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        state.started.send(args.id).unwrap();
        state.release[args.id].notified().await;
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        state.finished.lock().unwrap().push(args.id);
        Ok(format!("done {}", args.id))
    }
}

/// Lets the registry run until it is stuck waiting on held calls.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Runs `n` held calls under `limit`, always releasing the newest running call, and checks
/// that exactly `limit` run at any time and that results come back in call order.
async fn run_held(n: usize, limit: usize) {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let held = Arc::new(Held {
        started: started_tx,
        release: (0..n).map(|_| Notify::new()).collect(),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        finished: Mutex::new(Vec::new()),
    });
    let mut tools = ToolRegistry::new();
    tools.register(HeldTool(held.clone())).unwrap();
    let calls: Vec<ToolCall> = (0..n).map(|id| ToolCall::new("held", json!({"id": id}))).collect();
    let call_ids: Vec<String> = calls.iter().map(|call| call.id.clone()).collect();
    let width = limit.max(1);

    let driver = async {
        let mut running = Vec::new();
        for _ in 0..width.min(n) {
            running.push(started.recv().await.unwrap());
        }
        running.sort_unstable();
        assert_eq!(running, (0..width.min(n)).collect::<Vec<_>>(), "the first calls start first");
        let mut next = width.min(n);
        while let Some(newest) = running.pop() {
            settle().await;
            assert!(started.try_recv().is_err(), "a call started beyond the limit of {width}");
            assert_eq!(held.in_flight.load(Ordering::SeqCst), running.len() + 1);
            held.release[newest].notify_one();
            if next < n {
                running.push(started.recv().await.unwrap());
                next += 1;
            }
        }
        assert_eq!(next, n);
    };
    let (results, ()) =
        tokio::time::timeout(HANG, async { tokio::join!(tools.call_all(calls, limit), driver) })
            .await
            .expect("call_all hung");

    let texts: Vec<String> = results.iter().map(|r| r.model_text().to_owned()).collect();
    let expected: Vec<String> = (0..n).map(|id| format!("done {id}")).collect();
    assert_eq!(texts, expected);
    let result_ids: Vec<String> = results.iter().map(|r| r.call_id.clone()).collect();
    assert_eq!(result_ids, call_ids);
    assert_eq!(held.max_in_flight.load(Ordering::SeqCst), width.min(n));
    let finished = held.finished.lock().unwrap().clone();
    if width > 1 && n > 1 {
        assert_ne!(finished, (0..n).collect::<Vec<_>>(), "calls finished out of order");
    }
}

#[tokio::test]
async fn call_all_runs_at_most_the_limit_at_once_and_keeps_call_order() {
    run_held(7, 3).await;
}

#[tokio::test]
async fn a_limit_of_one_or_zero_runs_calls_one_by_one() {
    run_held(3, 1).await;
    run_held(3, 0).await;
}

#[tokio::test]
async fn a_limit_above_the_number_of_calls_starts_them_all() {
    run_held(3, 10).await;
}

/// Waits until every party of its barrier is inside.
struct Meet(Arc<Barrier>);

#[async_trait::async_trait]
impl Tool for Meet {
    const NAME: &'static str = "meet";
    type Args = NoArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Waits for the others.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Self::Error> {
        let leader = self.0.wait().await.is_leader();
        Ok(if leader { "leader" } else { "follower" }.to_owned())
    }
}

#[tokio::test]
async fn calls_within_the_limit_really_run_together() {
    let mut tools = ToolRegistry::new();
    tools.register(Meet(Arc::new(Barrier::new(4)))).unwrap();
    let calls = (0..4).map(|_| ToolCall::new("meet", json!({}))).collect();
    let results = tokio::time::timeout(HANG, tools.call_all(calls, 4))
        .await
        .expect("four calls under a limit of four must meet at the barrier");
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(results.iter().filter(|r| r.model_text() == "leader").count(), 1);
}

#[tokio::test]
async fn failures_keep_their_place_among_the_results() {
    let mut tools = ToolRegistry::new();
    tools.register(Meet(Arc::new(Barrier::new(2)))).unwrap();
    let calls = vec![
        ToolCall::new("meet", json!({})),
        ToolCall::new("missing", json!({})),
        ToolCall::new("meet", json!({"unexpected": true})),
        ToolCall::new("meet", serde_json::Value::Null),
    ];
    let results = tokio::time::timeout(HANG, tools.call_all(calls, 2)).await.expect("hung");
    let kinds: Vec<Option<ToolErrorKind>> = results.iter().map(|r| r.error_kind()).collect();
    assert_eq!(
        kinds,
        [None, Some(ToolErrorKind::NotFound), Some(ToolErrorKind::InvalidArguments), None]
    );
    assert!(tools.call_all(Vec::new(), 2).await.is_empty());
}
