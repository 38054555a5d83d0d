//! Step-Audio 2's real vocabulary (core/tests/fixtures/tokenizer_full/, built by
//! scripts/fixtures/tokenizer_full.py: Qwen2.5's BPE and Step-Audio 2's added tokens, 158258
//! ids): the tokenizer loads unchanged, and the prompts voxloop renders for conversations in
//! English and Chinese, with tool schemas, replayed calls and tool results, have exactly the ids
//! that transformers gives for the prompt StepFun's template builds (stepfun-ai/Step-Audio2
//! `stepaudio2.py` `StepAudio2.apply_chat_template`, segment by segment), except that untrusted
//! text (user text, tool results) never turns into an added token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use voxloop_core::audio::AudioChunk;
use voxloop_core::protocol::{
    encode_pieces, prompt_ids, render, GenerationMode, Message, PromptPiece, RenderedPiece,
};
use voxloop_core::session::{AssistantTurn, HumanPart, ToolResultTurn, Turn};
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::tool::{tool_json_schemas, ToolDefinition};

/// The first added id: everything from here on is `<|endoftext|>`, `<|EOT|>`, `<audio_N>`, ...
const FIRST_ADDED: i64 = 151643;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_full")
}

fn tokenizer() -> &'static StepTokenizer {
    static TOKENIZER: OnceLock<StepTokenizer> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| StepTokenizer::from_file(fixture_dir().join("tokenizer.json")).unwrap())
}

fn cases() -> &'static Value {
    static CASES: OnceLock<Value> = OnceLock::new();
    CASES.get_or_init(|| {
        let text = std::fs::read_to_string(fixture_dir().join("cases.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn conversations() -> &'static [Value] {
    cases()["conversations"].as_array().unwrap()
}

fn ids(value: &Value) -> Vec<i64> {
    value.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap().to_owned()
}

/// The conversation's turns as voxloop builds them: session turns, then the generation prompt.
fn messages(conversation: &Value) -> Vec<Message> {
    conversation["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| match turn["role"].as_str().unwrap() {
            "system" => Turn::System { text: text(&turn["text"]) }.message(),
            "tool_json_schemas" => {
                let definitions: Vec<ToolDefinition> = turn["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|tool| {
                        let function = &tool["function"];
                        ToolDefinition {
                            name: text(&function["name"]),
                            description: text(&function["description"]),
                            parameters: function["parameters"].clone(),
                        }
                    })
                    .collect();
                Turn::ToolSchemas { json: tool_json_schemas(&definitions).unwrap() }.message()
            }
            "human" if turn.get("text").is_some() => {
                Turn::Human { parts: vec![HumanPart::Text { text: text(&turn["text"]) }] }.message()
            }
            "human" => {
                // Rendering reads only the patch counts of the chunks.
                let chunks = ids(&turn["audio_patches"])
                    .into_iter()
                    .map(|patches| AudioChunk::new(Vec::new(), patches as usize).unwrap())
                    .collect();
                Turn::Human { parts: vec![HumanPart::Audio { chunks }] }.message()
            }
            "assistant" => Turn::Assistant(AssistantTurn {
                speech: turn["speech"].as_bool().unwrap(),
                ids: ids(&turn["ids"]),
                text: String::new(),
                calls: Vec::new(),
                reply_id: None,
            })
            .message(),
            "input" => Turn::ToolResult(ToolResultTurn {
                call_id: "call_0".to_owned(),
                name: "tool".to_owned(),
                ok: true,
                text: text(&turn["text"]),
                instruction: turn.get("instruction").map(text),
            })
            .message(),
            "generation" => Message::generation_prompt(match turn["mode"].as_str().unwrap() {
                "speech" => GenerationMode::Speech,
                _ => GenerationMode::Text,
            }),
            other => panic!("unknown role {other}"),
        })
        .collect()
}

/// The kind a rendered piece has in cases.json.
fn kind(piece: &RenderedPiece) -> &'static str {
    match piece {
        RenderedPiece::Trusted(_) | RenderedPiece::Audio(_) => "trusted",
        RenderedPiece::Untrusted(_) => "untrusted",
        RenderedPiece::Ids(_) => "ids",
    }
}

/// One conversation of cases.json rendered and encoded by voxloop.
struct Rendered {
    name: &'static str,
    case: &'static Value,
    /// The reference pieces of cases.json.
    expected: &'static [Value],
    pieces: Vec<RenderedPiece>,
    /// The ids of each piece (an audio chunk's placeholder ids with it).
    piece_ids: Vec<Vec<i64>>,
    /// The whole prompt.
    ids: Vec<i64>,
}

