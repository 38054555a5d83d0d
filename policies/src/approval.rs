//! An approval gate: before the tool runs, an [`Approver`] (a person at a CLI prompt, a
//! server that asks its client) says yes or no. A call that is refused, or that nobody
//! answers in time, gets a [`Denied`](ToolErrorKind::Denied) result and the tool never runs.
//!
//! [`ChannelApprover`] hands each question to whoever holds the receiving end of a channel,
//! with a one-shot reply slot: the shape a server or a CLI answers.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service};
use voxloop_core::tool::{BoxError, ToolCall, ToolError, ToolErrorKind, ToolResult};

use crate::classify::{call_ready, human, refuse};
use crate::PolicyConfig;

/// The answer to "may this call run?" (core's, shared with the turn's approval events).
pub use voxloop_core::tool::Approval;

/// Decides whether a call may run. Asked once per call, before any limit is taken.
#[async_trait::async_trait]
pub trait Approver: Send + Sync + 'static {
    /// Whether `call` may run.
    async fn approve(&self, call: &ToolCall) -> Approval;
}

/// One question sent by a [`ChannelApprover`]: answer it with [`approve`](Self::approve) or
/// [`deny`](Self::deny). Dropping it unanswered denies the call.
#[derive(Debug)]
pub struct ApprovalRequest {
    /// The call waiting for an answer.
    pub call: ToolCall,
    reply: oneshot::Sender<Approval>,
}

impl ApprovalRequest {
    /// Lets the call run.
    pub fn approve(self) {
        self.answer(Approval::Approved);
    }

    /// Refuses the call, with an optional reason for the model.
    pub fn deny(self, reason: Option<String>) {
        self.answer(Approval::Denied { reason });
    }

    /// Answers the question.
    pub fn answer(self, approval: Approval) {
        // The caller may have given up (timeout, cancelled turn): nobody is left to tell.
        let _ = self.reply.send(approval);
    }
}

/// An [`Approver`] that sends every question down a channel.
#[derive(Debug, Clone)]
pub struct ChannelApprover {
    questions: mpsc::Sender<ApprovalRequest>,
}

impl ChannelApprover {
    /// An approver and the receiver of its questions; at most `capacity` (at least 1)
    /// questions wait unread.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<ApprovalRequest>) {
        let (questions, receiver) = mpsc::channel(capacity.max(1));
        (Self { questions }, receiver)
    }
}

#[async_trait::async_trait]
impl Approver for ChannelApprover {
    async fn approve(&self, call: &ToolCall) -> Approval {
        let (reply, answer) = oneshot::channel();
        let request = ApprovalRequest { call: call.clone(), reply };
        if self.questions.send(request).await.is_err() {
            return Approval::denied_because("nobody is there to approve it");
        }
        answer.await.unwrap_or_else(|_| Approval::denied_because("it was not answered"))
    }
}

/// Applies [`ApprovalGate`] to a service.
#[derive(Clone)]
pub struct ApprovalLayer {
    approver: Option<Arc<dyn Approver>>,
    timeout: Option<Duration>,
}

impl ApprovalLayer {
    /// Asks `approver` about every call; without an answer within `timeout` (if set) the call
    /// is refused.
    pub fn new(approver: Arc<dyn Approver>, timeout: Option<Duration>) -> Self {
        Self { approver: Some(approver), timeout }
    }

    /// Refuses every call: approval is required but nobody was set up to give it.
    pub fn unanswered() -> Self {
        Self { approver: None, timeout: None }
    }
}

