//! The realtime WebSocket (`GET /v1/realtime`), end to end: the real `voxloop serve` on the
//! tiny random checkpoint with the token2wav fixture and its voice, Silero VAD
//! (`VOXLOOP_SILERO_VAD`, `scripts/silero_vad.sh`), driven by the official OpenAI Python SDK's
//! realtime client (`tests/realtime/client.py`; PyPI `openai` + `websockets` installed by
//! `scripts/pyclients.sh`).
//!
//! Random weights say gibberish: the assertions are on event order, ids, item shapes, audio
//! amounts, statuses and the session's history, never on words.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::Server;

/// The Silero VAD model, or `None` (skipped; a failure under `VOXLOOP_REQUIRE_MODELS=1`).
fn vad_model() -> Option<PathBuf> {
    support::silero_vad()
}

/// The spoken question of these tests (espeak-ng), `None` when it cannot be recorded.
fn question(dir: &Path) -> Option<PathBuf> {
    support::spoken_question(dir, "what time is it in Paris right now")
}

/// `voxloop serve` on the tiny checkpoint with rendered speech and server VAD.
fn serve(vad: &Path, extra: &str) -> Server {
    support::serve_speaking(&format!("[realtime]\nvad_model = {vad:?}\n{extra}"))
}

/// Runs `tests/realtime/client.py <command> <addr> <args>`; its JSON report.
fn client(pyclients: &Path, command: &str, addr: SocketAddr, args: &[&Path]) -> Value {
    support::python_report(pyclients, "tests/realtime/client.py", command, addr, args)
}

fn position(types: &[Value], kind: &str) -> usize {
    types.iter().position(|t| t == kind).unwrap_or_else(|| panic!("no {kind} in {types:?}"))
}

