//! Approvals over HTTP: the service's [`Approver`] for tools configured with
//! `approval = true` in `[agent.policies]`.
//!
//! A call that needs approval becomes a [`Question`] on the channel of the turn that made it
//! (its SSE stream shows it as an `approval_request` event) and a pending entry keyed by
//! (session id, call id). `POST /v1/sessions/{id}/approvals/{call_id}` answers it
//! ([`Approvals::answer`]); the policy layer then runs the tool or returns a `Denied` result.
//!
//! The turn a call belongs to is found through a task-local ([`scope`]): the agent polls the
//! tool calls on the task that runs the turn, so the approver sees the turn's session and
//! channel without relying on turns running one at a time.
//!
//! A pending entry lives exactly as long as the call waits: when the wait ends for any reason
//! (an answer, the policy's `approval_timeout_ms`, a cancelled turn, a deleted session) the
//! entry goes, and a late answer is told why (`409`). A service that shuts down denies the
//! calls still waiting, so that their turns end. The last [`SETTLED_KEPT`] outcomes are
//! remembered for that message; older or never-seen call ids are unknown (`404`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use voxloop_core::tool::ToolCall;
use voxloop_policies::{Approval, Approver, PolicyConfig};

/// Settled calls remembered to explain a late answer.
pub const SETTLED_KEPT: usize = 256;

tokio::task_local! {
    static TURN: TurnApprovals;
}

/// The approval side of one running turn: its session and where its questions go.
#[derive(Debug, Clone)]
pub struct TurnApprovals {
    session: String,
    questions: mpsc::UnboundedSender<Question>,
}

impl TurnApprovals {
    /// The turn of session `session`, and the receiver of its questions (the turn's event
    /// loop reads it).
    pub fn new(session: impl Into<String>) -> (Self, mpsc::UnboundedReceiver<Question>) {
        let (questions, receiver) = mpsc::unbounded_channel();
        (Self { session: session.into(), questions }, receiver)
    }
}

/// Runs `turn_future` with `turn` as the turn whose tool calls ask for approval.
pub async fn scope<F: Future>(turn: TurnApprovals, turn_future: F) -> F::Output {
    TURN.scope(turn, turn_future).await
}

/// A call waiting for an answer, as the client is told of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The call id (the `id` of its `tool_call` event).
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments the model wrote.
    pub arguments: Value,
    /// How long the call waits at most (`None`: until the turn ends).
    pub timeout: Option<Duration>,
}

impl Question {
    /// The data of the `approval_request` event.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "timeout_ms": self.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}

/// How a call that no longer waits ended its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Answered yes.
    Approved,
    /// Answered no.
    Denied,
    /// Nobody answered within the policy's timeout.
    Expired,
    /// Its turn ended first (cancelled by a client that left or by `DELETE`).
    Withdrawn,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// No such call waits in the session, and none did recently.
    Unknown,
    /// The call no longer waits.
    Settled(Settled),
}

impl AnswerError {
    /// A sentence naming the session and the call.
    pub fn message(&self, session: &str, call_id: &str) -> String {
        let what = format!("call {call_id:?} of session {session:?}");
        match self {
            Self::Unknown => format!("{what} is not waiting for an approval (no such call)"),
            Self::Settled(Settled::Approved) => format!("{what} was already approved"),
            Self::Settled(Settled::Denied) => format!("{what} was already denied"),
            Self::Settled(Settled::Expired) => {
                format!("{what} no longer waits: nobody answered within its approval timeout")
            }
            Self::Settled(Settled::Withdrawn) => {
                format!("{what} no longer waits: its turn ended (cancelled or session deleted)")
            }
        }
    }
}

type Key = (String, String);

struct Pending {
    reply: oneshot::Sender<Approval>,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Book {
    pending: HashMap<Key, Pending>,
    settled: VecDeque<(Key, Settled)>,
}

impl Book {
    fn settle(&mut self, key: Key, how: Settled) {
        if self.settled.len() >= SETTLED_KEPT {
            self.settled.pop_front();
        }
        self.settled.push_back((key, how));
    }

