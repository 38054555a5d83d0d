//! The Whisper-style log-mel spectrogram Step-Audio 2's audio encoder reads.
//!
//! Recipe (StepFun's `utils.py::log_mel_spectrogram`, identical in their vLLM fork's
//! `Step1fProcessor._log_mel_spectrogram`), for 16 kHz mono samples:
//!
//! 1. append 479 zero samples;
//! 2. STFT: `n_fft` 400 (25 ms), hop 160 (10 ms), periodic Hann window of 400, `center=True`
//!    (200 samples of *reflect* padding on each side: `torch.stft`'s default `pad_mode`),
//!    complex output;
//! 3. drop the last frame, take `|X|^2`;
//! 4. project onto 128 mel bands: `librosa.filters.mel(sr=16000, n_fft=400, n_mels=128)`
//!    (Slaney mel scale, Slaney area normalisation), computed here by [`mel_filters`];
//! 5. `log10(max(mel, 1e-10))`, floor at (the chunk's maximum − 8), then `(x + 4) / 4`.
//!
//! A chunk of `n` samples gives `floor((n + 479) / 160)` frames: 25 s gives 2502.
//!
//! Steps 2, 3 and 5 run in libtorch (`tch`) with the very operations upstream calls, so the
//! result matches PyTorch's to float32 rounding (max abs error ≤ 1e-4 is tested against fixtures
//! written by `scripts/fixtures/mel.py`).

use tch::{Device, Kind, Tensor};

use crate::Result;

/// Mel bands.
pub const N_MELS: usize = 128;
/// FFT size and window length in samples (25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Hop in samples (10 ms at 16 kHz: 100 frames per second).
pub const HOP: usize = 160;
/// Zero samples appended before the STFT (upstream's `padding=479`).
pub const RIGHT_PAD: usize = 479;
/// Frequency bins of the one-sided STFT.
pub const N_FREQS: usize = N_FFT / 2 + 1;

/// The mel filterbank, row-major `[N_MELS][N_FREQS]`, as `librosa.filters.mel(sr=16000,
/// n_fft=400, n_mels=128)` returns it (`htk=False`, `norm="slaney"`, fmin 0, fmax 8000).
///
/// Computed in f64 and rounded to f32 in the same two steps librosa takes (the triangle is
/// stored as f32, then scaled by the f64 area norm and stored as f32 again).
pub fn mel_filters() -> Vec<f32> {
    let sr = f64::from(super::SAMPLE_RATE);
    // This librosa version spaced the FFT bins with linspace (newer ones use rfftfreq, which
    // differs in the last bits; see `slaney_mel_filters`).
    slaney_mel_filters(&linspace(0.0, sr / 2.0, N_FREQS), N_MELS, 0.0, sr / 2.0)
}

/// A Slaney-style mel filterbank (`librosa.filters.mel` with `htk=False`, `norm="slaney"`:
/// each band scaled by 2 / its width in Hz) over the FFT bins at `fft_freqs` Hz, with `n_mels`
/// bands from `fmin` to `fmax`; row-major `[n_mels][fft_freqs.len()]` f32.
///
/// Computed in f64 and rounded to f32 in the same two steps librosa takes (the triangle is
/// stored as f32, then scaled by the f64 area norm and stored as f32 again). The bin
/// frequencies are the caller's because librosa versions differ there: `linspace(0, sr / 2,
/// n)` in older ones, `numpy.fft.rfftfreq(n_fft, 1 / sr)` in newer ones.
pub fn slaney_mel_filters(fft_freqs: &[f64], n_mels: usize, fmin: f64, fmax: f64) -> Vec<f32> {
    let mel_points = linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2);
    let mel_freqs: Vec<f64> = mel_points.into_iter().map(mel_to_hz).collect();

    let mut weights = Vec::with_capacity(n_mels * fft_freqs.len());
    for m in 0..n_mels {
        let (left, centre, right) = (mel_freqs[m], mel_freqs[m + 1], mel_freqs[m + 2]);
        let rising_width = centre - left;
        let falling_width = right - centre;
        let area_norm = 2.0 / (right - left);
        for &f in fft_freqs {
            let lower = -(left - f) / rising_width;
            let upper = (right - f) / falling_width;
            let tri = 0.0f64.max(lower.min(upper)) as f32;
            weights.push((f64::from(tri) * area_norm) as f32);
        }
    }
    weights
}

