//! The chat template against StepFun's own `StepAudio2.apply_chat_template`, run by
//! scripts/fixtures/protocol.py on a table of conversations (core/tests/fixtures/protocol/).
//!
//! Every conversation is rendered twice here: converted item by item from the upstream message
//! dicts, and (where the case names a builder) with the `Message` constructors the agent loop
//! uses. Both must give upstream's segment list byte for byte; the ids must equal upstream's
//! tokenization (`tokenizer(text=segment)` per segment) except that untrusted text is encoded
//! with special tokens off. Audio goes through the crate's real front end (WAV decode, mel,
//! `compute_token_num`), and the tool declaration through `python_json_dumps`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod protocol_support;

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::OnceLock;

use protocol_support::{reference, tokenizer, Conversation, Mel, Segment};
use serde_json::Value;
use voxloop_core::audio::{audio_patch_count, prepare_audio, AudioInput, AudioLimits};
use voxloop_core::protocol::{
    encode_pieces, prompt_ids, python_float_repr, python_json_dumps, render, AudioClip, Content,
    GenerationMode, Message, Part, PromptPiece, RenderedPiece, Role, SEARCH_SUMMARY_INSTRUCTION,
};

/// The crate's audio front end on each regenerated clip: (clip key, chunk frames and patches).
fn clips() -> &'static HashMap<String, (u64, Vec<Mel>)> {
    static CLIPS: OnceLock<HashMap<String, (u64, Vec<Mel>)>> = OnceLock::new();
    CLIPS.get_or_init(|| {
        let mut out = HashMap::new();
        for (key, (name, clip)) in reference().clips.iter().enumerate() {
            let samples = protocol_support::clip_samples(clip.seed, clip.samples);
            let sum: i64 = samples.iter().map(|&s| i64::from(s)).sum();
            assert_eq!(sum, clip.sum, "clip {name}: regenerated samples differ from Python's");
            assert_eq!(&samples[..clip.head.len()], clip.head.as_slice(), "clip {name}");

            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 16_000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut wav = Cursor::new(Vec::new());
            let mut writer = hound::WavWriter::new(&mut wav, spec).unwrap();
            for &s in &samples {
                writer.write_sample(s).unwrap();
            }
            writer.finalize().unwrap();
            let input = AudioInput::Bytes { name: format!("{name}.wav"), data: wav.into_inner() };
            let chunks = prepare_audio(input, &AudioLimits::default()).unwrap();
            let mels =
                chunks.iter().map(|c| Mel { frames: c.frames(), patches: c.patches() }).collect();
            out.insert(name.clone(), (key as u64, mels));
        }
        out
    })
}

fn clip(name: &str) -> AudioClip {
    let (key, mels) = &clips()[name];
    AudioClip::new(*key, mels.iter().map(|m| m.patches).collect())
}

/// An upstream message dict as a `Message`, item by item.
fn convert(message: &Value) -> Message {
    let role = Role::from_name(message["role"].as_str().unwrap());
    let eot = message.get("eot").is_none_or(|v| v.as_bool().unwrap());
    let content = match &message["content"] {
        Value::Null => Content::Open,
        Value::String(text) => Content::Text(text.clone()),
        Value::Array(items) => Content::Parts(
            items
                .iter()
                .map(|item| match item["type"].as_str().unwrap() {
                    "text" => {
                        let text = item["text"].as_str().unwrap().to_owned();
                        if item.get("untrusted").and_then(Value::as_bool) == Some(true) {
                            Part::Untrusted(text)
                        } else {
                            Part::Text(text)
                        }
                    }
                    "audio" => Part::Audio(clip(item["audio"].as_str().unwrap())),
                    "token" => Part::Tokens(
                        item["token"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_i64().unwrap())
                            .collect(),
                    ),
                    other => panic!("unknown item type {other}"),
                })
                .collect(),
        ),
        other => panic!("unexpected content {other}"),
    };
    Message { role, content, eot }
}

fn generation_ids(name: &str) -> Vec<i64> {
    reference().generations.iter().find(|g| g.name == name).unwrap().ids.clone()
}

fn text_of(message: &Value) -> String {
    message["content"].as_str().unwrap().to_owned()
}

fn item_text(message: &Value, index: usize) -> String {
    message["content"][index]["text"].as_str().unwrap().to_owned()
}

