//! A generation step on a remote model ([`crate::remote`]): the history goes out as a Chat
//! Completions request, the streamed answer comes back as the same events a local step
//! reports, and the assistant turn is kept with ids made from what arrived (its text
//! tokenized as untrusted text, its speech codes, its calls as the model writes them), so a
//! session can move between backends.

use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use super::{CallSlot, Generated, Step, TurnRun};
use crate::agent::events::{AgentEvent, Usage};
use crate::protocol::{GenerationMode, ToolChoice};
use crate::remote::reply::{Piece, RemoteCall, ReplyReader};
use crate::remote::request::{chat_body, StepRequest};
use crate::remote::RemoteModel;
use crate::session::{call_ids, AssistantTurn, Session, SessionSettings};
use crate::tokenizer::StepTokenizer;
use crate::tool::{new_call_id, ToolCall};
use crate::Result;

impl TurnRun<'_> {
    /// One step on `model`; see the module documentation. A failure (unreachable server,
    /// error answer, broken stream) fails the step with nothing of it kept; a cancel keeps
    /// what was said, without calls.
    pub(super) async fn generate_remote(
        &mut self,
        model: &RemoteModel,
        session: &mut Session,
        step: usize,
        settings: &SessionSettings,
        choice: &ToolChoice,
    ) -> Result<Step> {
        let agent = self.agent;
        let mode = settings.mode();
        let params = settings.sampling.params(Vec::new(), 0);
        params.validate()?;
        let (host, port) = model.server();
        let span = self.chat_span(session, step, mode, &params, choice, Some((&host, port)));
        let tools = match self.client {
            Some(client) => client.declared(),
            None => self.tools.registry.definitions(),
        };
        let body = chat_body(
            model.config(),
            &StepRequest {
                history: session.history(),
                tools: &tools,
                choice,
                speech: mode == GenerationMode::Speech,
                sampling: &settings.sampling,
            },
        )?;

        let submitted = Instant::now();
        let mut first = None;
        let mut reader = ReplyReader::default();
        let mut answer = RemoteAnswer::new(&agent.tokenizer, mode);
        let (out, cancel) = (self.out, self.cancel);
        let read = async {
            let mut stream = model.stream(&body).await?;
            while let Some(chunk) = stream.next().await? {
                for piece in reader.push(&chunk) {
                    first.get_or_insert_with(|| submitted.elapsed());
                    answer.take(piece, out);
                }
            }
            Ok::<(), crate::Error>(())
        }
        .instrument(span.clone());
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            outcome = read => Some(outcome),
        };
        let (rest, calls) = reader.finish();
        let mut usage = usage_of(reader.usage.as_ref(), &answer);
        match outcome {
            Some(Err(error)) => {
                usage.input_tokens = 0;
                self.end_step(&span, step, usage, "error", first);
                return Err(error);
            }
            None => {
                // What was heard stays; calls are dropped (none may lack its result).
                if !answer.ids.is_empty() {
                    session.commit_assistant(&[], answer.into_turn(Vec::new(), reader.reply_id));
                }
                self.end_step(&span, step, usage, "cancelled", first);
                return Ok(Step::Cancelled);
            }
            Some(Ok(())) => {}
        }
        for piece in rest {
            answer.take(piece, self.out);
        }
        let calls: Vec<CallSlot> = calls.into_iter().map(call_slot).collect();
        let made: Vec<ToolCall> = calls.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
        let finish = if !calls.is_empty() {
            "tool_calls"
        } else if reader.finish_reason.as_deref() == Some("length") {
            "length"
        } else {
            "stop"
        };
        self.end_step(&span, step, usage, finish, first);
        let turn = answer.into_turn(made, reader.reply_id);
        Ok(Step::Generated(Generated { prompt: Some(Vec::new()), turn, calls }))
    }
}

fn call_slot(call: RemoteCall) -> CallSlot {
    call.map(|(id, parsed)| {
        ToolCall::with_id(
            id.unwrap_or_else(new_call_id),
            parsed.name,
            Value::Object(parsed.arguments),
        )
    })
}

/// The step's usage from the server's `usage` (without one: the pieces counted here).
fn usage_of(usage: Option<&Value>, answer: &RemoteAnswer<'_>) -> Usage {
    let count = |pointer: &str| {
        usage.and_then(|u| u.pointer(pointer)).and_then(Value::as_u64).map(|n| n as usize)
    };
    let cached = count("/prompt_tokens_details/cached_tokens").unwrap_or(0);
    Usage {
        input_tokens: count("/prompt_tokens").unwrap_or(0).saturating_sub(cached),
        output_tokens: count("/completion_tokens").unwrap_or(answer.ids.len()),
        audio_tokens: count("/completion_tokens_details/audio_tokens").unwrap_or(answer.codes),
        cached_tokens: cached,
        reasoning_tokens: 0,
    }
}

/// The assistant turn being received.
struct RemoteAnswer<'t> {
    tokenizer: &'t StepTokenizer,
    speech: bool,
    ids: Vec<i64>,
    text: String,
    codes: usize,
    /// Whether written content came after speech (`<tts_end>` was written before it).
    speech_closed: bool,
}

impl<'t> RemoteAnswer<'t> {
    fn new(tokenizer: &'t StepTokenizer, mode: GenerationMode) -> Self {
        Self {
            tokenizer,
            speech: mode == GenerationMode::Speech,
            ids: Vec::new(),
            text: String::new(),
            codes: 0,
            speech_closed: false,
        }
    }

    /// Reports a piece and keeps it.
    fn take(&mut self, piece: Piece, out: &crate::agent::stream::Emitter) {
        let special = *self.tokenizer.special();
        match piece {
            Piece::Speech(text) => {
                self.ids.extend(self.tokenizer.encode_untrusted(&text).unwrap_or_default());
                self.text.push_str(&text);
                out.emit(AgentEvent::TextDelta { text, in_speech: true });
            }
            Piece::Codes(codes) => {
                self.codes += codes.len();
                self.ids.extend(codes.iter().filter_map(|&c| special.audio_id(c)));
                out.emit(AgentEvent::AudioTokens(codes));
            }
            Piece::Content(text) => {
                if self.speech && !self.speech_closed && !self.ids.is_empty() {
                    self.ids.push(special.tts_end);
                    self.speech_closed = true;
                }
                self.ids.extend(self.tokenizer.encode_untrusted(&text).unwrap_or_default());
                self.text.push_str(&text);
                out.emit(AgentEvent::TextDelta { text, in_speech: false });
            }
        }
    }

    fn into_turn(mut self, calls: Vec<ToolCall>, reply_id: Option<String>) -> AssistantTurn {
        for call in &calls {
            self.ids.extend(call_ids(self.tokenizer, call).unwrap_or_default());
        }
        AssistantTurn { speech: self.speech, ids: self.ids, text: self.text, calls, reply_id }
    }
}
