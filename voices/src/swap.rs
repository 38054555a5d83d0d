//! Voice swap: the voice a session speaks in, and changing it by description.
//!
//! Step-Audio 2 switches timbre by calling `timbre_rag{"query": …}` ("海绵宝宝的音色", "默认女音色",
//! "换回你原来的声音"). The runtime finds a voice, makes it the token2wav prompt for everything
//! the session says next, and answers with the confirmation the model was trained on
//! ([`SWAP_CONFIRMATION`], from StepFun's tool-call benchmark data).
//!
//! - [`SessionVoice`]: the session's current voice, shared by the speech renderer and the
//!   tool; every change bumps a generation counter.
//! - [`VoiceStream`]: a [`Token2WavStream`] that checks that counter before each chunk, so a
//!   swap during an utterance takes effect at the next chunk boundary (the chunk being rendered
//!   keeps the old voice).
//! - [`VoiceSwapper`]: resolves a query to a profile: the two defaults and "the original
//!   voice" by name ([`VoiceRequest::parse`]), a library voice by its exact name, anything else
//!   by a hybrid search of the audio index restricted to `timbre` items whose hit maps back to a
//!   library profile.
//!
//! The search is blocking work (Tantivy, qdrant-edge, the text embedder on libtorch): call
//! [`VoiceSwapper::swap`] from a blocking thread, not the async executor.

use std::sync::{Arc, PoisonError, RwLock};

use voxloop_retrieval::search::SearchRequest;
use voxloop_retrieval::{AudioIndex, ItemFilter, ItemKind};

use crate::library::{DefaultVoice, VoiceLibrary};
use crate::{Error, Result, Token2Wav, Token2WavStream, VoiceProfile};

/// What the model is told after a successful swap ("Your timbre has been updated, please
/// continue the conversation."), verbatim from StepFun's `timbre_rag` benchmark dialogues.
pub const SWAP_CONFIRMATION: &str = "你的音色已经更新完成，请继续对话。";

/// How many timbre hits a search looks through for one that is a library voice.
const SEARCH_DEPTH: usize = 10;
/// The cosine similarity a hit found by the vector side alone needs (see
/// [`VoiceSwapper::with_min_similarity`]).
pub const DEFAULT_MIN_SIMILARITY: f32 = 0.35;

/// The voice a session speaks in (see the module docs).
#[derive(Debug)]
pub struct SessionVoice {
    original: Arc<VoiceProfile>,
    current: RwLock<(u64, Arc<VoiceProfile>)>,
}

impl SessionVoice {
    /// A session that starts (and can swap back to) `original`.
    pub fn new(original: Arc<VoiceProfile>) -> Self {
        Self { current: RwLock::new((0, Arc::clone(&original))), original }
    }

    /// The voice the session started with.
    pub fn original(&self) -> &Arc<VoiceProfile> {
        &self.original
    }

    /// The current voice.
    pub fn current(&self) -> Arc<VoiceProfile> {
        self.snapshot().1
    }

    /// The number of swaps so far and the current voice, read together.
    pub fn snapshot(&self) -> (u64, Arc<VoiceProfile>) {
        // A writer cannot panic between its two assignments: a poisoned lock is still whole.
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (guard.0, Arc::clone(&guard.1))
    }

    /// Makes `voice` the current voice for all following speech.
    pub fn set(&self, voice: Arc<VoiceProfile>) {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        guard.0 += 1;
        guard.1 = voice;
    }
}

/// A streaming synthesis that follows its session's voice (see the module docs).
#[derive(Debug)]
pub struct VoiceStream<'a> {
    inner: Token2WavStream<'a>,
    voice: Arc<SessionVoice>,
    generation: u64,
}

impl<'a> VoiceStream<'a> {
    /// Starts a stream in the session's current voice.
    pub fn new(model: &'a Token2Wav, voice: Arc<SessionVoice>) -> Result<Self> {
        let (generation, current) = voice.snapshot();
        Ok(Self { inner: model.stream(&current)?, voice, generation })
    }

    /// Buffers `tokens`, rendering each chunk as soon as it is complete in the voice that is
    /// current when it starts. Returns the samples that became ready.
    pub fn push(&mut self, tokens: &[i64]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for token in tokens {
            // One token at a time: a chunk renders exactly when its window fills, so checking
            // before each token is checking before each chunk.
            self.follow_session();
            out.extend(self.inner.push(std::slice::from_ref(token))?);
        }
        Ok(out)
    }

