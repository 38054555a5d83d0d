//! Grammar-constrained tool calls (`ToolCallConstraint`) on the fixture tokenizer: seeded
//! random logits are masked and sampled for many turns, and every call that comes out must
//! parse, name a declared tool and carry arguments that the tool's JSON Schema accepts;
//! `tool_choice` none / required / named / auto must hold at every step. The last test runs
//! the real tiny checkpoint through `generate()` with the mask.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use voxloop_core::generate::{
    generate, FinishReason, LogitsMask, Prompt, Sampler, SamplingParams, Segment,
};
use voxloop_core::model::StepAudio2;
use voxloop_core::protocol::{
    encode_pieces, parse_tool_call, prompt_ids, render, GenerationMode, Message, ParsedToolCall,
    ToolCallConstraint, ToolCallGrammar, ToolChoice,
};
use voxloop_core::tokenizer::{SpecialTokens, StepTokenizer};
use voxloop_core::tool::{parameters_schema, tool_json_schemas, NoArgs, ToolDefinition};
use voxloop_core::Error;

/// Ids the logits cover beyond the tokenizer (tiny_a's embedding table has 7232 rows).
const PADDED_IDS: usize = 17;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tokenizer() -> &'static StepTokenizer {
    static TOKENIZER: OnceLock<StepTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        StepTokenizer::from_file(fixtures().join("tokenizer/tokenizer.json")).unwrap()
    })
}

fn special() -> SpecialTokens {
    *tokenizer().special()
}

fn tool(name: &str, description: &str, parameters: Value) -> ToolDefinition {
    ToolDefinition { name: name.to_owned(), description: description.to_owned(), parameters }
}

/// Four tools: two one-string tools as in the benchmark data, one without arguments (its
/// schema from schemars, as `Tool` impls get it), and one with an enum, a bounded integer,
/// an optional string and a bounded array.
fn tools() -> Vec<ToolDefinition> {
    let string = |description: &str| json!({"type": "string", "description": description});
    vec![
        tool(
            "web_search",
            "Searches the web.",
            json!({"type": "object", "properties": {"query": string("keywords")},
                   "required": ["query"], "additionalProperties": false}),
        ),
        tool(
            "get_weather",
            "Weather at a place.",
            json!({"type": "object", "properties": {"location": string("a city")},
                   "required": ["location"], "additionalProperties": false}),
        ),
        tool("get_date_time", "The current date and time.", parameters_schema::<NoArgs>()),
        tool(
            "set_timer",
            "Starts a timer.",
            json!({"type": "object", "properties": {
                      "unit": {"type": "string", "enum": ["seconds", "minutes", "hours"]},
                      "amount": {"type": "integer", "minimum": 1, "maximum": 120},
                      "label": string("what the timer is for"),
                      "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
                   "required": ["unit", "amount"], "additionalProperties": false}),
        ),
    ]
}

fn grammar() -> &'static ToolCallGrammar {
    static GRAMMAR: OnceLock<ToolCallGrammar> = OnceLock::new();
    GRAMMAR.get_or_init(|| ToolCallGrammar::new(tokenizer(), &tools()).unwrap())
}

/// Checks one call body: it parses, is in the canonical layout, names a declared tool (`only`
/// if given) and its arguments validate against that tool's schema.
fn check_call(body: &str, only: Option<&str>) -> ParsedToolCall {
    check_call_among(&tools(), body, only)
}

/// `check_call` against other declarations.
fn check_call_among(
    definitions: &[ToolDefinition],
    body: &str,
    only: Option<&str>,
) -> ParsedToolCall {
    let call = parse_tool_call(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    let definition = definitions
        .iter()
        .find(|t| t.name == call.name)
        .unwrap_or_else(|| panic!("{body:?} names an undeclared tool"));
    if let Some(only) = only {
        assert_eq!(call.name, only, "{body:?}");
    }
    assert!(body.starts_with(&format!("function\n{}\n{{", call.name)), "{body:?}");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&definition.parameters)
        .unwrap();
    let args = Value::Object(call.arguments.clone());
    let errors: Vec<String> = validator.iter_errors(&args).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{body:?} does not validate: {errors:?}");
    call
}

