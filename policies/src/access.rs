//! Allow and deny lists of tool names: a refused call gets a
//! [`Denied`](ToolErrorKind::Denied) result and never reaches the tool.
//!
//! A pattern is a tool name, or a prefix followed by `*` (`get_*`), or `*` alone. The deny
//! list wins over the allow list; without an allow list every tool not denied is allowed.
//! The name checked is the one the model called ([`ToolCall::name`]).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

use crate::classify::{call_ready, refuse};

/// Which tool names may be called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Option<Vec<String>>,
    deny: Vec<String>,
}

impl AccessList {
    /// Every tool allowed.
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Only the tools matching `allow` (if given), minus those matching `deny`.
    pub fn new(allow: Option<Vec<String>>, deny: Vec<String>) -> Self {
        Self { allow, deny }
    }

    /// Every call refused (a tool disabled in the configuration).
    pub fn deny_all() -> Self {
        Self { allow: None, deny: vec!["*".to_owned()] }
    }

    /// `Ok` if `tool` may be called, else the refusal.
    pub fn check(&self, tool: &str) -> Result<(), ToolError> {
        let denied_by = self.deny.iter().find(|pattern| matches(pattern, tool));
        let not_allowed = match &self.allow {
            Some(allow) => !allow.iter().any(|pattern| matches(pattern, tool)),
            None => false,
        };
        let detail = match (denied_by, not_allowed) {
            (Some(pattern), _) => format!("tool \"{tool}\" matches deny pattern \"{pattern}\""),
            (None, true) => format!("tool \"{tool}\" matches no allow pattern"),
            (None, false) => return Ok(()),
        };
        Err(ToolError::new(
            ToolErrorKind::Denied,
            format!("Tool \"{tool}\" is not allowed here. Answer without it."),
        )
        .with_detail(detail))
    }
}

/// Whether `name` matches `pattern` (`name`, `prefix*` or `*`).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Applies [`Access`] to a service.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    list: Arc<AccessList>,
}

impl AccessLayer {
    /// Checks every call against `list`.
    pub fn new(list: AccessList) -> Self {
        Self { list: Arc::new(list) }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access { inner, list: Arc::clone(&self.list) }
    }
}

/// A tool service behind an [`AccessList`].
#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    list: Arc<AccessList>,
}

impl<S> Service<ToolCall> for Access<S>
where
    S: Service<ToolCall, Response = ToolResult> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    /// Always ready: a refused call must not claim anything further in.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        match self.list.check(&call.name) {
            Err(error) => Box::pin(std::future::ready(refuse(&call, error))),
            Ok(()) => Box::pin(call_ready(self.inner.clone(), call)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{call, Scripted, Step};

    async fn run(list: AccessList, tool: &str) -> (ToolResult, usize) {
        let scripted = Scripted::always(Step::ok("ran"));
        let service = AccessLayer::new(list).layer(scripted.clone());
        let result = service.oneshot(call(tool, serde_json::json!({}))).await.unwrap();
        (result, scripted.calls())
    }

    #[tokio::test]
    async fn denied_tools_get_a_refusal_and_are_not_called() {
        let list = AccessList::new(None, vec!["shell".into(), "send_*".into()]);
        for name in ["shell", "send_email"] {
            let (result, calls) = run(list.clone(), name).await;
            assert_eq!(calls, 0, "{name}");
            assert_eq!(result.error_kind(), Some(ToolErrorKind::Denied));
            assert_eq!(
                result.model_text(),
                format!("Tool \"{name}\" is not allowed here. Answer without it.")
            );
        }
        let (result, calls) = run(list, "web_search").await;
        assert_eq!((result.outcome, calls), (Ok("ran".to_owned()), 1));
    }

    #[tokio::test]
    async fn an_allow_list_refuses_everything_else_and_deny_wins() {
        let list = AccessList::new(Some(vec!["get_*".into()]), vec!["get_secret".into()]);
        assert!(list.check("get_weather").is_ok());
        let not_listed = list.check("web_search").unwrap_err();
        assert!(not_listed.detail.contains("no allow pattern"), "{}", not_listed.detail);
        let denied = list.check("get_secret").unwrap_err();
        assert!(denied.detail.contains("deny pattern \"get_secret\""), "{}", denied.detail);
        let (_, calls) = run(list, "web_search").await;
        assert_eq!(calls, 0);
    }

    #[test]
    fn deny_all_and_allow_all() {
        assert!(AccessList::deny_all().check("anything").is_err());
        assert!(AccessList::allow_all().check("anything").is_ok());
    }
}
