//! Argument guards: predicates over a call's JSON arguments, checked before the tool runs.
//! A rejected call gets a [`Denied`](ToolErrorKind::Denied) result saying why, so that the
//! model can pick other arguments.
//!
//! [`DomainGuard`] checks URL arguments against domain allow and deny lists (for a fetch
//! tool); [`guard_fn`] turns any closure into a guard. This is policy, not a sandbox: a
//! tool that fetches URLs still resolves and checks addresses itself (SSRF).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use serde_json::Value;
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

use crate::classify::{call_ready, refuse};

/// Why a guard rejected a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Short, for the model: `the domain "example.org" is not allowed`.
    pub reason: String,
    /// For logs; defaults to the reason.
    pub detail: String,
}

impl Rejection {
    /// A rejection whose detail is its reason.
    pub fn new(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self { detail: reason.clone(), reason }
    }

    /// Replaces the detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// A check of a call's arguments.
pub trait ArgGuard: Send + Sync + 'static {
    /// A name for logs, e.g. `domain allow-list`.
    fn name(&self) -> &str;

    /// `Ok` if the call may go ahead.
    fn check(&self, call: &ToolCall) -> Result<(), Rejection>;
}

/// A guard from a closure over the arguments (see [`guard_fn`]).
pub struct FnGuard<F> {
    name: String,
    check: F,
}

/// A guard named `name` that runs `check` on the arguments (`Err` holds the reason for the
/// model).
pub fn guard_fn<F>(name: impl Into<String>, check: F) -> FnGuard<F>
where
    F: Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
{
    FnGuard { name: name.into(), check }
}

impl<F> ArgGuard for FnGuard<F>
where
    F: Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, call: &ToolCall) -> Result<(), Rejection> {
        (self.check)(&call.arguments).map_err(Rejection::new)
    }
}

impl<F> fmt::Debug for FnGuard<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnGuard").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Checks the URLs in some arguments: `http` or `https` only, and the host must match the
/// allow list (if any) and no entry of the deny list.
///
/// A domain entry matches itself and its subdomains: `example.com` matches
/// `example.com` and `docs.example.com`, not `example.com.evil.net` or `badexample.com`.
/// An argument may hold one URL or an array of them; a missing or `null` argument passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainGuard {
    args: Vec<String>,
    allow: Option<Vec<String>>,
    deny: Vec<String>,
}

impl DomainGuard {
    /// Checks the arguments named `args`; no domain list yet (all allowed).
    pub fn new<I: IntoIterator<Item = impl Into<String>>>(args: I) -> Self {
        Self { args: args.into_iter().map(Into::into).collect(), allow: None, deny: Vec::new() }
    }

    /// Only these domains (and their subdomains).
    #[must_use]
    pub fn allow<I: IntoIterator<Item = impl Into<String>>>(mut self, domains: I) -> Self {
        self.allow = Some(domains.into_iter().map(|d| normalise(&d.into())).collect());
        self
    }

    /// Never these domains (and their subdomains).
    #[must_use]
    pub fn deny<I: IntoIterator<Item = impl Into<String>>>(mut self, domains: I) -> Self {
        self.deny = domains.into_iter().map(|d| normalise(&d.into())).collect();
        self
    }

    fn check_url(&self, arg: &str, text: &str) -> Result<(), Rejection> {
        let url = url::Url::parse(text).map_err(|e| {
            Rejection::new(format!("argument \"{arg}\" is not a valid URL"))
                .with_detail(format!("argument \"{arg}\": {text:?} does not parse: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Rejection::new(format!(
                "argument \"{arg}\" must be an http or https URL, not {}",
                url.scheme()
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(Rejection::new(format!("argument \"{arg}\" has no host")));
        };
        let host = normalise(host);
        let denied = self.deny.iter().any(|domain| within(&host, domain));
        let allowed =
            self.allow.as_ref().is_none_or(|allow| allow.iter().any(|d| within(&host, d)));
        if denied || !allowed {
            let list = if denied { "deny list" } else { "allow list" };
            return Err(Rejection::new(format!("the domain \"{host}\" is not allowed"))
                .with_detail(format!(
                    "argument \"{arg}\": host \"{host}\" refused by the {list}"
                )));
        }
        Ok(())
    }
}

impl ArgGuard for DomainGuard {
    fn name(&self) -> &str {
        "domain guard"
    }

    fn check(&self, call: &ToolCall) -> Result<(), Rejection> {
        for arg in &self.args {
            match call.arguments.get(arg) {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => self.check_url(arg, text)?,
                Some(Value::Array(items)) => {
                    for item in items {
                        match item {
                            Value::String(text) => self.check_url(arg, text)?,
                            _ => return Err(not_a_url(arg)),
                        }
                    }
                }
                Some(_) => return Err(not_a_url(arg)),
            }
        }
        Ok(())
    }
}

fn not_a_url(arg: &str) -> Rejection {
    Rejection::new(format!("argument \"{arg}\" must be a URL string"))
}

/// Lower case, without a trailing dot or a leading `*.` / `.`.
fn normalise(domain: &str) -> String {
    let domain = domain.trim().trim_end_matches('.');
    let domain = domain.strip_prefix("*.").or_else(|| domain.strip_prefix('.')).unwrap_or(domain);
    domain.to_ascii_lowercase()
}

/// Whether `host` is `domain` or a subdomain of it.
fn within(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

/// Applies [`Guard`] to a service.
#[derive(Clone)]
pub struct GuardLayer {
    guards: Arc<[Arc<dyn ArgGuard>]>,
}

impl GuardLayer {
    /// Checks every call with `guards`, in order; the first rejection wins.
    pub fn new(guards: Vec<Arc<dyn ArgGuard>>) -> Self {
        Self { guards: guards.into() }
    }
}

impl fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.guards.iter().map(|g| g.name()).collect();
        f.debug_struct("GuardLayer").field("guards", &names).finish()
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, guards: Arc::clone(&self.guards) }
    }
}

/// A tool service behind argument guards.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    guards: Arc<[Arc<dyn ArgGuard>]>,
}

