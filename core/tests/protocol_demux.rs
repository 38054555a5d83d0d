//! The generated-id demultiplexer against the id sequences of
//! scripts/fixtures/protocol.py: interleaved ta4 speech, calls after and inside the speech
//! section, several calls, an unclosed and a nested call. Each case is checked against the
//! split StepFun's HF wrapper makes (`StepAudio2Base.__call__`: text = ids below
//! `<audio_start>`, audio = ids above `<tts_pad>`, padding filtered), against the whole-turn
//! text parser on that text, and against what the sequence was built to contain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod protocol_support;

use protocol_support::{reference, tokenizer, ExpectedCall, Generation};
use voxloop_core::protocol::{
    parse_turn_text, DecodeFn, Demux, DemuxEvent, GenerationMode, ToolCallError,
};
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::Error;

fn mode(g: &Generation) -> GenerationMode {
    match g.mode.as_str() {
        "speech" => GenerationMode::Speech,
        "text" => GenerationMode::Text,
        other => panic!("mode {other}"),
    }
}

/// Everything a run of the demux produced, gathered.
#[derive(Default, Debug)]
struct Collected {
    spoken_ids: Vec<i64>,
    content_ids: Vec<i64>,
    /// All text ids outside calls, in order.
    text_ids: Vec<i64>,
    audio: Vec<u16>,
    controls: Vec<i64>,
    starts: usize,
    calls: Vec<Result<voxloop_core::protocol::ParsedToolCall, ToolCallError>>,
    ends: usize,
}

fn collect(events: &[DemuxEvent]) -> Collected {
    let mut c = Collected::default();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(c.ends, 0, "event {i} after End: {event:?}");
        match event {
            DemuxEvent::TextDelta { ids, in_speech } => {
                assert!(!ids.is_empty());
                if *in_speech {
                    c.spoken_ids.extend(ids);
                } else {
                    c.content_ids.extend(ids);
                }
                c.text_ids.extend(ids);
            }
            DemuxEvent::AudioTokens(codes) => {
                assert!(!codes.is_empty());
                c.audio.extend(codes);
            }
            DemuxEvent::Control(id) => c.controls.push(*id),
            DemuxEvent::ToolCallStart => c.starts += 1,
            DemuxEvent::ToolCall(result) => c.calls.push(result.clone()),
            DemuxEvent::End => c.ends += 1,
        }
    }
    c
}

fn run(g: &Generation, tok: &StepTokenizer) -> (Vec<DemuxEvent>, Vec<DemuxEvent>) {
    let eot = tok.special().eot;
    // Batch: all ids at once (events merged), then <|EOT|>.
    let mut demux = Demux::new(*tok.special(), tok, mode(g));
    let mut batch = demux.push_all(&g.ids);
    batch.extend(demux.push(eot));
    assert!(demux.is_finished());
    // Streaming: one id at a time.
    let mut demux = Demux::new(*tok.special(), tok, mode(g));
    let mut streamed = Vec::new();
    for &id in g.ids.iter().chain([eot].iter()) {
        streamed.extend(demux.push(id));
    }
    (batch, streamed)
}

fn assert_calls(
    g: &Generation,
    calls: &[Result<voxloop_core::protocol::ParsedToolCall, ToolCallError>],
) {
    assert_eq!(calls.len(), g.calls.len(), "{}: calls {calls:?}", g.name);
    for (call, expected) in calls.iter().zip(&g.calls) {
        match (call, expected) {
            (Ok(call), ExpectedCall::Ok { name, arguments }) => {
                assert_eq!(&call.name, name, "{}", g.name);
                assert_eq!(&call.arguments, arguments, "{}", g.name);
            }
            (Err(ToolCallError::Unclosed { .. }), ExpectedCall::Error(kind))
                if kind == "unclosed" => {}
            (Err(ToolCallError::Nested { .. }), ExpectedCall::Error(kind)) if kind == "nested" => {}
            (call, expected) => panic!("{}: got {call:?}, expected {expected:?}", g.name),
        }
    }
}

