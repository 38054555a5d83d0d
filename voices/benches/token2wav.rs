//! token2wav speed: voxloop's flow + HiFT against StepFun's upstream PyTorch code on the same
//! full-size random weights, the same voice and the same speech tokens, in one run.
//!
//! ```text
//! cargo bench -p voxloop-voices --bench token2wav -- [--threads N] [--prompt-tokens N]
//!     [--tokens N] [--repeats N] [--rounds N] [--no-reference] [--weights DIR]
//! ```
//!
//! `scripts/bench/token2wav_reference.py write` builds the flow and HiFT with the upstream
//! classes at the official Step-Audio-2-mini sizes (flow 156 M, HiFT 21 M parameters), fills them
//! with random weights (fixed seeds) and writes `flow.yaml`, `flow.pt`, `hift.pt` (≈ 700 MB, with
//! `torch.save`, as the official release) plus the scenario to a temporary directory: a random
//! voice (`--prompt-tokens` prompt tokens, default 50 = 2 s, their mel, a 192-d speaker
//! embedding), `--tokens` generated speech tokens (default 250 = 10 s of speech) and the first
//! frames of the flow's noise buffer, which voxloop is given too so both sides solve the same ODE.
//! voxloop loads the directory with [`Token2Wav::load`]; the reference (`... time`) loads it as
//! upstream `Token2wav.__init__` does. Both run f32 on the CPU with `--threads` threads (default
//! 2), without autograd, and measure:
//!
//! - offline: all tokens → samples (`Token2Wav::synthesize`; upstream `Token2wav.__call__`);
//! - streaming: 25 + 3 look-ahead token chunks (`Token2Wav::stream` + `push` of 28 tokens, then
//!   25 at a time, then `finish`; upstream `set_stream_cache`, then `stream` per chunk and
//!   `stream(.., last_chunk=True)`), total time and first-chunk latency (from the stream's set-up,
//!   the prompt caches included, until the first chunk's samples are returned). All tokens are
//!   available up front: the latency is token2wav's own, not the LLM's.
//!
//! Real-time factor = seconds / seconds of speech (`tokens / 25`). Each side runs a warm-up on the
//! first 53 tokens, then `--repeats` runs of each mode (default 1); the two sides alternate for
//! `--rounds` rounds (default 2) so that a change in the machine's load hits both. Each round
//! gives one figure per side and measure (its best of the repeats) and their ratio voxloop /
//! upstream (lower is better for voxloop); the table reports each side's median over the rounds
//! and the median ratio with its range over the rounds (min–max).
//! The streaming mels of both sides are compared as a check that they computed the same thing.
//!
//! The Python interpreter is `$VOXLOOP_REF_PYTHON`, else `.cache/refenv/bin/python`. Without one
//! (or with `--no-reference`) voxloop is timed alone, on random full-size weights it creates in
//! memory. `--weights DIR` reuses a directory written by `token2wav_reference.py write` (it is
//! kept). Run without `--bench` (as `cargo test --all-targets` does), it is a smoke run of a few
//! seconds on the tiny parity fixture, one thread, without the reference.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use voxloop_voices::checkpoint::StateDict;
use voxloop_voices::config::{FlowConfig, HiftConfig};
use voxloop_voices::flow::Flow;
use voxloop_voices::hift::Hift;
use voxloop_voices::setup_cache::DEFAULT_SETUP_CACHE;
use voxloop_voices::token2wav::CHUNK_TOKENS;
use voxloop_voices::{Token2Wav, VoiceProfile};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Speech tokens per second.
const TOKEN_RATE: f64 = 25.0;
/// Tokens of the warm-up runs (two streaming chunks).
const WARMUP_TOKENS: usize = 53;
/// Look-ahead tokens of a streaming chunk.
const LOOKAHEAD: usize = 3;

const USAGE: &str = "usage: cargo bench -p voxloop-voices --bench token2wav -- [--threads N] \
                     [--prompt-tokens N] [--tokens N] [--repeats N] [--rounds N] \
                     [--no-reference] [--weights DIR]";

