//! The agent over HTTP, end to end: the real `voxloop serve` binary on the tiny random
//! checkpoint (`core/tests/fixtures/llm/tiny_a`), sessions and turns streamed as SSE.
//!
//! Random weights never say `<|EOT|>`: every session is seeded and its steps are short.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use support::{
    create_session, http_get, http_post, http_request, json_body, session, Server, Sse, SseEvent,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts `voxloop serve` with `toml` after a `[paths]` table whose data dir is empty (no
/// index, no voices) and, if `model`, the tiny checkpoint.
fn serve(model: bool, toml: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxloop.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, format!("[paths]\ndata_dir = {data:?}\n\n{toml}\n")).unwrap();
    let (child, addr) = support::start_server(support::serve_command(&config, model));
    Server { child, addr, _dir: Some(dir) }
}

/// The tools that would need the network are off.
const OFFLINE_TOOLS: &str =
    "[tools.web_search]\nenabled = false\n\n[tools.weather]\nenabled = false\n";

/// The `[agent]` table of every test: short, seeded steps.
const AGENT: &str = "[agent]\nmax_new_tokens = 12\nseed = 7\n";

/// The configuration of most tests.
fn basic() -> String {
    format!("{OFFLINE_TOOLS}\n{AGENT}")
}

/// Runs a turn to its end and returns its events.
fn turn(addr: SocketAddr, id: &str, body: Value) -> Vec<SseEvent> {
    let path = format!("/v1/sessions/{id}/turns");
    match Sse::post(addr, &path, &body.to_string()) {
        Ok(sse) => sse.collect(),
        Err((status, text)) => panic!("turn refused with {status}: {text}"),
    }
}

fn data(event: &SseEvent) -> Value {
    json_body(&event.data)
}

/// Checks that exactly one `done` ends the events and returns its data.
fn done(events: &[SseEvent]) -> Value {
    let dones = events.iter().filter(|e| e.event == "done").count();
    assert_eq!(dones, 1, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last.event, "done", "{events:?}");
    data(last)
}

