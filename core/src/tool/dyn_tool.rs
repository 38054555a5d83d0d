//! [`DynTool`]: the object-safe face of every [`Tool`], for registries and services.

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use super::error::{error_chain, ToolError, ToolErrorKind};
use super::schema::{parameters_schema, ToolDefinition};
use super::{Tool, ToolContext, ToolType};
use crate::Result;

/// A tool behind a pointer: JSON arguments in, text out.
///
/// Every [`Tool`] is a `DynTool` (blanket impl). Implement it by hand only for tools whose
/// schema is known at run time (say, tools proxied from an MCP server).
///
/// Call tools through [`ToolService`](super::ToolService) (or the registry): it validates
/// the arguments against [`definition`](Self::definition)'s schema before
/// [`call_json`](Self::call_json) runs, and turns a panic into a
/// [`ToolErrorKind::Panicked`] error.
pub trait DynTool: Send + Sync + 'static {
    /// The tool's name.
    fn name(&self) -> &str;

    /// What the model is told about the tool. Fails if the argument schema cannot be built.
    fn definition(&self) -> Result<ToolDefinition>;

    /// Whether a retry after a failure or timeout is safe (see [`Tool::idempotent`]).
    fn is_idempotent(&self) -> bool;

    /// The span's `gen_ai.tool.type` (see [`Tool::tool_type`]).
    fn gen_ai_tool_type(&self) -> ToolType;

    /// Deserialises `args` (`null` counts as `{}`), runs the tool and renders its output as
    /// text for the model.
    fn call_json<'a>(
        &'a self,
        args: Value,
        context: &'a ToolContext,
    ) -> BoxFuture<'a, Result<String, ToolError>>;
}

impl<T: Tool> DynTool for T {
    fn name(&self) -> &str {
        T::NAME
    }

    fn definition(&self) -> Result<ToolDefinition> {
        Ok(ToolDefinition {
            name: T::NAME.to_owned(),
            description: self.description(),
            parameters: parameters_schema::<T::Args>(),
        })
    }

    fn is_idempotent(&self) -> bool {
        self.idempotent()
    }

    fn gen_ai_tool_type(&self) -> ToolType {
        self.tool_type()
    }

    fn call_json<'a>(
        &'a self,
        args: Value,
        context: &'a ToolContext,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let args: T::Args = serde_json::from_value(null_as_empty(args)).map_err(|e| {
                ToolError::new(
                    ToolErrorKind::InvalidArguments,
                    format!("Invalid arguments for tool \"{}\": {e}.", T::NAME),
                )
                .with_detail(format!("tool \"{}\": arguments do not deserialise: {e}", T::NAME))
            })?;
            let output = Tool::call_with_context(self, args, context).await.map_err(|e| {
                ToolError::new(
                    ToolErrorKind::Execution,
                    format!("Tool \"{}\" failed: {}", T::NAME, self.error_message(&e)),
                )
                .with_detail(format!("tool \"{}\": {}", T::NAME, error_chain(&e)))
                .with_transient(self.transient(&e))
            })?;
            render_output(T::NAME, &output)
        })
    }
}

/// Replaces a `null` argument value by `{}`: models often send `null` for tools whose
/// arguments are all optional.
pub(crate) fn null_as_empty(args: Value) -> Value {
    match args {
        Value::Null => Value::Object(serde_json::Map::new()),
        other => other,
    }
}

/// Renders a tool's output as text for the model.
///
/// An output that serialises to a JSON string (a `String`, a `&str`, a unit enum variant) is
/// sent as that string, unquoted; any other output as compact JSON in its `Serialize` order,
/// with non-ASCII text unescaped.
pub fn render_output<O: Serialize + ?Sized>(tool: &str, output: &O) -> Result<String, ToolError> {
    let json = serde_json::to_string(output).map_err(|e| {
        ToolError::new(
            ToolErrorKind::Execution,
            format!("Tool \"{tool}\" failed: its output could not be rendered."),
        )
        .with_detail(format!("tool \"{tool}\": output does not serialise to JSON: {e}"))
    })?;
    if json.starts_with('"') {
        if let Ok(text) = serde_json::from_str::<String>(&json) {
            return Ok(text);
        }
    }
    Ok(json)
}
