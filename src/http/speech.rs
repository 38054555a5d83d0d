//! OpenAI's audio endpoints over the model's tasks (`voxloop_core::agent::task`):
//!
//! | Route | Body | Task | Answer |
//! |---|---|---|---|
//! | `POST /v1/audio/transcriptions` | multipart `file`, `model` | transcription | `{text, usage}`, plain text, or (`stream=true`) SSE `transcript.text.delta` / `.done` |
//! | `POST /v1/audio/translations` | multipart `file`, `model` | translation into English text | `{text}` or plain text |
//! | `POST /v1/audio/speech` | JSON `model`, `input`, `voice` | reading aloud in a library voice | WAV (the default here) or raw 16-bit PCM, 24 kHz mono |
//!
//! Errors have Chat Completions' shape ([`ChatError`]): 400 naming the field, 404
//! `model_not_found`, 413 over the body limit, 503 without a model. What the model cannot do
//! is refused with `unsupported_parameter` rather than ignored: `prompt`, timestamps and
//! `verbose_json`, speeds other than 1, `instructions`, MP3/Opus/AAC/FLAC output. `language`
//! is accepted and left to the model, which hears the language itself.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use voxloop_core::agent::{TargetLanguage, Task, TaskOutput, TurnInput, Usage};
use voxloop_core::session::Session;
use voxloop_voices::SessionVoice;

use crate::http::chat::ChatError;
use crate::http::pcm::{pcm16_le, wav_bytes};
use crate::http::upload::{self, decode_audio};
use crate::runtime::setup::AgentRuntime;

/// The longest text `/v1/audio/speech` reads (OpenAI's limit).
const MAX_SPEECH_INPUT_CHARS: usize = 4096;

/// The audio routes (`runtime`: the loaded agent, `None` without a model).
pub fn router(runtime: Option<Arc<AgentRuntime>>) -> Router {
    let routes = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/audio/speech", post(speech));
    upload::limit_body(routes, crate::http::chat::too_large).with_state(runtime)
}

/// The fields of a transcription or translation form.
#[derive(Default)]
struct AudioForm {
    file: Option<Vec<u8>>,
    model: Option<String>,
    response_format: Option<String>,
    temperature: Option<f64>,
    stream: bool,
}

/// Reads the multipart form; fields the model cannot honour are refused by name.
async fn read_form(mut form: Multipart) -> Result<AudioForm, ChatError> {
    let mut out = AudioForm::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        ChatError::with_status(e.status(), format!("the multipart body: {}", e.body_text()), "")
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => out.file = Some(field.bytes().await.map_err(bad)?.to_vec()),
            "model" | "response_format" | "temperature" | "stream" | "language" => {
                let text = field.text().await.map_err(bad)?;
                match name.as_str() {
                    "model" => out.model = Some(text),
                    "response_format" => out.response_format = Some(text),
                    "temperature" => {
                        let t = text.trim().parse::<f64>().ok().filter(|t| (0.0..=2.0).contains(t));
                        let message = format!("temperature {text:?} is not a number in [0, 2]");
                        out.temperature =
                            Some(t.ok_or_else(|| ChatError::invalid(message, "temperature"))?);
                    }
                    "stream" => out.stream = text.trim() == "true",
                    _ => {} // language: the model hears it
                }
            }
            "prompt" => {
                return Err(ChatError::unsupported(
                    "prompt",
                    "the model transcribes with its own instruction; leave prompt out",
                ))
            }
            "timestamp_granularities[]" | "timestamp_granularities" => {
                return Err(ChatError::unsupported(
                    "timestamp_granularities",
                    "the model gives no timestamps",
                ))
            }
            "chunking_strategy" | "include[]" | "include" | "known_speaker_names[]" => {
                return Err(ChatError::unsupported(&name, "leave it out"))
            }
            _ => {} // other fields a client may add are not the model's concern
        }
    }
    Ok(out)
}

/// The runtime, or 503.
fn loaded(runtime: &Option<Arc<AgentRuntime>>) -> Result<&Arc<AgentRuntime>, ChatError> {
    runtime.as_ref().ok_or_else(ChatError::no_model)
}

