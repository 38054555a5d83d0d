//! Tool declarations: the argument schema a model sees, its validator, and the OpenAI
//! `tools` JSON that Step-Audio 2's `tool_json_schemas` turn carries.
//!
//! The schema of a tool's arguments comes from `schemars` (JSON Schema 2020-12), cleaned
//! for a model to read:
//!
//! - subschemas are inlined (a `$ref` remains only for recursive types);
//! - `$schema`, every `title`, the root `description` (the tool's own description says it)
//!   and Rust-only numeric `format`s (`int32`, `uint`, `double`, …) are dropped;
//! - every object schema with `properties` gets `additionalProperties: false` unless it
//!   says otherwise, except the branches of an `allOf` (which must stay open to combine).
//!
//! Field doc comments become `description`s. A one-field tool declares exactly the shape
//! of upstream's example: `{"type": "object", "properties": {"query": {"type": "string",
//! "description": "…"}}, "required": ["query"], "additionalProperties": false}`.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::{ToolError, ToolErrorKind};
use crate::pyjson::python_json_dumps;
use crate::{Error, Result};

/// What the model is told about one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The name the model writes in `<tool_call>function\n{name}\n…`.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// The JSON Schema of the arguments object.
    pub parameters: Value,
}

impl ToolDefinition {
    /// The OpenAI `tools` entry for this tool:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    ///
    /// It serialises its keys in that order, and the schema's keywords in the order upstream
    /// writes them (`type`, `description`, …, `properties`, `required`,
    /// `additionalProperties`), whatever order the `serde_json` map keeps.
    pub fn openai(&self) -> OpenAiTool<'_> {
        OpenAiTool {
            kind: "function",
            function: OpenAiFunction {
                name: &self.name,
                description: &self.description,
                parameters: SchemaNode::Schema(&self.parameters),
            },
        }
    }
}

/// The OpenAI `tools` form of a [`ToolDefinition`]; see [`ToolDefinition::openai`].
#[derive(Debug, Serialize)]
pub struct OpenAiTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OpenAiFunction<'a>,
}

#[derive(Debug, Serialize)]
struct OpenAiFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: SchemaNode<'a>,
}

