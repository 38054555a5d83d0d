//! `voxloop generate`: one Step-Audio 2 turn from the command line, through the same turn
//! runtime as every other front door (`Agent::speak_turn`, with no tools).
//!
//! The prompt is the official one: a system turn, a human turn holding the audio clips (each
//! 25-s chunk as `<audio_start>` + patches + `<audio_end>`) and then the text, audio first as
//! StepFun's vLLM client orders them, and the generation prompt `<|BOT|>assistant\n`, plus `<tts_start>` with `--speech`. Text is printed
//! as it is generated, spoken text and written content alike; speech codes are counted and,
//! with `--wav`, rendered by token2wav in the voice of `--voice` and written as a 24 kHz WAV.
//! A summary with token counts, the finish reason and timings ends the output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use futures::StreamExt;
use tch::{Device, Kind};
use voxloop_core::agent::{
    Agent, AgentConfig, AgentEvent, ConstraintFactory, SpeechRenderer, TurnEndReason, TurnInput,
    Usage,
};
use voxloop_core::audio::{prepare_audio, AudioLimits};
use voxloop_core::generate::{InferenceWorker, LogitsMask};
use voxloop_core::model::StepAudio2;
use voxloop_core::protocol::{GenerationMode, ToolChoice};
use voxloop_core::session::{DateLine, SamplingSettings, Session, SessionSettings, Turn};
use voxloop_core::tokenizer::{SpecialTokens, StepTokenizer, TokenClass};
use voxloop_core::tool::ToolRegistry;
use voxloop_core::DeviceSpec;
use voxloop_voices::{SessionVoice, Token2Wav, VoiceProfile};

use crate::config::{Config, ThinkSetting};

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
    /// Think before answering: `auto` when the checkpoint is a reasoning one (its name holds
    /// `Think`, as Step-Audio-2-mini-Think); the thinking is printed to stderr
    #[arg(long, value_enum, default_value_t = ThinkSetting::Auto, value_name = "WHEN")]
    think: ThinkSetting,
    /// The most tokens of the think phase.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    reasoning_max_tokens: usize,
    /// Also print the prompt's length and the generated token ids.
    #[arg(long)]
    show_ids: bool,
    /// Sample from the whole vocabulary, as upstream's `generate` does (a text answer may
    /// then hold speech codes); for parity checks [default: a text answer masks the speech
    /// vocabulary]
    #[arg(long)]
    unmasked: bool,
    /// Render the spoken answer (needs `--speech`, `--voice` and token2wav) into this WAV
    /// file (24 kHz, 16-bit mono).
    #[arg(long, value_name = "FILE", requires_all = ["speech", "voice"])]
    wav: Option<PathBuf>,
    /// The voice of `--wav`: a voice profile JSON (as `voxloop voice add` writes).
    #[arg(long, value_name = "FILE", requires = "wav")]
    voice: Option<PathBuf>,
    /// token2wav directory for `--wav` [default: `[voice] token2wav` of the configuration,
    /// else `<model>/token2wav`]
    #[arg(long, value_name = "DIR", requires = "wav")]
    token2wav: Option<PathBuf>,
}

/// `--unmasked`: no logits mask at all (there are no tools to constrain).
struct Unmasked;

impl ConstraintFactory for Unmasked {
    fn build(
        &self,
        _: &ToolChoice,
        _: GenerationMode,
    ) -> voxloop_core::Result<Option<Box<dyn LogitsMask + Send>>> {
        Ok(None)
    }
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
    let tokenizer = Arc::new(StepTokenizer::from_file(dir.join("tokenizer.json"))?);

    // Inputs first: a bad file fails before minutes of loading.
    let limits = AudioLimits::default();
    let mut input = TurnInput::default();
    for path in &args.audio {
        input = input.and_audio(prepare_audio(path.as_path(), &limits)?);
    }
    if let Some(text) = &args.text {
        input = input.and_text(text.clone());
    }
    let voice = args
        .voice
        .as_deref()
        .map(|path| {
            VoiceProfile::from_json_file(path)
                .with_context(|| format!("--voice {}", path.display()))
        })
        .transpose()?;

