//! The voice library: named [`VoiceProfile`]s kept on disk, two of them the defaults.
//!
//! A library is a directory of profile files, `<name>.json` (written by [`VoiceLibrary::add`])
//! or `<name>.safetensors` (imported as they are). It is the on-disk cache of profiles: a
//! profile is computed once (from a prompt wav, or imported precomputed) and read back on every
//! start. Writes go to a temporary file that is renamed over the target, so a crash mid-write
//! leaves the old profile or the new one, never half a file.
//!
//! Two names are special: the default female and male voices, `default_female` and
//! `default_male` unless [`VoiceLibrary::with_defaults`] says otherwise. They are what "默认女音色"
//! / "default male voice" swap back to (see [`crate::swap`]).
//!
//! [`VoiceLibrary::register`] puts every profile into the audio index as a `timbre` item whose
//! path is the profile file (and whose id derives from that path), so a description query ("a deep calm male voice") finds it and
//! [`VoiceLibrary::profile_for_path`] maps the hit back to the profile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use voxloop_retrieval::index::{AddReport, NewItem};
use voxloop_retrieval::{AgeBand, Attributes, AudioIndex, AudioItem, Gender, ItemId, ItemKind};

use crate::token2wav::SAMPLE_RATE;
use crate::{Error, Result, VoiceProfile};

/// Seconds of prompt speech per speech token (25 Hz).
const SECONDS_PER_TOKEN: f64 = 0.04;

/// Which of the two default voices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultVoice {
    /// The default female voice (`default_female`).
    Female,
    /// The default male voice (`default_male`).
    Male,
}

/// Named voice profiles on disk (see the module docs).
#[derive(Debug, Clone)]
pub struct VoiceLibrary {
    dir: Option<PathBuf>,
    profiles: BTreeMap<String, Arc<VoiceProfile>>,
    files: BTreeMap<String, PathBuf>,
    default_female: String,
    default_male: String,
}

