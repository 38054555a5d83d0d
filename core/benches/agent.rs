//! Tool result → first token of the continued answer: extending the KV cache (what the agent
//! loop does) against re-prefilling the whole history, at several history lengths; and the
//! same question for a stateless call (Chat Completions) that resends its conversation.
//!
//! ```text
//! cargo bench -p voxloop-core --bench agent -- [--history 512,2048,8192] [--repeats N]
//!     [--prompt-ids N] [--threads N]
//! ```
//!
//! It writes a random-weight f32 checkpoint in the official Step-Audio 2 layout to a
//! temporary directory (decoder: hidden 512, 8 layers, 8 query / 2 kv heads, intermediate
//! 1536, vocab 7232 with the test fixtures' tokenizer, 9216 positions) and measures, for each
//! history length N:
//!
//! - **step level**, on the model directly: the cache holds N history ids; the next prompt is
//!   what a tool result adds (`<|EOT|>`, an `input` turn with a 316-byte search result and the
//!   upstream summary instruction, the speech generation prompt). *Extension* prefills that on
//!   top of the cache; *re-prefill* clears the cache and prefills history + prompt. The figure
//!   is `generate`'s time to the first sampled token, on a thread of its own as the agent's
//!   model runs (see [`on_own_thread`]). Median of `--repeats` after a warm-up; the speed-up
//!   is re-prefill ÷ extension of each repeat (the two run back to back), median and min–max.
//! - **agent level** (extension only): a real turn whose human text makes the history about N
//!   ids; a scripted mask makes step 1 call the search tool (its result gets the summary
//!   instruction, so the prompt is the one above, always at its natural size), and the time
//!   runs from the moment the tool's answer is ready (inside the tool) to the first sampling
//!   of step 2 on the inference thread: the registry's span, the event, the history update,
//!   tokenizing the result, the hop to the inference thread and the prefill included. Median
//!   of `--repeats` after a warm-up, as the step level; the table shows the history the turn
//!   really had and the ids the result added (step 2's prompt).
//! - **stateless call**: a conversation of about N ids (system turn, a human turn, the answer)
//!   comes back as a new session with one more user message, as the Chat Completions front
//!   door rebuilds it for each request; time from the call to its first sampling, with the
//!   prefix the model still holds reused (`reuse_prefix`, the default) against an agent with
//!   reuse off that prefills it all again (see [`stateless_level`]). Median of `--repeats`
//!   after a warm-up, the two alternating; the speed-up per repeat, median and min–max.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke run of a few
//! seconds on the tiny fixture checkpoint with short histories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tch::{Device, Kind, Tensor};
use voxloop_core::agent::{Agent, AgentConfig, AgentEvent, ConstraintFactory, TurnInput};
use voxloop_core::generate::{
    allow_only_ids, generate, LogitsMask, Prompt, Sampler, SamplingParams, Segment, StepModel,
};
use voxloop_core::model::StepAudio2;
use voxloop_core::protocol::{
    encode_pieces, prompt_ids, render, GenerationMode, Message, ToolChoice,
    SEARCH_SUMMARY_INSTRUCTION,
};
use voxloop_core::session::{HumanPart, Session, SessionSettings, Turn};
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::tool::{NoArgs, Tool, ToolRegistry};
use voxloop_core::DeviceSpec;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A search result about the size of upstream's example (`assets/search_result.txt`, 305 bytes).
const RESULT: &str = "Market flash: at 09:30 the composite index opened 3.64 points lower, down \
    0.1%, at 3796.71; the component index fell 40.8 points (0.33%) to 12254.27; the growth \
    board opened 0.53% lower at 2691.40. Turnover in the first five minutes was 41.2 billion, \
    led by brokers and chip makers; 1,873 stocks rose and 2,914 fell.";

#[derive(Debug)]
struct Options {
    bench: bool,
    histories: Vec<usize>,
    /// The size of the tool-result prompt (the result text cut to fit); `None`: the whole
    /// result as the fixture tokenizer encodes it.
    prompt_ids: Option<usize>,
    repeats: usize,
    threads: i32,
}

