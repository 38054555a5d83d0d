//! Saved sessions, end to end: the real `voxloop serve` binary on the tiny random checkpoint
//! (`core/tests/fixtures/llm/tiny_a`), restarted on the same data dir, with sessions evicted,
//! deleted, corrupted on disk, named by hostile ids, and with persistence off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::{create_session, http_get, http_request, json_body, session, Server, Sse, SseEvent};

/// A data dir that outlives the servers started on it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where sessions are saved by default.
    fn sessions(&self) -> PathBuf {
        self.data().join("sessions")
    }

    /// `voxloop serve` on the tiny checkpoint with the network tools off, short seeded
    /// steps, and `agent` appended to the `[agent]` table.
    fn serve(&self, agent: &str) -> Server {
        let config = self.dir.path().join("voxloop.toml");
        let toml = format!(
            "[paths]\ndata_dir = {:?}\n\n[tools.web_search]\nenabled = false\n\n\
             [tools.weather]\nenabled = false\n\n[agent]\nmax_new_tokens = 12\nseed = 7\n{agent}\n",
            self.data()
        );
        std::fs::write(&config, toml).unwrap();
        let (child, addr) = support::start_server(support::serve_command(&config, true));
        Server { child, addr, _dir: None }
    }
}

/// A text session without tools.
const SESSION: &str = r#"{"tool_choice": "none", "mode": "text"}"#;

/// Runs a text turn to its end; the data of its `done` event, the last and only one.
fn turn(addr: SocketAddr, id: &str, text: &str) -> Value {
    let path = format!("/v1/sessions/{id}/turns");
    let events: Vec<SseEvent> = match Sse::post(addr, &path, &json!({ "text": text }).to_string()) {
        Ok(sse) => sse.collect(),
        Err((status, body)) => panic!("turn refused with {status}: {body}"),
    };
    assert_eq!(events.iter().filter(|e| e.event == "done").count(), 1, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last.event, "done", "{events:?}");
    json_body(&last.data)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None)
}

fn delete(addr: SocketAddr, id: &str) -> u16 {
    http_request(addr, "DELETE", &format!("/v1/sessions/{id}"), None).0
}

/// `GET /v1/sessions`: id → (turns, in_memory).
fn listing(addr: SocketAddr) -> Vec<(String, Value, bool)> {
    let (status, body) = get(addr, "/v1/sessions");
    assert_eq!(status, 200, "{body}");
    let list = json_body(&body)["sessions"].as_array().unwrap().clone();
    list.iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap().to_owned();
            (id, s["turns"].clone(), s["in_memory"].as_bool().unwrap())
        })
        .collect()
}