    /// Renders the rest as the last chunk.
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        self.follow_session();
        self.inner.finish()
    }

    /// The underlying stream (its last chunk's mel, whether it finished).
    pub fn inner(&self) -> &Token2WavStream<'a> {
        &self.inner
    }

    fn follow_session(&mut self) {
        let (generation, current) = self.voice.snapshot();
        if generation != self.generation {
            self.inner.set_voice(&current);
            self.generation = generation;
        }
    }
}

/// What a voice query asks for, before any search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceRequest<'q> {
    /// One of the two default voices ("默认女音色", "the default male voice").
    Default(DefaultVoice),
    /// The voice the session started with ("换回你原来的声音", "switch back to your own voice").
    Original,
    /// A voice described in words ("海绵宝宝的音色", "a calm deep male voice").
    Described(&'q str),
}

impl<'q> VoiceRequest<'q> {
    /// Reads a `timbre_rag` query. The phrases are the ones in StepFun's tool-call data and
    /// their English equivalents; anything else is a description.
    pub fn parse(query: &'q str) -> Self {
        let q = query.trim();
        let lower = q.to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
        let default_zh = has(&["默认"]);
        let default_en = has(&["default", "standard voice"]);
        if default_zh && has(&["女"]) || default_en && has(&["female", "woman", "women", "girl"]) {
            return Self::Default(DefaultVoice::Female);
        }
        if default_zh && has(&["男"]) || default_en && has(&["male", "man", "men", "boy"]) {
            return Self::Default(DefaultVoice::Male);
        }
        let original = has(&["原来", "原本", "本来", "之前的声音", "原声"])
            || has(&["original", "your own voice", "switch back", "change back", "usual voice"])
            || default_zh
            || default_en;
        if original {
            return Self::Original;
        }
        Self::Described(q)
    }
}

/// How a swap found its voice.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchedBy {
    /// A default voice, by name.
    Default(DefaultVoice),
    /// The session's original voice.
    Original,
    /// The query was a library voice's name.
    Name,
    /// The hybrid search of the audio index; its fused score and why the hit matched.
    Search { score: f64, reason: String },
}

/// The result of [`VoiceSwapper::swap`].
#[derive(Debug, Clone)]
pub struct SwapOutcome {
    /// The voice now current.
    pub voice: Arc<VoiceProfile>,
    /// How it was found.
    pub matched_by: MatchedBy,
    /// The text for the model ([`SWAP_CONFIRMATION`]).
    pub confirmation: &'static str,
}

/// Resolves voice queries against a library and, optionally, the audio index.
#[derive(Debug, Clone)]
pub struct VoiceSwapper {
    library: Arc<VoiceLibrary>,
    index: Option<Arc<AudioIndex>>,
    min_similarity: f32,
}

impl VoiceSwapper {
    /// A swapper over `library` that knows voices by name only (no index to search).
    pub fn new(library: Arc<VoiceLibrary>) -> Self {
        Self { library, index: None, min_similarity: DEFAULT_MIN_SIMILARITY }
    }

    /// The vector side always returns nearest neighbours, however far: a hit that BM25 did
    /// not find counts only if its cosine similarity reaches `min` (default
    /// [`DEFAULT_MIN_SIMILARITY`]), so "a church bell" does not swap to the least unlike voice.
    pub fn with_min_similarity(mut self, min: f32) -> Self {
        self.min_similarity = min;
        self
    }

    /// Searches `index` for described voices (builder style). The library's voices must be
    /// registered in it ([`VoiceLibrary::register`]).
    pub fn with_index(mut self, index: Arc<AudioIndex>) -> Self {
        self.index = Some(index);
        self
    }

    /// The library.
    pub fn library(&self) -> &Arc<VoiceLibrary> {
        &self.library
    }

    /// The voice `query` asks for in `session`, without switching to it.
    pub fn resolve(
        &self,
        session: &SessionVoice,
        query: &str,
    ) -> Result<(Arc<VoiceProfile>, MatchedBy)> {
        if query.trim().is_empty() {
            return Err(Error::InvalidInput("the voice query is empty".into()));
        }
        match VoiceRequest::parse(query) {
            VoiceRequest::Default(which) => {
                Ok((Arc::clone(self.library.default_voice(which)?), MatchedBy::Default(which)))
            }
            VoiceRequest::Original => Ok((Arc::clone(session.original()), MatchedBy::Original)),
            VoiceRequest::Described(text) => {
                if let Some(profile) = self.library.get_ignore_case(text) {
                    return Ok((Arc::clone(profile), MatchedBy::Name));
                }
                self.search(text)
            }
        }
    }

    /// Resolves `query` and makes the voice the session's current one.
    pub fn swap(&self, session: &SessionVoice, query: &str) -> Result<SwapOutcome> {
        let (voice, matched_by) = self.resolve(session, query)?;
        session.set(Arc::clone(&voice));
        tracing::info!(voice = %voice.name, ?matched_by, "voice swapped");
        Ok(SwapOutcome { voice, matched_by, confirmation: SWAP_CONFIRMATION })
    }

