//! [`PolicyConfig`]: the policy section of the TOML file.
//!
//! ```toml
//! [policies]
//! allow = ["web_search", "get_*"]   # optional: only these tools (names or `prefix*`)
//! deny = ["shell"]                  # never these; wins over `allow`
//!
//! [policies.defaults]               # every tool, unless its own section says otherwise
//! timeout_ms = 30000
//! retries = 2
//!
//! [policies.tools.web_search]
//! timeout_ms = 8000
//! rate = { per_second = 1.0, burst = 3 }
//! concurrency = 4
//! max_output_bytes = 8000
//! retry_budget = { percent = 0.2 }
//!
//! [policies.tools.fetch]
//! allow_domains = ["wikipedia.org", "example.com"]
//!
//! [policies.tools.send_message]
//! approval = true
//! ```
//!
//! Every field of a tool section is optional and falls back to `defaults`, then to the
//! built-in default listed on [`ToolPolicy`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The policy section: name lists, defaults and per-tool sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// If set, only tools matching one of these patterns may be called.
    pub allow: Option<Vec<String>>,
    /// Tools matching one of these patterns may never be called.
    pub deny: Vec<String>,
    /// Settings for every tool.
    pub defaults: ToolPolicy,
    /// Settings per tool name, over `defaults`.
    pub tools: BTreeMap<String, ToolPolicy>,
}

/// The settings of one tool (or the defaults), each with its built-in default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolPolicy {
    /// `false` refuses every call. Skip registering a disabled tool
    /// ([`Policies::enabled`](crate::Policies::enabled)) so that the model is not told of it.
    /// Default: true.
    pub enable: Option<bool>,
    /// Deadline per attempt, in ms; 0 = none. Default: 30000.
    pub timeout_ms: Option<u64>,
    /// Retries after the first attempt, for transient failures of idempotent tools. Default: 2.
    pub retries: Option<u32>,
    /// Backoff before the first retry (the ceiling; waits are jittered), in ms. Default: 100.
    pub retry_base_ms: Option<u64>,
    /// Longest backoff, in ms. Default: 5000.
    pub retry_max_backoff_ms: Option<u64>,
    /// Longest `Retry-After` honoured, in ms; a longer one fails the call. Default: 30000.
    pub max_retry_after_ms: Option<u64>,
    /// A retry budget shared by all calls of the tool. Default: none.
    pub retry_budget: Option<BudgetConfig>,
    /// `false` treats the tool as having side effects: never retried, whatever the tool
    /// says of itself. `true` cannot make a non-idempotent tool retryable. Default: tool's own.
    pub idempotent: Option<bool>,
    /// A token-bucket rate limit. Default: none.
    pub rate: Option<RateConfig>,
    /// Most calls in flight. Default: no limit.
    pub concurrency: Option<usize>,
    /// At the concurrency limit: `true` refuses the call at once (Overloaded), `false`
    /// queues it. Default: true.
    pub shed: Option<bool>,
    /// Longest output text, in bytes, marker included; 0 = no cap. Default: 32768.
    pub max_output_bytes: Option<usize>,
    /// Ask the approver before every call. Default: false.
    pub approval: Option<bool>,
    /// How long to wait for an approval, in ms; 0 = forever. Default: 120000.
    pub approval_timeout_ms: Option<u64>,
    /// Only URLs on these domains (and subdomains) in the URL arguments. Default: any.
    pub allow_domains: Option<Vec<String>>,
    /// Never URLs on these domains (and subdomains). Default: none.
    pub deny_domains: Option<Vec<String>>,
    /// The arguments that hold URLs, for the domain lists. Default: `["url", "urls"]`.
    pub url_args: Option<Vec<String>>,
}

/// A token bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Calls a second on average (> 0; 0.2 is one call every 5 s).
    pub per_second: f64,
    /// Calls that may go at once after a quiet spell. Default: 1.
    #[serde(default = "one")]
    pub burst: u32,
    /// A call that would wait longer for its turn is refused (Overloaded), in ms. Default: 10000.
    #[serde(default = "ten_seconds_ms")]
    pub max_wait_ms: u64,
}

/// A retry budget (tower's `TpsBudget`): retries may add at most `percent` of the calls
/// made over the last `ttl_secs`, plus `min_per_second` retries a second whatever the
/// traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries as a fraction of calls (0.2 = one retry per five calls), 0 to 1000.
    pub percent: f32,
    /// Retries a second always allowed. Default: 1.
    #[serde(default = "one")]
    pub min_per_second: u32,
    /// The window calls are counted over, in seconds, 1 to 60. Default: 10.
    #[serde(default = "ten")]
    pub ttl_secs: u64,
}

fn one() -> u32 {
    1
}

fn ten() -> u64 {
    10
}

fn ten_seconds_ms() -> u64 {
    10_000
}