impl fmt::Debug for ApprovalLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalLayer")
            .field("has_approver", &self.approver.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<S> Layer<S> for ApprovalLayer {
    type Service = ApprovalGate<S>;

    fn layer(&self, inner: S) -> ApprovalGate<S> {
        ApprovalGate { inner, approver: self.approver.clone(), timeout: self.timeout }
    }
}

/// A tool service that runs only approved calls.
#[derive(Clone)]
pub struct ApprovalGate<S> {
    inner: S,
    approver: Option<Arc<dyn Approver>>,
    timeout: Option<Duration>,
}

impl<S: fmt::Debug> fmt::Debug for ApprovalGate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalGate").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> Service<ToolCall> for ApprovalGate<S>
where
    S: Service<ToolCall, Response = ToolResult> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    /// Always ready: nothing further in is claimed while a person thinks.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let inner = self.inner.clone();
        let approver = self.approver.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let Some(approver) = approver else {
                let error = refused(&call.name, Some("nobody is set up to approve it"))
                    .with_detail(format!(
                        "tool \"{}\": approval required but no approver configured",
                        call.name
                    ));
                return refuse(&call, error);
            };
            let approval = match timeout {
                None => approver.approve(&call).await,
                Some(limit) => match tokio::time::timeout(limit, approver.approve(&call)).await {
                    Ok(approval) => approval,
                    Err(_) => {
                        let reason = format!("nobody approved it within {}", human(limit));
                        return refuse(&call, refused(&call.name, Some(&reason)));
                    }
                },
            };
            match approval {
                Approval::Approved => call_ready(inner, call).await,
                Approval::Denied { reason } => {
                    refuse(&call, refused(&call.name, reason.as_deref()))
                }
            }
        })
    }
}

/// Asks the turn that made the call: the question becomes an
/// [`AgentEvent::ApprovalRequested`](voxloop_core::agent::AgentEvent) in that turn's event
/// stream, in order after the call's start, and whoever consumes the stream (an HTTP client,
/// a realtime socket, a CLI prompt) answers through it. A call made outside a turn (no
/// [`ApprovalAsker`](voxloop_core::tool::ApprovalAsker) in its context) is denied.
#[derive(Debug, Clone, Default)]
pub struct TurnApprover {
    config: PolicyConfig,
}

