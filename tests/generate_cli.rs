//! `voxloop generate` on the tiny random checkpoint of core/tests/fixtures/llm (official layout):
//! it runs end to end, prints its summary, reproduces the parity fixture's greedy ids from the
//! same prompt, renders a spoken answer through the turn runtime's token2wav into a WAV, and
//! fails with one clear line on a missing model or bad audio.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_model() -> PathBuf {
    repo().join("core/tests/fixtures/llm/tiny_a")
}

fn voxloop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .env_remove("VOXLOOP_CONFIG")
        .env_remove("VOXLOOP_DEVICE")
        .env_remove("VOXLOOP_MODEL_DIR")
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("voxloop runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A 1.3-s 16-bit mono WAV at 22.05 kHz (so the resampler runs too) of a gliding tone.
fn write_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    let n = 22_050 * 13 / 10;
    for i in 0..n {
        let t = i as f64 / 22_050.0;
        let x = 0.3 * (2.0 * std::f64::consts::PI * (200.0 + 300.0 * t) * t).sin();
        writer.write_sample((x * 32_767.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
}

/// The value after `"{key}: "` on its summary line.
fn field<'a>(stdout: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{stdout}"))
}

fn count(stdout: &str, key: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map_or(0, |v| v.parse().unwrap())
}

/// Checks the summary of a run limited to `max` tokens and returns the generated count.
fn check_summary(stdout: &str, max: usize) -> usize {
    let generated: usize = field(stdout, "generated tokens").parse().unwrap();
    let parts = count(stdout, "text tokens")
        + count(stdout, "audio tokens")
        + count(stdout, "audio padding tokens")
        + count(stdout, "control tokens");
    assert_eq!(parts, generated, "token classes must add up:\n{stdout}");
    let finish = field(stdout, "finish");
    if finish.starts_with("length") {
        assert_eq!(generated, max, "{stdout}");
    } else {
        assert!(finish.starts_with("stop") && generated < max, "{stdout}");
    }
    for key in ["load", "prefill", "first token", "decode"] {
        assert!(!field(stdout, key).is_empty(), "{key}:\n{stdout}");
    }
    assert!(field(stdout, "prefill").contains("tok/s"), "{stdout}");
    assert!(field(stdout, "decode").contains("tok/s"), "{stdout}");
    generated
}

#[test]
fn generates_from_audio_and_text_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("question.wav");
    write_wav(&wav);
    let model = tiny_model();
    let base = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--audio",
        wav.to_str().unwrap(),
        "--text",
        "What is this sound?",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--device",
        "cpu",
        // The default system prompt carries the date: fixed, so both runs (and every day's
        // run) see one prompt.
        "--now",
        "2025-08-28T04:00:00Z",
    ];
    let out = voxloop(&base);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    check_summary(&stdout, 8);

    // Greedy decoding is deterministic: a second run prints the same text and counts.
    let again = voxloop(&base);
    let answer = |s: &str| s.lines().take_while(|l| *l != "---").collect::<Vec<_>>().join("\n");
    let counts = |s: &str| {
        ["generated tokens", "text tokens", "audio tokens", "finish"]
            .map(|k| field(s, k).to_owned())
    };
    let again_stdout = text(&again.stdout);
    assert_eq!(answer(&again_stdout), answer(&stdout));
    assert_eq!(counts(&again_stdout), counts(&stdout));

    // A spoken answer (prompt ends in <tts_start>) runs as well.
    let mut speech = base.to_vec();
    speech.push("--speech");
    let out = voxloop(&speech);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    check_summary(&stdout, 8);
}

