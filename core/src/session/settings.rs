//! [`SessionSettings`]: what a conversation is configured to do, and the system prompt it
//! writes (with today's date).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::generate::SamplingParams;
use crate::protocol::{GenerationMode, ToolChoice};

/// The voice instruction of the official examples' system prompt ("talk to the user with
/// the default female voice"): the model was trained with such a line.
pub const DEFAULT_VOICE_INSTRUCTION: &str = "请用默认女声与用户交流";

/// The default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful voice assistant. When a tool \
    declared to you would help answer the user, call it; otherwise answer directly. Keep \
    spoken answers short and natural.";

/// How the system prompt states today's date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateLine {
    /// No date line.
    Off,
    /// `今天是2025年8月28日，星期四`, the form of the official examples (the default).
    #[default]
    Chinese,
    /// `Today is Thursday, August 28, 2025.`
    English,
}

/// Sampling settings of a session (the serialisable part of [`SamplingParams`]; the agent
/// adds the stop tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingSettings {
    /// See [`SamplingParams::temperature`].
    pub temperature: f64,
    /// See [`SamplingParams::top_k`].
    pub top_k: usize,
    /// See [`SamplingParams::top_p`].
    pub top_p: f64,
    /// See [`SamplingParams::repetition_penalty`].
    pub repetition_penalty: f64,
    /// Base seed; each generation step draws with `seed + tokens in the cache`, so a
    /// conversation replays identically. `None`: seeded by the operating system.
    pub seed: Option<u64>,
    /// The most tokens one generation step may produce.
    pub max_new_tokens: usize,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        let p = SamplingParams::default();
        Self {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            repetition_penalty: p.repetition_penalty,
            seed: None,
            max_new_tokens: p.max_new_tokens,
        }
    }
}

impl SamplingSettings {
    /// The sampler parameters for a step that starts with `cached` tokens in the cache.
    pub fn params(&self, stop_tokens: Vec<i64>, cached: usize) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed.map(|seed| seed.wrapping_add(cached as u64)),
            max_new_tokens: self.max_new_tokens,
            stop_tokens,
        }
    }
}

/// What a session is configured to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// The system prompt's main text.
    pub system_prompt: String,
    /// Whether and how the system prompt states the date.
    pub date_line: DateLine,
    /// The time zone of the date line, as minutes east of UTC (480 for China).
    pub utc_offset_minutes: i32,
    /// The last line of the system prompt, naming the voice; `None` for none.
    pub voice_instruction: Option<String>,
    /// Spoken answers (`<tts_start>` generation prompt) or text answers.
    pub speech: bool,
    /// Sampling.
    pub sampling: SamplingSettings,
    /// Tool choice of a turn's first generation step.
    pub tool_choice: ToolChoice,
    /// Tool choice of the later steps (after tool results). `Required` or `Named` here
    /// would make every step call a tool until `max_steps`.
    pub follow_up_tool_choice: ToolChoice,
    /// The most generation steps of one turn that may call tools. When the last of them
    /// calls tools, one more step runs with [`ToolChoice::None`] to answer with the results.
    pub max_steps: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            date_line: DateLine::default(),
            utc_offset_minutes: 0,
            voice_instruction: Some(DEFAULT_VOICE_INSTRUCTION.to_owned()),
            speech: true,
            sampling: SamplingSettings::default(),
            tool_choice: ToolChoice::Auto,
            follow_up_tool_choice: ToolChoice::Auto,
            max_steps: 3,
        }
    }
}

impl SessionSettings {
    /// The system turn's text at `now`: the prompt, the date line and the voice
    /// instruction, one per line (blank parts left out), as the official examples lay it
    /// out.
    pub fn system_text(&self, now: SystemTime) -> String {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        let local = secs.saturating_add(i64::from(self.utc_offset_minutes) * 60);
        let date = CivilDate::from_unix_days(local.div_euclid(86_400));
        let date_line = match self.date_line {
            DateLine::Off => String::new(),
            DateLine::Chinese => date.chinese(),
            DateLine::English => date.english(),
        };
        let lines = [
            self.system_prompt.as_str(),
            &date_line,
            self.voice_instruction.as_deref().unwrap_or(""),
        ];
        lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
    }

    /// The generation prompt these settings ask for.
    pub fn mode(&self) -> GenerationMode {
        if self.speech {
            GenerationMode::Speech
        } else {
            GenerationMode::Text
        }
    }
}

/// A day of the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CivilDate {
    year: i64,
    month: u32,
    day: u32,
    /// 0 = Monday … 6 = Sunday.
    weekday: u32,
}

impl CivilDate {
    /// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    fn from_unix_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        let weekday = (days + 3).rem_euclid(7) as u32;
        Self { year, month, day, weekday }
    }

    fn chinese(&self) -> String {
        const DAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
        let weekday = DAYS.get(self.weekday as usize).copied().unwrap_or("");
        format!("今天是{}年{}月{}日，星期{weekday}", self.year, self.month, self.day)
    }

    fn english(&self) -> String {
        let weekday = ENGLISH_WEEKDAYS.get(self.weekday as usize).copied().unwrap_or("");
        let month = ENGLISH_MONTHS.get(self.month as usize - 1).copied().unwrap_or("");
        format!("Today is {weekday}, {month} {}, {}.", self.day, self.year)
    }
}

/// English weekday names, Monday first.
pub const ENGLISH_WEEKDAYS: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
/// English month names, January first.
pub const ENGLISH_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn civil_dates_match_known_days() {
        // 2025-08-28 (a Thursday) is day 20328 after the epoch.
        let d = CivilDate::from_unix_days(20_328);
        assert_eq!((d.year, d.month, d.day, d.weekday), (2025, 8, 28, 3));
        let d = CivilDate::from_unix_days(0);
        assert_eq!((d.year, d.month, d.day, d.weekday), (1970, 1, 1, 3));
        let d = CivilDate::from_unix_days(11_016); // 2000-02-29, a Tuesday
        assert_eq!((d.year, d.month, d.day, d.weekday), (2000, 2, 29, 1));
        let d = CivilDate::from_unix_days(-1);
        assert_eq!((d.year, d.month, d.day, d.weekday), (1969, 12, 31, 2));
    }

    #[test]
    fn system_text_has_the_upstream_layout() {
        let settings = SessionSettings {
            system_prompt: "Be brief.".into(),
            utc_offset_minutes: 480,
            ..SessionSettings::default()
        };
        // 2025-08-27 20:00 UTC is 2025-08-28 04:00 in UTC+8.
        let text = settings.system_text(at(20_327 * 86_400 + 20 * 3600));
        assert_eq!(
            text,
            format!("Be brief.\n今天是2025年8月28日，星期四\n{DEFAULT_VOICE_INSTRUCTION}")
        );
        let english = SessionSettings {
            system_prompt: "Be brief.".into(),
            date_line: DateLine::English,
            voice_instruction: None,
            ..SessionSettings::default()
        };
        assert_eq!(
            english.system_text(at(20_328 * 86_400)),
            "Be brief.\nToday is Thursday, August 28, 2025."
        );
        let bare = SessionSettings { date_line: DateLine::Off, voice_instruction: None, ..english };
        assert_eq!(bare.system_text(at(0)), "Be brief.");
    }
}
