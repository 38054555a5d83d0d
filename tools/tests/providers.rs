//! Web search providers against a local server that replays responses in each provider's
//! real format (tests/fixtures/{searxng,brave,tavily}): success, empty, 401, 429 with
//! Retry-After, 500, timeout, malformed JSON and oversized bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{fixture_json, Reply, Server};
use serde_json::json;
use voxloop_core::tool::{ToolCall, ToolErrorKind, ToolRegistry};
use voxloop_tools::search::render::normalize_url;
use voxloop_tools::search::{Brave, HttpLimits, Searxng, Tavily};
use voxloop_tools::{Error, SearchProvider, SearchResult, WebSearch};

const LIMITS: HttpLimits =
    HttpLimits { timeout: Duration::from_millis(400), max_response_bytes: 256 * 1024 };

#[derive(Clone, Copy, Debug)]
enum Kind {
    Searxng,
    Brave,
    Tavily,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Searxng, Kind::Brave, Kind::Tavily];

    fn path(self) -> &'static str {
        match self {
            Kind::Searxng => "/search",
            Kind::Brave => "/res/v1/web/search",
            Kind::Tavily => "/search",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::Searxng => "searxng",
            Kind::Brave => "brave",
            Kind::Tavily => "tavily",
        }
    }

    fn provider(self, base: &str) -> Box<dyn SearchProvider> {
        match self {
            Kind::Searxng => Box::new(Searxng::new(base, LIMITS).unwrap()),
            Kind::Brave => Box::new(Brave::new(base, "brave-test-token", LIMITS).unwrap()),
            Kind::Tavily => Box::new(Tavily::new(base, "tvly-test-key", LIMITS).unwrap()),
        }
    }

    /// The results array of the success fixture: (url, title) pairs.
    fn fixture_results(self) -> Vec<(String, String)> {
        let json = fixture_json(&format!("{}/success.json", self.dir()));
        let results = match self {
            Kind::Brave => json["web"]["results"].clone(),
            _ => json["results"].clone(),
        };
        results
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (r["url"].as_str().unwrap().to_owned(), r["title"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// An error body in the provider's format, where it has one.
    fn error_body(self, status: u16) -> Vec<u8> {
        let relative = match (self, status) {
            (Kind::Brave, 401) => "brave/error_401.json",
            (Kind::Brave, 429) => "brave/error_429.json",
            (Kind::Tavily, 401) => "tavily/error_401.json",
            (Kind::Tavily, 429) => "tavily/error_429.json",
            (Kind::Tavily, 500) => "tavily/error_500.json",
            (Kind::Searxng, 403) => "searxng/forbidden.html",
            _ => return b"Internal Server Error".to_vec(),
        };
        common::fixture(relative)
    }
}

async fn search_with(kind: Kind, reply: Reply) -> (Result<Vec<SearchResult>, Error>, Server) {
    let server = Server::start(vec![(kind.path(), reply)]).await;
    let provider = kind.provider(&server.url());
    let result = provider.search("test query", 5).await;
    (result, server)
}

#[tokio::test]
async fn success_responses_parse_into_results_in_provider_order() {
    for kind in Kind::ALL {
        let reply = Reply::fixture(200, &format!("{}/success.json", kind.dir()));
        let (result, server) = search_with(kind, reply).await;
        let results = result.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let expected = kind.fixture_results();
        let got: Vec<(String, String)> =
            results.iter().map(|r| (r.url.clone(), r.title.clone())).collect();
        assert_eq!(got, expected, "{kind:?}");
        assert!(results.iter().all(|r| !r.snippet.is_empty()), "{kind:?}: empty snippet");

        let requests = server.requests();
        assert_eq!(requests.len(), 1, "{kind:?}");
        let request = &requests[0];
        match kind {
            Kind::Searxng => {
                assert_eq!(request.method, "GET");
                assert_eq!(request.param("q").as_deref(), Some("test query"));
                assert_eq!(request.param("format").as_deref(), Some("json"));
            }
            Kind::Brave => {
                assert_eq!(request.method, "GET");
                assert_eq!(request.param("q").as_deref(), Some("test query"));
                assert_eq!(request.param("count").as_deref(), Some("5"));
                assert_eq!(
                    request.header("x-subscription-token").as_deref(),
                    Some("brave-test-token")
                );
            }
            Kind::Tavily => {
                assert_eq!(request.method, "POST");
                assert_eq!(
                    request.header("authorization").as_deref(),
                    Some("Bearer tvly-test-key")
                );
                let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
                assert_eq!(body["query"], "test query");
                assert_eq!(body["api_key"], "tvly-test-key");
                assert_eq!(body["max_results"], 5);
            }
        }
    }
}

#[tokio::test]
async fn empty_responses_are_no_results_not_errors() {
    for kind in Kind::ALL {
        let reply = Reply::fixture(200, &format!("{}/empty.json", kind.dir()));
        let (result, _server) = search_with(kind, reply).await;
        assert_eq!(result.unwrap_or_else(|e| panic!("{kind:?}: {e}")), Vec::new(), "{kind:?}");
    }
}

#[tokio::test]
async fn unauthorized_is_an_auth_error_and_not_transient() {
    for kind in Kind::ALL {
        let reply = Reply::json(401, kind.error_body(401));
        let (result, _server) = search_with(kind, reply).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Auth { status: 401, .. }), "{kind:?}: {error}");
        assert!(!error.is_transient(), "{kind:?}");
        assert_eq!(error.retry_after(), None);
    }
    // A SearXNG instance without the json format answers 403 with an HTML page.
    let reply = Reply::html(403, std::str::from_utf8(&Kind::Searxng.error_body(403)).unwrap());
    let (result, _server) = search_with(Kind::Searxng, reply).await;
    assert!(matches!(result, Err(Error::Auth { status: 403, .. })), "{result:?}");
}

