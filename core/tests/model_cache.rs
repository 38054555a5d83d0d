//! The KV cache of the Step-Audio 2 model, on the tiny checkpoints of
//! `core/tests/fixtures/llm`: cached decoding equals a cache-less forward, extending the cache
//! with a later turn equals prefilling the concatenation, truncation rewinds exactly, and the
//! `StepModel` segment API agrees with the token API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod llm_support;

use llm_support::{argmax, load, max_abs_diff, Inputs, Reference};
use tch::Tensor;
use voxloop_core::audio::AudioChunk;
use voxloop_core::generate::{Segment, StepModel};
use voxloop_core::model::StepAudio2;
use voxloop_core::Error;

const TOL: f64 = 1e-4;

/// Greedy-decodes `steps` tokens after `first` logits; returns the ids fed and the logits
/// after each.
fn greedy(model: &mut StepAudio2, first: &Tensor, steps: usize) -> (Vec<u32>, Vec<Tensor>) {
    let (mut ids, mut all) = (Vec::new(), Vec::new());
    let mut logits = first.shallow_clone();
    for _ in 0..steps {
        let next = argmax(&logits);
        ids.push(next);
        logits = model.decode(next).unwrap();
        all.push(logits.shallow_clone());
    }
    (ids, all)
}

/// A deterministic run of ordinary token ids (no audio placeholders).
fn text_ids(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + seed * 101 + 11) % 600).collect()
}

fn check_cached_equals_full(name: &str) {
    let mut model = load(name);
    let reference = Reference::load(name);
    let inputs = Inputs::load();
    let patch = reference.audio_patch_id();

    // A prompt with two audio chunks, then 12 greedy steps.
    let prompt = reference.ids("prompt_ids");
    let first = model.prefill(&prompt, &inputs.two_chunks, patch).unwrap();
    let (ids, steps) = greedy(&mut model, &first, 12);
    let sequence: Vec<u32> = prompt.iter().chain(&ids).copied().collect();
    let full = model.forward_full(&sequence, &inputs.two_chunks, patch).unwrap();
    let n = prompt.len() as i64;
    let mut err = max_abs_diff(&first, &full.get(n - 1));
    for (i, logits) in steps.iter().enumerate().take(ids.len() - 1) {
        err = err.max(max_abs_diff(logits, &full.get(n + i as i64)));
    }

    // Text only, 60 positions then 10 steps: the cache grows (64 → 128) mid-decode.
    model.clear();
    let prompt = text_ids(60, 1);
    let first = model.prefill(&prompt, &[], patch).unwrap();
    let (ids, steps) = greedy(&mut model, &first, 10);
    let sequence: Vec<u32> = prompt.iter().chain(&ids).copied().collect();
    let full = model.forward_full(&sequence, &[], patch).unwrap();
    let n = prompt.len() as i64;
    err = err.max(max_abs_diff(&first, &full.get(n - 1)));
    for (i, logits) in steps.iter().enumerate().take(ids.len() - 1) {
        err = err.max(max_abs_diff(logits, &full.get(n + i as i64)));
    }
    println!("config {name}: cached decoding vs full forward max abs err {err:.2e}");
    assert!(err <= TOL, "cached decoding differs from the full forward by {err}");
}

#[test]
fn cached_decoding_equals_a_full_forward_a() {
    check_cached_equals_full("a");
}

#[test]
fn cached_decoding_equals_a_full_forward_b() {
    check_cached_equals_full("b");
}

