//! The browser page at `/`, in headless Chromium (Debian's `chromium`, driven by npm's
//! `playwright-core` from `scripts/playwright.sh`; see `tests/page/drive.mjs`).
//!
//! (a) With the tiny model: Chromium's fake microphone plays an espeak-ng question once, the
//! page streams it hands-free, the server's VAD hears it, the answer's audio plays, and the
//! tool timeline shows the (forced) call with its arguments and result.
//! (b) Without a model: the page still loads, says what is missing and how to configure it,
//! and its audio search finds a clip that plays in the page.
//!
//! `VOXLOOP_PAGE_SCREENSHOT=DIR` keeps each screenshot there (`docs/page.png` is one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// playwright-core's node_modules (`VOXLOOP_PLAYWRIGHT`) and Chromium, or `None`: skipped,
/// except under `VOXLOOP_REQUIRE_MODELS=1` (`make test`), where either missing fails.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() == Ok("1");
    let modules = std::env::var_os("VOXLOOP_PLAYWRIGHT").map(PathBuf::from);
    let chromium =
        PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    match modules {
        Some(dir) if dir.join("playwright-core").is_dir() && chromium.is_file() => {
            Some((dir, chromium))
        }
        _ if required => panic!(
            "the page test needs playwright-core (VOXLOOP_PLAYWRIGHT, scripts/playwright.sh) and \
             Chromium at {} (Debian's `chromium`, which .ci/run installs)",
            chromium.display()
        ),
        _ => {
            eprintln!("no playwright-core or Chromium: the page tests are skipped");
            None
        }
    }
}

/// Runs `tests/page/drive.mjs <command> <url> <out> <args>`; its JSON report. The screenshot
/// it writes to `out/page.png` is copied to `$VOXLOOP_PAGE_SCREENSHOT/<name>.png` when set.
fn drive(command: &str, addr: std::net::SocketAddr, args: &[&Path], name: &str) -> Value {
    let (modules, chromium) = browser().unwrap();
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new("node")
        .arg(root.join("tests/page/drive.mjs"))
        .arg(command)
        .arg(format!("http://{addr}"))
        .arg(out.path())
        .args(args)
        .env("NODE_PATH", modules)
        .env("CHROMIUM", chromium)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "drive.mjs {command} failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let shot = out.path().join("page.png");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot was taken");
    if let Some(dir) = std::env::var_os("VOXLOOP_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, Path::new(&dir).join(format!("{name}.png"))).unwrap();
    }
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!("drive.mjs printed no JSON ({e}): {}", String::from_utf8_lossy(&run.stdout))
    })
}