/// `numpy.linspace(start, stop, n)` with the endpoint: `start + i * step`, the last one exact.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

// Slaney's mel scale (librosa `htk=False`): linear below 1 kHz (200/3 Hz per mel), logarithmic
// above (27 mels per factor of 6.4 in frequency).
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// The log-mel spectrogram of one chunk of 16 kHz mono samples: a CPU f32 tensor
/// `[128, floor((n + 479) / 160)]`.
///
/// Any length works (even 0, which gives 2 frames of the floor value); callers feeding the model
/// split audio into 25-s chunks first (see [`super::log_mel_chunks`]).
pub fn log_mel_spectrogram(samples: &[f32]) -> Result<Tensor> {
    log_mel_spectrogram_padded(samples, RIGHT_PAD)
}

/// The same recipe with `right_pad` zero samples appended instead of 479: `[128, floor((n +
/// right_pad) / 160)]` frames (for n + right_pad ≥ 201).
///
/// With `right_pad = 0` this is Whisper's own `log_mel_spectrogram(audio, n_mels=128)`, which
/// the S3 speech tokenizer reads (`s3tokenizer.log_mel_spectrogram`, padding 0).
pub fn log_mel_spectrogram_padded(samples: &[f32], right_pad: usize) -> Result<Tensor> {
    let filters = Tensor::f_from_slice(&mel_filters())?.f_view([N_MELS as i64, N_FREQS as i64])?;
    log_mel_with(samples, right_pad, &filters)
}

pub(crate) fn log_mel_with(samples: &[f32], right_pad: usize, filters: &Tensor) -> Result<Tensor> {
    let n = samples.len() + right_pad;
    let mut padded = Vec::with_capacity(n);
    padded.extend_from_slice(samples);
    padded.resize(n, 0.0);

    let half = (N_FFT / 2) as i64;
    let audio = Tensor::f_from_slice(&padded)?
        .f_view([1, 1, n as i64])?
        .f_reflection_pad1d([half, half])?
        .f_view([-1])?;
    let window = Tensor::f_hann_window_periodic(N_FFT as i64, true, (Kind::Float, Device::Cpu))?;
    // Centre padding is done above (as torch.stft does in Python), so the STFT itself runs
    // with center=false; align_to_window is irrelevant when the window spans n_fft.
    let spec = audio.f_stft(
        N_FFT as i64,
        HOP as i64,
        N_FFT as i64,
        Some(&window),
        false,
        true,
        true,
        false,
    )?;
    let frames = spec.size()[1];
    let power = spec.f_narrow(1, 0, frames - 1)?.f_abs()?.f_pow_tensor_scalar(2)?;
    let mel = filters.f_matmul(&power)?;
    let log = mel.f_clamp_min(1e-10)?.f_log10()?;
    let floor = log.f_max()?.f_sub_scalar(8.0)?;
    let log = log.f_maximum(&floor)?;
    Ok(log.f_add_scalar(4.0)?.f_div_scalar(4.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9 * (1.0 + hz));
        }
    }

    #[test]
    fn filterbank_shape_and_coverage() {
        let w = mel_filters();
        assert_eq!(w.len(), N_MELS * N_FREQS);
        // Every band is non-empty and every weight is finite and non-negative.
        for m in 0..N_MELS {
            let row = &w[m * N_FREQS..(m + 1) * N_FREQS];
            assert!(row.iter().all(|x| x.is_finite() && *x >= 0.0));
            assert!(row.iter().any(|x| *x > 0.0), "band {m} is empty");
        }
    }

    #[test]
    fn frame_count_follows_the_padding_rule() {
        for n in [0usize, 1, 159, 160, 3419, 16_000] {
            let mel = log_mel_spectrogram(&vec![0.01; n]).unwrap();
            assert_eq!(mel.size(), [N_MELS as i64, ((n + RIGHT_PAD) / HOP) as i64], "n = {n}");
        }
    }
}
