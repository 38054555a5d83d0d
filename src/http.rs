//! The HTTP front door: the server, the session API (turns as server-sent events) and the
//! audio index API.

pub mod audio;
pub mod pcm;
pub mod server;
pub mod sessions;
