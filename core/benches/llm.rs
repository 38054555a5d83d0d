//! Speech-LLM throughput: voxloop's Qwen2 decoder against transformers' on the same random
//! checkpoint, the same prompt length, decode length and thread count, in one run.
//!
//! ```text
//! cargo bench -p voxloop-core --bench llm -- [--shape tiny|qwen05|all] [--threads N]
//!     [--prompt-tokens N] [--decode-tokens N] [--repeats N] [--rounds N] [--no-reference]
//! ```
//!
//! For each shape it writes a random-weight f32 checkpoint in the official Step-Audio 2 layout
//! (`config.json`, `model.safetensors.index.json`, shards) to a temporary directory, times
//! voxloop on it (prefill of random ids into an empty cache, then greedy decode steps with the
//! cache; `--repeats` times after a warm-up), then runs `scripts/bench/llm_reference.py` (the
//! same measurement with transformers' `Qwen2ForCausalLM`) on the same files. The two
//! alternate for `--rounds` rounds, so that a change in the machine's load hits both sides.
//! Each round yields one figure per side (its best of `--repeats` runs) and their ratio; the
//! table reports the median of the rounds for each side and the median ratio with the range
//! over the rounds (min–max). The directory is deleted afterwards.
//!
//! - `tiny`: fixture A's decoder (hidden 32, 2 layers, 4 query / 2 kv heads, vocab 7232).
//! - `qwen05`: Qwen2.5-0.5B's decoder (hidden 896, 24 layers, 14 / 2 heads, intermediate 4864,
//!   vocab 151936, θ 1e6) with an untied LM head as in Step-Audio 2: 2.5 GB on disk.
//!
//! Both carry a one-layer, 32-wide audio encoder (not timed). The Python interpreter is
//! `$VOXLOOP_REF_PYTHON`, else `.cache/refenv/bin/python`; without one the voxloop figures are
//! printed alone, with the command that creates the environment.
//!
//! It also measures the machine's copy bandwidth (a large `copy_` in libtorch with the same
//! threads, best of several, counting bytes read plus bytes written) and reports decode speed
//! as a fraction of the bound `bandwidth ÷ bytes read per decoded token` (every decoder weight
//! and the LM head, one embedding row and the KV cache at the mean decode position). A decoder
//! that reads under 64 MiB per token (the tiny shape) stays in the CPU caches: no bound then.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a smoke run of a few
//! seconds: the tiny shape with a short prompt, no reference, small bandwidth buffers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use voxloop_core::model::StepAudio2;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A decoder shape to benchmark.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    hidden: i64,
    intermediate: i64,
    heads: i64,
    kv_heads: i64,
    layers: i64,
    vocab: i64,
    rope_theta: f64,
    max_positions: i64,
    shards: usize,
    /// Decode steps when `--decode-tokens` is not given.
    decode_tokens: usize,
}

const TINY: Shape = Shape {
    name: "tiny",
    hidden: 32,
    intermediate: 64,
    heads: 4,
    kv_heads: 2,
    layers: 2,
    vocab: 7232,
    rope_theta: 1e4,
    max_positions: 2048,
    shards: 2,
    decode_tokens: 256,
};

const QWEN05: Shape = Shape {
    name: "qwen05",
    hidden: 896,
    intermediate: 4864,
    heads: 14,
    kv_heads: 2,
    layers: 24,
    vocab: 151_936,
    rope_theta: 1e6,
    max_positions: 32_768,
    shards: 4,
    decode_tokens: 64,
};

/// The audio encoder every bench checkpoint carries (it is loaded, never run).
const ENC_STATE: i64 = 32;
const ENC_HEADS: i64 = 4;
const ENC_LAYERS: i64 = 1;
const ADAPTER_STATE: i64 = 48;
const N_MELS: i64 = 128;
const AUDIO_CTX: i64 = 1500;

#[derive(Debug)]
struct Options {
    /// `--bench` was passed (by `cargo bench`): the full measurement.
    bench: bool,
    shapes: Vec<Shape>,
    threads: i32,
    prompt_tokens: usize,
    decode_tokens: Option<usize>,
    repeats: usize,
    rounds: usize,
    reference: bool,
    /// Bytes per buffer and tries of the bandwidth measurement.
    bandwidth_bytes: usize,
    bandwidth_tries: usize,
}

