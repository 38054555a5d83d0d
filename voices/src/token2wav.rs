//! Speech tokens → 24 kHz audio, offline and streaming (upstream `stepaudio2.token2wav`).
//!
//! Offline ([`Token2Wav::synthesize`]): all tokens through the flow at once (prompt tokens
//! and mel of the [`VoiceProfile`] as context), then HiFT over the whole mel.
//!
//! Streaming ([`Token2WavStream`]), as upstream `Token2wav.set_stream_cache` / `stream`:
//! - setup: the flow caches are filled with the prompt plus 3 look-ahead tokens of silence
//!   (token 4218);
//! - each chunk: 25 new tokens + the 3 following ones as look-ahead (the last chunk pads the
//!   look-ahead with zeros); both flow caches are bounded to the prompt frames + 100 frames
//!   (upstream's trimming, kept bit-compatible);
//! - the vocoder re-runs over the previous chunk's last 8 mel frames, reuses the previous
//!   excitation's last 3840 samples, cross-fades the first 3840 samples with the previous
//!   chunk's held-back tail (Hamming window of 2 × 3840, in f64 as upstream's numpy window),
//!   and holds back its own last 3840 samples unless it is the last chunk; the first chunk is
//!   prefixed with 3840 samples of silence instead, so every chunk but the last returns
//!   exactly 480 samples per new mel frame.
//!
//! Stream setups are kept per voice ([`crate::setup_cache`]): a stream in a recently used
//! voice starts without running the flow over the prompt again.
//!
//! A stream can change voice between chunks ([`Token2WavStream::set_voice`]): the next chunk
//! re-initialises the flow caches from the new profile while the vocoder caches carry over,
//! so the join is cross-faded as usual.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::config::HiftConfig;
use crate::flow::{Flow, N_TIMESTEPS};
use crate::hift::{Hift, NsfRandom};
use crate::profile::VoiceProfile;
use crate::setup_cache::{SetupCache, SetupCacheStats, VoiceState, DEFAULT_SETUP_CACHE};
use crate::{Error, Result};

/// Optional HiFT hyper-parameters next to `hift.pt` (voxloop extension).
pub const HIFT_CONFIG_FILE: &str = "hift.json";
/// Output sample rate.
pub const SAMPLE_RATE: u32 = 24_000;
/// New tokens per streaming chunk (1 s of speech).
pub const CHUNK_TOKENS: usize = 25;
/// The S3 token upstream appends (×3) to the prompt as look-ahead when setting up a stream.
pub const SILENCE_TOKEN: i64 = 4218;
/// Mel frames the vocoder re-runs from the previous chunk.
pub const MEL_CACHE_FRAMES: i64 = 8;
/// Frames of flow cache kept after the prompt's.
pub const CACHE_TAIL_FRAMES: i64 = 100;

/// The token2wav model: flow + HiFT.
#[derive(Debug)]
pub struct Token2Wav {
    flow: Flow,
    hift: Hift,
    nsf: NsfRandom,
    n_timesteps: usize,
    setups: SetupCache,
}

