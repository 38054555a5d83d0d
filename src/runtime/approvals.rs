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
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use voxloop_core::tool::{Approval, ApprovalRequest};
use voxloop_policies::PolicyConfig;

/// Settled calls remembered to explain a late answer.
pub const SETTLED_KEPT: usize = 256;

/// The data of the `approval_request` event announcing `request`.
pub fn request_json(request: &ApprovalRequest) -> Value {
    json!({
        "id": request.call_id,
        "name": request.name,
        "arguments": request.arguments,
        "timeout_ms": request.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
    })
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
    request: ApprovalRequest,
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

    /// Drops the entries of calls that stopped waiting unanswered.
    fn prune(&mut self) {
        let gone: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.request.is_waiting())
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(pending) = self.pending.remove(&key) {
                self.settle(key, expired_or_withdrawn(pending.deadline));
            }
        }
    }
}

/// The pending approval questions of every session (see the module docs).
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
    /// The book for the tools `policies` configures.
    pub fn new(policies: PolicyConfig) -> Self {
        Self { policies, book: Mutex::new(Book::default()) }
    }

    /// Whether calls of `tool` wait for an approval.
    pub fn required(&self, tool: &str) -> bool {
        self.policies.approval(tool).is_some()
    }

    /// The calls waiting now.
    pub fn pending(&self) -> usize {
        self.book().pending.len()
    }

    /// Files the question of a call of `session` until it is answered or stops waiting. A
    /// second question with the same key is denied at once (call ids are unique per turn).
    pub fn register(&self, session: &str, request: ApprovalRequest) {
        let key = (session.to_owned(), request.call_id.clone());
        let mut book = self.book();
        if book.pending.contains_key(&key) {
            let _ = request
                .answer(Approval::denied_because("another call with the same id is waiting"));
            return;
        }
        let deadline = request.timeout.map(|t| Instant::now() + t);
        tracing::info!(session, call = %request.call_id, tool = %request.name, "waiting for an approval");
        book.pending.insert(key, Pending { request, deadline });
    }

    /// Answers the call `call_id` of `session`.
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
        tracing::info!(session, call = call_id, ?approval, "approval answered");
        match pending.request.answer(approval) {
            Ok(()) => {
                book.settle(key, how);
                Ok(())
            }
            // The wait ended just now, after the book was pruned.
            Err(_) => {
                let how = expired_or_withdrawn(pending.deadline);
                book.settle(key, how);
                Err(AnswerError::Settled(how))
            }
        }
    }

    /// Denies the calls of `session` still waiting (the session is deleted).
    pub fn withdraw_session(&self, session: &str) {
        self.withdraw(|s| s == session, "its session was deleted");
    }

    /// Denies every call still waiting (the service shuts down).
    pub fn withdraw_all(&self) {
        self.withdraw(|_| true, "the service is shutting down");
    }

    fn withdraw(&self, of_session: impl Fn(&str) -> bool, reason: &str) {
        let mut book = self.book();
        let keys: Vec<Key> = book.pending.keys().filter(|(s, _)| of_session(s)).cloned().collect();
        for key in keys {
            if let Some(pending) = book.pending.remove(&key) {
                // The call may have stopped waiting just now: nobody is left to tell.
                let _ = pending.request.answer(Approval::denied_because(reason));
            }
            book.settle(key, Settled::Withdrawn);
        }
    }

    /// The book, pruned of calls that stopped waiting.
    fn book(&self) -> MutexGuard<'_, Book> {
        // Nothing panics while holding it; a poisoned lock still holds whole data.
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        book.prune();
        book
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;
    use tokio::sync::mpsc;
    use voxloop_core::tool::ApprovalAsker;

    use super::*;

    fn approvals(toml: &str) -> Arc<Approvals> {
        Arc::new(Approvals::new(toml::from_str(toml).unwrap()))
    }

    /// A call of `session` that asks (as a turn's policy layer does) and is filed (as the
    /// turn's stream does); the waiting call and its question.
    async fn ask(
        approvals: &Arc<Approvals>,
        session: &str,
        id: &str,
        timeout: Option<Duration>,
    ) -> (tokio::task::JoinHandle<Approval>, ApprovalRequest) {
        let (tx, mut questions) = mpsc::unbounded_channel();
        let asker = ApprovalAsker::new(move |request| {
            let _ = tx.send(request);
        });
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            asker.ask(&id, "pay", &serde_json::json!({"amount": 5}), timeout).await
        });
        let question = questions.recv().await.unwrap();
        approvals.register(session, question.clone());
        (task, question)
    }

    #[tokio::test]
    async fn answers_reach_the_waiting_call_once() {
        let approvals = approvals("[tools.pay]\napproval = true\napproval_timeout_ms = 5000");
        assert!(approvals.required("pay") && !approvals.required("other"));
        let (task, question) = ask(&approvals, "s1", "call_a", Some(Duration::from_secs(5))).await;
        assert_eq!(request_json(&question)["timeout_ms"], 5000);
        assert_eq!(request_json(&question)["arguments"], serde_json::json!({"amount": 5}));
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
        let approvals = approvals("[tools.pay]\napproval = true");
        let (task, question) = ask(&approvals, "s1", "call_b", None).await;
        assert_eq!(request_json(&question)["timeout_ms"], Value::Null);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(approvals.pending(), 0);
        let late = approvals.answer("s1", "call_b", Approval::Approved);
        assert_eq!(late, Err(AnswerError::Settled(Settled::Withdrawn)));
    }

    #[tokio::test]
    async fn deleting_a_session_or_shutting_down_denies_the_waiting_calls() {
        let approvals = approvals("[tools.pay]\napproval = true");
        let (first, _) = ask(&approvals, "s1", "call_c", None).await;
        let (second, _) = ask(&approvals, "s2", "call_d", None).await;
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
    async fn a_duplicate_question_is_denied() {
        let approvals = approvals("[tools.pay]\napproval = true");
        let (_first, _) = ask(&approvals, "s1", "call_e", None).await;
        let (second, _) = ask(&approvals, "s1", "call_e", None).await;
        let second = second.await.unwrap();
        assert!(matches!(second, Approval::Denied { reason: Some(r) } if r.contains("same id")));
        assert_eq!(approvals.pending(), 1);
    }
}
