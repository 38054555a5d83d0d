//! Property tests of the protocol module: arbitrary id streams through the demultiplexer and
//! arbitrary text through the tool-call parsers never panic and keep their invariants, and a
//! rendered call parses back to its name and arguments (as text and through token ids).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod protocol_support;

use proptest::prelude::*;
use protocol_support::tokenizer;
use serde_json::{Map, Number, Value};
use voxloop_core::protocol::{
    parse_tool_call, parse_turn_text, python_float_repr, python_json_dumps, render_tool_call,
    Demux, DemuxEvent, GenerationMode, ToolCallError,
};
use voxloop_core::tokenizer::TokenClass;

/// Ids biased towards the interesting ones: the special tokens, text, control and audio
/// ranges of the test tokenizer, and anything at all.
fn id_strategy() -> impl Strategy<Value = i64> {
    let s = *tokenizer().special();
    let specials = vec![
        s.bot,
        s.eot,
        s.endoftext,
        s.audio_start,
        s.audio_end,
        s.audio_patch,
        s.tts_start,
        s.tts_end,
        s.tts_pad,
        s.tool_call_start,
        s.tool_call_end,
        s.audio_first,
        s.audio_pad,
        s.audio_pad + 1,
    ];
    prop_oneof![
        4 => prop::sample::select(specials),
        6 => 0..s.audio_start,
        3 => s.audio_start..=s.audio_pad,
        1 => any::<i64>(),
    ]
}

fn mode_strategy() -> impl Strategy<Value = GenerationMode> {
    prop_oneof![Just(GenerationMode::Text), Just(GenerationMode::Speech)]
}

/// Text made of call syntax fragments and odd characters.
fn call_text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(function|\n|  |\r|<tool_call>|</tool_call>|\\{|\\}|\\[|\\]|\"|:|, |[a-z_]{1,6}|[0-9.e+-]{1,4}|null|true|海绵|\u{0}|\\\\|😀)*",
    ]
}

fn json_leaf(strings: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        any::<u64>().prop_map(|u| Value::Number(u.into())),
        // Dyadic floats: exact in decimal, so any JSON parser reads them back exactly.
        any::<i32>().prop_map(|i| Value::Number(Number::from_f64(f64::from(i) / 1024.0).unwrap())),
        strings.prop_map(Value::String),
    ]
}

