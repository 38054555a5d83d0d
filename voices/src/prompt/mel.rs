//! The prompt mel: what token2wav's flow reads as the prompt region of its condition.
//!
//! Recipe (flashcosyvoice `utils/audio.py::mel_spectrogram` at the defaults `Token2wav` calls it
//! with), for 24 kHz mono samples:
//!
//! 1. reflect-pad `(n_fft − hop) / 2 = 720` samples on each side (`F.pad(..., mode="reflect")`);
//! 2. STFT, `center=False`: `n_fft` 1920 (80 ms), hop 480 (20 ms, 50 frames per second),
//!    periodic Hann window of 1920, one-sided, complex;
//! 3. magnitude `sqrt(re² + im² + 1e-9)`;
//! 4. project onto 80 mel bands: `librosa.filters.mel(sr=24000, n_fft=1920, n_mels=80, fmin=0,
//!    fmax=8000)` (Slaney scale, Slaney area normalisation), [`librosa_mel_filters`];
//! 5. `ln(max(x, 1e-5))` (`spectral_normalize_torch`).
//!
//! `n` samples (n > 720) give `(n − 480) / 480 + 1` frames (integer division). Steps 1–3 and 5
//! run in libtorch with the operations upstream calls, so the output matches PyTorch's to
//! float32 rounding (tested against `scripts/fixtures/prompt.py`).

use tch::{Device, Kind, Tensor};
use voxloop_core::audio::slaney_mel_filters;

use super::PromptAudio;
use crate::profile::MEL_BINS;
use crate::{Error, Result};

/// FFT size and window length of the prompt mel, in samples at 24 kHz.
pub const MEL_N_FFT: usize = 1920;
/// Hop of the prompt mel in samples at 24 kHz (50 frames per second: 2 per speech token).
pub const MEL_HOP: usize = 480;
/// Highest frequency of the mel bands, in Hz.
const F_MAX: f64 = 8000.0;
/// Smallest magnitude before the log.
const LOG_FLOOR: f64 = 1e-5;
/// Added to the power before the square root.
const MAGNITUDE_EPS: f64 = 1e-9;

/// The prompt mel of a checked prompt, `[frames][80]`, 50 frames per second: the rows
/// [`crate::VoiceProfile::new`] takes (it fits them to twice the prompt's token count).
pub fn prompt_mel(audio: &PromptAudio) -> Result<Vec<Vec<f32>>> {
    Ok(Vec::<Vec<f32>>::try_from(&prompt_mel_tensor(audio.samples_24k())?)?)
}

/// The prompt mel of 24 kHz mono samples as a CPU f32 tensor `[frames, 80]`. Needs more than
/// 720 samples (the reflect padding); [`PromptAudio`] guarantees far more.
pub fn prompt_mel_tensor(samples_24k: &[f32]) -> Result<Tensor> {
    let pad = (MEL_N_FFT - MEL_HOP) / 2;
    if samples_24k.len() <= pad {
        return Err(Error::InvalidInput(format!(
            "prompt mel: {} samples at 24 kHz, more than {pad} needed",
            samples_24k.len()
        )));
    }
    let n = samples_24k.len() as i64;
    let audio = Tensor::f_from_slice(samples_24k)?
        .f_view([1, 1, n])?
        .f_reflection_pad1d([pad as i64, pad as i64])?
        .f_view([-1])?;
    let window =
        Tensor::f_hann_window_periodic(MEL_N_FFT as i64, true, (Kind::Float, Device::Cpu))?;
    let spec = audio.f_stft(
        MEL_N_FFT as i64,
        MEL_HOP as i64,
        MEL_N_FFT as i64,
        Some(&window),
        false,
        true,
        true,
        false,
    )?;
    let magnitude = spec
        .f_view_as_real()?
        .f_pow_tensor_scalar(2)?
        .f_sum_dim_intlist(-1, false, None::<Kind>)?
        .f_add_scalar(MAGNITUDE_EPS)?
        .f_sqrt()?;
    let filters = Tensor::f_from_slice(&librosa_mel_filters(
        f64::from(super::MEL_SAMPLE_RATE),
        MEL_N_FFT,
        MEL_BINS,
        0.0,
        F_MAX,
    ))?
    .f_view([MEL_BINS as i64, (MEL_N_FFT / 2 + 1) as i64])?;
    let mel = filters.f_matmul(&magnitude)?.f_clamp_min(LOG_FLOOR)?.f_log()?;
    Ok(mel.f_transpose(0, 1)?.f_contiguous()?)
}

/// A mel filterbank as `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` returns it
/// (`htk=False`, `norm="slaney"`), row-major `[n_mels][n_fft / 2 + 1]` f32. The FFT bin
/// frequencies are `numpy.fft.rfftfreq(n_fft, 1 / sr)`, i.e. `k · (1 / (n_fft · (1 / sr)))`,
/// as the librosa upstream's matcha code runs with.
pub fn librosa_mel_filters(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<f32> {
    let bin_hz = 1.0 / (n_fft as f64 * (1.0 / sr));
    let fft_freqs: Vec<f64> = (0..n_fft / 2 + 1).map(|k| k as f64 * bin_hz).collect();
    slaney_mel_filters(&fft_freqs, n_mels, fmin, fmax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_core_for_whisper_settings() {
        // voxloop-core computes the 16-kHz/400/128 bank (parity-tested against librosa there).
        let ours = librosa_mel_filters(16_000.0, 400, 128, 0.0, 8_000.0);
        let core = voxloop_core::audio::mel_filters();
        assert_eq!(ours.len(), core.len());
        let worst = ours.iter().zip(&core).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        // librosa 0.11 spaces the FFT bins with rfftfreq, core with linspace: a few f32 ulps.
        assert!(worst < 1e-8, "max difference {worst}");
    }

    #[test]
    fn prompt_filters_cover_0_to_8k() {
        let w = librosa_mel_filters(24_000.0, MEL_N_FFT, MEL_BINS, 0.0, F_MAX);
        let n_freqs = MEL_N_FFT / 2 + 1;
        assert_eq!(w.len(), MEL_BINS * n_freqs);
        for m in 0..MEL_BINS {
            let row = &w[m * n_freqs..(m + 1) * n_freqs];
            assert!(row.iter().any(|&x| x > 0.0), "band {m} is empty");
            // Nothing above 8 kHz (bin 640 of 12.5 Hz).
            assert!(row[641..].iter().all(|&x| x == 0.0), "band {m} reaches past fmax");
        }
    }

    #[test]
    fn frame_count_and_floor() {
        for n in [721usize, 959, 960, 1439, 24_000, 26_437] {
            let mel = prompt_mel_tensor(&vec![0.0; n]).unwrap();
            assert_eq!(mel.size(), [((n - 480) / 480 + 1) as i64, 80], "n = {n}");
        }
        // Silence: every band sees magnitude sqrt(1e-9) ≈ 3.2e-5 times a band weight sum of
        // ~0.08, under the 1e-5 floor: ln(1e-5) everywhere.
        let mel = prompt_mel_tensor(&[0.0; 2_000]).unwrap();
        let floor = LOG_FLOOR.ln();
        assert!((mel.max().double_value(&[]) - floor).abs() < 1e-5);
        assert!((mel.min().double_value(&[]) - floor).abs() < 1e-5);
        assert!(prompt_mel_tensor(&[0.0; 720]).is_err());
    }
}
