//! Building the service's agent from the configuration: the tools under their policies, the
//! speech LLM, and (when token2wav and a voice profile are found) the speech renderer.
//!
//! Everything here is blocking work (checkpoints, libtorch, the voice library, the audio
//! index): `voxloop serve` runs it on the main thread before the async runtime starts, and
//! starts listening only once it is done.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use voxloop_core::agent::{Agent, AgentConfig, SpeechRenderer};
use voxloop_core::audio::AudioLimits;
use voxloop_core::protocol::ToolChoice;
use voxloop_core::remote::RemoteModel;
use voxloop_core::session::SessionSettings;
use voxloop_core::tokenizer::StepTokenizer;
use voxloop_core::tool::{DynTool, Tool, ToolRegistry};
use voxloop_policies::{Approver, Policies, TurnApprover};
use voxloop_retrieval::AudioIndex;
use voxloop_tools::{AudioSearch, DateTimeTool, TimbreRag, VoiceList, WeatherTool, WebSearch};
use voxloop_voices::{Token2Wav, VoiceLibrary, VoiceProfile, VoiceSwapper};

use crate::config::{AnswerMode, Config, ModelBackend, ThinkSetting, DEFAULT_VOICE_NAME};
use crate::runtime::approvals::Approvals;
use crate::runtime::sessions::SessionTable;
use crate::runtime::store::SessionStore;

/// Largest audio upload of one turn, before base64 (the request body limit is 4/3 of it
/// plus room for the JSON around it).
pub const MAX_AUDIO_BYTES: u64 = 24 * 1024 * 1024;

/// The loaded agent and everything its turns use.
pub struct AgentRuntime {
    /// The speech LLM with its tools.
    pub agent: Agent,
    /// Settings of a new session, before the request's overrides.
    pub defaults: SessionSettings,
    /// Speech rendering, when a voice is loaded.
    pub voice: Option<VoiceRuntime>,
    /// The sessions.
    pub sessions: SessionTable,
    /// Limits on a turn's audio input.
    pub audio_limits: AudioLimits,
    /// The checkpoint directory.
    pub model_dir: PathBuf,
    /// The calls waiting for a client's approval (tools with `approval = true`).
    pub approvals: Arc<Approvals>,
    /// Where sessions are saved (`None`: `[agent] persist_sessions = false`).
    pub store: Option<SessionStore>,
    /// Rebuilds the agent's tools when an MCP server's tool list changes.
    pub tool_builder: ToolBuilder,
    /// Slots of the requests without a session, `max_requests` of them.
    pub request_slots: Arc<tokio::sync::Semaphore>,
    /// `[agent] max_requests`.
    pub max_requests: usize,
}

impl AgentRuntime {
    /// A slot for one request without a session, held until its answer is complete (the end
    /// of a stream included); `None` when all `[agent] max_requests` are taken.
    pub fn request_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.request_slots).try_acquire_owned().ok()
    }

    /// The session of `task` on `input` as the service runs it: the task's sampling, held to
    /// `[agent] max_new_tokens` and seeded by `[agent] seed` when set, then `adjust`ed.
    pub fn task_session(
        &self,
        task: voxloop_core::agent::Task,
        input: voxloop_core::agent::TurnInput,
        adjust: impl FnOnce(&mut voxloop_core::session::SamplingSettings),
    ) -> voxloop_core::Result<voxloop_core::session::Session> {
        let defaults = &self.defaults.sampling;
        task.session(input, |sampling| {
            sampling.max_new_tokens = sampling.max_new_tokens.min(defaults.max_new_tokens);
            sampling.seed = defaults.seed;
            adjust(sampling);
        })
    }
}

/// token2wav on its thread and the voices.
pub struct VoiceRuntime {
    /// token2wav on its render thread.
    pub renderer: SpeechRenderer,
    /// The voice new sessions start in.
    pub start: Arc<VoiceProfile>,
    /// The voices, to find a saved session's voice again.
    pub library: Arc<VoiceLibrary>,
    /// Where token2wav was loaded from.
    pub token2wav_dir: PathBuf,
}

