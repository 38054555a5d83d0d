//! [`RetryPolicy`]: tower's retry [`Policy`] for tool calls.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Sleep;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;
use voxloop_core::tool::{ToolCall, ToolError, ToolResult};

use super::backoff::Backoff;
use crate::classify::{failure, is_transient};

/// Retries transient failures of idempotent tools (see [`RetryLayer`](super::RetryLayer)).
///
/// tower clones the policy for every call, so `attempts` counts the attempts of one call;
/// the budget is shared through an `Arc`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    settings: Arc<Settings>,
    attempts: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) max_attempts: u32,
    pub(super) backoff: Backoff,
    pub(super) max_retry_after: Duration,
    pub(super) idempotent: bool,
    pub(super) budget: Option<Arc<TpsBudget>>,
}

impl RetryPolicy {
    pub(super) fn new(settings: Settings) -> Self {
        Self { settings: Arc::new(settings), attempts: 0 }
    }

    pub(super) fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Why the call that just failed with `error` must not be retried, or `None` to retry it.
    fn reason_to_stop(&self, error: &ToolError) -> Option<String> {
        let settings = &self.settings;
        let retry_after = error.transient.and_then(|t| t.retry_after);
        if self.attempts >= settings.max_attempts {
            return Some(format!("gave up after {} attempts", self.attempts));
        }
        if let Some(wait) = retry_after.filter(|wait| *wait > settings.max_retry_after) {
            return Some(format!(
                "not retried: Retry-After {wait:?} is longer than the {:?} allowed",
                settings.max_retry_after
            ));
        }
        if let Some(budget) = &settings.budget {
            if !budget.withdraw() {
                return Some(format!(
                    "not retried after {} attempts: retry budget spent",
                    self.attempts
                ));
            }
        }
        None
    }
}

impl Policy<ToolCall, ToolResult, ToolError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        call: &mut ToolCall,
        result: &mut Result<ToolResult, ToolError>,
    ) -> Option<Sleep> {
        self.attempts += 1;
        if self.attempts == 1 {
            if let Some(budget) = &self.settings.budget {
                budget.deposit();
            }
        }
        let error = failure(result)?;
        if !self.settings.idempotent || !is_transient(error) {
            return None;
        }
        let kind = error.kind;
        let retry_after = error.transient.and_then(|t| t.retry_after);
        if let Some(reason) = self.reason_to_stop(error) {
            annotate(result, &reason);
            return None;
        }
        let backoff = self.settings.backoff.delay(self.attempts);
        let delay = retry_after.map_or(backoff, |wait| wait.max(backoff));
        tracing::info!(
            tool = %call.name,
            attempt = self.attempts,
            delay_ms = delay.as_millis() as u64,
            error.type = kind.as_str(),
            "retrying a transient tool failure"
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, call: &ToolCall) -> Option<ToolCall> {
        // Cloned for the last attempt too, so that `retry` sees its failure and can say why
        // it stopped.
        (self.settings.idempotent && self.settings.max_attempts > 1).then(|| call.clone())
    }
}

/// Adds why retrying stopped to the failure's operator detail.
fn annotate(result: &mut Result<ToolResult, ToolError>, reason: &str) {
    let error = match result {
        Ok(result) => match &mut result.outcome {
            Err(error) => error,
            Ok(_) => return,
        },
        Err(error) => error,
    };
    error.detail.push_str(" (");
    error.detail.push_str(reason);
    error.detail.push(')');
}

#[cfg(test)]
fn _policy_is_object_safe(_: Box<dyn Policy<ToolCall, ToolResult, ToolError, Future = Sleep>>) {}
