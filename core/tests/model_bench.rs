//! Decode speed on a checkpoint written by `scripts/fixtures/llm.py --bench DIR`, for comparison
//! with the transformers figure that script prints (same shape, prompt, steps and threads).
//! Ignored by default; run with
//! `VOXLOOP_BENCH_CKPT=DIR cargo test -p voxloop-core --test model_bench -- --ignored --nocapture`.
//! It only prints timings (no timing assert).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use tch::{Device, Kind};
use voxloop_core::model::StepAudio2;

const PROMPT: usize = 32;
const STEPS: usize = 64;

#[test]
#[ignore = "benchmark: needs VOXLOOP_BENCH_CKPT"]
fn decode_speed() {
    let Some(dir) = std::env::var_os("VOXLOOP_BENCH_CKPT").map(PathBuf::from) else {
        eprintln!("VOXLOOP_BENCH_CKPT is not set; nothing to time");
        return;
    };
    tch::set_num_threads(2);
    let start = Instant::now();
    let mut model = StepAudio2::load(&dir, Device::Cpu, Kind::Float).unwrap();
    println!("loaded {} in {:.2} s", dir.display(), start.elapsed().as_secs_f64());
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 37 + 11) % 600).collect();
    for run in 0..5 {
        model.clear();
        let mut logits = model.prefill(&prompt, &[], u32::MAX).unwrap();
        let start = Instant::now();
        for _ in 0..STEPS {
            let next = logits.argmax(0, false).int64_value(&[]) as u32;
            logits = model.decode(next).unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        println!(
            "voxloop: run {run}: {:.1} tok/s decode (2 threads, {PROMPT}-token prompt, {STEPS} steps)",
            STEPS as f64 / took
        );
    }
}