/// The tools the agent gets: the enabled built-ins, `audio_search` when there is an index,
/// `timbre_rag` when a voice is loaded, and the tools of the MCP servers (`external`, see
/// `crate::mcp::client`); each wrapped in its `[agent.policies]` stack, and those the
/// policies disable left out (so the model is not told of them). Without an `approver`,
/// calls of tools with `approval = true` are refused.
pub fn build_tools(
    config: &Config,
    index: Option<&Arc<AudioIndex>>,
    timbre: Option<TimbreRag>,
    approver: Option<Arc<dyn Approver>>,
    external: &[Arc<dyn DynTool>],
) -> anyhow::Result<ToolRegistry> {
    ToolBuilder::new(config, index, timbre, approver)?.build(external)
}

/// Builds the agent's registry from the built-in tools, made once (their state, such as an
/// offline search index, is kept), and the MCP servers' tools of the moment: at start, and
/// again when a server's tool list changes (`crate::mcp::refresh`).
pub struct ToolBuilder {
    builtin: ToolRegistry,
    policies: voxloop_policies::PolicyConfig,
    approver: Option<Arc<dyn Approver>>,
}

impl ToolBuilder {
    /// The built-in tools of [`build_tools`] under their policies.
    pub fn new(
        config: &Config,
        index: Option<&Arc<AudioIndex>>,
        timbre: Option<TimbreRag>,
        approver: Option<Arc<dyn Approver>>,
    ) -> anyhow::Result<Self> {
        let policies = Self::policies(&config.agent.policies, approver.as_ref())?;
        let tools = &config.tools;
        let mut registry = ToolRegistry::new();
        let on = |name: &str| policies.enabled(name);
        let cfg = |e: voxloop_tools::Error| anyhow::anyhow!("config [tools]: {e}");
        if tools.web_search.enabled && on(WebSearch::NAME) {
            registry.register_with(
                WebSearch::from_config(&tools.web_search).map_err(cfg)?,
                policies.layers(),
            )?;
        }
        if tools.date_time.enabled && on(DateTimeTool::NAME) {
            let mut tool = DateTimeTool::from_config(&tools.date_time).map_err(cfg)?;
            // A fixed `now` holds for the tool too: its answer goes back into the model, and a
            // random-weight model's next tokens follow it (tests must not depend on the clock).
            if let Some(now) =
                config.fixed_now().map_err(|e| anyhow::anyhow!("[agent] fixed_now: {e}"))?
            {
                let now = jiff::Timestamp::try_from(now)
                    .map_err(|e| anyhow::anyhow!("[agent] fixed_now is out of range: {e}"))?;
                tool = tool.with_clock(move || now);
            }
            registry.register_with(tool, policies.layers())?;
        }
        if tools.weather.enabled && on(WeatherTool::NAME) {
            registry.register_with(
                WeatherTool::from_config(&tools.weather).map_err(cfg)?,
                policies.layers(),
            )?;
        }
        if let Some(index) = index.filter(|_| on(AudioSearch::NAME)) {
            registry.register_with(AudioSearch::new(Arc::clone(index)), policies.layers())?;
        }
        if let Some(timbre) = timbre.filter(|_| on(TimbreRag::NAME)) {
            registry.register_with(timbre, policies.layers())?;
        }
        Ok(Self { builtin: registry, policies: config.agent.policies.clone(), approver })
    }

    fn policies(
        config: &voxloop_policies::PolicyConfig,
        approver: Option<&Arc<dyn Approver>>,
    ) -> anyhow::Result<Policies> {
        let mut policies = Policies::new(config.clone())
            .map_err(|e| anyhow::anyhow!("config [agent.policies]: {e}"))?;
        if let Some(approver) = approver {
            policies = policies.with_approver(Arc::clone(approver));
        }
        Ok(policies)
    }

