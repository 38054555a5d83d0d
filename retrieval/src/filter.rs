//! Filters on item attributes, applied identically on the full-text and the vector side.
//!
//! Every filter field is a payload field with a payload index in the vector store and an
//! indexed keyword (or fast `u64`) field in Tantivy, under the same name ([`fields`]).

use serde::{Deserialize, Serialize};

use crate::item::{normalize_keyword, AgeBand, AudioItem, Gender, ItemKind};
use crate::{Error, Result};

/// Names of the filterable fields, shared by the Tantivy schema and the vector payload.
pub mod fields {
    /// `timbre` | `sound`.
    pub const KIND: &str = "kind";
    /// `female` | `male` | `other`.
    pub const GENDER: &str = "gender";
    /// `child` | `teen` | `young` | `middle` | `senior`.
    pub const AGE: &str = "age";
    /// Language code.
    pub const LANGUAGE: &str = "language";
    /// Style or emotion.
    pub const STYLE: &str = "style";
    /// Origin of the audio.
    pub const SOURCE: &str = "source";
    /// License.
    pub const LICENSE: &str = "license";
    /// Duration in milliseconds (integer).
    pub const DURATION_MS: &str = "duration_ms";

    /// The keyword fields, in a fixed order.
    pub const KEYWORDS: [&str; 7] = [KIND, GENDER, AGE, LANGUAGE, STYLE, SOURCE, LICENSE];
}

/// Conditions an item must meet; `None` fields do not constrain. All set fields must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemFilter {
    /// Only this kind.
    pub kind: Option<ItemKind>,
    /// Only this gender.
    pub gender: Option<Gender>,
    /// Only this age band.
    pub age: Option<AgeBand>,
    /// Only this language (normalised with [`normalize_keyword`]).
    pub language: Option<String>,
    /// Only this style.
    pub style: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this license.
    pub license: Option<String>,
    /// At least this long, in seconds.
    pub min_duration_s: Option<f64>,
    /// At most this long, in seconds.
    pub max_duration_s: Option<f64>,
}

impl ItemFilter {
    /// Whether nothing is constrained.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The keyword conditions as `(field, normalised value)` pairs, in [`fields::KEYWORDS`]
    /// order.
    pub fn keyword_conditions(&self) -> Vec<(&'static str, String)> {
        let open = |v: &Option<String>| v.as_deref().and_then(normalize_keyword);
        [
            (fields::KIND, self.kind.map(|v| v.as_str().to_string())),
            (fields::GENDER, self.gender.map(|v| v.as_str().to_string())),
            (fields::AGE, self.age.map(|v| v.as_str().to_string())),
            (fields::LANGUAGE, open(&self.language)),
            (fields::STYLE, open(&self.style)),
            (fields::SOURCE, open(&self.source)),
            (fields::LICENSE, open(&self.license)),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.map(|v| (field, v)))
        .collect()
    }

    /// The duration bounds in whole milliseconds, inclusive: `(min, max)`.
    pub fn duration_ms_range(&self) -> (Option<u64>, Option<u64>) {
        let ms = |s: f64| (s * 1000.0).round() as u64;
        (self.min_duration_s.map(ms), self.max_duration_s.map(ms))
    }

    /// Checks the bounds: finite, non-negative, min ≤ max.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in
            [("min duration", self.min_duration_s), ("max duration", self.max_duration_s)]
        {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(Error::UnknownFilterValue {
                        field: name,
                        value: v.to_string(),
                        expected: "a finite number of seconds ≥ 0".into(),
                    });
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_duration_s, self.max_duration_s) {
            if lo > hi {
                return Err(Error::UnknownFilterValue {
                    field: "duration range",
                    value: format!("{lo}..{hi}"),
                    expected: "min duration ≤ max duration".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether `item` passes (the reference semantics both stores implement).
    pub fn matches(&self, item: &AudioItem) -> bool {
        let a = &item.attributes;
        let value_of = |field: &str| -> Option<String> {
            match field {
                fields::KIND => Some(item.kind.as_str().to_string()),
                fields::GENDER => a.gender.map(|g| g.as_str().to_string()),
                fields::AGE => a.age.map(|g| g.as_str().to_string()),
                fields::LANGUAGE => a.language.clone(),
                fields::STYLE => a.style.clone(),
                fields::SOURCE => a.source.clone(),
                fields::LICENSE => a.license.clone(),
                _ => None,
            }
        };
        let keywords_ok =
            self.keyword_conditions().iter().all(|(f, v)| value_of(f).as_deref() == Some(v));
        let (lo, hi) = self.duration_ms_range();
        let d = item.duration_ms();
        keywords_ok && lo.is_none_or(|lo| d >= lo) && hi.is_none_or(|hi| d <= hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_conditions_are_normalised_and_ordered() {
        let f = ItemFilter {
            language: Some(" ZH ".into()),
            kind: Some(ItemKind::Timbre),
            style: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(
            f.keyword_conditions(),
            vec![("kind", "timbre".to_string()), ("language", "zh".to_string())]
        );
        assert!(!f.is_empty());
        assert!(ItemFilter::default().is_empty());
    }

    #[test]
    fn bad_duration_bounds_are_errors() {
        let f = ItemFilter { min_duration_s: Some(-1.0), ..Default::default() };
        assert!(f.validate().unwrap_err().to_string().contains("min duration"));
        let f = ItemFilter {
            min_duration_s: Some(3.0),
            max_duration_s: Some(1.0),
            ..Default::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("duration range"));
        let f = ItemFilter { max_duration_s: Some(f64::INFINITY), ..Default::default() };
        assert!(f.validate().is_err());
        let f = ItemFilter {
            min_duration_s: Some(0.5),
            max_duration_s: Some(1.0),
            ..Default::default()
        };
        f.validate().unwrap();
        assert_eq!(f.duration_ms_range(), (Some(500), Some(1000)));
    }
}
