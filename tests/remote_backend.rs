//! The remote model backend, end to end with two real processes: voxloop A serves Chat
//! Completions on the tiny random checkpoint (`core/tests/fixtures/llm/tiny_a`); voxloop B has
//! `[model] backend = "openai"` pointed at A (`VOXLOOP_MODEL_URL`) and runs session turns over
//! its own session API, with its tools run by B and its speech rendered by B from the codes A
//! streams.
//!
//! Random weights say gibberish, but the same history and seed draw the same ids: B's turn
//! must report what A reports when it runs the same turn in-process (text, speech codes, the
//! call and its result). Killing A mid-turn must end B's turn with an error naming the
//! backend, and B's session must take its next turn once A is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{
    create_session, http_get, http_post, json_body, serve_speaking, serve_speaking_with, session,
    Server, Sse, SseEvent,
};

/// B: the tiny checkpoint's tokenizer, generation on `a`, `extra` in its config.
fn serve_over(a: SocketAddr, extra: &str) -> Server {
    serve_speaking_with(extra, &[("VOXLOOP_MODEL_URL", format!("http://{a}/v1"))], "127.0.0.1:0")
}

/// A session forced to call `get_date_time` first, seeded with `seed`, short.
fn calling(seed: u64) -> String {
    json!({ "tool_choice": "get_date_time", "max_new_tokens": 40, "max_steps": 1, "seed": seed })
        .to_string()
}

fn run_turn(addr: SocketAddr, session: &str, body: &str) -> Vec<SseEvent> {
    let path = format!("/v1/sessions/{session}/turns");
    Sse::post(addr, &path, body).unwrap_or_else(|e| panic!("turn refused: {e:?}")).collect()
}

fn data(event: &SseEvent) -> Value {
    json_body(&event.data)
}

fn done(events: &[SseEvent]) -> Value {
    data(events.iter().rev().find(|e| e.event == "done").unwrap_or_else(|| panic!("{events:?}")))
}

/// What a turn said and did, without what differs between runs (call ids, timings, usage).
fn outcome(events: &[SseEvent]) -> Value {
    let (mut spoken, mut written, mut codes) = (String::new(), String::new(), Vec::new());
    let (mut calls, mut results) = (Vec::new(), Vec::new());
    for event in events {
        let d = data(event);
        match event.event.as_str() {
            "text" if d["in_speech"] == true => spoken.push_str(d["text"].as_str().unwrap()),
            "text" => written.push_str(d["text"].as_str().unwrap()),
            "audio_tokens" => codes.extend(d["codes"].as_array().unwrap().iter().cloned()),
            "tool_call" => calls.push(json!([d["name"], d["arguments"]])),
            "tool_result" => results.push(json!([d["name"], d["ok"], d["output"], d["error"]])),
            _ => {}
        }
    }
    json!({
        "spoken": spoken, "written": written, "codes": codes, "calls": calls,
        "results": results, "reason": done(events)["reason"],
    })
}

fn audio_turn() -> String {
    let wav = base64::engine::general_purpose::STANDARD.encode(support::tone_wav(1.5));
    json!({ "text": "What time is it?", "audio": wav }).to_string()
}

