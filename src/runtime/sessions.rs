//! The service's conversations in memory: a bounded table of sessions, one turn at a time each.
//!
//! Each entry holds its [`Session`] behind an async mutex that a turn keeps for its whole
//! run: a second turn on the same session finds it locked ([`SessionTable`] callers answer
//! 409). A summary of each session ([`Summary`]) lives beside it, readable while a turn runs.
//!
//! The table holds at most `max` sessions. Creating one more evicts the session idle the
//! longest (no turn running); when every session is in a turn, creation fails ([`Full`]).
//! With `[agent] persist_sessions` an evicted session stays on disk
//! ([`crate::runtime::store`]) and comes back into the table ([`SessionTable::restore`]) when
//! a request names it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::OwnedMutexGuard;
use voxloop_core::agent::{CancelHandle, Usage};
use voxloop_core::session::Session;
use voxloop_voices::{SessionVoice, VoiceProfile};

use crate::runtime::store::{Meta, UsageTotals};

/// What a turn works on.
#[derive(Debug)]
pub struct SessionState {
    /// The conversation.
    pub session: Session,
    /// Its voice, which `timbre_rag` swaps and its speech follows (`None` without a voice
    /// library). The session's extensions hold the same handle, so its tool calls carry it.
    pub voice: Option<Arc<SessionVoice>>,
}

impl SessionState {
    /// `session`, speaking in `voice` from now on.
    pub fn new(mut session: Session, voice: Option<Arc<VoiceProfile>>) -> Self {
        let voice = voice.map(|v| Arc::new(SessionVoice::new(v)));
        match &voice {
            Some(voice) => session.extensions_mut().insert(Arc::clone(voice)),
            None => session.extensions_mut().remove::<Arc<SessionVoice>>(),
        }
        Self { session, voice }
    }

    /// The name of the voice the next speech is in.
    pub fn voice_name(&self) -> Option<String> {
        self.voice.as_ref().map(|v| v.current().name.clone())
    }
}

/// What `GET /v1/sessions/{id}` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub id: String,
    pub created_unix: u64,
    /// `speech` or `text`.
    pub mode: &'static str,
    /// Turns run (each user input is one, whatever its end).
    pub turns: usize,
    /// Entries of the history (system, declarations, human, assistant, tool results).
    pub history_entries: usize,
    /// Token ids of the history in the model's KV cache.
    pub cached_tokens: usize,
    /// The voice the next speech is in.
    pub voice: Option<String>,
    /// Whether a turn is running.
    pub busy: bool,
    /// How the last turn ended (`completed`, `max_steps`, `interrupted`, `error`).
    pub last_end_reason: Option<&'static str>,
    /// Token counts over all turns.
    pub usage: UsageTotals,
    /// Why the session's last save to disk failed (`null` when it succeeded, or when
    /// sessions are not saved).
    pub save_error: Option<String>,
}

/// One session of the table.
#[derive(Debug)]
pub struct Slot {
    state: Arc<tokio::sync::Mutex<SessionState>>,
    info: Mutex<Info>,
    /// Set by `DELETE`: a turn that ends afterwards must not save the session again.
    deleted: AtomicBool,
}

#[derive(Debug)]
struct Info {
    summary: Summary,
    last_used: Instant,
    running: Option<CancelHandle>,
}

impl Slot {
    /// Takes the session for a turn; `None` while another turn holds it.
    pub fn try_begin(&self) -> Option<OwnedMutexGuard<SessionState>> {
        let guard = Arc::clone(&self.state).try_lock_owned().ok()?;
        let mut info = self.info();
        info.summary.busy = true;
        info.last_used = Instant::now();
        Some(guard)
    }

    /// Records the cancel switch of the running turn (for `DELETE`).
    pub fn set_running(&self, cancel: Option<CancelHandle>) {
        self.info().running = cancel;
    }

    /// Cancels the running turn, if any.
    pub fn cancel_running(&self) {
        if let Some(cancel) = self.info().running.take() {
            cancel.cancel();
        }
    }

