//! Retries of transient failures: exponential backoff with full jitter, `Retry-After`
//! honoured, bounded by a number of attempts and optionally by a [`TpsBudget`].
//!
//! A failure is retried only when all of these hold:
//!
//! - the tool is idempotent ([`Tool::idempotent`](voxloop_core::tool::Tool::idempotent));
//!   a tool with side effects is called at most once, whatever happens;
//! - the failure is transient ([`is_transient`](crate::is_transient)): a timeout, an
//!   overloaded tool, or an error the tool marked transient (HTTP 429 or 5xx);
//! - fewer than `max_attempts` attempts were made;
//! - the far side's `Retry-After`, if any, is at most `max_retry_after` (a longer wait is not
//!   worth holding the turn for);
//! - the budget, if any, has room for one more retry.
//!
//! The wait before retry *n* is a random time below `min(max, base · 2ⁿ⁻¹)` (see
//! [`Backoff`]), or the `Retry-After` if that is longer. When retrying stops, the last failure
//! is returned with the reason appended to its operator detail; its model message is left as
//! it was.

mod backoff;
mod policy;

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower::Layer;

pub use backoff::{Backoff, Jitter};
pub use policy::RetryPolicy;

/// A service that retries per [`RetryPolicy`].
pub type Retry<S> = tower::retry::Retry<RetryPolicy, S>;

/// Applies [`Retry`] to a service whose error is `ToolError` (and which is `Clone`, as
/// tower's retry requires).
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// At most `max_attempts` attempts (the first call included) of an idempotent tool,
    /// waiting per `backoff` between them; `Retry-After` waits up to 30 s are honoured.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Self {
        Self {
            policy: RetryPolicy::new(policy::Settings {
                max_attempts: max_attempts.max(1),
                backoff,
                max_retry_after: Duration::from_secs(30),
                idempotent: true,
                budget: None,
            }),
        }
    }

    /// Whether the wrapped tool may be called twice; `false` turns retries off.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.policy.settings_mut().idempotent = idempotent;
        self
    }

    /// The longest `Retry-After` honoured; a failure asking for a longer wait is returned.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.policy.settings_mut().max_retry_after = max;
        self
    }

    /// Bounds retries across calls: every call deposits, every retry withdraws.
    #[must_use]
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.policy.settings_mut().budget = Some(budget);
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        tower::retry::Retry::new(self.policy.clone(), inner)
    }
}

#[cfg(test)]
mod tests {
    use voxloop_core::tool::{ToolError, ToolErrorKind, Transient};

    use super::*;
    use crate::testing::{advance_ms, call, settle, spawn_call, Scripted, Step};
    use crate::TimeoutLayer;

    fn transient(retry_after: Option<Duration>) -> Step {
        let error = ToolError::new(ToolErrorKind::Execution, "Tool \"search\" failed: HTTP 503.")
            .with_transient(Some(Transient { retry_after }));
        Step::fail(error)
    }

