//! Test helpers: a scripted tool service that counts its calls, and paused-clock helpers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};
use voxloop_core::tool::{ToolCall, ToolError, ToolResult};

/// A call to `name` with `arguments`.
pub(crate) fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall::new(name, arguments)
}

/// One answer of a [`Scripted`] service: after `delay` (paused clock), `outcome`.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) delay: Duration,
    pub(crate) outcome: Result<String, ToolError>,
}

impl Step {
    pub(crate) fn ok(text: &str) -> Self {
        Self { delay: Duration::ZERO, outcome: Ok(text.to_owned()) }
    }

    pub(crate) fn fail(error: ToolError) -> Self {
        Self { delay: Duration::ZERO, outcome: Err(error) }
    }

    pub(crate) fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A tool service that answers from a script (the last step repeats forever) and counts
/// the calls that reached it.
#[derive(Clone)]
pub(crate) struct Scripted {
    calls: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Step>>>,
}

impl Scripted {
    pub(crate) fn new(steps: Vec<Step>) -> Self {
        Self { calls: Arc::default(), script: Arc::new(Mutex::new(steps.into())) }
    }

    pub(crate) fn always(step: Step) -> Self {
        Self::new(vec![step])
    }

    /// How many calls reached the tool.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn next_step(&self) -> Step {
        let mut script = self.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script.front().cloned().unwrap()
        }
    }
}

impl Service<ToolCall> for Scripted {
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self.next_step();
        Box::pin(async move {
            if !step.delay.is_zero() {
                tokio::time::sleep(step.delay).await;
            }
            Ok(ToolResult {
                call_id: call.id,
                name: call.name,
                outcome: step.outcome,
                duration: step.delay,
            })
        })
    }
}

/// Lets every ready task run until it waits on something (the clock is paused, so nothing
/// time-based happens in between).
pub(crate) async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Moves the paused clock forward by `ms` milliseconds and lets the woken tasks run.
pub(crate) async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
    settle().await;
}

/// Runs `call` through `service` on a task of its own.
pub(crate) fn spawn_call<S>(service: S, call: ToolCall) -> JoinHandle<Result<ToolResult, ToolError>>
where
    S: Service<ToolCall, Response = ToolResult, Error = ToolError> + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(service.oneshot(call))
}