/// A tool's settings with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effective {
    pub(crate) enable: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_attempts: u32,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max_backoff: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) retry_budget: Option<BudgetConfig>,
    pub(crate) idempotent: bool,
    pub(crate) rate: Option<RateConfig>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) shed: bool,
    pub(crate) max_output_bytes: Option<usize>,
    pub(crate) approval: bool,
    pub(crate) approval_timeout: Option<Duration>,
    pub(crate) allow_domains: Option<Vec<String>>,
    pub(crate) deny_domains: Vec<String>,
    pub(crate) url_args: Vec<String>,
}

impl PolicyConfig {
    /// Checks every value; the error names the section and the field.
    pub fn validate(&self) -> Result<()> {
        self.defaults.validate("defaults")?;
        for (name, tool) in &self.tools {
            tool.validate(&format!("tools.{name}"))?;
        }
        Ok(())
    }

    /// The section for `tool` over the defaults.
    pub fn tool(&self, tool: &str) -> ToolPolicy {
        match self.tools.get(tool) {
            Some(own) => own.over(&self.defaults),
            None => self.defaults.clone(),
        }
    }

    /// Whether `tool` is enabled and passes the allow and deny lists: register only such
    /// tools, so that the model is told only of tools it may call.
    pub fn enabled(&self, tool: &str) -> bool {
        let listed = crate::AccessList::new(self.allow.clone(), self.deny.clone());
        self.tool(tool).enable.unwrap_or(true) && listed.check(tool).is_ok()
    }

    /// Whether calls of `tool` wait for an approval, and if so how long at most (`None`:
    /// forever); `None` when `tool` needs no approval.
    pub fn approval(&self, tool: &str) -> Option<Option<Duration>> {
        let settings = self.effective(tool);
        settings.approval.then_some(settings.approval_timeout)
    }

    /// `tool`'s settings with every default applied.
    pub(crate) fn effective(&self, tool: &str) -> Effective {
        let p = self.tool(tool);
        let ms = Duration::from_millis;
        Effective {
            enable: p.enable.unwrap_or(true),
            timeout: Some(p.timeout_ms.unwrap_or(30_000)).filter(|&t| t > 0).map(ms),
            max_attempts: p.retries.unwrap_or(2).saturating_add(1),
            retry_base: ms(p.retry_base_ms.unwrap_or(100)),
            retry_max_backoff: ms(p.retry_max_backoff_ms.unwrap_or(5_000)),
            max_retry_after: ms(p.max_retry_after_ms.unwrap_or(30_000)),
            retry_budget: p.retry_budget,
            idempotent: p.idempotent.unwrap_or(true),
            rate: p.rate,
            concurrency: p.concurrency,
            shed: p.shed.unwrap_or(true),
            max_output_bytes: Some(p.max_output_bytes.unwrap_or(32_768)).filter(|&b| b > 0),
            approval: p.approval.unwrap_or(false),
            approval_timeout: Some(p.approval_timeout_ms.unwrap_or(120_000))
                .filter(|&t| t > 0)
                .map(ms),
            allow_domains: p.allow_domains,
            deny_domains: p.deny_domains.unwrap_or_default(),
            url_args: p.url_args.unwrap_or_else(|| vec!["url".into(), "urls".into()]),
        }
    }
}

impl ToolPolicy {
    /// `self`, with every unset field taken from `defaults`.
    pub fn over(&self, defaults: &ToolPolicy) -> ToolPolicy {
        let d = defaults.clone();
        let s = self.clone();
        ToolPolicy {
            enable: s.enable.or(d.enable),
            timeout_ms: s.timeout_ms.or(d.timeout_ms),
            retries: s.retries.or(d.retries),
            retry_base_ms: s.retry_base_ms.or(d.retry_base_ms),
            retry_max_backoff_ms: s.retry_max_backoff_ms.or(d.retry_max_backoff_ms),
            max_retry_after_ms: s.max_retry_after_ms.or(d.max_retry_after_ms),
            retry_budget: s.retry_budget.or(d.retry_budget),
            idempotent: s.idempotent.or(d.idempotent),
            rate: s.rate.or(d.rate),
            concurrency: s.concurrency.or(d.concurrency),
            shed: s.shed.or(d.shed),
            max_output_bytes: s.max_output_bytes.or(d.max_output_bytes),
            approval: s.approval.or(d.approval),
            approval_timeout_ms: s.approval_timeout_ms.or(d.approval_timeout_ms),
            allow_domains: s.allow_domains.or(d.allow_domains),
            deny_domains: s.deny_domains.or(d.deny_domains),
            url_args: s.url_args.or(d.url_args),
        }
    }