/// Turn 1 (text + two audio chunks), 5 decoded tokens, then turn 2 (text + one audio chunk,
/// e.g. a spoken tool result) prefilled on top, vs the whole thing prefilled at once. Each turn's
/// audio is encoded as its own batch in both runs, so the rows are identical.
fn check_extension(name: &str) {
    let mut model = load(name);
    let reference = Reference::load(name);
    let inputs = Inputs::load();
    let patch = reference.audio_patch_id();
    let turn1 = reference.ids("prompt_ids");
    let odd_patches = model.patch_count(inputs.mel_odd.size()[1] as usize);
    let mut turn2 = text_ids(7, 2);
    turn2.extend(std::iter::repeat_n(patch, odd_patches));
    turn2.extend(text_ids(5, 3));

    let first = model.prefill(&turn1, &inputs.two_chunks, patch).unwrap();
    let (decoded, _) = greedy(&mut model, &first, 5);
    let audio2 = std::slice::from_ref(&inputs.mel_odd);
    let extended = model.prefill(&turn2, audio2, patch).unwrap();
    assert_eq!(model.cache_len(), turn1.len() + decoded.len() + turn2.len());
    let next = model.decode(argmax(&extended)).unwrap();

    // Reference run: turn 1 + the decoded tokens + turn 2 in one cache-less forward.
    let all: Vec<u32> = turn1.iter().chain(&decoded).chain(&turn2).copied().collect();
    let mut rows = model.encode_audio(&inputs.two_chunks).unwrap();
    rows.extend(model.encode_audio(audio2).unwrap());
    let full = model.forward_full_with_rows(&all, &rows, patch).unwrap();
    let err_ext = max_abs_diff(&extended, &full.get(all.len() as i64 - 1));

    // And a fresh cache prefilled with the concatenation when turn 1 has no audio.
    model.clear();
    let text_turn: Vec<u32> = text_ids(40, 4);
    let _ = model.prefill(&text_turn, &[], patch).unwrap();
    let on_top = model.prefill(&turn2, audio2, patch).unwrap();
    let after = model.decode(7).unwrap();
    model.clear();
    let joined: Vec<u32> = text_turn.iter().chain(&turn2).copied().collect();
    let at_once = model.prefill(&joined, audio2, patch).unwrap();
    let after_once = model.decode(7).unwrap();
    let err_cat = max_abs_diff(&on_top, &at_once).max(max_abs_diff(&after, &after_once));
    assert!(next.isfinite().all().int64_value(&[]) == 1);
    println!("config {name}: extended cache vs one prefill: {err_ext:.2e} (audio in both turns), {err_cat:.2e} (audio in turn 2)");
    assert!(err_ext <= TOL && err_cat <= TOL, "extension differs: {err_ext} / {err_cat}");
}

#[test]
fn extending_the_cache_equals_prefilling_the_concatenation_a() {
    check_extension("a");
}

#[test]
fn extending_the_cache_equals_prefilling_the_concatenation_b() {
    check_extension("b");
}

#[test]
fn truncate_then_redecode_equals_the_original() {
    let mut model = load("a");
    let reference = Reference::load("a");
    let inputs = Inputs::load();
    let patch = reference.audio_patch_id();
    let prompt = reference.ids("prompt_ids");
    let first = model.prefill(&prompt, &inputs.two_chunks, patch).unwrap();
    let start = model.cache_len();
    let (ids, steps) = greedy(&mut model, &first, 8);

    // Rewind to 3 decoded tokens, take a detour, rewind again, and replay the original tail.
    model.truncate(start + 3).unwrap();
    assert_eq!(model.cache_len(), start + 3);
    let _ = model.decode(5).unwrap();
    let _ = model.decode(6).unwrap();
    model.truncate(start + 3).unwrap();
    let mut err = 0.0f64;
    for i in 3..ids.len() {
        err = err.max(max_abs_diff(&model.decode(ids[i]).unwrap(), &steps[i]));
    }
    // Rewind to the prompt: the first decode step comes back too.
    model.truncate(start).unwrap();
    err = err.max(max_abs_diff(&model.decode(ids[0]).unwrap(), &steps[0]));
    println!("truncate + re-decode vs original max abs err {err:.2e}");
    assert!(err <= 1e-6, "re-decoded logits differ by {err}");

    let len = model.cache_len();
    let err = model.truncate(len + 1).unwrap_err();
    assert!(matches!(err, Error::InvalidTruncate { .. }), "{err}");
    model.clear();
    assert_eq!(model.cache_len(), 0);
    let again = model.prefill(&prompt, &inputs.two_chunks, patch).unwrap();
    assert!(max_abs_diff(&again, &first) <= 1e-6);
}

