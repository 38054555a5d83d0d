//! Talking to the agent in real time: voice activity detection on the incoming audio
//! ([`vad`]: Silero VAD on ONNX Runtime) and server-side turn detection on top of it
//! ([`detect`]), used by the OpenAI Realtime-compatible WebSocket (`crate::http::realtime`).

pub mod detect;
pub mod vad;
