//! `voxloop eval toolcall DIR`: the tool-calling benchmark of `crate::eval` run through the
//! agent loop every front door uses, or scored from recorded outputs.
//!
//! Each dialogue's earlier turns become the session history as recorded (the recordings, or
//! with `--text` the transcripts; earlier answers and calls; tool results as `input` turns),
//! the four tools are declared as client tools (constrained by the grammar, never run: the
//! call is what is scored), and the last turn is answered by one generation step
//! (`Agent::continue_turn`, text mode). Every case goes to `OUT.cases.jsonl` as it is scored,
//! so a run that stops is resumed by running it again; `OUT` gets the figures and every case.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};
use voxloop_core::agent::{Agent, AgentConfig, AgentEvent, ClientTools, TurnEndReason};
use voxloop_core::audio::{prepare_audio, AudioLimits};
use voxloop_core::protocol::{parse_turn_text, ToolChoice};
use voxloop_core::session::{
    AssistantTurn, HumanPart, Session, SessionSettings, ToolResultTurn, Turn,
};
use voxloop_core::tool::{ToolCall, ToolRegistry};
use voxloop_tools::{DateTimeTool, TimbreRag, WeatherTool, WebSearch};
use voxloop_voices::{VoiceLibrary, VoiceSwapper};

use crate::config::Config;
use crate::eval::dataset::{self, Case, Entry};
use crate::eval::judge::Judge;
use crate::eval::score::{score_case, summarise, table, CaseScore};

/// `voxloop eval …`
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Tool calling in the layout of StepEval-Audio-Toolcall ({tool}_{positive,negative}.jsonl
    /// and wav/): trigger precision/recall, type and parameter accuracy per tool.
    Toolcall(ToolcallArgs),
}

/// Arguments of `voxloop eval toolcall`.
#[derive(Debug, Args)]
pub struct ToolcallArgs {
    /// The benchmark directory.
    dir: PathBuf,
    /// The checkpoint [default: [model] dir]; with [model] backend = "openai" only its
    /// tokenizer.json is read and the configured server answers.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Score these outputs instead of running a model: JSON lines of {"id": "get_weather_positive:0", "output": "<tool_call>…</tool_call>"}.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
    /// The report (JSON); cases are kept in OUT.cases.jsonl as they are scored, and a run
    /// started again skips those.
    #[arg(long, short, default_value = "toolcall-report.json")]
    out: PathBuf,
    /// Replay the user turns' transcripts instead of their recordings.
    #[arg(long)]
    text: bool,
    /// Score at most this many cases (in file order).
    #[arg(long)]
    limit: Option<usize>,
    /// The most tokens of an answer.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Base seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The last turn's tool choice: auto (the benchmark's question: does it call?), required
    /// (it must call one: measures the choice of tool and arguments alone) or none.
    #[arg(long, value_enum, default_value_t = Choice::Auto)]
    tool_choice: Choice,
    /// Judge the parameters with an LLM at this OpenAI-compatible base URL
    /// (`http://host:8000/v1`) instead of normalised equality.
    #[arg(long, value_name = "URL")]
    judge_url: Option<String>,
    /// The judge's model name.
    #[arg(long, default_value = "Qwen3-32B")]
    judge_model: String,
    /// The environment variable holding the judge's API key.
    #[arg(long, default_value = "VOXLOOP_JUDGE_API_KEY")]
    judge_key_env: String,
}

/// `--tool-choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Choice {
    Auto,
    Required,
    None,
}

/// Runs `voxloop eval …`.
pub fn run(config: &Config, args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        EvalCommand::Toolcall(args) => toolcall(config, args),
    }
}

