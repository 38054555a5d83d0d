//! `voxloop voice {add|import|list|register}`: the voice library from the command line.
//!
//! The library is `[voice] dir` (default `<data_dir>/voices`), one profile file per voice.
//! `add` computes a profile from a recording with the token2wav release's ONNX models
//! (`speech_tokenizer_v2_25hz.onnx`, `campplus.onnx`, in `[voice] token2wav` or
//! `<model dir>/token2wav`) on ONNX Runtime (`$ORT_DYLIB_PATH`; `scripts/onnxruntime.sh` fetches
//! it); `import` takes a precomputed `.json`/`.safetensors` profile. Both then register the
//! library's voices in the audio index (kind `timbre`) when there is one, so voice swap and
//! `voxloop search --kind timbre` find them by description.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use voxloop_voices::extract::{ExtractorOptions, ProfileExtractor};
use voxloop_voices::prompt::PromptAudio;
use voxloop_voices::{VoiceLibrary, VoiceProfile};

use crate::cli::index;
use crate::config::Config;

/// `voxloop voice …`
#[derive(Debug, Args)]
pub struct VoiceArgs {
    #[command(subcommand)]
    command: VoiceCommand,
}

#[derive(Debug, Subcommand)]
enum VoiceCommand {
    /// Compute a voice profile from a recording (1-30 s of one speaker) and add it.
    Add {
        /// The voice's name: letters, digits, '_', '-', '.'.
        name: String,
        /// The recording (WAV, FLAC, MP3 or Ogg Vorbis).
        #[arg(long)]
        wav: PathBuf,
        /// What the voice sounds like, for search ("warm low male voice, slow").
        #[arg(long, short, default_value = "")]
        description: String,
        /// An attribute, KEY=VALUE (gender=female, language=zh, age=adult, ...); repeatable.
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        /// The token2wav directory holding the ONNX models (default: [voice] token2wav, else
        /// <model dir>/token2wav).
        #[arg(long)]
        token2wav: Option<PathBuf>,
        /// Replace a voice of that name.
        #[arg(long)]
        force: bool,
    },
    /// Add a precomputed profile (.json or .safetensors).
    Import {
        /// The profile file.
        file: PathBuf,
    },
    /// List the voices of the library.
    List,
    /// Register every voice of the library in the audio index (after `voxloop index add`
    /// created it).
    Register,
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Runs `voxloop voice …`.
pub fn run(config: &Config, args: VoiceArgs) -> anyhow::Result<()> {
    let (dir, _) = config.voices_dir();
    match args.command {
        VoiceCommand::Add { name, wav, description, attributes, token2wav, force } => {
            let mut library = open_library(&dir)?;
            if library.get(&name).is_some() && !force {
                bail!("the library already has a voice {name:?} (use --force to replace it)");
            }
            let token2wav = match token2wav.or_else(|| config.token2wav_dir().map(|(d, _)| d)) {
                Some(dir) => dir,
                None => bail!(
                    "no token2wav directory: pass --token2wav, or set [voice] token2wav or \
                     [model] dir in the configuration"
                ),
            };
            let profile = compute_profile(&token2wav, &name, &wav, description, attributes)?;
            let tokens = profile.prompt_tokens.len();
            let added = library.add(profile)?;
            eprintln!(
                "added voice {} ({tokens} prompt tokens, {:.1} s) to {}",
                added.name,
                tokens as f64 / 25.0,
                dir.display()
            );
            register(config, &library).map(drop)
        }
        VoiceCommand::Import { file } => {
            let mut library = open_library(&dir)?;
            let added = library.import(&file)?;
            eprintln!("imported voice {} into {}", added.name, dir.display());
            register(config, &library).map(drop)
        }
        VoiceCommand::Register => {
            let library = open_library(&dir)?;
            if !register(config, &library)? {
                bail!("nothing registered: create the audio index first (`voxloop index add`)");
            }
            Ok(())
        }
        VoiceCommand::List => {
            let library = open_library(&dir)?;
            if library.is_empty() {
                eprintln!("no voices in {} (add one with `voxloop voice add`)", dir.display());
            }
            for profile in library.profiles() {
                let file = library.file_of(&profile.name).map(Path::display);
                println!(
                    "{}\t{:.1} s\t{}\t{}",
                    profile.name,
                    profile.prompt_tokens.len() as f64 / 25.0,
                    profile.description,
                    file.map(|f| f.to_string()).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

fn open_library(dir: &Path) -> anyhow::Result<VoiceLibrary> {
    VoiceLibrary::open(dir).with_context(|| format!("opening the voice library {}", dir.display()))
}

fn compute_profile(
    token2wav: &Path,
    name: &str,
    wav: &Path,
    description: String,
    attributes: Vec<(String, String)>,
) -> anyhow::Result<VoiceProfile> {
    // The recording is checked before the models load: a wrong file fails at once.
    let audio = PromptAudio::load(wav)?;
    eprintln!("loading the speech tokenizer and speaker model from {}", token2wav.display());
    let extractor = ProfileExtractor::from_dir(token2wav, &ExtractorOptions::default())?;
    eprintln!("computing the profile of {} ({:.1} s)", wav.display(), audio.seconds());
    let mut profile = extractor.profile(name, &audio)?;
    profile.description = description;
    profile.attributes = attributes.into_iter().collect::<BTreeMap<_, _>>();
    Ok(profile)
}

/// Registers the library's voices in the audio index of the data dir, when there is one
/// (`Ok(false)` when there is none).
fn register(config: &Config, library: &VoiceLibrary) -> anyhow::Result<bool> {
    match index::open_existing(config)? {
        Some(index) => {
            let report = library.register(&index)?;
            eprintln!(
                "audio index: {} voices added, {} updated, {} unchanged",
                report.added, report.updated, report.unchanged
            );
            Ok(true)
        }
        None => {
            eprintln!(
                "no audio index in {}: the voice is not searchable yet (`voxloop index add` \
                 creates one, then `voxloop voice register`)",
                config.paths.data_dir.join("index").display()
            );
            Ok(false)
        }
    }
}
