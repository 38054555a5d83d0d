//! Calling tools: valid and invalid arguments, tool errors, panics, unknown tools, layers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod tool_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tool_support::Calculator;
use tower::{Service, ServiceExt};
use voxloop_core::tool::{
    render_output, BoxError, NoArgs, Tool, ToolCall, ToolErrorKind, ToolRegistry, ToolResult,
    ToolService,
};

fn registry_with(calculator: &Calculator) -> ToolRegistry {
    let mut tools = ToolRegistry::new();
    tools.register(calculator.clone()).unwrap();
    tools
}

async fn calc(tools: &ToolRegistry, arguments: serde_json::Value) -> ToolResult {
    tools.call(ToolCall::new("calculator", arguments)).await
}

#[tokio::test]
async fn a_valid_call_renders_the_output_as_compact_json() {
    let calculator = Calculator::default();
    let tools = registry_with(&calculator);
    let call = ToolCall::new("calculator", json!({"a": 2, "b": 3.5, "op": "multiply"}));
    let id = call.id.clone();
    let result = tools.call(call).await;
    assert_eq!(result.call_id, id);
    assert_eq!(result.name, "calculator");
    assert_eq!(result.outcome, Ok(r#"{"value":7.0,"text":"7.00"}"#.to_owned()));
    assert_eq!(result.model_text(), r#"{"value":7.0,"text":"7.00"}"#);
    assert_eq!(calculator.calls(), 1);

    let result = calc(&tools, json!({"a": 1, "b": 3, "op": "divide", "precision": 4})).await;
    assert_eq!(result.outcome.unwrap(), r#"{"value":0.3333333333333333,"text":"0.3333"}"#);
    assert_eq!(calculator.calls(), 2);
}

/// Asserts that `result` is an `InvalidArguments` failure whose model message contains
/// every one of `needles`.
fn assert_invalid(result: &ToolResult, needles: &[&str]) {
    let error = result.outcome.as_ref().expect_err("the call should fail");
    assert_eq!(error.kind, ToolErrorKind::InvalidArguments, "{error}");
    for needle in needles {
        assert!(
            error.model_message.contains(needle),
            "{needle:?} not in {:?}",
            error.model_message
        );
    }
    assert_eq!(result.model_text(), error.model_message);
}

#[tokio::test]
async fn invalid_arguments_are_refused_before_the_tool_runs_naming_the_field() {
    let calculator = Calculator::default();
    let tools = registry_with(&calculator);

    let wrong_type = calc(&tools, json!({"a": "three", "b": 1, "op": "add"})).await;
    assert_invalid(&wrong_type, &["calculator", "field \"a\"", "\"number\""]);
    // Values are masked in what the model sees, kept in the detail.
    let error = wrong_type.outcome.as_ref().unwrap_err();
    assert!(!error.model_message.contains("three"), "{}", error.model_message);
    assert!(error.detail.contains("three"), "{}", error.detail);

    let missing = calc(&tools, json!({"a": 1, "op": "add"})).await;
    assert_invalid(&missing, &["\"b\" is a required property"]);

    let extra = calc(&tools, json!({"a": 1, "b": 2, "op": "add", "c": 3})).await;
    assert_invalid(&extra, &["'c'", "not allowed"]);

    let bad_enum = calc(&tools, json!({"a": 1, "b": 2, "op": "power"})).await;
    assert_invalid(
        &bad_enum,
        &[r#"field "op": value must be one of "add", "subtract", "multiply", "divide""#],
    );

    let out_of_range = calc(&tools, json!({"a": 1, "b": 2, "op": "add", "precision": 300})).await;
    assert_invalid(&out_of_range, &["field \"precision\""]);

    let not_an_object = calc(&tools, json!([1, 2, "add"])).await;
    assert_invalid(&not_an_object, &["arguments", "\"object\""]);

    let null = calc(&tools, serde_json::Value::Null).await;
    assert_invalid(&null, &["\"a\" is a required property", "\"b\"", "\"op\""]);

    assert_eq!(calculator.calls(), 0, "the tool must never see invalid arguments");
}

#[tokio::test]
async fn several_violations_are_all_reported() {
    let calculator = Calculator::default();
    let tools = registry_with(&calculator);
    let result = calc(&tools, json!({"a": true, "op": "add", "x": 1})).await;
    assert_invalid(&result, &["field \"a\"", "\"b\" is a required property", "'x'"]);
    assert_eq!(calculator.calls(), 0);
}

#[tokio::test]
async fn a_tool_error_goes_back_to_the_model_as_text() {
    let calculator = Calculator::default();
    let tools = registry_with(&calculator);
    let result = calc(&tools, json!({"a": 1, "b": 0, "op": "divide"})).await;
    let error = result.outcome.as_ref().unwrap_err();
    assert_eq!(error.kind, ToolErrorKind::Execution);
    assert_eq!(error.model_message, "Tool \"calculator\" failed: division by zero");
    assert!(error.detail.contains("division by zero"));
    assert_eq!(result.error_kind(), Some(ToolErrorKind::Execution));
    assert_eq!(calculator.calls(), 1);
}

/// A tool that panics with a secret in the payload.
struct Explodes;

#[async_trait::async_trait]
impl Tool for Explodes {
    const NAME: &'static str = "explodes";
    type Args = NoArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Always panics.".to_owned()
    }

    #[allow(clippy::panic)]
    async fn call(&self, _: NoArgs) -> Result<String, Self::Error> {
        tokio::task::yield_now().await;
        panic!("secret internal state 0xdeadbeef");
    }
}

#[tokio::test]
async fn a_panicking_tool_becomes_a_panicked_result_and_the_registry_carries_on() {
    let calculator = Calculator::default();
    let mut tools = registry_with(&calculator);
    tools.register(Explodes).unwrap();
    let result = tools.call(ToolCall::new("explodes", serde_json::Value::Null)).await;
    let error = result.outcome.as_ref().unwrap_err();
    assert_eq!(error.kind, ToolErrorKind::Panicked);
    assert!(!error.model_message.contains("0xdeadbeef"), "{}", error.model_message);
    assert!(error.detail.contains("secret internal state 0xdeadbeef"), "{}", error.detail);

    let after = calc(&tools, json!({"a": 1, "b": 1, "op": "add"})).await;
    assert!(after.is_ok(), "{after:?}");
}

#[tokio::test]
async fn an_unknown_tool_is_a_not_found_result_listing_the_tools() {
    let calculator = Calculator::default();
    let mut tools = registry_with(&calculator);
    tools.register(Explodes).unwrap();
    let call = ToolCall::new("web_search", json!({"query": "weather"}));
    let result = tools.call(call.clone()).await;
    assert_eq!(result.call_id, call.id);
    assert_eq!(result.name, "web_search");
    let error = result.outcome.unwrap_err();
    assert_eq!(error.kind, ToolErrorKind::NotFound);
    assert!(error.model_message.contains("\"web_search\""), "{}", error.model_message);
    assert!(error.model_message.contains("calculator, explodes"), "{}", error.model_message);
    assert!(!tools.contains("web_search"));
}

/// A tool with a plain-text, non-ASCII output that is not idempotent.
struct Greeter;

#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    #[serde(default)]
    name: Option<String>,
}

#[async_trait::async_trait]
impl Tool for Greeter {
    const NAME: &'static str = "greet";
    type Args = GreetArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Greets someone.".to_owned()
    }

    fn idempotent(&self) -> bool {
        false
    }

    async fn call(&self, args: GreetArgs) -> Result<String, Self::Error> {
        Ok(format!("你好, \"{}\"!", args.name.as_deref().unwrap_or("世界")))
    }
}

#[tokio::test]
async fn string_outputs_are_sent_as_is_and_null_arguments_count_as_empty() {
    let mut tools = ToolRegistry::new();
    tools.register(Greeter).unwrap();
    let result = tools.call(ToolCall::new("greet", serde_json::Value::Null)).await;
    assert_eq!(result.outcome.unwrap(), "你好, \"世界\"!");
    let result = tools.call(ToolCall::new("greet", json!({"name": "小跃"}))).await;
    assert_eq!(result.outcome.unwrap(), "你好, \"小跃\"!");
    assert!(!tools.get("greet").unwrap().idempotent());
}

#[derive(Serialize)]
struct Weather {
    city: &'static str,
    sky: Sky,
    celsius: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Sky {
    Sunny,
}

#[test]
fn outputs_render_as_text_or_compact_json_in_field_order() {
    assert_eq!(render_output("t", "plain \"text\"").unwrap(), "plain \"text\"");
    assert_eq!(render_output("t", &Sky::Sunny).unwrap(), "sunny");
    let weather = Weather { city: "成都", sky: Sky::Sunny, celsius: 31 };
    assert_eq!(
        render_output("t", &weather).unwrap(),
        r#"{"city":"成都","sky":"sunny","celsius":31}"#
    );
    assert_eq!(render_output("t", &vec![1, 2]).unwrap(), "[1,2]");
    assert_eq!(render_output("t", &()).unwrap(), "null");
}

#[test]
fn call_ids_are_fresh_and_prefixed() {
    let first = ToolCall::new("calculator", json!({}));
    let second = ToolCall::new("calculator", json!({}));
    assert_ne!(first.id, second.id);
    let hex = first.id.strip_prefix("call_").expect("call_ prefix");
    assert_eq!(hex.len(), 32);
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{}", first.id);
}

#[tokio::test]
async fn a_bare_tool_service_answers_every_call_with_a_result() {
    let calculator = Calculator::default();
    let service = ToolService::new(calculator.clone()).unwrap();
    assert_eq!(service.name(), "calculator");
    assert!(service.idempotent());
    let call = ToolCall::with_id("call_1", "calculator", json!({"a": 1, "b": 2, "op": "add"}));
    let result = service.clone().oneshot(call).await.unwrap();
    assert_eq!(result.call_id, "call_1");
    assert!(result.is_ok());
    let bad = ToolCall::with_id("call_2", "calculator", json!({"a": 1}));
    let result = service.boxed().oneshot(bad).await.unwrap();
    assert_eq!(result.error_kind(), Some(ToolErrorKind::InvalidArguments));
    assert_eq!(calculator.calls(), 1);
}

/// What a [`Gate`] does with a call.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Pass,
    Deny,
    Fail,
    Panic,
}

/// A test layer: passes calls on, or refuses them in various ways.
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    mode: Mode,
    seen: Arc<AtomicUsize>,
}

impl<S> Service<ToolCall> for Gate<S>
where
    S: Service<ToolCall, Response = ToolResult> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ToolResult;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<ToolResult, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[allow(clippy::panic)]
    fn call(&mut self, call: ToolCall) -> Self::Future {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode;
        let future = self.inner.call(call);
        Box::pin(async move {
            match mode {
                Mode::Pass => future.await.map_err(Into::into),
                Mode::Deny => Err(voxloop_core::tool::ToolError::new(
                    ToolErrorKind::Denied,
                    "This tool needs approval.",
                )
                .into()),
                Mode::Fail => Err(std::io::Error::other("socket closed: 10.0.0.7").into()),
                Mode::Panic => panic!("layer bug"),
            }
        })
    }
}