impl<S: fmt::Debug> fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> Service<ToolCall> for Guard<S>
where
    S: Service<ToolCall, Response = ToolResult> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    /// Always ready: a rejected call must not claim anything further in.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        for guard in self.guards.iter() {
            if let Err(rejection) = guard.check(&call) {
                let tool = &call.name;
                let error = ToolError::new(
                    ToolErrorKind::Denied,
                    format!("Call to tool \"{tool}\" refused: {}.", rejection.reason),
                )
                .with_detail(format!(
                    "tool \"{tool}\": {}: {}",
                    guard.name(),
                    rejection.detail
                ));
                return Box::pin(std::future::ready(refuse(&call, error)));
            }
        }
        Box::pin(call_ready(self.inner.clone(), call))
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{call, Scripted, Step};

    fn fetch(url: Value) -> ToolCall {
        call("fetch", serde_json::json!({ "url": url }))
    }

    #[test]
    fn domain_allow_list_matches_domains_and_subdomains_only() {
        let guard = DomainGuard::new(["url"]).allow(["example.com", "*.wikipedia.org"]);
        for ok in [
            "https://example.com/",
            "http://docs.example.com/a?b=c",
            "https://EXAMPLE.COM./x",
            "https://en.wikipedia.org/wiki/Rust",
        ] {
            assert_eq!(guard.check(&fetch(ok.into())), Ok(()), "{ok}");
        }
        for (bad, reason) in [
            ("https://evil.com/", "the domain \"evil.com\" is not allowed"),
            ("https://example.com.evil.net/", "the domain \"example.com.evil.net\" is not allowed"),
            ("https://badexample.com/", "the domain \"badexample.com\" is not allowed"),
            ("http://example.com@evil.com/", "the domain \"evil.com\" is not allowed"),
            ("http://127.0.0.1/", "the domain \"127.0.0.1\" is not allowed"),
            ("file:///etc/passwd", "argument \"url\" must be an http or https URL, not file"),
            ("not a url", "argument \"url\" is not a valid URL"),
        ] {
            let rejection = guard.check(&fetch(bad.into())).unwrap_err();
            assert_eq!(rejection.reason, reason, "{bad}");
        }
    }

    #[test]
    fn deny_list_arrays_and_missing_arguments() {
        let guard = DomainGuard::new(["url", "urls"]).deny(["tracker.net"]);
        assert_eq!(guard.check(&call("fetch", serde_json::json!({}))), Ok(()));
        assert_eq!(guard.check(&fetch("https://example.org".into())), Ok(()));
        let urls = serde_json::json!({"urls": ["https://ok.org", "https://ads.tracker.net/p"]});
        let rejection = guard.check(&call("fetch", urls)).unwrap_err();
        assert!(rejection.detail.contains("deny list"), "{}", rejection.detail);
        let rejection = guard.check(&fetch(serde_json::json!(42))).unwrap_err();
        assert_eq!(rejection.reason, "argument \"url\" must be a URL string");
    }

    #[tokio::test]
    async fn a_rejected_call_never_reaches_the_tool() {
        let tool = Scripted::always(Step::ok("page"));
        let guard: Arc<dyn ArgGuard> = Arc::new(DomainGuard::new(["url"]).allow(["example.com"]));
        let service = GuardLayer::new(vec![guard]).layer(tool.clone());

        let refused = service.clone().oneshot(fetch("https://evil.com/x".into())).await.unwrap();
        assert_eq!(tool.calls(), 0);
        assert_eq!(refused.error_kind(), Some(ToolErrorKind::Denied));
        assert_eq!(
            refused.model_text(),
            "Call to tool \"fetch\" refused: the domain \"evil.com\" is not allowed."
        );

        let fetched = service.oneshot(fetch("https://example.com/x".into())).await.unwrap();
        assert_eq!((fetched.outcome, tool.calls()), (Ok("page".to_owned()), 1));
    }

    #[tokio::test]
    async fn closure_guards() {
        let tool = Scripted::always(Step::ok("ok"));
        let short = guard_fn("query length", |args: &Value| {
            let len = args.get("query").and_then(Value::as_str).map_or(0, str::len);
            if len <= 10 {
                Ok(())
            } else {
                Err("the query is longer than 10 bytes".to_owned())
            }
        });
        let service = GuardLayer::new(vec![Arc::new(short)]).layer(tool.clone());
        let long = call("search", serde_json::json!({"query": "a very long query"}));
        let result = service.oneshot(long).await.unwrap();
        assert_eq!(
            result.model_text(),
            "Call to tool \"search\" refused: the query is longer than 10 bytes."
        );
        assert_eq!(tool.calls(), 0);
    }
}
