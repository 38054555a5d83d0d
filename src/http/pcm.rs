//! Speech as the HTTP API sends it. Rendering itself is core's (`SpeechRenderer`, driven by
//! `Agent::speak_turn`) with token2wav from `voxloop-voices` as its engine.

/// 16-bit little-endian PCM of `samples` (clipped to [-1, 1], scaled by 32767 as token2wav's
/// WAV writer does).
pub fn pcm16_le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect()
}

/// A RIFF WAV file (16-bit PCM, mono) of `samples` at `sample_rate`: the 44-byte canonical
/// header, then [`pcm16_le`].
pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data = pcm16_le(samples);
    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // the fmt chunk's size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // channels
    wav.extend_from_slice(&sample_rate.to_le_bytes());
    wav.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(&data);
    wav
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
