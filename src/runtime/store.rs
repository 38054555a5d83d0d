//! The service's sessions on disk: one directory (`[agent] sessions_dir`, by default
//! `<data_dir>/sessions`), two files per session.
//!
//! - `<id>.json`: the conversation, written by [`Session::save`] (settings and history,
//!   audio as its mel features; atomically: temporary file, fsync, rename).
//! - `<id>.meta.json`: what the service counts beside it ([`Meta`]: turns, how the last one
//!   ended, token usage, the voice), written the same way right after it.
//!
//! The conversation file is the session: without it a session does not exist; a missing or
//! unreadable meta file only loses the counts (the turns are then counted from the history).
//!
//! Ids are checked ([`valid_id`]) before they become file names: only the form the service
//! itself gives out (`conv_` and 32 lowercase hex digits) is accepted, so no request can name
//! a file outside the directory.
//!
//! Everything here blocks: call it from `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use voxloop_core::agent::Usage;
use voxloop_core::session::{Session, Turn};

/// The version of the meta files written; others are ignored (with a warning).
const META_FORMAT: u32 = 1;

/// Whether `id` has the form of the ids the service gives out (`conv_` + 32 lowercase hex
/// digits): the only ids that ever name a file.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("conv_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What the service keeps of a session beside its history.
/// Token counts over a session's turns.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageTotals {
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub audio_tokens: usize,
}

impl std::ops::AddAssign<Usage> for UsageTotals {
    fn add_assign(&mut self, u: Usage) {
        self.input_tokens += u.input_tokens;
        self.output_tokens += u.output_tokens;
        self.audio_tokens += u.audio_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub id: String,
    pub created_unix: u64,
    pub turns: usize,
    pub last_end_reason: Option<String>,
    pub usage: UsageTotals,
    /// The voice the next speech is in.
    pub voice: Option<String>,
}

impl Meta {
    /// The meta data of a session now.
    pub fn new(
        session: &Session,
        turns: usize,
        last_end_reason: Option<&str>,
        usage: UsageTotals,
        voice: Option<String>,
    ) -> Self {
        Self {
            format: META_FORMAT,
            id: session.id().to_owned(),
            created_unix: session.created_unix(),
            turns,
            last_end_reason: last_end_reason.map(str::to_owned),
            usage,
            voice,
        }
    }

    /// The counts of a session whose meta file is lost: its turns are its human entries.
    pub fn recovered(session: &Session) -> Self {
        let turns = session.history().iter().filter(|t| matches!(t, Turn::Human { .. })).count();
        Self::new(session, turns, None, UsageTotals::default(), None)
    }
}

/// A session read back from disk.
#[derive(Debug)]
pub struct Loaded {
    pub session: Session,
    pub meta: Meta,
}

/// A saved session in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    pub id: String,
    /// `None` when the meta file is missing or unreadable.
    pub created_unix: Option<u64>,
    pub turns: Option<usize>,
}

