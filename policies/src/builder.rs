//! [`Policies`]: builds each tool's layer stack from the [`PolicyConfig`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};
use voxloop_core::tool::{BoxError, BoxToolService, ToolCall, ToolError, ToolResult, ToolService};

use crate::access::{AccessLayer, AccessList};
use crate::approval::{ApprovalLayer, Approver};
use crate::classify::into_tool_error;
use crate::concurrency::ConcurrencyLayer;
use crate::config::{Effective, PolicyConfig};
use crate::guard::{ArgGuard, DomainGuard, GuardLayer};
use crate::output_cap::OutputCapLayer;
use crate::rate::{RateLimitLayer, TokenBucket};
use crate::retry::{Backoff, Jitter, RetryLayer};
use crate::timeout::TimeoutLayer;
use crate::Result;

/// Builds the policy stack of each tool from a [`PolicyConfig`], plus what the file cannot
/// hold: the [`Approver`] and guards written in code.
///
/// The stack, from the outside in: output cap, access (allow/deny/enable), guards, approval,
/// concurrency, rate, retry, timeout, tool (see the [crate docs](crate) for why). A layer
/// whose setting is off is left out. The limits of a tool (its semaphore, token bucket and
/// retry budget) are made once per tool name and shared by every stack this `Policies` (or
/// a clone of it) builds for that name.
#[derive(Clone)]
pub struct Policies {
    config: Arc<PolicyConfig>,
    approver: Option<Arc<dyn Approver>>,
    guards: HashMap<String, Vec<Arc<dyn ArgGuard>>>,
    jitter: Jitter,
    limits: Arc<Mutex<HashMap<String, Arc<Limits>>>>,
}

/// The state one tool's stacks share.
struct Limits {
    semaphore: Option<(Arc<Semaphore>, usize)>,
    bucket: Option<Arc<TokenBucket>>,
    budget: Option<Arc<TpsBudget>>,
}

