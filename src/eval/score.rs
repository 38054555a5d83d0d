//! Scores, as the Step-Audio 2 report defines them for StepEval-Audio-Toolcall, per tool (over
//! that tool's positive and negative files):
//!
//! - **trigger** precision and recall: a turn *triggers* when it makes a call (any call, well
//!   formed or not); the reference triggers when it holds one (the positives always, a negative
//!   when it calls another tool);
//! - **type** accuracy, on the turns where both triggered: the first call is well formed and
//!   names the reference's tool (a call to an undeclared tool is a wrong type);
//! - **parameter** accuracy, on the right-typed turns whose reference has arguments: the
//!   arguments equal the reference's after normalisation (keys equal; strings compared without
//!   case and white space; numbers as numbers), or, when an LLM judge is used, its verdict.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use voxloop_core::protocol::parse_turn_text;

use super::dataset::{first_call, Case, TOOLS};

/// One case scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseScore {
    pub id: String,
    pub tool: String,
    pub positive: bool,
    /// The reference answer.
    pub expected: String,
    /// The answer scored.
    pub output: String,
    pub expected_trigger: bool,
    pub triggered: bool,
    /// `None` unless both triggered.
    pub type_correct: Option<bool>,
    /// `None` unless the type is right and the reference has arguments.
    pub parameters_correct: Option<bool>,
    /// What the LLM judge answered, when one judged the parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
}

/// Scores `output` (the assistant's answer, its calls as `<tool_call>` blocks) against the
/// reference of `case`; the parameters by normalised equality.
pub fn score_case(case: &Case, output: &str) -> CaseScore {
    let predicted = parse_turn_text(output);
    let expected_trigger = !case.expected.calls.is_empty();
    let triggered = !predicted.calls.is_empty();
    let reference = first_call(&case.expected);
    let made = first_call(&predicted);
    let type_correct = (expected_trigger && triggered)
        .then(|| matches!((reference, made), (Some((want, _)), Some((got, _))) if want == got));
    let parameters_correct = match (type_correct, reference, made) {
        (Some(true), Some((_, want)), Some((_, got))) if !want.is_empty() => {
            Some(same_arguments(want, got))
        }
        _ => None,
    };
    CaseScore {
        id: case.id.clone(),
        tool: case.tool.clone(),
        positive: case.positive,
        expected: case.expected_text.clone(),
        output: output.to_owned(),
        expected_trigger,
        triggered,
        type_correct,
        parameters_correct,
        judge: None,
    }
}

/// Whether two argument objects say the same after normalisation (see the module docs).
pub fn same_arguments(want: &Map<String, Value>, got: &Map<String, Value>) -> bool {
    want.len() == got.len()
        && want.iter().all(|(key, w)| got.get(key).is_some_and(|g| same_value(w, g)))
}

fn same_value(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::String(w), Value::String(g)) => normalise(w) == normalise(g),
        (Value::Number(w), Value::Number(g)) => w.as_f64() == g.as_f64(),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Value::Object(w), Value::Object(g)) => same_arguments(w, g),
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| same_value(a, b))
        }
        _ => want == got,
    }
}

