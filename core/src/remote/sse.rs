//! The server-sent events of a streamed chat completion: `data: {json}` events separated by
//! a blank line, ending with `data: [DONE]` (OpenAI's framing, which StepFun's vLLM server and
//! voxloop share). Comments (`:` lines, keep-alives) and other fields are skipped.

use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// The longest event accepted, in bytes (a chunk of speech codes is a few kilobytes).
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The chunks of one streamed answer, as JSON values.
pub struct ChunkStream {
    source: Source,
    buffer: Vec<u8>,
    idle: Duration,
    done: bool,
}

enum Source {
    Http(reqwest::Response),
    /// Bytes given at once (tests of the framing).
    #[cfg_attr(not(test), allow(dead_code))]
    Bytes(Option<Vec<u8>>),
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream").field("done", &self.done).finish_non_exhaustive()
    }
}

impl ChunkStream {
    pub(crate) fn new(response: reqwest::Response, idle: Duration) -> Self {
        Self { source: Source::Http(response), buffer: Vec::new(), idle, done: false }
    }

    #[cfg(test)]
    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            source: Source::Bytes(Some(bytes.to_vec())),
            buffer: Vec::new(),
            idle: Duration::from_secs(1),
            done: false,
        }
    }

    /// The next chunk; `None` after `[DONE]`. A stream that ends without `[DONE]`, stalls
    /// longer than the idle timeout, or carries an `error` object fails.
    pub async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(data) = self.take_event()? {
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
                return Ok(Some(value));
            }
            match self.read().await? {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    return Err(Error::Remote(
                        "the server closed the stream before its end ([DONE])".to_owned(),
                    ))
                }
            }
        }
    }

    async fn read(&mut self) -> Result<Option<Vec<u8>>> {
        match &mut self.source {
            Source::Bytes(bytes) => Ok(bytes.take()),
            Source::Http(response) => match tokio::time::timeout(self.idle, response.chunk()).await
            {
                Err(_) => {
                    Err(Error::Remote(format!("the answer stalled: no data for {:?}", self.idle)))
                }
                Ok(Err(e)) => Err(Error::Remote(format!("reading the answer: {e}"))),
                Ok(Ok(chunk)) => Ok(chunk.map(|b| b.to_vec())),
            },
        }
    }

    /// The data of the next whole event in the buffer, if there is one.
    fn take_event(&mut self) -> Result<Option<String>> {
        loop {
            let Some((end, gap)) = event_end(&self.buffer) else {
                if self.buffer.len() > MAX_EVENT_BYTES {
                    return Err(Error::Remote(format!(
                        "a streamed event exceeds {MAX_EVENT_BYTES} bytes"
                    )));
                }
                return Ok(None);
            };
            let event: Vec<u8> = self.buffer.drain(..end + gap).take(end).collect();
            let text = String::from_utf8_lossy(&event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                return Ok(Some(data.join("\n")));
            }
        }
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
