//! Crash drills (issue #18): SIGKILL at seeded random moments, then what a restart finds.
//!
//! ```text
//! cargo test -p voxloop --test crash_drills -- [--kills N] [--seed S] [--only index|sessions|voices|disk]
//! ```
//!
//! - *index*: `voxloop index add` of 1000 tones into a fresh index, killed at a random moment
//!   of its run (uniform over the time an uninterrupted run took). Then the index opens with no
//!   duplicate document and no document without its vector (orphan vectors are what a kill
//!   between the two stores' writes leaves, and opening repairs them), holds at least every
//!   item of the batches the run acknowledged ("indexed N/1000" on stderr), and a re-run
//!   completes it to exactly the library, every item once in both stores.
//! - *sessions*: `voxloop serve` on the tiny checkpoint, four clients each creating saved
//!   sessions and taking turns in them, killed at a random moment 0.5–3 s into the load; the
//!   same data directory is served again. Every session whose creation was acknowledged (201)
//!   loads, with at least as many turns as its last acknowledged `done` event reported, from
//!   this round and every earlier one, and the last one takes a turn.
//! - *voices*: `voxloop voice add NAME --force` (the release's ONNX models, tiny fixtures),
//!   replacing the voice `drill` and adding a new one in turn, killed at a random moment of its
//!   run. Then `voice list` succeeds, `drill` is still there, every listed voice is whole (its
//!   profile parses with the fields a voice needs), a voice not listed has no file, and `voice
//!   register` brings the index in line. Needs ONNX Runtime (`ORT_DYLIB_PATH`).
//! - *disk*: a tmpfs 3 MiB larger than the free space an index needs (root only; skipped
//!   where mounting is refused). `index add` onto it stops mid-way with a clear "not enough
//!   free space" error, not a crash, and the index it wrote is consistent and completes on a
//!   disk with room; sessions saved to it with 64 KiB left are created and
//!   take turns, the saves that do not fit say so (`save_error`), and after a restart every
//!   session whose save was acknowledged loads with its turns and none is unreadable.
//!
//! Without arguments (as `make test` runs it) each drill runs twice; `make crash-drills` runs
//! each 20 times. The kill moments come from `--seed` (default 1), so a failing drill can be
//! replayed; the machine's speed still moves what each moment hits.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use voxloop_retrieval::index::IndexOptions;
use voxloop_retrieval::{AudioIndex, HashingEmbedder, ItemId};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const ITEMS: usize = 1000;

struct Options {
    kills: usize,
    seed: u64,
    only: Option<String>,
}

fn options(args: &[String]) -> BoxResult<Options> {
    let mut o = Options { kills: 2, seed: 1, only: None };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--kills" => o.kills = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--only" => o.only = Some(value()?.clone()),
            // What `cargo test` may pass to a test binary without a harness.
            "--nocapture" | "--quiet" | "-q" => {}
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo test -p voxloop --test \
                     crash_drills -- [--kills N] [--seed S] [--only index|sessions|voices|disk]"
                )
                .into())
            }
        }
    }
    if o.kills < 1 {
        return Err("--kills must be at least 1".into());
    }
    if o.only.as_deref().is_some_and(|d| !["index", "sessions", "voices", "disk"].contains(&d)) {
        return Err("--only takes index, sessions, voices or disk".into());
    }
    Ok(o)
}

/// SplitMix64: kill moments reproducible from the seed.
struct Moments(u64);

impl Moments {
    /// A number in `[0, 1)`.
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }
}

