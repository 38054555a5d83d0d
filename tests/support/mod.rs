//! Running `voxloop serve` from integration tests: start it on a free port, talk HTTP/1.1 to it
//! over a plain TCP socket, signal it and wait for it to exit.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `voxloop serve` on a free port and returns the child and the address it logged.
pub fn start_server(cmd: Command) -> (Child, SocketAddr) {
    start_server_at(cmd, "127.0.0.1:0")
}

/// The address in `voxloop serve`'s "listening" log line (`addr=127.0.0.1:PORT`).
pub fn logged_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("addr=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Starts `voxloop serve` listening on `addr` (`127.0.0.1:0`: a free port); the child and the
/// address it logged.
pub fn start_server_at(mut cmd: Command, addr: &str) -> (Child, SocketAddr) {
    let mut child = cmd
        .args(["serve", "--addr", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines.by_ref().map_while(Result::ok).find_map(|line| logged_addr(&line));
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
    signal_pid(child.id(), name);
}

/// Sends the signal `name` (`TERM`, `KILL`, ...) to the process `pid`.
pub fn signal_pid(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
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

/// One HTTP/1.1 exchange with `Connection: close`: the status and the body (de-chunked).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write_request(&mut stream, addr, method, path, body);
    let mut reader = BufReader::new(stream);
    let (status, chunked, _) = read_head(&mut reader);
    (status, String::from_utf8(read_body(&mut reader, chunked)).unwrap())
}

/// `POST` with a JSON body.
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, Some(body))
}

/// `POST` with a JSON body, answered with its status, head (for the headers) and body.
pub fn http_post_with_head(addr: SocketAddr, path: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn write_request(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) {
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

/// Reads the status line and headers; returns the status and whether the body is chunked.
/// The status line and headers: the status, whether the body is chunked, and the head's text.
fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, bool, String) {
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            return (status, chunked, head);
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        head.push_str(&line);
    }
}

/// The rest of a response body: de-chunked, or everything until the connection closes.
fn read_body(reader: &mut BufReader<TcpStream>, chunked: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(reader) {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    body
}

/// The next chunk of a chunked body; `None` at its end (or when the connection ends).
fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

/// A server-sent event stream read as it arrives.
pub struct Sse {
    reader: BufReader<TcpStream>,
    buffer: String,
}

/// One server-sent event: its name and its data.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl Sse {
    /// Sends a `POST` and, for a `200`, returns the event stream; otherwise the status and
    /// the body.
    pub fn post(addr: SocketAddr, path: &str, body: &str) -> Result<Sse, (u16, String)> {
        Self::post_with_head(addr, path, body).map_err(|(status, _, body)| (status, body))
    }

    /// [`Sse::post`], with the head of an answer that is not a stream (for its headers).
    pub fn post_with_head(
        addr: SocketAddr,
        path: &str,
        body: &str,
    ) -> Result<Sse, (u16, String, String)> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write_request(&mut stream, addr, "POST", path, Some(body));
        let mut reader = BufReader::new(stream);
        let (status, chunked, head) = read_head(&mut reader);
        if status != 200 {
            let body = read_body(&mut reader, chunked);
            return Err((status, head, String::from_utf8_lossy(&body).into_owned()));
        }
        assert!(chunked, "an event stream is sent chunked");
        Ok(Sse { reader, buffer: String::new() })
    }

    /// The next event (comments skipped); `None` when the stream ends.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { event: "message".into(), data: String::new() };
                let mut any = false;
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.event = name.trim().to_owned();
                        any = true;
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = read_chunk(&mut self.reader)?;
            self.buffer.push_str(&String::from_utf8(chunk).unwrap());
        }
    }

    /// Every remaining event, up to the end of the stream.
    pub fn collect(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event() {
            events.push(event);
        }
        events
    }
}