    fn settled(&self, key: &Key) -> Option<Settled> {
        self.settled.iter().rev().find(|(k, _)| k == key).map(|(_, how)| *how)
    }
}

/// The service's approver: the pending calls of every session (see the module docs).
pub struct Approvals {
    policies: PolicyConfig,
    book: Mutex<Book>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").field("pending", &self.pending()).finish_non_exhaustive()
    }
}

impl Approvals {
    /// An approver for the tools `policies` marks with `approval = true`.
    pub fn new(policies: PolicyConfig) -> Self {
        Self { policies, book: Mutex::new(Book::default()) }
    }

    /// Whether calls of `tool` wait for an approval.
    pub fn required(&self, tool: &str) -> bool {
        self.policies.approval(tool).is_some()
    }

    /// Calls waiting for an answer, in all sessions.
    pub fn pending(&self) -> usize {
        self.book().pending.len()
    }

    /// Answers the call `call_id` of session `session`.
    pub fn answer(
        &self,
        session: &str,
        call_id: &str,
        approval: Approval,
    ) -> Result<(), AnswerError> {
        let key = (session.to_owned(), call_id.to_owned());
        let mut book = self.book();
        let Some(pending) = book.pending.remove(&key) else {
            return Err(book.settled(&key).map_or(AnswerError::Unknown, AnswerError::Settled));
        };
        let how = match approval {
            Approval::Approved => Settled::Approved,
            Approval::Denied { .. } => Settled::Denied,
        };
        match pending.reply.send(approval) {
            Ok(()) => {
                book.settle(key, how);
                Ok(())
            }
            // The wait ended just now, before its entry was removed.
            Err(_) => {
                let how = expired_or_withdrawn(pending.deadline);
                book.settle(key, how);
                Err(AnswerError::Settled(how))
            }
        }
    }

    /// Denies every call of `session` still waiting (the session is being deleted).
    pub fn withdraw_session(&self, session: &str) {
        self.withdraw(|s| s == session, "its session was deleted");
    }

    /// Denies every waiting call (the service is shutting down: the turns can end).
    pub fn withdraw_all(&self) {
        self.withdraw(|_| true, "the service is shutting down");
    }

