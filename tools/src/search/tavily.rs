//! [`Tavily`]: the Tavily search API (`POST /search` with a JSON body).
//!
//! The key is sent as `Authorization: Bearer tvly-…` (current API) and as `api_key` in the
//! body (the older form, still accepted). The response is `{"query", "answer",
//! "images", "results": [{"title", "url", "content", "score", "raw_content",
//! "published_date"?}], "response_time", …}`; `published_date` appears with
//! `topic = "news"`. Errors carry `{"detail": {"error": "…"}}`.

use serde::{Deserialize, Serialize};
use url::Url;

use super::{HttpLimits, SearchProvider, SearchResult};
use crate::config::TavilyConfig;
use crate::{http, Result};

const SERVICE: &str = "Tavily";

/// Tavily's largest `max_results`.
const MAX_RESULTS: usize = 20;

/// The Tavily provider.
#[derive(Clone)]
pub struct Tavily {
    client: reqwest::Client,
    endpoint: Url,
    api_key: String,
    search_depth: String,
    topic: String,
    limits: HttpLimits,
}

impl std::fmt::Debug for Tavily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tavily").field("endpoint", &self.endpoint.as_str()).finish_non_exhaustive()
    }
}

impl Tavily {
    /// A provider for the API at `base_url` with the key `api_key`, basic depth, general
    /// topic.
    pub fn new(base_url: &str, api_key: impl Into<String>, limits: HttpLimits) -> Result<Self> {
        Ok(Self {
            client: http::api_client(limits.timeout)?,
            endpoint: http::endpoint("tools.web_search.tavily.base_url", base_url, "search")?,
            api_key: api_key.into(),
            search_depth: "basic".into(),
            topic: "general".into(),
            limits,
        })
    }

    /// The provider a `[tools.web_search.tavily]` table describes; the key is read from
    /// the environment variable it names.
    pub fn from_config(config: &TavilyConfig, limits: HttpLimits) -> Result<Self> {
        let key =
            http::api_key_from_env("tools.web_search.tavily.api_key_env", &config.api_key_env)?;
        let mut provider = Self::new(&config.base_url, key, limits)?;
        provider.search_depth = config.search_depth.clone();
        provider.topic = config.topic.clone();
        Ok(provider)
    }
}

#[derive(Serialize)]
struct Request<'a> {
    api_key: &'a str,
    query: &'a str,
    search_depth: &'a str,
    topic: &'a str,
    max_results: usize,
    include_answer: bool,
    include_raw_content: bool,
    include_images: bool,
}

#[derive(Deserialize)]
struct Response {
    results: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    published_date: Option<String>,
}

#[async_trait::async_trait]
impl SearchProvider for Tavily {
    fn name(&self) -> &'static str {
        SERVICE
    }

    async fn search(&self, query: &str, max_results: usize) -> Result<Vec<SearchResult>> {
        let shown = http::redact(&self.endpoint);
        let body = Request {
            api_key: &self.api_key,
            query,
            search_depth: &self.search_depth,
            topic: &self.topic,
            max_results: max_results.clamp(1, MAX_RESULTS),
            include_answer: false,
            include_raw_content: false,
            include_images: false,
        };
        let request = self
            .client
            .post(self.endpoint.clone())
            .bearer_auth(&self.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let body: Response = self.limits.fetch_json(SERVICE, &shown, request).await?;
        Ok(body
            .results
            .into_iter()
            .map(|item| SearchResult {
                title: item.title.unwrap_or_default(),
                url: item.url.unwrap_or_default(),
                snippet: item.content.unwrap_or_default(),
                date: item.published_date,
                source: String::new(),
            })
            .collect())
    }
}
