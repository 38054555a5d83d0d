//! The sampler: HF parity of the processed distribution (reference from
//! scripts/fixtures/sampler.py), greedy/top-k/top-p limits, the random draw's distribution,
//! the repetition penalty, masks and seeding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde::Deserialize;
use tch::Tensor;
use voxloop_core::generate::{
    allow_only_ids, forbid_ids, repetition_penalty, LogitsMask, Sampler, SamplingParams,
};
use voxloop_core::{Error, Result};

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    temperature: f64,
    top_k: usize,
    top_p: f64,
    repetition_penalty: f64,
    logits: Vec<f32>,
    context: Vec<i64>,
    penalised_logits: Vec<f32>,
    probs: Vec<f32>,
    greedy: i64,
}

fn reference() -> Reference {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sampler/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn params(temperature: f64, top_k: usize, top_p: f64, penalty: f64, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        repetition_penalty: penalty,
        seed: Some(seed),
        max_new_tokens: 100,
        stop_tokens: vec![],
    }
}

/// Deterministic pseudo-random logits (a small LCG), so tests need no fixture for them.
fn pseudo_logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

fn argmax(v: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as i64
}

fn softmax(v: &[f64]) -> Vec<f64> {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Pearson's chi-square statistic of `counts` against `probs` (cells with p > 0).
fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .zip(probs)
        .filter(|(_, &p)| p > 0.0)
        .map(|(&c, &p)| {
            let expected = p * n as f64;
            (c as f64 - expected).powi(2) / expected
        })
        .sum()
}

#[test]
fn processed_distribution_matches_transformers() {
    let reference = reference();
    assert!(reference.cases.len() >= 8);
    for case in &reference.cases {
        let sampler = Sampler::new(params(
            case.temperature,
            case.top_k,
            case.top_p,
            case.repetition_penalty,
            0,
        ))
        .unwrap();
        let logits = Tensor::from_slice(&case.logits);
        let candidates = sampler.candidates(&logits, &case.context, &[], None).unwrap();
        let mut probs = vec![0f32; case.logits.len()];
        for (&id, &p) in candidates.ids.iter().zip(&candidates.probs) {
            probs[id as usize] = p;
        }
        let kept_reference = case.probs.iter().filter(|&&p| p > 0.0).count();
        assert_eq!(candidates.ids.len(), kept_reference, "{}: kept ids", case.name);
        let max_err =
            probs.iter().zip(&case.probs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_err < 2e-6, "{}: max abs error {max_err}", case.name);
        // The candidates come most likely first.
        assert!(candidates.probs.windows(2).all(|w| w[0] >= w[1]), "{}", case.name);

        if case.repetition_penalty != 1.0 {
            let penalised =
                repetition_penalty(&logits, &case.context, case.repetition_penalty).unwrap();
            let penalised = Vec::<f32>::try_from(&penalised).unwrap();
            let err = penalised
                .iter()
                .zip(&case.penalised_logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-6, "{}: penalised logits error {err}", case.name);
        }
        let mut greedy = Sampler::new(params(0.0, 0, 1.0, case.repetition_penalty, 0)).unwrap();
        let picked = greedy.sample(&logits, &case.context, &[], None, 0).unwrap();
        assert_eq!(picked, case.greedy, "{}: greedy", case.name);
    }
}

#[test]
fn draws_never_leave_the_reference_support() {
    for case in &reference().cases {
        let mut sampler = Sampler::new(params(
            case.temperature,
            case.top_k,
            case.top_p,
            case.repetition_penalty,
            7,
        ))
        .unwrap();
        let logits = Tensor::from_slice(&case.logits);
        for _ in 0..300 {
            let id = sampler.sample(&logits, &case.context, &[], None, 0).unwrap();
            assert!(case.probs[id as usize] > 0.0, "{}: drew filtered id {id}", case.name);
        }
    }
}

#[test]
fn greedy_top_k_1_and_tiny_top_p_are_argmax() {
    for seed in 0..20 {
        let values = pseudo_logits(500, seed, 4.0);
        let expected = argmax(&values);
        let logits = Tensor::from_slice(&values);
        for p in [
            params(0.0, 0, 1.0, 1.0, seed),
            params(1.0, 1, 1.0, 1.0, seed),
            params(1.5, 0, 1e-6, 1.0, seed),
            params(0.7, 50, 0.0, 1.0, seed),
        ] {
            let mut sampler = Sampler::new(p.clone()).unwrap();
            for _ in 0..5 {
                assert_eq!(sampler.sample(&logits, &[], &[], None, 0).unwrap(), expected, "{p:?}");
            }
        }
    }
}

