//! # voxloop-policies
//!
//! Tower layers that wrap any tool service (`Service<ToolCall, Response = ToolResult>`):
//!
//! | module | layer | refuses with |
//! | --- | --- | --- |
//! | [`access`] | allow/deny lists of tool names, disabled tools | [`Denied`](voxloop_core::tool::ToolErrorKind::Denied) |
//! | [`guard`] | predicates over the JSON arguments (domain allow-list for URLs) | `Denied` |
//! | [`approval`] | an async [`Approver`] that a server or a person answers | `Denied` |
//! | [`concurrency`] | at most *n* calls in flight; shed (or queue) the rest | [`Overloaded`](voxloop_core::tool::ToolErrorKind::Overloaded) |
//! | [`rate`] | token bucket: spaces calls, sheds those that would wait too long | `Overloaded` |
//! | [`retry`] | retries transient failures with exponential backoff and full jitter | (the last failure) |
//! | [`timeout`] | a deadline per attempt | [`Timeout`](voxloop_core::tool::ToolErrorKind::Timeout) |
//! | [`output_cap`] | cuts long output at a character boundary, with a marker | (never fails) |
//!
//! [`Policies`] composes them per tool from a [`PolicyConfig`] (a TOML section) and gives
//! the closure that [`ToolRegistry::register_with`](voxloop_core::tool::ToolRegistry::register_with)
//! takes:
//!
//! ```
//! use voxloop_core::tool::{ToolCall, ToolRegistry};
//! use voxloop_policies::{PolicyConfig, Policies};
//! # use schemars::JsonSchema;
//! # use serde::Deserialize;
//! # struct Echo;
//! # #[derive(Deserialize, JsonSchema)]
//! # struct EchoArgs { text: String }
//! # #[async_trait::async_trait]
//! # impl voxloop_core::tool::Tool for Echo {
//! #     const NAME: &'static str = "echo";
//! #     type Args = EchoArgs;
//! #     type Output = String;
//! #     type Error = std::convert::Infallible;
//! #     fn description(&self) -> String { "Echoes.".into() }
//! #     async fn call(&self, args: EchoArgs) -> Result<String, Self::Error> { Ok(args.text) }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: PolicyConfig = serde_json::from_value(serde_json::json!({
//!     "deny": ["shell"],
//!     "defaults": { "timeout_ms": 10000, "retries": 2 },
//!     "tools": { "echo": { "max_output_bytes": 64, "concurrency": 4 } }
//! }))?;
//! let policies = Policies::new(config)?;
//!
//! let mut tools = ToolRegistry::new();
//! tools.register_with(Echo, policies.layers())?;
//! let result = tools.call(ToolCall::new("echo", serde_json::json!({"text": "hi"}))).await;
//! assert_eq!(result.model_text(), "hi");
//! # Ok(())
//! # }
//! ```
//!
//! # The order of the stack
//!
//! From the outside in (the first sees the call first, the last sees the result first):
//!
//! 1. **output cap**: on the way out, so that it bounds whatever text comes back;
//! 2. **access** (allow/deny, `enable = false`): the cheapest refusal first;
//! 3. **guards**: static rules on the arguments, before any person is asked;
//! 4. **approval**: a person is asked only about calls the rules let through, and no limit
//!    (permit, token) is held while they think;
//! 5. **concurrency** (load shedding or queueing): a call holds its slot across its retries;
//! 6. **rate**: one token per call the model made, not per attempt;
//! 7. **retry**: around the timeout, so that an attempt that timed out can be retried;
//! 8. **timeout**: per attempt;
//! 9. the tool.
//!
//! # Errors
//!
//! Every refusal or failure is a [`ToolError`](voxloop_core::tool::ToolError) of a precise
//! [`ToolErrorKind`](voxloop_core::tool::ToolErrorKind) with a short `model_message` that is safe to show the model (it names the
//! tool and what to do) and a full `detail` for spans and logs. Layers return them inside
//! `Ok(ToolResult)` (a refusal is an answer to the model, not a failure of the stack); a
//! `ToolError` in `Err` only comes from the services they wrap.
//!
//! Every fallible function of this crate returns [`Result`], whose error is [`Error`].

pub mod access;
pub mod approval;
mod builder;
mod classify;
pub mod concurrency;
mod config;
pub mod guard;
pub mod output_cap;
pub mod rate;
pub mod retry;
#[cfg(test)]
mod testing;
pub mod timeout;

pub use access::{AccessLayer, AccessList};
pub use approval::{
    Approval, ApprovalLayer, ApprovalRequest, Approver, ChannelApprover, TurnApprover,
};
pub use builder::Policies;
pub use classify::{failure, is_transient};
pub use concurrency::ConcurrencyLayer;
pub use config::{BudgetConfig, PolicyConfig, RateConfig, ToolPolicy};
pub use guard::{guard_fn, ArgGuard, DomainGuard, GuardLayer, Rejection};
pub use output_cap::OutputCapLayer;
pub use rate::{RateLimitLayer, TokenBucket};
pub use retry::{Backoff, Jitter, RetryLayer, RetryPolicy};
pub use timeout::TimeoutLayer;

/// Everything that can go wrong in `voxloop-policies`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from `voxloop-core`.
    #[error(transparent)]
    Core(#[from] voxloop_core::Error),
    /// A value in the policy configuration is out of range.
    #[error("policy config [{section}] {field}: {message}")]
    Config {
        /// The section: `defaults` or `tools.NAME`.
        section: String,
        /// The field, e.g. `timeout_ms`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
