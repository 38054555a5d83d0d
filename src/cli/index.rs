//! `voxloop index {add|caption|rm|stats|reembed}` and `voxloop search`: the audio index from
//! the command line.
//!
//! The index lives in `<data_dir>/index` (or `--index-dir`). It remembers the text embedder it
//! was built with (`meta.json`); a new index uses `--embedder`: `minilm` (the default) is the
//! sentence-transformers checkpoint of `[index] embedder_dir`, else `$VOXLOOP_MINILM_DIR`, else
//! `.cache/models/all-minilm-l6-v2` as `scripts/minilm.sh` leaves it; `hashing` is a model-free
//! feature-hashing embedder for machines without a model. An index built with another
//! checkpoint than the configured one refuses to open until `voxloop index reembed` has
//! recomputed its vectors with the configured one.
//!
//! Progress goes to stderr: a bar on a terminal, otherwise one line per committed batch.
//! Skipped files are listed on stderr with their reason; the run still succeeds.
//!
//! Fault injection (crash tests only): `VOXLOOP_FAULT_ABORT_AFTER_VECTOR_WRITES=N` makes
//! `index add` abort right after its N-th vector write, before the matching text commit.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use voxloop_retrieval::embed::{Device, Prefixes, HASHING_ID};
use voxloop_retrieval::index::{Example, IndexOptions, ReembedProgress};
use voxloop_retrieval::ingest::{ingest, IngestOptions, Progress, Source};
use voxloop_retrieval::search::{Retriever, SearchRequest};
use voxloop_retrieval::{
    AgeBand, AudioIndex, Gender, HashingEmbedder, ItemFilter, ItemId, ItemKind, SentenceEncoder,
    TextEmbedder,
};

use crate::config::Config;

/// Where `scripts/minilm.sh` puts the model, relative to the repository root.
const DEFAULT_MINILM_DIR: &str = ".cache/models/all-minilm-l6-v2";
/// Dimension of the `hashing` embedder.
const HASHING_DIM: usize = 384;

/// Options shared by the index commands.
#[derive(Debug, Args)]
pub struct IndexLocation {
    /// Index directory; default `<data_dir>/index`.
    #[arg(long, global = true, env = "VOXLOOP_INDEX_DIR")]
    index_dir: Option<PathBuf>,
}

/// Which text embedder a new index uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderChoice {
    /// The sentence-transformers checkpoint of `[index] embedder_dir` on libtorch (default
    /// all-MiniLM-L6-v2).
    Minilm,
    /// Feature hashing of words (no model; lexical only).
    Hashing,
}

