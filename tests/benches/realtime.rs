//! The realtime front door under load: server VAD on many connections at once, and what the
//! WebSocket adds between the end of speech and the answer.
//!
//! ```text
//! cargo bench -p voxloop --bench realtime -- [--connections N] [--repeats N]
//! ```
//!
//! Both parts run `voxloop serve` (this build) on the tiny fixture checkpoint with Silero VAD
//! (`VOXLOOP_SILERO_VAD`, `scripts/silero_vad.sh`), streaming the committed recording
//! `tests/fixtures/silero_vad/speech.wav` (3.2 s; resampled to 24 kHz PCM16) and 0.8 s of
//! silence in 20 ms frames, paced in real time, as a microphone would.
//!
//! 1. `--connections` (default 50) connections stream at once, with `create_response: false`
//!    (VAD only, no model). A connection counts as served when it hears exactly one
//!    speech_started and one speech_stopped at the same `audio_start_ms` / `audio_end_ms` as a
//!    connection streaming alone (no frame lost or reordered). The latency of an event is its
//!    arrival minus the moment the frame that decided it was sent (the frame the connection
//!    streaming alone had just sent when that event came): median and worst over connections.
//! 2. One connection answers (`create_response: true`, 8 tokens) `--repeats` times (default
//!    5): speech_stopped → response.created (commit, log-mel, history, start of the turn: the
//!    front door's own work before the model) and response.created → the first audio delta
//!    (the tiny model's prefill and decode and token2wav's first chunk).
//!
//! The concurrent part runs twice: first every connection loads its VAD model, then they
//! reuse the models the first wave gave back.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke run: 2 connections,
//! 1 repeat.

#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const FRAME_MS: u64 = 20;
const RATE: u32 = 24_000;
const SILENCE_MS: u64 = 500;

struct Options {
    connections: usize,
    repeats: usize,
}

fn options(args: &[String]) -> BoxResult<Options> {
    if !args.iter().any(|a| a == "--bench") {
        return Ok(Options { connections: 2, repeats: 1 });
    }
    let mut o = Options { connections: 50, repeats: 5 };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--connections" => o.connections = value()?.parse()?,
            "--repeats" => o.repeats = value()?.parse()?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo bench -p voxloop --bench realtime \
                     -- [--connections N] [--repeats N]"
                )
                .into())
            }
        }
    }
    Ok(o)
}

/// The recording and trailing silence as 20 ms frames of base64 PCM16 at 24 kHz.
fn frames() -> BoxResult<Vec<String>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/silero_vad/speech.wav");
    let mut reader = hound::WavReader::open(path)?;
    let rate = reader.spec().sample_rate;
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.map(|s| f32::from(s) / 32768.0))
        .collect::<Result<_, _>>()?;
    let mut pcm = voxloop_core::audio::resample(&samples, rate, RATE)?;
    pcm.extend(std::iter::repeat_n(0.0, (RATE as usize) * 800 / 1000));
    let per_frame = (RATE as u64 * FRAME_MS / 1000) as usize;
    Ok(pcm
        .chunks(per_frame)
        .map(|chunk| {
            let bytes: Vec<u8> = chunk
                .iter()
                .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
                .collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        })
        .collect())
}

/// What one streaming connection observed.
#[derive(Debug, Default, Clone)]
struct Heard {
    starts: Vec<u64>,
    stops: Vec<u64>,
    /// Arrival minus the send time of the deciding frame, per event (ms).
    start_latency: Vec<f64>,
    stop_latency: Vec<f64>,
    response_created: Option<Instant>,
    first_audio: Option<Instant>,
    stopped_at: Option<Instant>,
    /// The last frame sent when speech_started and speech_stopped came.
    decided: (usize, usize),
}

