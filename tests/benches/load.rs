//! Load and soak of `voxloop serve` on the tiny checkpoint, over loopback only (issue #18):
//! how many turns it serves at once, how long each takes against the same turn alone, whether
//! overload is refused (503 with `Retry-After`) rather than queued without bound, and whether
//! its memory stays flat over a long run.
//!
//! ```text
//! cargo bench -p voxloop --bench load -- [--sessions N] [--turns M] [--chat N] [--soak SECONDS]
//! ```
//!
//! One server (`[agent] max_sessions = N`, `max_requests = N / 2`, speech answers rendered by
//! the token2wav fixture, sessions saved to disk) goes through these phases:
//!
//! 1. *alone*: one session, M turns one after another: the latency of a turn without load;
//! 2. *sessions*: N clients, each its own session of M turns, all at once: throughput, p50/p99
//!    per turn, and p50 under load over p50 alone;
//! 3. *session overload*: 2N clients each create a session and start a turn at once; a
//!    creation, or the turn of a session that newer ones evicted from memory meanwhile, is
//!    refused (503 with `Retry-After`) while all N slots are in a turn, and never queued;
//! 4. *chat overload*: N Chat Completions clients, M calls each, over N / 2 request slots;
//! 5. *huge text*: a 22 MB turn text, refused with 413 before tokenizing: how long that takes;
//! 6. *soak* (with `--soak`): N clients run sessions of M turns (each deleted after its last
//!    turn) for the given seconds while the server's RSS is sampled every second.
//!
//! Anything but a completed turn, a 200, a 503 with `Retry-After` or the expected 413 counts as
//! an error, and the run fails if there is one or the server dies. The server's RSS
//! (`/proc/PID/status` `VmRSS`) is printed after each phase.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke run: 2 sessions of
//! 2 turns, no soak.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const QUESTION: &str = "What is the weather like in Paris today?";

struct Options {
    sessions: usize,
    turns: usize,
    chat: usize,
    soak: Option<u64>,
}

fn options(args: &[String]) -> BoxResult<Options> {
    if !args.iter().any(|a| a == "--bench") {
        return Ok(Options { sessions: 2, turns: 2, chat: 2, soak: None });
    }
    let mut o = Options { sessions: 8, turns: 10, chat: 8, soak: None };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--sessions" => o.sessions = value()?.parse()?,
            "--turns" => o.turns = value()?.parse()?,
            "--chat" => o.chat = value()?.parse()?,
            "--soak" => o.soak = Some(value()?.parse()?),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo bench -p voxloop --bench load -- \
                     [--sessions N] [--turns M] [--chat N] [--soak SECONDS]"
                )
                .into())
            }
        }
    }
    if o.sessions < 2 || o.turns < 1 || o.chat < 1 {
        return Err("--sessions must be at least 2, --turns and --chat at least 1".into());
    }
    Ok(o)
}

/// What the clients of one phase saw.
#[derive(Default)]
struct Tally {
    /// Seconds from request to the `done` event of each completed turn (or each 200 answer).
    latencies: Vec<f64>,
    /// 503 answers that carried `Retry-After`.
    refused: usize,
    /// Anything else, described.
    errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.refused += other.refused;
        self.errors.extend(other.errors);
    }
}

/// The value at quantile `q` (nearest rank) of `values`, sorted here.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Whether a response head carries `Retry-After`.
fn retries_later(head: &str) -> bool {
    head.to_ascii_lowercase().contains("\nretry-after:")
}

/// The server's resident memory in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// A new session, or the refusal: `Ok(id)`, `Err(true)` for a 503 with `Retry-After`,
/// `Err(false)` with the error pushed to `tally`.
fn new_session(addr: SocketAddr, tally: &mut Tally) -> Result<String, bool> {
    let (status, head, body) = support::http_post_with_head(addr, "/v1/sessions", "{}");
    match status {
        201 => Ok(support::json_body(&body)["id"].as_str().unwrap_or_default().to_owned()),
        503 if retries_later(&head) => {
            tally.refused += 1;
            Err(true)
        }
        _ => {
            tally.errors.push(format!("creating a session: {status} {body}"));
            Err(false)
        }
    }
}

