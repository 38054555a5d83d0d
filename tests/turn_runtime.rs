//! The turn runtime every front door consumes (`Agent::speak_turn`), in process: two sessions
//! of one agent speak at the same time through one token2wav thread, one of them swaps its
//! voice with `timbre_rag`, and the other keeps its own. The tiny random checkpoint generates;
//! a mask makes session A's first step write the swap call, and keeps B from calling tools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::StreamExt;
use voxloop_core::agent::{
    Agent, AgentConfig, AgentEvent, ConstraintFactory, SpeechRenderer, TurnEndReason, TurnInput,
};
use voxloop_core::generate::{allow_only_ids, forbid_ids, LogitsMask};
use voxloop_core::protocol::{GenerationMode, ToolChoice};
use voxloop_core::session::{Session, SessionSettings};
use voxloop_core::tool::ToolRegistry;
use voxloop_core::DeviceSpec;
use voxloop_tools::TimbreRag;
use voxloop_voices::hift::NsfRandom;
use voxloop_voices::{SessionVoice, Token2Wav, VoiceLibrary, VoiceProfile, VoiceSwapper};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A step forced to `timbre_rag` writes `call` (then `<|EOT|>`); every other step may not
/// call a tool.
struct SwapWhenForced {
    call: Vec<i64>,
    eot: i64,
    no_calls: [i64; 2],
}

impl ConstraintFactory for SwapWhenForced {
    fn build(
        &self,
        choice: &ToolChoice,
        _mode: GenerationMode,
    ) -> voxloop_core::Result<Option<Box<dyn LogitsMask + Send>>> {
        if matches!(choice, ToolChoice::Named(name) if name == "timbre_rag") {
            let (call, eot) = (self.call.clone(), self.eot);
            return Ok(Some(Box::new(move |logits: &mut tch::Tensor, generated: &[i64]| {
                allow_only_ids(logits, &[call.get(generated.len()).copied().unwrap_or(eot)])
            })));
        }
        let no_calls = self.no_calls;
        Ok(Some(Box::new(move |logits: &mut tch::Tensor, _: &[i64]| forbid_ids(logits, &no_calls))))
    }
}

/// A speaking session that starts in `voice`, with `choice` for its first step.
fn session(voice: &Arc<VoiceProfile>, choice: ToolChoice) -> (Session, Arc<SessionVoice>) {
    let mut settings = SessionSettings { speech: true, tool_choice: choice, ..Default::default() };
    settings.follow_up_tool_choice = ToolChoice::None;
    settings.sampling.seed = Some(7);
    settings.sampling.max_new_tokens = 60;
    let mut session = Session::new(settings);
    let handle = Arc::new(SessionVoice::new(Arc::clone(voice)));
    session.extensions_mut().insert(Arc::clone(&handle));
    (session, handle)
}

/// token2wav on the fixture, with fixed NSF numbers so that two renders of the same codes
/// in the same voice are equal.
fn token2wav() -> Token2Wav {
    let mut model =
        Token2Wav::load(&root().join("voices/tests/fixtures/token2wav"), tch::Device::Cpu).unwrap();
    model.set_nsf_random(NsfRandom::Fixed {
        phase: tch::Tensor::full([1, 9], 0.25, (tch::Kind::Float, tch::Device::Cpu)),
        noise: tch::Tensor::zeros([1, 100_000, 9], (tch::Kind::Float, tch::Device::Cpu)),
    });
    model
}

/// What `voice` sounds like saying `utterances`, one token2wav stream each (as the runtime
/// renders each generation step's speech).
fn rendered(model: &Token2Wav, voice: &VoiceProfile, utterances: &[Vec<i64>]) -> Vec<f32> {
    let mut pcm = Vec::new();
    for codes in utterances {
        let mut stream = model.stream(voice).unwrap();
        pcm.extend(stream.push(codes).unwrap());
        pcm.extend(stream.finish().unwrap());
    }
    pcm
}