/// The call bodies of a generated id sequence, split on the tag ids. Panics on a stray
/// `</tool_call>` or a nested `<tool_call>`; an unclosed call is returned as `Err(body)`.
fn split_calls(ids: &[i64]) -> Vec<Result<String, String>> {
    let s = special();
    let (mut out, mut open) = (Vec::new(), None::<Vec<i64>>);
    for &id in ids {
        if id == s.tool_call_start {
            assert!(open.is_none(), "nested <tool_call> in {ids:?}");
            open = Some(Vec::new());
        } else if id == s.tool_call_end {
            let body = open.take().expect("</tool_call> outside a call");
            out.push(Ok(tokenizer().decode(&body).unwrap()));
        } else if let Some(body) = open.as_mut() {
            body.push(id);
        }
    }
    if let Some(body) = open {
        out.push(Err(tokenizer().decode(&body).unwrap()));
    }
    out
}

/// What the mask allowed at one step, and the state it was computed in.
struct Step<'a> {
    index: usize,
    in_call: bool,
    completed: usize,
    /// The masked logits, `-inf` where forbidden.
    logits: &'a [f32],
}

impl Step<'_> {
    fn allowed(&self, id: i64) -> bool {
        self.logits[id as usize].is_finite()
    }

    fn allowed_ids(&self) -> Vec<i64> {
        (0..self.logits.len() as i64).filter(|&id| self.allowed(id)).collect()
    }
}

/// The result of one driven turn.
struct Turn {
    /// The generated ids, the final `<|EOT|>` excluded.
    ids: Vec<i64>,
    /// Whether `<|EOT|>` ended it (not the step limit).
    ended: bool,
    /// Time in `LogitsMask::apply` inside / outside calls, and the step counts.
    mask_in: (Duration, usize),
    mask_out: (Duration, usize),
}

/// Random logits in [-2, 2), with a bonus for the ids that end things (`"`, `}`, the tags,
/// `<|EOT|>`) so that strings and calls close after a few tokens.
fn random_logits(rng: &mut StdRng, bonus: &[f32]) -> Tensor {
    let values: Vec<f32> = bonus.iter().map(|b| rng.gen_range(-2.0f32..2.0) + b).collect();
    Tensor::from_slice(&values)
}

fn bonus() -> &'static Vec<f32> {
    static BONUS: OnceLock<Vec<f32>> = OnceLock::new();
    BONUS.get_or_init(|| {
        let s = special();
        let t = tokenizer();
        (0..(t.vocab_size() + PADDED_IDS) as i64)
            .map(|id| match id {
                _ if id == s.tool_call_start || id == s.eot || id == s.tool_call_end => 7.0,
                _ if !t.is_added(id)
                    && t.token_str(id).is_some_and(|s| s.contains('"') || s.contains('}')) =>
                {
                    3.0
                }
                _ => 0.0,
            })
            .collect()
    })
}

/// Masks and samples (temperature 1) until `<|EOT|>` or `max_steps`, calling `check` on
/// every step's masked logits.
fn drive(
    constraint: &mut ToolCallConstraint,
    seed: u64,
    max_steps: usize,
    mut check: impl FnMut(&Step<'_>),
) -> Turn {
    let eot = special().eot;
    let mut rng = StdRng::seed_from_u64(seed);
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
        seed: Some(seed),
        max_new_tokens: max_steps,
        stop_tokens: vec![eot],
    };
    let mut sampler = Sampler::new(params).unwrap();
    let mut turn = Turn {
        ids: Vec::new(),
        ended: false,
        mask_in: Default::default(),
        mask_out: Default::default(),
    };
    for index in 0..max_steps {
        let mut logits = random_logits(&mut rng, bonus());
        let start = Instant::now();
        constraint.apply(&mut logits, &turn.ids).unwrap();
        let spent = start.elapsed();
        let slot = if constraint.in_call() { &mut turn.mask_in } else { &mut turn.mask_out };
        slot.0 += spent;
        slot.1 += 1;
        let values = Vec::<f32>::try_from(&logits).unwrap();
        check(&Step {
            index,
            in_call: constraint.in_call(),
            completed: constraint.completed_calls(),
            logits: &values,
        });
        let id = sampler.sample(&logits, &[], &turn.ids, None, index).unwrap();
        if id == eot {
            turn.ended = true;
            break;
        }
        turn.ids.push(id);
    }
    turn
}

