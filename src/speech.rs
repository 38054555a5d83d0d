//! Speech codes → PCM on a thread of its own.
//!
//! token2wav is blocking libtorch work, so it never runs on the async executor: one
//! `voxloop-token2wav` thread owns the model and renders one turn at a time. A turn opens an
//! [`Utterances`] handle, sends it the speech codes as the agent streams them and a flush at
//! the end of each generation step, and reads back [`Rendered`] samples as each 25-token chunk
//! completes. Each step's speech is one utterance (one token2wav stream, through core's
//! [`SpeechSink`]), so the speech before a tool call is heard while the tool runs; a voice
//! swap made by `timbre_rag` applies from the next chunk on (see `voxloop_voices::swap`).
//!
//! Dropping the handle abandons what is buffered (a cancelled turn says nothing more).

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use tokio::sync::mpsc;
use voxloop_core::agent::SpeechSink;
use voxloop_voices::{SessionVoice, Token2Wav, VoiceStream};

/// What the render thread sends back.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// Samples in [-1, 1] at [`SAMPLE_RATE`].
    Pcm(Vec<f32>),
    /// Everything sent before the matching [`Utterances::flush`] has been rendered.
    Flushed,
    /// Rendering failed; the utterance's remaining codes are dropped until the next flush.
    Failed(String),
}

/// The sample rate of [`Rendered::Pcm`].
pub const SAMPLE_RATE: u32 = voxloop_voices::token2wav::SAMPLE_RATE;

enum Command {
    Codes(Vec<u16>),
    Flush,
}

struct Job {
    voice: Arc<SessionVoice>,
    commands: std_mpsc::Receiver<Command>,
    out: mpsc::UnboundedSender<Rendered>,
}

/// The render thread (see the module docs).
#[derive(Debug)]
pub struct Renderer {
    jobs: std_mpsc::Sender<Job>,
}

impl Renderer {
    /// Starts the thread, which loads token2wav from `dir` onto `device` and keeps it (the
    /// model never leaves that thread); returns once it is loaded.
    pub fn spawn(dir: PathBuf, device: tch::Device) -> anyhow::Result<Self> {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        let (loaded_tx, loaded) = std_mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("voxloop-token2wav".into())
            .spawn(move || {
                let model = match Token2Wav::load(&dir, device) {
                    Ok(model) => {
                        let _ = loaded_tx.send(Ok(()));
                        model
                    }
                    Err(e) => {
                        let _ = loaded_tx
                            .send(Err(format!("loading token2wav from {}: {e}", dir.display())));
                        return;
                    }
                };
                for Job { voice, commands, out } in queue {
                    render_job(|| VoiceStream::new(&model, Arc::clone(&voice)), &commands, &out);
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the token2wav thread: {e}"))?;
        match loaded.recv() {
            Ok(Ok(())) => Ok(Self { jobs }),
            Ok(Err(message)) => Err(anyhow::anyhow!(message)),
            Err(_) => Err(anyhow::anyhow!("the token2wav thread stopped while loading")),
        }
    }

    /// Opens the speech of one turn, in `voice` (followed through its swaps).
    pub fn open(&self, voice: Arc<SessionVoice>) -> Option<Utterances> {
        let (commands, queue) = std_mpsc::channel();
        let (out, output) = mpsc::unbounded_channel();
        self.jobs.send(Job { voice, commands: queue, out }).ok()?;
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
    open: impl Fn() -> Result<S, S::Error>,
    commands: &std_mpsc::Receiver<Command>,
    out: &mpsc::UnboundedSender<Rendered>,
) {
    let mut sink: Option<S> = None;
    let mut failed = false;
    let fail = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "speech rendering failed");
        let _ = out.send(Rendered::Failed(e.to_string()));
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
                        Ok(pcm) if pcm.is_empty() => {}
                        Ok(pcm) => {
                            let _ = out.send(Rendered::Pcm(pcm));
                        }
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
                        Ok(pcm) if !pcm.is_empty() => {
                            let _ = out.send(Rendered::Pcm(pcm));
                        }
                        Ok(_) => {}
                        Err(e) => fail(&e),
                    }
                }
                failed = false;
                let _ = out.send(Rendered::Flushed);
            }
        }
    }
}

/// 16-bit little-endian PCM of `samples` (clipped to [-1, 1], scaled by 32767 as token2wav's
/// WAV writer does).
pub fn pcm16_le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect()
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
            SAMPLE_RATE
        }
        fn push_codes(&mut self, codes: &[u16]) -> Result<Vec<f32>, Bad> {
            if codes.contains(&99) {
                return Err(Bad);
            }
            self.buffered += codes.len();
            let ready = self.buffered / 3 * 3;
            self.buffered -= ready;
            Ok(vec![0.5; ready])
        }
        fn finish(&mut self) -> Result<Vec<f32>, Bad> {
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

    #[test]
    fn pcm16_is_little_endian_and_clipped() {
        assert_eq!(pcm16_le(&[0.0, 1.0, -2.0]), vec![0, 0, 0xff, 0x7f, 0x01, 0x80]);
    }
}
