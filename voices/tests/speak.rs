//! `voxloop speak`'s library side: tokens file + voice profile → WAV.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use voxloop_core::DeviceSpec;
use voxloop_voices::speak::{speak, SpeakRequest};

#[test]
fn speak_writes_a_24khz_wav_offline_and_streaming() {
    let inputs = support::tensors("inputs.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let tokens: Vec<i64> = support::ints(&inputs["tokens"])[..30].to_vec();
    let text: String = tokens.iter().map(|t| format!("<audio_{t}>")).collect();
    std::fs::write(tmp.path().join("tokens.txt"), text).unwrap();
    support::profile(&inputs).to_json_file(&tmp.path().join("voice.json")).unwrap();

    for streaming in [false, true] {
        let output = tmp.path().join(format!("out_{streaming}.wav"));
        let request = SpeakRequest {
            tokens: tmp.path().join("tokens.txt"),
            voice: tmp.path().join("voice.json"),
            output: output.clone(),
            token2wav_dir: Some(support::dir()),
            model_dir: None,
            device: DeviceSpec::Cpu,
            streaming,
        };
        let summary = speak(&request).unwrap();
        assert_eq!(summary.tokens, 30);
        let reader = hound::WavReader::open(&output).unwrap();
        let spec = reader.spec();
        assert_eq!((spec.sample_rate, spec.channels, spec.bits_per_sample), (24_000, 1, 16));
        let samples: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(samples.len(), summary.samples);
        // offline: 2 mel frames per token, 480 samples per frame; streaming adds the first
        // chunk's 3840-sample lead-in of silence, as upstream
        let expected = 30 * 2 * 480 + if streaming { 3840 } else { 0 };
        assert_eq!(samples.len(), expected, "streaming = {streaming}");
        assert!(samples.iter().any(|&s| s.unsigned_abs() > 100), "not silent");
    }

    let request = SpeakRequest {
        tokens: tmp.path().join("tokens.txt"),
        voice: tmp.path().join("voice.json"),
        output: tmp.path().join("x.wav"),
        token2wav_dir: None,
        model_dir: None,
        device: DeviceSpec::Cpu,
        streaming: false,
    };
    let err = speak(&request).unwrap_err();
    assert!(err.to_string().contains("--token2wav"), "{err}");
}