    fn withdraw(&self, of_session: impl Fn(&str) -> bool, reason: &str) {
        let mut book = self.book();
        let keys: Vec<Key> = book.pending.keys().filter(|(s, _)| of_session(s)).cloned().collect();
        for key in keys {
            if let Some(pending) = book.pending.remove(&key) {
                // The call may have stopped waiting just now: nobody is left to tell.
                let _ = pending.reply.send(Approval::denied_because(reason));
            }
            book.settle(key, Settled::Withdrawn);
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Nothing panics while holding it; a poisoned lock still holds whole data.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A wait that ends this close to its deadline ended by the policy's timeout (the layer's
/// timer starts a moment before the entry's deadline is taken).
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

fn expired_or_withdrawn(deadline: Option<Instant>) -> Settled {
    match deadline {
        Some(deadline) if Instant::now() + DEADLINE_SLACK >= deadline => Settled::Expired,
        _ => Settled::Withdrawn,
    }
}

/// Removes a call's pending entry when its wait ends without an answer.
struct Waiting<'a> {
    approvals: &'a Approvals,
    key: Key,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut book = self.approvals.book();
        if let Some(pending) = book.pending.remove(&self.key) {
            let how = expired_or_withdrawn(pending.deadline);
            book.settle(self.key.clone(), how);
        }
    }
}

#[async_trait::async_trait]
impl Approver for Approvals {
    async fn approve(&self, call: &ToolCall) -> Approval {
        let Ok(turn) = TURN.try_with(Clone::clone) else {
            return Approval::denied_because("no client is connected to approve it");
        };
        let timeout = self.policies.approval(&call.name).flatten();
        let key = (turn.session.clone(), call.id.clone());
        let (reply, answer) = oneshot::channel();
        {
            let mut book = self.book();
            if book.pending.contains_key(&key) {
                return Approval::denied_because("another call with the same id is waiting");
            }
            let deadline = timeout.map(|t| Instant::now() + t);
            book.pending.insert(key.clone(), Pending { reply, deadline });
        }
        let _waiting = Waiting { approvals: self, key };
        let question = Question {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            timeout,
        };
        if turn.questions.send(question).is_err() {
            return Approval::denied_because("the client went away");
        }
        tracing::info!(session = %turn.session, call = %call.id, tool = %call.name, "waiting for an approval");
        let approval =
            answer.await.unwrap_or_else(|_| Approval::denied_because("it was not answered"));
        tracing::info!(session = %turn.session, call = %call.id, ?approval, "approval answered");
        approval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approvals(toml: &str) -> std::sync::Arc<Approvals> {
        std::sync::Arc::new(Approvals::new(toml::from_str(toml).unwrap()))
    }

    fn call(id: &str) -> ToolCall {
        ToolCall::with_id(id, "pay", json!({"amount": 5}))
    }

    /// Starts `approve(call)` inside the turn of `session`; returns the task and the question.
    async fn ask(
        approvals: &std::sync::Arc<Approvals>,
        session: &str,
        id: &str,
    ) -> (tokio::task::JoinHandle<Approval>, Question) {
        let (turn, mut questions) = TurnApprovals::new(session);
        let approver = std::sync::Arc::clone(approvals);
        let call = call(id);
        let task = tokio::spawn(scope(turn, async move { approver.approve(&call).await }));
        let question = questions.recv().await.unwrap();
        (task, question)
    }

    #[tokio::test]
    async fn answers_reach_the_waiting_call_once() {
        let approvals = approvals("[tools.pay]\napproval = true\napproval_timeout_ms = 5000");
        assert!(approvals.required("pay") && !approvals.required("other"));
        let (task, question) = ask(&approvals, "s1", "call_a").await;
        assert_eq!(question.timeout, Some(Duration::from_secs(5)));
        assert_eq!(question.to_json()["timeout_ms"], 5000);
        assert_eq!(question.to_json()["arguments"], json!({"amount": 5}));
        assert_eq!(approvals.pending(), 1);
        // Keyed by session too: the same call id elsewhere is unknown.
        let other = approvals.answer("s2", "call_a", Approval::Approved);
        assert_eq!(other, Err(AnswerError::Unknown));
        approvals.answer("s1", "call_a", Approval::denied_because("no")).unwrap();
        assert_eq!(task.await.unwrap(), Approval::denied_because("no"));
        assert_eq!(approvals.pending(), 0);
        let again = approvals.answer("s1", "call_a", Approval::Approved);
        assert_eq!(again, Err(AnswerError::Settled(Settled::Denied)));
        assert!(again.unwrap_err().message("s1", "call_a").contains("already denied"));
    }

    #[tokio::test]
    async fn an_abandoned_wait_leaves_nothing_pending() {
        let approvals = approvals("[tools.pay]\napproval = true\napproval_timeout_ms = 0");
        let (task, question) = ask(&approvals, "s1", "call_b").await;
        assert_eq!(question.timeout, None);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(approvals.pending(), 0);
        let late = approvals.answer("s1", "call_b", Approval::Approved);
        assert_eq!(late, Err(AnswerError::Settled(Settled::Withdrawn)));
    }

    #[tokio::test]
    async fn deleting_a_session_or_shutting_down_denies_the_waiting_calls() {
        let approvals = approvals("[tools.pay]\napproval = true");
        let (first, _) = ask(&approvals, "s1", "call_c").await;
        let (second, _) = ask(&approvals, "s2", "call_d").await;
        approvals.withdraw_session("s1");
        assert_eq!(first.await.unwrap(), Approval::denied_because("its session was deleted"));
        assert_eq!(approvals.pending(), 1, "the other session's call still waits");
        approvals.withdraw_all();
        let second = second.await.unwrap();
        assert_eq!(second, Approval::denied_because("the service is shutting down"));
        assert_eq!(approvals.pending(), 0);
        let late = approvals.answer("s2", "call_d", Approval::Approved);
        assert_eq!(late, Err(AnswerError::Settled(Settled::Withdrawn)));
    }

    #[tokio::test]
    async fn outside_a_turn_calls_are_denied() {
        let approvals = approvals("[tools.pay]\napproval = true");
        let approval = approvals.approve(&call("call_e")).await;
        assert!(
            matches!(approval, Approval::Denied { reason: Some(r) } if r.contains("no client"))
        );
        assert_eq!(approvals.pending(), 0);
    }
}
