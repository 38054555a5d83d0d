//! Editing a session's history from a front door (the realtime API's items): appending,
//! replacing, inserting and removing turns, and cutting a spoken answer to what was heard
//! (`AssistantTurn::truncated_to_codes`), on the committed fixture tokenizer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use voxloop_core::session::{AssistantTurn, HumanPart, Session, SessionSettings, Turn};
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::tool::ToolCall;

fn tokenizer() -> StepTokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    StepTokenizer::from_file(dir.join("tokenizer.json")).unwrap()
}

fn text(t: &str) -> Turn {
    Turn::Human { parts: vec![HumanPart::Text { text: t.into() }] }
}

/// A spoken answer as the model interleaves it: text, then codes, then text, then codes.
fn spoken(tok: &StepTokenizer) -> AssistantTurn {
    let s = tok.special();
    let mut ids = tok.encode_untrusted("Hello").unwrap();
    ids.extend((0..5).map(|c| s.audio_id(c).unwrap()));
    ids.extend(tok.encode_untrusted(" world").unwrap());
    ids.extend((5..10).map(|c| s.audio_id(c).unwrap()));
    AssistantTurn {
        speech: true,
        ids,
        text: "Hello world".into(),
        calls: Vec::new(),
        reply_id: None,
    }
}

#[test]
fn a_spoken_answer_is_cut_after_its_first_codes() {
    let tok = tokenizer();
    let turn = spoken(&tok);
    assert_eq!(turn.speech_codes(&tok), 10);

    let cut = turn.truncated_to_codes(&tok, 3);
    assert_eq!(cut.speech_codes(&tok), 3);
    assert_eq!(cut.text, "Hello", "the words after the cut were not heard");
    assert_eq!(&turn.ids[..cut.ids.len()], cut.ids.as_slice(), "a prefix of the ids");

    let at_word = turn.truncated_to_codes(&tok, 5);
    assert_eq!(at_word.speech_codes(&tok), 5);
    assert!(at_word.text.starts_with("Hello"), "{:?}", at_word.text);

    let none = turn.truncated_to_codes(&tok, 0);
    assert_eq!(none.speech_codes(&tok), 0);
    assert_eq!(none.text, "Hello", "the text before the first code stays");

    let all = turn.truncated_to_codes(&tok, 99);
    assert_eq!(all.ids, turn.ids);
}

#[test]
fn a_cut_keeps_the_tool_calls_whose_results_follow() {
    let tok = tokenizer();
    let s = tok.special();
    let mut turn = spoken(&tok);
    let call = ToolCall::new("get_date_time", serde_json::json!({}));
    let with_call = AssistantTurn::from_text(&tok, "", vec![call.clone()]).unwrap();
    turn.ids.extend_from_slice(&with_call.ids);
    turn.calls = vec![call];
    let cut = turn.truncated_to_codes(&tok, 2);
    assert_eq!(cut.speech_codes(&tok), 2);
    assert_eq!(cut.calls.len(), 1);
    let start = cut.ids.iter().position(|&id| id == s.tool_call_start).unwrap();
    assert_eq!(&cut.ids[start..], with_call.ids.as_slice(), "the call is kept whole");
}

#[test]
fn turns_are_replaced_inserted_and_removed_in_place() {
    let mut session = Session::new(SessionSettings::default());
    session.push_turn(Turn::System { text: "old".into() });
    session.push_turn(text("hi"));
    session.replace_turn(0, Turn::System { text: "new".into() }).unwrap();
    session.insert_turn(1, Turn::ToolSchemas { json: "[]".into() }).unwrap();
    assert!(matches!(&session.history()[0], Turn::System { text } if text == "new"));
    assert!(matches!(&session.history()[1], Turn::ToolSchemas { .. }));
    assert_eq!(session.history()[2], text("hi"));
    let removed = session.remove_turn(1).unwrap();
    assert!(matches!(removed, Turn::ToolSchemas { .. }));
    assert_eq!(session.history().len(), 2);

    let e = session.replace_turn(2, text("x")).unwrap_err().to_string();
    assert!(e.contains("no turn 2"), "{e}");
    assert!(session.insert_turn(3, text("x")).is_err());
    assert!(session.remove_turn(2).is_err());
    session.insert_turn(2, text("end")).unwrap();
    assert_eq!(session.history().len(), 3);
}
