//! What each fuzz target checks, shared by the libFuzzer targets (`fuzz/fuzz_targets/`,
//! nightly, `make fuzz-smoke`) and the stable regression test that replays every committed
//! corpus input (`core/tests/fuzz_corpora.rs`, part of `make test`). Each check takes any
//! bytes: it must return (an error is fine) and never panic, and it asserts what must hold of
//! whatever the code under test accepts.

use std::path::Path;

use voxloop_core::audio::{decode_audio, AudioInput, AudioLimits};
use voxloop_core::protocol::{
    parse_tool_call, parse_turn_text, render_tool_call, Demux, DemuxEvent, GenerationMode,
};
use voxloop_core::session::Session;
use voxloop_core::tokenizer::StepTokenizer;

/// Step-Audio 2's real vocabulary (core's `tokenizer_full` fixture), loaded once; `repo` is
/// the repository's root.
pub fn tokenizer(repo: &Path) -> &'static StepTokenizer {
    static TOKENIZER: std::sync::OnceLock<StepTokenizer> = std::sync::OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = repo.join("core/tests/fixtures/tokenizer_full/tokenizer.json");
        // The cap the agent sets for Step-Audio-2-mini's context.
        StepTokenizer::from_file(&path)
            .expect("the tokenizer fixture loads")
            .with_untrusted_token_cap(16384)
    })
}

/// The fuzz targets, by name: the directories under `fuzz/corpus/`.
pub const TARGETS: [&str; 5] = ["tool_call", "demux", "untrusted_text", "audio", "session_file"];

/// Runs the check of `target` on `data`.
pub fn check(target: &str, data: &[u8], tokenizer: &StepTokenizer) {
    match target {
        "tool_call" => tool_call(data),
        "demux" => demux(data, tokenizer),
        "untrusted_text" => untrusted_text(data, tokenizer),
        "audio" => audio(data),
        "session_file" => session_file(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// Model output text through the tool-call parsers: a call that parses has a trimmed,
/// one-line name and parses back to itself once rendered as the model writes calls; the turn
/// parser returns.
pub fn tool_call(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(call) = parse_tool_call(text) {
        assert!(!call.name.is_empty() && !call.name.contains('\n'), "{:?}", call.name);
        assert_eq!(call.name.trim(), call.name);
        let rendered = render_tool_call(&call.name, &call.arguments);
        let body = rendered
            .strip_prefix("<tool_call>")
            .and_then(|r| r.strip_suffix("</tool_call>"))
            .expect("a rendered call has its tags");
        let again = parse_tool_call(body).expect("a rendered call parses");
        assert_eq!(again.name, call.name);
        assert_eq!(again.arguments, call.arguments, "the arguments changed on a round trip");
    }
    let _ = parse_turn_text(text);
}

/// Runs of consecutive events of one kind merged (a batch merges what a stream emits id by
/// id).
fn merged(events: Vec<DemuxEvent>) -> Vec<DemuxEvent> {
    let mut out: Vec<DemuxEvent> = Vec::with_capacity(events.len());
    for event in events {
        match (out.last_mut(), event) {
            (
                Some(DemuxEvent::TextDelta { ids, in_speech }),
                DemuxEvent::TextDelta { ids: more, in_speech: same },
            ) if *in_speech == same => ids.extend(more),
            (Some(DemuxEvent::AudioTokens(codes)), DemuxEvent::AudioTokens(more)) => {
                codes.extend(more)
            }
            (_, event) => out.push(event),
        }
    }
    out
}

/// Any id stream through the demultiplexer, in one batch and id by id: the same events (once
/// runs are merged), exactly one `End`, last, and every `<tool_call>` given one result.
pub fn demux(data: &[u8], tokenizer: &StepTokenizer) {
    let special = *tokenizer.special();
    let span = (special.audio_pad + 64) as u64;
    let ids: Vec<i64> = data
        .chunks(3)
        .map(|c| c.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
        .map(|v| (v % span) as i64 - 32)
        .collect();
    let mode = if data.first().is_some_and(|b| b & 1 == 1) {
        GenerationMode::Speech
    } else {
        GenerationMode::Text
    };
    let mut batch = Demux::new(special, tokenizer, mode);
    let mut all: Vec<DemuxEvent> = batch.push_all(&ids);
    all.extend(batch.finish());
    let mut streaming = Demux::new(special, tokenizer, mode);
    let mut one_by_one = Vec::new();
    for &id in &ids {
        one_by_one.extend(streaming.push(id));
    }
    one_by_one.extend(streaming.finish());
    assert_eq!(all.iter().filter(|e| **e == DemuxEvent::End).count(), 1);
    assert_eq!(all.last(), Some(&DemuxEvent::End));
    let starts = all.iter().filter(|e| **e == DemuxEvent::ToolCallStart).count();
    let results = all.iter().filter(|e| matches!(e, DemuxEvent::ToolCall(_))).count();
    assert!(starts <= results, "{starts} calls began, {results} ended");
    assert_eq!(merged(all), merged(one_by_one), "batch and streamed demultiplexing differ");
}

/// Text from outside never encodes to an added-vocabulary id (a control token).
pub fn untrusted_text(data: &[u8], tokenizer: &StepTokenizer) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ids) = tokenizer.encode_untrusted(text) {
        assert!(ids.iter().all(|&id| !tokenizer.is_added(id)), "an added id from {text:?}");
        let bound = tokenizer.min_untrusted_tokens(text).unwrap_or(0);
        assert!(bound <= ids.len(), "the length bound {bound} > {} tokens", ids.len());
    }
}

/// Any bytes as an uploaded audio file (WAV, FLAC, MP3, Ogg, or lying about being one):
/// decoded within the limits to finite samples, or refused with an error.
pub fn audio(data: &[u8]) {
    let limits = AudioLimits { max_seconds: 30.0, max_bytes: 1 << 20 };
    let input = AudioInput::Bytes { name: "upload".into(), data: data.to_vec() };
    if let Ok(decoded) = decode_audio(input, &limits) {
        assert!(decoded.seconds() <= limits.max_seconds + 1.0, "{} s", decoded.seconds());
        assert!(decoded.samples.iter().all(|s| s.is_finite()), "a sample is not finite");
    }
}

/// Any bytes as a saved session file: loaded or refused, and a loaded one saves and loads
/// back to the same history.
pub fn session_file(data: &[u8]) {
    let path = Path::new("session.json");
    let Ok(session) = Session::from_file_bytes(data, path) else { return };
    let dir = std::env::temp_dir().join(format!("voxloop-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("session.json");
    if session.save(&file).is_ok() {
        let again = Session::load(&file).expect("a saved session loads");
        assert_eq!(again.history(), session.history(), "the history changed on a round trip");
    }
}