/// Checks the requested model against the one served.
fn check_model(rt: &AgentRuntime, model: Option<&str>) -> Result<(), ChatError> {
    let served = &rt.agent.config().model_name;
    match model {
        None => Err(ChatError::invalid("model is required", "model")),
        Some(asked) if asked != served => Err(ChatError::unknown_model(asked, served)),
        Some(_) => Ok(()),
    }
}

/// How a text answer goes back.
#[derive(Clone, Copy, PartialEq)]
enum TextFormat {
    Json,
    Text,
}

fn text_format(asked: Option<&str>) -> Result<TextFormat, ChatError> {
    match asked.unwrap_or("json") {
        "json" => Ok(TextFormat::Json),
        "text" => Ok(TextFormat::Text),
        other => Err(ChatError::unsupported(
            "response_format",
            &format!("{other:?}: json or text (the model gives no timestamps or segments)"),
        )),
    }
}

/// The task's session on the form's audio: checked, decoded off the executor.
async fn task_session(
    rt: &AgentRuntime,
    task: Task,
    form: &mut AudioForm,
) -> Result<Session, ChatError> {
    check_model(rt, form.model.as_deref())?;
    let file = form.file.take().ok_or_else(|| ChatError::invalid("file is required", "file"))?;
    let chunks = decode_audio(rt.audio_limits, file)
        .await
        .map_err(|(status, message)| ChatError::with_status(status, message, "file"))?;
    let temperature = form.temperature;
    rt.task_session(task, TurnInput::audio(chunks), |sampling| {
        if let Some(t) = temperature {
            sampling.temperature = t;
        }
    })
    .map_err(|e| ChatError::invalid(e.to_string(), "file"))
}

/// Runs the task's session to its end (speech rendered by `renderer`).
async fn run_to_end(
    rt: &AgentRuntime,
    session: &mut Session,
    renderer: Option<&voxloop_core::agent::SpeechRenderer>,
) -> Result<TaskOutput, ChatError> {
    let stream =
        rt.agent.run_task(session, renderer).map_err(|e| ChatError::internal(e.to_string()))?;
    TaskOutput::collect(stream, |_| {}).await.map_err(|e| ChatError::internal(e.to_string()))
}

/// OpenAI's usage of a transcription (tokens).
fn usage_json(usage: &Usage) -> Value {
    let input = usage.input_tokens + usage.cached_tokens;
    json!({
        "type": "tokens",
        "input_tokens": input,
        "output_tokens": usage.output_tokens,
        "total_tokens": input + usage.output_tokens,
    })
}

fn text_answer(format: TextFormat, out: &TaskOutput, with_usage: bool) -> Response {
    let text = out.text.trim();
    match format {
        TextFormat::Text => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n"))
                .into_response()
        }
        TextFormat::Json if with_usage => {
            Json(json!({ "text": text, "usage": usage_json(&out.usage) })).into_response()
        }
        TextFormat::Json => Json(json!({ "text": text })).into_response(),
    }
}

async fn transcriptions(
    State(runtime): State<Option<Arc<AgentRuntime>>>,
    form: Multipart,
) -> Result<Response, ChatError> {
    let rt = loaded(&runtime)?;
    // Held until the answer is complete (a streamed one's included).
    let slot = ChatError::slot(rt)?;
    let mut form = read_form(form).await?;
    let format = text_format(form.response_format.as_deref())?;
    let mut session = task_session(rt, Task::Transcribe, &mut form).await?;
    if !form.stream {
        let out = run_to_end(rt, &mut session, None).await?;
        return Ok(text_answer(format, &out, true));
    }
    if format != TextFormat::Json {
        return Err(ChatError::unsupported("response_format", "a stream is of json events"));
    }
    // The turn runs in its own task, sending deltas as they come; a client that goes away
    // drops the receiver and the turn is dropped with it.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let rt = Arc::clone(rt);
    tokio::spawn(async move {
        let deltas = tx.clone();
        let collected = match rt.agent.run_task(&mut session, None) {
            Ok(stream) => {
                TaskOutput::collect(stream, |text| {
                    let _ = deltas.send(json!({ "type": "transcript.text.delta", "delta": text }));
                })
                .await
            }
            Err(e) => Err(e),
        };
        let last = match collected {
            Ok(out) => json!({
                "type": "transcript.text.done",
                "text": out.text.trim(),
                "usage": usage_json(&out.usage),
            }),
            Err(e) => json!({ "type": "error", "error": { "message": e.to_string() } }),
        };
        let _ = tx.send(last);
        drop(slot);
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        Some((Ok::<_, Infallible>(Event::default().data(value.to_string())), rx))
    });
    Ok(Sse::new(events).into_response())
}

