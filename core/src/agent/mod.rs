//! The reason-then-act loop: one [`Agent`] (a model on its inference thread, a tokenizer and
//! a [`ToolRegistry`]) runs the turns of a [`Session`].
//!
//! # One turn
//!
//! [`Agent::run_turn`] returns a [`TurnStream`] of [`AgentEvent`]s; polling it runs the turn:
//!
//! 1. The first turn of a session writes the system turn (prompt, date line, voice
//!    instruction) and, when tools are registered, the `tool_json_schemas` turn
//!    ([`ToolRegistry::tool_json_schemas`]). The user's input becomes a human turn.
//! 2. A **generation step** prefills only what the KV cache lacks — the `<|EOT|>` closing the
//!    previous assistant turn, the new turns, the generation prompt (`<|BOT|>assistant\n`, plus
//!    `<tts_start>` in speech mode) — and generates on the model's thread under the step's
//!    logits mask ([`ConstraintFactory`]). Each id goes through the protocol's
//!    [`Demux`](crate::protocol::Demux): text and speech codes stream out as events, tool calls
//!    are collected.
//! 3. If the step made tool calls, they run concurrently (at most
//!    [`AgentConfig::tool_concurrency`] at once) through the registry, each with its call id
//!    and inside its `execute_tool` span. A malformed call (the demultiplexer's parse error)
//!    is not run: its error message is its result. The assistant turn (its raw generated ids)
//!    and one `input` turn per result, in call order, join the history, and the next step
//!    prefills them on top of the same cache. Result text is tokenized with special tokens off
//!    (an `<|EOT|>` inside a web page stays text); the tools named in
//!    [`AgentConfig::result_instructions`] get their instruction (upstream's search summary
//!    instruction, [`SEARCH_SUMMARY_INSTRUCTION`]) appended as trusted text.
//! 4. The turn ends with the first step that calls no tool ([`TurnEndReason::Completed`]). The
//!    first step uses [`SessionSettings::tool_choice`], later ones
//!    [`SessionSettings::follow_up_tool_choice`]; after [`SessionSettings::max_steps`] steps
//!    that called tools, one last step runs with [`ToolChoice::None`]
//!    ([`TurnEndReason::MaxSteps`]).
//! 5. A session that thinks ([`SessionSettings::think`], for a reasoning checkpoint such as
//!    Step-Audio-2-mini-Think: [`crate::model::is_reasoning_checkpoint`]) runs the step that
//!    answers a human turn in two phases, as upstream's `examples-think.py`: the assistant
//!    turn opens with `\n<think>\n` and the model writes, under
//!    [`ConstraintFactory::build_reasoning`]'s mask and at most
//!    [`SessionSettings::reasoning_max_tokens`] ids, until its text holds `</think>`
//!    (streamed as [`AgentEvent::Reasoning`], counted in [`Usage::reasoning_tokens`]); then
//!    what is missing of `</think>\n\n`, and `<tts_start>` for speech, is prefilled and the
//!    answer generated as any step's. The history keeps the answer alone (upstream drops the
//!    think text), so the cache is cut back to the prefilled turns and the answer is
//!    prefilled, without its thinking, with the next step or turn.
//!
//! # Cancellation (barge-in)
//!
//! [`CancelHandle::cancel`] stops the running generation before its next decode step and
//! abandons running tool calls. The history never holds a tool call without its result:
//!
//! - cancelled while generating: the ids generated so far are kept as the assistant turn (it
//!   is what the user heard), cut before the first `<tool_call>`; the cache is truncated to
//!   match. Nothing generated: only the prompt's turns are kept.
//! - cancelled while thinking: nothing was said; the prompt's turns are kept (and cached), the
//!   think phase is not.
//! - cancelled while tools run: the assistant turn stays with all its calls; the calls that
//!   finished keep their real results, the others get a "cancelled" error result. Those
//!   `input` turns are prefilled with the next turn.
//!
//! Dropping the stream instead is a harsher cancel: the step that was running is forgotten
//! (the next turn truncates the cache to what the session records).
//!
//! A turn that fails ([`TurnEndReason::Error`]: the model, a constraint, a context overflow)
//! keeps its human turn in the history, uncached, and cuts the cache back to what the session
//! records; the next turn prefills the human turn again with its own.
//!
//! # One model, many sessions
//!
//! An agent's model holds one KV cache. A session records what of it is in that cache; when a
//! turn starts for a session whose ids are not the cache's (a new or loaded session, or
//! another session used the model in between) the cache is cleared and the whole history is
//! prefilled once. Turns of one agent run one at a time.
//!
//! # Tracing
//!
//! Each turn is an `invoke_agent` span; each step a `chat {model}` span under it; the tool
//! calls' `execute_tool` spans are its children too. Fields: `gen_ai.operation.name`,
//! `gen_ai.provider.name` (`stepfun`), `gen_ai.conversation.id`, `gen_ai.request.model`,
//! `gen_ai.usage.input_tokens` / `output_tokens` / `output_audio_tokens`, on the turn
//! `gen_ai.agent.invocation.end_reason` (`completed`, `max_steps`, `interrupted`, `error`), on
//! each step the request parameters, `gen_ai.output.type` (`speech` or `text`),
//! `gen_ai.response.finish_reasons` (`["stop"]`, `["length"]`, `["tool_calls"]`,
//! `["cancelled"]`, `["error"]`) and `gen_ai.response.time_to_first_chunk` (seconds).

