//! What a stateless front door relies on: a new session that shares its first turns with
//! the conversation the model ran last prefills only the rest (and answers exactly as with a
//! full prefill); a session whose lineage was taken over is prefilled correctly; tools the
//! client runs end the turn with their calls; a text answer holds no speech.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;

use std::sync::Arc;

use agent_support::{
    agent, assert_cache_matches_history, basic_tools, finished, run, settings, step_usages,
};
use futures::StreamExt;
use serde_json::json;
use voxloop_core::agent::{AgentConfig, AgentEvent, TurnEndReason};
use voxloop_core::protocol::ToolChoice;
use voxloop_core::session::{Session, Turn};
use voxloop_core::tool::{ToolDefinition, ToolRegistry};

fn answer(session: &Session) -> Vec<i64> {
    match session.history().last() {
        Some(Turn::Assistant(turn)) => turn.ids.clone(),
        other => panic!("the last turn is not the answer: {other:?}"),
    }
}

#[tokio::test]
async fn a_session_that_repeats_the_last_conversation_prefills_only_what_is_new() {
    let agent = agent(ToolRegistry::new(), AgentConfig::default());
    let mut sampled = settings(ToolChoice::None, false, 24);
    sampled.sampling.temperature = 0.8;
    let mut first = Session::new(sampled.clone());
    let events = run(&agent, &mut first, "Tell me about Paris.").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    assert_eq!(step_usages(&events)[0].cached_tokens, 0, "nothing to reuse yet");

    // The same conversation as a new session (as a stateless API rebuilds it): the system
    // and human turns are reused, only the generation prompt is prefilled, and the seeded
    // draws are the same as with the full prefill.
    let history = first.history()[..2].to_vec();
    let mut again = Session::with_history(sampled.clone(), history);
    let events: Vec<_> = agent.continue_turn(&mut again, None, None).collect().await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    let step = step_usages(&events)[0];
    let shared = first.turn_ids(1).unwrap().len() + first.turn_ids(0).unwrap().len();
    assert_eq!(step.cached_tokens, shared);
    let generation_prompt = again.turn_ids(2).unwrap().len() - answer(&again).len();
    assert_eq!(step.input_tokens, generation_prompt, "only <|BOT|>assistant\\n is prefilled");
    assert_eq!(answer(&again), answer(&first), "same history and seed, same answer");
    assert_cache_matches_history(&agent, &again).await;

    // `first` lost the cache to `again`'s line; its next turn is prefilled correctly again
    // (from the prefix the two share) and goes on as usual.
    let events = run(&agent, &mut first, "And Rome?").await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed);
    assert!(step_usages(&events)[0].cached_tokens > 0);
    assert_cache_matches_history(&agent, &first).await;

    // With reuse off every new session is prefilled from scratch.
    let config = AgentConfig { reuse_prefix: false, ..AgentConfig::default() };
    let cold = agent_support::agent(ToolRegistry::new(), config);
    let mut one = Session::new(sampled.clone());
    run(&cold, &mut one, "Tell me about Paris.").await;
    let mut two = Session::with_history(sampled, one.history()[..2].to_vec());
    let events: Vec<_> = cold.continue_turn(&mut two, None, None).collect().await;
    assert_eq!(step_usages(&events)[0].cached_tokens, 0);
    assert_eq!(answer(&two), answer(&one), "the draws do not depend on the cache");
}

#[tokio::test]
async fn a_conversation_that_lost_the_cache_gets_its_prefix_back_from_a_saved_copy() {
    let agent = agent(ToolRegistry::new(), AgentConfig::default());
    let settings = settings(ToolChoice::None, false, 16);
    let mut a = Session::new(settings.clone());
    run(&agent, &mut a, "First conversation, about the sea and its long grey waves.").await;
    let a_len = a.cached_ids().len();
    let mut b = Session::new(settings.clone());
    run(&agent, &mut b, "Second conversation, about mountains.").await;
    assert_eq!(agent.saved_prefixes().0, 1, "the first conversation was copied when cut");

    // The first conversation comes back (as a stateless API resends it): all of it is
    // restored from the copy, and the answer is the one a cold cache gives.
    let mut history = a.history().to_vec();
    history.push(Turn::Human {
        parts: vec![voxloop_core::session::HumanPart::Text { text: "Go on.".into() }],
    });
    let mut back = Session::with_history(settings.clone(), history.clone());
    let events: Vec<_> = agent.continue_turn(&mut back, None, None).collect().await;
    assert_eq!(step_usages(&events)[0].cached_tokens, a_len);
    assert_cache_matches_history(&agent, &back).await;

    let config = AgentConfig { reuse_prefix: false, ..AgentConfig::default() };
    let cold = agent_support::agent(ToolRegistry::new(), config);
    let mut fresh = Session::with_history(settings.clone(), history.clone());
    let events: Vec<_> = cold.continue_turn(&mut fresh, None, None).collect().await;
    assert_eq!(step_usages(&events)[0].cached_tokens, 0);
    assert_eq!(answer(&back), answer(&fresh), "a restored cache answers as a fresh prefill");

    // Without a budget nothing is copied: only the system turn is shared with the live one.
    let config = AgentConfig { prefix_cache_bytes: 0, ..AgentConfig::default() };
    let small = agent_support::agent(ToolRegistry::new(), config);
    let mut a = Session::new(settings.clone());
    run(&small, &mut a, "First conversation, about the sea and its long grey waves.").await;
    let mut b = Session::new(settings.clone());
    run(&small, &mut b, "Second conversation, about mountains.").await;
    assert_eq!(small.saved_prefixes(), (0, 0));
    let mut back = Session::with_history(settings, history);
    let events: Vec<_> = small.continue_turn(&mut back, None, None).collect().await;
    assert_eq!(step_usages(&events)[0].cached_tokens, back.turn_ids(0).unwrap().len());
}