/// Sessions in memory, from `/healthz`.
fn in_memory(addr: SocketAddr) -> u64 {
    let response = http_get(addr, "/healthz");
    json_body(response.split("\r\n\r\n").nth(1).unwrap())["agent"]["sessions"].as_u64().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn a_session_survives_a_restart_and_goes_on() {
    let home = Home::new();
    let server = home.serve("");
    let id = create_session(server.addr, SESSION);
    let end = turn(server.addr, &id, "Hello there, who are you?");
    assert!(end.get("save_error").is_none(), "{end}");
    let before = session(server.addr, &id);
    assert_eq!(before["turns"], 1, "{before}");
    assert!(before["save_error"].is_null(), "{before}");
    assert_eq!(files(&home.sessions()), [format!("{id}.json"), format!("{id}.meta.json")]);
    drop(server);

    let server = home.serve("");
    let addr = server.addr;
    assert_eq!(in_memory(addr), 0);
    assert_eq!(listing(addr), [(id.clone(), json!(1), false)]);
    let after = session(addr, &id);
    for field in
        ["turns", "history_entries", "mode", "created_unix", "last_end_reason", "usage", "voice"]
    {
        assert_eq!(after[field], before[field], "{field}: {after} vs {before}");
    }
    // The history is not in the model's cache until the next turn prefills it.
    assert_eq!(after["cached_tokens"], 0, "{after}");
    assert_eq!(listing(addr), [(id.clone(), json!(1), true)]);

    let end = turn(addr, &id, "And what can you do?");
    assert_eq!((&end["turns"], &end["reason"]), (&json!(2), &json!("completed")), "{end}");
    let summary = session(addr, &id);
    assert_eq!(summary["turns"], 2, "{summary}");
    // system, declarations, then (human, assistant) twice
    assert_eq!(summary["history_entries"], 6, "{summary}");
    let total = |s: &Value| s["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(total(&summary), total(&before) + end["usage"]["output_tokens"].as_u64().unwrap());
    drop(server);

    // The second turn was saved too.
    let server = home.serve("");
    assert_eq!(session(server.addr, &id)["history_entries"], 6);
}

#[test]
fn an_evicted_session_comes_back_from_disk() {
    let home = Home::new();
    let server = home.serve("max_sessions = 1");
    let addr = server.addr;
    let a = create_session(addr, SESSION);
    turn(addr, &a, "Hello, I am A.");
    let b = create_session(addr, SESSION);
    assert_eq!(in_memory(addr), 1);
    let mut list = listing(addr);
    list.sort_by_key(|(id, ..)| id != &b);
    assert_eq!(list, [(b.clone(), json!(0), true), (a.clone(), json!(1), false)]);

    // A is read back (and B evicted in turn) and takes its next turn.
    assert_eq!(session(addr, &a)["turns"], 1);
    let end = turn(addr, &a, "Still there?");
    assert_eq!(end["turns"], 2, "{end}");
    assert_eq!(session(addr, &a)["history_entries"], 6);
    assert_eq!(session(addr, &b)["turns"], 0);
    assert_eq!(in_memory(addr), 1);
}

#[test]
fn a_deleted_session_stays_deleted_across_restarts() {
    let home = Home::new();
    let server = home.serve("");
    let addr = server.addr;
    let gone = create_session(addr, SESSION);
    turn(addr, &gone, "Forget me.");
    let later = create_session(addr, SESSION);
    assert_eq!(delete(addr, &gone), 204);
    assert!(!files(&home.sessions()).iter().any(|f| f.starts_with(&gone)));
    assert_eq!(get(addr, &format!("/v1/sessions/{gone}")).0, 404);
    drop(server);

    let server = home.serve("");
    let addr = server.addr;
    assert_eq!(get(addr, &format!("/v1/sessions/{gone}")).0, 404);
    assert_eq!(delete(addr, &gone), 404);
    // A session only on disk is deleted without being loaded.
    assert_eq!(in_memory(addr), 0);
    assert_eq!(delete(addr, &later), 204);
    assert_eq!(files(&home.sessions()), Vec::<String>::new());
    assert_eq!(get(addr, &format!("/v1/sessions/{later}")).0, 404);
    assert!(listing(addr).is_empty());
}

#[test]
fn a_corrupted_file_is_a_clear_error_and_harms_no_other_session() {
    let home = Home::new();
    let server = home.serve("");
    let broken = create_session(server.addr, SESSION);
    let fine = create_session(server.addr, SESSION);
    turn(server.addr, &fine, "Hello.");
    drop(server);
    let path = home.sessions().join(format!("{broken}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();

    let server = home.serve("");
    let addr = server.addr;
    for (method, path, body) in [
        ("GET", format!("/v1/sessions/{broken}"), None),
        ("POST", format!("/v1/sessions/{broken}/turns"), Some(r#"{"text": "hi"}"#)),
    ] {
        let (status, text) = http_request(addr, method, &path, body);
        assert_eq!(status, 500, "{method} {path}: {text}");
        let message = json_body(&text)["error"].as_str().unwrap().to_owned();
        assert!(message.contains(&broken) && message.contains("cannot be loaded"), "{message}");
        assert!(message.contains(&format!("{broken}.json")), "the file is named: {message}");
    }
    // The server and the other session are unharmed.
    assert_eq!(session(addr, &fine)["turns"], 1);
    assert_eq!(turn(addr, &fine, "Again.")["turns"], 2);
    // The broken file can still be deleted.
    assert_eq!(delete(addr, &broken), 204);
    assert_eq!(get(addr, &format!("/v1/sessions/{broken}")).0, 404);
}

#[test]
fn hostile_ids_never_reach_the_filesystem() {
    let home = Home::new();
    let server = home.serve("");
    let addr = server.addr;
    let real = create_session(addr, SESSION);
    // Copies of a real session's files one level above the sessions dir, where a `../` id
    // would lead.
    for suffix in [".json", ".meta.json"] {
        let from = home.sessions().join(format!("{real}{suffix}"));
        std::fs::copy(from, home.data().join(format!("planted{suffix}"))).unwrap();
    }
    for id in ["..%2Fplanted", "..%2F..%2Fetc", "%2E%2E%2Fplanted", "..", "conv_..%2F..%2Fplanted"]
    {
        let path = format!("/v1/sessions/{id}");
        let (status, text) = get(addr, &path);
        assert!(status == 404 || status == 400, "GET {path}: {status} {text}");
        let (status, text) =
            http_request(addr, "POST", &format!("{path}/turns"), Some(r#"{"text": "hi"}"#));
        assert!(status == 404 || status == 400, "POST {path}/turns: {status} {text}");
        let (status, text) = http_request(addr, "DELETE", &path, None);
        assert!(status == 404 || status == 400, "DELETE {path}: {status} {text}");
    }
    assert!(
        home.data().join("planted.json").is_file()
            && home.data().join("planted.meta.json").is_file()
    );
    assert_eq!(files(&home.sessions()), [format!("{real}.json"), format!("{real}.meta.json")]);
    assert_eq!(in_memory(addr), 1);
}

#[test]
fn with_persistence_off_nothing_is_written() {
    let home = Home::new();
    let server = home.serve("persist_sessions = false");
    let addr = server.addr;
    let id = create_session(addr, SESSION);
    let end = turn(addr, &id, "Hello.");
    assert!(end.get("save_error").is_none(), "{end}");
    assert!(session(addr, &id)["save_error"].is_null());
    assert_eq!(listing(addr), [(id.clone(), json!(1), true)]);
    drop(server);
    assert!(!home.sessions().exists(), "{:?}", files(&home.data()));
    assert_eq!(files(&home.data()), Vec::<String>::new());

    let server = home.serve("persist_sessions = false");
    assert_eq!(get(server.addr, &format!("/v1/sessions/{id}")).0, 404);
}

#[test]
fn a_failed_save_is_reported_and_the_turn_still_ends() {
    let home = Home::new();
    let server = home.serve("");
    let addr = server.addr;
    let id = create_session(addr, SESSION);
    // The sessions dir becomes a file: every write under it fails (even for root).
    let dir = home.sessions();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    let end = turn(addr, &id, "Hello.");
    assert_eq!((&end["reason"], &end["turns"]), (&json!("completed"), &json!(1)), "{end}");
    let message = end["save_error"].as_str().unwrap_or_else(|| panic!("{end}")).to_owned();
    assert!(message.contains(&format!("{id}.json")), "{message}");
    assert_eq!(session(addr, &id)["save_error"].as_str(), Some(message.as_str()));

    // Once the directory is back, the next turn saves the whole session.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let end = turn(addr, &id, "Again.");
    assert!(end.get("save_error").is_none(), "{end}");
    let summary = session(addr, &id);
    assert!(summary["save_error"].is_null(), "{summary}");
    drop(server);
    let server = home.serve("");
    assert_eq!(session(server.addr, &id)["turns"], 2);
}