/// 20000 seeded draws at temperature 0.8 from 6 tokens; the counts must fit softmax(l / 0.8)
/// (chi-square, 5 degrees of freedom, 0.999 quantile 20.52) and must not fit softmax(l), so
/// the test fails if the temperature or the draw is wrong.
#[test]
fn temperature_sampling_follows_the_softmax() {
    let values = [1.0f32, 0.5, 0.0, -0.5, 2.0, -1.5];
    let logits = Tensor::from_slice(&values);
    let as_f64: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    let expected = softmax(&as_f64.iter().map(|v| v / 0.8).collect::<Vec<_>>());
    let wrong = softmax(&as_f64);
    let mut sampler = Sampler::new(params(0.8, 0, 1.0, 1.0, 1234)).unwrap();
    let mut counts = [0usize; 6];
    for _ in 0..20_000 {
        counts[sampler.sample(&logits, &[], &[], None, 0).unwrap() as usize] += 1;
    }
    let good = chi_square(&counts, &expected);
    let bad = chi_square(&counts, &wrong);
    assert!(good < 20.52, "chi-square {good} against the right distribution, counts {counts:?}");
    assert!(bad > 100.0, "chi-square {bad} against the wrong distribution");
}

/// With top-k and top-p, draws follow the renormalised reference probabilities.
#[test]
fn filtered_sampling_follows_the_reference_probabilities() {
    let reference = reference();
    let case = reference.cases.iter().find(|c| c.name == "top_k_and_top_p").unwrap();
    let mut sampler =
        Sampler::new(params(case.temperature, case.top_k, case.top_p, 1.0, 99)).unwrap();
    let logits = Tensor::from_slice(&case.logits);
    let mut counts = vec![0usize; case.logits.len()];
    for _ in 0..20_000 {
        counts[sampler.sample(&logits, &[], &[], None, 0).unwrap() as usize] += 1;
    }
    let probs: Vec<f64> = case.probs.iter().map(|&p| f64::from(p)).collect();
    let df = probs.iter().filter(|&&p| p > 0.0).count() - 1;
    assert_eq!(df, 4, "the fixture case keeps 5 tokens");
    let stat = chi_square(&counts, &probs);
    assert!(stat < 18.47, "chi-square {stat} (df 4, 0.999 quantile 18.47), counts {counts:?}");
}

#[test]
fn repetition_penalty_changes_the_choice() {
    // Token 0 leads token 1 by 0.1; seen once, its logit is divided by 1.2 and token 1 wins.
    let values = [2.0f32, 1.9, -1.0, -3.0];
    let logits = Tensor::from_slice(&values);
    let mut plain = Sampler::new(params(0.0, 0, 1.0, 1.0, 0)).unwrap();
    let mut penalised = Sampler::new(params(0.0, 0, 1.0, 1.2, 0)).unwrap();
    assert_eq!(plain.sample(&logits, &[0, 0, 3], &[], None, 0).unwrap(), 0);
    assert_eq!(penalised.sample(&logits, &[0, 0, 3], &[], None, 0).unwrap(), 1);
    assert_eq!(penalised.sample(&logits, &[3], &[], None, 0).unwrap(), 0);
    // Negative logits are multiplied, positive divided, once per id; unseen ids untouched.
    let out = repetition_penalty(&logits, &[0, 2, 2, 2], 1.2).unwrap();
    let out = Vec::<f32>::try_from(&out).unwrap();
    assert_eq!(out, vec![values[0] / 1.2, values[1], values[2] * 1.2, values[3]]);
    // A penalty below 1 rewards: a seen negative logit moves towards 0.
    let rewarded = Vec::<f32>::try_from(&repetition_penalty(&logits, &[2], 0.5).unwrap()).unwrap();
    assert_eq!(rewarded[2], values[2] * 0.5);
    // The caller's tensor is not modified.
    assert_eq!(Vec::<f32>::try_from(&logits).unwrap(), values.to_vec());
}