/// `voxloop` with the caller's configuration kept out and `data` as its data directory.
fn voxloop(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    for var in [
        "VOXLOOP_CONFIG",
        "VOXLOOP_INDEX_DIR",
        "VOXLOOP_MODEL_DIR",
        "VOXLOOP_TOKEN2WAV_DIR",
        "VOXLOOP_FAULT_ABORT_AFTER_VECTOR_WRITES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("VOXLOOP_DATA_DIR", data).env("NO_COLOR", "1");
    cmd
}

fn succeeds(cmd: &mut Command) -> BoxResult<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(ok: bool, what: impl FnOnce() -> String) -> BoxResult<()> {
    if ok {
        Ok(())
    } else {
        Err(what().into())
    }
}

// ---- index add ----

fn index_add(data: &Path, lib: &Path) -> Command {
    let mut cmd = voxloop(data);
    cmd.args(["index", "add", "--embedder", "hashing", "--batch", "20"]).arg(lib);
    cmd
}

fn open_index(dir: &Path, repair: bool) -> BoxResult<AudioIndex> {
    let meta = AudioIndex::read_meta(dir)?.ok_or("no index after the run")?;
    let embedder = Arc::new(HashingEmbedder::new(meta.text_dim)?);
    Ok(AudioIndex::open(dir, embedder, IndexOptions { repair })?)
}

fn index_drill(moments: &mut Moments, kills: usize) -> BoxResult<String> {
    let tmp = tempfile::tempdir()?;
    let lib = tmp.path().join("lib");
    let expected = support::tone_library(&lib, ITEMS);
    // An uninterrupted run: how long the kill moments range over.
    let start = Instant::now();
    succeeds(&mut index_add(&tmp.path().join("whole"), &lib))?;
    let whole = start.elapsed();
    let mut acknowledged = Vec::new();
    let mut finished = 0;
    let mut round = 0;
    // Only a kill that meets a running process counts; a run may end sooner than the
    // uninterrupted one did, so the rounds go on until `kills` kills landed (or 3 × as many
    // rounds ran).
    while acknowledged.len() < kills && round < 3 * kills {
        round += 1;
        let data = tmp.path().join(format!("round{round}"));
        let index_dir = data.join("index");
        let after = whole.mul_f64(moments.next());
        let mut child =
            index_add(&data, &lib).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        // "indexed N/1000 (0 skipped)" after each committed batch.
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let acked = Arc::new(Mutex::new(0usize));
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let done = line
                        .strip_prefix("indexed ")
                        .and_then(|rest| rest.split('/').next())
                        .and_then(|n| n.parse::<usize>().ok());
                    if let Some(n) = done {
                        *acked.lock().unwrap_or_else(|e| e.into_inner()) = n;
                    }
                }
            })
        };
        std::thread::sleep(after);
        let running = child.try_wait()?.is_none();
        child.kill()?;
        child.wait()?;
        reader.join().map_err(|_| "the log reader panicked")?;
        let acked = *acked.lock().unwrap_or_else(|e| e.into_inner());
        if running {
            acknowledged.push(acked);
        } else {
            finished += 1;
        }
        if !index_dir.join("meta.json").exists() {
            // Killed before the index was created: nothing to check but the re-run.
            succeeds(&mut index_add(&data, &lib))?;
            assert_index_complete(&index_dir, &expected)?;
            continue;
        }
        {
            let index = open_index(&index_dir, false)?;
            let audit = index.audit()?;
            check(audit.duplicate_docs.is_empty() && audit.missing_vectors.is_empty(), || {
                format!("round {round}: killed after {after:?}: {audit:?}")
            })?;
            check(audit.text_docs >= acked, || {
                format!("round {round}: {acked} acknowledged, {} documents", audit.text_docs)
            })?;
        }
        succeeds(&mut index_add(&data, &lib))?;
        assert_index_complete(&index_dir, &expected)?;
    }
    check(acknowledged.len() == kills, || format!("only {} kills landed", acknowledged.len()))?;
    Ok(format!(
        "index add of {ITEMS} tones (an uninterrupted run {:.1} s): {kills} kills mid-run ({finished} \
         more rounds ended before their kill), items acknowledged at each kill {acknowledged:?}; \
         every audit clean and every re-run complete",
        whole.as_secs_f64()
    ))
}

fn assert_index_complete(index_dir: &Path, expected: &BTreeSet<ItemId>) -> BoxResult<()> {
    let index = open_index(index_dir, true)?;
    let audit = index.audit()?;
    check(audit.is_consistent() && audit.text_docs == expected.len(), || format!("{audit:?}"))?;
    let text: BTreeSet<ItemId> = index.text().ids()?.into_iter().collect();
    let vectors: BTreeSet<ItemId> = index.vectors().ids()?.into_iter().collect();
    check(&text == expected && &vectors == expected, || "the stores differ from the library".into())
}

