//! Grammar-constrained tool calls at Step-Audio 2's full vocabulary: what llguidance costs.
//!
//! ```text
//! cargo bench -p voxloop-core --bench constraint -- [--repeats N] [--decode-ms MS] [--threads N]
//! ```
//!
//! On the full-size tokenizer (core/tests/fixtures/tokenizer_full/, 158258 ids; logits of the
//! real model's 158720 rows) it measures:
//!
//! - **build**: the grammar engine's view of the vocabulary (once per tokenizer), then the call
//!   grammar of 1, 5 and 20 realistic tools (`ToolCallGrammar::with_tools`; the median of a few
//!   builds), and `ToolCallGrammar::new` (both) for the record;
//! - **mask**: for each tool count, real calls (`<tool_call>function\n{name}\n{json}</tool_call>`,
//!   tokenized with the tokenizer) are fed one id at a time through a fresh
//!   `ToolCallConstraint` (`ToolChoice::Auto`), as the sampler does: each `LogitsMask::apply`
//!   (feed the new id, compute llguidance's mask, write it into the logits tensor) is timed.
//!   The steps inside a call (from the id after `<tool_call>` up to the mask that allows
//!   `</tool_call>`) give p50 / p99 / max; the first pass over the calls (llguidance's lexer
//!   caches still cold) is reported apart from the `--repeats` passes after it.
//!
//! Before each step the logits are zeroed with a libtorch op, as a forward pass leaves them:
//! with more than one libtorch thread the intra-op pool is awake then, and on a machine whose
//! cores are taken by other work its threads (and this one) wait for the scheduler, which shows
//! in the p99. `--threads 1` takes the pool out of the measurement.
//!
//! The mask's p99 is compared with one decode step of the Qwen2.5-0.5B-shaped decoder,
//! `--decode-ms` (default 78.1 ms: 12.8 tok/s, `cargo bench -p voxloop-core --bench llm --
//! --shape qwen05` in BENCHMARKS.md; pass the figure of a run on the same machine). Target:
//! p99 ≤ 0.5 ms and ≤ 5 % of a step.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a smoke run: one tool, one
//! pass, one build.

use std::process::ExitCode;
use std::time::Instant;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use voxloop_core::generate::LogitsMask;
use voxloop_core::protocol::{ToolCallGrammar, ToolChoice};
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::tool::ToolDefinition;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Rows of Step-Audio 2's embedding table and LM head (the logits' length).
const MODEL_VOCAB: i64 = 158720;
/// Mask budget per generated token.
const TARGET_P99_MS: f64 = 0.5;
const TARGET_SHARE: f64 = 0.05;

/// What to run; see the module documentation.
struct Options {
    bench: bool,
    /// Warm passes over the calls per tool count.
    repeats: usize,
    /// Grammar builds per tool count (the median is reported).
    builds: usize,
    /// One decode step of the 0.5B-shape decoder, in ms.
    decode_ms: f64,
    /// libtorch intra-op threads (`None`: libtorch's default).
    threads: Option<i32>,
    tool_counts: Vec<usize>,
}

fn parse_options(args: &[String]) -> BoxResult<Options> {
    let bench = args.iter().any(|a| a == "--bench");
    let mut repeats = if bench { 20 } else { 1 };
    let mut decode_ms = 1000.0 / 12.8;
    let mut threads = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--repeats" => repeats = value()?.parse()?,
            "--decode-ms" => decode_ms = value()?.parse()?,
            "--threads" => threads = Some(value()?.parse()?),
            other if other.starts_with("--") => {
                return Err(format!("unknown option {other}").into())
            }
            // A test-name filter (`cargo test --all-targets NAME` passes it to every target).
            _ => {}
        }
    }
    let (builds, tool_counts) = if bench { (5, vec![1, 5, 20]) } else { (1, vec![1]) };
    Ok(Options { bench, repeats, builds, decode_ms, threads, tool_counts })
}

