//! The server-sent events of a streamed chat completion: `data: {json}` events separated by
//! a blank line, ending with `data: [DONE]` (OpenAI's framing, which StepFun's vLLM server and
//! voxloop share). Comments (`:` lines, keep-alives) and other fields are skipped.

use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// The longest event accepted, in bytes (a chunk of speech codes is a few kilobytes).
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One server-sent event: its `event` field (`message` when absent) and its data lines
/// joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The events of a `text/event-stream` body, as they arrive.
pub struct EventStream {
    source: Source,
    buffer: Vec<u8>,
    /// The longest wait for more of the body (`None`: no limit, for long-lived streams).
    idle: Option<Duration>,
}

enum Source {
    Http(reqwest::Response),
    /// Bytes given at once (tests of the framing).
    #[cfg_attr(not(test), allow(dead_code))]
    Bytes(Option<Vec<u8>>),
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("buffered", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl EventStream {
    /// The events of `response`'s body; a wait longer than `idle` for more of it fails.
    pub fn new(response: reqwest::Response, idle: Option<Duration>) -> Self {
        Self { source: Source::Http(response), buffer: Vec::new(), idle }
    }

    #[cfg(test)]
    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            source: Source::Bytes(Some(bytes.to_vec())),
            buffer: Vec::new(),
            idle: Some(Duration::from_secs(1)),
        }
    }

    /// The next event with data (comments and empty events skipped); `None` when the body
    /// ended.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(Some(event));
            }
            match self.read().await? {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }

    async fn read(&mut self) -> Result<Option<Vec<u8>>> {
        match &mut self.source {
            Source::Bytes(bytes) => Ok(bytes.take()),
            Source::Http(response) => {
                let chunk = match self.idle {
                    Some(idle) => {
                        tokio::time::timeout(idle, response.chunk()).await.map_err(|_| {
                            Error::Remote(format!("the stream stalled: no data for {idle:?}"))
                        })?
                    }
                    None => response.chunk().await,
                };
                let chunk = chunk.map_err(|e| Error::Remote(format!("reading the stream: {e}")))?;
                Ok(chunk.map(|b| b.to_vec()))
            }
        }
    }

    /// The next whole event in the buffer, if there is one.
    fn take_event(&mut self) -> Result<Option<SseEvent>> {
        loop {
            let Some((end, gap)) = event_end(&self.buffer) else {
                if self.buffer.len() > MAX_EVENT_BYTES {
                    return Err(Error::Remote(format!(
                        "a streamed event exceeds {MAX_EVENT_BYTES} bytes"
                    )));
                }
                return Ok(None);
            };
            let raw: Vec<u8> = self.buffer.drain(..end + gap).take(end).collect();
            let text = String::from_utf8_lossy(&raw);
            let mut event = SseEvent { event: "message".to_owned(), data: String::new() };
            let mut lines = 0;
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event.event = value.to_owned(),
                    "data" => {
                        if lines > 0 {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        lines += 1;
                    }
                    _ => {}
                }
            }
            if lines > 0 {
                return Ok(Some(event));
            }
        }
    }
}

/// The chunks of one streamed answer, as JSON values.
#[derive(Debug)]
pub struct ChunkStream {
    events: EventStream,
    done: bool,
}

impl ChunkStream {
    pub(crate) fn new(response: reqwest::Response, idle: Duration) -> Self {
        Self { events: EventStream::new(response, Some(idle)), done: false }
    }

    #[cfg(test)]
    fn from_bytes(bytes: &[u8]) -> Self {
        Self { events: EventStream::from_bytes(bytes), done: false }
    }

    /// The next chunk; `None` after `[DONE]`. A stream that ends without `[DONE]`, stalls
    /// longer than the idle timeout, or carries an `error` object fails.
    pub async fn next(&mut self) -> Result<Option<Value>> {
        if self.done {
            return Ok(None);
        }
        let Some(event) = self.events.next_event().await? else {
            return Err(Error::Remote(
                "the server closed the stream before its end ([DONE])".to_owned(),
            ));
        };
        let data = event.data;
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let value: Value = serde_json::from_str(&data).map_err(|e| {
            Error::Remote(format!("a streamed chunk is not JSON ({e}): {}", excerpt(&data)))
        })?;
        if let Some(error) = value.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(Error::Remote(format!("the server failed the answer: {message}")));
        }
        Ok(Some(value))
    }
}

/// Where the first event of `buffer` ends and how long its separator is.
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    (0..buffer.len()).find_map(|i| {
        if buffer[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if buffer[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

fn excerpt(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> (Vec<Value>, Option<String>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let mut stream = ChunkStream::from_bytes(bytes);
            let mut values = Vec::new();
            loop {
                match stream.next().await {
                    Ok(Some(v)) => values.push(v),
                    Ok(None) => return (values, None),
                    Err(e) => return (values, Some(e.to_string())),
                }
            }
        })
    }

    #[test]
    fn events_are_read_until_done_and_comments_are_skipped() {
        let (values, error) = run(
            b": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: {\"b\":2}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(error, None);
        assert_eq!(values, [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]);
    }

    #[test]
    fn event_names_and_multi_line_data_are_kept() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let mut events = EventStream::from_bytes(
            b"event: endpoint\ndata: /message?sessionId=1\n\ndata: a\ndata: b\n\n: ping\n\n",
        );
        let first = runtime.block_on(events.next_event()).unwrap().unwrap();
        assert_eq!(
            first,
            SseEvent { event: "endpoint".into(), data: "/message?sessionId=1".into() }
        );
        let second = runtime.block_on(events.next_event()).unwrap().unwrap();
        assert_eq!(second, SseEvent { event: "message".into(), data: "a\nb".into() });
        assert_eq!(runtime.block_on(events.next_event()).unwrap(), None);
    }

    #[test]
    fn a_stream_cut_short_an_error_object_or_garbage_fails_with_the_reason() {
        let (values, error) = run(b"data: {\"a\":1}\n\n");
        assert_eq!(values.len(), 1);
        assert!(error.unwrap().contains("before its end"));
        let (_, error) = run(b"data: {\"error\": {\"message\": \"out of memory\"}}\n\n");
        assert!(error.unwrap().contains("out of memory"));
        let (_, error) = run(b"data: <html>\n\n");
        assert!(error.unwrap().contains("not JSON"));
    }
}
