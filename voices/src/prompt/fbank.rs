//! The CAM++ speaker model's input: Kaldi log-mel filterbank features of the 16 kHz prompt.
//!
//! Upstream (`Token2wav._prepare_prompt`) calls `torchaudio.compliance.kaldi.fbank(audio,
//! num_mel_bins=80, dither=0, sample_frequency=16000)` on the float samples (full scale ±1, not
//! Kaldi's ±32768) and subtracts the mean over time before `campplus.onnx`. torchaudio's
//! defaults, which the other options take:
//!
//! 1. frames of 25 ms (400 samples) every 10 ms (160), `snip_edges`: only whole frames,
//!    `1 + (n − 400) / 160` of them;
//! 2. per frame: subtract its mean (`remove_dc_offset`), pre-emphasis `x[j] −= 0.97 · x[j − 1]`
//!    with `x[−1] = x[0]`, multiply by the Povey window (symmetric Hann to the power 0.85);
//! 3. zero-pad to 512 (`round_to_power_of_two`), real FFT, power `|X|²` (`use_power`);
//! 4. 80 triangular bands equally spaced on Kaldi's mel scale `1127 · ln(1 + f / 700)` between
//!    20 Hz (`low_freq`) and 8 kHz (`high_freq` 0 = Nyquist), computed in f32 as torchaudio does
//!    ([`kaldi_mel_banks`]), the Nyquist bin weighted 0;
//! 5. `ln(max(x, f32::EPSILON))` (`use_log_fbank`). No energy column (`use_energy` false), no
//!    dither, no VTLN (`vtln_warp` 1).
//!
//! Every step runs in libtorch with the operations torchaudio calls, so the result matches to
//! float32 rounding (tested against `scripts/fixtures/prompt.py`).

use tch::{Device, Kind, Tensor};

use super::{PromptAudio, SPEAKER_SAMPLE_RATE};
use crate::{Error, Result};

/// Mel bands of the fbank (`num_mel_bins`).
pub const FBANK_BINS: usize = 80;
/// Frame length in samples (25 ms at 16 kHz).
const FRAME: i64 = 400;
/// Frame shift in samples (10 ms at 16 kHz).
const SHIFT: i64 = 160;
/// FFT size: the frame length rounded up to a power of two.
const PADDED: i64 = 512;
const PREEMPHASIS: f64 = 0.97;
const POVEY_POWER: f64 = 0.85;
const LOW_HZ: f64 = 20.0;

/// The CAM++ input of a checked prompt: [`kaldi_fbank`] of its 16 kHz samples minus the mean
/// over frames, a CPU f32 tensor `[frames, 80]` (`campplus.onnx` takes it as `[1, frames, 80]`).
pub fn speaker_fbank(audio: &PromptAudio) -> Result<Tensor> {
    let fbank = kaldi_fbank(audio.samples_16k())?;
    let mean = fbank.f_mean_dim([0i64].as_slice(), true, None::<Kind>)?;
    Ok(fbank.f_sub(&mean)?)
}

/// `torchaudio.compliance.kaldi.fbank(x, num_mel_bins=80, dither=0, sample_frequency=16000)` of
/// 16 kHz mono samples: a CPU f32 tensor `[1 + (n − 400) / 160, 80]`. Needs at least one
/// 25-ms frame (400 samples).
pub fn kaldi_fbank(samples_16k: &[f32]) -> Result<Tensor> {
    if (samples_16k.len() as i64) < FRAME {
        return Err(Error::InvalidInput(format!(
            "fbank: {} samples at 16 kHz, at least {FRAME} (one 25-ms frame) needed",
            samples_16k.len()
        )));
    }
    let opts = (Kind::Float, Device::Cpu);
    let frames = Tensor::f_from_slice(samples_16k)?.f_unfold(0, FRAME, SHIFT)?;
    let mean = frames.f_mean_dim([1i64].as_slice(), true, None::<Kind>)?;
    let frames = frames.f_sub(&mean)?;
    let previous = frames
        .f_unsqueeze(0)?
        .f_replication_pad1d([1, 0])?
        .f_squeeze_dim(0)?
        .f_narrow(1, 0, FRAME)?;
    let frames = frames.f_sub(&previous.f_mul_scalar(PREEMPHASIS)?)?;
    let window = Tensor::f_hann_window_periodic(FRAME, false, opts)?
        .f_pow_tensor_scalar(POVEY_POWER)?
        .f_unsqueeze(0)?;
    let frames = frames.f_mul(&window)?.f_constant_pad_nd([0, PADDED - FRAME])?;
    let power =
        frames.f_fft_rfft(None::<i64>, -1, "backward")?.f_abs()?.f_pow_tensor_scalar(2.0)?;
    let banks = kaldi_mel_banks()?.f_constant_pad_nd([0, 1])?;
    let mel = power.f_mm(&banks.f_tr()?)?;
    let floor = Tensor::f_from_slice(&[f32::EPSILON])?;
    Ok(mel.f_maximum(&floor)?.f_log()?)
}