/// A response body as JSON, or a panic that shows the body.
pub fn json_body(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `POST /v1/sessions` with `body`; the new session's id.
pub fn create_session(addr: SocketAddr, body: &str) -> String {
    let (status, text) = http_post(addr, "/v1/sessions", body);
    assert_eq!(status, 201, "{text}");
    json_body(&text)["id"].as_str().unwrap().to_owned()
}

/// `GET /v1/sessions/{id}`: the session's summary.
pub fn session(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (status, text) = http_request(addr, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(status, 200, "{text}");
    json_body(&text)
}

/// `voxloop serve --config <config>` on the CPU, logging at info, with the caller's address,
/// data dir and token2wav overrides removed; the model is the tiny fixture checkpoint
/// (`core/tests/fixtures/llm/tiny_a`) when `tiny_model`, else none. System prompts are dated
/// 2025-08-28 (`VOXLOOP_FIXED_NOW`): the random model's output follows the prompt, and a test
/// must see the same one on any day.
pub fn serve_command(config: &std::path::Path, tiny_model: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("VOXLOOP_ADDR")
        .env_remove("VOXLOOP_MODEL_URL")
        .env_remove("VOXLOOP_DATA_DIR")
        .env_remove("VOXLOOP_TOKEN2WAV_DIR")
        .env("VOXLOOP_LOG", "info")
        .env("VOXLOOP_DEVICE", "cpu")
        .env("VOXLOOP_FIXED_NOW", "2025-08-28T04:00:00Z")
        .arg("--config")
        .arg(config);
    if tiny_model {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        cmd.env("VOXLOOP_MODEL_DIR", root.join("core/tests/fixtures/llm/tiny_a"));
    } else {
        cmd.env_remove("VOXLOOP_MODEL_DIR");
    }
    cmd
}

/// A running `voxloop serve`, stopped with SIGTERM when dropped (unless it exited already);
/// `_dir` keeps its temporary config and data alive as long as it runs.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            signal(&self.child, "TERM");
            wait_exit(&mut self.child);
        }
    }
}

/// The token2wav fixture of `voices/tests` and its voice, written into `dir` as a library of
/// one profile (`fixture`).
pub fn fixture_voice(dir: &std::path::Path) -> voxloop_voices::VoiceProfile {
    use tch::{Kind, Tensor};
    let inputs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("voices/tests/fixtures/token2wav/inputs.safetensors");
    let inputs: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(inputs).unwrap().into_iter().collect();
    let ints = |t: &Tensor| Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).unwrap();
    let floats = |t: &Tensor| Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let mel = floats(&inputs["prompt_mel"]).chunks(80).map(<[f32]>::to_vec).collect();
    let profile = voxloop_voices::VoiceProfile::new(
        "fixture",
        ints(&inputs["prompt_tokens"]),
        mel,
        floats(&inputs["spk_emb"]),
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    profile.to_json_file(&dir.join("fixture.json")).unwrap();
    profile
}

