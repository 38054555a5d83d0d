//! Tool declarations: the generated argument schemas, their OpenAI `tools` form, and
//! registration checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod tool_support;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tool_support::{CalcArgs, Calculator};
use voxloop_core::tool::{
    parameters_schema, tool_json_schemas, NoArgs, Tool, ToolDefinition, ToolRegistry,
};
use voxloop_core::Error;

/// A search tool declared like upstream's example (`examples.py::tool_call_test`).
struct Search;

#[derive(Deserialize, JsonSchema)]
struct SearchArgs {
    /// 搜索关键词
    query: String,
}

#[async_trait::async_trait]
impl Tool for Search {
    const NAME: &'static str = "search";
    type Args = SearchArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "搜索工具".to_owned()
    }

    async fn call(&self, args: SearchArgs) -> Result<String, Self::Error> {
        Ok(args.query)
    }
}

#[test]
fn calculator_schema_snapshot() {
    let expected = json!({
        "type": "object",
        "properties": {
            "a": {"type": "number", "description": "The left operand."},
            "b": {"type": "number", "description": "The right operand."},
            "op": {
                "type": "string",
                "enum": ["add", "subtract", "multiply", "divide"],
                "description": "The operation to apply."
            },
            "precision": {
                "type": ["integer", "null"],
                "description": "Digits after the decimal point in the text answer (default 2).",
                "default": null,
                "minimum": 0,
                "maximum": 255
            }
        },
        "required": ["a", "b", "op"],
        "additionalProperties": false
    });
    assert_eq!(parameters_schema::<CalcArgs>(), expected);
}

#[test]
fn the_declaration_of_a_search_tool_is_byte_identical_to_upstreams_example() {
    let mut tools = ToolRegistry::new();
    tools.register(Search).unwrap();
    let upstream = r#"[{"type": "function", "function": {"name": "search", "description": "搜索工具", "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "搜索关键词"}}, "required": ["query"], "additionalProperties": false}}}]"#;
    assert_eq!(tools.tool_json_schemas().unwrap(), upstream);
}

#[test]
fn declarations_list_tools_in_registration_order_with_keywords_in_upstream_order() {
    let mut tools = ToolRegistry::new();
    tools.register(Calculator::default()).unwrap().register(Search).unwrap();
    assert_eq!(tools.names().collect::<Vec<_>>(), ["calculator", "search"]);
    let definitions = tools.definitions();
    assert_eq!(definitions[0].name, "calculator");
    assert_eq!(definitions[0].description, "Computes a + b, a - b, a * b or a / b.");
    assert_eq!(definitions[0].parameters, parameters_schema::<CalcArgs>());

    let text = tool_json_schemas(&definitions).unwrap();
    let calculator = r#"{"type": "function", "function": {"name": "calculator", "description": "Computes a + b, a - b, a * b or a / b.", "parameters": {"type": "object", "properties": {"a": {"type": "number", "description": "The left operand."}, "b": {"type": "number", "description": "The right operand."}, "op": {"type": "string", "description": "The operation to apply.", "enum": ["add", "subtract", "multiply", "divide"]}, "precision": {"type": ["integer", "null"], "description": "Digits after the decimal point in the text answer (default 2).", "default": null, "minimum": 0, "maximum": 255}}, "required": ["a", "b", "op"], "additionalProperties": false}}}"#;
    assert!(text.starts_with(&format!("[{calculator}, ")), "{text}");
    // The text is the JSON of the OpenAI form.
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed[1], serde_json::to_value(definitions[1].openai()).unwrap());
    assert_eq!(parsed[1]["type"], "function");
    assert_eq!(parsed[1]["function"]["parameters"], definitions[1].parameters);
}

/// Arguments with a nested struct, a list, a map and Rust integer types.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct TripArgs {
    /// Where to go.
    destination: Place,
    /// Stops on the way.
    stops: Vec<Place>,
    /// Free-form labels.
    tags: std::collections::BTreeMap<String, String>,
    /// How many travellers.
    travellers: u32,
    /// The budget in euros.
    budget: f32,
}

/// A place.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Place {
    /// The city.
    city: String,
    /// The day of arrival, 1-based.
    day: Option<u16>,
}

