//! Normalising, deduplicating and rendering search results.
//!
//! The text for the model is plain prose, one block per result:
//!
//! ```text
//! Search results for "上证指数 开盘":
//!
//! [1] 沪指开盘跌0.1% (cls.cn, 2025-08-28)
//! 每经AI快讯：北京时间8月28日，上证指数开盘跌3.64点，跌幅为0.1%，报3796.71点……
//!
//! [2] …
//! ```
//!
//! URLs are not shown: a spoken answer does not read them out, and they cost tokens.

use std::collections::HashSet;

use url::Url;

use super::SearchResult;
use crate::text::{approx_tokens, collapse_whitespace, truncate_tokens};

/// Query parameters that only track the visitor, dropped when comparing URLs.
const TRACKING_PARAMS: [&str; 8] =
    ["fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "igshid", "spm"];

/// The fewest tokens worth showing of a result's snippet when the budget runs out.
const MIN_SNIPPET_TOKENS: usize = 12;

/// Cleans every result (HTML and entities stripped, whitespace collapsed, dates
/// normalised, empty titles and sources filled from the URL), drops results with neither
/// title nor snippet, and keeps the first of results with the same normalised URL.
pub fn normalize(results: Vec<SearchResult>) -> Vec<SearchResult> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(results.len());
    for result in results {
        let url = result.url.trim().to_owned();
        let mut title = crate::html::inline_text(&result.title);
        let snippet = crate::html::inline_text(&result.snippet);
        if title.is_empty() && snippet.is_empty() {
            continue;
        }
        if !url.is_empty() && !seen.insert(normalize_url(&url)) {
            continue;
        }
        let host = host_of(&url);
        if title.is_empty() {
            title = host.clone().unwrap_or_else(|| url.clone());
        }
        let source = collapse_whitespace(&result.source);
        let source = if source.is_empty() { host.unwrap_or_default() } else { source };
        let date = result.date.as_deref().and_then(normalize_date);
        out.push(SearchResult { title, url, snippet, date, source });
    }
    out
}

/// The key two URLs of the same page share: scheme-less, host lower-cased without `www.`,
/// default port, fragment, tracking parameters (`utm_*`, `fbclid`, …) and trailing slash
/// dropped. A string that is not a URL is its own key (trimmed, lower-cased).
pub fn normalize_url(url: &str) -> String {
    let Ok(parsed) = Url::parse(url.trim()) else {
        return url.trim().to_lowercase();
    };
    let host = parsed.host_str().unwrap_or("").trim_start_matches("www.").to_lowercase();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = parsed.path().trim_end_matches('/');
    let mut query: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !k.starts_with("utm_") && !TRACKING_PARAMS.contains(&k.as_str())
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    format!("{host}{port}{path}{query}")
}

/// `YYYY-MM-DD` for dates the providers send: ISO 8601 dates and date-times (with or
/// without zone), RFC 2822 (`Wed, 13 Mar 2024 10:20:00 GMT`). Other non-empty text (a
/// relative "2 days ago") is kept as it is.
pub fn normalize_date(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Some(prefix) = raw.get(..10) {
        if let Ok(date) = prefix.parse::<jiff::civil::Date>() {
            return Some(date.to_string());
        }
    }
    if let Ok(zoned) = jiff::fmt::rfc2822::parse(raw) {
        return Some(zoned.date().to_string());
    }
    Some(collapse_whitespace(raw))
}

