//! At most *n* calls of a tool in flight. A call beyond that is either shed at once with an
//! [`Overloaded`](ToolErrorKind::Overloaded) result (the default: the model can say so or
//! try something else) or queued until a slot frees.
//!
//! Built on tower's `ConcurrencyLimit` over a shared semaphore (so that every clone of the
//! service, and several tools if wanted, count against one limit) and tower's `LoadShed`,
//! whose `Overloaded` error becomes the result.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::error::Overloaded;
use tower::load_shed::LoadShed;
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

use crate::classify::{into_tool_error, refuse};

/// Applies [`Concurrency`] to a service.
#[derive(Debug, Clone)]
pub struct ConcurrencyLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
    shed: bool,
}

impl ConcurrencyLayer {
    /// At most `max` calls (at least 1) in flight; with `shed`, calls beyond that are
    /// refused at once, otherwise they wait for a slot.
    pub fn new(max: usize, shed: bool) -> Self {
        let max = max.max(1);
        Self::shared(Arc::new(Semaphore::new(max)), max, shed)
    }

    /// Counts against an existing semaphore of `max` permits (to share a limit between
    /// tools, say all GPU-bound ones).
    pub fn shared(semaphore: Arc<Semaphore>, max: usize, shed: bool) -> Self {
        Self { semaphore, max, shed }
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = Concurrency<S>;

    fn layer(&self, inner: S) -> Concurrency<S> {
        let limited = ConcurrencyLimit::with_semaphore(inner, Arc::clone(&self.semaphore));
        let inner =
            if self.shed { Limited::Shed(LoadShed::new(limited)) } else { Limited::Queue(limited) };
        Concurrency { inner, max: self.max }
    }
}

/// A tool service with a limit on calls in flight.
#[derive(Debug, Clone)]
pub struct Concurrency<S> {
    inner: Limited<S>,
    max: usize,
}

#[derive(Debug, Clone)]
enum Limited<S> {
    Shed(LoadShed<ConcurrencyLimit<S>>),
    Queue(ConcurrencyLimit<S>),
}

impl<S> Service<ToolCall> for Concurrency<S>
where
    S: Service<ToolCall, Response = ToolResult>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    /// Shedding: always ready. Queueing: ready once a slot is free.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        let ready = match &mut self.inner {
            Limited::Shed(shed) => shed.poll_ready(cx),
            Limited::Queue(queue) => queue.poll_ready(cx).map_err(Into::into),
        };
        ready.map_err(|e| into_tool_error("(concurrency layer)", e))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let name = call.name.clone();
        let id = call.id.clone();
        let max = self.max;
        let future: BoxFuture<'static, Result<ToolResult, BoxError>> = match &mut self.inner {
            Limited::Shed(shed) => Box::pin(shed.call(call)),
            Limited::Queue(queue) => {
                let future = queue.call(call);
                Box::pin(async move { future.await.map_err(Into::into) })
            }
        };
        Box::pin(async move {
            match future.await {
                Ok(result) => Ok(result),
                Err(error) if error.is::<Overloaded>() => {
                    let call = ToolCall::with_id(id, name, serde_json::Value::Null);
                    refuse(&call, busy(&call.name, max))
                }
                Err(error) => Err(into_tool_error(&name, error)),
            }
        })
    }
}

/// The error for a call to `tool` shed because `max` calls are in flight.
fn busy(tool: &str, max: usize) -> ToolError {
    let calls = if max == 1 { "call" } else { "calls" };
    ToolError::new(
        ToolErrorKind::Overloaded,
        format!("Tool \"{tool}\" is busy ({max} {calls} running): try again shortly."),
    )
    .with_detail(format!("tool \"{tool}\": load shed, all {max} concurrency slots in use"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;
    use crate::testing::{advance_ms, call, settle, spawn_call, Scripted, Step};

    #[tokio::test]
    async fn sheds_calls_beyond_the_limit() {
        let (mock, mut handle) = tower_test::mock::pair::<ToolCall, ToolResult>();
        let service = ConcurrencyLayer::new(1, true).layer(mock);

        let first = spawn_call(service.clone(), call("tts", serde_json::json!({"n": 1})));
        let (request, reply) = handle.next_request().await.unwrap();
        assert_eq!(request.arguments, serde_json::json!({"n": 1}));

        let shed = service.clone().oneshot(call("tts", serde_json::json!({"n": 2}))).await;
        let shed = shed.unwrap();
        assert_eq!(shed.error_kind(), Some(ToolErrorKind::Overloaded));
        assert_eq!(shed.model_text(), "Tool \"tts\" is busy (1 call running): try again shortly.");
        tokio_test::assert_pending!(handle.poll_request(), "the shed call never reached the tool");

        reply.send_response(ToolResult {
            call_id: request.id,
            name: request.name,
            outcome: Ok("done".into()),
            duration: Duration::ZERO,
        });
        assert_eq!(first.await.unwrap().unwrap().outcome, Ok("done".into()));

        let third = spawn_call(service, call("tts", serde_json::json!({"n": 3})));
        let (request, _reply) = handle.next_request().await.unwrap();
        assert_eq!(request.arguments, serde_json::json!({"n": 3}), "the slot is free again");
        drop(third);
    }

    #[tokio::test(start_paused = true)]
    async fn queues_calls_when_not_shedding() {
        let tool = Scripted::always(Step::ok("ok").after(Duration::from_secs(1)));
        let service = ConcurrencyLayer::new(2, false).layer(tool.clone());
        let tasks: Vec<_> = (0..3)
            .map(|_| spawn_call(service.clone(), call("tts", serde_json::json!({}))))
            .collect();
        settle().await;
        assert_eq!(tool.calls(), 2, "two slots");
        advance_ms(1000).await;
        assert_eq!(tool.calls(), 3, "the third ran when a slot freed");
        advance_ms(1000).await;
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_semaphore_limits_several_tools_together() {
        let semaphore = Arc::new(Semaphore::new(1));
        let slow = Scripted::always(Step::ok("ok").after(Duration::from_secs(1)));
        let a = ConcurrencyLayer::shared(Arc::clone(&semaphore), 1, true).layer(slow.clone());
        let b = ConcurrencyLayer::shared(semaphore, 1, true).layer(slow.clone());
        let running = spawn_call(a, call("a", serde_json::json!({})));
        settle().await;
        let shed = b.oneshot(call("b", serde_json::json!({}))).await.unwrap();
        assert_eq!(shed.error_kind(), Some(ToolErrorKind::Overloaded));
        advance_ms(1000).await;
        assert!(running.await.unwrap().unwrap().is_ok());
        assert_eq!(slow.calls(), 1);
    }
}
