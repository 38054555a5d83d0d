//! The `speaker` vector: a spectral fingerprint of a voice, for "voices like this one".
//!
//! This is **not** a trained speaker encoder (none is obtainable from the registries this
//! project may use). It is the per-band mean and spread of the 128-band log-mel spectrogram
//! (the same front end the speech LLM uses, [`voxloop_core::audio`]) over the active frames of
//! the first [`MAX_SECONDS`] of audio, each half centred on its own mean and the whole
//! L2-normalised. It captures the long-term spectral envelope — brightness, where the energy of
//! the voice sits, breathiness — so a child's voice is closer to another child's than to a deep
//! male voice; it does not identify speakers and it is sensitive to the recording channel.
//! A real speaker model can replace it behind the same `speaker` vector name: the dimension and
//! [`SPEAKER_ID`] are recorded in the index metadata.

use voxloop_core::audio::{log_mel_spectrogram, resample_to_16k, N_MELS, SAMPLE_RATE};

use crate::{Error, Result};

/// Identifier of this fingerprint in index metadata.
pub const SPEAKER_ID: &str = "logmel-stats-v1";
/// Dimension of the fingerprint: mean and standard deviation of each mel band.
pub const SPEAKER_DIM: usize = 2 * N_MELS;
/// Only the first this-many seconds are analysed.
pub const MAX_SECONDS: usize = 30;
/// Frames quieter than the loudest frame by more than this (in the log-mel's normalised units,
/// where 1.0 is 40 dB) are treated as silence.
const ACTIVE_RANGE: f64 = 0.75;

/// The fingerprint of mono `samples` at `sample_rate` Hz; `name` labels errors.
pub fn fingerprint(samples: &[f32], sample_rate: u32, name: &str) -> Result<Vec<f32>> {
    let audio = resample_to_16k(samples, sample_rate)?;
    let audio = &audio[..audio.len().min(MAX_SECONDS * SAMPLE_RATE as usize)];
    if audio.len() < SAMPLE_RATE as usize / 10 {
        return Err(Error::InvalidItem {
            item: name.to_string(),
            message: "too short for a speaker fingerprint (under 0.1 s)".into(),
        });
    }
    let mel = log_mel_spectrogram(audio)?; // [128, T]
    let frames = mel.size()[1] as usize;
    let values: Vec<f32> = Vec::<f32>::try_from(mel.f_contiguous()?.f_flatten(0, -1)?)?;
    let at = |band: usize, frame: usize| f64::from(values[band * frames + frame]);

    let frame_level: Vec<f64> =
        (0..frames).map(|t| (0..N_MELS).map(|b| at(b, t)).sum::<f64>() / N_MELS as f64).collect();
    let loudest = frame_level.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut active: Vec<usize> =
        (0..frames).filter(|t| frame_level[*t] >= loudest - ACTIVE_RANGE).collect();
    if active.len() < 3 {
        active = (0..frames).collect();
    }
    let n = active.len() as f64;
    let mut mean = vec![0f64; N_MELS];
    let mut std = vec![0f64; N_MELS];
    for b in 0..N_MELS {
        let m = active.iter().map(|t| at(b, *t)).sum::<f64>() / n;
        let var = active.iter().map(|t| (at(b, *t) - m).powi(2)).sum::<f64>() / n;
        mean[b] = m;
        std[b] = var.sqrt();
    }
    let centre = |v: &mut Vec<f64>| {
        let c = v.iter().sum::<f64>() / v.len() as f64;
        v.iter_mut().for_each(|x| *x -= c);
    };
    centre(&mut mean);
    centre(&mut std);
    let mut out: Vec<f64> = mean.into_iter().chain(std).collect();
    let norm = out.iter().map(|x| x * x).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 1e-9) {
        return Err(Error::InvalidItem {
            item: name.to_string(),
            message: "silent or spectrally flat audio has no speaker fingerprint".into(),
        });
    }
    out.iter_mut().for_each(|x| *x /= norm);
    Ok(out.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;

    fn harmonic(f0: f32, rate: u32, seconds: f32, brightness: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                (1..12)
                    .map(|h| {
                        let h = h as f32;
                        (2.0 * std::f32::consts::PI * f0 * h * t).sin() * brightness.powf(h) * 0.2
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn similar_voices_are_closer_than_different_ones() {
        let low = fingerprint(&harmonic(110.0, 16_000, 1.0, 0.5), 16_000, "low").unwrap();
        let low2 = fingerprint(&harmonic(115.0, 22_050, 1.2, 0.5), 22_050, "low2").unwrap();
        let high = fingerprint(&harmonic(320.0, 16_000, 1.0, 0.9), 16_000, "high").unwrap();
        assert_eq!(low.len(), SPEAKER_DIM);
        let norm: f32 = low.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(
            cosine(&low, &low2) > cosine(&low, &high) + 0.1,
            "{} vs {}",
            cosine(&low, &low2),
            cosine(&low, &high)
        );
    }

    #[test]
    fn silence_and_tiny_inputs_are_errors() {
        assert!(fingerprint(&vec![0.0; 16_000], 16_000, "silence").is_err());
        let err = fingerprint(&[0.1; 100], 16_000, "tiny.wav").unwrap_err().to_string();
        assert!(err.contains("tiny.wav"), "{err}");
    }
}
