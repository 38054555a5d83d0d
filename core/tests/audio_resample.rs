//! Resampling to 16 kHz: parity with torchaudio's `resample` (what upstream's `load_audio` uses)
//! and the physical properties a band-limited resampler must have.
//! Reference data: core/tests/fixtures/audio/resample_*, written by scripts/fixtures/mel.py.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use voxloop_core::audio::{decode_audio, resample_to_16k, AudioLimits};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio")
}

fn sine(rate: u32, freq: f64, amplitude: f64, seconds: f64) -> Vec<f32> {
    let n = (seconds * f64::from(rate)) as usize;
    (0..n)
        .map(|i| (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// The middle of a 16 kHz signal, 0.1 s away from either edge (where the zero padding shows).
fn middle(x: &[f32]) -> &[f32] {
    &x[1600..x.len() - 1600]
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

#[test]
fn matches_torchaudio_resample() {
    let reference: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join("resample_reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for rate in [8_000u32, 22_050, 44_100, 48_000] {
        let path = fixtures().join(format!("resample_{rate}.wav"));
        let decoded = decode_audio(path, &AudioLimits::default()).unwrap();
        assert_eq!(decoded.sample_rate, rate);
        let got = resample_to_16k(&decoded.samples, decoded.sample_rate).unwrap();
        let want = Vec::<f32>::try_from(reference[&rate.to_string()].to_kind(Kind::Float)).unwrap();
        assert_eq!(got.len(), want.len(), "{rate} Hz: output length");
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("{rate} Hz -> 16 kHz ({} samples): max abs err vs torchaudio {err:e}", got.len());
        assert!(err <= 1e-6, "{rate} Hz: max abs err {err} vs torchaudio");
    }
}

#[test]
fn a_1khz_sine_keeps_its_frequency_and_amplitude() {
    for rate in [44_100, 48_000, 22_050, 8_000] {
        let x = sine(rate, 1000.0, 0.5, 1.0);
        let y = resample_to_16k(&x, rate).unwrap();
        let want = sine(16_000, 1000.0, 0.5, 1.0);
        assert_eq!(y.len(), want.len());
        let (y, want) = (middle(&y), middle(&want));
        let dot: f64 = y.iter().zip(want).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let correlation = dot / (rms(y) * rms(want) * y.len() as f64);
        let gain = rms(y) / rms(want);
        println!("1 kHz at {rate} Hz: correlation {correlation:.7}, gain {gain:.5}");
        assert!(correlation > 0.9999, "{rate} Hz: correlation {correlation}");
        assert!((gain - 1.0).abs() < 0.005, "{rate} Hz: gain {gain}");
    }
}

#[test]
fn tones_above_the_new_nyquist_are_removed() {
    // torchaudio's filter (kept for parity) cuts off at 7.92 kHz with a wide transition band:
    // from 10 kHz on, the residue is more than 40 dB down.
    for rate in [44_100, 48_000] {
        for freq in [10_000.0, 12_000.0, 15_000.0] {
            let x = sine(rate, freq, 0.5, 1.0);
            let y = resample_to_16k(&x, rate).unwrap();
            let db = 20.0 * (rms(middle(&y)) / rms(&x)).log10();
            println!("{freq} Hz at {rate} Hz: {db:.1} dB");
            assert!(db < -40.0, "{freq} Hz at {rate} Hz only {db:.1} dB down");
        }
        let nine = resample_to_16k(&sine(rate, 9_000.0, 0.5, 1.0), rate).unwrap();
        let db = 20.0 * (rms(middle(&nine)) / (0.5 / 2f64.sqrt())).log10();
        println!("9 kHz at {rate} Hz: {db:.1} dB (transition band)");
        assert!(db < -10.0, "9 kHz at {rate} Hz: {db:.1} dB");
    }
}

#[test]
fn upsampling_does_not_invent_high_frequencies() {
    // 8 kHz -> 16 kHz: a 3 kHz tone must not produce its 5 kHz image.
    let y = resample_to_16k(&sine(8_000, 3000.0, 0.5, 1.0), 8_000).unwrap();
    let y = middle(&y);
    let image: f64 = {
        let (mut s, mut c) = (0.0, 0.0);
        for (j, &v) in y.iter().enumerate() {
            let phase = 2.0 * PI * 5000.0 * j as f64 / 16_000.0;
            s += f64::from(v) * phase.sin();
            c += f64::from(v) * phase.cos();
        }
        2.0 * (s * s + c * c).sqrt() / y.len() as f64
    };
    let db = 20.0 * (image / 0.5).log10();
    println!("5 kHz image of a 3 kHz tone upsampled from 8 kHz: {db:.1} dB");
    assert!(db < -40.0, "image at {db:.1} dB");
}
