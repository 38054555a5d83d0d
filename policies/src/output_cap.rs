//! A cap on the size of a tool's output: longer text is cut by core's `truncate_output`
//! (at a character boundary, ending in a marker that says so, so that the model knows it saw
//! only the beginning).
//!
//! The cap counts UTF-8 bytes, the marker included. Failed results pass unchanged (their
//! model messages are short already).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};
use voxloop_core::tool::{truncate_output, BoxError, ToolCall, ToolError, ToolResult};

use crate::classify::into_tool_error;

/// Applies [`OutputCap`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct OutputCapLayer {
    max_bytes: usize,
}

impl OutputCapLayer {
    /// Output longer than `max_bytes` is cut.
    pub const fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<S> Layer<S> for OutputCapLayer {
    type Service = OutputCap<S>;

    fn layer(&self, inner: S) -> OutputCap<S> {
        OutputCap { inner, max_bytes: self.max_bytes }
    }
}

/// A tool service whose output text is at most `max_bytes` long.
#[derive(Debug, Clone)]
pub struct OutputCap<S> {
    inner: S,
    max_bytes: usize,
}

impl<S> Service<ToolCall> for OutputCap<S>
where
    S: Service<ToolCall, Response = ToolResult>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        self.inner.poll_ready(cx).map_err(|e| into_tool_error("(output cap layer)", e))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let max_bytes = self.max_bytes;
        let name = call.name.clone();
        let future = self.inner.call(call);
        Box::pin(async move {
            let mut result = future.await.map_err(|e| into_tool_error(&name, e))?;
            if let Ok(text) = &mut result.outcome {
                truncate_output(text, max_bytes);
            }
            Ok(result)
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;
    use voxloop_core::tool::ToolErrorKind;

    use super::*;
    use crate::testing::{call, Scripted, Step};

    #[tokio::test]
    async fn caps_output_and_leaves_failures_alone() {
        let long = "天气晴朗".repeat(1000);
        let tool = Scripted::new(vec![
            Step::ok(&long),
            Step::fail(ToolError::new(ToolErrorKind::Execution, "x".repeat(500))),
        ]);
        let service = OutputCapLayer::new(200).layer(tool);
        let result = service.clone().oneshot(call("weather", serde_json::json!({}))).await.unwrap();
        let text = result.outcome.unwrap();
        assert!(text.len() <= 200);
        assert!(text.ends_with("[… output truncated: 12000 bytes in all]"), "{text}");
        let failed = service.oneshot(call("weather", serde_json::json!({}))).await.unwrap();
        assert_eq!(failed.model_text().len(), 500);
    }
}
