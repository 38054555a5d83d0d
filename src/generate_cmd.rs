//! `voxloop generate`: one Step-Audio 2 turn from the command line.
//!
//! The prompt is the official one (step-audio-2.md §2): a system turn, a human turn holding the
//! audio clips (each 25-s chunk as `<audio_start>` + patches + `<audio_end>`) and then the text,
//! audio first as StepFun's vLLM client orders them, and the generation prompt
//! `<|BOT|>assistant\n`, plus `<tts_start>` with `--speech`. Generation runs on this thread
//! (a CLI has no async runtime to protect). Text is printed as it is generated, spoken text and
//! written content alike; speech codes are counted; tool calls are printed on their own line.
//! A summary with token counts, the finish reason and timings ends the output.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use tch::{Device, Kind};
use voxloop_core::audio::{prepare_audio, AudioChunk, AudioLimits};
use voxloop_core::generate::{
    generate, AudioInput, FinishReason, GenerationOutput, Prompt, Sampler, SamplingParams, Segment,
};
use voxloop_core::model::StepAudio2;
use voxloop_core::protocol::{
    encode_pieces, render, AudioClip, Content, Demux, DemuxEvent, GenerationMode, Message, Part,
    PromptPiece, Role,
};
use voxloop_core::session::{DateLine, SessionSettings};
use voxloop_core::tokenizer::{SpecialTokens, StepTokenizer, TextStream, TokenClass};
use voxloop_core::DeviceSpec;

use crate::config::Config;

/// Arguments of `voxloop generate`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).multiple(true).args(["audio", "text"])))]
pub struct GenerateArgs {
    /// Checkpoint directory in the official layout (config.json, safetensors shards,
    /// tokenizer.json), e.g. Step-Audio-2-mini as downloaded.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Audio for the user turn (WAV, FLAC, MP3, Ogg Vorbis); repeat for several clips.
    #[arg(long, value_name = "FILE")]
    audio: Vec<PathBuf>,
    /// Text of the user turn (after the audio).
    #[arg(long)]
    text: Option<String>,
    /// System prompt [default: a helpful-assistant prompt with today's date]
    #[arg(long)]
    system: Option<String>,
    /// Date the default system prompt by this RFC 3339 instant (`2025-08-28T04:00:00Z`)
    /// instead of the clock, so that a seeded run repeats on any day
    #[arg(long, value_name = "TIME", value_parser = crate::config::parse_instant)]
    now: Option<SystemTime>,
    /// Ask for a spoken answer: prefill `<tts_start>`, so the model writes interleaved text
    /// and speech tokens.
    #[arg(long)]
    speech: bool,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.7, value_parser = non_negative, value_name = "T")]
    temperature: f64,
    /// Nucleus sampling threshold in [0, 1]; 1 disables it.
    #[arg(long, default_value_t = 0.9, value_parser = unit_interval, value_name = "P")]
    top_p: f64,
    /// Keep only the K most likely tokens; 0 disables it.
    #[arg(long, default_value_t = 50, value_name = "K")]
    top_k: usize,
    /// Repetition penalty over the prompt and the output (> 0); 1 disables it.
    #[arg(long, default_value_t = 1.05, value_parser = positive, value_name = "R")]
    repetition_penalty: f64,
    /// Seed of the random draw [default: from the operating system]
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// auto | cpu | cuda | cuda:N [default: `[model] device` of the configuration, auto]
    #[arg(long, value_parser = parse_device, value_name = "DEVICE")]
    device: Option<DeviceSpec>,
    /// Weight dtype [default: bf16 on CUDA, f32 on the CPU]
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Also print the prompt's length and the generated token ids.
    #[arg(long)]
    show_ids: bool,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    fn kind(self) -> Kind {
        match self {
            Dtype::F32 => Kind::Float,
            Dtype::Bf16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
        }
    }
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: voxloop_core::Error| e.to_string())
}

