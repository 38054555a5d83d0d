//! `web_search`: one tool over several [`SearchProvider`]s.
//!
//! | Provider | API | Key |
//! |---|---|---|
//! | [`OfflineSearch`] (default) | local documents, Tantivy BM25 over title + body | none |
//! | [`Searxng`] | `GET {base}/search?q=…&format=json` | none |
//! | [`Brave`] | `GET {base}/res/v1/web/search?q=…`, header `X-Subscription-Token` | env var |
//! | [`Tavily`] | `POST {base}/search` with a JSON body | env var |
//!
//! Whatever the provider, the results are normalised (HTML stripped, dates as
//! `YYYY-MM-DD` where they parse), deduplicated by normalised URL, optionally enriched
//! with the readable text of the top pages (see [`fetch`](crate::fetch)), and rendered as
//! plain text within a token budget (see [`render`]).

mod brave;
mod offline;
pub mod render;
mod searxng;
mod tavily;

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use voxloop_core::tool::{Tool, ToolType, Transient};

pub use brave::Brave;
pub use offline::OfflineSearch;
pub use searxng::Searxng;
pub use tavily::Tavily;

use crate::config::{SearchProviderKind, WebSearchConfig};
use crate::fetch::PageFetcher;
use crate::{Error, Result};

/// One search hit, normalised across providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The page title.
    pub title: String,
    /// The page URL (for local documents: the document's configured URL or its path).
    pub url: String,
    /// Text from the page: the provider's snippet, or the page's own text once fetched.
    pub snippet: String,
    /// Publication date, `YYYY-MM-DD` when the provider's date parses, else as given.
    pub date: Option<String>,
    /// Where it comes from: a site name or host, or the local collection's source label.
    pub source: String,
}

/// A web search backend.
#[async_trait::async_trait]
pub trait SearchProvider: Send + Sync + 'static {
    /// The provider's name, for logs and error messages.
    fn name(&self) -> &'static str;

    /// Up to `max_results` results for `query`, best first. Results may still contain
    /// HTML and duplicates: [`WebSearch`] normalises them.
    async fn search(&self, query: &str, max_results: usize) -> Result<Vec<SearchResult>>;
}

/// Limits shared by the HTTP providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Largest response body read; a larger one is [`Error::BodyTooLarge`].
    pub max_response_bytes: usize,
}

impl HttpLimits {
    /// Sends `request` and reads its JSON body, within these limits; `shown_url` (with any key
    /// redacted) names the request in errors.
    pub(crate) async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        service: &'static str,
        shown_url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        let response = crate::http::send(service, shown_url, self.timeout, request).await?;
        crate::http::json_body(service, shown_url, self.timeout, response, self.max_response_bytes)
            .await
    }

    /// The limits of a `[tools.web_search]` table.
    pub fn from_config(config: &WebSearchConfig) -> Self {
        Self {
            timeout: Duration::from_millis(config.timeout_ms),
            max_response_bytes: config.max_response_bytes,
        }
    }
}

/// The arguments of `web_search`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct WebSearchArgs {
    /// Search keywords, e.g. "大理 旅游攻略 门票价格" or "Shanghai Composite opening price today".
    pub query: String,
}

/// The `web_search` tool.
#[derive(Clone)]
pub struct WebSearch {
    provider: Arc<dyn SearchProvider>,
    fetcher: Option<PageFetcher>,
    fetch_top: usize,
    max_results: usize,
    max_tokens: usize,
}

impl WebSearch {
    /// A search over `provider` with the default limits (5 results, 1200 tokens) and no
    /// page fetch.
    pub fn new(provider: impl SearchProvider) -> Self {
        let defaults = WebSearchConfig::default();
        Self {
            provider: Arc::new(provider),
            fetcher: None,
            fetch_top: 0,
            max_results: defaults.max_results,
            max_tokens: defaults.max_tokens,
        }
    }

    /// The tool a `[tools.web_search]` table describes. Reads the provider's API key from
    /// its environment variable; fails if it is unset or a URL does not parse.
    pub fn from_config(config: &WebSearchConfig) -> Result<Self> {
        let limits = HttpLimits::from_config(config);
        let provider: Arc<dyn SearchProvider> = match config.provider {
            SearchProviderKind::Offline => Arc::new(OfflineSearch::from_config(&config.offline)),
            SearchProviderKind::Searxng => Arc::new(Searxng::from_config(&config.searxng, limits)?),
            SearchProviderKind::Brave => Arc::new(Brave::from_config(&config.brave, limits)?),
            SearchProviderKind::Tavily => Arc::new(Tavily::from_config(&config.tavily, limits)?),
        };
        let fetcher = if config.fetch.top_results > 0 {
            Some(PageFetcher::from_config(&config.fetch)?)
        } else {
            None
        };
        Ok(Self {
            provider,
            fetcher,
            fetch_top: config.fetch.top_results,
            max_results: config.max_results.max(1),
            max_tokens: config.max_tokens.max(16),
        })
    }

    /// Sets how many results are shown and the token budget of the text.
    #[must_use]
    pub fn with_limits(mut self, max_results: usize, max_tokens: usize) -> Self {
        self.max_results = max_results.max(1);
        self.max_tokens = max_tokens.max(16);
        self
    }

    /// Fetches the pages of the `top` best results and shows their text instead of the
    /// provider's snippet (a page that fails to fetch keeps its snippet).
    #[must_use]
    pub fn with_page_fetch(mut self, fetcher: PageFetcher, top: usize) -> Self {
        self.fetcher = Some(fetcher);
        self.fetch_top = top;
        self
    }

    /// The provider's name.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// Searches and returns the normalised, deduplicated results (before rendering).
    pub async fn results(&self, query: &str) -> Result<Vec<SearchResult>> {
        let query = query.trim();
        if query.is_empty() {
            return Err(Error::InvalidArgument {
                name: "query",
                reason: "the search query is empty".into(),
            });
        }
        let raw = self.provider.search(query, self.max_results).await?;
        let mut results = render::normalize(raw);
        results.truncate(self.max_results);
        if let Some(fetcher) = &self.fetcher {
            self.read_top_pages(fetcher, &mut results).await;
        }
        Ok(results)
    }

    /// Searches and renders the results as text for the model.
    pub async fn search(&self, query: &str) -> Result<String> {
        let results = self.results(query).await?;
        Ok(render::render(query.trim(), &results, self.max_tokens))
    }

    async fn read_top_pages(&self, fetcher: &PageFetcher, results: &mut [SearchResult]) {
        let top = self.fetch_top.min(results.len());
        let pages = futures::future::join_all(
            results[..top].iter().map(|result| fetcher.fetch(&result.url)),
        )
        .await;
        for (result, page) in results.iter_mut().zip(pages) {
            match page {
                Ok(page) if !page.text.is_empty() => result.snippet = page.text,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(url = %result.url, %error, "web_search: page fetch failed; keeping the snippet");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Tool for WebSearch {
    const NAME: &'static str = "web_search";
    type Args = WebSearchArgs;
    type Output = String;
    type Error = Error;

    fn description(&self) -> String {
        "Searches the web for current information (news, facts, prices, schedules) and \
         returns the most relevant results as text."
            .into()
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

    async fn call(&self, args: WebSearchArgs) -> Result<String> {
        self.search(&args.query).await
    }
}
