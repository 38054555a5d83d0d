//! A deadline per call: tower's `Timeout`, with its `Elapsed` error turned into a
//! [`Timeout`](ToolErrorKind::Timeout) result for the model.
//!
//! The deadline covers waiting for the inner service to become ready and the call itself.
//! When it passes, the inner future is dropped. A tool that runs blocking work elsewhere (a
//! `spawn_blocking` decode) keeps running there: such tools check a cancellation flag.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::timeout::error::Elapsed;
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

use crate::classify::{human, into_tool_error};

/// Applies [`Timeout`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Calls that take longer than `timeout` end with a `Timeout` result.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.timeout)
    }
}

/// A tool service with a deadline per call.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: tower::timeout::Timeout<S>,
    timeout: Duration,
}

// ===== impl Timeout =====

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner: tower::timeout::Timeout::new(inner, timeout), timeout }
    }

    /// The deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S> Service<ToolCall> for Timeout<S>
where
    S: Service<ToolCall, Response = ToolResult>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        self.inner.poll_ready(cx).map_err(|e| into_tool_error("(timeout layer)", e))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let timeout = self.timeout;
        let ToolCall { id, name, .. } = &call;
        let (id, name) = (id.clone(), name.clone());
        let future = self.inner.call(call);
        Box::pin(async move {
            match future.await {
                Ok(result) => Ok(result),
                Err(error) if error.is::<Elapsed>() => Ok(ToolResult {
                    call_id: id,
                    outcome: Err(elapsed(&name, timeout)),
                    name,
                    duration: timeout,
                }),
                Err(error) => Err(into_tool_error(&name, error)),
            }
        })
    }
}

/// The error for a call to `tool` that took longer than `timeout`.
fn elapsed(tool: &str, timeout: Duration) -> ToolError {
    ToolError::new(
        ToolErrorKind::Timeout,
        format!("Tool \"{tool}\" timed out after {}.", human(timeout)),
    )
    .with_detail(format!("tool \"{tool}\": no answer within the {timeout:?} deadline"))
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;
    use voxloop_core::tool::ToolErrorKind;

    use super::*;
    use crate::testing::{advance_ms, call, settle, spawn_call, Scripted, Step};

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_configured_duration() {
        let tool = Scripted::always(Step::ok("late").after(Duration::from_secs(10)));
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(tool.clone());
        let task = spawn_call(service, call("slow", serde_json::json!({})));
        settle().await;
        assert_eq!(tool.calls(), 1);

        advance_ms(1999).await;
        assert!(!task.is_finished(), "the deadline has not passed yet");
        advance_ms(1).await;
        assert!(task.is_finished(), "the deadline has passed");

        let result = task.await.unwrap().unwrap();
        assert_eq!(result.error_kind(), Some(ToolErrorKind::Timeout));
        assert_eq!(result.model_text(), "Tool \"slow\" timed out after 2 s.");
        assert_eq!(result.name, "slow");
        assert_eq!(result.duration, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_in_time_pass_through() {
        let tool = Scripted::always(Step::ok("quick").after(Duration::from_millis(500)));
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(tool);
        let result = service.oneshot(call("fast", serde_json::json!({}))).await.unwrap();
        assert_eq!(result.outcome, Ok("quick".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn inner_service_errors_stay_errors() {
        let (mock, mut handle) = tower_test::mock::pair::<ToolCall, ToolResult>();
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(mock);
        let task = spawn_call(service, call("flaky", serde_json::json!({})));
        let (_request, reply) = handle.next_request().await.unwrap();
        reply.send_error(std::io::Error::other("connection reset"));
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error.kind, ToolErrorKind::Execution);
        assert!(error.detail.contains("connection reset"), "{}", error.detail);
    }
}