#[test]
fn protocol_demux_generations_match_upstream_split() {
    let tok = tokenizer();
    let generations = &reference().generations;
    assert!(generations.len() >= 8);
    for g in generations {
        let (batch, streamed) = run(g, tok);
        let c = collect(&batch);
        let s = collect(&streamed);
        // Merging only groups events: the same ids come out either way.
        assert_eq!(c.text_ids, s.text_ids, "{}", g.name);
        assert_eq!(c.audio, s.audio, "{}", g.name);
        assert_eq!(c.calls, s.calls, "{}", g.name);
        assert_eq!(c.controls, s.controls, "{}", g.name);
        assert!(batch.len() <= streamed.len());

        assert_eq!(c.ends, 1, "{}", g.name);
        assert!(matches!(batch.last(), Some(DemuxEvent::End)), "{}", g.name);
        // Speech codes: exactly the HF wrapper's list with the padding removed.
        assert_eq!(c.audio, g.hf_audio, "{}: audio codes", g.name);
        // Text: the wrapper's text, split into prose and calls by the text-level parser.
        let turn = parse_turn_text(&g.hf_text);
        assert_eq!(
            tok.decode(&c.text_ids).unwrap(),
            turn.content,
            "{}: text outside calls",
            g.name
        );
        assert_eq!(c.calls, turn.calls, "{}: calls vs the text-level parser", g.name);
        // What the sequence was built to carry.
        assert_eq!(tok.decode(&c.spoken_ids).unwrap(), g.spoken, "{}: spoken text", g.name);
        assert_eq!(tok.decode(&c.content_ids).unwrap(), g.content, "{}: content", g.name);
        assert_calls(g, &c.calls);
        let nested =
            c.calls.iter().filter(|r| matches!(r, Err(ToolCallError::Nested { .. }))).count();
        assert_eq!(c.starts, c.calls.len(), "{}: one result per <tool_call>", g.name);
        assert!(nested <= c.starts);
        // <tts_start>/<tts_end>/<tts_pad> come out as control events.
        let special = tok.special();
        let expected_controls: Vec<i64> =
            g.ids.iter().copied().filter(|&id| special.is_control(id)).collect();
        assert_eq!(c.controls, expected_controls, "{}", g.name);
    }
}

#[test]
fn protocol_demux_speech_section_flag_follows_tts_markers() {
    let tok = tokenizer();
    let s = *tok.special();
    let hello = tok.encode_trusted("你好").unwrap();
    let after = tok.encode_trusted("ok").unwrap();
    let mut demux = Demux::new(s, tok, GenerationMode::Text);
    assert!(!demux.in_speech());
    let mut ids = vec![s.tts_start];
    ids.extend(&hello);
    ids.extend([s.audio_first + 7, s.audio_pad, s.tts_pad, s.audio_first + 6560, s.tts_end]);
    ids.extend(&after);
    let events = demux.push_all(&ids);
    let c = collect(&events);
    assert_eq!(c.spoken_ids, hello);
    assert_eq!(c.content_ids, after);
    assert_eq!(c.audio, vec![7, 6560]);
    assert_eq!(c.controls, vec![s.tts_start, s.tts_pad, s.tts_end]);
    assert!(!demux.in_speech());
    assert_eq!(c.ends, 0);
}

#[test]
fn protocol_demux_odd_ids_and_end_handling() {
    let tok = tokenizer();
    let s = *tok.special();
    let mut demux = Demux::new(s, tok, GenerationMode::Speech);
    assert!(demux.in_speech());
    // A stray close, an id past the audio range, then <|endoftext|> ends the turn.
    let unused = s.audio_pad + 3;
    let events = demux.push_all(&[s.tool_call_end, unused, s.endoftext]);
    assert_eq!(
        events,
        vec![
            DemuxEvent::ToolCall(Err(ToolCallError::UnmatchedClose)),
            DemuxEvent::Control(unused),
            DemuxEvent::End,
        ]
    );
    // Ids after the end are ignored, and finishing again adds nothing.
    assert!(demux.push(s.tool_call_start).is_empty());
    assert!(demux.finish().is_empty());
}

#[test]
fn protocol_demux_finish_reports_an_open_call() {
    let tok = tokenizer();
    let s = *tok.special();
    let mut demux = Demux::new(s, tok, GenerationMode::Text);
    let mut ids = vec![s.tool_call_start];
    ids.extend(tok.encode_trusted("function\nweb_search\n{\"query\": ").unwrap());
    let events = demux.push_all(&ids);
    assert_eq!(events, vec![DemuxEvent::ToolCallStart]);
    assert!(demux.in_tool_call());
    let end = demux.finish();
    assert_eq!(end.len(), 2);
    let DemuxEvent::ToolCall(Err(ToolCallError::Unclosed { text })) = &end[0] else {
        panic!("{end:?}")
    };
    assert!(text.starts_with("function\nweb_search"), "{text:?}");
    assert_eq!(end[1], DemuxEvent::End);
    assert!(demux.is_finished() && !demux.in_tool_call());
}

#[test]
fn protocol_demux_undecodable_call_is_an_error_event() {
    let tok = tokenizer();
    let s = *tok.special();
    let failing = DecodeFn(|ids: &[i64]| -> voxloop_core::Result<String> {
        Err(Error::UnknownTokenId { id: ids.first().copied().unwrap_or(-1), vocab_size: 0 })
    });
    let mut demux = Demux::new(s, failing, GenerationMode::Text);
    let events = demux.push_all(&[s.tool_call_start, 5, 6, s.tool_call_end]);
    let DemuxEvent::ToolCall(Err(ToolCallError::Undecodable { message })) = &events[1] else {
        panic!("{events:?}")
    };
    assert!(message.contains('5'), "{message}");
    // An unknown id through the real tokenizer is also just an error event.
    let mut demux = Demux::new(s, tok, GenerationMode::Text);
    let events = demux.push_all(&[s.tool_call_start, -4, s.tool_call_end]);
    assert!(matches!(events[1], DemuxEvent::ToolCall(Err(ToolCallError::Undecodable { .. }))));
}