mod client;
mod constraints;
mod events;
mod prefix;
mod prompt;
mod render;
mod speech;
mod stream;
mod task;
mod telemetry;
mod toolset;
mod turn;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tch::Kind;

pub use client::ClientTools;
pub use constraints::{ConstraintFactory, GrammarConstraints, TextOnly};
pub use events::{AgentEvent, TurnEndReason, Usage};
pub use render::{Rendered, SpeechRenderer, Utterances};
pub use speech::{SpeechEngine, SpeechSink};
pub use stream::{CancelHandle, TurnStream};
pub use task::{TargetLanguage, Task, TaskOutput};

use prefix::{CacheLine, PrefixStore};
use toolset::ToolSet;

use crate::audio::AudioChunk;
use crate::generate::{InferenceWorker, StepModel};
use crate::model::StepAudio2;
use crate::protocol::{ToolChoice, SEARCH_SUMMARY_INSTRUCTION};
use crate::remote::RemoteModel;
use crate::session::{HumanPart, Session, SessionSettings};
use crate::tokenizer::StepTokenizer;
use crate::tool::{ToolDefinition, ToolRegistry};
use crate::{DeviceSpec, Error, Result};

/// How an agent runs its turns (per agent; per-conversation settings are in
/// [`SessionSettings`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `gen_ai.agent.name` and the `invoke_agent {name}` span name.
    pub agent_name: String,
    /// `gen_ai.request.model` and the `chat {model}` span name.
    pub model_name: String,
    /// How many tool calls of one step run at once (0 counts as 1).
    pub tool_concurrency: usize,
    /// Results longer than this many bytes are cut ([`truncate_output`]) before they reach
    /// the model: the backstop for tools registered without an output-cap policy (the
    /// service's policies cut each tool's output to its own `max_output_bytes` first, by
    /// default as much as this).
    ///
    /// [`truncate_output`]: crate::tool::truncate_output
    pub max_result_bytes: usize,
    /// Trusted text appended to a tool's successful result, by tool name.
    pub result_instructions: HashMap<String, String>,
    /// The instant a new session's system prompt dates itself by; `None`: the system clock.
    /// The date line is part of the prompt, so it changes what the model generates: fix it
    /// where runs must repeat (tests, evaluations, replays).
    pub fixed_now: Option<SystemTime>,
    /// Whether a session the cache does not hold may reuse the turns it shares with the
    /// conversation the model ran last or with a saved one (see "Prefix reuse" in the module
    /// documentation).
    pub reuse_prefix: bool,
    /// The most memory the saved copies of earlier conversations' KV caches may take, in
    /// bytes (0: none is kept; only the live conversation is reused).
    pub prefix_cache_bytes: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_name: "voxloop".to_owned(),
            model_name: "step-audio-2-mini".to_owned(),
            tool_concurrency: 4,
            max_result_bytes: 32_768,
            result_instructions: HashMap::new(),
            fixed_now: None,
            reuse_prefix: true,
            prefix_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

impl AgentConfig {
    /// Appends upstream's search summary instruction ([`SEARCH_SUMMARY_INSTRUCTION`]) to the
    /// results of `tool`, as StepFun's example does for web search.
    #[must_use]
    pub fn summarise_results_of(mut self, tool: impl Into<String>) -> Self {
        self.result_instructions.insert(tool.into(), SEARCH_SUMMARY_INSTRUCTION.to_owned());
        self
    }

