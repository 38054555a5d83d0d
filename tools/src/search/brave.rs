//! [`Brave`]: the Brave Search API (`GET /res/v1/web/search?q=…`).
//!
//! The key goes in the `X-Subscription-Token` header. A successful response is a
//! `WebSearchApiResponse`: `{"type": "search", "query": {…}, "web": {"type": "search",
//! "results": [{"title", "url", "description", "page_age", "age", "profile": {"name"},
//! "meta_url": {"hostname"}, "extra_snippets"}]}, …}`; `web` is absent when nothing was
//! found. Descriptions carry `<strong>` highlights. Rate limits come as 429 with
//! `X-RateLimit-Reset` (seconds per window).

use serde::Deserialize;
use url::Url;

use super::{HttpLimits, SearchProvider, SearchResult};
use crate::config::BraveConfig;
use crate::{http, Error, Result};

const SERVICE: &str = "Brave Search";

/// Brave's largest `count`.
const MAX_COUNT: usize = 20;

/// The Brave Search provider.
#[derive(Clone)]
pub struct Brave {
    client: reqwest::Client,
    endpoint: Url,
    api_key: String,
    country: Option<String>,
    search_lang: Option<String>,
    limits: HttpLimits,
}

impl std::fmt::Debug for Brave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brave").field("endpoint", &self.endpoint.as_str()).finish_non_exhaustive()
    }
}

impl Brave {
    /// A provider for the API at `base_url` with the subscription token `api_key`.
    pub fn new(base_url: &str, api_key: impl Into<String>, limits: HttpLimits) -> Result<Self> {
        Ok(Self {
            client: http::api_client(limits.timeout)?,
            endpoint: http::endpoint(
                "tools.web_search.brave.base_url",
                base_url,
                "res/v1/web/search",
            )?,
            api_key: api_key.into(),
            country: None,
            search_lang: None,
            limits,
        })
    }

    /// The provider a `[tools.web_search.brave]` table describes; the key is read from
    /// the environment variable it names.
    pub fn from_config(config: &BraveConfig, limits: HttpLimits) -> Result<Self> {
        let key =
            http::api_key_from_env("tools.web_search.brave.api_key_env", &config.api_key_env)?;
        let mut provider = Self::new(&config.base_url, key, limits)?;
        provider.country = config.country.clone();
        provider.search_lang = config.search_lang.clone();
        Ok(provider)
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    web: Option<Web>,
}

#[derive(Deserialize)]
struct Web {
    #[serde(default)]
    results: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    page_age: Option<String>,
    #[serde(default)]
    age: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    meta_url: Option<MetaUrl>,
    #[serde(default)]
    extra_snippets: Vec<String>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct MetaUrl {
    #[serde(default)]
    hostname: Option<String>,
}

#[async_trait::async_trait]
impl SearchProvider for Brave {
    fn name(&self) -> &'static str {
        SERVICE
    }

    async fn search(&self, query: &str, max_results: usize) -> Result<Vec<SearchResult>> {
        let mut url = self.endpoint.clone();
        {
            let mut params = url.query_pairs_mut();
            params.append_pair("q", query);
            params.append_pair("count", &max_results.clamp(1, MAX_COUNT).to_string());
            if let Some(country) = &self.country {
                params.append_pair("country", country);
            }
            if let Some(lang) = &self.search_lang {
                params.append_pair("search_lang", lang);
            }
        }
        let shown = http::redact(&url);
        let request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header("X-Subscription-Token", &self.api_key);
        let body: Response = self.limits.fetch_json(SERVICE, &shown, request).await?;
        if body.kind != "search" {
            return Err(Error::MalformedResponse {
                service: SERVICE,
                url: shown,
                detail: format!("response type {:?}, expected \"search\"", body.kind),
            });
        }
        let items = body.web.map(|web| web.results).unwrap_or_default();
        Ok(items
            .into_iter()
            .map(|item| {
                let mut snippet = item.description.unwrap_or_default();
                if let Some(extra) = item.extra_snippets.first() {
                    snippet = format!("{snippet} {extra}");
                }
                let source = item
                    .profile
                    .and_then(|p| p.name)
                    .or_else(|| item.meta_url.and_then(|m| m.hostname))
                    .unwrap_or_default();
                SearchResult {
                    title: item.title.unwrap_or_default(),
                    url: item.url.unwrap_or_default(),
                    snippet,
                    date: item.page_age.or(item.age),
                    source,
                }
            })
            .collect())
    }
}
