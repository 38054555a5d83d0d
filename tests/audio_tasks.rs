//! The model's tasks end to end on the tiny random checkpoint: OpenAI's audio endpoints
//! (`/v1/audio/transcriptions`, `/v1/audio/translations`, `/v1/audio/speech`) driven by the
//! official OpenAI Python SDK (`tests/audio/client.py`), raw HTTP for what the SDK hides, and
//! the CLI (`voxloop transcribe`, `describe`, `translate`, `tts`). The words are noise: the
//! assertions are on formats, flows, errors and decoded audio. Task prompts are compared with
//! upstream's rendering in core's unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{http_request, json_body};

/// Budgets short enough for the CPU (the tasks' own budgets are upstream's: up to 2048).
const AGENT: &str = "[agent]\nmax_new_tokens = 40\nseed = 7\n";

fn client(pyclients: &Path, command: &str, addr: std::net::SocketAddr, args: &[&Path]) -> Value {
    support::python_report(pyclients, "tests/audio/client.py", command, addr, args)
}

#[test]
fn openai_audio_endpoints_transcribe_translate_and_speak() {
    let Some(pyclients) = support::python_clients("openai") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("tone.wav");
    std::fs::write(&wav, support::tone_wav(1.5)).unwrap();
    let not_audio = tmp.path().join("notes.wav");
    std::fs::write(&not_audio, b"these are not samples").unwrap();
    let server = support::serve_speaking(AGENT);

    let heard = client(&pyclients, "transcribe", server.addr, &[&wav]);
    assert_eq!(heard["json_class"], "Transcription", "{heard}");
    assert!(heard["json"]["text"].is_string(), "{heard}");
    let usage = &heard["json"]["usage"];
    assert_eq!(usage["type"], "tokens", "{heard}");
    let (input, output) =
        (usage["input_tokens"].as_u64().unwrap(), usage["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), input + output);
    assert_eq!(heard["text_type"], "str", "{heard}");
    // Greedy transcription: the same words every time, whichever format carries them.
    let text = heard["json"]["text"].as_str().unwrap();
    assert_eq!(heard["text"].as_str().unwrap().trim(), text, "{heard}");
    let events = heard["stream"].as_array().unwrap();
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(done["type"], "transcript.text.done", "{heard}");
    assert!(deltas.iter().all(|e| e["type"] == "transcript.text.delta"), "{heard}");
    let joined: String = deltas.iter().map(|e| e["delta"].as_str().unwrap()).collect();
    assert_eq!(joined.trim(), done["text"].as_str().unwrap());
    assert_eq!(done["text"], text, "the streamed transcript is the same");
    assert!(heard["translation"]["text"].is_string(), "{heard}");

    let spoken = client(&pyclients, "speech", server.addr, &[]);
    assert_eq!(spoken["wav_type"], "audio/wav", "{spoken}");
    let info = &spoken["wav"];
    assert_eq!(
        (info["channels"].as_u64(), info["frame_rate"].as_u64()),
        (Some(1), Some(24_000)),
        "{spoken}"
    );
    assert_eq!(info["sample_width"], 2, "{spoken}");
    assert!(info["frames"].as_u64().unwrap() > 0, "speech came out: {spoken}");
    assert_eq!(spoken["pcm_type"], "audio/pcm", "{spoken}");
    let pcm = spoken["pcm_bytes"].as_u64().unwrap();
    assert!(pcm > 0 && pcm % 2 == 0, "{spoken}");

    let refused = client(&pyclients, "errors", server.addr, &[&not_audio]);
    let check = |case: &str, class: &str, param: Option<&str>| {
        let got = &refused[case];
        assert_eq!(got["class"], class, "{case}: {got}");
        if let Some(param) = param {
            assert_eq!(got["param"], param, "{case}: {got}");
        }
    };
    check("not_audio", "BadRequestError", Some("file"));
    check("unknown_model", "NotFoundError", Some("model"));
    check("prompt", "BadRequestError", Some("prompt"));
    check("verbose", "BadRequestError", Some("response_format"));
    check("mp3", "BadRequestError", Some("response_format"));
    check("unknown_voice", "BadRequestError", Some("voice"));
    check("speed", "BadRequestError", Some("speed"));
    check("empty_input", "BadRequestError", Some("input"));
    assert_eq!(refused["mp3"]["code"], "unsupported_parameter", "{refused}");

    // What the SDK would not send: a form without a file, a body that is not JSON.
    let (status, body) = raw_form(server.addr, &[("model", "step-audio-2-mini")]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(json_body(&body)["error"]["param"], "file", "{body}");
    let (status, body) =
        http_request(server.addr, "POST", "/v1/audio/speech", Some("{\"model\": "));
    assert_eq!(status, 400, "{body}");
    // The service is fine after all that.
    assert_eq!(json_body(&http_request(server.addr, "GET", "/healthz", None).1)["status"], "ok");
}

#[test]
fn without_a_model_the_audio_endpoints_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxloop.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, format!("[paths]\ndata_dir = {data:?}\n")).unwrap();
    let (child, addr) = support::start_server(support::serve_command(&config, false));
    let _server = support::Server { child, addr, _dir: Some(dir) };
    let (status, body) = http_request(
        addr,
        "POST",
        "/v1/audio/speech",
        Some(r#"{"model": "step-audio-2-mini", "input": "Hi.", "voice": "fixture"}"#),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(json_body(&body)["error"]["type"], "service_unavailable", "{body}");
}

/// A multipart form of text fields posted to the transcription route.
fn raw_form(addr: std::net::SocketAddr, fields: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let boundary = "voxloopboundary";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `voxloop <args>` on the tiny checkpoint with the token2wav fixture's voice library; its
/// stdout.
fn voxloop(dir: &Path, args: &[&str]) -> String {
    let data = dir.join("data");
    let voices = data.join("voices");
    if !voices.is_dir() {
        support::fixture_voice(&voices);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t2w = root.join("voices/tests/fixtures/token2wav");
    let config = dir.join("voxloop.toml");
    std::fs::write(
        &config,
        format!("[paths]\ndata_dir = {data:?}\n[voice]\ntoken2wav = {t2w:?}\nname = \"fixture\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("VOXLOOP_MODEL_DIR", root.join("core/tests/fixtures/llm/tiny_a"))
        .env("VOXLOOP_DEVICE", "cpu")
        .env_remove("VOXLOOP_TOKEN2WAV_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "voxloop {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_runs_each_task() {
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("tone.wav");
    std::fs::write(&wav, support::tone_wav(1.0)).unwrap();
    let file = wav.to_str().unwrap();
    let budget = ["--seed", "3", "--max-new-tokens", "24", "--json"];
    for task in [
        &["transcribe", file][..],
        &["describe", file, "--brief"],
        &["translate", file, "--to", "en"],
    ] {
        let args: Vec<&str> = task.iter().chain(&budget).copied().collect();
        let report: Value = serde_json::from_str(voxloop(tmp.path(), &args).trim()).unwrap();
        assert!(report["text"].is_string(), "{task:?}: {report}");
        assert!(report["output_tokens"].as_u64().unwrap() > 0, "{task:?}: {report}");
        assert_eq!(report["wav"], Value::Null, "{report}");
    }
    // Speech: read aloud, and speech-to-speech translation, each into a WAV.
    for (task, out) in [
        (vec!["tts", "Hello there.", "--voice", "fixture"], "tts.wav"),
        (vec!["translate", file, "--to", "zh"], "s2st.wav"),
    ] {
        let out = tmp.path().join(out);
        let mut args = task.clone();
        args.extend([
            "--output",
            out.to_str().unwrap(),
            "--seed",
            "3",
            "--max-new-tokens",
            "40",
            "--json",
        ]);
        let report: Value = serde_json::from_str(voxloop(tmp.path(), &args).trim()).unwrap();
        assert!(report["speech_codes"].as_u64().unwrap() > 0, "{task:?}: {report}");
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..4], b"RIFF", "{task:?}");
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 24_000, "{task:?}");
    }
    // Bad input fails before the model loads, saying why.
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .args(["transcribe", "/nonexistent.wav"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent.wav"));
}

#[test]
fn indexed_clips_are_captioned_by_the_model_and_a_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    for (name, seconds) in [("a.wav", 0.6), ("b.wav", 0.8), ("c.wav", 1.0)] {
        std::fs::write(lib.join(name), support::tone_wav(seconds)).unwrap();
    }
    let lib = lib.to_str().unwrap();
    voxloop(tmp.path(), &["index", "add", lib, "--embedder", "hashing"]);
    let caption = |extra: &[&str]| -> Value {
        let mut args = vec!["index", "caption", "--json", "--max-new-tokens", "12", "--seed", "3"];
        args.extend(extra);
        serde_json::from_str(&voxloop(tmp.path(), &args)).unwrap()
    };
    // Two now (written back one at a time), the third by the next run, then nothing to do.
    let first = caption(&["--max-items", "2", "--caption-batch", "1"]);
    assert_eq!(
        (first["captioned"].as_u64(), first["left"].as_u64()),
        (Some(2), Some(1)),
        "{first}"
    );
    let second = caption(&[]);
    assert_eq!(
        (second["captioned"].as_u64(), second["already"].as_u64()),
        (Some(1), Some(2)),
        "{second}"
    );
    let third = caption(&[]);
    assert_eq!(
        (third["captioned"].as_u64(), third["already"].as_u64()),
        (Some(0), Some(3)),
        "{third}"
    );

    let hits: Value =
        serde_json::from_str(&voxloop(tmp.path(), &["search", "a tone", "--k", "3", "--json"]))
            .unwrap();
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 3);
    for hit in hits {
        let caption = &hit["item"]["caption"];
        assert_eq!(caption["model"], "tiny_a", "marked with the checkpoint that wrote it: {hit}");
        assert!(caption["en"].is_string() && caption["zh"].is_string(), "{hit}");
    }
    // That captions are searched is checked in retrieval/tests/index.rs.
}