#[derive(Debug)]
struct Options {
    /// `--bench` was passed (by `cargo bench`): the full measurement.
    bench: bool,
    threads: i32,
    prompt_tokens: usize,
    tokens: usize,
    repeats: usize,
    rounds: usize,
    reference: bool,
    weights: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> BoxResult<Self> {
        let bench = args.iter().any(|a| a == "--bench");
        let mut options = Self {
            bench,
            // the smoke run's tiny ops would mostly wait on each other with 2 threads on a busy
            // machine
            threads: if bench { 2 } else { 1 },
            prompt_tokens: 50,
            tokens: 250,
            repeats: 1,
            rounds: if bench { 2 } else { 1 },
            reference: bench,
            weights: None,
        };
        if !bench {
            // `cargo test` may pass test-harness flags or a name filter: ignore them.
            return Ok(options);
        }
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--bench" => {}
                "--threads" => options.threads = value()?.parse()?,
                "--prompt-tokens" => options.prompt_tokens = value()?.parse()?,
                "--tokens" => options.tokens = value()?.parse()?,
                "--repeats" => options.repeats = value()?.parse()?,
                "--rounds" => options.rounds = value()?.parse()?,
                "--no-reference" => options.reference = false,
                "--weights" => options.weights = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
            }
        }
        if options.threads < 1
            || options.prompt_tokens < 1
            || options.tokens <= CHUNK_TOKENS + LOOKAHEAD
            || options.repeats < 1
            || options.rounds < 1
        {
            return Err(format!(
                "--threads, --prompt-tokens, --repeats and --rounds must be >= 1, --tokens > \
                 {}\n{USAGE}",
                CHUNK_TOKENS + LOOKAHEAD
            )
            .into());
        }
        Ok(options)
    }
}

// -------------------------------------------------------------------------------------------
// Weights and the scenario
// -------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/token2wav")
}

fn reference_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("VOXLOOP_REF_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = workspace_root().join(".cache/refenv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs the reference script; returns the JSON object on its last stdout line.
fn reference(python: &Path, args: &[&str]) -> BoxResult<Value> {
    let script = workspace_root().join("scripts/bench/token2wav_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "{} {} {} failed ({}): {}",
            python.display(),
            script.display(),
            args.first().copied().unwrap_or_default(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
        .into());
    }
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    Ok(serde_json::from_str(line)
        .map_err(|e| format!("reference output {line:?} is not JSON: {e}"))?)
}

/// What both sides render.
struct Scenario {
    voice: VoiceProfile,
    tokens: Vec<i64>,
    noise: Option<Tensor>,
}

fn ints(t: &Tensor) -> BoxResult<Vec<i64>> {
    Ok(Vec::<i64>::try_from(t.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?)?)
}

fn floats(t: &Tensor) -> BoxResult<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?)
}

/// Reads `inputs.safetensors` as written by the reference script (or the fixture script).
fn read_scenario(path: &Path) -> BoxResult<Scenario> {
    let inputs: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    let get = |name: &str| {
        inputs.get(name).ok_or_else(|| format!("{} lacks tensor {name}", path.display()))
    };
    let mel = floats(get("prompt_mel")?)?;
    let rows = mel.chunks(80).map(<[f32]>::to_vec).collect();
    let voice =
        VoiceProfile::new("bench", ints(get("prompt_tokens")?)?, rows, floats(get("spk_emb")?)?)?;
    let noise = Some(get("flow_noise")?.shallow_clone());
    Ok(Scenario { voice, tokens: ints(get("tokens")?)?, noise })
}

/// A random scenario (no reference): uniform tokens, a log-mel-like prompt, a Gaussian x-vector.
fn random_scenario(o: &Options) -> BoxResult<Scenario> {
    tch::manual_seed(2024);
    let opts = (Kind::Int64, Device::Cpu);
    let prompt = ints(&Tensor::f_randint(6561, [o.prompt_tokens as i64], opts)?)?;
    let tokens = ints(&Tensor::f_randint(6561, [o.tokens as i64], opts)?)?;
    let mel = Tensor::f_randn([2 * o.prompt_tokens as i64, 80], (Kind::Float, Device::Cpu))?
        .f_mul_scalar(1.5)?
        .f_add_scalar(-5.0)?;
    let rows = floats(&mel)?.chunks(80).map(<[f32]>::to_vec).collect();
    let spk = floats(&Tensor::f_randn([192], (Kind::Float, Device::Cpu))?)?;
    Ok(Scenario { voice: VoiceProfile::new("bench", prompt, rows, spk)?, tokens, noise: None })
}

