//! Flow (tokens → mel) against upstream StepFun code on the fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tch::Device;
use voxloop_voices::flow::{Flow, N_TIMESTEPS};
use voxloop_voices::token2wav::{CACHE_TAIL_FRAMES, CHUNK_TOKENS, SILENCE_TOKEN};

const TOL: f64 = 1e-4;

fn flow() -> Flow {
    let dir = support::dir();
    let mut flow = Flow::load(&dir.join("flow.yaml"), &dir.join("flow.pt"), Device::Cpu).unwrap();
    flow.set_noise(&support::tensors("inputs.safetensors")["flow_noise"]).unwrap();
    flow
}

#[test]
fn parity_flow_offline() {
    let _guard = tch::no_grad_guard();
    let inputs = support::tensors("inputs.safetensors");
    let expected = support::tensors("expected.safetensors");
    let flow = flow();
    let mel = flow
        .inference(
            &support::ints(&inputs["tokens"]),
            &support::ints(&inputs["prompt_tokens"]),
            &inputs["prompt_mel"],
            &inputs["spk_emb"],
            N_TIMESTEPS,
        )
        .unwrap();
    let err = support::max_abs_diff(&mel, &expected["flow_mel"]);
    println!("flow offline: max |Δ| = {err:.3e} over {:?}", mel.size());
    assert!(err < TOL, "flow mel differs from upstream by {err}");

    // the comparison is sensitive: voxloop's own noise buffer gives another mel
    let dir = support::dir();
    let own = Flow::load(&dir.join("flow.yaml"), &dir.join("flow.pt"), Device::Cpu).unwrap();
    let other = own
        .inference(
            &support::ints(&inputs["tokens"]),
            &support::ints(&inputs["prompt_tokens"]),
            &inputs["prompt_mel"],
            &inputs["spk_emb"],
            N_TIMESTEPS,
        )
        .unwrap();
    assert!(support::max_abs_diff(&other, &expected["flow_mel"]) > 0.1);
}

/// Upstream `set_stream_cache` + the `stream` loop, flow side: chunks of 25 + 3 look-ahead
/// tokens, the rest as the last chunk, caches trimmed to prompt + 100 frames.
#[test]
fn parity_flow_stream_chunks() {
    let _guard = tch::no_grad_guard();
    let inputs = support::tensors("inputs.safetensors");
    let expected = support::tensors("expected.safetensors");
    let flow = flow();
    let prompt = support::ints(&inputs["prompt_tokens"]);
    let prompt_mel = &inputs["prompt_mel"];
    let spk = &inputs["spk_emb"];
    let mut setup = prompt.clone();
    setup.extend([SILENCE_TOKEN; 3]);
    let mut cache = flow.setup_cache(&setup, prompt_mel, spk, N_TIMESTEPS).unwrap();

    let la = flow.pre_lookahead_len() as usize;
    let mut buffer = support::ints(&inputs["tokens"]);
    let mut chunk = 0;
    let mut trimmed = false;
    loop {
        let last = buffer.len() < CHUNK_TOKENS + la;
        let window = if last { buffer.clone() } else { buffer[..CHUNK_TOKENS + la].to_vec() };
        let (mel, mut next) =
            flow.inference_chunk(&window, spk, &cache, last, N_TIMESTEPS).unwrap();
        let before = next.estimator_frames();
        next.trim(prompt_mel.size()[1], CACHE_TAIL_FRAMES).unwrap();
        trimmed |= next.estimator_frames() < before;
        cache = next;
        let err = support::max_abs_diff(&mel, &expected[&format!("stream_mel.{chunk}")]);
        println!("stream chunk {chunk}: {} tokens, max |Δ| = {err:.3e}", window.len());
        assert!(err < TOL, "chunk {chunk} mel differs from upstream by {err}");
        chunk += 1;
        if last {
            break;
        }
        buffer.drain(..CHUNK_TOKENS);
    }
    assert_eq!(chunk, support::meta()["stream_chunks"].as_u64().unwrap() as usize);
    assert!(trimmed, "the fixture must exercise the cache trimming");
}