#[test]
fn a_turn_on_the_remote_model_reports_what_the_model_says_in_process() {
    let a = serve_speaking("");
    let b = serve_over(a.addr, "");
    let health = json_body(http_get(b.addr, "/healthz").split("\r\n\r\n").nth(1).unwrap());
    assert_eq!(health["agent"]["backend"], "openai", "{health}");
    assert!(health["agent"]["device"].is_null(), "the weights are elsewhere: {health}");
    assert_eq!(health["agent"]["model_url"], format!("http://{}/v1", a.addr), "{health}");

    let turn = audio_turn();
    // A call cut by the token limit is answered in-process with an error result, but a Chat
    // Completions client is never told of it (it cannot run it), so the two histories would
    // part there: take the first seed whose calls all came out whole on this machine.
    let (seed, local_session, local) = (1..=30)
        .find_map(|seed| {
            let id = create_session(a.addr, &calling(seed));
            let events = run_turn(a.addr, &id, &turn);
            let whole = outcome(&events)["calls"].as_array().unwrap().iter().all(|c| c[0] != "");
            whole.then_some((seed, id, events))
        })
        .expect("no seed in 1..=30 gave whole calls");
    let remote_session = create_session(b.addr, &calling(seed));
    let remote = run_turn(b.addr, &remote_session, &turn);
    let (want, got) = (outcome(&local), outcome(&remote));
    assert_eq!(got, want, "B over A must say what A says in-process\nB: {remote:?}");

    assert_eq!(want["calls"][0][0], "get_date_time", "{want}");
    assert_eq!(want["results"][0][1], true, "B ran the call: {want}");
    assert!(done(&remote).get("error").is_none(), "{:?}", done(&remote));
    let codes = want["codes"].as_array().unwrap().len();
    if codes > 0 {
        assert!(remote.iter().any(|e| e.event == "audio"), "B renders the codes A sent");
    }
    // The history B keeps takes the next turn (its assistant turns are replayed to A).
    let turns = |id: &str| session(b.addr, id)["turns"].as_u64().unwrap();
    let before = turns(&remote_session);
    let next =
        run_turn(b.addr, &remote_session, r#"{"text": "And the date?", "tool_choice": "none"}"#);
    assert_eq!(done(&next)["reason"], "completed", "{next:?}");
    assert_eq!(turns(&remote_session), before + 1);
    assert_eq!(session(a.addr, &local_session)["turns"], before, "one turn on each side");
}

#[test]
fn killing_the_remote_model_mid_turn_fails_the_turn_cleanly_and_the_session_goes_on() {
    let mut a = serve_speaking("");
    let a_addr = a.addr;
    let policy = "[agent.policies.tools.get_date_time]\napproval = true\n\n\
                  [model]\nretries = 1\nconnect_timeout_ms = 2000\nidle_timeout_ms = 20000\n";
    let b = serve_over(a_addr, policy);
    let body = calling(7).replace('}', r#", "mode": "text"}"#);
    let id = create_session(b.addr, &body);
    let mut sse = Sse::post(b.addr, &format!("/v1/sessions/{id}/turns"), r#"{"text": "Time?"}"#)
        .unwrap_or_else(|e| panic!("{e:?}"));
    // The first step came back from A with its call; B waits for the approval.
    // The first step came back from A with its calls; B asks for approval of each. A dies
    // at the first question; every call is approved, runs, and the next step finds no A.
    let approve = |call: &str| {
        let path = format!("/v1/sessions/{id}/approvals/{call}");
        let (status, text) = http_post(b.addr, &path, r#"{"approve": true}"#);
        assert!((200..300).contains(&status), "{status} {text}");
    };
    let mut rest = Vec::new();
    while let Some(event) = sse.next_event() {
        if event.event == "approval_request" {
            if a.child.try_wait().unwrap().is_none() {
                a.child.kill().unwrap();
                a.child.wait().unwrap();
            }
            approve(data(&event)["id"].as_str().unwrap());
        }
        rest.push(event);
    }
    assert!(a.child.try_wait().unwrap().is_some(), "no approval was asked: {rest:?}");
    let end = done(&rest);
    assert_eq!(end["reason"], "error", "{rest:?}");
    let message = end["error"].as_str().unwrap();
    assert!(message.contains("remote model"), "the error names the backend: {message}");
    let ran = rest.iter().filter(|e| e.event == "tool_result").all(|e| data(e)["ok"] == true);
    assert!(ran, "the approved calls ran: {rest:?}");

    // A is back on the same address: the session's next turn is answered.
    let _a = serve_speaking_with("", &[], &a_addr.to_string());
    let next = run_turn(b.addr, &id, r#"{"text": "Still there?", "tool_choice": "none"}"#);
    assert_eq!(done(&next)["reason"], "completed", "{next:?}");
    let summary = session(b.addr, &id);
    assert_eq!(summary["turns"], 2, "{summary}");
    assert_eq!(summary["last_end_reason"], "completed", "{summary}");
}