    let (agent, load) = load_agent(dir, device, kind, Arc::clone(&tokenizer), args.now)?;
    let agent = if args.unmasked { agent.with_constraints(Arc::new(Unmasked)) } else { agent };
    let renderer = match &args.wav {
        Some(_) => Some(load_token2wav(&args, config, device)?),
        None => None,
    };
    let mut session = Session::new(session_settings(&args));
    if let Some(voice) = voice {
        session.extensions_mut().insert(Arc::new(SessionVoice::new(Arc::new(voice))));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        let mut printer = Printer::new();
        let start = Instant::now();
        let mut stream = agent.speak_turn(&mut session, input, renderer.as_ref());
        while let Some(event) = stream.next().await {
            printer.event(event, start)?;
        }
        printer.finish()?;
        anyhow::Ok(printer)
    })?;
    let Some((reason, usage)) = outcome.finished.clone() else {
        bail!("the turn ended without finishing");
    };
    if let TurnEndReason::Error(message) = &reason {
        bail!("generation failed: {message}");
    }
    if let (Some(path), false) = (&args.wav, outcome.pcm.is_empty()) {
        voxloop_voices::token2wav::write_wav(path, &outcome.pcm)?;
    }
    let summary = Summary {
        printer: &outcome,
        usage,
        generated: generated_ids(&session),
        load,
        max_new_tokens: args.max_new_tokens,
        special: *tokenizer.special(),
        wav: args.wav.as_deref(),
    };
    summary.print(args.show_ids)
}

/// The session of the one turn: the system prompt (`--system`, else the dated default), the
/// sampling arguments, speech or text, no tool calls.
fn session_settings(args: &GenerateArgs) -> SessionSettings {
    let (system_prompt, date_line) = match &args.system {
        Some(system) => (system.clone(), DateLine::Off),
        None => ("You are a helpful assistant.".to_owned(), DateLine::English),
    };
    SessionSettings {
        system_prompt,
        date_line,
        utc_offset_minutes: 0,
        voice_instruction: None,
        speech: args.speech,
        sampling: SamplingSettings {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
            max_new_tokens: args.max_new_tokens,
        },
        tool_choice: ToolChoice::None,
        follow_up_tool_choice: ToolChoice::None,
        think: match args.think {
            ThinkSetting::On => true,
            ThinkSetting::Off => false,
            ThinkSetting::Auto => voxloop_core::model::is_reasoning_checkpoint(&args.model),
        },
        reasoning_max_tokens: args.reasoning_max_tokens.max(1),
        ..SessionSettings::default()
    }
}

