//! Voice profiles computed from a wav, against upstream (fixtures from
//! scripts/fixtures/profile.py): the Whisper log-mel the S3 tokenizer reads, the speech tokens
//! and CAM++ embedding from ONNX Runtime (tiny random-weight models exported from the upstream
//! PyTorch classes in the official I/O layout), and the whole profile.
//!
//! Needs ONNX Runtime's shared library in `ORT_DYLIB_PATH` (the Makefile sets it from
//! scripts/onnxruntime.sh). Without it the tests say so and pass, unless
//! `VOXLOOP_REQUIRE_MODELS=1` (as `make test` sets), which makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use voxloop_core::audio::log_mel_spectrogram_padded;
use voxloop_voices::extract::{ExtractorOptions, ProfileExtractor, SPEAKER_MODEL_FILE};
use voxloop_voices::prompt::PromptAudio;
use voxloop_voices::Error;

const NAMES: [&str; 2] = ["voice_stereo_22k", "voice_16k"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profile")
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir().join("reference.safetensors")).unwrap().into_iter().collect()
}

/// The extractor over the fixture models, or `None` (test skipped) without ONNX Runtime.
fn extractor() -> Option<ProfileExtractor> {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        assert!(
            std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() != Ok("1"),
            "VOXLOOP_REQUIRE_MODELS=1 but ORT_DYLIB_PATH is not set (run scripts/onnxruntime.sh)"
        );
        eprintln!(
            "skipped: ORT_DYLIB_PATH is not set (scripts/onnxruntime.sh fetches ONNX Runtime)"
        );
        return None;
    }
    let options = ExtractorOptions { threads: Some(1), ..ExtractorOptions::default() };
    Some(ProfileExtractor::from_dir(&dir(), &options).unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[])
}

fn load(name: &str) -> PromptAudio {
    PromptAudio::load(&dir().join(format!("{name}.wav"))).unwrap()
}

#[test]
fn parity_whisper_mel_without_padding() {
    let refs = reference();
    for name in NAMES {
        let audio = load(name);
        let mel = log_mel_spectrogram_padded(audio.samples_16k(), 0).unwrap();
        let err = max_abs_diff(&mel, &refs[&format!("{name}.whisper_mel")]);
        println!("{name}: whisper mel {:?}, max abs error {err:.2e}", mel.size());
        assert!(err < 1e-4, "{name}: whisper mel differs by {err}");
    }
}

#[test]
fn parity_speech_tokens_and_speaker_embedding() {
    let Some(extractor) = extractor() else { return };
    let refs = reference();
    for name in NAMES {
        let audio = load(name);
        let tokens = extractor.speech_tokens(&audio).unwrap();
        let want = Vec::<i64>::try_from(&refs[&format!("{name}.tokens")]).unwrap();
        let margin = refs[&format!("{name}.margin")].double_value(&[0]);
        println!("{name}: {} tokens (FSQ margin of the reference {margin:.1e})", tokens.len());
        assert_eq!(tokens, want, "{name}: speech tokens differ");

        let embedding = extractor.speaker_embedding(&audio).unwrap();
        let err =
            max_abs_diff(&Tensor::from_slice(&embedding), &refs[&format!("{name}.embedding")]);
        println!("{name}: speaker embedding max abs error {err:.2e}");
        assert!(err < 1e-4, "{name}: speaker embedding differs by {err}");
    }
}

#[test]
fn parity_profile_from_wav() {
    let Some(extractor) = extractor() else { return };
    let refs = reference();
    for name in NAMES {
        let wav = dir().join(format!("{name}.wav"));
        let profile = extractor.profile_from_file(name, &wav).unwrap();
        assert_eq!(profile.name, name);
        assert_eq!(profile.source_wav.as_deref(), Some(wav.as_path()));
        let tokens = Vec::<i64>::try_from(&refs[&format!("{name}.tokens")]).unwrap();
        assert_eq!(profile.prompt_tokens, tokens);
        assert_eq!(profile.prompt_mel.len(), 2 * tokens.len());
        let mel = profile.prompt_mel_tensor().unwrap().squeeze_dim(0);
        let err = max_abs_diff(&mel, &refs[&format!("{name}.prompt_mel")]);
        println!("{name}: prompt mel {:?}, max abs error {err:.2e}", mel.size());
        assert!(err < 1e-4, "{name}: prompt mel differs by {err}");
    }
}

#[test]
fn wrong_or_missing_model_files_are_named() {
    let Some(_) = extractor() else { return };
    let options = ExtractorOptions::default();
    let missing = dir().join("no_such_model.onnx");
    let err =
        ProfileExtractor::load(&missing, &dir().join(SPEAKER_MODEL_FILE), &options).unwrap_err();
    assert!(matches!(&err, Error::Onnx { file, .. } if file == &missing), "{err}");

    // Not an ONNX file at all.
    let wav = dir().join("voice_16k.wav");
    let err = ProfileExtractor::load(&wav, &dir().join(SPEAKER_MODEL_FILE), &options).unwrap_err();
    assert!(err.to_string().contains("voice_16k.wav"), "{err}");

    // The two models swapped: CAM++ has one input, the tokenizer two.
    let err = ProfileExtractor::load(
        &dir().join(SPEAKER_MODEL_FILE),
        &dir().join("speech_tokenizer_v2_25hz.onnx"),
        &options,
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("campplus.onnx") && message.contains("inputs"), "{message}");
}

#[test]
fn bad_inputs_are_refused_before_running() {
    let Some(extractor) = extractor() else { return };
    let err = extractor.tokens_of_mel(&Tensor::zeros([80, 10], (Kind::Float, tch::Device::Cpu)));
    assert!(err.unwrap_err().to_string().contains("[128, frames]"));
    let err =
        extractor.embedding_of_fbank(&Tensor::zeros([10, 128], (Kind::Float, tch::Device::Cpu)));
    assert!(err.unwrap_err().to_string().contains("[frames, 80]"));
}
