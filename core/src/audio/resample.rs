//! Band-limited resampling (to 16 kHz for the model, or between any two rates), the same filter
//! as upstream's.
//!
//! StepFun's `load_audio` resamples with `torchaudio.transforms.Resample(orig, 16000)` at its
//! defaults: a polyphase windowed-sinc filter, Hann window, 6 zero crossings, cut-off at 0.99 of
//! the lower Nyquist frequency. This module builds the same filter taps (in f64, rounded to f32 as
//! torchaudio does) and applies them with f64 accumulation, so its output matches torchaudio's to
//! float32 rounding, with the same output length `ceil(n * 16000 / rate)`. (Calling
//! `torchaudio.functional.resample` on a float32 tensor instead builds the taps in float32 and
//! moves the output by up to ~1e-5; the transform is what upstream runs.)
//!
//! Known property of that filter, kept for parity: its transition band is wide. Tones between
//! 7.92 and ~9.5 kHz in the source are only partly removed (a 9 kHz tone at 48 kHz comes out
//! ~17 dB down, aliased to 7 kHz); from ~10 kHz on they are attenuated by more than 40 dB.

use crate::audio::decode::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use crate::audio::SAMPLE_RATE;
use crate::{Error, Result};

/// Zero crossings of the sinc on each side (torchaudio's `lowpass_filter_width`).
const ZERO_CROSSINGS: f64 = 6.0;
/// Cut-off as a fraction of the lower Nyquist frequency (torchaudio's `rolloff`).
const ROLLOFF: f64 = 0.99;

/// Resamples mono audio from `rate` Hz to 16 kHz. Returns the input unchanged when it is already
/// at 16 kHz.
pub fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>> {
    resample(samples, rate, SAMPLE_RATE)
}

/// Resamples mono audio from `from` Hz to `to` Hz (up or down) with the filter described in the
/// module docs: `torchaudio.transforms.Resample(from, to)` at its defaults, output length
/// `ceil(n * to / from)`. Returns the input unchanged when the rates are equal, as torchaudio
/// does. Both rates must lie in [`MIN_SAMPLE_RATE`]`..=`[`MAX_SAMPLE_RATE`].
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    for (what, rate) in [("resampler input", from), ("resampler output", to)] {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(Error::AudioSampleRate {
                input: what.to_string(),
                rate: u64::from(rate),
                min: MIN_SAMPLE_RATE,
                max: MAX_SAMPLE_RATE,
            });
        }
    }
    if from == to {
        return Ok(samples.to_vec());
    }
    Ok(PolyphaseFilter::new(from, to).apply(samples))
}