async fn translations(
    State(runtime): State<Option<Arc<AgentRuntime>>>,
    form: Multipart,
) -> Result<Response, ChatError> {
    let rt = loaded(&runtime)?;
    let _slot = ChatError::slot(rt)?;
    let mut form = read_form(form).await?;
    if form.stream {
        return Err(ChatError::unsupported("stream", "translations are not streamed"));
    }
    let format = text_format(form.response_format.as_deref())?;
    let task = Task::Translate { into: TargetLanguage::English, spoken: false };
    let mut session = task_session(rt, task, &mut form).await?;
    let out = run_to_end(rt, &mut session, None).await?;
    Ok(text_answer(format, &out, false))
}

/// `/v1/audio/speech`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeechRequest {
    model: String,
    input: String,
    voice: VoiceField,
    response_format: Option<String>,
    speed: Option<f64>,
    instructions: Option<String>,
    stream_format: Option<String>,
}

/// A voice by name, or `{ "id": name }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum VoiceField {
    Name(String),
    Id { id: String },
}

async fn speech(
    State(runtime): State<Option<Arc<AgentRuntime>>>,
    body: axum::body::Bytes,
) -> Result<Response, ChatError> {
    let rt = loaded(&runtime)?;
    let _slot = ChatError::slot(rt)?;
    let request: SpeechRequest = serde_json::from_slice(&body)
        .map_err(|e| ChatError::invalid(format!("the request body: {e}"), ""))?;
    check_model(rt, Some(&request.model))?;
    let input = request.input.trim();
    if input.is_empty() {
        return Err(ChatError::invalid("input is empty", "input"));
    }
    if input.chars().count() > MAX_SPEECH_INPUT_CHARS {
        return Err(ChatError::invalid(
            format!("input is longer than {MAX_SPEECH_INPUT_CHARS} characters"),
            "input",
        ));
    }
    let wav = match request.response_format.as_deref().unwrap_or("wav") {
        "wav" => true,
        "pcm" => false,
        other => {
            return Err(ChatError::unsupported(
                "response_format",
                &format!("{other:?}: wav or pcm (16-bit, 24 kHz, mono)"),
            ))
        }
    };
    if request.speed.is_some_and(|s| s != 1.0) {
        return Err(ChatError::unsupported("speed", "1 (the model speaks at its own pace)"));
    }
    if request.instructions.as_deref().is_some_and(|i| !i.trim().is_empty()) {
        return Err(ChatError::unsupported("instructions", "leave them out"));
    }
    if request.stream_format.as_deref().is_some_and(|f| f != "audio") {
        return Err(ChatError::unsupported("stream_format", "audio"));
    }
    let voices = rt.voice.as_ref().ok_or_else(|| {
        ChatError::invalid("speech needs token2wav: set [voice] token2wav in the config file", "")
    })?;
    let name = match &request.voice {
        VoiceField::Name(name) | VoiceField::Id { id: name } => name,
    };
    let profile = crate::http::chat::library_voice(voices, name, "voice")?;
    let mut session = rt
        .task_session(Task::ReadAloud, TurnInput::text(input), |_| {})
        .map_err(|e| ChatError::invalid(e.to_string(), "input"))?;
    session.extensions_mut().insert(Arc::new(SessionVoice::new(profile)));
    let out = run_to_end(rt, &mut session, Some(&voices.renderer)).await?;
    let rate = if out.sample_rate == 0 { voices.renderer.sample_rate() } else { out.sample_rate };
    let (content_type, bytes) = if wav {
        ("audio/wav", wav_bytes(&out.speech, rate))
    } else {
        ("audio/pcm", pcm16_le(&out.speech))
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
