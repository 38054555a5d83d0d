//! `voice_add` and `speak`: the voice library over MCP, for clients that bring a voice or want
//! speech codes heard. MCP only (the agent gets voices through `timbre_rag` and voice swap).
//!
//! - `voice_add` computes a voice profile from a recording (base64 of an audio file, or on
//!   stdio, where the client runs on this machine, a file path) with the S3 tokenizer and CAM++
//!   of the token2wav directory, adds it to the library and registers it in the audio index.
//! - `speak` renders 25-Hz speech codes (what Step-Audio 2 writes as `<audio_N>`) in a library
//!   voice through token2wav, as `audio/wav` content; or, when a model is configured, text,
//!   which the speech LLM first reads aloud (`Task::ReadAloud`) into such codes.
//!
//! Both are listed only when a token2wav directory is configured (`[voice] token2wav`, or
//! `<model dir>/token2wav`). Models load on the first call and stay loaded; the work runs on
//! the blocking pool. Results carry structured content matching each tool's output schema.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::{json, Value};
use voxloop_retrieval::AudioIndex;
use voxloop_voices::extract::{ExtractorOptions, ProfileExtractor};
use voxloop_voices::prompt::PromptAudio;
use voxloop_voices::{Token2Wav, VoiceLibrary};

use voxloop_core::agent::{Agent, AgentConfig, Task, TaskOutput, TurnInput};
use voxloop_core::tool::ToolRegistry;

use crate::config::Config;
use crate::http::pcm::wav_bytes;
use crate::runtime::setup::AgentRuntime;

/// The tools' names.
pub const VOICE_ADD: &str = "voice_add";
pub const SPEAK: &str = "speak";

/// The largest recording `voice_add` takes, decoded from base64.
const MAX_RECORDING_BYTES: usize = 16 * 1024 * 1024;
/// The most codes `speak` renders at once: two minutes at 25 Hz.
const MAX_CODES: usize = 3000;
/// Speech codes are ids of the 6561-entry codebook.
const CODEBOOK: i64 = 6561;
/// The longest text `speak` reads (OpenAI's limit for speech).
const MAX_TEXT_CHARS: usize = 4096;

/// The speech LLM that reads `speak`'s text.
pub enum TextModel {
    /// The service's agent (`/mcp` of `voxloop serve`).
    Shared(Arc<AgentRuntime>),
    /// `[model] dir`, loaded at the first text (`voxloop mcp`, which serves no agent).
    Lazy {
        dir: PathBuf,
        device: voxloop_core::DeviceSpec,
        /// `[agent] max_new_tokens` and `seed`, which hold for the reading as in the service.
        max_new_tokens: usize,
        seed: Option<u64>,
        agent: Box<tokio::sync::OnceCell<Agent>>,
    },
}

impl TextModel {
    /// The lazily loaded model of `config`'s `[model] dir`, if it names one.
    pub fn lazy(config: &Config) -> Option<Self> {
        let dir = config.model.dir.clone()?;
        Some(Self::Lazy {
            dir,
            device: config.model.device,
            max_new_tokens: config.agent.max_new_tokens,
            seed: config.agent.seed,
            agent: Box::new(tokio::sync::OnceCell::new()),
        })
    }

