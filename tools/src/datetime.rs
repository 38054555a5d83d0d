//! `get_date_time`: the current date, weekday and time in the session's time zone.
//!
//! Step-Audio 2 calls it with no arguments (`{}`). The result is one line of text:
//!
//! - Chinese: `2025年8月28日 星期四 15:30`
//! - English: `Thursday, 28 August 2025, 15:30 (Asia/Shanghai)`
//!
//! The zone is the config's (`UTC` by default) until the session sets another through its
//! [`SessionTimeZone`] handle. The IANA database is compiled in, so it works on hosts
//! without `/usr/share/zoneinfo`.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use voxloop_core::session::{ENGLISH_MONTHS, ENGLISH_WEEKDAYS};
use voxloop_core::tool::{NoArgs, Tool};

use crate::config::{DateTimeConfig, Language};
use crate::{Error, Result};

const WEEKDAYS_ZH: [&str; 7] =
    ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"];

/// A session's time zone, shared between the session (which may change it, e.g. from the
/// client's settings) and its `get_date_time` tool. Cheap to clone.
#[derive(Clone)]
pub struct SessionTimeZone(Arc<RwLock<(String, TimeZone)>>);

impl std::fmt::Debug for SessionTimeZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SessionTimeZone").field(&self.name()).finish()
    }
}

impl SessionTimeZone {
    /// The zone named `name` (`UTC`, `Asia/Shanghai`, …). Fails on an unknown name.
    pub fn new(name: &str) -> Result<Self> {
        Ok(Self(Arc::new(RwLock::new(lookup(name)?))))
    }

    /// Switches to the zone named `name`; on an unknown name nothing changes.
    pub fn set(&self, name: &str) -> Result<()> {
        let zone = lookup(name)?;
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = zone;
        Ok(())
    }

    /// The zone's name.
    pub fn name(&self) -> String {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).0.clone()
    }

    fn get(&self) -> (String, TimeZone) {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

fn lookup(name: &str) -> Result<(String, TimeZone)> {
    let name = name.trim();
    let zone = TimeZone::get(name).map_err(|e| Error::Config {
        field: "tools.date_time.timezone".into(),
        reason: format!(
            "unknown time zone {name:?} (expected an IANA name like Asia/Shanghai): {e}"
        ),
    })?;
    Ok((name.to_owned(), zone))
}

/// The clock: the current instant.
type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The `get_date_time` tool.
#[derive(Clone)]
pub struct DateTimeTool {
    zone: SessionTimeZone,
    language: Language,
    clock: Clock,
}

impl DateTimeTool {
    /// A tool for `zone`, writing `language`, reading the system clock.
    pub fn new(zone: SessionTimeZone, language: Language) -> Self {
        Self { zone, language, clock: Arc::new(Timestamp::now) }
    }

    /// The tool a `[tools.date_time]` table describes. Fails on an unknown time zone.
    pub fn from_config(config: &DateTimeConfig) -> Result<Self> {
        Ok(Self::new(SessionTimeZone::new(&config.timezone)?, config.language))
    }

    /// Replaces the clock (tests, replays).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The handle through which the session changes the zone.
    pub fn time_zone(&self) -> SessionTimeZone {
        self.zone.clone()
    }

    /// The current date and time as the tool reports it.
    pub fn now_text(&self) -> String {
        let (name, zone) = self.zone.get();
        format_date_time(&(self.clock)().to_zoned_datetime(zone), &name, self.language)
    }
}

/// `when` written for the model in `language` (see the module docs); `zone_name` is shown
/// in English.
pub fn format_date_time(when: &ZonedDateTime, zone_name: &str, language: Language) -> String {
    let weekday = usize::from(when.weekday().to_monday_zero_offset().unsigned_abs());
    let (hour, minute) = (when.hour(), when.minute());
    match language {
        Language::Zh => format!(
            "{}年{}月{}日 {} {hour:02}:{minute:02}",
            when.year(),
            when.month(),
            when.day(),
            WEEKDAYS_ZH[weekday % 7],
        ),
        Language::En => format!(
            "{}, {} {} {}, {hour:02}:{minute:02} ({zone_name})",
            ENGLISH_WEEKDAYS[weekday % 7],
            when.day(),
            ENGLISH_MONTHS[(usize::from(when.month().unsigned_abs()) + 11) % 12],
            when.year(),
        ),
    }
}

#[async_trait::async_trait]
impl Tool for DateTimeTool {
    const NAME: &'static str = "get_date_time";
    type Args = NoArgs;
    type Output = String;
    type Error = Infallible;

    fn description(&self) -> String {
        "Returns the current date, weekday and time.".into()
    }

    async fn call(&self, _args: NoArgs) -> Result<String, Infallible> {
        Ok(self.now_text())
    }
}
