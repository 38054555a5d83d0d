//! The per-voice stream-setup cache: streams that start from a kept setup render exactly what
//! a stream that computes its setup renders (upstream computes it for every stream), including
//! after a voice swap and after eviction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tch::Device;
use voxloop_voices::{SetupCacheStats, Token2Wav, VoiceProfile};

/// Another voice made from the fixture one (other tokens, mel and speaker).
fn variant(voice: &VoiceProfile, name: &str) -> VoiceProfile {
    let tokens = voice.prompt_tokens.iter().rev().map(|t| (t * 7 + 11) % 6561).collect();
    let mel = voice.prompt_mel.iter().rev().map(|r| r.iter().map(|v| v * 0.8 - 1.0).collect());
    let spk = voice.speaker_embedding.iter().map(|v| -v * 0.8).collect();
    VoiceProfile::new(name, tokens, mel.collect(), spk).unwrap()
}

struct Fixture {
    model: Token2Wav,
    a: VoiceProfile,
    b: VoiceProfile,
    tokens: Vec<i64>,
}

fn fixture() -> Fixture {
    let inputs = support::tensors("inputs.safetensors");
    let mut model = Token2Wav::load(&support::dir(), Device::Cpu).unwrap();
    model.flow_mut().set_noise(&inputs["flow_noise"]).unwrap();
    // Fixed NSF numbers: the waveforms are deterministic and compared exactly.
    model.set_nsf_random(support::nsf_random(&inputs));
    let a = support::profile(&inputs);
    let b = variant(&a, "other");
    Fixture { model, a, b, tokens: support::ints(&inputs["tokens"]) }
}

/// Streams `tokens` in `voice` in chunks of 7 pushed tokens; swaps to `swap_to` after the
/// first third when given. Returns all samples.
fn render(
    model: &Token2Wav,
    voice: &VoiceProfile,
    swap_to: Option<&VoiceProfile>,
    tokens: &[i64],
) -> Vec<f32> {
    let mut stream = model.stream(voice).unwrap();
    let mut out = Vec::new();
    for (i, piece) in tokens.chunks(7).enumerate() {
        if i == tokens.len() / 21 {
            if let Some(next) = swap_to {
                stream.set_voice(next);
            }
        }
        out.extend(stream.push(piece).unwrap());
    }
    out.extend(stream.finish().unwrap());
    out
}

#[test]
fn kept_setups_render_exactly_what_fresh_setups_render() {
    let f = fixture();
    f.model.set_setup_cache_capacity(0);
    let fresh_a = render(&f.model, &f.a, None, &f.tokens);
    let fresh_b = render(&f.model, &f.b, None, &f.tokens);
    let fresh_swap = render(&f.model, &f.a, Some(&f.b), &f.tokens);
    assert_eq!(f.model.setup_cache_stats(), SetupCacheStats { hits: 0, misses: 4, voices: 0 });
    assert_ne!(fresh_a, fresh_b, "the two voices differ");

    f.model.set_setup_cache_capacity(4);
    assert_eq!(render(&f.model, &f.a, None, &f.tokens), fresh_a, "first stream in a");
    assert_eq!(render(&f.model, &f.a, None, &f.tokens), fresh_a, "second stream in a (kept)");
    assert_eq!(render(&f.model, &f.b, None, &f.tokens), fresh_b, "first stream in b");
    assert_eq!(render(&f.model, &f.a, Some(&f.b), &f.tokens), fresh_swap, "swap a → b (both kept)");
    let stats = f.model.setup_cache_stats();
    assert_eq!((stats.hits, stats.misses - 4, stats.voices), (3, 2, 2), "{stats:?}");
}

#[test]
fn least_recently_used_setup_is_evicted() {
    let f = fixture();
    f.model.set_setup_cache_capacity(0);
    let fresh_a = render(&f.model, &f.a, None, &f.tokens[..30]);
    f.model.set_setup_cache_capacity(1);
    render(&f.model, &f.a, None, &f.tokens[..30]); // miss, keeps a
    render(&f.model, &f.b, None, &f.tokens[..30]); // miss, evicts a
    assert_eq!(render(&f.model, &f.a, None, &f.tokens[..30]), fresh_a); // miss again
    let stats = f.model.setup_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.voices), (0, 4, 1), "{stats:?}");

    // A profile replaced under the same name is a different setup.
    let mut changed = f.a.clone();
    changed.speaker_embedding[0] += 0.5;
    render(&f.model, &changed, None, &f.tokens[..30]);
    assert_eq!(f.model.setup_cache_stats().misses, 5);
}
