//! Parity of the Step-Audio 2 model with upstream code, on the two tiny checkpoints of
//! `core/tests/fixtures/llm` (written by `scripts/fixtures/llm.py`):
//! - encoder + adaptor rows vs the Step-Audio 2 encoder structure (itself checked against
//!   transformers' Qwen2AudioEncoder), for one odd-length chunk and a padded 2-chunk batch;
//! - prefill logits of a prompt with two audio chunks, logits at three prompt positions of a
//!   cache-less forward, and 32 greedy decode steps vs transformers' Qwen2ForCausalLM.
//!
//! Tolerance: 1e-4 absolute in f32, argmax identical.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod llm_support;

use llm_support::{argmax, checkpoint, load, max_abs_diff, Inputs, Reference};
use tch::{Device, Kind, Tensor};
use voxloop_core::model::StepAudio2;

const TOL: f64 = 1e-4;

fn check_encoder(name: &str) {
    let model = load(name);
    let reference = Reference::load(name);
    let inputs = Inputs::load();

    let odd = model.encode_audio(std::slice::from_ref(&inputs.mel_odd)).unwrap();
    assert_eq!(odd.len(), 1);
    let err_odd = max_abs_diff(&odd[0], reference.tensor("enc.odd.0"));

    let two = model.encode_audio(&inputs.two_chunks).unwrap();
    assert_eq!(two.len(), 2);
    let err_two = (0..2)
        .map(|i| max_abs_diff(&two[i], reference.tensor(&format!("enc.two.{i}"))))
        .fold(0.0, f64::max);
    for (chunk, rows) in inputs.two_chunks.iter().zip(&two) {
        assert_eq!(model.patch_count(chunk.size()[1] as usize) as i64, rows.size()[0]);
    }
    println!("config {name}: encoder+adaptor max abs err: odd chunk {err_odd:.2e}, 2-chunk batch {err_two:.2e}");
    assert!(err_odd <= TOL && err_two <= TOL, "encoder differs: {err_odd} / {err_two}");
}

fn check_prefill_and_decode(name: &str) {
    let mut model = load(name);
    let reference = Reference::load(name);
    let inputs = Inputs::load();
    let prompt = reference.ids("prompt_ids");
    let greedy = reference.ids("greedy_ids");
    let patch = reference.audio_patch_id();

    let logits = model.prefill(&prompt, &inputs.two_chunks, patch).unwrap();
    assert_eq!(model.cache_len(), prompt.len());
    let err_prefill = max_abs_diff(&logits, reference.tensor("prefill_logits"));
    assert!(err_prefill <= TOL, "prefill logits differ by {err_prefill}");
    assert_eq!(argmax(&logits), greedy[0], "first greedy token");

    let steps = reference.tensor("decode_logits");
    let mut err_decode = 0.0f64;
    for (i, &token) in greedy.iter().enumerate() {
        let logits = model.decode(token).unwrap();
        let err = max_abs_diff(&logits, &steps.get(i as i64));
        assert!(err <= TOL, "decode step {i}: logits differ by {err}");
        err_decode = err_decode.max(err);
        if let Some(&next) = greedy.get(i + 1) {
            assert_eq!(argmax(&logits), next, "greedy token after step {i}");
        }
    }
    assert_eq!(model.cache_len(), prompt.len() + greedy.len());
    println!(
        "config {name}: prefill logits max abs err {err_prefill:.2e}; 32 decode steps max abs err {err_decode:.2e}; greedy ids identical"
    );
}

fn check_forward_full(name: &str) {
    let model = load(name);
    let reference = Reference::load(name);
    let inputs = Inputs::load();
    let prompt = reference.ids("prompt_ids");
    let logits =
        model.forward_full(&prompt, &inputs.two_chunks, reference.audio_patch_id()).unwrap();
    assert_eq!(logits.size(), [prompt.len() as i64, model.config().text.vocab_size as i64]);
    let positions: Vec<i64> =
        reference.ids("prompt_logit_positions").iter().map(|&p| p as i64).collect();
    let picked = logits.index_select(0, &Tensor::from_slice(&positions));
    let err = max_abs_diff(&picked, reference.tensor("prompt_logits"));
    println!(
        "config {name}: cache-less forward logits at positions {positions:?} max abs err {err:.2e}"
    );
    assert!(err <= TOL, "full forward logits differ by {err}");
}

#[test]
fn parity_encoder_config_a() {
    check_encoder("a");
}

#[test]
fn parity_encoder_config_b() {
    check_encoder("b");
}

