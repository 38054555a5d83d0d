//! [`SpeechRenderer`]: speech codes → PCM on a thread of its own, for every front door.
//!
//! A vocoder is blocking libtorch work, so it never runs on the async executor: one thread
//! owns the [`SpeechEngine`] and renders one turn at a time. A turn opens [`Utterances`],
//! sends the speech codes as the model writes them and a flush at the end of each generation
//! step, and reads back [`Rendered`] samples as the vocoder's chunks complete. Each step's
//! speech is one utterance (one [`SpeechSink`]), so the speech before a tool call is heard
//! while the tool runs. The sink is opened in the voice the session's extensions give, so a
//! voice swap made by a tool call of that session applies from the vocoder's next chunk on.
//!
//! [`Agent::speak_turn`](super::Agent::speak_turn) drives it; dropping the handle abandons
//! what is buffered (a cancelled turn says nothing more).

use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use super::speech::{SpeechEngine, SpeechSink};
use crate::tool::Extensions;
use crate::{Error, Result};

/// What the render thread sends back.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// Samples in [-1, 1] at the engine's sample rate.
    Pcm(Vec<f32>),
    /// Everything sent before the matching [`Utterances::flush`] has been rendered.
    Flushed,
    /// Rendering failed; the utterance's remaining codes are dropped until the next flush.
    Failed(String),
}

enum Command {
    Codes(Vec<u16>),
    Flush,
}

struct Job {
    session: Extensions,
    commands: std_mpsc::Receiver<Command>,
    out: mpsc::UnboundedSender<Rendered>,
}

/// The render thread (see the module documentation).
#[derive(Debug)]
pub struct SpeechRenderer {
    jobs: std_mpsc::Sender<Job>,
    sample_rate: u32,
}

impl SpeechRenderer {
    /// Starts the thread `name`, which builds its engine with `load` and keeps it (the engine
    /// never leaves that thread); returns once it is loaded, or with the loader's error.
    pub fn spawn<E, L>(name: &str, load: L) -> Result<Self>
    where
        E: SpeechEngine,
        L: FnOnce() -> std::result::Result<E, String> + Send + 'static,
    {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        let (loaded_tx, loaded) = std_mpsc::sync_channel::<std::result::Result<u32, String>>(1);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let engine = match load() {
                    Ok(engine) => {
                        let _ = loaded_tx.send(Ok(engine.sample_rate()));
                        engine
                    }
                    Err(message) => {
                        let _ = loaded_tx.send(Err(message));
                        return;
                    }
                };
                for Job { session, commands, out } in queue {
                    render_job(|| engine.open(&session), &commands, &out);
                }
            })
            .map_err(|e| Error::Agent(format!("cannot start the speech thread {name}: {e}")))?;
        match loaded.recv() {
            Ok(Ok(sample_rate)) => Ok(Self { jobs, sample_rate }),
            Ok(Err(message)) => Err(Error::Agent(message)),
            Err(_) => Err(Error::Agent(format!("the speech thread {name} stopped while loading"))),
        }
    }

    /// The sample rate of the rendered PCM, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Opens the speech of one turn of the session with `session` extensions (its voice,
    /// followed through swaps); `None` when the thread is gone.
    pub fn open(&self, session: Extensions) -> Option<Utterances> {
        let (commands, queue) = std_mpsc::channel();
        let (out, output) = mpsc::unbounded_channel();
        self.jobs.send(Job { session, commands: queue, out }).ok()?;
        Some(Utterances { commands, output, flushes: 0 })
    }
}

/// One turn's speech on the render thread.
#[derive(Debug)]
pub struct Utterances {
    commands: std_mpsc::Sender<Command>,
    /// What the thread rendered, in order.
    pub output: mpsc::UnboundedReceiver<Rendered>,
    flushes: usize,
}

impl Utterances {
    /// Queues speech codes.
    pub fn push(&mut self, codes: Vec<u16>) {
        let _ = self.commands.send(Command::Codes(codes));
    }

    /// Ends the current utterance: its rest is rendered, then a [`Rendered::Flushed`] comes.
    pub fn flush(&mut self) {
        if self.commands.send(Command::Flush).is_ok() {
            self.flushes += 1;
        }
    }