fn parse_float(s: &str, ok: impl Fn(f64) -> bool, what: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if x.is_finite() && ok(x) {
        Ok(x)
    } else {
        Err(format!("{s} is not {what}"))
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    parse_float(s, |x| x >= 0.0, "a finite number >= 0")
}

fn unit_interval(s: &str) -> Result<f64, String> {
    parse_float(s, |x| (0.0..=1.0).contains(&x), "in [0, 1]")
}

fn positive(s: &str) -> Result<f64, String> {
    parse_float(s, |x| x > 0.0, "a finite number > 0")
}

/// Runs `voxloop generate`.
pub fn run(args: GenerateArgs, config: &Config) -> anyhow::Result<()> {
    let device = args.device.unwrap_or(config.model.device).resolve()?;
    let kind = match args.dtype {
        Some(dtype) => dtype.kind(),
        None if device.is_cuda() => Kind::BFloat16,
        None => Kind::Float,
    };
    let dir = &args.model;
    if !dir.is_dir() {
        bail!("model directory {} does not exist or is not a directory", dir.display());
    }
    let tokenizer = StepTokenizer::from_file(dir.join("tokenizer.json"))?;
    let special = *tokenizer.special();

    // Audio first: a bad file fails before minutes of loading.
    let limits = AudioLimits::default();
    let clips = args
        .audio
        .iter()
        .map(|path| prepare_audio(path.as_path(), &limits))
        .collect::<voxloop_core::Result<Vec<_>>>()?;

    let mode = if args.speech { GenerationMode::Speech } else { GenerationMode::Text };
    let messages = conversation(&args, &clips, mode);
    let pieces = encode_pieces(&render(&messages), &tokenizer)?;
    let segments = segments(pieces, &clips)?;
    let prompt_len: usize = segments.iter().map(|s| s.ids().len()).sum();

    let (mut model, load) = load_model(dir, device, kind)?;
    model.set_audio_patch_id(u32::try_from(special.audio_patch)?);
    let room = model.max_positions().saturating_sub(prompt_len);
    if room == 0 {
        bail!(
            "the prompt has {prompt_len} tokens but the model holds at most {} positions",
            model.max_positions()
        );
    }
    let max_new_tokens = if args.max_new_tokens > room {
        eprintln!("note: --max-new-tokens lowered to {room}, the room left in the context");
        room
    } else {
        args.max_new_tokens
    };
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        max_new_tokens,
        stop_tokens: vec![special.eot, special.endoftext],
    };
    let mut sampler = Sampler::new(params)?;

    let mut printer = Printer::new(&tokenizer, mode);
    let cancel = AtomicBool::new(false);
    let prompt = Prompt { cached: &[], segments: &segments };
    let output = generate(&mut model, prompt, &mut sampler, None, &cancel, |id| {
        printer.push(id);
        if printer.error.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    printer.finish();
    if let Some(err) = printer.error.take() {
        return Err(err);
    }
    let summary = Summary { output: &output, load, max_new_tokens, prompt_len, special };
    summary.print(&printer, &tokenizer, args.show_ids)?;
    Ok(())
}

/// System turn, human turn (audio clips, then the text), generation prompt.
fn conversation(
    args: &GenerateArgs,
    clips: &[Vec<AudioChunk>],
    mode: GenerationMode,
) -> Vec<Message> {
    let system = args
        .system
        .clone()
        .unwrap_or_else(|| default_system_prompt(args.now.unwrap_or_else(SystemTime::now)));
    let mut parts: Vec<Part> = clips
        .iter()
        .enumerate()
        .map(|(i, chunks)| Part::Audio(AudioClip::from_chunks(i as u64, chunks)))
        .collect();
    if let Some(text) = &args.text {
        parts.push(Part::Untrusted(text.clone()));
    }
    vec![
        Message::system(system),
        Message::new(Role::Human, Content::Parts(parts)),
        Message::generation_prompt(mode),
    ]
}

/// The encoded pieces as the model's segments, each audio chunk's mel after its placeholders.
fn segments(pieces: Vec<PromptPiece>, clips: &[Vec<AudioChunk>]) -> anyhow::Result<Vec<Segment>> {
    pieces
        .into_iter()
        .map(|piece| match piece {
            PromptPiece::Tokens(ids) => Ok(Segment::Tokens(ids)),
            PromptPiece::Audio(audio) => {
                let chunk = usize::try_from(audio.clip_key)
                    .ok()
                    .and_then(|clip| clips.get(clip))
                    .and_then(|chunks| chunks.get(audio.chunk_in_clip))
                    .ok_or_else(|| anyhow!("rendered audio chunk {audio:?} has no mel"))?;
                Ok(Segment::Audio(AudioInput {
                    mel: chunk.mel.shallow_clone(),
                    patches: chunk.patches,
                }))
            }
        })
        .collect()
}

/// `You are a helpful assistant.` and the date at `now` (UTC), as the official prompts carry
/// the date (stepfun-ai/Step-Audio2 `examples.py`).
fn default_system_prompt(now: SystemTime) -> String {
    let settings = SessionSettings {
        system_prompt: "You are a helpful assistant.".to_owned(),
        date_line: DateLine::English,
        utc_offset_minutes: 0,
        voice_instruction: None,
        ..SessionSettings::default()
    };
    settings.system_text(now)
}

/// Loads the checkpoint, showing the elapsed time on a terminal's stderr meanwhile.
fn load_model(dir: &Path, device: Device, kind: Kind) -> anyhow::Result<(StepAudio2, Duration)> {
    let mb = checkpoint_bytes(dir) as f64 / 1e6;
    let size = if mb >= 1000.0 { format!("{:.1} GB", mb / 1e3) } else { format!("{mb:.1} MB") };
    let device_name = match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_owned(),
    };
    eprintln!("loading {} ({size}) on {device_name} as {kind:?}", dir.display());
    let start = Instant::now();
    let (stop, stopped) = mpsc::channel::<()>();
    let ticker = std::io::stderr().is_terminal().then(|| {
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(1))
            {
                eprint!("\rloading... {} s", start.elapsed().as_secs());
            }
            eprint!("\r\x1b[K");
        })
    });
    let model = StepAudio2::load(dir, device, kind);
    drop(stop);
    if let Some(ticker) = ticker {
        let _ = ticker.join();
    }
    let model = model.with_context(|| format!("loading the model in {}", dir.display()))?;
    let load = start.elapsed();
    eprintln!("loaded in {:.2} s", load.as_secs_f64());
    Ok((model, load))
}

