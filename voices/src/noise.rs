//! The random numbers token2wav needs, made reproducible.
//!
//! - **Flow noise.** Upstream's `CausalConditionalCFM` draws one buffer
//!   `rand_noise = torch.randn(1, 80, 50 · 600)` when the module is built and starts every
//!   ODE solve from a slice of it (offline: frames `0..T`; streaming: frames
//!   `offset..offset+T`, `offset` = the estimator cache length). Its values depend on the state
//!   of torch's global RNG at build time, so they are not reproducible across programs; voxloop
//!   uses a same-shaped buffer defined by a fixed seed and a portable counter-based generator
//!   ([`standard_normal_at`]: SplitMix64 + Box–Muller; only the frames a solve needs are
//!   computed), so a voice renders identically on every run and machine. Tests inject
//!   upstream's buffer instead (`Flow::set_noise`).
//! - **NSF noise.** HiFT's source module draws fresh random phases and additive noise on every
//!   call, from torch's global RNG, as upstream does (see `hift::NsfRandom`).

/// Frames of the flow's noise buffer: 600 s at 50 frames/s, as upstream.
pub const FLOW_NOISE_FRAMES: i64 = 50 * 600;

/// Seed of voxloop's flow-noise buffer.
pub const FLOW_NOISE_SEED: u64 = 0x005E_ED70_C02A_0D10;

/// SplitMix64's `i`-th output for `seed`, as a double in (0, 1] (counter-based: any position
/// can be computed directly).
fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// The `index`-th value of the standard-normal sequence for `seed` (Box–Muller on the pair of
/// uniforms `2k, 2k+1`, cos for even indices, sin for odd), identical on every platform.
pub fn standard_normal_at(seed: u64, index: u64) -> f32 {
    let pair = index / 2;
    let radius = (-2.0 * unit(seed, 2 * pair).ln()).sqrt();
    let angle = std::f64::consts::TAU * unit(seed, 2 * pair + 1);
    let v = if index % 2 == 0 { radius * angle.cos() } else { radius * angle.sin() };
    v as f32
}

/// The first `len` values of the sequence.
pub fn standard_normal(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64).map(|i| standard_normal_at(seed, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_and_reproducible() {
        let a = standard_normal(7, 100_001);
        assert_eq!(a.len(), 100_001);
        assert_eq!(a, standard_normal(7, 100_001));
        assert_ne!(a[..10], standard_normal(8, 10)[..]);
        assert_eq!(standard_normal_at(7, 12_345), a[12_345]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
