//! `voxloop index caption` (and `index add --caption`): the speech LLM of `[model] dir`
//! listens to each indexed clip that has no caption yet and describes it twice, with
//! upstream's prompts (`voxloop_core::agent::Task`): the captioning prompt (English: the events
//! in the clip) and the audio-analysis prompt (Chinese: speakers' gender, age, emotion,
//! background, environment, events). The caption is kept in the item as generated
//! (`AudioItem::caption`, with the checkpoint's name), searched beside the description and
//! embedded with it. Items are written back in batches: an interrupted run keeps what it
//! finished, and the next run captions only the rest.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use voxloop_core::agent::{Agent, AgentConfig, Task, TaskOutput, TurnInput};
use voxloop_core::audio::{prepare_audio, AudioLimits};
use voxloop_core::tool::ToolRegistry;
use voxloop_retrieval::index::{restore_speaker, NewItem};
use voxloop_retrieval::{AudioIndex, Caption, ItemId};

use crate::config::Config;

/// How a captioning run goes.
#[derive(Debug, Clone, Args)]
pub struct CaptionArgs {
    /// Caption items that have a caption already, again.
    #[arg(long)]
    pub redo: bool,
    /// Caption at most this many items in this run (the next run goes on).
    #[arg(long)]
    pub max_items: Option<usize>,
    /// Items written back per batch.
    #[arg(long, default_value_t = 8)]
    pub caption_batch: usize,
    /// The most tokens of each description (default: the prompts' budgets, 256 and 1024).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Seed of the sampler (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The checkpoint directory (default: `[model] dir`).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// What a captioning run did.
#[derive(Debug, Default, Serialize)]
pub struct CaptionReport {
    pub captioned: usize,
    /// Items that had a caption (left alone without `--redo`).
    pub already: usize,
    /// Items left for a later run by `--max-items`.
    pub left: usize,
    /// Items whose audio could not be read or described, and why.
    pub failed: Vec<(String, String)>,
}

/// Captions the items of `index` (only `among`, when given) that need it.
pub fn caption(
    config: &Config,
    index: &AudioIndex,
    among: Option<&[ItemId]>,
    args: &CaptionArgs,
) -> anyhow::Result<CaptionReport> {
    let ids = match among {
        Some(ids) => ids.to_vec(),
        None => index.text().ids()?,
    };
    let mut report = CaptionReport::default();
    let mut todo = Vec::new();
    for chunk in ids.chunks(256) {
        for item in index.text().get_many(chunk)?.into_values() {
            if item.caption.is_some() && !args.redo {
                report.already += 1;
            } else {
                todo.push(item);
            }
        }
    }
    todo.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(max) = args.max_items {
        report.left = todo.len().saturating_sub(max);
        todo.truncate(max);
    }
    if todo.is_empty() {
        return Ok(report);
    }
    let dir = args.model.clone().or_else(|| config.model.dir.clone()).context(
        "captions need the speech LLM: pass --model DIR or set [model] dir (VOXLOOP_MODEL_DIR)",
    )?;
    let model_name = dir
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    eprintln!("loading {} to caption {} item(s)", dir.display(), todo.len());
    let agent = Agent::load(&dir, config.model.device, ToolRegistry::new(), AgentConfig::default())
        .with_context(|| format!("loading the speech LLM from {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} captioned ({per_sec}, eta {eta}) {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut batch = Vec::new();
    let total = todo.len();
    for (done, mut item) in todo.into_iter().enumerate() {
        match runtime.block_on(describe(&agent, &item.path, args)) {
            Ok((en, zh)) => {
                item.caption = Some(Caption { en, zh, model: model_name.clone() });
                let speaker = restore_speaker(&item);
                batch.push(NewItem { item, speaker });
            }
            Err(e) => report.failed.push((item.path.display().to_string(), format!("{e:#}"))),
        }
        if batch.len() >= args.caption_batch.max(1) {
            report.captioned += index.add(std::mem::take(&mut batch))?.updated;
        }
        match &bar {
            Some(bar) => bar.set_position(done as u64 + 1),
            None => eprintln!("described {}/{total}", done + 1),
        }
    }
    if !batch.is_empty() {
        report.captioned += index.add(batch)?.updated;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

/// The English caption and the Chinese description of the clip at `path`.
async fn describe(
    agent: &Agent,
    path: &std::path::Path,
    args: &CaptionArgs,
) -> anyhow::Result<(String, String)> {
    let chunks = prepare_audio(path, &AudioLimits::default())?;
    let mut said = Vec::new();
    for task in [Task::Caption, Task::Describe] {
        let mut session = task.session(TurnInput::audio(chunks.clone()), |sampling| {
            sampling.seed = args.seed;
            if let Some(n) = args.max_new_tokens {
                sampling.max_new_tokens = n;
            }
        })?;
        let stream = agent.run_task(&mut session, None)?;
        let out = TaskOutput::collect(stream, |_| {}).await?;
        said.push(out.text.trim().to_owned());
    }
    let zh = said.pop().unwrap_or_default();
    let en = said.pop().unwrap_or_default();
    Ok((en, zh))
}