/// Total size of the safetensors files in `dir` (0 if unreadable: it is only shown).
fn checkpoint_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Streams the generated ids to stdout through the demultiplexer and counts them.
struct Printer<'a> {
    demux: Demux<&'a StepTokenizer>,
    text: TextStream<'a>,
    special: SpecialTokens,
    out: std::io::Stdout,
    /// Whether the last character written was a newline (or nothing was written).
    at_line_start: bool,
    text_tokens: usize,
    audio_tokens: usize,
    audio_padding: usize,
    other_tokens: usize,
    tool_calls: usize,
    bad_tool_calls: usize,
    error: Option<anyhow::Error>,
}

impl<'a> Printer<'a> {
    fn new(tokenizer: &'a StepTokenizer, mode: GenerationMode) -> Self {
        let special = *tokenizer.special();
        Self {
            demux: Demux::new(special, tokenizer, mode),
            text: tokenizer.decode_stream(),
            special,
            out: std::io::stdout(),
            at_line_start: true,
            text_tokens: 0,
            audio_tokens: 0,
            audio_padding: 0,
            other_tokens: 0,
            tool_calls: 0,
            bad_tool_calls: 0,
            error: None,
        }
    }

    fn push(&mut self, id: i64) {
        match self.special.classify(id) {
            TokenClass::Text => self.text_tokens += 1,
            TokenClass::AudioCode(_) => self.audio_tokens += 1,
            TokenClass::AudioPad => self.audio_padding += 1,
            TokenClass::Control | TokenClass::Unused => self.other_tokens += 1,
        }
        let events = self.demux.push(id);
        self.handle(events);
    }

    fn finish(&mut self) {
        let events = self.demux.finish();
        self.handle(events);
        if !self.at_line_start {
            self.write("\n");
        }
    }

