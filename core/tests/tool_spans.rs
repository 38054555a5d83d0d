//! The `execute_tool` span of every call, recorded in-process by a small subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod span_recorder;
mod tool_support;

use serde_json::json;
use span_recorder::Recorder;
use tool_support::Calculator;
use voxloop_core::tool::{NoArgs, Tool, ToolCall, ToolRegistry, ToolType};

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