const USAGE: &str = "usage: cargo bench -p voxloop-core --bench llm -- [--shape tiny|qwen05|all] \
                     [--threads N] [--prompt-tokens N] [--decode-tokens N] [--repeats N] \
                     [--rounds N] [--no-reference]";

impl Options {
    fn parse(args: &[String]) -> BoxResult<Self> {
        let bench = args.iter().any(|a| a == "--bench");
        if !bench {
            // `cargo test` may pass test-harness flags or a name filter: ignore them.
            return Ok(Self {
                bench,
                shapes: vec![TINY],
                threads: 2,
                prompt_tokens: 16,
                decode_tokens: Some(4),
                repeats: 1,
                rounds: 1,
                reference: false,
                bandwidth_bytes: 4 << 20,
                bandwidth_tries: 2,
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut options = Self {
            bench,
            shapes: vec![TINY, QWEN05],
            threads: i32::try_from(threads)?,
            prompt_tokens: 256,
            decode_tokens: None,
            repeats: 2,
            rounds: 2,
            reference: true,
            bandwidth_bytes: 256 << 20,
            bandwidth_tries: 5,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--bench" => {}
                "--shape" => {
                    options.shapes = match value()?.as_str() {
                        "tiny" => vec![TINY],
                        "qwen05" => vec![QWEN05],
                        "all" => vec![TINY, QWEN05],
                        other => return Err(format!("unknown shape {other:?}\n{USAGE}").into()),
                    }
                }
                "--threads" => options.threads = value()?.parse()?,
                "--prompt-tokens" => options.prompt_tokens = value()?.parse()?,
                "--decode-tokens" => options.decode_tokens = Some(value()?.parse()?),
                "--repeats" => options.repeats = value()?.parse()?,
                "--rounds" => options.rounds = value()?.parse()?,
                "--no-reference" => options.reference = false,
                other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
            }
        }
        if options.threads < 1
            || options.prompt_tokens < 8
            || options.repeats < 1
            || options.rounds < 1
        {
            return Err(format!(
                "--threads, --repeats and --rounds must be >= 1, --prompt-tokens >= 8\n{USAGE}"
            )
            .into());
        }
        Ok(options)
    }

    fn decode_tokens(&self, shape: &Shape) -> usize {
        self.decode_tokens.unwrap_or(shape.decode_tokens)
    }
}

// -------------------------------------------------------------------------------------------
// The random checkpoint
// -------------------------------------------------------------------------------------------

/// How a tensor is drawn.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// Normal with this standard deviation.
    Normal(f64),
    /// `1 + N(0, 0.1)`: a norm's scale.
    Scale,
}

struct Param {
    name: String,
    dims: Vec<i64>,
    init: Init,
}

impl Param {
    fn numel(&self) -> i64 {
        self.dims.iter().product()
    }