    /// The instant system prompts date themselves by: [`AgentConfig::fixed_now`], else now.
    pub fn now(&self) -> SystemTime {
        self.fixed_now.unwrap_or_else(SystemTime::now)
    }
}

/// What the user said or typed in one turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnInput {
    parts: Vec<HumanPart>,
}

impl TurnInput {
    /// Typed text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::default().and_text(text)
    }

    /// Speech, as the chunks of [`crate::audio::prepare_audio`] (a `Vec` moves in, a slice's
    /// chunks share their features).
    pub fn audio(chunks: impl Into<Vec<AudioChunk>>) -> Self {
        Self::default().and_audio(chunks)
    }

    /// Adds text after what is there.
    #[must_use]
    pub fn and_text(mut self, text: impl Into<String>) -> Self {
        self.parts.push(HumanPart::Text { text: text.into() });
        self
    }

    /// Adds speech after what is there.
    #[must_use]
    pub fn and_audio(mut self, chunks: impl Into<Vec<AudioChunk>>) -> Self {
        self.parts.push(HumanPart::Audio { chunks: chunks.into() });
        self
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[HumanPart] {
        &self.parts
    }

    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// Distinguishes agents, so that a session knows whose cache holds it.
static NEXT_AGENT: AtomicU64 = AtomicU64::new(1);

/// Where an agent's model runs.
enum Engine {
    /// In this process, on its inference thread.
    Local(InferenceWorker),
    /// On a server, behind Chat Completions ([`crate::remote`]): no KV cache here.
    Remote(RemoteModel),
}

/// A speech LLM with tools; see the module documentation.
pub struct Agent {
    engine: Engine,
    tokenizer: Arc<StepTokenizer>,
    /// The tools and their grammar; each turn takes the set current at its start.
    tools: std::sync::RwLock<Arc<ToolSet>>,
    config: AgentConfig,
    /// What the model's cache holds after the last turn that ended cleanly (`None` while a
    /// turn runs or after one was dropped), and copies of earlier conversations.
    prefixes: std::sync::Mutex<PrefixStore>,
    instance: u64,
    /// Bumped each time the cache is cleared for a session.
    epoch: AtomicU64,
    /// Held for the whole of a turn: one turn at a time uses the model.
    lease: tokio::sync::Mutex<()>,
    /// Where [`Agent::load`] put the weights, and in which dtype.
    placement: Option<(tch::Device, Kind)>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("tools", &self.tools())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent over a model already running on `worker` (its cache is cleared before the
    /// first turn), with the default [`GrammarConstraints`] for `tools`.
    pub fn new(
        worker: InferenceWorker,
        tokenizer: Arc<StepTokenizer>,
        tools: ToolRegistry,
        config: AgentConfig,
    ) -> Result<Self> {
        Self::with_engine(Engine::Local(worker), tokenizer, tools, config)
    }

    /// An agent whose generation steps run on a remote server ([`crate::remote`]); the
    /// tokenizer (the checkpoint's `tokenizer.json`) keeps the history's ids and the grammar
    /// that checks calls as for a local model.
    pub fn over_remote(
        model: RemoteModel,
        tokenizer: Arc<StepTokenizer>,
        tools: ToolRegistry,
        config: AgentConfig,
    ) -> Result<Self> {
        Self::with_engine(Engine::Remote(model), tokenizer, tools, config)
    }

    fn with_engine(
        engine: Engine,
        tokenizer: Arc<StepTokenizer>,
        tools: ToolRegistry,
        config: AgentConfig,
    ) -> Result<Self> {
        let tools = std::sync::RwLock::new(Arc::new(ToolSet::compile(&tokenizer, tools)?));
        let prefixes = std::sync::Mutex::new(PrefixStore::new(config.prefix_cache_bytes));
        Ok(Self {
            engine,
            tokenizer,
            tools,
            config,
            prefixes,
            instance: NEXT_AGENT.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
            lease: tokio::sync::Mutex::new(()),
            placement: None,
        })
    }

    /// Loads the checkpoint in `dir` (the official layout, `tokenizer.json` included) on an
    /// inference thread: f32 on the CPU, bf16 on CUDA.
    pub fn load(
        dir: &Path,
        device: DeviceSpec,
        tools: ToolRegistry,
        config: AgentConfig,
    ) -> Result<Self> {
        // Untrusted text that cannot fit in the context is refused before it is tokenized.
        let positions =
            crate::model::Config::from_file(&dir.join("config.json"))?.text.max_positions();
        let tokenizer = Arc::new(
            StepTokenizer::from_file(dir.join("tokenizer.json"))?
                .with_untrusted_token_cap(positions),
        );
        let patch = u32::try_from(tokenizer.special().audio_patch)
            .map_err(|_| Error::Agent("the <audio_patch> id does not fit in 32 bits".to_owned()))?;
        let device = device.resolve()?;
        let kind = if device.is_cuda() { Kind::BFloat16 } else { Kind::Float };
        let dir = dir.to_path_buf();
        let worker = InferenceWorker::spawn(move || {
            let mut model = StepAudio2::load(&dir, device, kind)?;
            model.set_audio_patch_id(patch);
            Ok(model)
        })?;
        let mut agent = Self::new(worker, tokenizer, tools, config)?;
        agent.placement = Some((device, kind));
        Ok(agent)
    }

    /// The device and dtype the weights were loaded on (`None` for an agent made from a
    /// running worker, or over a remote model).
    pub fn placement(&self) -> Option<(tch::Device, Kind)> {
        self.placement
    }

    /// Replaces the logits-mask factory (kept when [`replace_tools`](Self::replace_tools)
    /// changes the tools).
    #[must_use]
    pub fn with_constraints(self, constraints: Arc<dyn ConstraintFactory>) -> Self {
        let set = self.tool_set().with_constraints(constraints);
        self.swap_tool_set(set);
        self
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &StepTokenizer {
        &self.tokenizer
    }

    /// [`Error::TextTooLong`] when a turn's `text` cannot fit in the model's context, found
    /// without tokenizing it: front doors call it to refuse such a request at once (a turn
    /// refuses it too, as an error). Always `Ok` for an agent whose tokenizer has no cap (one
    /// made from a running worker or over a remote model).
    pub fn check_text_fits(&self, text: &str) -> Result<()> {
        self.tokenizer.check_untrusted_len(text)
    }

    /// [`Agent::check_text_fits`] for the texts of a whole history, which must fit together.
    pub fn check_texts_fit<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> Result<()> {
        self.tokenizer.check_untrusted_lens(texts)
    }

    /// The tools (those current now: see [`replace_tools`](Self::replace_tools)).
    pub fn tools(&self) -> Arc<ToolRegistry> {
        Arc::clone(&self.tool_set().registry)
    }

    /// Replaces the tools, their grammar recompiled (milliseconds to tens of milliseconds for
    /// a few dozen tools). A running turn keeps the tools it started with; each session's
    /// next turn declares the new ones to the model (its `tool_json_schemas` turn is
    /// replaced, and prefilled again from there). Fails, leaving the tools as they were, for a
    /// tool the grammar cannot take.
    pub fn replace_tools(&self, tools: ToolRegistry) -> Result<()> {
        let set = self.tool_set().with_registry(tools)?;
        self.swap_tool_set(set);
        Ok(())
    }

    fn tool_set(&self) -> Arc<ToolSet> {
        Arc::clone(&self.tools.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn swap_tool_set(&self, set: ToolSet) {
        *self.tools.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The inference thread, for jobs of your own (they run between the turns' jobs); `None`
    /// when the model is remote. After a job that changes the model's cache, call
    /// [`Agent::forget_cache`].
    pub fn worker(&self) -> Option<&InferenceWorker> {
        match &self.engine {
            Engine::Local(worker) => Some(worker),
            Engine::Remote(_) => None,
        }
    }

    /// The remote model, when the agent runs over one.
    pub fn remote_model(&self) -> Option<&RemoteModel> {
        match &self.engine {
            Engine::Local(_) => None,
            Engine::Remote(model) => Some(model),
        }
    }

    /// Declares the model's cache unknown: every session prefills its whole history at its
    /// next turn.
    pub fn forget_cache(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.prefixes().forget_live();
    }

    /// Compiles the call grammar of tools a client declares and runs itself (see
    /// [`ClientTools`]); `parallel: false` allows at most one call per step. Fails like
    /// [`GrammarConstraints::new`] for a tool the grammar cannot take (a bad name, a
    /// duplicate, a schema that is not an object).
    pub fn client_tools(
        &self,
        definitions: Vec<ToolDefinition>,
        parallel: bool,
    ) -> Result<ClientTools> {
        let mut grammar = self.tool_set().grammar.with_tools(&definitions)?;
        if !parallel {
            grammar = grammar.single_call();
        }
        Ok(ClientTools::new(definitions, Vec::new(), Arc::new(grammar)))
    }

    /// [`client_tools`](Self::client_tools) beside the agent's registered tools: the model is
    /// told of both (the registered ones first), calls of registered tools run through their
    /// stacks, and a step that calls a client tool ends the turn with
    /// [`TurnEndReason::ToolCalls`] once its registered calls ran. A client tool may not take
    /// a registered tool's name.
    pub fn client_tools_beside_own(
        &self,
        definitions: Vec<ToolDefinition>,
        parallel: bool,
    ) -> Result<ClientTools> {
        let set = self.tool_set();
        if let Some(clash) = definitions.iter().find(|d| set.registry.contains(&d.name)) {
            return Err(Error::Agent(format!(
                "the client tool {:?} has the name of one of the agent's tools",
                clash.name
            )));
        }
        let own = set.registry.definitions();
        let all: Vec<ToolDefinition> = own.iter().chain(&definitions).cloned().collect();
        let mut grammar = set.grammar.with_tools(&all)?;
        if !parallel {
            grammar = grammar.single_call();
        }
        Ok(ClientTools::new(definitions, own, Arc::new(grammar)))
    }

    /// Runs one turn of `session` with `input`; see the module documentation. The turn runs
    /// as the returned stream is polled.
    pub fn run_turn<'a>(&'a self, session: &'a mut Session, input: TurnInput) -> TurnStream<'a> {
        self.turn(session, turn::Begin::Input(input), None)
    }

    /// [`run_turn`](Self::run_turn), with the speech rendered: when the session speaks
    /// ([`SessionSettings::speech`]) its speech codes go to `renderer`, in the voice the
    /// session's extensions give, and the stream carries the samples as
    /// [`AgentEvent::Audio`] events. This is the turn every front door runs (HTTP sessions,
    /// `voxloop generate`, the examples).
    pub fn speak_turn<'a>(
        &'a self,
        session: &'a mut Session,
        input: TurnInput,
        renderer: Option<&SpeechRenderer>,
    ) -> TurnStream<'a> {
        self.turn(session, turn::Begin::Input(input), renderer)
    }

    /// Answers the history `session` holds, without new input: the history was written by the
    /// caller (a stateless front door rebuilds it for every request; see
    /// [`Session::with_history`]) and ends with a human turn or tool results. With
    /// `client_tools` the model is told of those tools only (the session's `tool_json_schemas`
    /// turn must declare them) and a step that calls them ends the turn with
    /// [`TurnEndReason::ToolCalls`]; without, the agent's own tools run as in
    /// [`run_turn`](Self::run_turn). Speech is rendered as in
    /// [`speak_turn`](Self::speak_turn).
    pub fn continue_turn<'a>(
        &'a self,
        session: &'a mut Session,
        client_tools: Option<Arc<ClientTools>>,
        renderer: Option<&SpeechRenderer>,
    ) -> TurnStream<'a> {
        self.turn(session, turn::Begin::Continue(client_tools), renderer)
    }

    /// The stream of a turn that starts as `begin` says, its speech rendered by `renderer`
    /// when the session speaks.
    fn turn<'a>(
        &'a self,
        session: &'a mut Session,
        begin: turn::Begin,
        renderer: Option<&SpeechRenderer>,
    ) -> TurnStream<'a> {
        let speech = renderer
            .filter(|_| session.settings().speech)
            .map(|renderer| (renderer, session.extensions().clone()));
        let cancel = CancelHandle::new();
        let handle = cancel.clone();
        let stream = TurnStream::new(cancel, move |out| {
            Box::pin(turn::drive(self, session, begin, out, handle))
        });
        match speech {
            Some((renderer, extensions)) => stream.with_speech(renderer, extensions),
            None => stream,
        }
    }

    /// The number of positions in the model's cache (waits for the running turn's jobs); 0
    /// for a remote model.
    pub async fn cache_len(&self) -> Result<usize> {
        if self.remote_model().is_some() {
            return Ok(0);
        }
        self.on_worker(|model| model.cache_len()).await
    }

    /// Runs `job` on the inference thread and awaits its result without blocking the
    /// executor.
    pub(crate) async fn on_worker<R, F>(&self, job: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StepModel) -> R + Send + 'static,
    {
        let Engine::Local(worker) = &self.engine else {
            return Err(Error::Agent("the model is remote: there is no local model".to_owned()));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        worker.submit(move |model| {
            let _ = tx.send(job(model));
        })?;
        rx.await.map_err(|_| {
            Error::InferenceWorkerStopped("the job was dropped before it finished".to_owned())
        })
    }

    /// Makes the model's cache hold a prefix of `session`'s history and records which: the
    /// session's own ids when the cache still holds them (cut back to them, in case a dropped
    /// turn left more); else the most it shares with the conversation the model ran last or
    /// with a saved one (see [`prefix`]), in a new epoch (the cache now belongs to this
    /// session's line); else nothing (cleared, a new epoch).
    pub(crate) async fn prepare_cache(&self, session: &mut Session) -> Result<()> {
        // Until this turn ends cleanly, nobody may trust the record of the last one.
        let live = self.prefixes().take_live();
        if self.remote_model().is_some() {
            // The server keeps its own cache (a voxloop server reuses prefixes across calls).
            return Ok(());
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(cache) = session.cache() {
            if cache.owner == self.instance && cache.epoch == epoch {
                let len = cache.ids.len();
                if let Ok(Ok(())) = self.on_worker(move |model| model.truncate(len)).await {
                    return Ok(());
                }
            }
        }
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let reuse = self.config.reuse_prefix;
        let live = live.filter(|live| reuse && live.cache.epoch + 1 == epoch);
        let from_live = live.as_ref().and_then(|live| live.shared_with(session.history()));
        let from_saved = if reuse { self.prefixes().best_saved(session.history()) } else { None };
        let live_len = from_live.as_ref().map_or(0, |c| c.ids.len());
        let restore = from_saved.filter(|(_, shared)| shared.ids.len() > live_len);

        // The live conversation is about to be cut: keep a copy for its return.
        if let Some(line) = live {
            let keeps_all = restore.is_none() && live_len == line.cache.ids.len();
            if !keeps_all && self.prefixes().saves() {
                let len = line.cache.ids.len();
                if let Ok(Ok(Some(snapshot))) =
                    self.on_worker(move |model| model.save_prefix(len)).await
                {
                    self.prefixes().save(line, snapshot);
                }
            }
        }
        let adopted = match (restore, from_live) {
            (Some((snapshot, shared)), _) => {
                let len = shared.ids.len();
                let restored = self
                    .on_worker(move |model| {
                        let snapshot =
                            snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        model.restore_prefix(&snapshot)?;
                        model.truncate(len)
                    })
                    .await;
                matches!(restored, Ok(Ok(()))).then_some(shared)
            }
            (None, Some(shared)) => {
                let len = shared.ids.len();
                let cut = self.on_worker(move |model| model.truncate(len)).await;
                matches!(cut, Ok(Ok(()))).then_some(shared)
            }
            (None, None) => None,
        };
        if let Some(mut shared) = adopted {
            shared.owner = self.instance;
            shared.epoch = epoch;
            session.adopt_cache(shared);
            return Ok(());
        }
        self.on_worker(|model| model.clear()).await?;
        session.reset_cache(self.instance, epoch);
        Ok(())
    }

    /// Records what the cache holds after a turn of `session` that ended (not dropped).
    pub(crate) fn remember_cache(&self, session: &Session) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let live =
            session.cache().filter(|c| c.owner == self.instance && c.epoch == epoch).map(|cache| {
                CacheLine {
                    turns: session.history()[..cache.turns.len()].to_vec(),
                    cache: cache.clone(),
                }
            });
        self.prefixes().set_live(live);
    }

    /// How many copies of earlier conversations' caches are kept, and their bytes.
    pub fn saved_prefixes(&self) -> (usize, usize) {
        self.prefixes().saved_stats()
    }

    fn prefixes(&self) -> std::sync::MutexGuard<'_, PrefixStore> {
        self.prefixes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The tool choice of step `step` (from 1) of a turn under `settings`.
pub(crate) fn step_choice(settings: &SessionSettings, step: usize) -> ToolChoice {
    if step > settings.max_steps {
        ToolChoice::None
    } else if step == 1 {
        settings.tool_choice.clone()
    } else {
        settings.follow_up_tool_choice.clone()
    }
}