// ---- sessions ----

/// `voxloop serve` on the tiny checkpoint with its data (sessions saved) in `dir`.
fn serve_in(dir: &Path) -> BoxResult<support::Server> {
    serve_in_with(dir, "")
}

/// [`serve_in`] with `agent` added to the `[agent]` table.
fn serve_in_with(dir: &Path, agent: &str) -> BoxResult<support::Server> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = dir.join("data");
    let voices = data.join("voices");
    if !voices.exists() {
        support::fixture_voice(&voices);
    }
    let t2w = root.join("voices/tests/fixtures/token2wav");
    let config = dir.join("voxloop.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = {data:?}\n\n{}\n[voice]\ntoken2wav = {t2w:?}\ndir = \
             {voices:?}\nname = \"fixture\"\n\n[agent]\nmax_new_tokens = 24\nseed = 7\n{agent}",
            support::OFFLINE_TOOLS
        ),
    )?;
    let mut cmd = support::serve_command(&config, true);
    cmd.env_remove("VOXLOOP_SILERO_VAD");
    let (child, addr) = support::start_server(cmd);
    Ok(support::Server { child, addr, _dir: None })
}

/// A client's requests against a server that may die under it: a dead server makes the
/// support functions panic, which ends this client (quietly, see [`quiet_client_panics`]).
fn session_client(
    addr: std::net::SocketAddr,
    acked: &Mutex<HashMap<String, usize>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let (status, body) = support::http_post(addr, "/v1/sessions", r#"{"mode": "text"}"#);
        if status != 201 {
            return;
        }
        let id = support::json_body(&body)["id"].as_str().unwrap_or_default().to_owned();
        acked.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), 0);
        for _ in 0..3 {
            let path = format!("/v1/sessions/{id}/turns");
            let Ok(stream) = support::Sse::post(addr, &path, r#"{"text": "Hello there."}"#) else {
                return;
            };
            let events = stream.collect();
            let Some(done) = events.iter().find(|e| e.event == "done") else { return };
            let turns = support::json_body(&done.data)["turns"].as_u64().unwrap_or(0) as usize;
            acked.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), turns);
        }
    }
}

/// Panics of threads named `drill-client` (a client whose server was killed) print nothing.
fn quiet_client_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("drill-client") {
            default(info);
        }
    }));
}

fn sessions_drill(moments: &mut Moments, kills: usize) -> BoxResult<String> {
    let tmp = tempfile::tempdir()?;
    let acked = Mutex::new(HashMap::<String, usize>::new());
    let mut loaded_counts = Vec::new();
    for round in 0..kills {
        let mut server = serve_in(tmp.path())?;
        let addr = server.addr;
        // What the earlier rounds acknowledged is all there.
        check_sessions(addr, &acked, round)?;
        let stop = AtomicBool::new(false);
        let after = Duration::from_secs_f64(0.5 + 2.5 * moments.next());
        std::thread::scope(|scope| -> BoxResult<()> {
            let mut clients = Vec::new();
            for _ in 0..4 {
                clients.push(
                    std::thread::Builder::new()
                        .name("drill-client".into())
                        .spawn_scoped(scope, || session_client(addr, &acked, &stop))?,
                );
            }
            std::thread::sleep(after);
            server.child.kill()?;
            server.child.wait()?;
            stop.store(true, Ordering::Relaxed);
            // Joined here, a client's panic (its server gone) is its end, not the drill's.
            for client in clients {
                let _ = client.join();
            }
            Ok(())
        })?;
        loaded_counts.push(acked.lock().unwrap_or_else(|e| e.into_inner()).len());
    }
    let server = serve_in(tmp.path())?;
    check_sessions(server.addr, &acked, kills)?;
    // The last session takes a turn after all those kills.
    let last = acked.lock().unwrap_or_else(|e| e.into_inner()).keys().next().cloned();
    if let Some(id) = last {
        let path = format!("/v1/sessions/{id}/turns");
        let events = support::Sse::post(server.addr, &path, r#"{"text": "Still there?"}"#)
            .map_err(|e| format!("{e:?}"))?
            .collect();
        let done = events.iter().find(|e| e.event == "done").ok_or("no done event")?;
        check(support::json_body(&done.data)["reason"] == "completed", || done.data.clone())?;
    }
    let total = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    Ok(format!(
        "voxloop serve under 4 session clients: {kills} kills; {total} acknowledged sessions \
         (after each round: {loaded_counts:?}), every one loaded after every restart with at \
         least its acknowledged turns"
    ))
}

fn check_sessions(
    addr: std::net::SocketAddr,
    acked: &Mutex<HashMap<String, usize>>,
    round: usize,
) -> BoxResult<()> {
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (id, turns) in acked {
        let (status, body) =
            support::http_request(addr, "GET", &format!("/v1/sessions/{id}"), None);
        check(status == 200, || format!("round {round}: session {id}: {status} {body}"))?;
        let found = support::json_body(&body)["turns"].as_u64().unwrap_or(0) as usize;
        check(found >= turns, || {
            format!("round {round}: session {id} has {found} turns, {turns} were acknowledged")
        })?;
    }
    Ok(())
}

// ---- voice add ----

fn voice_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("voices/tests/fixtures/profile")
}