/// `wav` with `lead` seconds of silence before it and `tail` after, as 16-bit mono: the fake
/// microphone starts the file as soon as the page opens it, and VAD needs silence to hear the
/// question end.
fn padded(wav: &Path, lead: f32, tail: f32) -> PathBuf {
    let mut reader = hound::WavReader::open(wav).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let out = wav.with_file_name("padded.wav");
    let mut writer = hound::WavWriter::create(&out, spec).unwrap();
    let silence = |seconds: f32| vec![0i16; (seconds * spec.sample_rate as f32) as usize];
    for s in silence(lead).into_iter().chain(samples).chain(silence(tail)) {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    out
}

/// What a page test with the model needs: the browser, the VAD model and the spoken question
/// (padded with `lead` and `tail` seconds of silence), and the service with rendered speech
/// and `extra` config; `None` (skipped) when one is missing outside `make test`.
fn talking_page(
    lead: f32,
    tail: f32,
    extra: &str,
) -> Option<(tempfile::TempDir, PathBuf, support::Server)> {
    browser()?;
    let vad = support::silero_vad()?;
    let dir = tempfile::tempdir().unwrap();
    let question = support::spoken_question(dir.path(), "what time is it in Paris")?;
    let wav = padded(&question, lead, tail);
    let server = support::serve_speaking(&format!("[realtime]\nvad_model = {vad:?}\n\n{extra}"));
    Some((dir, wav, server))
}

#[test]
fn the_page_talks_hands_free_and_shows_the_tool_call() {
    let Some((_dir, wav, server)) = talking_page(0.8, 2.5, "") else { return };
    let report = drive("talk", server.addr, &[&wav], "page");
    let errors: Vec<&Value> = report["console"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.as_str().unwrap().starts_with("pageerror"))
        .collect();
    assert!(errors.is_empty(), "the page threw: {errors:?}");

    let data = &report["dataset"];
    assert!(data["session"].as_str().unwrap().starts_with("conv_"), "{data}");
    assert_eq!(data["speechStarted"], "1", "VAD heard the question once: {report}");
    assert!(data.get("errors").is_none(), "no error events: {:?}", report["log"]);
    let chunks: u32 = data["audioChunks"].as_str().unwrap().parse().unwrap();
    assert!(chunks > 0, "the answer's audio reached the page: {data}");
    // tool_choice names the tool, so every step of the answer calls it (the turn's step limit
    // ends the calls); each call has its row, finished with its result. The first call is
    // whole; a later one may be cut off by the token limit (the random model's), and then
    // shows its error.
    let calls: usize = data["toolCalls"].as_str().unwrap().parse().unwrap();
    assert!(calls >= 1, "{data}");
    assert_eq!(data["toolResults"], data["toolCalls"], "a result for each call: {data}");
    assert_eq!(report["voices"][0].as_str().unwrap(), "fixture", "the voice picker: {report}");

    let timeline = report["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), calls, "one row per call: {timeline:?}");
    let first = &timeline[0];
    assert_eq!(first["name"], "get_date_time");
    assert_eq!(first["state"], "done", "{first}");
    let args: Value = serde_json::from_str(first["args"].as_str().unwrap()).unwrap();
    assert!(args.is_object(), "the arguments, pretty-printed JSON: {first}");
    assert!(first["result"].as_str().unwrap().contains("2025"), "the fixed date: {first}");
    for call in timeline {
        assert!(["done", "failed"].contains(&call["state"].as_str().unwrap()), "{call}");
        assert!(call["meta"].as_str().unwrap().ends_with(" ms"), "a duration: {call}");
        assert!(!call["result"].as_str().unwrap().is_empty(), "the result: {call}");
    }

    let transcript = report["transcript"].as_array().unwrap();
    assert_eq!(transcript[0]["role"], "user", "{transcript:?}");
    assert!(transcript.iter().any(|t| t["role"] == "assistant"), "{transcript:?}");
}

#[test]
fn push_to_talk_and_approvals_in_the_page() {
    let approval = "[agent.policies.tools.get_date_time]\napproval = true\n";
    let Some((_dir, wav, server)) = talking_page(0.3, 1.0, approval) else { return };
    let report = drive("ptt", server.addr, &[&wav], "page-ptt");
    let data = &report["dataset"];
    assert!(data.get("speechStarted").is_none(), "no server VAD in push to talk: {data}");
    assert!(data.get("errors").is_none(), "no error events: {:?}", report["log"]);
    let log: Vec<&str> =
        report["log"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(log.iter().any(|l| l.ends_with("input_audio_buffer.committed")), "{log:?}");

    let decisions = report["decisions"].as_array().unwrap();
    assert_eq!(decisions[0], true, "the first call was approved: {report}");
    let timeline = report["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["state"], "done", "the approved call ran: {}", timeline[0]);
    assert!(!timeline[0]["result"].as_str().unwrap().contains("denied"), "{}", timeline[0]);
    // The other calls failed: those answered Deny with the page's reason; a call the token
    // limit cut off (the random model's) with its own error kind.
    let denied: Vec<&Value> = timeline[1..]
        .iter()
        .filter(|row| row["meta"].as_str().unwrap().starts_with("denied after"))
        .collect();
    assert_eq!(denied.len(), decisions.len() - 1, "{timeline:?}");
    for row in &timeline[1..] {
        assert_eq!(row["state"], "failed", "{row}");
    }
    for row in denied {
        assert!(row["result"].as_str().unwrap().contains("denied in the browser"), "{row}");
    }
}

/// The index of the offline test: two described clips of different lengths.
fn library(data: &Path) {
    let lib = data.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("rain.wav"), support::tone_wav(0.6)).unwrap();
    std::fs::write(lib.join("bell.wav"), support::tone_wav(1.2)).unwrap();
    std::fs::write(
        lib.join("metadata.jsonl"),
        "{\"path\":\"rain.wav\",\"description\":\"rain on a tin roof\",\"tags\":[\"rain\"]}\n\
         {\"path\":\"bell.wav\",\"description\":\"a church bell far away\",\"tags\":[\"bell\"]}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .args(["index", "add", "--embedder", "hashing"])
        .arg(&lib)
        .env("VOXLOOP_INDEX_DIR", data.join("index"))
        .env_remove("VOXLOOP_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn without_a_model_the_page_says_what_is_missing_and_searches_audio() {
    if browser().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    library(&data);
    let config = dir.path().join("voxloop.toml");
    std::fs::write(&config, format!("[paths]\ndata_dir = {data:?}\n\n{}", support::OFFLINE_TOOLS))
        .unwrap();
    let (child, addr) = support::start_server(support::serve_command(&config, false));
    let server = support::Server { child, addr, _dir: None };
    let report = drive("offline", server.addr, &[], "page-offline");

    let notice = report["notice"].as_str().unwrap();
    assert!(notice.contains("No speech model") && notice.contains("[model] dir"), "{notice}");
    assert_eq!(report["connectDisabled"], true);
    assert_eq!(report["status"], "no model");
    let hits = report["hits"].as_array().unwrap();
    assert!(!hits.is_empty(), "{report}");
    assert!(
        hits[0].as_str().unwrap().contains("rain on a tin roof"),
        "the best hit first: {hits:?}"
    );
    assert_eq!(report["played"]["ended"], true, "the hit played in the page: {report}");
    let seconds = report["played"]["duration"].as_f64().unwrap();
    assert!((seconds - 0.6).abs() < 0.05, "the rain clip, 0.6 s: {seconds}");
}
