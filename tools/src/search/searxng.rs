//! [`Searxng`]: a SearXNG instance's JSON API (`GET /search?q=…&format=json`).
//!
//! The instance must list `json` under `search.formats` in its `settings.yml` (a 403 means
//! it does not). The response is `{"query", "number_of_results", "results": [{"url",
//! "title", "content", "engine", "publishedDate", …}], "answers", "suggestions", …}`.

use serde::Deserialize;
use url::Url;

use super::{HttpLimits, SearchProvider, SearchResult};
use crate::config::SearxngConfig;
use crate::{http, Result};

const SERVICE: &str = "SearXNG";

/// The SearXNG provider.
#[derive(Debug, Clone)]
pub struct Searxng {
    client: reqwest::Client,
    endpoint: Url,
    language: Option<String>,
    categories: Option<String>,
    limits: HttpLimits,
}

impl Searxng {
    /// A provider for the instance at `base_url`.
    pub fn new(base_url: &str, limits: HttpLimits) -> Result<Self> {
        Ok(Self {
            client: http::api_client(limits.timeout)?,
            endpoint: http::endpoint("tools.web_search.searxng.base_url", base_url, "search")?,
            language: None,
            categories: None,
            limits,
        })
    }

    /// The provider a `[tools.web_search.searxng]` table describes.
    pub fn from_config(config: &SearxngConfig, limits: HttpLimits) -> Result<Self> {
        let mut provider = Self::new(&config.base_url, limits)?;
        provider.language = config.language.clone();
        provider.categories = config.categories.clone();
        Ok(provider)
    }
}

#[derive(Deserialize)]
struct Response {
    results: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, rename = "publishedDate")]
    published_date: Option<String>,
}

#[async_trait::async_trait]
impl SearchProvider for Searxng {
    fn name(&self) -> &'static str {
        SERVICE
    }

    async fn search(&self, query: &str, max_results: usize) -> Result<Vec<SearchResult>> {
        let mut url = self.endpoint.clone();
        {
            let mut params = url.query_pairs_mut();
            params.append_pair("q", query).append_pair("format", "json");
            if let Some(language) = &self.language {
                params.append_pair("language", language);
            }
            if let Some(categories) = &self.categories {
                params.append_pair("categories", categories);
            }
        }
        let shown = http::redact(&url);
        let request = self.client.get(url).header(reqwest::header::ACCEPT, "application/json");
        let body: Response = self.limits.fetch_json(SERVICE, &shown, request).await?;
        Ok(body
            .results
            .into_iter()
            .take(max_results.saturating_mul(2))
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