/// The content of the `tool_json_schemas` turn: the OpenAI `tools` array, written by
/// [`python_json_dumps`] exactly as Python's `json.dumps(tools, ensure_ascii=False)` writes it
/// (`", "` and `": "` separators, non-ASCII text as is, floats as `repr`).
pub fn tool_json_schemas(definitions: &[ToolDefinition]) -> Result<String> {
    let tools = definitions
        .iter()
        .map(|definition| {
            // `preserve_order` keeps the key order `openai()` serialises in.
            serde_json::to_value(definition.openai()).map_err(|e| Error::Tool {
                name: definition.name.clone(),
                message: format!("cannot serialise the declaration: {e}"),
            })
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok(python_json_dumps(&Value::Array(tools)))
}

/// The arguments of a tool that takes none: declared as an empty object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The cleaned, model-facing JSON Schema of `A` (see the module docs).
pub fn parameters_schema<A: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<A>().to_value();
    if let Value::Object(root) = &mut schema {
        root.remove("description");
    }
    clean(&mut schema, false);
    schema
}

/// Schema keywords whose value is one subschema.
const SUBSCHEMA_KEYS: [&str; 10] = [
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];
/// Schema keywords whose value maps names to subschemas.
const SUBSCHEMA_MAP_KEYS: [&str; 5] =
    ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
/// Schema keywords whose value is an array of subschemas.
const SUBSCHEMA_LIST_KEYS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// `format`s that only restate the Rust integer or float type.
const RUST_NUMBER_FORMATS: [&str; 14] = [
    "int", "int8", "int16", "int32", "int64", "int128", "uint", "uint8", "uint16", "uint32",
    "uint64", "uint128", "float", "double",
];

fn clean(schema: &mut Value, in_all_of: bool) {
    let Value::Object(map) = schema else { return };
    map.remove("$schema");
    map.remove("title");
    if map.get("format").and_then(Value::as_str).is_some_and(|f| RUST_NUMBER_FORMATS.contains(&f)) {
        map.remove("format");
    }
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !in_all_of {
        map.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    for_each_subschema_mut(map, clean);
}

/// Calls `f` on every subschema directly under the schema `map`, with whether it is an
/// `allOf` member (an `items` array, draft 7's tuple form, counts as a list of subschemas).
pub(crate) fn for_each_subschema_mut(
    map: &mut Map<String, Value>,
    mut f: impl FnMut(&mut Value, bool),
) {
    for (key, value) in map.iter_mut() {
        let key = key.as_str();
        let list = SUBSCHEMA_LIST_KEYS.contains(&key) || (key == "items" && value.is_array());
        if list {
            if let Value::Array(children) = value {
                let all_of = key == "allOf";
                children.iter_mut().for_each(|child| f(child, all_of));
            }
        } else if SUBSCHEMA_KEYS.contains(&key) {
            f(value, false);
        } else if SUBSCHEMA_MAP_KEYS.contains(&key) {
            if let Value::Object(children) = value {
                children.values_mut().for_each(|child| f(child, false));
            }
        }
    }
}

/// Compiled argument validation for one tool.
#[derive(Debug, Clone)]
pub(crate) struct ArgsValidator {
    validator: jsonschema::Validator,
}

/// How many schema violations a model message lists.
const MAX_LISTED_VIOLATIONS: usize = 4;

impl ArgsValidator {
    /// Compiles `definition.parameters`, which must be an object schema.
    pub(crate) fn new(definition: &ToolDefinition) -> Result<Self> {
        let schema = &definition.parameters;
        let object = schema.get("type").and_then(Value::as_str) == Some("object");
        if !object {
            return Err(Error::Tool {
                name: definition.name.clone(),
                message: format!(
                    "the arguments schema must have \"type\": \"object\" (the model always \
                     sends an object); found {schema}"
                ),
            });
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .map_err(|e| Error::Tool {
                name: definition.name.clone(),
                message: format!("the arguments schema does not compile: {e}"),
            })?;
        Ok(Self { validator })
    }

    /// Checks `args` against the schema. The model message names each offending field and
    /// what is wrong with it, without echoing the values; the detail has everything.
    pub(crate) fn check(&self, tool: &str, args: &Value) -> std::result::Result<(), ToolError> {
        let mut errors = self.validator.iter_errors(args).peekable();
        if errors.peek().is_none() {
            return Ok(());
        }
        let mut for_model = Vec::new();
        let mut for_logs = Vec::new();
        for (i, error) in errors.enumerate() {
            let pointer = error.instance_path().as_str().to_owned();
            let place = if pointer.is_empty() {
                "arguments".to_owned()
            } else {
                format!("field \"{}\"", pointer.trim_start_matches('/').replace('/', "."))
            };
            if i < MAX_LISTED_VIOLATIONS {
                for_model.push(format!("{place}: {}", model_text(&error)));
            }
            for_logs.push(format!("{place}: {error} (schema {})", error.schema_path().as_str()));
        }
        if for_logs.len() > MAX_LISTED_VIOLATIONS {
            for_model.push(format!("{} more", for_logs.len() - MAX_LISTED_VIOLATIONS));
        }
        Err(ToolError::new(
            ToolErrorKind::InvalidArguments,
            format!("Invalid arguments for tool \"{tool}\": {}.", for_model.join("; ")),
        )
        .with_detail(format!(
            "tool \"{tool}\": arguments {args} rejected: {}",
            for_logs.join("; ")
        )))
    }
}

/// A violation as the model is told it: without the offending value, and with every
/// allowed value of an `enum` (jsonschema's own message lists only two).
fn model_text(error: &jsonschema::ValidationError<'_>) -> String {
    match error.kind() {
        jsonschema::error::ValidationErrorKind::Enum { options } => match options.as_ref() {
            Value::Array(values) => {
                let values: Vec<String> = values.iter().map(Value::to_string).collect();
                format!("value must be one of {}", values.join(", "))
            }
            other => format!("value must be one of {other}"),
        },
        _ => error.masked().to_string(),
    }
}

/// Where a value sits in a schema, which decides how it is written.
#[derive(Debug, Clone, Copy)]
enum SchemaNode<'a> {
    /// A (sub)schema: its keywords are written in [`KEYWORD_ORDER`] first.
    Schema(&'a Value),
    /// A map of names to subschemas (`properties`, `$defs`): names in map order.
    Map(&'a Value),
    /// An array of subschemas (`anyOf`, `prefixItems`).
    List(&'a Value),
    /// Data inside a schema (`enum`, `required`, `default`): written as is.
    Data(&'a Value),
}

/// The keywords written first, in this order; the others follow in map order.
const KEYWORD_ORDER: [&str; 9] = [
    "type",
    "description",
    "enum",
    "const",
    "format",
    "items",
    "properties",
    "required",
    "additionalProperties",
];

fn child<'a>(key: &str, value: &'a Value) -> SchemaNode<'a> {
    if SUBSCHEMA_KEYS.contains(&key) {
        SchemaNode::Schema(value)
    } else if SUBSCHEMA_MAP_KEYS.contains(&key) {
        SchemaNode::Map(value)
    } else if SUBSCHEMA_LIST_KEYS.contains(&key) {
        SchemaNode::List(value)
    } else {
        SchemaNode::Data(value)
    }
}

impl Serialize for SchemaNode<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match *self {
            SchemaNode::Schema(Value::Object(map)) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for key in KEYWORD_ORDER {
                    if let Some(value) = map.get(key) {
                        out.serialize_entry(key, &child(key, value))?;
                    }
                }
                for (key, value) in ordinary_entries(map) {
                    out.serialize_entry(key, &child(key, value))?;
                }
                out.end()
            }
            SchemaNode::Map(Value::Object(map)) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &SchemaNode::Schema(value))?;
                }
                out.end()
            }
            SchemaNode::List(Value::Array(items)) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&SchemaNode::Schema(item))?;
                }
                out.end()
            }
            SchemaNode::Schema(value)
            | SchemaNode::Map(value)
            | SchemaNode::List(value)
            | SchemaNode::Data(value) => value.serialize(serializer),
        }
    }
}

fn ordinary_entries(map: &Map<String, Value>) -> impl Iterator<Item = (&str, &Value)> {
    map.iter().map(|(k, v)| (k.as_str(), v)).filter(|(k, _)| !KEYWORD_ORDER.contains(k))
}