/// `voxloop index …`
#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    location: IndexLocation,
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// Index a folder (recursively, with metadata.jsonl sidecars) or a JSONL manifest.
    Add {
        /// A folder of audio files, or a manifest.jsonl.
        path: PathBuf,
        /// Kind of items whose metadata does not say.
        #[arg(long, default_value = "sound")]
        kind: String,
        /// Text embedder of a new index (an existing index keeps its own).
        #[arg(long, value_enum, default_value = "minilm")]
        embedder: EmbedderChoice,
        /// Items per consistent write.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Then have the speech LLM caption every item without a caption (see `index
        /// caption`).
        #[arg(long)]
        caption: bool,
        #[command(flatten)]
        captioning: crate::cli::caption::CaptionArgs,
    },
    /// Have the speech LLM of [model] dir describe each item without a caption (English and
    /// Chinese, upstream's prompts), kept as generated captions and searched; resumable.
    Caption {
        #[command(flatten)]
        captioning: crate::cli::caption::CaptionArgs,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove items by id.
    Rm {
        /// Item ids (16 hex digits), as `search` prints them.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Recompute every item's text vector with the configured embedder (after changing
    /// `[index] embedder_dir` or the prefixes); atomic and resumable.
    Reembed {
        /// The embedder to switch to.
        #[arg(long, value_enum, default_value = "minilm")]
        embedder: EmbedderChoice,
        /// Items per embedding call and progress step.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Counts per kind, gender, language…; with --audit, compare both stores.
    Stats {
        /// Also compare the text index and the vector store item by item.
        #[arg(long)]
        audit: bool,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `voxloop search "<text>"`
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    location: IndexLocation,
    /// What to look for, in words (English or Chinese).
    text: Option<String>,
    /// Nearest voices to an indexed item (its id) or to a WAV/FLAC/MP3/Ogg file, instead of text.
    #[arg(long, conflicts_with = "text")]
    like: Option<String>,
    /// How many hits.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    /// timbre or sound.
    #[arg(long)]
    kind: Option<String>,
    /// female, male or other.
    #[arg(long)]
    gender: Option<String>,
    /// child, teen, young, middle or senior.
    #[arg(long)]
    age: Option<String>,
    /// A language code some item has (en, zh, …).
    #[arg(long)]
    language: Option<String>,
    /// A style some item has.
    #[arg(long)]
    style: Option<String>,
    /// Shortest duration in seconds.
    #[arg(long)]
    min_seconds: Option<f64>,
    /// Longest duration in seconds.
    #[arg(long)]
    max_seconds: Option<f64>,
    /// hybrid (default), bm25 or vector.
    #[arg(long, default_value = "hybrid")]
    mode: String,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn index_dir(config: &Config, location: &IndexLocation) -> PathBuf {
    location.index_dir.clone().unwrap_or_else(|| config.paths.data_dir.join("index"))
}

/// The sentence-transformers checkpoint directory: `[index] embedder_dir`, else
/// `$VOXLOOP_MINILM_DIR`, else where `scripts/minilm.sh` puts all-MiniLM-L6-v2.
fn encoder_dir(config: &Config) -> PathBuf {
    config.index.embedder_dir().map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("VOXLOOP_MINILM_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_MINILM_DIR), PathBuf::from)
    })
}

/// The configured embedder of kind `choice`; `recorded` is the id an existing index has (a
/// hashing embedder takes its dimension from it).
fn load_embedder(
    config: &Config,
    choice: EmbedderChoice,
    recorded: Option<&str>,
) -> anyhow::Result<Arc<dyn TextEmbedder>> {
    Ok(match choice {
        EmbedderChoice::Minilm => {
            let model = encoder_dir(config);
            let prefixes = Prefixes {
                query: config.index.query_prefix.clone(),
                document: config.index.document_prefix.clone(),
            };
            let loaded = SentenceEncoder::load_with_prefixes(&model, Device::Cpu, prefixes)
                .with_context(|| {
                    format!(
                        "loading the text embedder from {} (set [index] embedder_dir, or run \
                         scripts/minilm.sh for all-MiniLM-L6-v2)",
                        model.display()
                    )
                })?;
            Arc::new(loaded)
        }
        EmbedderChoice::Hashing => {
            let dim = recorded
                .and_then(|id| id.strip_prefix(HASHING_ID)?.strip_prefix('-')?.parse().ok())
                .unwrap_or(HASHING_DIM);
            Arc::new(HashingEmbedder::new(dim)?)
        }
    })
}

/// The embedder an index needs: a hashing one if its metadata names one, else the configured
/// checkpoint (the index then checks that it is the one it was built with); `choice` for a
/// new index.
fn embedder_for(
    config: &Config,
    dir: &Path,
    choice: EmbedderChoice,
) -> anyhow::Result<Arc<dyn TextEmbedder>> {
    let named = AudioIndex::read_meta(dir)?.map(|m| m.text_embedder);
    let wanted = match named.as_deref() {
        Some(id) if id.starts_with(HASHING_ID) => EmbedderChoice::Hashing,
        Some(_) => EmbedderChoice::Minilm,
        None => choice,
    };
    load_embedder(config, wanted, named.as_deref())
}

fn open(config: &Config, dir: &Path, choice: EmbedderChoice) -> anyhow::Result<AudioIndex> {
    let embedder = embedder_for(config, dir, choice)?;
    match AudioIndex::open(dir, embedder, IndexOptions::default()) {
        Ok(index) => Ok(index),
        // Another checkpoint than the index's: the library's message says to re-embed; say
        // which directory the configured one came from.
        Err(e @ voxloop_retrieval::Error::IndexMeta { .. }) => {
            Err(anyhow::Error::new(e).context(format!(
                "opening the index in {} with the text embedder from {} ([index] embedder_dir)",
                dir.display(),
                encoder_dir(config).display()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The index in the data dir, for the service: `None` when there is none yet (the service
/// runs without search), an error when it exists but cannot be opened (locked by another
/// process, or its embedder is missing).
pub fn open_existing(config: &Config) -> anyhow::Result<Option<AudioIndex>> {
    let dir = config.paths.data_dir.join("index");
    if AudioIndex::read_meta(&dir)?.is_none() {
        tracing::info!(dir = %dir.display(), "no audio index; /v1/audio/search answers 503");
        return Ok(None);
    }
    let index = open(config, &dir, EmbedderChoice::Minilm)
        .with_context(|| format!("opening the audio index in {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), items = index.text().num_docs(), "audio index open");
    Ok(Some(index))
}

/// Runs `voxloop index …`.
pub fn run_index(config: &Config, args: IndexArgs) -> anyhow::Result<()> {
    let dir = index_dir(config, &args.location);
    match args.command {
        IndexCommand::Add { path, kind, embedder, batch, json, caption, captioning } => {
            let default_kind: ItemKind = kind.parse()?;
            if !path.exists() {
                bail!("{}: no such file or folder", path.display());
            }
            let index = open(config, &dir, embedder)?;
            if let Some(n) = std::env::var("VOXLOOP_FAULT_ABORT_AFTER_VECTOR_WRITES")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                index.abort_after_vector_writes(Some(n));
            }
            let options =
                IngestOptions { batch_size: batch.max(1), default_kind, ..Default::default() };
            let mut reporter = ProgressReporter::new();
            let report =
                ingest(&index, &Source::from_path(&path), &options, &mut |p| reporter.update(p))?;
            reporter.finish();
            index.optimize()?;
            for bad in &report.failed {
                eprintln!("skipped {}: {}", bad.path, bad.reason);
            }
            for merge in &report.items.merges {
                eprintln!(
                    "merged {} into {} (the same audio; its description and tags are kept)",
                    merge.path.display(),
                    merge.into.display()
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} entries: {} added, {} updated, {} unchanged, {} merged, {} skipped",
                    report.total,
                    report.items.added,
                    report.items.updated,
                    report.items.unchanged,
                    report.items.merged,
                    report.failed.len()
                );
            }
            if caption {
                caption_and_report(config, &index, &captioning, json)?;
            }
            Ok(())
        }
        IndexCommand::Caption { captioning, json } => {
            if AudioIndex::read_meta(&dir)?.is_none() {
                bail!("no index in {} (create one with `voxloop index add`)", dir.display());
            }
            let index = open(config, &dir, EmbedderChoice::Minilm)?;
            caption_and_report(config, &index, &captioning, json)
        }
        IndexCommand::Rm { ids } => {
            let ids = ids.iter().map(|s| s.parse::<ItemId>()).collect::<Result<Vec<_>, _>>()?;
            let index = open(config, &dir, EmbedderChoice::Minilm)?;
            let removed = index.remove(&ids)?;
            println!("removed {removed} of {} item(s)", ids.len());
            Ok(())
        }
        IndexCommand::Reembed { embedder, batch, json } => {
            let Some(meta) = AudioIndex::read_meta(&dir)? else {
                bail!("no index in {} (create one with `voxloop index add`)", dir.display());
            };
            let target = load_embedder(config, embedder, None)?;
            let mut reporter = ProgressReporter::new();
            let report = AudioIndex::reembed(&dir, target, batch, &mut |p: ReembedProgress| {
                reporter.show(p.done, p.total, 0, "re-embedded");
            })?;
            reporter.finish();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.unchanged {
                println!("{} items already embedded with {}", report.items, meta.text_embedder);
            } else {
                println!(
                    "{} items re-embedded ({} resumed from an interrupted run): {} -> {}",
                    report.items, report.resumed, report.from, report.to
                );
            }
            Ok(())
        }
        IndexCommand::Stats { audit, json } => {
            if AudioIndex::read_meta(&dir)?.is_none() {
                bail!("no index in {} (create one with `voxloop index add`)", dir.display());
            }
            let index = open(config, &dir, EmbedderChoice::Minilm)?;
            let stats = index.stats()?;
            let audit = if audit { Some(index.audit()?) } else { None };
            if json {
                let value = serde_json::json!({ "stats": stats, "audit": audit });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            println!("index {}", dir.display());
            println!("items: {} ({} vectors, {})", stats.items, stats.vector_points, stats.backend);
            println!("text embedder: {}", stats.text_embedder);
            println!(
                "merged entries (aliases of items with the same audio): {}",
                stats.merged_entries
            );
            for (field, values) in &stats.values {
                if !values.is_empty() {
                    let list: Vec<String> =
                        values.iter().map(|(v, n)| format!("{v} {n}")).collect();
                    println!("{field}: {}", list.join(", "));
                }
            }
            if let Some(a) = audit {
                println!(
                    "audit: {} — {} docs, {} vectors, {} orphan vectors, {} missing vectors, {} \
                     duplicate docs",
                    if a.is_consistent() { "consistent" } else { "INCONSISTENT" },
                    a.text_docs,
                    a.vector_points,
                    a.orphan_vectors.len(),
                    a.missing_vectors.len(),
                    a.duplicate_docs.len()
                );
            }
            Ok(())
        }
    }
}

/// Runs `voxloop search …`.
pub fn run_search(config: &Config, args: SearchArgs) -> anyhow::Result<()> {
    let dir = index_dir(config, &args.location);
    if AudioIndex::read_meta(&dir)?.is_none() {
        bail!("no index in {} (create one with `voxloop index add`)", dir.display());
    }
    let filter = ItemFilter {
        kind: args.kind.as_deref().map(str::parse::<ItemKind>).transpose()?,
        gender: args.gender.as_deref().map(str::parse::<Gender>).transpose()?,
        age: args.age.as_deref().map(str::parse::<AgeBand>).transpose()?,
        language: args.language,
        style: args.style,
        min_duration_s: args.min_seconds,
        max_duration_s: args.max_seconds,
        ..Default::default()
    };
    let index = open(config, &dir, EmbedderChoice::Minilm)?;
    let hits = match (&args.text, &args.like) {
        (_, Some(like)) => {
            let example = match like.parse::<ItemId>() {
                Ok(id) => Example::Item(id),
                Err(_) => {
                    let audio =
                        voxloop_core::audio::decode_audio(Path::new(like), &Default::default())?;
                    Example::Audio { samples: audio.samples, sample_rate: audio.sample_rate }
                }
            };
            index.similar(&example, args.k, &filter)?
        }
        (Some(text), None) => {
            let request = SearchRequest::new(text.clone(), args.k)
                .with_filter(filter)
                .with_retriever(args.mode.parse::<Retriever>()?);
            index.search(&request)?
        }
        (None, None) => bail!("give a description to search for, or --like ID|FILE"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no matches");
    }
    for (i, hit) in hits.iter().enumerate() {
        let item = &hit.item;
        println!(
            "{:>2}. {} [{}] {:.4}  {}\n    {:.1} s  {}\n    matched: {}",
            i + 1,
            item.id,
            item.kind,
            hit.score,
            item.description,
            item.duration_s,
            item.path.display(),
            hit.reason
        );
    }
    Ok(())
}

/// Runs the captioning and prints its report.
fn caption_and_report(
    config: &Config,
    index: &AudioIndex,
    args: &crate::cli::caption::CaptionArgs,
    json: bool,
) -> anyhow::Result<()> {
    let report = crate::cli::caption::caption(config, index, None, args)?;
    index.optimize()?;
    for (path, reason) in &report.failed {
        eprintln!("not captioned {path}: {reason}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} captioned, {} had a caption, {} left for the next run, {} failed",
            report.captioned,
            report.already,
            report.left,
            report.failed.len()
        );
    }
    Ok(())
}

/// A progress bar on a terminal, one line per batch otherwise.
struct ProgressReporter {
    bar: Option<indicatif::ProgressBar>,
    last_done: usize,
}

impl ProgressReporter {
    fn new() -> Self {
        Self { bar: None, last_done: usize::MAX }
    }

    fn update(&mut self, p: Progress) {
        self.show(p.done, p.total, p.failed, "indexed");
    }

    /// `done` of `total` items `verb` so far, `failed` of them skipped.
    fn show(&mut self, done: usize, total: usize, failed: usize, verb: &str) {
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(total as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} items ({per_sec}, eta {eta}) {msg}",
                ) {
                    bar.set_style(style);
                }
                bar
            });
            bar.set_position(done as u64);
            if failed > 0 {
                bar.set_message(format!("{failed} skipped"));
            }
        } else if done != self.last_done {
            eprintln!("{verb} {done}/{total} ({failed} skipped)");
        }
        self.last_done = done;
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