/// Kaldi's triangular mel bands for the fbank above, `[80, 256]` f32 (FFT bins 0..256 of a
/// 512-point FFT at 16 kHz; the caller appends the zero-weighted Nyquist bin). Built with the
/// tensor operations torchaudio's `get_mel_banks` uses, in f32 as there: band edges
/// `mel_low + k · Δ` with `Δ = (mel(8000) − mel(20)) / 81`, bin centres `k · 31.25` Hz.
pub fn kaldi_mel_banks() -> Result<Tensor> {
    let opts = (Kind::Float, Device::Cpu);
    let nyquist = f64::from(SPEAKER_SAMPLE_RATE) / 2.0;
    let kaldi_mel = |hz: f64| 1127.0 * (1.0 + hz / 700.0).ln();
    let mel_low = kaldi_mel(LOW_HZ);
    let mel_high = kaldi_mel(nyquist);
    let delta = (mel_high - mel_low) / (FBANK_BINS as f64 + 1.0);
    let band = Tensor::f_arange(FBANK_BINS as i64, (Kind::Int64, Device::Cpu))?.f_unsqueeze(1)?;
    let left = band.f_mul_scalar(delta)?.f_add_scalar(mel_low)?;
    let centre = band.f_add_scalar(1.0)?.f_mul_scalar(delta)?.f_add_scalar(mel_low)?;
    let right = band.f_add_scalar(2.0)?.f_mul_scalar(delta)?.f_add_scalar(mel_low)?;
    let bin_hz = f64::from(SPEAKER_SAMPLE_RATE) / PADDED as f64;
    let bin_mel = Tensor::f_arange(PADDED / 2, opts)?
        .f_mul_scalar(bin_hz)?
        .f_div_scalar(700.0)?
        .f_add_scalar(1.0)?
        .f_log()?
        .f_mul_scalar(1127.0)?
        .f_unsqueeze(0)?;
    let rising = bin_mel.f_sub(&left)?.f_div(&centre.f_sub(&left)?)?;
    let falling = right.f_sub(&bin_mel)?.f_div(&right.f_sub(&centre)?)?;
    Ok(rising.f_minimum(&falling)?.f_maximum(&Tensor::f_zeros([1], opts)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_snips_edges() {
        for (n, frames) in [(400usize, 1i64), (559, 1), (560, 2), (16_000, 98)] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 / 1000.0).collect();
            assert_eq!(kaldi_fbank(&x).unwrap().size(), [frames, 80], "n = {n}");
        }
        assert!(kaldi_fbank(&[0.1; 399]).is_err());
    }

    #[test]
    fn banks_are_triangles_within_20_hz_to_8_khz() {
        let banks = kaldi_mel_banks().unwrap();
        assert_eq!(banks.size(), [80, 256]);
        let rows = Vec::<Vec<f32>>::try_from(banks).unwrap();
        for (m, row) in rows.iter().enumerate() {
            assert!(row[0] == 0.0, "band {m} reaches DC");
            let peak = row.iter().copied().fold(0.0f32, f32::max);
            assert!(peak > 0.0 && peak <= 1.0, "band {m}: peak {peak}");
        }
    }

    #[test]
    fn silence_hits_the_epsilon_floor() {
        let fbank = kaldi_fbank(&[0.0; 1_000]).unwrap();
        let floor = f64::from(f32::EPSILON).ln();
        assert!((fbank.max().double_value(&[]) - floor).abs() < 1e-6);
    }
}