/// The results as text for the model, at most `max_tokens` (estimated) long.
///
/// Results are added whole while they fit; the first one that does not is cut to the
/// remaining budget (if enough is left to be useful) and the rest are dropped. The first
/// result is always shown, cut if need be.
pub fn render(query: &str, results: &[SearchResult], max_tokens: usize) -> String {
    if results.is_empty() {
        return format!("No results were found for \"{query}\".");
    }
    let mut out = format!("Search results for \"{query}\":");
    let mut used = approx_tokens(&out);
    for (i, result) in results.iter().enumerate() {
        let mut header = format!("\n\n[{}] {}", i + 1, result.title);
        match (result.source.is_empty(), &result.date) {
            (false, Some(date)) => header.push_str(&format!(" ({}, {date})", result.source)),
            (false, None) => header.push_str(&format!(" ({})", result.source)),
            (true, Some(date)) => header.push_str(&format!(" ({date})")),
            (true, None) => {}
        }
        let header_tokens = approx_tokens(&header);
        let block_tokens = header_tokens + 1 + approx_tokens(&result.snippet);
        if used + block_tokens <= max_tokens {
            out.push_str(&header);
            if !result.snippet.is_empty() {
                out.push('\n');
                out.push_str(&result.snippet);
            }
            used += block_tokens;
            continue;
        }
        let room = max_tokens.saturating_sub(used + header_tokens + 1);
        if i == 0 || room >= MIN_SNIPPET_TOKENS {
            let header = if i == 0 && used + header_tokens > max_tokens {
                truncate_tokens(&header, max_tokens.saturating_sub(used))
            } else {
                header
            };
            out.push_str(&header);
            if room > 0 && !result.snippet.is_empty() {
                out.push('\n');
                out.push_str(&truncate_tokens(&result.snippet, room));
            }
        }
        break;
    }
    out
}

/// The host of `url` without `www.`, if it is a URL with a host.
fn host_of(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(host.trim_start_matches("www.").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(title: &str, url: &str, snippet: &str) -> SearchResult {
        SearchResult {
            title: title.into(),
            url: url.into(),
            snippet: snippet.into(),
            date: None,
            source: String::new(),
        }
    }

    #[test]
    fn urls_of_the_same_page_share_a_key() {
        let key = normalize_url("https://www.Example.com/a/b/?utm_source=x&id=3#top");
        assert_eq!(key, "example.com/a/b?id=3");
        assert_eq!(normalize_url("http://example.com/a/b?id=3&fbclid=zz"), key);
        assert_ne!(normalize_url("https://example.com/a/c?id=3"), key);
        assert_ne!(normalize_url("https://example.com:8443/a/b?id=3"), key);
    }

    #[test]
    fn normalize_strips_html_dedups_and_fills_sources() {
        let mut first = result(
            "<b>Rust</b> &amp; you",
            "https://www.rust-lang.org/",
            "A <strong>language</strong>",
        );
        first.date = Some("2024-03-13T09:00:00".into());
        let dup = result("Rust again", "http://rust-lang.org", "duplicate");
        let empty = result("", "https://x.test/", "");
        let untitled = result("", "https://docs.rs/tokio", "Async runtime");
        let out = normalize(vec![first, dup, empty, untitled]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].title, "Rust & you");
        assert_eq!(out[0].snippet, "A language");
        assert_eq!(out[0].source, "rust-lang.org");
        assert_eq!(out[0].date.as_deref(), Some("2024-03-13"));
        assert_eq!(out[1].title, "docs.rs");
    }

    #[test]
    fn dates_normalise_from_iso_and_rfc2822_and_keep_other_text() {
        assert_eq!(normalize_date("2025-08-28").as_deref(), Some("2025-08-28"));
        assert_eq!(normalize_date("2025-08-28T01:02:03+08:00").as_deref(), Some("2025-08-28"));
        assert_eq!(normalize_date("Wed, 13 Mar 2024 10:20:00 GMT").as_deref(), Some("2024-03-13"));
        assert_eq!(normalize_date(" 2 days ago ").as_deref(), Some("2 days ago"));
        assert_eq!(normalize_date("  "), None);
    }

    #[test]
    fn render_fits_the_budget_and_always_shows_the_first_result() {
        let results: Vec<SearchResult> = (0..6)
            .map(|i| {
                result(&format!("Result {i}"), &format!("https://x.test/{i}"), &"word ".repeat(60))
            })
            .collect();
        for budget in [30, 100, 250, 10_000] {
            let text = render("q", &results, budget);
            assert!(approx_tokens(&text) <= budget, "{budget}: {} tokens", approx_tokens(&text));
            assert!(text.contains("[1] Result 0"), "{text}");
        }
        let all = render("q", &results, 10_000);
        assert!(all.contains("[6] Result 5"));
        assert!(!all.contains("https://"), "URLs are not shown: {all}");
        assert_eq!(render("nothing", &[], 100), "No results were found for \"nothing\".");
    }
}