const USAGE: &str = "usage: cargo bench -p voxloop-core --bench agent -- \
                     [--history 512,2048,8192] [--prompt-ids N] [--repeats N] [--threads N]";

impl Options {
    fn parse(args: &[String]) -> BoxResult<Self> {
        let bench = args.iter().any(|a| a == "--bench");
        if !bench {
            return Ok(Self {
                bench,
                histories: vec![64, 256],
                prompt_ids: None,
                repeats: 1,
                threads: 2,
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut o = Self {
            bench,
            histories: vec![512, 2048, 8192],
            prompt_ids: None,
            repeats: 5,
            threads: i32::try_from(threads)?,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--bench" => {}
                "--history" => {
                    o.histories =
                        value()?.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>()?
                }
                "--prompt-ids" => o.prompt_ids = Some(value()?.parse()?),
                "--repeats" => o.repeats = value()?.parse()?,
                "--threads" => o.threads = value()?.parse()?,
                other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
            }
        }
        if o.repeats < 1 || o.threads < 1 || o.histories.iter().any(|n| !(16..=8192).contains(n)) {
            return Err(
                format!("--repeats, --threads >= 1; histories in 16..=8192\n{USAGE}").into()
            );
        }
        Ok(o)
    }
}

// ----- the random checkpoint -----

const HIDDEN: i64 = 512;
const LAYERS: i64 = 8;
const HEADS: i64 = 8;
const KV_HEADS: i64 = 2;
const INTERMEDIATE: i64 = 1536;
const VOCAB: i64 = 7232;
const MAX_POSITIONS: i64 = 9216;
const ENC: i64 = 32;
const ADAPTER: i64 = 48;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/tiny_a")
}

/// Every tensor (name, shape, init std; `None` = a norm weight around 1).
fn params() -> Vec<(String, Vec<i64>, Option<f64>)> {
    let mut out = Vec::new();
    let linear = |out: &mut Vec<_>, name: &str, o: i64, i: i64, bias: bool| {
        out.push((format!("{name}.weight"), vec![o, i], Some(1.0 / (i as f64).sqrt())));
        if bias {
            out.push((format!("{name}.bias"), vec![o], Some(0.02)));
        }
    };
    out.push(("encoder.conv1.weight".into(), vec![ENC, 128, 3], Some(0.05)));
    out.push(("encoder.conv1.bias".into(), vec![ENC], Some(0.02)));
    out.push(("encoder.conv2.weight".into(), vec![ENC, ENC, 3], Some(0.1)));
    out.push(("encoder.conv2.bias".into(), vec![ENC], Some(0.02)));
    out.push(("encoder.positional_embedding.weight".into(), vec![1500, ENC], Some(0.5)));
    for p in ["attn.query", "attn.value", "attn.out"] {
        linear(&mut out, &format!("encoder.blocks.0.{p}"), ENC, ENC, true);
    }
    linear(&mut out, "encoder.blocks.0.attn.key", ENC, ENC, false);
    linear(&mut out, "encoder.blocks.0.mlp.0", 4 * ENC, ENC, true);
    linear(&mut out, "encoder.blocks.0.mlp.2", ENC, 4 * ENC, true);
    for ln in ["encoder.blocks.0.attn_ln", "encoder.blocks.0.mlp_ln", "encoder.after_norm"] {
        out.push((format!("{ln}.weight"), vec![ENC], None));
        out.push((format!("{ln}.bias"), vec![ENC], Some(0.02)));
    }
    out.push(("adapter.conv.weight".into(), vec![ENC, ENC, 3], Some(0.1)));
    out.push(("adapter.conv.bias".into(), vec![ENC], Some(0.02)));
    linear(&mut out, "adapter.linear1", ADAPTER, ENC, true);
    linear(&mut out, "adapter.linear2", HIDDEN, ADAPTER, true);
    let head_dim = HIDDEN / HEADS;
    out.push(("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN], Some(1.0)));
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        linear(&mut out, &format!("{p}.self_attn.q_proj"), HEADS * head_dim, HIDDEN, true);
        linear(&mut out, &format!("{p}.self_attn.k_proj"), KV_HEADS * head_dim, HIDDEN, true);
        linear(&mut out, &format!("{p}.self_attn.v_proj"), KV_HEADS * head_dim, HIDDEN, true);
        linear(&mut out, &format!("{p}.self_attn.o_proj"), HIDDEN, HEADS * head_dim, false);
        linear(&mut out, &format!("{p}.mlp.gate_proj"), INTERMEDIATE, HIDDEN, false);
        linear(&mut out, &format!("{p}.mlp.up_proj"), INTERMEDIATE, HIDDEN, false);
        linear(&mut out, &format!("{p}.mlp.down_proj"), HIDDEN, INTERMEDIATE, false);
        out.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN], None));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN], None));
    }
    out.push(("model.norm.weight".into(), vec![HIDDEN], None));
    linear(&mut out, "lm_head", VOCAB, HIDDEN, false);
    out
}

