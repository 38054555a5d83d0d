//! The stream of a running turn ([`TurnStream`]) and its cancel switch ([`CancelHandle`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::{mpsc, watch};

use super::events::AgentEvent;
use super::render::{Rendered, SpeechRenderer, Utterances};
use crate::tool::Extensions;

/// Cancels a running turn (barge-in). Cheap to clone, usable from any thread.
///
/// The running generation stops before its next decode step (the inference worker checks
/// the same flag); running tool calls are abandoned. See the agent module documentation for
/// what the history keeps.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    flag: Arc<AtomicBool>,
    signal: Arc<watch::Sender<bool>>,
}

impl Default for CancelHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelHandle {
    /// A handle that has not fired.
    pub fn new() -> Self {
        Self { flag: Arc::new(AtomicBool::new(false)), signal: Arc::new(watch::channel(false).0) }
    }

    /// Cancels the turn. Idempotent; no effect once the turn has ended.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.signal.send_replace(true);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag the inference worker polls.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Resolves once the handle fires.
    pub(crate) async fn cancelled(&self) {
        let mut rx = self.signal.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|&fired| fired).await;
    }
}

/// Sends a turn's events to its [`TurnStream`].
#[derive(Debug, Clone)]
pub(crate) struct Emitter(mpsc::UnboundedSender<AgentEvent>);

impl Emitter {
    /// Queues `event`; a dropped stream just discards it.
    pub(crate) fn emit(&self, event: AgentEvent) {
        let _ = self.0.send(event);
    }
}

/// The events of one turn, as a [`Stream`]. Polling it runs the turn: the model works on its
/// own thread, the tools on the caller's executor. The stream ends after
/// [`AgentEvent::TurnFinished`].
///
/// Dropping it before the end cancels the turn: the generation stops, and the session keeps
/// only what was complete before the last step began (the next turn trims the model's cache
/// to match).
pub struct TurnStream<'a> {
    driver: Option<BoxFuture<'a, ()>>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    cancel: CancelHandle,
    /// The turn's speech on the render thread, when it is rendered.
    speech: Option<Speech>,
    /// `TurnFinished`, held back until the speech is rendered to its end.
    finished: Option<AgentEvent>,
}

/// A turn's speech: codes go to the render thread, PCM comes back as events.
struct Speech {
    utterances: Utterances,
    sample_rate: u32,
}

impl std::fmt::Debug for TurnStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnStream")
            .field("running", &self.driver.is_some())
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

impl<'a> TurnStream<'a> {
    /// A stream whose events come from the future `make(emitter)` builds.
    pub(crate) fn new(
        cancel: CancelHandle,
        make: impl FnOnce(Emitter) -> BoxFuture<'a, ()>,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let driver = make(Emitter(tx));
        Self { driver: Some(driver), events, cancel, speech: None, finished: None }
    }

    /// Renders the turn's speech codes on `renderer` (in the voice of `session`), adding
    /// [`AgentEvent::Audio`] and [`AgentEvent::SpeechFailed`] events: each generation step's
    /// speech is one utterance, flushed when the step ends, and `TurnFinished` waits for the
    /// last one. A cancelled turn stops speaking at once.
    pub(crate) fn with_speech(mut self, renderer: &SpeechRenderer, session: Extensions) -> Self {
        let sample_rate = renderer.sample_rate();
        self.speech = renderer.open(session).map(|utterances| Speech { utterances, sample_rate });
        self
    }

    /// The next event of the turn's own, with speech codes and step ends passed to the
    /// renderer and `TurnFinished` held back while it renders.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        loop {
            if let Poll::Ready(Some(event)) = self.events.poll_recv(cx) {
                return Poll::Ready(Some(event));
            }
            match self.driver.as_mut() {
                Some(driver) => match driver.as_mut().poll(cx) {
                    // The driver's emitter is gone: drain what it left, then end.
                    Poll::Ready(()) => self.driver = None,
                    Poll::Pending => return Poll::Pending,
                },
                None => return self.events.poll_recv(cx),
            }
        }
    }

    /// The next rendered output as an event; `Ready(None)` once nothing is rendering.
    fn poll_speech(&mut self, cx: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        loop {
            let Some(speech) = self.speech.as_mut() else { return Poll::Ready(None) };
            match speech.utterances.output.poll_recv(cx) {
                Poll::Ready(Some(Rendered::Pcm(pcm))) => {
                    let sample_rate = speech.sample_rate;
                    return Poll::Ready(Some(AgentEvent::Audio { pcm, sample_rate }));
                }
                Poll::Ready(Some(Rendered::Failed(message))) => {
                    return Poll::Ready(Some(AgentEvent::SpeechFailed { message }))
                }
                Poll::Ready(Some(Rendered::Flushed)) => speech.utterances.flushed(),
                // The render thread is gone.
                Poll::Ready(None) => self.speech = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// A handle that cancels this turn.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }
}

impl Stream for TurnStream<'_> {
    type Item = AgentEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        let this = &mut *self;
        loop {
            if this.cancel.is_cancelled() {
                // Nothing more is said after a barge-in.
                this.speech = None;
            }
            let speaking = match this.poll_speech(cx) {
                Poll::Ready(Some(event)) => return Poll::Ready(Some(event)),
                Poll::Ready(None) => false,
                Poll::Pending => true,
            };
            if this.finished.is_some() {
                let rendering =
                    this.speech.as_ref().is_some_and(|s| s.utterances.pending_flushes() > 0);
                if rendering && speaking {
                    return Poll::Pending;
                }
                this.speech = None;
                return Poll::Ready(this.finished.take());
            }
            let event = match this.poll_turn(cx) {
                Poll::Ready(Some(event)) => event,
                other => return other,
            };
            let Some(speech) = this.speech.as_mut() else { return Poll::Ready(Some(event)) };
            match &event {
                AgentEvent::AudioTokens(codes) => speech.utterances.push(codes.clone()),
                // A step ends: its speech is one utterance, rendered to the end now (before
                // a tool runs).
                AgentEvent::Usage { .. } => speech.utterances.flush(),
                AgentEvent::TurnFinished { .. } => {
                    speech.utterances.flush();
                    this.finished = Some(event);
                    continue;
                }
                _ => {}
            }
            return Poll::Ready(Some(event));
        }
    }
}

impl Drop for TurnStream<'_> {
    fn drop(&mut self) {
        if self.driver.is_some() {
            // Stop the generation the dropped driver may have left running on the worker.
            self.cancel.flag.store(true, Ordering::SeqCst);
        }
    }
}
