//! Voice swap end to end: a library on disk registered in a real audio index (Tantivy +
//! qdrant-edge), a session speaking through a `VoiceStream`, and a `timbre_rag`-style query
//! that swaps the voice in the middle of an utterance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use tch::Device;
use voxloop_retrieval::index::IndexOptions;
use voxloop_retrieval::search::SearchRequest;
use voxloop_retrieval::{AudioIndex, HashingEmbedder, ItemFilter, ItemKind};
use voxloop_voices::hift::NsfRandom;
use voxloop_voices::swap::{MatchedBy, SWAP_CONFIRMATION};
use voxloop_voices::token2wav::CHUNK_TOKENS;
use voxloop_voices::{
    DefaultVoice, SessionVoice, Token2Wav, VoiceLibrary, VoiceProfile, VoiceStream, VoiceSwapper,
};

/// The fixture voice turned into another one (other tokens, mel and speaker).
fn variant(voice: &VoiceProfile, name: &str, scale: f32) -> VoiceProfile {
    let tokens: Vec<i64> = voice.prompt_tokens.iter().rev().map(|t| (t * 7 + 11) % 6561).collect();
    let mel = voice.prompt_mel.iter().rev().map(|r| r.iter().map(|v| v * scale - 1.0).collect());
    let spk = voice.speaker_embedding.iter().map(|v| -v * scale).collect();
    VoiceProfile::new(name, tokens, mel.collect(), spk).unwrap()
}

struct World {
    model: Token2Wav,
    library: Arc<VoiceLibrary>,
    swapper: VoiceSwapper,
    tokens: Vec<i64>,
    // Last: the index (qdrant-edge flushes when dropped) must go before its directory.
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let inputs = support::tensors("inputs.safetensors");
    let mut model = Token2Wav::load(&support::dir(), Device::Cpu).unwrap();
    model.flow_mut().set_noise(&inputs["flow_noise"]).unwrap();
    model.set_nsf_random(NsfRandom::Torch); // only the flow's mels are compared

    let dir = tempfile::tempdir().unwrap();
    let mut library = VoiceLibrary::open(&dir.path().join("voices")).unwrap();
    let fixture = support::profile(&inputs);
    let mut female = fixture.clone().with_description("the assistant's default female voice");
    female.name = "default_female".into();
    library.add(female).unwrap();
    library
        .add(
            variant(&fixture, "default_male", 0.9)
                .with_description("the assistant's default male voice"),
        )
        .unwrap();
    library
        .add(
            variant(&fixture, "sponge", 0.6).with_description(
                "high squeaky cartoon sponge voice, 海绵宝宝的音色, very cheerful",
            ),
        )
        .unwrap();
    library
        .add(
            variant(&fixture, "ceo", 1.2)
                .with_description("deep commanding voice of a domineering CEO, 霸气总裁的音色"),
        )
        .unwrap();
    let library = Arc::new(library);

    let embedder = Arc::new(HashingEmbedder::new(256).unwrap());
    let index =
        AudioIndex::open(&dir.path().join("index"), embedder, IndexOptions::default()).unwrap();
    let report = library.register(&index).unwrap();
    assert_eq!(report.added, 4);
    // registering again changes nothing
    let again = library.register(&index).unwrap();
    assert_eq!((again.added, again.unchanged), (0, 4));
    let index = Arc::new(index);
    let swapper = VoiceSwapper::new(Arc::clone(&library)).with_index(index);
    World { _dir: dir, model, library, swapper, tokens: support::ints(&inputs["tokens"]) }
}

#[test]
fn library_voices_are_timbre_items_in_the_index() {
    let w = world();
    let dir = w.library.dir().unwrap().to_path_buf();
    let reopened = VoiceLibrary::open(&dir).unwrap();
    assert_eq!(reopened.len(), 4, "profiles are cached on disk");
    let embedder = Arc::new(HashingEmbedder::new(256).unwrap());
    let index =
        AudioIndex::open(&dir.parent().unwrap().join("index2"), embedder, IndexOptions::default())
            .unwrap();
    reopened.register(&index).unwrap();
    let filter = ItemFilter { kind: Some(ItemKind::Timbre), ..ItemFilter::default() };
    let hits = index.search(&SearchRequest::new("CEO", 3).with_filter(filter)).unwrap();
    let top = reopened.profile_for_path(&hits[0].item.path).unwrap();
    assert_eq!(top.name, "ceo");
}

