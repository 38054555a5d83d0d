//! What a tool call carries besides its arguments: [`ToolContext`].
//!
//! The agent loop stamps every call of a turn with the context of that turn — which session
//! it belongs to, what the front door attached to the session ([`Extensions`]: its voice,
//! say), and where an approval question goes ([`ApprovalAsker`]) — the way a request carries
//! its extensions through tower and axum middleware. A tool that acts on "this session"
//! (`timbre_rag` swapping this session's voice) reads it from there, so nothing global is
//! shared between sessions and two sessions' calls never see each other's state.
//!
//! The context is not part of what the model wrote: it is not serialized, and two calls
//! compare equal when id, name and arguments do.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

/// A typed map of shared values (one per type), cheap to clone: what a front door attaches
/// to a session for its tools.
#[derive(Clone, Default)]
pub struct Extensions {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing any earlier value of its type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|value| value.downcast_ref::<T>())
    }

    /// Removes the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) {
        self.values.remove(&TypeId::of::<T>());
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("len", &self.values.len()).finish()
    }
}

/// A person's (or a client's) answer to an approval question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Run the call.
    Approved,
    /// Do not run it; the reason is shown to the model.
    Denied {
        /// Why, if given.
        reason: Option<String>,
    },
}

impl Approval {
    /// Denied without a reason.
    pub const fn denied() -> Self {
        Self::Denied { reason: None }
    }

    /// Denied because of `reason`.
    pub fn denied_because(reason: impl Into<String>) -> Self {
        Self::Denied { reason: Some(reason.into()) }
    }
}

/// A call waiting for approval, as the turn's stream reports it
/// ([`AgentEvent::ApprovalRequested`](crate::agent::AgentEvent)). Answer it with
/// [`answer`](Self::answer); clones share the one answer.
#[derive(Clone)]
pub struct ApprovalRequest {
    /// The call id (that of the call's `ToolCallStarted` event).
    pub call_id: String,
    /// The tool.
    pub name: String,
    /// The arguments the model wrote.
    pub arguments: Value,
    /// How long the call waits at most (`None`: until the turn ends).
    pub timeout: Option<Duration>,
    reply: Arc<Mutex<Option<oneshot::Sender<Approval>>>>,
}

/// [`ApprovalRequest::answer`] came too late: the call no longer waits (answered already, its
/// wait timed out, or its turn ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call no longer waits for an approval")]
pub struct NoLongerWaiting;

impl ApprovalRequest {
    /// Gives the answer. Only the first answer counts.
    pub fn answer(&self, approval: Approval) -> Result<(), NoLongerWaiting> {
        let sender = self.reply.lock().unwrap_or_else(PoisonError::into_inner).take();
        match sender {
            Some(sender) => sender.send(approval).map_err(|_| NoLongerWaiting),
            None => Err(NoLongerWaiting),
        }
    }

    /// Whether the call still waits for [`answer`](Self::answer).
    pub fn is_waiting(&self) -> bool {
        let reply = self.reply.lock().unwrap_or_else(PoisonError::into_inner);
        reply.as_ref().is_some_and(|sender| !sender.is_closed())
    }
}

impl PartialEq for ApprovalRequest {
    fn eq(&self, other: &Self) -> bool {
        self.call_id == other.call_id
            && self.name == other.name
            && self.arguments == other.arguments
            && self.timeout == other.timeout
            && Arc::ptr_eq(&self.reply, &other.reply)
    }
}

impl fmt::Debug for ApprovalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalRequest")
            .field("call_id", &self.call_id)
            .field("name", &self.name)
            .field("arguments", &self.arguments)
            .field("timeout", &self.timeout)
            .field("waiting", &self.is_waiting())
            .finish()
    }
}

/// Where a turn's approval questions go: the agent loop puts one into every call's
/// context, feeding the turn's own event stream.
#[derive(Clone)]
pub struct ApprovalAsker {
    send: Arc<dyn Fn(ApprovalRequest) + Send + Sync>,
}

impl ApprovalAsker {
    /// An asker that hands each question to `send`.
    pub fn new(send: impl Fn(ApprovalRequest) + Send + Sync + 'static) -> Self {
        Self { send: Arc::new(send) }
    }

