//! HiFT vocoder (mel → 24 kHz) against upstream StepFun code on the fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tch::Device;
use voxloop_voices::hift::Hift;

const TOL: f64 = 1e-4;

#[test]
fn parity_hift() {
    let _guard = tch::no_grad_guard();
    let inputs = support::tensors("inputs.safetensors");
    let expected = support::tensors("expected.safetensors");
    let hift =
        Hift::load(&support::dir().join("hift.pt"), support::hift_config("hift"), Device::Cpu)
            .unwrap();
    let random = support::nsf_random(&inputs);
    let (wav, source) = hift.forward(&inputs["hift_mel"], None, &random).unwrap();
    let err_source = support::max_abs_diff(&source, &expected["hift_source"]);
    println!("hift: source max |Δ| = {err_source:.3e} over {:?}", source.size());
    assert!(err_source < TOL, "NSF excitation differs from upstream by {err_source}");
    assert_eq!(wav.size(), expected["hift_wav"].size());
    support::assert_same_sound(
        "hift waveform",
        &support::floats(&wav),
        &support::floats(&expected["hift_wav"]),
    );
}
