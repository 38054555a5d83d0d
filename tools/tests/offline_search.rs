//! The offline provider over the committed collection (tests/fixtures/docs: Markdown with
//! and without front matter, plain text and HTML, English and Chinese): the relevant
//! document must rank first for each query of the table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixture_path;
use serde_json::json;
use voxloop_core::tool::{ToolCall, ToolRegistry};
use voxloop_tools::config::{OfflineConfig, WebSearchConfig};
use voxloop_tools::search::OfflineSearch;
use voxloop_tools::{SearchProvider, WebSearch};

/// (query, the document that must come first).
const QUERIES: [(&str, &str); 18] = [
    ("上证指数 开盘", "shanghai-composite-open.md"),
    ("深证成指 收盘 成交额", "shenzhen-close.md"),
    ("大理 旅游攻略 门票价格", "dali-travel-guide.md"),
    ("太阳能推广 政策 补贴", "solar-subsidy-policy.md"),
    ("成都 大熊猫 开放时间", "chengdu-pandas.md"),
    ("普洱茶怎么泡", "puer-tea.md"),
    ("长城有多长", "great-wall.md"),
    ("how tall is Mount Everest", "mount-everest.html"),
    ("when was the James Webb telescope launched", "jwst.md"),
    ("Hubble mirror servicing mission", "hubble.md"),
    ("sourdough starter hydration", "sourdough-bread.md"),
    ("why does the ocean have tides", "tides.md"),
    ("pour over coffee water temperature", "coffee-brewing.html"),
    ("Calvin cycle chlorophyll", "photosynthesis.txt"),
    ("tokio spawn async tasks", "tokio-runtime.md"),
    ("honeybee waggle dance", "honeybees.md"),
    ("LFP battery cycle life", "ev-batteries.md"),
    ("BM25 k1 parameter", "bm25.md"),
];

fn collection() -> OfflineSearch {
    OfflineSearch::new(fixture_path("docs"))
}

#[tokio::test]
async fn the_relevant_document_ranks_first_for_every_query() {
    let search = collection();
    let documents = search.prepare().await.unwrap();
    let files = std::fs::read_dir(fixture_path("docs")).unwrap().count();
    assert_eq!(documents, files, "every committed document is indexed");
    let mut failures = Vec::new();
    for (query, expected) in QUERIES {
        let results = search.search(query, 3).await.unwrap();
        let top = results.first().map(|r| r.url.as_str()).unwrap_or("(none)");
        if top != expected {
            let ranked: Vec<&str> = results.iter().map(|r| r.url.as_str()).collect();
            failures.push(format!("{query:?}: expected {expected}, got {ranked:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn results_carry_front_matter_and_a_matching_snippet() {
    let results = collection().search("上证指数 开盘", 2).await.unwrap();
    let top = &results[0];
    assert_eq!(top.title, "沪指开盘跌0.1% 深成指跌0.33%");
    assert_eq!(top.date.as_deref(), Some("2025-08-28"));
    assert_eq!(top.source, "每日经济新闻");
    assert!(top.snippet.contains("上证指数开盘跌3.64点"), "{}", top.snippet);

    let results = collection().search("Everest height", 1).await.unwrap();
    assert_eq!(results[0].title, "Mount Everest");
    assert!(results[0].snippet.contains("8,848.86"), "{}", results[0].snippet);
    assert!(!results[0].snippet.contains("Home"), "navigation leaked: {}", results[0].snippet);
}

#[tokio::test]
async fn queries_without_matches_or_terms_return_nothing() {
    let search = collection();
    assert!(search.search("xqzvvy plorth", 5).await.unwrap().is_empty());
    assert!(search.search("the of and", 5).await.unwrap().is_empty(), "stop words only");
    assert!(search.search("!!! ???", 5).await.unwrap().is_empty());
}

#[tokio::test]
async fn web_search_defaults_to_the_offline_provider() {
    let config = WebSearchConfig {
        offline: OfflineConfig { documents: Some(fixture_path("docs")), index_dir: None },
        ..WebSearchConfig::default()
    };
    let tool = WebSearch::from_config(&config).unwrap();
    assert_eq!(tool.provider_name(), "offline search");
    let mut registry = ToolRegistry::new();
    registry.register(tool).unwrap();
    let result =
        registry.call(ToolCall::new("web_search", json!({"query": "大理 门票价格"}))).await;
    let text = result.model_text();
    assert!(text.starts_with("Search results for \"大理 门票价格\":\n\n[1] 大理旅游攻略：景点、门票价格与路线 (旅行笔记, 2025-06-10)"), "{text}");
}

#[tokio::test]
async fn an_on_disk_index_is_reused_until_the_collection_changes() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("a.md"), "# Alpha\nThe aardvark eats ants at night.\n").unwrap();
    let index_dir = dir.path().join("index");

    let first = OfflineSearch::new(&docs).with_index_dir(&index_dir);
    assert_eq!(first.prepare().await.unwrap(), 1);
    assert_eq!(first.search("aardvark", 3).await.unwrap()[0].title, "Alpha");
    drop(first);

    // Same collection: the index on disk is opened, and still answers.
    let again = OfflineSearch::new(&docs).with_index_dir(&index_dir);
    assert_eq!(again.search("ants", 3).await.unwrap()[0].url, "a.md");
    drop(again);

    // A new document changes the fingerprint: the index is rebuilt with it.
    std::fs::write(docs.join("b.txt"), "Beta\nThe badger digs burrows.\n").unwrap();
    let rebuilt = OfflineSearch::new(&docs).with_index_dir(&index_dir);
    assert_eq!(rebuilt.search("badger burrows", 3).await.unwrap()[0].title, "Beta");

    // A non-empty directory that is not ours is never cleared.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep me").unwrap();
    let refused = OfflineSearch::new(&docs).with_index_dir(&foreign);
    assert!(refused.prepare().await.is_err());
    assert!(foreign.join("precious.txt").exists());
}
