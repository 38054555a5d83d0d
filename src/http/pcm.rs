//! Speech as the HTTP API sends it. Rendering itself is core's (`SpeechRenderer`, driven by
//! `Agent::speak_turn`) with token2wav from `voxloop-voices` as its engine.

/// 16-bit little-endian PCM of `samples` (clipped to [-1, 1], scaled by 32767 as token2wav's
/// WAV writer does).
pub fn pcm16_le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect()
}

/// A RIFF WAV file (16-bit PCM, mono) of `samples` at `sample_rate`, scaled as
/// [`pcm16_le`].
pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let pcm: Vec<i16> = samples.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16).collect();
    voxloop_core::audio::wav_file(&pcm, sample_rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_file_decodes_back_to_its_samples() {
        let samples = [0.0, 0.5, -0.5, 1.0];
        let wav = wav_bytes(&samples, 24_000);
        let input = voxloop_core::audio::AudioInput::Bytes { name: "a.wav".into(), data: wav };
        let decoded = voxloop_core::audio::decode_audio(input, &Default::default()).unwrap();
        assert_eq!(decoded.sample_rate, 24_000);
        assert_eq!(decoded.samples.len(), samples.len());
        for (got, want) in decoded.samples.iter().zip(samples) {
            assert!((got - want).abs() < 1e-3, "{got} vs {want}");
        }
    }

    #[test]
    fn pcm16_is_little_endian_and_clipped() {
        assert_eq!(pcm16_le(&[0.0, 1.0, -2.0]), vec![0, 0, 0xff, 0x7f, 0x01, 0x80]);
    }
}