    /// Updates the summary after a turn (or a request that did not run one: `reason` None)
    /// and marks the session idle. Call it while still holding the state.
    pub fn end(&self, state: &SessionState, usage: Usage, reason: Option<&'static str>) {
        self.record(state, usage, reason);
        self.idle();
    }

    /// Updates the summary after a turn (see [`Slot::end`]); the session stays busy.
    pub fn record(&self, state: &SessionState, usage: Usage, reason: Option<&'static str>) {
        let mut info = self.info();
        refresh(&mut info.summary, state);
        if let Some(reason) = reason {
            info.summary.turns += 1;
            info.summary.last_end_reason = Some(reason);
            info.summary.usage += usage;
        }
        info.running = None;
    }

    /// Marks the session idle (the end of [`Slot::end`]).
    pub fn idle(&self) {
        let mut info = self.info();
        info.summary.busy = false;
        info.last_used = Instant::now();
    }

    /// What the service saves beside the session's history.
    pub fn meta(&self, state: &SessionState) -> Meta {
        let info = self.info();
        let s = &info.summary;
        Meta::new(&state.session, s.turns, s.last_end_reason, s.usage, s.voice.clone())
    }

    /// Records the outcome of a save (`None`: it succeeded).
    pub fn set_save_error(&self, error: Option<String>) {
        self.info().summary.save_error = error;
    }

    /// Marks the session deleted (see [`Slot::is_deleted`]).
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
    }

    /// Whether `DELETE` removed the session: its files stay removed.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// The summary now.
    pub fn summary(&self) -> Summary {
        self.info().summary.clone()
    }

    fn info(&self) -> MutexGuard<'_, Info> {
        // Nothing panics while holding it; a poisoned lock still holds whole data.
        self.info.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slot {
    /// A slot for `state`; with the counts of a session read back from disk, if `meta`.
    fn new(state: SessionState, meta: Option<&Meta>) -> Self {
        let mut summary = Summary {
            id: state.session.id().to_owned(),
            created_unix: state.session.created_unix(),
            mode: "speech",
            turns: 0,
            history_entries: 0,
            cached_tokens: 0,
            voice: None,
            busy: false,
            last_end_reason: None,
            usage: UsageTotals::default(),
            save_error: None,
        };
        if let Some(meta) = meta {
            summary.turns = meta.turns;
            summary.last_end_reason = meta.last_end_reason.as_deref().and_then(end_reason);
            summary.usage = meta.usage;
        }
        refresh(&mut summary, &state);
        Self {
            state: Arc::new(tokio::sync::Mutex::new(state)),
            info: Mutex::new(Info { summary, last_used: Instant::now(), running: None }),
            deleted: AtomicBool::new(false),
        }
    }
}

/// The static name of a turn's end read back from a file.
fn end_reason(name: &str) -> Option<&'static str> {
    ["completed", "max_steps", "interrupted", "error"].into_iter().find(|known| *known == name)
}

fn refresh(summary: &mut Summary, state: &SessionState) {
    summary.history_entries = state.session.history().len();
    summary.cached_tokens = state.session.cached_ids().len();
    summary.voice = state.voice_name();
    summary.mode = if state.session.settings().speech { "speech" } else { "text" };
}

/// The table is full of sessions that are all in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub max: usize,
}

