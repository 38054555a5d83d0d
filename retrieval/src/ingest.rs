//! Ingestion: a folder or a JSONL manifest into an [`AudioIndex`].
//!
//! **Sources.**
//! - A **folder** is walked recursively (sorted, symlinks not followed) for `.wav`, `.flac`,
//!   `.mp3`, `.ogg` and `.oga` files. A `metadata.jsonl` in any folder is its **sidecar**: each
//!   line a [`ManifestEntry`] whose `path` is relative to that folder.
//! - A **manifest** (`*.jsonl`) lists the files itself, paths relative to the manifest.
//!
//! **Descriptions.** An entry without a description gets one from its file name and tags
//! ([`describe_from_name`]): `dog_bark-02.wav` with tags `animal` → "dog bark (animal)".
//!
//! **Bad input never aborts the batch**: an unreadable or undecodable file, a manifest line that
//! does not parse or names a missing file, or an item that fails validation is reported as a
//! [`BadFile`] (path and reason) and skipped. Only index errors (disk, lock) stop ingestion.
//!
//! **Idempotent.** Ids are content hashes; files already indexed with the same metadata are
//! skipped without being embedded ([`AudioIndex::add`]), so an interrupted run is completed by
//! running it again.
//!
//! Each file is read once: the bytes give the id, and core's decoder
//! ([`voxloop_core::audio::decode_audio`]) gives the duration and sample rate (and, for voices,
//! the samples for the speaker fingerprint).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voxloop_core::audio::{decode_audio, AudioInput, AudioLimits};

use crate::index::{AddReport, AudioIndex, NewItem};
use crate::item::{AgeBand, Attributes, AudioItem, Gender, ItemId, ItemKind};
use crate::{Error, Result};

/// File extensions ingested from folders (lowercase).
pub const AUDIO_EXTENSIONS: [&str; 5] = ["wav", "flac", "mp3", "ogg", "oga"];
/// The sidecar file name inside a folder.
pub const SIDECAR: &str = "metadata.jsonl";

/// One line of a manifest or sidecar. Only `path` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// The audio file, relative to the manifest's folder (or absolute).
    pub path: PathBuf,
    /// `timbre` or `sound`; default from [`IngestOptions::default_kind`].
    #[serde(default)]
    pub kind: Option<ItemKind>,
    /// What it sounds like; default from the file name and tags.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What is said.
    #[serde(default)]
    pub transcript: Option<String>,
    /// Perceived gender.
    #[serde(default)]
    pub gender: Option<Gender>,
    /// Perceived age band.
    #[serde(default)]
    pub age: Option<AgeBand>,
    /// Language code.
    #[serde(default)]
    pub language: Option<String>,
    /// Style or emotion.
    #[serde(default)]
    pub style: Option<String>,
    /// Origin.
    #[serde(default)]
    pub source: Option<String>,
    /// License.
    #[serde(default)]
    pub license: Option<String>,
}

/// What to ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A folder (walked recursively, with sidecars).
    Dir(PathBuf),
    /// A JSONL manifest.
    Manifest(PathBuf),
}

impl Source {
    /// A folder, or a manifest if `path` is a file.
    pub fn from_path(path: &Path) -> Self {
        if path.is_dir() {
            Self::Dir(path.to_path_buf())
        } else {
            Self::Manifest(path.to_path_buf())
        }
    }
}

/// Ingestion settings.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Items per consistent write (default 64).
    pub batch_size: usize,
    /// Kind of entries that do not say (default `sound`).
    pub default_kind: ItemKind,
    /// Decoding limits per file.
    pub limits: AudioLimits,
    /// Compute speaker fingerprints for timbres (default true).
    pub speaker_vectors: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            default_kind: ItemKind::Sound,
            limits: AudioLimits::default(),
            speaker_vectors: true,
        }
    }
}

/// A file (or manifest line) that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadFile {
    /// The file, or `manifest.jsonl:LINE` for a line that does not parse.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Progress after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Entries processed so far (indexed, unchanged or failed).
    pub done: usize,
    /// Entries in total.
    pub total: usize,
    /// Of which failed.
    pub failed: usize,
}

/// What an ingestion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Entries found.
    pub total: usize,
    /// New, updated and unchanged items.
    #[serde(flatten)]
    pub items: AddReport,
    /// Skipped entries.
    pub failed: Vec<BadFile>,
}

/// A description from a file name and tags: the name's words (split on `_`, `-`, `.`, spaces
/// and camel case is left alone), numbers dropped, then the tags in parentheses.
pub fn describe_from_name(path: &Path, tags: &[String]) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let words: Vec<&str> = stem
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let mut text = if words.is_empty() { format!("audio clip {stem}") } else { words.join(" ") };
    let tags: Vec<&str> = tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect();
    if !tags.is_empty() {
        text = format!("{text} ({})", tags.join(", "));
    }
    text.trim().to_string()
}

/// A resolved entry: the file and its metadata.
#[derive(Debug, Clone)]
struct Planned {
    file: PathBuf,
    entry: ManifestEntry,
}

fn read_jsonl(path: &Path, base: &Path, bad: &mut Vec<BadFile>) -> Result<Vec<Planned>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match serde_json::from_str::<ManifestEntry>(line) {
            Ok(entry) => {
                let file = if entry.path.is_absolute() {
                    entry.path.clone()
                } else {
                    base.join(&entry.path)
                };
                out.push(Planned { file, entry });
            }
            Err(e) => bad.push(BadFile {
                path: format!("{}:{}", path.display(), i + 1),
                reason: e.to_string(),
            }),
        }
    }
    Ok(out)
}

fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_lowercase().as_str()))
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, sidecars: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(&path, files, sidecars)?;
        } else if path.file_name().is_some_and(|n| n == SIDECAR) {
            sidecars.push(path);
        } else if is_audio(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// The entries of a source, and the lines/files that could not be planned.
fn plan(source: &Source) -> Result<(Vec<Planned>, Vec<BadFile>)> {
    let mut bad = Vec::new();
    match source {
        Source::Manifest(path) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok((read_jsonl(path, &base, &mut bad)?, bad))
        }
        Source::Dir(dir) => {
            let (mut files, mut sidecars) = (Vec::new(), Vec::new());
            walk(dir, &mut files, &mut sidecars)?;
            let mut meta: HashMap<PathBuf, ManifestEntry> = HashMap::new();
            for sidecar in &sidecars {
                let base = sidecar.parent().map(Path::to_path_buf).unwrap_or_default();
                for p in read_jsonl(sidecar, &base, &mut bad)? {
                    meta.insert(p.file, p.entry);
                }
            }
            let planned = files
                .into_iter()
                .map(|file| {
                    let entry = meta.remove(&file).unwrap_or_else(|| ManifestEntry {
                        path: file.clone(),
                        ..Default::default()
                    });
                    Planned { file, entry }
                })
                .collect();
            for (file, _) in meta {
                bad.push(BadFile {
                    path: file.display().to_string(),
                    reason: format!("listed in a {SIDECAR} but not found as an audio file"),
                });
            }
            bad.sort_by(|a, b| a.path.cmp(&b.path));
            Ok((planned, bad))
        }
    }
}

/// Reads, decodes and describes one entry.
fn prepare(p: &Planned, options: &IngestOptions) -> std::result::Result<NewItem, String> {
    let bytes = std::fs::read(&p.file).map_err(|e| format!("cannot read: {e}"))?;
    let id = ItemId::from_content(&bytes);
    let name = p.file.display().to_string();
    let audio = decode_audio(AudioInput::Bytes { name, data: bytes }, &options.limits)
        .map_err(|e| e.to_string())?;
    let e = &p.entry;
    let kind = e.kind.unwrap_or(options.default_kind);
    let description = match e.description.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => describe_from_name(&p.file, &e.tags),
    };
    let path = std::path::absolute(&p.file).unwrap_or_else(|_| p.file.clone());
    let item = AudioItem {
        id,
        kind,
        path,
        duration_s: audio.seconds(),
        sample_rate: audio.sample_rate,
        description,
        tags: e.tags.clone(),
        transcript: e.transcript.clone(),
        attributes: Attributes {
            gender: e.gender,
            age: e.age,
            language: e.language.clone(),
            style: e.style.clone(),
            source: e.source.clone(),
            license: e.license.clone(),
        },
        aliases: Vec::new(),
        caption: None,
    }
    .normalized()
    .map_err(|e| e.to_string())?;
    let speaker = if options.speaker_vectors && kind == ItemKind::Timbre {
        // A voice too short or silent for a fingerprint is still indexed, by text.
        crate::speaker::fingerprint(
            &audio.samples,
            audio.sample_rate,
            &item.path.display().to_string(),
        )
        .ok()
    } else {
        None
    };
    Ok(NewItem { item, speaker })
}

/// Ingests `source` into `index` in batches of `options.batch_size`, calling `progress` after
/// each. See the module docs.
pub fn ingest(
    index: &AudioIndex,
    source: &Source,
    options: &IngestOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestReport> {
    let (planned, mut failed) = plan(source)?;
    let total = planned.len() + failed.len();
    let mut report = IngestReport { total, ..Default::default() };
    let mut done = failed.len();
    progress(Progress { done, total, failed: failed.len() });
    for chunk in planned.chunks(options.batch_size.max(1)) {
        let mut batch = Vec::with_capacity(chunk.len());
        for p in chunk {
            match prepare(p, options) {
                Ok(item) => batch.push(item),
                Err(reason) => failed.push(BadFile { path: p.file.display().to_string(), reason }),
            }
        }
        let added = index.add(batch)?;
        report.items.added += added.added;
        report.items.updated += added.updated;
        report.items.unchanged += added.unchanged;
        report.items.merged += added.merged;
        report.items.merges.extend(added.merges);
        done += chunk.len();
        progress(Progress { done, total, failed: failed.len() });
    }
    report.failed = failed;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_come_from_names_and_tags() {
        let tags = vec!["animal".to_string(), " ".to_string()];
        assert_eq!(describe_from_name(Path::new("/a/dog_bark-02.wav"), &tags), "dog bark (animal)");
        assert_eq!(describe_from_name(Path::new("0001.wav"), &[]), "audio clip 0001");
        assert_eq!(describe_from_name(Path::new("门铃 响.flac"), &[]), "门铃 响");
    }

    #[test]
    fn audio_files_are_recognised_by_extension() {
        assert!(is_audio(Path::new("x/Y.WAV")));
        assert!(is_audio(Path::new("x.oga")));
        assert!(!is_audio(Path::new("x.txt")));
        assert!(!is_audio(Path::new("wav")));
    }
}
