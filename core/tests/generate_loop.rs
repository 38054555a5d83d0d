//! The decoding loop and the inference thread, driven by a scripted fake StepModel (a test
//! double for the loop logic only; the real model has its own parity tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tch::Tensor;
use voxloop_core::audio::AudioChunk;
use voxloop_core::generate::{
    forbid_ids, generate, FinishReason, GenerationEvent, GenerationRequest, InferenceWorker,
    Prompt, Sampler, SamplingParams, Segment, StepModel,
};
use voxloop_core::{Error, Result};

const VOCAB: usize = 16;
const STOP: i64 = 15;

/// Emits `script` greedily after each prefill, then `STOP` forever. Logits: the scripted id
/// gets 10, every other id `-0.01 * id` (so with the scripted id forbidden, the smallest
/// allowed id wins).
struct ScriptModel {
    script: Vec<i64>,
    cache: Vec<i64>,
    /// Cache length when the last prefill ended.
    prefill_end: usize,
    /// Positions prefill adds beyond the prompt ids (0 = honours the contract).
    extra_positions: usize,
    /// Panic in decode once this many tokens were decoded since the prefill.
    panic_after: Option<usize>,
    /// Shared count of decode calls.
    decodes: Arc<AtomicUsize>,
    /// Sleep per decode, to make a generation long-running.
    decode_delay: Duration,
}

impl ScriptModel {
    fn new(script: Vec<i64>) -> Self {
        Self {
            script,
            cache: Vec::new(),
            prefill_end: 0,
            extra_positions: 0,
            panic_after: None,
            decodes: Arc::new(AtomicUsize::new(0)),
            decode_delay: Duration::ZERO,
        }
    }

    fn logits(&self) -> Tensor {
        let step = self.cache.len() - self.prefill_end;
        let next = self.script.get(step).copied().unwrap_or(STOP);
        let values: Vec<f32> =
            (0..VOCAB as i64).map(|id| if id == next { 10.0 } else { -0.01 * id as f32 }).collect();
        Tensor::from_slice(&values)
    }
}

impl StepModel for ScriptModel {
    fn prefill(&mut self, segments: &[Segment]) -> Result<Tensor> {
        let ids: Vec<i64> = segments.iter().flat_map(|s| s.ids().iter().copied()).collect();
        if ids.is_empty() {
            return Err(Error::InvalidPrompt("no ids".to_owned()));
        }
        self.cache.extend(ids);
        self.cache.extend(std::iter::repeat_n(0, self.extra_positions));
        self.prefill_end = self.cache.len();
        Ok(self.logits())
    }

    fn decode(&mut self, token: i64) -> Result<Tensor> {
        if self.panic_after == Some(self.cache.len() - self.prefill_end) {
            panic!("scripted panic in decode");
        }
        std::thread::sleep(self.decode_delay);
        self.decodes.fetch_add(1, Ordering::SeqCst);
        self.cache.push(token);
        Ok(self.logits())
    }

    fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.cache.len() {
            return Err(Error::InvalidPrompt(format!("truncate to {len}")));
        }
        self.cache.truncate(len);
        Ok(())
    }

    fn clear(&mut self) {
        self.cache.clear();
        self.prefill_end = 0;
    }
}

fn greedy(max_new_tokens: usize) -> Sampler {
    Sampler::new(SamplingParams::greedy(max_new_tokens, vec![STOP])).unwrap()
}

fn tokens(ids: &[i64]) -> Vec<Segment> {
    vec![Segment::Tokens(ids.to_vec())]
}

