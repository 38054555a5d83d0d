//! Approval gates over HTTP, end to end: the real `voxloop serve` binary on the tiny random
//! checkpoint with `get_date_time` configured `approval = true`. Each session forces a call of
//! it (`tool_choice`), the turn's stream asks for approval (`approval_request`), and the test
//! answers with `POST /v1/sessions/{id}/approvals/{call_id}` — or does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    create_session, http_get, http_post, http_request, json_body, session, signal, wait_exit,
    Server, Sse, SseEvent,
};

/// `voxloop serve` on the tiny checkpoint, the network tools off, short seeded steps, and
/// `get_date_time` waiting for approval (with `policy` added to its policy section).
fn serve(policy: &str) -> Server {
    serve_with("", policy)
}

/// [`serve`] with `agent` added to the `[agent]` table.
fn serve_with(agent: &str, policy: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxloop.toml");
    let data = dir.path().join("data");
    let toml = format!(
        "[paths]\ndata_dir = {data:?}\n\n[tools.web_search]\nenabled = false\n\n\
         [tools.weather]\nenabled = false\n\n[agent]\nmax_new_tokens = 12\nseed = 7\n{agent}\n\
         [agent.policies.tools.get_date_time]\napproval = true\n{policy}\n"
    );
    std::fs::write(&config, toml).unwrap();
    let (child, addr) = support::start_server(support::serve_command(&config, true));
    Server { child, addr, _dir: Some(dir) }
}

/// `/healthz`'s `agent` object.
fn agent_health(addr: SocketAddr) -> Value {
    let response = http_get(addr, "/healthz");
    json_body(response.split("\r\n\r\n").nth(1).unwrap())["agent"].clone()
}

/// How many calls wait for an approval, in all sessions.
fn pending(addr: SocketAddr) -> u64 {
    agent_health(addr)["pending_approvals"].as_u64().unwrap()
}

fn data(event: &SseEvent) -> Value {
    json_body(&event.data)
}

/// A session whose first step must call `get_date_time` (long enough for the grammar's
/// call) and whose second step answers without tools.
fn calling_session(addr: SocketAddr) -> String {
    create_session(
        addr,
        r#"{"tool_choice": "get_date_time", "max_new_tokens": 48, "max_steps": 1, "mode": "text"}"#,
    )
}

