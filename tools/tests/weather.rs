//! `get_weather` on Open-Meteo, against a local server replaying the geocoding and forecast
//! APIs' real response format (tests/fixtures/open_meteo).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture_json, Reply, Server};
use serde_json::json;
use voxloop_core::tool::{ToolCall, ToolRegistry};
use voxloop_tools::config::{Language, OpenMeteoConfig, WeatherConfig};
use voxloop_tools::weather::describe_weather_code;
use voxloop_tools::{Error, OpenMeteo, WeatherProvider, WeatherTool};

fn config(server: &Server, language: Language) -> WeatherConfig {
    WeatherConfig {
        language,
        timeout_ms: 500,
        open_meteo: OpenMeteoConfig {
            geocoding_url: server.url(),
            forecast_url: format!("{}/", server.url()),
            ..OpenMeteoConfig::default()
        },
        ..WeatherConfig::default()
    }
}

async fn chengdu_server() -> Server {
    Server::start(vec![
        ("/v1/search", Reply::fixture(200, "open_meteo/geocoding_chengdu.json")),
        ("/v1/forecast", Reply::fixture(200, "open_meteo/forecast_chengdu.json")),
    ])
    .await
}

#[tokio::test]
async fn geocodes_then_forecasts_and_reports_the_fixture_values() {
    let server = chengdu_server().await;
    let provider = OpenMeteo::from_config(&config(&server, Language::En)).unwrap();
    let report = provider.weather("chengdu").await.unwrap();

    let geo = &fixture_json("open_meteo/geocoding_chengdu.json")["results"][0];
    let forecast = fixture_json("open_meteo/forecast_chengdu.json");
    assert_eq!(report.place.name, geo["name"].as_str().unwrap());
    assert_eq!(report.place.region.as_deref(), geo["admin1"].as_str());
    assert_eq!(report.current.time, forecast["current"]["time"].as_str().unwrap());
    assert_eq!(
        report.current.temperature_c,
        forecast["current"]["temperature_2m"].as_f64().unwrap()
    );
    let days = forecast["daily"]["time"].as_array().unwrap();
    assert_eq!(report.days.len(), days.len());
    for (i, day) in report.days.iter().enumerate() {
        assert_eq!(day.date, days[i].as_str().unwrap());
        assert_eq!(day.max_c, forecast["daily"]["temperature_2m_max"][i].as_f64());
        assert_eq!(day.min_c, forecast["daily"]["temperature_2m_min"][i].as_f64());
        assert_eq!(day.weather_code.map(u64::from), forecast["daily"]["weather_code"][i].as_u64());
    }

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/search");
    assert_eq!(requests[0].param("name").as_deref(), Some("chengdu"));
    assert_eq!(requests[0].param("count").as_deref(), Some("1"));
    assert_eq!(requests[1].path, "/v1/forecast");
    assert_eq!(requests[1].param("latitude"), geo["latitude"].as_f64().map(|v| v.to_string()));
    assert_eq!(requests[1].param("timezone").as_deref(), Some("auto"));
    assert!(requests[1].param("current").unwrap().contains("weather_code"));
}

#[tokio::test]
async fn the_tool_renders_english_and_chinese_text() {
    let server = chengdu_server().await;
    let forecast = fixture_json("open_meteo/forecast_chengdu.json");
    let code = forecast["current"]["weather_code"].as_u64().unwrap() as u8;
    let (en_words, zh_words) = describe_weather_code(code);
    let tomorrow_code = forecast["daily"]["weather_code"][1].as_u64().unwrap() as u8;

    let mut registry = ToolRegistry::new();
    registry.register(WeatherTool::from_config(&config(&server, Language::En)).unwrap()).unwrap();
    let result = registry.call(ToolCall::new("get_weather", json!({"location": "chengdu"}))).await;
    let text = result.model_text();
    assert!(
        text.starts_with("Weather in Chengdu, Sichuan, China at 2025-08-28 15:30 local time:"),
        "{text}"
    );
    assert!(text.contains(en_words), "{text}");
    assert!(text.contains("Tomorrow (2025-08-29): "), "{text}");
    assert!(text.contains(describe_weather_code(tomorrow_code).0), "{text}");

    let zh = WeatherTool::from_config(&config(&server, Language::Zh)).unwrap();
    let text = zh.report("chengdu").await.unwrap();
    assert!(text.starts_with("Chengdu（China, Sichuan）当地时间8月28日15:30，"), "{text}");
    assert!(text.contains(zh_words), "{text}");
    assert!(text.contains("明天（8月29日）"), "{text}");
    // A missing daily minimum (null) leaves the range out instead of inventing one.
    assert!(text.contains("后天（8月30日）"), "{text}");
}

#[tokio::test]
async fn unknown_places_and_api_errors_map_to_typed_errors() {
    let server = Server::start(vec![
        ("/v1/search", Reply::fixture(200, "open_meteo/geocoding_empty.json")),
        ("/v1/forecast", Reply::fixture(200, "open_meteo/forecast_chengdu.json")),
    ])
    .await;
    let provider = OpenMeteo::from_config(&config(&server, Language::En)).unwrap();
    let error = provider.weather("atlantis").await.unwrap_err();
    assert!(matches!(&error, Error::LocationNotFound(p) if p == "atlantis"), "{error}");
    assert!(!error.is_transient());

    let server = Server::start(vec![
        ("/v1/search", Reply::fixture(200, "open_meteo/geocoding_chengdu.json")),
        ("/v1/forecast", Reply::fixture(400, "open_meteo/error_400.json")),
    ])
    .await;
    let provider = OpenMeteo::from_config(&config(&server, Language::En)).unwrap();
    let error = provider.weather("chengdu").await.unwrap_err();
    assert!(matches!(error, Error::Rejected { status: 400, .. }), "{error}");
    assert!(error.to_string().contains("Latitude must be in range"), "{error}");

    let server = Server::start(vec![(
        "/v1/search",
        Reply::json(429, b"{\"error\":true,\"reason\":\"Too many requests\"}".to_vec())
            .with_header("retry-after", "30"),
    )])
    .await;
    let provider = OpenMeteo::from_config(&config(&server, Language::En)).unwrap();
    let error = provider.weather("chengdu").await.unwrap_err();
    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(30)));

    let server = Server::start(vec![("/v1/search", Reply::never())]).await;
    let provider = OpenMeteo::from_config(&config(&server, Language::En)).unwrap();
    let error = provider.weather("chengdu").await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
}
