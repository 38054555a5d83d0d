//! The inference thread: one dedicated OS thread owns the model and runs jobs from a queue,
//! so that callers on an async runtime never run libtorch on an executor thread.
//!
//! Jobs run one at a time in submission order. Results come back through callbacks run on the
//! inference thread (forward them into whatever channel suits the caller: a tokio `mpsc` or
//! `oneshot` sender's `send` never blocks) or through the std channels of [`Reply`] and
//! [`GenerationStream`] for synchronous callers.
//!
//! Failure model: if a job panics, the panic is caught, the thread stops (the model's state is
//! no longer trusted) and every queued job is dropped. Dropping a job that has not finished
//! reports [`Error::InferenceWorkerStopped`] to its caller: a [`Reply`] returns that error, and
//! a generation's callback receives it as its `Finished` event. Later submissions fail with the
//! same error.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::StepModel;
use super::{generate, GenerationOutput, LogitsMask, Prompt, Sampler, SamplingParams, Segment};
use crate::{Error, Result};

type Job = Box<dyn FnOnce(&mut dyn StepModel) + Send>;

/// State shared by the handle and the thread.
#[derive(Default)]
struct Shared {
    /// Set when the handle is dropped: queued jobs are dropped, not run.
    shutdown: AtomicBool,
    /// The cancel flag of the running generation, so that shutdown can interrupt it.
    running: Mutex<Option<Arc<AtomicBool>>>,
}

/// A generation to run on the inference thread; the owned form of [`generate`]'s arguments.
pub struct GenerationRequest {
    /// The ids already in the cache (see [`Prompt::cached`]).
    pub cached: Vec<i64>,
    /// The segments to prefill.
    pub segments: Vec<Segment>,
    /// Sampling parameters (validated when the job starts).
    pub params: SamplingParams,
    /// Optional logits mask.
    pub mask: Option<Box<dyn LogitsMask + Send>>,
    /// Setting it cancels the generation between steps.
    pub cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for GenerationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationRequest")
            .field("cached", &self.cached.len())
            .field("segments", &self.segments)
            .field("params", &self.params)
            .field("mask", &self.mask.is_some())
            .finish_non_exhaustive()
    }
}

impl GenerationRequest {
    /// A request with no mask and a fresh cancel flag.
    pub fn new(cached: Vec<i64>, segments: Vec<Segment>, params: SamplingParams) -> Self {
        Self { cached, segments, params, mask: None, cancel: Arc::new(AtomicBool::new(false)) }
    }
}

/// What a generation reports, in order: any number of `Token`s, then exactly one `Finished`.
#[derive(Debug)]
pub enum GenerationEvent {
    /// A generated id (never the stop token).
    Token(i64),
    /// The end: the output, or why it failed.
    Finished(Result<GenerationOutput>),
}

/// The answer to [`InferenceWorker::call`].
#[derive(Debug)]
pub struct Reply<R> {
    rx: mpsc::Receiver<R>,
}

impl<R> Reply<R> {
    /// Blocks until the job has run. Do not call it on an async executor thread.
    pub fn wait(self) -> Result<R> {
        self.rx.recv().map_err(|_| dropped_job())
    }

    /// Like [`Reply::wait`], giving up after `timeout` (`Ok(None)`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<R>> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(dropped_job()),
        }
    }
}

/// A running generation's events as a std channel; see [`InferenceWorker::generate_stream`].
#[derive(Debug)]
pub struct GenerationStream {
    /// The events; the channel closes after `Finished`.
    pub events: mpsc::Receiver<GenerationEvent>,
    /// The request's cancel flag.
    pub cancel: Arc<AtomicBool>,
}

impl GenerationStream {
    /// Asks the generation to stop before its next step.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Blocks until the end, returning the output (tokens are also in it).
    pub fn wait(self) -> Result<GenerationOutput> {
        for event in self.events.iter() {
            if let GenerationEvent::Finished(result) = event {
                return result;
            }
        }
        Err(dropped_job())
    }
}

/// The handle of the inference thread. Dropping it cancels the running generation, drops the
/// queued jobs and joins the thread (waiting at most for the current model call).
pub struct InferenceWorker {
    jobs: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for InferenceWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceWorker")
            .field("running", &self.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .finish_non_exhaustive()
    }
}