/// The sessions (see the module docs).
#[derive(Debug)]
pub struct SessionTable {
    max: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl SessionTable {
    /// A table of at most `max` sessions (at least 1).
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), slots: Mutex::new(HashMap::new()) }
    }

    /// The most sessions it keeps.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Adds a session, evicting the longest idle one if the table is full. Returns its id
    /// and, if one was evicted, that session's id.
    pub fn insert(&self, state: SessionState) -> Result<(String, Option<String>), Full> {
        let id = state.session.id().to_owned();
        let slot = Arc::new(Slot::new(state, None));
        let (_, evicted) = self.place(id.clone(), slot)?;
        Ok((id, evicted))
    }

    /// Adds a session read back from disk with its counts (`meta`), like
    /// [`SessionTable::insert`]; when the table already holds that session (another request
    /// loaded it first), that one is kept and returned. Returns the slot and the evicted id.
    pub fn restore(
        &self,
        state: SessionState,
        meta: &Meta,
    ) -> Result<(Arc<Slot>, Option<String>), Full> {
        let id = state.session.id().to_owned();
        self.place(id, Arc::new(Slot::new(state, Some(meta))))
    }

    /// The summaries of the sessions in the table.
    pub fn summaries(&self) -> Vec<Summary> {
        let slots: Vec<_> = self.slots().values().cloned().collect();
        slots.iter().map(|s| s.summary()).collect()
    }

    fn place(&self, id: String, slot: Arc<Slot>) -> Result<(Arc<Slot>, Option<String>), Full> {
        let mut slots = self.slots();
        if let Some(existing) = slots.get(&id) {
            return Ok((Arc::clone(existing), None));
        }
        let mut evicted = None;
        if slots.len() >= self.max {
            let idle = slots
                .iter()
                .filter(|(_, s)| s.state.try_lock().is_ok())
                .min_by_key(|(_, s)| s.info().last_used)
                .map(|(id, _)| id.clone());
            match idle {
                Some(old) => {
                    slots.remove(&old);
                    evicted = Some(old);
                }
                None => return Err(Full { max: self.max }),
            }
        }
        slots.insert(id, Arc::clone(&slot));
        Ok((slot, evicted))
    }

    /// The session `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots().get(id).cloned()
    }

    /// Removes the session `id` (a running turn goes on with its own handle: cancel it).
    pub fn remove(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots().remove(id)
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxloop_core::session::SessionSettings;

    fn state() -> SessionState {
        SessionState::new(Session::new(SessionSettings::default()), None)
    }

    #[test]
    fn one_turn_at_a_time_per_session() {
        let table = SessionTable::new(4);
        let (id, _) = table.insert(state()).unwrap();
        let slot = table.get(&id).unwrap();
        let turn = slot.try_begin().expect("an idle session can start a turn");
        assert!(slot.summary().busy);
        assert!(slot.try_begin().is_none(), "a second concurrent turn is refused");
        slot.end(
            &turn,
            Usage { input_tokens: 5, output_tokens: 3, audio_tokens: 1, ..Usage::default() },
            Some("completed"),
        );
        drop(turn);
        let summary = slot.summary();
        assert_eq!((summary.turns, summary.busy, summary.usage.input_tokens), (1, false, 5));
        assert!(slot.try_begin().is_some(), "free again after the turn");
    }

    #[test]
    fn the_longest_idle_session_is_evicted_and_busy_ones_never() {
        let table = SessionTable::new(2);
        let (a, _) = table.insert(state()).unwrap();
        let (b, _) = table.insert(state()).unwrap();
        // a is in a turn: b goes even though a is older.
        let a_turn = table.get(&a).unwrap().try_begin().unwrap();
        let (c, evicted) = table.insert(state()).unwrap();
        assert_eq!(evicted.as_deref(), Some(b.as_str()));
        assert!(table.get(&b).is_none() && table.get(&c).is_some());
        // a and c both busy: no room.
        let c_turn = table.get(&c).unwrap().try_begin().unwrap();
        assert_eq!(table.insert(state()).unwrap_err(), Full { max: 2 });
        assert_eq!(table.len(), 2);
        drop((a_turn, c_turn));
        let (_, evicted) = table.insert(state()).unwrap();
        assert!(evicted.is_some());
    }

    #[test]
    fn delete_cancels_the_running_turn() {
        let table = SessionTable::new(1);
        let (id, _) = table.insert(state()).unwrap();
        let slot = table.get(&id).unwrap();
        let cancel = CancelHandle::new();
        slot.set_running(Some(cancel.clone()));
        let removed = table.remove(&id).unwrap();
        removed.cancel_running();
        assert!(cancel.is_cancelled());
        assert_eq!(table.len(), 0);
    }
}
