//! Tools the front door's client runs itself: [`ClientTools`].
//!
//! OpenAI's Chat Completions and Realtime APIs let the caller declare function tools that the
//! caller executes: the model's call comes back to the client, and the result arrives with
//! the next request (a `tool` message, a `function_call_output` item). A turn run with
//! client tools ([`Agent::continue_turn`](super::Agent::continue_turn)) tells the model of
//! them and constrains its calls to their schemas exactly as for registered tools, but does
//! not run them: the step's calls are reported as [`AgentEvent::ToolCallRequested`] and the
//! turn ends with [`TurnEndReason::ToolCalls`]. The assistant turn that made them stays in the
//! history; the caller appends one [`Turn::ToolResult`] per call and continues.
//!
//! Declared with [`Agent::client_tools_beside_own`](super::Agent::client_tools_beside_own),
//! they sit beside the agent's registered tools (OpenAI Realtime: the service's own tools run
//! server side, the client's come back to it): the model is told of both, calls of registered
//! tools run as usual, and a step that calls a client tool still ends the turn after its
//! registered calls ran.
//!
//! [`AgentEvent::ToolCallRequested`]: super::AgentEvent::ToolCallRequested
//! [`TurnEndReason::ToolCalls`]: super::TurnEndReason::ToolCalls
//! [`Turn::ToolResult`]: crate::session::Turn::ToolResult

use std::sync::Arc;

use super::constraints::ConstraintFactory;
use crate::tool::{tool_json_schemas, ToolDefinition};
use crate::Result;

/// Tools declared by a client for its turns; see the module documentation. Made by
/// [`Agent::client_tools`](super::Agent::client_tools).
#[derive(Clone)]
pub struct ClientTools {
    definitions: Vec<ToolDefinition>,
    /// The agent's registered tools declared with them (empty: the client's alone).
    beside: Vec<ToolDefinition>,
    constraints: Arc<dyn ConstraintFactory>,
}

impl std::fmt::Debug for ClientTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.definitions.iter().map(|d| d.name.as_str()).collect();
        f.debug_struct("ClientTools").field("tools", &names).finish_non_exhaustive()
    }
}

impl ClientTools {
    pub(crate) fn new(
        definitions: Vec<ToolDefinition>,
        beside: Vec<ToolDefinition>,
        constraints: Arc<dyn ConstraintFactory>,
    ) -> Self {
        Self { definitions, beside, constraints }
    }

    /// Whether `name` is a tool the client runs.
    pub fn runs(&self, name: &str) -> bool {
        self.definitions.iter().any(|d| d.name == name)
    }

    /// Whether the agent's registered tools are declared (and run) beside them.
    pub fn beside_own(&self) -> bool {
        !self.beside.is_empty()
    }

    /// The client's tools, in order.
    pub fn definitions(&self) -> &[ToolDefinition] {
        &self.definitions
    }

    /// Whether no tool is declared.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }

    /// Whether no tool at all is declared (neither the client's nor the agent's).
    pub fn declares_nothing(&self) -> bool {
        self.definitions.is_empty() && self.beside.is_empty()
    }

    /// The text of the `tool_json_schemas` turn that declares them (the agent's own first,
    /// when beside them), as for registered tools.
    pub fn tool_json_schemas(&self) -> Result<String> {
        tool_json_schemas(&self.declared())
    }

    /// Every tool the model is told of: the agent's own first (when beside them), then the
    /// client's.
    pub(crate) fn declared(&self) -> Vec<ToolDefinition> {
        self.beside.iter().chain(&self.definitions).cloned().collect()
    }

    /// The logits masks of their steps.
    pub(crate) fn constraints(&self) -> &dyn ConstraintFactory {
        self.constraints.as_ref()
    }
}