/// The conversation built with the constructors the agent loop uses.
fn build(case: &Conversation) -> Vec<Message> {
    let m = &case.messages;
    let system = || Message::system(text_of(&m[0]));
    let human = |i: usize| Message::new(Role::Human, Content::Text(text_of(&m[i])));
    match case.builder.as_deref().unwrap() {
        "text_to_text" => {
            vec![system(), human(1), Message::generation_prompt(GenerationMode::Text)]
        }
        "text_to_speech" => {
            vec![system(), human(1), Message::generation_prompt(GenerationMode::Speech)]
        }
        "speech_to_text_short" => vec![
            system(),
            Message::human_audio(clip("short_1_3s")),
            Message::generation_prompt(GenerationMode::Text),
        ],
        "speech_to_speech_two_chunks" => vec![
            system(),
            Message::human_audio(clip("long_27s")),
            Message::generation_prompt(GenerationMode::Speech),
        ],
        "multi_turn_speech_replay" => vec![
            system(),
            Message::human_audio(clip("short_1_3s")),
            Message::assistant_speech_replay(generation_ids("speech_only")),
            human(3),
            Message::generation_prompt(GenerationMode::Text),
        ],
        "tool_call_search_round" => vec![
            system(),
            Message::tool_schemas(case.tools.as_ref().unwrap()),
            Message::human_audio(clip("short_1_3s")),
            Message::assistant_speech_replay(generation_ids("speech_then_tool_call")),
            Message::tool_result(item_text(&m[4], 0), Some(SEARCH_SUMMARY_INSTRUCTION)),
            Message::generation_prompt(GenerationMode::Speech),
        ],
        "timbre_switch_text_turns" => vec![
            system(),
            Message::tool_schemas(case.tools.as_ref().unwrap()),
            Message::human_text(item_text(&m[2], 0)),
            Message::assistant_text_replay(generation_ids("two_calls")),
            Message::tool_result(item_text(&m[4], 0), None),
            Message::generation_prompt(GenerationMode::Text),
        ],
        other => panic!("unknown builder {other}"),
    }
}

/// Asserts the pieces are upstream's segments, byte for byte, and returns how many are
/// untrusted.
fn assert_pieces_match(case: &Conversation, pieces: &[RenderedPiece], how: &str) -> usize {
    let ctx = format!("{} ({how}; mirrors {}; {})", case.name, case.mirrors, case.source);
    assert_eq!(pieces.len(), case.segments.len(), "{ctx}: piece count\n{pieces:#?}");
    let mut untrusted = 0;
    for (i, (piece, segment)) in pieces.iter().zip(&case.segments).enumerate() {
        match (piece, segment) {
            (RenderedPiece::Ids(ids), Segment::Tokens { tokens }) => {
                assert_eq!(ids, tokens, "{ctx}: piece {i}")
            }
            (piece, Segment::Text { text, .. }) => {
                assert_eq!(piece.text().as_deref(), Some(text.as_str()), "{ctx}: piece {i}");
                untrusted += usize::from(matches!(piece, RenderedPiece::Untrusted(_)));
            }
            (piece, segment) => panic!("{ctx}: piece {i} is {piece:?}, upstream has {segment:?}"),
        }
    }
    // The whole prompt text (id pieces aside) is upstream's too.
    let ours: String = pieces.iter().filter_map(RenderedPiece::text).collect();
    let theirs: String = case
        .segments
        .iter()
        .filter_map(|s| match s {
            Segment::Text { text, .. } => Some(text.as_str()),
            Segment::Tokens { .. } => None,
        })
        .collect();
    assert_eq!(ours, theirs, "{ctx}: concatenated text");
    untrusted
}

fn flagged_untrusted(case: &Conversation) -> usize {
    case.messages
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|item| item.get("untrusted").and_then(Value::as_bool) == Some(true))
        .count()
}

fn audio_chunks(pieces: &[RenderedPiece]) -> Vec<usize> {
    pieces
        .iter()
        .filter_map(|p| match p {
            RenderedPiece::Audio(a) => Some(a.patches),
            _ => None,
        })
        .collect()
}

#[test]
fn protocol_render_matches_upstream_apply_chat_template() {
    let reference = reference();
    assert!(reference.conversations.len() >= 12);
    for case in &reference.conversations {
        let messages: Vec<Message> = case.messages.iter().map(convert).collect();
        let pieces = render(&messages);
        let untrusted = assert_pieces_match(case, &pieces, "converted item by item");
        assert_eq!(untrusted, flagged_untrusted(case), "{}: untrusted pieces", case.name);

        // Chunk indices run over the whole conversation, like upstream's `mels` list.
        let indices: Vec<usize> = pieces
            .iter()
            .filter_map(|p| match p {
                RenderedPiece::Audio(a) => Some(a.chunk_index),
                _ => None,
            })
            .collect();
        assert_eq!(indices, (0..case.mels.len()).collect::<Vec<_>>(), "{}", case.name);
        let upstream: Vec<usize> = case.mels.iter().map(|m| m.patches).collect();
        assert_eq!(audio_chunks(&pieces), upstream, "{}: patch counts", case.name);
    }
}

#[test]
fn protocol_render_builders_match_upstream() {
    let reference = reference();
    let mut built = 0;
    for case in reference.conversations.iter().filter(|c| c.builder.is_some()) {
        let pieces = render(&build(case));
        assert_pieces_match(case, &pieces, "built with the Message constructors");
        built += 1;
    }
    assert_eq!(built, 7);
    assert_eq!(SEARCH_SUMMARY_INSTRUCTION, reference.summary_instruction);
}