    /// Asks about the call `call_id` and waits for the answer; a question nobody can answer
    /// any more (the turn's stream is gone) is denied.
    pub async fn ask(
        &self,
        call_id: &str,
        name: &str,
        arguments: &Value,
        timeout: Option<Duration>,
    ) -> Approval {
        let (reply, answer) = oneshot::channel();
        (self.send)(ApprovalRequest {
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.clone(),
            timeout,
            reply: Arc::new(Mutex::new(Some(reply))),
        });
        answer.await.unwrap_or_else(|_| Approval::denied_because("it was not answered"))
    }
}

impl fmt::Debug for ApprovalAsker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalAsker").finish_non_exhaustive()
    }
}

/// Where the non-text content of a turn's calls goes (the images, audio and resources an MCP
/// server returns): the agent loop puts one into every call's context, feeding the turn's
/// event stream, so that clients get the content as the tool gave it while the model reads
/// the call's text.
#[derive(Clone)]
pub struct AttachmentSink {
    send: Arc<AttachFn>,
}

/// What an [`AttachmentSink`] calls: the call id and the content.
type AttachFn = dyn Fn(&str, Value) + Send + Sync;

impl AttachmentSink {
    /// A sink that hands each piece of content, with its call's id, to `send`.
    pub fn new(send: impl Fn(&str, Value) + Send + Sync + 'static) -> Self {
        Self { send: Arc::new(send) }
    }
}

impl fmt::Debug for AttachmentSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentSink").finish_non_exhaustive()
    }
}

/// The context of one tool call (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    /// The session whose turn made the call (`None` outside a session).
    pub session_id: Option<String>,
    /// What the front door attached to that session.
    pub extensions: Extensions,
    /// Where approval questions about the call go (`None`: nobody can be asked).
    pub approvals: Option<ApprovalAsker>,
    /// The call's id, when an agent turn made it.
    pub call_id: Option<String>,
    /// Where the call's non-text content goes (`None`: nobody receives it).
    pub attachments: Option<AttachmentSink>,
}

impl ToolContext {
    /// Passes `content` (e.g. an MCP content block, as JSON) to the turn's clients; whether
    /// anyone receives it. The model does not see it: say what it is in the call's text.
    pub fn attach(&self, content: Value) -> bool {
        match (&self.attachments, &self.call_id) {
            (Some(sink), Some(id)) => {
                (sink.send)(id, content);
                true
            }
            _ => false,
        }
    }

    /// The extension of type `T`, if the session has one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_hold_one_value_per_type() {
        let mut ext = Extensions::new();
        assert!(ext.is_empty());
        ext.insert(3u32);
        ext.insert(String::from("a"));
        ext.insert(4u32);
        assert_eq!(ext.get::<u32>(), Some(&4));
        assert_eq!(ext.get::<String>().map(String::as_str), Some("a"));
        let copy = ext.clone();
        ext.remove::<u32>();
        assert_eq!(ext.get::<u32>(), None);
        assert_eq!(copy.get::<u32>(), Some(&4), "clones are independent maps");
    }

    #[tokio::test]
    async fn a_question_is_answered_once() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let asker = ApprovalAsker::new(move |request| {
            let _ = tx.send(request);
        });
        let waiting = tokio::spawn(async move {
            asker.ask("call_1", "pay", &serde_json::json!({"amount": 5}), None).await
        });
        let request = rx.recv().await.unwrap();
        assert!(request.is_waiting());
        assert_eq!(request.call_id, "call_1");
        let copy = request.clone();
        request.answer(Approval::denied_because("no")).unwrap();
        assert_eq!(copy.answer(Approval::Approved), Err(NoLongerWaiting));
        assert!(!copy.is_waiting());
        assert_eq!(waiting.await.unwrap(), Approval::denied_because("no"));
    }

    #[tokio::test]
    async fn an_abandoned_question_is_denied_and_no_longer_waits() {
        let asker = ApprovalAsker::new(drop);
        let answer = asker.ask("call_2", "pay", &Value::Null, None).await;
        assert_eq!(answer, Approval::denied_because("it was not answered"));

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let asker = ApprovalAsker::new(move |request| {
            let _ = tx.send(request);
        });
        let waiting =
            tokio::spawn(async move { asker.ask("call_3", "pay", &Value::Null, None).await });
        let request = rx.recv().await.unwrap();
        waiting.abort();
        let _ = waiting.await;
        assert!(!request.is_waiting());
        assert_eq!(request.answer(Approval::Approved), Err(NoLongerWaiting));
    }
}
