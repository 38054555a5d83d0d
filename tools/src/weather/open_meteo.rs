//! [`OpenMeteo`]: Open-Meteo's geocoding API, then its forecast API.
//!
//! 1. `GET {geocoding}/v1/search?name=…&count=1&language=en&format=json` →
//!    `{"results": [{"name", "latitude", "longitude", "timezone", "country", "admin1", …}],
//!    "generationtime_ms"}`; `results` is absent when nothing matches.
//! 2. `GET {forecast}/v1/forecast?latitude=…&longitude=…&current=…&daily=…&timezone=auto
//!    &forecast_days=3` → `{"current": {"time", "temperature_2m", …}, "daily": {"time":
//!    […], "weather_code": […], …}, "current_units", "daily_units", …}`.
//!
//! Errors come as HTTP 400 with `{"error": true, "reason": "…"}`.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{Current, Day, Place, WeatherProvider, WeatherReport};
use crate::config::{Language, WeatherConfig};
use crate::{http, Error, Result};

const GEOCODING: &str = "Open-Meteo geocoding";
const FORECAST: &str = "Open-Meteo forecast";

const CURRENT_VARIABLES: &str =
    "temperature_2m,relative_humidity_2m,apparent_temperature,weather_code,wind_speed_10m";
const DAILY_VARIABLES: &str =
    "weather_code,temperature_2m_max,temperature_2m_min,precipitation_probability_max";

/// The Open-Meteo provider.
#[derive(Clone)]
pub struct OpenMeteo {
    client: reqwest::Client,
    geocoding: Url,
    forecast: Url,
    language: Language,
    forecast_days: u8,
    api_key: Option<String>,
    timeout: Duration,
    max_bytes: usize,
}

impl std::fmt::Debug for OpenMeteo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenMeteo")
            .field("geocoding", &self.geocoding.as_str())
            .field("forecast", &self.forecast.as_str())
            .finish_non_exhaustive()
    }
}

impl OpenMeteo {
    /// The provider a `[tools.weather]` table describes.
    pub fn from_config(config: &WeatherConfig) -> Result<Self> {
        let om = &config.open_meteo;
        let timeout = Duration::from_millis(config.timeout_ms);
        let api_key = match &om.api_key_env {
            Some(var) => Some(http::api_key_from_env("tools.weather.open_meteo.api_key_env", var)?),
            None => None,
        };
        Ok(Self {
            client: http::api_client(timeout)?,
            geocoding: http::endpoint(
                "tools.weather.open_meteo.geocoding_url",
                &om.geocoding_url,
                "v1/search",
            )?,
            forecast: http::endpoint(
                "tools.weather.open_meteo.forecast_url",
                &om.forecast_url,
                "v1/forecast",
            )?,
            language: config.language,
            forecast_days: om.forecast_days.clamp(1, 16),
            api_key,
            timeout,
            max_bytes: config.max_response_bytes,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        service: &'static str,
        url: Url,
    ) -> Result<T> {
        let shown = http::redact(&url);
        let request = self.client.get(url).header(reqwest::header::ACCEPT, "application/json");
        let response = http::send(service, &shown, self.timeout, request).await?;
        http::json_body(service, &shown, self.timeout, response, self.max_bytes).await
    }

    fn with_key(&self, url: &mut Url) {
        if let Some(key) = &self.api_key {
            url.query_pairs_mut().append_pair("apikey", key);
        }
    }

    async fn geocode(&self, location: &str) -> Result<GeoPlace> {
        let mut url = self.geocoding.clone();
        url.query_pairs_mut()
            .append_pair("name", location)
            .append_pair("count", "1")
            .append_pair("language", language_code(self.language))
            .append_pair("format", "json");
        self.with_key(&mut url);
        let body: GeoResponse = self.get(GEOCODING, url).await?;
        body.results
            .and_then(|results| results.into_iter().next())
            .ok_or_else(|| Error::LocationNotFound(location.to_owned()))
    }
}

fn language_code(language: Language) -> &'static str {
    match language {
        Language::En => "en",
        Language::Zh => "zh",
    }
}

#[derive(Deserialize)]
struct GeoResponse {
    #[serde(default)]
    results: Option<Vec<GeoPlace>>,
}

#[derive(Deserialize)]
struct GeoPlace {
    name: String,
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    admin1: Option<String>,
}

#[derive(Deserialize)]
struct ForecastResponse {
    current: CurrentBlock,
    #[serde(default)]
    daily: Option<DailyBlock>,
}

#[derive(Deserialize)]
struct CurrentBlock {
    time: String,
    temperature_2m: f64,
    #[serde(default)]
    relative_humidity_2m: Option<f64>,
    #[serde(default)]
    apparent_temperature: Option<f64>,
    #[serde(default)]
    weather_code: Option<f64>,
    #[serde(default)]
    wind_speed_10m: Option<f64>,
}

#[derive(Deserialize)]
struct DailyBlock {
    time: Vec<String>,
    #[serde(default)]
    weather_code: Vec<Option<f64>>,
    #[serde(default)]
    temperature_2m_max: Vec<Option<f64>>,
    #[serde(default)]
    temperature_2m_min: Vec<Option<f64>>,
    #[serde(default)]
    precipitation_probability_max: Vec<Option<f64>>,
}

/// A WMO code sent as a JSON number.
fn wmo(code: Option<f64>) -> Option<u8> {
    code.filter(|c| (0.0..=99.0).contains(c)).map(|c| c as u8)
}

#[async_trait::async_trait]
impl WeatherProvider for OpenMeteo {
    fn name(&self) -> &'static str {
        "Open-Meteo"
    }

    async fn weather(&self, location: &str) -> Result<WeatherReport> {
        let place = self.geocode(location).await?;
        let mut url = self.forecast.clone();
        url.query_pairs_mut()
            .append_pair("latitude", &place.latitude.to_string())
            .append_pair("longitude", &place.longitude.to_string())
            .append_pair("current", CURRENT_VARIABLES)
            .append_pair("daily", DAILY_VARIABLES)
            .append_pair("timezone", "auto")
            .append_pair("forecast_days", &self.forecast_days.to_string());
        self.with_key(&mut url);
        let forecast: ForecastResponse = self.get(FORECAST, url).await?;
        let now = forecast.current;
        let days = match forecast.daily {
            Some(daily) => daily
                .time
                .iter()
                .enumerate()
                .map(|(i, date)| {
                    let at = |series: &Vec<Option<f64>>| series.get(i).copied().flatten();
                    Day {
                        date: date.clone(),
                        weather_code: wmo(at(&daily.weather_code)),
                        max_c: at(&daily.temperature_2m_max),
                        min_c: at(&daily.temperature_2m_min),
                        precipitation_pct: at(&daily.precipitation_probability_max),
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(WeatherReport {
            place: Place {
                name: place.name,
                region: place.admin1,
                country: place.country,
                timezone: place.timezone,
            },
            current: Current {
                time: now.time,
                temperature_c: now.temperature_2m,
                apparent_c: now.apparent_temperature,
                humidity_pct: now.relative_humidity_2m,
                wind_kmh: now.wind_speed_10m,
                weather_code: wmo(now.weather_code),
            },
            days,
        })
    }
}
