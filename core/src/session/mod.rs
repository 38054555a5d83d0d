//! A conversation: its settings, its history of turns, and what of it the model's KV cache
//! holds. Sessions are saved to disk as JSON and resumed from it.
//!
//! # History
//!
//! A [`Session`] is a list of [`Turn`]s, each of which renders to exactly the prompt pieces the
//! model saw (stepfun-ai/Step-Audio2 `stepaudio2.py` `apply_chat_template`; tool results as in
//! its `examples.py`):
//!
//! | turn | rendered as |
//! |---|---|
//! | [`Turn::System`] | `<|BOT|>system\n{text}<|EOT|>` (trusted) |
//! | [`Turn::ToolSchemas`] | `<|BOT|>tool_json_schemas\n{json}<|EOT|>` (trusted) |
//! | [`Turn::Human`] | `<|BOT|>human\n` + parts (text untrusted, audio placeholders) + `<|EOT|>` |
//! | [`Turn::Assistant`] | the raw generated ids replayed: `<|BOT|>assistant\n[<tts_start>]{ids}<|EOT|>` |
//! | [`Turn::ToolResult`] | `<|BOT|>input\n{result}[{instruction}]<|EOT|>` (result untrusted) |
//!
//! The system and tool-declaration turns are written once, when the first turn starts
//! ([`SessionSettings::system_text`] fixes the date line then); later changes to the system
//! prompt or to the tool set apply to a new session (or after [`Session::reset`]).
//!
//! Audio input is kept as its log-mel chunks ([`AudioChunk`](crate::audio::AudioChunk), the
//! form decoding gives and the model reads), so that a resumed session can prefill it again;
//! in the JSON file the features are base64 of little-endian `f32` (about 1.7 MB per 25 s of
//! speech), and loading refuses a chunk whose features are not 128 values per frame.
//!
//! # The KV cache
//!
//! The agent keeps the model's cache in step with the history: a session records which of
//! its turns are in the cache and their token ids ([`Session::cached_ids`],
//! [`Session::turn_ids`]). A turn goes on by extending the cache with only the turns not yet
//! in it. The cache record is not saved: a loaded session (or one whose model was used by
//! another session in between) is prefilled again, once, at its next turn.
//!
//! # Files
//!
//! [`Session::save`] writes the JSON to a temporary file in the same directory, flushes it
//! to disk and renames it over the target, so a crash leaves either the old file or the new
//! one, never a torn one.

mod settings;
mod turn;

use std::ops::Range;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use settings::{
    DateLine, SamplingSettings, SessionSettings, DEFAULT_SYSTEM_PROMPT, DEFAULT_VOICE_INSTRUCTION,
    ENGLISH_MONTHS, ENGLISH_WEEKDAYS,
};
pub(crate) use turn::call_ids;
pub use turn::{AssistantTurn, HumanPart, ToolResultTurn, Turn};

use crate::tool::Extensions;
use crate::{Error, Result};

/// The version written in saved files; loading refuses other versions.
pub const SESSION_FORMAT: u32 = 1;

/// Which part of a session the model's KV cache holds (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheState {
    /// The agent whose model holds it.
    pub(crate) owner: u64,
    /// That agent's cache epoch when it was filled for this session.
    pub(crate) epoch: u64,
    /// Every id in the cache, in order.
    pub(crate) ids: Vec<i64>,
    /// The positions of each cached turn, for the first `turns.len()` turns of the history.
    pub(crate) turns: Vec<Range<usize>>,
    /// The last cached turn is an assistant turn whose closing `<|EOT|>` is not in the cache
    /// yet (generation stops on it without decoding it).
    pub(crate) open: bool,
}

/// A conversation; see the module documentation.
#[derive(Debug)]
pub struct Session {
    id: String,
    created_unix: u64,
    settings: SessionSettings,
    history: Vec<Turn>,
    cache: Option<CacheState>,
    /// What the front door attached (not saved): every tool call of its turns carries it.
    extensions: Extensions,
}

/// The saved form of a session.
#[derive(Serialize, Deserialize)]
struct SessionFile {
    format: u32,
    id: String,
    created_unix: u64,
    settings: SessionSettings,
    history: Vec<Turn>,
}

