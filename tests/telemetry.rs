//! Traces over OTLP/HTTP, end to end: the real `voxloop serve` on the tiny random checkpoint
//! (`core/tests/fixtures/llm/tiny_a`) runs turns through `/v1/sessions`, and a real OTLP/HTTP
//! receiver in this test (axum on 127.0.0.1, `POST /v1/traces`, the protobuf decoded with
//! `opentelemetry-proto`) takes what it exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use support::{http_post, logged_addr, signal, wait_exit, Sse, SseEvent};

/// What one `POST /v1/traces` brought.
struct Export {
    headers: HeaderMap,
    request: ExportTraceServiceRequest,
}

#[derive(Default)]
struct Received {
    exports: Vec<Export>,
    /// Bodies that did not decode as an `ExportTraceServiceRequest`.
    errors: Vec<String>,
}

type Store = Arc<Mutex<Received>>;

/// An OTLP/HTTP trace receiver on 127.0.0.1, running on its own runtime.
struct Receiver {
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    store: Store,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = Store::default();
        let app = Router::new().route("/v1/traces", post(receive)).with_state(store.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver { _runtime: runtime, addr, store }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn export_count(&self) -> usize {
        self.store.lock().unwrap().exports.len()
    }
}

async fn receive(
    State(store): State<Store>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let content_type = [(header::CONTENT_TYPE, "application/x-protobuf")];
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.lock().unwrap().exports.push(Export { headers, request });
            // An empty ExportTraceServiceResponse: every span accepted.
            (StatusCode::OK, content_type, Vec::new())
        }
        Err(err) => {
            store.lock().unwrap().errors.push(err.to_string());
            (StatusCode::BAD_REQUEST, content_type, Vec::new())
        }
    }
}

/// A running `voxloop serve`; its stderr lines are kept.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Stops the service with SIGTERM and checks it exits cleanly.
    fn stop(mut self) -> Vec<String> {
        signal(&self.child, "TERM");
        let status = wait_exit(&mut self.child);
        // The log ends when the process does; the reader thread may still be appending.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        assert!(status.success(), "exit status {status:?}; log:\n{}", log.join("\n"));
        log
    }
}

impl Server {
    /// Waits until a line of the log contains `needle`.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `voxloop serve` on the tiny checkpoint with `[telemetry]` set to `telemetry`, the
/// console log at `warn` (so the exported `info` spans pass the export's own filter only), and
/// `OTEL_BSP_SCHEDULE_DELAY` set to `schedule_ms`.
fn serve(telemetry: &str, schedule_ms: u64) -> Server {
    serve_with(telemetry, schedule_ms, &[])
}

/// [`serve`] with `env` set for the server.
fn serve_with(telemetry: &str, schedule_ms: u64, env: &[(&str, String)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxloop.toml");
    let text = format!(
        "[paths]\ndata_dir = {:?}\n\n[tools.web_search]\nenabled = false\n\n\
         [tools.weather]\nenabled = false\n\n[agent]\nmax_new_tokens = 12\nseed = 7\n\
         fixed_now = \"2025-08-28T04:00:00Z\"\n\n\
         [telemetry]\n{telemetry}\n",
        dir.path().join("data")
    );
    std::fs::write(&config, text).unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("core/tests/fixtures/llm/tiny_a");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    for var in [
        "VOXLOOP_ADDR",
        "VOXLOOP_DATA_DIR",
        "VOXLOOP_TOKEN2WAV_DIR",
        "VOXLOOP_MODEL_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
        "OTEL_RESOURCE_ATTRIBUTES",
    ] {
        cmd.env_remove(var);
    }
    // Only the line that names the port the server got (it listens on port 0: a port picked
    // here and freed again could be taken by another test's listener meanwhile).
    cmd.env("VOXLOOP_LOG", "warn,voxloop::listening=info")
        .env("VOXLOOP_DEVICE", "cpu")
        .env("VOXLOOP_MODEL_DIR", model)
        .env("OTEL_BSP_SCHEDULE_DELAY", schedule_ms.to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("--config")
        .arg(&config)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let logged = log.lock().unwrap().iter().find_map(|line| logged_addr(line));
        if let Some(addr) = logged {
            break addr;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited ({status}): {}", log.lock().unwrap().join("\n"));
        }
        assert!(Instant::now() < deadline, "the server logged no address");
        std::thread::sleep(Duration::from_millis(50));
    };
    Server { child, addr, log, _dir: dir }
}

fn create_session(addr: SocketAddr, body: &str) -> String {
    let (status, text) = http_post(addr, "/v1/sessions", body);
    assert_eq!(status, 201, "{text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    value["id"].as_str().unwrap().to_owned()
}

/// Runs a turn to its end and returns the data of its `done` event.
fn turn(addr: SocketAddr, id: &str, text: &str) -> Value {
    let body = json!({ "text": text }).to_string();
    let events: Vec<SseEvent> = match Sse::post(addr, &format!("/v1/sessions/{id}/turns"), &body) {
        Ok(sse) => sse.collect(),
        Err((status, text)) => panic!("turn refused with {status}: {text}"),
    };
    let last = events.last().unwrap_or_else(|| panic!("no events"));
    assert_eq!(last.event, "done", "{events:?}");
    serde_json::from_str(&last.data).unwrap()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        AnyValue::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Every exported span with its resource's attributes.
fn spans(store: &Store) -> Vec<(Vec<KeyValue>, Span)> {
    let received = store.lock().unwrap();
    assert!(received.errors.is_empty(), "undecodable exports: {:?}", received.errors);
    let mut all = Vec::new();
    for export in &received.exports {
        for resource_spans in &export.request.resource_spans {
            let resource =
                resource_spans.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    all.push((resource.clone(), span.clone()));
                }
            }
        }
    }
    all
}

fn by_operation<'a>(spans: &'a [(Vec<KeyValue>, Span)], operation: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| str_attr(&span.attributes, "gen_ai.operation.name") == Some(operation))
        .collect()
}

