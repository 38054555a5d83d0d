//! `voxloop eval toolcall`, end to end: the synthetic benchmark of
//! `scripts/toolcall_synthetic.py` (StepEval-Audio-Toolcall's layout, espeak-ng speech) scored
//! by the tiny random checkpoint through the agent loop, resumed after a stop, scored from
//! prediction files with known figures, and judged by an LLM over Chat Completions (a
//! `voxloop serve` on the tiny checkpoint: its verdicts are noise, the flow is what is tested).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The synthetic benchmark in `dir`, or `None` without espeak-ng (outside `make test`).
fn synthetic(dir: &Path) -> Option<PathBuf> {
    let bench = dir.join("bench");
    let made = Command::new("python3")
        .arg(root().join("scripts/toolcall_synthetic.py"))
        .arg(&bench)
        .status()
        .is_ok_and(|s| s.success());
    support::present(made, "python3 and espeak-ng, to make the synthetic benchmark,")
        .then_some(bench)
}

fn eval(args: &[&str]) -> Output {
    // An empty configuration: nothing of the checkout's data/voxloop.toml applies.
    let config = std::env::temp_dir().join(format!("voxloop-eval-{}.toml", std::process::id()));
    std::fs::write(&config, "").unwrap();
    Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .env_remove("VOXLOOP_MODEL_DIR")
        .env_remove("VOXLOOP_MODEL_URL")
        .env("VOXLOOP_LOG", "warn")
        .env("VOXLOOP_DEVICE", "cpu")
        .env("VOXLOOP_FIXED_NOW", "2025-08-28T04:00:00Z")
        .arg("--config")
        .arg(&config)
        .args(["eval", "toolcall"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "eval failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_model_is_scored_through_the_agent_loop_and_a_stopped_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bench) = synthetic(dir.path()) else { return };
    let model = root().join("core/tests/fixtures/llm/tiny_a");
    let out = dir.path().join("report.json");
    let args = |limit: &str| {
        vec![
            bench.to_str().unwrap().to_owned(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--tool-choice".into(),
            "required".into(),
            "--max-new-tokens".into(),
            "64".into(),
            "--limit".into(),
            limit.into(),
        ]
    };
    let first = args("6");
    let stdout = ok(&eval(&first.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(stdout.contains("| Trigger | Precision / Recall |"), "{stdout}");
    let whole = report(&out);
    let cases = whole["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6, "{whole}");
    assert_eq!(cases[0]["id"], "timbre_positive:0");
    for case in cases {
        // A required call on every turn: each one triggered (a call cut short still counts).
        assert_eq!(case["triggered"], true, "{case}");
        assert!(case["output"].as_str().unwrap().contains("<tool_call>"), "{case}");
        if case["positive"] == true {
            assert!(case["type_correct"].is_boolean(), "{case}");
        }
    }
    assert_eq!(whole["tools"]["timbre_rag"]["cases"], 4, "{whole}");
    assert_eq!(whole["tools"]["get_date_time"]["cases"], 2, "{whole}");

    // A stop after three cases, the fourth line cut mid-write: the run again scores the rest.
    let partial = dir.path().join("report.json.cases.jsonl");
    let text = std::fs::read_to_string(&partial).unwrap();
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&partial, format!("{}\n{{\"id\": \"cut", kept.join("\n"))).unwrap();
    std::fs::remove_file(&out).unwrap();
    let again = eval(&first.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("resuming: 3 of 6 cases"), "{stderr}");
    let resumed = report(&out);
    let ids = |r: &Value| {
        r["cases"].as_array().unwrap().iter().map(|c| c["id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&resumed), ids(&whole), "every case once, in the dataset's order");
    assert_eq!(resumed["cases"][0], whole["cases"][0], "kept cases are not scored again");
}

/// The benchmark's cases: id and reference answer.
fn references(bench: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stem in ["timbre", "get_date_time", "get_weather", "web_search"] {
        for polarity in ["positive", "negative"] {
            let name = format!("{stem}_{polarity}");
            let text = std::fs::read_to_string(bench.join(format!("{name}.jsonl"))).unwrap();
            for (line, json) in text.lines().enumerate() {
                let turns: Vec<Value> = serde_json::from_str(json).unwrap();
                let last = turns.last().unwrap();
                let answer = last["value"].as_str().or(last["text"].as_str()).unwrap();
                out.push((format!("{name}:{line}"), answer.to_owned()));
            }
        }
    }
    out
}

fn predictions(dir: &Path, name: &str, outputs: &[(String, String)]) -> PathBuf {
    let path = dir.join(name);
    let lines: Vec<String> = outputs
        .iter()
        .map(|(id, output)| json!({ "id": id, "output": output }).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn prediction_files_get_the_figures_they_deserve() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bench) = synthetic(dir.path()) else { return };
    let refs = references(&bench);
    let out = dir.path().join("perfect.json");
    let perfect = predictions(dir.path(), "perfect.jsonl", &refs);
    let bench_arg = bench.to_str().unwrap();
    let stdout = ok(&eval(&[
        bench_arg,
        "--predictions",
        perfect.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("| Trigger | Precision / Recall | 100.0 / 100.0 | 100.0 / 100.0 |"),
        "{stdout}"
    );
    assert!(stdout.contains("| Parameter | Accuracy | 100.0 | N/A | 100.0 | 100.0 |"), "{stdout}");
    assert_eq!(report(&out)["source"], "predictions");

    // get_weather: the positive in Chinese answers with the wrong city, the English one calls
    // an undeclared tool; the first negative calls get_weather though nothing asks for it.
    let mut worse = refs.clone();
    for (id, output) in &mut worse {
        match id.as_str() {
            "get_weather_positive:0" => *output = output.replace("chengdu", "beijing"),
            "get_weather_positive:1" => *output = output.replace("get_weather", "get_forecast"),
            "get_weather_negative:0" => {
                *output =
                    "<tool_call>function\nget_weather\n{\"location\": \"shanghai\"}</tool_call>"
                        .into()
            }
            _ => {}
        }
    }
    let worse = predictions(dir.path(), "worse.jsonl", &worse);
    let out = dir.path().join("worse.json");
    ok(&eval(&[
        bench_arg,
        "--predictions",
        worse.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let weather = &report(&out)["tools"]["get_weather"];
    // Triggers: both positives and the second negative (a web_search reference) are true ones,
    // the first negative a false one.
    assert_eq!(weather["trigger_precision"], 0.75, "{weather}");
    assert_eq!(weather["trigger_recall"], 1.0, "{weather}");
    assert_eq!(weather["type_accuracy"], 2.0 / 3.0, "{weather}");
    assert_eq!(weather["parameter_accuracy"], 0.5, "{weather}");

    // Malformed lines are refused with the line named.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"x\"}\n").unwrap();
    let failed =
        eval(&[bench_arg, "--predictions", bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("line 1: needs string \"id\" and \"output\""), "{stderr}");
}

#[test]
fn an_llm_judge_over_chat_completions_rules_on_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bench) = synthetic(dir.path()) else { return };
    let judge = support::serve_speaking("");
    let perfect = predictions(dir.path(), "perfect.jsonl", &references(&bench));
    let out = dir.path().join("judged.json");
    let url = format!("http://{}/v1", judge.addr);
    ok(&eval(&[
        bench.to_str().unwrap(),
        "--predictions",
        perfect.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--judge-url",
        &url,
        "--judge-model",
        "step-audio-2-mini",
    ]));
    let judged = report(&out);
    assert_eq!(judged["parameters_judged_by"], "step-audio-2-mini");
    let cases = judged["cases"].as_array().unwrap();
    let with_parameters: Vec<&Value> =
        cases.iter().filter(|c| c["parameters_correct"].is_boolean()).collect();
    assert!(with_parameters.len() >= 6, "{judged}");
    for case in with_parameters {
        assert!(case["judge"].is_string(), "every parameter verdict is the judge's: {case}");
    }
    assert!(cases
        .iter()
        .filter(|c| c["parameters_correct"].is_null())
        .all(|c| c.get("judge").is_none()));
}
