//! HTTP plumbing shared by the API providers: endpoint URLs, status and transport error
//! mapping, `Retry-After`, and body reads capped at a byte limit.

use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_LENGTH, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::{Error, Result};

/// Query parameters whose values are secrets, blanked in URLs that reach logs.
const SECRET_PARAMS: [&str; 5] = ["apikey", "api_key", "key", "token", "access_token"];

/// Bytes of an error response kept for the log detail.
const ERROR_BODY_BYTES: usize = 2048;

/// A client for one API provider: a whole-request timeout and no cookies or redirects
/// beyond reqwest's default of ten.
pub(crate) fn api_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("voxloop/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config {
            field: "tools (HTTP client)".into(),
            reason: crate::error_text::chain(&e),
        })
}

/// `base` (a configured API root, with or without a trailing slash) joined with `path`.
pub(crate) fn endpoint(field: &str, base: &str, path: &str) -> Result<Url> {
    let mut url = Url::parse(base).map_err(|e| Error::Config {
        field: field.to_owned(),
        reason: format!("{base:?} is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config {
            field: field.to_owned(),
            reason: format!("{base:?} is not an http(s) URL"),
        });
    }
    let joined = format!("{}/{}", url.path().trim_end_matches('/'), path.trim_start_matches('/'));
    url.set_path(&joined);
    Ok(url)
}

/// The value of the environment variable `var`, which must be set and not empty.
pub(crate) fn api_key_from_env(field: &str, var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        _ => Err(Error::Config {
            field: field.to_owned(),
            reason: format!("the environment variable {var} (the API key) is not set"),
        }),
    }
}

/// `url` with the values of secret query parameters replaced by `***`, for logs.
pub(crate) fn redact(url: &Url) -> String {
    if url.query().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
            (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
        })
        .collect();
    shown.query_pairs_mut().clear().extend_pairs(pairs);
    shown.to_string()
}

/// Maps a transport error of a request to `url`.
pub(crate) fn transport_error(
    service: &'static str,
    url: &str,
    timeout: Duration,
    error: reqwest::Error,
) -> Error {
    if error.is_timeout() {
        return Error::Timeout { service, url: url.to_owned(), timeout };
    }
    let transient = error.is_connect() || error.is_request() || error.is_body();
    Error::Request { service, url: url.to_owned(), transient, source: error }
}

/// Sends `request` and returns the response if its status is a success; any other status
/// becomes the matching [`Error`] (401/403 auth, 429 rate limited, 5xx server error, other
/// 4xx rejected), with a little of the body as detail.
pub(crate) async fn send(
    service: &'static str,
    url: &str,
    timeout: Duration,
    request: RequestBuilder,
) -> Result<Response> {
    let response = request.send().await.map_err(|e| transport_error(service, url, timeout, e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(status_error(service, url, timeout, response).await)
}

/// The error for a response with a non-success `status`.
pub(crate) async fn status_error(
    service: &'static str,
    url: &str,
    timeout: Duration,
    response: Response,
) -> Error {
    let status = response.status();
    let retry_after = retry_after(response.headers(), jiff::Timestamp::now());
    let detail = match read_prefix(service, url, timeout, response, ERROR_BODY_BYTES).await {
        Ok((body, _)) => summarize_body(&body),
        Err(e) => format!("(body unreadable: {e})"),
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Error::Auth { service, status: status.as_u16(), detail }
        }
        StatusCode::TOO_MANY_REQUESTS => Error::RateLimited { service, retry_after, detail },
        s if s.is_server_error() => {
            Error::ServerError { service, status: s.as_u16(), retry_after, detail }
        }
        s => Error::Rejected { service, status: s.as_u16(), detail },
    }
}

/// The body of a successful response, parsed as JSON. A body longer than `limit` bytes
/// (announced or actual) is [`Error::BodyTooLarge`]; one that does not parse is
/// [`Error::MalformedResponse`].
pub(crate) async fn json_body<T: DeserializeOwned>(
    service: &'static str,
    url: &str,
    timeout: Duration,
    response: Response,
    limit: usize,
) -> Result<T> {
    if let Some(announced) = content_length(response.headers()) {
        if announced > limit as u64 {
            return Err(Error::BodyTooLarge { service, url: url.to_owned(), limit });
        }
    }
    let (body, truncated) = read_prefix(service, url, timeout, response, limit).await?;
    if truncated {
        return Err(Error::BodyTooLarge { service, url: url.to_owned(), limit });
    }
    serde_json::from_slice(&body).map_err(|e| Error::MalformedResponse {
        service,
        url: url.to_owned(),
        detail: format!("{e}; body starts with {:?}", excerpt(&body, 120)),
    })
}

/// Reads at most `limit` bytes of the body, chunk by chunk, and stops there: returns the
/// bytes and whether the body went on past the limit. Nothing past `limit` (plus one
/// chunk) is held in memory.
pub(crate) async fn read_prefix(
    service: &'static str,
    url: &str,
    timeout: Duration,
    mut response: Response,
    limit: usize,
) -> Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    loop {
        let chunk =
            response.chunk().await.map_err(|e| transport_error(service, url, timeout, e))?;
        let Some(chunk) = chunk else { return Ok((body, false)) };
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
}

/// The `Content-Length` header, if present and numeric.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// How long a response asks the client to wait: `Retry-After` as seconds or as an
/// HTTP-date (relative to `now`), else the first number of Brave's `X-RateLimit-Reset`
/// (seconds until the shortest window resets).
pub(crate) fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    if let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let Ok(when) = jiff::fmt::rfc2822::parse(value) {
            let wait = when.timestamp().duration_since(now);
            return Some(Duration::try_from(wait).unwrap_or(Duration::ZERO));
        }
    }
    let reset = headers.get("x-ratelimit-reset")?.to_str().ok()?;
    let first = reset.split(',').next()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(first))
}

/// A short, single-line rendering of an error body for logs.
fn summarize_body(body: &[u8]) -> String {
    let text = excerpt(body, 300);
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

/// The first `max_chars` characters of `bytes` as lossy UTF-8, whitespace collapsed.
pub(crate) fn excerpt(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::text::truncate_chars(&collapsed, max_chars)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_brave_reset() {
        let now: jiff::Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();
        let secs = headers(&[("retry-after", "7")]);
        assert_eq!(retry_after(&secs, now), Some(Duration::from_secs(7)));
        let date = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(60)));
        let past = headers(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]);
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        let brave = headers(&[("x-ratelimit-reset", "1, 1419704")]);
        assert_eq!(retry_after(&brave, now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
    }

    #[test]
    fn endpoints_join_paths_and_reject_other_schemes() {
        let url = endpoint("f", "https://api.example.com/", "/res/v1/web/search").unwrap();
        assert_eq!(url.as_str(), "https://api.example.com/res/v1/web/search");
        let url = endpoint("f", "http://127.0.0.1:9/searx", "search").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/searx/search");
        assert!(endpoint("f", "ftp://x", "search").is_err());
        assert!(endpoint("f", "not a url", "search").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_logged_urls() {
        let url = Url::parse("https://x.test/v1/search?name=Berlin&apikey=s3cret").unwrap();
        let shown = redact(&url);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("name=Berlin"), "{shown}");
    }
}
