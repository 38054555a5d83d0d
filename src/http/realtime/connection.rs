//! One realtime connection: its session, input audio buffer, server VAD, items, and the
//! response running (see [`super`] for the protocol).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};
use voxloop_core::agent::{ClientTools, TurnEndReason};
use voxloop_core::session::Turn;
use voxloop_retrieval::AudioIndex;
use voxloop_voices::VoiceProfile;

use super::filler::{self, Filler};
use super::protocol::{self, new_id, server_event, ClientEvent, EventError, Incoming};
use super::response::{self, CancelReason, Finished, Launch};
use super::settings::{RealtimeSettings, PCM_RATE};
use crate::config::RealtimeConfig;
use crate::http::sessions::stored;
use crate::realtime::detect::TurnDetector;
use crate::realtime::vad::VadPool;

/// What a service's realtime connections share.
#[derive(Debug)]
pub struct Shared {
    /// Silero VAD models that closed connections left, for the next ones.
    pub vads: VadPool,
    /// The call grammar of the agent's own tools, for connections that declare none.
    pub own_tools: tokio::sync::OnceCell<Arc<ClientTools>>,
    /// The audio index, where the filler is looked up.
    pub index: Option<Arc<AudioIndex>>,
    /// The filler, found on the first response (`None`: there is none).
    pub filler: tokio::sync::OnceCell<Option<Arc<Filler>>>,
}
use crate::runtime::sessions::{SessionState, Slot};
use crate::runtime::setup::AgentRuntime;

/// Server events queued for a slow client before a response waits.
const OUT_QUEUE: usize = 1024;
/// Audio kept before speech starts, beyond the prefix padding (ms).
const PRE_SPEECH_SLACK_MS: u64 = 200;
/// The shortest audio a commit takes (ms), as OpenAI's realtime API requires.
const MIN_COMMIT_MS: u64 = 100;
/// Speech codes per second (Step-Audio 2's 25 Hz audio tokens).
const CODES_PER_SECOND: u64 = 25;

mod audio;
mod history;

use audio::InputBuffer;

/// A response in flight.
struct Running {
    id: String,
    cancel: Option<oneshot::Sender<CancelReason>>,
    done: tokio::task::JoinHandle<Finished>,
    /// The history's length when it started (its turns come after).
    history_start: usize,
}

/// What must wait until the running response hands the session back.
enum Deferred {
    Event(Incoming),
    /// Server VAD committed speech; `respond`: start a response for it.
    Speech {
        item_id: String,
        samples: Vec<f32>,
        respond: bool,
    },
}

/// A realtime connection; see the module documentation.
pub struct Connection {
    rt: Arc<AgentRuntime>,
    config: RealtimeConfig,
    slot: Arc<Slot>,
    session_id: String,
    /// The session, while no response holds it.
    state: Option<OwnedMutexGuard<SessionState>>,
    settings: RealtimeSettings,
    out: mpsc::Sender<String>,
    buffer: InputBuffer,
    detector: Option<TurnDetector>,
    /// What connections share: VAD models, the grammar of the agent's own tools.
    shared: Arc<Shared>,
    /// Why server VAD is off although asked for (said once per connection).
    vad_problem: Option<String>,
    /// The item the speech being heard will become, and where that speech started (ms on
    /// the connection's audio clock).
    speech_item: Option<(String, u64)>,
    tools: Option<Arc<ClientTools>>,
    running: Option<Running>,
    deferred: VecDeque<Deferred>,
    /// Assistant message items and the history index of their turn.
    assistant_items: Vec<(String, usize)>,
    /// The id of the last item, for `previous_item_id`.
    last_item: Option<String>,
    /// Filler items played (not in the history: truncating one changes nothing).
    fillers: HashSet<String>,
}