    /// The built-in tools and `external` (the MCP servers' tools), each of those under a
    /// fresh `[agent.policies]` stack (a rebuild starts their rate limits anew). A tool the
    /// grammar could not take is left out with a warning.
    pub fn build(&self, external: &[Arc<dyn DynTool>]) -> anyhow::Result<ToolRegistry> {
        let policies = Self::policies(&self.policies, self.approver.as_ref())?;
        let mut registry = self.builtin.clone();
        for tool in external.iter().filter(|tool| policies.enabled(tool.name())) {
            let usable = tool.definition().ok().filter(|d| {
                !d.name.chars().any(|c| c.is_whitespace() || c.is_control())
                    && d.parameters.get("type").and_then(|t| t.as_str()) == Some("object")
            });
            if usable.is_none() {
                tracing::warn!(
                    tool = tool.name(),
                    "MCP tool left out: its name or schema is unusable"
                );
                continue;
            }
            if let Err(e) = registry.register_dyn_with(Arc::clone(tool), policies.layers()) {
                tracing::warn!(tool = tool.name(), error = %e, "MCP tool left out");
            }
        }
        Ok(registry)
    }

    /// The policies the MCP tools get.
    pub fn policy_config(&self) -> &voxloop_policies::PolicyConfig {
        &self.policies
    }

    /// The same built-ins under `policies` (with approvals for the MCP tools that say they are
    /// destructive: see `McpClients::require_approvals`).
    pub fn with_policies(&self, policies: voxloop_policies::PolicyConfig) -> Self {
        Self { builtin: self.builtin.clone(), policies, approver: self.approver.clone() }
    }
}

/// The tools `voxloop mcp` and `/mcp` offer: those of [`build_tools`] that need no session
/// (no `timbre_rag`, no approver: tools that need approval are refused), and `voice_list`
/// when the voice library exists and the policies allow it.
pub fn build_mcp_tools(
    config: &Config,
    index: Option<&Arc<AudioIndex>>,
) -> anyhow::Result<ToolRegistry> {
    let mut registry = build_tools(config, index, None, None, &[])?;
    let policies = Policies::new(config.agent.policies.clone())
        .map_err(|e| anyhow::anyhow!("config [agent.policies]: {e}"))?;
    let (voices_dir, _) = config.voices_dir();
    if voices_dir.is_dir() && policies.enabled(VoiceList::NAME) {
        let library = VoiceLibrary::open(&voices_dir)
            .with_context(|| format!("[voice] dir {}", voices_dir.display()))?;
        registry.register(VoiceList::new(&library))?;
    }
    Ok(registry)
}

/// Reads a tool choice: `auto`, `none`, `required`, or a tool's name.
pub fn parse_tool_choice(text: &str, tools: &ToolRegistry) -> Result<ToolChoice, String> {
    let names = || tools.names().collect::<Vec<_>>().join(", ");
    match text.trim() {
        "auto" => Ok(ToolChoice::Auto),
        "none" => Ok(ToolChoice::None),
        "required" if tools.is_empty() => {
            Err("tool_choice \"required\": no tool is enabled".into())
        }
        "required" => Ok(ToolChoice::Required),
        name if tools.contains(name) => Ok(ToolChoice::Named(name.to_owned())),
        other => Err(format!(
            "tool_choice {other:?} is neither auto, none, required nor an enabled tool (tools: {})",
            names()
        )),
    }
}