/// `seconds` of a 440 Hz tone as a 16 kHz mono WAV file: valid audio input that needs no
/// speech synthesiser.
pub fn tone_wav(seconds: f32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for i in 0..(16_000.0 * seconds) as usize {
        let t = i as f32 / 16_000.0;
        writer.write_sample(((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

/// The directory of the official Python clients (`VOXLOOP_PYCLIENTS`, installed by
/// `scripts/pyclients.sh`) when it holds `package`, else `None`: the caller's tests are
/// skipped, except under `VOXLOOP_REQUIRE_MODELS=1` (`make test`), where its absence fails.
pub fn python_clients(package: &str) -> Option<std::path::PathBuf> {
    match std::env::var_os("VOXLOOP_PYCLIENTS") {
        Some(dir) if std::path::Path::new(&dir).join(package).is_dir() => Some(dir.into()),
        _ if std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() == Ok("1") => panic!(
            "VOXLOOP_PYCLIENTS is not a directory with the `{package}` package \
             (scripts/pyclients.sh)"
        ),
        _ => {
            eprintln!("VOXLOOP_PYCLIENTS has no `{package}` package: these tests are skipped");
            None
        }
    }
}

/// The built-in tools that would need the network, off: nothing leaves the machine.
pub const OFFLINE_TOOLS: &str =
    "[tools.web_search]\nenabled = false\n\n[tools.weather]\nenabled = false\n";

/// `voxloop serve` on the tiny checkpoint with offline tools, speech rendered by the
/// token2wav fixture in its voice (`fixture`, the only one of the library), and `extra`
/// appended to the config file.
pub fn serve_speaking(extra: &str) -> Server {
    serve_speaking_with(extra, &[], "127.0.0.1:0")
}

/// [`serve_speaking`] with `env` set for the server, listening on `addr`.
pub fn serve_speaking_with(extra: &str, env: &[(&str, String)], addr: &str) -> Server {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let voices = data.join("voices");
    fixture_voice(&voices);
    let t2w = root.join("voices/tests/fixtures/token2wav");
    let toml = format!(
        "[paths]\ndata_dir = {data:?}\n\n{OFFLINE_TOOLS}\n[voice]\ntoken2wav = {t2w:?}\n\
         dir = {voices:?}\nname = \"fixture\"\n\n{extra}"
    );
    let config = dir.path().join("voxloop.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = serve_command(&config, true);
    cmd.env_remove("VOXLOOP_SILERO_VAD");
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let (child, addr) = start_server_at(cmd, addr);
    Server { child, addr, _dir: Some(dir) }
}

/// Runs the Python test client `script` (relative to the repository) as
/// `script <command> <addr> <args>` with the official clients on `PYTHONPATH`; its one JSON
/// report. The caller's OpenAI settings and proxies are kept out: it talks to `addr` only.
pub fn python_report(
    pyclients: &std::path::Path,
    script: &str,
    command: &str,
    addr: SocketAddr,
    args: &[&std::path::Path],
) -> serde_json::Value {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .arg(command)
        .arg(addr.to_string())
        .args(args)
        .env("PYTHONPATH", pyclients)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} {command} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{script} {command} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// `text` spoken by espeak-ng into `dir/question.wav`, or `None` when espeak-ng is missing:
/// the caller's test is skipped, except under `VOXLOOP_REQUIRE_MODELS=1`, where it fails.
pub fn spoken_question(dir: &std::path::Path, text: &str) -> Option<std::path::PathBuf> {
    let wav = dir.join("question.wav");
    let spoke =
        Command::new("espeak-ng").arg("-w").arg(&wav).arg(text).status().is_ok_and(|s| s.success());
    present(spoke, "espeak-ng, to record the spoken question,").then_some(wav)
}

/// Whether a test's outside need (`what`) is met: when it is not, the test is skipped (`false`),
/// except under `VOXLOOP_REQUIRE_MODELS=1` (`make test`), where it fails.
pub fn present(met: bool, what: &str) -> bool {
    if !met {
        assert!(
            std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() != Ok("1"),
            "{what} is needed by this test"
        );
        eprintln!("{what} missing: this test is skipped");
    }
    met
}

/// The Silero VAD model (`VOXLOOP_SILERO_VAD`, `scripts/silero_vad.sh`), or `None`: the
/// caller is skipped, except under `VOXLOOP_REQUIRE_MODELS=1`, where its absence fails.
pub fn silero_vad() -> Option<std::path::PathBuf> {
    match std::env::var_os("VOXLOOP_SILERO_VAD").map(std::path::PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        _ if std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() == Ok("1") => {
            panic!("VOXLOOP_SILERO_VAD is not the Silero VAD model (scripts/silero_vad.sh)")
        }
        _ => {
            eprintln!("VOXLOOP_SILERO_VAD unset: skipped");
            None
        }
    }
}

/// A mono 16-bit PCM WAV of `samples` at 8 kHz.
fn wav_8k(samples: &[i16]) -> Vec<u8> {
    voxloop_core::audio::wav_file(samples, 8000)
}

/// `n` distinct 50-ms tones (`tone_NNNN.wav`) in `dir` with a sidecar giving each its own
/// description ("test tone number N at H hertz"); their item ids.
pub fn tone_library(
    dir: &std::path::Path,
    n: usize,
) -> std::collections::BTreeSet<voxloop_retrieval::ItemId> {
    std::fs::create_dir_all(dir).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut sidecar = String::new();
    for i in 0..n {
        let hz = 100.0 + i as f32;
        let samples: Vec<i16> = (0..400)
            .map(|t| ((2.0 * std::f32::consts::PI * hz * t as f32 / 8000.0).sin() * 8000.0) as i16)
            .collect();
        let bytes = wav_8k(&samples);
        ids.insert(voxloop_retrieval::ItemId::from_content(&bytes));
        let name = format!("tone_{i:04}.wav");
        std::fs::write(dir.join(&name), bytes).unwrap();
        sidecar.push_str(&format!(
            "{{\"path\":\"{name}\",\"description\":\"test tone number {i} at {hz} hertz\",\"tags\":[\"tone\",\"t{i}\"]}}\n"
        ));
    }
    std::fs::write(dir.join("metadata.jsonl"), sidecar).unwrap();
    assert_eq!(ids.len(), n, "the tones must have distinct contents");
    ids
}

/// The `main` of a bench or drill without the test harness: `run` on the `options` parsed
/// from the command line; an error is printed after `name` and fails the process.
pub fn main_of<O, E: std::fmt::Display>(
    name: &str,
    options: impl FnOnce(&[String]) -> Result<O, E>,
    run: impl FnOnce(&O) -> Result<(), E>,
) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match options(&args).and_then(|o| run(&o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