    /// Flushes sent whose [`Rendered::Flushed`] has not been read yet.
    pub fn pending_flushes(&self) -> usize {
        self.flushes
    }

    /// Counts a [`Rendered::Flushed`] that was read.
    pub fn flushed(&mut self) {
        self.flushes = self.flushes.saturating_sub(1);
    }
}

/// Runs one turn's commands through sinks that `open` makes, one per utterance.
fn render_job<S: SpeechSink>(
    open: impl Fn() -> std::result::Result<S, String>,
    commands: &std_mpsc::Receiver<Command>,
    out: &mpsc::UnboundedSender<Rendered>,
) {
    let mut sink: Option<S> = None;
    let mut failed = false;
    let fail = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "speech rendering failed");
        let _ = out.send(Rendered::Failed(e.to_string()));
    };
    let send_pcm = |pcm: Vec<f32>| {
        if !pcm.is_empty() {
            let _ = out.send(Rendered::Pcm(pcm));
        }
    };
    // Ends when the turn drops its handle.
    for command in commands {
        match command {
            Command::Codes(codes) if !failed => {
                if sink.is_none() {
                    match open() {
                        Ok(opened) => sink = Some(opened),
                        Err(e) => {
                            fail(&e);
                            failed = true;
                            continue;
                        }
                    }
                }
                if let Some(s) = sink.as_mut() {
                    match s.push_codes(&codes) {
                        Ok(pcm) => send_pcm(pcm),
                        Err(e) => {
                            fail(&e);
                            failed = true;
                            sink = None;
                        }
                    }
                }
            }
            Command::Codes(_) => {}
            Command::Flush => {
                if let Some(mut s) = sink.take() {
                    match s.finish() {
                        Ok(pcm) => send_pcm(pcm),
                        Err(e) => fail(&e),
                    }
                }
                failed = false;
                let _ = out.send(Rendered::Flushed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that returns one sample per code, in chunks of 3 codes, and fails on code 99.
    struct Counting {
        buffered: usize,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("bad code")]
    struct Bad;

    impl SpeechSink for Counting {
        type Error = Bad;
        fn sample_rate(&self) -> u32 {
            24_000
        }
        fn push_codes(&mut self, codes: &[u16]) -> std::result::Result<Vec<f32>, Bad> {
            if codes.contains(&99) {
                return Err(Bad);
            }
            self.buffered += codes.len();
            let ready = self.buffered / 3 * 3;
            self.buffered -= ready;
            Ok(vec![0.5; ready])
        }
        fn finish(&mut self) -> std::result::Result<Vec<f32>, Bad> {
            Ok(vec![0.25; std::mem::take(&mut self.buffered)])
        }
    }

    fn run(commands: Vec<Command>) -> Vec<Rendered> {
        let (tx, queue) = std_mpsc::channel();
        let (out, mut output) = mpsc::unbounded_channel();
        for c in commands {
            tx.send(c).unwrap();
        }
        drop(tx);
        render_job(|| Ok(Counting { buffered: 0 }), &queue, &out);
        let mut got = Vec::new();
        while let Ok(r) = output.try_recv() {
            got.push(r);
        }
        got
    }

    #[test]
    fn utterances_render_in_chunks_and_flush_their_rest() {
        use Command::*;
        let got = run(vec![Codes(vec![1, 2]), Codes(vec![3, 4]), Flush, Codes(vec![5]), Flush]);
        assert_eq!(
            got,
            vec![
                Rendered::Pcm(vec![0.5; 3]),
                Rendered::Pcm(vec![0.25]),
                Rendered::Flushed,
                Rendered::Pcm(vec![0.25]),
                Rendered::Flushed,
            ]
        );
    }

    #[test]
    fn a_failure_skips_the_rest_of_its_utterance_only() {
        use Command::*;
        let got = run(vec![Codes(vec![99]), Codes(vec![1, 2, 3]), Flush, Codes(vec![1, 2, 3])]);
        assert!(matches!(&got[0], Rendered::Failed(m) if m == "bad code"), "{got:?}");
        assert_eq!(got[1..], [Rendered::Flushed, Rendered::Pcm(vec![0.5; 3])]);
    }
}
