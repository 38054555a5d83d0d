//! The HTTP front door: the server, the session API (turns as server-sent events), the
//! OpenAI-compatible Chat Completions and Realtime APIs, and the audio index API.

pub mod audio;
pub mod chat;
pub mod page;
pub mod pcm;
pub mod realtime;
pub mod server;
pub mod sessions;
pub mod speech;
pub mod upload;
