//! Page fetch with an SSRF guard: read the text of a web page whose URL came from the model
//! or from search results, without letting it reach internal services.
//!
//! # The guard
//!
//! - Only `http` and `https` URLs are fetched.
//! - A host written as an IP address is checked against the [`AddressPolicy`] before
//!   connecting. A host name is resolved once, by the client's own (guarded) resolver,
//!   which refuses the name if *any* of its addresses is blocked and otherwise hands
//!   exactly those checked addresses to the connector: there is no second DNS lookup that
//!   a rebinding DNS server could answer differently.
//! - Redirects are not followed by the HTTP client; [`PageFetcher::fetch`] follows them
//!   itself, checking every hop the same way.
//! - The client ignores proxy environment variables (a proxy would resolve names itself).
//!
//! Blocked by default: loopback, private (RFC 1918), CGNAT, link-local (including the cloud
//! metadata address 169.254.169.254), unspecified, multicast, broadcast, reserved and
//! documentation ranges, IPv6 unique-local, site-local and link-local, and IPv6 addresses
//! that embed a blocked IPv4 address. `allow_private` or `allowed_networks` in the config
//! lift the block.

mod policy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use url::{Host, Url};

pub use policy::{blocked_reason, AddressPolicy};

use crate::config::FetchConfig;
use crate::{html, http, text, Error, Result};

/// The service name in errors and logs.
const SERVICE: &str = "page fetch";

/// Resolves host names to IP addresses. [`SystemLookup`] asks the operating system; tests
/// substitute their own to make a name resolve to a blocked address.
pub trait HostLookup: Send + Sync + 'static {
    /// The addresses of `host` (no port).
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    }
}

/// A host name refused because it resolves to a blocked address.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, {reason}")]
struct BlockedHost {
    host: String,
    ip: IpAddr,
    reason: &'static str,
}

/// The HTTP client's DNS resolver: looks the name up and refuses it if any address is
/// blocked by the policy; otherwise the connector uses exactly the addresses checked.
struct GuardedResolver {
    lookup: Arc<dyn HostLookup>,
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = Arc::clone(&self.lookup);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let ips = lookup.lookup(&host).await?;
            if ips.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no addresses"),
                )
                .into());
            }
            for &ip in &ips {
                if let Some(reason) = policy.check(ip) {
                    return Err(Box::new(BlockedHost { host, ip, reason }) as _);
                }
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A fetched page's readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The URL the text came from, after redirects.
    pub url: String,
    /// The page title, if it has one.
    pub title: Option<String>,
    /// The readable text, at most `max_chars_per_page` characters.
    pub text: String,
    /// Whether the body or the text was cut at a limit.
    pub truncated: bool,
}

/// Fetches pages through the SSRF guard (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct PageFetcher {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    max_bytes: usize,
    max_chars: usize,
    max_redirects: usize,
}

impl PageFetcher {
    /// A fetcher with the system resolver.
    pub fn from_config(config: &FetchConfig) -> Result<Self> {
        Self::with_lookup(config, Arc::new(SystemLookup))
    }

    /// A fetcher whose host names are resolved by `lookup`.
    pub fn with_lookup(config: &FetchConfig, lookup: Arc<dyn HostLookup>) -> Result<Self> {
        let policy = Arc::new(AddressPolicy::from_config(config)?);
        let timeout = Duration::from_millis(config.timeout_ms);
        let resolver = Arc::new(GuardedResolver { lookup, policy: Arc::clone(&policy) });
        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .user_agent(config.user_agent.as_str())
            .build()
            .map_err(|e| Error::Config {
                field: "tools.web_search.fetch".into(),
                reason: crate::error_text::chain(&e),
            })?;
        Ok(Self {
            client,
            policy,
            timeout,
            max_bytes: config.max_bytes,
            max_chars: config.max_chars_per_page,
            max_redirects: config.max_redirects,
        })
    }

    /// Fetches `url` and extracts its text. Refuses blocked addresses (on every redirect
    /// hop), non-http(s) URLs and content types other than HTML and plain text; reads at
    /// most `max_bytes` of the body.
    pub async fn fetch(&self, url: &str) -> Result<Page> {
        let mut current = Url::parse(url).map_err(|e| Error::InvalidArgument {
            name: "url",
            reason: format!("{url:?} is not a URL: {e}"),
        })?;
        for _ in 0..=self.max_redirects {
            self.check_url(&current)?;
            let shown = http::redact(&current);
            let response = self
                .client
                .get(current.clone())
                .header(ACCEPT, "text/html,application/xhtml+xml,text/plain;q=0.9")
                .send()
                .await
                .map_err(|e| self.send_error(&shown, e))?;
            let status = response.status();
            if status.is_redirection() {
                if let Some(location) = response.headers().get(LOCATION) {
                    let location = location.to_str().unwrap_or_default();
                    current = current.join(location).map_err(|e| Error::MalformedResponse {
                        service: SERVICE,
                        url: shown.clone(),
                        detail: format!("redirect to {location:?} is not a URL: {e}"),
                    })?;
                    continue;
                }
            }
            if !status.is_success() {
                return Err(http::status_error(SERVICE, &shown, self.timeout, response).await);
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let mime = content_type.split(';').next().unwrap_or("").trim().to_owned();
            let is_html = matches!(mime.as_str(), "text/html" | "application/xhtml+xml");
            if !is_html && mime != "text/plain" {
                return Err(Error::UnsupportedContentType { url: shown, content_type });
            }
            let (body, cut) =
                http::read_prefix(SERVICE, &shown, self.timeout, response, self.max_bytes).await?;
            let body = String::from_utf8_lossy(&body);
            let (title, full_text) = if is_html {
                let page = html::extract(&body);
                (page.title, page.text)
            } else {
                let lines: Vec<String> = body
                    .lines()
                    .map(text::collapse_whitespace)
                    .filter(|line| !line.is_empty())
                    .collect();
                (None, lines.join("\n"))
            };
            let text = text::truncate_chars(&full_text, self.max_chars);
            let truncated = cut || text != full_text;
            return Ok(Page { url: current.to_string(), title, text, truncated });
        }
        Err(Error::TooManyRedirects { url: url.to_owned(), limit: self.max_redirects })
    }

    /// Refuses URLs that are not http(s) or whose host is a blocked IP address. Host names
    /// are checked by the resolver when the request connects.
    fn check_url(&self, url: &Url) -> Result<()> {
        let blocked = |reason: String| Error::Blocked { url: http::redact(url), reason };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(blocked(format!("scheme {:?} is not http or https", url.scheme())));
        }
        let ip = match url.host() {
            None => return Err(blocked("the URL has no host".into())),
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        match self.policy.check(ip) {
            Some(reason) => Err(blocked(format!("{ip} is {reason}"))),
            None => Ok(()),
        }
    }

    /// Maps a send failure, recognising the resolver's refusal.
    fn send_error(&self, url: &str, error: reqwest::Error) -> Error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(inner) = source {
            if let Some(blocked) = inner.downcast_ref::<BlockedHost>() {
                return Error::Blocked { url: url.to_owned(), reason: blocked.to_string() };
            }
            source = inner.source();
        }
        http::transport_error(SERVICE, url, self.timeout, error)
    }
}