/// The sessions directory (see the module docs).
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("[agent] sessions_dir {}: cannot create it", dir.display()))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The conversation file of `id` (which must be [`valid_id`]).
    pub fn session_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.meta.json"))
    }

    /// Writes the session, then its meta data. Errors name the file.
    pub fn save(&self, session: &Session, meta: &Meta) -> anyhow::Result<()> {
        let id = session.id();
        anyhow::ensure!(valid_id(id), "session id {id:?} cannot name a file");
        session.save(self.session_path(id))?;
        let path = self.meta_path(id);
        let json = serde_json::to_vec(meta).context("cannot serialise the session meta data")?;
        voxloop_core::fs::write_atomically(&path, &json)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads the session `id`: `Ok(None)` when it has no file (or the id is not one the
    /// service gives out), `Err` with a message naming the file when the file is there but
    /// cannot be read or is not this session.
    pub fn load(&self, id: &str) -> Result<Option<Loaded>, String> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.session_path(id);
        let session = match Session::load(&path) {
            Ok(session) => session,
            Err(voxloop_core::Error::SessionIo { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.to_string()),
        };
        if session.id() != id {
            return Err(format!(
                "session file {}: it holds session {:?}, not {id:?}",
                path.display(),
                session.id()
            ));
        }
        let meta = match self.read_meta(id) {
            Ok(meta) if meta.id == id && meta.format == META_FORMAT => meta,
            Ok(_) => {
                tracing::warn!(session = %id, "meta file of another session or format: turns recounted");
                Meta::recovered(&session)
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "no usable meta file: turns recounted");
                Meta::recovered(&session)
            }
        };
        Ok(Some(Loaded { session, meta }))
    }

    fn read_meta(&self, id: &str) -> anyhow::Result<Meta> {
        let path = self.meta_path(id);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Deletes the files of `id`; whether its conversation file was there.
    pub fn remove(&self, id: &str) -> std::io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        let existed = remove_if_there(&self.session_path(id))?;
        remove_if_there(&self.meta_path(id))?;
        Ok(existed)
    }

    /// The saved sessions, by id.
    pub fn list(&self) -> std::io::Result<Vec<Listed>> {
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if !valid_id(id) {
                continue;
            }
            let meta = self.read_meta(id).ok().filter(|m| m.id == id);
            listed.push(Listed {
                id: id.to_owned(),
                created_unix: meta.as_ref().map(|m| m.created_unix),
                turns: meta.map(|m| m.turns),
            });
        }
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(listed)
    }
}

fn remove_if_there(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxloop_core::session::SessionSettings;

    #[test]
    fn only_the_ids_the_service_gives_out_are_file_names() {
        let id = Session::new(SessionSettings::default()).id().to_owned();
        assert!(valid_id(&id), "{id}");
        for bad in [
            "",
            "conv_",
            "../../etc/passwd",
            "conv_../../etc",
            "conv_0123456789abcdef0123456789ABCDEF",
            "conv_0123456789abcdef0123456789abcde/",
            "conv_0123456789abcdef0123456789abcdef0",
            "x_0123456789abcdef0123456789abcdef",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_session_and_its_counts_come_back_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path().join("s")).unwrap();
        let session = Session::new(SessionSettings::default());
        let id = session.id().to_owned();
        assert!(store.load(&id).unwrap().is_none());
        let usage = UsageTotals { input_tokens: 9, output_tokens: 4, audio_tokens: 2 };
        let meta = Meta::new(&session, 3, Some("max_steps"), usage, Some("alto".into()));
        store.save(&session, &meta).unwrap();
        let loaded = store.load(&id).unwrap().unwrap();
        assert_eq!((loaded.session.id(), &loaded.meta), (id.as_str(), &meta));
        let listed = store.list().unwrap();
        assert_eq!(
            listed,
            vec![Listed { id: id.clone(), created_unix: Some(meta.created_unix), turns: Some(3) }]
        );

        // A lost meta file loses the counts, not the session.
        std::fs::remove_file(store.meta_path(&id)).unwrap();
        assert_eq!(store.load(&id).unwrap().unwrap().meta, Meta::recovered(&session));

        assert!(store.remove(&id).unwrap());
        assert!(!store.remove(&id).unwrap());
        assert!(store.load(&id).unwrap().is_none());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_broken_or_foreign_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path().to_owned()).unwrap();
        let a = Session::new(SessionSettings::default());
        let b = Session::new(SessionSettings::default());
        std::fs::write(store.session_path(a.id()), "{ not json").unwrap();
        let err = store.load(a.id()).unwrap_err();
        assert!(err.contains(&format!("{}.json", a.id())), "{err}");
        // b's file under a's name
        b.save(store.session_path(a.id())).unwrap();
        let err = store.load(a.id()).unwrap_err();
        assert!(err.contains(b.id()) && err.contains(a.id()), "{err}");
    }
}