async fn through_gate(mode: Mode) -> (ToolResult, usize, usize) {
    let calculator = Calculator::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let mut tools = ToolRegistry::new();
    let gate_seen = seen.clone();
    tools
        .register_with(calculator.clone(), move |service| {
            assert_eq!(service.definition().name, "calculator");
            assert!(service.idempotent());
            Gate { inner: service, mode, seen: gate_seen }
        })
        .unwrap();
    let call = ToolCall::new("calculator", json!({"a": 4, "b": 2, "op": "subtract"}));
    let id = call.id.clone();
    let result = tools.call(call).await;
    assert_eq!(result.call_id, id);
    assert_eq!(result.name, "calculator");
    (result, seen.load(Ordering::SeqCst), calculator.calls())
}

#[tokio::test]
async fn layers_wrap_the_tool_and_their_errors_become_results() {
    let (result, seen, calls) = through_gate(Mode::Pass).await;
    assert_eq!(result.outcome.unwrap(), r#"{"value":2.0,"text":"2.00"}"#);
    assert_eq!((seen, calls), (1, 1));

    let (result, seen, calls) = through_gate(Mode::Deny).await;
    let error = result.outcome.unwrap_err();
    assert_eq!(error.kind, ToolErrorKind::Denied);
    assert_eq!(error.model_message, "This tool needs approval.");
    assert_eq!((seen, calls), (1, 0));

    let (result, _, calls) = through_gate(Mode::Fail).await;
    let error = result.outcome.unwrap_err();
    assert_eq!(error.kind, ToolErrorKind::Execution);
    assert!(!error.model_message.contains("10.0.0.7"), "{}", error.model_message);
    assert!(error.detail.contains("socket closed: 10.0.0.7"), "{}", error.detail);
    assert_eq!(calls, 0);

    let (result, _, calls) = through_gate(Mode::Panic).await;
    let error = result.outcome.unwrap_err();
    assert_eq!(error.kind, ToolErrorKind::Panicked);
    assert!(error.detail.contains("layer bug"), "{}", error.detail);
    assert_eq!(calls, 0);
}