/// Writes the checkpoint (one shard) and the fixtures' tokenizer into `dir`.
fn write_checkpoint(dir: &Path) -> BoxResult<()> {
    tch::manual_seed(11);
    let mut tensors = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (name, dims, std) in params() {
        let t = Tensor::f_randn(dims.as_slice(), (Kind::Float, Device::Cpu))?;
        let t = match std {
            Some(std) => t.f_mul_scalar(std)?,
            None => t.f_mul_scalar(0.05)?.f_add_scalar(1.0)?,
        };
        weight_map.insert(name.clone(), "model.safetensors");
        tensors.push((name, t));
    }
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors"))?;
    let index = json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
    let text = json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "num_attention_heads": HEADS,
        "num_attention_groups": KV_HEADS, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS, "max_seq_len": MAX_POSITIONS, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": MAX_POSITIONS,
        "rope_scaling": null, "torch_dtype": "float32"
    });
    let config = json!({
        "architectures": ["StepAudio2ForCausalLM"], "model_type": "step_audio_2",
        "torch_dtype": "float32", "text_config": text,
        "audio_encoder_config": {
            "n_mels": 128, "n_audio_ctx": 1500, "n_audio_state": ENC, "n_audio_head": 4,
            "n_audio_layer": 1, "n_codebook_size": 4096, "llm_dim": HIDDEN, "kernel_size": 3,
            "adapter_stride": 2, "adapter_state": ADAPTER
        }
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    std::fs::copy(fixture().join("tokenizer.json"), dir.join("tokenizer.json"))?;
    Ok(())
}

// ----- step level -----

/// What a tool result adds to the cache: `<|EOT|>`, the `input` turn, the speech prompt. With
/// `size`, the result text's ids are cut so that the whole is `size` ids.
fn result_prompt(tokenizer: &StepTokenizer, size: Option<usize>) -> BoxResult<Vec<i64>> {
    let encode = |messages: &[Message]| -> BoxResult<Vec<i64>> {
        Ok(prompt_ids(&encode_pieces(&render(messages), tokenizer)?))
    };
    let full = |result: &str| -> BoxResult<Vec<i64>> {
        let mut ids = vec![tokenizer.special().eot];
        ids.extend(encode(&[
            Message::tool_result(result, Some(SEARCH_SUMMARY_INSTRUCTION)),
            Message::generation_prompt(GenerationMode::Speech),
        ])?);
        Ok(ids)
    };
    let natural = full(RESULT)?;
    let Some(size) = size else { return Ok(natural) };
    // The prompt around an empty result, with the first ids of the result put back where the
    // result goes (after the common prefix: `<|EOT|><|BOT|>input\n`).
    let empty = full("")?;
    let result = tokenizer.encode_untrusted(RESULT)?;
    if size < empty.len() || size > natural.len() {
        return Err(format!("--prompt-ids must be in {}..={}", empty.len(), natural.len()).into());
    }
    let split = natural.iter().zip(&empty).take_while(|(a, b)| a == b).count();
    let mut ids = empty[..split].to_vec();
    ids.extend_from_slice(&result[..size - empty.len()]);
    ids.extend_from_slice(&empty[split..]);
    Ok(ids)
}

/// Time to the first sampled token of a generation from `cached` + `new`.
fn first_token(model: &mut StepAudio2, cached: &[i64], new: &[i64]) -> BoxResult<Duration> {
    let mut sampler = Sampler::new(SamplingParams::greedy(1, Vec::new()))?;
    let segments = [Segment::Tokens(new.to_vec())];
    let prompt = Prompt { cached, segments: &segments };
    let stop = AtomicBool::new(false);
    let out =
        generate(model, prompt, &mut sampler, None, &stop, |_| std::ops::ControlFlow::Break(()))?;
    out.timings.first_token.ok_or_else(|| "no token was generated".into())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// The median of `xs` and its range.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

/// Step-level figures for one history length.
struct StepFigures {
    /// Median time to the first token, extending the cache and re-prefilling.
    extension: Duration,
    re_prefill: Duration,
    /// re-prefill ÷ extension of each repeat (both run back to back): median, min, max.
    speed_up: (f64, f64, f64),
}

/// The step-level medians for a history of `n` ids.
fn step_level(
    model: &mut StepAudio2,
    tokenizer: &StepTokenizer,
    n: usize,
    o: &Options,
) -> BoxResult<StepFigures> {
    let history: Vec<i64> = (0..n as i64).map(|i| (i * 37 + 11) % 600).collect();
    let tail = result_prompt(tokenizer, o.prompt_ids)?;
    let mut all = history.clone();
    all.extend_from_slice(&tail);
    let (mut ext, mut full) = (Vec::new(), Vec::new());
    for run in 0..=o.repeats {
        StepModel::clear(model);
        let _ = StepModel::prefill(model, &[Segment::Tokens(history.clone())])?;
        let e = first_token(model, &history, &tail)?;
        StepModel::clear(model);
        let f = first_token(model, &[], &all)?;
        if run > 0 {
            ext.push(e);
            full.push(f);
        }
    }
    StepModel::clear(model);
    if verbose() {
        eprintln!("history {n}: extension {ext:?}, re-prefill {full:?}");
    }
    let ratios = ext.iter().zip(&full).map(|(e, f)| f.as_secs_f64() / e.as_secs_f64()).collect();
    Ok(StepFigures { extension: median(ext), re_prefill: median(full), speed_up: spread(ratios) })
}

fn verbose() -> bool {
    std::env::var_os("VOXLOOP_BENCH_VERBOSE").is_some()
}

// ----- agent level -----

/// A tool that answers with the search result and notes when its answer was ready.
struct Search {
    ready: Arc<Mutex<Option<Instant>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[async_trait::async_trait]
impl Tool for Search {
    const NAME: &'static str = "web_search";
    type Args = NoArgs;
    type Output = String;
    type Error = Never;

    fn description(&self) -> String {
        "Searches the web.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Never> {
        let result = RESULT.to_owned();
        if let Ok(mut ready) = self.ready.lock() {
            *ready = Some(Instant::now());
        }
        Ok(result)
    }
}

/// The first step (tool choice `auto`) writes `call` then `<|EOT|>`; the next (`none`) notes
/// when it first samples, then ends.
struct Scripted {
    call: Vec<i64>,
    eot: i64,
    first_sample: Arc<Mutex<Option<Instant>>>,
}

struct Forced {
    ids: Vec<i64>,
    eot: i64,
    mark: Option<Arc<Mutex<Option<Instant>>>>,
}

impl LogitsMask for Forced {
    fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> voxloop_core::Result<()> {
        if let Some(mark) = &self.mark {
            if let Ok(mut slot) = mark.lock() {
                slot.get_or_insert_with(Instant::now);
            }
        }
        allow_only_ids(logits, &[self.ids.get(generated.len()).copied().unwrap_or(self.eot)])
    }
}

impl ConstraintFactory for Scripted {
    fn build(
        &self,
        choice: &ToolChoice,
        _: GenerationMode,
    ) -> voxloop_core::Result<Option<Box<dyn LogitsMask + Send>>> {
        Ok(Some(Box::new(match choice {
            ToolChoice::None => Forced {
                ids: Vec::new(),
                eot: self.eot,
                mark: Some(Arc::clone(&self.first_sample)),
            },
            _ => Forced { ids: self.call.clone(), eot: self.eot, mark: None },
        })))
    }
}

/// Agent-level figures for one history length.
struct AgentFigures {
    /// Median from the tool's answer to the first sampling of the next step.
    result_to_token: Duration,
    /// Ids in the cache when the result arrived (step 1's prompt and output).
    history: usize,
    /// Ids the result added (step 2's prompt).
    prompt: usize,
}

/// Tool result → first sampling of the next step through the agent, with a history of about
/// `n` ids.
async fn agent_level(dir: &Path, n: usize, repeats: usize) -> BoxResult<AgentFigures> {
    let ready = Arc::new(Mutex::new(None));
    let mut tools = ToolRegistry::new();
    tools.register(Search { ready: Arc::clone(&ready) })?;
    let config = AgentConfig::default().summarise_results_of(Search::NAME);
    let agent = Agent::load(dir, DeviceSpec::Cpu, tools, config)?;
    let tok = agent.tokenizer();
    let special = *tok.special();
    let mut call = vec![special.tts_end, special.tool_call_start];
    call.extend(tok.encode_untrusted("function\nweb_search\n{}")?);
    call.push(special.tool_call_end);
    // The system and tool turns and the call come first; the human turn brings the history
    // to about n ids.
    let prelude = [
        Message::system(SessionSettings::default().system_text(std::time::SystemTime::now())),
        Message::tool_schemas(&serde_json::from_str(&agent.tools().tool_json_schemas()?)?),
        Message::human_text(""),
        Message::generation_prompt(GenerationMode::Speech),
    ];
    let prelude = prompt_ids(&encode_pieces(&render(&prelude), tok)?).len() + call.len();
    let filler = "the quick brown fox jumps over the lazy dog ".repeat(n / 8 + 1);
    let words: Vec<&str> = filler.split_whitespace().collect();
    let per_word = tok.encode_untrusted(&filler)?.len() as f64 / words.len() as f64;
    let keep = (n.saturating_sub(prelude).max(8) as f64 / per_word) as usize;
    let text = words[..keep.clamp(1, words.len())].join(" ");
    let first_sample = Arc::new(Mutex::new(None));
    let agent = agent.with_constraints(Arc::new(Scripted {
        call,
        eot: special.eot,
        first_sample: Arc::clone(&first_sample),
    }));

    let mut times = Vec::new();
    let (mut history, mut prompt) = (0, 0);
    for run in 0..=repeats {
        *first_sample.lock().map_err(|_| "poisoned")? = None;
        let mut settings = SessionSettings {
            follow_up_tool_choice: ToolChoice::None,
            ..SessionSettings::default()
        };
        settings.sampling.max_new_tokens = 64;
        let mut session = Session::new(settings);
        let mut stream = agent.run_turn(&mut session, TurnInput::text(text.clone()));
        while let Some(event) = stream.next().await {
            match event {
                // Repeats reuse the prefix the previous one left (the cached ids).
                AgentEvent::Usage { step: 1, usage } => {
                    history = usage.cached_tokens + usage.input_tokens + usage.output_tokens
                }
                AgentEvent::Usage { step: 2, usage } => prompt = usage.input_tokens,
                _ => {}
            }
        }
        drop(stream);
        let start = ready.lock().map_err(|_| "poisoned")?.take();
        let end = *first_sample.lock().map_err(|_| "poisoned")?;
        let (Some(start), Some(end)) = (start, end) else {
            return Err("the scripted turn did not reach its second step".into());
        };
        if run > 0 {
            times.push(end.duration_since(start));
        }
    }
    if verbose() {
        eprintln!("history {history} (agent): result → first token {times:?}");
    }
    Ok(AgentFigures { result_to_token: median(times), history, prompt })
}

// ----- a stateless call (Chat Completions) -----

/// Notes when the step first samples; masks nothing.
struct FirstSample {
    mark: Arc<Mutex<Option<Instant>>>,
}

impl ConstraintFactory for FirstSample {
    fn build(
        &self,
        _: &ToolChoice,
        _: GenerationMode,
    ) -> voxloop_core::Result<Option<Box<dyn LogitsMask + Send>>> {
        let mark = Arc::clone(&self.mark);
        Ok(Some(Box::new(move |_: &mut Tensor, _: &[i64]| {
            if let Ok(mut slot) = mark.lock() {
                slot.get_or_insert_with(Instant::now);
            }
            Ok(())
        })))
    }
}

/// Stateless-call figures for one history length.
struct StatelessFigures {
    /// Median time to the first sampling with the prefix reused, and with it prefilled again.
    reused: Duration,
    cold: Duration,
    /// Reused ÷ cold of each repeat: median, min, max.
    speed_up: (f64, f64, f64),
    /// The call's prompt: every id of it, and those the reuse found in the cache.
    prompt: usize,
    cached: usize,
}

/// What a Chat Completions call that appends one user message to a conversation of about `n`
/// ids costs to its first token: the conversation comes back as a new session (the service
/// rebuilds one per request) and either reuses the turns the model still holds (the prefix
/// cache) or, with reuse off, prefills all of them again.
async fn stateless_level(dir: &Path, n: usize, repeats: usize) -> BoxResult<StatelessFigures> {
    let mark = Arc::new(Mutex::new(None));
    let load = |reuse_prefix: bool| -> BoxResult<Agent> {
        let config = AgentConfig { reuse_prefix, ..AgentConfig::default() };
        let agent = Agent::load(dir, DeviceSpec::Cpu, ToolRegistry::new(), config)?;
        Ok(agent.with_constraints(Arc::new(FirstSample { mark: Arc::clone(&mark) })))
    };
    let (warm, cold) = (load(true)?, load(false)?);
    let mut settings = SessionSettings {
        speech: false,
        tool_choice: ToolChoice::None,
        ..SessionSettings::default()
    };
    settings.sampling.max_new_tokens = 16;
    settings.sampling.seed = Some(7);
    let tok = warm.tokenizer();
    let system = settings.system_text(std::time::SystemTime::now());
    let prelude = prompt_ids(&encode_pieces(
        &render(&[
            Message::system(system.clone()),
            Message::human_text(""),
            Message::generation_prompt(GenerationMode::Text),
        ]),
        tok,
    )?)
    .len()
        + 16;
    let filler = "the quick brown fox jumps over the lazy dog ".repeat(n / 8 + 1);
    let words: Vec<&str> = filler.split_whitespace().collect();
    let per_word = tok.encode_untrusted(&filler)?.len() as f64 / words.len() as f64;
    let keep = (n.saturating_sub(prelude).max(8) as f64 / per_word) as usize;
    let text = words[..keep.clamp(1, words.len())].join(" ");
    let human = |text: &str| Turn::Human { parts: vec![HumanPart::Text { text: text.to_owned() }] };
    let base = vec![Turn::System { text: system }, human(&text)];

    let (mut reused, mut cold_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut prompt, mut cached) = (0, 0);
    for run in 0..=repeats {
        let mut pair = [Duration::ZERO; 2];
        for (slot, agent) in [&warm, &cold].into_iter().enumerate() {
            // The earlier call, whose answer the client sends back with its next message.
            let mut earlier = Session::with_history(settings.clone(), base.clone());
            let _: Vec<_> = agent.continue_turn(&mut earlier, None, None).collect().await;
            let mut history = earlier.history().to_vec();
            history.push(human("And what happened next?"));
            *mark.lock().map_err(|_| "poisoned")? = None;
            let start = Instant::now();
            let mut call = Session::with_history(settings.clone(), history);
            let events: Vec<_> = agent.continue_turn(&mut call, None, None).collect().await;
            let first = mark.lock().map_err(|_| "poisoned")?.ok_or("the call did not sample")?;
            pair[slot] = first.duration_since(start);
            if slot == 0 {
                for event in &events {
                    if let AgentEvent::Usage { step: 1, usage } = event {
                        prompt = usage.input_tokens + usage.cached_tokens;
                        cached = usage.cached_tokens;
                    }
                }
            }
        }
        if run > 0 {
            reused.push(pair[0]);
            cold_times.push(pair[1]);
            ratios.push(pair[1].as_secs_f64() / pair[0].as_secs_f64());
        }
    }
    Ok(StatelessFigures {
        reused: median(reused),
        cold: median(cold_times),
        speed_up: spread(ratios),
        prompt,
        cached,
    })
}

fn run(o: &Options) -> BoxResult<()> {
    tch::set_num_threads(o.threads);
    let (dir, _guard) = if o.bench {
        let tmp = tempfile::Builder::new().prefix("voxloop-bench-agent-").tempdir()?;
        let start = Instant::now();
        write_checkpoint(tmp.path())?;
        println!("wrote the random checkpoint in {:.1} s", start.elapsed().as_secs_f64());
        (tmp.path().to_path_buf(), Some(tmp))
    } else {
        println!("smoke run on the tiny fixture (pass --bench for figures)");
        (fixture(), None)
    };
    let mut model = StepAudio2::load(&dir, Device::Cpu, Kind::Float)?;
    let tokenizer = StepTokenizer::from_file(dir.join("tokenizer.json"))?;
    println!(
        "{} threads, f32 CPU; prompt added by a tool result: {} ids; both levels: median of {} \
         after a warm-up",
        o.threads,
        result_prompt(&tokenizer, o.prompt_ids)?.len(),
        o.repeats
    );
    println!("load average at start: {}", load_average());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    println!();
    println!(
        "| history ids | KV extension ms | re-prefill ms | speed-up, median (min–max) \
         | agent: result → first token ms (history ids, result prompt ids) |"
    );
    println!("|---|---|---|---|---|");
    for &n in &o.histories {
        let step = on_own_thread(|| step_level(&mut model, &tokenizer, n, o))?;
        let agent = runtime.block_on(agent_level(&dir, n, o.repeats))?;
        let (speed_up, low, high) = step.speed_up;
        println!(
            "| {n} | {:.1} | {:.1} | {speed_up:.1}x ({low:.1}–{high:.1}) | {:.1} ({}, {}) |",
            step.extension.as_secs_f64() * 1e3,
            step.re_prefill.as_secs_f64() * 1e3,
            agent.result_to_token.as_secs_f64() * 1e3,
            agent.history,
            agent.prompt,
        );
    }
    println!();
    println!(
        "| history ids | stateless call: prefix reused ms | prefilled again ms | speed-up, \
         median (min–max) | call prompt ids (reused) |"
    );
    println!("|---|---|---|---|---|");
    for &n in &o.histories {
        let call = runtime.block_on(stateless_level(&dir, n, o.repeats))?;
        let (speed_up, low, high) = call.speed_up;
        println!(
            "| {n} | {:.1} | {:.1} | {speed_up:.1}x ({low:.1}–{high:.1}) | {} ({}) |",
            call.reused.as_secs_f64() * 1e3,
            call.cold.as_secs_f64() * 1e3,
            call.prompt,
            call.cached,
        );
    }
    println!("\nload average at end: {}", load_average());
    Ok(())
}

/// Runs `f` on a thread of its own, as the agent runs the model on its inference thread, so
/// that both levels run under the same OpenMP regime. libtorch's OpenMP runtime (GCC's
/// libgomp, shipped in the torch wheel) gives each thread that runs parallel work its own team,
/// and its barrier waits spin for 300,000 rounds while it manages no more threads than there
/// are CPUs, but only 100 once it manages more (libgomp manual, `GOMP_SPINCOUNT`). On the
/// bench's main thread alone, 2 threads on 2 CPUs spin at full count; a second team (the
/// agent's inference thread, or this one) makes libgomp throttle. Spinning at full count, a
/// waiting thread holds the CPU its descheduled teammate needs as soon as anything else runs:
/// under load, step-level prefills on the main thread took up to 8× longer than on a thread of
/// their own, where they match the agent's figure.
fn on_own_thread<T: Send>(f: impl FnOnce() -> BoxResult<T> + Send) -> BoxResult<T> {
    let joined = std::thread::scope(|s| s.spawn(|| f().map_err(|e| e.to_string())).join());
    Ok(joined.map_err(|_| "the step-level thread panicked")??)
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Options::parse(&args).and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent bench: {e}");
            ExitCode::FAILURE
        }
    }
}
