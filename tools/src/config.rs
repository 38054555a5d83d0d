//! Per-tool configuration: the `[tools.*]` tables of the TOML file.
//!
//! Every struct has defaults for every field, so an empty table (or none) gives a working
//! setup: `web_search` on the offline provider, `get_date_time` in UTC, `get_weather` on
//! Open-Meteo. API keys are never in the file: the file names the environment variable
//! that holds each key.
//!
//! ```toml
//! [tools.web_search]
//! provider = "brave"              # "offline" (default), "searxng", "brave" or "tavily"
//! max_results = 5
//! max_tokens = 1200
//!
//! [tools.web_search.brave]
//! api_key_env = "BRAVE_SEARCH_API_KEY"
//!
//! [tools.web_search.fetch]
//! top_results = 2                 # fetch and read the two best pages
//! allowed_networks = ["10.1.0.0/16"]
//!
//! [tools.date_time]
//! timezone = "Asia/Shanghai"
//! language = "zh"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which language a tool writes its text output in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English (the default).
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

/// All built-in tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// `web_search`.
    pub web_search: WebSearchConfig,
    /// `get_date_time`.
    pub date_time: DateTimeConfig,
    /// `get_weather`.
    pub weather: WeatherConfig,
}

/// Which web search backend answers `web_search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchProviderKind {
    /// The local document collection, searched with Tantivy (no network).
    #[default]
    Offline,
    /// A SearXNG instance's JSON API.
    Searxng,
    /// The Brave Search API.
    Brave,
    /// The Tavily search API.
    Tavily,
}

/// `[tools.web_search]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSearchConfig {
    /// Register the tool.
    pub enabled: bool,
    /// The backend.
    pub provider: SearchProviderKind,
    /// Results asked of the provider and shown to the model, after deduplication.
    pub max_results: usize,
    /// Budget of the text shown to the model, in estimated tokens (see
    /// [`text::approx_tokens`](crate::text::approx_tokens)).
    pub max_tokens: usize,
    /// Whole-request timeout for the provider, in milliseconds.
    pub timeout_ms: u64,
    /// Largest provider response read, in bytes; a larger one is an error.
    pub max_response_bytes: usize,
    /// SearXNG settings.
    pub searxng: SearxngConfig,
    /// Brave Search settings.
    pub brave: BraveConfig,
    /// Tavily settings.
    pub tavily: TavilyConfig,
    /// Offline provider settings.
    pub offline: OfflineConfig,
    /// Page fetch for the top results.
    pub fetch: FetchConfig,
}

impl Default for WebSearchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            provider: SearchProviderKind::Offline,
            max_results: 5,
            max_tokens: 1200,
            timeout_ms: 10_000,
            max_response_bytes: 2 << 20,
            searxng: SearxngConfig::default(),
            brave: BraveConfig::default(),
            tavily: TavilyConfig::default(),
            offline: OfflineConfig::default(),
            fetch: FetchConfig::default(),
        }
    }
}

/// `[tools.web_search.searxng]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearxngConfig {
    /// The instance's root URL; `/search` is appended. Its settings must enable the `json`
    /// format.
    pub base_url: String,
    /// Optional `language` parameter (`en`, `zh-CN`, …).
    pub language: Option<String>,
    /// Optional comma-separated `categories` (`general`, `news`, …).
    pub categories: Option<String>,
}

impl Default for SearxngConfig {
    fn default() -> Self {
        Self { base_url: "http://127.0.0.1:8080".into(), language: None, categories: None }
    }
}

/// `[tools.web_search.brave]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BraveConfig {
    /// API root; `/res/v1/web/search` is appended.
    pub base_url: String,
    /// The environment variable holding the subscription token (`X-Subscription-Token`).
    pub api_key_env: String,
    /// Optional `country` parameter (`US`, `CN`, …).
    pub country: Option<String>,
    /// Optional `search_lang` parameter (`en`, `zh-hans`, …).
    pub search_lang: Option<String>,
}

impl Default for BraveConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.search.brave.com".into(),
            api_key_env: "BRAVE_SEARCH_API_KEY".into(),
            country: None,
            search_lang: None,
        }
    }
}