/// Every key of every object in `value`, recursively.
fn all_keys(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                out.push(key.clone());
                all_keys(child, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| all_keys(item, out)),
        _ => {}
    }
}

#[test]
fn nested_schemas_are_inlined_closed_and_free_of_noise() {
    let schema = parameters_schema::<TripArgs>();
    let mut keys = Vec::new();
    all_keys(&schema, &mut keys);
    for noise in ["$schema", "title", "$defs", "$ref", "format"] {
        assert!(!keys.iter().any(|k| k == noise), "{noise} in {schema:#}");
    }
    assert!(schema.get("description").is_none(), "the root description is dropped: {schema:#}");
    let place = &schema["properties"]["destination"];
    assert_eq!(place["type"], "object");
    assert_eq!(place["description"], "Where to go.");
    assert_eq!(place["additionalProperties"], false);
    assert_eq!(place["required"], json!(["city"]));
    assert_eq!(schema["properties"]["stops"]["items"]["additionalProperties"], false);
    assert_eq!(schema["properties"]["stops"]["items"]["properties"]["city"]["type"], "string");
    assert_eq!(schema["properties"]["tags"]["additionalProperties"], json!({"type": "string"}));
    assert_eq!(schema["properties"]["travellers"]["minimum"], 0);
    assert_eq!(schema["additionalProperties"], false);
}

struct Clock;

#[async_trait::async_trait]
impl Tool for Clock {
    const NAME: &'static str = "get_date_time";
    type Args = NoArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Tells the date and time.".to_owned()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Self::Error> {
        Ok("2025年8月28日 星期四 15:30".to_owned())
    }
}

#[test]
fn a_tool_without_arguments_declares_a_closed_empty_object() {
    let schema = parameters_schema::<NoArgs>();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema.get("required").is_none());
    let mut tools = ToolRegistry::new();
    tools.register(Clock).unwrap();
    assert_eq!(tools.get("get_date_time").unwrap().definition().parameters, schema);
}

#[test]
fn a_second_tool_with_the_same_name_is_refused() {
    let mut tools = ToolRegistry::new();
    tools.register(Search).unwrap();
    match tools.register(Search) {
        Err(Error::Tool { name, message }) => {
            assert_eq!(name, "search");
            assert!(message.contains("already registered"), "{message}");
        }
        other => panic!("expected Error::Tool, got {other:?}"),
    }
    assert_eq!(tools.len(), 1);
}

/// A tool whose name the model could not write on one line.
struct BadName;

#[async_trait::async_trait]
impl Tool for BadName {
    const NAME: &'static str = "web search\n";
    type Args = NoArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        String::new()
    }

    async fn call(&self, _: NoArgs) -> Result<String, Self::Error> {
        Ok(String::new())
    }
}

/// A tool whose arguments are not an object.
struct BareString;

#[async_trait::async_trait]
impl Tool for BareString {
    const NAME: &'static str = "bare_string";
    type Args = String;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        String::new()
    }

    async fn call(&self, args: String) -> Result<String, Self::Error> {
        Ok(args)
    }
}

#[test]
fn invalid_names_and_non_object_arguments_are_refused_naming_the_tool() {
    let mut tools = ToolRegistry::new();
    let err = tools.register(BadName).unwrap_err();
    assert!(matches!(&err, Error::Tool { name, .. } if name == "web search\n"), "{err}");
    assert!(err.to_string().contains("invalid tool name"), "{err}");

    let err = tools.register(BareString).unwrap_err();
    assert!(matches!(&err, Error::Tool { name, .. } if name == "bare_string"), "{err}");
    assert!(err.to_string().contains("\"type\": \"object\""), "{err}");
    assert!(tools.is_empty());
}

#[test]
fn a_definition_round_trips_through_serde() {
    let definition = ToolDefinition {
        name: "search".to_owned(),
        description: "搜索工具".to_owned(),
        parameters: parameters_schema::<SearchArgs>(),
    };
    let text = serde_json::to_string(&definition).unwrap();
    assert_eq!(serde_json::from_str::<ToolDefinition>(&text).unwrap(), definition);
}
