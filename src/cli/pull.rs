//! `voxloop model pull [REPO]`: a checkpoint from the Hugging Face hub (or a mirror at
//! `HF_ENDPOINT`) into `models/<name>`, in the hub's own HTTP layout:
//!
//! ```text
//! GET {endpoint}/api/models/{repo}/tree/{revision}?recursive=true   the files, sizes, LFS sha256
//! GET {endpoint}/{repo}/resolve/{revision}/{path}                   a file (Range: resumes)
//! ```
//!
//! Each file is written to `{file}.part` and renamed once whole, after its size and, for LFS
//! files, its sha256 matched the listing; a run that stopped resumes each `.part` where it
//! ended (`Range: bytes=N-`). A file whose bytes do not match is deleted and reported. The
//! listing is kept as `.voxloop-pull.json`, so `--offline` (or `HF_HUB_OFFLINE=1`) checks a
//! pulled directory without the network. `HF_TOKEN` is sent as a bearer token.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The default checkpoint.
pub const DEFAULT_REPO: &str = "stepfun-ai/Step-Audio-2-mini";
/// The listing a pull leaves in the checkpoint directory.
const MANIFEST: &str = ".voxloop-pull.json";

/// Arguments of `voxloop model pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The repository on the hub.
    #[arg(default_value = DEFAULT_REPO)]
    repo: String,
    /// Where to put it [default: models/<name of the repository>].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// A branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Do not use the network: check that a pulled directory is complete (also
    /// `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    offline: bool,
}

/// One file of the listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileEntry {
    path: String,
    size: u64,
    /// The sha256 of an LFS file (the hub's `lfs.oid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// The name part of the repository `repo` (`owner/name`), or why it is not one.
pub fn repo_name(repo: &str) -> anyhow::Result<&str> {
    let mut parts = repo.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(owner), Some(name), None)
            if !owner.is_empty() && !name.is_empty() && !repo.contains("..") =>
        {
            Ok(name)
        }
        _ => bail!("{repo:?} is not a repository name (owner/name)"),
    }
}

/// Where `repo` is pulled when no directory is given: `models/<name>`.
pub fn default_dir(repo: &str) -> anyhow::Result<PathBuf> {
    Ok(Path::new("models").join(repo_name(repo)?))
}

/// `[model] id` at `voxloop serve`'s start: the repository is pulled into `dir` (default
/// `models/<name>`) unless that directory is a complete pull or a checkpoint put there by
/// hand, and `dir` is set to it. When the pull fails (no network, `HF_HUB_OFFLINE=1`, a
/// wrong name) the service starts without the agent: `dir` is cleared and the reason logged
/// once.
pub fn pull_for_serve(model: &mut crate::config::ModelConfig) {
    let Some(repo) = model.id.clone() else { return };
    let dir = match model.dir.clone().map_or_else(|| default_dir(&repo), Ok) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(error = %e, "[model] id: no checkpoint to pull");
            model.dir = None;
            return;
        }
    };
    let by_hand = dir.join("config.json").is_file() && !dir.join(MANIFEST).is_file();
    if by_hand || is_complete(&dir) {
        model.dir = Some(dir);
        return;
    }
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1");
    tracing::info!(%repo, dir = %dir.display(), "pulling the checkpoint (first start)");
    match pull(&repo, &dir, "main", offline) {
        Ok(()) => model.dir = Some(dir),
        Err(e) => {
            tracing::warn!(
                %repo,
                dir = %dir.display(),
                error = %format!("{e:#}"),
                "cannot pull the checkpoint: the service starts without the agent (`voxloop \
                 model pull` retries; the session endpoints answer 503 meanwhile)"
            );
            model.dir = None;
        }
    }
}

/// Runs `voxloop model pull`.
pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => default_dir(&args.repo)?,
    };
    let offline = args.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1");
    pull(&args.repo, &dir, &args.revision, offline)
}

/// Whether `dir` holds a complete pull (its listing's files, with their sizes).
pub fn is_complete(dir: &Path) -> bool {
    check_offline(dir).is_ok()
}