    fn handle(&mut self, events: Vec<DemuxEvent>) {
        for event in events {
            if self.error.is_some() {
                return;
            }
            match event {
                DemuxEvent::TextDelta { ids, .. } => {
                    for id in ids {
                        match self.text.step(id) {
                            Ok(Some(piece)) => self.write(&piece),
                            Ok(None) => {}
                            Err(e) => self.error = Some(e.into()),
                        }
                    }
                }
                DemuxEvent::Control(id) if id == self.special.tts_end => self.end_line(),
                DemuxEvent::ToolCall(Ok(call)) => {
                    self.tool_calls += 1;
                    self.end_line();
                    let args = serde_json::Value::Object(call.arguments).to_string();
                    self.write(&format!("[tool call] {}({args})\n", call.name));
                }
                DemuxEvent::ToolCall(Err(e)) => {
                    self.bad_tool_calls += 1;
                    self.end_line();
                    self.write(&format!("[malformed tool call] {e}\n"));
                }
                DemuxEvent::AudioTokens(_)
                | DemuxEvent::Control(_)
                | DemuxEvent::ToolCallStart
                | DemuxEvent::End => {}
            }
        }
    }

    fn end_line(&mut self) {
        if !self.at_line_start {
            self.write("\n");
        }
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() || self.error.is_some() {
            return;
        }
        let mut out = self.out.lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => self.at_line_start = text.ends_with('\n'),
            Err(e) => self.error = Some(anyhow!("writing to stdout: {e}")),
        }
    }
}

struct Summary<'a> {
    output: &'a GenerationOutput,
    load: Duration,
    max_new_tokens: usize,
    prompt_len: usize,
    special: SpecialTokens,
}

impl Summary<'_> {
    fn print(
        &self,
        p: &Printer<'_>,
        tokenizer: &StepTokenizer,
        show_ids: bool,
    ) -> anyhow::Result<()> {
        let t = &self.output.timings;
        let n = self.output.tokens.len();
        let rate = |tokens: usize, time: Duration| {
            let secs = time.as_secs_f64();
            if secs > 0.0 {
                format!("{:.1} tok/s", tokens as f64 / secs)
            } else {
                "n/a".to_owned()
            }
        };
        let finish = match self.output.finish_reason {
            FinishReason::Stop(id) if id == self.special.eot => "stop (<|EOT|>)".to_owned(),
            FinishReason::Stop(id) => {
                format!("stop ({})", tokenizer.token_str(id).unwrap_or_else(|| id.to_string()))
            }
            FinishReason::Length => format!("length ({} tokens)", self.max_new_tokens),
            FinishReason::Cancelled => "cancelled".to_owned(),
            FinishReason::Callback => "stopped by the output".to_owned(),
        };
        let decode_time = t.decode + t.sampling;
        let mut lines = vec![
            "---".to_owned(),
            format!("generated tokens: {n}"),
            format!("text tokens: {}", p.text_tokens),
            format!("audio tokens: {}", p.audio_tokens),
        ];
        if p.audio_padding > 0 {
            lines.push(format!("audio padding tokens: {}", p.audio_padding));
        }
        if p.other_tokens > 0 {
            lines.push(format!("control tokens: {}", p.other_tokens));
        }
        if p.tool_calls > 0 || p.bad_tool_calls > 0 {
            lines.push(format!("tool calls: {} ({} malformed)", p.tool_calls, p.bad_tool_calls));
        }
        lines.push(format!("finish: {finish}"));
        lines.push(format!("load: {:.2} s", self.load.as_secs_f64()));
        lines.push(format!(
            "prefill: {} tokens in {:.3} s ({})",
            t.prompt_tokens,
            t.prefill.as_secs_f64(),
            rate(t.prompt_tokens, t.prefill)
        ));
        if let Some(first) = t.first_token {
            lines.push(format!("first token: {:.3} s", first.as_secs_f64()));
        }
        lines.push(format!(
            "decode: {n} tokens in {:.3} s ({})",
            decode_time.as_secs_f64(),
            rate(n, decode_time)
        ));
        if show_ids {
            lines.push(format!("prompt ids: {}", self.prompt_len));
            lines.push(format!("generated ids: {:?}", self.output.tokens));
        }
        let mut out = std::io::stdout().lock();
        for line in lines {
            writeln!(out, "{line}").context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn the_default_system_prompt_is_dated_by_now() {
        let now = UNIX_EPOCH + Duration::from_secs(20_328 * 86_400 + 23 * 3600);
        assert_eq!(
            default_system_prompt(now),
            "You are a helpful assistant.\nToday is Thursday, August 28, 2025."
        );
    }
}
