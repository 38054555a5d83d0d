//! Tools the model can call: the [`Tool`] trait, its schema, the tower service that runs
//! it, and the [`ToolRegistry`].
//!
//! A tool is one struct and one `impl`. Its arguments are a `Deserialize + JsonSchema` type
//! whose field doc comments become the descriptions the model reads; its output is anything
//! `Serialize` (a `String` goes to the model as is, anything else as compact JSON, see
//! [`render_output`]).
//!
//! ```
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//! use voxloop_core::tool::{Tool, ToolCall, ToolRegistry};
//!
//! /// Converts a temperature.
//! struct Celsius;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct CelsiusArgs {
//!     /// The temperature in degrees Fahrenheit.
//!     fahrenheit: f64,
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("below absolute zero")]
//! struct BelowAbsoluteZero;
//!
//! #[async_trait::async_trait]
//! impl Tool for Celsius {
//!     const NAME: &'static str = "to_celsius";
//!     type Args = CelsiusArgs;
//!     type Output = String;
//!     type Error = BelowAbsoluteZero;
//!
//!     fn description(&self) -> String {
//!         "Converts degrees Fahrenheit to degrees Celsius.".into()
//!     }
//!
//!     async fn call(&self, args: CelsiusArgs) -> Result<String, BelowAbsoluteZero> {
//!         if args.fahrenheit < -459.67 {
//!             return Err(BelowAbsoluteZero);
//!         }
//!         Ok(format!("{:.1} °C", (args.fahrenheit - 32.0) * 5.0 / 9.0))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> voxloop_core::Result<()> {
//! let mut tools = ToolRegistry::new();
//! tools.register(Celsius)?;
//! assert!(tools.tool_json_schemas()?.contains(r#""required": ["fahrenheit"]"#));
//!
//! let result = tools.call(ToolCall::new("to_celsius", serde_json::json!({"fahrenheit": 212}))).await;
//! assert_eq!(result.model_text(), "100.0 °C");
//! # Ok(())
//! # }
//! ```
//!
//! # How a call runs
//!
//! [`ToolRegistry::call`] opens an `execute_tool` span, finds the tool's (possibly
//! layered) [`BoxToolService`] and calls it. The innermost [`ToolService`] treats `null`
//! arguments as `{}`, validates them against the compiled JSON Schema, lets the tool
//! deserialise them, runs it with panics caught and renders the output. Whatever fails
//! becomes a [`ToolResult`] whose outcome is a [`ToolError`]: its `model_message` goes back
//! to the model, its `detail` to spans and logs.

mod call;
mod context;
mod dyn_tool;
mod error;
mod registry;
pub(crate) mod schema;
mod service;
mod truncate;

pub use call::{new_call_id, ToolCall, ToolResult};
pub use context::{
    Approval, ApprovalAsker, ApprovalRequest, AttachmentSink, Extensions, NoLongerWaiting,
    ToolContext,
};
pub use dyn_tool::{render_output, DynTool};
pub use error::{BoxError, ToolError, ToolErrorKind, Transient, MAX_MODEL_MESSAGE_BYTES};
pub use registry::{RegisteredTool, ToolRegistry};
pub use schema::{parameters_schema, tool_json_schemas, NoArgs, OpenAiTool, ToolDefinition};
pub use service::{BoxToolService, ToolService};
pub use truncate::truncate_output;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A tool the model can call.
///
/// Implement it with `#[async_trait::async_trait]`. Only [`NAME`](Self::NAME), the
/// associated types, [`description`](Self::description) and [`call`](Self::call) are
/// required.
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls it by: 1–64 ASCII letters, digits, `_` or `-`.
    const NAME: &'static str;

    /// The arguments. Their JSON Schema (from `schemars`, field doc comments included) is
    /// what the model sees; it must describe an object.
    type Args: DeserializeOwned + JsonSchema + Send + 'static;

    /// The result, rendered for the model by [`render_output`].
    type Output: Serialize + Send + 'static;

    /// What can go wrong. Its `Display` goes to the model through
    /// [`error_message`](Self::error_message); its source chain only to logs.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the tool does, for the model.
    fn description(&self) -> String;

    /// Whether calling twice with the same arguments is as good as calling once, so a retry
    /// after a failure or a timeout is safe. Defaults to `true`; say `false` for tools with
    /// side effects (sending a message, switching the voice mid-turn).
    fn idempotent(&self) -> bool {
        true
    }

    /// The span's `gen_ai.tool.type`. Defaults to [`ToolType::Function`].
    fn tool_type(&self) -> ToolType {
        ToolType::Function
    }

    /// What the model is told when [`call`](Self::call) fails, after `Tool "name" failed: `.
    /// Defaults to the error's `Display`; override it when that could leak internals.
    fn error_message(&self, error: &Self::Error) -> String {
        error.to_string()
    }

    /// Whether `error` is transient, so that the same call may succeed later (an HTTP 429 or
    /// 5xx from a provider, a reset connection), with the far side's `Retry-After` if it gave
    /// one. Retry layers retry only transient errors. Defaults to `None` (permanent).
    fn transient(&self, error: &Self::Error) -> Option<Transient> {
        let _ = error;
        None
    }

    /// Runs the tool.
    async fn call(&self, args: Self::Args) -> Result<Self::Output, Self::Error>;

    /// Runs the tool for a call made in `context` (its session and what the front door
    /// attached to it, see [`ToolContext`]). Defaults to [`call`](Self::call); tools that act
    /// on the calling session override this one.
    async fn call_with_context(
        &self,
        args: Self::Args,
        context: &ToolContext,
    ) -> Result<Self::Output, Self::Error> {
        let _ = context;
        self.call(args).await
    }
}

/// The OpenTelemetry `gen_ai.tool.type` of a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ToolType {
    /// The agent generates parameters for a predefined function (the default).
    #[default]
    Function,
    /// Executed on the agent side to call external APIs directly (web search).
    Extension,
    /// Queries structured or unstructured data for retrieval (audio search).
    Datastore,
}

impl ToolType {
    /// The attribute value: `function`, `extension` or `datastore`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Extension => "extension",
            Self::Datastore => "datastore",
        }
    }
}