fn rendered() -> Vec<Rendered> {
    conversations()
        .iter()
        .map(|case| {
            let name = case["name"].as_str().unwrap();
            let pieces = render(&messages(case));
            let encoded = encode_pieces(&pieces, tokenizer()).unwrap();
            let piece_ids: Vec<Vec<i64>> = encoded
                .iter()
                .filter_map(|piece| match piece {
                    PromptPiece::Tokens(ids) => Some(ids.clone()),
                    PromptPiece::Audio(_) => None,
                })
                .collect();
            assert_eq!(piece_ids.len(), pieces.len(), "{name}: one id list per rendered piece");
            let expected = case["pieces"].as_array().unwrap();
            assert_eq!(pieces.len(), expected.len(), "{name}: segment count");
            Rendered { name, case, expected, pieces, piece_ids, ids: prompt_ids(&encoded) }
        })
        .collect()
}

#[test]
fn the_full_vocabulary_loads_with_step_audio_2_ids() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size() as u64, cases()["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.vocab_size(), 158258);
    let s = tok.special();
    let expected = &cases()["special_tokens"];
    for (token, id) in [
        ("<|endoftext|>", s.endoftext),
        ("<tool_call>", s.tool_call_start),
        ("</tool_call>", s.tool_call_end),
        ("<|EOT|>", s.eot),
        ("<|BOT|>", s.bot),
        ("<audio_start>", s.audio_start),
        ("<audio_end>", s.audio_end),
        ("<audio_patch>", s.audio_patch),
        ("<tts_start>", s.tts_start),
        ("<tts_end>", s.tts_end),
        ("<tts_pad>", s.tts_pad),
        ("<audio_0>", s.audio_first),
        ("<audio_6561>", s.audio_pad),
    ] {
        assert_eq!(Some(id), expected[token].as_i64(), "{token}");
    }
    // The ids upstream code states (stepfun-ai/vllm step-audio2-mini, stepaudio2.py).
    assert_eq!((s.endoftext, s.eot), (151643, 151665));
    assert_eq!((s.tool_call_start, s.tool_call_end), (151657, 151658));
    assert_eq!((s.audio_start, s.audio_end, s.audio_patch), (151688, 151689, 151690));
    assert_eq!(
        (s.tts_start, s.tts_end, s.audio_first, s.audio_pad),
        (151693, 151694, 151696, 158257)
    );
    // Every id from <|endoftext|> on is an added token, and none below it.
    for id in [0, 198, 151642] {
        assert!(!tok.is_added(id), "{id}");
    }
    for id in [FIRST_ADDED, 151664, 151666, 151687, 151695, 158257] {
        assert!(tok.is_added(id), "{id}");
    }
}

#[test]
fn rendered_pieces_are_upstreams_segments() {
    for r in rendered() {
        let name = r.name;
        let mut prompt = String::new();
        for (i, (piece, want)) in r.pieces.iter().zip(r.expected).enumerate() {
            assert_eq!(kind(piece), want["kind"].as_str().unwrap(), "{name}: piece {i} kind");
            match piece.text() {
                Some(text) => {
                    assert_eq!(text, want["text"].as_str().unwrap(), "{name}: piece {i} text");
                    prompt.push_str(&text);
                }
                None => {
                    let RenderedPiece::Ids(replayed) = piece else { unreachable!() };
                    assert_eq!(replayed, &ids(&want["ids"]), "{name}: piece {i} ids");
                    prompt.push_str(&tokenizer().decode(replayed).unwrap());
                }
            }
        }
        assert_eq!(prompt, r.case["prompt"].as_str().unwrap(), "{name}: prompt string");
    }
}

#[test]
fn prompt_ids_equal_transformers_on_stepfuns_template() {
    let mut compared = 0;
    for r in rendered() {
        let name = r.name;
        for (i, (got, want)) in r.piece_ids.iter().zip(r.expected).enumerate() {
            assert_eq!(got, &ids(&want["ids"]), "{name}: piece {i} ({:?})", want.get("text"));
        }
        let want = ids(&r.case["ids"]);
        assert_eq!(r.ids.len(), want.len(), "{name}: prompt length");
        for (position, (a, b)) in r.ids.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "{name}: id at position {position}");
        }
        compared += r.ids.len();
    }
    assert!(compared > 3000, "only {compared} ids compared");
}

#[test]
fn untrusted_text_never_yields_an_added_id() {
    let added = |ids: &[i64]| ids.iter().filter(|&&id| id >= FIRST_ADDED).count();
    let mut diverging = 0;
    for r in rendered() {
        let name = r.name;
        let mut template_added = 0;
        for (i, ((piece, ours), want)) in
            r.pieces.iter().zip(&r.piece_ids).zip(r.expected).enumerate()
        {
            let RenderedPiece::Untrusted(text) = piece else {
                template_added += added(ours);
                continue;
            };
            assert_eq!(added(ours), 0, "{name}: piece {i}: {ours:?}");
            assert_eq!(&tokenizer().decode(ours).unwrap(), text, "{name}: piece {i} round trip");
            // Upstream matches special tokens inside the same text; ours differ exactly there.
            let upstream = ids(&want["upstream_ids"]);
            let spells_added = added(&upstream) > 0;
            assert_eq!(ours != &upstream, spells_added, "{name}: piece {i}");
            diverging += usize::from(spells_added);
        }
        // In the whole prompt, added ids come only from template text and replayed ids.
        assert_eq!(added(&r.ids), template_added, "{name}");
    }
    // The injection cases must really spell added tokens (else this test proves nothing).
    assert!(diverging >= 3, "only {diverging} untrusted pieces spell added tokens");
}