#[test]
fn parity_prefill_and_greedy_decode_config_a() {
    check_prefill_and_decode("a");
}

#[test]
fn parity_prefill_and_greedy_decode_config_b() {
    check_prefill_and_decode("b");
}

#[test]
fn parity_forward_full_config_a() {
    check_forward_full("a");
}

#[test]
fn parity_forward_full_config_b() {
    check_forward_full("b");
}

/// Checkpoint B is stored in bf16; loading it as bf16 (no conversion) must give the f32 run's
/// logits up to bf16 rounding of the activations.
#[test]
fn parity_reduced_precision_load() {
    let reference = Reference::load("b");
    let inputs = Inputs::load();
    let prompt = reference.ids("prompt_ids");
    for kind in [Kind::BFloat16, Kind::Half] {
        let mut model = StepAudio2::load(&checkpoint("b"), Device::Cpu, kind).unwrap();
        assert_eq!(model.kind(), kind);
        let logits =
            model.prefill(&prompt, &inputs.two_chunks, reference.audio_patch_id()).unwrap();
        assert_eq!(logits.kind(), Kind::Float);
        let want = reference.tensor("prefill_logits");
        let scale = want.abs().max().double_value(&[]);
        let err = max_abs_diff(&logits, want);
        println!("config b loaded as {kind:?}: prefill logits max abs err {err:.3} (logit scale {scale:.1})");
        assert!(err < 0.1 * scale, "{kind:?} prefill is far from the f32 reference: {err}");
    }
}

/// The top two values of a 1-d logits row, best first.
fn top_two(logits: &Tensor) -> (f64, f64) {
    let (values, _) = logits.topk(2, -1, true, true);
    (values.double_value(&[0]), values.double_value(&[1]))
}

/// What matters of reduced precision is the tokens it picks: over the prefill and 32 decode
/// steps of checkpoint B (teacher-forced with the f32 reference's greedy ids), the bf16 and f16
/// models' argmax must equal the reference's wherever the reference's top-two gap exceeds the
/// step's own logit error (where it does not, either pick is within rounding). Prints the share
/// of agreement and the smallest gap.
#[test]
fn parity_reduced_precision_greedy_agreement() {
    let reference = Reference::load("b");
    let inputs = Inputs::load();
    let prompt = reference.ids("prompt_ids");
    let greedy = reference.ids("greedy_ids");
    let decode = reference.tensor("decode_logits");
    // Step i's reference logits: the prefill's, then decode step i - 1's (which pick greedy[i]).
    let want: Vec<Tensor> = std::iter::once(reference.tensor("prefill_logits").shallow_clone())
        .chain((0..greedy.len() - 1).map(|i| decode.get(i as i64)))
        .collect();
    for kind in [Kind::BFloat16, Kind::Half] {
        let mut model = StepAudio2::load(&checkpoint("b"), Device::Cpu, kind).unwrap();
        let mut got =
            vec![model.prefill(&prompt, &inputs.two_chunks, reference.audio_patch_id()).unwrap()];
        for &token in &greedy[..greedy.len() - 1] {
            got.push(model.decode(token).unwrap());
        }
        let (mut agree, mut smallest_gap, mut excused) = (0usize, f64::INFINITY, 0usize);
        for (step, (ours, theirs)) in got.iter().zip(&want).enumerate() {
            let (first, second) = top_two(theirs);
            let gap = first - second;
            smallest_gap = smallest_gap.min(gap);
            assert_eq!(argmax(theirs), greedy[step], "the fixture's greedy ids follow its logits");
            if argmax(ours) == greedy[step] {
                agree += 1;
                continue;
            }
            // A different pick is rounding only if the gap is within this step's error.
            let err = max_abs_diff(ours, theirs);
            assert!(
                gap <= 2.0 * err,
                "{kind:?} step {step}: picked {} instead of {} though the reference's top-two gap \
                 {gap:.4} exceeds twice the logit error {err:.4}",
                argmax(ours),
                greedy[step]
            );
            excused += 1;
        }
        let share = agree as f64 / got.len() as f64;
        println!(
            "config b loaded as {kind:?}: argmax agrees with f32 at {agree}/{} steps ({:.1} %), \
             {excused} within rounding; smallest reference top-two gap {smallest_gap:.4}",
            got.len(),
            100.0 * share
        );
        assert!(
            share >= 0.9,
            "{kind:?} picks differ from f32 at {} of {} steps",
            got.len() - agree,
            got.len()
        );
    }
}
