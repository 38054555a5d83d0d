//! The `voxloop` command: the service and its tools.

mod cli;
mod config;
mod eval;
mod http;
mod mcp;
mod realtime;
mod runtime;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// voxloop: voice agents on the Step-Audio 2 speech LLM that reason, call tools and answer in
/// speech.
#[derive(Debug, Parser)]
#[command(name = "voxloop", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Default: data/voxloop.toml when it exists.
    #[arg(long, short, global = true, env = "VOXLOOP_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service: /healthz, /v1/tools, /v1/audio/search over the audio index in the
    /// data dir when there is one, and the agent's /v1/sessions when [model] dir is set.
    /// Stops cleanly on Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on; overrides the file and VOXLOOP_ADDR.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Print the effective configuration (file + environment + defaults) as TOML.
    Config,
    /// Serve the tools (audio_search over the index in the data dir, web search, date and
    /// time, weather, voice_list over the voice library, audio_clip; as enabled) as an MCP
    /// server on stdin/stdout, for Claude Desktop, IDEs and other agents. Logs go to stderr.
    Mcp,
    /// Run the speech LLM once: audio and/or text in, the answer streamed to stdout.
    Generate(Box<cli::generate::GenerateArgs>),
    /// Manage the audio index (timbres and sound clips): add, rm, stats.
    Index(cli::index::IndexArgs),
    /// Search the audio index by description (hybrid BM25 + vectors), or --like an example.
    Search(cli::index::SearchArgs),
    /// Manage the voice library: add a voice from a recording, import a profile, list.
    Voice(cli::voice::VoiceArgs),
    /// Evaluate the agent: `eval toolcall DIR` scores tool calling on a benchmark in the
    /// StepEval-Audio-Toolcall layout (or on recorded --predictions).
    Eval(cli::eval::EvalArgs),
    /// Transcribe a recording (speech recognition), printing the transcript.
    Transcribe(cli::task::TranscribeArgs),
    /// Describe a recording: speakers' gender, age and emotion, background, environment and
    /// events (or, --brief, a short account of what happens in it).
    Describe(cli::task::DescribeArgs),
    /// Translate a recording into Chinese or English text, or (--output) speech.
    Translate(cli::task::TranslateArgs),
    /// Read text aloud in a library voice into a WAV file.
    Tts(cli::task::TtsArgs),
    /// Manage checkpoints: `model pull [REPO]` downloads one from the Hugging Face hub
    /// (HF_ENDPOINT, HF_TOKEN, --offline), resumably, checking sha256.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Render speech tokens to a 24 kHz WAV with token2wav (debugging).
    Speak {
        /// Speech tokens: ids or `<audio_N>` tokens, separated by spaces, commas or newlines.
        #[arg(long)]
        tokens: PathBuf,
        /// Voice profile file (.json or .safetensors).
        #[arg(long)]
        voice: PathBuf,
        /// Output WAV file (24 kHz, 16-bit mono).
        #[arg(long, short)]
        output: PathBuf,
        /// The token2wav directory (default: <model dir>/token2wav).
        #[arg(long)]
        token2wav: Option<PathBuf>,
        /// Render in streaming chunks (25 + 3 tokens) instead of all at once.
        #[arg(long)]
        stream: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Download a checkpoint (default stepfun-ai/Step-Audio-2-mini) into models/<name>.
    Pull(cli::pull::PullArgs),
}

