//! The model's tasks from the command line (`voxloop_core::agent::task`): `transcribe`,
//! `describe`, `translate` and `tts`, on the checkpoint of `[model] dir` (or `--model`), with
//! speech rendered by token2wav in a voice of the library.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use voxloop_core::agent::{Agent, AgentConfig, TargetLanguage, Task, TaskOutput, TurnInput};
use voxloop_core::audio::{prepare_audio, AudioLimits};
use voxloop_core::tool::ToolRegistry;
use voxloop_voices::SessionVoice;

use crate::config::Config;
use crate::runtime::setup::{load_voice_runtime, VoiceRuntime};

/// What every task takes.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The checkpoint directory (default: `[model] dir`, VOXLOOP_MODEL_DIR).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seed of the sampler (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// The most tokens to generate (default: the task's budget).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Print the answer as JSON (`text`, token counts, the WAV written).
    #[arg(long)]
    json: bool,
}

/// `voxloop transcribe FILE`.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// The recording (WAV, FLAC, MP3, Ogg Vorbis); long ones are heard in 25-s chunks.
    file: PathBuf,
    #[command(flatten)]
    task: TaskArgs,
}

/// `voxloop describe FILE`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The recording.
    file: PathBuf,
    /// A short account of the events in it, instead of the detailed description (speakers'
    /// gender, age and emotion, background, environment, events, transcript).
    #[arg(long)]
    brief: bool,
    #[command(flatten)]
    task: TaskArgs,
}

/// The languages translations go into.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Language {
    Zh,
    En,
}

/// `voxloop translate FILE`.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// The recording.
    file: PathBuf,
    /// The language of the translation.
    #[arg(long, value_enum, default_value = "zh")]
    to: Language,
    /// Speak the translation into this WAV file (speech-to-speech) instead of printing it.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The library voice of the speech (default: `[voice] name`).
    #[arg(long)]
    voice: Option<String>,
    #[command(flatten)]
    task: TaskArgs,
}

/// `voxloop tts TEXT`.
#[derive(Debug, Args)]
pub struct TtsArgs {
    /// The text to read aloud.
    text: String,
    /// The WAV file to write (24 kHz, 16-bit mono).
    #[arg(long, short)]
    output: PathBuf,
    /// The library voice (default: `[voice] name`).
    #[arg(long)]
    voice: Option<String>,
    #[command(flatten)]
    task: TaskArgs,
}

pub fn transcribe(config: &Config, args: TranscribeArgs) -> anyhow::Result<()> {
    run_audio_task(config, Task::Transcribe, &args.file, &args.task, None)
}

pub fn describe(config: &Config, args: DescribeArgs) -> anyhow::Result<()> {
    let task = if args.brief { Task::Caption } else { Task::Describe };
    run_audio_task(config, task, &args.file, &args.task, None)
}

pub fn translate(config: &Config, args: TranslateArgs) -> anyhow::Result<()> {
    let into = match args.to {
        Language::Zh => TargetLanguage::Chinese,
        Language::En => TargetLanguage::English,
    };
    let task = Task::Translate { into, spoken: args.output.is_some() };
    let speech = args.output.as_ref().map(|path| (path.clone(), args.voice.clone()));
    run_audio_task(config, task, &args.file, &args.task, speech)
}

pub fn tts(config: &Config, args: TtsArgs) -> anyhow::Result<()> {
    if args.text.trim().is_empty() {
        bail!("there is no text to read");
    }
    let input = TurnInput::text(args.text.clone());
    run(config, Task::ReadAloud, input, &args.task, Some((args.output, args.voice)))
}

fn run_audio_task(
    config: &Config,
    task: Task,
    file: &std::path::Path,
    args: &TaskArgs,
    speech: Option<(PathBuf, Option<String>)>,
) -> anyhow::Result<()> {
    // The recording first: a bad file fails before the model loads.
    let limits = AudioLimits::default();
    let chunks = prepare_audio(file, &limits).with_context(|| format!("{}", file.display()))?;
    run(config, task, TurnInput::audio(chunks), args, speech)
}

/// Runs `task` on `input`; speech goes to the WAV of `speech`, in its voice.
fn run(
    config: &Config,
    task: Task,
    input: TurnInput,
    args: &TaskArgs,
    speech: Option<(PathBuf, Option<String>)>,
) -> anyhow::Result<()> {
    let mut session = task.session(input, |sampling| {
        sampling.seed = args.seed;
        if let Some(n) = args.max_new_tokens {
            sampling.max_new_tokens = n;
        }
    })?;
    let voices = match &speech {
        Some((_, name)) => {
            let voices = load_voice_runtime(config)?.context(
                "speech needs token2wav and a voice library: set [voice] token2wav and [voice] dir",
            )?;
            let profile = match name {
                Some(name) => voices.library.get(name).cloned().with_context(|| {
                    format!("no voice {name:?} in the library (voices: {})", voice_names(&voices))
                })?,
                None => Arc::clone(&voices.start),
            };
            session.extensions_mut().insert(Arc::new(SessionVoice::new(profile)));
            Some(voices)
        }
        None => None,
    };
    let dir = args.model.clone().or_else(|| config.model.dir.clone()).context(
        "no checkpoint: pass --model DIR or set [model] dir (VOXLOOP_MODEL_DIR); `voxloop model \
         pull` downloads one",
    )?;
    if !dir.join("config.json").is_file() {
        bail!("{}: not a Step-Audio 2 checkpoint directory (no config.json)", dir.display());
    }
    eprintln!("loading {}", dir.display());
    let agent = Agent::load(&dir, config.model.device, ToolRegistry::new(), AgentConfig::default())
        .with_context(|| format!("loading the speech LLM from {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let show = !args.json && speech.is_none();
    let out = runtime.block_on(async {
        let stream = agent.run_task(&mut session, voices.as_ref().map(|v| &v.renderer))?;
        TaskOutput::collect(stream, |text| {
            if show {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
        })
        .await
    })?;
    if show {
        println!();
    }
    let written = match (&speech, &voices) {
        (Some((path, _)), Some(voices)) => {
            if out.speech.is_empty() {
                bail!("the model wrote no speech ({} tokens)", out.usage.output_tokens);
            }
            let rate =
                if out.sample_rate == 0 { voices.renderer.sample_rate() } else { out.sample_rate };
            std::fs::write(path, crate::http::pcm::wav_bytes(&out.speech, rate))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{}: {:.2} s of speech ({} speech codes)",
                path.display(),
                out.speech.len() as f64 / f64::from(rate),
                out.speech_codes.len()
            );
            Some(path.display().to_string())
        }
        _ => None,
    };
    if args.json {
        let json = serde_json::json!({
            "text": out.text.trim(),
            "input_tokens": out.usage.input_tokens,
            "output_tokens": out.usage.output_tokens,
            "speech_codes": out.speech_codes.len(),
            "wav": written,
        });
        println!("{json}");
    }
    Ok(())
}

fn voice_names(voices: &VoiceRuntime) -> String {
    voices.library.profiles().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}