impl Token2Wav {
    /// Loads the official `token2wav/` directory: `flow.yaml`, `flow.pt` and `hift.pt`.
    /// HiFT gets upstream's default hyper-parameters unless the directory also holds a
    /// `hift.json` (a voxloop extension, absent from the official release) with fields of
    /// [`HiftConfig`].
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let path = dir.join(HIFT_CONFIG_FILE);
        let config = if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| Error::File { path: path.clone(), source })?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Config { path: path.clone(), message: e.to_string() })?
        } else {
            HiftConfig::default()
        };
        Self::load_with(dir, config, device)
    }

    /// As [`load`](Self::load) with explicit HiFT hyper-parameters (tests, custom vocoders).
    pub fn load_with(dir: &Path, hift_config: HiftConfig, device: Device) -> Result<Self> {
        let flow = Flow::load(&dir.join("flow.yaml"), &dir.join("flow.pt"), device)?;
        let hift = Hift::load(&dir.join("hift.pt"), hift_config, device)?;
        Ok(Self::from_parts(flow, hift))
    }

    /// Assembles a model from loaded parts.
    pub fn from_parts(flow: Flow, hift: Hift) -> Self {
        Self {
            flow,
            hift,
            nsf: NsfRandom::Torch,
            n_timesteps: N_TIMESTEPS,
            setups: SetupCache::new(DEFAULT_SETUP_CACHE),
        }
    }

    /// The flow (token → mel).
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// The flow, mutably (to inject its noise buffer). Forgets the kept stream setups, which
    /// depend on the flow.
    pub fn flow_mut(&mut self) -> &mut Flow {
        self.setups.clear();
        &mut self.flow
    }

    /// The vocoder.
    pub fn hift(&self) -> &Hift {
        &self.hift
    }

    /// Where the vocoder's NSF random numbers come from (default: libtorch's RNG, as upstream).
    pub fn set_nsf_random(&mut self, random: NsfRandom) {
        self.nsf = random;
    }

    /// Waveform samples per mel frame (480).
    pub fn samples_per_frame(&self) -> i64 {
        self.hift.config().samples_per_frame()
    }

    /// The mel of `tokens` in `voice`: `[1, 80, 2·len(tokens)]`.
    pub fn mel(&self, tokens: &[i64], voice: &VoiceProfile) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        self.flow.inference(
            tokens,
            &voice.prompt_tokens,
            &voice.prompt_mel_tensor()?,
            &voice.speaker_tensor()?,
            self.n_timesteps,
        )
    }

    /// Renders `tokens` in `voice`: 24 kHz mono samples in [−0.99, 0.99],
    /// `480 · 2 · len(tokens)` of them.
    pub fn synthesize(&self, tokens: &[i64], voice: &VoiceProfile) -> Result<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        let mel = self.mel(tokens, voice)?;
        let (speech, _) = self.hift.forward(&mel, None, &self.nsf)?;
        to_vec(&speech)
    }

    /// Starts a stream in `voice`.
    pub fn stream(&self, voice: &VoiceProfile) -> Result<Token2WavStream<'_>> {
        let _guard = tch::no_grad_guard();
        let state = self.voice_state(voice)?;
        let bins = self.flow.config().output_size;
        let device = self.flow.device();
        Ok(Token2WavStream {
            model: self,
            voice: state,
            next_voice: None,
            mel_cache: Tensor::f_zeros([1, bins, 0], (Kind::Float, device))?,
            source_cache: Tensor::f_zeros([1, 1, 0], (Kind::Float, device))?,
            speech_cache: Tensor::f_zeros([1, 0], (Kind::Float, device))?,
            window: hamming(2 * self.source_cache_len())?.f_to_device(device)?,
            pending: Vec::new(),
            finished: false,
            last_mel: None,
        })
    }

    fn source_cache_len(&self) -> i64 {
        MEL_CACHE_FRAMES * self.samples_per_frame()
    }
}

impl Token2Wav {
    /// The flow-side state of a new stream in `voice`: a kept setup, or a new one
    /// ([`crate::setup_cache`]).
    fn voice_state(&self, voice: &VoiceProfile) -> Result<VoiceState> {
        self.setups.get_or_compute(voice, || {
            let la = self.flow.pre_lookahead_len() as usize;
            let mut tokens = voice.prompt_tokens.clone();
            tokens.extend(std::iter::repeat_n(SILENCE_TOKEN, la));
            let mel = voice.prompt_mel_tensor()?;
            let speaker = voice.speaker_tensor()?;
            let cache = self.flow.setup_cache(&tokens, &mel, &speaker, self.n_timesteps)?;
            Ok(VoiceState { prompt_frames: mel.size()[1], speaker, cache })
        })
    }

    /// How many voices' stream setups are kept (default [`DEFAULT_SETUP_CACHE`]; 0 keeps
    /// none, as upstream).
    pub fn set_setup_cache_capacity(&self, voices: usize) {
        self.setups.set_capacity(voices);
    }

    /// Hits and misses of the stream-setup cache.
    pub fn setup_cache_stats(&self) -> SetupCacheStats {
        self.setups.stats()
    }
}

/// A streaming synthesis in progress (see the module docs).
#[derive(Debug)]
pub struct Token2WavStream<'a> {
    model: &'a Token2Wav,
    voice: VoiceState,
    next_voice: Option<VoiceProfile>,
    mel_cache: Tensor,
    source_cache: Tensor,
    speech_cache: Tensor,
    window: Tensor,
    pending: Vec<i64>,
    finished: bool,
    last_mel: Option<Tensor>,
}