#[test]
fn masks_forbid_ids() {
    let values = pseudo_logits(64, 3, 3.0);
    let logits = Tensor::from_slice(&values);
    let best = argmax(&values);
    let mut second = values.clone();
    second[best as usize] = f32::NEG_INFINITY;
    let runner_up = argmax(&second);

    let mut greedy = Sampler::new(params(0.0, 0, 1.0, 1.0, 0)).unwrap();
    let mut forbid_best = |l: &mut Tensor, _: &[i64]| forbid_ids(l, &[best]);
    let picked = greedy.sample(&logits, &[], &[], Some(&mut forbid_best), 0).unwrap();
    assert_eq!(picked, runner_up);

    let allowed = [5i64, 17, 40];
    let mut only = |l: &mut Tensor, _: &[i64]| allow_only_ids(l, &allowed);
    let mut sampler = Sampler::new(params(1.0, 0, 1.0, 1.0, 11)).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        let id = sampler.sample(&logits, &[], &[], Some(&mut only), 0).unwrap();
        assert!(allowed.contains(&id), "drew {id}");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 3, "all allowed ids are reachable");
    // The caller's logits are untouched by the mask.
    assert_eq!(Vec::<f32>::try_from(&logits).unwrap(), values);

    let mut all = |l: &mut Tensor, _: &[i64]| {
        let ids: Vec<i64> = (0..64).collect();
        forbid_ids(l, &ids)
    };
    match sampler.sample(&logits, &[], &[], Some(&mut all), 9) {
        Err(Error::AllTokensMasked { step: 9 }) => {}
        other => panic!("expected AllTokensMasked, got {other:?}"),
    }
    assert!(forbid_ids(&mut logits.copy(), &[64]).is_err());
}

/// A stateful mask sees the generated ids it is given.
#[test]
fn a_mask_receives_the_generated_ids() {
    struct NoRepeat;
    impl LogitsMask for NoRepeat {
        fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> Result<()> {
            forbid_ids(logits, generated)
        }
    }
    let values = pseudo_logits(10, 5, 1.0);
    let logits = Tensor::from_slice(&values);
    let mut sampler = Sampler::new(params(0.0, 0, 1.0, 1.0, 0)).unwrap();
    let mut generated = Vec::new();
    for step in 0..10 {
        let id = sampler.sample(&logits, &[], &generated, Some(&mut NoRepeat), step).unwrap();
        assert!(!generated.contains(&id));
        generated.push(id);
    }
    let mut sorted = generated.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<i64>>());
    // Greedy without repeats visits the ids in decreasing logit order.
    let mut by_logit: Vec<i64> = (0..10).collect();
    by_logit.sort_by(|&a, &b| values[b as usize].total_cmp(&values[a as usize]));
    assert_eq!(generated, by_logit);
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let values = pseudo_logits(200, 8, 1.0);
    let logits = Tensor::from_slice(&values);
    let draw = |seed: u64| {
        let mut sampler = Sampler::new(params(1.0, 0, 0.95, 1.0, seed)).unwrap();
        (0..100).map(|_| sampler.sample(&logits, &[], &[], None, 0).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}

#[test]
fn bad_parameters_and_logits_are_rejected() {
    for (p, field) in [
        (params(-0.1, 0, 1.0, 1.0, 0), "temperature"),
        (params(f64::NAN, 0, 1.0, 1.0, 0), "temperature"),
        (params(1.0, 0, 1.5, 1.0, 0), "top_p"),
        (params(1.0, 0, 1.0, 0.0, 0), "repetition_penalty"),
    ] {
        let err = Sampler::new(p).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let mut sampler = Sampler::new(params(1.0, 0, 1.0, 1.0, 0)).unwrap();
    let two_d = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
    assert!(matches!(sampler.sample(&two_d, &[], &[], None, 0), Err(Error::InvalidLogits(_))));
    let ints = Tensor::from_slice(&[1i64, 2]);
    assert!(matches!(sampler.sample(&ints, &[], &[], None, 0), Err(Error::InvalidLogits(_))));
    let nan = Tensor::from_slice(&[1.0f32, f32::NAN]);
    assert!(matches!(sampler.sample(&nan, &[], &[], None, 0), Err(Error::InvalidLogits(_))));
    let mut penalised = Sampler::new(params(1.0, 0, 1.0, 1.1, 0)).unwrap();
    let logits = Tensor::from_slice(&[1.0f32, 2.0]);
    assert!(matches!(
        penalised.sample(&logits, &[2], &[], None, 0),
        Err(Error::UnknownTokenId { id: 2, vocab_size: 2 })
    ));
}

/// Half-precision logits (as a bf16 model returns them) are accepted and give the argmax.
#[test]
fn half_precision_logits_are_accepted() {
    let values = pseudo_logits(100, 21, 5.0);
    let logits = Tensor::from_slice(&values).to_kind(tch::Kind::BFloat16);
    let as_f32 = Vec::<f32>::try_from(&logits.to_kind(tch::Kind::Float)).unwrap();
    let mut sampler = Sampler::new(params(0.0, 0, 1.0, 1.0, 0)).unwrap();
    assert_eq!(sampler.sample(&logits, &[], &[], None, 0).unwrap(), argmax(&as_f32));
}