    fn is_decoder(&self) -> bool {
        self.name.starts_with("model.") || self.name.starts_with("lm_head.")
    }
}

/// Every tensor of the checkpoint, named as in the official release.
fn params(s: &Shape) -> Vec<Param> {
    let mut out = Vec::new();
    let mut put = |name: String, dims: &[i64], init: Init| {
        out.push(Param { name, dims: dims.to_vec(), init })
    };
    let fan_in = |n: i64| Init::Normal(1.0 / (n as f64).sqrt());
    let bias = Init::Normal(0.1);
    let linear = |put: &mut dyn FnMut(String, &[i64], Init), p: &str, out: i64, inp: i64, b| {
        put(format!("{p}.weight"), &[out, inp], fan_in(inp));
        if b {
            put(format!("{p}.bias"), &[out], bias);
        }
    };

    let (es, h, hd) = (ENC_STATE, s.hidden, s.hidden / s.heads);
    put("encoder.conv1.weight".into(), &[es, N_MELS, 3], fan_in(N_MELS * 3));
    put("encoder.conv1.bias".into(), &[es], bias);
    put("encoder.conv2.weight".into(), &[es, es, 3], fan_in(es * 3));
    put("encoder.conv2.bias".into(), &[es], bias);
    put("encoder.positional_embedding.weight".into(), &[AUDIO_CTX, es], Init::Normal(0.5));
    for i in 0..ENC_LAYERS {
        let p = format!("encoder.blocks.{i}");
        linear(&mut put, &format!("{p}.attn.query"), es, es, true);
        linear(&mut put, &format!("{p}.attn.key"), es, es, false);
        linear(&mut put, &format!("{p}.attn.value"), es, es, true);
        linear(&mut put, &format!("{p}.attn.out"), es, es, true);
        linear(&mut put, &format!("{p}.mlp.0"), 4 * es, es, true);
        linear(&mut put, &format!("{p}.mlp.2"), es, 4 * es, true);
        for ln in ["attn_ln", "mlp_ln"] {
            put(format!("{p}.{ln}.weight"), &[es], Init::Scale);
            put(format!("{p}.{ln}.bias"), &[es], bias);
        }
    }
    put("encoder.after_norm.weight".into(), &[es], Init::Scale);
    put("encoder.after_norm.bias".into(), &[es], bias);
    put("adapter.conv.weight".into(), &[es, es, 3], fan_in(es * 3));
    put("adapter.conv.bias".into(), &[es], bias);
    linear(&mut put, "adapter.linear1", ADAPTER_STATE, es, true);
    linear(&mut put, "adapter.linear2", h, ADAPTER_STATE, true);

    put("model.embed_tokens.weight".into(), &[s.vocab, h], Init::Normal(1.0));
    for i in 0..s.layers {
        let p = format!("model.layers.{i}");
        linear(&mut put, &format!("{p}.self_attn.q_proj"), s.heads * hd, h, true);
        linear(&mut put, &format!("{p}.self_attn.k_proj"), s.kv_heads * hd, h, true);
        linear(&mut put, &format!("{p}.self_attn.v_proj"), s.kv_heads * hd, h, true);
        linear(&mut put, &format!("{p}.self_attn.o_proj"), h, s.heads * hd, false);
        linear(&mut put, &format!("{p}.mlp.gate_proj"), s.intermediate, h, false);
        linear(&mut put, &format!("{p}.mlp.up_proj"), s.intermediate, h, false);
        linear(&mut put, &format!("{p}.mlp.down_proj"), h, s.intermediate, false);
        put(format!("{p}.input_layernorm.weight"), &[h], Init::Scale);
        put(format!("{p}.post_attention_layernorm.weight"), &[h], Init::Scale);
    }
    put("model.norm.weight".into(), &[h], Init::Scale);
    put("lm_head.weight".into(), &[s.vocab, h], Init::Normal(3.0 / (h as f64).sqrt()));
    out
}

fn config_json(s: &Shape) -> Value {
    json!({
        "architectures": ["StepAudio2ForCausalLM"],
        "model_type": "step_audio_2",
        "torch_dtype": "float32",
        "text_config": {
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": s.hidden,
            "intermediate_size": s.intermediate,
            "num_attention_heads": s.heads,
            "num_attention_groups": s.kv_heads,
            "num_key_value_heads": s.kv_heads,
            "num_hidden_layers": s.layers,
            "max_seq_len": s.max_positions,
            "vocab_size": s.vocab,
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta,
            "max_position_embeddings": s.max_positions,
            "rope_scaling": null,
            "tie_word_embeddings": false,
            "torch_dtype": "float32"
        },
        "audio_encoder_config": {
            "n_mels": N_MELS,
            "n_audio_ctx": AUDIO_CTX,
            "n_audio_state": ENC_STATE,
            "n_audio_head": ENC_HEADS,
            "n_audio_layer": ENC_LAYERS,
            "n_codebook_size": 4096,
            "llm_dim": s.hidden,
            "kernel_size": 3,
            "adapter_stride": 2,
            "adapter_state": ADAPTER_STATE
        }
    })
}

/// Writes the checkpoint into `dir`, one shard in memory at a time; returns its size in bytes.
fn write_checkpoint(s: &Shape, dir: &Path) -> BoxResult<u64> {
    tch::manual_seed(7);
    let mut params = params(s);
    // Deal the tensors, largest first, to the emptiest shard (HF's shards mix modules too).
    params.sort_by_key(|p| std::cmp::Reverse(p.numel()));
    let mut shards: Vec<Vec<Param>> = (0..s.shards).map(|_| Vec::new()).collect();
    let mut sizes = vec![0i64; s.shards];
    for p in params {
        let i = (0..s.shards).min_by_key(|&i| sizes[i]).unwrap_or(0);
        sizes[i] += p.numel();
        shards[i].push(p);
    }
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, s.shards);
        let mut tensors = Vec::with_capacity(shard.len());
        for p in shard {
            let t = Tensor::f_randn(p.dims.as_slice(), (Kind::Float, Device::Cpu))?;
            let t = match p.init {
                Init::Normal(std) => t.f_mul_scalar(std)?,
                Init::Scale => t.f_mul_scalar(0.1)?.f_add_scalar(1.0)?,
            };
            total += p.numel() as u64 * 4;
            weight_map.insert(p.name.clone(), file.clone());
            tensors.push((p.name.clone(), t));
        }
        Tensor::write_safetensors(&tensors, dir.join(&file))?;
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config_json(s))?)?;
    Ok(total)
}