impl Connection {
    /// Serves `socket` on the session `guard` holds (already in the table as `slot`) until
    /// the client leaves; then cancels a running response and saves the session.
    pub async fn serve(
        rt: Arc<AgentRuntime>,
        config: RealtimeConfig,
        slot: Arc<Slot>,
        guard: OwnedMutexGuard<SessionState>,
        shared: Arc<Shared>,
        socket: WebSocket,
    ) {
        let (mut sink, mut stream) = socket.split();
        let (out, mut rx) = mpsc::channel::<String>(OUT_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let session_id = guard.session.id().to_owned();
        let settings = RealtimeSettings::new(&config, guard.session.settings().speech);
        let mut this = Self {
            rt,
            config,
            slot,
            session_id,
            state: Some(guard),
            settings,
            out,
            buffer: InputBuffer::default(),
            detector: None,
            shared,
            vad_problem: None,
            speech_item: None,
            tools: None,
            running: None,
            deferred: VecDeque::new(),
            assistant_items: Vec::new(),
            last_item: None,
            fillers: HashSet::new(),
        };
        this.run(&mut stream).await;
        drop(this);
        let _ = writer.await;
    }

    async fn run(&mut self, stream: &mut futures::stream::SplitStream<WebSocket>) {
        self.send_session("session.created").await;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        self.error(EventError::invalid(
                            "invalid_event",
                            "binary frames are not events: send JSON text frames",
                        ))
                        .await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
                finished = wait(&mut self.running) => self.on_finished(finished).await,
            }
        }
        if let Some(running) = self.running.as_mut() {
            if let Some(cancel) = running.cancel.take() {
                let _ = cancel.send(CancelReason::Client);
            }
            let finished = wait(&mut self.running).await;
            self.on_finished(finished).await;
        }
        self.drop_detector();
        self.save().await;
        self.slot.idle();
        drop(self.state.take());
    }

    async fn send(&self, kind: &str, fields: Value) {
        let _ = self.out.send(server_event(kind, fields)).await;
    }

    async fn error(&self, error: EventError) {
        tracing::debug!(session = %self.session_id, error = %error.message, "realtime event refused");
        let _ = self.out.send(error.to_event()).await;
    }

    async fn send_session(&self, kind: &str) {
        let voice = self.voice_name();
        let model = &self.rt.agent.config().model_name;
        let session = self.settings.to_json(&self.session_id, model, voice.as_deref());
        self.send(kind, json!({ "session": session })).await;
    }

    fn voice_name(&self) -> Option<String> {
        self.settings.voice.clone().or_else(|| self.rt.voice.as_ref().map(|v| v.start.name.clone()))
    }

    async fn on_text(&mut self, text: &str) {
        match protocol::parse(text) {
            Ok(incoming) => self.on_event(incoming).await,
            Err(error) => self.error(error).await,
        }
    }

    async fn on_event(&mut self, incoming: Incoming) {
        let event_id = incoming.event_id.clone();
        if let Err(error) = self.handle(incoming).await {
            self.error(error.about(event_id)).await;
        }
    }

    async fn handle(&mut self, incoming: Incoming) -> Result<(), EventError> {
        // Events that edit the history wait for a running response to hand it back.
        let edits_history = matches!(
            &incoming.event,
            ClientEvent::CreateItem { item, .. } if item.get("type").and_then(Value::as_str) != Some("mcp_approval_response")
        ) || matches!(
            incoming.event,
            ClientEvent::TruncateItem { .. } | ClientEvent::CommitAudio {}
        );
        if edits_history && self.running.is_some() {
            self.deferred.push_back(Deferred::Event(incoming));
            return Ok(());
        }
        match incoming.event {
            ClientEvent::SessionUpdate { session } => self.update_session(&session).await,
            ClientEvent::AppendAudio { audio } => self.append(&audio).await,
            ClientEvent::CommitAudio {} => self.commit().await,
            ClientEvent::ClearAudio {} => {
                self.buffer.clear();
                if let Some(detector) = self.detector.as_mut() {
                    detector.reset_speech();
                }
                self.speech_item = None;
                self.send("input_audio_buffer.cleared", json!({})).await;
                Ok(())
            }
            ClientEvent::CreateItem { item, .. } => self.create_item(&item).await,
            ClientEvent::TruncateItem { item_id, content_index, audio_end_ms } => {
                self.truncate(&item_id, content_index, audio_end_ms).await
            }
            ClientEvent::CreateResponse { response } => {
                if response.as_ref().is_some_and(|r| !r.is_object() && !r.is_null()) {
                    return Err(EventError::invalid("invalid_value", "response must be an object")
                        .param("response"));
                }
                self.start_response().await
            }
            ClientEvent::CancelResponse { response_id } => {
                let Some(running) = self.running.as_mut() else {
                    return Err(EventError::invalid(
                        "response_cancel_not_active",
                        "no response is in progress",
                    ));
                };
                if response_id.is_some_and(|id| id != running.id) {
                    return Err(EventError::invalid(
                        "invalid_value",
                        format!("the response in progress is {:?}", running.id),
                    )
                    .param("response_id"));
                }
                if let Some(cancel) = running.cancel.take() {
                    let _ = cancel.send(CancelReason::Client);
                }
                Ok(())
            }
        }
    }

    async fn update_session(&mut self, session: &Value) -> Result<(), EventError> {
        let agent_tools: Vec<String> = self.rt.agent.tools().names().map(str::to_owned).collect();
        let library = self.rt.voice.as_ref().map(|v| Arc::clone(&v.library));
        let voice_known =
            |name: &str| match &library {
                None => Err("speech rendering is off (no token2wav and voice library configured)"
                    .to_owned()),
                Some(library) if library.get(name).is_some() => Ok(()),
                Some(library) => {
                    let names: Vec<&str> = library.profiles().map(|p| p.name.as_str()).collect();
                    Err(format!(
                        "no voice {name:?} in the voice library (voices: {})",
                        names.join(", ")
                    ))
                }
            };
        let before = self.settings.clone();
        let changed = self.settings.update(session, &agent_tools, voice_known)?;
        if changed.tools || before.parallel_tool_calls != self.settings.parallel_tool_calls {
            let compiled = self.tools.take();
            if let Err(error) = self.compile_tools().await {
                self.settings = before;
                self.tools = compiled;
                return Err(error);
            }
        }
        if before.turn_detection.as_ref().map(|t| &t.vad)
            != self.settings.turn_detection.as_ref().map(|t| &t.vad)
        {
            self.drop_detector();
            self.speech_item = None;
        }
        self.send_session("session.updated").await;
        Ok(())
    }

    /// Compiles the call grammar of the agent's tools and the client's.
    async fn compile_tools(&mut self) -> Result<Arc<ClientTools>, EventError> {
        if let Some(tools) = &self.tools {
            return Ok(Arc::clone(tools));
        }
        let rt = Arc::clone(&self.rt);
        let (definitions, parallel) =
            (self.settings.tools.clone(), self.settings.parallel_tool_calls);
        let compile = move || async move {
            tokio::task::spawn_blocking(move || {
                rt.agent.client_tools_beside_own(definitions, parallel).map(Arc::new)
            })
            .await
            .map_err(|e| EventError::server(format!("the tool grammar task failed: {e}")))?
            .map_err(|e| {
                EventError::invalid("invalid_value", format!("the tools cannot be used: {e}"))
                    .param("session.tools")
            })
        };
        // Connections that declare no tools of their own share one compiled grammar.
        let tools = if self.settings.tools.is_empty() && parallel {
            Arc::clone(self.shared.own_tools.get_or_try_init(compile).await?)
        } else {
            compile().await?
        };
        self.tools = Some(Arc::clone(&tools));
        Ok(tools)
    }

    async fn apply_deferred(&mut self, deferred: Deferred) {
        match deferred {
            Deferred::Event(incoming) => Box::pin(self.on_event(incoming)).await,
            Deferred::Speech { item_id, samples, respond } => {
                if let Err(error) = self.add_audio_item(&item_id, samples, None).await {
                    self.error(error).await;
                    return;
                }
                if respond {
                    if let Err(error) = self.start_response().await {
                        self.error(error).await;
                    }
                }
            }
        }
    }

    /// The session, which no response holds when this is called.
    fn state(&mut self) -> Result<&mut SessionState, EventError> {
        self.state
            .as_deref_mut()
            .ok_or_else(|| EventError::server("the session is not available (a response holds it)"))
    }

    async fn start_response(&mut self) -> Result<(), EventError> {
        if self.running.is_some() {
            return Err(EventError::invalid(
                "conversation_already_has_active_response",
                "a response is in progress; cancel it or wait for its response.done",
            ));
        }
        let answerable = self.state.as_ref().is_some_and(|s| {
            matches!(s.session.history().last(), Some(Turn::Human { .. } | Turn::ToolResult(_)))
        });
        if !answerable {
            return Err(EventError::invalid("invalid_value", "nothing to respond to: add a user message, commit audio, or send the function_call_output first"));
        }
        self.write_preamble().await?;
        let tools = self.compile_tools().await?;
        let voice: Option<Arc<VoiceProfile>> = match (&self.settings.voice, &self.rt.voice) {
            (Some(name), Some(v)) => v.library.get(name).cloned(),
            _ => None,
        };
        let settings = self.settings.clone();
        let defaults = self.rt.defaults.sampling.clone();
        let state = self.state()?;
        if let (Some(voice), Some(session_voice)) = (voice, &state.voice) {
            if session_voice.current().name != voice.name {
                session_voice.set(voice);
            }
        }
        let s = state.session.settings_mut();
        s.speech = settings.audio_out;
        s.tool_choice = settings.tool_choice.clone();
        s.sampling.temperature = settings.temperature.unwrap_or(defaults.temperature);
        s.sampling.max_new_tokens = settings.max_output_tokens.unwrap_or(defaults.max_new_tokens);
        let history_start = state.session.history().len();
        let Some(guard) = self.state.take() else {
            return Err(EventError::server("the session is not available"));
        };
        let response_id = new_id("resp");
        self.send(
            "response.created",
            json!({ "response": self.response_json(&response_id, "in_progress", None, &[], None) }),
        )
        .await;
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let filler = self
            .shared
            .filler
            .get_or_init(|| filler::load_async(self.config.clone(), self.shared.index.clone()))
            .await
            .clone();
        let launch = Launch {
            rt: Arc::clone(&self.rt),
            guard,
            tools,
            out: self.out.clone(),
            response_id: response_id.clone(),
            audio_out: settings.audio_out,
            cancel: cancel_rx,
            filler,
        };
        let done = tokio::spawn(response::run(launch));
        self.running =
            Some(Running { id: response_id, cancel: Some(cancel_tx), done, history_start });
        Ok(())
    }

    fn response_json(
        &self,
        id: &str,
        status: &str,
        details: Option<Value>,
        output: &[Value],
        usage: Option<Value>,
    ) -> Value {
        json!({
            "id": id,
            "object": "realtime.response",
            "conversation_id": self.session_id,
            "status": status,
            "status_details": details,
            "output": output,
            "output_modalities": [if self.settings.audio_out { "audio" } else { "text" }],
            "audio": { "output": { "format": { "type": "audio/pcm", "rate": PCM_RATE }, "voice": self.voice_name() } },
            "max_output_tokens": self.settings.max_output_tokens.map_or(json!("inf"), |n| json!(n)),
            "usage": usage,
        })
    }

    async fn on_finished(&mut self, finished: (String, usize, Finished)) {
        let (response_id, history_start, finished) = finished;
        let Finished { guard, reason, usage, cancelled, steps, output, fillers } = finished;
        self.fillers.extend(fillers);
        let Some(guard) = guard else {
            tracing::error!(session = %self.session_id, "a realtime response task failed; closing the session");
            return;
        };
        self.state = Some(guard);
        // Step k's message is the k-th assistant turn the response added.
        let assistant_turns: Vec<usize> = self.state.as_ref().map_or_else(Vec::new, |s| {
            s.session
                .history()
                .iter()
                .enumerate()
                .skip(history_start)
                .filter(|(_, t)| matches!(t, Turn::Assistant(_)))
                .map(|(i, _)| i)
                .collect()
        });
        let mut last_message = None;
        for (step, index) in steps.iter().zip(assistant_turns) {
            if let Some(message) = step {
                self.assistant_items.push((message.item_id.clone(), index));
                last_message = Some((message.clone(), index));
            }
        }
        if let Some(item) = output.last().and_then(|i| i.get("id")).and_then(Value::as_str) {
            self.last_item = Some(item.to_owned());
        }
        // Barge-in: the history keeps what the user heard, not what was generated.
        if let (Some(_), Some((message, index)), true) =
            (cancelled, &last_message, self.settings.audio_out)
        {
            let codes = (message.samples_sent as u64 * CODES_PER_SECOND)
                .div_ceil(u64::from(PCM_RATE)) as usize;
            match self.cut_assistant(*index, codes) {
                Ok(()) => {
                    let audio_end_ms = message.samples_sent as u64 * 1000 / u64::from(PCM_RATE);
                    self.send("conversation.item.truncated", json!({ "item_id": message.item_id, "content_index": 0, "audio_end_ms": audio_end_ms })).await;
                }
                Err(error) => {
                    tracing::warn!(session = %self.session_id, error = %error.message, "cannot cut the interrupted answer")
                }
            }
        }
        if let Some(state) = self.state.as_deref() {
            self.slot.record(state, usage, Some(reason.as_str()));
        }
        let save_error = self.save().await;
        let (status, details) = match (&reason, cancelled) {
            (_, Some(why)) => ("cancelled", json!({ "type": "cancelled", "reason": why.as_str() })),
            (TurnEndReason::Error(message), None) => (
                "failed",
                json!({ "type": "failed", "error": { "type": "server_error", "code": "turn_failed", "message": message } }),
            ),
            _ => ("completed", json!({ "type": "completed" })),
        };
        let usage_json = json!({
            "total_tokens": usage.input_tokens + usage.cached_tokens + usage.output_tokens,
            "input_tokens": usage.input_tokens + usage.cached_tokens,
            "output_tokens": usage.output_tokens,
            "input_token_details": { "cached_tokens": usage.cached_tokens, "text_tokens": usage.input_tokens, "audio_tokens": 0 },
            "output_token_details": { "text_tokens": usage.output_tokens - usage.audio_tokens.min(usage.output_tokens), "audio_tokens": usage.audio_tokens },
        });
        let mut response =
            self.response_json(&response_id, status, Some(details), &output, Some(usage_json));
        if let Some(message) = save_error {
            response["metadata"] = json!({ "save_error": message });
        }
        self.send("response.done", json!({ "response": response })).await;
        while self.running.is_none() {
            let Some(deferred) = self.deferred.pop_front() else { break };
            self.apply_deferred(deferred).await;
        }
    }

    /// Saves the session (when sessions are persisted); the failure, if any.
    async fn save(&mut self) -> Option<String> {
        let guard = self.state.take()?;
        let (guard, error) = stored::save(&self.rt, &self.slot, guard).await;
        self.state = guard;
        error
    }
}

/// The end of the running response (never, when none runs); clears it.
async fn wait(running: &mut Option<Running>) -> (String, usize, Finished) {
    let Some(r) = running.as_mut() else { return std::future::pending().await };
    let finished = (&mut r.done).await.unwrap_or_else(|e| Finished {
        guard: None,
        reason: TurnEndReason::Error(format!("the response task failed: {e}")),
        usage: Default::default(),
        cancelled: None,
        steps: Vec::new(),
        output: Vec::new(),
        fillers: Vec::new(),
    });
    let (id, history_start) = (r.id.clone(), r.history_start);
    *running = None;
    (id, history_start, finished)
}