    /// 100 ms doubling to 1 s, no jitter: retries come exactly at the ceilings.
    fn layer(max_attempts: u32) -> RetryLayer {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .with_jitter(Jitter::none());
        RetryLayer::new(max_attempts, backoff)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_with_exponential_backoff() {
        let tool = Scripted::new(vec![transient(None), transient(None), Step::ok("found")]);
        let task = spawn_call(layer(5).layer(tool.clone()), call("search", serde_json::json!({})));
        settle().await;
        assert_eq!(tool.calls(), 1);
        advance_ms(99).await;
        assert_eq!(tool.calls(), 1, "the first wait is 100 ms");
        advance_ms(1).await;
        assert_eq!(tool.calls(), 2);
        advance_ms(199).await;
        assert_eq!(tool.calls(), 2, "the second wait is 200 ms");
        advance_ms(1).await;
        assert_eq!(tool.calls(), 3);
        let result = task.await.unwrap().unwrap();
        assert_eq!(result.outcome, Ok("found".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn full_jitter_retries_within_the_ceiling() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let service = RetryLayer::new(3, backoff)
            .layer(Scripted::new(vec![transient(None), Step::ok("found")]));
        let task = spawn_call(service, call("search", serde_json::json!({})));
        settle().await;
        advance_ms(100).await;
        assert!(task.is_finished(), "a jittered first wait is below 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_permanent_failures() {
        for error in [
            ToolError::new(ToolErrorKind::Execution, "HTTP 401"),
            ToolError::new(ToolErrorKind::InvalidArguments, "missing query"),
            ToolError::new(ToolErrorKind::Denied, "no"),
        ] {
            let tool = Scripted::always(Step::fail(error.clone()));
            let result = tower::ServiceExt::oneshot(
                layer(5).layer(tool.clone()),
                call("search", serde_json::json!({})),
            )
            .await
            .unwrap();
            assert_eq!(tool.calls(), 1, "{error}");
            assert_eq!(result.outcome, Err(error));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_non_idempotent_tools() {
        let tool = Scripted::new(vec![transient(None), Step::ok("sent")]);
        let service = layer(5).idempotent(false).layer(tool.clone());
        let task = spawn_call(service, call("send_message", serde_json::json!({})));
        advance_ms(10_000).await;
        let result = task.await.unwrap().unwrap();
        assert_eq!(tool.calls(), 1);
        assert!(result.outcome.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_timeouts() {
        let tool = Scripted::new(vec![
            Step::ok("late").after(Duration::from_secs(60)),
            Step::ok("on time"),
        ]);
        let service = layer(3).layer(TimeoutLayer::new(Duration::from_secs(1)).layer(tool.clone()));
        let task = spawn_call(service, call("search", serde_json::json!({})));
        settle().await;
        advance_ms(1000).await;
        assert_eq!(tool.calls(), 1);
        advance_ms(100).await;
        assert_eq!(tool.calls(), 2, "retried 100 ms after the timeout");
        assert_eq!(task.await.unwrap().unwrap().outcome, Ok("on time".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let tool = Scripted::new(vec![transient(Some(Duration::from_secs(5))), Step::ok("found")]);
        let task = spawn_call(layer(3).layer(tool.clone()), call("search", serde_json::json!({})));
        settle().await;
        assert_eq!(tool.calls(), 1);
        advance_ms(4999).await;
        assert_eq!(tool.calls(), 1, "Retry-After: 5 s, longer than the 100 ms backoff");
        advance_ms(1).await;
        assert_eq!(tool.calls(), 2);
        assert_eq!(task.await.unwrap().unwrap().outcome, Ok("found".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_retry_after_is_too_long() {
        let tool =
            Scripted::new(vec![transient(Some(Duration::from_secs(120))), Step::ok("found")]);
        let service = layer(3).max_retry_after(Duration::from_secs(30)).layer(tool.clone());
        let result = tower::ServiceExt::oneshot(service, call("search", serde_json::json!({})))
            .await
            .unwrap();
        assert_eq!(tool.calls(), 1);
        let error = result.outcome.unwrap_err();
        assert!(error.detail.contains("Retry-After"), "{}", error.detail);
        assert_eq!(error.model_message, "Tool \"search\" failed: HTTP 503.");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts() {
        let tool = Scripted::always(transient(None));
        let result = tower::ServiceExt::oneshot(
            layer(3).layer(tool.clone()),
            call("search", serde_json::json!({})),
        )
        .await
        .unwrap();
        assert_eq!(tool.calls(), 3);
        let error = result.outcome.unwrap_err();
        assert!(error.detail.ends_with("(gave up after 3 attempts)"), "{}", error.detail);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_budget_is_spent() {
        // No deposits count (0 %) and a reserve of one retry per second over a 1 s window:
        // exactly one retry, shared by every call.
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 1, 0.0));
        let tool = Scripted::always(transient(None));
        let service = layer(10).budget(budget).layer(tool.clone());
        let first =
            tower::ServiceExt::oneshot(service.clone(), call("search", serde_json::json!({})));
        let first = first.await.unwrap();
        assert_eq!(tool.calls(), 2, "one retry from the reserve");
        let error = first.outcome.unwrap_err();
        assert!(error.detail.contains("retry budget spent"), "{}", error.detail);
        let second = tower::ServiceExt::oneshot(service, call("search", serde_json::json!({})));
        second.await.unwrap();
        assert_eq!(tool.calls(), 3, "no retry left for the second call");
    }

    #[tokio::test(start_paused = true)]
    async fn service_errors_are_not_retried_unless_transient() {
        let (mock, mut handle) =
            tower_test::mock::pair::<voxloop_core::tool::ToolCall, voxloop_core::tool::ToolResult>(
            );
        let mock =
            tower::ServiceExt::map_err(mock, |e| crate::classify::into_tool_error("search", e));
        let task = spawn_call(layer(3).layer(mock), call("search", serde_json::json!({})));
        let (_request, reply) = handle.next_request().await.unwrap();
        reply.send_error(std::io::Error::other("connection reset"));
        assert!(task.await.unwrap().is_err());
        assert!(handle.next_request().await.is_none(), "called once: no retry");
    }
}
