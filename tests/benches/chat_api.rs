//! What the Chat Completions front door costs on top of the turn it runs: a non-streamed call
//! to `voxloop serve` against the same turn run in-process on the same checkpoint.
//!
//! ```text
//! cargo bench -p voxloop --bench chat_api -- [--repeats N] [--tokens N]
//! ```
//!
//! Both sides answer the same request (a system and a user message, greedy, `--tokens` new
//! tokens, default 8) on the tiny fixture checkpoint (`core/tests/fixtures/llm/tiny_a`), where
//! the model's own time is smallest, so the difference stands out. Each repeat runs the HTTP
//! call (client-side wall time: connect, request, JSON parse and build, the turn, response) and
//! the in-process turn (building the session and running `Agent::continue_turn` to its end)
//! back to back; both reuse the prefix the previous repeat left in their model's cache, so
//! both prefill only the generation prompt. The overhead is HTTP − in-process of each repeat:
//! median and min–max over `--repeats` (default 20) after 3 warm-ups.
//!
//! The remote model backend's added latency per step is timed beside them: a second `voxloop
//! serve` with `[model] backend = "openai"` pointed at the first (`VOXLOOP_MODEL_URL`) answers
//! the same call by a streamed request to it; its added latency is (call to the second) −
//! (call to the first) of each repeat.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke run of 2 repeats.

#[path = "../support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use voxloop_core::agent::{Agent, AgentConfig};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{HumanPart, Session, SessionSettings, Turn};
use voxloop_core::tool::ToolRegistry;
use voxloop_core::DeviceSpec;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const SYSTEM: &str = "You are a terse assistant.";
const QUESTION: &str = "What is the capital of France?";

struct Options {
    repeats: usize,
    tokens: usize,
}

fn options(args: &[String]) -> BoxResult<Options> {
    if !args.iter().any(|a| a == "--bench") {
        return Ok(Options { repeats: 2, tokens: 8 });
    }
    let mut o = Options { repeats: 20, tokens: 8 };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--repeats" => o.repeats = value()?.parse()?,
            "--tokens" => o.tokens = value()?.parse()?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo bench -p voxloop --bench \
                     chat_api -- [--repeats N] [--tokens N]"
                )
                .into())
            }
        }
    }
    if o.repeats < 1 || o.tokens < 1 {
        return Err("--repeats and --tokens must be at least 1".into());
    }
    Ok(o)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(o: &Options) -> BoxResult<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("core/tests/fixtures/llm/tiny_a");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("voxloop.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = {:?}\n[agent]\npersist_sessions = false\n\
             [tools.web_search]\nenabled = false\n[tools.weather]\nenabled = false\n",
            dir.path().join("data").display().to_string()
        ),
    )?;
    let (child, addr) = support::start_server(support::serve_command(&config, true));
    let server = support::Server { child, addr, _dir: None };
    let mut over = support::serve_command(&config, true);
    over.env("VOXLOOP_MODEL_URL", format!("http://{addr}/v1"));
    let (child, addr) = support::start_server(over);
    let remote = support::Server { child, addr, _dir: None };

    let body = json!({
        "model": "step-audio-2-mini",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_completion_tokens": o.tokens,
    })
    .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let agent = Agent::load(&model, DeviceSpec::Cpu, ToolRegistry::new(), AgentConfig::default())?;
    let client = Arc::new(agent.client_tools(Vec::new(), true)?);
    let mut settings = SessionSettings { speech: false, max_steps: 1, ..Default::default() };
    settings.tool_choice = ToolChoice::None;
    settings.sampling.temperature = 0.0;
    settings.sampling.max_new_tokens = o.tokens;

    let warm_ups = 3;
    let (mut http, mut local, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    let (mut via, mut added) = (Vec::new(), Vec::new());
    for run in 0..warm_ups + o.repeats {
        let start = Instant::now();
        let (status, text) = support::http_post(server.addr, "/v1/chat/completions", &body);
        let over_http = start.elapsed();
        if status != 200 {
            return Err(format!("the call answered {status}: {text}").into());
        }
        let start = Instant::now();
        runtime.block_on(async {
            let history = vec![
                Turn::System { text: SYSTEM.into() },
                Turn::Human { parts: vec![HumanPart::Text { text: QUESTION.into() }] },
            ];
            let mut session = Session::with_history(settings.clone(), history);
            let turn = agent.continue_turn(&mut session, Some(Arc::clone(&client)), None);
            turn.collect::<Vec<_>>().await
        });
        let in_process = start.elapsed();
        let start = Instant::now();
        let (status, text) = support::http_post(remote.addr, "/v1/chat/completions", &body);
        let over_remote = start.elapsed();
        if status != 200 {
            return Err(
                format!("the call over the remote backend answered {status}: {text}").into()
            );
        }
        if run >= warm_ups {
            via.push(millis(over_remote));
            added.push(millis(over_remote) - millis(over_http));
            http.push(millis(over_http));
            local.push(millis(in_process));
            overhead.push(millis(over_http) - millis(in_process));
        }
    }
    let median = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
    };
    let (h, _, _) = median(&mut http);
    let (l, _, _) = median(&mut local);
    let (d, low, high) = median(&mut overhead);
    println!(
        "{} repeats after {warm_ups} warm-ups, {} new tokens, tiny fixture checkpoint",
        o.repeats, o.tokens
    );
    println!(
        "| non-stream call ms | in-process turn ms | HTTP + JSON overhead ms, median (min–max) |"
    );
    println!("|---|---|---|");
    println!("| {h:.2} | {l:.2} | {d:.2} ({low:.2}–{high:.2}) |");
    let (v, _, _) = median(&mut via);
    let (a, low, high) = median(&mut added);
    println!();
    println!("| call over the remote backend ms | direct call ms | added per step ms, median (min–max) |");
    println!("|---|---|---|");
    println!("| {v:.2} | {h:.2} | {a:.2} ({low:.2}–{high:.2}) |");
    drop(remote);
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    support::main_of("chat_api bench", options, run)
}