    fn validate(&self, section: &str) -> Result<()> {
        let bad = |field: &'static str, message: &str| {
            Err(Error::Config { section: section.to_owned(), field, message: message.to_owned() })
        };
        if self.concurrency == Some(0) {
            return bad("concurrency", "must be at least 1 (leave it out for no limit)");
        }
        if self.retries.is_some_and(|r| r > 100) {
            return bad("retries", "must be at most 100");
        }
        if self.retry_base_ms == Some(0) {
            return bad("retry_base_ms", "must be at least 1");
        }
        if let Some(rate) = &self.rate {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
                return bad("rate.per_second", "must be a number above 0");
            }
            if rate.burst == 0 {
                return bad("rate.burst", "must be at least 1");
            }
        }
        if let Some(budget) = &self.retry_budget {
            if !(0.0..=1000.0).contains(&budget.percent) {
                return bad("retry_budget.percent", "must be between 0 and 1000");
            }
            if !(1..=60).contains(&budget.ttl_secs) {
                return bad("retry_budget.ttl_secs", "must be between 1 and 60");
            }
            if budget.min_per_second >= i32::MAX as u32 {
                return bad("retry_budget.min_per_second", "is too large");
            }
        }
        for (field, domains) in
            [("allow_domains", &self.allow_domains), ("deny_domains", &self.deny_domains)]
        {
            let empty = domains.iter().flatten().any(|d| d.trim().trim_matches('.').is_empty());
            if empty {
                return bad(field, "holds an empty domain");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        allow = ["web_search", "get_*", "fetch", "send_message"]
        deny = ["get_secret"]

        [defaults]
        timeout_ms = 20000
        retries = 1

        [tools.web_search]
        timeout_ms = 8000
        rate = { per_second = 0.5, burst = 3 }
        concurrency = 4
        max_output_bytes = 8000
        retry_budget = { percent = 0.2 }

        [tools.fetch]
        allow_domains = ["wikipedia.org"]

        [tools.send_message]
        approval = true
        idempotent = false
        enable = false
    "#;

    #[test]
    fn parses_the_toml_section_and_layers_tool_sections_over_defaults() {
        let config: PolicyConfig = toml::from_str(EXAMPLE).unwrap();
        config.validate().unwrap();

        let search = config.effective("web_search");
        assert_eq!(search.timeout, Some(Duration::from_secs(8)));
        assert_eq!(search.max_attempts, 2, "retries from the defaults");
        assert_eq!(
            search.rate,
            Some(RateConfig { per_second: 0.5, burst: 3, max_wait_ms: 10_000 })
        );
        assert_eq!(search.concurrency, Some(4));
        assert_eq!(search.max_output_bytes, Some(8000));
        assert_eq!(
            search.retry_budget,
            Some(BudgetConfig { percent: 0.2, min_per_second: 1, ttl_secs: 10 })
        );

        let fetch = config.effective("fetch");
        assert_eq!(fetch.timeout, Some(Duration::from_secs(20)));
        assert_eq!(fetch.allow_domains, Some(vec!["wikipedia.org".to_owned()]));
        assert_eq!(fetch.url_args, ["url", "urls"]);
        assert_eq!(fetch.max_output_bytes, Some(32_768), "built-in default");

        let send = config.effective("send_message");
        assert!(send.approval && !send.idempotent && !send.enable);
        assert!(!config.enabled("send_message"), "disabled");
        assert!(!config.enabled("get_secret"), "denied");
        assert!(!config.enabled("shell"), "not on the allow list");
        assert!(config.enabled("get_weather"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values_naming_them() {
        let typo = toml::from_str::<PolicyConfig>("[tools.x]\ntimeout = 5").unwrap_err();
        assert!(typo.to_string().contains("unknown field `timeout`"), "{typo}");

        for (toml, expected) in [
            (
                "[tools.x]\nconcurrency = 0",
                "policy config [tools.x] concurrency: must be at least 1",
            ),
            ("[defaults]\nrate = { per_second = 0.0 }", "[defaults] rate.per_second"),
            ("[tools.y]\nretry_budget = { percent = 0.1, ttl_secs = 90 }", "retry_budget.ttl_secs"),
            ("[tools.z]\nallow_domains = [\"\"]", "[tools.z] allow_domains: holds an empty domain"),
        ] {
            let config: PolicyConfig = toml::from_str(toml).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn approval_settings_fall_back_to_the_defaults() {
        let config: PolicyConfig = toml::from_str(
            "[defaults]\napproval_timeout_ms = 9000\n[tools.a]\napproval = true\n\
             [tools.b]\napproval = true\napproval_timeout_ms = 0\n[tools.c]\napproval = false",
        )
        .unwrap();
        assert_eq!(config.approval("a"), Some(Some(Duration::from_secs(9))));
        assert_eq!(config.approval("b"), Some(None), "0 waits forever");
        assert_eq!(config.approval("c"), None);
        assert_eq!(config.approval("unlisted"), None);
        let plain: PolicyConfig = toml::from_str("[tools.a]\napproval = true").unwrap();
        assert_eq!(plain.approval("a"), Some(Some(Duration::from_secs(120))), "built-in default");
    }

    #[test]
    fn zero_turns_timeouts_and_caps_off() {
        let config: PolicyConfig =
            toml::from_str("[defaults]\ntimeout_ms = 0\nmax_output_bytes = 0\nretries = 0")
                .unwrap();
        let tool = config.effective("any");
        assert_eq!((tool.timeout, tool.max_output_bytes, tool.max_attempts), (None, None, 1));
    }
}