#[test]
fn swap_resolves_names_defaults_and_descriptions() {
    let w = world();
    let session = SessionVoice::new(Arc::clone(w.library.get("default_female").unwrap()));

    let out = w.swapper.swap(&session, "海绵宝宝的音色").unwrap();
    assert_eq!(out.voice.name, "sponge");
    assert!(matches!(out.matched_by, MatchedBy::Search { .. }), "{:?}", out.matched_by);
    assert_eq!(out.confirmation, SWAP_CONFIRMATION);
    assert_eq!(session.current().name, "sponge");

    let out = w.swapper.swap(&session, "默认男音色").unwrap();
    assert_eq!(
        (out.voice.name.as_str(), out.matched_by),
        ("default_male", MatchedBy::Default(DefaultVoice::Male))
    );
    let out = w.swapper.swap(&session, "霸气总裁的音色").unwrap();
    assert_eq!(out.voice.name, "ceo");
    let out = w.swapper.swap(&session, "换回你原来的声音").unwrap();
    assert_eq!((out.voice.name.as_str(), out.matched_by), ("default_female", MatchedBy::Original));
    let out = w.swapper.swap(&session, "SPONGE").unwrap();
    assert_eq!((out.voice.name.as_str(), out.matched_by), ("sponge", MatchedBy::Name));
    assert_eq!(session.snapshot().0, 5, "five swaps");

    // bad queries leave the voice as it was
    let e = w.swapper.swap(&session, "   ").unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let no_index = VoiceSwapper::new(Arc::clone(&w.library));
    let e = no_index.swap(&session, "a robot voice").unwrap_err();
    assert!(e.to_string().contains("no voice for \"a robot voice\""), "{e}");
    assert_eq!(session.current().name, "sponge");
}

#[test]
fn a_swap_mid_utterance_takes_effect_at_the_next_chunk() {
    let _guard = tch::no_grad_guard();
    let w = world();
    let female = Arc::clone(w.library.get("default_female").unwrap());
    let session = Arc::new(SessionVoice::new(Arc::clone(&female)));
    let window = CHUNK_TOKENS + 3;
    let tokens = &w.tokens;
    assert!(tokens.len() > 2 * CHUNK_TOKENS, "the fixture utterance spans three chunks");

    // The session speaks; the first chunk renders once its window (25 + 3 tokens) is full.
    let mut stream = VoiceStream::new(&w.model, Arc::clone(&session)).unwrap();
    let first = stream.push(&tokens[..window]).unwrap();
    assert!(!first.is_empty());
    let first_mel = stream.inner().last_mel().unwrap().shallow_clone();
    // The model calls timbre_rag while it is still speaking.
    let out = w.swapper.swap(&session, "a high squeaky cartoon voice").unwrap();
    assert_eq!(out.voice.name, "sponge");
    // Chunk k (k ≥ 1) covers tokens [25k, 25k + 28): it renders once token 25k + 28 is in.
    let mut rest = Vec::new();
    let mut mels_after = Vec::new();
    let mut pushed = window;
    while pushed + CHUNK_TOKENS <= tokens.len() {
        rest.extend(stream.push(&tokens[pushed..pushed + CHUNK_TOKENS]).unwrap());
        mels_after.push(stream.inner().last_mel().unwrap().shallow_clone());
        pushed += CHUNK_TOKENS;
    }
    rest.extend(stream.push(&tokens[pushed..]).unwrap());
    rest.extend(stream.finish().unwrap());
    mels_after.push(stream.inner().last_mel().unwrap().shallow_clone());
    assert!(!rest.is_empty());
    assert!(mels_after.len() >= 2, "the fixture utterance spans at least three chunks");

    // Before the swap: the female voice's chunk.
    let mut as_female = w.model.stream(&female).unwrap();
    as_female.chunk(&tokens[..window], false).unwrap();
    assert_eq!(support::max_abs_diff(&first_mel, as_female.last_mel().unwrap()), 0.0);
    as_female.chunk(&tokens[CHUNK_TOKENS..CHUNK_TOKENS + window], false).unwrap();
    let second_as_female = as_female.last_mel().unwrap().shallow_clone();

    // After it: exactly what the swapped-to voice renders from the swap point on.
    let sponge = w.library.get("sponge").unwrap();
    let mut as_sponge = w.model.stream(sponge).unwrap();
    for (k, mel) in mels_after.iter().enumerate() {
        let start = (k + 1) * CHUNK_TOKENS;
        let last = k + 1 == mels_after.len();
        let end = if last { tokens.len() } else { start + window };
        as_sponge.chunk(&tokens[start..end], last).unwrap();
        let diff = support::max_abs_diff(mel, as_sponge.last_mel().unwrap());
        assert_eq!(diff, 0.0, "chunk {} after the swap", k + 1);
    }
    let diff = support::max_abs_diff(&mels_after[0], &second_as_female);
    assert!(diff > 0.1, "the chunk after the swap still sounds like the old voice ({diff})");

    // Offline rendering of the same tokens: the streamed chunks after the swap are far closer
    // to the new voice's offline mel than to the old voice's.
    let streamed = tch::Tensor::cat(&mels_after, 2);
    let offline_sponge = w.model.mel(&tokens[CHUNK_TOKENS..], sponge).unwrap();
    let offline_female = w.model.mel(&tokens[CHUNK_TOKENS..], &female).unwrap();
    assert_eq!(offline_sponge.size(), streamed.size());
    let mean_diff =
        |a: &tch::Tensor| (a - &streamed).abs().mean(tch::Kind::Float).double_value(&[]);
    let (to_new, to_old) = (mean_diff(&offline_sponge), mean_diff(&offline_female));
    println!("streamed after swap vs offline: new voice {to_new:.4}, old voice {to_old:.4}");
    assert!(to_new < 0.5 * to_old, "new {to_new} vs old {to_old}");
}
