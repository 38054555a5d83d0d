//! [`ToolCall`] (what the model asked for) and [`ToolResult`] (what the loop gets back).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::context::ToolContext;
use super::error::{ToolError, ToolErrorKind};

/// One call the model asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique per call, e.g. `call_3f1c…` (see [`ToolCall::new`]). It ties the result and
    /// the `execute_tool` span (`gen_ai.tool.call.id`) to the call; it is not rendered into
    /// the prompt.
    pub id: String,
    /// The tool's name as the model wrote it.
    pub name: String,
    /// The arguments as the model wrote them; `null` counts as `{}`.
    pub arguments: Value,
    /// The turn's context (session, its extensions, the approval channel), set by the agent
    /// loop; not something the model wrote, so neither serialized nor compared.
    #[serde(skip)]
    pub context: ToolContext,
}

impl PartialEq for ToolCall {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.name == other.name && self.arguments == other.arguments
    }
}

impl ToolCall {
    /// A call with a fresh id: `call_` followed by a random UUID v4 in simple form.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self::with_id(new_call_id(), name, arguments)
    }

    /// A call with the given id.
    pub fn with_id(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self { id: id.into(), name: name.into(), arguments, context: ToolContext::default() }
    }
}

/// A fresh call id: `call_` followed by a random UUID v4 in simple (32 hex digits) form.
pub fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// The outcome of one [`ToolCall`]. The agent loop always gets one, whatever failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The [`ToolCall::id`] this answers.
    pub call_id: String,
    /// The tool's name, as called.
    pub name: String,
    /// The text for the model, or why there is none.
    pub outcome: Result<String, ToolError>,
    /// Wall time of the call. From [`ToolRegistry`](super::ToolRegistry) it covers the whole
    /// layer stack (queueing, retries); from a bare [`ToolService`](super::ToolService), the
    /// tool alone.
    pub duration: Duration,
}

impl ToolResult {
    /// A failed result for `call`.
    pub fn failed(call: &ToolCall, error: ToolError, duration: Duration) -> Self {
        Self { call_id: call.id.clone(), name: call.name.clone(), outcome: Err(error), duration }
    }

    /// What the model is shown: the output text, or the error's model message.
    pub fn model_text(&self) -> &str {
        match &self.outcome {
            Ok(text) => text,
            Err(error) => &error.model_message,
        }
    }

    /// Whether the call produced output.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The failure kind, if the call failed.
    pub fn error_kind(&self) -> Option<ToolErrorKind> {
        self.outcome.as_ref().err().map(|error| error.kind)
    }
}