#[test]
fn a_turn_is_exported_when_the_server_stops_with_its_steps_and_tool_call() {
    let receiver = Receiver::start();
    let telemetry = format!(
        "otlp_endpoint = {:?}\nservice_name = \"voxloop-e2e\"\n\
         [telemetry.headers]\nx-api-key = \"test-key\"\n",
        receiver.endpoint()
    );
    // Nothing is sent on a timer during the test: what arrives is the flush at exit.
    let server = serve(&telemetry, 600_000);
    let id = create_session(
        server.addr,
        r#"{"tool_choice": "get_date_time", "max_new_tokens": 48, "max_steps": 1, "mode": "text"}"#,
    );
    let done = turn(server.addr, &id, "What time is it?");
    assert_eq!(receiver.export_count(), 0, "spans are batched, not sent per span");
    let log = server.stop();
    assert!(!log.iter().any(|l| l.contains("cannot export")), "{}", log.join("\n"));
    let info = log.iter().filter(|l| l.contains(" INFO ") && !l.contains("voxloop::listening"));
    assert_eq!(info.count(), 0, "the console stays at warn but for the address: {log:?}");

    {
        let received = receiver.store.lock().unwrap();
        assert!(!received.exports.is_empty(), "nothing was exported at exit");
        for export in &received.exports {
            assert_eq!(export.headers["x-api-key"], "test-key");
            assert_eq!(export.headers[header::CONTENT_TYPE], "application/x-protobuf");
        }
    }
    let spans = spans(&receiver.store);
    for (resource, _) in &spans {
        assert_eq!(str_attr(resource, "service.name"), Some("voxloop-e2e"));
        assert_eq!(str_attr(resource, "service.version"), Some(env!("CARGO_PKG_VERSION")));
    }

    let turns = by_operation(&spans, "invoke_agent");
    assert_eq!(turns.len(), 1, "one turn, one invoke_agent span");
    let turn = turns[0];
    let agent = str_attr(&turn.attributes, "gen_ai.agent.name").unwrap();
    assert_eq!(turn.name, format!("invoke_agent {agent}"));
    assert_eq!(turn.kind, SpanKind::Internal as i32);
    assert!(turn.parent_span_id.is_empty(), "the turn is the root of its trace");
    assert_eq!(str_attr(&turn.attributes, "gen_ai.provider.name"), Some("stepfun"));
    assert_eq!(str_attr(&turn.attributes, "gen_ai.conversation.id"), Some(id.as_str()));
    assert_eq!(
        str_attr(&turn.attributes, "gen_ai.agent.invocation.end_reason"),
        done["reason"].as_str()
    );
    let turn_output = int_attr(&turn.attributes, "gen_ai.usage.output_tokens")
        .unwrap_or_else(|| panic!("{:#?}", turn.attributes));
    assert!(turn_output > 0);
    assert_eq!(turn_output, done["usage"]["output_tokens"].as_i64().unwrap());

    let chats = by_operation(&spans, "chat");
    assert!(!chats.is_empty());
    let model = str_attr(&turn.attributes, "gen_ai.request.model").unwrap();
    let mut chat_output = 0;
    for chat in &chats {
        assert_eq!(chat.name, format!("chat {model}"));
        assert_eq!(chat.trace_id, turn.trace_id);
        assert_eq!(chat.parent_span_id, turn.span_id);
        let output = int_attr(&chat.attributes, "gen_ai.usage.output_tokens").unwrap();
        assert!(output > 0, "{:?}", chat.attributes);
        chat_output += output;
        assert!(str_attr(&chat.attributes, "gen_ai.response.finish_reasons").is_some());
    }
    assert_eq!(chat_output, turn_output, "the steps' tokens add up to the turn's");

    let tools = by_operation(&spans, "execute_tool");
    let names: Vec<&str> =
        tools.iter().filter_map(|t| str_attr(&t.attributes, "gen_ai.tool.name")).collect();
    assert_eq!(names.first(), Some(&"get_date_time"), "the forced call comes first: {names:?}");
    assert_eq!(names.len(), tools.len());
    for (tool, name) in tools.iter().zip(&names) {
        assert_eq!(tool.name, format!("execute_tool {name}"));
        assert!(str_attr(&tool.attributes, "gen_ai.tool.call.id").is_some());
        assert_eq!(tool.trace_id, turn.trace_id);
        assert_eq!(tool.parent_span_id, turn.span_id);
    }
}

