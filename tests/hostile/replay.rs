//! A real HTTP server on 127.0.0.1 that replays canned responses by path (what a search
//! provider or a web page would send) and records the paths asked for. The routes can be
//! changed between turns, so one service can meet several bad answers in a row.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One canned response: its content type and body.
#[derive(Clone)]
pub struct Reply {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self { content_type: "application/json", body: body.into() }
    }

    pub fn html(body: impl Into<Vec<u8>>) -> Self {
        Self { content_type: "text/html; charset=utf-8", body: body.into() }
    }
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Reply>>,
    asked: Mutex<Vec<String>>,
}

/// The running server; it lives as long as the test process (its threads only accept and
/// answer).
pub struct Replay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Replay {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let serving = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let shared = Arc::clone(&serving);
                std::thread::spawn(move || answer(stream, &shared));
            }
        });
        Self { addr, shared }
    }

    /// Answers `path` (without the query) with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.shared.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// The paths asked for so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.shared.asked.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Reads one request's head (the clients here send GETs without a body) and answers it.
fn answer(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = target.split('?').next().unwrap_or("/").to_owned();
    shared.asked.lock().unwrap().push(path.clone());
    let reply = shared.routes.lock().unwrap().get(&path).cloned();
    let mut stream = reader.into_inner();
    let (status, reply) = match reply {
        Some(reply) => ("200 OK", reply),
        None => ("404 Not Found", Reply { content_type: "text/plain", body: b"no route".to_vec() }),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.content_type,
        reply.body.len()
    );
    // A client that stops reading (a response over its limit) is no error of the server's.
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&reply.body));
}
