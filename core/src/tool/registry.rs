//! [`ToolRegistry`]: the tools of an agent, by name, each behind its own layer stack.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tracing::field::Empty;
use tracing::Instrument;

use super::call::{ToolCall, ToolResult};
use super::dyn_tool::DynTool;
use super::error::{BoxError, ToolError};
use super::schema::{tool_json_schemas, ToolDefinition};
use super::service::{BoxToolService, ToolService};
use super::{Tool, ToolType};
use crate::{Error, Result};

/// The tools an agent may call.
///
/// Each tool is registered once, optionally wrapped in layers
/// ([`register_with`](Self::register_with)); calls are dispatched by name. Every call runs
/// inside an `execute_tool` span following the OpenTelemetry GenAI conventions:
///
/// | field | value |
/// | --- | --- |
/// | span name | `execute_tool` |
/// | `otel.name` | `execute_tool {tool name}` |
/// | `gen_ai.operation.name` | `execute_tool` |
/// | `gen_ai.tool.name` | the called name |
/// | `gen_ai.tool.call.id` | [`ToolCall::id`] |
/// | `gen_ai.tool.type` | `function` (or [`Tool::tool_type`]); absent for unknown tools |
/// | `duration_ms` | wall time of the whole stack, in milliseconds (f64) |
/// | `error.type` | on failure: [`ToolErrorKind::as_str`](super::ToolErrorKind::as_str) |
/// | `otel.status_code` | `ERROR` on failure |
///
/// Cloning is cheap-ish (one boxed service clone per tool) and clones share the tools.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: Vec<RegisteredTool>,
    by_name: HashMap<String, usize>,
}

/// One registered tool: its declaration, its properties and its (layered) service.
#[derive(Clone, Debug)]
pub struct RegisteredTool {
    definition: Arc<ToolDefinition>,
    idempotent: bool,
    tool_type: ToolType,
    service: BoxToolService,
}

impl RegisteredTool {
    /// What the model is told about the tool.
    pub fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    /// Whether a retry is safe.
    pub fn idempotent(&self) -> bool {
        self.idempotent
    }

    /// The span's `gen_ai.tool.type`.
    pub fn tool_type(&self) -> ToolType {
        self.tool_type
    }

    /// A clone of the tool's service, with its layers.
    pub fn service(&self) -> BoxToolService {
        self.service.clone()
    }
}

