//! [`ToolService`]: a tool as a `tower::Service<ToolCall>`, so that policies can wrap it in
//! layers (timeout, retry, limits, guards).
//!
//! # Errors, and who turns them into results
//!
//! The tool's own failures (bad arguments, its `Err`, a panic, an output that does not
//! render) come back inside `Ok(ToolResult { outcome: Err(..) })`: the service answers every
//! call it runs. A service's `Err` is left to the middleware around it (a timeout, a shed
//! load, a refused call). Stacks are type-erased to [`BoxToolService`], whose error is
//! [`ToolError`]; the registry turns such an error into a `ToolResult` too, so the agent loop
//! always gets one. A retry policy therefore looks at both: `Err(e)` and
//! `Ok(r) if !r.is_ok()`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::Service;

use super::call::{ToolCall, ToolResult};
use super::dyn_tool::{null_as_empty, DynTool};
use super::error::ToolError;
use super::schema::{ArgsValidator, ToolDefinition};
use super::{Tool, ToolType};
use crate::Result;

/// A type-erased, cloneable tool service: what the registry stores for each tool.
pub type BoxToolService = BoxCloneSyncService<ToolCall, ToolResult, ToolError>;

/// One tool as a `tower::Service<ToolCall, Response = ToolResult>`.
///
/// Cheap to clone (two `Arc`s). Always ready. It validates the arguments against the tool's
/// schema (compiled once, in [`new`](Self::new)) before the tool deserialises them, and
/// catches panics. Its `Error` is `ToolError` but it never returns one: see the module docs.
#[derive(Clone)]
pub struct ToolService {
    tool: Arc<dyn DynTool>,
    shared: Arc<Shared>,
}

struct Shared {
    definition: ToolDefinition,
    validator: ArgsValidator,
}

// ===== impl ToolService =====

impl ToolService {
    /// Wraps a typed tool. Fails if its name is not a valid tool name (1–64 ASCII letters,
    /// digits, `_` or `-`) or its argument schema is not an object schema.
    pub fn new<T: Tool>(tool: T) -> Result<Self> {
        Self::from_dyn(Arc::new(tool))
    }

    /// Wraps a type-erased tool, with the same checks as [`new`](Self::new).
    pub fn from_dyn(tool: Arc<dyn DynTool>) -> Result<Self> {
        let definition = tool.definition()?;
        check_name(&definition.name)?;
        let validator = ArgsValidator::new(&definition)?;
        Ok(Self { tool, shared: Arc::new(Shared { definition, validator }) })
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.shared.definition.name
    }

    /// What the model is told about the tool.
    pub fn definition(&self) -> &ToolDefinition {
        &self.shared.definition
    }

    /// Whether a retry is safe (see [`Tool::idempotent`]): retry layers consult this.
    pub fn idempotent(&self) -> bool {
        self.tool.is_idempotent()
    }

    /// The span's `gen_ai.tool.type`.
    pub fn tool_type(&self) -> ToolType {
        self.tool.gen_ai_tool_type()
    }

    /// Type-erases this service without layers.
    pub fn boxed(self) -> BoxToolService {
        BoxCloneSyncService::new(self)
    }

    /// Runs one call to completion: validate, deserialise, call, render, with panics caught.
    async fn run(self, call: ToolCall) -> ToolResult {
        let start = Instant::now();
        let ToolCall { id, name: called, arguments, context } = call;
        let name = self.name();
        let attempt = async {
            let args = null_as_empty(arguments);
            self.shared.validator.check(name, &args)?;
            self.tool.call_json(args, &context).await
        };
        let outcome = match AssertUnwindSafe(attempt).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(payload) => Err(ToolError::panicked(name, payload.as_ref())),
        };
        ToolResult { call_id: id, name: called, outcome, duration: start.elapsed() }
    }
}

impl std::fmt::Debug for ToolService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolService").field("name", &self.name()).finish_non_exhaustive()
    }
}

impl Service<ToolCall> for ToolService {
    type Response = ToolResult;
    type Error = ToolError;
    type Future = BoxFuture<'static, Result<ToolResult, ToolError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ToolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.run(call).await) })
    }
}

/// The longest tool name accepted.
const MAX_NAME_LEN: usize = 64;

/// Tool names follow OpenAI's function-name rule: 1–64 of `[A-Za-z0-9_-]`. Among other
/// things this keeps newlines out of `<tool_call>function\n{name}\n…`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars {
        return Err(crate::Error::Tool {
            name: name.to_owned(),
            message: format!(
                "invalid tool name: use 1 to {MAX_NAME_LEN} ASCII letters, digits, '_' or '-'"
            ),
        });
    }
    Ok(())
}