fn json_value(strings: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    json_leaf(strings.clone()).prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((strings.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn json_object(strings: BoxedStrategy<String>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((strings.clone(), json_value(strings)), 0..6)
        .prop_map(|pairs| pairs.into_iter().collect())
}

/// Any string that does not contain a literal tag (which no format could carry).
fn any_tagless_string() -> BoxedStrategy<String> {
    any::<String>().prop_filter("contains a tag", |s| !s.contains("tool_call>")).boxed()
}

/// Strings the test tokenizer round-trips as plain text: no `<` (no added-token string can
/// form) and NFC-stable characters (its normalizer is NFC).
fn tokenizable_string() -> BoxedStrategy<String> {
    "[ -;=-~\n\t\u{1}\u{7f}\u{4e00}-\u{4e20}😀]{0,16}".boxed()
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.-]{0,24}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn protocol_fuzz_demux_never_panics(ids in prop::collection::vec(id_strategy(), 0..200), mode in mode_strategy()) {
        let tok = tokenizer();
        let s = *tok.special();
        let mut demux = Demux::new(s, tok, mode);
        let mut batch = demux.push_all(&ids);
        batch.extend(demux.finish());

        let mut streaming = Demux::new(s, tok, mode);
        let mut streamed = Vec::new();
        for &id in &ids {
            streamed.extend(streaming.push(id));
        }
        streamed.extend(streaming.finish());

        // Exactly one End, last.
        prop_assert_eq!(batch.iter().filter(|e| **e == DemuxEvent::End).count(), 1);
        prop_assert_eq!(batch.last(), Some(&DemuxEvent::End));
        // Every <tool_call> gets exactly one result; the other results are stray closes.
        let starts = batch.iter().filter(|e| **e == DemuxEvent::ToolCallStart).count();
        let results = batch.iter().filter(|e| matches!(e, DemuxEvent::ToolCall(_))).count();
        let stray = batch
            .iter()
            .filter(|e| matches!(e, DemuxEvent::ToolCall(Err(ToolCallError::UnmatchedClose))))
            .count();
        prop_assert_eq!(starts + stray, results);

        // Only the ids before the end count; each lands in the right event.
        let end = ids.iter().position(|&id| id == s.eot || id == s.endoftext).unwrap_or(ids.len());
        let live = &ids[..end];
        let audio: Vec<u16> = batch
            .iter()
            .filter_map(|e| match e { DemuxEvent::AudioTokens(c) => Some(c.clone()), _ => None })
            .flatten()
            .collect();
        let expected_audio: Vec<u16> = live.iter().filter_map(|&id| s.audio_code(id)).collect();
        prop_assert_eq!(audio, expected_audio);
        for event in &batch {
            if let DemuxEvent::TextDelta { ids, .. } = event {
                prop_assert!(!ids.is_empty());
                for &id in ids {
                    prop_assert_eq!(s.classify(id), TokenClass::Text);
                    prop_assert!(id != s.tool_call_start && id != s.tool_call_end && id != s.eot);
                }
            }
            if let DemuxEvent::ToolCall(Err(e)) = event {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        // Merging events changes nothing but the grouping.
        let flatten = |events: &[DemuxEvent]| -> (Vec<(i64, bool)>, Vec<String>) {
            let mut text = Vec::new();
            let mut other = Vec::new();
            for e in events {
                match e {
                    DemuxEvent::TextDelta { ids, in_speech } => text.extend(ids.iter().map(|&i| (i, *in_speech))),
                    DemuxEvent::AudioTokens(codes) => other.extend(codes.iter().map(|c| format!("a{c}"))),
                    e => other.push(format!("{e:?}")),
                }
            }
            (text, other)
        };
        prop_assert_eq!(flatten(&batch), flatten(&streamed));
    }

    #[test]
    fn protocol_fuzz_parser_never_panics(text in call_text_strategy()) {
        match parse_tool_call(&text) {
            Ok(call) => prop_assert!(!call.name.is_empty()),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("invalid tool call") && !message.contains('\n'));
            }
        }
        let turn = parse_turn_text(&text);
        prop_assert!(turn.content.len() <= text.len());
        let tags = text.matches("<tool_call>").count() + text.matches("</tool_call>").count();
        prop_assert!(turn.calls.len() <= tags);
        if tags == 0 {
            prop_assert_eq!(turn.content, text);
        }
    }

    #[test]
    fn protocol_fuzz_tool_call_round_trip(
        name in name_strategy(),
        arguments in json_object(any_tagless_string()),
        preamble in any_tagless_string(),
    ) {
        let text = format!("{preamble}{}", render_tool_call(&name, &arguments));
        let turn = parse_turn_text(&text);
        prop_assert_eq!(turn.content, preamble);
        prop_assert_eq!(turn.calls.len(), 1);
        let call = turn.calls[0].as_ref().unwrap();
        prop_assert_eq!(&call.name, &name);
        prop_assert_eq!(&call.arguments, &arguments);
    }

    #[test]
    fn protocol_fuzz_tool_call_round_trip_through_ids(
        name in name_strategy(),
        arguments in json_object(tokenizable_string()),
        spoken in tokenizable_string(),
        mode in mode_strategy(),
    ) {
        let tok = tokenizer();
        let s = *tok.special();
        // Spoken text, <tts_end>, then the call, as a speech answer would have it.
        let mut ids = tok.encode_trusted(&spoken).unwrap();
        if mode == GenerationMode::Speech {
            ids.push(s.tts_end);
        }
        ids.extend(tok.encode_trusted(&render_tool_call(&name, &arguments)).unwrap());
        ids.push(s.eot);
        let mut demux = Demux::new(s, tok, mode);
        let events = demux.push_all(&ids);
        let calls: Vec<_> = events
            .iter()
            .filter_map(|e| match e { DemuxEvent::ToolCall(r) => Some(r.clone()), _ => None })
            .collect();
        prop_assert_eq!(calls.len(), 1);
        let call = calls[0].as_ref().unwrap();
        prop_assert_eq!(&call.name, &name);
        prop_assert_eq!(&call.arguments, &arguments);
        let text_ids: Vec<i64> = events
            .iter()
            .filter_map(|e| match e { DemuxEvent::TextDelta { ids, .. } => Some(ids.clone()), _ => None })
            .flatten()
            .collect();
        prop_assert_eq!(tok.decode(&text_ids).unwrap(), spoken);
    }

    #[test]
    fn protocol_fuzz_json_dumps_round_trips(value in json_value(any::<String>().boxed())) {
        let text = python_json_dumps(&value);
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, value);
    }

    #[test]
    fn protocol_fuzz_float_repr_round_trips(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let repr = python_float_repr(f);
        let back: f64 = repr.parse().unwrap();
        prop_assert_eq!(back.to_bits(), f.to_bits(), "{}", repr);
        // Python always shows a fraction or an exponent.
        prop_assert!(repr.contains('.') || repr.contains('e'), "{}", repr);
    }
}
