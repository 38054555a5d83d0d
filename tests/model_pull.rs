//! `voxloop model pull`, against a local server in the Hugging Face hub's URL layout (the hub
//! itself is out of reach here): it serves the tiny fixture checkpoint with the hub's tree
//! listing (sizes, LFS sha256) and `resolve` downloads with `Range`, and can cut a download
//! short or serve corrupted bytes. Checked: a whole pull, a resume after a cut (with the
//! `Range` the client sent), corruption detected and nothing left behind, the offline check;
//! and `[model] id`: `voxloop serve` pulls on its first start, or starts without the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sha2::{Digest, Sha256};

/// What the local hub serves and what it saw.
#[derive(Default)]
struct Hub {
    files: Vec<(String, Vec<u8>)>,
    /// Files whose next whole download is cut after half its bytes.
    cut: Mutex<HashSet<String>>,
    /// Files served with one byte changed (the listing keeps the true sha256).
    corrupt: Mutex<HashSet<String>>,
    /// The `Range` headers received, by file.
    ranges: Mutex<Vec<(String, String)>>,
}

fn fixture() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/tests/fixtures/llm/tiny_a");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

async fn tree(State(hub): State<Arc<Hub>>) -> Response {
    let listed: Vec<_> = hub
        .files
        .iter()
        .map(|(path, bytes)| {
            let mut entry =
                json!({ "type": "file", "path": path, "size": bytes.len(), "oid": "0" });
            if path.ends_with(".safetensors") {
                let sha: String =
                    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
                entry["lfs"] = json!({ "oid": sha, "size": bytes.len(), "pointerSize": 134 });
            }
            entry
        })
        .chain(std::iter::once(
            json!({ "type": "directory", "path": "sub", "oid": "1", "size": 0 }),
        ))
        .collect();
    axum::Json(listed).into_response()
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    UrlPath((_, _, _, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some((_, bytes)) = hub.files.iter().find(|(p, _)| *p == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut bytes = bytes.clone();
    if hub.corrupt.lock().unwrap().contains(&path) {
        bytes[0] ^= 0xff;
    }
    let range = headers.get(header::RANGE).map(|v| v.to_str().unwrap().to_owned());
    if let Some(range) = &range {
        hub.ranges.lock().unwrap().push((path.clone(), range.clone()));
        let start: usize =
            range.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
        let rest = bytes[start..].to_vec();
        return (
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_LENGTH, rest.len().to_string())],
            rest,
        )
            .into_response();
    }
    if hub.cut.lock().unwrap().remove(&path) {
        let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("cut"))];
        let mut response = Response::new(Body::from_stream(futures::stream::iter(pieces)));
        response.headers_mut().insert(header::CONTENT_LENGTH, bytes.len().into());
        return response;
    }
    bytes.into_response()
}

/// The hub on a free port, served from a thread of its own.
fn start(hub: Arc<Hub>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = Router::new()
                .route("/api/models/{owner}/{name}/tree/{rev}", get(tree))
                .route("/{owner}/{name}/resolve/{rev}/{*path}", get(resolve))
                .with_state(hub);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

fn pull(endpoint: Option<SocketAddr>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("HF_HUB_OFFLINE").env_remove("HF_TOKEN").env("VOXLOOP_LOG", "warn");
    match endpoint {
        Some(addr) => cmd.env("HF_ENDPOINT", format!("http://{addr}")),
        None => cmd.env("HF_ENDPOINT", "http://127.0.0.1:9"),
    };
    cmd.envs(env.iter().copied()).args(["model", "pull"]).args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn same_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        assert_eq!(&std::fs::read(dir.join(path)).unwrap(), bytes, "{path}");
        assert!(!dir.join(format!("{path}.part")).exists(), "{path}.part left behind");
    }
}