    /// The speech codes of `text` read aloud.
    async fn read_aloud(&self, text: &str) -> Result<Vec<u16>, String> {
        let input = TurnInput::text(text);
        let (agent, mut session) = match self {
            TextModel::Shared(rt) => {
                let session = rt.task_session(Task::ReadAloud, input, |_| {});
                (&rt.agent, session.map_err(|e| e.to_string())?)
            }
            TextModel::Lazy { dir, device, max_new_tokens, seed, agent } => {
                let agent = agent
                    .get_or_try_init(|| async {
                        let (dir, device) = (dir.clone(), *device);
                        tokio::task::spawn_blocking(move || {
                            Agent::load(&dir, device, ToolRegistry::new(), AgentConfig::default())
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("loading the speech LLM: {e}"))
                    })
                    .await?;
                let session = Task::ReadAloud.session(input, |sampling| {
                    sampling.max_new_tokens = sampling.max_new_tokens.min(*max_new_tokens);
                    sampling.seed = *seed;
                });
                (agent, session.map_err(|e| e.to_string())?)
            }
        };
        let stream = agent.run_task(&mut session, None).map_err(|e| e.to_string())?;
        let out = TaskOutput::collect(stream, |_| {}).await.map_err(|e| e.to_string())?;
        if out.speech_codes.is_empty() {
            return Err(format!(
                "the model wrote no speech for the text ({} tokens)",
                out.usage.output_tokens
            ));
        }
        Ok(out.speech_codes)
    }
}

/// The library and the models the two tools use.
pub struct VoiceTools {
    voices_dir: PathBuf,
    token2wav_dir: PathBuf,
    device: voxloop_core::DeviceSpec,
    /// Whether paths may be given: only a local (stdio) client shares this machine's files.
    local_paths: bool,
    /// What reads `speak`'s text, when a model is configured.
    text: Option<TextModel>,
    index: Option<Arc<AudioIndex>>,
    extractor: OnceLock<Mutex<ProfileExtractor>>,
    vocoder: OnceLock<Mutex<Token2Wav>>,
    /// Adds are one at a time: the library is read, then written.
    adding: Mutex<()>,
}

impl std::fmt::Debug for VoiceTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceTools").field("voices_dir", &self.voices_dir).finish_non_exhaustive()
    }
}

impl VoiceTools {
    /// The tools for `config`, when it names a token2wav directory that exists.
    pub fn from_config(
        config: &Config,
        index: Option<Arc<AudioIndex>>,
        local_paths: bool,
        text: Option<TextModel>,
    ) -> Option<Self> {
        let (token2wav_dir, _) = config.token2wav_dir()?;
        if !token2wav_dir.is_dir() {
            return None;
        }
        Some(Self {
            voices_dir: config.voices_dir().0,
            token2wav_dir,
            device: config.model.device,
            local_paths,
            text,
            index,
            extractor: OnceLock::new(),
            vocoder: OnceLock::new(),
            adding: Mutex::new(()),
        })
    }

