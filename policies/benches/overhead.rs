//! # The overhead of the full policy stack per tool call
//!
//! A trivial in-memory tool (`echo`) is called on a current-thread tokio runtime, once
//! through its bare `ToolService` and once through every policy layer (output cap, access
//! lists, a domain guard, approval with an approver that answers at once, a shedding
//! concurrency limit, a token bucket with room to spare, retry and timeout). Neither path
//! fails, waits or retries, so the difference is what the layers cost on the happy path.
//!
//! Each call is timed on its own (`ready` + `call` + await); the two paths alternate in
//! rounds so that drift hits both alike. Prints p50, p99, p99.9, the maximum and the mean for
//! both, the overhead at p50 and p99, and the tail: how many calls took over 10 µs and what
//! share of the total time they account for (a few calls preempted by the scheduler or
//! caught in a page fault of the allocator are enough to lift the mean above p99).
//!
//! ```sh
//! cargo bench -p voxloop-policies --bench overhead          # full run (release)
//! cargo bench -p voxloop-policies --bench overhead -- 20000 # iterations per path
//! ```
//!
//! Without `--bench` (as under `cargo test --all-targets`) it makes a few hundred calls and
//! exits: a smoke test that the stack builds and answers.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use tower::{Service, ServiceExt};
use voxloop_core::tool::{BoxToolService, Tool, ToolCall, ToolService};
use voxloop_policies::{Approval, Approver, Policies, PolicyConfig};

/// Echoes its URL argument.
struct Echo;

#[derive(Deserialize, JsonSchema)]
struct EchoArgs {
    /// The page to echo.
    url: String,
}

#[async_trait::async_trait]
impl Tool for Echo {
    const NAME: &'static str = "echo";
    type Args = EchoArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Echoes the URL.".into()
    }

    async fn call(&self, args: EchoArgs) -> Result<String, Self::Error> {
        Ok(args.url)
    }
}

/// Approves everything at once.
struct Yes;

#[async_trait::async_trait]
impl Approver for Yes {
    async fn approve(&self, _call: &ToolCall) -> Approval {
        Approval::Approved
    }
}

const FULL_STACK: &str = r#"
    allow = ["echo", "get_*"]
    deny = ["shell"]

    [tools.echo]
    timeout_ms = 10000
    retries = 2
    retry_budget = { percent = 0.2 }
    rate = { per_second = 1000000000.0, burst = 1000000 }
    concurrency = 64
    shed = true
    max_output_bytes = 4096
    approval = true
    allow_domains = ["example.com"]
"#;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full_run = args.iter().any(|a| a == "--bench");
    let iterations = match args.iter().find_map(|a| a.parse::<usize>().ok()) {
        Some(n) => n,
        None if full_run => 50_000,
        None => 200,
    };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(run(iterations, full_run))
}