#[test]
fn a_pull_completes_resumes_after_a_cut_and_detects_corruption() {
    let files = fixture();
    let biggest = files.iter().max_by_key(|(_, b)| b.len()).unwrap().0.clone();
    let hub = Arc::new(Hub { files: files.clone(), ..Hub::default() });
    hub.cut.lock().unwrap().insert(biggest.clone());
    let addr = start(Arc::clone(&hub));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let dir_arg = dir.to_str().unwrap();

    // Cut mid-file: the pull fails, saying how to go on, and keeps what it has.
    let cut = pull(Some(addr), &["test/tiny", "--dir", dir_arg], &[]);
    assert!(!cut.status.success(), "{}", stderr(&cut));
    assert!(stderr(&cut).contains("run the pull again to resume"), "{}", stderr(&cut));
    let part: PathBuf = dir.join(format!("{biggest}.part"));
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0, "the partial download is kept");

    // Again: it resumes where it stopped and ends with every file whole.
    let again = pull(Some(addr), &["test/tiny", "--dir", dir_arg], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(*hub.ranges.lock().unwrap(), [(biggest.clone(), format!("bytes={kept}-"))]);
    same_files(&dir, &files);
    assert!(dir.join(".voxloop-pull.json").is_file());

    // Offline: the pulled directory checks out without the network; a missing file does not.
    let offline = pull(None, &["test/tiny", "--dir", dir_arg, "--offline"], &[]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert!(stderr(&offline).contains("complete"), "{}", stderr(&offline));
    let never = tmp.path().join("never");
    let refused =
        pull(None, &["test/x", "--dir", never.to_str().unwrap()], &[("HF_HUB_OFFLINE", "1")]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("never pulled"), "{}", stderr(&refused));

    // Corrupted bytes: the sha256 check refuses the file and leaves nothing of it.
    hub.corrupt.lock().unwrap().insert(biggest.clone());
    let other = tmp.path().join("other");
    let bad = pull(Some(addr), &["test/tiny", "--dir", other.to_str().unwrap()], &[]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("corrupted: sha256"), "{}", stderr(&bad));
    assert!(!other.join(&biggest).exists() && !other.join(format!("{biggest}.part")).exists());

    // A name that is not owner/name is refused before any request.
    let odd = pull(Some(addr), &["../etc"], &[]);
    assert!(!odd.status.success());
    assert!(stderr(&odd).contains("not a repository name"), "{}", stderr(&odd));
}

/// `voxloop serve` with `[model] id` and `dir`, the hub at `endpoint`.
fn serve_pulling(dir: &Path, endpoint: &str) -> support::Server {
    let config_dir = tempfile::tempdir().unwrap();
    let data = config_dir.path().join("data");
    let toml = format!(
        "[paths]\ndata_dir = {data:?}\n{}\n[model]\nid = \"test/tiny\"\ndir = {dir:?}\n",
        support::OFFLINE_TOOLS
    );
    let config = config_dir.path().join("voxloop.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = support::serve_command(&config, false);
    cmd.env("HF_ENDPOINT", endpoint).env_remove("HF_HUB_OFFLINE").env_remove("VOXLOOP_MODEL_ID");
    let (child, addr) = support::start_server(cmd);
    support::Server { child, addr, _dir: Some(config_dir) }
}

#[test]
fn serve_pulls_its_model_id_on_first_start_or_starts_without_it() {
    let files = fixture();
    let hub = Arc::new(Hub { files: files.clone(), ..Hub::default() });
    let addr = start(Arc::clone(&hub));
    let tmp = tempfile::tempdir().unwrap();
    let health = |server: &support::Server| {
        support::json_body(&support::http_request(server.addr, "GET", "/healthz", None).1)
    };

    // The hub is reachable: pulled, then loaded.
    let dir = tmp.path().join("models/tiny");
    let server = serve_pulling(&dir, &format!("http://{addr}"));
    same_files(&dir, &files);
    let report = health(&server);
    assert_eq!(report["agent"]["model_dir"], dir.display().to_string(), "{report}");
    // VOXLOOP_DEVICE=cpu: f32 weights on the CPU.
    assert_eq!(
        (report["agent"]["device"].as_str(), report["agent"]["dtype"].as_str()),
        (Some("cpu"), Some("f32"))
    );
    drop(server);

    // A complete pull is used as it is: no request reaches the (now unreachable) hub.
    let server = serve_pulling(&dir, "http://127.0.0.1:9");
    assert!(health(&server)["agent"].is_object());
    drop(server);

    // Unreachable and nothing pulled: the service starts without the agent and says so.
    let missing = tmp.path().join("models/missing");
    let server = serve_pulling(&missing, "http://127.0.0.1:9");
    let report = health(&server);
    assert_eq!(report["status"], "ok", "{report}");
    assert!(report["agent"].is_null(), "{report}");
    assert!(!missing.join("config.json").exists());
}