fn tool(name: &str, description: &str, parameters: Value) -> ToolDefinition {
    ToolDefinition { name: name.to_owned(), description: description.to_owned(), parameters }
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// Twenty tools of a voice assistant, in the order the tool counts take them.
fn tools() -> Vec<ToolDefinition> {
    vec![
        tool(
            "get_weather",
            "Current weather and a three-day forecast.",
            object(
                json!({
                    "location": string("city in lower-case pinyin or English, e.g. chengdu"),
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 3}
                }),
                &["location"],
            ),
        ),
        tool(
            "web_search",
            "搜索工具：返回网页摘要。",
            object(
                json!({
                    "query": string("搜索关键词"),
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 10}
                }),
                &["query"],
            ),
        ),
        tool(
            "create_calendar_event",
            "Add an event to the user's calendar.",
            object(
                json!({
                    "title": string("short title"),
                    "start": {"type": "string", "format": "date-time"},
                    "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
                    "attendees": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
                    "reminder": object(json!({
                        "minutes_before": {"type": "integer", "minimum": 0},
                        "method": {"type": "string", "enum": ["popup", "email", "sound"]}
                    }), &["minutes_before"]),
                    "private": {"type": "boolean"}
                }),
                &["title", "start"],
            ),
        ),
        tool(
            "send_message",
            "Send a text message to a contact.",
            object(
                json!({
                    "contact": string("name as in the address book"),
                    "text": string("the message"),
                    "channel": {"type": "string", "enum": ["sms", "wechat", "email"]}
                }),
                &["contact", "text"],
            ),
        ),
        tool(
            "timbre_rag",
            "切换音色：根据描述检索一个音色。",
            object(
                json!({
                    "query": string("音色描述，例如“海绵宝宝的音色”")
                }),
                &["query"],
            ),
        ),
        tool("get_date_time", "The current date and time.", object(json!({}), &[])),
        tool(
            "audio_search",
            "Find sounds in the local library by description.",
            object(
                json!({
                    "query": {"type": "string"},
                    "kind": {"type": "string", "enum": ["sound", "music", "speech", "timbre"]},
                    "k": {"type": "integer", "minimum": 1, "maximum": 20},
                    "max_seconds": {"type": "number", "minimum": 0}
                }),
                &["query"],
            ),
        ),
        tool(
            "calculate",
            "Evaluate an arithmetic expression.",
            object(
                json!({
                    "expression": string("e.g. (9700**2 + 654000) * 3.14")
                }),
                &["expression"],
            ),
        ),
        tool(
            "set_timer",
            "Start a countdown timer.",
            object(
                json!({
                    "seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
                    "label": {"type": "string"}
                }),
                &["seconds"],
            ),
        ),
        tool(
            "set_alarm",
            "Set an alarm.",
            object(
                json!({
                    "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                    "repeat": {"type": "array", "items": {"type": "string", "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}}
                }),
                &["time"],
            ),
        ),
        tool(
            "play_music",
            "Play music by artist, title or mood.",
            object(
                json!({
                    "query": {"type": "string"},
                    "shuffle": {"type": "boolean"},
                    "volume": {"type": "number", "minimum": 0, "maximum": 1}
                }),
                &["query"],
            ),
        ),
        tool(
            "translate_text",
            "Translate text between languages.",
            object(
                json!({
                    "text": {"type": "string"},
                    "source": {"type": "string", "enum": ["auto", "zh", "en", "ja", "ko", "fr", "de", "es"]},
                    "target": {"type": "string", "enum": ["zh", "en", "ja", "ko", "fr", "de", "es"]}
                }),
                &["text", "target"],
            ),
        ),
        tool(
            "get_stock_quote",
            "Latest quote of a stock or index.",
            object(
                json!({
                    "symbol": string("ticker, e.g. 000001.SS"),
                    "fields": {"type": "array", "items": {"type": "string", "enum": ["open", "close", "high", "low", "volume"]}}
                }),
                &["symbol"],
            ),
        ),
        tool(
            "get_exchange_rate",
            "Exchange rate between two currencies.",
            object(
                json!({
                    "from": {"type": "string", "minLength": 3, "maxLength": 3},
                    "to": {"type": "string", "minLength": 3, "maxLength": 3},
                    "amount": {"type": "number"}
                }),
                &["from", "to"],
            ),
        ),
        tool(
            "navigate_to",
            "Directions to a place.",
            object(
                json!({
                    "destination": {"type": "string"},
                    "mode": {"type": "string", "enum": ["driving", "walking", "transit", "cycling"]},
                    "avoid": {"type": "array", "items": {"type": "string", "enum": ["tolls", "highways", "ferries"]}}
                }),
                &["destination"],
            ),
        ),
        tool(
            "find_restaurants",
            "Restaurants near a place.",
            object(
                json!({
                    "near": {"type": "string"},
                    "cuisine": {"type": "string"},
                    "price_level": {"type": "integer", "minimum": 1, "maximum": 4},
                    "open_now": {"type": "boolean"}
                }),
                &["near"],
            ),
        ),
        tool(
            "control_light",
            "Switch or dim a smart light.",
            object(
                json!({
                    "room": {"type": "string"},
                    "on": {"type": "boolean"},
                    "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
                    "color": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}
                }),
                &["room"],
            ),
        ),
        tool(
            "set_thermostat",
            "Set the target temperature.",
            object(
                json!({
                    "celsius": {"type": "number", "minimum": 10, "maximum": 30},
                    "mode": {"type": "string", "enum": ["heat", "cool", "auto", "off"]}
                }),
                &["celsius"],
            ),
        ),
        tool(
            "get_news",
            "Top news headlines.",
            object(
                json!({
                    "topic": {"type": "string", "enum": ["world", "business", "technology", "sports", "science"]},
                    "language": {"type": "string", "enum": ["zh", "en"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 10}
                }),
                &[],
            ),
        ),
        tool(
            "take_note",
            "Save a note.",
            object(
                json!({
                    "title": {"type": "string"},
                    "body": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}}
                }),
                &["body"],
            ),
        ),
    ]
}

