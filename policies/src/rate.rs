//! A token bucket per tool: calls are spaced to a steady rate with room for bursts, and a
//! call that would have to wait longer than `max_wait` is shed with an
//! [`Overloaded`](ToolErrorKind::Overloaded) result instead.
//!
//! The bucket holds up to `burst` tokens and gains `per_second` tokens a second. A call takes
//! one token; when none is left it reserves the next one and waits for it, so that callers
//! arriving together leave one after another, `1 / per_second` apart. Clones of the service
//! share the bucket. A reserved token is spent even if the call is then cancelled.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

use crate::classify::{call_ready, human, refuse};

/// A token bucket, shared by every clone of a [`RateLimit`] service.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    max_wait: Duration,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Tokens in the bucket; negative when calls have reserved tokens not yet earned.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens (at least 1) refilled at `per_second` (> 0) tokens a
    /// second; calls that would wait longer than `max_wait` are refused.
    pub fn new(per_second: f64, burst: u32, max_wait: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            max_wait,
            state: Mutex::new(BucketState { tokens: burst, updated: Instant::now() }),
        }
    }

    /// Takes a token: `Ok(wait)` with how long the caller must wait for it, or `Err(wait)` if
    /// that is longer than `max_wait` (no token is taken then).
    pub fn reserve(&self) -> Result<Duration, Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let earned = now.saturating_duration_since(state.updated).as_secs_f64() * self.per_second;
        state.tokens = (state.tokens + earned).min(self.burst);
        state.updated = now;
        let after = state.tokens - 1.0;
        if after >= 0.0 {
            state.tokens = after;
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_secs_f64(-after / self.per_second);
        if wait > self.max_wait {
            return Err(wait);
        }
        state.tokens = after;
        Ok(wait)
    }
}

/// Applies [`RateLimit`] to a service.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
}

impl RateLimitLayer {
    /// `per_second` calls a second on average, bursts of up to `burst`, shedding calls that
    /// would wait more than `max_wait`.
    pub fn new(per_second: f64, burst: u32, max_wait: Duration) -> Self {
        Self::shared(Arc::new(TokenBucket::new(per_second, burst, max_wait)))
    }

    /// Uses an existing bucket (to share one limit between stacks).
    pub fn shared(bucket: Arc<TokenBucket>) -> Self {
        Self { bucket }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner, bucket: Arc::clone(&self.bucket) }
    }
}

/// A tool service behind a token bucket.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
}

// ===== impl RateLimit =====

impl<S> RateLimit<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<ToolCall> for RateLimit<S>
where
    S: Service<ToolCall, Response = ToolResult> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    /// Always ready: the wait for a token happens in the response future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        match self.bucket.reserve() {
            Err(wait) => {
                let error = rate_limited(&call.name, &self.bucket, wait);
                Box::pin(std::future::ready(refuse(&call, error)))
            }
            Ok(wait) => {
                let inner = self.inner.clone();
                Box::pin(async move {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    call_ready(inner, call).await
                })
            }
        }
    }
}

/// The error for a call to `tool` that would have waited `wait` for a token.
fn rate_limited(tool: &str, bucket: &TokenBucket, wait: Duration) -> ToolError {
    ToolError::new(
        ToolErrorKind::Overloaded,
        format!("Tool \"{tool}\" is rate-limited: try again in {}.", human(wait)),
    )
    .with_detail(format!(
        "tool \"{tool}\": rate limit {}/s (burst {}) would delay the call {wait:?}, more than \
         the {:?} allowed",
        bucket.per_second, bucket.burst, bucket.max_wait
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{advance_ms, call, settle, spawn_call, Scripted, Step};

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_to_the_rate() {
        let tool = Scripted::always(Step::ok("ok"));
        let service = RateLimitLayer::new(2.0, 1, Duration::from_secs(10)).layer(tool.clone());
        let tasks: Vec<_> = (0..3)
            .map(|_| spawn_call(service.clone(), call("search", serde_json::json!({}))))
            .collect();
        settle().await;
        assert_eq!(tool.calls(), 1, "one token in the bucket");
        advance_ms(499).await;
        assert_eq!(tool.calls(), 1);
        advance_ms(1).await;
        assert_eq!(tool.calls(), 2, "the next token comes 500 ms later");
        advance_ms(499).await;
        assert_eq!(tool.calls(), 2);
        advance_ms(1).await;
        assert_eq!(tool.calls(), 3);
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_pass_at_once_and_the_bucket_refills() {
        let tool = Scripted::always(Step::ok("ok"));
        let service = RateLimitLayer::new(1.0, 3, Duration::from_secs(10)).layer(tool.clone());
        for _ in 0..3 {
            spawn_call(service.clone(), call("search", serde_json::json!({})));
        }
        settle().await;
        assert_eq!(tool.calls(), 3, "a burst of three");
        advance_ms(3000).await;
        for _ in 0..3 {
            spawn_call(service.clone(), call("search", serde_json::json!({})));
        }
        settle().await;
        assert_eq!(tool.calls(), 6, "refilled after three seconds");
    }

    #[tokio::test(start_paused = true)]
    async fn sheds_calls_that_would_wait_too_long() {
        let tool = Scripted::always(Step::ok("ok"));
        let service = RateLimitLayer::new(1.0, 1, Duration::from_secs(1)).layer(tool.clone());
        let first = spawn_call(service.clone(), call("search", serde_json::json!({})));
        let second = spawn_call(service.clone(), call("search", serde_json::json!({})));
        let third = spawn_call(service.clone(), call("search", serde_json::json!({})));
        settle().await;
        let refused = third.await.unwrap().unwrap();
        assert_eq!(refused.error_kind(), Some(ToolErrorKind::Overloaded));
        assert_eq!(refused.model_text(), "Tool \"search\" is rate-limited: try again in 2 s.");
        assert_eq!(tool.calls(), 1);
        advance_ms(1000).await;
        assert_eq!(tool.calls(), 2, "the second call waited its 1 s");
        assert!(first.await.unwrap().unwrap().is_ok());
        assert!(second.await.unwrap().unwrap().is_ok());
    }
}
