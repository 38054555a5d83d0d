//! The `voxloop` command: the service and its tools.

mod config;
mod server;

use std::io::IsTerminal;
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
    /// Run the HTTP service (health at /healthz). Stops cleanly on Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on; overrides the file and VOXLOOP_ADDR.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Print the effective configuration (file + environment + defaults) as TOML.
    Config,
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn run_serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config.log.filter)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = server::bind(config.server.addr).await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            data_dir = %config.paths.data_dir.display(),
            default_config = DEFAULT_CONFIG_PATH,
            "voxloop {} listening",
            env!("CARGO_PKG_VERSION")
        );
        server::serve(listener, &config).await
    })?;
    tracing::info!("stopped");
    Ok(())
}

fn print_config(config: &Config) -> anyhow::Result<()> {
    print!("{}", toml::to_string_pretty(config)?);
    Ok(())
}