fn toolcall(config: &Config, args: ToolcallArgs) -> anyhow::Result<()> {
    let mut cases = dataset::load(&args.dir)?;
    if let Some(limit) = args.limit {
        cases.truncate(limit);
    }
    let partial = cases_path(&args.out);
    let mut done = read_partial(&partial)?;
    let known: HashSet<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    done.retain(|score| known.contains(score.id.as_str()));
    let finished: HashSet<String> = done.iter().map(|s| s.id.clone()).collect();
    let todo: Vec<&Case> = cases.iter().filter(|c| !finished.contains(&c.id)).collect();
    if !finished.is_empty() {
        eprintln!(
            "resuming: {} of {} cases already scored in {}",
            finished.len(),
            cases.len(),
            partial.display()
        );
    }
    let judge = match &args.judge_url {
        Some(url) => {
            let key = std::env::var(&args.judge_key_env).ok().filter(|k| !k.is_empty());
            Some(Judge::new(url, &args.judge_model, key).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("opening {}", partial.display()))?;
    let progress = indicatif::ProgressBar::new(todo.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} cases {elapsed} (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut answer: Box<Answerer<'_>> = match &args.predictions {
        Some(path) => {
            let outputs = read_predictions(path)?;
            Box::new(move |case: &Case| Ok(outputs.get(&case.id).cloned().unwrap_or_default()))
        }
        None => {
            let runner = Runner::new(config, &args)?;
            let runtime = &runtime;
            Box::new(move |case: &Case| runtime.block_on(runner.answer(case)))
        }
    };
    for case in todo {
        progress.set_message(case.id.clone());
        let output = answer(case)?;
        let mut score = score_case(case, &output);
        if let (Some(judge), Some(_)) = (&judge, score.parameters_correct) {
            let request = last_request(case);
            let reference = case.expected_text.clone();
            let (verdict, said) = runtime
                .block_on(judge.verdict(&request, &reference, &output))
                .map_err(anyhow::Error::msg)?;
            score.parameters_correct = Some(verdict.unwrap_or(false));
            score.judge = Some(said);
        }
        writeln!(writer, "{}", serde_json::to_string(&score)?)?;
        writer.flush()?;
        done.push(score);
        progress.inc(1);
    }
    progress.finish_and_clear();
    drop(answer);

    // Report in the dataset's order.
    let order: BTreeMap<&str, usize> =
        cases.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    done.sort_by_key(|s| order.get(s.id.as_str()).copied().unwrap_or(usize::MAX));
    let summary = summarise(&done);
    println!("{}", table(&summary));
    let tools: serde_json::Map<String, Value> =
        summary.values().map(|(name, s)| (name.clone(), json!(s))).collect();
    let report = json!({
        "dir": args.dir,
        "source": if args.predictions.is_some() { "predictions" } else { "model" },
        "parameters_judged_by": args.judge_url.as_ref().map(|_| &args.judge_model),
        "tools": tools,
        "cases": done,
    });
    voxloop_core::fs::write_atomically(
        &args.out,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report: {} ({} cases)", args.out.display(), done.len());
    Ok(())
}

/// What answers a case: the model, or the predictions file.
type Answerer<'a> = dyn FnMut(&Case) -> anyhow::Result<String> + 'a;

/// Where the cases of a report are kept as they are scored.
fn cases_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".cases.jsonl");
    out.with_file_name(name)
}

/// The cases a stopped run scored (a line cut by the stop is dropped).
fn read_partial(path: &Path) -> anyhow::Result<Vec<CaseScore>> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    let mut scores = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(score) = serde_json::from_str::<CaseScore>(&line?) {
            scores.push(score);
        }
    }
    Ok(scores)
}

/// `{"id", "output"}` lines by id; a case without a line answered nothing.
fn read_predictions(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let (Some(id), Some(output)) =
            (value.get("id").and_then(Value::as_str), value.get("output").and_then(Value::as_str))
        else {
            bail!("{} line {}: needs string \"id\" and \"output\"", path.display(), i + 1);
        };
        out.insert(id.to_owned(), output.to_owned());
    }
    Ok(out)
}

