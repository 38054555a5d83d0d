//! The OpenAI-compatible Chat Completions endpoint (`GET /v1/models`, `POST
//! /v1/chat/completions`), end to end: the real `voxloop serve` on the tiny random checkpoint
//! (`core/tests/fixtures/llm/tiny_a`) with the token2wav fixture and its voice (`fixture`),
//! driven by the official OpenAI Python SDK (`tests/chat/client.py`, PyPI `openai` installed by
//! `scripts/pyclients.sh`; the Makefile exports its directory as `VOXLOOP_PYCLIENTS`) and by raw
//! HTTP where the SDK would hide the wire (SSE framing, malformed bodies, oversized bodies).
//!
//! Random weights say gibberish: every assertion is on shapes, types, finish reasons, tool
//! names, argument JSON and decoded audio, never on words. Answers that are compared use
//! `temperature: 0` and a fixed seed, and every answer is capped at a few dozen tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{http_post, http_request, json_body, Server, Sse};

/// The id `/v1/models` lists for the loaded checkpoint.
const MODEL: &str = "step-audio-2-mini";

use support::OFFLINE_TOOLS;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `voxloop serve` on the tiny checkpoint, with a data dir whose voice library holds the
/// token2wav fixture's voice (`fixture`) and token2wav pointed at the fixture, so audio
/// answers are rendered.
fn serve() -> Server {
    support::serve_speaking("")
}

/// Runs `tests/chat/client.py <command> <addr> <args>`; its JSON report.
fn client(pyclients: &Path, command: &str, addr: SocketAddr, args: &[&Path]) -> Value {
    support::python_report(pyclients, "tests/chat/client.py", command, addr, args)
}

/// Checks the envelope every non-streamed answer has; its only choice.
fn only_choice(completion: &Value) -> &Value {
    assert!(completion["id"].as_str().unwrap().starts_with("chatcmpl-"), "{completion}");
    assert_eq!(completion["object"], "chat.completion", "{completion}");
    assert!(completion["created"].is_i64(), "{completion}");
    assert_eq!(completion["model"], MODEL, "{completion}");
    let choices = completion["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1, "{completion}");
    assert_eq!(choices[0]["index"], 0, "{completion}");
    assert_eq!(choices[0]["message"]["role"], "assistant", "{completion}");
    usage(&completion["usage"]);
    &choices[0]
}

/// Checks a `usage` object's counts (integers that add up); returns it.
fn usage(usage: &Value) -> &Value {
    let count = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {usage}"));
    let (prompt, completion) = (count(&usage["prompt_tokens"]), count(&usage["completion_tokens"]));
    assert!(prompt > 0, "{usage}");
    assert_eq!(count(&usage["total_tokens"]), prompt + completion, "{usage}");
    count(&usage["prompt_tokens_details"]["cached_tokens"]);
    count(&usage["prompt_tokens_details"]["audio_tokens"]);
    count(&usage["completion_tokens_details"]["audio_tokens"]);
    usage
}

/// A finish reason of an answer that was not a tool call: it ended or ran out of tokens.
fn ended(choice: &Value) {
    let reason = choice["finish_reason"].as_str().unwrap();
    assert!(reason == "stop" || reason == "length", "{choice}");
}

/// A message's `tool_calls`, absent or null counting as none.
fn tool_calls(message: &Value) -> &[Value] {
    message["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `POST /v1/chat/completions` with `body`: the status and the JSON answer.
fn chat(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let (status, text) = http_post(addr, "/v1/chat/completions", &body.to_string());
    (status, json_body(&text))
}

/// Checks an OpenAI-shaped error answer: `{"error": {message, type, param, code}}`.
fn openai_error<'a>(what: &str, body: &'a Value) -> &'a Value {
    let error = &body["error"];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "{what}: no error message: {body}");
    for key in ["type", "param", "code"] {
        assert!(error.as_object().unwrap().contains_key(key), "{what}: no `{key}`: {body}");
    }
    error
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A user message with an `input_audio` part.
fn audio_message(data: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
    ]})
}

