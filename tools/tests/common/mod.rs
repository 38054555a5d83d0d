//! A local HTTP server (127.0.0.1, random port) that replays canned responses per path and
//! records the requests it gets. Started by each test, stopped when the test's runtime ends.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

/// The path of a committed fixture file.
pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// The bytes of a committed fixture file.
pub fn fixture(relative: &str) -> Vec<u8> {
    let path = fixture_path(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A committed JSON fixture, parsed.
pub fn fixture_json(relative: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(relative)).unwrap()
}

/// What the server sends for a path.
#[derive(Clone)]
pub enum Payload {
    /// These bytes (with a Content-Length).
    Bytes(Vec<u8>),
    /// An endless chunked body of spaces (no Content-Length).
    Endless,
    /// Nothing, ever: the handler never returns.
    Never,
}

/// One canned response.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub payload: Payload,
}

impl Reply {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            payload: Payload::Bytes(body),
        }
    }

    pub fn fixture(status: u16, relative: &str) -> Self {
        Self::json(status, fixture(relative))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn never() -> Self {
        Self { status: 200, headers: Vec::new(), payload: Payload::Never }
    }

    pub fn endless_json() -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            payload: Payload::Endless,
        }
    }

    pub fn huge_json(bytes: usize) -> Self {
        let mut body = b"{\"results\": [".to_vec();
        while body.len() < bytes {
            body.extend_from_slice(b"{\"title\": \"padding\", \"url\": \"https://x.test/\"},");
        }
        body.extend_from_slice(b"{}]}");
        Self::json(200, body)
    }

    pub fn html(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            payload: Payload::Bytes(body.as_bytes().to_vec()),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Self {
            status: 302,
            headers: vec![("location".into(), location.into())],
            payload: Payload::Bytes(Vec::new()),
        }
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The decoded value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

struct Shared {
    routes: HashMap<String, Reply>,
    requests: Mutex<Vec<Recorded>>,
}

/// The running server.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    /// Starts a server answering `routes` (path → reply); other paths get 404.
    pub async fn start(routes: Vec<(&str, Reply)>) -> Self {
        let shared = Arc::new(Shared {
            routes: routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect(),
            requests: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers,
        body: body.to_vec(),
    });
    let Some(reply) = shared.routes.get(uri.path()).cloned() else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found"))
            .unwrap();
    };
    let body = match reply.payload {
        Payload::Bytes(bytes) => Body::from(bytes),
        Payload::Endless => Body::from_stream(futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[b' '; 16 * 1024]))
        })),
        Payload::Never => std::future::pending().await,
    };
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response.body(body).unwrap()
}