/// The user's last words before the reference answer (for the judge).
fn last_request(case: &Case) -> String {
    case.history
        .iter()
        .rev()
        .find_map(|e| match e {
            Entry::Human { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The agent that answers the cases.
struct Runner {
    agent: Agent,
    tools: Arc<ClientTools>,
    settings: SessionSettings,
    now: SystemTime,
    text: bool,
}

impl Runner {
    fn new(config: &Config, args: &ToolcallArgs) -> anyhow::Result<Self> {
        let dir = args.model.clone().or_else(|| config.model.dir.clone()).context(
            "no model: pass --model DIR or set [model] dir (or --predictions FILE to score outputs)",
        )?;
        let agent_config = AgentConfig {
            fixed_now: config.fixed_now().map_err(anyhow::Error::msg)?,
            ..AgentConfig::default()
        };
        let agent =
            crate::runtime::setup::load_agent(config, &dir, ToolRegistry::new(), agent_config)?;
        let declared = benchmark_tools()?.definitions();
        let tools = Arc::new(agent.client_tools(declared, true)?);
        let mut settings = SessionSettings { speech: false, max_steps: 1, ..Default::default() };
        settings.tool_choice = match args.tool_choice {
            Choice::Auto => ToolChoice::Auto,
            Choice::Required => ToolChoice::Required,
            Choice::None => ToolChoice::None,
        };
        settings.follow_up_tool_choice = ToolChoice::None;
        settings.sampling.max_new_tokens = args.max_new_tokens;
        settings.sampling.temperature = args.temperature;
        settings.sampling.seed = Some(args.seed);
        let now = agent.config().now();
        Ok(Self { agent, tools, settings, now, text: args.text })
    }

    /// The answer to the last turn of `case` as the model wrote it: its ids decoded with the
    /// special tokens (so a call cut short by the token limit is still seen as a call).
    async fn answer(&self, case: &Case) -> anyhow::Result<String> {
        let history = self.history(case)?;
        let mut session = Session::with_history(self.settings.clone(), history);
        let mut turn = self.agent.continue_turn(&mut session, Some(Arc::clone(&self.tools)), None);
        while let Some(event) = turn.next().await {
            if let AgentEvent::TurnFinished { reason: TurnEndReason::Error(message), .. } = event {
                bail!("case {}: {message}", case.id);
            }
        }
        drop(turn);
        match session.history().last() {
            Some(Turn::Assistant(answer)) => Ok(self.agent.tokenizer().decode(&answer.ids)?),
            _ => Ok(String::new()),
        }
    }

    fn history(&self, case: &Case) -> anyhow::Result<Vec<Turn>> {
        let tokenizer = self.agent.tokenizer();
        let mut turns = vec![
            Turn::System { text: self.settings.system_text(self.now) },
            Turn::ToolSchemas { json: self.tools.tool_json_schemas()? },
        ];
        let mut last_call: Option<ToolCall> = None;
        for (i, entry) in case.history.iter().enumerate() {
            match entry {
                Entry::Human { wav: Some(wav), .. } if !self.text => {
                    let chunks = prepare_audio(wav.as_path(), &AudioLimits::default())
                        .with_context(|| format!("case {}: {}", case.id, wav.display()))?;
                    turns.push(Turn::Human { parts: vec![HumanPart::Audio { chunks }] });
                }
                Entry::Human { text, .. } => {
                    turns.push(Turn::Human { parts: vec![HumanPart::Text { text: text.clone() }] });
                }
                Entry::Assistant { text } => {
                    let parsed = parse_turn_text(text);
                    let calls: Vec<ToolCall> = parsed
                        .calls
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(j, c)| {
                            ToolCall::with_id(
                                format!("call_{i}_{j}"),
                                c.name,
                                Value::Object(c.arguments),
                            )
                        })
                        .collect();
                    last_call = calls.last().cloned().or(last_call);
                    turns.push(Turn::Assistant(AssistantTurn::from_text(
                        tokenizer,
                        &parsed.content,
                        calls,
                    )?));
                }
                Entry::Input { text } => {
                    let (call_id, name) = last_call.as_ref().map_or_else(
                        || ("call_none".to_owned(), String::new()),
                        |c| (c.id.clone(), c.name.clone()),
                    );
                    turns.push(Turn::ToolResult(ToolResultTurn {
                        call_id,
                        name,
                        ok: true,
                        text: text.clone(),
                        instruction: None,
                    }));
                }
            }
        }
        Ok(turns)
    }
}

/// The four tools of the benchmark as voxloop declares them (their schemas and descriptions;
/// nothing here runs them).
fn benchmark_tools() -> anyhow::Result<ToolRegistry> {
    let empty = tempfile::tempdir()?;
    let library = Arc::new(VoiceLibrary::open(empty.path())?);
    let mut registry = ToolRegistry::new();
    registry.register(TimbreRag::new(VoiceSwapper::new(library)))?;
    registry.register(DateTimeTool::from_config(&Default::default())?)?;
    registry.register(WeatherTool::from_config(&Default::default())?)?;
    registry.register(WebSearch::from_config(&Default::default())?)?;
    Ok(registry)
}