impl Policies {
    /// Policies from `config`, which is checked first.
    pub fn new(config: PolicyConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            approver: None,
            guards: HashMap::new(),
            jitter: Jitter::full(),
            limits: Arc::default(),
        })
    }

    /// Who answers for tools with `approval = true`. Without one, their calls are refused.
    #[must_use]
    pub fn with_approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = Some(approver);
        self
    }

    /// Adds a guard on `tool`'s arguments, checked after the configured domain lists.
    #[must_use]
    pub fn with_guard(mut self, tool: impl Into<String>, guard: impl ArgGuard) -> Self {
        self.guards.entry(tool.into()).or_default().push(Arc::new(guard));
        self
    }

    /// Replaces the retry jitter ([`Jitter::none`] for predictable waits).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Whether `tool` may be called at all (see [`PolicyConfig::enabled`]).
    pub fn enabled(&self, tool: &str) -> bool {
        self.config.enabled(tool)
    }

    /// The closure for
    /// [`ToolRegistry::register_with`](voxloop_core::tool::ToolRegistry::register_with): it
    /// wraps each tool in its stack, reading the tool's name and whether it is idempotent.
    pub fn layers(&self) -> impl Fn(ToolService) -> BoxToolService + Clone + Send + Sync + 'static {
        let policies = self.clone();
        move |service: ToolService| {
            let name = service.name().to_owned();
            let idempotent = service.idempotent();
            policies.stack(&name, idempotent, service)
        }
    }

    /// Wraps `inner`, the service of tool `tool`, in the stack its settings call for.
    /// `idempotent` is what the tool says of itself; the configuration can only turn it off.
    pub fn stack<S>(&self, tool: &str, idempotent: bool, inner: S) -> BoxToolService
    where
        S: Service<ToolCall, Response = ToolResult> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let settings = self.config.effective(tool);
        let limits = self.limits(tool, &settings);
        let mut layers: Vec<&'static str> = Vec::new();
        let name = tool.to_owned();
        let mut service = boxed(inner.map_err(move |e| into_tool_error(&name, e)));

        if let Some(timeout) = settings.timeout {
            service = boxed(TimeoutLayer::new(timeout).layer(service));
            layers.push("timeout");
        }
        if settings.max_attempts > 1 && idempotent && settings.idempotent {
            let backoff = Backoff::new(settings.retry_base, settings.retry_max_backoff)
                .with_jitter(self.jitter.clone());
            let mut retry = RetryLayer::new(settings.max_attempts, backoff)
                .max_retry_after(settings.max_retry_after);
            if let Some(budget) = &limits.budget {
                retry = retry.budget(Arc::clone(budget));
            }
            service = boxed(retry.layer(service));
            layers.push("retry");
        }
        if let Some(bucket) = &limits.bucket {
            service = boxed(RateLimitLayer::shared(Arc::clone(bucket)).layer(service));
            layers.push("rate");
        }
        if let Some((semaphore, max)) = &limits.semaphore {
            let layer = ConcurrencyLayer::shared(Arc::clone(semaphore), *max, settings.shed);
            service = boxed(layer.layer(service));
            layers.push("concurrency");
        }
        if settings.approval {
            let layer = match &self.approver {
                Some(approver) => {
                    ApprovalLayer::new(Arc::clone(approver), settings.approval_timeout)
                }
                None => {
                    tracing::warn!(
                        tool,
                        "approval required but no approver set: calls will be refused"
                    );
                    ApprovalLayer::unanswered()
                }
            };
            service = boxed(layer.layer(service));
            layers.push("approval");
        }
        let guards = self.guards_for(tool, &settings);
        if !guards.is_empty() {
            service = boxed(GuardLayer::new(guards).layer(service));
            layers.push("guards");
        }
        if let Some(access) = self.access_for(&settings) {
            service = boxed(AccessLayer::new(access).layer(service));
            layers.push("access");
        }
        if let Some(max_bytes) = settings.max_output_bytes {
            service = boxed(OutputCapLayer::new(max_bytes).layer(service));
            layers.push("output_cap");
        }
        layers.reverse();
        tracing::debug!(tool, ?layers, "tool policy stack, outermost first");
        service
    }

    /// The shared limits of `tool`, made on first use.
    fn limits(&self, tool: &str, settings: &Effective) -> Arc<Limits> {
        let mut all = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = all.entry(tool.to_owned()).or_insert_with(|| {
            Arc::new(Limits {
                semaphore: settings.concurrency.map(|max| (Arc::new(Semaphore::new(max)), max)),
                bucket: settings.rate.as_ref().map(|rate| {
                    let max_wait = Duration::from_millis(rate.max_wait_ms);
                    Arc::new(TokenBucket::new(rate.per_second, rate.burst, max_wait))
                }),
                budget: settings.retry_budget.as_ref().map(|budget| {
                    let ttl = Duration::from_secs(budget.ttl_secs);
                    Arc::new(TpsBudget::new(ttl, budget.min_per_second, budget.percent))
                }),
            })
        });
        Arc::clone(limits)
    }

    /// The configured domain lists, then the guards added in code.
    fn guards_for(&self, tool: &str, settings: &Effective) -> Vec<Arc<dyn ArgGuard>> {
        let mut guards: Vec<Arc<dyn ArgGuard>> = Vec::new();
        if settings.allow_domains.is_some() || !settings.deny_domains.is_empty() {
            let mut domains =
                DomainGuard::new(settings.url_args.iter()).deny(settings.deny_domains.iter());
            if let Some(allow) = &settings.allow_domains {
                domains = domains.allow(allow.iter());
            }
            guards.push(Arc::new(domains));
        }
        guards.extend(self.guards.get(tool).into_iter().flatten().cloned());
        guards
    }

    /// The access list, if anything is restricted.
    fn access_for(&self, settings: &Effective) -> Option<AccessList> {
        if !settings.enable {
            return Some(AccessList::deny_all());
        }
        let config = &self.config;
        (config.allow.is_some() || !config.deny.is_empty())
            .then(|| AccessList::new(config.allow.clone(), config.deny.clone()))
    }
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("config", &self.config)
            .field("has_approver", &self.approver.is_some())
            .field("guarded_tools", &self.guards.keys().collect::<Vec<_>>())
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

/// Type-erases one level of the stack.
fn boxed<S>(service: S) -> BoxToolService
where
    S: Service<ToolCall, Response = ToolResult, Error = ToolError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

#[cfg(test)]
mod tests;