#[tokio::test]
async fn rate_limits_are_transient_and_carry_retry_after() {
    for kind in Kind::ALL {
        let reply = Reply::json(429, kind.error_body(429)).with_header("retry-after", "7");
        let (result, _server) = search_with(kind, reply).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::RateLimited { .. }), "{kind:?}: {error}");
        assert!(error.is_transient(), "{kind:?}");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)), "{kind:?}");
    }
    // Brave announces its windows in X-RateLimit-Reset instead.
    let reply = Reply::json(429, Kind::Brave.error_body(429))
        .with_header("x-ratelimit-limit", "1, 2000")
        .with_header("x-ratelimit-reset", "1, 1419704");
    let (result, _server) = search_with(Kind::Brave, reply).await;
    assert_eq!(result.unwrap_err().retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn server_errors_are_transient() {
    for kind in Kind::ALL {
        let reply = Reply::json(500, kind.error_body(500));
        let (result, _server) = search_with(kind, reply).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::ServerError { status: 500, .. }), "{kind:?}: {error}");
        assert!(error.is_transient(), "{kind:?}");
        let reply = Reply::json(503, b"upstream down".to_vec()).with_header("retry-after", "2");
        let (result, _server) = search_with(kind, reply).await;
        assert_eq!(result.unwrap_err().retry_after(), Some(Duration::from_secs(2)), "{kind:?}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_transiently() {
    for kind in Kind::ALL {
        let (result, _server) = search_with(kind, Reply::never()).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{kind:?}: {error}");
        assert!(error.is_transient(), "{kind:?}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_clear_non_transient_error() {
    for kind in Kind::ALL {
        let reply = Reply::fixture(200, "searxng/truncated.json");
        let (result, _server) = search_with(kind, reply).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::MalformedResponse { .. }), "{kind:?}: {error}");
        assert!(!error.is_transient(), "{kind:?}");
        assert!(error.to_string().contains("malformed response"), "{error}");
        // Valid JSON of the wrong shape is malformed too.
        let reply = Reply::json(200, br#"{"unexpected": true}"#.to_vec());
        let (result, _server) = search_with(kind, reply).await;
        assert!(matches!(result, Err(Error::MalformedResponse { .. })), "{kind:?}: {result:?}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_or_without_content_length() {
    for kind in Kind::ALL {
        let (result, _server) = search_with(kind, Reply::huge_json(1 << 20)).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::BodyTooLarge { limit: 262_144, .. }), "{kind:?}: {error}");
        // An endless chunked body: only a capped read returns (instead of timing out).
        let (result, _server) = search_with(kind, Reply::endless_json()).await;
        let error = result.unwrap_err();
        assert!(matches!(error, Error::BodyTooLarge { .. }), "{kind:?}: {error}");
    }
}

#[tokio::test]
async fn web_search_dedups_strips_html_and_renders_prose() {
    let server =
        Server::start(vec![("/search", Reply::fixture(200, "searxng/success.json"))]).await;
    let tool = WebSearch::new(Searxng::new(&server.url(), LIMITS).unwrap());
    let results = tool.results("上证指数 开盘").await.unwrap();
    let mut keys: Vec<String> =
        Kind::Searxng.fixture_results().iter().map(|(u, _)| normalize_url(u)).collect();
    keys.dedup();
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(results.len(), distinct.len());
    assert!(results.iter().all(|r| !r.snippet.contains('<') && !r.title.contains("&amp;")));
    assert_eq!(results[0].date.as_deref(), Some("2025-08-28"));
    assert_eq!(results[0].source, "nbd.com.cn");

    let mut registry = ToolRegistry::new();
    registry.register(tool).unwrap();
    let schemas = registry.tool_json_schemas().unwrap();
    assert!(schemas.contains(r#""name": "web_search""#), "{schemas}");
    assert!(schemas.contains(r#""required": ["query"]"#), "{schemas}");
    let result =
        registry.call(ToolCall::new("web_search", json!({"query": "上证指数 开盘"}))).await;
    let text = result.model_text();
    assert!(text.starts_with("Search results for \"上证指数 开盘\":"), "{text}");
    assert!(text.contains("[1] 沪指开盘跌0.1% 创业板指跌0.55% (nbd.com.cn, 2025-08-28)"), "{text}");
    assert!(text.contains("上证指数开盘跌3.64点"), "{text}");
    assert!(!text.contains("（转载）"), "duplicate shown: {text}");
    assert!(!text.contains('{'), "not prose: {text}");
}

#[tokio::test]
async fn tool_errors_reach_the_model_as_short_safe_messages() {
    let reply = Reply::json(429, Kind::Brave.error_body(429)).with_header("retry-after", "7");
    let server = Server::start(vec![("/res/v1/web/search", reply)]).await;
    let mut registry = ToolRegistry::new();
    registry
        .register(WebSearch::new(Brave::new(&server.url(), "secret-token", LIMITS).unwrap()))
        .unwrap();
    let result = registry.call(ToolCall::new("web_search", json!({"query": "x"}))).await;
    assert_eq!(result.error_kind(), Some(ToolErrorKind::Execution));
    let error = result.outcome.as_ref().unwrap_err();
    assert!(error.model_message.contains("rate limiting"), "{}", error.model_message);
    assert!(error.model_message.contains("7 s"), "{}", error.model_message);
    assert!(!error.model_message.contains("127.0.0.1"), "{}", error.model_message);
    assert!(error.detail.contains("HTTP 429"), "{}", error.detail);
    let transient = error.transient.expect("a 429 is marked transient for the retry policy");
    assert_eq!(transient.retry_after, Some(Duration::from_secs(7)));

    let result = registry.call(ToolCall::new("web_search", json!({"query": "   "}))).await;
    assert!(result.model_text().contains("empty"), "{}", result.model_text());
    assert_eq!(result.outcome.unwrap_err().transient, None);

    let reply = Reply::json(401, Kind::Brave.error_body(401));
    let server = Server::start(vec![("/res/v1/web/search", reply)]).await;
    let mut registry = ToolRegistry::new();
    registry.register(WebSearch::new(Brave::new(&server.url(), "bad", LIMITS).unwrap())).unwrap();
    let result = registry.call(ToolCall::new("web_search", json!({"query": "x"}))).await;
    let error = result.outcome.unwrap_err();
    assert_eq!(error.transient, None, "an auth failure is not retried");
    assert!(error.model_message.contains("credentials"), "{}", error.model_message);
}