/// One turn of `session`, timed into `tally` when it completes.
fn timed_turn(addr: SocketAddr, session: &str, tally: &mut Tally) {
    let path = format!("/v1/sessions/{session}/turns");
    let body = json!({ "text": QUESTION }).to_string();
    let start = Instant::now();
    match support::Sse::post_with_head(addr, &path, &body) {
        Ok(stream) => {
            let events = stream.collect();
            let done = events.iter().rev().find(|e| e.event == "done");
            let reason = done.map(|e| support::json_body(&e.data)["reason"].clone());
            if reason.as_ref().and_then(Value::as_str) == Some("completed") {
                tally.latencies.push(start.elapsed().as_secs_f64());
            } else {
                tally.errors.push(format!("turn ended {:?}", done.map(|e| &e.data)));
            }
        }
        // A session evicted by newer ones must come back into a slot for its turn, and that
        // is refused like a creation while every slot is in a turn.
        Err((503, head, _)) if retries_later(&head) => tally.refused += 1,
        Err((status, _, body)) => tally.errors.push(format!("turn refused: {status} {body}")),
    }
}

/// A session of `turns` turns, deleted after them when `delete`.
fn session_client(addr: SocketAddr, turns: usize, delete: bool) -> Tally {
    let mut tally = Tally::default();
    if let Ok(id) = new_session(addr, &mut tally) {
        for _ in 0..turns {
            timed_turn(addr, &id, &mut tally);
        }
        if delete {
            let (status, body) =
                support::http_request(addr, "DELETE", &format!("/v1/sessions/{id}"), None);
            if status != 204 {
                tally.errors.push(format!("deleting a session: {status} {body}"));
            }
        }
    }
    tally
}

/// `clients` threads at once, each running `client`; their tallies merged, and the wall time.
fn at_once(clients: usize, client: impl Fn() -> Tally + Sync) -> (Tally, f64) {
    let start = Instant::now();
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients).map(|_| scope.spawn(&client)).collect();
        for handle in handles {
            tally.merge(handle.join().unwrap_or_default());
        }
    });
    (tally, start.elapsed().as_secs_f64())
}

/// `calls` Chat Completions calls one after another.
fn chat_client(addr: SocketAddr, calls: usize) -> Tally {
    let body = json!({
        "model": "step-audio-2-mini",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_completion_tokens": 24,
    })
    .to_string();
    let mut tally = Tally::default();
    for _ in 0..calls {
        let start = Instant::now();
        let (status, head, answer) =
            support::http_post_with_head(addr, "/v1/chat/completions", &body);
        match status {
            200 => tally.latencies.push(start.elapsed().as_secs_f64()),
            503 if retries_later(&head) => tally.refused += 1,
            _ => tally.errors.push(format!("chat: {status} {answer}")),
        }
    }
    tally
}

fn report(phase: &str, tally: &mut Tally, wall: f64, rss: f64) {
    let n = tally.latencies.len();
    println!(
        "| {phase} | {n} | {:.2} | {:.3} | {:.3} | {} | {} | {rss:.0} |",
        n as f64 / wall,
        quantile(&mut tally.latencies, 0.5),
        quantile(&mut tally.latencies, 0.99),
        tally.refused,
        tally.errors.len(),
    );
}