/// A tensor drawn as the reference script's `randomize` draws it, from its name and shape.
fn random_tensor(name: &str, shape: &[i64]) -> BoxResult<Tensor> {
    let t = Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?;
    Ok(if name.ends_with("alpha") {
        t.f_mul_scalar(0.2)?.f_add_scalar(1.0)?.f_abs()?
    } else if shape.len() >= 2 {
        let fan_in: i64 = shape[1..].iter().product();
        t.f_mul_scalar(1.0 / (fan_in.max(1) as f64).sqrt())?
    } else if name.ends_with("weight") {
        t.f_mul_scalar(0.1)?.f_add_scalar(1.0)?
    } else {
        t.f_mul_scalar(0.1)?
    })
}

/// Builds a module from random weights without knowing its parameters up front: every tensor
/// the loader asks for is created, with the shape its error names, and the build is retried.
fn with_random_weights<T>(
    what: &str,
    mut build: impl FnMut(&mut StateDict) -> voxloop_voices::Result<T>,
) -> BoxResult<T> {
    use voxloop_voices::Error;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    loop {
        let named = tensors.iter().map(|(k, v)| (k.clone(), v.shallow_clone()));
        let mut sd = StateDict::from_tensors(what, named, Device::Cpu);
        match build(&mut sd) {
            Ok(module) => return Ok(module),
            // an empty placeholder: the next try reports the shape it must have
            Err(Error::MissingTensor { name, .. }) => {
                tensors.insert(name, Tensor::f_zeros([0], (Kind::Float, Device::Cpu))?);
            }
            Err(Error::TensorShape { name, expected, .. }) => {
                let t = random_tensor(&name, &expected)?;
                tensors.insert(name, t);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The official sizes (Step-Audio-2-mini's `token2wav/flow.yaml`, read by stepfun-ai/Step-Audio2
/// `token2wav.py`) on the fixture's `flow.yaml`.
fn official_flow_config() -> BoxResult<FlowConfig> {
    let mut c = FlowConfig::from_file(&fixture_dir().join("flow.yaml"))?;
    c.input_size = 512;
    let e = &mut c.encoder;
    (e.input_size, e.output_size, e.attention_heads, e.linear_units) = (512, 512, 8, 2048);
    (e.num_blocks, e.num_up_blocks) = (6, 4);
    let d = &mut c.decoder.estimator;
    (d.depth, d.num_heads, d.head_dim, d.hidden_size) = (16, 8, 64, 512);
    Ok(c)
}

fn random_model() -> BoxResult<Token2Wav> {
    tch::manual_seed(7);
    let config = official_flow_config()?;
    let flow = with_random_weights("random flow", |sd| {
        Flow::from_state_dict(config.clone(), sd, Device::Cpu)
    })?;
    let hift = with_random_weights("random hift", |sd| {
        Hift::from_state_dict(HiftConfig::default(), sd, Device::Cpu)
    })?;
    Ok(Token2Wav::from_parts(flow, hift))
}

// -------------------------------------------------------------------------------------------
// Measurements
// -------------------------------------------------------------------------------------------

/// Seconds of one side's best runs.
#[derive(Debug, Clone, Copy)]
struct Timing {
    offline_s: f64,
    stream_s: f64,
    first_chunk_s: f64,
    /// voxloop only (NaN for upstream): first-chunk latency of a stream in a voice whose setup
    /// is kept ([`voxloop_voices::setup_cache`]); upstream sets every stream up anew.
    kept_first_chunk_s: f64,
}

/// The median of a non-empty list and its range, `(median, min, max)`; the median of an even
/// count is the mean of the middle two. NaNs (upstream's kept-setup latency) are left out.
fn spread(xs: impl IntoIterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = xs.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let (first, last) = (*v.first()?, *v.last()?);
    Some(((v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0, first, last))
}

impl Timing {
    fn best(self, other: Option<Timing>) -> Timing {
        match other {
            None => self,
            Some(o) => Timing {
                offline_s: self.offline_s.min(o.offline_s),
                stream_s: self.stream_s.min(o.stream_s),
                first_chunk_s: self.first_chunk_s.min(o.first_chunk_s),
                kept_first_chunk_s: self.kept_first_chunk_s.min(o.kept_first_chunk_s),
            },
        }
    }
}

/// One offline synthesis: (seconds, samples).
fn offline(t2w: &Token2Wav, voice: &VoiceProfile, tokens: &[i64]) -> BoxResult<(f64, usize)> {
    let start = Instant::now();
    let wav = t2w.synthesize(tokens, voice)?;
    Ok((start.elapsed().as_secs_f64(), wav.len()))
}

/// One stream as upstream's client feeds it (28 tokens, then 25 at a time, then the rest as
/// the last chunk): (total seconds, first-chunk seconds, samples, the chunks' mels).
fn streaming(
    t2w: &Token2Wav,
    voice: &VoiceProfile,
    tokens: &[i64],
) -> BoxResult<(f64, f64, usize, Vec<Tensor>)> {
    let start = Instant::now();
    let mut first = None;
    let mut samples = 0;
    let mut mels = Vec::new();
    let mut stream = t2w.stream(voice)?;
    let head = tokens.len().min(CHUNK_TOKENS + LOOKAHEAD);
    let pieces = std::iter::once(&tokens[..head]).chain(tokens[head..].chunks(CHUNK_TOKENS));
    for piece in pieces.map(Some).chain([None]) {
        let wav = match piece {
            Some(piece) => stream.push(piece)?,
            None => stream.finish()?,
        };
        if !wav.is_empty() {
            first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            samples += wav.len();
            if let Some(mel) = stream.last_mel() {
                mels.push(mel.shallow_clone());
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    Ok((total, first.unwrap_or(total), samples, mels))
}

/// A warm-up, then `repeats` runs of each mode; the best of each, and the first run's mels.
fn time_voxloop(
    t2w: &Token2Wav,
    s: &Scenario,
    repeats: usize,
) -> BoxResult<(Timing, usize, usize, Vec<Tensor>)> {
    let warm = &s.tokens[..s.tokens.len().min(WARMUP_TOKENS)];
    // The comparison does upstream's work: every stream computes its setup.
    t2w.set_setup_cache_capacity(0);
    offline(t2w, &s.voice, warm)?;
    streaming(t2w, &s.voice, warm)?;
    let mut best: Option<Timing> = None;
    let (mut offline_samples, mut stream_samples, mut first_mels) = (0, 0, Vec::new());
    for i in 0..repeats {
        let (offline_s, n) = offline(t2w, &s.voice, &s.tokens)?;
        let (stream_s, first_chunk_s, m, mels) = streaming(t2w, &s.voice, &s.tokens)?;
        // Then voxloop's default: the second stream in the voice starts from the kept setup.
        t2w.set_setup_cache_capacity(DEFAULT_SETUP_CACHE);
        streaming(t2w, &s.voice, warm)?;
        let (_, kept_first_chunk_s, _, _) = streaming(t2w, &s.voice, warm)?;
        t2w.set_setup_cache_capacity(0);
        (offline_samples, stream_samples) = (n, m);
        if i == 0 {
            first_mels = mels;
        }
        let timing = Timing { offline_s, stream_s, first_chunk_s, kept_first_chunk_s };
        best = Some(timing.best(best));
    }
    let best = best.ok_or("no voxloop run")?;
    Ok((best, offline_samples, stream_samples, first_mels))
}

fn time_reference(
    python: &Path,
    dir: &Path,
    o: &Options,
    mel_out: Option<&Path>,
) -> BoxResult<(Timing, Value)> {
    let (threads, repeats) = (o.threads.to_string(), o.repeats.to_string());
    let dir = dir.to_string_lossy();
    let mut args = vec!["time", &*dir, "--threads", &threads, "--repeats", &repeats];
    let mel_out = mel_out.map(|p| p.to_string_lossy().into_owned());
    if let Some(path) = &mel_out {
        args.extend(["--mel-out", path]);
    }
    let v = reference(python, &args)?;
    let field = |k: &str| v[k].as_f64().ok_or_else(|| format!("reference output lacks {k}"));
    let timing = Timing {
        offline_s: field("offline_s")?,
        stream_s: field("stream_s")?,
        first_chunk_s: field("first_chunk_s")?,
        kept_first_chunk_s: f64::NAN,
    };
    Ok((timing, v))
}

/// max |voxloop − upstream| over the streaming mels, and max |upstream|.
fn compare_mels(ours: &[Tensor], path: &Path) -> BoxResult<(f64, f64)> {
    let theirs = Tensor::read_safetensors(path)?
        .into_iter()
        .find(|(name, _)| name == "stream_mel")
        .map(|(_, t)| t)
        .ok_or_else(|| format!("{} lacks stream_mel", path.display()))?;
    let ours = Tensor::f_cat(ours, 2)?;
    if ours.size() != theirs.size() {
        return Err(format!(
            "streaming mels differ in shape: voxloop {:?}, upstream {:?}",
            ours.size(),
            theirs.size()
        )
        .into());
    }
    let diff = ours.f_sub(&theirs)?.f_abs()?.f_max()?.f_double_value(&[])?;
    Ok((diff, theirs.f_abs()?.f_max()?.f_double_value(&[])?))
}

// -------------------------------------------------------------------------------------------
// Report
// -------------------------------------------------------------------------------------------

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

/// One round's figures: voxloop's and, when the reference ran, upstream's.
type Round = (Timing, Option<Timing>);

fn print_table(rounds: &[Round], audio_s: f64) {
    type Row = (&'static str, fn(&Timing) -> f64, f64);
    let rows: [Row; 4] = [
        ("offline RTF", |t| t.offline_s, audio_s),
        ("streaming RTF", |t| t.stream_s, audio_s),
        ("first-chunk latency (s)", |t| t.first_chunk_s, 1.0),
        ("first-chunk latency, voice setup kept (s)", |t| t.kept_first_chunk_s, 1.0),
    ];
    println!();
    println!("| measure | voxloop | upstream | voxloop / upstream (min–max) |");
    println!("|---|---|---|---|");
    for (name, get, per) in rows {
        let median = |xs: Vec<f64>| spread(xs).map(|(m, _, _)| m / per);
        let v = median(rounds.iter().map(|(ours, _)| get(ours)).collect());
        let u = median(rounds.iter().filter_map(|(_, t)| t.as_ref().map(get)).collect());
        let ratios = rounds.iter().filter_map(|(ours, t)| Some(get(ours) / get(t.as_ref()?)));
        let show = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.3}"));
        let r = spread(ratios).map_or_else(
            || "n/a".to_owned(),
            |(m, low, high)| format!("**{m:.2}×** ({low:.2}–{high:.2})"),
        );
        println!("| {name} | {} | {} | {r} |", show(v), show(u));
    }
}

fn run(o: &Options) -> BoxResult<()> {
    tch::set_num_threads(o.threads);
    let _guard = tch::no_grad_guard();
    let mode = if o.bench { "benchmark" } else { "smoke run (pass --bench for figures)" };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("token2wav {mode}: {} threads, f32, CPU {:?} ({cores} cores)", o.threads, cpu_model());
    println!("load average at start: {}", load_average());

    let python = if o.reference { reference_python() } else { None };
    if o.reference && python.is_none() {
        println!(
            "reference skipped: no Python at $VOXLOOP_REF_PYTHON or .cache/refenv/bin/python; \
             create it with `python3 -m venv .cache/refenv && .cache/refenv/bin/pip install \
             torch==2.13.0 token2wav-cosyvoice-stepaudio2 einops hyperpyyaml safetensors`"
        );
    }
    let temp = tempfile::Builder::new().prefix("voxloop-bench-token2wav-").tempdir()?;
    let dir = match (&o.weights, o.bench, &python) {
        (Some(dir), _, _) => Some(dir.clone()),
        (None, false, _) => Some(fixture_dir()),
        (None, true, Some(python)) => {
            let start = Instant::now();
            let (p, n) = (o.prompt_tokens.to_string(), o.tokens.to_string());
            let dir = temp.path().to_string_lossy().into_owned();
            let v = reference(python, &["write", &dir, "--prompt-tokens", &p, "--tokens", &n])?;
            println!(
                "wrote full-size random weights with the upstream classes ({} + {} parameters, \
                 {:.0} MB) in {:.1} s",
                v["flow_params"],
                v["hift_params"],
                v["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                start.elapsed().as_secs_f64()
            );
            Some(temp.path().to_path_buf())
        }
        (None, true, None) => None,
    };

    let start = Instant::now();
    let (mut t2w, scenario) = match &dir {
        Some(dir) => {
            (Token2Wav::load(dir, Device::Cpu)?, read_scenario(&dir.join("inputs.safetensors"))?)
        }
        None => (random_model()?, random_scenario(o)?),
    };
    let load_s = start.elapsed().as_secs_f64();
    if let Some(noise) = &scenario.noise {
        t2w.flow_mut().set_noise(noise)?;
    }
    let audio_s = scenario.tokens.len() as f64 / TOKEN_RATE;
    println!(
        "voxloop loaded {} in {load_s:.1} s; voice: {} prompt tokens; rendering {} tokens = \
         {audio_s:.1} s of speech; per side a warm-up, then the best of {} runs per mode in each \
         of {} rounds; the table: medians over the rounds, ratio min–max",
        dir.as_ref().map_or("random in-memory weights".to_owned(), |d| d.display().to_string()),
        scenario.voice.prompt_tokens.len(),
        scenario.tokens.len(),
        o.repeats,
        o.rounds
    );

    let mel_out = temp.path().join("reference_stream_mel.safetensors");
    let mut rounds: Vec<Round> = Vec::with_capacity(o.rounds);
    let mut reference_dir = python.as_deref().zip(dir.as_deref()).filter(|_| o.bench);
    let mut our_mels = Vec::new();
    for round in 1..=o.rounds {
        let (t, offline_samples, stream_samples, mels) = time_voxloop(&t2w, &scenario, o.repeats)?;
        println!(
            "  round {round} voxloop:  offline {:.2} s, streaming {:.2} s, first chunk {:.2} s \
             ({:.2} s with the voice's setup kept; {offline_samples} / {stream_samples} samples), \
             load average {}",
            t.offline_s,
            t.stream_s,
            t.first_chunk_s,
            t.kept_first_chunk_s,
            load_average()
        );
        if round == 1 {
            our_mels = mels;
        }
        rounds.push((t, None));
        let Some((python, dir)) = reference_dir else { continue };
        let out = (round == 1).then_some(mel_out.as_path());
        match time_reference(python, dir, o, out) {
            Ok((t, raw)) => {
                println!(
                    "  round {round} upstream: offline {:.2} s, streaming {:.2} s, first chunk \
                     {:.2} s ({} / {} samples; torch {}, {} threads, load {:.1} s), load \
                     average {}",
                    t.offline_s,
                    t.stream_s,
                    t.first_chunk_s,
                    raw["offline_samples"],
                    raw["stream_samples"],
                    raw["torch"].as_str().unwrap_or("?"),
                    raw["threads"],
                    raw["load_s"].as_f64().unwrap_or(f64::NAN),
                    load_average()
                );
                if let Some(round) = rounds.last_mut() {
                    round.1 = Some(t);
                }
                if round == 1 {
                    let (diff, scale) = compare_mels(&our_mels, &mel_out)?;
                    println!(
                        "  same computation: max |voxloop − upstream| over the streaming mels \
                         {diff:.2e} (max |mel| {scale:.2})"
                    );
                }
            }
            Err(e) => {
                println!("  reference failed, not run again: {e}");
                reference_dir = None;
            }
        }
    }
    print_table(&rounds, audio_s);
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
