//! Speech as the HTTP API sends it. Rendering itself is core's (`SpeechRenderer`, driven by
//! `Agent::speak_turn`) with token2wav from `voxloop-voices` as its engine.

/// 16-bit little-endian PCM of `samples` (clipped to [-1, 1], scaled by 32767 as token2wav's
/// WAV writer does).
pub fn pcm16_le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16_is_little_endian_and_clipped() {
        assert_eq!(pcm16_le(&[0.0, 1.0, -2.0]), vec![0, 0, 0xff, 0x7f, 0x01, 0x80]);
    }
}