/// A turn's speech codes by step, its rendered samples and tool results; checks the turn
/// ended with `TurnFinished` after all of its audio.
fn summary(events: &[AgentEvent]) -> (Vec<Vec<i64>>, Vec<f32>, Vec<String>) {
    let (mut utterances, mut samples, mut results) = (vec![Vec::new()], Vec::new(), Vec::new());
    for event in events {
        match event {
            AgentEvent::AudioTokens(c) => {
                utterances.last_mut().unwrap().extend(c.iter().map(|&c| i64::from(c)))
            }
            AgentEvent::Usage { .. } => utterances.push(Vec::new()),
            AgentEvent::Audio { pcm, sample_rate } => {
                assert_eq!(*sample_rate, 24_000);
                samples.extend_from_slice(pcm);
            }
            AgentEvent::SpeechFailed { message } => panic!("speech failed: {message}"),
            AgentEvent::ToolCallFinished { name, outcome, .. } => {
                results.push(format!("{name}: {}", outcome.as_ref().unwrap()))
            }
            _ => {}
        }
    }
    match events.last() {
        Some(AgentEvent::TurnFinished { reason, .. }) => {
            assert_eq!(*reason, TurnEndReason::Completed)
        }
        other => panic!("the last event is not TurnFinished: {other:?}"),
    }
    utterances.retain(|u| !u.is_empty());
    (utterances, samples, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_speak_at_once_and_a_swap_changes_only_its_own_voice() {
    // A library of two voices made from the token2wav fixture's (the second one differs in
    // its speaker embedding).
    let dir = tempfile::tempdir().unwrap();
    let fixture = support::fixture_voice(&dir.path().join("fixture"));
    let mut library = VoiceLibrary::open(&dir.path().join("voices")).unwrap();
    let female = library
        .add(
            VoiceProfile::new(
                "default_female",
                fixture.prompt_tokens.clone(),
                fixture.prompt_mel.clone(),
                fixture.speaker_embedding.clone(),
            )
            .unwrap(),
        )
        .unwrap();
    let male_speaker = fixture.speaker_embedding.iter().map(|v| -v).collect();
    library
        .add(
            VoiceProfile::new(
                "default_male",
                fixture.prompt_tokens.clone(),
                fixture.prompt_mel.clone(),
                male_speaker,
            )
            .unwrap(),
        )
        .unwrap();
    let mut tools = ToolRegistry::new();
    tools.register(TimbreRag::new(VoiceSwapper::new(Arc::new(library)))).unwrap();

    let config = AgentConfig {
        fixed_now: Some(UNIX_EPOCH + Duration::from_secs(1_756_353_600)),
        ..AgentConfig::default()
    };
    let checkpoint = root().join("core/tests/fixtures/llm/tiny_a");
    let agent = Agent::load(&checkpoint, DeviceSpec::Cpu, tools, config).unwrap();
    let tokenizer = agent.tokenizer();
    let special = tokenizer.special();
    let mut call = vec![special.tool_call_start];
    call.extend(
        tokenizer.encode_untrusted("function\ntimbre_rag\n{\"query\": \"默认男音色\"}").unwrap(),
    );
    call.push(special.tool_call_end);
    let constraints = SwapWhenForced {
        call,
        eot: special.eot,
        no_calls: [special.tool_call_start, special.tool_call_end],
    };
    let agent = agent.with_constraints(Arc::new(constraints));

    let renderer = SpeechRenderer::spawn("test-token2wav", || Ok(token2wav())).unwrap();

    let (mut a, voice_a) = session(&female, ToolChoice::Named("timbre_rag".into()));
    let (mut b, voice_b) = session(&female, ToolChoice::Auto);
    let input = || TurnInput::text("Say something.");
    let (events_a, events_b) = tokio::join!(
        agent.speak_turn(&mut a, input(), Some(&renderer)).collect::<Vec<_>>(),
        agent.speak_turn(&mut b, input(), Some(&renderer)).collect::<Vec<_>>(),
    );

    let (speech_a, audio_a, results_a) = summary(&events_a);
    let (speech_b, audio_b, results_b) = summary(&events_b);
    let count = |u: &[Vec<i64>]| u.iter().map(Vec::len).sum::<usize>();
    println!(
        "A: {} codes → {} samples; B: {} codes → {} samples",
        count(&speech_a),
        audio_a.len(),
        count(&speech_b),
        audio_b.len()
    );
    assert_eq!(results_a, ["timbre_rag: 你的音色已经更新完成，请继续对话。"]);
    assert!(results_b.is_empty());
    assert_eq!(voice_a.current().name, "default_male", "A swapped its voice");
    assert_eq!(voice_b.current().name, "default_female", "B keeps its own voice");

    // What each session heard is its codes in its own voice: A's answer (after the swap) in
    // the male voice, B's in the female one.
    assert!(count(&speech_a) > 0 && count(&speech_b) > 0, "the random model did not speak");
    let model = token2wav();
    let male = voice_a.current();
    assert_eq!(audio_a, rendered(&model, &male, &speech_a));
    assert_eq!(audio_b, rendered(&model, &female, &speech_b));
    assert_ne!(audio_a, rendered(&model, &female, &speech_a), "the voice makes a difference");
}