/// The ids the turn generated (its assistant turns, in order).
fn generated_ids(session: &Session) -> Vec<i64> {
    session
        .history()
        .iter()
        .filter_map(|turn| match turn {
            Turn::Assistant(assistant) => Some(assistant.ids.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

/// Loads the checkpoint on an inference thread as `kind` behind an agent without tools,
/// showing the elapsed time on a terminal's stderr meanwhile.
fn load_agent(
    dir: &Path,
    device: Device,
    kind: Kind,
    tokenizer: Arc<StepTokenizer>,
    now: Option<SystemTime>,
) -> anyhow::Result<(Agent, Duration)> {
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
    let patch = u32::try_from(tokenizer.special().audio_patch)?;
    let model_dir = dir.to_path_buf();
    let worker = InferenceWorker::spawn(move || {
        let mut model = StepAudio2::load(&model_dir, device, kind)?;
        model.set_audio_patch_id(patch);
        Ok(model)
    });
    drop(stop);
    if let Some(ticker) = ticker {
        let _ = ticker.join();
    }
    let worker = worker.with_context(|| format!("loading the model in {}", dir.display()))?;
    let load = start.elapsed();
    eprintln!("loaded in {:.2} s", load.as_secs_f64());
    let config = AgentConfig { fixed_now: now, ..AgentConfig::default() };
    Ok((Agent::new(worker, tokenizer, ToolRegistry::new(), config)?, load))
}

/// token2wav on its render thread, from `--token2wav`, `[voice] token2wav` or the model's
/// `token2wav` directory.
fn load_token2wav(
    args: &GenerateArgs,
    config: &Config,
    device: Device,
) -> anyhow::Result<SpeechRenderer> {
    let dir = args
        .token2wav
        .clone()
        .or_else(|| config.voice.token2wav.clone())
        .unwrap_or_else(|| args.model.join("token2wav"));
    if !dir.join("flow.yaml").is_file() {
        bail!("token2wav {}: not a token2wav directory (no flow.yaml)", dir.display());
    }
    eprintln!("loading token2wav from {}", dir.display());
    let renderer = SpeechRenderer::spawn("voxloop-token2wav", move || {
        Token2Wav::load(&dir, device).map_err(|e| format!("loading token2wav: {e}"))
    })?;
    Ok(renderer)
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

/// Prints the turn's text as it streams, and keeps what the summary needs.
struct Printer {
    out: std::io::Stdout,
    /// Whether the last character written was a newline (or nothing was written).
    at_line_start: bool,
    /// Whether the text written last was spoken.
    in_speech: bool,
    /// When the first generated text or speech code arrived, since the turn started.
    first_output: Option<Duration>,
    /// When the turn finished, since it started.
    elapsed: Duration,
    /// The rendered speech (with `--wav`).
    pcm: Vec<f32>,
    finished: Option<(TurnEndReason, Usage)>,
}

impl Printer {
    fn new() -> Self {
        Self {
            out: std::io::stdout(),
            at_line_start: true,
            in_speech: false,
            first_output: None,
            elapsed: Duration::ZERO,
            pcm: Vec::new(),
            finished: None,
        }
    }

    fn event(&mut self, event: AgentEvent, start: Instant) -> anyhow::Result<()> {
        match event {
            AgentEvent::TextDelta { text, in_speech } => {
                self.first_output.get_or_insert_with(|| start.elapsed());
                // The transcript and the written content on lines of their own.
                if in_speech != self.in_speech {
                    self.end_line()?;
                    self.in_speech = in_speech;
                }
                self.write(&text)?;
            }
            AgentEvent::AudioTokens(_) => {
                self.first_output.get_or_insert_with(|| start.elapsed());
            }
            // The thinking is not the answer: stderr, so stdout stays the answer alone.
            AgentEvent::Reasoning { text } => {
                let mut err = std::io::stderr().lock();
                err.write_all(text.as_bytes())
                    .and_then(|()| err.flush())
                    .context("writing to stderr")?;
            }
            AgentEvent::Audio { pcm, .. } => self.pcm.extend(pcm),
            AgentEvent::SpeechFailed { message } => bail!("speech rendering failed: {message}"),
            AgentEvent::TurnFinished { reason, usage } => {
                self.elapsed = start.elapsed();
                self.finished = Some((reason, usage));
            }
            // No tools: no calls, results or questions; the step's usage is in the total.
            AgentEvent::ToolCallStarted { .. }
            | AgentEvent::ToolCallRequested { .. }
            | AgentEvent::ToolCallFinished { .. }
            | AgentEvent::ToolAttachment { .. }
            | AgentEvent::ApprovalRequested(_)
            | AgentEvent::Usage { .. } => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.end_line()?;
        self.out.flush().context("writing to stdout")
    }

    fn end_line(&mut self) -> anyhow::Result<()> {
        if !self.at_line_start {
            self.write("\n")?;
        }
        Ok(())
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.out.write_all(text.as_bytes()).context("writing to stdout")?;
        self.out.flush().context("writing to stdout")?;
        self.at_line_start = text.ends_with('\n');
        Ok(())
    }
}

/// The lines after `---`.
struct Summary<'a> {
    printer: &'a Printer,
    usage: Usage,
    generated: Vec<i64>,
    load: Duration,
    max_new_tokens: usize,
    special: SpecialTokens,
    wav: Option<&'a Path>,
}

impl Summary<'_> {
    fn print(&self, show_ids: bool) -> anyhow::Result<()> {
        let n = self.generated.len();
        let (mut text, mut audio, mut padding, mut control) = (0, 0, 0, 0);
        for &id in &self.generated {
            match self.special.classify(id) {
                TokenClass::Text => text += 1,
                TokenClass::AudioCode(_) => audio += 1,
                TokenClass::AudioPad => padding += 1,
                TokenClass::Control | TokenClass::Unused => control += 1,
            }
        }
        let rate = |tokens: usize, time: Duration| {
            let secs = time.as_secs_f64();
            if secs > 0.0 {
                format!("{:.1} tok/s", tokens as f64 / secs)
            } else {
                "n/a".to_owned()
            }
        };
        // The agent generates until `<|EOT|>` (not kept) or the token limit.
        let finish = if n >= self.max_new_tokens {
            format!("length ({} tokens)", self.max_new_tokens)
        } else {
            "stop (<|EOT|>)".to_owned()
        };
        let first = self.printer.first_output.unwrap_or(self.printer.elapsed);
        let decode = self.printer.elapsed.saturating_sub(first);
        let prompt = self.usage.input_tokens;
        let mut lines = vec![
            "---".to_owned(),
            format!("generated tokens: {n}"),
            format!("text tokens: {text}"),
            format!("audio tokens: {audio}"),
        ];
        if padding > 0 {
            lines.push(format!("audio padding tokens: {padding}"));
        }
        if control > 0 {
            lines.push(format!("control tokens: {control}"));
        }
        lines.push(format!("finish: {finish}"));
        lines.push(format!("load: {:.2} s", self.load.as_secs_f64()));
        // Measured on the event stream: the prefill ends with the first generated token.
        lines.push(format!(
            "prefill: {prompt} tokens in {:.3} s ({})",
            first.as_secs_f64(),
            rate(prompt, first)
        ));
        lines.push(format!("first token: {:.3} s", first.as_secs_f64()));
        let after_first = n.saturating_sub(1);
        lines.push(format!(
            "decode: {after_first} tokens in {:.3} s ({})",
            decode.as_secs_f64(),
            rate(after_first, decode)
        ));
        if let Some(path) = self.wav {
            let samples = self.printer.pcm.len();
            lines.push(if samples == 0 {
                "speech: none (no speech codes were generated; no file written)".to_owned()
            } else {
                format!(
                    "speech: {samples} samples ({:.2} s at 24 kHz) in {}",
                    samples as f64 / 24_000.0,
                    path.display()
                )
            });
        }
        if show_ids {
            lines.push(format!("prompt ids: {prompt}"));
            lines.push(format!("generated ids: {:?}", self.generated));
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
        let args = GenerateArgs {
            model: PathBuf::new(),
            audio: vec![],
            text: Some("hi".into()),
            system: None,
            now: Some(now),
            speech: false,
            max_new_tokens: 8,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: None,
            device: None,
            dtype: None,
            think: ThinkSetting::Auto,
            reasoning_max_tokens: 16,
            show_ids: false,
            unmasked: false,
            wav: None,
            voice: None,
            token2wav: None,
        };
        assert_eq!(
            session_settings(&args).system_text(now),
            "You are a helpful assistant.\nToday is Thursday, August 28, 2025."
        );
        let args = GenerateArgs { system: Some("Be brief.".into()), ..args };
        assert_eq!(session_settings(&args).system_text(now), "Be brief.");
        // `auto` asks the checkpoint's name; `on` and `off` decide.
        assert!(!session_settings(&args).think, "an empty path names no reasoning checkpoint");
        let thinking =
            GenerateArgs { model: PathBuf::from("models/Step-Audio-2-mini-Think"), ..args };
        assert!(session_settings(&thinking).think);
        let off = GenerateArgs { think: ThinkSetting::Off, ..thinking };
        assert!(!session_settings(&off).think);
        assert_eq!(session_settings(&off).reasoning_max_tokens, 16);
    }
}