impl TurnApprover {
    /// Questions carry the approval timeout `config` sets for the tool.
    pub fn new(config: PolicyConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Approver for TurnApprover {
    async fn approve(&self, call: &ToolCall) -> Approval {
        let Some(asker) = &call.context.approvals else {
            return Approval::denied_because("no client is connected to approve it");
        };
        let timeout = self.config.approval(&call.name).flatten();
        asker.ask(&call.id, &call.name, &call.arguments, timeout).await
    }
}

/// The refusal of a call to `tool`.
fn refused(tool: &str, reason: Option<&str>) -> ToolError {
    let message = match reason {
        Some(reason) => format!("The call to tool \"{tool}\" was not approved: {reason}."),
        None => format!("The call to tool \"{tool}\" was not approved."),
    };
    ToolError::new(ToolErrorKind::Denied, message.clone())
        .with_detail(format!("tool \"{tool}\": approval refused: {message}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::testing::{advance_ms, call, settle, spawn_call, Scripted, Step};

    /// Approves calls whose `amount` is at most 100, and counts the questions.
    #[derive(Default)]
    struct Budget {
        asked: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Approver for Budget {
        async fn approve(&self, call: &ToolCall) -> Approval {
            self.asked.fetch_add(1, Ordering::SeqCst);
            match call.arguments.get("amount").and_then(serde_json::Value::as_u64) {
                Some(amount) if amount <= 100 => Approval::Approved,
                _ => Approval::denied_because("the amount is over 100"),
            }
        }
    }

    #[tokio::test]
    async fn approved_calls_run_and_denied_calls_get_a_refusal() {
        let tool = Scripted::always(Step::ok("paid"));
        let approver = Arc::new(Budget::default());
        let service = ApprovalLayer::new(approver.clone(), None).layer(tool.clone());

        let paid = service.clone().oneshot(call("pay", serde_json::json!({"amount": 20}))).await;
        assert_eq!(paid.unwrap().outcome, Ok("paid".to_owned()));
        assert_eq!(tool.calls(), 1);

        let refused = service.oneshot(call("pay", serde_json::json!({"amount": 500}))).await;
        let refused = refused.unwrap();
        assert_eq!(tool.calls(), 1, "a denied call never runs");
        assert_eq!(refused.error_kind(), Some(ToolErrorKind::Denied));
        assert_eq!(
            refused.model_text(),
            "The call to tool \"pay\" was not approved: the amount is over 100."
        );
        assert_eq!(approver.asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_channel_approver_is_answered_by_the_receiver() {
        let tool = Scripted::always(Step::ok("sent"));
        let (approver, mut questions) = ChannelApprover::new(4);
        let service = ApprovalLayer::new(Arc::new(approver), None).layer(tool.clone());

        let first = spawn_call(service.clone(), call("send", serde_json::json!({"to": "ann"})));
        let question = questions.recv().await.unwrap();
        assert_eq!(question.call.arguments, serde_json::json!({"to": "ann"}));
        assert_eq!(tool.calls(), 0, "nothing runs before the answer");
        question.approve();
        assert_eq!(first.await.unwrap().unwrap().outcome, Ok("sent".to_owned()));

        let second = spawn_call(service.clone(), call("send", serde_json::json!({"to": "bob"})));
        questions.recv().await.unwrap().deny(None);
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.model_text(), "The call to tool \"send\" was not approved.");

        let third = spawn_call(service, call("send", serde_json::json!({"to": "cy"})));
        drop(questions.recv().await.unwrap());
        let third = third.await.unwrap().unwrap();
        assert_eq!(third.error_kind(), Some(ToolErrorKind::Denied), "dropped = denied");
        assert_eq!(tool.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_questions_time_out_as_refusals() {
        let tool = Scripted::always(Step::ok("sent"));
        let (approver, mut questions) = ChannelApprover::new(1);
        let layer = ApprovalLayer::new(Arc::new(approver), Some(Duration::from_secs(30)));
        let task = spawn_call(layer.layer(tool.clone()), call("send", serde_json::json!({})));
        settle().await;
        let _pending = questions.recv().await.unwrap();
        advance_ms(29_999).await;
        assert!(!task.is_finished());
        advance_ms(1).await;
        let result = task.await.unwrap().unwrap();
        assert_eq!(
            result.model_text(),
            "The call to tool \"send\" was not approved: nobody approved it within 30 s."
        );
        assert_eq!(tool.calls(), 0);
    }

    #[tokio::test]
    async fn a_turn_approver_asks_the_calls_turn() {
        let tool = Scripted::always(Step::ok("paid"));
        let config: PolicyConfig =
            toml::from_str("[tools.pay]\napproval = true\napproval_timeout_ms = 5000").unwrap();
        let layer = ApprovalLayer::new(Arc::new(TurnApprover::new(config)), None);
        let service = layer.layer(tool.clone());

        let outside = service.clone().oneshot(call("pay", serde_json::json!({}))).await.unwrap();
        assert!(outside.model_text().contains("no client is connected"), "{outside:?}");

        let (tx, mut questions) = mpsc::unbounded_channel();
        let mut in_turn = call("pay", serde_json::json!({"amount": 5}));
        in_turn.context.approvals = Some(voxloop_core::tool::ApprovalAsker::new(move |r| {
            let _ = tx.send(r);
        }));
        let id = in_turn.id.clone();
        let task = spawn_call(service, in_turn);
        let question = questions.recv().await.unwrap();
        assert_eq!((question.call_id.as_str(), question.name.as_str()), (id.as_str(), "pay"));
        assert_eq!(question.timeout, Some(Duration::from_secs(5)));
        assert_eq!(tool.calls(), 0, "nothing runs before the answer");
        question.answer(Approval::Approved).unwrap();
        assert_eq!(task.await.unwrap().unwrap().outcome, Ok("paid".to_owned()));
    }

    #[tokio::test]
    async fn without_an_approver_every_call_is_refused() {
        let tool = Scripted::always(Step::ok("ran"));
        let service = ApprovalLayer::unanswered().layer(tool.clone());
        let result = service.oneshot(call("send", serde_json::json!({}))).await.unwrap();
        assert_eq!(result.error_kind(), Some(ToolErrorKind::Denied));
        assert_eq!(tool.calls(), 0);
        assert!(result.model_text().contains("nobody is set up to approve it"));
    }
}