#[tokio::test]
async fn client_tools_end_the_turn_with_their_calls_and_resume_from_the_results() {
    let agent = agent(basic_tools(), AgentConfig::default());
    let weather = ToolDefinition {
        name: "get_weather".into(),
        description: "The weather in a city.".into(),
        parameters: json!({
            "type": "object",
            // The random model would write a city name to the token limit.
            "properties": { "city": { "type": "string", "maxLength": 8 } },
            "required": ["city"],
            "additionalProperties": false,
        }),
    };
    let client = Arc::new(agent.client_tools(vec![weather], false).unwrap());
    let settings = settings(ToolChoice::Named("get_weather".into()), false, 48);
    let mut history = vec![
        Turn::System { text: "You are a helpful assistant.".into() },
        Turn::ToolSchemas { json: client.tool_json_schemas().unwrap() },
    ];
    history.push(Turn::Human {
        parts: vec![voxloop_core::session::HumanPart::Text { text: "Weather in Paris?".into() }],
    });
    let mut session = Session::with_history(settings.clone(), history);
    let events: Vec<_> =
        agent.continue_turn(&mut session, Some(Arc::clone(&client)), None).collect().await;
    assert_eq!(finished(&events).0, TurnEndReason::ToolCalls, "{events:#?}");
    let requested: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallRequested { id, name, arguments } => Some((id, name, arguments)),
            _ => None,
        })
        .collect();
    assert_eq!(requested.len(), 1, "parallel calls off: one call");
    let (id, name, arguments) = requested[0];
    assert_eq!(name, "get_weather");
    assert!(arguments["city"].is_string(), "{arguments}");
    assert!(
        !events.iter().any(|e| matches!(e, AgentEvent::ToolCallStarted { .. })),
        "nothing ran here"
    );
    let Some(Turn::Assistant(calling)) = session.history().last() else { panic!() };
    assert_eq!(&calling.calls[0].id, id);

    // The client's result continues the conversation from the cache: only the closing
    // <|EOT|>, the result turn and the generation prompt are prefilled.
    let mut history = session.history().to_vec();
    history.push(Turn::ToolResult(voxloop_core::session::ToolResultTurn {
        call_id: id.clone(),
        name: name.clone(),
        ok: true,
        text: "Sunny, 21 °C.".into(),
        instruction: None,
    }));
    let mut answered = settings;
    answered.tool_choice = ToolChoice::None;
    let mut next = Session::with_history(answered, history);
    let events: Vec<_> = agent.continue_turn(&mut next, Some(client), None).collect().await;
    assert_eq!(finished(&events).0, TurnEndReason::Completed, "{events:#?}");
    let step = step_usages(&events)[0];
    assert_eq!(step.cached_tokens, session.cached_ids().len());
    assert_cache_matches_history(&agent, &next).await;

    // A history that ends with the answer has nothing to answer.
    let mut done = Session::with_history(next.settings().clone(), next.history().to_vec());
    let events: Vec<_> = agent.continue_turn(&mut done, None, None).collect().await;
    assert!(matches!(finished(&events).0, TurnEndReason::Error(_)), "{events:#?}");
}

#[tokio::test]
async fn a_text_answer_never_holds_speech_codes() {
    let agent = agent(ToolRegistry::new(), AgentConfig::default());
    let tokenizer = agent.tokenizer();
    let special = *tokenizer.special();
    let mut spoken = 0;
    for (i, prompt) in ["Hello there.", "Speak to me!", "What is 2 + 2?"].iter().enumerate() {
        let mut s = settings(ToolChoice::None, false, 96);
        s.sampling.seed = Some(7 + i as u64);
        s.sampling.temperature = 1.0;
        let mut session = Session::new(s);
        let events = run(&agent, &mut session, prompt).await;
        assert_eq!(finished(&events).0, TurnEndReason::Completed);
        assert!(!events.iter().any(|e| matches!(e, AgentEvent::AudioTokens(_))), "{events:#?}");
        let ids = answer(&session);
        assert!(ids.iter().all(|&id| special.audio_code(id).is_none() && id != special.audio_pad));
        assert!(!ids.contains(&special.tts_start) && !ids.contains(&special.tts_end));

        // The same prompt in speech mode does speak (so the mask is what keeps text silent).
        let mut s = settings(ToolChoice::None, true, 96);
        s.sampling.seed = Some(7 + i as u64);
        let mut session = Session::new(s);
        let events = run(&agent, &mut session, prompt).await;
        spoken += events.iter().filter(|e| matches!(e, AgentEvent::AudioTokens(_))).count();
    }
    assert!(spoken > 0, "the random model speaks after <tts_start>");
}