#[test]
fn a_step_on_a_remote_model_is_a_client_span_naming_the_server() {
    let model = support::serve_speaking("");
    let receiver = Receiver::start();
    let telemetry = format!("otlp_endpoint = {:?}\n", receiver.endpoint());
    let url = format!("http://{}/v1", model.addr);
    let server = serve_with(&telemetry, 600_000, &[("VOXLOOP_MODEL_URL", url)]);
    let id = create_session(server.addr, r#"{"max_new_tokens": 8, "mode": "text"}"#);
    let done = turn(server.addr, &id, "Hello?");
    assert_eq!(done["reason"], "completed", "{done}");
    server.stop();
    let spans = spans(&receiver.store);
    let chats = by_operation(&spans, "chat");
    assert_eq!(chats.len(), 1, "one step");
    let chat = chats[0];
    assert_eq!(chat.kind, SpanKind::Client as i32, "a call to another process");
    assert_eq!(str_attr(&chat.attributes, "server.address"), Some("127.0.0.1"));
    assert_eq!(int_attr(&chat.attributes, "server.port"), Some(i64::from(model.addr.port())));
    let output = int_attr(&chat.attributes, "gen_ai.usage.output_tokens").unwrap();
    assert_eq!(output, done["usage"]["output_tokens"].as_i64().unwrap(), "the server's usage");
}

#[test]
fn an_unreachable_collector_is_reported_once_and_never_fails_a_turn() {
    // A port nothing listens on: every export is refused.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let server = serve(&format!("otlp_endpoint = {closed:?}\ntimeout_seconds = 2"), 100);
    let id = create_session(server.addr, r#"{"tool_choice": "none", "mode": "text"}"#);
    let done = turn(server.addr, &id, "Hello there.");
    assert_eq!(done["reason"], "completed", "{done}");
    // The first turn's spans fail to go out on the processor's timer...
    server.wait_for_log("cannot export traces");
    // ...and the second turn runs all the same; its spans fail again at exit.
    let done = turn(server.addr, &id, "And again.");
    assert_eq!(done["reason"], "completed", "{done}");
    let log = server.stop();
    let warnings: Vec<&String> =
        log.iter().filter(|l| l.contains("cannot export traces")).collect();
    assert_eq!(warnings.len(), 1, "{}", log.join("\n"));
    assert!(warnings[0].contains("WARN") && warnings[0].contains(&closed), "{}", warnings[0]);
}

#[test]
fn a_zero_sampling_ratio_exports_no_span() {
    let receiver = Receiver::start();
    let telemetry = format!("otlp_endpoint = {:?}\nsampling_ratio = 0.0", receiver.endpoint());
    let server = serve(&telemetry, 100);
    let id = create_session(server.addr, r#"{"tool_choice": "none", "mode": "text"}"#);
    assert_eq!(turn(server.addr, &id, "Hello there.")["reason"], "completed");
    server.stop();
    assert_eq!(spans(&receiver.store).len(), 0);
}

#[test]
fn a_bad_telemetry_table_stops_the_start_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxloop.toml");
    for (table, field) in [
        ("otlp_endpoint = \"localhost:4318\"", "telemetry.otlp_endpoint"),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = 1.5",
            "telemetry.sampling_ratio",
        ),
    ] {
        std::fs::write(&config, format!("[telemetry]\n{table}\n")).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_voxloop"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("VOXLOOP_MODEL_DIR")
            .arg("--config")
            .arg(&config)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(field), "{stderr}");
    }
}