/// Bytes one decode step reads: every decoder weight except the embedding table, one
/// embedding row, and the KV cache at `context` positions.
fn bytes_per_token(s: &Shape, context: usize) -> f64 {
    let weights: i64 = params(s)
        .iter()
        .filter(|p| p.is_decoder() && p.name != "model.embed_tokens.weight")
        .map(Param::numel)
        .sum();
    let kv = 2 * s.layers * s.kv_heads * (s.hidden / s.heads) * context as i64;
    4.0 * (weights + s.hidden + kv) as f64
}

fn decoder_params(s: &Shape) -> i64 {
    params(s).iter().filter(|p| p.is_decoder()).map(Param::numel).sum()
}

// -------------------------------------------------------------------------------------------
// Measurements
// -------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Speed {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    load_s: f64,
}

/// Deterministic pseudo-random prompt ids below `vocab` (a 64-bit LCG).
fn prompt_ids(n: usize, vocab: i64) -> Vec<u32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

fn argmax(logits: &Tensor) -> BoxResult<u32> {
    Ok(u32::try_from(logits.f_argmax(0, false)?.f_int64_value(&[])?)?)
}

/// Seconds for one prefill of `prompt` into an empty cache and for `steps` greedy steps.
fn run_once(model: &mut StepAudio2, prompt: &[u32], steps: usize) -> BoxResult<(f64, f64)> {
    model.clear();
    let start = Instant::now();
    let mut logits = model.prefill(prompt, &[], u32::MAX)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..steps {
        logits = model.decode(argmax(&logits)?)?;
    }
    let decode_s = start.elapsed().as_secs_f64();
    let expected = prompt.len() + steps;
    if model.cache_len() != expected {
        return Err(format!(
            "the cache holds {} positions, expected {expected}",
            model.cache_len()
        )
        .into());
    }
    Ok((prefill_s, decode_s))
}

/// The median of a non-empty list and its range: `(median, min, max)`. The median of an even
/// count is the mean of the middle two.
fn spread(xs: impl IntoIterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = xs.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let (first, last) = (*v.first()?, *v.last()?);
    Some(((v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0, first, last))
}

/// One round: voxloop's figures and, when the reference ran, transformers'.
#[derive(Debug, Clone, Copy)]
struct Round {
    ours: Speed,
    theirs: Option<Speed>,
}

/// What the table shows for one kind of figure (prefill or decode tok/s) over the rounds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    /// Medians over the rounds.
    ours: f64,
    theirs: Option<f64>,
    /// voxloop ÷ transformers per round (rounds where both ran): median, min, max.
    ratio: Option<(f64, f64, f64)>,
}

impl Summary {
    fn of(rounds: &[Round], get: fn(&Speed) -> f64) -> Option<Summary> {
        Some(Summary {
            ours: spread(rounds.iter().map(|r| get(&r.ours)))?.0,
            theirs: spread(rounds.iter().filter_map(|r| r.theirs.as_ref().map(get))).map(|s| s.0),
            ratio: spread(
                rounds.iter().filter_map(|r| Some(get(&r.ours) / get(r.theirs.as_ref()?))),
            ),
        })
    }
}

