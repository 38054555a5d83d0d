//! The `voxloop` binary as a user runs it: version, config errors, the HTTP service and its
//! shutdown. Every run removes LD_LIBRARY_PATH, so these tests also prove the libtorch rpath.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output};

use support::{http_get, signal, wait_exit};

/// The binary with none of the caller's voxloop settings, and a data dir of its own: the
/// working tree's `data/` (left by `make run`) holds an index that only one process may open.
fn voxloop() -> Command {
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests-data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("VOXLOOP_CONFIG")
        .env_remove("VOXLOOP_ADDR")
        .env_remove("VOXLOOP_LOG")
        .env_remove("VOXLOOP_MODEL_DIR")
        .env_remove("VOXLOOP_TOKEN2WAV_DIR")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("VOXLOOP_DATA_DIR", data)
        .env("NO_COLOR", "1");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("voxloop runs")
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(voxloop().arg("--version"));
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim(), format!("voxloop {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_the_serve_command() {
    let out = run(voxloop().arg("--help"));
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("serve") && stdout.contains("--config"), "{stdout}");
}

#[test]
fn invalid_config_is_one_line_naming_file_and_field_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\naddr = 8080\n").unwrap();
    let out = run(voxloop().arg("--config").arg(&path).arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&*path.to_string_lossy()) && stderr.contains("server.addr"),
        "{stderr}"
    );

    std::fs::write(&path, "[server\n").unwrap();
    let out = run(voxloop().arg("--config").arg(&path).arg("serve"));
    assert_eq!(out.status.code(), Some(2));

    let out = run(voxloop().arg("--config").arg(dir.path().join("missing.toml")).arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn config_command_prints_effective_config_with_env_overrides() {
    let out = run(voxloop().arg("config").env("VOXLOOP_ADDR", "127.0.0.1:9999"));
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("addr = \"127.0.0.1:9999\""), "{stdout}");
}

#[test]
fn port_in_use_is_a_clear_error_not_a_panic() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = run(voxloop().args(["serve", "--addr", &addr.to_string()]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn start_server() -> (Child, SocketAddr) {
    support::start_server(voxloop())
}

#[test]
fn serves_healthz_and_stops_cleanly_on_sigint() {
    let (mut child, addr) = start_server();
    let response = http_get(addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    assert!(response.contains(env!("CARGO_PKG_VERSION")), "{response}");
    let tools = http_get(addr, "/v1/tools");
    assert!(tools.starts_with("HTTP/1.1 200"), "{tools}");
    for name in ["web_search", "get_date_time", "get_weather"] {
        assert!(tools.contains(&format!("\"{name}\"")), "{tools}");
    }
    let missing = http_get(addr, "/nope");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    signal(&child, "INT");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn stops_cleanly_on_sigterm() {
    let (mut child, addr) = start_server();
    assert!(http_get(addr, "/healthz").starts_with("HTTP/1.1 200"));
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}
