//! [`SpeechSink`]: where a turn's speech codes become audio.
//!
//! The agent loop streams speech codes ([`AgentEvent::AudioTokens`](super::AgentEvent)) and
//! knows no vocoder. A sink is the other side: it takes the codes of one utterance as they
//! arrive and returns the PCM samples that became ready, so that the first audio can leave
//! before the utterance ends. `voxloop-voices` implements it for its token2wav stream.
//!
//! A sink is blocking work (a vocoder on libtorch): drive it from a thread of its own, never
//! from the async executor. One sink is one utterance: after [`SpeechSink::finish`] start a
//! new one.

/// A consumer of speech codes that produces mono PCM (see the module documentation).
pub trait SpeechSink {
    /// What can go wrong while rendering.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The sample rate of the samples it returns, in Hz.
    fn sample_rate(&self) -> u32;

    /// Takes the next speech codes (0..=6560, 25 Hz) and returns the samples that became
    /// ready, possibly none (a vocoder renders in chunks).
    fn push_codes(&mut self, codes: &[u16]) -> Result<Vec<f32>, Self::Error>;

    /// Renders whatever is buffered as the end of the utterance and returns it.
    fn finish(&mut self) -> Result<Vec<f32>, Self::Error>;
}

/// A vocoder kept on the speech thread of a [`SpeechRenderer`](super::SpeechRenderer): it
/// opens one [`SpeechSink`] per utterance, in the voice that the session's extensions give
/// (`voxloop-voices` implements it for token2wav, reading the session's `SessionVoice`).
pub trait SpeechEngine: 'static {
    /// One utterance's sink, borrowing the engine.
    type Sink<'a>: SpeechSink
    where
        Self: 'a;

    /// The sample rate of the samples its sinks return, in Hz.
    fn sample_rate(&self) -> u32;

    /// Opens an utterance for the session with `session` extensions; the error says why it
    /// cannot speak (no voice, say).
    fn open(&self, session: &crate::tool::Extensions) -> Result<Self::Sink<'_>, String>;
}