/// The prompt of the parity fixture (scripts/fixtures/llm.py): system "You are a helpful
/// assistant.", a human turn holding the two chunks of long_two_chunks.wav, a text generation
/// prompt. Greedy decoding without repetition penalty must give the fixture's greedy ids,
/// computed by transformers on the same checkpoint.
#[test]
fn greedy_ids_match_the_parity_fixture() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("core/tests/fixtures/llm/ref_a.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<i64> = fixture["greedy_ids"].as_array().unwrap()[..8]
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let prompt_len = fixture["prompt_ids"].as_array().unwrap().len();
    let wav = repo().join("core/tests/fixtures/mel/long_two_chunks.wav");
    let model = tiny_model();
    let out = voxloop(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--audio",
        wav.to_str().unwrap(),
        "--system",
        "You are a helpful assistant.",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--repetition-penalty",
        "1",
        "--device",
        "cpu",
        "--show-ids",
        // Upstream samples from the whole vocabulary, speech codes included.
        "--unmasked",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert_eq!(field(&stdout, "prompt ids"), prompt_len.to_string());
    assert_eq!(field(&stdout, "generated ids"), format!("{want:?}"));
}

/// `--speech --wav`: the turn runtime renders the speech codes with token2wav (the fixture
/// vocoder) in the `--voice` profile, and the file holds what the same codes give when
/// streamed through token2wav directly (one utterance: one stream).
#[test]
fn a_spoken_answer_is_rendered_into_a_wav() {
    let dir = tempfile::tempdir().unwrap();
    let profile = support::fixture_voice(dir.path());
    let voice = dir.path().join("fixture.json");
    let out_wav = dir.path().join("answer.wav");
    let t2w = repo().join("voices/tests/fixtures/token2wav");
    let model = tiny_model();
    let out = voxloop(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--text",
        "Say something.",
        "--speech",
        "--max-new-tokens",
        "30",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--now",
        "2025-08-28T04:00:00Z",
        "--show-ids",
        "--wav",
        out_wav.to_str().unwrap(),
        "--voice",
        voice.to_str().unwrap(),
        "--token2wav",
        t2w.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    check_summary(&stdout, 30);

    // The speech codes of the answer, from its ids (`<audio_N>` is `<audio_0>` + N).
    let ids: Vec<i64> = serde_json::from_str(field(&stdout, "generated ids")).unwrap();
    let tokenizer =
        voxloop_core::tokenizer::StepTokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let codes: Vec<i64> = ids
        .iter()
        .filter_map(|&id| match tokenizer.special().classify(id) {
            voxloop_core::tokenizer::TokenClass::AudioCode(code) => Some(i64::from(code)),
            _ => None,
        })
        .collect();
    assert_eq!(codes.len().to_string(), field(&stdout, "audio tokens"));
    assert!(!codes.is_empty(), "the tiny model spoke no speech codes:\n{stdout}");

    let mut reader = hound::WavReader::open(&out_wav).unwrap();
    assert_eq!(reader.spec().sample_rate, 24_000);
    assert_eq!(reader.spec().channels, 1);
    let samples = reader.samples::<i16>().count();
    assert!(field(&stdout, "speech").starts_with(&format!("{samples} samples")), "{stdout}");
    let t2w = voxloop_voices::Token2Wav::load(&t2w, tch::Device::Cpu).unwrap();
    let mut stream = t2w.stream(&profile).unwrap();
    let expected = stream.push(&codes).unwrap().len() + stream.finish().unwrap().len();
    assert_eq!(samples, expected, "{} codes", codes.len());
}

#[test]
fn missing_model_dir_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model");
    let out = voxloop(&["generate", "--model", missing.to_str().unwrap(), "--text", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(missing.to_str().unwrap()) && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn bad_audio_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("question.wav");
    std::fs::write(&bad, b"this is not a RIFF file at all, just some text").unwrap();
    let model = tiny_model();
    let out = voxloop(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--audio",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(bad.to_str().unwrap()) && stderr.contains("not a supported audio file"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_with_code_2() {
    let model = tiny_model();
    let model = model.to_str().unwrap();
    // Neither --audio nor --text.
    let out = voxloop(&["generate", "--model", model]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A temperature below zero.
    let out = voxloop(&["generate", "--model", model, "--text", "hi", "--temperature=-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("temperature"), "{}", text(&out.stderr));
}
