//! The agent's tools and their call grammar as one value, replaced whole when the tools change
//! (an MCP server's `notifications/tools/list_changed`): a turn keeps the set it started with,
//! so a change takes effect between turns.

use std::sync::Arc;

use super::constraints::{ConstraintFactory, GrammarConstraints};
use crate::session::{Session, Turn};
use crate::tokenizer::StepTokenizer;
use crate::tool::ToolRegistry;
use crate::Result;

/// The registered tools, the grammar compiled from their declarations, and the mask factory
/// the turns use (that grammar, unless [`super::Agent::with_constraints`] replaced it).
pub(super) struct ToolSet {
    pub(super) registry: Arc<ToolRegistry>,
    /// The default grammar, from which [`super::ClientTools`] are compiled.
    pub(super) grammar: GrammarConstraints,
    pub(super) constraints: Arc<dyn ConstraintFactory>,
    /// Whether `constraints` is a factory of the caller's (kept when the tools change).
    pub(super) custom: bool,
    /// The `tool_json_schemas` turn's text (`None` without tools), written once per set.
    declaration: Option<String>,
}

impl ToolSet {
    /// Compiles the grammar of `registry`'s tools.
    pub(super) fn compile(tokenizer: &StepTokenizer, registry: ToolRegistry) -> Result<Self> {
        let grammar = GrammarConstraints::new(tokenizer, &registry.definitions())?;
        Ok(Self {
            declaration: declaration(&registry)?,
            registry: Arc::new(registry),
            constraints: Arc::new(grammar.clone()),
            grammar,
            custom: false,
        })
    }

    /// The set over other tools: the grammar recompiled (reusing the vocabulary view), a
    /// custom mask factory kept.
    pub(super) fn with_registry(&self, registry: ToolRegistry) -> Result<Self> {
        let grammar = self.grammar.with_tools(&registry.definitions())?;
        let constraints: Arc<dyn ConstraintFactory> =
            if self.custom { Arc::clone(&self.constraints) } else { Arc::new(grammar.clone()) };
        Ok(Self {
            declaration: declaration(&registry)?,
            registry: Arc::new(registry),
            grammar,
            constraints,
            custom: self.custom,
        })
    }

    /// The set with `constraints` as its mask factory.
    pub(super) fn with_constraints(&self, constraints: Arc<dyn ConstraintFactory>) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            grammar: self.grammar.clone(),
            constraints,
            custom: true,
            declaration: self.declaration.clone(),
        }
    }

    /// Brings the `tool_json_schemas` turn of a session the agent started (its system turn
    /// first) up to date with these tools: replaced, added after the system turn, or removed.
    /// The cache record is cut there, so the next prefill tells the model the new tools.
    pub(super) fn declare_in(&self, session: &mut Session) -> Result<()> {
        if !matches!(session.history().first(), Some(Turn::System { .. })) {
            return Ok(());
        }
        let declared = match session.history().get(1) {
            Some(Turn::ToolSchemas { json }) => Some(json.as_str()),
            _ => None,
        };
        match (declared, &self.declaration) {
            (None, None) => {}
            (Some(_), None) => {
                session.remove_turn(1)?;
            }
            (declared, Some(json)) => {
                if declared == Some(json.as_str()) {
                    return Ok(());
                }
                let turn = Turn::ToolSchemas { json: json.clone() };
                if declared.is_some() {
                    session.replace_turn(1, turn)?;
                } else {
                    session.insert_turn(1, turn)?;
                }
            }
        }
        Ok(())
    }
}

/// The `tool_json_schemas` text of `registry`'s tools, `None` when there are none.
fn declaration(registry: &ToolRegistry) -> Result<Option<String>> {
    if registry.is_empty() {
        return Ok(None);
    }
    registry.tool_json_schemas().map(Some)
}