fn start_turn(addr: SocketAddr, id: &str) -> Sse {
    let path = format!("/v1/sessions/{id}/turns");
    Sse::post(addr, &path, r#"{"text": "What time is it?"}"#)
        .unwrap_or_else(|(status, text)| panic!("turn refused with {status}: {text}"))
}

/// Reads up to the next `approval_request` and returns its data (`None`: the stream ended),
/// keeping every event read in `seen`. Checks that the call's `tool_call` came first, with the
/// same name and arguments, and that the call has no result yet.
fn next_request(sse: &mut Sse, seen: &mut Vec<SseEvent>) -> Option<Value> {
    loop {
        let event = sse.next_event()?;
        seen.push(event.clone());
        if event.event != "approval_request" {
            continue;
        }
        let request = data(&event);
        let call = seen
            .iter()
            .filter(|e| e.event == "tool_call")
            .map(data)
            .find(|call| call["id"] == request["id"])
            .unwrap_or_else(|| panic!("no tool_call before {request}: {seen:?}"));
        assert_eq!(request["name"], "get_date_time");
        assert_eq!(request["arguments"], call["arguments"]);
        let answered = seen.iter().filter(|e| e.event == "tool_result").map(data);
        assert!(
            !answered.into_iter().any(|r| r["id"] == request["id"]),
            "a result before the answer: {seen:?}"
        );
        return Some(request);
    }
}

/// The ids of the calls of `events` (`tool_call`) and of the approval requests.
/// The ids of the turn's well-formed calls and of its approval requests. A call that
/// `max_new_tokens` cut short (the random model may chain calls until the limit) has no name:
/// it is answered at once as invalid, never gated; checked here.
fn call_ids(events: &[SseEvent]) -> (Vec<Value>, Vec<Value>) {
    let mut calls = Vec::new();
    for call in events.iter().filter(|e| e.event == "tool_call").map(data) {
        if call["name"] == "" {
            let result = result_of(events, &call["id"]);
            assert_eq!(result["error"]["kind"], "invalid_arguments", "{result}");
        } else {
            calls.push(call["id"].clone());
        }
    }
    let requests =
        events.iter().filter(|e| e.event == "approval_request").map(|e| data(e)["id"].clone());
    (calls, requests.collect())
}

fn answer(addr: SocketAddr, session: &str, call: &str, body: &str) -> (u16, String) {
    http_post(addr, &format!("/v1/sessions/{session}/approvals/{call}"), body)
}

fn error_message(text: &str) -> String {
    json_body(text)["error"].as_str().unwrap_or_else(|| panic!("no error: {text}")).to_owned()
}

/// The `tool_result` of call `id` among `events`.
fn result_of(events: &[SseEvent], id: &Value) -> Value {
    let results: Vec<Value> =
        events.iter().filter(|e| e.event == "tool_result").map(data).collect();
    results
        .iter()
        .find(|r| &r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no tool_result for {id}: {events:?}"))
}

/// The data of the one `done`, which must end `events`.
fn done(events: &[SseEvent]) -> Value {
    assert_eq!(events.iter().filter(|e| e.event == "done").count(), 1, "{events:?}");
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    data(events.last().unwrap())
}

/// Runs a turn without tools to its end; returns its `done`.
fn plain_turn(addr: SocketAddr, id: &str) -> Value {
    let path = format!("/v1/sessions/{id}/turns");
    let body = r#"{"text": "Never mind.", "tool_choice": "none"}"#;
    let events = Sse::post(addr, &path, body)
        .unwrap_or_else(|(status, text)| panic!("turn refused with {status}: {text}"))
        .collect();
    done(&events)
}

/// Waits until the session's turn has ended; returns its summary.
fn idle(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = session(addr, id);
        if summary["busy"] == false {
            return summary;
        }
        assert!(Instant::now() < deadline, "the turn did not end: {summary}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first approval request of a turn.
fn first_request(sse: &mut Sse, seen: &mut Vec<SseEvent>) -> Value {
    next_request(sse, seen).unwrap_or_else(|| panic!("no approval was asked: {seen:?}"))
}

/// Answers every approval request still to come with `body` and reads the turn to its end.
fn answer_the_rest(
    addr: SocketAddr,
    id: &str,
    sse: &mut Sse,
    seen: &mut Vec<SseEvent>,
    body: &str,
) {
    while let Some(request) = next_request(sse, seen) {
        let (status, text) = answer(addr, id, request["id"].as_str().unwrap(), body);
        assert_eq!(status, 204, "{text}");
    }
}

/// Checks that every call of the turn asked for approval exactly once; returns their results.
fn gated_results(events: &[SseEvent]) -> Vec<Value> {
    let (calls, mut requests) = call_ids(events);
    assert!(!calls.is_empty(), "{events:?}");
    let mut sorted = calls.clone();
    sorted.sort_by_key(Value::to_string);
    requests.sort_by_key(Value::to_string);
    assert_eq!(sorted, requests, "one approval request per call: {events:?}");
    calls.iter().map(|id| result_of(events, id)).collect()
}

#[test]
fn an_approved_call_runs_after_the_answer_and_bad_answers_are_refused() {
    let server = serve("");
    let addr = server.addr;
    let health = agent_health(addr);
    assert_eq!(health["approval_required"], json!(["get_date_time"]), "{health}");
    assert_eq!(health["pending_approvals"], 0, "{health}");

    let id = calling_session(addr);
    let mut sse = start_turn(addr, &id);
    let mut seen = Vec::new();
    let request = first_request(&mut sse, &mut seen);
    assert_eq!(request["timeout_ms"], 120_000, "the built-in approval timeout: {request}");
    let call = request["id"].as_str().unwrap().to_owned();
    assert_eq!(session(addr, &id)["busy"], true);
    assert!(pending(addr) >= 1);

    // Refusals that leave the call waiting.
    let (status, text) = answer(addr, &id, "call_nope", r#"{"approve": true}"#);
    assert_eq!(status, 404, "{text}");
    assert!(error_message(&text).contains("call_nope"), "{text}");
    let (status, text) = answer(addr, "conv_nope", &call, r#"{"approve": true}"#);
    assert_eq!(status, 404, "{text}");
    assert!(error_message(&text).contains("conv_nope"), "{text}");
    for body in [r#"{"approve": "yes"}"#, "{}", r#"{"approve": true, "why": 1}"#, "{"] {
        let (status, text) = answer(addr, &id, &call, body);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(error_message(&text).contains("approve"), "{body}: {text}");
    }

    let (status, text) = answer(addr, &id, &call, r#"{"approve": true}"#);
    assert_eq!(status, 204, "{text}");
    answer_the_rest(addr, &id, &mut sse, &mut seen, r#"{"approve": true}"#);
    for result in gated_results(&seen) {
        assert_eq!(result["ok"], true, "{result}");
        assert!(!result["output"].as_str().unwrap().is_empty(), "{result}");
    }
    assert_eq!(done(&seen)["reason"], "max_steps");
    assert_eq!(pending(addr), 0);

    let (status, text) = answer(addr, &id, &call, r#"{"approve": false}"#);
    assert_eq!(status, 409, "{text}");
    assert!(error_message(&text).contains("already approved"), "{text}");
}

#[test]
fn a_denied_call_returns_the_reason_to_the_model_and_the_session_goes_on() {
    let server = serve("");
    let addr = server.addr;
    let id = calling_session(addr);
    let mut sse = start_turn(addr, &id);
    let mut seen = Vec::new();
    let call = first_request(&mut sse, &mut seen)["id"].as_str().unwrap().to_owned();
    let body = r#"{"approve": false, "reason": "not during the board meeting."}"#;
    let (status, text) = answer(addr, &id, &call, body);
    assert_eq!(status, 204, "{text}");
    answer_the_rest(addr, &id, &mut sse, &mut seen, body);

    for result in gated_results(&seen) {
        assert_eq!(result["ok"], false, "{result}");
        assert!(result.get("output").is_none(), "the tool did not run: {result}");
        assert_eq!(result["error"]["kind"], "denied", "{result}");
        let message = result["error"]["message"].as_str().unwrap();
        assert!(message.contains("get_date_time") && message.contains("not approved"), "{message}");
        assert!(message.ends_with(": not during the board meeting."), "{message}");
    }
    assert_eq!(done(&seen)["reason"], "max_steps");

    let (status, text) = answer(addr, &id, &call, r#"{"approve": true}"#);
    assert_eq!(status, 409, "{text}");
    assert!(error_message(&text).contains("already denied"), "{text}");
    assert_eq!(plain_turn(addr, &id)["reason"], "completed");
    assert_eq!(session(addr, &id)["turns"], 2);
}

#[test]
fn an_unanswered_call_is_denied_when_its_approval_timeout_passes() {
    let server = serve("approval_timeout_ms = 1500\n");
    let addr = server.addr;
    let id = calling_session(addr);
    let mut sse = start_turn(addr, &id);
    let mut seen = Vec::new();
    let request = first_request(&mut sse, &mut seen);
    assert_eq!(request["timeout_ms"], 1500, "{request}");
    // Nobody answers.
    while next_request(&mut sse, &mut seen).is_some() {}

    for result in gated_results(&seen) {
        assert_eq!(result["ok"], false, "{result}");
        assert_eq!(result["error"]["kind"], "denied", "{result}");
        let message = result["error"]["message"].as_str().unwrap();
        assert!(message.contains("nobody approved it within 1.5 s"), "{message}");
    }
    assert_eq!(done(&seen)["reason"], "max_steps");

    // The expired call is no longer pending.
    assert_eq!(pending(addr), 0);
    let (status, text) = answer(addr, &id, request["id"].as_str().unwrap(), r#"{"approve": true}"#);
    assert_eq!(status, 409, "{text}");
    assert!(error_message(&text).contains("approval timeout"), "{text}");
    assert_eq!(plain_turn(addr, &id)["reason"], "completed");
}

#[test]
fn a_client_that_leaves_or_a_deleted_session_withdraws_the_waiting_call() {
    // No timeout: only the end of the turn can end the wait.
    let server = serve("approval_timeout_ms = 0\n");
    let addr = server.addr;

    // The client leaves while the call waits.
    let id = calling_session(addr);
    let mut sse = start_turn(addr, &id);
    let request = first_request(&mut sse, &mut Vec::new());
    assert!(request["timeout_ms"].is_null(), "{request}");
    drop(sse);
    let summary = idle(addr, &id);
    assert_eq!(summary["last_end_reason"], "interrupted", "{summary}");
    assert_eq!(pending(addr), 0, "the call left with its client");
    let (status, text) = answer(addr, &id, request["id"].as_str().unwrap(), r#"{"approve": true}"#);
    assert_eq!(status, 409, "{text}");
    assert!(error_message(&text).contains("turn ended"), "{text}");
    assert_eq!(plain_turn(addr, &id)["reason"], "completed");
    assert_eq!(session(addr, &id)["turns"], 2);

    // The session is deleted while the call waits: its stream ends, the call unanswered.
    let other = calling_session(addr);
    let mut sse = start_turn(addr, &other);
    let mut seen = Vec::new();
    let request = first_request(&mut sse, &mut seen);
    let (status, _) = http_request(addr, "DELETE", &format!("/v1/sessions/{other}"), None);
    assert_eq!(status, 204);
    seen.extend(sse.collect());
    let result = result_of(&seen, &request["id"]);
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(done(&seen)["reason"], "interrupted", "{seen:?}");
    let (status, _) = answer(addr, &other, request["id"].as_str().unwrap(), r#"{"approve": true}"#);
    assert_eq!(status, 404, "the session is gone");
    assert_eq!(pending(addr), 0, "the call left with its session");

    // The first session is unaffected.
    assert_eq!(plain_turn(addr, &id)["reason"], "completed");
}

#[test]
fn shutting_down_denies_the_waiting_calls_and_lets_their_turn_end() {
    // No timeout: without the shutdown's denial the turn would wait for ever.
    let mut server = serve("approval_timeout_ms = 0\n");
    let addr = server.addr;
    let id = calling_session(addr);
    let mut sse = start_turn(addr, &id);
    let mut seen = Vec::new();
    first_request(&mut sse, &mut seen);
    signal(&server.child, "TERM");
    while next_request(&mut sse, &mut seen).is_some() {}
    for result in gated_results(&seen) {
        assert_eq!(result["error"]["kind"], "denied", "{result}");
        let message = result["error"]["message"].as_str().unwrap();
        assert!(message.contains("the service is shutting down"), "{message}");
    }
    assert_eq!(done(&seen)["reason"], "max_steps");
    assert!(wait_exit(&mut server.child).success());
}

/// With `max_sessions = 1` and the only session's turn waiting for an approval, a new session
/// is refused with 503 and `Retry-After` (never queued, never crashing); once the turn ends
/// the slot is free again.
#[test]
fn a_full_session_table_answers_503_with_retry_after() {
    let server = serve_with("max_sessions = 1\n", "");
    let addr = server.addr;
    let busy = calling_session(addr);
    let mut sse = start_turn(addr, &busy);
    let mut seen = Vec::new();
    let request = next_request(&mut sse, &mut seen).expect("an approval request");
    let (status, head, body) =
        support::http_post_with_head(addr, "/v1/sessions", r#"{"mode": "text"}"#);
    assert_eq!(status, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert!(body.contains("max_sessions"), "{body}");
    // Nothing of the refused session is kept: only the busy one is listed.
    let listed = json_body(&http_request(addr, "GET", "/v1/sessions", None).1);
    let ids: Vec<&str> =
        listed["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [busy.as_str()], "{listed}");
    // Deny this call and any other the step made, to the end of the turn.
    let deny = |id: &Value| {
        let answer = format!("/v1/sessions/{busy}/approvals/{}", id.as_str().unwrap());
        assert_eq!(http_post(addr, &answer, r#"{"approve": false}"#).0, 204);
    };
    deny(&request["id"]);
    let done = std::iter::from_fn(|| sse.next_event()).find(|e| {
        if e.event == "approval_request" {
            deny(&data(e)["id"]);
        }
        e.event == "done"
    });
    assert!(done.is_some(), "the turn ended");
    // The turn is over: the idle session is evicted for a new one.
    let (status, _, body) =
        support::http_post_with_head(addr, "/v1/sessions", r#"{"mode": "text"}"#);
    assert_eq!(status, 201, "{body}");
}