/// `[tools.web_search.tavily]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TavilyConfig {
    /// API root; `/search` is appended.
    pub base_url: String,
    /// The environment variable holding the API key (`tvly-…`).
    pub api_key_env: String,
    /// `search_depth`: `basic` (default) or `advanced`.
    pub search_depth: String,
    /// `topic`: `general` (default) or `news` (which adds publication dates).
    pub topic: String,
}

impl Default for TavilyConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.tavily.com".into(),
            api_key_env: "TAVILY_API_KEY".into(),
            search_depth: "basic".into(),
            topic: "general".into(),
        }
    }
}

/// `[tools.web_search.offline]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// The document collection: a directory of `.md`, `.txt` and `.html` files (searched
    /// recursively) or a `.jsonl` file of `{"title", "body", "url"?, "date"?, "source"?}`
    /// objects. Unset: `data/search_docs`.
    pub documents: Option<PathBuf>,
    /// Where to keep the index between runs (rebuilt when the collection changes). Unset:
    /// the index is built in memory on first use.
    pub index_dir: Option<PathBuf>,
}

/// `[tools.web_search.fetch]`: reading the pages of the top results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// How many of the top results to fetch and read (0: none, the default).
    pub top_results: usize,
    /// Characters of page text kept per fetched page.
    pub max_chars_per_page: usize,
    /// Bytes of a page read at most; the rest is not downloaded.
    pub max_bytes: usize,
    /// Whole-request timeout per page, in milliseconds.
    pub timeout_ms: u64,
    /// Redirects followed at most (each hop is checked against the address policy).
    pub max_redirects: usize,
    /// Allow private, loopback, link-local and other internal addresses. Off by default:
    /// a model-chosen URL must not reach internal services.
    pub allow_private: bool,
    /// Networks (CIDR, e.g. `10.1.0.0/16`, `::1/128`) allowed even though internal.
    pub allowed_networks: Vec<String>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            top_results: 0,
            max_chars_per_page: 1500,
            max_bytes: 1 << 20,
            timeout_ms: 8_000,
            max_redirects: 5,
            allow_private: false,
            allowed_networks: Vec::new(),
            user_agent: concat!("voxloop/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// `[tools.date_time]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DateTimeConfig {
    /// Register the tool.
    pub enabled: bool,
    /// IANA time zone used unless the session sets one (`UTC`, `Asia/Shanghai`, …).
    pub timezone: String,
    /// Output language.
    pub language: Language,
}

impl Default for DateTimeConfig {
    fn default() -> Self {
        Self { enabled: true, timezone: "UTC".into(), language: Language::En }
    }
}

/// Which weather backend answers `get_weather`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeatherProviderKind {
    /// Open-Meteo's geocoding and forecast APIs (no key needed).
    #[default]
    OpenMeteo,
}

/// `[tools.weather]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeatherConfig {
    /// Register the tool.
    pub enabled: bool,
    /// The backend.
    pub provider: WeatherProviderKind,
    /// Output language (also the language of place names asked of the geocoder).
    pub language: Language,
    /// Whole-request timeout per API call, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response read, in bytes.
    pub max_response_bytes: usize,
    /// Open-Meteo settings.
    pub open_meteo: OpenMeteoConfig,
}

impl Default for WeatherConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            provider: WeatherProviderKind::OpenMeteo,
            language: Language::En,
            timeout_ms: 8_000,
            max_response_bytes: 1 << 20,
            open_meteo: OpenMeteoConfig::default(),
        }
    }
}

/// `[tools.weather.open_meteo]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenMeteoConfig {
    /// Geocoding API root; `/v1/search` is appended.
    pub geocoding_url: String,
    /// Forecast API root; `/v1/forecast` is appended.
    pub forecast_url: String,
    /// Days of daily forecast (1–16); 3 covers "today, tomorrow and the day after".
    pub forecast_days: u8,
    /// Optional environment variable holding a commercial `apikey`.
    pub api_key_env: Option<String>,
}

impl Default for OpenMeteoConfig {
    fn default() -> Self {
        Self {
            geocoding_url: "https://geocoding-api.open-meteo.com".into(),
            forecast_url: "https://api.open-meteo.com".into(),
            forecast_days: 3,
            api_key_env: None,
        }
    }
}
