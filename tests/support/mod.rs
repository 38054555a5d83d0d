//! Running `voxloop serve` from integration tests: start it on a free port, talk HTTP/1.1 to it
//! over a plain TCP socket, signal it and wait for it to exit.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `voxloop serve` on a free port and returns the child and the address it logged.
pub fn start_server(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines.by_ref().map_while(Result::ok).find_map(|line| {
        let rest = line.split("addr=").nth(1)?;
        rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
    });
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    match addr {
        Some(addr) => (child, addr),
        None => {
            child.kill().ok();
            let status = child.wait();
            panic!("server exited without logging its address: {status:?}");
        }
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
    assert!(status.unwrap().success());
}

pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not stop after the signal");
        std::thread::sleep(Duration::from_millis(50));
    }
}