/// Loads the agent when `[model] dir` is set; `None` without a model. Errors name the
/// setting at fault.
pub fn load(
    config: &Config,
    index: Option<Arc<AudioIndex>>,
    external: &[Arc<dyn DynTool>],
) -> anyhow::Result<Option<AgentRuntime>> {
    config.validate_agent()?;
    let Some(model_dir) = config.model.dir.clone() else {
        tracing::info!("no [model] dir (VOXLOOP_MODEL_DIR): the session endpoints answer 503");
        return Ok(None);
    };
    let remote = config.model.backend == ModelBackend::Openai;
    if remote && !model_dir.join("tokenizer.json").is_file() {
        anyhow::bail!(
            "[model] dir {}: no tokenizer.json (backend \"openai\" reads only the checkpoint's \
             tokenizer)",
            model_dir.display()
        );
    }
    if !remote && !model_dir.join("config.json").is_file() {
        anyhow::bail!(
            "[model] dir {}: not a Step-Audio 2 checkpoint directory (no config.json)",
            model_dir.display()
        );
    }
    let voice = load_voice(config)?;
    let (timbre, voice) = match voice {
        Some((library, start, token2wav_dir)) => {
            let voice = voice_runtime(config, library, start, token2wav_dir)?;
            let mut swapper = VoiceSwapper::new(Arc::clone(&voice.library));
            let library = &voice.library;
            if let Some(index) = &index {
                match library.register(index) {
                    Ok(report) => {
                        tracing::info!(added = report.added, "voices registered in the audio index")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register the voices in the audio index")
                    }
                }
                swapper = swapper.with_index(Arc::clone(index));
            }
            (Some(TimbreRag::new(swapper)), Some(voice))
        }
        None => (None, None),
    };
    let store = config.sessions_dir().map(SessionStore::open).transpose()?;
    if let Some(store) = &store {
        tracing::info!(dir = %store.dir().display(), "sessions are saved");
    }
    let approvals = Arc::new(Approvals::new(config.agent.policies.clone()));
    // Approval questions go to the calling turn's event stream; the HTTP layer files them
    // in `approvals` for the client's answer.
    let approver: Arc<dyn Approver> = Arc::new(TurnApprover::new(config.agent.policies.clone()));
    let tool_builder = ToolBuilder::new(config, index.as_ref(), timbre, Some(approver))?;
    let tools = tool_builder.build(external)?;
    let defaults = session_defaults(config, &tools, &model_dir)?;
    let agent_config = AgentConfig {
        fixed_now: config.fixed_now().map_err(|e| anyhow::anyhow!("[agent] fixed_now: {e}"))?,
        prefix_cache_bytes: config.agent.prefix_cache_mb.saturating_mul(1024 * 1024),
        model_name: config.model.model.clone(),
        ..AgentConfig::default().summarise_results_of(WebSearch::NAME)
    };
    let agent = load_agent(config, &model_dir, tools, agent_config)?;
    tracing::info!(
        model = %model_dir.display(),
        tools = ?agent.tools().names().collect::<Vec<_>>(),
        voice = voice.as_ref().map(|v| v.start.name.as_str()),
        "agent loaded"
    );
    Ok(Some(AgentRuntime {
        agent,
        defaults,
        voice,
        sessions: SessionTable::new(config.agent.max_sessions),
        audio_limits: AudioLimits {
            max_seconds: config.agent.max_audio_seconds,
            max_bytes: MAX_AUDIO_BYTES,
        },
        model_dir,
        approvals,
        store,
        tool_builder,
        request_slots: Arc::new(tokio::sync::Semaphore::new(config.agent.max_requests)),
        max_requests: config.agent.max_requests,
    }))
}

/// The agent over the checkpoint in `dir`: loaded here, or with `[model] backend = "openai"`
/// over the configured server (then only `dir/tokenizer.json` is read).
pub fn load_agent(
    config: &Config,
    dir: &std::path::Path,
    tools: ToolRegistry,
    agent_config: AgentConfig,
) -> anyhow::Result<Agent> {
    if config.model.backend != ModelBackend::Openai {
        return Agent::load(dir, config.model.device, tools, agent_config)
            .with_context(|| format!("loading the speech LLM from {}", dir.display()));
    }
    let voice = config.voice.name.as_deref().unwrap_or(DEFAULT_VOICE_NAME);
    let settings = config.model.remote(voice, |name| std::env::var(name).ok());
    tracing::info!(url = %settings.url, model = %settings.model, "generation runs on a remote server");
    let model = RemoteModel::new(settings).context("[model] url")?;
    let tokenizer = StepTokenizer::from_file(dir.join("tokenizer.json"))
        .with_context(|| format!("{}: tokenizer.json", dir.display()))?;
    Ok(Agent::over_remote(model, Arc::new(tokenizer), tools, agent_config)?)
}