fn position(events: &[SseEvent], name: &str) -> Option<usize> {
    events.iter().position(|e| e.event == name)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn text_turns_stream_events_and_end_with_one_done() {
    let server = serve(true, &basic());
    let addr = server.addr;
    let health = json_body(http_get(addr, "/healthz").split("\r\n\r\n").nth(1).unwrap());
    assert_eq!(health["agent"]["tools"], json!(["get_date_time"]), "{health}");
    assert!(health["agent"]["voice"].is_null(), "no token2wav in the tiny checkpoint: {health}");

    let id = create_session(addr, r#"{"tool_choice": "none"}"#);
    let events = turn(addr, &id, json!({ "text": "Hello there, who are you?" }));
    let streamed = events.iter().filter(|e| e.event == "text" || e.event == "audio_tokens");
    assert!(streamed.count() >= 1, "{events:?}");
    let usage = position(&events, "usage").expect("a usage event");
    assert!(usage < events.len() - 1);
    let end = done(&events);
    assert_eq!(end["reason"], "completed", "{end}");
    assert_eq!(end["turns"], 1);
    let generated = end["usage"]["output_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&generated), "{end}");
    for event in &events {
        if event.event == "audio_tokens" {
            let codes = data(event)["codes"].as_array().unwrap().clone();
            assert!(!codes.is_empty() && codes.iter().all(|c| c.as_u64().unwrap() < 6561));
        }
    }
    assert!(position(&events, "audio").is_none(), "no voice is loaded: no audio");

    let events = turn(addr, &id, json!({ "text": "And what can you do?" }));
    assert_eq!(done(&events)["turns"], 2);
    let summary = session(addr, &id);
    assert_eq!(summary["turns"], 2, "{summary}");
    assert_eq!(summary["busy"], false);
    assert_eq!(summary["last_end_reason"], "completed");
    // system, declarations, then (human, assistant) twice
    assert_eq!(summary["history_entries"], 6, "{summary}");
    assert!(summary["cached_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn a_forced_tool_call_streams_call_and_result_before_done() {
    let server = serve(true, &basic());
    let addr = server.addr;
    // A call written under the grammar needs more than 12 tokens.
    let id = create_session(
        addr,
        r#"{"tool_choice": "get_date_time", "max_new_tokens": 48, "max_steps": 1, "mode": "text"}"#,
    );
    let events = turn(addr, &id, json!({ "text": "What time is it?" }));
    // The first call is the forced one; the random model may chain more until the token limit
    // cuts the last short (that one is answered at once, as invalid): find the first's result.
    let call = position(&events, "tool_call").unwrap_or_else(|| panic!("{events:?}"));
    let call_id = data(&events[call])["id"].clone();
    let result = events
        .iter()
        .position(|e| e.event == "tool_result" && data(e)["id"] == call_id)
        .unwrap_or_else(|| panic!("no result for {call_id}: {events:?}"));
    assert!(call < result && result < events.len() - 1, "{events:?}");
    let (call, result) = (data(&events[call]), data(&events[result]));
    assert_eq!(call["name"], "get_date_time");
    assert_eq!(result["id"], call["id"]);
    assert_eq!(result["ok"], true, "{result}");
    assert!(!result["output"].as_str().unwrap().is_empty());
    // The one step allowed to call tools did: the answer came from one more step, without.
    let end = done(&events);
    assert_eq!(end["reason"], "max_steps", "{end}");
    assert_eq!(session(addr, &id)["mode"], "text");
}

#[test]
fn bad_requests_are_refused_clearly_and_leave_the_session_usable() {
    let server = serve(true, &basic());
    let addr = server.addr;
    let id = create_session(addr, "");
    let path = format!("/v1/sessions/{id}/turns");

    let cases: Vec<(String, u16, &str)> = vec![
        (json!({ "audio": "@@not base64@@" }).to_string(), 400, "base64"),
        (
            json!({ "audio": b64(b"this is plain text, not a sound file") }).to_string(),
            400,
            "not a supported audio file",
        ),
        (json!({ "text": "  " }).to_string(), 400, "needs"),
        (json!({ "text": 5 }).to_string(), 400, "invalid type"),
        (json!({ "text": "hi", "voice": "x" }).to_string(), 400, "voice"),
        (json!({ "text": "hi", "tool_choice": "no_such_tool" }).to_string(), 400, "no_such_tool"),
        ("{\"text\": ".to_owned(), 400, ""),
    ];
    for (body, status, needle) in &cases {
        let (got, text) = http_post(addr, &path, body);
        assert_eq!(got, *status, "{body}: {text}");
        let message = json_body(&text)["error"].as_str().unwrap().to_owned();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, text) = http_post(addr, "/v1/sessions", r#"{"mode": "loud"}"#);
    assert_eq!(status, 400, "{text}");
    let (status, text) = http_post(addr, "/v1/sessions", r#"{"top_p": 3.0}"#);
    assert!(status == 400 && text.contains("top_p"), "{status} {text}");

    // A body over 32 MiB is refused from its Content-Length, before it is sent.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        40 << 20
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("exceeds the limit"), "{response}");

    let summary = session(addr, &id);
    assert_eq!(
        (summary["turns"].as_u64(), summary["history_entries"].as_u64()),
        (Some(0), Some(0))
    );

    // Speech in (a WAV upload) and text together: a real turn after all the refusals.
    let events =
        turn(addr, &id, json!({ "audio": b64(&support::tone_wav(1.0)), "text": "What is this?" }));
    assert_eq!(done(&events)["reason"], "completed");
    assert_eq!(session(addr, &id)["turns"], 1);
}

#[test]
fn unknown_and_deleted_sessions_are_404() {
    let server = serve(true, &basic());
    let addr = server.addr;
    let (status, text) = http_post(addr, "/v1/sessions/conv_nope/turns", r#"{"text": "hi"}"#);
    assert_eq!(status, 404, "{text}");
    assert!(json_body(&text)["error"].as_str().unwrap().contains("conv_nope"));
    assert_eq!(http_request(addr, "GET", "/v1/sessions/conv_nope", None).0, 404);

    let id = create_session(addr, "{}");
    let (status, _) = http_request(addr, "DELETE", &format!("/v1/sessions/{id}"), None);
    assert_eq!(status, 204);
    assert_eq!(http_request(addr, "GET", &format!("/v1/sessions/{id}"), None).0, 404);
    assert_eq!(http_request(addr, "DELETE", &format!("/v1/sessions/{id}"), None).0, 404);
}

#[test]
fn without_a_model_the_session_endpoints_are_503() {
    let server = serve(false, "");
    let (status, text) = http_post(server.addr, "/v1/sessions", "{}");
    assert_eq!(status, 503, "{text}");
    let message = json_body(&text)["error"].as_str().unwrap().to_owned();
    assert!(message.contains("[model] dir") && message.contains("VOXLOOP_MODEL_DIR"), "{message}");
    let (status, _) = http_post(server.addr, "/v1/sessions/x/turns", r#"{"text": "hi"}"#);
    assert_eq!(status, 503);
    let health = http_get(server.addr, "/healthz");
    assert!(health.contains("\"agent\":null"), "{health}");
}

/// A SearXNG stand-in that accepts the search request and never answers it, so that the
/// turn stays in its tool call as long as the test wants.
fn silent_search_backend() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn a_second_turn_is_409_and_a_client_that_leaves_cancels_its_turn() {
    let (backend, port) = silent_search_backend();
    let config = format!(
        "[tools.weather]\nenabled = false\n\n[tools.web_search]\nprovider = \"searxng\"\n\
         timeout_ms = 60000\n\n[tools.web_search.searxng]\nbase_url = \"http://127.0.0.1:{port}\"\n\n\
         {AGENT}\n[agent.policies.defaults]\ntimeout_ms = 60000\nretries = 0\n"
    );
    let server = serve(true, &config);
    let addr = server.addr;
    let id = create_session(addr, r#"{"tool_choice": "web_search", "max_new_tokens": 256}"#);
    let path = format!("/v1/sessions/{id}/turns");
    let mut first = Sse::post(addr, &path, r#"{"text": "Search the news"}"#).unwrap();
    loop {
        let event = first.next_event().expect("the stream ended before the tool call");
        assert_ne!(event.event, "done", "{event:?}");
        if event.event == "tool_call" {
            assert_eq!(data(&event)["name"], "web_search");
            break;
        }
    }
    // The tool is now waiting on the backend.
    let (mut upstream, _) = backend.accept().unwrap();
    let (status, text) = http_post(addr, &path, r#"{"text": "Are you there?"}"#);
    assert_eq!(status, 409, "{text}");
    assert!(json_body(&text)["error"].as_str().unwrap().contains("another turn"));
    assert_eq!(session(addr, &id)["busy"], true);

    // The client goes away: the turn is cancelled and its search abandoned, which closes
    // the connection to the backend.
    drop(first);
    upstream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = Vec::new();
    let read = upstream.read_to_end(&mut sink);
    assert!(read.is_ok(), "the search was not abandoned: {read:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let summary = loop {
        let summary = session(addr, &id);
        if summary["busy"] == false {
            break summary;
        }
        assert!(Instant::now() < deadline, "the turn did not end: {summary}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(summary["last_end_reason"], "interrupted", "{summary}");
    assert_eq!(summary["turns"], 1);
    // system, declarations, human, the calling assistant turn, and a result ("cancelled")
    // for each of its calls
    assert!(summary["history_entries"].as_u64().unwrap() >= 5, "{summary}");

    // The session goes on.
    let events = turn(addr, &id, json!({ "text": "Never mind.", "tool_choice": "none" }));
    assert_eq!(done(&events)["reason"], "completed");
    assert_eq!(session(addr, &id)["turns"], 2);
}

#[test]
fn with_a_voice_speech_codes_come_back_as_audio() {
    let voices = tempfile::tempdir().unwrap();
    let profile = support::fixture_voice(voices.path());
    let t2w = root().join("voices/tests/fixtures/token2wav");
    let extra = format!(
        "{OFFLINE_TOOLS}\n[agent]\nmax_new_tokens = 40\nseed = 7\n\n[voice]\ntoken2wav = {t2w:?}\n\
         dir = {:?}\nname = \"fixture\"\n",
        voices.path()
    );
    let server = serve(true, &extra);
    let addr = server.addr;
    let health = http_get(addr, "/healthz");
    assert!(health.contains("\"name\":\"fixture\""), "{health}");

    let id = create_session(addr, r#"{"tool_choice": "none"}"#);
    let events = turn(addr, &id, json!({ "text": "Say something." }));
    assert_eq!(done(&events)["reason"], "completed");
    let mut codes = Vec::new();
    let mut samples = 0usize;
    for event in &events {
        match event.event.as_str() {
            "audio_tokens" => codes.extend(
                data(event)["codes"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()),
            ),
            "audio" => {
                let audio = data(event);
                assert_eq!(audio["sample_rate"], 24_000);
                let pcm = base64::engine::general_purpose::STANDARD
                    .decode(audio["pcm16"].as_str().unwrap())
                    .unwrap();
                assert_eq!(pcm.len(), 2 * audio["samples"].as_u64().unwrap() as usize);
                samples += pcm.len() / 2;
            }
            "error" => panic!("{event:?}"),
            _ => {}
        }
    }
    assert!(!codes.is_empty(), "the tiny model spoke no speech codes: {events:?}");
    let last_audio = events.iter().rposition(|e| e.event == "audio").unwrap();
    assert!(last_audio < events.len() - 1, "audio comes before done");

    // The same codes through token2wav here, streaming and offline.
    let model = voxloop_voices::Token2Wav::load(&t2w, tch::Device::Cpu).unwrap();
    let mut stream = model.stream(&profile).unwrap();
    let mut expected = stream.push(&codes).unwrap().len();
    expected += stream.finish().unwrap().len();
    assert_eq!(samples, expected, "{} codes", codes.len());
    let offline = model.synthesize(&codes, &profile).unwrap().len();
    // streaming leads in with 3840 samples of silence (8 mel frames), as upstream
    assert_eq!(samples, offline + 3840);
    assert_eq!(session(addr, &id)["voice"], "fixture");
}
