//! The filler: a short sound a realtime response plays while a tool runs long, so that the
//! line does not go silent (`[realtime] filler_sound`, `filler_delay_ms`).
//!
//! It is found once per service, on the first connection: `filler_sound` names an audio file,
//! or words searched (BM25, sounds only) in the audio index, whose first hit is taken. It is
//! decoded, resampled to the realtime rate, cut to [`FILLER_MAX_SECONDS`] and kept as PCM16.
//! Without a match (or an index) there is no filler, and the log says why.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use voxloop_core::audio::{decode_audio, resample, AudioLimits};
use voxloop_retrieval::search::{Retriever, SearchRequest};
use voxloop_retrieval::{AudioIndex, ItemFilter, ItemKind};

use super::settings::PCM_RATE;
use crate::config::{RealtimeConfig, FILLER_MAX_SECONDS};
use crate::http::pcm::pcm16_le;

/// A filler ready to send.
#[derive(Debug, Clone)]
pub struct Filler {
    /// 16-bit little-endian mono PCM at [`PCM_RATE`].
    pub pcm: Vec<u8>,
    /// How long a tool runs before it plays.
    pub delay: Duration,
    /// Where it came from, for the log.
    pub source: String,
}

impl Filler {
    /// Its length in samples.
    pub fn samples(&self) -> usize {
        self.pcm.len() / 2
    }
}

/// The fade at a cut, so that a shortened sound does not end in a click.
const FADE_SECONDS: f64 = 0.02;

/// Finds and prepares the filler `config` asks for (blocking: decoding, the index).
/// `Ok(None)`: none is configured or found.
pub fn load(config: &RealtimeConfig, index: Option<&AudioIndex>) -> Result<Option<Filler>, String> {
    let wanted = config.filler_sound.trim();
    if wanted.is_empty() {
        return Ok(None);
    }
    let path = if Path::new(wanted).is_file() {
        Path::new(wanted).to_path_buf()
    } else {
        let Some(index) = index else {
            tracing::info!(filler_sound = wanted, "no filler: no audio index to find it in");
            return Ok(None);
        };
        let filter = ItemFilter { kind: Some(ItemKind::Sound), ..ItemFilter::default() };
        let request =
            SearchRequest::new(wanted, 1).with_filter(filter).with_retriever(Retriever::Bm25);
        let hits = index.search(&request).map_err(|e| format!("searching {wanted:?}: {e}"))?;
        let Some(hit) = hits.into_iter().next() else {
            tracing::info!(filler_sound = wanted, "no filler: no sound in the index matches");
            return Ok(None);
        };
        hit.item.path
    };
    let decoded =
        decode_audio(path.as_path(), &AudioLimits::default()).map_err(|e| e.to_string())?;
    let mut samples =
        resample(&decoded.samples, decoded.sample_rate, PCM_RATE).map_err(|e| e.to_string())?;
    let max = (FILLER_MAX_SECONDS * f64::from(PCM_RATE)) as usize;
    if samples.len() > max {
        samples.truncate(max);
        let fade = (FADE_SECONDS * f64::from(PCM_RATE)) as usize;
        for (i, s) in samples.iter_mut().rev().take(fade).enumerate() {
            *s *= i as f32 / fade as f32;
        }
    }
    let source = path.display().to_string();
    tracing::info!(filler = %source, seconds = samples.len() as f64 / f64::from(PCM_RATE), "realtime filler ready");
    Ok(Some(Filler {
        pcm: pcm16_le(&samples),
        delay: Duration::from_millis(config.filler_delay_ms),
        source,
    }))
}

/// [`load`] on the blocking pool; a failure is logged and means no filler.
pub async fn load_async(
    config: RealtimeConfig,
    index: Option<Arc<AudioIndex>>,
) -> Option<Arc<Filler>> {
    let loaded = tokio::task::spawn_blocking(move || load(&config, index.as_deref())).await;
    match loaded {
        Ok(Ok(filler)) => filler.map(Arc::new),
        Ok(Err(message)) => {
            tracing::warn!(error = %message, "no realtime filler");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "no realtime filler: the loading task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_file(dir: &Path, seconds: f32, rate: u32) -> std::path::PathBuf {
        let samples: Vec<f32> = (0..(seconds * rate as f32) as usize)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect();
        let path = dir.join("tone.wav");
        std::fs::write(&path, crate::http::pcm::wav_bytes(&samples, rate)).unwrap();
        path
    }

    fn config(sound: &str) -> RealtimeConfig {
        RealtimeConfig { filler_sound: sound.into(), ..RealtimeConfig::default() }
    }

    #[test]
    fn a_file_is_resampled_to_the_realtime_rate_and_cut_to_the_longest_filler() {
        let dir = tempfile::tempdir().unwrap();
        let path = tone_file(dir.path(), 0.5, 16_000);
        let filler = load(&config(path.to_str().unwrap()), None).unwrap().unwrap();
        assert_eq!(filler.samples(), 12_000, "0.5 s at 24 kHz");
        assert_eq!(filler.delay, Duration::from_millis(1500));

        let long = tone_file(dir.path(), 5.0, 24_000);
        let filler = load(&config(long.to_str().unwrap()), None).unwrap().unwrap();
        assert_eq!(filler.samples(), (FILLER_MAX_SECONDS * 24_000.0) as usize);
        let last = i16::from_le_bytes([
            filler.pcm[filler.pcm.len() - 2],
            filler.pcm[filler.pcm.len() - 1],
        ]);
        assert_eq!(last, 0, "the cut fades out");
    }

    #[test]
    fn nothing_configured_or_nowhere_to_search_means_no_filler() {
        assert!(load(&config(""), None).unwrap().is_none());
        assert!(load(&config("chime"), None).unwrap().is_none());
    }

    #[test]
    fn a_file_that_is_not_audio_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.wav");
        std::fs::write(&path, b"not audio at all").unwrap();
        assert!(load(&config(path.to_str().unwrap()), None).is_err());
    }
}
