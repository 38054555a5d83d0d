//! # A voice from a recording, then speech in it
//!
//! ```text
//! cargo run --example voice_clone [TOKEN2WAV_DIR [RECORDING]]
//! ```
//!
//! Step-Audio 2 speaks in speech tokens; token2wav turns them into audio in the timbre of a
//! *voice profile*. This program makes a profile from a recording, keeps it in a voice library,
//! and renders the same tokens in it twice: all at once, and streamed chunk by chunk as the
//! service does while the model is still generating.
//!
//! Point it at the `token2wav/` directory of Step-Audio-2-mini (it holds `flow.yaml`,
//! `flow.pt`, `hift.pt`, `campplus.onnx` and `speech_tokenizer_v2_25hz.onnx`) and a recording
//! of 1–30 s of one speaker. Without arguments it uses the tiny random-weight models of the
//! test fixtures: the "speech" is noise, but every step is the real one.
//!
//! ONNX Runtime comes from `$ORT_DYLIB_PATH` (`export ORT_DYLIB_PATH=$(scripts/onnxruntime.sh)`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use tch::Device;
use voxloop_voices::extract::{ExtractorOptions, ProfileExtractor};
use voxloop_voices::prompt::PromptAudio;
use voxloop_voices::token2wav::{write_wav, CHUNK_TOKENS};
use voxloop_voices::{Token2Wav, VoiceLibrary};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let release = args.next();
    let recording =
        args.next().unwrap_or(root.join("voices/tests/fixtures/profile/voice_stereo_22k.wav"));
    // The release keeps all five files in one directory; the fixtures keep the ONNX models
    // apart from the flow and vocoder.
    let (onnx_dir, token2wav_dir) = match release {
        Some(dir) => (dir.clone(), dir),
        None => (
            root.join("voices/tests/fixtures/profile"),
            root.join("voices/tests/fixtures/token2wav"),
        ),
    };

    // ## 1. The recording, checked
    //
    // Not audio, silent, under 1 s or over 30 s are refused here with a message naming the
    // file, before any model runs.
    let audio = PromptAudio::load(&recording)?;
    println!(
        "{}: {:.2} s, {} channel(s) at {} Hz, {:.1} dBFS",
        recording.display(),
        audio.seconds(),
        audio.channels(),
        audio.source_rate(),
        audio.rms_dbfs()
    );

    // ## 2. The profile: speech tokens, speaker embedding, prompt mel
    //
    // The S3 tokenizer reads a Whisper log-mel of the 16 kHz audio and writes 25 tokens per
    // second; CAM++ reads a Kaldi fbank and writes a 192-d x-vector; the prompt mel is the
    // 24 kHz mel token2wav continues from. Both ONNX models run on ONNX Runtime.
    let extractor = ProfileExtractor::from_dir(&onnx_dir, &ExtractorOptions::default())
        .context("loading the ONNX models (is ORT_DYLIB_PATH set?)")?;
    let mut profile = extractor.profile("cloned", &audio)?;
    profile.description = "a voice cloned from a recording".into();
    println!(
        "profile: {} prompt tokens ({} distinct), {} mel frames, |x-vector| {:.3}",
        profile.prompt_tokens.len(),
        profile.prompt_tokens.iter().collect::<std::collections::BTreeSet<_>>().len(),
        profile.prompt_mel.len(),
        profile.speaker_embedding.iter().map(|v| v * v).sum::<f32>().sqrt()
    );

    // ## 3. Kept in a library
    //
    // A library is a directory of profile files; writes are atomic, so a crash never leaves
    // half a profile. `voxloop voice add` does steps 1–3 and registers the voice in the audio
    // index, where voice swap finds it by description.
    let scratch = tempfile::tempdir()?;
    let mut library = VoiceLibrary::open(&scratch.path().join("voices"))?;
    let voice = library.add(profile)?;
    let reopened = VoiceLibrary::open(&scratch.path().join("voices"))?;
    assert_eq!(reopened.get("cloned").map(|v| v.as_ref()), Some(voice.as_ref()));

    // ## 4. Speech in that voice
    //
    // Two seconds of speech tokens (here: the prompt's own, played back), rendered offline and
    // streamed in 25-token chunks.
    let model = Token2Wav::load(&token2wav_dir, Device::Cpu)?;
    // The vocoder's source noise comes from libtorch's global RNG, as upstream's does; seeded
    // here so the render, and the checks on it, are the same on every run (an unseeded draw
    // on these random weights can give non-finite samples now and then).
    tch::manual_seed(7);
    let tokens: Vec<i64> = voice.prompt_tokens.iter().copied().cycle().take(50).collect();
    let offline = model.synthesize(&tokens, &voice)?;
    let mut stream = model.stream(&voice)?;
    let mut streamed = Vec::new();
    let mut first_chunk = None;
    for piece in tokens.chunks(5) {
        let samples = stream.push(piece)?;
        if !samples.is_empty() && first_chunk.is_none() {
            first_chunk = Some(samples.len());
        }
        streamed.extend(samples);
    }
    streamed.extend(stream.finish()?);
    let out = scratch.path().join("cloned.wav");
    write_wav(&out, &streamed)?;
    println!(
        "{} tokens → {} samples offline, {} streamed (first chunk {} samples after {} tokens)",
        tokens.len(),
        offline.len(),
        streamed.len(),
        first_chunk.unwrap_or(0),
        CHUNK_TOKENS + 3
    );

    // Offline: 2 mel frames per token, 480 samples per frame at 24 kHz. Streaming adds the
    // vocoder's 3840-sample lead-in of its first chunk.
    assert_eq!(offline.len(), tokens.len() * 2 * 480);
    assert_eq!(streamed.len(), offline.len() + 3840);
    assert!(streamed.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    assert!(std::fs::metadata(&out)?.len() > 44);
    Ok(())
}