/// (a) Speech in through server VAD, speech out, with a server-side tool call: the SDK
/// parses every event; VAD hears the question start and stop (start before stop, inside the
/// streamed audio); the committed item is answered without a `response.create`; the forced
/// `get_date_time` call shows as a function_call item followed by its output; audio deltas
/// carry PCM16 and the response ends completed with usage. The connection is a saved session.
#[test]
fn speech_in_with_server_vad_gets_a_spoken_answer_and_a_server_tool_call() {
    let Some(pyclients) = support::python_clients("websockets") else { return };
    let Some(vad) = vad_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(wav) = question(dir.path()) else { return };
    let server = serve(&vad, "");
    let report = client(&pyclients, "speech", server.addr, &[&wav]);
    assert!(report["errors"].as_array().unwrap().is_empty(), "{}", report["errors"]);

    let session = &report["session"];
    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("conv_"), "{session}");
    assert_eq!(session["audio"]["input"]["turn_detection"]["type"], "server_vad", "{session}");
    assert_eq!(report["updated"]["audio"]["input"]["turn_detection"]["silence_duration_ms"], 400);

    let started = &report["speech_started"].as_array().unwrap();
    let stopped = &report["speech_stopped"].as_array().unwrap();
    assert_eq!(started.len(), 1, "one utterance: {started:?}");
    assert_eq!(stopped.len(), 1, "one utterance: {stopped:?}");
    let (start, end) = (
        started[0]["audio_start_ms"].as_u64().unwrap(),
        stopped[0]["audio_end_ms"].as_u64().unwrap(),
    );
    // 500 ms of silence lead the question; the prefix padding reaches back at most 300 ms.
    assert!((150..1500).contains(&start), "speech starts after the leading silence: {start}");
    assert!(end > start + 500, "the question lasts more than half a second: {start}..{end}");
    assert_eq!(started[0]["item_id"], stopped[0]["item_id"]);
    assert_eq!(report["committed"][0]["item_id"], started[0]["item_id"]);

    let types = report["types"].as_array().unwrap();
    let order = [
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "response.created",
        "response.function_call_arguments.done",
        "response.done",
    ];
    let at: Vec<usize> = order.iter().map(|k| position(types, k)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "events out of order: {types:?}");

    let calls = report["calls"].as_array().unwrap();
    assert_eq!(calls[0]["name"], "get_date_time", "{calls:?}");
    let args: Value = serde_json::from_str(calls[0]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.is_object(), "{args}");
    let items = report["items"].as_array().unwrap();
    let output = items
        .iter()
        .find(|i| i["type"] == "function_call_output" && i["call_id"] == calls[0]["call_id"])
        .unwrap_or_else(|| panic!("no output for the call: {items:?}"));
    assert!(!output["output"].as_str().unwrap().is_empty(), "{output}");

    let response = &report["response"];
    assert_eq!(response["status"], "completed", "{response}");
    assert_eq!(response["conversation_id"], id);
    assert!(report["audio_bytes"].as_u64().unwrap() > 0, "audio deltas were sent");
    assert_eq!(report["audio_bytes"].as_u64().unwrap() % 2, 0, "PCM16");
    let usage = &response["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["output_tokens"].as_u64().unwrap() > 0, "{usage}");
    let transcripts: Vec<&str> =
        report["transcripts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(transcripts.concat(), report["transcript_deltas"], "done = the deltas");

    let saved = support::session(server.addr, id);
    assert_eq!(saved["turns"], 1, "{saved}");
    assert!(
        saved["history_entries"].as_u64().unwrap() >= 5,
        "system, tools, user, call, result, answer: {saved}"
    );
}

/// (b) A tool the client declares: the response ends with its function_call item (schema-valid
/// arguments); a `function_call_output` item and `response.create` continue the conversation,
/// which then answers in text; the same output twice is an `error` naming the event.
#[test]
fn a_client_tool_round_trips_through_function_call_output() {
    let Some(pyclients) = support::python_clients("websockets") else { return };
    let Some(vad) = vad_model() else { return };
    let server = serve(&vad, "");
    let report = client(&pyclients, "client_tool", server.addr, &[]);
    let first = &report["first"];
    assert_eq!(first["status"], "completed", "{first}");
    let calls = report["calls"].as_array().unwrap();
    assert!(!calls.is_empty(), "the named client tool was called: {first}");
    assert_eq!(calls[0]["name"], "lookup_order");
    let args: Value = serde_json::from_str(calls[0]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["order"].is_string(), "{args}");
    let output = &report["output_item"];
    assert_eq!(output["type"], "function_call_output", "{output}");
    assert_eq!(output["call_id"], calls[0]["call_id"]);
    let second = &report["second"];
    assert_eq!(second["status"], "completed", "{second}");
    assert!(
        second["output"].as_array().unwrap().iter().all(|i| i["type"] == "message"),
        "tool_choice none answers without calls: {second}"
    );
    let again = &report["again"];
    assert_eq!(again["event_id"], "evt_again", "{again}");
    assert!(again["message"].as_str().unwrap().contains("already"), "{again}");
}

/// (b2) A client call that is never answered: the next user message first gives it a result
/// saying so (a `function_call_output` item the client sees, and a history entry), so the
/// model never reads a call without its result.
#[test]
fn a_client_call_never_answered_gets_a_result_before_the_talk_goes_on() {
    let Some(pyclients) = support::python_clients("websockets") else { return };
    let Some(vad) = vad_model() else { return };
    let server = serve(&vad, "");
    let report = client(&pyclients, "unanswered", server.addr, &[]);
    let calls: Vec<&Value> = report["first"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    assert!(!calls.is_empty(), "the named tool was called: {}", report["first"]);
    let items = report["items"].as_array().unwrap();
    // A malformed call is answered by the server at once: only the others are the client's.
    let first = report["first"]["output"].as_array().unwrap();
    let server_answered = |id: &Value| {
        first.iter().any(|i| i["type"] == "function_call_output" && &i["call_id"] == id)
    };
    let client_calls: Vec<&Value> =
        calls.iter().map(|c| &c["call_id"]).filter(|id| !server_answered(id)).collect();
    let (outputs, rest) = items.split_at(client_calls.len().min(items.len()));
    let mut called = client_calls;
    let mut answered: Vec<&Value> = outputs.iter().map(|o| &o["call_id"]).collect();
    called.sort_by_key(|v| v.to_string());
    answered.sort_by_key(|v| v.to_string());
    assert_eq!(called, answered, "one output per unanswered call: {items:?}");
    for output in outputs {
        assert_eq!(output["type"], "function_call_output", "{items:?}");
        assert!(output["output"].as_str().unwrap().contains("no output"), "{output}");
    }
    assert_eq!(rest[0]["role"], "user", "then the user's message: {items:?}");
    assert_eq!(report["second"]["status"], "completed", "{}", report["second"]);
    // system, tools, user, the calls, a result for each, user, answer.
    let saved = support::session(server.addr, report["session"].as_str().unwrap());
    assert_eq!(saved["history_entries"], 6 + calls.len(), "{saved}");
}

/// (c) `response.cancel` and barge-in: a cancelled response ends `cancelled`
/// (`client_cancelled`) and its item is truncated to the audio that was sent; speech appended
/// while an answer plays is heard (speech_started), cancels it (`turn_detected`) and is
/// committed; the client's own truncate is acknowledged; the session still answers.
#[test]
fn cancel_and_barge_in_stop_the_answer_and_keep_what_was_heard() {
    let Some(pyclients) = support::python_clients("websockets") else { return };
    let Some(vad) = vad_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(wav) = question(dir.path()) else { return };
    let server = serve(&vad, "");
    let report = client(&pyclients, "cancel", server.addr, &[&wav]);
    assert!(report["errors"].as_array().unwrap().is_empty(), "{}", report["errors"]);

    let cancelled = &report["cancelled"];
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["status_details"]["reason"], "client_cancelled", "{cancelled}");
    let truncated = report["truncated"].as_array().unwrap();
    assert_eq!(truncated.len(), 1, "{truncated:?}");
    assert_eq!(truncated[0]["item_id"], report["first_item"]);
    let sent_ms = report["audio_bytes_1"].as_u64().unwrap() * 1000 / (2 * 24_000);
    assert_eq!(truncated[0]["audio_end_ms"].as_u64().unwrap(), sent_ms, "cut at what was sent");

    let barged = &report["barged"];
    assert_eq!(barged["status"], "cancelled", "{barged}");
    assert_eq!(barged["status_details"]["reason"], "turn_detected", "{barged}");
    let types = report["barge_types"].as_array().unwrap();
    assert!(
        position(types, "input_audio_buffer.speech_started") < position(types, "response.done")
    );
    assert_eq!(report["barge_truncated"].as_array().unwrap().len(), 1, "{types:?}");

    assert_eq!(report["client_truncated"]["audio_end_ms"], 40);
    assert_eq!(report["last"]["status"], "completed", "{}", report["last"]);
}

/// (d) Bad input: every bad frame or event gets an `error` naming its event (where it had an
/// id) and the problem; afterwards the connection still answers.
#[test]
fn bad_events_get_errors_and_the_connection_stays_usable() {
    let Some(pyclients) = support::python_clients("websockets") else { return };
    let Some(vad) = vad_model() else { return };
    let server = serve(&vad, "");
    let report = client(&pyclients, "errors", server.addr, &[]);
    let expect = [
        ("not_json", None, "invalid_json"),
        ("unknown", Some("evt_unknown"), "unknown_event_type"),
        ("odd_audio", Some("evt_odd"), "invalid_value"),
        ("bad_base64", Some("evt_b64"), "invalid_value"),
        ("empty_commit", Some("evt_commit"), "input_audio_buffer_commit_empty"),
        ("cancel_idle", Some("evt_cancel"), "response_cancel_not_active"),
        ("nothing_to_answer", Some("evt_resp"), "invalid_value"),
        ("bad_update", Some("evt_update"), "invalid_value"),
        ("truncate_unknown", Some("evt_trunc"), "invalid_value"),
        ("assistant_item", Some("evt_role"), "invalid_value"),
    ];
    for (case, event_id, code) in expect {
        let error = &report[case];
        assert_eq!(error["code"], code, "{case}: {error}");
        assert_eq!(error["event_id"].as_str(), event_id, "{case}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{case}: {error}");
    }
    assert_eq!(report["bad_update"]["param"], "session.output_modalities");
    assert_eq!(report["updated"]["output_modalities"][0], "text");
    assert_eq!(report["response"]["status"], "completed", "{}", report["response"]);
}

/// (e) Over `[realtime] max_connections`, and without a model, the upgrade is refused with
/// 503 and `Retry-After` (before any WebSocket exists).
#[test]
fn refused_upgrades_answer_503() {
    let Some(vad) = vad_model() else { return };
    let server = serve(&vad, "max_connections = 1\n");
    let upgrade = |addr: SocketAddr| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /v1/realtime HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 512];
        let n = stream.read(&mut head).unwrap();
        (stream, String::from_utf8_lossy(&head[..n]).into_owned())
    };
    let (_held, first) = upgrade(server.addr);
    assert!(first.starts_with("HTTP/1.1 101"), "{first}");
    let (_, second) = upgrade(server.addr);
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(second.to_ascii_lowercase().contains("retry-after: 1"), "{second}");
}