impl InferenceWorker {
    /// Starts the thread and builds the model on it with `factory` (so that device state is
    /// created on the thread that uses it). Returns once the model is built, or the
    /// factory's error.
    pub fn spawn<M, F>(factory: F) -> Result<Self>
    where
        M: StepModel + 'static,
        F: FnOnce() -> Result<M> + Send + 'static,
    {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("voxloop-inference".to_owned())
            .spawn(move || {
                let mut model = match factory() {
                    Ok(model) => {
                        let _ = ready_tx.send(Ok(()));
                        model
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                run_jobs(&mut model, &jobs_rx, &thread_shared);
            })
            .map_err(|e| Error::InferenceWorkerStopped(format!("cannot start the thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { jobs: Some(jobs_tx), shared, thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::InferenceWorkerStopped("the model factory panicked".to_owned()))
            }
        }
    }

    /// Queues `job` to run on the inference thread with the model.
    pub fn submit(&self, job: impl FnOnce(&mut dyn StepModel) + Send + 'static) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Box::new(job)).map_err(|_| stopped())
    }

    /// Runs `f` on the inference thread and returns its result through a [`Reply`].
    pub fn call<R, F>(&self, f: F) -> Result<Reply<R>>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StepModel) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.submit(move |model| {
            let _ = tx.send(f(model));
        })?;
        Ok(Reply { rx })
    }

    /// Queues a generation. `on_event` runs on the inference thread: it receives every token
    /// (returning `Break` stops the generation after that token, like [`generate`]'s
    /// `on_token`) and then exactly one `Finished` event, also when the job is dropped or
    /// panics. It must not block for long: the model waits for it.
    pub fn generate<F>(&self, request: GenerationRequest, on_event: F) -> Result<()>
    where
        F: FnMut(GenerationEvent) -> ControlFlow<()> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let mut events = FinishGuard(Some(on_event));
        self.submit(move |model| {
            let GenerationRequest { cached, segments, params, mut mask, cancel } = request;
            set_running(&shared, Some(Arc::clone(&cancel)));
            if shared.shutdown.load(Ordering::Relaxed) {
                cancel.store(true, Ordering::Relaxed);
            }
            let result = Sampler::new(params).and_then(|mut sampler| {
                let prompt = Prompt { cached: &cached, segments: &segments };
                let mask = mask.as_deref_mut().map(|m| m as &mut dyn LogitsMask);
                generate(model, prompt, &mut sampler, mask, &cancel, |token| {
                    events.send(GenerationEvent::Token(token))
                })
            });
            set_running(&shared, None);
            events.finish(result);
        })
    }

    /// Queues a generation and returns its events as a std channel (for synchronous callers
    /// and tests). Dropping the receiver stops the generation at its next token.
    pub fn generate_stream(&self, request: GenerationRequest) -> Result<GenerationStream> {
        let cancel = Arc::clone(&request.cancel);
        let (tx, rx) = mpsc::channel();
        self.generate(request, move |event| match tx.send(event) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        })?;
        Ok(GenerationStream { events: rx, cancel })
    }
}

impl Drop for InferenceWorker {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        if let Some(cancel) =
            self.shared.running.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
        {
            cancel.store(true, Ordering::Relaxed);
        }
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_jobs(model: &mut dyn StepModel, jobs: &mpsc::Receiver<Job>, shared: &Shared) {
    while let Ok(job) = jobs.recv() {
        if shared.shutdown.load(Ordering::Relaxed) {
            // Dropping the job reports the stop to its caller.
            drop(job);
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut *model)));
        if outcome.is_err() {
            tracing::error!("an inference job panicked; the inference thread stops");
            return;
        }
    }
}

fn set_running(shared: &Shared, cancel: Option<Arc<AtomicBool>>) {
    *shared.running.lock().unwrap_or_else(PoisonError::into_inner) = cancel;
}

fn stopped() -> Error {
    Error::InferenceWorkerStopped("the thread has stopped".to_owned())
}

fn dropped_job() -> Error {
    Error::InferenceWorkerStopped("the job was dropped before it finished".to_owned())
}

/// Holds a generation's event callback and guarantees it one `Finished` event: if the job is
/// dropped unrun, or unwinds, the guard's `Drop` sends an error.
struct FinishGuard<F: FnMut(GenerationEvent) -> ControlFlow<()>>(Option<F>);

impl<F: FnMut(GenerationEvent) -> ControlFlow<()>> FinishGuard<F> {
    fn send(&mut self, event: GenerationEvent) -> ControlFlow<()> {
        match self.0.as_mut() {
            Some(f) => f(event),
            None => ControlFlow::Break(()),
        }
    }

    fn finish(mut self, result: Result<GenerationOutput>) {
        if let Some(mut f) = self.0.take() {
            let _ = f(GenerationEvent::Finished(result));
        }
    }
}

impl<F: FnMut(GenerationEvent) -> ControlFlow<()>> Drop for FinishGuard<F> {
    fn drop(&mut self) {
        if let Some(mut f) = self.0.take() {
            let reason = if std::thread::panicking() {
                "the generation panicked"
            } else {
                "the job was dropped before it ran"
            };
            let _ =
                f(GenerationEvent::Finished(Err(Error::InferenceWorkerStopped(reason.to_owned()))));
        }
    }
}
