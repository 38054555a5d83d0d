//! `voice_list`: the voices of the voice library, for clients that pick one by name (the MCP
//! server offers it; the agent picks voices by description through `timbre_rag` instead).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use voxloop_core::tool::{NoArgs, Tool, ToolType};
use voxloop_voices::{DefaultVoice, VoiceLibrary};

/// One voice as `voice_list` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VoiceEntry {
    /// The profile's name, as `[voice] name` and `voxloop voice add` use it.
    pub name: String,
    pub description: String,
    /// Free-form attributes such as `gender` or `language`.
    pub attributes: BTreeMap<String, String>,
    /// `female` or `male` for the library's default voices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
}

/// Lists the voice library: read again at each call when it lives in a directory (voices
/// added since, by `voxloop voice add` or MCP's `voice_add`, are listed), else as it was when
/// the tool was made.
#[derive(Debug, Clone)]
pub struct VoiceList {
    dir: Option<PathBuf>,
    voices: Arc<[VoiceEntry]>,
}

impl VoiceList {
    pub fn new(library: &VoiceLibrary) -> Self {
        Self { dir: library.dir().map(Path::to_path_buf), voices: entries(library).into() }
    }
}

/// The library's voices, sorted by name.
fn entries(library: &VoiceLibrary) -> Vec<VoiceEntry> {
    let female = library.default_name(DefaultVoice::Female);
    let male = library.default_name(DefaultVoice::Male);
    let mut voices: Vec<VoiceEntry> = library
        .profiles()
        .map(|p| VoiceEntry {
            name: p.name.clone(),
            description: p.description.clone(),
            attributes: p.attributes.clone(),
            default: match p.name.as_str() {
                n if n == female => Some("female"),
                n if n == male => Some("male"),
                _ => None,
            },
        })
        .collect();
    voices.sort_by(|a, b| a.name.cmp(&b.name));
    voices
}

#[async_trait::async_trait]
impl Tool for VoiceList {
    const NAME: &'static str = "voice_list";
    type Args = NoArgs;
    type Output = Vec<VoiceEntry>;
    type Error = Infallible;

    fn description(&self) -> String {
        "Lists the voices of the voice library: name, description, attributes, and which are \
         the default female and male voices."
            .into()
    }

    fn tool_type(&self) -> ToolType {
        ToolType::Datastore
    }

    async fn call(&self, _args: NoArgs) -> Result<Vec<VoiceEntry>, Infallible> {
        let Some(dir) = self.dir.clone() else { return Ok(self.voices.to_vec()) };
        // Reading the profiles is file work: off the executor. A library that cannot be read
        // now is listed as it was.
        let read =
            tokio::task::spawn_blocking(move || VoiceLibrary::open(&dir).map(|l| entries(&l)));
        match read.await {
            Ok(Ok(voices)) => Ok(voices),
            _ => Ok(self.voices.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use voxloop_voices::VoiceProfile;

    fn profile(name: &str, gender: &str) -> VoiceProfile {
        let mut p =
            VoiceProfile::new(name, vec![1, 2], vec![vec![0.0; 80]; 4], vec![0.5; 192]).unwrap();
        p.description = format!("{name} voice");
        p.attributes.insert("gender".into(), gender.into());
        p
    }

    #[tokio::test]
    async fn lists_every_voice_by_name_and_marks_the_defaults() {
        let mut library = VoiceLibrary::in_memory();
        library.add(profile("zoe", "female")).unwrap();
        library.add(profile("default_male", "male")).unwrap();
        let voices = VoiceList::new(&library).call(NoArgs {}).await.unwrap();
        let names: Vec<&str> = voices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["default_male", "zoe"]);
        assert_eq!(voices[0].default, Some("male"));
        assert_eq!(voices[1].default, None);
        assert_eq!(voices[1].attributes["gender"], "female");
    }
}