fn normalise(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// The counts of one tool, and its figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolScore {
    pub cases: usize,
    pub true_triggers: usize,
    pub false_triggers: usize,
    pub missed_triggers: usize,
    pub typed: usize,
    pub typed_correct: usize,
    pub with_parameters: usize,
    pub parameters_correct: usize,
    pub trigger_precision: Option<f64>,
    pub trigger_recall: Option<f64>,
    pub type_accuracy: Option<f64>,
    pub parameter_accuracy: Option<f64>,
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The figures per tool, in [`TOOLS`] order (tools without cases left out).
pub fn summarise(scores: &[CaseScore]) -> BTreeMap<usize, (String, ToolScore)> {
    let mut out = BTreeMap::new();
    for (order, (_, tool)) in TOOLS.iter().enumerate() {
        let mut s = ToolScore::default();
        for case in scores.iter().filter(|c| c.tool == *tool) {
            s.cases += 1;
            match (case.expected_trigger, case.triggered) {
                (true, true) => s.true_triggers += 1,
                (false, true) => s.false_triggers += 1,
                (true, false) => s.missed_triggers += 1,
                (false, false) => {}
            }
            if let Some(ok) = case.type_correct {
                s.typed += 1;
                s.typed_correct += usize::from(ok);
            }
            if let Some(ok) = case.parameters_correct {
                s.with_parameters += 1;
                s.parameters_correct += usize::from(ok);
            }
        }
        if s.cases == 0 {
            continue;
        }
        s.trigger_precision = ratio(s.true_triggers, s.true_triggers + s.false_triggers);
        s.trigger_recall = ratio(s.true_triggers, s.true_triggers + s.missed_triggers);
        s.type_accuracy = ratio(s.typed_correct, s.typed);
        s.parameter_accuracy = ratio(s.parameters_correct, s.with_parameters);
        out.insert(order, ((*tool).to_owned(), s));
    }
    out
}

/// A row of the table: objective, metric, and its cell for one tool.
type Row = (&'static str, &'static str, fn(&ToolScore) -> String);

/// The figures as the report's table (percentages; N/A where nothing was counted).
pub fn table(summary: &BTreeMap<usize, (String, ToolScore)>) -> String {
    let tools: Vec<&(String, ToolScore)> = summary.values().collect();
    let mut out = String::from("| objective | metric |");
    for (name, s) in &tools {
        out.push_str(&format!(" {name} ({}) |", s.cases));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(tools.len()));
    let rows: [Row; 3] = [
        ("Trigger", "Precision / Recall", |s| {
            format!("{} / {}", pct_of(s.trigger_precision), pct_of(s.trigger_recall))
        }),
        ("Type", "Accuracy", |s| pct_of(s.type_accuracy)),
        ("Parameter", "Accuracy", |s| pct_of(s.parameter_accuracy)),
    ];
    for (objective, metric, cell) in rows {
        out.push_str(&format!("\n| {objective} | {metric} |"));
        for (_, s) in &tools {
            out.push_str(&format!(" {} |", cell(s)));
        }
    }
    out.push('\n');
    out
}

fn pct_of(v: Option<f64>) -> String {
    v.map_or_else(|| "N/A".to_owned(), |v| format!("{:.1}", v * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::dataset::Entry;

    fn case(id: &str, tool: &str, positive: bool, expected: &str) -> Case {
        Case {
            id: id.to_owned(),
            tool: tool.to_owned(),
            positive,
            history: vec![Entry::Human { text: "q".into(), wav: None }],
            expected: parse_turn_text(expected),
            expected_text: expected.to_owned(),
        }
    }

    fn call(name: &str, args: &str) -> String {
        format!("<tool_call>function\n{name}\n{args}</tool_call>")
    }

    #[test]
    fn hand_made_predictions_give_the_figures_worked_out_by_hand() {
        let weather = call("get_weather", r#"{"location": "chengdu"}"#);
        let cases = [
            // 4 positives: right; wrong parameter; wrong type (an undeclared tool); no call.
            (
                case("p0", "get_weather", true, &weather),
                call("get_weather", r#"{"location": " ChengDu "}"#),
            ),
            (
                case("p1", "get_weather", true, &weather),
                call("get_weather", r#"{"location": "beijing"}"#),
            ),
            (
                case("p2", "get_weather", true, &weather),
                call("get_forecast", r#"{"location": "chengdu"}"#),
            ),
            (case("p3", "get_weather", true, &weather), "It will be sunny.".to_owned()),
            // 3 negatives: right silence; a false trigger; a malformed call (still a trigger).
            (case("n0", "get_weather", false, "Hello!"), "Hi.".to_owned()),
            (case("n1", "get_weather", false, "Hello!"), weather.clone()),
            (
                case("n2", "get_weather", false, "Hello!"),
                "<tool_call>function\nget_weather\n{oops".to_owned(),
            ),
            // get_date_time has no parameters: N/A.
            (
                case("d0", "get_date_time", true, &call("get_date_time", "{}")),
                call("get_date_time", "{}"),
            ),
        ];
        let scores: Vec<CaseScore> = cases.iter().map(|(c, out)| score_case(c, out)).collect();
        assert_eq!(scores[0].parameters_correct, Some(true), "case and blanks are normalised");
        assert_eq!(scores[1].parameters_correct, Some(false));
        assert_eq!(scores[2].type_correct, Some(false));
        assert_eq!(scores[2].parameters_correct, None);
        assert_eq!(scores[3].type_correct, None);
        assert!(scores[6].triggered, "a malformed call is a trigger");
        let summary = summarise(&scores);
        let (name, w) = &summary[&2];
        assert_eq!(name, "get_weather");
        assert_eq!((w.true_triggers, w.false_triggers, w.missed_triggers), (3, 2, 1));
        assert_eq!(w.trigger_precision, Some(3.0 / 5.0));
        assert_eq!(w.trigger_recall, Some(3.0 / 4.0));
        assert_eq!(w.type_accuracy, Some(2.0 / 3.0));
        assert_eq!(w.parameter_accuracy, Some(1.0 / 2.0));
        let (_, d) = &summary[&1];
        assert_eq!(
            (d.trigger_precision, d.type_accuracy, d.parameter_accuracy),
            (Some(1.0), Some(1.0), None)
        );
        let table = table(&summary);
        assert!(
            table.contains("| Trigger | Precision / Recall | 100.0 / 100.0 | 60.0 / 75.0 |"),
            "{table}"
        );
        assert!(table.contains("| Parameter | Accuracy | N/A | 50.0 |"), "{table}");
    }

    #[test]
    fn arguments_compare_after_normalisation() {
        let obj = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        assert!(same_arguments(
            &obj(r#"{"a": "New York", "n": 3}"#),
            &obj(r#"{"n": "3", "a": "newyork"}"#)
        ));
        assert!(!same_arguments(&obj(r#"{"a": "x"}"#), &obj(r#"{"a": "x", "b": 1}"#)));
        assert!(!same_arguments(&obj(r#"{"a": true}"#), &obj(r#"{"a": "true"}"#)));
    }
}
