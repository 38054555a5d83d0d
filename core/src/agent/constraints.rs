//! Which logits mask a generation step runs under: [`ConstraintFactory`].

use crate::generate::LogitsMask;
use crate::protocol::{GenerationMode, ToolCallGrammar, ToolChoice};
use crate::tokenizer::StepTokenizer;
use crate::tool::ToolDefinition;
use crate::Result;

/// Builds the logits mask of one generation step from the step's tool choice.
///
/// The agent asks for a fresh mask before every step. [`GrammarConstraints`] is the default;
/// implement this trait to replace it (a different grammar engine, or none at all).
pub trait ConstraintFactory: Send + Sync {
    /// The mask for a step under `choice` whose prompt ends as `mode` says; `None` for an
    /// unconstrained step.
    fn build(
        &self,
        choice: &ToolChoice,
        mode: GenerationMode,
    ) -> Result<Option<Box<dyn LogitsMask + Send>>>;
}

/// The default: [`crate::protocol::ToolCallConstraint`] over the declared tools, for every
/// choice. Calls the model opens always name a declared tool and carry schema-valid
/// arguments; `None` forbids `<tool_call>`; `Required` and `Named` make the step start with a
/// call (in speech mode after an empty spoken segment, `<tts_end>`, as upstream lays it out).
#[derive(Debug, Clone)]
pub struct GrammarConstraints {
    grammar: ToolCallGrammar,
    tts_end: i64,
}

impl GrammarConstraints {
    /// Compiles the call grammar of `tools` for `tokenizer` (once per agent: building the
    /// vocabulary view of a large tokenizer takes a moment).
    pub fn new(tokenizer: &StepTokenizer, tools: &[ToolDefinition]) -> Result<Self> {
        Ok(Self {
            grammar: ToolCallGrammar::new(tokenizer, tools)?,
            tts_end: tokenizer.special().tts_end,
        })
    }
}

impl ConstraintFactory for GrammarConstraints {
    fn build(
        &self,
        choice: &ToolChoice,
        mode: GenerationMode,
    ) -> Result<Option<Box<dyn LogitsMask + Send>>> {
        let mut constraint = self.grammar.constraint(choice.clone())?;
        let forced = matches!(choice, ToolChoice::Required | ToolChoice::Named(_));
        if forced && mode == GenerationMode::Speech {
            constraint = constraint.with_lead_in(vec![self.tts_end])?;
        }
        Ok(Some(Box::new(constraint)))
    }
}
