//! Page fetch: the SSRF guard (literal addresses, host names resolving to internal
//! addresses, redirects, schemes), content-type and size limits, text extraction, and
//! `web_search` reading its top pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fixture, Reply, Server};
use futures::future::BoxFuture;
use voxloop_tools::config::FetchConfig;
use voxloop_tools::search::{HttpLimits, Searxng};
use voxloop_tools::{Error, HostLookup, PageFetcher, WebSearch};

fn article() -> String {
    String::from_utf8(fixture("pages/article.html")).unwrap()
}

fn strict() -> FetchConfig {
    FetchConfig { timeout_ms: 1500, ..FetchConfig::default() }
}

fn allow_loopback_v4() -> FetchConfig {
    FetchConfig { allowed_networks: vec!["127.0.0.1/32".into()], ..strict() }
}

/// A resolver with fixed answers, counting lookups.
struct FakeDns {
    names: HashMap<&'static str, Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl FakeDns {
    fn new() -> Arc<Self> {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        Arc::new(Self {
            names: HashMap::from([
                ("intranet.example", vec![ip("10.1.2.3")]),
                ("metadata.example", vec![ip("169.254.169.254")]),
                ("mixed.example", vec![ip("93.184.216.34"), ip("10.0.0.7")]),
                ("v6-loopback.example", vec![ip("::1")]),
                ("mapped.example", vec![ip("::ffff:192.168.0.10")]),
                ("cgnat.example", vec![ip("100.64.3.4")]),
                ("local.example", vec![ip("127.0.0.1")]),
            ]),
            lookups: AtomicUsize::new(0),
        })
    }
}

impl HostLookup for FakeDns {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .names
            .get(host)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, host.to_owned()));
        Box::pin(async move { answer })
    }
}