/// Pulls `repo` at `revision` into `dir` (`offline`: only checks that `dir` is complete).
pub fn pull(repo: &str, dir: &Path, revision: &str, offline: bool) -> anyhow::Result<()> {
    repo_name(repo)?;
    if offline {
        let files = check_offline(dir)?;
        eprintln!("{}: complete ({} files, offline check)", dir.display(), files);
        return Ok(());
    }
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_owned());
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    let client = reqwest::blocking::Client::builder()
        .default_headers(headers)
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(15))
        .build()?;
    let files = list(&client, &endpoint, repo, revision)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for file in &files {
        let url = format!("{endpoint}/{repo}/resolve/{revision}/{}", file.path);
        fetch(&client, &url, dir, file)?;
    }
    let manifest = serde_json::to_vec_pretty(&files)?;
    voxloop_core::fs::write_atomically(&dir.join(MANIFEST), &manifest)?;
    eprintln!("{}: {} files from {endpoint}/{repo}", dir.display(), files.len());
    Ok(())
}

/// The files of the repository at `revision`.
fn list(
    client: &reqwest::blocking::Client,
    endpoint: &str,
    repo: &str,
    revision: &str,
) -> anyhow::Result<Vec<FileEntry>> {
    let url = format!("{endpoint}/api/models/{repo}/tree/{revision}?recursive=true");
    let response = client.get(&url).send().with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url} answered {status} (is the repository name right? gated repositories need HF_TOKEN)");
    }
    let listed: Vec<serde_json::Value> =
        response.json().with_context(|| format!("GET {url}: not a listing"))?;
    let mut files = Vec::new();
    for entry in listed.iter().filter(|e| e["type"] == "file") {
        let path = entry["path"].as_str().context("a listed file without a path")?;
        // A listing naming a file outside the directory would write it there.
        let relative = Path::new(path);
        if relative.is_absolute()
            || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!("the listing names an unsafe path {path:?}");
        }
        files.push(FileEntry {
            path: path.to_owned(),
            size: entry["lfs"]["size"].as_u64().or_else(|| entry["size"].as_u64()).unwrap_or(0),
            sha256: entry["lfs"]["oid"].as_str().map(str::to_owned),
        });
    }
    if files.is_empty() {
        bail!("GET {url}: the repository lists no files");
    }
    Ok(files)
}

/// Downloads one file into `dir` (resuming its `.part`), checks it and puts it in place.
fn fetch(
    client: &reqwest::blocking::Client,
    url: &str,
    dir: &Path,
    file: &FileEntry,
) -> anyhow::Result<()> {
    let target = dir.join(&file.path);
    if target.is_file() && verify(&target, file).is_ok() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let part = target.with_file_name(format!(
        "{}.part",
        target.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > file.size {
        std::fs::remove_file(&part)?;
        have = 0;
    }
    if have < file.size {
        let mut request = client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut response = request.send().with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {url} answered {status}");
        }
        if have > 0 && status != reqwest::StatusCode::PARTIAL_CONTENT {
            have = 0; // the server sent the whole file
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(have > 0)
            .truncate(have == 0)
            .open(&part)?;
        let bar = indicatif::ProgressBar::new(file.size).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(file.path.clone());
        bar.set_position(have);
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = response.read(&mut buffer).with_context(|| {
                format!("reading {url} (run the pull again to resume at byte {})", bar.position())
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buffer[..n])?;
            bar.inc(n as u64);
        }
        out.sync_all()?;
        bar.finish_and_clear();
    }
    if let Err(e) = verify(&part, file) {
        std::fs::remove_file(&part).ok();
        bail!("{}: {e}; the partial file was deleted, run the pull again", file.path);
    }
    std::fs::rename(&part, &target)?;
    Ok(())
}

/// Whether `path` has the listed size and, for an LFS file, sha256.
fn verify(path: &Path, file: &FileEntry) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)?.len();
    if size != file.size {
        bail!("{size} bytes where the hub lists {}", file.size);
    }
    if let Some(want) = &file.sha256 {
        let mut hasher = Sha256::new();
        let mut reader = std::fs::File::open(path)?;
        std::io::copy(&mut reader, &mut hasher)?;
        let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if &got != want {
            bail!("corrupted: sha256 {got} where the hub lists {want}");
        }
    }
    Ok(())
}

/// Checks a pulled directory against its kept listing; the number of files.
fn check_offline(dir: &Path) -> anyhow::Result<usize> {
    let manifest = dir.join(MANIFEST);
    let text = std::fs::read(&manifest).map_err(|_| {
        anyhow::anyhow!(
            "offline: {} was never pulled (no {MANIFEST}); pull it with the network first",
            dir.display()
        )
    })?;
    let files: Vec<FileEntry> = serde_json::from_slice(&text)?;
    for file in &files {
        let path = dir.join(&file.path);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        if size != Some(file.size) {
            bail!("offline: {} is missing or incomplete; pull it with the network", path.display());
        }
    }
    Ok(files.len())
}
