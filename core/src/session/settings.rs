//! [`SessionSettings`]: what a conversation is configured to do, and the system prompt it
//! writes (with today's date).

use std::time::SystemTime;

use jiff::civil::Date;
use jiff::tz::Offset;
use jiff::Timestamp;
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
    /// The sampler parameters for a step whose first generated token lands at context
    /// position `position`: the seed is offset by it, so that each step of a conversation
    /// draws differently, while the same history gives the same draws however much of it
    /// the cache held already.
    pub fn params(&self, stop_tokens: Vec<i64>, position: usize) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed.map(|seed| seed.wrapping_add(position as u64)),
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
    /// Think before answering (a reasoning checkpoint such as Step-Audio-2-mini-Think): the
    /// step that answers a human turn first generates a `<think>` … `</think>` phase, which is
    /// streamed as [`AgentEvent::Reasoning`](crate::agent::AgentEvent::Reasoning), never spoken,
    /// and dropped from the history once the answer is in (stepfun-ai/Step-Audio2
    /// `examples-think.py`). Checkpoints not trained for it only ramble.
    pub think: bool,
    /// The most tokens one think phase may take; at the budget the phase is closed with
    /// `</think>` and the answer begins.
    pub reasoning_max_tokens: usize,
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
            think: false,
            // upstream's examples-think.py gives the think pass max_new_tokens=2048.
            reasoning_max_tokens: 2048,
        }
    }
}

impl SessionSettings {
    /// The system turn's text at `now`: the prompt, the date line and the voice
    /// instruction, one per line (blank parts left out), as the official examples lay it
    /// out.
    pub fn system_text(&self, now: SystemTime) -> String {
        let date = local_date(now, self.utc_offset_minutes);
        let date_line = match self.date_line {
            DateLine::Off => String::new(),
            DateLine::Chinese => chinese_date_line(date),
            DateLine::English => english_date_line(date),
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

/// The calendar day at `now` in the zone `utc_offset_minutes` east of UTC (out-of-range
/// offsets count as UTC, instants jiff cannot represent as the epoch).
fn local_date(now: SystemTime, utc_offset_minutes: i32) -> Date {
    let offset = Offset::from_seconds(utc_offset_minutes.saturating_mul(60)).unwrap_or(Offset::UTC);
    let instant = Timestamp::try_from(now).unwrap_or(Timestamp::UNIX_EPOCH);
    offset.to_datetime(instant).date()
}

/// `今天是2025年8月28日，星期四`.
fn chinese_date_line(date: Date) -> String {
    const DAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
    let weekday = DAYS[usize::from(date.weekday().to_monday_zero_offset().unsigned_abs()) % 7];
    format!("今天是{}年{}月{}日，星期{weekday}", date.year(), date.month(), date.day())
}

/// `Today is Thursday, August 28, 2025.`
fn english_date_line(date: Date) -> String {
    let weekday = usize::from(date.weekday().to_monday_zero_offset().unsigned_abs());
    let month = usize::from(date.month().unsigned_abs());
    format!(
        "Today is {}, {} {}, {}.",
        ENGLISH_WEEKDAYS[weekday % 7],
        ENGLISH_MONTHS[(month + 11) % 12],
        date.day(),
        date.year()
    )
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
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn local_dates_match_known_days() {
        let date = |secs: i64, offset: i32| {
            let now = if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            };
            let d = local_date(now, offset);
            (d.year(), d.month(), d.day(), d.weekday().to_monday_zero_offset())
        };
        // 2025-08-28 (a Thursday) is day 20328 after the epoch.
        assert_eq!(date(20_328 * 86_400, 0), (2025, 8, 28, 3));
        assert_eq!(date(0, 0), (1970, 1, 1, 3));
        assert_eq!(date(11_016 * 86_400, 0), (2000, 2, 29, 1)); // a Tuesday
        assert_eq!(date(-1, 0), (1969, 12, 31, 2));
        // 23:30 UTC is the next day in UTC+8, the same day in UTC-5.
        assert_eq!(date(20_327 * 86_400 + 23 * 3600 + 1800, 480), (2025, 8, 28, 3));
        assert_eq!(date(20_327 * 86_400 + 23 * 3600 + 1800, -300), (2025, 8, 27, 2));
        // An offset beyond ±26 h counts as UTC.
        assert_eq!(date(20_328 * 86_400, i32::MAX), (2025, 8, 28, 3));
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
