//! Parity of the prompt front end with upstream (fixtures from scripts/fixtures/prompt.py):
//! resampling to 16/24 kHz, the prompt mel (flashcosyvoice `mel_spectrogram`) and the CAM++
//! input (`kaldi.fbank` minus its time mean), for wavs at 24, 16 and 44.1 kHz.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use voxloop_voices::prompt::{kaldi_fbank, prompt_mel, speaker_fbank, PromptAudio};
use voxloop_voices::VoiceProfile;

const TOLERANCE: f64 = 1e-4;
const NAMES: [&str; 3] = ["voice_24k", "voice_16k", "voice_44k"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prompt")
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir().join("reference.safetensors")).unwrap().into_iter().collect()
}

fn load(name: &str) -> PromptAudio {
    PromptAudio::load(&dir().join(format!("{name}.wav"))).unwrap()
}

fn max_abs_diff(what: &str, ours: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(ours.size(), want.size(), "{what}: shapes differ");
    let diff = (ours.to_kind(Kind::Float) - want).abs().max().double_value(&[]);
    println!("{what}: max abs error {diff:.3e}");
    diff
}

#[test]
fn parity_resampling_to_16k_and_24k() {
    let refs = reference();
    for name in NAMES {
        let audio = load(name);
        let lengths = Vec::<i64>::try_from(&refs[&format!("{name}.lengths")]).unwrap();
        assert_eq!(audio.samples_16k().len() as i64, lengths[0], "{name}: 16 kHz length");
        assert_eq!(audio.samples_24k().len() as i64, lengths[1], "{name}: 24 kHz length");
        for (rate, samples) in [("16", audio.samples_16k()), ("24", audio.samples_24k())] {
            let want = &refs[&format!("{name}.s{rate}_head")];
            let head = Tensor::from_slice(&samples[..want.size()[0] as usize]);
            let err = max_abs_diff(&format!("{name} {rate} kHz samples"), &head, want);
            assert!(err < 1e-5, "{name}: {rate} kHz samples differ by {err}");
        }
    }
}

#[test]
fn parity_prompt_mel() {
    let refs = reference();
    for name in NAMES {
        let audio = load(name);
        let rows = prompt_mel(&audio).unwrap();
        assert!(rows.iter().all(|r| r.len() == 80));
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let ours = Tensor::from_slice(&flat).reshape([rows.len() as i64, 80]);
        let err = max_abs_diff(&format!("{name} prompt mel"), &ours, &refs[&format!("{name}.mel")]);
        assert!(err < TOLERANCE, "{name}: prompt mel differs by {err}");

        // The rows are what a profile takes: 55 frames fitted to 2 x 30 tokens.
        let profile = VoiceProfile::new(name, vec![1; 30], rows.clone(), vec![0.1; 192]).unwrap();
        assert_eq!(profile.prompt_mel.len(), 60);
        assert_eq!(profile.prompt_mel[..rows.len()], rows[..]);
    }
}

#[test]
fn parity_kaldi_fbank_and_speaker_features() {
    let refs = reference();
    for name in NAMES {
        let audio = load(name);
        let fbank = kaldi_fbank(audio.samples_16k()).unwrap();
        let err = max_abs_diff(&format!("{name} fbank"), &fbank, &refs[&format!("{name}.fbank")]);
        assert!(err < TOLERANCE, "{name}: fbank differs by {err}");

        let feat = speaker_fbank(&audio).unwrap();
        let want = &refs[&format!("{name}.spk_feat")];
        let err = max_abs_diff(&format!("{name} CAM++ input"), &feat, want);
        assert!(err < TOLERANCE, "{name}: CAM++ input differs by {err}");
    }
}
