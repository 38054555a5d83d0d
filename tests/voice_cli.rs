//! `voxloop voice` as a user runs it: a voice computed from a recording with the release's ONNX
//! models (the tiny random-weight ones of voices/tests/fixtures/profile), stored in the library,
//! registered in the audio index and found by description; bad recordings and a missing ONNX
//! Runtime give clear errors and leave the library as it was.
//!
//! Needs ONNX Runtime (`ORT_DYLIB_PATH`, set by the Makefile); without it the test says so and
//! passes, unless `VOXLOOP_REQUIRE_MODELS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("voices/tests/fixtures/profile")
}

fn voxloop(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("VOXLOOP_CONFIG")
        .env_remove("VOXLOOP_INDEX_DIR")
        .env_remove("VOXLOOP_MODEL_DIR")
        .env_remove("VOXLOOP_TOKEN2WAV_DIR")
        .env("VOXLOOP_DATA_DIR", data_dir)
        .env("NO_COLOR", "1");
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("voxloop runs");
    let out = String::from_utf8_lossy(&stdout).into_owned();
    let err = String::from_utf8_lossy(&stderr).into_owned();
    (status.success(), out, err)
}

fn onnx_runtime() -> Option<String> {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            assert!(
                std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() != Ok("1"),
                "VOXLOOP_REQUIRE_MODELS=1 but ORT_DYLIB_PATH is not set"
            );
            eprintln!("skipped: ORT_DYLIB_PATH is not set (scripts/onnxruntime.sh)");
            None
        }
    }
}

#[test]
fn voice_add_list_register_and_search() {
    let Some(_) = onnx_runtime() else { return };
    let data = tempfile::tempdir().unwrap();
    let wav = fixtures().join("voice_16k.wav");

    // An index first (model-free embedder), so that `voice add` registers the voice.
    let (ok, _, err) = run(voxloop(data.path())
        .args(["index", "add", "--embedder", "hashing"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("voices/tests/fixtures/prompt")));
    assert!(ok, "index add: {err}");

    let (ok, _, err) = run(voxloop(data.path())
        .args(["voice", "add", "granite", "--wav"])
        .arg(&wav)
        .arg("--token2wav")
        .arg(fixtures())
        .args(["-d", "deep gravelly narrator voice", "--attr", "gender=male"]));
    assert!(ok, "voice add: {err}");
    assert!(err.contains("1 voices added"), "{err}");

    // The profile on disk is the one computed from the recording.
    let file = data.path().join("voices/granite.json");
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let tokens = profile["prompt_tokens"].as_array().unwrap().len();
    assert_eq!(tokens, 68, "2.7 s at 25 Hz");
    assert_eq!(profile["prompt_mel"].as_array().unwrap().len(), 2 * tokens);
    assert_eq!(profile["speaker_embedding"].as_array().unwrap().len(), 192);
    assert_eq!(profile["attributes"]["gender"], "male");
    assert_eq!(profile["source_wav"].as_str().map(PathBuf::from), Some(wav.clone()));

    let (ok, out, _) = run(voxloop(data.path()).args(["voice", "list"]));
    assert!(ok);
    assert!(out.starts_with("granite\t2.7 s\tdeep gravelly narrator voice"), "{out}");

    // Found by description among the indexed sounds.
    let (ok, out, err) =
        run(voxloop(data.path()).args(["search", "gravelly narrator", "--kind", "timbre"]));
    assert!(ok, "search: {err}");
    assert!(out.contains("granite"), "search output: {out}");

    // Registering again changes nothing.
    let (ok, _, err) = run(voxloop(data.path()).args(["voice", "register"]));
    assert!(ok, "{err}");
    assert!(err.contains("0 voices added, 0 updated, 1 unchanged"), "{err}");
}

#[test]
fn bad_recordings_and_missing_runtime_are_clear_errors() {
    let Some(_) = onnx_runtime() else { return };
    let data = tempfile::tempdir().unwrap();
    let add = |name: &str, wav: &Path| {
        let mut cmd = voxloop(data.path());
        cmd.args(["voice", "add", name, "--wav"]).arg(wav).arg("--token2wav").arg(fixtures());
        cmd
    };

    // Not audio.
    let (ok, _, err) =
        run(&mut add("text", Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").as_path()));
    assert!(!ok);
    assert!(err.contains("not audio"), "{err}");

    // Too short: 0.5 s of the fixture voice.
    let short = data.path().join("short.wav");
    let mut reader = hound::WavReader::open(fixtures().join("voice_16k.wav")).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().take(8000).map(Result::unwrap).collect();
    let mut writer = hound::WavWriter::create(&short, spec).unwrap();
    for s in samples {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    let (ok, _, err) = run(&mut add("short", &short));
    assert!(!ok);
    assert!(err.contains("short.wav") && err.contains("too short"), "{err}");

    // No ONNX Runtime configured.
    let wav = fixtures().join("voice_16k.wav");
    let (ok, _, err) = run(add("no_runtime", &wav).env("ORT_DYLIB_PATH", ""));
    assert!(!ok);
    assert!(err.contains("ORT_DYLIB_PATH"), "{err}");

    // A token2wav directory without the models.
    let (ok, _, err) = run(voxloop(data.path())
        .args(["voice", "add", "nomodels", "--wav"])
        .arg(&wav)
        .arg("--token2wav")
        .arg(data.path()));
    assert!(!ok);
    assert!(err.contains("speech_tokenizer_v2_25hz.onnx"), "{err}");

    // Nothing of that reached the library.
    let (ok, out, _) = run(voxloop(data.path()).args(["voice", "list"]));
    assert!(ok);
    assert!(out.is_empty(), "{out}");
}