fn assert_blocked(result: Result<voxloop_tools::Page, Error>, url: &str) {
    match result {
        Err(Error::Blocked { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("{url}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn literal_internal_addresses_are_refused_without_connecting() {
    let server = Server::start(vec![("/page", Reply::html(200, &article()))]).await;
    let port = server.port();
    let fetcher = PageFetcher::from_config(&strict()).unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/page"),
        "http://10.0.0.1/".to_owned(),
        "http://10.255.255.1:8080/admin".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("http://0.0.0.0:{port}/page"),
        format!("http://2130706433:{port}/page"), // 127.0.0.1 written as one number
        "http://[fd00::1]/".to_owned(),
        "http://100.100.100.200/".to_owned(),
    ] {
        assert_blocked(fetcher.fetch(&url).await, &url);
    }
    assert!(server.requests().is_empty(), "a blocked fetch reached the server");
}

#[tokio::test]
async fn host_names_resolving_to_internal_addresses_are_refused() {
    let server = Server::start(vec![("/page", Reply::html(200, &article()))]).await;
    let port = server.port();
    // The system resolver: localhost is loopback.
    let fetcher = PageFetcher::from_config(&strict()).unwrap();
    let url = format!("http://localhost:{port}/page");
    assert_blocked(fetcher.fetch(&url).await, &url);

    let dns = FakeDns::new();
    let fetcher = PageFetcher::with_lookup(&strict(), dns.clone()).unwrap();
    for host in [
        "intranet.example",
        "metadata.example",
        "mixed.example",
        "v6-loopback.example",
        "mapped.example",
        "cgnat.example",
        "local.example",
    ] {
        let url = format!("http://{host}:{port}/page");
        let result = fetcher.fetch(&url).await;
        if let Err(Error::Blocked { reason, .. }) = &result {
            assert!(reason.contains(host), "{reason}");
        }
        assert_blocked(result, &url);
    }
    assert!(server.requests().is_empty(), "a blocked fetch reached the server");
}

#[tokio::test]
async fn allowed_networks_and_allow_private_let_fetches_through() {
    let server = Server::start(vec![("/page", Reply::html(200, &article()))]).await;
    let port = server.port();

    let fetcher = PageFetcher::from_config(&allow_loopback_v4()).unwrap();
    let page = fetcher.fetch(&format!("http://127.0.0.1:{port}/page")).await.unwrap();
    assert_eq!(page.title.as_deref(), Some("Webb’s first year at L2 | Example Science News"));
    assert!(
        page.text.starts_with(
            "Webb’s first year at L2\nThe James Webb Space Telescope launched on 25 December 2021"
        ),
        "{}",
        page.text
    );
    for boilerplate in
        ["Subscribe", "Hubble turns", "All rights reserved", "analytics", "document.write"]
    {
        assert!(!page.text.contains(boilerplate), "{boilerplate:?} in {}", page.text);
    }
    assert!(!page.truncated);
    // Only 127.0.0.1 is allowed: ::1 and 10.x stay blocked.
    assert_blocked(fetcher.fetch(&format!("http://[::1]:{port}/page")).await, "[::1]");
    assert_blocked(fetcher.fetch("http://10.0.0.1/").await, "10.0.0.1");

    // A name resolved by the (fake) resolver is connected to at the checked address: the
    // name exists nowhere else, so this only works without a second lookup.
    let dns = FakeDns::new();
    let fetcher = PageFetcher::with_lookup(&allow_loopback_v4(), dns.clone()).unwrap();
    let page = fetcher.fetch(&format!("http://local.example:{port}/page")).await.unwrap();
    assert!(page.text.contains("6.5-metre mirror"));
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);

    let open = FetchConfig { allow_private: true, ..strict() };
    let fetcher = PageFetcher::from_config(&open).unwrap();
    let page = fetcher.fetch(&format!("http://localhost:{port}/page")).await.unwrap();
    assert!(page.text.contains("18 hexagonal segments"));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    let server = Server::start(vec![
        ("/page", Reply::html(200, &article())),
        ("/to-page", Reply::redirect("/page")),
        ("/to-metadata", Reply::redirect("http://169.254.169.254/latest/meta-data/iam/")),
        ("/to-intranet", Reply::redirect("http://intranet.example/admin")),
        ("/to-file", Reply::redirect("file:///etc/passwd")),
        ("/loop", Reply::redirect("/loop")),
    ])
    .await;
    let base = server.url();
    let fetcher = PageFetcher::with_lookup(&allow_loopback_v4(), FakeDns::new()).unwrap();
    let page = fetcher.fetch(&format!("{base}/to-page")).await.unwrap();
    assert!(page.url.ends_with("/page"), "{}", page.url);
    for path in ["/to-metadata", "/to-intranet", "/to-file"] {
        assert_blocked(fetcher.fetch(&format!("{base}{path}")).await, path);
    }
    let error = fetcher.fetch(&format!("{base}/loop")).await.unwrap_err();
    assert!(matches!(error, Error::TooManyRedirects { limit: 5, .. }), "{error}");
}

#[tokio::test]
async fn schemes_content_types_and_sizes_are_limited() {
    let big = format!("<html><body><p>{}</p></body></html>", "lorem ipsum ".repeat(20_000));
    let server = Server::start(vec![
        (
            "/image",
            Reply {
                status: 200,
                headers: vec![("content-type".into(), "image/png".into())],
                payload: common::Payload::Bytes(vec![0x89, b'P', b'N', b'G']),
            },
        ),
        ("/json", Reply::json(200, b"{}".to_vec())),
        (
            "/plain",
            Reply {
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
                payload: common::Payload::Bytes(b"line one\n\n  line   two \n".to_vec()),
            },
        ),
        ("/big", Reply::html(200, &big)),
        ("/missing", Reply::html(404, "<h1>Not found</h1>")),
        (
            "/endless",
            Reply {
                status: 200,
                headers: vec![("content-type".into(), "text/html".into())],
                payload: common::Payload::Endless,
            },
        ),
    ])
    .await;
    let base = server.url();
    let config = FetchConfig { max_bytes: 4096, max_chars_per_page: 200, ..allow_loopback_v4() };
    let fetcher = PageFetcher::from_config(&config).unwrap();

    for url in ["file:///etc/passwd", "ftp://example.com/file.txt", "gopher://127.0.0.1:70/"] {
        assert_blocked(fetcher.fetch(url).await, url);
    }
    for path in ["/image", "/json"] {
        let error = fetcher.fetch(&format!("{base}{path}")).await.unwrap_err();
        assert!(matches!(error, Error::UnsupportedContentType { .. }), "{path}: {error}");
    }
    let page = fetcher.fetch(&format!("{base}/plain")).await.unwrap();
    assert_eq!(page.text, "line one\nline two");
    let page = fetcher.fetch(&format!("{base}/big")).await.unwrap();
    assert!(page.truncated);
    assert!(page.text.chars().count() <= 200 && page.text.starts_with("lorem ipsum"));
    let page = fetcher.fetch(&format!("{base}/endless")).await.unwrap();
    assert!(page.truncated);
    let error = fetcher.fetch(&format!("{base}/missing")).await.unwrap_err();
    assert!(matches!(error, Error::Rejected { status: 404, .. }), "{error}");
    assert!(matches!(fetcher.fetch("not a url").await, Err(Error::InvalidArgument { .. })));
}

#[tokio::test]
async fn a_name_is_resolved_once_so_rebinding_cannot_redirect_the_connection() {
    /// Answers a public address first and loopback afterwards (a rebinding DNS server).
    struct Rebinding(AtomicUsize);
    impl HostLookup for Rebinding {
        fn lookup(&self, _host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let ip: IpAddr = if n == 0 { "93.184.216.34" } else { "127.0.0.1" }.parse().unwrap();
            Box::pin(async move { Ok(vec![ip]) })
        }
    }
    let server = Server::start(vec![("/page", Reply::html(200, &article()))]).await;
    let dns = Arc::new(Rebinding(AtomicUsize::new(0)));
    let config = FetchConfig { timeout_ms: 300, ..strict() };
    let fetcher = PageFetcher::with_lookup(&config, dns.clone()).unwrap();
    let result = fetcher.fetch(&format!("http://rebind.example:{}/page", server.port())).await;
    assert!(result.is_err(), "the fetch must go to the checked (unreachable) address");
    assert_eq!(dns.0.load(Ordering::SeqCst), 1, "the name was looked up more than once");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn web_search_reads_the_top_pages_through_the_guard() {
    let pages = Server::start(vec![("/article", Reply::html(200, &article()))]).await;
    let search_response = serde_json::json!({
        "query": "webb",
        "number_of_results": 0,
        "results": [
            {"url": format!("{}/article", pages.url()), "title": "Webb at L2", "content": "short snippet one", "engine": "bing"},
            {"url": "http://10.0.0.1/internal", "title": "Internal page", "content": "short snippet two", "engine": "bing"},
            {"url": "https://example.org/three", "title": "Third", "content": "short snippet three", "engine": "bing"}
        ],
        "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []
    });
    let searx = Server::start(vec![(
        "/search",
        Reply::json(200, serde_json::to_vec(&search_response).unwrap()),
    )])
    .await;
    let limits = HttpLimits { timeout: Duration::from_secs(2), max_response_bytes: 1 << 20 };
    let fetcher = PageFetcher::from_config(&allow_loopback_v4()).unwrap();
    let tool =
        WebSearch::new(Searxng::new(&searx.url(), limits).unwrap()).with_page_fetch(fetcher, 2);
    let results = tool.results("webb").await.unwrap();
    assert!(results[0].snippet.contains("launched on 25 December 2021"), "{}", results[0].snippet);
    assert_eq!(results[1].snippet, "short snippet two", "a blocked page keeps its snippet");
    assert_eq!(results[2].snippet, "short snippet three", "only the top two are fetched");
    assert_eq!(pages.requests().len(), 1);
}