async fn stream_one(
    addr: std::net::SocketAddr,
    frames: &[String],
    respond: bool,
    decided: Option<(usize, usize)>,
) -> BoxResult<Heard> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/realtime")).await?;
    let (mut sink, mut stream) = ws.split();
    let next_json = |m: Message| -> Option<Value> {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            _ => None,
        }
    };
    let update = json!({"type": "session.update", "session": {
        "type": "realtime", "max_output_tokens": 8, "tool_choice": "none",
        "audio": {"input": {"turn_detection": {"type": "server_vad",
            "silence_duration_ms": SILENCE_MS, "create_response": respond}}}}});
    sink.send(Message::Text(update.to_string().into())).await?;
    loop {
        let Some(m) = stream.next().await else {
            return Err("closed before session.updated".into());
        };
        if next_json(m?).is_some_and(|e| e["type"] == "session.updated") {
            break;
        }
    }
    let sent: std::sync::Arc<std::sync::Mutex<Vec<Instant>>> = Default::default();
    let sent_by_writer = std::sync::Arc::clone(&sent);
    let frames = frames.to_vec();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(FRAME_MS));
        for frame in frames {
            tick.tick().await;
            let event = json!({"type": "input_audio_buffer.append", "audio": frame});
            if sink.send(Message::Text(event.to_string().into())).await.is_err() {
                break;
            }
            sent_by_writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Instant::now());
        }
        sink
    });
    let mut heard = Heard::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The frame that decided an event: the one the connection streaming alone had just sent
    // when the event came (`decided`), else the last one sent.
    let sent_at = |decided: Option<usize>| {
        let sent = sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = decided.unwrap_or(sent.len().saturating_sub(1));
        (sent.get(index).copied(), sent.len().saturating_sub(1))
    };
    while Instant::now() < deadline {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await else {
            break;
        };
        let Some(event) = next_json(m?) else { continue };
        let now = Instant::now();
        match event["type"].as_str().unwrap_or_default() {
            "input_audio_buffer.speech_started" => {
                let ms = event["audio_start_ms"].as_u64().unwrap_or_default();
                heard.starts.push(ms);
                let (frame, last) = sent_at(decided.map(|d| d.0));
                heard.decided.0 = last;
                if let Some(t) = frame {
                    heard.start_latency.push(now.saturating_duration_since(t).as_secs_f64() * 1e3);
                }
            }
            "input_audio_buffer.speech_stopped" => {
                let ms = event["audio_end_ms"].as_u64().unwrap_or_default();
                heard.stops.push(ms);
                heard.stopped_at = Some(now);
                let (frame, last) = sent_at(decided.map(|d| d.1));
                heard.decided.1 = last;
                if let Some(t) = frame {
                    heard.stop_latency.push(now.saturating_duration_since(t).as_secs_f64() * 1e3);
                }
                if !respond {
                    break;
                }
            }
            "response.created" => heard.response_created = Some(now),
            "response.output_audio.delta" if heard.first_audio.is_none() => {
                heard.first_audio = Some(now)
            }
            "response.done" => break,
            "error" => return Err(format!("error event: {event}").into()),
            _ => {}
        }
    }
    let mut sink = writer.await?;
    let _ = sink.close().await;
    Ok(heard)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        f64::NAN
    } else {
        values[values.len() / 2]
    }
}

fn run(o: &Options) -> BoxResult<()> {
    let Some(vad) = support::silero_vad() else { return Ok(()) };
    // Room for a wave that opens while the last one's connections are still closing.
    let room = 2 * o.connections + 2;
    let server = support::serve_speaking(&format!(
        "[realtime]\nvad_model = {vad:?}\nmax_connections = {room}\n\n[agent]\nmax_sessions = {room}\n"
    ));
    let frames = frames()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let alone = stream_one(server.addr, &frames, false, None).await?;
        let expected = (alone.starts.clone(), alone.stops.clone());
        if expected.0.len() != 1 || expected.1.len() != 1 {
            return Err(format!("alone, VAD heard {:?} / {:?}", expected.0, expected.1).into());
        }
        let worst = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        let mut lost = 0;
        // The first wave loads a VAD model per connection; the second reuses them.
        for wave in ["first wave (VAD models loaded)", "second wave (VAD models reused)"] {
            let started = Instant::now();
            let tasks: Vec<_> = (0..o.connections)
                .map(|_| {
                    let frames = frames.clone();
                    let addr = server.addr;
                    let decided = Some(alone.decided);
                    tokio::spawn(async move { stream_one(addr, &frames, false, decided).await })
                })
                .collect();
            let mut served = 0;
            let (mut starts, mut stops) = (Vec::new(), Vec::new());
            for task in tasks {
                match task.await? {
                    Ok(heard) => {
                        if (heard.starts.clone(), heard.stops.clone()) == expected {
                            served += 1;
                        }
                        starts.extend(heard.start_latency);
                        stops.extend(heard.stop_latency);
                    }
                    Err(e) => eprintln!("a connection failed: {e}"),
                }
            }
            lost += o.connections - served;
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{wave}, {} connections: served {served} (same VAD events as alone: start {} ms, \
                 end {} ms) in {wall:.1} s; speech_started latency median {:.1} ms, worst {:.1} \
                 ms; speech_stopped latency median {:.1} ms, worst {:.1} ms",
                o.connections,
                expected.0[0],
                expected.1[0],
                median(&mut starts.clone()),
                worst(&starts),
                median(&mut stops.clone()),
                worst(&stops),
            );
        }

        let (mut front, mut model) = (Vec::new(), Vec::new());
        for _ in 0..o.repeats {
            let heard = stream_one(server.addr, &frames, true, None).await?;
            let (Some(stop), Some(created)) = (heard.stopped_at, heard.response_created) else {
                return Err("no response after speech_stopped".into());
            };
            front.push(created.saturating_duration_since(stop).as_secs_f64() * 1e3);
            if let Some(audio) = heard.first_audio {
                model.push(audio.saturating_duration_since(created).as_secs_f64() * 1e3);
            }
        }
        println!(
            "answers {}: speech_stopped -> response.created median {:.1} ms (min {:.1}, max {:.1}); \
             response.created -> first audio delta median {:.1} ms ({} of {} answers had audio)",
            o.repeats,
            median(&mut front.clone()),
            front.iter().copied().fold(f64::INFINITY, f64::min),
            worst(&front),
            median(&mut model.clone()),
            model.len(),
            o.repeats,
        );
        if lost > 0 {
            return Err(format!("{lost} connections lost or changed VAD events").into());
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    support::main_of("realtime bench", options, run)
}
