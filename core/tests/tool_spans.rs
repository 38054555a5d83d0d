//! The `execute_tool` span of every call, recorded in-process by a small subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod tool_support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tool_support::Calculator;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use voxloop_core::tool::{NoArgs, Tool, ToolCall, ToolRegistry, ToolType};

/// One span as the recorder saw it.
#[derive(Debug, Clone)]
struct SpanRecord {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    spans: Vec<SpanRecord>,
    stack: Vec<u64>,
}

/// A subscriber that keeps every span's name, parent and fields (initial and recorded).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<State>>);

impl Recorder {
    fn spans(&self) -> Vec<SpanRecord> {
        self.0.lock().unwrap().spans.clone()
    }

    fn named(&self, name: &str) -> Vec<SpanRecord> {
        self.spans().into_iter().filter(|span| span.name == name).collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut state = self.0.lock().unwrap();
        let id = state.spans.len() as u64 + 1;
        let parent = if attrs.is_root() {
            None
        } else if let Some(parent) = attrs.parent() {
            Some(parent.into_u64())
        } else {
            state.stack.last().copied()
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        state.spans.push(SpanRecord { id, name: attrs.metadata().name(), parent, fields });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut state = self.0.lock().unwrap();
        let index = usize::try_from(span.into_u64() - 1).unwrap();
        values.record(&mut Fields(&mut state.spans[index].fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut state = self.0.lock().unwrap();
        if let Some(position) = state.stack.iter().rposition(|&id| id == span.into_u64()) {
            state.stack.remove(position);
        }
    }
}

fn calculator_registry() -> ToolRegistry {
    let mut tools = ToolRegistry::new();
    tools.register(Calculator::default()).unwrap();
    tools
}

#[tokio::test]
async fn a_successful_call_has_the_genai_fields() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let tools = calculator_registry();
    let call = ToolCall::new("calculator", json!({"a": 1, "b": 2, "op": "add"}));
    let id = call.id.clone();
    assert!(tools.call(call).await.is_ok());

    let spans = recorder.named("execute_tool");
    assert_eq!(spans.len(), 1, "{spans:?}");
    let fields = &spans[0].fields;
    assert_eq!(fields["otel.name"], "execute_tool calculator");
    assert_eq!(fields["gen_ai.operation.name"], "execute_tool");
    assert_eq!(fields["gen_ai.tool.name"], "calculator");
    assert_eq!(fields["gen_ai.tool.call.id"], id);
    assert_eq!(fields["gen_ai.tool.type"], "function");
    let millis: f64 = fields["duration_ms"].parse().unwrap();
    assert!(millis >= 0.0);
    assert!(!fields.contains_key("error.type"), "{fields:?}");
    assert!(!fields.contains_key("otel.status_code"), "{fields:?}");
}

#[tokio::test]
async fn failed_calls_record_the_error_type() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let tools = calculator_registry();
    tools.call(ToolCall::new("calculator", json!({"a": 1}))).await;
    tools.call(ToolCall::new("calculator", json!({"a": 1, "b": 0, "op": "divide"}))).await;
    tools.call(ToolCall::new("weather", json!({}))).await;

    let spans = recorder.named("execute_tool");
    let error_types: Vec<&str> =
        spans.iter().map(|span| span.fields["error.type"].as_str()).collect();
    assert_eq!(error_types, ["invalid_arguments", "execution", "not_found"]);
    assert!(spans.iter().all(|span| span.fields["otel.status_code"] == "ERROR"));
    assert!(spans.iter().all(|span| span.fields.contains_key("duration_ms")));
    let unknown = &spans[2].fields;
    assert_eq!(unknown["otel.name"], "execute_tool weather");
    assert_eq!(unknown["gen_ai.tool.name"], "weather");
    assert!(!unknown.contains_key("gen_ai.tool.type"), "{unknown:?}");
}

/// A retrieval tool.
struct VoiceSearch;

#[async_trait::async_trait]
impl Tool for VoiceSearch {
    const NAME: &'static str = "audio_search";
    type Args = NoArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Finds a voice.".to_owned()
    }

    fn tool_type(&self) -> ToolType {
        ToolType::Datastore
    }

    async fn call(&self, _: NoArgs) -> Result<String, Self::Error> {
        Ok("found".to_owned())
    }
}

#[tokio::test]
async fn concurrent_calls_each_get_a_span_under_the_callers_span() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let mut tools = calculator_registry();
    tools.register(VoiceSearch).unwrap();
    let calls = vec![
        ToolCall::new("calculator", json!({"a": 1, "b": 2, "op": "add"})),
        ToolCall::new("audio_search", json!({})),
        ToolCall::new("calculator", json!({"a": 3, "b": 4, "op": "add"})),
    ];
    let ids: Vec<String> = calls.iter().map(|call| call.id.clone()).collect();
    let agent = tracing::info_span!("invoke_agent");
    let agent_id = agent.id().unwrap().into_u64();
    let results = tracing::Instrument::instrument(tools.call_all(calls, 3), agent).await;
    assert!(results.iter().all(|result| result.is_ok()));

    let spans = recorder.named("execute_tool");
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|span| span.parent == Some(agent_id)), "{spans:?}");
    let mut span_ids: Vec<&str> =
        spans.iter().map(|span| span.fields["gen_ai.tool.call.id"].as_str()).collect();
    span_ids.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(span_ids, expected);
    let search =
        spans.iter().find(|span| span.fields["gen_ai.tool.name"] == "audio_search").unwrap();
    assert_eq!(search.fields["gen_ai.tool.type"], "datastore");
    assert!(spans.iter().all(|span| span.id != agent_id));
}