/// One round of voxloop measurements: a warm-up, then `repeats` runs, the best of each kind.
fn time_voxloop(model: &mut StepAudio2, load_s: f64, s: &Shape, o: &Options) -> BoxResult<Speed> {
    let prompt = prompt_ids(o.prompt_tokens, s.vocab);
    let steps = o.decode_tokens(s);
    run_once(model, &prompt[..8], 2)?;
    let (mut prefill, mut decode) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..o.repeats {
        let (p, d) = run_once(model, &prompt, steps)?;
        prefill = prefill.min(p);
        decode = decode.min(d);
    }
    Ok(Speed {
        prefill_tok_s: prompt.len() as f64 / prefill,
        decode_tok_s: steps as f64 / decode,
        load_s,
    })
}

/// Copy bandwidth in GB/s (bytes read + bytes written per second), best of `tries`.
fn copy_bandwidth(bytes: usize, tries: usize) -> BoxResult<f64> {
    let n = i64::try_from(bytes / 4)?;
    let src = Tensor::f_ones([n], (Kind::Float, Device::Cpu))?;
    let mut dst = Tensor::f_zeros([n], (Kind::Float, Device::Cpu))?;
    dst.f_copy_(&src)?; // touch every page once
    let mut best = f64::INFINITY;
    for _ in 0..tries {
        let start = Instant::now();
        dst.f_copy_(&src)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64 * 4.0) / best / 1e9)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("VOXLOOP_REF_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = workspace_root().join(".cache/refenv/bin/python");
    venv.exists().then_some(venv)
}

