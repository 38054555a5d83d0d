//! The audio tools: `audio_search` (find clips or voices by description) and `timbre_rag`
//! (find a voice and speak in it from now on).
//!
//! Both are thin: the search is [`voxloop_retrieval::AudioIndex::search`], the swap is
//! [`voxloop_voices::VoiceSwapper::swap`]. Both are blocking work (Tantivy, qdrant-edge and
//! the text embedder on libtorch), so each call runs on tokio's blocking pool.
//!
//! `audio_search` answers with one line per hit — id, kind, description, duration and the
//! file path the client plays — so the model can say what it found and the client can fetch
//! it. `timbre_rag` answers with the confirmation Step-Audio 2 was trained on
//! ("你的音色已经更新完成，请继续对话。"); the chosen voice goes to the span and the log, not
//! to the model.

use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use voxloop_core::tool::{Tool, ToolContext, ToolType};
use voxloop_retrieval::search::SearchRequest;
use voxloop_retrieval::{AudioIndex, Hit, ItemFilter, ItemKind};
use voxloop_voices::{SessionVoice, VoiceSwapper};

use crate::{Error, Result};

/// Most hits `audio_search` returns to the model, whatever it asks for.
pub const MAX_AUDIO_HITS: usize = 20;
/// Hits when the model does not say.
const DEFAULT_AUDIO_HITS: usize = 5;

/// What `audio_search` may be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AudioKind {
    /// Voices (speech samples usable as a timbre).
    Timbre,
    /// Sound effects, ambience, music.
    Sound,
}

/// The arguments of `audio_search`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudioSearchArgs {
    /// What the audio sounds like, e.g. "rain on a tin roof" or "低沉的男声".
    pub query: String,
    /// Only voices ("timbre") or only sounds ("sound"); both when absent.
    #[serde(default)]
    pub kind: Option<AudioKind>,
    /// How many results, 1 to 20 (default 5).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The `audio_search` tool.
#[derive(Debug, Clone)]
pub struct AudioSearch {
    index: Arc<AudioIndex>,
}

impl AudioSearch {
    /// A tool over `index`.
    pub fn new(index: Arc<AudioIndex>) -> Self {
        Self { index }
    }

    /// The hits for `args`, as the model sees them (see the module docs).
    pub async fn search(&self, args: AudioSearchArgs) -> Result<String> {
        let limit = args.limit.unwrap_or(DEFAULT_AUDIO_HITS);
        if limit == 0 || limit > MAX_AUDIO_HITS {
            return Err(Error::InvalidArgument {
                name: "limit",
                reason: format!("must be between 1 and {MAX_AUDIO_HITS}, got {limit}"),
            });
        }
        let kind = args.kind.map(|k| match k {
            AudioKind::Timbre => ItemKind::Timbre,
            AudioKind::Sound => ItemKind::Sound,
        });
        let request = SearchRequest::new(args.query.clone(), limit)
            .with_filter(ItemFilter { kind, ..ItemFilter::default() });
        let index = Arc::clone(&self.index);
        let hits = blocking("audio_search", move || index.search(&request)).await??;
        Ok(render_hits(&args.query, &hits))
    }
}

/// The model's view of `hits`.
pub fn render_hits(query: &str, hits: &[Hit]) -> String {
    if hits.is_empty() {
        return format!("No audio matches {query:?}.");
    }
    let mut text = format!("{} results for {query:?}:\n", hits.len());
    for (i, hit) in hits.iter().enumerate() {
        let item = &hit.item;
        let _ = writeln!(
            text,
            "{}. [{}] {} ({:.1} s) id={} path={}",
            i + 1,
            item.kind,
            item.description,
            item.duration_s,
            item.id,
            item.path.display()
        );
    }
    text
}

#[async_trait::async_trait]
impl Tool for AudioSearch {
    const NAME: &'static str = "audio_search";
    type Args = AudioSearchArgs;
    type Output = String;
    type Error = Error;

    fn description(&self) -> String {
        "Finds sound clips or voices by what they sound like; returns their ids, descriptions \
         and file paths."
            .into()
    }

    fn tool_type(&self) -> ToolType {
        ToolType::Datastore
    }

    fn error_message(&self, error: &Error) -> String {
        error.model_message()
    }

    async fn call(&self, args: AudioSearchArgs) -> Result<String> {
        self.search(args).await
    }
}

/// The arguments of `timbre_rag`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimbreArgs {
    /// The voice to speak in, described in words, e.g. "海绵宝宝的音色", "a deep calm male
    /// voice", "默认女音色" or "switch back to your original voice".
    pub query: String,
}

/// The `timbre_rag` tool: swaps the voice of the session whose turn calls it. That session's
/// voice comes with the call, as the `Arc<SessionVoice>` its front door attached to the
/// session (`Session::extensions_mut`), so one tool serves every session and no session's
/// swap reaches another.
#[derive(Debug, Clone)]
pub struct TimbreRag {
    swapper: VoiceSwapper,
}

impl TimbreRag {
    /// A tool that swaps calling sessions' voices through `swapper`.
    pub fn new(swapper: VoiceSwapper) -> Self {
        Self { swapper }
    }
}

#[async_trait::async_trait]
impl Tool for TimbreRag {
    const NAME: &'static str = "timbre_rag";
    type Args = TimbreArgs;
    type Output = String;
    type Error = Error;

    fn description(&self) -> String {
        "Switches the voice (timbre) you speak in to one found by description in the voice \
         library. Only for a different voice identity, not for speed, volume or emotion."
            .into()
    }

    fn tool_type(&self) -> ToolType {
        ToolType::Datastore
    }

    /// A swap changes the session: retrying one that timed out might swap twice.
    fn idempotent(&self) -> bool {
        false
    }

    fn error_message(&self, error: &Error) -> String {
        error.model_message()
    }

    /// Outside a session that speaks there is no voice to swap.
    async fn call(&self, args: TimbreArgs) -> Result<String> {
        self.call_with_context(args, &ToolContext::default()).await
    }

    async fn call_with_context(&self, args: TimbreArgs, context: &ToolContext) -> Result<String> {
        let Some(session) = context.get::<Arc<SessionVoice>>().map(Arc::clone) else {
            return Err(Error::NoSessionVoice);
        };
        let swapper = self.swapper.clone();
        let outcome = blocking("timbre_rag", move || swapper.swap(&session, &args.query)).await??;
        tracing::info!(
            session = context.session_id.as_deref().unwrap_or(""),
            voice = %outcome.voice.name,
            "timbre_rag switched the session's voice"
        );
        Ok(outcome.confirmation.to_string())
    }
}

/// Runs `work` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Background { what, detail: e.to_string() })
}
