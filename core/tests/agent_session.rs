//! Sessions on disk and across turns: a saved session loads back equal, resumes with one
//! prefill of its history (audio included) and then extends the cache again; two sessions
//! share one agent; saving is atomic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use std::sync::Arc;

use agent_support::{
    agent, assert_cache_matches_history, basic_tools, call_ids, finished, run, settings,
    step_usages, tokenizer, Script,
};
use futures::StreamExt;
use voxloop_core::agent::{AgentConfig, TurnEndReason, TurnInput};
use voxloop_core::audio::log_mel_chunks;
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{HumanPart, Session, Turn};
use voxloop_core::Error;

/// The ids of a turn whose session the cache did not hold: each id of the history is in the
/// cache once, either reused (the first turns it shares with the conversation the model ran
/// last) or prefilled by this turn.
fn assert_full_prefill(session: &Session, steps: &[voxloop_core::agent::Usage]) {
    let total: usize = steps.iter().map(|u| u.input_tokens + u.output_tokens).sum();
    let reused = steps[0].cached_tokens;
    assert_eq!(reused + total, session.cached_ids().len(), "the whole history is cached once");
}

#[tokio::test]
async fn agent_session_saves_loads_and_resumes_with_one_prefill() {
    let tok = tokenizer();
    let script = Arc::new(Script::new(&tok, vec![call_ids(&tok, "get_date_time", "{}")]));
    let agent = agent(basic_tools(), AgentConfig::default()).with_constraints(script);
    let mut session = Session::new(settings(ToolChoice::Auto, true, 120));
    let events = run(&agent, &mut session, "What time is it?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    session.settings_mut().sampling.max_new_tokens = 8;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    session.save(&path).unwrap();
    session.save(&path).unwrap();
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["session.json"], "no temporary file is left behind");

    let mut loaded = Session::load(&path).unwrap();
    assert_eq!(loaded.id(), session.id());
    assert_eq!(loaded.created_unix(), session.created_unix());
    assert_eq!(loaded.settings(), session.settings());
    assert_eq!(loaded.history(), session.history());
    assert!(loaded.cached_ids().is_empty());

    // Resuming prefills the whole history once …
    let events = run(&agent, &mut loaded, "And the date?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    let steps = step_usages(&events);
    assert_eq!(steps.len(), 1);
    assert_full_prefill(&loaded, &steps);
    assert_cache_matches_history(&agent, &loaded).await;

    // … and the next turn extends the cache again.
    let before = loaded.cached_ids().len();
    let events = run(&agent, &mut loaded, "Thanks.").await;
    let steps = step_usages(&events);
    assert_eq!(before + steps[0].input_tokens + steps[0].output_tokens, loaded.cached_ids().len());
    assert!(steps[0].input_tokens < before / 4, "{} ids prefilled again", steps[0].input_tokens);
    assert_cache_matches_history(&agent, &loaded).await;
}

#[tokio::test]
async fn agent_spoken_turns_survive_a_save_and_resume() {
    let tok = tokenizer();
    let agent = agent(basic_tools(), AgentConfig::default())
        .with_constraints(Arc::new(Script::new(&tok, Vec::new())));
    let samples: Vec<f32> = (0..24_000)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.3)
        .collect();
    let chunks = log_mel_chunks(&samples).unwrap();
    let patches = chunks[0].patches();
    assert!(patches > 0);
    let input = TurnInput::audio(&chunks[..]).and_text("What is this tone?");
    let mut session = Session::new(settings(ToolChoice::Auto, true, 8));
    let events: Vec<_> = agent.run_turn(&mut session, input).collect().await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");

    let special = *tok.special();
    let human = session.history().iter().position(|t| matches!(t, Turn::Human { .. })).unwrap();
    let ids = session.turn_ids(human).unwrap();
    let placeholders = ids.iter().filter(|&&id| id == special.audio_patch).count();
    assert_eq!(placeholders, patches);
    let start = ids.iter().position(|&id| id == special.audio_start).unwrap();
    assert_eq!(ids[start + patches + 1], special.audio_end);
    assert_cache_matches_history(&agent, &session).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spoken.json");
    session.save(&path).unwrap();
    let mut loaded = Session::load(&path).unwrap();
    let Turn::Human { parts } = &loaded.history()[human] else { panic!() };
    let HumanPart::Audio { chunks: stored } = &parts[0] else { panic!("{parts:?}") };
    assert_eq!(stored[0], chunks[0], "the features are stored exactly");
    assert!(matches!(&parts[1], HumanPart::Text { text } if text == "What is this tone?"));

    let events = run(&agent, &mut loaded, "Again?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");
    assert_full_prefill(&loaded, &step_usages(&events));
    assert_cache_matches_history(&agent, &loaded).await;
}

