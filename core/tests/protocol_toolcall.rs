//! The tool-call parser on assistant turns in the format of StepFun's released
//! StepEval-Audio-Toolcall dialogues (stepfun-ai/Step-Audio2, Step-Audio_Toolcall/*.jsonl:
//! padded lines such as `function  \n`, `\n get_date_time\n`, a spoken preamble before the
//! call), and on malformed calls, which must become errors the model can read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Map, Value};
use voxloop_core::protocol::{
    parse_tool_call, parse_turn_text, render_tool_call, ParsedToolCall, ToolCallError,
};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// Assistant turns as they appear in the benchmark files (turn text, the call's name and
/// arguments). The file each shape comes from is noted.
fn benchmark_turns() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        // timbre_positive.jsonl: two spaces before each newline.
        (
            "<tool_call>function  \ntimbre_rag  \n{\"query\": \"海绵宝宝的音色\"}</tool_call>",
            "timbre_rag",
            json!({"query": "海绵宝宝的音色"}),
        ),
        // timbre_positive.jsonl: one space.
        (
            "<tool_call>function \ntimbre_rag \n{\"query\": \"默认女音色\"}</tool_call>",
            "timbre_rag",
            json!({"query": "默认女音色"}),
        ),
        // get_date_time_positive.jsonl: a space after the newline, empty arguments.
        ("<tool_call>function\n get_date_time\n{}</tool_call>", "get_date_time", json!({})),
        (
            "<tool_call>function  \nget_date_time  \n{}</tool_call>",
            "get_date_time",
            json!({}),
        ),
        // get_weather_positive.jsonl.
        (
            "<tool_call>function\nget_weather\n{\"location\": \"chengdu\"}</tool_call>",
            "get_weather",
            json!({"location": "chengdu"}),
        ),
        // get_weather_negative.jsonl: web_search and calculate distractors.
        (
            "<tool_call>function\nweb_search\n{\"query\": \"太阳能推广 政策 补贴\"}</tool_call>",
            "web_search",
            json!({"query": "太阳能推广 政策 补贴"}),
        ),
        (
            "<tool_call>function\ncalculate\n{\"expression\": \"8000 + (1000 * 7) + (500 * 7)\"}</tool_call>",
            "calculate",
            json!({"expression": "8000 + (1000 * 7) + (500 * 7)"}),
        ),
        (
            "<tool_call>function\ncalculate\n{\"expression\": \"35 * (60 + 25) + 1200 + 500\"}</tool_call>",
            "calculate",
            json!({"expression": "35 * (60 + 25) + 1200 + 500"}),
        ),
    ]
}

#[test]
fn protocol_toolcall_parses_benchmark_turns() {
    for (turn, name, arguments) in benchmark_turns() {
        let parsed = parse_turn_text(turn);
        assert_eq!(parsed.content, "", "{turn:?}");
        assert_eq!(parsed.calls.len(), 1, "{turn:?}");
        let call = parsed.calls[0].as_ref().unwrap();
        assert_eq!(call.name, name, "{turn:?}");
        assert_eq!(call.arguments, object(arguments), "{turn:?}");
    }
}

#[test]
fn protocol_toolcall_preamble_and_several_calls() {
    // get_date_time_positive.jsonl, session 2: a spoken preamble before the call.
    let parsed = parse_turn_text(
        "没问题，我现在确认一下！<tool_call>function\n get_date_time\n{}</tool_call>",
    );
    assert_eq!(parsed.content, "没问题，我现在确认一下！");
    assert_eq!(
        parsed.calls,
        vec![Ok(ParsedToolCall { name: "get_date_time".into(), arguments: Map::new() })]
    );

    // Several blocks, with text between and after them.
    let turn = "先查天气。<tool_call>function\nget_weather\n{\"location\": \"xian\"}</tool_call>\n\
                <tool_call>function\nweb_search\n{\"query\": \"兵马俑 门票\"}</tool_call>好的";
    let parsed = parse_turn_text(turn);
    assert_eq!(parsed.content, "先查天气。\n好的");
    let names: Vec<&str> = parsed.calls.iter().map(|c| c.as_ref().unwrap().name.as_str()).collect();
    assert_eq!(names, ["get_weather", "web_search"]);

    // No call at all.
    let parsed = parse_turn_text("今天天气很好。");
    assert_eq!(parsed.content, "今天天气很好。");
    assert!(parsed.calls.is_empty());
}

#[test]
fn protocol_toolcall_tolerates_whitespace_and_multiline_json() {
    let call = parse_tool_call(
        "\n function \r\n  get_weather\t\n  {\n  \"location\": \"tokyo\",\n  \"days\": 3\n}  \n",
    )
    .unwrap();
    assert_eq!(call.name, "get_weather");
    assert_eq!(call.arguments, object(json!({"location": "tokyo", "days": 3})));
    // Key order is kept.
    let call = parse_tool_call("function\nf\n{\"b\": 1, \"a\": 2}").unwrap();
    assert_eq!(call.arguments.keys().collect::<Vec<_>>(), ["b", "a"]);
}