#[test]
fn generates_the_script_and_stops_on_the_stop_token() {
    let script = vec![3, 1, 4, 1, 5, 9, 2, 6];
    let mut model = ScriptModel::new(script.clone());
    let prompt = tokens(&[7, 8, 9]);
    let cancel = AtomicBool::new(false);
    let mut streamed = Vec::new();
    let out = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(100),
        None,
        &cancel,
        |t| {
            streamed.push(t);
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(out.tokens, script);
    assert_eq!(streamed, script);
    assert_eq!(out.finish_reason, FinishReason::Stop(STOP));
    assert_eq!(out.timings.prompt_tokens, 3);
    assert!(out.timings.first_token.is_some());
    // The cache holds the prompt and every generated token, not the stop token.
    let mut expected = vec![7, 8, 9];
    expected.extend(&script);
    assert_eq!(model.cache, expected);
}

#[test]
fn length_cancel_and_callback_finishes_keep_the_cache_consistent() {
    let script: Vec<i64> = (0..10).collect();
    let prompt = tokens(&[12, 13]);

    // max_new_tokens
    let mut model = ScriptModel::new(script.clone());
    let cancel = AtomicBool::new(false);
    let out = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(4),
        None,
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.tokens, script[..4]);
    assert_eq!(model.cache, [&[12, 13], &script[..4]].concat());

    // Cancelled from the callback after 3 tokens: checked before the next draw.
    let mut model = ScriptModel::new(script.clone());
    let cancel = AtomicBool::new(false);
    let mut n = 0;
    let out = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(100),
        None,
        &cancel,
        |_| {
            n += 1;
            if n == 3 {
                cancel.store(true, Ordering::Relaxed);
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(out.tokens, script[..3]);
    assert_eq!(model.cache, [&[12, 13], &script[..3]].concat());

    // Break from the callback on the 2nd token: that token is kept and decoded.
    let mut model = ScriptModel::new(script.clone());
    let cancel = AtomicBool::new(false);
    let mut n = 0;
    let out = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(100),
        None,
        &cancel,
        |_| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Callback);
    assert_eq!(out.tokens, script[..2]);
    assert_eq!(model.cache, [&[12, 13], &script[..2]].concat());

    // Cancelled before starting: nothing is prefilled.
    let mut model = ScriptModel::new(script);
    let cancel = AtomicBool::new(true);
    let out = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(100),
        None,
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert!(out.tokens.is_empty());
    assert_eq!(model.cache_len(), 0);
}

#[test]
fn the_mask_steers_the_loop() {
    let mut model = ScriptModel::new(vec![3, 3, 3]);
    let cancel = AtomicBool::new(false);
    let mut seen_generated = Vec::new();
    let mut no_three = |logits: &mut Tensor, generated: &[i64]| {
        seen_generated.push(generated.to_vec());
        forbid_ids(logits, &[3])
    };
    let prompt = tokens(&[1]);
    let out = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(100),
        Some(&mut no_three),
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    // With 3 forbidden, id 0 (logit 0, the largest of the rest) wins three times, then STOP.
    assert_eq!(out.tokens, vec![0, 0, 0]);
    assert_eq!(out.finish_reason, FinishReason::Stop(STOP));
    assert_eq!(seen_generated, vec![vec![], vec![0], vec![0, 0], vec![0, 0, 0]]);
}

/// The repetition penalty sees the ids cached by earlier turns, not only this prompt.
#[test]
fn the_repetition_penalty_covers_cached_turns() {
    struct Tied(Vec<i64>);
    impl StepModel for Tied {
        fn prefill(&mut self, segments: &[Segment]) -> Result<Tensor> {
            self.0.extend(segments.iter().flat_map(|s| s.ids().iter().copied()));
            Ok(Tensor::from_slice(&[1.0f32, 0.95, -5.0]))
        }
        fn decode(&mut self, token: i64) -> Result<Tensor> {
            self.0.push(token);
            Ok(Tensor::from_slice(&[-5.0f32, -5.0, 5.0]))
        }
        fn cache_len(&self) -> usize {
            self.0.len()
        }
        fn truncate(&mut self, len: usize) -> Result<()> {
            self.0.truncate(len);
            Ok(())
        }
        fn clear(&mut self) {
            self.0.clear();
        }
    }
    let run = |cached: Vec<i64>, penalty: f64| {
        let mut model = Tied(cached.clone());
        let mut params = SamplingParams::greedy(1, vec![]);
        params.repetition_penalty = penalty;
        let prompt = tokens(&[2]);
        generate(
            &mut model,
            Prompt { cached: &cached, segments: &prompt },
            &mut Sampler::new(params).unwrap(),
            None,
            &AtomicBool::new(false),
            |_| ControlFlow::Continue(()),
        )
        .unwrap()
        .tokens
    };
    assert_eq!(run(vec![2, 2], 1.0), vec![0]);
    assert_eq!(run(vec![2, 2], 1.1), vec![0]);
    assert_eq!(run(vec![2, 0, 2], 1.1), vec![1]);
}

#[test]
fn audio_segments_add_no_positions_and_turns_continue_from_the_cache() {
    let mut model = ScriptModel::new(vec![4, 5]);
    let cancel = AtomicBool::new(false);
    let (start, patch, end) = (10, 11, 12);
    let turn1 = vec![
        Segment::Tokens(vec![1, start, patch, patch, end]),
        Segment::Audio(AudioChunk::new(vec![0.0; 128 * 8], 2).unwrap()),
        Segment::Tokens(vec![2]),
    ];
    let out1 = generate(
        &mut model,
        Prompt { cached: &[], segments: &turn1 },
        &mut greedy(10),
        None,
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(out1.timings.prompt_tokens, 6);
    assert_eq!(out1.tokens, vec![4, 5]);
    let history = model.cache.clone();
    assert_eq!(history, vec![1, start, patch, patch, end, 2, 4, 5]);

    // Turn 2 continues the cache; a wrong `cached` list is refused before anything runs.
    let turn2 = tokens(&[STOP, 3]);
    let err = generate(
        &mut model,
        Prompt { cached: &history[1..], segments: &turn2 },
        &mut greedy(10),
        None,
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidPrompt(_)), "{err}");
    assert_eq!(model.cache, history);
    let out2 = generate(
        &mut model,
        Prompt { cached: &history, segments: &turn2 },
        &mut greedy(10),
        None,
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(out2.tokens, vec![4, 5]);
    assert_eq!(model.cache, [&history[..], &[STOP, 3, 4, 5]].concat());

    // Rewind to the end of turn 1 and regenerate.
    model.truncate(history.len()).unwrap();
    assert_eq!(model.cache, history);
}

#[test]
fn prompts_that_break_the_contract_are_errors() {
    let cancel = AtomicBool::new(false);
    let mut model = ScriptModel::new(vec![1]);
    let audio_only = vec![Segment::Audio(AudioChunk::new(vec![0.0; 128 * 8], 1).unwrap())];
    for segments in [vec![], audio_only] {
        let err = generate(
            &mut model,
            Prompt { cached: &[], segments: &segments },
            &mut greedy(10),
            None,
            &cancel,
            |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidPrompt(_)), "{err}");
    }
    // A model whose prefill adds positions the prompt does not list is caught.
    let mut model = ScriptModel::new(vec![1]);
    model.extra_positions = 2;
    let prompt = tokens(&[1, 2]);
    let err = generate(
        &mut model,
        Prompt { cached: &[], segments: &prompt },
        &mut greedy(10),
        None,
        &cancel,
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected 2"), "{err}");
}

fn collect(stream: voxloop_core::generate::GenerationStream) -> (Vec<i64>, Result<FinishReason>) {
    collect_after(stream, Vec::new())
}

/// Like `collect`, for a stream whose first tokens (`streamed`) were already received.
fn collect_after(
    stream: voxloop_core::generate::GenerationStream,
    mut streamed: Vec<i64>,
) -> (Vec<i64>, Result<FinishReason>) {
    for event in stream.events.iter() {
        match event {
            GenerationEvent::Token(t) => streamed.push(t),
            GenerationEvent::Finished(result) => {
                let reason = result.map(|out| {
                    assert_eq!(out.tokens, streamed);
                    out.finish_reason
                });
                return (streamed, reason);
            }
        }
    }
    panic!("the stream closed without a Finished event");
}

#[test]
fn the_worker_runs_generations_and_calls_in_order() {
    let worker = InferenceWorker::spawn(|| Ok(ScriptModel::new(vec![2, 7, 1, 8]))).unwrap();
    let params = SamplingParams::greedy(100, vec![STOP]);
    let stream = worker
        .generate_stream(GenerationRequest::new(vec![], tokens(&[9, 9]), params.clone()))
        .unwrap();
    let (streamed, reason) = collect(stream);
    assert_eq!(streamed, vec![2, 7, 1, 8]);
    assert_eq!(reason.unwrap(), FinishReason::Stop(STOP));
    assert_eq!(worker.call(|m| m.cache_len()).unwrap().wait().unwrap(), 6);

    // A second turn on the same cache, then a clear, queued back to back.
    let cached = vec![9, 9, 2, 7, 1, 8];
    let second = worker
        .generate_stream(GenerationRequest::new(cached, tokens(&[STOP]), params.clone()))
        .unwrap();
    let after = worker.call(|m| m.cache_len()).unwrap();
    let cleared = worker
        .call(|m| {
            m.clear();
            m.cache_len()
        })
        .unwrap();
    assert_eq!(second.wait().unwrap().tokens, vec![2, 7, 1, 8]);
    assert_eq!(after.wait().unwrap(), 11);
    assert_eq!(cleared.wait().unwrap(), 0);

    // Invalid parameters come back as the Finished error.
    let mut bad = params;
    bad.top_p = 2.0;
    let err = worker
        .generate_stream(GenerationRequest::new(vec![], tokens(&[1]), bad))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

#[test]
fn the_worker_reports_factory_errors() {
    let err = InferenceWorker::spawn(|| -> Result<ScriptModel> {
        Err(Error::InvalidDevice("tpu".to_owned()))
    })
    .unwrap_err();
    assert!(err.to_string().contains("tpu"), "{err}");
    let err = InferenceWorker::spawn(|| -> Result<ScriptModel> { panic!("factory") }).unwrap_err();
    assert!(matches!(err, Error::InferenceWorkerStopped(_)), "{err}");
}

#[test]
fn dropping_the_stream_stops_the_generation() {
    let mut model = ScriptModel::new(vec![]);
    model.script = vec![1; 10_000];
    let decodes = Arc::clone(&model.decodes);
    let worker = InferenceWorker::spawn(move || Ok(model)).unwrap();
    let stream = worker
        .generate_stream(GenerationRequest::new(
            vec![],
            tokens(&[2]),
            SamplingParams::greedy(10_000, vec![STOP]),
        ))
        .unwrap();
    let first = stream.events.recv().unwrap();
    assert!(matches!(first, GenerationEvent::Token(1)));
    drop(stream);
    // The next job runs only after the generation has stopped.
    let len = worker.call(|m| m.cache_len()).unwrap().wait().unwrap();
    assert!(len < 10_000, "generation went on to {len} positions");
    assert_eq!(len, 1 + decodes.load(Ordering::SeqCst));
}

#[test]
fn a_panicking_job_stops_the_worker_and_every_caller_hears_of_it() {
    let worker = InferenceWorker::spawn(|| Ok(ScriptModel::new(vec![1, 2, 3]))).unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let panicking = worker
        .call(move |_| {
            go_rx.recv().unwrap();
            panic!("scripted job panic");
        })
        .unwrap();
    let queued = worker
        .generate_stream(GenerationRequest::new(
            vec![],
            tokens(&[1]),
            SamplingParams::greedy(5, vec![STOP]),
        ))
        .unwrap();
    go_tx.send(()).unwrap();
    assert!(matches!(panicking.wait(), Err(Error::InferenceWorkerStopped(_))));
    let (streamed, result) = collect(queued);
    assert!(streamed.is_empty());
    assert!(matches!(result, Err(Error::InferenceWorkerStopped(_))));
    // The thread is gone: new work is refused (or, if the send raced the exit, dropped).
    std::thread::sleep(Duration::from_millis(50));
    match worker.call(|m| m.cache_len()) {
        Err(Error::InferenceWorkerStopped(_)) => {}
        Ok(reply) => assert!(reply.wait().is_err()),
        Err(other) => panic!("unexpected {other}"),
    }
}

#[test]
fn a_panic_inside_a_generation_finishes_it_with_an_error() {
    let mut model = ScriptModel::new(vec![1, 2, 3, 4]);
    model.panic_after = Some(2);
    let worker = InferenceWorker::spawn(move || Ok(model)).unwrap();
    let stream = worker
        .generate_stream(GenerationRequest::new(
            vec![],
            tokens(&[5]),
            SamplingParams::greedy(10, vec![STOP]),
        ))
        .unwrap();
    let (streamed, result) = collect(stream);
    // Tokens 1 and 2 were decoded; sampling 3 happened, its decode panicked.
    assert_eq!(streamed, vec![1, 2, 3]);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
}

#[test]
fn dropping_the_worker_cancels_the_running_generation_and_drops_the_queue() {
    let mut model = ScriptModel::new(vec![1; 100_000]);
    model.decode_delay = Duration::from_millis(1);
    let worker = InferenceWorker::spawn(move || Ok(model)).unwrap();
    let params = SamplingParams::greedy(100_000, vec![STOP]);
    let running = worker
        .generate_stream(GenerationRequest::new(vec![], tokens(&[2]), params.clone()))
        .unwrap();
    let queued =
        worker.generate_stream(GenerationRequest::new(vec![], tokens(&[2]), params)).unwrap();
    assert!(matches!(running.events.recv().unwrap(), GenerationEvent::Token(1)));
    drop(worker);
    let (streamed, result) = collect_after(running, vec![1]);
    assert!(streamed.len() < 100_000);
    assert_eq!(result.unwrap(), FinishReason::Cancelled);
    let (streamed, result) = collect(queued);
    assert!(streamed.is_empty());
    assert!(matches!(result, Err(Error::InferenceWorkerStopped(_))));
}