impl Token2WavStream<'_> {
    /// The flow output of the last rendered chunk, `[1, 80, frames]` (diagnostics, tests).
    pub fn last_mel(&self) -> Option<&Tensor> {
        self.last_mel.as_ref()
    }

    /// Whether the last chunk was rendered.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Switches to `voice` from the next chunk on (the chunk being rendered, if any, keeps
    /// the old voice).
    pub fn set_voice(&mut self, voice: &VoiceProfile) {
        self.next_voice = Some(voice.clone());
    }

    /// Buffers `tokens` and renders every complete chunk (25 tokens + 3 look-ahead), keeping
    /// the look-ahead for the next chunk, as upstream's streaming client does. Returns the
    /// samples that became ready (possibly none).
    pub fn push(&mut self, tokens: &[i64]) -> Result<Vec<f32>> {
        self.pending.extend_from_slice(tokens);
        let window = CHUNK_TOKENS + self.model.flow.pre_lookahead_len() as usize;
        let mut out = Vec::new();
        while self.pending.len() >= window {
            let chunk: Vec<i64> = self.pending[..window].to_vec();
            out.extend(self.chunk(&chunk, false)?);
            self.pending.drain(..CHUNK_TOKENS);
        }
        Ok(out)
    }

    /// Renders the buffered rest as the last chunk and ends the stream.
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        if self.pending.is_empty() {
            // Nothing was pushed: the look-ahead tokens always stay pending after a chunk.
            self.finished = true;
            return Ok(Vec::new());
        }
        let rest = std::mem::take(&mut self.pending);
        self.chunk(&rest, true)
    }

    /// One chunk exactly as upstream `Token2wav.stream(tokens, last_chunk)`: `tokens`
    /// includes the look-ahead unless `last_chunk`. Returns the chunk's samples.
    pub fn chunk(&mut self, tokens: &[i64], last_chunk: bool) -> Result<Vec<f32>> {
        if self.finished {
            return Err(Error::InvalidInput("the stream already rendered its last chunk".into()));
        }
        let _guard = tch::no_grad_guard();
        let model = self.model;
        if let Some(voice) = self.next_voice.take() {
            self.voice = model.voice_state(&voice)?;
        }
        let (chunk_mel, mut cache) = model.flow.inference_chunk(
            tokens,
            &self.voice.speaker,
            &self.voice.cache,
            last_chunk,
            model.n_timesteps,
        )?;
        cache.trim(self.voice.prompt_frames, CACHE_TAIL_FRAMES)?;
        self.voice.cache = cache;

        let mel = Tensor::f_cat(&[&self.mel_cache, &chunk_mel], 2)?;
        self.last_mel = Some(chunk_mel);
        let (mut speech, source) =
            model.hift.forward(&mel, Some(&self.source_cache), &model.nsf)?;
        let overlap = self.speech_cache.size()[1];
        let first_chunk = overlap == 0;
        if !first_chunk {
            speech = self.fade_in(&speech)?;
        }
        let keep = model.source_cache_len();
        self.mel_cache = tail(&mel, 2, MEL_CACHE_FRAMES)?;
        self.source_cache = tail(&source, 2, keep)?;
        self.speech_cache = tail(&speech, 1, keep)?;
        if last_chunk {
            self.finished = true;
        } else {
            let n = speech.size()[1];
            let body = speech.f_narrow(1, 0, (n - keep).max(0))?;
            speech = if first_chunk {
                let silence = Tensor::f_zeros([1, keep], (Kind::Float, speech.device()))?;
                Tensor::f_cat(&[&silence, &body], 1)?
            } else {
                body
            };
        }
        to_vec(&speech)
    }

    /// Upstream `fade_in_out`: the first half-window of `speech` fades in while the previous
    /// chunk's held-back tail fades out (computed in f64).
    fn fade_in(&self, speech: &Tensor) -> Result<Tensor> {
        let half = self.window.size()[0] / 2;
        let n = speech.size()[1];
        if n < half || self.speech_cache.size()[1] < half {
            return Err(Error::InvalidInput(format!(
                "cross-fade needs {half} samples on both sides, got {n} and {}",
                self.speech_cache.size()[1]
            )));
        }
        let head = speech.f_narrow(1, 0, half)?.f_to_kind(Kind::Double)?;
        let prev = tail(&self.speech_cache, 1, half)?.f_to_kind(Kind::Double)?;
        let mixed = head
            .f_mul(&self.window.f_narrow(0, 0, half)?)?
            .f_add(&prev.f_mul(&self.window.f_narrow(0, half, half)?)?)?
            .f_to_kind(Kind::Float)?;
        Ok(Tensor::f_cat(&[&mixed, &speech.f_narrow(1, half, n - half)?], 1)?)
    }
}

/// The last `n` entries along `dim` (all of them if fewer).
fn tail(t: &Tensor, dim: i64, n: i64) -> Result<Tensor> {
    let len = t.size()[dim as usize];
    let n = n.min(len);
    Ok(t.f_narrow(dim, len - n, n)?.f_contiguous()?)
}

/// numpy's `hamming(m)` in f64: `0.54 + 0.46·cos(π·k/(m−1))`, `k = 1−m, 3−m, …, m−1`.
fn hamming(m: i64) -> Result<Tensor> {
    let w: Vec<f64> = (0..m)
        .map(|i| {
            let k = (1 - m + 2 * i) as f64;
            0.54 + 0.46 * (std::f64::consts::PI * k / (m - 1) as f64).cos()
        })
        .collect();
    Ok(Tensor::from_slice(&w))
}

fn to_vec(speech: &Tensor) -> Result<Vec<f32>> {
    let flat = speech.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(flat)?)
}

/// Writes 24 kHz mono samples as a 16-bit PCM WAV (clipped to [−1, 1], scaled by 32767 as
/// upstream's streaming output).
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let io = |e: hound::Error| Error::File {
        path: path.to_path_buf(),
        source: match e {
            hound::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        },
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(io)?;
    for &s in samples {
        writer.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).map_err(io)?;
    }
    writer.finalize().map_err(io)
}