/// Drives `runs` turns under `choice` and checks every call; returns the calls and turns.
fn drive_many(
    choice: &ToolChoice,
    runs: u64,
    mut check: impl FnMut(&Step<'_>),
) -> (Vec<ParsedToolCall>, Vec<Turn>) {
    let only = match choice {
        ToolChoice::Named(name) => Some(name.as_str()),
        _ => None,
    };
    let (mut calls, mut turns) = (Vec::new(), Vec::new());
    for seed in 0..runs {
        let mut constraint = grammar().constraint(choice.clone()).unwrap();
        let turn = drive(&mut constraint, 1000 + seed, 400, &mut check);
        assert!(turn.ended, "{choice:?} seed {seed}: no <|EOT|> within 400 steps: {:?}", turn.ids);
        let bodies = split_calls(&turn.ids);
        assert_eq!(constraint.completed_calls(), bodies.len(), "seed {seed}");
        for body in bodies {
            let body = body.unwrap_or_else(|b| panic!("seed {seed}: unclosed call {b:?}"));
            calls.push(check_call(&body, only));
        }
        turns.push(turn);
    }
    (calls, turns)
}

fn report(label: &str, turns: &[Turn]) {
    let sum = |f: fn(&Turn) -> (Duration, usize)| {
        turns.iter().map(f).fold((Duration::ZERO, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (tin, nin) = sum(|t| t.mask_in);
    let (tout, nout) = sum(|t| t.mask_out);
    let per = |t: Duration, n: usize| t.as_secs_f64() * 1e6 / n.max(1) as f64;
    eprintln!(
        "{label}: mask cost {:.1} us/token inside calls ({nin} tokens), {:.1} us/token outside \
         ({nout} tokens)",
        per(tin, nin),
        per(tout, nout)
    );
}

#[test]
fn protocol_constraint_required_forces_schema_valid_calls() {
    let s = special();
    let (calls, turns) = drive_many(&ToolChoice::Required, 24, |step| {
        if step.index == 0 {
            assert_eq!(step.allowed_ids(), vec![s.tool_call_start], "first token");
        }
        if !step.in_call {
            // Outside a call: only <tool_call>, and <|EOT|> once a call completed.
            let mut expected = vec![s.tool_call_start];
            if step.completed > 0 {
                expected.push(s.eot);
                expected.sort();
            }
            assert_eq!(step.allowed_ids(), expected, "step {}", step.index);
        } else {
            assert!(!step.allowed(s.eot) && !step.allowed(s.tool_call_start));
            // Ids beyond the tokenizer are never allowed inside a call.
            assert!(step.allowed_ids().iter().all(|&id| (id as usize) < tokenizer().vocab_size()));
        }
    });
    for turn in &turns {
        assert_eq!(turn.ids[0], s.tool_call_start);
        assert!(!split_calls(&turn.ids).is_empty());
    }
    let names: BTreeSet<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 4, "every tool gets called over the runs: {names:?}");
    assert!(calls.iter().any(|c| c.arguments.contains_key("label")), "an optional field");
    report("required", &turns);
}

/// Unbounded `"type": "number"` arguments and open extra properties (server-everything's
/// `get-sum`, zod's draft-07 output) must come out as numbers an `f64` holds, however the
/// model writes them.
#[test]
fn protocol_constraint_unbounded_numbers_parse() {
    let number = |description: &str| json!({"type": "number", "description": description});
    let definitions = vec![tool(
        "get_sum",
        "Adds two numbers.",
        json!({"type": "object", "properties": {"a": number("First number"),
                                                "b": number("Second number")},
               "required": ["a", "b"], "$schema": "http://json-schema.org/draft-07/schema#"}),
    )];
    let grammar = ToolCallGrammar::new(tokenizer(), &definitions).unwrap();
    let choice = ToolChoice::Named("get_sum".to_owned());
    let admits = |arguments: &str| {
        let s = special();
        let body = format!("function\nget_sum\n{arguments}");
        let mut ids = vec![s.tool_call_start];
        ids.extend(tokenizer().encode_untrusted(&body).unwrap());
        ids.push(s.tool_call_end);
        let mut constraint = grammar.constraint(choice.clone()).unwrap();
        ids.into_iter().all(|id| constraint.observe(id).is_ok())
    };
    assert!(admits(r#"{"a": 1, "b": 2.5}"#));
    assert!(admits(r#"{"a": -3, "b": 0, "c": [true, "x", 4]}"#), "extra properties stay allowed");
    for unparseable in [
        r#"{"a": 1e999, "b": 2}"#,
        r#"{"a": 1, "b": 2, "c": 1e999}"#,
        r#"{"a": 1, "b": 2, "c": [1E400]}"#,
        r#"{"a": 1, "b": 2, "c": {"d": -2e308}}"#,
    ] {
        assert!(!admits(unparseable), "{unparseable}");
        assert!(serde_json::from_str::<Value>(unparseable).is_err(), "no f64 holds it");
    }
    let mut longest = String::new();
    for seed in 0..150 {
        let mut constraint = grammar.constraint(choice.clone()).unwrap().with_single_call();
        let turn = drive(&mut constraint, 5000 + seed, 400, |_| {});
        for body in split_calls(&turn.ids).into_iter().flatten() {
            let call = check_call_among(&definitions, &body, Some("get_sum"));
            for key in ["a", "b"] {
                let value = call.arguments[key].as_f64();
                assert!(value.is_some_and(f64::is_finite), "seed {seed}: {body:?}");
            }
            if body.len() > longest.len() {
                longest = body;
            }
        }
    }
    eprintln!("longest get_sum call: {longest:?}");
}

#[test]
fn protocol_constraint_named_calls_only_that_tool() {
    for definition in tools() {
        let choice = ToolChoice::Named(definition.name.clone());
        let (calls, turns) = drive_many(&choice, 6, |_| {});
        assert!(calls.len() >= turns.len());
        report(&format!("named {}", definition.name), &turns);
    }
}

#[test]
fn protocol_constraint_none_never_allows_a_call() {
    let s = special();
    let mut constraint = grammar().constraint(ToolChoice::None).unwrap();
    for seed in 0..8 {
        constraint.reset();
        let turn = drive(&mut constraint, 2000 + seed, 200, |step| {
            assert!(!step.allowed(s.tool_call_start) && !step.allowed(s.tool_call_end));
            // Everything else stays allowed (random logits are all finite).
            assert_eq!(step.allowed_ids().len(), step.logits.len() - 2);
        });
        assert!(!turn.ids.contains(&s.tool_call_start));
        assert!(!turn.ids.contains(&s.tool_call_end));
    }
    // No tools and Auto behaves the same.
    let empty = grammar().with_tools(&[]).unwrap();
    let mut logits = Tensor::zeros([tokenizer().vocab_size() as i64], (Kind::Float, Device::Cpu));
    empty.constraint(ToolChoice::Auto).unwrap().apply(&mut logits, &[]).unwrap();
    let values = Vec::<f32>::try_from(&logits).unwrap();
    assert!(values[s.tool_call_start as usize].is_infinite());
}

#[test]
fn protocol_constraint_auto_is_free_outside_calls() {
    let s = special();
    let all = tokenizer().vocab_size() + PADDED_IDS;
    let (calls, turns) = drive_many(&ToolChoice::Auto, 24, |step| {
        if step.in_call {
            assert!(!step.allowed(s.eot));
        } else if step.completed == 0 {
            // Free: only a stray </tool_call> is ruled out (padded ids included).
            assert!(!step.allowed(s.tool_call_end));
            assert_eq!(step.allowed_ids().len(), all - 1);
        } else {
            // After a call: another call or the end of the turn.
            let mut expected = vec![s.tool_call_start, s.eot];
            expected.sort();
            assert_eq!(step.allowed_ids(), expected);
        }
    });
    assert!(!calls.is_empty(), "some turns call a tool");
    assert!(turns.iter().any(|t| t.ids.first() != Some(&s.tool_call_start)), "free text");
    report("auto", &turns);
}

#[test]
fn protocol_constraint_lead_in_and_reset() {
    let s = special();
    let mut constraint = grammar()
        .constraint(ToolChoice::Named("get_date_time".to_owned()))
        .unwrap()
        .with_lead_in(vec![s.tts_end])
        .unwrap();
    let turn = drive(&mut constraint, 7, 100, |step| match step.index {
        0 => assert_eq!(step.allowed_ids(), vec![s.tts_end]),
        1 => assert_eq!(step.allowed_ids(), vec![s.tool_call_start]),
        _ => {}
    });
    assert!(turn.ended);
    assert_eq!(&turn.ids[..2], &[s.tts_end, s.tool_call_start]);
    // The zero-argument tool has exactly one canonical call.
    let bodies = split_calls(&turn.ids);
    assert!(bodies.iter().all(|b| b.as_deref() == Ok("function\nget_date_time\n{}")));
    assert_eq!(constraint.completed_calls(), bodies.len());

    // An empty `generated` starts a new turn: the lead-in is forced again.
    let mut logits = Tensor::zeros([tokenizer().vocab_size() as i64], (Kind::Float, Device::Cpu));
    constraint.apply(&mut logits, &[]).unwrap();
    assert_eq!(constraint.completed_calls(), 0);
    let values = Vec::<f32>::try_from(&logits).unwrap();
    let allowed: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_finite()).collect();
    assert_eq!(allowed, vec![s.tts_end as usize]);

    // A lead-in may not hold the tags or <|EOT|>.
    let bad = grammar().constraint(ToolChoice::Required).unwrap().with_lead_in(vec![s.eot]);
    assert!(matches!(bad, Err(Error::ToolConstraint(_))));
}

#[test]
fn protocol_constraint_rejects_tokens_it_did_not_allow() {
    let s = special();
    let text = tokenizer().encode_untrusted("hello").unwrap()[0];
    // Required: the first id must be <tool_call>.
    let mut required = grammar().constraint(ToolChoice::Required).unwrap();
    assert!(matches!(required.observe(text), Err(Error::ToolConstraint(_))));
    assert!(matches!(required.observe(s.eot), Err(Error::ToolConstraint(_))));
    required.observe(s.tool_call_start).unwrap();
    assert!(required.in_call());
    // Inside: <|EOT|>, a speech code or a wrong keyword do not continue the call.
    for id in [s.eot, s.audio_first, s.tool_call_end, tokenizer().encode_untrusted("x").unwrap()[0]]
    {
        let mut inside = grammar().constraint(ToolChoice::Required).unwrap();
        inside.observe(s.tool_call_start).unwrap();
        assert!(matches!(inside.observe(id), Err(Error::ToolConstraint(_))), "id {id}");
    }
    // Auto: a stray </tool_call>.
    let mut auto = grammar().constraint(ToolChoice::Auto).unwrap();
    assert!(matches!(auto.observe(s.tool_call_end), Err(Error::ToolConstraint(_))));
    auto.observe(text).unwrap();
    // `generated` that shrinks without emptying is inconsistent.
    let mut logits = Tensor::zeros([tokenizer().vocab_size() as i64], (Kind::Float, Device::Cpu));
    auto.apply(&mut logits, &[text, text, text]).unwrap();
    assert!(matches!(auto.apply(&mut logits, &[text]), Err(Error::ToolConstraint(_))));
    // The whole canonical call by the tokenizer's own ids is accepted.
    let mut named = grammar().constraint(ToolChoice::Named("web_search".to_owned())).unwrap();
    named.observe(s.tool_call_start).unwrap();
    for id in tokenizer().encode_untrusted("function\nweb_search\n{\"query\": \"天气\"}").unwrap()
    {
        named.observe(id).unwrap();
    }
    named.observe(s.tool_call_end).unwrap();
    assert_eq!((named.completed_calls(), named.in_call()), (1, false));
}

#[test]
fn protocol_constraint_rejects_bad_declarations() {
    let t = tokenizer();
    let g = grammar();
    let tool_err = |r: Result<ToolCallConstraint, Error>, who: &str| match r {
        Err(Error::Tool { name, .. }) => assert!(name.contains(who), "{name} vs {who}"),
        other => panic!("{who}: expected a tool error, got {other:?}"),
    };
    tool_err(g.constraint(ToolChoice::Named("nope".to_owned())), "nope");
    tool_err(g.with_tools(&[]).unwrap().constraint(ToolChoice::Required), "tool_choice");

    let ok = tools()[0].clone();
    let schema = |p: Value| tool("odd", "", p);
    let cases = [
        vec![ok.clone(), ok.clone()],
        vec![tool("two words", "", ok.parameters.clone())],
        vec![tool("", "", ok.parameters.clone())],
        vec![schema(json!({"type": "string"}))],
        vec![schema(json!(true))],
        vec![schema(json!({"type": "object", "properties": {
            "d": {"type": "string", "format": "no-such-format"}}}))],
        vec![schema(json!({"type": "object", "properties": {
            "a": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}}))],
    ];
    for tools in cases {
        match ToolCallGrammar::new(t, &tools) {
            Err(Error::Tool { name, message }) => {
                assert!(tools.iter().any(|d| d.name == name), "{name}: {message}")
            }
            other => panic!("{tools:?}: expected a tool error, got {other:?}"),
        }
    }
}

#[test]
fn protocol_constraint_is_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<ToolCallConstraint>();
    send_sync::<ToolCallGrammar>();
    let boxed: Box<dyn LogitsMask + Send> =
        Box::new(grammar().constraint(ToolChoice::Auto).unwrap());
    drop(boxed);
}

/// The real tiny checkpoint, sampled at temperature 1 through `generate()` with the mask:
/// `Named(tool)` gives a schema-valid call to that tool, for every tool; in speech mode with
/// the `<tts_end>` lead-in the turn is `<tts_end><tool_call>…`.
#[test]
fn protocol_constraint_tiny_model_named_calls() {
    let dir = fixtures().join("llm/tiny_a");
    let tokenizer = StepTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let s = *tokenizer.special();
    let mut model = StepAudio2::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let definitions = tools();
    let start = Instant::now();
    let grammar = ToolCallGrammar::new(&tokenizer, &definitions).unwrap();
    let built = start.elapsed();
    let start = Instant::now();
    grammar.constraint(ToolChoice::Required).unwrap();
    eprintln!("grammar built in {built:?}; a constraint taken from it in {:?}", start.elapsed());
    let declared: Value = serde_json::from_str(&tool_json_schemas(&definitions).unwrap()).unwrap();
    let prompt = |mode| {
        let messages = [
            Message::system("You can call tools."),
            Message::tool_schemas(&declared),
            Message::human_text("Please use the tool."),
            Message::generation_prompt(mode),
        ];
        prompt_ids(&encode_pieces(&render(&messages), &tokenizer).unwrap())
    };
    let cancel = AtomicBool::new(false);
    let mut run = |choice: ToolChoice, lead_in: Vec<i64>, mode, seed| {
        let ids = prompt(mode);
        let segments = [Segment::Tokens(ids)];
        let mut constraint = grammar.constraint(choice).unwrap().with_lead_in(lead_in).unwrap();
        let mut params = SamplingParams::default();
        (params.temperature, params.top_k, params.top_p) = (1.0, 0, 1.0);
        (params.seed, params.max_new_tokens, params.stop_tokens) = (Some(seed), 1500, vec![s.eot]);
        let mut sampler = Sampler::new(params).unwrap();
        model.clear();
        let out = generate(
            &mut model,
            Prompt { cached: &[], segments: &segments },
            &mut sampler,
            Some(&mut constraint as &mut dyn LogitsMask),
            &cancel,
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(out.finish_reason, FinishReason::Stop(s.eot), "{:?}", out.tokens);
        let mask_share = out.timings.sampling.as_secs_f64() / out.tokens.len() as f64 * 1e6;
        eprintln!(
            "tiny model: {} tokens, sampling+mask {mask_share:.0} us/token",
            out.tokens.len()
        );
        out.tokens
    };
    for (i, definition) in definitions.iter().enumerate() {
        let name = definition.name.clone();
        let ids = run(ToolChoice::Named(name.clone()), vec![], GenerationMode::Text, i as u64);
        assert_eq!(ids[0], s.tool_call_start);
        let bodies = split_calls_with(&tokenizer, &ids);
        assert!(!bodies.is_empty());
        for body in bodies {
            eprintln!("tiny model call: {body:?}");
            check_call(&body, Some(&name));
        }
    }
    let ids = run(
        ToolChoice::Named("get_weather".to_owned()),
        vec![s.tts_end],
        GenerationMode::Speech,
        99,
    );
    assert_eq!(&ids[..2], &[s.tts_end, s.tool_call_start]);
    for body in split_calls_with(&tokenizer, &ids) {
        check_call(&body, Some("get_weather"));
    }
}

/// Completed call bodies (the model test uses the checkpoint's own tokenizer file).
fn split_calls_with(tokenizer: &StepTokenizer, ids: &[i64]) -> Vec<String> {
    assert_eq!(tokenizer.special(), &special(), "the checkpoint ships the fixture tokenizer");
    split_calls(ids).into_iter().map(|b| b.expect("closed call")).collect()
}
