//! Which failures are transient, and the small helpers every layer shares.

use std::time::Duration;

use tower::{Service, ServiceExt};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

/// The failure in a service's answer, whichever way it came: a service error (`Err`) or a
/// failed [`ToolResult`] (`Ok` with an `Err` outcome). `None` when the call produced output.
pub fn failure(result: &Result<ToolResult, ToolError>) -> Option<&ToolError> {
    match result {
        Ok(result) => result.outcome.as_ref().err(),
        Err(error) => Some(error),
    }
}

/// Whether trying the same call again later may succeed: a [`Timeout`](ToolErrorKind::Timeout),
/// an [`Overloaded`](ToolErrorKind::Overloaded) tool, or any error the tool marked
/// [`transient`](voxloop_core::tool::Tool::transient) (an HTTP 429 or 5xx from a provider).
/// Invalid arguments, refusals, panics, unknown tools and unmarked execution errors are not.
pub fn is_transient(error: &ToolError) -> bool {
    matches!(error.kind, ToolErrorKind::Timeout | ToolErrorKind::Overloaded)
        || error.transient.is_some()
}

/// A failed result for `call`, as a layer returns it. Its duration is zero: the registry
/// measures the whole stack.
pub(crate) fn refuse(call: &ToolCall, error: ToolError) -> Result<ToolResult, ToolError> {
    Ok(ToolResult::failed(call, error, Duration::ZERO))
}

/// Turns an error of a wrapped service into a [`ToolError`] (a boxed `ToolError` is kept).
pub(crate) fn into_tool_error(tool: &str, error: impl Into<BoxError>) -> ToolError {
    ToolError::from_box_error(tool, error.into())
}

/// Waits until `inner` is ready, then calls it.
///
/// Layers that decide something before the call (a guard, an approval, a rate wait) report
/// ready at once and drive a clone of the inner stack from their response future instead:
/// readiness further in (a concurrency permit) is then only claimed by calls that go ahead,
/// and only once they do.
pub(crate) async fn call_ready<S>(mut inner: S, call: ToolCall) -> Result<ToolResult, ToolError>
where
    S: Service<ToolCall, Response = ToolResult>,
    S::Error: Into<BoxError>,
{
    let name = call.name.clone();
    // No `S::Error` (maybe not `Send`) may live across an await.
    inner.ready().await.map(drop).map_err(|e| into_tool_error(&name, e))?;
    inner.call(call).await.map_err(|e| into_tool_error(&name, e))
}

/// A duration as the model reads it: `750 ms`, `2 s`, `1.5 s`.
pub(crate) fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use voxloop_core::tool::Transient;

    use super::*;

    #[test]
    fn timeouts_overloads_and_marked_errors_are_transient() {
        let transient = |kind| is_transient(&ToolError::new(kind, "x"));
        assert!(transient(ToolErrorKind::Timeout));
        assert!(transient(ToolErrorKind::Overloaded));
        assert!(!transient(ToolErrorKind::Execution));
        assert!(!transient(ToolErrorKind::InvalidArguments));
        assert!(!transient(ToolErrorKind::Denied));
        assert!(!transient(ToolErrorKind::Panicked));
        let marked = ToolError::new(ToolErrorKind::Execution, "HTTP 503")
            .with_transient(Some(Transient::new()));
        assert!(is_transient(&marked));
    }

    #[test]
    fn failure_looks_at_both_service_errors_and_failed_results() {
        let call = ToolCall::new("t", serde_json::Value::Null);
        let error = ToolError::new(ToolErrorKind::Denied, "no");
        let failed = refuse(&call, error.clone());
        assert_eq!(failure(&failed), Some(&error));
        assert_eq!(failure(&Err(error.clone())), Some(&error));
        let ok = ToolResult {
            call_id: call.id.clone(),
            name: "t".into(),
            outcome: Ok("fine".into()),
            duration: Duration::ZERO,
        };
        assert_eq!(failure(&Ok(ok)), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(750)), "750 ms");
        assert_eq!(human(Duration::from_secs(2)), "2 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
    }
}