/// The output length torchaudio produces: `ceil(n * to / from)`.
pub(crate) fn output_len(n: usize, from: u32, to: u32) -> usize {
    let g = gcd(from, to);
    let (from, to) = (u128::from(from / g), u128::from(to / g));
    let n = n as u128;
    ((n * to).div_ceil(from)) as usize
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One FIR filter per output phase. After reducing the rates by their gcd to `from`/`to`,
/// output `k * to + p` is the dot product of phase `p`'s taps with the input starting at
/// `k * from + first - width` (inputs outside the signal count as zeros).
struct PolyphaseFilter {
    from: usize,
    width: usize,
    /// Per phase: index of the first non-zero tap within the `2 * width + from` long kernel.
    first: Vec<usize>,
    /// Per phase: its non-zero taps.
    taps: Vec<Vec<f32>>,
}

impl PolyphaseFilter {
    fn new(from_rate: u32, to_rate: u32) -> Self {
        let g = gcd(from_rate, to_rate);
        let from = (from_rate / g) as usize;
        let to = (to_rate / g) as usize;
        let base = (from.min(to) as f64) * ROLLOFF;
        let width = (ZERO_CROSSINGS * from as f64 / base).ceil() as usize;
        let kernel_len = 2 * width + from;
        let scale = base / from as f64;

        let mut first = Vec::with_capacity(to);
        let mut taps = Vec::with_capacity(to);
        for p in 0..to {
            // torchaudio computes the phase offset -p/to in float32 before adding it in f64.
            let offset = f64::from(-(p as f32) / to as f32);
            // Tap i sits at time t = ((i - width) / from + offset) * base (in units of the
            // cut-off period); only |t| < ZERO_CROSSINGS is non-zero (outside, the window is
            // cos^2(pi/2) and the f32 tap underflows to 0).
            let centre = width as f64 - offset * from as f64;
            let half = ZERO_CROSSINGS * from as f64 / base;
            let lo = (centre - half).floor().max(0.0) as usize;
            let hi = ((centre + half).ceil() as usize).min(kernel_len - 1);
            let mut phase_taps = Vec::with_capacity(hi + 1 - lo);
            let mut phase_first = None;
            for i in lo..=hi {
                let idx = (i as f64 - width as f64) / from as f64;
                let t = (offset + idx) * base;
                if t.abs() >= ZERO_CROSSINGS {
                    if phase_first.is_some() {
                        break;
                    }
                    continue;
                }
                let window = (t * std::f64::consts::PI / ZERO_CROSSINGS / 2.0).cos().powi(2);
                let x = t * std::f64::consts::PI;
                let sinc = if x == 0.0 { 1.0 } else { x.sin() / x };
                phase_first.get_or_insert(i);
                phase_taps.push((sinc * window * scale) as f32);
            }
            first.push(phase_first.unwrap_or(0));
            taps.push(phase_taps);
        }
        Self { from, width, first, taps }
    }

    fn apply(&self, input: &[f32]) -> Vec<f32> {
        let to = self.taps.len();
        let n_out = output_len(input.len(), self.from as u32, to as u32);
        let mut out = Vec::with_capacity(n_out);
        for j in 0..n_out {
            let (k, p) = (j / to, j % to);
            // Index into the signal of tap 0 may be negative: the zero padding on the left.
            let start = (k * self.from + self.first[p]) as isize - self.width as isize;
            let mut acc = 0.0f64;
            for (m, &tap) in self.taps[p].iter().enumerate() {
                let i = start + m as isize;
                if i >= 0 {
                    if let Some(&x) = input.get(i as usize) {
                        acc += f64::from(tap) * f64::from(x);
                    }
                }
            }
            out.push(acc as f32);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_length_is_ceil() {
        assert_eq!(output_len(441, 44_100, 16_000), 160);
        assert_eq!(output_len(442, 44_100, 16_000), 161);
        assert_eq!(output_len(3, 48_000, 16_000), 1);
        assert_eq!(output_len(4, 48_000, 16_000), 2);
        assert_eq!(output_len(5, 8_000, 16_000), 10);
    }

    #[test]
    fn identity_at_16k() {
        let x = [0.1f32, -0.5, 0.25];
        assert_eq!(resample_to_16k(&x, 16_000).unwrap(), x);
    }

    #[test]
    fn rejects_out_of_range_rates() {
        assert!(matches!(resample_to_16k(&[0.0], 0), Err(Error::AudioSampleRate { .. })));
        assert!(matches!(resample_to_16k(&[0.0], 1_000_000), Err(Error::AudioSampleRate { .. })));
    }

    #[test]
    fn resamples_up_and_down_between_any_rates() {
        assert!(matches!(resample(&[0.0], 16_000, 0), Err(Error::AudioSampleRate { .. })));
        assert_eq!(resample(&[0.5, -0.5], 24_000, 24_000).unwrap(), [0.5, -0.5]);
        // A constant far from the edges passes at ~unity gain both ways; lengths are ceil().
        let dc = vec![0.25f32; 4_000];
        for (from, to) in [(16_000, 24_000), (44_100, 24_000), (24_000, 16_000)] {
            let out = resample(&dc, from, to).unwrap();
            assert_eq!(out.len(), output_len(dc.len(), from, to), "{from} -> {to}");
            let mid = out[out.len() / 2];
            assert!((mid - 0.25).abs() < 0.005, "{from} -> {to}: {mid}");
        }
        // A 1 kHz tone keeps its frequency: 16 kHz -> 24 kHz gives 24 samples per period.
        let tone: Vec<f32> =
            (0..1_600).map(|i| (2.0 * std::f32::consts::PI * i as f32 / 16.0).sin()).collect();
        let up = resample(&tone, 16_000, 24_000).unwrap();
        assert_eq!(up.len(), 2_400);
        for (i, &got) in up.iter().enumerate().take(1_800).skip(600) {
            let want = (2.0 * std::f32::consts::PI * i as f32 / 24.0).sin();
            assert!((got - want).abs() < 0.02, "sample {i}: {got} vs {want}");
        }
    }

    #[test]
    fn taps_sum_to_unity_gain() {
        // A low-pass filter passes DC: every phase's taps sum to ~1 (up to the rolloff).
        for rate in [8_000, 22_050, 44_100, 48_000] {
            let f = PolyphaseFilter::new(rate, 16_000);
            for taps in &f.taps {
                let sum: f64 = taps.iter().map(|&t| f64::from(t)).sum();
                assert!((sum - 1.0).abs() < 0.02, "rate {rate}: dc gain {sum}");
            }
        }
    }
}
