//! voxloop's tools as an MCP server, driven by the official MCP Python SDK client
//! (`tests/mcp/client.py`, PyPI `mcp` installed by `scripts/pyclients.sh` into the cache;
//! the Makefile exports its directory as `VOXLOOP_PYCLIENTS`): `voxloop mcp` over stdio and the
//! service's `/mcp` over streamable HTTP, on the sample library indexed with MiniLM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A data dir whose audio index holds the sample library (`make run`'s) and whose voice
/// library holds the token2wav fixture's voice (`fixture`), and a config file with `extra`
/// appended; web search is off so that no call leaves the machine.
fn data_dir(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let (tmp, config, _) = indexed_data_dir(extra);
    (tmp, config)
}

/// [`data_dir`], and the sample library's folder.
fn indexed_data_dir(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples");
    let out = Command::new(root().join("scripts/sample_library.sh")).arg(&samples).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = tmp.path().join("data");
    support::fixture_voice(&data.join("voices"));
    let config = tmp.path().join("voxloop.toml");
    let text = format!(
        "[paths]\ndata_dir = {:?}\n[tools.web_search]\nenabled = false\n{extra}",
        data.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let out = voxloop(&config).args(["index", "add"]).arg(&samples).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (tmp, config, samples)
}

/// The id `voxloop search` gives the sample library's struck bell.
fn bell_id(config: &Path) -> String {
    let out = voxloop(config).args(["search", "a single struck bell", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bell = hits.as_array().unwrap().iter().find(|h| {
        h["item"]["path"].as_str().is_some_and(|p| p.ends_with("generated/bell_strike.wav"))
    });
    bell.unwrap_or_else(|| panic!("no bell: {hits}"))["item"]["id"].as_str().unwrap().to_owned()
}

fn voxloop(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("VOXLOOP_DATA_DIR")
        .env_remove("VOXLOOP_MODEL_DIR")
        .env_remove("VOXLOOP_MCP_TOKEN")
        .env("VOXLOOP_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(config);
    cmd
}

/// Runs the Python client: `mode` `stdio` (target: the voxloop binary, started with the
/// environment given) or `http` (target: the URL); returns its JSON report.
fn client(pyclients: &Path, args: &[&str], calls: &Value, envs: &[(&str, &Path)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let calls_path = dir.path().join("calls.json");
    std::fs::write(&calls_path, calls.to_string()).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/mcp/client.py"))
        .args(&args[..2])
        .arg(&calls_path)
        .args(&args[2..])
        .env("PYTHONPATH", pyclients)
        .env_remove("VOXLOOP_DATA_DIR")
        .env_remove("VOXLOOP_MODEL_DIR");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tool<'a>(report: &'a Value, name: &str) -> &'a Value {
    let tools = report["tools"].as_array().unwrap();
    tools.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no {name}: {report}"))
}

#[test]
fn stdio_lists_the_tools_runs_calls_and_answers_bad_ones_with_error_results() {
    let Some(pyclients) = support::python_clients("mcp") else { return };
    let (_tmp, config, samples) = indexed_data_dir("");
    let bell = bell_id(&config);
    let calls = json!([
        {"name": "audio_search", "arguments": {"query": "a single struck bell", "limit": 3}},
        {"name": "audio_search", "arguments": {"query": 5}},
        {"name": "no_such_tool", "arguments": {}},
        {"name": "get_date_time", "arguments": {}},
        {"name": "voice_list", "arguments": {}},
        {"name": "audio_clip", "arguments": {"id": bell}},
        {"name": "audio_clip", "arguments": {"id": "0000000000000000"}},
    ]);
    let binary = env!("CARGO_BIN_EXE_voxloop");
    let report = client(&pyclients, &["stdio", binary], &calls, &[("VOXLOOP_CONFIG", &config)]);
    assert_eq!(report["server"], "voxloop");

    let search = tool(&report, "audio_search");
    assert_eq!(search["inputSchema"]["type"], "object", "{search}");
    assert!(search["inputSchema"]["properties"]["query"].is_object(), "{search}");
    assert_eq!(search["inputSchema"]["required"], json!(["query"]), "{search}");
    assert!(!search["description"].as_str().unwrap().is_empty());
    tool(&report, "get_date_time");
    let names: Vec<&str> =
        report["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"web_search"), "disabled tools are not offered: {names:?}");

    let results = report["calls"].as_array().unwrap();
    assert_eq!(results[0]["isError"], false, "{}", results[0]);
    assert!(results[0]["text"].as_str().unwrap().contains("bell_strike"), "{}", results[0]);
    assert_eq!(results[1]["isError"], true, "{}", results[1]);
    assert!(results[1]["text"].as_str().unwrap().contains("query"), "names the bad field");
    assert_eq!(results[2]["isError"], true, "{}", results[2]);
    let unknown = results[2]["text"].as_str().unwrap();
    assert!(unknown.contains("no tool named `no_such_tool`") && unknown.contains("audio_search"));
    assert_eq!(results[3]["isError"], false, "{}", results[3]);
    // The voice library, as JSON the caller can read names from.
    assert_eq!(results[4]["isError"], false, "{}", results[4]);
    let voices: Value = serde_json::from_str(results[4]["text"].as_str().unwrap()).unwrap();
    assert_eq!(voices[0]["name"], "fixture", "{voices}");
    // The clip itself, as audio content: the file's bytes, whole.
    let wav_bytes = std::fs::metadata(samples.join("generated/bell_strike.wav")).unwrap().len();
    assert_eq!(results[5]["isError"], false, "{}", results[5]);
    assert_eq!(results[5]["audio"], json!([{"mimeType": "audio/wav", "bytes": wav_bytes}]));
    assert_eq!(results[6]["isError"], true, "{}", results[6]);
    assert!(results[6]["text"].as_str().unwrap().contains("no clip with id"), "{}", results[6]);
    assert_eq!(tool(&report, "audio_clip")["inputSchema"]["required"], json!(["id"]));
}

/// A token2wav directory with the fixtures of both halves: the tiny flow and HiFT
/// (`voices/tests/fixtures/token2wav`) and the tiny S3 tokenizer and CAM++
/// (`voices/tests/fixtures/profile`), linked into `dir`.
fn token2wav_dir(dir: &Path) -> PathBuf {
    let out = dir.join("token2wav");
    std::fs::create_dir_all(&out).unwrap();
    let fixtures = root().join("voices/tests/fixtures");
    for file in ["flow.pt", "flow.yaml", "hift.pt", "hift.json"] {
        std::os::unix::fs::symlink(fixtures.join("token2wav").join(file), out.join(file)).unwrap();
    }
    for file in ["speech_tokenizer_v2_25hz.onnx", "campplus.onnx"] {
        std::os::unix::fs::symlink(fixtures.join("profile").join(file), out.join(file)).unwrap();
    }
    out
}

/// `voice_add` from a base64 recording (and, on stdio, from a path), then `voice_list` shows
/// it; `speak` renders codes in a library voice as WAV; bad arguments are error results. Each
/// result's structured content is checked by the SDK against the tool's output schema.
#[test]
fn voices_are_added_and_codes_spoken_over_stdio() {
    let Some(pyclients) = support::python_clients("mcp") else { return };
    let ort = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    if !ort.is_some_and(|path| path.is_file()) {
        assert!(
            std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() != Ok("1"),
            "ORT_DYLIB_PATH is needed for voice profiles (scripts/onnxruntime.sh)"
        );
        eprintln!("no ONNX Runtime: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t2w = token2wav_dir(tmp.path());
    // The tiny checkpoint reads `speak`'s text (loaded at the first such call).
    let model = root().join("core/tests/fixtures/llm/tiny_a");
    let (_data, config) = data_dir(&format!(
        "[voice]\ntoken2wav = {:?}\n[model]\ndir = {:?}\n[agent]\nmax_new_tokens = 40\nseed = 5\n",
        t2w.display().to_string(),
        model.display().to_string()
    ));
    let recording = root().join("voices/tests/fixtures/profile/voice_16k.wav");
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&recording).unwrap());
    let calls = json!([
        {"name": "voice_add", "arguments": {"name": "guest", "description": "a test voice", "audio": b64}},
        {"name": "voice_add", "arguments": {"name": "guest", "audio": b64}},
        {"name": "voice_add", "arguments": {"name": "local", "path": recording.display().to_string()}},
        {"name": "voice_add", "arguments": {"name": "junk", "audio": "bm90IGF1ZGlv"}},
        {"name": "voice_list", "arguments": {}},
        {"name": "speak", "arguments": {"voice": "fixture", "codes": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]}},
        {"name": "speak", "arguments": {"voice": "nobody", "codes": [1]}},
        {"name": "speak", "arguments": {"voice": "fixture", "codes": [7000]}},
        {"name": "speak", "arguments": {"voice": "fixture", "text": "Hello there."}},
        {"name": "speak", "arguments": {"voice": "fixture", "text": "Hi.", "codes": [1]}},
    ]);
    let binary = env!("CARGO_BIN_EXE_voxloop");
    let report = client(&pyclients, &["stdio", binary], &calls, &[("VOXLOOP_CONFIG", &config)]);
    let results = report["calls"].as_array().unwrap();

    let added = &results[0];
    assert_eq!(added["isError"], false, "{added}");
    assert_eq!(added["structured"]["name"], "guest", "{added}");
    assert!(added["structured"]["prompt_tokens"].as_u64().unwrap() > 0, "{added}");
    assert_eq!(added["structured"]["indexed"], true, "registered in the audio index: {added}");
    assert_eq!(results[1]["isError"], true, "a second voice of that name: {}", results[1]);
    assert!(results[1]["text"].as_str().unwrap().contains("replace"), "{}", results[1]);
    assert_eq!(results[2]["isError"], false, "a path on stdio: {}", results[2]);
    assert_eq!(results[3]["isError"], true, "{}", results[3]);
    assert!(results[3]["text"].as_str().unwrap().contains("`audio`"), "{}", results[3]);
    let voices: Value = serde_json::from_str(results[4]["text"].as_str().unwrap()).unwrap();
    let names: Vec<&str> =
        voices.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"guest") && names.contains(&"local"), "{names:?}");

    let spoken = &results[5];
    assert_eq!(spoken["isError"], false, "{spoken}");
    assert_eq!(spoken["structured"]["codes"], 25);
    assert_eq!(spoken["structured"]["sample_rate"], 24_000);
    let audio = &spoken["audio"][0];
    assert_eq!(audio["mimeType"], "audio/wav", "{spoken}");
    let seconds = spoken["structured"]["seconds"].as_f64().unwrap();
    assert!(seconds > 0.5, "25 codes are a second of speech: {seconds}");
    assert_eq!(audio["bytes"].as_u64().unwrap(), 44 + 2 * (seconds * 24_000.0).round() as u64);
    assert!(results[6]["text"].as_str().unwrap().contains("no voice \"nobody\""), "{}", results[6]);
    assert!(results[7]["text"].as_str().unwrap().contains("codes[0]"), "{}", results[7]);
    // Text: the model reads it into codes, rendered as codes are.
    let read = &results[8];
    assert_eq!(read["isError"], false, "{read}");
    assert!(read["structured"]["codes"].as_u64().unwrap() > 0, "{read}");
    assert_eq!(read["audio"][0]["mimeType"], "audio/wav", "{read}");
    assert_eq!(results[9]["isError"], true, "{}", results[9]);
    assert!(results[9]["text"].as_str().unwrap().contains("not both"), "{}", results[9]);
    let speak = tool(&report, "speak");
    assert_eq!(speak["inputSchema"]["required"], json!(["voice"]), "{speak}");
    assert_eq!(speak["inputSchema"]["properties"]["text"]["type"], "string", "{speak}");

    for name in ["voice_add", "speak", "audio_clip"] {
        assert_eq!(tool(&report, name)["outputSchema"]["type"], "object", "{name}");
    }
}

#[test]
fn a_client_over_its_rate_limit_gets_an_error_result() {
    let Some(pyclients) = support::python_clients("mcp") else { return };
    // One call a minute: the second of two calls in a row is over the limit.
    let (_tmp, config) = data_dir("[mcp]\ncalls_per_minute = 1\n");
    let calls = json!([
        {"name": "get_date_time", "arguments": {}},
        {"name": "get_date_time", "arguments": {}},
    ]);
    let binary = env!("CARGO_BIN_EXE_voxloop");
    let report = client(&pyclients, &["stdio", binary], &calls, &[("VOXLOOP_CONFIG", &config)]);
    let results = report["calls"].as_array().unwrap();
    assert_eq!(results[0]["isError"], false, "{}", results[0]);
    assert_eq!(results[1]["isError"], true, "{}", results[1]);
    assert!(results[1]["text"].as_str().unwrap().contains("rate limit"), "{}", results[1]);
}

#[test]
fn the_service_answers_mcp_over_http_behind_its_bearer_token() {
    let Some(pyclients) = support::python_clients("mcp") else { return };
    let (_tmp, config) = data_dir("[mcp]\nbearer_token = \"t0ken\"\n");
    let (child, addr) = support::start_server(voxloop(&config));
    let _server = support::Server { child, addr, _dir: None };

    let (status, body) = support::http_post(addr, "/mcp", "{}");
    assert_eq!(status, 401, "no token: {body}");
    assert!(body.contains("bearer_token"), "{body}");

    let url = format!("http://{addr}/mcp");
    let calls = json!([{"name": "audio_search", "arguments": {"query": "a single struck bell"}}]);
    let report = client(&pyclients, &["http", &url, "t0ken"], &calls, &[]);
    let results = report["calls"].as_array().unwrap();
    assert_eq!(results[0]["isError"], false, "{}", results[0]);
    assert!(results[0]["text"].as_str().unwrap().contains("bell_strike"), "{}", results[0]);

    // The schema MCP lists is the one the model is told of (/v1/tools).
    let (status, body) = support::http_request(addr, "GET", "/v1/tools", None);
    assert_eq!(status, 200, "{body}");
    let tools = support::json_body(&body);
    let declared =
        tools.as_array().unwrap().iter().find(|t| t["function"]["name"] == "audio_search").unwrap();
    assert_eq!(tool(&report, "audio_search")["inputSchema"], declared["function"]["parameters"]);
}
