//! `voxloop speak`: render a file of speech tokens to a WAV (a debugging aid).

use std::path::PathBuf;

use voxloop_core::DeviceSpec;

use crate::token2wav::{write_wav, SAMPLE_RATE};
use crate::{Error, Result, Token2Wav, VoiceProfile};

/// What to render.
#[derive(Debug, Clone)]
pub struct SpeakRequest {
    /// Text file of speech tokens (see [`parse_tokens`]).
    pub tokens: PathBuf,
    /// Voice profile file (`.json` or `.safetensors`).
    pub voice: PathBuf,
    /// Output WAV (24 kHz, 16-bit mono).
    pub output: PathBuf,
    /// The official `token2wav/` directory; default `<model_dir>/token2wav`.
    pub token2wav_dir: Option<PathBuf>,
    /// The Step-Audio 2 checkpoint directory (from the configuration).
    pub model_dir: Option<PathBuf>,
    /// Where to run.
    pub device: DeviceSpec,
    /// Render in streaming chunks (25 + 3 tokens) instead of all at once.
    pub streaming: bool,
}

/// What was rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakSummary {
    pub tokens: usize,
    pub samples: usize,
}

impl SpeakSummary {
    /// Duration of the audio.
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / f64::from(SAMPLE_RATE)
    }
}

/// Parses speech tokens: decimal ids or `<audio_N>` tokens (as the LLM writes them),
/// separated by whitespace and/or commas, or `<audio_N>` tokens written back to back.
pub fn parse_tokens(text: &str) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for piece in text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()) {
        if piece.starts_with('<') {
            let mut rest = piece;
            while !rest.is_empty() {
                let body = rest
                    .strip_prefix("<audio_")
                    .and_then(|r| r.split_once('>'))
                    .ok_or_else(|| {
                        Error::InvalidTokens(format!("cannot read {piece:?}: expected <audio_N>"))
                    })?;
                out.push(parse_id(body.0, piece)?);
                rest = body.1;
            }
        } else {
            out.push(parse_id(piece, piece)?);
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidTokens("the tokens file holds no tokens".into()));
    }
    Ok(out)
}

fn parse_id(digits: &str, piece: &str) -> Result<i64> {
    digits
        .parse::<i64>()
        .ok()
        .filter(|&id| id >= 0)
        .ok_or_else(|| Error::InvalidTokens(format!("{piece:?} is not a speech token id")))
}

/// Loads the model and the voice, renders the tokens and writes the WAV.
pub fn speak(request: &SpeakRequest) -> Result<SpeakSummary> {
    let text = std::fs::read_to_string(&request.tokens)
        .map_err(|source| Error::File { path: request.tokens.clone(), source })?;
    let tokens = parse_tokens(&text)?;
    let voice = VoiceProfile::from_file(&request.voice)?;
    let dir = match (&request.token2wav_dir, &request.model_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(model)) => model.join("token2wav"),
        (None, None) => {
            return Err(Error::InvalidInput(
                "no token2wav directory: pass --token2wav DIR or configure the model directory"
                    .into(),
            ))
        }
    };
    let device = request.device.resolve()?;
    let model = Token2Wav::load(&dir, device)?;
    let samples = if request.streaming {
        let mut stream = model.stream(&voice)?;
        let mut samples = stream.push(&tokens)?;
        samples.extend(stream.finish()?);
        samples
    } else {
        model.synthesize(&tokens, &voice)?
    };
    write_wav(&request.output, &samples)?;
    Ok(SpeakSummary { tokens: tokens.len(), samples: samples.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_formats() {
        assert_eq!(parse_tokens("1 2,3\n 4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(parse_tokens("<audio_10><audio_4218> <audio_0>").unwrap(), vec![10, 4218, 0]);
        let e = parse_tokens("1 two 3").unwrap_err();
        assert!(e.to_string().contains("\"two\""), "{e}");
        let e = parse_tokens("<audio_1><text>").unwrap_err();
        assert!(e.to_string().contains("<audio_N>"), "{e}");
        assert!(parse_tokens(" \n").is_err());
        assert!(parse_tokens("-5").is_err());
    }
}