// ===== impl ToolRegistry =====

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `tool` with no layers. Fails on an invalid or duplicate name, or an
    /// argument schema that is not an object schema.
    pub fn register<T: Tool>(&mut self, tool: T) -> Result<&mut Self> {
        self.register_with(tool, |service| service)
    }

    /// Registers `tool` wrapped by `layers`, which gets the bare [`ToolService`] (its
    /// definition and [`idempotent`](ToolService::idempotent) flag included) and returns
    /// the stack to use, e.g. `|svc| ServiceBuilder::new().layer(..).service(svc)`.
    ///
    /// The stack's errors may be any error type: a [`ToolError`] (boxed or not) is kept as
    /// is, anything else becomes [`ToolErrorKind::Execution`](super::ToolErrorKind) (see
    /// [`ToolError::from_box_error`]).
    pub fn register_with<T, F, S>(&mut self, tool: T, layers: F) -> Result<&mut Self>
    where
        T: Tool,
        F: FnOnce(ToolService) -> S,
        S: Service<ToolCall, Response = ToolResult> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.register_dyn_with(Arc::new(tool), layers)
    }

    /// Registers a type-erased tool with no layers.
    pub fn register_dyn(&mut self, tool: Arc<dyn DynTool>) -> Result<&mut Self> {
        self.register_dyn_with(tool, |service| service)
    }

    /// Registers a type-erased tool wrapped by `layers` (see
    /// [`register_with`](Self::register_with)).
    pub fn register_dyn_with<F, S>(
        &mut self,
        tool: Arc<dyn DynTool>,
        layers: F,
    ) -> Result<&mut Self>
    where
        F: FnOnce(ToolService) -> S,
        S: Service<ToolCall, Response = ToolResult> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let service = ToolService::from_dyn(tool)?;
        let name = service.name().to_owned();
        if self.by_name.contains_key(&name) {
            return Err(Error::Tool {
                name,
                message: "a tool of that name is already registered".into(),
            });
        }
        let entry = RegisteredTool {
            definition: Arc::new(service.definition().clone()),
            idempotent: service.idempotent(),
            tool_type: service.tool_type(),
            service: erase(&name, layers(service)),
        };
        self.by_name.insert(name, self.tools.len());
        self.tools.push(entry);
        Ok(self)
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&RegisteredTool> {
        self.by_name.get(name).and_then(|&i| self.tools.get(i))
    }

    /// Whether a tool called `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tools.iter().map(|tool| tool.definition.name.as_str())
    }

    /// How many tools are registered.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether no tool is registered.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The definitions, in registration order.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        self.tools.iter().map(|tool| tool.definition.as_ref().clone()).collect()
    }

    /// The content of the `tool_json_schemas` turn for every registered tool (see
    /// [`tool_json_schemas`]).
    pub fn tool_json_schemas(&self) -> Result<String> {
        tool_json_schemas(&self.definitions())
    }

    /// Runs one call through its tool's stack, inside an `execute_tool` span. Never fails:
    /// an unknown tool, a stack error or a panic become a failed [`ToolResult`].
    pub async fn call(&self, call: ToolCall) -> ToolResult {
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = %format_args!("execute_tool {}", call.name),
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %call.name,
            gen_ai.tool.call.id = %call.id,
            "gen_ai.tool.type" = Empty,
            duration_ms = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
        );
        self.dispatch(call, span.clone()).instrument(span).await
    }

    /// Runs `calls` with at most `concurrency` in flight (0 counts as 1) and returns their
    /// results in the order of `calls`.
    pub async fn call_all(&self, calls: Vec<ToolCall>, concurrency: usize) -> Vec<ToolResult> {
        let mut results: Vec<(usize, ToolResult)> =
            futures::stream::iter(calls.into_iter().enumerate())
                .map(|(i, call)| self.call(call).map(move |result| (i, result)))
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        results.sort_unstable_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, result)| result).collect()
    }

    /// The body of [`call`](Self::call), run inside `span` (passed in rather than taken
    /// from `Span::current()`, which not every subscriber tracks).
    async fn dispatch(&self, call: ToolCall, span: tracing::Span) -> ToolResult {
        let start = Instant::now();
        let mut result = match self.get(&call.name) {
            None => ToolResult::failed(
                &call,
                ToolError::not_found(&call.name, self.names()),
                start.elapsed(),
            ),
            Some(tool) => {
                span.record("gen_ai.tool.type", tool.tool_type.as_str());
                let mut service = tool.service.clone();
                let request = call.clone();
                let attempt = async move { service.ready().await?.call(request).await };
                match AssertUnwindSafe(attempt).catch_unwind().await {
                    Ok(Ok(result)) => result,
                    Ok(Err(error)) => ToolResult::failed(&call, error, start.elapsed()),
                    Err(payload) => ToolResult::failed(
                        &call,
                        ToolError::panicked(&call.name, payload.as_ref()),
                        start.elapsed(),
                    ),
                }
            }
        };
        result.duration = start.elapsed();
        span.record("duration_ms", result.duration.as_secs_f64() * 1000.0);
        if let Err(error) = &result.outcome {
            span.record("error.type", error.kind.as_str());
            span.record("otel.status_code", "ERROR");
            tracing::warn!(error.type = error.kind.as_str(), detail = %error.detail, "tool call failed");
        }
        result
    }
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry").field("tools", &self.names().collect::<Vec<_>>()).finish()
    }
}

/// Boxes a layered stack, mapping its errors into `ToolError`.
fn erase<S>(name: &str, stack: S) -> BoxToolService
where
    S: Service<ToolCall, Response = ToolResult> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let name = name.to_owned();
    BoxCloneSyncService::new(
        stack.map_err(move |error: S::Error| ToolError::from_box_error(&name, error.into())),
    )
}