/// (f) A slow server tool (the MCP test server's `pause`, 1.5 s): once it has run
/// `filler_delay_ms`, the filler (here a 0.5 s tone file) plays as an assistant message item of
/// its own, between the call and its output, all of it; then the answer goes on. Only `pause`
/// is allowed: the tiny model's context is short.
#[test]
fn a_slow_tool_gets_the_filler_between_the_call_and_its_result() {
    let Some(pyclients) = support::python_clients("mcp") else { return };
    let Some(vad) = vad_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone.wav");
    std::fs::write(&tone, support::tone_wav(0.5)).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mcp_server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.py");
    let server = serve(
        &vad,
        &format!(
            "filler_sound = {tone:?}\nfiller_delay_ms = 200\n\n\
             [agent.policies]\nallow = [\"py__pause\"]\n\n[[mcp.servers]]\nname = \"py\"\n\
             command = {python:?}\nargs = [{mcp_server:?}]\nenv = {{ PYTHONPATH = {pyclients:?} }}\n"
        ),
    );
    let report = client(&pyclients, "filler", server.addr, &[]);
    assert_eq!(report["response"]["status"], "completed", "{}", report["response"]);

    let sequence = report["sequence"].as_array().unwrap();
    let is = |s: &Value, kind: &str, item_type: &str| s[0] == kind && s[1] == item_type;
    // From the step's first call to its last output (a malformed call of the random model is
    // answered at once, so outputs may come before the filler; the pause's output comes last).
    let call = sequence
        .iter()
        .position(|s| is(s, "response.output_item.added", "function_call"))
        .expect("a call");
    let output = sequence
        .iter()
        .rposition(|s| is(s, "conversation.item.added", "function_call_output"))
        .expect("its output");
    let filler = sequence[call..output]
        .iter()
        .find(|s| s[0] == "response.output_item.added" && s[1] == "message")
        .unwrap_or_else(|| panic!("no filler between the call and its output: {sequence:?}"));
    let filler_id = filler[2].as_str().unwrap();
    // 0.5 s at 16 kHz resampled to 24 kHz: 12 000 samples of PCM16.
    assert_eq!(report["audio_by_item"][filler_id], 24_000, "{}", report["audio_by_item"]);
    let outputs = report["outputs"].as_array().unwrap();
    assert!(outputs.iter().any(|o| o["output"] == "paused 1.5 s"), "{outputs:?}");
    let items = report["response"]["output"].as_array().unwrap();
    assert!(items.iter().any(|i| i["id"] == filler_id), "the filler is in the response's output");
}