    /// The two tools as listed.
    pub fn definitions(&self) -> Vec<Tool> {
        let path_note =
            if self.local_paths { " Or give `path`, a file on this machine." } else { "" };
        let add_input = json!({
            "type": "object",
            "properties": {
                "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                          "description": "The voice's name in the library." },
                "description": { "type": "string", "maxLength": 500,
                                 "description": "What the voice sounds like, for search." },
                "audio": { "type": "string",
                           "description": "Base64 of a 1-30 s recording (WAV, FLAC, MP3 or Ogg) of one speaker." },
                "path": { "type": "string", "description": "An audio file path (stdio clients only)." },
                "replace": { "type": "boolean", "description": "Replace a voice of that name." }
            },
            "required": ["name"],
            "additionalProperties": false
        });
        let add_output = json!({
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "seconds": { "type": "number" },
                "prompt_tokens": { "type": "integer" },
                "indexed": { "type": "boolean" }
            },
            "required": ["name", "seconds", "prompt_tokens", "indexed"]
        });
        let mut speak_input = json!({
            "type": "object",
            "properties": {
                "voice": { "type": "string", "description": "A voice of the library (voice_list)." },
                "codes": { "type": "array", "minItems": 1, "maxItems": MAX_CODES,
                           "items": { "type": "integer", "minimum": 0, "maximum": CODEBOOK - 1 },
                           "description": "25-Hz speech codes: N of each <audio_N> Step-Audio 2 writes." }
            },
            "required": ["voice", "codes"],
            "additionalProperties": false
        });
        if self.text.is_some() {
            speak_input["properties"]["text"] = json!({
                "type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS,
                "description": "Text to read aloud, instead of codes."
            });
            speak_input["required"] = json!(["voice"]);
        }
        let speak_output = json!({
            "type": "object",
            "properties": {
                "voice": { "type": "string" },
                "codes": { "type": "integer" },
                "seconds": { "type": "number" },
                "sample_rate": { "type": "integer" }
            },
            "required": ["voice", "codes", "seconds", "sample_rate"]
        });
        vec![
            tool(
                VOICE_ADD,
                &format!(
                    "Adds a voice to the library from a recording of one speaker (its timbre \
                     becomes usable by name).{path_note}"
                ),
                add_input,
                add_output,
            ),
            tool(
                SPEAK,
                if self.text.is_some() {
                    "Reads text aloud, or renders speech codes, in a library voice as WAV audio \
                     (24 kHz)."
                } else {
                    "Renders speech codes in a library voice as WAV audio (24 kHz)."
                },
                speak_input,
                speak_output,
            ),
        ]
    }

    /// Runs `voice_add` or `speak` (`name`); every failure is an error result.
    pub async fn call(
        self: &Arc<Self>,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> CallToolResult {
        let this = Arc::clone(self);
        let name = name.to_owned();
        let mut arguments = arguments.unwrap_or_default();
        if name == SPEAK && arguments.contains_key("text") {
            // Text becomes codes first (the model's turn is async), then renders as codes do.
            match self.codes_of_text(&arguments).await {
                Ok(codes) => {
                    arguments.remove("text");
                    arguments.insert("codes".to_owned(), json!(codes));
                }
                Err(message) => return CallToolResult::error(vec![ContentBlock::text(message)]),
            }
        }
        let ran = tokio::task::spawn_blocking(move || match name.as_str() {
            VOICE_ADD => this.add(&arguments),
            _ => this.speak(&arguments),
        })
        .await;
        match ran {
            Ok(Ok(result)) => result,
            Ok(Err(message)) => CallToolResult::error(vec![ContentBlock::text(message)]),
            Err(e) => {
                CallToolResult::error(vec![ContentBlock::text(format!("the call failed: {e}"))])
            }
        }
    }

    fn add(&self, args: &JsonObject) -> Result<CallToolResult, String> {
        let name = string(args, "name")?.ok_or("`name` is required")?;
        // The name becomes a file name in the library: refuse one that would leave it (`../x`)
        // now, not after loading the speaker models and reading the recording.
        voxloop_voices::library::check_name(&name).map_err(|e| e.to_string())?;
        let description = string(args, "description")?.unwrap_or_default();
        let replace = args.get("replace").and_then(Value::as_bool).unwrap_or(false);
        let audio = match (string(args, "audio")?, string(args, "path")?) {
            (Some(b64), None) => recording_from_base64(&b64)?,
            (None, Some(_)) if !self.local_paths => {
                return Err(
                    "`path` is for stdio clients; send the recording as base64 `audio`".into()
                )
            }
            (None, Some(path)) => PromptAudio::load(Path::new(&path)).map_err(|e| e.to_string())?,
            (Some(_), Some(_)) => return Err("give `audio` or `path`, not both".into()),
            (None, None) => return Err("`audio` (base64 of a recording) is required".into()),
        };
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let mut library = VoiceLibrary::open(&self.voices_dir).map_err(|e| e.to_string())?;
        if library.get(&name).is_some() && !replace {
            return Err(format!(
                "the library already has a voice {name:?} (set `replace` to replace it)"
            ));
        }
        let extractor = match self.extractor.get() {
            Some(loaded) => loaded,
            None => {
                let loaded =
                    ProfileExtractor::from_dir(&self.token2wav_dir, &ExtractorOptions::default())
                        .map_err(|e| format!("loading the speaker models: {e}"))?;
                self.extractor.get_or_init(|| Mutex::new(loaded))
            }
        };
        let mut profile = extractor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .profile(&name, &audio)
            .map_err(|e| e.to_string())?;
        profile.description = description;
        let prompt_tokens = profile.prompt_tokens.len();
        let added = library.add(profile).map_err(|e| e.to_string())?;
        let indexed = match &self.index {
            Some(index) => library.register(index).map(|_| true).map_err(|e| e.to_string())?,
            None => false,
        };
        let report = json!({
            "name": added.name,
            "seconds": audio.seconds(),
            "prompt_tokens": prompt_tokens,
            "indexed": indexed,
        });
        Ok(CallToolResult::structured(report))
    }

    /// The speech codes of `speak`'s `text`.
    async fn codes_of_text(&self, args: &JsonObject) -> Result<Vec<u16>, String> {
        if args.contains_key("codes") {
            return Err("give `text` or `codes`, not both".into());
        }
        let text = string(args, "text")?.unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            return Err("`text` is empty".into());
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(format!("`text` is longer than {MAX_TEXT_CHARS} characters"));
        }
        let Some(model) = &self.text else {
            return Err(
                "reading text needs the speech LLM: set [model] dir (or send `codes`)".into()
            );
        };
        let mut codes = model.read_aloud(text).await?;
        codes.truncate(MAX_CODES);
        Ok(codes)
    }

    fn speak(&self, args: &JsonObject) -> Result<CallToolResult, String> {
        let voice = string(args, "voice")?.ok_or("`voice` is required")?;
        let codes = codes(args)?;
        let library = VoiceLibrary::open(&self.voices_dir).map_err(|e| e.to_string())?;
        let Some(profile) = library.get_ignore_case(&voice) else {
            let known: Vec<&str> = library.profiles().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "no voice {voice:?} in the library (voices: {})",
                known.join(", ")
            ));
        };
        let vocoder = match self.vocoder.get() {
            Some(loaded) => loaded,
            None => {
                let device = self.device.resolve().map_err(|e| e.to_string())?;
                let loaded = Token2Wav::load(&self.token2wav_dir, device)
                    .map_err(|e| format!("loading token2wav: {e}"))?;
                self.vocoder.get_or_init(|| Mutex::new(loaded))
            }
        };
        let samples = vocoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .synthesize(&codes, profile)
            .map_err(|e| e.to_string())?;
        let rate = voxloop_voices::token2wav::SAMPLE_RATE;
        let seconds = samples.len() as f64 / f64::from(rate);
        let report = json!({
            "voice": profile.name,
            "codes": codes.len(),
            "seconds": seconds,
            "sample_rate": rate,
        });
        let wav = base64::engine::general_purpose::STANDARD.encode(wav_bytes(&samples, rate));
        let mut result = CallToolResult::structured(report);
        result.content.push(ContentBlock::audio(wav, "audio/wav"));
        Ok(result)
    }
}

