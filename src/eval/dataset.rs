//! The benchmark's layout: `{tool}_{positive,negative}.jsonl` beside a `wav/` folder. Each
//! line is one dialogue, a JSON list of turns
//!
//! ```text
//! {"session_id": "704", "turn_idx": 0, "from": "Human", "text": "…",
//!  "value": {"type": "wav", "value": "wav/get_weather_positive.jsonl-0-0.wav"}}
//! {"from": "Assistant", "text": "…", "value": {"type": "wav", …}}        spoken answer
//! {"from": "Assistant", "value": "<tool_call>function\nget_weather\n{…}</tool_call>"}
//! {"from": "Input", "text": "…"}                                          a tool's result
//! ```
//!
//! whose last turn is the assistant's reference answer: a call in the positives, an answer
//! without the file's tool in the negatives. The earlier turns are the history an evaluation
//! replays. The `timbre` files are about `timbre_rag`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use voxloop_core::protocol::{parse_turn_text, ParsedTurn};

/// The four tools of the benchmark, as their files name them and as the model calls them.
pub const TOOLS: [(&str, &str); 4] = [
    ("timbre", "timbre_rag"),
    ("get_date_time", "get_date_time"),
    ("get_weather", "get_weather"),
    ("web_search", "web_search"),
];

/// One turn of a dialogue's history.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// The user: the transcript and, for a spoken turn, its recording.
    Human { text: String, wav: Option<PathBuf> },
    /// The assistant: what it said (its `<tool_call>` blocks included).
    Assistant { text: String },
    /// A tool's result.
    Input { text: String },
}

/// One dialogue.
#[derive(Debug, Clone)]
pub struct Case {
    /// `{file stem}:{line}` (`get_weather_positive:3`, lines from 0): stable across runs.
    pub id: String,
    /// The tool of its file, as the model calls it.
    pub tool: String,
    /// From a `_positive` file.
    pub positive: bool,
    /// The turns before the reference answer.
    pub history: Vec<Entry>,
    /// The reference answer, split into prose and calls.
    pub expected: ParsedTurn,
    /// Its text as given.
    pub expected_text: String,
}

/// Why the benchmark could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {message}")]
    Format { path: PathBuf, line: usize, message: String },
    #[error("{0}: no {{tool}}_{{positive,negative}}.jsonl file of the four tools is there")]
    Empty(PathBuf),
}

/// Every dialogue of the benchmark in `dir`, file by file (tools in [`TOOLS`] order, positives
/// first), lines in order. Missing files are skipped; a directory with none is an error.
pub fn load(dir: &Path) -> Result<Vec<Case>, DatasetError> {
    let mut cases = Vec::new();
    let mut files = 0;
    for (stem, tool) in TOOLS {
        for (polarity, positive) in [("positive", true), ("negative", false)] {
            let path = dir.join(format!("{stem}_{polarity}.jsonl"));
            if !path.is_file() {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path)
                .map_err(|source| DatasetError::Read { path: path.clone(), source })?;
            let name = format!("{stem}_{polarity}");
            for (line, json) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let bad = |message: String| DatasetError::Format {
                    path: path.clone(),
                    line: line + 1,
                    message,
                };
                let turns: Vec<Value> =
                    serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
                let (history, expected_text) = dialogue(dir, &turns).map_err(bad)?;
                cases.push(Case {
                    id: format!("{name}:{line}"),
                    tool: tool.to_owned(),
                    positive,
                    history,
                    expected: parse_turn_text(&expected_text),
                    expected_text,
                });
            }
        }
    }
    if files == 0 {
        return Err(DatasetError::Empty(dir.to_path_buf()));
    }
    Ok(cases)
}

