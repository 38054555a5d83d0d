//! The JSON schema a tool call's arguments are generated under: the tool's own parameters,
//! with llguidance's layout options and the number bounds that keep a call parseable.

use serde_json::Value;

use crate::tool::ToolDefinition;

/// The tool's parameters with llguidance's layout options: Python `json.dumps` separators and
/// no free whitespace.
pub(super) fn arguments_schema(tool: &ToolDefinition) -> std::result::Result<Value, String> {
    let mut schema = tool.parameters.clone();
    let Value::Object(map) = &mut schema else {
        return Err(format!("the arguments schema is not a JSON object: {}", tool.parameters));
    };
    if map.get("type").and_then(Value::as_str) != Some("object") {
        return Err("the arguments schema must have \"type\": \"object\"".to_owned());
    }
    bound_numbers(map);
    map.insert(
        "x-guidance".to_owned(),
        serde_json::json!({
            "item_separator": ", ",
            "key_separator": ": ",
            "whitespace_flexible": false,
        }),
    );
    Ok(schema)
}

/// The magnitude a `"type": "number"` without bounds is held to in calls.
///
/// llguidance writes an unbounded JSON number with an unbounded exponent, so a model (a
/// random-weight one readily) can write `1e999`: valid JSON, but no `f64` holds it and the
/// call's arguments fail to parse although the grammar allowed them. Bounds make llguidance
/// write plain decimals instead (`rx_float_range` in its `json/numeric.rs`); ±10^15 keeps every
/// integer exact in an `f64`, and llguidance needs bounds that fit an `i64`.
const NUMBER_BOUND: f64 = 1e15;

/// Gives every `"type": "number"` schema in `schema` without a lower (upper) bound the
/// bound `-NUMBER_BOUND` (`NUMBER_BOUND`). Values (`const`, `enum`, `default`, `examples`)
/// are left alone.
fn bound_numbers(schema: &mut serde_json::Map<String, Value>) {
    let is_number = match schema.get("type") {
        Some(Value::String(t)) => t == "number",
        Some(Value::Array(types)) => types.iter().any(|t| t == "number"),
        _ => false,
    };
    if is_number {
        if !schema.contains_key("minimum") && !schema.contains_key("exclusiveMinimum") {
            schema.insert("minimum".to_owned(), serde_json::json!(-NUMBER_BOUND));
        }
        if !schema.contains_key("maximum") && !schema.contains_key("exclusiveMaximum") {
            schema.insert("maximum".to_owned(), serde_json::json!(NUMBER_BOUND));
        }
    }
    for (key, value) in schema.iter_mut() {
        if matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
            continue;
        }
        match value {
            Value::Object(inner) => bound_numbers(inner),
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(inner) = item {
                        bound_numbers(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unbounded_numbers_get_bounds_and_bounded_ones_keep_theirs() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "a": { "type": "number" },
                "b": { "type": "number", "minimum": 0 },
                "c": { "type": ["number", "null"], "exclusiveMaximum": 5 },
                "n": { "type": "integer" },
                "list": { "type": "array", "items": { "type": "number" } },
                "pick": { "anyOf": [{ "type": "number" }, { "type": "string" }] },
                "fixed": { "const": { "type": "number" } }
            }
        });
        bound_numbers(schema.as_object_mut().unwrap());
        let p = &schema["properties"];
        assert_eq!(
            (p["a"]["minimum"].clone(), p["a"]["maximum"].clone()),
            (json!(-1e15), json!(1e15))
        );
        assert_eq!(p["b"]["minimum"], 0);
        assert_eq!(p["b"]["maximum"], json!(1e15));
        assert_eq!(p["c"]["minimum"], json!(-1e15));
        assert!(p["c"].get("maximum").is_none(), "exclusiveMaximum is a bound");
        assert!(p["n"].get("minimum").is_none(), "integers are written without exponents");
        assert_eq!(p["list"]["items"]["maximum"], json!(1e15));
        assert_eq!(p["pick"]["anyOf"][0]["minimum"], json!(-1e15));
        assert_eq!(p["fixed"]["const"], json!({ "type": "number" }), "values are not schemas");
    }
}
