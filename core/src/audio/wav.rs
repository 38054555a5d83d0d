//! Writing audio: a canonical RIFF WAV file of 16-bit mono PCM.

/// A RIFF WAV file of `samples` (16-bit PCM, mono) at `sample_rate`: the 44-byte canonical
/// header, then the samples little-endian. A data chunk over 4 GiB is not representable; its
/// sizes saturate.
pub fn wav_file(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len().saturating_mul(2)).unwrap_or(u32::MAX);
    let mut wav = Vec::with_capacity(44 + samples.len() * 2);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // the fmt chunk's size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // channels
    wav.extend_from_slice(&sample_rate.to_le_bytes());
    wav.extend_from_slice(&sample_rate.saturating_mul(2).to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for sample in samples {
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    wav
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{decode_audio, AudioInput, AudioLimits};

    #[test]
    fn a_wav_file_decodes_back_to_its_samples() {
        let samples = [0, 16384, -16384, i16::MAX, i16::MIN];
        let data = wav_file(&samples, 16_000);
        let input = AudioInput::Bytes { name: "a.wav".into(), data };
        let decoded = decode_audio(input, &AudioLimits::default()).unwrap();
        assert_eq!(decoded.sample_rate, 16_000);
        let back: Vec<i16> = decoded.samples.iter().map(|v| (v * 32768.0).round() as i16).collect();
        assert_eq!(back, samples);
    }
}