fn run(o: &Options) -> BoxResult<usize> {
    let max_requests = (o.chat / 2).max(1);
    let mut server = support::serve_speaking(&format!(
        "[agent]\nmax_sessions = {}\nmax_requests = {max_requests}\nmax_new_tokens = 24\n\
         seed = 7\n",
        o.sessions
    ));
    let (addr, pid) = (server.addr, server.child.id());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "voxloop serve, tiny checkpoint, speech answers (24 new tokens a step); {} sessions x \
         {} turns, {} chat clients over {max_requests} request slots; {cores} cores; RSS at \
         start {:.0} MiB",
        o.sessions,
        o.turns,
        o.chat,
        rss_mib(pid)
    );
    println!();
    println!("| phase | answered | per s | p50 s | p99 s | 503 + Retry-After | errors | RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut errors = Vec::new();

    let (mut alone, wall) = at_once(1, || session_client(addr, o.turns, false));
    report("alone: 1 session", &mut alone, wall, rss_mib(pid));
    let (mut loaded, wall) = at_once(o.sessions, || session_client(addr, o.turns, false));
    report(&format!("sessions: {} at once", o.sessions), &mut loaded, wall, rss_mib(pid));
    let ratio = quantile(&mut loaded.latencies, 0.5) / quantile(&mut alone.latencies, 0.5);

    let (mut over, wall) = at_once(2 * o.sessions, || session_client(addr, 1, false));
    report(
        &format!("session overload: {} clients, {} slots", 2 * o.sessions, o.sessions),
        &mut over,
        wall,
        rss_mib(pid),
    );
    let (mut chat, wall) = at_once(o.chat, || chat_client(addr, o.turns));
    report(
        &format!("chat overload: {} clients, {max_requests} slots", o.chat),
        &mut chat,
        wall,
        rss_mib(pid),
    );
    for tally in [alone, loaded, over, chat] {
        errors.extend(tally.errors);
    }

    // A turn text over what the context can hold: 413 before tokenizing.
    let session = support::create_session(addr, "{}");
    let huge = json!({ "text": "<|EOT|>".repeat(24 << 17) }).to_string();
    let mut refusals = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let (status, body) =
            support::http_post(addr, &format!("/v1/sessions/{session}/turns"), &huge);
        refusals.push(start.elapsed().as_secs_f64());
        if status != 413 {
            errors.push(format!("a 22 MB text: {status} {body}"));
        }
    }
    println!();
    println!(
        "p50 turn latency with {} sessions at once / alone: {ratio:.2}; a 22 MB turn text \
         refused in {} s (3 tries)",
        o.sessions,
        refusals.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(", ")
    );

    if let Some(seconds) = o.soak {
        errors.extend(soak(addr, pid, o, seconds));
    }
    if let Some(status) = server.child.try_wait()? {
        errors.push(format!("the server exited: {status}"));
    }
    for error in &errors {
        eprintln!("error: {error}");
    }
    Ok(errors.len())
}

/// Sessions of `o.turns` turns from `o.sessions` clients for `seconds`, the server's RSS
/// sampled every second; prints the samples' summary and returns the errors.
fn soak(addr: SocketAddr, pid: u32, o: &Options, seconds: u64) -> Vec<String> {
    let stop = AtomicBool::new(false);
    let samples = Mutex::new(Vec::<(f64, f64)>::new());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let (mut tally, wall) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let at = start.elapsed().as_secs_f64();
                samples.lock().unwrap_or_else(|e| e.into_inner()).push((at, rss_mib(pid)));
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let result = at_once(o.sessions, || {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                tally.merge(session_client(addr, o.turns, true));
            }
            tally
        });
        stop.store(true, Ordering::Relaxed);
        result
    });
    let samples = samples.into_inner().unwrap_or_else(|e| e.into_inner());
    let minute = |from: f64, to: f64| {
        let values: Vec<f64> =
            samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, r)| *r).collect();
        let max = values.iter().copied().fold(f64::NAN, f64::max);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        (mean, max)
    };
    let end = wall;
    let (first_mean, first_max) = minute(60.0, 120.0);
    let (last_mean, last_max) = minute(end - 60.0, end + 1.0);
    let overall = samples.iter().map(|(_, r)| *r).fold(f64::NAN, f64::max);
    println!();
    println!(
        "soak: {seconds} s, {} clients each running sessions of {} turns",
        o.sessions, o.turns
    );
    report("soak", &mut tally, wall, rss_mib(pid));
    println!(
        "RSS MiB: second minute mean {first_mean:.1} (max {first_max:.1}); last minute mean \
         {last_mean:.1} (max {last_max:.1}); highest sample {overall:.1}; {} samples; last \
         minute over second minute {:.3}",
        samples.len(),
        last_mean / first_mean
    );
    tally.errors
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = options(&args).and_then(|o| run(&o));
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("{n} errors");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
