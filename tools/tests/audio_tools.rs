//! `audio_search` and `timbre_rag` through the tool registry, over a real audio index
//! (Tantivy + qdrant-edge in a temporary directory) and a voice library on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use voxloop_core::tool::{ToolCall, ToolErrorKind, ToolRegistry};
use voxloop_retrieval::index::{IndexOptions, NewItem};
use voxloop_retrieval::{AudioIndex, AudioItem, HashingEmbedder, ItemId, ItemKind};
use voxloop_tools::{AudioSearch, TimbreRag};
use voxloop_voices::profile::{MEL_BINS, SPEAKER_DIM};
use voxloop_voices::{SessionVoice, VoiceLibrary, VoiceProfile, VoiceSwapper};

fn sound(name: &str, description: &str) -> NewItem {
    NewItem {
        item: AudioItem {
            id: ItemId::from_content(name.as_bytes()),
            kind: ItemKind::Sound,
            path: PathBuf::from(format!("/library/sounds/{name}.wav")),
            duration_s: 2.5,
            sample_rate: 16_000,
            description: description.into(),
            tags: vec![],
            transcript: None,
            attributes: Default::default(),
            aliases: Vec::new(),
            caption: None,
        },
        speaker: None,
    }
}

fn voice(name: &str, description: &str, level: f32) -> VoiceProfile {
    let mel = vec![vec![level; MEL_BINS]; 8];
    VoiceProfile::new(name, vec![1, 2, 3, 4], mel, vec![level; SPEAKER_DIM])
        .unwrap()
        .with_description(description)
}

struct World {
    registry: ToolRegistry,
    session: Arc<SessionVoice>,
    // Last: the index (qdrant-edge flushes when dropped) must go before its directory.
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let embedder = Arc::new(HashingEmbedder::new(256).unwrap());
    let index =
        AudioIndex::open(&dir.path().join("index"), embedder, IndexOptions::default()).unwrap();
    index
        .add(vec![
            sound("rain", "heavy rain falling on a tin roof"),
            sound("bell", "a church bell ringing three times"),
            sound("door", "a wooden door creaking open, 开门的声音"),
        ])
        .unwrap();
    let mut library = VoiceLibrary::open(&dir.path().join("voices")).unwrap();
    library.add(voice("default_female", "the assistant's own female voice", 0.5)).unwrap();
    library.add(voice("default_male", "the assistant's own male voice", 0.4)).unwrap();
    library.add(voice("pirate", "gravelly old pirate voice, rough and loud", 0.3)).unwrap();
    library.register(&index).unwrap();
    let library = Arc::new(library);
    let index = Arc::new(index);

    let session = Arc::new(SessionVoice::new(Arc::clone(library.get("default_female").unwrap())));
    let swapper = VoiceSwapper::new(library).with_index(Arc::clone(&index));
    let mut registry = ToolRegistry::new();
    registry.register(AudioSearch::new(index)).unwrap();
    registry.register(TimbreRag::new(swapper)).unwrap();
    World { _dir: dir, registry, session }
}

#[tokio::test]
async fn audio_search_finds_sounds_and_voices_by_description() {
    let w = world();
    let result =
        w.registry.call(ToolCall::new("audio_search", json!({"query": "rain on a roof"}))).await;
    let text = result.outcome.unwrap();
    let first = text.lines().nth(1).unwrap();
    assert!(first.starts_with("1. [sound] heavy rain falling on a tin roof"), "{text}");
    assert!(first.contains("path=/library/sounds/rain.wav"), "{text}");

    let result = w
        .registry
        .call(ToolCall::new(
            "audio_search",
            json!({"query": "pirate voice", "kind": "timbre", "limit": 2}),
        ))
        .await;
    let text = result.outcome.unwrap();
    assert!(text.starts_with("2 results"), "{text}");
    assert!(text.lines().nth(1).unwrap().contains("[timbre] gravelly old pirate voice"), "{text}");
    assert!(!text.contains("[sound]"), "the kind filter holds: {text}");
}

#[tokio::test]
async fn audio_search_rejects_bad_arguments_with_clear_messages() {
    let w = world();
    let call = |args| w.registry.call(ToolCall::new("audio_search", args));
    let r = call(json!({"query": "rain", "limit": 0})).await;
    let e = r.outcome.unwrap_err();
    assert!(e.model_message.contains("limit"), "{e:?}");
    let r = call(json!({"query": "rain", "limit": 500})).await;
    assert!(r.outcome.unwrap_err().model_message.contains("between 1 and 20"));
    let r = call(json!({"query": "   "})).await;
    assert!(r.outcome.unwrap_err().model_message.contains("empty query"));
    let r = call(json!({"query": "rain", "kind": "music"})).await;
    assert_eq!(r.error_kind(), Some(ToolErrorKind::InvalidArguments));
    let r = call(json!({"q": "rain"})).await;
    assert_eq!(r.error_kind(), Some(ToolErrorKind::InvalidArguments));
}

#[tokio::test]
async fn timbre_rag_swaps_the_session_voice_and_confirms() {
    let w = world();
    let swap = |query: &str| w.registry.call(in_session(&w.session, query));
    let r = swap("a rough pirate voice").await;
    assert_eq!(r.outcome.unwrap(), "你的音色已经更新完成，请继续对话。");
    assert_eq!(w.session.current().name, "pirate");
    let r = swap("默认男音色").await;
    assert!(r.outcome.is_ok());
    assert_eq!(w.session.current().name, "default_male");
    let r = swap("switch back to your original voice").await;
    assert!(r.outcome.is_ok());
    assert_eq!(w.session.current().name, "default_female");

    // A sound is not a voice: nothing in the library matches, the voice stays.
    let r = swap("church bell").await;
    let message = r.outcome.unwrap_err().model_message;
    assert!(message.contains("no voice in the library matches \"church bell\""), "{message}");
    assert_eq!(w.session.current().name, "default_female");

    // Declared as not idempotent, so retry layers leave it alone.
    assert!(!w.registry.get("timbre_rag").unwrap().idempotent());
}

/// A `timbre_rag` call made in the session whose voice is `voice`.
fn in_session(voice: &Arc<SessionVoice>, query: &str) -> ToolCall {
    let mut call = ToolCall::new("timbre_rag", json!({ "query": query }));
    call.context.extensions.insert(Arc::clone(voice));
    call
}

#[tokio::test]
async fn timbre_rag_swaps_only_the_calling_sessions_voice() {
    let w = world();
    let other = Arc::new(SessionVoice::new(Arc::clone(w.session.original())));
    let r = w.registry.call(in_session(&other, "a rough pirate voice")).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    assert_eq!(other.current().name, "pirate");
    assert_eq!(w.session.current().name, "default_female", "the other session keeps its voice");

    // No session voice with the call: nothing to swap, and the model is told so.
    let r = w.registry.call(ToolCall::new("timbre_rag", json!({"query": "pirate"}))).await;
    let message = r.outcome.unwrap_err().model_message;
    assert!(message.contains("no voice to switch"), "{message}");
}