impl Session {
    /// A new, empty conversation with a fresh id.
    pub fn new(settings: SessionSettings) -> Self {
        let created_unix =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self {
            id: format!("conv_{}", uuid::Uuid::new_v4().simple()),
            created_unix,
            settings,
            history: Vec::new(),
            cache: None,
            extensions: Extensions::new(),
        }
    }

    /// A conversation whose history the caller wrote (a stateless front door rebuilds it from
    /// each request), to be answered with
    /// [`Agent::continue_turn`](crate::agent::Agent::continue_turn). The turns must render to
    /// what the model saw: a system turn first, a `tool_json_schemas` turn after it when
    /// tools are declared, assistant turns with the ids they were generated with where
    /// known ([`AssistantTurn::from_text`] otherwise).
    pub fn with_history(settings: SessionSettings, history: Vec<Turn>) -> Self {
        Self { history, ..Self::new(settings) }
    }

    /// The conversation id (`gen_ai.conversation.id` of its spans).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the session was created, in seconds since the Unix epoch.
    pub fn created_unix(&self) -> u64 {
        self.created_unix
    }

    /// The settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The settings, to change them between turns. The system prompt, date line and voice
    /// instruction only take effect in a new history (see [`Session::reset`]).
    /// What the front door attached to this session for its tools (its voice, say): each
    /// tool call of its turns carries it in its [`ToolContext`](crate::tool::ToolContext).
    /// Not saved with the session.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The extensions, to attach something.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    pub fn settings_mut(&mut self) -> &mut SessionSettings {
        &mut self.settings
    }

    /// The turns so far.
    pub fn history(&self) -> &[Turn] {
        &self.history
    }

    /// Forgets the history (the settings stay); the next turn starts a new conversation
    /// with the same id.
    pub fn reset(&mut self) {
        self.history.clear();
        self.cache = None;
    }

    /// The ids the model's cache holds for this session, as of the end of the last turn
    /// (empty when none is cached, e.g. after loading).
    pub fn cached_ids(&self) -> &[i64] {
        self.cache.as_ref().map_or(&[], |c| c.ids.as_slice())
    }

    /// How many turns, from the first, are in the cache.
    pub fn cached_turns(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.turns.len())
    }

    /// The cached ids of turn `index` (an assistant turn whose `<|EOT|>` is still to come
    /// lacks it), or `None` when the turn is not in the cache.
    pub fn turn_ids(&self, index: usize) -> Option<&[i64]> {
        let cache = self.cache.as_ref()?;
        cache.ids.get(cache.turns.get(index)?.clone())
    }

    /// Writes the session as JSON to `path` atomically (temporary file, flush, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = SessionFile {
            format: SESSION_FORMAT,
            id: self.id.clone(),
            created_unix: self.created_unix,
            settings: self.settings.clone(),
            history: self.history.clone(),
        };
        let json = serde_json::to_vec(&file)
            .map_err(|e| format_error(path, format!("cannot serialise: {e}")))?;
        crate::fs::write_atomically(path, &json)
            .map_err(|source| Error::SessionIo { path: path.to_path_buf(), source })
    }

    /// Reads a session written by [`Session::save`]. Its history is not in any cache: the
    /// next turn prefills it again.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|source| Error::SessionIo { path: path.to_path_buf(), source })?;
        Self::from_file_bytes(&bytes, path)
    }

    /// Reads the contents of a session file; `path` only names it in errors.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let file: SessionFile = serde_json::from_slice(bytes)
            .map_err(|e| format_error(path, format!("not a session file: {e}")))?;
        if file.format != SESSION_FORMAT {
            return Err(format_error(
                path,
                format!("format {} is not the supported format {SESSION_FORMAT}", file.format),
            ));
        }
        Ok(Self {
            id: file.id,
            created_unix: file.created_unix,
            settings: file.settings,
            history: file.history,
            cache: None,
            extensions: Extensions::new(),
        })
    }

    // ----- bookkeeping for the agent -----

    pub(crate) fn cache(&self) -> Option<&CacheState> {
        self.cache.as_ref()
    }

    /// Records that the cache was emptied for this session by agent `owner` at `epoch`.
    pub(crate) fn reset_cache(&mut self, owner: u64, epoch: u64) {
        self.cache =
            Some(CacheState { owner, epoch, ids: Vec::new(), turns: Vec::new(), open: false });
    }

    /// Records that the cache holds `cache`, a prefix of this history another conversation
    /// left there.
    pub(crate) fn adopt_cache(&mut self, cache: CacheState) {
        self.cache = Some(cache);
    }

    /// Forgets what the cache holds (the next turn prefills the whole history).
    pub(crate) fn invalidate_cache(&mut self) {
        self.cache = None;
    }

    /// Appends `turn` to the history (a front door that keeps a conversation and writes
    /// some of its turns itself: the realtime API's items). The cache record stays valid: the
    /// next turn prefills the new turn on top of it.
    pub fn push_turn(&mut self, turn: Turn) {
        self.history.push(turn);
    }

    /// Replaces turn `index` (a new system prompt or tool set, an assistant turn cut to
    /// what the user heard). The cache record is cut before that turn: the next turn
    /// prefills it and the turns after it again. Fails for an index past the end.
    pub fn replace_turn(&mut self, index: usize, turn: Turn) -> Result<()> {
        let slot = self.history.get_mut(index).ok_or_else(|| no_turn(index))?;
        *slot = turn;
        self.cut_cache_at(index);
        Ok(())
    }

    /// Inserts `turn` before turn `index` (`index` = the length appends); the cache record
    /// is cut there as by [`replace_turn`](Self::replace_turn).
    pub fn insert_turn(&mut self, index: usize, turn: Turn) -> Result<()> {
        if index > self.history.len() {
            return Err(no_turn(index));
        }
        self.history.insert(index, turn);
        self.cut_cache_at(index);
        Ok(())
    }

    /// Removes turn `index`; the cache record is cut there as by
    /// [`replace_turn`](Self::replace_turn).
    pub fn remove_turn(&mut self, index: usize) -> Result<Turn> {
        if index >= self.history.len() {
            return Err(no_turn(index));
        }
        self.cut_cache_at(index);
        Ok(self.history.remove(index))
    }

    /// Forgets what the cache holds from turn `index` on.
    fn cut_cache_at(&mut self, index: usize) {
        if let Some(cache) = self.cache.as_mut() {
            if let Some(range) = cache.turns.get(index).cloned() {
                cache.turns.truncate(index);
                cache.ids.truncate(range.start);
                cache.open = false;
            }
        }
    }

    /// Records a prefill of the uncached turns: `ids` were appended to the cache, `ranges`
    /// (absolute) are the positions of each uncached turn in order, and `closed_open` says
    /// whether `ids` began with the `<|EOT|>` of the open assistant turn.
    pub(crate) fn commit_prefill(
        &mut self,
        ids: &[i64],
        ranges: &[Range<usize>],
        closed_open: bool,
    ) {
        let Some(cache) = self.cache.as_mut() else { return };
        if closed_open && cache.open {
            if let Some(last) = cache.turns.last_mut() {
                last.end += 1;
            }
        }
        cache.open = cache.open && !closed_open;
        cache.ids.extend_from_slice(ids);
        cache.turns.extend(ranges.iter().cloned());
    }

    /// Records a generated assistant turn: `prompt` (the generation prompt) and
    /// `turn.ids` were appended to the cache; the turn is open (its `<|EOT|>` comes with the
    /// next prefill). Its history entry is pushed too.
    pub(crate) fn commit_assistant(&mut self, prompt: &[i64], turn: AssistantTurn) {
        if let Some(cache) = self.cache.as_mut() {
            let start = cache.ids.len();
            cache.ids.extend_from_slice(prompt);
            cache.ids.extend_from_slice(&turn.ids);
            cache.turns.push(start..cache.ids.len());
            cache.open = true;
        }
        self.history.push(Turn::Assistant(turn));
    }
}

fn no_turn(index: usize) -> Error {
    Error::Agent(format!("the history has no turn {index}"))
}

fn format_error(path: &Path, message: String) -> Error {
    Error::SessionFormat { path: path.to_path_buf(), message }
}
