//! `get_date_time`: time-zone aware output in Chinese and English, session zone changes,
//! and the declared (empty) argument schema. The expected strings are the formats of the
//! tool's contract (the Chinese one follows the system prompts of stepfun-ai/Step-Audio2
//! `examples.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use voxloop_core::tool::{ToolCall, ToolErrorKind, ToolRegistry};
use voxloop_tools::config::{DateTimeConfig, Language, ToolsConfig};
use voxloop_tools::{register_builtin_tools, DateTimeTool};

/// 2025-08-28 07:30:00 UTC: Thursday 15:30 in Shanghai, Wednesday evening in Honolulu.
fn instant() -> jiff::Timestamp {
    "2025-08-28T07:30:00Z".parse().unwrap()
}

fn tool(zone: &str, language: Language) -> DateTimeTool {
    let config = DateTimeConfig { timezone: zone.into(), language, ..DateTimeConfig::default() };
    DateTimeTool::from_config(&config).unwrap().with_clock(instant)
}

#[test]
fn formats_in_the_configured_zone_and_language() {
    assert_eq!(tool("Asia/Shanghai", Language::Zh).now_text(), "2025年8月28日 星期四 15:30");
    assert_eq!(
        tool("Asia/Shanghai", Language::En).now_text(),
        "Thursday, 28 August 2025, 15:30 (Asia/Shanghai)"
    );
    assert_eq!(tool("UTC", Language::En).now_text(), "Thursday, 28 August 2025, 07:30 (UTC)");
    assert_eq!(
        tool("America/Los_Angeles", Language::En).now_text(),
        "Thursday, 28 August 2025, 00:30 (America/Los_Angeles)"
    );
    assert_eq!(
        tool("Pacific/Honolulu", Language::En).now_text(),
        "Wednesday, 27 August 2025, 21:30 (Pacific/Honolulu)"
    );
    assert_eq!(tool("Pacific/Honolulu", Language::Zh).now_text(), "2025年8月27日 星期三 21:30");
}

#[test]
fn the_session_can_change_the_zone_and_bad_zones_are_refused() {
    let tool = tool("UTC", Language::Zh);
    let zone = tool.time_zone();
    zone.set("Asia/Tokyo").unwrap();
    assert_eq!(tool.now_text(), "2025年8月28日 星期四 16:30");
    assert!(zone.set("Mars/Olympus_Mons").is_err());
    assert_eq!(zone.name(), "Asia/Tokyo");
    let bad = DateTimeConfig { timezone: "Nowhere/Land".into(), ..DateTimeConfig::default() };
    let error = DateTimeTool::from_config(&bad).err().unwrap().to_string();
    assert!(error.contains("Nowhere/Land"), "{error}");
}

#[tokio::test]
async fn it_is_called_with_empty_arguments_through_the_registry() {
    let mut registry = ToolRegistry::new();
    registry.register(tool("Asia/Shanghai", Language::Zh)).unwrap();
    let schemas = registry.tool_json_schemas().unwrap();
    let declared: serde_json::Value = serde_json::from_str(&schemas).unwrap();
    assert_eq!(declared[0]["function"]["name"], "get_date_time");
    let parameters = &declared[0]["function"]["parameters"];
    assert_eq!(parameters["type"], "object", "{schemas}");
    assert!(parameters.get("required").is_none(), "{schemas}");
    assert!(parameters["properties"].as_object().is_none_or(|p| p.is_empty()), "{schemas}");
    for args in [json!({}), serde_json::Value::Null] {
        let result = registry.call(ToolCall::new("get_date_time", args)).await;
        assert_eq!(result.model_text(), "2025年8月28日 星期四 15:30");
    }
    let result = registry.call(ToolCall::new("get_date_time", json!({"tz": "x"}))).await;
    assert_eq!(result.error_kind(), Some(ToolErrorKind::InvalidArguments));
}

#[test]
fn builtins_register_from_a_toml_config() {
    let config: ToolsConfig = toml::from_str(
        r#"
        [web_search]
        enabled = false
        [date_time]
        timezone = "Asia/Shanghai"
        language = "zh"
        [weather]
        language = "zh"
        timeout_ms = 3000
        "#,
    )
    .unwrap();
    assert_eq!(config.date_time.language, Language::Zh);
    let mut registry = ToolRegistry::new();
    register_builtin_tools(&mut registry, &config).unwrap();
    let names: Vec<&str> = registry.names().collect();
    assert!(names.contains(&"get_date_time") && names.contains(&"get_weather"), "{names:?}");
    assert!(!names.contains(&"web_search"), "{names:?}");

    let unknown: Result<ToolsConfig, _> = toml::from_str("[web_search]\nprovder = \"brave\"\n");
    assert!(unknown.is_err(), "typos in keys are rejected");
    // A keyed provider without its key in the environment fails at start-up, naming the variable.
    let brave: ToolsConfig = toml::from_str(
        "[web_search]\nprovider = \"brave\"\n[web_search.brave]\napi_key_env = \"VOXLOOP_TEST_UNSET_BRAVE_KEY\"\n",
    )
    .unwrap();
    let error = register_builtin_tools(&mut ToolRegistry::new(), &brave).unwrap_err().to_string();
    assert!(error.contains("VOXLOOP_TEST_UNSET_BRAVE_KEY"), "{error}");
}