async fn run(iterations: usize, full_run: bool) -> Result<(), Box<dyn Error>> {
    let config: PolicyConfig = toml::from_str(FULL_STACK)?;
    let policies = Policies::new(config)?.with_approver(Arc::new(Yes));
    let direct = ToolService::new(Echo)?;
    let layered = policies.stack("echo", true, direct.clone());
    let direct = direct.boxed();

    let call = ToolCall::new("echo", serde_json::json!({"url": "https://example.com/a"}));
    // Both paths must answer, and alike.
    let a = time_one(&mut direct.clone(), &call).await?.1;
    let b = time_one(&mut layered.clone(), &call).await?.1;
    if a != b || a != "https://example.com/a" {
        return Err(format!("the paths disagree: {a:?} vs {b:?}").into());
    }
    // The layers are really there: the guard refuses another domain.
    let evil = ToolCall::new("echo", serde_json::json!({"url": "https://evil.com/"}));
    if layered.clone().oneshot(evil).await?.is_ok() {
        return Err("the domain guard let evil.com through".into());
    }

    // Warm up, then alternate rounds of both paths.
    let warmup = (iterations / 10).max(10);
    measure(&direct, &call, warmup).await?;
    measure(&layered, &call, warmup).await?;
    let rounds = 10;
    let per_round = (iterations / rounds).max(1);
    let (mut bare, mut stacked) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        bare.extend(measure(&direct, &call, per_round).await?);
        stacked.extend(measure(&layered, &call, per_round).await?);
    }

    let bare = Summary::of(bare);
    let stacked = Summary::of(stacked);
    println!("policy stack overhead, {} calls per path, current-thread runtime", bare.n);
    println!("  load average: {}", load_average());
    println!("  direct ToolService : {bare}");
    println!("  full policy stack  : {stacked}");
    for (name, s) in [("direct", &bare), ("stacked", &stacked)] {
        println!(
            "  tail, {name:7}      : {} calls over {} µs ({} over {} ms), {:.1} % of the total \
             time; max {:.1} µs",
            s.slow,
            SLOW.as_micros(),
            s.descheduled,
            DESCHEDULED.as_millis(),
            100.0 * s.slow_time.as_secs_f64() / s.total.as_secs_f64().max(f64::MIN_POSITIVE),
            micros(s.max)
        );
    }
    println!(
        "  overhead           : p50 {:.2} µs, p99 {:.2} µs",
        micros(stacked.p50.saturating_sub(bare.p50)),
        micros(stacked.p99.saturating_sub(bare.p99)),
    );
    if !full_run {
        println!("(smoke run: pass --bench, as `cargo bench` does, for the full measurement)");
    }
    Ok(())
}

/// Times `n` calls, one by one, each on a fresh clone as the registry does.
async fn measure(
    service: &BoxToolService,
    call: &ToolCall,
    n: usize,
) -> Result<Vec<Duration>, Box<dyn Error>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut service = service.clone();
        times.push(time_one(&mut service, call).await?.0);
    }
    Ok(times)
}

async fn time_one(
    service: &mut BoxToolService,
    call: &ToolCall,
) -> Result<(Duration, String), Box<dyn Error>> {
    let call = call.clone();
    let start = Instant::now();
    let result = service.ready().await?.call(call).await?;
    let elapsed = start.elapsed();
    let text = result.outcome.map_err(|e| format!("the call failed: {e}"))?;
    Ok((elapsed, text))
}

/// A call slower than this counts in the tail.
const SLOW: Duration = Duration::from_micros(10);
/// A call slower than this was, in all likelihood, taken off the CPU (a scheduler tick is 4 ms
/// at the usual 250 Hz).
const DESCHEDULED: Duration = Duration::from_millis(1);

struct Summary {
    n: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    mean: Duration,
    total: Duration,
    /// Calls slower than [`SLOW`], and their summed time.
    slow: usize,
    slow_time: Duration,
    /// Calls slower than [`DESCHEDULED`].
    descheduled: usize,
}

impl Summary {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let n = times.len();
        let at = |q: f64| times.get(((n as f64 - 1.0) * q).round() as usize).copied();
        let total: Duration = times.iter().sum();
        let slow: Vec<Duration> = times.iter().copied().filter(|&t| t > SLOW).collect();
        Self {
            n,
            p50: at(0.50).unwrap_or_default(),
            p99: at(0.99).unwrap_or_default(),
            p999: at(0.999).unwrap_or_default(),
            max: times.last().copied().unwrap_or_default(),
            mean: total / n.max(1) as u32,
            total,
            slow: slow.len(),
            slow_time: slow.iter().sum(),
            descheduled: slow.iter().filter(|&&t| t > DESCHEDULED).count(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:7.2} µs  p99 {:7.2} µs  p99.9 {:7.2} µs  max {:9.1} µs  mean {:7.2} µs",
            micros(self.p50),
            micros(self.p99),
            micros(self.p999),
            micros(self.max),
            micros(self.mean)
        )
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