/// A server that thinks (`[agent] think = "on"`): the think phase reaches the SDK as
/// voxloop's `voxloop.reasoning.delta` events of the response, before its text, and is no
/// part of the response's output.
#[test]
fn a_thinking_server_sends_reasoning_deltas_before_the_answer() {
    let Some(pyclients) = support::python_clients("websockets") else { return };
    let Some(vad) = vad_model() else { return };
    let server = serve(&vad, "[agent]\nthink = \"on\"\nreasoning_max_tokens = 6\nseed = 7\n");
    let report = client(&pyclients, "think", server.addr, &[]);
    let response = &report["response"];
    assert_eq!(response["status"], "completed", "{response}");
    let reasoning: String =
        report["reasoning"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(!reasoning.is_empty(), "{report}");
    assert_eq!(report["response_ids"], serde_json::json!([response["id"]]), "{report}");
    let types = report["types"].as_array().unwrap();
    let last_reasoning = types.iter().rposition(|t| t == "voxloop.reasoning.delta").unwrap();
    if let Some(text) = types.iter().position(|t| t == "response.output_text.delta") {
        assert!(last_reasoning < text, "{types:?}");
    }
    let output = response["output"].to_string();
    assert!(!output.contains(&reasoning), "the thinking is not an output item: {response}");
}
