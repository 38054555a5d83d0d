//! Which logits mask a generation step runs under: [`ConstraintFactory`].

use tch::Tensor;

use crate::generate::{forbid_ids, LogitsMask};
use crate::protocol::{GenerationMode, ToolCallGrammar, ToolChoice};
use crate::tokenizer::{SpecialTokens, StepTokenizer};
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

    /// The mask of a think phase ([`SessionSettings::think`](crate::session::SessionSettings::think)):
    /// by default that of a text step that may not call tools (no speech codes, no
    /// `<tool_call>`). The phase ends when its text holds `</think>`, whatever the mask.
    fn build_reasoning(&self) -> Result<Option<Box<dyn LogitsMask + Send>>> {
        self.build(&ToolChoice::None, GenerationMode::Text)
    }
}

/// The default: [`crate::protocol::ToolCallConstraint`] over the declared tools, for every
/// choice. Calls the model opens always name a declared tool and carry schema-valid
/// arguments; `None` forbids `<tool_call>`; `Required` and `Named` make the step start with a
/// call (in speech mode after an empty spoken segment, `<tts_end>`, as upstream lays it out).
/// A text-mode step never speaks: the speech codes and the `<tts_*>` markers are masked
/// ([`TextOnly`]), so a text answer carries no audio tokens.
#[derive(Debug, Clone)]
pub struct GrammarConstraints {
    grammar: ToolCallGrammar,
    special: SpecialTokens,
    single_call: bool,
}

impl GrammarConstraints {
    /// Compiles the call grammar of `tools` for `tokenizer` (once per agent: building the
    /// vocabulary view of a large tokenizer takes a moment).
    pub fn new(tokenizer: &StepTokenizer, tools: &[ToolDefinition]) -> Result<Self> {
        Ok(Self {
            grammar: ToolCallGrammar::new(tokenizer, tools)?,
            special: *tokenizer.special(),
            single_call: false,
        })
    }

    /// The same constraints over another tool set, reusing the compiled vocabulary view
    /// (a few milliseconds: what a front door pays for tools its client declares per call).
    pub fn with_tools(&self, tools: &[ToolDefinition]) -> Result<Self> {
        Ok(Self { grammar: self.grammar.with_tools(tools)?, ..self.clone() })
    }

    /// At most one call per step (OpenAI's `parallel_tool_calls: false`).
    #[must_use]
    pub fn single_call(mut self) -> Self {
        self.single_call = true;
        self
    }

    /// The tools calls may name.
    pub fn tool_names(&self) -> &[String] {
        self.grammar.tool_names()
    }
}

impl ConstraintFactory for GrammarConstraints {
    fn build(
        &self,
        choice: &ToolChoice,
        mode: GenerationMode,
    ) -> Result<Option<Box<dyn LogitsMask + Send>>> {
        let mut constraint = self.grammar.constraint(choice.clone())?;
        if self.single_call {
            constraint = constraint.with_single_call();
        }
        let forced = matches!(choice, ToolChoice::Required | ToolChoice::Named(_));
        match mode {
            GenerationMode::Speech if forced => {
                constraint = constraint.with_lead_in(vec![self.special.tts_end])?;
                Ok(Some(Box::new(constraint)))
            }
            GenerationMode::Speech => Ok(Some(Box::new(constraint))),
            GenerationMode::Text => {
                Ok(Some(Box::new(TextOnly::new(Box::new(constraint), &self.special))))
            }
        }
    }
}

/// A mask that also keeps a step silent: after the inner mask, the speech codes
/// (`<audio_0>` … `<audio_6561>`) and the `<tts_start>` / `<tts_end>` / `<tts_pad>` markers
/// are set to `-inf`. Step-Audio 2 answers in text after `<|BOT|>assistant\n` but is free to
/// open speech there; a caller that asked for text only must get none.
pub struct TextOnly {
    inner: Box<dyn LogitsMask + Send>,
    /// `[<audio_0>, <audio_6561>]`, as a start and a length.
    codes: (i64, i64),
    markers: [i64; 3],
}

impl TextOnly {
    /// Wraps `inner` for the vocabulary of `special`.
    pub fn new(inner: Box<dyn LogitsMask + Send>, special: &SpecialTokens) -> Self {
        Self {
            inner,
            codes: (special.audio_first, special.audio_pad - special.audio_first + 1),
            markers: [special.tts_start, special.tts_end, special.tts_pad],
        }
    }
}

impl LogitsMask for TextOnly {
    fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> Result<()> {
        self.inner.apply(logits, generated)?;
        let size = logits.size1()?;
        let (start, len) = self.codes;
        let len = len.min(size - start);
        if start < size && len > 0 {
            let _ = logits.f_narrow(0, start, len)?.f_fill_(f64::NEG_INFINITY)?;
        }
        let markers: Vec<i64> = self.markers.iter().copied().filter(|&id| id < size).collect();
        forbid_ids(logits, &markers)
    }
}