#[tokio::test]
async fn agent_sessions_take_turns_on_one_model() {
    let tok = tokenizer();
    let agent = agent(basic_tools(), AgentConfig::default())
        .with_constraints(Arc::new(Script::new(&tok, Vec::new())));
    let mut a = Session::new(settings(ToolChoice::Auto, true, 6));
    let mut b = Session::new(settings(ToolChoice::Auto, false, 6));
    run(&agent, &mut a, "I am A.").await;
    run(&agent, &mut b, "I am B.").await;
    assert_cache_matches_history(&agent, &b).await;

    // A's ids left the cache when B's turn ran: A prefills its history again, once.
    let events = run(&agent, &mut a, "Still A.").await;
    assert_full_prefill(&a, &step_usages(&events));
    assert_cache_matches_history(&agent, &a).await;
    let events = run(&agent, &mut a, "A again.").await;
    let steps = step_usages(&events);
    assert!(steps[0].input_tokens < a.cached_ids().len() / 4);
    assert_cache_matches_history(&agent, &a).await;
}

#[test]
fn agent_session_files_fail_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("kept.json");
    let session = Session::new(Default::default());
    session.save(&good).unwrap();
    let before = std::fs::read(&good).unwrap();

    let missing = dir.path().join("no/such/dir/s.json");
    let err = session.save(&missing).unwrap_err();
    assert!(matches!(err, Error::SessionIo { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir/s.json"), "{err}");
    assert_eq!(std::fs::read(&good).unwrap(), before);

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{\"format\": 1, \"id\": 3}").unwrap();
    let err = Session::load(&garbage).unwrap_err();
    assert!(matches!(err, Error::SessionFormat { .. }), "{err}");
    assert!(err.to_string().contains("garbage.json"), "{err}");

    let mut file: serde_json::Value = serde_json::from_slice(&before).unwrap();
    file["format"] = 99.into();
    std::fs::write(&garbage, serde_json::to_vec(&file).unwrap()).unwrap();
    let err = Session::load(&garbage).unwrap_err();
    assert!(err.to_string().contains("format 99"), "{err}");
}

#[test]
fn agent_session_files_of_earlier_versions_still_load() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/session/format1_spoken.json");
    let loaded = Session::load(&fixture).unwrap();
    let Turn::Human { parts } = &loaded.history()[1] else { panic!("{:?}", loaded.history()) };
    let HumanPart::Audio { chunks } = &parts[0] else { panic!("{parts:?}") };
    assert_eq!((chunks.len(), chunks[0].frames(), chunks[0].patches()), (1, 3, 0));
    for (i, &value) in chunks[0].mel().iter().enumerate() {
        let want = (i as f32 * 0.37).sin() * 4.0 - 1.5;
        assert!((value - want).abs() <= 1e-6, "value {i}: {value} vs {want}");
    }
    assert!(matches!(&parts[1], HumanPart::Text { text } if text == "What is this?"));

    // Saved again, the history is the same JSON, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("again.json");
    loaded.save(&path).unwrap();
    let json = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let (before, after) = (json(&fixture), json(&path));
    assert_eq!(after["history"].to_string(), before["history"].to_string());

    // A chunk whose features are not 128 values per frame is refused, naming the file.
    let mut file = before;
    file["history"][1]["parts"][0]["chunks"][0]["frames"] = 4.into();
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let err = Session::load(&path).unwrap_err();
    assert!(matches!(err, Error::SessionFormat { .. }), "{err}");
    assert!(err.to_string().contains("4 frames holds 384 values"), "{err}");
    assert!(err.to_string().contains("again.json"), "{err}");
}
