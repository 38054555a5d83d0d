//! The data model: an audio item (a timbre or a sound clip) and its attributes.
//!
//! An item's id is derived from the audio file's bytes ([`ItemId::from_content`]), so indexing
//! the same file twice — in a re-run, from another folder, under another name — addresses the
//! same item: the newer metadata replaces the older, and nothing is duplicated.
//!
//! Closed vocabularies ([`ItemKind`], [`Gender`], [`AgeBand`]) are enums: a filter on an unknown
//! value is a parse error that lists the accepted ones. Open attributes (language, style,
//! source, license) are normalised keywords ([`normalize_keyword`]): trimmed and lowercased, so
//! `"EN"` and `" en "` filter the same.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A stable item id: the first 8 bytes (big-endian) of the SHA-256 of the audio file's bytes.
///
/// Printed as 16 lowercase hex digits; the same number is the Qdrant point id. With 64 bits the
/// chance of any collision among a million items is about 3 · 10⁻⁸.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(pub u64);

impl ItemId {
    /// The id of an audio file with these bytes.
    pub fn from_content(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ItemId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidId(s.to_string()));
        }
        u64::from_str_radix(s, 16).map(Self).map_err(|_| Error::InvalidId(s.to_string()))
    }
}

impl Serialize for ItemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ItemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Declares a closed vocabulary: an enum with its lowercase names, `FromStr` whose error lists
/// them, `Display`, and serde as those names.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $field:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The lowercase name used in filters, payloads and manifests.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                let wanted = s.trim().to_lowercase();
                Self::ALL.iter().copied().find(|v| v.as_str() == wanted).ok_or_else(|| {
                    Error::UnknownFilterValue {
                        field: $field,
                        value: s.to_string(),
                        expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    }
                })
            }
        }
    };
}

vocabulary!(
    /// What an item is for: a voice to speak with, or a sound to play.
    ItemKind, "kind", {
        /// A voice sample (speech) usable as a timbre reference.
        Timbre = "timbre",
        /// A sound effect, ambience or music clip.
        Sound = "sound",
    }
);

vocabulary!(
    /// The perceived gender of a voice.
    Gender, "gender", {
        /// Female voice.
        Female = "female",
        /// Male voice.
        Male = "male",
        /// Neither, or mixed (a choir, a robot voice).
        Other = "other",
    }
);

vocabulary!(
    /// The perceived age of a voice.
    AgeBand, "age band", {
        /// Under about 13.
        Child = "child",
        /// About 13 to 19.
        Teen = "teen",
        /// About 20 to 35.
        Young = "young",
        /// About 36 to 59.
        Middle = "middle",
        /// About 60 and over.
        Senior = "senior",
    }
);

/// Trims and lowercases an open keyword attribute; `None` when nothing is left.
pub fn normalize_keyword(value: &str) -> Option<String> {
    let v = value.trim().to_lowercase();
    (!v.is_empty()).then_some(v)
}

/// Descriptive attributes, each optional. Keyword fields are stored normalised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    /// Perceived gender (voices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    /// Perceived age band (voices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<AgeBand>,
    /// Language of the speech, as a short code (`en`, `zh`, `en-us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Speaking style or emotion (`calm`, `cheerful`, `whisper`), or a sound's character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// Where the audio comes from (`freedesktop`, `espeak-ng`, `generated`, a corpus name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// License of the audio (an SPDX id where there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

impl Attributes {
    /// Normalises the keyword fields in place (see [`normalize_keyword`]).
    pub fn normalize(&mut self) {
        for field in [&mut self.language, &mut self.style, &mut self.source, &mut self.license] {
            *field = field.as_deref().and_then(normalize_keyword);
        }
    }
}

/// One indexed audio item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioItem {
    /// Content-derived id ([`ItemId::from_content`]).
    pub id: ItemId,
    /// Timbre (voice) or sound.
    pub kind: ItemKind,
    /// Where the audio file is (as given at ingestion, made absolute).
    pub path: PathBuf,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Sample rate of the file in Hz.
    pub sample_rate: u32,
    /// What it sounds like, in words; never empty.
    pub description: String,
    /// Short labels (`rain`, `metal`, `雨`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// What is said, for speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Gender, age band, language, style, source, license.
    #[serde(default)]
    pub attributes: Attributes,
    /// Other entries with the same audio (a sound theme's one file for two events): each
    /// keeps its path, description and tags, all searchable as this item's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Alias>,
    /// What the speech LLM heard in the clip (`voxloop index caption`): generated, not
    /// written by a person, and searchable beside the description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<Caption>,
}