/// Calls as the model writes them: (index of the tool, body after `<tool_call>`).
fn calls() -> Vec<(usize, String)> {
    vec![
        (0, "function\nget_weather\n{\"location\": \"shanghai\", \"unit\": \"celsius\", \"days\": 3}".to_owned()),
        (0, "function\nget_weather\n{\"location\": \"san francisco\"}".to_owned()),
        (1, "function\nweb_search\n{\"query\": \"上证指数 今天 开盘价\", \"max_results\": 5}".to_owned()),
        (2, "function\ncreate_calendar_event\n{\"title\": \"Team sync with the audio group\", \
             \"start\": \"2025-08-29T10:00:00+08:00\", \"duration_minutes\": 45, \"attendees\": \
             [\"li.wei@example.com\", \"anna.schmidt@example.com\"], \"reminder\": \
             {\"minutes_before\": 10, \"method\": \"popup\"}, \"private\": false}"
            .to_owned()),
        (3, "function\nsend_message\n{\"contact\": \"妈妈\", \"text\": \"我今天晚上七点左右到家，\
             路上有点堵车，你们先吃饭吧，不用等我。明天早上我陪你去医院复查。\", \"channel\": \"wechat\"}"
            .to_owned()),
        (4, "function\ntimbre_rag\n{\"query\": \"海绵宝宝的音色\"}".to_owned()),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

/// Milliseconds of each `apply` inside the calls, over one pass through `calls` with a fresh
/// constraint per call. Checks that every fed id was allowed by the mask before it.
fn mask_pass(
    grammar: &ToolCallGrammar,
    tokenized: &[Vec<i64>],
    logits: &mut Tensor,
) -> BoxResult<Vec<f64>> {
    let mut times = Vec::new();
    for ids in tokenized {
        let mut constraint = grammar.constraint(ToolChoice::Auto)?;
        for step in 0..ids.len() {
            let _ = logits.f_zero_()?;
            let start = Instant::now();
            constraint.apply(logits, &ids[..step])?;
            let elapsed = start.elapsed().as_secs_f64() * 1e3;
            // Steps 1 ..= len - 1 run inside the call (`<tool_call>` fed, `</tool_call>` not yet).
            if step >= 1 {
                times.push(elapsed);
            }
            if logits.f_double_value(&[ids[step]])? == f64::NEG_INFINITY {
                return Err(format!("the mask forbids id {} at step {step}", ids[step]).into());
            }
        }
        constraint.apply(logits, ids)?;
        if constraint.completed_calls() != 1 {
            return Err("the call did not complete".into());
        }
    }
    Ok(times)
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

impl Stats {
    fn of(mut times: Vec<f64>) -> Stats {
        times.sort_by(f64::total_cmp);
        Stats {
            p50: percentile(&times, 50.0),
            p99: percentile(&times, 99.0),
            max: times.last().copied().unwrap_or(f64::NAN),
            n: times.len(),
        }
    }
}

fn run(o: &Options) -> BoxResult<()> {
    let mode = if o.bench { "benchmark" } else { "smoke run (pass --bench for figures)" };
    if let Some(threads) = o.threads {
        tch::set_num_threads(threads);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer_full/tokenizer.json");
    let start = Instant::now();
    let tokenizer = StepTokenizer::from_file(&path)?;
    println!(
        "constrained decoding {mode}: {} ids, logits of {MODEL_VOCAB}, libtorch threads {}; \
         tokenizer loaded in {:.2} s",
        tokenizer.vocab_size(),
        tch::get_num_threads(),
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let base = ToolCallGrammar::new(&tokenizer, &[])?;
    println!("vocabulary view (once per tokenizer): {:.0} ms", start.elapsed().as_secs_f64() * 1e3);

    let all_tools = tools();
    let all_calls = calls();
    let mut logits = Tensor::zeros([MODEL_VOCAB], (Kind::Float, Device::Cpu));
    let mut worst_p99 = 0.0f64;
    let mut worst_cold = 0.0f64;
    println!(
        "\n| tools | grammar build, ms (median of {}) | new() incl. vocabulary view, ms | calls | \
         mask steps | cold pass p50 / p99 / max, ms | warm p50 / p99 / max, ms | warm p99 / decode step |",
        o.builds
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &o.tool_counts {
        let declared = &all_tools[..n];
        let mut builds = Vec::with_capacity(o.builds);
        let mut grammar = None;
        for _ in 0..o.builds {
            let start = Instant::now();
            grammar = Some(base.with_tools(declared)?);
            builds.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let grammar = grammar.ok_or("no build")?;
        let start = Instant::now();
        drop(ToolCallGrammar::new(&tokenizer, declared)?);
        let full_new = start.elapsed().as_secs_f64() * 1e3;

        let tokenized = all_calls
            .iter()
            .filter(|(tool, _)| *tool < n)
            .map(|(_, body)| tokenizer.encode_trusted(&format!("<tool_call>{body}</tool_call>")))
            .collect::<voxloop_core::Result<Vec<_>>>()?;
        let cold = Stats::of(mask_pass(&grammar, &tokenized, &mut logits)?);
        let mut warm = Vec::new();
        for _ in 0..o.repeats {
            warm.extend(mask_pass(&grammar, &tokenized, &mut logits)?);
        }
        let warm = Stats::of(warm);
        worst_p99 = worst_p99.max(warm.p99);
        worst_cold = worst_cold.max(cold.p99);
        println!(
            "| {n} | {:.1} | {full_new:.0} | {} | {} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.2} % |",
            median(&mut builds),
            tokenized.len(),
            warm.n,
            cold.p50,
            cold.p99,
            cold.max,
            warm.p50,
            warm.p99,
            warm.max,
            100.0 * warm.p99 / o.decode_ms
        );
    }
    let share = worst_p99 / o.decode_ms;
    let verdict = match (o.bench, worst_p99 <= TARGET_P99_MS && share <= TARGET_SHARE) {
        (false, _) => "not judged in a smoke run",
        (true, true) => "met",
        (true, false) => "MISSED",
    };
    println!(
        "\nworst warm mask p99 {worst_p99:.3} ms = {:.2} % of a {:.1} ms decode step; target \
         (p99 ≤ {TARGET_P99_MS} ms and ≤ {:.0} %): {verdict}; worst p99 of a cold first pass \
         {worst_cold:.3} ms",
        100.0 * share,
        o.decode_ms,
        100.0 * TARGET_SHARE
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = parse_options(&args).and_then(|o| run(&o)) {
        eprintln!("constraint bench: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