fn time_reference(python: &Path, dir: &Path, s: &Shape, o: &Options) -> BoxResult<(Speed, Value)> {
    let script = workspace_root().join("scripts/bench/llm_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir)
        .args(["--threads", &o.threads.to_string()])
        .args(["--prompt-tokens", &o.prompt_tokens.to_string()])
        .args(["--decode-tokens", &o.decode_tokens(s).to_string()])
        .args(["--repeats", &o.repeats.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "{} {} failed ({}): {}",
            python.display(),
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
        .into());
    }
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let v: Value = serde_json::from_str(line)
        .map_err(|e| format!("reference output {line:?} is not JSON: {e}"))?;
    let field = |k: &str| v[k].as_f64().ok_or_else(|| format!("reference output lacks {k}"));
    let speed = Speed {
        prefill_tok_s: field("prefill_tok_s")?,
        decode_tok_s: field("decode_tok_s")?,
        load_s: field("load_s")?,
    };
    Ok((speed, v))
}

// -------------------------------------------------------------------------------------------
// Report
// -------------------------------------------------------------------------------------------

struct Row {
    shape: Shape,
    prefill: Summary,
    decode: Summary,
    bytes_per_token: f64,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn ratio(spread: Option<(f64, f64, f64)>) -> String {
    spread.map_or_else(
        || "n/a".to_owned(),
        |(median, low, high)| format!("{median:.2}x ({low:.2}–{high:.2})"),
    )
}

fn figure(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.1}"))
}

/// Below this many bytes per token the weights stay in the CPU caches and the bandwidth bound
/// says nothing.
const IN_CACHE_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

fn print_table(rows: &[Row], bandwidth: f64) {
    println!();
    println!(
        "| shape | decoder params | prefill tok/s voxloop | transformers | ratio (min–max) \
         | decode tok/s voxloop | transformers | ratio (min–max) | MB read / token | bound tok/s \
         | voxloop / bound |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let bound = bandwidth * 1e9 / r.bytes_per_token;
        let (bound, fraction) = if r.bytes_per_token < IN_CACHE_BYTES {
            ("in cache".to_owned(), "n/a".to_owned())
        } else {
            (format!("{bound:.1}"), format!("{:.0} %", 100.0 * r.decode.ours / bound))
        };
        println!(
            "| {} | {:.1} M | {:.1} | {} | {} | {:.1} | {} | {} | {:.1} | {bound} | {fraction} |",
            r.shape.name,
            decoder_params(&r.shape) as f64 / 1e6,
            r.prefill.ours,
            figure(r.prefill.theirs),
            ratio(r.prefill.ratio),
            r.decode.ours,
            figure(r.decode.theirs),
            ratio(r.decode.ratio),
            r.bytes_per_token / 1e6,
        );
    }
}

fn run(o: &Options) -> BoxResult<()> {
    tch::set_num_threads(o.threads);
    let mode = if o.bench { "benchmark" } else { "smoke run (pass --bench for figures)" };
    println!("speech LLM {mode}: {} threads, f32, CPU {:?}", o.threads, cpu_model());
    println!(
        "load average at start: {}; prompt {} tokens; per side the best of {} runs (after a \
         warm-up) in each of {} rounds; the table: medians over the rounds, ratio min–max",
        load_average(),
        o.prompt_tokens,
        o.repeats,
        o.rounds
    );
    let mut bandwidth = copy_bandwidth(o.bandwidth_bytes, o.bandwidth_tries)?;
    println!(
        "copy bandwidth: {bandwidth:.1} GB/s (read + write, {} MiB buffers, best of {})",
        o.bandwidth_bytes >> 20,
        o.bandwidth_tries
    );
    let python = if o.reference { reference_python() } else { None };
    if o.reference && python.is_none() {
        println!(
            "reference skipped: no Python found at $VOXLOOP_REF_PYTHON or .cache/refenv/bin/python; \
             create it with `python3 -m venv .cache/refenv && .cache/refenv/bin/pip install \
             torch==2.13.0 transformers safetensors`"
        );
    }

    let mut rows = Vec::new();
    for shape in &o.shapes {
        let dir = tempfile::Builder::new().prefix("voxloop-bench-llm-").tempdir()?;
        let start = Instant::now();
        let size = write_checkpoint(shape, dir.path())?;
        let steps = o.decode_tokens(shape);
        println!(
            "\n{}: wrote a {:.1} MB checkpoint in {:.1} s; decode {steps} tokens",
            shape.name,
            size as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        let start = Instant::now();
        let mut model = StepAudio2::load(dir.path(), Device::Cpu, Kind::Float)?;
        let load_s = start.elapsed().as_secs_f64();
        let mut rounds = Vec::with_capacity(o.rounds);
        let mut reference = python.as_deref();
        for round in 1..=o.rounds {
            let speed = time_voxloop(&mut model, load_s, shape, o)?;
            println!(
                "  round {round} voxloop:      load {:.2} s, prefill {:.1} tok/s, decode {:.1} tok/s",
                speed.load_s, speed.prefill_tok_s, speed.decode_tok_s
            );
            rounds.push(Round { ours: speed, theirs: None });
            let Some(python) = reference else { continue };
            match time_reference(python, dir.path(), shape, o) {
                Ok((speed, raw)) => {
                    println!(
                        "  round {round} transformers: load {:.2} s, prefill {:.1} tok/s, decode \
                         {:.1} tok/s (torch {}, transformers {}, attention {}, {} threads)",
                        speed.load_s,
                        speed.prefill_tok_s,
                        speed.decode_tok_s,
                        raw["torch"].as_str().unwrap_or("?"),
                        raw["transformers"].as_str().unwrap_or("?"),
                        raw["attn_implementation"].as_str().unwrap_or("?"),
                        raw["threads"]
                    );
                    if let Some(round) = rounds.last_mut() {
                        round.theirs = Some(speed);
                    }
                }
                Err(e) => {
                    println!("  reference failed, not run again: {e}");
                    reference = None;
                }
            }
        }
        drop(model);
        // Measured again after each shape; the bound uses the best (the least disturbed).
        let again = copy_bandwidth(o.bandwidth_bytes, o.bandwidth_tries)?;
        println!("  copy bandwidth: {again:.1} GB/s");
        bandwidth = bandwidth.max(again);
        let context = o.prompt_tokens + steps / 2;
        rows.push(Row {
            shape: *shape,
            prefill: Summary::of(&rounds, |s| s.prefill_tok_s).ok_or("no voxloop measurement")?,
            decode: Summary::of(&rounds, |s| s.decode_tok_s).ok_or("no voxloop measurement")?,
            bytes_per_token: bytes_per_token(shape, context),
        });
    }
    println!(
        "\nbound: copy bandwidth {bandwidth:.1} GB/s (the best measurement) / bytes per token"
    );
    print_table(&rows, bandwidth);
    println!("\nload average at end: {}", load_average());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Options::parse(&args).and_then(|o| run(&o));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