/// A description the model generated from the audio, in English and Chinese.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    /// Upstream's captioning prompt's answer (English).
    pub en: String,
    /// The detailed description upstream's audio-analysis prompt asks for (Chinese).
    pub zh: String,
    /// The checkpoint that wrote it.
    pub model: String,
}

/// Another entry of an item's audio: its own path, description and tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    /// Where that entry's file is.
    pub path: PathBuf,
    /// What that entry says it is.
    pub description: String,
    /// Its labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl AudioItem {
    /// Normalises the item (trimmed text, deduplicated non-empty tags, normalised keywords)
    /// and checks it: a description, a finite non-negative duration, a positive sample rate.
    pub fn normalized(mut self) -> Result<Self> {
        let invalid = |message: &str| Error::InvalidItem {
            item: format!("{} ({})", self.id, self.path.display()),
            message: message.to_string(),
        };
        self.description = self.description.trim().to_string();
        if self.description.is_empty() {
            return Err(invalid("the description is empty"));
        }
        if !self.duration_s.is_finite() || self.duration_s < 0.0 {
            return Err(invalid("the duration must be a finite number of seconds ≥ 0"));
        }
        if self.sample_rate == 0 {
            return Err(invalid("the sample rate must be positive"));
        }
        let mut tags: Vec<String> = Vec::with_capacity(self.tags.len());
        for tag in &self.tags {
            let tag = tag.trim();
            if !tag.is_empty() && !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
        self.tags = tags;
        let primary = self.path.clone();
        let mut aliases: Vec<Alias> = Vec::with_capacity(self.aliases.len());
        for mut alias in std::mem::take(&mut self.aliases) {
            alias.description = alias.description.trim().to_string();
            alias.tags =
                alias.tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
            if alias.path != primary && !aliases.iter().any(|a| a.path == alias.path) {
                aliases.push(alias);
            }
        }
        self.aliases = aliases;
        self.transcript =
            self.transcript.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(String::from);
        self.attributes.normalize();
        Ok(self)
    }

    /// The text the `text` vector embeds: the description, then the tags. The transcript is
    /// left out on purpose: what a voice says is not what it sounds like (it is still searched
    /// by BM25).
    pub fn embedding_text(&self) -> String {
        // Aliases' descriptions and tags follow the item's own, so one vector finds each.
        let descriptions: Vec<&str> = std::iter::once(self.description.as_str())
            .chain(self.aliases.iter().map(|a| a.description.as_str()).filter(|d| !d.is_empty()))
            .collect();
        let mut tags: Vec<&str> = self.tags.iter().map(String::as_str).collect();
        for tag in self.aliases.iter().flat_map(|a| &a.tags) {
            if !tags.contains(&tag.as_str()) {
                tags.push(tag);
            }
        }
        let mut text = descriptions.join("; ");
        if let Some(caption) = &self.caption {
            for said in [&caption.en, &caption.zh].into_iter().filter(|t| !t.is_empty()) {
                text.push_str("; ");
                text.push_str(said);
            }
        }
        if tags.is_empty() {
            text
        } else {
            format!("{text}. {}", tags.join(", "))
        }
    }

    /// Takes `other`, an entry of the same audio from another path, as an alias (replacing an
    /// alias of that path); whether anything changed. An entry of the item's own path is not
    /// an alias: it replaces the item's metadata (see `AudioIndex::add`).
    pub fn merge(&mut self, other: &AudioItem) -> bool {
        let alias = Alias {
            path: other.path.clone(),
            description: other.description.clone(),
            tags: other.tags.clone(),
        };
        match self.aliases.iter_mut().find(|a| a.path == alias.path) {
            Some(existing) if *existing == alias => false,
            Some(existing) => {
                *existing = alias;
                true
            }
            None => {
                self.aliases.push(alias);
                true
            }
        }
    }

    /// Duration in whole milliseconds (what the indexes store for range filters).
    pub fn duration_ms(&self) -> u64 {
        // Finite and ≥ 0 after `normalized`; `as` saturates anything else.
        (self.duration_s * 1000.0).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> AudioItem {
        AudioItem {
            id: ItemId(0xfeed),
            kind: ItemKind::Sound,
            path: PathBuf::from("/x/rain.wav"),
            duration_s: 1.25,
            sample_rate: 16_000,
            description: "  rain on a roof ".into(),
            tags: vec![" rain".into(), "".into(), "rain ".into(), "雨".into()],
            transcript: Some("  ".into()),
            attributes: Attributes { language: Some(" EN ".into()), ..Default::default() },
            aliases: Vec::new(),
            caption: None,
        }
    }

    #[test]
    fn entries_of_the_same_audio_become_aliases_and_are_all_embedded() {
        let mut first = item().normalized().unwrap();
        let other = AudioItem {
            path: PathBuf::from("/x/network.wav"),
            description: "network connected".into(),
            tags: vec!["network".into(), "rain".into()],
            ..item()
        };
        assert!(first.merge(&other), "a new alias");
        assert!(!first.merge(&other), "the same alias again changes nothing");
        let edited = AudioItem { description: "network up".into(), ..other.clone() };
        assert!(first.merge(&edited), "that path's alias is replaced");
        assert_eq!(first.aliases.len(), 1);
        assert_eq!(first.embedding_text(), "rain on a roof; network up. rain, 雨, network");
        // An alias of the item's own path, or a repeated one, is dropped on normalising.
        first.aliases.push(Alias {
            path: first.path.clone(),
            description: "x".into(),
            tags: vec![],
        });
        first.aliases.push(first.aliases[0].clone());
        assert_eq!(first.normalized().unwrap().aliases.len(), 1);
    }

    #[test]
    fn id_is_the_sha256_prefix_and_round_trips_as_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea 414140de5dae2223 ...
        let id = ItemId::from_content(b"abc");
        assert_eq!(id.to_string(), "ba7816bf8f01cfea");
        assert_eq!("ba7816bf8f01cfea".parse::<ItemId>().unwrap(), id);
        assert!("ba7816bf8f01cfe".parse::<ItemId>().is_err());
        assert!("zz7816bf8f01cfea".parse::<ItemId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"ba7816bf8f01cfea\"");
        assert_eq!(serde_json::from_str::<ItemId>(&json).unwrap(), id);
    }

    #[test]
    fn vocabularies_parse_case_insensitively_and_list_the_values_on_error() {
        assert_eq!(" Timbre ".parse::<ItemKind>().unwrap(), ItemKind::Timbre);
        assert_eq!("senior".parse::<AgeBand>().unwrap(), AgeBand::Senior);
        let err = "voice".parse::<ItemKind>().unwrap_err().to_string();
        assert!(err.contains("kind") && err.contains("\"voice\"") && err.contains("timbre, sound"));
        let err = "f".parse::<Gender>().unwrap_err().to_string();
        assert!(err.contains("female, male, other"), "{err}");
    }

    #[test]
    fn normalization_trims_dedups_and_lowercases() {
        let item = item().normalized().unwrap();
        assert_eq!(item.description, "rain on a roof");
        assert_eq!(item.tags, vec!["rain".to_string(), "雨".to_string()]);
        assert_eq!(item.transcript, None);
        assert_eq!(item.attributes.language.as_deref(), Some("en"));
        assert_eq!(item.embedding_text(), "rain on a roof. rain, 雨");
        assert_eq!(item.duration_ms(), 1250);
    }

    #[test]
    fn invalid_items_are_rejected_naming_the_item() {
        let mut bad = item();
        bad.description = " ".into();
        let err = bad.normalized().unwrap_err().to_string();
        assert!(err.contains("000000000000feed") && err.contains("rain.wav"), "{err}");
        let mut bad = item();
        bad.duration_s = f64::NAN;
        assert!(bad.normalized().is_err());
        let mut bad = item();
        bad.sample_rate = 0;
        assert!(bad.normalized().is_err());
    }
}
