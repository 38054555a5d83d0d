//! The session routes' side of persistence ([`crate::runtime::store`]): saving after a turn
//! and at creation, finding a session that is not in memory on disk, deleting its files, and
//! listing. Every file operation runs on a blocking thread.

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

use super::extract::ApiError;
use crate::runtime::sessions::{Full, SessionState, Slot};
use crate::runtime::setup::AgentRuntime;
use crate::runtime::store::{valid_id, Loaded, Meta};

/// Saves the session `guard` holds (it is moved to the blocking thread and back) and
/// records the outcome in the summary. Returns the guard (`None` only if the save thread
/// panicked, which releases it) and the failure, logged at warn. Nothing is written without
/// a store, or for a session that `DELETE` removed: a removal that comes while the file is
/// written is redone after it.
pub(crate) async fn save(
    rt: &AgentRuntime,
    slot: &Arc<Slot>,
    guard: OwnedMutexGuard<SessionState>,
) -> (Option<OwnedMutexGuard<SessionState>>, Option<String>) {
    let Some(store) = rt.store.clone() else { return (Some(guard), None) };
    if slot.is_deleted() {
        return (Some(guard), None);
    }
    let meta = slot.meta(&guard);
    let id = meta.id.clone();
    let deleted = Arc::clone(slot);
    let saved = tokio::task::spawn_blocking(move || {
        let result = store.save(&guard.session, &meta);
        if deleted.is_deleted() {
            if let Err(e) = store.remove(&meta.id) {
                tracing::warn!(session = %meta.id, error = %e, "cannot delete the session file");
            }
        }
        (guard, result)
    })
    .await;
    let (guard, failure) = match saved {
        Ok((guard, Ok(()))) => (Some(guard), None),
        Ok((guard, Err(e))) => (Some(guard), Some(format!("{e:#}"))),
        Err(e) => (None, Some(format!("the save task failed: {e}"))),
    };
    if let Some(message) = &failure {
        tracing::warn!(session = %id, error = %message, "cannot save the session");
    }
    slot.set_save_error(failure.clone());
    (guard, failure)
}

/// Saves a session before it is in the table (at its creation); returns it and the failure
/// (logged at warn).
pub(crate) async fn save_new(
    rt: &AgentRuntime,
    state: SessionState,
) -> Result<(SessionState, Option<String>), ApiError> {
    let Some(store) = rt.store.clone() else { return Ok((state, None)) };
    let voice = state.voice_name();
    let meta = Meta::new(&state.session, 0, None, Default::default(), voice);
    let saved = tokio::task::spawn_blocking(move || {
        let result = store.save(&state.session, &meta);
        (state, result)
    })
    .await;
    match saved {
        Ok((state, result)) => {
            let failure = result.err().map(|e| format!("{e:#}"));
            if let Some(message) = &failure {
                tracing::warn!(session = %state.session.id(), error = %message, "cannot save the new session");
            }
            Ok((state, failure))
        }
        Err(e) => Err(ApiError::internal(format!("the save task failed: {e}"))),
    }
}

