//! # Fact lookup: web search and the date, on a checkpoint
//!
//! ```text
//! cargo run --example fact_lookup_agent [CHECKPOINT_DIR] [DOCUMENTS]
//! ```
//!
//! An agent with two built-in tools of `voxloop-tools`, `web_search` on the offline provider
//! (a Tantivy index over a local document collection: no network needed) and
//! `get_date_time`, runs one turn and prints every event of it.
//!
//! Without arguments it uses the tiny random-weight checkpoint of the test fixtures
//! (`core/tests/fixtures/llm/tiny_a`) and the small collection in
//! `tools/tests/fixtures/docs`. A random model never decides to search by itself, so in that
//! case the first step is made to call `web_search` (grammar-constrained to its schema);
//! its query is noise, but the search, the result turn and the answer step around it are
//! the real ones. Point it at a Step-Audio 2 checkpoint and, optionally, at your own
//! collection (a directory of `.md`/`.txt`/`.html` files or a `.jsonl` file) to watch the
//! model choose a tool itself.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use voxloop_core::agent::{Agent, AgentConfig, AgentEvent, TurnInput};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, SessionSettings};
use voxloop_core::tool::{Tool, ToolRegistry};
use voxloop_core::DeviceSpec;
use voxloop_tools::config::{Language, ToolsConfig};
use voxloop_tools::{register_builtin_tools, DateTimeTool, WebSearch};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("core/tests/fixtures/llm/tiny_a");
    let mut args = std::env::args_os().skip(1);
    let checkpoint = args.next().map(PathBuf::from).unwrap_or(fixture.clone());
    let documents =
        args.next().map(PathBuf::from).unwrap_or(root.join("tools/tests/fixtures/docs"));
    let tiny = checkpoint == fixture;

    // The `[tools]` table of a config file, built in code: offline search over `documents`,
    // the date in Shanghai written in Chinese, no weather (it needs the network).
    let mut config = ToolsConfig::default();
    config.web_search.offline.documents = Some(documents);
    config.date_time.timezone = "Asia/Shanghai".into();
    config.date_time.language = Language::Zh;
    config.weather.enabled = false;

    // What the tools answer by themselves, before a model is involved.
    let search = WebSearch::from_config(&config.web_search)?;
    println!(
        "web_search {{\"query\": \"上证指数 开盘\"}} →\n{}\n",
        search.search("上证指数 开盘").await?
    );
    let clock = DateTimeTool::from_config(&config.date_time)?;
    println!("get_date_time {{}} → {}\n", clock.now_text());

    let mut tools = ToolRegistry::new();
    register_builtin_tools(&mut tools, &config)?;
    println!("The model is shown:\n{}\n", tools.tool_json_schemas()?);

    // Upstream appends its summary instruction to search results; so does this agent.
    // On the random fixture model the date in the system prompt is fixed, so that the run is
    // the same on every day.
    let agent_config = AgentConfig {
        fixed_now: tiny.then(|| UNIX_EPOCH + Duration::from_secs(1_756_353_600)), // 2025-08-28
        ..AgentConfig::default().summarise_results_of("web_search")
    };
    let agent = Agent::load(&checkpoint, DeviceSpec::Auto, tools, agent_config)
        .with_context(|| format!("loading {}", checkpoint.display()))?;

    let mut settings = SessionSettings::default();
    if tiny {
        settings.tool_choice = ToolChoice::Named(WebSearch::NAME.to_owned());
        // Random weights never say <|EOT|>: keep their rambling short and reproducible.
        settings.sampling.max_new_tokens = 96;
        settings.sampling.seed = Some(7);
    }
    let mut session = Session::new(settings);

    let input = TurnInput::text("帮我查一下今天上证指数的开盘价是多少，顺便告诉我现在几点。");
    let mut turn = agent.run_turn(&mut session, input);
    let mut speech_codes = 0usize;
    while let Some(event) = turn.next().await {
        if let AgentEvent::AudioTokens(codes) = &event {
            speech_codes += codes.len();
            continue;
        }
        if speech_codes > 0 {
            println!("speech codes: {speech_codes}");
            speech_codes = 0;
        }
        match &event {
            AgentEvent::TextDelta { text, in_speech } => {
                println!("text{}: {text:?}", if *in_speech { " (spoken)" } else { "" })
            }
            AgentEvent::AudioTokens(_) => {}
            // A reasoning checkpoint's think phase (`SessionSettings::think`): shown, not said.
            AgentEvent::Reasoning { text } => println!("thinking: {text:?}"),
            AgentEvent::ToolCallStarted { id, name, arguments } => {
                println!("call {id}: {name}({arguments})")
            }
            // Only turns with client-run tools (`Agent::continue_turn`) hand calls back.
            AgentEvent::ToolCallRequested { id, name, .. } => println!("client call {id}: {name}"),
            AgentEvent::ToolCallFinished { name, outcome, duration, .. } => match outcome {
                Ok(text) => println!("{name} answered in {duration:?}:\n{text}"),
                Err(error) => println!("{name} failed: {}", error.model_message),
            },
            // Only `Agent::speak_turn` with a renderer (token2wav) turns codes into audio.
            AgentEvent::Audio { pcm, sample_rate } => {
                println!("audio: {} samples at {sample_rate} Hz", pcm.len())
            }
            AgentEvent::SpeechFailed { message } => println!("speech failed: {message}"),
            // Non-text content of a call (an MCP server's image, say), for the client.
            AgentEvent::ToolAttachment { id, content } => {
                println!("call {id} attached {}", content["type"])
            }
            AgentEvent::ApprovalRequested(request) => {
                // No tool here is behind an approval policy; a front door would ask a person.
                println!("approval asked for call {}", request.call_id)
            }
            AgentEvent::Usage { step, usage } => println!("step {step}: {usage:?}"),
            AgentEvent::TurnFinished { reason, usage } => {
                println!("turn finished: {reason:?}, {usage:?}")
            }
        }
    }
    drop(turn);
    println!("\nThe session holds {} turns.", session.history().len());
    Ok(())
}
