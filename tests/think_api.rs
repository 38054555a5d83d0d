//! Think mode over HTTP, end to end on the tiny random checkpoint: the session API's
//! `reasoning` events and `reasoning_tokens`, and Chat Completions' `reasoning_content` (as
//! vLLM's reasoning parsers give it) and `reasoning_effort`. The random model never writes
//! `</think>`: each think phase runs to its budget, so the counts are known.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::{create_session, http_post, json_body, session, Server, Sse, SseEvent};

/// The think phase's budget in these tests.
const BUDGET: u64 = 6;

/// The tiny checkpoint (whose name says nothing of thinking) with `think` as configured.
fn serve(think: &str) -> Server {
    support::serve_speaking(&format!(
        "[agent]\nmax_new_tokens = 10\nseed = 7\nthink = {think:?}\nreasoning_max_tokens = {BUDGET}\n"
    ))
}

fn turn(server: &Server, id: &str, text: &str) -> Vec<SseEvent> {
    let body = json!({ "text": text }).to_string();
    match Sse::post(server.addr, &format!("/v1/sessions/{id}/turns"), &body) {
        Ok(sse) => sse.collect(),
        Err((status, text)) => panic!("turn refused with {status}: {text}"),
    }
}

fn reasoning(events: &[SseEvent]) -> String {
    let texts = events.iter().filter(|e| e.event == "reasoning");
    texts.map(|e| json_body(&e.data)["text"].as_str().unwrap().to_owned()).collect()
}

fn done_usage(events: &[SseEvent]) -> Value {
    let done = events.last().unwrap();
    assert_eq!(done.event, "done", "{events:?}");
    let done = json_body(&done.data);
    assert_eq!(done["reason"], "completed", "{done}");
    done["usage"].clone()
}

#[test]
fn session_turns_stream_reasoning_before_the_answer_and_keep_it_out_of_the_history() {
    let server = serve("on");
    let id = create_session(server.addr, r#"{"mode": "text", "tool_choice": "none"}"#);
    let events = turn(&server, &id, "Why is the sky blue?");
    let usage = done_usage(&events);
    assert_eq!(usage["reasoning_tokens"], BUDGET, "{usage}");
    assert!(usage["output_tokens"].as_u64().unwrap() > BUDGET, "the answer follows: {usage}");
    assert!(!reasoning(&events).is_empty(), "{events:?}");
    let first_reasoning = events.iter().position(|e| e.event == "reasoning").unwrap();
    let last_reasoning = events.iter().rposition(|e| e.event == "reasoning").unwrap();
    let first_answer = events.iter().position(|e| e.event == "text").unwrap_or(events.len());
    assert!(first_reasoning < first_answer && last_reasoning < first_answer, "{events:?}");
    let step = events.iter().find(|e| e.event == "usage").unwrap();
    assert_eq!(json_body(&step.data)["reasoning_tokens"], BUDGET);

    // The history is what it is without thinking: system, declarations, human, assistant; and
    // a second turn (prefilled on top of the cut cache) thinks again.
    assert_eq!(session(server.addr, &id)["history_entries"], 4);
    let events = turn(&server, &id, "And at sunset?");
    assert_eq!(done_usage(&events)["reasoning_tokens"], BUDGET);
    assert_eq!(session(server.addr, &id)["history_entries"], 6);

    // A session may turn it off.
    let quiet = create_session(server.addr, r#"{"mode": "text", "think": false}"#);
    let events = turn(&server, &quiet, "Why is the sky blue?");
    assert_eq!(done_usage(&events)["reasoning_tokens"], 0);
    assert!(reasoning(&events).is_empty());
    let (status, text) = http_post(server.addr, "/v1/sessions", r#"{"reasoning_max_tokens": 0}"#);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("reasoning_max_tokens"), "{text}");
}

fn chat(server: &Server, body: &Value) -> (u16, Value) {
    let (status, text) = http_post(server.addr, "/v1/chat/completions", &body.to_string());
    (status, json_body(&text))
}

#[test]
fn chat_completions_give_reasoning_content_by_reasoning_effort() {
    let server = serve("auto");
    let mut body = json!({
        "model": "step-audio-2-mini",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "temperature": 0, "seed": 7, "max_completion_tokens": 8,
        "reasoning_effort": "low",
    });
    let (status, answer) = chat(&server, &body);
    assert_eq!(status, 200, "{answer}");
    let message = &answer["choices"][0]["message"];
    let thought = message["reasoning_content"].as_str().expect("reasoning_content");
    assert!(!thought.is_empty(), "{answer}");
    assert_eq!(answer["usage"]["completion_tokens_details"]["reasoning_tokens"], BUDGET);
    let content = message["content"].as_str().unwrap();
    assert!(!content.contains(thought), "the thinking is not the answer: {answer}");

    // Streamed, the same thinking comes first as `delta.reasoning_content`.
    body["stream"] = json!(true);
    let events = match Sse::post(server.addr, "/v1/chat/completions", &body.to_string()) {
        Ok(sse) => sse.collect(),
        Err((status, text)) => panic!("stream refused with {status}: {text}"),
    };
    let chunks: Vec<Value> =
        events.iter().filter(|e| e.data != "[DONE]").map(|e| json_body(&e.data)).collect();
    let delta = |c: &Value, key: &str| c["choices"][0]["delta"][key].as_str().map(str::to_owned);
    let streamed: String = chunks.iter().filter_map(|c| delta(c, "reasoning_content")).collect();
    assert_eq!(streamed, thought);
    // (The first chunk gives the role with an empty `content`.)
    let first_content =
        chunks.iter().position(|c| delta(c, "content").is_some_and(|t| !t.is_empty()));
    let last_reasoning = chunks.iter().rposition(|c| delta(c, "reasoning_content").is_some());
    assert!(first_content.is_none() || last_reasoning < first_content, "{chunks:?}");

    // `none` answers at once; `auto` on a checkpoint not named Think does not think either.
    body["stream"] = json!(false);
    body["reasoning_effort"] = json!("none");
    let (_, answer) = chat(&server, &body);
    assert!(answer["choices"][0]["message"].get("reasoning_content").is_none(), "{answer}");
    assert_eq!(answer["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
    body.as_object_mut().unwrap().remove("reasoning_effort");
    let (_, answer) = chat(&server, &body);
    assert!(answer["choices"][0]["message"].get("reasoning_content").is_none(), "{answer}");

    body["reasoning_effort"] = json!("maximal");
    let (status, answer) = chat(&server, &body);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "reasoning_effort", "{answer}");
}