impl VoiceLibrary {
    /// Opens the library in `dir`, creating the directory if needed, and reads every
    /// `*.json` / `*.safetensors` profile in it. A file that is not a valid profile is an error
    /// naming it (a library that silently dropped a voice would swap to the wrong one later).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::File { path: dir.to_path_buf(), source })?;
        let entries = std::fs::read_dir(dir)
            .map_err(|source| Error::File { path: dir.to_path_buf(), source })?;
        let mut paths = Vec::new();
        for entry in entries {
            let path =
                entry.map_err(|source| Error::File { path: dir.to_path_buf(), source })?.path();
            let ext = path.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("json" | "safetensors")) && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut library = Self::in_memory();
        library.dir = Some(dir.to_path_buf());
        for path in paths {
            let profile = VoiceProfile::from_file(&path)?;
            if let Some(other) = library.files.get(&profile.name) {
                return Err(Error::Profile {
                    name: profile.name.clone(),
                    message: format!(
                        "defined twice in the library: {} and {}",
                        other.display(),
                        path.display()
                    ),
                });
            }
            library.files.insert(profile.name.clone(), path);
            library.profiles.insert(profile.name.clone(), Arc::new(profile));
        }
        Ok(library)
    }

    /// An empty library that keeps its profiles in memory only ([`VoiceLibrary::add`] writes
    /// nothing).
    pub fn in_memory() -> Self {
        Self {
            dir: None,
            profiles: BTreeMap::new(),
            files: BTreeMap::new(),
            default_female: "default_female".into(),
            default_male: "default_male".into(),
        }
    }

    /// Names other profiles as the defaults (builder style).
    pub fn with_defaults(mut self, female: impl Into<String>, male: impl Into<String>) -> Self {
        self.default_female = female.into();
        self.default_male = male.into();
        self
    }

    /// The directory, for a library on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Adds or replaces a profile; a library on disk writes it to `<dir>/<name>.json` first.
    pub fn add(&mut self, profile: VoiceProfile) -> Result<Arc<VoiceProfile>> {
        check_name(&profile.name)?;
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{}.json", profile.name));
            if let Some(old) = self.files.get(&profile.name).filter(|old| **old != path) {
                return Err(Error::Profile {
                    name: profile.name.clone(),
                    message: format!(
                        "already imported from {}; remove that file to replace it",
                        old.display()
                    ),
                });
            }
            profile.to_json_file(&path)?;
            self.files.insert(profile.name.clone(), path);
        }
        let profile = Arc::new(profile);
        self.profiles.insert(profile.name.clone(), Arc::clone(&profile));
        Ok(profile)
    }

    /// Reads a precomputed profile file (`.json` or `.safetensors`) and adds it.
    pub fn import(&mut self, path: &Path) -> Result<Arc<VoiceProfile>> {
        self.add(VoiceProfile::from_file(path)?)
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<VoiceProfile>> {
        self.profiles.get(name)
    }

    /// The profile called `name`, ignoring ASCII case.
    pub fn get_ignore_case(&self, name: &str) -> Option<&Arc<VoiceProfile>> {
        self.get(name).or_else(|| {
            self.profiles.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, p)| p)
        })
    }

    /// All profiles, by name.
    pub fn profiles(&self) -> impl Iterator<Item = &Arc<VoiceProfile>> + '_ {
        self.profiles.values()
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether the library holds no profile.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The name of a default voice.
    pub fn default_name(&self, which: DefaultVoice) -> &str {
        match which {
            DefaultVoice::Female => &self.default_female,
            DefaultVoice::Male => &self.default_male,
        }
    }

    /// A default voice; an error naming the missing profile if the library lacks it.
    pub fn default_voice(&self, which: DefaultVoice) -> Result<&Arc<VoiceProfile>> {
        let name = self.default_name(which);
        self.get(name).ok_or_else(|| Error::VoiceNotFound {
            query: name.to_string(),
            message: format!("the voice library has no profile named {name:?}"),
        })
    }

    /// The profile file of `name`, for a library on disk.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// The profile an indexed item stands for: the one whose file is `path`, or whose source
    /// wav is `path`.
    pub fn profile_for_path(&self, path: &Path) -> Option<&Arc<VoiceProfile>> {
        let by_file = self.files.iter().find(|(_, file)| file.as_path() == path);
        if let Some((name, _)) = by_file {
            return self.profiles.get(name);
        }
        self.profiles.values().find(|p| p.source_wav.as_deref() == Some(path))
    }

    /// The index item describing `profile` (kind `timbre`, the profile file as its path).
    /// `None` for a library in memory: an item needs a file a client can find.
    pub fn index_item(&self, profile: &VoiceProfile) -> Result<Option<AudioItem>> {
        let Some(file) = self.files.get(&profile.name) else { return Ok(None) };
        let file = std::path::absolute(file)
            .map_err(|source| Error::File { path: file.clone(), source })?;
        let description = if profile.description.trim().is_empty() {
            format!("the voice {}", profile.name.replace('_', " "))
        } else {
            profile.description.clone()
        };
        let attr = |key: &str| profile.attributes.get(key).map(String::as_str);
        let mut tags = vec!["voice".to_string(), profile.name.replace('_', " ")];
        tags.extend(attr("tags").into_iter().flat_map(|t| t.split(',')).map(str::to_string));
        let attributes = Attributes {
            gender: attr("gender").and_then(|g| g.parse::<Gender>().ok()),
            age: attr("age").and_then(|a| a.parse::<AgeBand>().ok()),
            language: attr("language").map(str::to_string),
            style: attr("style").map(str::to_string),
            source: Some(attr("source").unwrap_or("voice-library").to_string()),
            license: attr("license").map(str::to_string),
        };
        let item = AudioItem {
            id: ItemId::from_content(format!("voice-library:{}", file.display()).as_bytes()),
            kind: ItemKind::Timbre,
            path: file,
            duration_s: profile.prompt_tokens.len() as f64 * SECONDS_PER_TOKEN,
            sample_rate: SAMPLE_RATE,
            description,
            tags,
            transcript: attr("transcript").map(str::to_string),
            attributes,
            aliases: Vec::new(),
            caption: None,
        };
        Ok(Some(item))
    }

    /// Adds every profile of a library on disk to `index` as a `timbre` item. Idempotent:
    /// an item's id comes from its profile file's path, so an unchanged profile stays
    /// unchanged and an edited one replaces its item.
    pub fn register(&self, index: &AudioIndex) -> Result<AddReport> {
        let mut items = Vec::new();
        for profile in self.profiles.values() {
            if let Some(item) = self.index_item(profile)? {
                items.push(NewItem { item, speaker: None });
            }
        }
        index.add(items).map_err(Error::Retrieval)
    }
}

/// Profile names become file names: keep them to letters, digits, `_`, `-` and `.` (not
/// leading). Public so that a front door can refuse a bad name before the costly work of
/// computing the profile.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Profile {
            name: name.to_string(),
            message: "a library voice name must be 1-128 letters, digits, '_', '-' or '.', \
                      not starting with '.'"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{MEL_BINS, SPEAKER_DIM};

    fn profile(name: &str, level: f32) -> VoiceProfile {
        VoiceProfile::new(
            name,
            vec![1, 2, 3],
            vec![vec![level; MEL_BINS]; 6],
            vec![level; SPEAKER_DIM],
        )
        .unwrap()
    }

    #[test]
    fn profiles_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut lib = VoiceLibrary::open(dir.path()).unwrap();
        assert!(lib.is_empty());
        lib.add(profile("default_female", 0.5).with_description("bright female voice")).unwrap();
        lib.add(profile("default_male", 0.25)).unwrap();
        let again = VoiceLibrary::open(dir.path()).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(
            again.default_voice(DefaultVoice::Female).unwrap().description,
            "bright female voice"
        );
        assert_eq!(again.default_voice(DefaultVoice::Male).unwrap().speaker_embedding[0], 0.25);
        // No temporary files are left behind.
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn bad_names_and_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut lib = VoiceLibrary::open(dir.path()).unwrap();
        let e = lib.add(profile("../escape", 0.5)).unwrap_err();
        assert!(e.to_string().contains("voice name"), "{e}");
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let e = VoiceLibrary::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("broken.json"), "{e}");
    }

    #[test]
    fn a_missing_default_is_named() {
        let lib = VoiceLibrary::in_memory().with_defaults("alto", "bass");
        let e = lib.default_voice(DefaultVoice::Male).unwrap_err();
        assert!(e.to_string().contains("\"bass\""), "{e}");
    }
}