/// The `[agent]` table as session settings (`think = "auto"` asks the checkpoint in
/// `model_dir`).
fn session_defaults(
    config: &Config,
    tools: &ToolRegistry,
    model_dir: &std::path::Path,
) -> anyhow::Result<SessionSettings> {
    let a = &config.agent;
    let think = match a.think {
        ThinkSetting::On => true,
        ThinkSetting::Off => false,
        ThinkSetting::Auto => voxloop_core::model::is_reasoning_checkpoint(model_dir),
    };
    if think {
        tracing::info!(budget = a.reasoning_max_tokens, "answers start with a think phase");
    }
    let mut s = SessionSettings {
        think,
        reasoning_max_tokens: a.reasoning_max_tokens,
        ..SessionSettings::default()
    };
    if let Some(prompt) = &a.system_prompt {
        s.system_prompt = prompt.clone();
    }
    s.speech = a.mode == AnswerMode::Speech;
    s.tool_choice = parse_tool_choice(&a.tool_choice, tools)
        .map_err(|e| anyhow::anyhow!("config field `agent.tool_choice`: {e}"))?;
    s.max_steps = a.max_steps;
    s.sampling.max_new_tokens = a.max_new_tokens;
    s.sampling.seed = a.seed;
    if let Some(t) = a.temperature {
        s.sampling.temperature = t;
    }
    if let Some(p) = a.top_p {
        s.sampling.top_p = p;
    }
    if let Some(k) = a.top_k {
        s.sampling.top_k = k;
    }
    Ok(s)
}

type LoadedVoice = (VoiceLibrary, Arc<VoiceProfile>, PathBuf);

/// The voice library, the starting voice and the token2wav directory, when all are there. A directory or voice named in the
/// configuration must exist; the defaults may be absent (then turns stream speech codes only).
/// token2wav on its render thread with the voice library, when `[voice]` names both (see
/// [`load_voice`]): what the task commands speak with.
pub fn load_voice_runtime(config: &Config) -> anyhow::Result<Option<VoiceRuntime>> {
    load_voice(config)?
        .map(|(library, start, dir)| voice_runtime(config, library, start, dir))
        .transpose()
}

fn voice_runtime(
    config: &Config,
    library: VoiceLibrary,
    start: Arc<VoiceProfile>,
    token2wav_dir: PathBuf,
) -> anyhow::Result<VoiceRuntime> {
    let device = config.model.device.resolve()?;
    let dir = token2wav_dir.clone();
    let renderer = SpeechRenderer::spawn("voxloop-token2wav", move || {
        Token2Wav::load(&dir, device)
            .map_err(|e| format!("loading token2wav from {}: {e}", dir.display()))
    })?;
    Ok(VoiceRuntime { renderer, start, library: Arc::new(library), token2wav_dir })
}

fn load_voice(config: &Config) -> anyhow::Result<Option<LoadedVoice>> {
    let Some((t2w_dir, explicit)) = config.token2wav_dir() else { return Ok(None) };
    if !t2w_dir.join("flow.yaml").is_file() {
        if explicit {
            anyhow::bail!(
                "[voice] token2wav {}: not a token2wav directory (no flow.yaml)",
                t2w_dir.display()
            );
        }
        tracing::info!(dir = %t2w_dir.display(), "no token2wav: turns stream speech codes without audio");
        return Ok(None);
    }
    let (voices_dir, explicit_dir) = config.voices_dir();
    if !voices_dir.is_dir() {
        if explicit_dir {
            anyhow::bail!("[voice] dir {}: no such directory", voices_dir.display());
        }
        tracing::info!(dir = %voices_dir.display(), "no voice library: turns stream speech codes without audio");
        return Ok(None);
    }
    let library = VoiceLibrary::open(&voices_dir)
        .with_context(|| format!("[voice] dir {}", voices_dir.display()))?;
    let name = config.voice.name.as_deref().unwrap_or(DEFAULT_VOICE_NAME);
    let Some(start) = library.get(name).cloned() else {
        let known = library.profiles().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
        if config.voice.name.is_some() {
            anyhow::bail!(
                "[voice] name {name:?}: no such profile in {} (voices: {known})",
                voices_dir.display()
            );
        }
        tracing::info!(
            dir = %voices_dir.display(),
            voices = %known,
            "no {DEFAULT_VOICE_NAME} voice (set [voice] name): turns stream speech codes without audio"
        );
        return Ok(None);
    };
    tracing::info!(token2wav = %t2w_dir.display(), voice = %start.name, "speech rendering on");
    Ok(Some((library, start, t2w_dir)))
}