/// `voice add NAME --force`: a new voice, or the replacement of one.
fn voice_add(data: &Path, name: &str) -> Command {
    let mut cmd = voxloop(data);
    cmd.args(["voice", "add", name, "--force", "-d", "a voice added under kills", "--wav"])
        .arg(voice_fixtures().join("voice_16k.wav"))
        .arg("--token2wav")
        .arg(voice_fixtures())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn voices_drill(moments: &mut Moments, kills: usize) -> BoxResult<String> {
    if std::env::var("ORT_DYLIB_PATH").map_or(true, |p| p.is_empty()) {
        if std::env::var("VOXLOOP_REQUIRE_MODELS").as_deref() == Ok("1") {
            return Err("VOXLOOP_REQUIRE_MODELS=1 but ORT_DYLIB_PATH is not set".into());
        }
        return Ok("voices: skipped (ORT_DYLIB_PATH is not set)".into());
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path();
    // An index first, so that each add also registers the voice there.
    succeeds(
        voxloop(data)
            .args(["index", "add", "--embedder", "hashing"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("voices/tests/fixtures/prompt")),
    )?;
    let start = Instant::now();
    let ok = voice_add(data, "drill").status()?.success();
    check(ok, || "an uninterrupted voice add failed".into())?;
    let whole = start.elapsed();
    let (mut present, mut landed, mut finished, mut round) = (0, 0, 0, 0);
    // As in the index drill, only kills that meet a running process count.
    while landed < kills && round < 3 * kills {
        round += 1;
        let after = whole.mul_f64(moments.next());
        // Odd rounds replace the voice `drill`, even ones add a voice of a new name.
        let name = if round % 2 == 1 { "drill".to_owned() } else { format!("new{round}") };
        let mut child = voice_add(data, &name).spawn()?;
        std::thread::sleep(after);
        if child.try_wait()?.is_none() {
            landed += 1;
        } else {
            finished += 1;
        }
        child.kill()?;
        child.wait()?;
        let listed = succeeds(voxloop(data).args(["voice", "list"]))?;
        let names: Vec<&str> = listed.lines().filter_map(|l| l.split('\t').next()).collect();
        check(names.contains(&"drill"), || format!("round {round}: the voice drill is gone"))?;
        for listed in &names {
            let file = data.join(format!("voices/{listed}.json"));
            let profile: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            check(
                profile["prompt_tokens"].as_array().is_some_and(|t| !t.is_empty())
                    && profile["speaker_embedding"].as_array().map(Vec::len) == Some(192),
                || format!("round {round}: a partial profile: {file:?}"),
            )?;
        }
        if names.contains(&name.as_str()) {
            present += 1;
        } else {
            let file = data.join(format!("voices/{name}.json"));
            check(!file.exists(), || format!("round {round}: {file:?} exists but is not listed"))?;
        }
        succeeds(voxloop(data).args(["voice", "register"]))?;
        let stats = succeeds(voxloop(data).args(["index", "stats", "--audit", "--json"]))?;
        let stats: Value = serde_json::from_str(&stats)?;
        check(stats["audit"]["orphan_vectors"].as_array().is_some_and(Vec::is_empty), || {
            format!("round {round}: {stats}")
        })?;
    }
    check(landed == kills, || format!("only {landed} kills landed"))?;
    Ok(format!(
        "voice add --force (an uninterrupted run {:.1} s): {kills} kills mid-run ({finished} more \
         rounds ended before their kill), a replacement and a new voice in turn; after each \
         round every listed voice whole, the one added listed ({present} rounds) or absent \
         without a file (the others), and the index audit clean after `voice register`",
        whole.as_secs_f64()
    ))
}

// ---- disk full ----

/// A tmpfs of a few MiB at a fresh directory, unmounted when dropped; `None` where this user
/// may not mount (the drill is then skipped).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: usize) -> BoxResult<Option<SmallDisk>> {
        let dir = tempfile::tempdir()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Ok(mounted.then_some(SmallDisk { dir }))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes the file `name` into `dir`, leaving about `left` bytes free on its disk.
fn fill(dir: &Path, left: u64, name: &str) -> BoxResult<PathBuf> {
    let filler = dir.join(name);
    let mut file = std::fs::File::create(&filler)?;
    let block = vec![0u8; 16 << 10];
    let mut written = 0u64;
    // tmpfs takes what it has; stop at the first refusal, then give back `left`.
    while std::io::Write::write_all(&mut file, &block).is_ok() {
        written += block.len() as u64;
    }
    drop(file);
    let keep = written.saturating_sub(left);
    std::fs::OpenOptions::new().write(true).open(&filler)?.set_len(keep)?;
    Ok(filler)
}

fn disk_full_drill(_: &mut Moments, _: usize) -> BoxResult<String> {
    // A little more than opening an index asks to have free; once the run has committed a
    // batch, something else fills the disk to below what a write asks for.
    let size = (voxloop_retrieval::index::OPEN_FREE_BYTES >> 20) + 3;
    let Some(disk) = SmallDisk::mount(size as usize)? else {
        return Ok("disk full: skipped (cannot mount a tmpfs here: needs root)".into());
    };
    let tmp = tempfile::tempdir()?;
    let lib = tmp.path().join("lib");
    let expected = support::tone_library(&lib, ITEMS);

    let data = disk.path().join("data");
    let mut child = index_add(&data, &lib).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let mut lines = Vec::new();
    let mut filler = None;
    for line in BufReader::new(child.stderr.take().ok_or("no stderr")?).lines() {
        let line = line?;
        if filler.is_none() && line.starts_with("indexed ") && !line.starts_with("indexed 0/") {
            let left = voxloop_retrieval::index::WRITE_FREE_BYTES / 2;
            filler = Some(fill(disk.path(), left, "index_filler")?);
        }
        lines.push(line);
    }
    let status = child.wait()?;
    let stderr = lines.join("\n");
    check(!status.success(), || format!("index add ended {status} on a full disk: {stderr}"))?;
    check(status.code().is_some(), || format!("index add was killed ({status}): {stderr}"))?;
    check(!stderr.contains("panicked"), || format!("index add panicked: {stderr}"))?;
    let last = lines.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
    check(last.to_lowercase().contains("space"), || format!("unclear error: {last}"))?;
    let indexed = lines
        .iter()
        .filter_map(|l| l.strip_prefix("indexed ")?.split('/').next()?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    check(indexed > 0 && indexed < ITEMS, || format!("stopped after {indexed} items: {stderr}"))?;
    let roomy = tmp.path().join("roomy");
    succeeds(Command::new("cp").arg("-r").arg(&data).arg(&roomy))?;
    std::fs::remove_dir_all(&data)?;
    if let Some(filler) = filler {
        std::fs::remove_file(filler)?;
    }
    if roomy.join("index/meta.json").exists() {
        let index = open_index(&roomy.join("index"), false)?;
        let audit = index.audit()?;
        check(audit.duplicate_docs.is_empty() && audit.missing_vectors.is_empty(), || {
            format!("after the full disk: {audit:?}")
        })?;
        check(audit.text_docs >= indexed, || format!("{indexed} acknowledged: {audit:?}"))?;
    }
    succeeds(&mut index_add(&roomy, &lib))?;
    assert_index_complete(&roomy.join("index"), &expected)?;

    // Sessions saved to a disk with 64 KiB left: creations and turns go on, saves that do not
    // fit are reported (`save_error`); after a restart with room again every session whose
    // save was acknowledged loads with its turns, and none is unreadable.
    let server_dir = tmp.path().join("serve");
    std::fs::create_dir_all(&server_dir)?;
    let sessions = disk.path().join("sessions");
    std::fs::create_dir_all(&sessions)?;
    let extra = format!("sessions_dir = {sessions:?}\n");
    let filler = fill(disk.path(), 64 << 10, "sessions_filler")?;
    let server = serve_in_with(&server_dir, &extra)?;
    let (mut saved, mut unsaved) = (HashMap::new(), Vec::new());
    for _ in 0..12 {
        let (status, body) = support::http_post(server.addr, "/v1/sessions", r#"{"mode": "text"}"#);
        check(status == 201, || format!("creating a session on a full disk: {status} {body}"))?;
        let created = support::json_body(&body);
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        if created["session"].get("save_error").is_some_and(|e| !e.is_null()) {
            unsaved.push(id);
            continue;
        }
        saved.insert(id.clone(), 0);
        let path = format!("/v1/sessions/{id}/turns");
        let events = support::Sse::post(server.addr, &path, r#"{"text": "Hello there."}"#)
            .map_err(|e| format!("a turn on a full disk: {e:?}"))?
            .collect();
        let done = events.iter().find(|e| e.event == "done").ok_or("no done event")?;
        let done = support::json_body(&done.data);
        if done.get("save_error").is_none_or(Value::is_null) {
            saved.insert(id, done["turns"].as_u64().unwrap_or(0) as usize);
        }
    }
    drop(server);
    std::fs::remove_file(&filler)?;
    let server = serve_in_with(&server_dir, &extra)?;
    let acked = Mutex::new(saved.clone());
    check_sessions(server.addr, &acked, 0)?;
    for id in &unsaved {
        let (status, body) =
            support::http_request(server.addr, "GET", &format!("/v1/sessions/{id}"), None);
        check(status == 200 || status == 404, || format!("unsaved session {id}: {status} {body}"))?;
    }
    check(!unsaved.is_empty() || saved.values().any(|&t| t == 0), || {
        "nothing failed to save: leave less room".into()
    })?;
    Ok(format!(
        "disk full ({size} MiB tmpfs): index add stopped with \"{last}\" after {indexed} \
         acknowledged items, its index consistent and completed elsewhere; of 12 sessions on a disk with 64 \
         KiB left {} saved whole, {} refused at creation with save_error, all readable after a \
         restart",
        saved.len(),
        unsaved.len()
    ))
}

fn run(o: &Options) -> BoxResult<()> {
    quiet_client_panics();
    let mut moments = Moments(o.seed);
    type Drill = fn(&mut Moments, usize) -> BoxResult<String>;
    let drills: [(&str, Drill); 4] = [
        ("index", index_drill),
        ("sessions", sessions_drill),
        ("voices", voices_drill),
        ("disk", disk_full_drill),
    ];
    println!("crash drills, seed {}, {} kills each", o.seed, o.kills);
    for (name, drill) in drills {
        if o.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let start = Instant::now();
        let summary = drill(&mut moments, o.kills).map_err(|e| format!("{name} drill: {e}"))?;
        println!("- {summary} ({:.0} s)", start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn main() -> ExitCode {
    support::main_of("crash drills", options, run)
}