#[test]
fn protocol_toolcall_malformed_calls_are_errors_for_the_model() {
    type Check = fn(&ToolCallError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("", |e| matches!(e, ToolCallError::Empty)),
        ("  \n \n", |e| matches!(e, ToolCallError::Empty)),
        (
            "get_weather\n{}",
            |e| matches!(e, ToolCallError::NotAFunction { found } if found == "get_weather"),
        ),
        ("functions\nf\n{}", |e| matches!(e, ToolCallError::NotAFunction { .. })),
        ("function", |e| matches!(e, ToolCallError::MissingName)),
        ("function\n\n{}", |e| matches!(e, ToolCallError::EmptyName)),
        ("function\n   \n{}", |e| matches!(e, ToolCallError::EmptyName)),
        (
            "function\nget_date_time",
            |e| matches!(e, ToolCallError::MissingArguments { name } if name == "get_date_time"),
        ),
        ("function\nget_date_time\n  ", |e| matches!(e, ToolCallError::MissingArguments { .. })),
        ("function\nweb_search {\"query\": \"x\"}", |e| {
            matches!(e, ToolCallError::MissingArguments { .. })
        }),
        (
            "function\nweb_search\n{\"query\": }",
            |e| matches!(e, ToolCallError::InvalidJson { name, .. } if name == "web_search"),
        ),
        ("function\nweb_search\n{\"query\": \"x\"", |e| {
            matches!(e, ToolCallError::InvalidJson { .. })
        }),
        ("function\nweb_search\n{'query': 'x'}", |e| {
            matches!(e, ToolCallError::InvalidJson { .. })
        }),
        ("function\nweb_search\n[\"x\"]", |e| {
            matches!(e, ToolCallError::ArgumentsNotObject { found: "an array", .. })
        }),
        ("function\nweb_search\n\"x\"", |e| {
            matches!(e, ToolCallError::ArgumentsNotObject { found: "a string", .. })
        }),
        ("function\nweb_search\nnull", |e| {
            matches!(e, ToolCallError::ArgumentsNotObject { found: "null", .. })
        }),
        ("function\nweb_search\n42", |e| {
            matches!(e, ToolCallError::ArgumentsNotObject { found: "a number", .. })
        }),
        (
            "function\nweb_search\n{} {}",
            |e| matches!(e, ToolCallError::TrailingText { trailing, .. } if trailing == "{}"),
        ),
        ("function\nweb_search\n{\"query\": \"x\"} thanks!", |e| {
            matches!(e, ToolCallError::TrailingText { .. })
        }),
    ];
    for (body, check) in cases {
        let err = parse_tool_call(body).unwrap_err();
        assert!(check(&err), "{body:?} gave {err:?}");
        let message = err.to_string();
        assert!(message.starts_with("invalid tool call"), "{message}");
        assert!(message.chars().count() < 200 && !message.contains('\n'), "{message:?}");
        // Through the crate error, the message is unchanged.
        assert_eq!(voxloop_core::Error::from(err).to_string(), message);
    }
    // Long garbage is quoted only in part.
    let long = format!("{}\nf\n{{}}", "x".repeat(500));
    let message = parse_tool_call(&long).unwrap_err().to_string();
    assert!(message.len() < 200, "{message}");
}

#[test]
fn protocol_toolcall_tag_errors_in_turn_text() {
    let parsed = parse_turn_text("a</tool_call>b");
    assert_eq!(parsed.content, "ab");
    assert_eq!(parsed.calls, vec![Err(ToolCallError::UnmatchedClose)]);

    let parsed = parse_turn_text("x<tool_call>function\nweb_search\n{\"q\": 1");
    assert_eq!(parsed.content, "x");
    assert!(
        matches!(&parsed.calls[..], [Err(ToolCallError::Unclosed { text })] if text.starts_with("function\nweb_search"))
    );

    let parsed = parse_turn_text("<tool_call>function\na\n<tool_call>function\nb\n{}</tool_call>");
    assert!(matches!(parsed.calls[0], Err(ToolCallError::Nested { .. })));
    assert_eq!(parsed.calls[1].as_ref().unwrap().name, "b");

    let parsed = parse_turn_text("<tool_call></tool_call>");
    assert_eq!(parsed.calls, vec![Err(ToolCallError::Empty)]);
}

#[test]
fn protocol_toolcall_render_round_trips() {
    for (_, name, arguments) in benchmark_turns() {
        let arguments = object(arguments);
        let text = render_tool_call(name, &arguments);
        assert!(text.starts_with("<tool_call>function\n") && text.ends_with("</tool_call>"));
        let parsed = parse_turn_text(&text);
        assert_eq!(parsed.content, "");
        let call = parsed.calls[0].as_ref().unwrap();
        assert_eq!((call.name.as_str(), &call.arguments), (name, &arguments));
        assert_eq!(call.render(), text);
    }
}
