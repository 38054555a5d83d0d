//! `get_weather{location}`: current conditions and a short daily forecast.
//!
//! Step-Audio 2 sends only a place, usually lower-case pinyin or English (`"chengdu"`,
//! `"tokyo"`), even for "today, tomorrow and the day after" questions, so the report
//! always carries the next days. The provider sits behind [`WeatherProvider`];
//! [`OpenMeteo`] (no key needed) is the default.

mod open_meteo;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use voxloop_core::tool::{Tool, ToolType, Transient};

pub use open_meteo::OpenMeteo;

use crate::config::{Language, WeatherConfig, WeatherProviderKind};
use crate::{Error, Result};

/// A place the provider resolved the location to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// The place's name, in the requested language where available.
    pub name: String,
    /// First-level administrative area (province, state), if known.
    pub region: Option<String>,
    /// Country, if known.
    pub country: Option<String>,
    /// The place's IANA time zone, if known.
    pub timezone: Option<String>,
}

/// Conditions now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Current {
    /// Local time of the observation, `YYYY-MM-DDTHH:MM`.
    pub time: String,
    /// Air temperature at 2 m, °C.
    pub temperature_c: f64,
    /// Apparent ("feels like") temperature, °C.
    pub apparent_c: Option<f64>,
    /// Relative humidity, %.
    pub humidity_pct: Option<f64>,
    /// Wind speed at 10 m, km/h.
    pub wind_kmh: Option<f64>,
    /// WMO weather interpretation code.
    pub weather_code: Option<u8>,
}

/// One day of the forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// WMO weather interpretation code of the day.
    pub weather_code: Option<u8>,
    /// Highest temperature, °C.
    pub max_c: Option<f64>,
    /// Lowest temperature, °C.
    pub min_c: Option<f64>,
    /// Highest precipitation probability of the day, %.
    pub precipitation_pct: Option<f64>,
}

/// What a provider knows about the weather at a place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherReport {
    /// Where.
    pub place: Place,
    /// Now.
    pub current: Current,
    /// Today first, then the following days.
    pub days: Vec<Day>,
}

/// A weather backend.
#[async_trait::async_trait]
pub trait WeatherProvider: Send + Sync + 'static {
    /// The provider's name, for logs.
    fn name(&self) -> &'static str;

    /// The weather at `location` (a place name). [`Error::LocationNotFound`] if the
    /// provider knows no such place.
    async fn weather(&self, location: &str) -> Result<WeatherReport>;
}

/// The arguments of `get_weather`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct WeatherArgs {
    /// The city or place, e.g. "chengdu", "tokyo" or "上海".
    pub location: String,
}

/// The `get_weather` tool.
#[derive(Clone)]
pub struct WeatherTool {
    provider: Arc<dyn WeatherProvider>,
    language: Language,
}

impl WeatherTool {
    /// A tool over `provider`, writing `language`.
    pub fn new(provider: impl WeatherProvider, language: Language) -> Self {
        Self { provider: Arc::new(provider), language }
    }

    /// The tool a `[tools.weather]` table describes.
    pub fn from_config(config: &WeatherConfig) -> Result<Self> {
        let provider = match config.provider {
            WeatherProviderKind::OpenMeteo => OpenMeteo::from_config(config)?,
        };
        Ok(Self::new(provider, config.language))
    }

    /// The weather at `location` as text for the model.
    pub async fn report(&self, location: &str) -> Result<String> {
        let location = location.trim();
        if location.is_empty() {
            return Err(Error::InvalidArgument { name: "location", reason: "it is empty".into() });
        }
        let report = self.provider.weather(location).await?;
        Ok(render(&report, self.language))
    }
}

#[async_trait::async_trait]
impl Tool for WeatherTool {
    const NAME: &'static str = "get_weather";
    type Args = WeatherArgs;
    type Output = String;
    type Error = Error;

    fn description(&self) -> String {
        "Returns the current weather and the forecast for the next days at a place.".into()
    }

    fn tool_type(&self) -> ToolType {
        ToolType::Extension
    }

    fn error_message(&self, error: &Error) -> String {
        error.model_message()
    }

    fn transient(&self, error: &Error) -> Option<Transient> {
        error.transient()
    }

    async fn call(&self, args: WeatherArgs) -> Result<String> {
        self.report(&args.location).await
    }
}

/// The words for a WMO weather interpretation code, in English and Chinese.
pub fn describe_weather_code(code: u8) -> (&'static str, &'static str) {
    match code {
        0 => ("clear sky", "晴"),
        1 => ("mainly clear", "晴间多云"),
        2 => ("partly cloudy", "多云"),
        3 => ("overcast", "阴"),
        45 | 48 => ("fog", "雾"),
        51 | 53 | 55 => ("drizzle", "毛毛雨"),
        56 | 57 => ("freezing drizzle", "冻毛毛雨"),
        61 => ("light rain", "小雨"),
        63 => ("moderate rain", "中雨"),
        65 => ("heavy rain", "大雨"),
        66 | 67 => ("freezing rain", "冻雨"),
        71 => ("light snow", "小雪"),
        73 => ("moderate snow", "中雪"),
        75 => ("heavy snow", "大雪"),
        77 => ("snow grains", "米雪"),
        80 | 81 => ("rain showers", "阵雨"),
        82 => ("violent rain showers", "强阵雨"),
        85 | 86 => ("snow showers", "阵雪"),
        95 => ("thunderstorm", "雷阵雨"),
        96 | 99 => ("thunderstorm with hail", "雷阵雨伴有冰雹"),
        _ => ("unknown conditions", "天气不明"),
    }
}