/// The session `id`: in memory, else read back from disk into the table. `404` for an id
/// that is neither (or not one the service gives out), `500` naming the session and the
/// problem when its file cannot be read, `503` when the table is full of busy sessions.
pub(crate) async fn find(rt: &AgentRuntime, id: &str) -> Result<Arc<Slot>, ApiError> {
    if let Some(slot) = rt.sessions.get(id) {
        return Ok(slot);
    }
    let Some(store) = rt.store.clone() else { return Err(ApiError::unknown_session(id)) };
    if !valid_id(id) {
        return Err(ApiError::unknown_session(id));
    }
    let owned = id.to_owned();
    let loaded = match tokio::task::spawn_blocking(move || store.load(&owned)).await {
        Ok(Ok(Some(loaded))) => loaded,
        Ok(Ok(None)) => return Err(ApiError::unknown_session(id)),
        Ok(Err(message)) => {
            tracing::error!(session = %id, error = %message, "cannot load the saved session");
            return Err(ApiError::internal(format!(
                "session {id:?} is saved but cannot be loaded: {message}"
            )));
        }
        Err(e) => {
            return Err(ApiError::internal(format!("session {id:?}: the load task failed: {e}")))
        }
    };
    let Loaded { session, meta } = loaded;
    let voice = rt.voice.as_ref().map(|v| {
        let saved = meta.voice.as_deref().and_then(|name| v.library.get(name));
        if saved.is_none() && meta.voice.is_some() {
            tracing::warn!(session = %id, voice = ?meta.voice, start = %v.start.name,
                "the saved session's voice is not in the library: it speaks in the start voice");
        }
        Arc::clone(saved.unwrap_or(&v.start))
    });
    match rt.sessions.restore(SessionState::new(session, voice), &meta) {
        Ok((slot, evicted)) => {
            tracing::info!(session = %id, turns = meta.turns, "session loaded from disk");
            log_eviction(evicted);
            Ok(slot)
        }
        Err(full) => Err(table_full(full)),
    }
}

/// Logs a session evicted from memory.
pub(crate) fn log_eviction(evicted: Option<String>) {
    if let Some(old) = evicted {
        tracing::info!(session = %old, "session evicted from memory (max_sessions reached)");
    }
}

/// The answer when every slot is busy.
pub(crate) fn table_full(full: Full) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "all {} session slots are in a turn; retry later or raise [agent] max_sessions",
            full.max
        ),
    )
    .retry_after(1)
}

/// Deletes the files of `id`: whether there were any. An error names the session.
pub(crate) async fn remove(rt: &AgentRuntime, id: &str) -> Result<bool, String> {
    let Some(store) = rt.store.clone() else { return Ok(false) };
    if !valid_id(id) {
        return Ok(false);
    }
    let owned = id.to_owned();
    match tokio::task::spawn_blocking(move || store.remove(&owned)).await {
        Ok(Ok(existed)) => Ok(existed),
        Ok(Err(e)) => Err(format!("cannot delete the files of session {id:?}: {e}")),
        Err(e) => Err(format!("session {id:?}: the delete task failed: {e}")),
    }
}

/// One session of `GET /v1/sessions`.
#[derive(Debug, Serialize)]
pub(crate) struct Listed {
    id: String,
    /// `null` for a saved session whose meta file is lost.
    created_unix: Option<u64>,
    turns: Option<usize>,
    /// In memory (`false`: on disk only; it is loaded when a request names it).
    in_memory: bool,
}

/// The sessions in memory, then those only on disk; each group oldest first.
pub(crate) async fn list(rt: &AgentRuntime) -> Result<Vec<Listed>, String> {
    let mut listed: Vec<Listed> = rt
        .sessions
        .summaries()
        .into_iter()
        .map(|s| Listed {
            id: s.id,
            created_unix: Some(s.created_unix),
            turns: Some(s.turns),
            in_memory: true,
        })
        .collect();
    if let Some(store) = rt.store.clone() {
        let dir = store.dir().display().to_string();
        let saved = match tokio::task::spawn_blocking(move || store.list()).await {
            Ok(Ok(saved)) => saved,
            Ok(Err(e)) => return Err(format!("cannot list the sessions in {dir}: {e}")),
            Err(e) => return Err(format!("the listing task failed: {e}")),
        };
        let loaded: HashSet<String> = listed.iter().map(|l| l.id.clone()).collect();
        for s in saved {
            // Loaded meanwhile: already listed from memory.
            if loaded.contains(&s.id) {
                continue;
            }
            let turns = s.turns;
            listed.push(Listed { id: s.id, created_unix: s.created_unix, turns, in_memory: false });
        }
    }
    listed.sort_by(|a, b| {
        (!a.in_memory, a.created_unix, &a.id).cmp(&(!b.in_memory, b.created_unix, &b.id))
    });
    Ok(listed)
}