#[test]
fn context_overflow_is_an_error_and_leaves_the_cache() {
    let mut model = load("a");
    let max = model.max_positions();
    // No id reaches u32::MAX, so no position is an audio placeholder.
    let _ = model.prefill(&text_ids(10, 5), &[], u32::MAX).unwrap();
    let err = model.prefill(&text_ids(max - 9, 6), &[], u32::MAX).unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { needed, .. } if needed == max + 1), "{err}");
    assert_eq!(model.cache_len(), 10);
    let err = model.forward_full(&text_ids(max + 1, 7), &[], u32::MAX).unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
}

#[test]
fn audio_placeholder_count_must_match_the_rows() {
    let mut model = load("a");
    let reference = Reference::load("a");
    let inputs = Inputs::load();
    let patch = reference.audio_patch_id();
    let mut prompt = reference.ids("prompt_ids");
    prompt.push(patch);
    let err = model.prefill(&prompt, &inputs.two_chunks, patch).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::AudioPatchMismatch { placeholders: 320, rows: 319, .. }),
        "{text}"
    );
    assert!(text.contains("<audio_patch>"), "{text}");
    assert_eq!(model.cache_len(), 0);
    let err = model.prefill(&text_ids(4, 1), &inputs.two_chunks, patch).unwrap_err();
    assert!(matches!(err, Error::AudioPatchMismatch { placeholders: 0, rows: 319, .. }), "{err}");
    let err = model.prefill(&[7300], &[], patch).unwrap_err();
    assert!(matches!(err, Error::UnknownTokenId { id: 7300, .. }), "{err}");
}

#[test]
fn step_model_segments_agree_with_the_token_api() {
    let mut model = load("b");
    let reference = Reference::load("b");
    let inputs = Inputs::load();
    let patch = reference.audio_patch_id();
    let prompt = reference.ids("prompt_ids");
    let want = model.prefill(&prompt, &inputs.two_chunks, patch).unwrap();
    model.clear();

    // The prompt split at its first patch run, each chunk right after its placeholders.
    let split = prompt.iter().position(|&t| t == patch).unwrap() + 313;
    let to_i64 = |ids: &[u32]| ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>();
    let audio = |i: usize, patches: usize| {
        Segment::Audio(AudioChunk::from_tensor(&inputs.two_chunks[i], patches).unwrap())
    };
    let segments = vec![
        Segment::Tokens(to_i64(&prompt[..split])),
        audio(0, 313),
        Segment::Tokens(to_i64(&prompt[split..])),
        audio(1, 6),
    ];
    let step: &mut dyn StepModel = &mut model;
    let err = step.prefill(&segments).unwrap_err();
    assert!(matches!(err, Error::InvalidPrompt(_)), "no <audio_patch> id set: {err}");
    model.set_audio_patch_id(patch);
    let step: &mut dyn StepModel = &mut model;
    let got = step.prefill(&segments).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
    assert_eq!(step.cache_len(), prompt.len());
    let logits = step.decode(i64::from(argmax(&got))).unwrap();
    assert_eq!(logits.size(), [model.config().text.vocab_size as i64]);

    model.clear();
    let wrong = vec![Segment::Tokens(to_i64(&prompt)), audio(0, 313), audio(1, 5)];
    let err = StepModel::prefill(&mut model, &wrong).unwrap_err();
    assert!(err.to_string().contains("declares 5 patches"), "{err}");
    let err = StepModel::decode(&mut model, -3).unwrap_err();
    assert!(matches!(err, Error::UnknownTokenId { id: -3, .. }), "{err}");
    assert_eq!(StepModel::cache_len(&model), 0);
}