/// The history and the reference answer's text of one dialogue.
fn dialogue(dir: &Path, turns: &[Value]) -> Result<(Vec<Entry>, String), String> {
    let Some((last, earlier)) = turns.split_last() else {
        return Err("an empty dialogue".to_owned());
    };
    if role(last)? != "assistant" {
        return Err("the last turn is not the assistant's reference answer".to_owned());
    }
    let mut history = Vec::with_capacity(earlier.len());
    for turn in earlier {
        let text = turn_text(turn);
        history.push(match role(turn)?.as_str() {
            "human" => {
                let wav = turn
                    .pointer("/value/value")
                    .filter(|_| turn.pointer("/value/type").and_then(Value::as_str) == Some("wav"))
                    .and_then(Value::as_str)
                    .map(|p| dir.join(p));
                Entry::Human { text, wav }
            }
            "assistant" => Entry::Assistant { text },
            "input" | "function_output" | "tool" => Entry::Input { text },
            other => return Err(format!("unknown speaker {other:?}")),
        });
    }
    if !matches!(history.last(), Some(Entry::Human { .. } | Entry::Input { .. })) {
        return Err("the reference answer does not follow a user turn or a tool result".to_owned());
    }
    Ok((history, turn_text(last)))
}

fn role(turn: &Value) -> Result<String, String> {
    turn.get("from")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
        .ok_or_else(|| "a turn without \"from\"".to_owned())
}

/// A turn's text: `value` when it is a string (calls are given there), else `text`.
fn turn_text(turn: &Value) -> String {
    match turn.get("value") {
        Some(Value::String(text)) => text.clone(),
        _ => turn.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
    }
}

/// The first call of a parsed answer, when it is well formed: its name and arguments.
pub fn first_call(turn: &ParsedTurn) -> Option<(&str, &Map<String, Value>)> {
    match turn.calls.first()? {
        Ok(call) => Some((call.name.as_str(), &call.arguments)),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_layout_is_read_into_histories_and_references() {
        let dir = tempfile::tempdir().unwrap();
        let positive = r#"[{"session_id": "1", "turn_idx": 0, "from": "Human", "text": "查成都天气", "value": {"type": "wav", "value": "wav/a-0-0.wav"}}, {"from": "Assistant", "text": "<tool_call>function\nget_weather\n{\"location\": \"chengdu\"}</tool_call>", "value": "<tool_call>function\nget_weather\n{\"location\": \"chengdu\"}</tool_call>"}]"#;
        let negative = r#"[{"from": "Human", "text": "你好"}, {"from": "Assistant", "text": "<tool_call>function\nget_weather\n{}</tool_call>"}, {"from": "Input", "text": "晴"}, {"from": "Assistant", "text": "今天晴。", "value": {"type": "wav", "value": "wav/b.wav"}}]"#;
        std::fs::write(dir.path().join("get_weather_positive.jsonl"), format!("{positive}\n\n"))
            .unwrap();
        std::fs::write(dir.path().join("get_weather_negative.jsonl"), negative).unwrap();
        let cases = load(dir.path()).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].id, "get_weather_positive:0");
        assert!(cases[0].positive);
        assert_eq!(
            cases[0].history,
            [Entry::Human {
                text: "查成都天气".into(),
                wav: Some(dir.path().join("wav/a-0-0.wav"))
            }]
        );
        assert_eq!(first_call(&cases[0].expected).unwrap().1["location"], "chengdu");
        assert_eq!(cases[1].id, "get_weather_negative:0");
        assert!(matches!(cases[1].history[2], Entry::Input { .. }));
        assert!(cases[1].expected.calls.is_empty());
        assert_eq!(cases[1].expected.content, "今天晴。");
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Err(DatasetError::Empty(_))));
        std::fs::write(dir.path().join("timbre_positive.jsonl"), "[]\n{\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("timbre_positive.jsonl line 1: an empty dialogue"), "{err}");
        std::fs::write(
            dir.path().join("timbre_positive.jsonl"),
            r#"[{"from": "Human", "text": "x"}]"#,
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not the assistant"), "{err}");
    }
}
