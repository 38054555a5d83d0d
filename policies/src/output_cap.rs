//! A cap on the size of a tool's output: longer text is cut at a character boundary and
//! ends with a marker that says so, so that the model knows it saw only the beginning.
//!
//! The cap counts UTF-8 bytes, the marker included. Failed results pass unchanged (their
//! model messages are short already).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolResult};

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
                truncate(text, max_bytes);
            }
            Ok(result)
        })
    }
}

/// Cuts `text` to at most `max_bytes` bytes at a character boundary, ending it with a
/// marker (`\n[… output truncated: 1234 bytes in all]`, or just `…` if that does not fit).
/// Returns whether it cut.
pub fn truncate(text: &mut String, max_bytes: usize) -> bool {
    if text.len() <= max_bytes {
        return false;
    }
    let full = format!("\n[… output truncated: {} bytes in all]", text.len());
    let marker = if full.len() < max_bytes { full.as_str() } else { "…" };
    let mut end = max_bytes.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if marker.len() <= max_bytes {
        text.push_str(marker);
    }
    true
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;
    use voxloop_core::tool::ToolErrorKind;

    use super::*;
    use crate::testing::{call, Scripted, Step};

    #[test]
    fn cuts_chinese_text_at_a_character_boundary() {
        let original = "语音助手调用工具。".repeat(100); // 3 bytes a character
        for max in [60, 61, 62, 100, 255] {
            let mut text = original.clone();
            assert!(truncate(&mut text, max));
            assert!(text.len() <= max, "{} > {max}", text.len());
            let marker = format!("\n[… output truncated: {} bytes in all]", original.len());
            let kept = text.strip_suffix(&marker).unwrap();
            assert!(original.starts_with(kept));
            assert!(kept.len() + 3 > max - marker.len(), "cut no more than one character");
        }
    }

    #[test]
    fn short_text_is_untouched_and_tiny_caps_keep_an_ellipsis() {
        let mut text = "你好".to_owned();
        assert!(!truncate(&mut text, 6));
        assert_eq!(text, "你好");
        let mut text = "你好世界".to_owned();
        assert!(truncate(&mut text, 8));
        assert_eq!(text, "你…");
    }

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