#[test]
fn protocol_render_ids_match_upstream_tokenization() {
    let tok = tokenizer();
    for case in &reference().conversations {
        let messages: Vec<Message> = case.messages.iter().map(convert).collect();
        let pieces = render(&messages);
        let encoded = encode_pieces(&pieces, tok).unwrap();

        // Each audio marker follows the Tokens piece holding its placeholders.
        let mut token_pieces = Vec::new();
        for (i, piece) in encoded.iter().enumerate() {
            match piece {
                PromptPiece::Tokens(ids) => token_pieces.push(ids.clone()),
                PromptPiece::Audio(audio) => {
                    let PromptPiece::Tokens(before) = &encoded[i - 1] else {
                        panic!("{}: audio marker {i} not after tokens", case.name)
                    };
                    assert_eq!(before.len(), audio.patches + 2, "{}", case.name);
                }
            }
        }
        assert_eq!(token_pieces.len(), case.segments.len(), "{}", case.name);

        let mut expected_all = Vec::new();
        for (i, ((piece, ids), segment)) in
            pieces.iter().zip(&token_pieces).zip(&case.segments).enumerate()
        {
            let expected = match (piece, segment) {
                (
                    RenderedPiece::Untrusted(text),
                    Segment::Text { ids: upstream, untrusted_ids, .. },
                ) => {
                    // Upstream tokenizes this text with special tokens on; we must not.
                    if !text.contains('<') {
                        assert_eq!(untrusted_ids, upstream, "{}: piece {i}", case.name);
                    }
                    assert!(
                        ids.iter().all(|&id| !tok.is_added(id)),
                        "{}: untrusted piece {i} produced an added token",
                        case.name
                    );
                    untrusted_ids
                }
                (_, Segment::Text { ids, .. }) => ids,
                (_, Segment::Tokens { tokens }) => tokens,
            };
            assert_eq!(ids, expected, "{}: ids of piece {i} ({piece:?})", case.name);
            expected_all.extend_from_slice(expected);
        }
        assert_eq!(prompt_ids(&encoded), expected_all, "{}", case.name);
    }
}

#[test]
fn protocol_untrusted_special_strings_stay_text() {
    let tok = tokenizer();
    let case = reference().conversations.iter().find(|c| c.name == "untrusted_injection").unwrap();
    let pieces = render(&case.messages.iter().map(convert).collect::<Vec<_>>());
    let special = tok.special();
    let mut checked = 0;
    for (piece, segment) in pieces.iter().zip(&case.segments) {
        let (RenderedPiece::Untrusted(text), Segment::Text { ids: upstream, .. }) =
            (piece, segment)
        else {
            continue;
        };
        let ours = tok.encode_untrusted(text).unwrap();
        // Upstream turns the strings into real control tokens; the untrusted encoding does not,
        // and decodes back to the same text.
        assert!(upstream.iter().any(|&id| tok.is_added(id)), "{text:?}");
        assert_ne!(&ours, upstream);
        for id in [special.eot, special.bot, special.tool_call_start, special.audio_patch] {
            assert!(!ours.contains(&id), "{text:?} produced id {id}");
        }
        assert_eq!(tok.decode(&ours).unwrap(), *text);
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn protocol_audio_patch_counts_match_compute_token_num() {
    let reference = reference();
    for (frames, &expected) in reference.patch_counts.iter().enumerate() {
        assert_eq!(audio_patch_count(frames), expected, "compute_token_num({frames})");
    }
    // Frames and patches of every chunk of every clip, through the real front end.
    for case in &reference.conversations {
        let mut ours = Vec::new();
        for message in &case.messages {
            for item in message["content"].as_array().into_iter().flatten() {
                if item["type"] == "audio" {
                    ours.extend_from_slice(&clips()[item["audio"].as_str().unwrap()].1);
                }
            }
        }
        assert_eq!(ours, case.mels, "{}: mel frames / patches per chunk", case.name);
    }
}

#[test]
fn protocol_tool_schemas_json_matches_python_json_dumps() {
    let reference = reference();
    for case in &reference.json_cases {
        let value = match (&case.value, &case.text) {
            (Some(value), _) => value.clone(),
            (None, Some(text)) => serde_json::from_str(text).unwrap(),
            (None, None) => panic!("{}: no value", case.name),
        };
        assert_eq!(python_json_dumps(&value), case.expected, "json case {}", case.name);
    }
    // The declaration turn carries exactly that text.
    for case in reference.conversations.iter().filter(|c| c.tools.is_some()) {
        let message = Message::tool_schemas(case.tools.as_ref().unwrap());
        let upstream = case.messages.iter().find(|m| m["role"] == "tool_json_schemas").unwrap();
        assert_eq!(message.content, Content::Text(text_of(upstream)), "{}", case.name);
    }
}

#[test]
fn protocol_float_repr_matches_python() {
    let cases = &reference().float_cases;
    assert!(cases.len() > 500);
    for case in cases {
        let f = f64::from_bits(u64::from_str_radix(&case.bits, 16).unwrap());
        assert_eq!(python_float_repr(f), case.repr, "bits {} ({f:e})", case.bits);
    }
}