/// The report as text for the model.
pub fn render(report: &WeatherReport, language: Language) -> String {
    match language {
        Language::En => render_en(report),
        Language::Zh => render_zh(report),
    }
}

fn render_en(report: &WeatherReport) -> String {
    let place = &report.place;
    let mut name = place.name.clone();
    for part in [&place.region, &place.country].into_iter().flatten() {
        if !part.is_empty() && *part != place.name {
            name.push_str(", ");
            name.push_str(part);
        }
    }
    let now = &report.current;
    let mut out = format!("Weather in {name} at {} local time: ", now.time.replace('T', " "));
    let mut parts = Vec::new();
    if let Some(code) = now.weather_code {
        parts.push(describe_weather_code(code).0.to_owned());
    }
    parts.push(format!("{:.0} °C", now.temperature_c));
    if let Some(feels) = now.apparent_c {
        parts.push(format!("feels like {feels:.0} °C"));
    }
    if let Some(humidity) = now.humidity_pct {
        parts.push(format!("humidity {humidity:.0}%"));
    }
    if let Some(wind) = now.wind_kmh {
        parts.push(format!("wind {wind:.0} km/h"));
    }
    out.push_str(&parts.join(", "));
    out.push('.');
    for (i, day) in report.days.iter().enumerate() {
        let label = match i {
            0 => "Today".to_owned(),
            1 => "Tomorrow".to_owned(),
            2 => "The day after tomorrow".to_owned(),
            _ => day.date.clone(),
        };
        out.push_str(&format!(" {label} ({}): ", day.date));
        let mut parts = Vec::new();
        if let Some(code) = day.weather_code {
            parts.push(describe_weather_code(code).0.to_owned());
        }
        if let (Some(min), Some(max)) = (day.min_c, day.max_c) {
            parts.push(format!("{min:.0} to {max:.0} °C"));
        }
        if let Some(rain) = day.precipitation_pct {
            parts.push(format!("{rain:.0}% chance of precipitation"));
        }
        out.push_str(&parts.join(", "));
        out.push('.');
    }
    out
}

fn render_zh(report: &WeatherReport) -> String {
    let place = &report.place;
    let mut region = Vec::new();
    for part in [&place.country, &place.region].into_iter().flatten() {
        if !part.is_empty() && *part != place.name {
            region.push(part.as_str());
        }
    }
    let name = if region.is_empty() {
        place.name.clone()
    } else {
        // 中国四川, but "China, Sichuan" when the geocoder had no Chinese names.
        let cjk = region.iter().all(|part| part.chars().any(crate::text::is_cjk));
        format!("{}（{}）", place.name, region.join(if cjk { "" } else { ", " }))
    };
    let now = &report.current;
    let mut out = format!("{name}当地时间{}，", zh_time(&now.time));
    let mut parts = Vec::new();
    if let Some(code) = now.weather_code {
        parts.push(describe_weather_code(code).1.to_owned());
    }
    parts.push(format!("气温{:.0}°C", now.temperature_c));
    if let Some(feels) = now.apparent_c {
        parts.push(format!("体感{feels:.0}°C"));
    }
    if let Some(humidity) = now.humidity_pct {
        parts.push(format!("湿度{humidity:.0}%"));
    }
    if let Some(wind) = now.wind_kmh {
        parts.push(format!("风速每小时{wind:.0}公里"));
    }
    out.push_str(&parts.join("，"));
    out.push('。');
    for (i, day) in report.days.iter().enumerate() {
        let label = match i {
            0 => "今天",
            1 => "明天",
            2 => "后天",
            _ => "",
        };
        out.push_str(&format!("{label}{}：", zh_date(&day.date)));
        let mut parts = Vec::new();
        if let Some(code) = day.weather_code {
            parts.push(describe_weather_code(code).1.to_owned());
        }
        if let (Some(min), Some(max)) = (day.min_c, day.max_c) {
            parts.push(format!("{min:.0}到{max:.0}°C"));
        }
        if let Some(rain) = day.precipitation_pct {
            parts.push(format!("降水概率{rain:.0}%"));
        }
        out.push_str(&parts.join("，"));
        out.push('。');
    }
    out
}

/// `2025-08-28` → `（8月28日）`; anything else in parentheses as is.
fn zh_date(date: &str) -> String {
    match date.parse::<jiff::civil::Date>() {
        Ok(d) => format!("（{}月{}日）", d.month(), d.day()),
        Err(_) => format!("（{date}）"),
    }
}

/// `2025-08-28T15:30` → `8月28日15:30`.
fn zh_time(time: &str) -> String {
    match time.parse::<jiff::civil::DateTime>() {
        Ok(t) => format!("{}月{}日{:02}:{:02}", t.month(), t.day(), t.hour(), t.minute()),
        Err(_) => time.to_owned(),
    }
}