/// Exit code for configuration errors, as for usage errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Serve { addr } => {
            if let Some(addr) = addr {
                config.server.addr = addr;
            }
            run_serve(config)
        }
        Command::Config => print_config(&config),
        Command::Mcp => run_mcp(&config),
        Command::Generate(args) => cli::generate::run(*args, &config),
        Command::Index(args) => cli::index::run_index(&config, args),
        Command::Search(args) => cli::index::run_search(&config, args),
        Command::Voice(args) => cli::voice::run(&config, args),
        Command::Eval(args) => cli::eval::run(&config, args),
        Command::Model { command: ModelCommand::Pull(args) } => cli::pull::run(args),
        Command::Transcribe(args) => cli::task::transcribe(&config, args),
        Command::Describe(args) => cli::task::describe(&config, args),
        Command::Translate(args) => cli::task::translate(&config, args),
        Command::Tts(args) => cli::task::tts(&config, args),
        Command::Speak { tokens, voice, output, token2wav, stream } => {
            let request = voxloop_voices::speak::SpeakRequest {
                tokens,
                voice,
                output: output.clone(),
                token2wav_dir: token2wav,
                model_dir: config.model.dir.clone(),
                device: config.model.device,
                streaming: stream,
            };
            voxloop_voices::speak::speak(&request)
                .map(|s| {
                    eprintln!("{}: {} tokens, {:.2} s", output.display(), s.tokens, s.seconds());
                })
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The console log and, with `[telemetry] otlp_endpoint`, the export of traces; the guard
/// flushes the spans still queued when dropped.
fn init_logging(config: &Config) -> anyhow::Result<telemetry::TelemetryGuard> {
    config.telemetry.validate()?;
    telemetry::init(&config.log.filter, &config.telemetry)
}

fn run_serve(config: Config) -> anyhow::Result<()> {
    // Dropped last, after the runtime (and every span of every turn) is gone: the spans of
    // the last turns are sent before the process exits.
    let _telemetry = init_logging(&config)?;
    // `[model] id`: the checkpoint is pulled on the first start (blocking, with progress bars).
    let mut config = config;
    cli::pull::pull_for_serve(&mut config.model);
    // Opened before the runtime starts: loading MiniLM and the stores is blocking work.
    let index = cli::index::open_existing(&config)?.map(std::sync::Arc::new);
    let runtime = tokio::runtime::Runtime::new()?;
    // The MCP servers' processes and clients live on the runtime that serves.
    let mcp_clients =
        std::sync::Arc::new(runtime.block_on(mcp::client::start_all(&config.mcp.servers)));
    mcp_clients.require_approvals(&mut config.agent.policies);
    let external = &mcp_clients.tools();
    // The agent (speech LLM, tools under their policies, token2wav) is loaded here too, on
    // this thread and never on the executor; a bad [agent], [voice] or [tools] table, or a
    // checkpoint that does not load, stops the start.
    let agent = runtime::setup::load(&config, index.clone(), external)?.map(std::sync::Arc::new);
    let mcp = if config.mcp.http {
        let tools = runtime::setup::build_mcp_tools(&config, index.as_ref())?;
        // A client over HTTP may be elsewhere: it sends recordings, never paths.
        let text = agent.clone().map(mcp::voice::TextModel::Shared);
        let voices = mcp::voice::VoiceTools::from_config(&config, index.clone(), false, text)
            .map(std::sync::Arc::new);
        Some(mcp::router(std::sync::Arc::new(tools), index.clone(), voices, &config.mcp))
    } else {
        None
    };
    let tool_schemas = match &agent {
        Some(rt) => rt.agent.tools().tool_json_schemas()?,
        None => runtime::setup::build_tools(&config, index.as_ref(), None, None, external)?
            .tool_json_schemas()?,
    };
    runtime.block_on(async {
        if let Some(agent) = &agent {
            // A server's `notifications/tools/list_changed` rebuilds the agent's tools.
            mcp::refresh::spawn(std::sync::Arc::clone(&mcp_clients), std::sync::Arc::clone(agent));
        }
        let listener = http::server::bind(config.server.addr).await?;
        // A target of its own, so that a quiet log (`VOXLOOP_LOG=warn,voxloop::listening=info`)
        // can still tell a supervisor or a test which port `--addr 127.0.0.1:0` got.
        tracing::info!(
            target: "voxloop::listening",
            addr = %listener.local_addr()?,
            data_dir = %config.paths.data_dir.display(),
            default_config = DEFAULT_CONFIG_PATH,
            "voxloop {} listening",
            env!("CARGO_PKG_VERSION")
        );
        let parts = http::server::Parts { index, tool_schemas, agent, mcp, mcp_clients };
        http::server::serve(listener, &config, parts).await
    })?;
    tracing::info!("stopped");
    Ok(())
}

fn run_mcp(config: &Config) -> anyhow::Result<()> {
    let _telemetry = init_logging(config)?;
    let index = cli::index::open_existing(config)?.map(std::sync::Arc::new);
    let tools = runtime::setup::build_mcp_tools(config, index.as_ref())?;
    tracing::info!(tools = ?tools.names().collect::<Vec<_>>(), "MCP server on stdio");
    let runtime = tokio::runtime::Runtime::new()?;
    let text = mcp::voice::TextModel::lazy(config);
    let voices = mcp::voice::VoiceTools::from_config(config, index.clone(), true, text)
        .map(std::sync::Arc::new);
    runtime.block_on(mcp::serve_stdio(std::sync::Arc::new(tools), index, voices, &config.mcp))
}

fn print_config(config: &Config) -> anyhow::Result<()> {
    print!("{}", toml::to_string_pretty(config)?);
    Ok(())
}
