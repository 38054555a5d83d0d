//! The JSON schema a tool call's arguments are generated under: the tool's own parameters,
//! with llguidance's layout options and the number bounds that keep a call parseable.

use serde_json::Value;

use crate::tool::schema::for_each_subschema_mut;
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

/// The magnitude a number without bounds is held to in calls.
///
/// llguidance writes an unbounded JSON number with an unbounded exponent, so a model (a
/// random-weight one readily) can write `1e999`: valid JSON, but no `f64` holds it and the
/// call's arguments fail to parse although the grammar allowed them. Bounds make llguidance
/// write plain decimals instead (`rx_float_range` in its `json/numeric.rs`); ±10^15 keeps every
/// integer exact in an `f64`, and llguidance needs bounds that fit an `i64`. Integers get the
/// same bounds: without them a model can write more digits than an `f64` holds.
const NUMBER_BOUND: f64 = 1e15;

/// The `$defs` entry for "any JSON value" with bounded numbers.
const ANY_DEF: &str = "voxloop_bounded_json";

/// A schema matching any JSON value whose numbers are within ±`NUMBER_BOUND`.
///
/// llguidance compiles an unconstrained spot (`true`, `{}`, a missing `additionalProperties`
/// or `items`) to its own "any value" (`gen_json_any` in its `json/compiler.rs`), whose numbers
/// are unbounded: server-everything's `get-sum` declares no `additionalProperties`, and the
/// random model's extra properties once held a number no `f64` holds.
fn any_reference() -> Value {
    serde_json::json!({ "$ref": format!("#/$defs/{ANY_DEF}") })
}

fn any_definition() -> Value {
    serde_json::json!({ "anyOf": [
        { "type": "null" },
        { "type": "boolean" },
        { "type": "number", "minimum": -NUMBER_BOUND, "maximum": NUMBER_BOUND },
        { "type": "string" },
        { "type": "array", "items": any_reference() },
        { "type": "object", "additionalProperties": any_reference() },
    ] })
}

/// Keywords that say nothing about which values match.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "format",
];

/// Bounds every number the schema of the arguments object `root` admits (see `NUMBER_BOUND`):
/// numeric schemas without bounds get them, and unconstrained spots become a reference to
/// `ANY_DEF`, added to `$defs` when used. Values (`const`, `enum`, `default`, `examples`) are
/// left alone.
fn bound_numbers(root: &mut serde_json::Map<String, Value>) {
    let mut used_any = false;
    for_each_subschema_mut(root, |schema, _| bound_schema(schema, &mut used_any));
    bound_object_schema(root, &mut used_any);
    if used_any {
        let defs = root.entry("$defs").or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(defs) = defs {
            defs.insert(ANY_DEF.to_owned(), any_definition());
        }
    }
}

/// Bounds one schema in place.
fn bound_schema(schema: &mut Value, used_any: &mut bool) {
    match schema {
        Value::Bool(true) => {
            *schema = any_reference();
            *used_any = true;
        }
        Value::Object(map) => {
            if map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())) {
                map.insert("$ref".to_owned(), any_reference()["$ref"].clone());
                *used_any = true;
                return;
            }
            for_each_subschema_mut(map, |schema, _| bound_schema(schema, used_any));
            bound_object_schema(map, used_any);
        }
        _ => {}
    }
}

/// The bounds a schema's own keywords need: number bounds, and bounded defaults for the
/// properties and items it leaves open.
fn bound_object_schema(schema: &mut serde_json::Map<String, Value>, used_any: &mut bool) {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let (number, integer) = (types.contains(&"number"), types.contains(&"integer"));
    let object =
        types.contains(&"object") || (types.is_empty() && schema.contains_key("properties"));
    let array = types.contains(&"array");
    if number || integer {
        // Integer-valued bounds suit both: llguidance reads an integer range from them.
        let bound = NUMBER_BOUND as i64;
        if !schema.contains_key("minimum") && !schema.contains_key("exclusiveMinimum") {
            schema.insert("minimum".to_owned(), serde_json::json!(-bound));
        }
        if !schema.contains_key("maximum") && !schema.contains_key("exclusiveMaximum") {
            schema.insert("maximum".to_owned(), serde_json::json!(bound));
        }
    }
    let mut open = |keyword: &str| {
        if !schema.contains_key(keyword) {
            schema.insert(keyword.to_owned(), any_reference());
            *used_any = true;
        }
    };
    if object {
        open("additionalProperties");
    }
    if array {
        open("items");
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
            (json!(-BOUND), json!(BOUND))
        );
        assert_eq!(p["b"]["minimum"], 0);
        assert_eq!(p["b"]["maximum"], json!(BOUND));
        assert_eq!(p["c"]["minimum"], json!(-BOUND));
        assert!(p["c"].get("maximum").is_none(), "exclusiveMaximum is a bound");
        assert_eq!(p["n"]["maximum"], json!(BOUND), "an integer can have too many digits");
        assert_eq!(p["list"]["items"]["maximum"], json!(BOUND));
        assert_eq!(p["pick"]["anyOf"][0]["minimum"], json!(-BOUND));
        assert_eq!(p["fixed"]["const"], json!({ "type": "number" }), "values are not schemas");
    }

    const BOUND: i64 = NUMBER_BOUND as i64;

    #[test]
    fn open_spots_get_the_bounded_any_schema() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "free": {},
                "noted": { "description": "anything" },
                "yes": true,
                "no": false,
                "list": { "type": "array" },
                "tuple": { "type": "array", "items": [{ "type": "string" }] },
                "map": { "type": "object", "additionalProperties": true },
                "closed": { "type": "object", "additionalProperties": false },
                "typed": { "type": "object", "additionalProperties": { "type": "string" } },
                "pick": { "enum": [1e300] }
            }
        });
        bound_numbers(schema.as_object_mut().unwrap());
        let any = any_reference();
        assert_eq!(schema["additionalProperties"], any, "the arguments object itself");
        assert_eq!(schema["$defs"][ANY_DEF], any_definition());
        let p = &schema["properties"];
        assert_eq!(p["free"], any);
        assert_eq!(p["noted"], json!({ "description": "anything", "$ref": any["$ref"] }));
        assert_eq!(p["yes"], any);
        assert_eq!(p["no"], false);
        assert_eq!(p["list"]["items"], any);
        assert_eq!(p["tuple"]["items"], json!([{ "type": "string" }]));
        assert_eq!(p["map"]["additionalProperties"], any);
        assert_eq!(p["closed"]["additionalProperties"], false);
        assert_eq!(p["typed"]["additionalProperties"], json!({ "type": "string" }));
        assert_eq!(p["pick"], json!({ "enum": [1e300] }));
    }

    #[test]
    fn a_closed_schema_gets_no_definitions() {
        let mut schema = json!({
            "type": "object",
            "properties": { "q": { "type": "string" } },
            "additionalProperties": false
        });
        let before = schema.clone();
        bound_numbers(schema.as_object_mut().unwrap());
        assert_eq!(schema, before);
    }
}