    fn search(&self, text: &str) -> Result<(Arc<VoiceProfile>, MatchedBy)> {
        let not_found = |message: String| Error::VoiceNotFound { query: text.into(), message };
        let Some(index) = &self.index else {
            return Err(not_found(format!(
                "no library voice has that name and there is no audio index to search (voices: \
                 {})",
                self.library.profiles().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        };
        let filter = ItemFilter { kind: Some(ItemKind::Timbre), ..ItemFilter::default() };
        let request = SearchRequest::new(text, SEARCH_DEPTH).with_filter(filter);
        let hits = index.search(&request).map_err(Error::Retrieval)?;
        let relevant = |hit: &&voxloop_retrieval::Hit| {
            hit.reason.bm25.is_some()
                || hit.reason.vector.is_some_and(|v| v.score >= self.min_similarity)
        };
        let found = hits.iter().filter(relevant).find_map(|hit| {
            self.library.profile_for_path(&hit.item.path).map(|profile| (hit, profile))
        });
        match found {
            Some((hit, profile)) => Ok((
                Arc::clone(profile),
                MatchedBy::Search { score: hit.score, reason: hit.reason.to_string() },
            )),
            None => Err(not_found(format!(
                "none of the {} nearest timbre items is a library voice that matches the words \
                 or reaches cosine similarity {}",
                hits.len(),
                self.min_similarity
            ))),
        }
    }
}

/// A voice stream is core's speech sink: speech codes in, 24 kHz samples out, in the
/// session's current voice.
impl voxloop_core::agent::SpeechSink for VoiceStream<'_> {
    type Error = Error;

    fn sample_rate(&self) -> u32 {
        crate::token2wav::SAMPLE_RATE
    }

    fn push_codes(&mut self, codes: &[u16]) -> Result<Vec<f32>> {
        let tokens: Vec<i64> = codes.iter().map(|&c| i64::from(c)).collect();
        self.push(&tokens)
    }

    fn finish(&mut self) -> Result<Vec<f32>> {
        VoiceStream::finish(self)
    }
}

/// token2wav on a speech thread: each utterance is a [`VoiceStream`] in the session's voice
/// (the `Arc<SessionVoice>` in its extensions), following that session's swaps.
impl voxloop_core::agent::SpeechEngine for Token2Wav {
    type Sink<'a> = VoiceStream<'a>;

    fn sample_rate(&self) -> u32 {
        crate::token2wav::SAMPLE_RATE
    }

    fn open(
        &self,
        session: &voxloop_core::tool::Extensions,
    ) -> std::result::Result<VoiceStream<'_>, String> {
        let voice = session
            .get::<Arc<SessionVoice>>()
            .ok_or_else(|| "the session has no voice to speak in".to_owned())?;
        VoiceStream::new(self, Arc::clone(voice)).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_from_the_tool_call_data() {
        use VoiceRequest::*;
        assert_eq!(VoiceRequest::parse("默认女音色"), Default(DefaultVoice::Female));
        assert_eq!(VoiceRequest::parse("默认男音色"), Default(DefaultVoice::Male));
        assert_eq!(VoiceRequest::parse("换回你原来的声音"), Original);
        assert_eq!(VoiceRequest::parse("the default female voice"), Default(DefaultVoice::Female));
        assert_eq!(VoiceRequest::parse("default male voice"), Default(DefaultVoice::Male));
        assert_eq!(VoiceRequest::parse("switch back to your original voice"), Original);
        assert_eq!(VoiceRequest::parse("默认音色"), Original);
        assert_eq!(VoiceRequest::parse(" 海绵宝宝的音色 "), Described("海绵宝宝的音色"));
        assert_eq!(
            VoiceRequest::parse("a deep calm male voice"),
            Described("a deep calm male voice")
        );
    }

    #[test]
    fn swaps_bump_the_generation() {
        use crate::profile::{MEL_BINS, SPEAKER_DIM};
        let p = |n: &str| {
            Arc::new(
                VoiceProfile::new(n, vec![1], vec![vec![0.0; MEL_BINS]; 2], vec![1.0; SPEAKER_DIM])
                    .unwrap(),
            )
        };
        let session = SessionVoice::new(p("a"));
        assert_eq!(session.snapshot().0, 0);
        session.set(p("b"));
        let (generation, voice) = session.snapshot();
        assert_eq!((generation, voice.name.as_str()), (1, "b"));
        assert_eq!(session.original().name, "a");
    }
}