fn tool(name: &'static str, description: &str, input: Value, output: Value) -> Tool {
    let (Value::Object(input), Value::Object(output)) = (input, output) else {
        unreachable!("JSON object literals")
    };
    let mut tool = Tool::new(name, description.to_owned(), Arc::new(input));
    tool.output_schema = Some(Arc::new(output));
    tool
}

/// The string argument `key`, if given; an error if it is not a string.
fn string(args: &JsonObject, key: &str) -> Result<Option<String>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` must be a string, not {other}")),
    }
}

/// `codes`: integers of the codebook, at most [`MAX_CODES`].
fn codes(args: &JsonObject) -> Result<Vec<i64>, String> {
    let Some(Value::Array(items)) = args.get("codes") else {
        return Err("`codes` is required: an array of speech codes".into());
    };
    if items.is_empty() || items.len() > MAX_CODES {
        return Err(format!("`codes` must hold 1 to {MAX_CODES} codes, not {}", items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_i64()
                .filter(|c| (0..CODEBOOK).contains(c))
                .ok_or_else(|| format!("`codes[{i}]` = {v} is not a code in 0..{CODEBOOK}"))
        })
        .collect()
}

/// A recording sent as base64, decoded and checked.
fn recording_from_base64(b64: &str) -> Result<PromptAudio, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("`audio` is not base64: {e}"))?;
    if bytes.len() > MAX_RECORDING_BYTES {
        return Err(format!("`audio` is {} bytes, more than {MAX_RECORDING_BYTES}", bytes.len()));
    }
    PromptAudio::from_bytes(bytes, "`audio`").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_must_be_codebook_ids() {
        let args = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(codes(&args(json!({ "codes": [0, 6560, 12] }))).unwrap(), vec![0, 6560, 12]);
        assert!(codes(&args(json!({ "codes": [6561] }))).unwrap_err().contains("codes[0]"));
        assert!(codes(&args(json!({ "codes": [-1] }))).is_err());
        assert!(codes(&args(json!({ "codes": [] }))).unwrap_err().contains("1 to"));
        assert!(codes(&args(json!({}))).unwrap_err().contains("required"));
    }

    #[test]
    fn a_recording_that_is_not_base64_or_not_audio_is_refused() {
        assert!(recording_from_base64("!!!").unwrap_err().contains("not base64"));
        let junk = base64::engine::general_purpose::STANDARD.encode(b"no audio in here");
        let e = recording_from_base64(&junk).unwrap_err();
        assert!(e.contains("`audio`"), "{e}");
    }
}