/// (a) Text in, text out through the SDK: the model list, the completion's envelope and usage,
/// greedy answers that repeat, text parts read like a string, a seed that makes sampling
/// repeat, `max_tokens` and `stop` honoured.
#[test]
fn text_in_gives_text_out_with_usage() {
    let Some(pyclients) = support::python_clients("openai") else { return };
    let server = serve();
    let report = client(&pyclients, "text", server.addr, &[]);

    let models = &report["models"];
    assert_eq!(models["object"], "list", "{models}");
    assert_eq!(models["data"][0]["id"], MODEL, "{models}");
    assert_eq!(models["data"][0]["object"], "model", "{models}");
    assert_eq!(models["data"][0]["owned_by"], "voxloop", "{models}");
    assert_eq!(report["model"], MODEL);

    let completion = &report["completion"];
    let choice = only_choice(completion);
    ended(choice);
    let content = choice["message"]["content"].as_str().unwrap_or_else(|| panic!("{completion}"));
    assert!(tool_calls(&choice["message"]).is_empty(), "no tools were declared: {completion}");
    let generated = completion["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&generated), "max_completion_tokens is 24: {completion}");

    assert_eq!(report["again"], content, "temperature 0 answers the same twice");
    assert_eq!(report["as_parts"], content, "one text part reads like the plain string");
    let seeded = report["seeded"].as_array().unwrap();
    assert!(seeded[0].is_string(), "{report}");
    assert_eq!(seeded[0], seeded[1], "the same seed samples the same answer");

    let legacy = &report["legacy"];
    assert!(legacy["completion_tokens"].as_u64().unwrap() <= 4, "max_tokens is 4: {legacy}");
    assert!(["stop", "length"].contains(&legacy["finish_reason"].as_str().unwrap()), "{legacy}");

    match report["stop"].as_object() {
        Some(stop) => {
            assert_eq!(stop["content"], stop["expected"], "cut before the stop: {report}");
            assert_eq!(stop["finish_reason"], "stop", "{report}");
        }
        None => eprintln!("the greedy answer {content:?} is too short to take a stop from"),
    }
}

/// (b) Speech in (an espeak-ng recording), text and speech out: `message.audio.data` is a WAV
/// that Python's `wave` reads as 24 kHz mono 16-bit with frames, the transcript is text and
/// `tts_content.tts_audio` is a run of `<audio_N>` tokens.
#[test]
fn speech_in_gives_text_and_a_wav_answer() {
    let Some(pyclients) = support::python_clients("openai") else { return };
    let recording = tempfile::tempdir().unwrap();
    let Some(wav) = support::spoken_question(recording.path(), "what is the weather in Paris")
    else {
        return;
    };
    let server = serve();
    let report = client(&pyclients, "audio", server.addr, &[&wav]);

    let completion = &report["completion"];
    let choice = only_choice(completion);
    ended(choice);
    let message = &choice["message"];
    assert!(message["content"].is_null() || message["content"].is_string(), "{completion}");
    let audio = &message["audio"];
    assert!(!audio["id"].as_str().unwrap().is_empty(), "{completion}");
    assert!(audio["expires_at"].is_i64(), "{completion}");
    assert_eq!(report["transcript_is_str"], true, "{completion}");

    let wav = &report["wav"];
    assert_eq!(wav["riff"], true, "{wav}");
    assert!(wav["error"].is_null(), "{wav}");
    assert_eq!(
        (&wav["channels"], &wav["sample_width"], &wav["frame_rate"]),
        (&json!(1), &json!(2), &json!(24_000)),
        "{wav}"
    );
    assert!(wav["frames"].as_u64().unwrap() > 0, "{wav}");

    let tts = &report["tts_content"];
    assert!(tts["tts_text"].is_string(), "{tts}");
    assert_eq!(report["tts_audio_tokens"], true, "only <audio_N> tokens: {tts}");

    let usage = &completion["usage"];
    assert!(usage["prompt_tokens_details"]["audio_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["completion_tokens_details"]["audio_tokens"].as_u64().unwrap() > 0, "{usage}");
}

/// (c) Tools through the SDK: `required` forces one schema-valid `get_weather` call, a named
/// choice forces that tool, `auto` is consistent either way, and the call goes back as the
/// SDK returned it with a `tool` message answering its id; `none` then answers in text.
#[test]
fn a_forced_tool_call_goes_round_trip_through_a_tool_message() {
    let Some(pyclients) = support::python_clients("openai") else { return };
    let server = serve();
    let report = client(&pyclients, "tools", server.addr, &[]);

    let required = &report["required"];
    let choice = only_choice(&required["completion"]);
    assert_eq!(choice["finish_reason"], "tool_calls", "{required}");
    let calls = required["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "parallel_tool_calls is false: {required}");
    let call = &calls[0];
    assert!(!call["id"].as_str().unwrap().is_empty(), "{call}");
    assert_eq!(call["type"], "function", "{call}");
    assert_eq!(call["name"], "get_weather", "{call}");
    assert_eq!(call["is_object"], true, "arguments are a JSON object: {call}");
    assert!(call["parsed"]["city"].is_string(), "{call}");
    let keys: Vec<&String> = call["parsed"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["city"], "additionalProperties is false: {call}");

    let named = &report["named"];
    let choice = only_choice(&named["completion"]);
    assert_eq!(choice["finish_reason"], "tool_calls", "{named}");
    let calls = named["calls"].as_array().unwrap();
    assert!(!calls.is_empty(), "{named}");
    for call in calls {
        assert_eq!(call["name"], "get_time", "the named tool, not the first: {call}");
        assert_eq!(call["is_object"], true, "{call}");
        assert!(call["parsed"]["timezone"].is_string(), "{call}");
    }

    let auto = &report["auto"];
    let choice = only_choice(&auto["completion"]);
    let calls = auto["calls"].as_array().unwrap();
    if choice["finish_reason"] == "tool_calls" {
        assert!(!calls.is_empty(), "{auto}");
        for call in calls {
            let name = call["name"].as_str().unwrap();
            assert!(name == "get_weather" || name == "get_time", "a declared tool: {call}");
            assert_eq!(call["is_object"], true, "{call}");
        }
    } else {
        ended(choice);
        assert!(calls.is_empty(), "tool calls finish with tool_calls: {auto}");
    }

    let answered = &report["answered"];
    let choice = only_choice(answered);
    ended(choice);
    assert!(choice["message"]["content"].is_string(), "{answered}");
    assert!(tool_calls(&choice["message"]).is_empty(), "tool_choice none: {answered}");
}

/// (d) Streams read through the SDK and accumulated as its users do equal the non-streamed
/// answer to the same greedy request: text content, tool call names and arguments, and the
/// audio transcript (pcm16 deltas); each stream has one id, one finish and a usage chunk.
#[test]
fn streamed_answers_reassemble_to_the_non_streamed_ones() {
    let Some(pyclients) = support::python_clients("openai") else { return };
    let server = serve();
    let report = client(&pyclients, "stream", server.addr, &[]);

    for case in ["text", "tools", "audio"] {
        let (plain, stream) = (&report[case]["plain"], &report[case]["stream"]);
        let what = format!("{case}: {}", report[case]);
        assert_eq!(stream["objects"], json!(["chat.completion.chunk"]), "{what}");
        let ids = stream["ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1, "one id for the whole stream: {what}");
        assert!(ids[0].as_str().unwrap().starts_with("chatcmpl-"), "{what}");
        let roles = stream["roles"].as_array().unwrap();
        assert!(!roles.is_empty() && roles.iter().all(|r| r == "assistant"), "{what}");
        assert_eq!(stream["finish_reasons"], json!([plain["finish_reason"]]), "{what}");
        assert_eq!(stream["last_chunk_choices"], 0, "the usage chunk comes last: {what}");
        let (streamed, whole) = (usage(&stream["usage"]), usage(&plain["usage"]));
        for count in ["prompt_tokens", "completion_tokens"] {
            assert_eq!(streamed[count], whole[count], "{count}: {what}");
        }
        let plain_content = plain["content"].as_str().unwrap_or_default();
        assert_eq!(stream["content"], plain_content, "{what}");
    }

    let (plain, stream) = (&report["tools"]["plain"], &report["tools"]["stream"]);
    assert_eq!(plain["finish_reason"], "tool_calls", "{}", report["tools"]);
    let plain_calls = plain["tool_calls"].as_array().unwrap();
    let stream_calls = stream["tool_calls"].as_array().unwrap();
    assert_eq!(plain_calls.len(), 1, "{}", report["tools"]);
    assert_eq!(stream_calls.len(), plain_calls.len(), "{}", report["tools"]);
    for (s, p) in stream_calls.iter().zip(plain_calls) {
        assert_eq!((&s["name"], &s["arguments"]), (&p["name"], &p["arguments"]), "{s} {p}");
        assert_eq!(s["is_object"], true, "{s}");
        assert!(!s["id"].as_str().unwrap_or_default().is_empty(), "{s}");
    }

    let (plain, stream) = (&report["audio"]["plain"], &report["audio"]["stream"]);
    let what = report["audio"].to_string();
    assert_eq!(plain["pcm_is_wav"], false, "pcm16 is raw samples: {what}");
    for bytes in [&plain["pcm_bytes"], &stream["pcm_bytes"]] {
        let bytes = bytes.as_u64().unwrap();
        assert!(bytes > 0 && bytes % 2 == 0, "16-bit samples: {what}");
    }
    assert!(plain["transcript"].is_string(), "{what}");
    assert_eq!(stream["transcript"], plain["transcript"], "{what}");
    assert_eq!(stream["audio_ids"].as_array().unwrap().len(), 1, "{what}");
}

/// (e) Refusals surface as the SDK's typed exceptions: `n` 2 a `BadRequestError` (400), an
/// unknown model a `NotFoundError` (404, code `model_not_found`), audio output without an
/// `audio` voice a `BadRequestError`.
#[test]
fn the_sdk_raises_its_typed_errors() {
    let Some(pyclients) = support::python_clients("openai") else { return };
    let server = serve();
    let report = client(&pyclients, "errors", server.addr, &[]);

    for (case, class, status) in [
        ("n2", "BadRequestError", 400),
        ("unknown_model", "NotFoundError", 404),
        ("audio_without_voice", "BadRequestError", 400),
    ] {
        let error = &report[case];
        assert_eq!(error["class"], class, "{case}: {error}");
        assert_eq!(error["status"], status, "{case}: {error}");
        assert_eq!(error["type"], "invalid_request_error", "{case}: {error}");
        assert!(!error["body"]["message"].as_str().unwrap().is_empty(), "{case}: {error}");
    }
    assert_eq!(report["unknown_model"]["code"], "model_not_found", "{report}");
}

/// (f) Raw requests the SDK would not send: each bad one is a 400 with an OpenAI-shaped error
/// and a message, an unknown model a 404, a body over the limit a 413 (from its
/// `Content-Length`, before it is sent); the service answers good requests afterwards.
#[test]
fn bad_requests_get_openai_shaped_errors_and_the_server_lives_on() {
    let mut server = serve();
    let addr = server.addr;
    let user = json!({"role": "user", "content": "Hello."});
    let base = |extra: Value| {
        let mut body = json!({"model": MODEL, "messages": [user], "max_completion_tokens": 8});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let not_audio = b64(b"this is plain text and not a WAV file at all");
    let speech = json!({"voice": "fixture", "format": "wav"});
    let bad = [
        ("n > 1", base(json!({"n": 2}))),
        ("bad base64", base(json!({"messages": [audio_message("@@ not base64 @@")]}))),
        ("non-audio bytes", base(json!({"messages": [audio_message(&not_audio)]}))),
        ("unknown role", base(json!({"messages": [{"role": "wizard", "content": "Hi."}]}))),
        (
            "parameters not an object",
            base(json!({"tools": [{"type": "function", "function": {
                "name": "get_weather", "parameters": "a city"}}]})),
        ),
        (
            "tool result for no call",
            base(json!({"messages": [user, {
                "role": "tool", "tool_call_id": "call_nobody_made", "content": "21 C"}]})),
        ),
        ("audio out without audio", base(json!({"modalities": ["text", "audio"]}))),
        (
            "unknown voice",
            base(json!({"modalities": ["text", "audio"],
                "audio": {"voice": "no_such_voice", "format": "wav"}})),
        ),
        (
            "streamed wav",
            base(json!({"modalities": ["text", "audio"], "audio": speech, "stream": true})),
        ),
    ];
    for (what, body) in &bad {
        let (status, answer) = chat(addr, body);
        assert_eq!(status, 400, "{what}: {answer}");
        let error = openai_error(what, &answer);
        assert_eq!(error["type"], "invalid_request_error", "{what}: {answer}");
    }

    let (status, answer) = chat(addr, &json!({"model": "no-such-model", "messages": [user]}));
    assert_eq!(status, 404, "{answer}");
    assert_eq!(openai_error("unknown model", &answer)["code"], "model_not_found", "{answer}");

    // A 1 GiB body is refused from its Content-Length alone.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a 413 before the body is sent");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"message\""), "an error body: {response}");

    // Still serving: a text request and a speech-in request (a tone, no synthesiser needed).
    assert!(server.child.try_wait().unwrap().is_none(), "the service exited");
    let (status, answer) = chat(addr, &base(json!({})));
    assert_eq!(status, 200, "{answer}");
    ended(only_choice(&answer));
    let tone = b64(&support::tone_wav(1.0));
    let (status, answer) = chat(addr, &base(json!({"messages": [audio_message(&tone)]})));
    assert_eq!(status, 200, "{answer}");
    ended(only_choice(&answer));
    let heard = &answer["usage"]["prompt_tokens_details"]["audio_tokens"];
    assert!(heard.as_u64().unwrap() > 0, "the tone counts as audio tokens: {answer}");
}

/// The wire format itself: `/v1/models` as specified, and a stream of `data:` lines (no event
/// names) of `chat.completion.chunk`s whose last choice chunk has the finish reason, followed
/// by the usage chunk with no choices and `[DONE]`.
#[test]
fn raw_http_lists_the_model_and_streams_sse_to_done() {
    let server = serve();
    let addr = server.addr;
    let (status, body) = http_request(addr, "GET", "/v1/models", None);
    assert_eq!(status, 200, "{body}");
    let models = json_body(&body);
    assert_eq!(models["object"], "list", "{models}");
    let data = models["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{models}");
    assert_eq!(data[0]["id"], MODEL, "{models}");
    assert_eq!(data[0]["object"], "model", "{models}");
    assert!(data[0]["created"].is_i64(), "{models}");
    assert_eq!(data[0]["owned_by"], "voxloop", "{models}");

    let body = json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Tell me about rivers."}],
        "temperature": 0, "seed": 7, "max_completion_tokens": 16,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let events = match Sse::post(addr, "/v1/chat/completions", &body.to_string()) {
        Ok(sse) => sse.collect(),
        Err((status, text)) => panic!("stream refused with {status}: {text}"),
    };
    assert!(events.iter().all(|e| e.event == "message"), "data lines only: {events:?}");
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]", "{events:?}");
    let chunks: Vec<Value> = chunks.iter().map(|e| json_body(&e.data)).collect();
    let (usage_chunk, choice_chunks) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    usage(&usage_chunk["usage"]);
    assert!(!choice_chunks.is_empty(), "{events:?}");
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(&chunk["id"], id, "{chunk}");
        assert_eq!(chunk["model"], MODEL, "{chunk}");
    }
    assert_eq!(choice_chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes: Vec<&Value> = choice_chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes.len(), 1, "one finish reason: {chunks:?}");
    let last = &choice_chunks.last().unwrap()["choices"][0];
    ended(last);

    // The same request unstreamed says the same.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().retain(|k, _| k != "stream" && k != "stream_options");
    let (status, answer) = chat(addr, &plain);
    assert_eq!(status, 200, "{answer}");
    let streamed: String =
        choice_chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(only_choice(&answer)["message"]["content"], streamed.as_str(), "{answer}");
}

/// Without a checkpoint configured the service runs, but chat completions answer 503 with the
/// OpenAI error shape.
#[test]
fn without_a_model_chat_completions_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxloop.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, format!("[paths]\ndata_dir = {data:?}\n\n{OFFLINE_TOOLS}")).unwrap();
    let (child, addr) = support::start_server(support::serve_command(&config, false));
    let _server = Server { child, addr, _dir: Some(dir) };
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello."}]});
    let (status, answer) = chat(addr, &body);
    assert_eq!(status, 503, "{answer}");
    openai_error("no model", &answer);
}

/// `[agent] max_requests = 1`, the one slot taken by a request whose model never answers (the
/// remote backend pointed at a listener that reads the request and stays silent): the next
/// Chat Completions and speech requests are 503 `overloaded` with `Retry-After: 1` at once,
/// not queued; the session API has its own limit and creates a session; once the first
/// request has ended (the backend hung up), the slot is free again.
#[test]
fn requests_over_max_requests_are_503_with_retry_after_not_queued() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", silent.local_addr().unwrap());
    let server = support::serve_speaking_with(
        "[agent]\nmax_requests = 1\n",
        &[("VOXLOOP_MODEL_URL", url)],
        "127.0.0.1:0",
    );
    let addr = server.addr;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello."}]});
    let first = {
        let body = body.to_string();
        std::thread::spawn(move || {
            support::http_post_with_head(addr, "/v1/chat/completions", &body)
        })
    };
    // The first request holds its slot once voxloop has asked the backend.
    let (mut backend, _) = silent.accept().unwrap();
    let mut asked = [0u8; 64];
    backend.read_exact(&mut asked).unwrap();
    assert!(asked.starts_with(b"POST /v1/chat/completions"), "{}", String::from_utf8_lossy(&asked));

    let speech = json!({"model": MODEL, "input": "Hi.", "voice": "fixture"}).to_string();
    for (path, body) in [("/v1/chat/completions", body.to_string()), ("/v1/audio/speech", speech)] {
        let (status, head, answer) = support::http_post_with_head(addr, path, &body);
        assert_eq!(status, 503, "{path}: {answer}");
        assert!(head.to_lowercase().contains("\r\nretry-after: 1"), "{path}: {head}");
        let error = json_body(&answer);
        assert_eq!(error["error"]["code"], "overloaded", "{path}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("max_requests"), "{error}");
    }
    let (status, text) = http_post(addr, "/v1/sessions", r#"{"mode": "text"}"#);
    assert_eq!(status, 201, "{text}");

    // The backend hangs up: the first request ends (with an error naming the backend), and
    // its slot with it.
    drop(backend);
    drop(silent);
    let (status, _, answer) = first.join().unwrap();
    assert!(status != 200 && !answer.contains("overloaded"), "{status} {answer}");
    let (status, _, answer) =
        support::http_post_with_head(addr, "/v1/chat/completions", &body.to_string());
    assert!(status != 503, "the slot is free again: {answer}");
}

/// Same seed, same history: the answer over HTTP is the one the agent gives in-process on the
/// same checkpoint (a sampled one, so the draws must line up too), so the HTTP layer adds and
/// loses nothing.
#[test]
fn the_http_answer_equals_the_in_process_answer() {
    use futures::StreamExt;
    use voxloop_core::agent::{Agent, AgentConfig, AgentEvent};
    use voxloop_core::session::{HumanPart, Session, SessionSettings, Turn};

    let server = serve();
    let system = "You are a terse assistant.";
    let question = "Tell me something about the sea.";
    let (status, body) = chat(
        server.addr,
        &json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "temperature": 0.9,
            "seed": 5,
            "max_completion_tokens": 24,
        }),
    );
    assert_eq!(status, 200, "{body}");
    let over_http = only_choice(&body)["message"]["content"].as_str().unwrap().to_owned();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let in_process = runtime.block_on(async {
        let model = root().join("core/tests/fixtures/llm/tiny_a");
        let agent = Agent::load(
            &model,
            voxloop_core::DeviceSpec::Cpu,
            voxloop_core::tool::ToolRegistry::new(),
            AgentConfig::default(),
        )
        .unwrap();
        let mut settings = SessionSettings { speech: false, max_steps: 1, ..Default::default() };
        settings.tool_choice = voxloop_core::protocol::ToolChoice::None;
        settings.sampling.temperature = 0.9;
        settings.sampling.seed = Some(5);
        settings.sampling.max_new_tokens = 24;
        let history = vec![
            Turn::System { text: system.into() },
            Turn::Human { parts: vec![HumanPart::Text { text: question.into() }] },
        ];
        let mut session = Session::with_history(settings, history);
        let client = std::sync::Arc::new(agent.client_tools(Vec::new(), true).unwrap());
        let events: Vec<_> = agent.continue_turn(&mut session, Some(client), None).collect().await;
        events
            .into_iter()
            .filter_map(|event| match event {
                AgentEvent::TextDelta { text, in_speech: false } => Some(text),
                _ => None,
            })
            .collect::<String>()
    });
    assert!(!in_process.is_empty());
    assert_eq!(over_http, in_process);
}

/// Each call resends the conversation, but the answers this service gave come back (a spoken
/// one by its `audio.id` alone, a written one by its content) and are replayed with the ids they
/// were generated with: the next call finds all of the conversation in the KV cache and
/// prefills only the new message.
#[test]
fn replayed_answers_are_found_in_the_cache() {
    let server = serve();
    let system = json!({"role": "system", "content": "You are a terse assistant."});
    let user = json!({"role": "user", "content": "Say something."});
    let next = json!({"role": "user", "content": "And then?"});
    let ask = |messages: Value, speak: bool| {
        let mut body = json!({
            "model": MODEL,
            "messages": messages,
            "temperature": 0,
            "max_completion_tokens": 16,
        });
        if speak {
            body["modalities"] = json!(["text", "audio"]);
            body["audio"] = json!({"voice": "fixture", "format": "wav"});
        }
        chat(server.addr, &body)
    };
    let count = |body: &Value, key: &str| body["usage"][key].as_u64().unwrap();
    for speak in [true, false] {
        let (status, first) = ask(json!([system, user]), speak);
        assert_eq!(status, 200, "{first}");
        let message = &only_choice(&first)["message"];
        let replay = if speak {
            json!({"role": "assistant", "audio": {"id": message["audio"]["id"]}})
        } else {
            json!({"role": "assistant", "content": message["content"]})
        };
        let (status, second) = ask(json!([system, user, replay, next]), speak);
        assert_eq!(status, 200, "{second}");
        let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
        let before = count(&first, "prompt_tokens") + count(&first, "completion_tokens");
        assert_eq!(cached, before, "speak {speak}: all of the first call is reused: {second}");
    }
    let unknown = json!({"role": "assistant", "audio": {"id": "audio_unknown"}});
    let (status, body) = ask(json!([system, user, unknown, next]), true);
    assert_eq!(status, 400, "{body}");
    assert_eq!(openai_error("unknown audio id", &body)["param"], "messages[2].audio.id");
}