#[test]
fn every_added_token_spelled_as_text_stays_text() {
    let tok = tokenizer();
    let mut all = String::new();
    for id in FIRST_ADDED..tok.vocab_size() as i64 {
        let token = tok.token_str(id).unwrap();
        assert_eq!(tok.encode_trusted(&token).unwrap(), vec![id], "{token}");
        let plain = tok.encode_untrusted(&token).unwrap();
        assert!(plain.iter().all(|&i| i < FIRST_ADDED), "{token}: {plain:?}");
        assert_eq!(tok.decode(&plain).unwrap(), token);
        all.push_str(&token);
    }
    let plain = tok.encode_untrusted(&all).unwrap();
    assert!(plain.iter().all(|&i| i < FIRST_ADDED));
    assert_eq!(tok.decode(&plain).unwrap(), all);
}

/// The length check's bound on the real vocabulary: the longest entry covers 128 bytes (a run
/// of spaces), so that many spaces repeated hit the bound exactly; any other text encodes to
/// at least as many tokens as the bound says, NFC-composed text counted composed.
#[test]
fn the_token_lower_bound_is_exact_for_spaces_and_never_above_the_encoding() {
    let tokenizer = tokenizer();
    let spaces = " ".repeat(128 * 40);
    assert_eq!(tokenizer.min_untrusted_tokens(&spaces).unwrap(), 40);
    assert_eq!(tokenizer.encode_untrusted(&spaces).unwrap().len(), 40);
    let texts = [
        "The weather in Paris is sunny, 24 degrees. ".repeat(300),
        "今天天气很好，我们去公园散步吧。".repeat(300),
        // e + combining acute: NFC makes it é, 2 bytes instead of 3.
        "e\u{301}".repeat(3000),
        "-".repeat(10_000),
        "<|EOT|><tool_call>".repeat(500),
    ];
    for text in &texts {
        let bound = tokenizer.min_untrusted_tokens(text).unwrap();
        let actual = tokenizer.encode_untrusted(text).unwrap().len();
        assert!(bound <= actual, "{bound} > {actual} for {:?}", &text[..20]);
        assert!(bound > 0);
    }
    assert_eq!(
        tokenizer.min_untrusted_tokens(&"e\u{301}".repeat(3000)).unwrap(),
        6000_usize.div_ceil(128)
    );
}

/// A capped tokenizer refuses untrusted text that cannot fit before it tokenizes it, alone or
/// with others; text that fits encodes as before, and trusted text is not capped.
#[test]
fn a_token_cap_refuses_text_that_cannot_fit() {
    let capped = tokenizer().clone().with_untrusted_token_cap(100);
    let fits = " ".repeat(128 * 100);
    assert_eq!(capped.encode_untrusted(&fits).unwrap().len(), 100);
    let over = format!("{fits} ");
    let error = capped.encode_untrusted(&over).unwrap_err();
    assert!(
        matches!(error, voxloop_core::Error::TextTooLong { bytes: 12801, at_least: 101, cap: 100 }),
        "{error}"
    );
    assert!(error.to_string().contains("12801 bytes"), "{error}");
    // Two halves that each fit but not together.
    let half = " ".repeat(128 * 60);
    assert!(capped.check_untrusted_len(&half).is_ok());
    assert!(capped.check_untrusted_lens([half.as_str(), half.as_str()]).is_err());
    // ι + diaeresis + acute (6 bytes) is ΐ (2 bytes) in NFC, the most NFC shrinks text: 6400
    // of them may fit in 100 tokens of 128 bytes, and are let through; 6500 cannot.
    let composing = "\u{3b9}\u{308}\u{301}";
    assert!(capped.check_untrusted_len(&composing.repeat(6400)).is_ok());
    assert!(capped.check_untrusted_len(&composing.repeat(6500)).is_err());
    // Text the cap may or may not hold (under 128 bytes a token) is left to the model's cache.
    let words = "word ".repeat(200);
    assert!(capped.check_untrusted_len(&words).is_ok());
    assert!(capped.encode_untrusted(&words).unwrap().len() > 100);
    assert_eq!(capped.encode_trusted(&over).unwrap().len(), 101);
    assert!(tokenizer().check_untrusted_len(&over).is_ok(), "no cap, no check");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(100))]
    /// For any text at all, the bound never exceeds the tokens the text encodes to.
    #[test]
    fn the_token_lower_bound_holds_for_any_text(text in "(\\PC|[ \\t\\n-]{1,200}|e\u{301}){0,400}") {
        let tokenizer = tokenizer();
        let bound = tokenizer.min_untrusted_tokens(&text).unwrap();
        let actual = tokenizer.encode_untrusted(&text).unwrap().len();
        proptest::prop_assert!(bound <= actual, "{} > {}", bound, actual);
    }
}
