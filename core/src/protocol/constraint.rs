//! Grammar-constrained tool calls: a [`LogitsMask`] that makes every tool call the model
//! writes name a declared tool and carry arguments that satisfy that tool's JSON Schema.
//!
//! # What is constrained
//!
//! Step-Audio 2 writes a call as `<tool_call>function\n{name}\n{json}</tool_call>`, where
//! `<tool_call>` and `</tool_call>` are single added tokens (the split of StepFun's vLLM fork,
//! `vllm/entrypoints/openai/tool_parsers/step_audio_2_tool_parser.py`). The mask
//! is a small state machine over the generated ids of one assistant turn:
//!
//! - **Outside a call, before any call completed**: the model is free, except that a stray
//!   `</tool_call>` is always forbidden. With [`ToolChoice::None`] (or no declared tool)
//!   `<tool_call>` is forbidden too. With [`ToolChoice::Required`] and
//!   [`ToolChoice::Named`] the turn must *start* with a call: the optional lead-in
//!   ([`ToolCallConstraint::with_lead_in`]) is forced first, then `<tool_call>`; nothing
//!   else is allowed, `<|EOT|>` included. This is OpenAI's `tool_choice: "required"`: the
//!   reply is tool calls only. In speech mode (the prompt ends with `<tts_start>`) pass the
//!   lead-in `[<tts_end>]`, which gives the upstream layout of an empty spoken segment followed
//!   by the call (`<tts_start><tts_end><tool_call>…`); without a lead-in the speech section is
//!   left open.
//! - **Inside a call** (after `<tool_call>`): only tokens that continue the grammar
//!   `"function\n" NAME "\n" JSON </tool_call>` are allowed, where NAME is a declared tool (the
//!   named one under [`ToolChoice::Named`]) and JSON is an object valid against that tool's
//!   `parameters` schema, written the way Python's `json.dumps` writes it (`", "` and `": "`
//!   separators, no other whitespace, properties in schema order). The call ends with the
//!   `</tool_call>` token id, never with its text spelled out in bytes: every added token of
//!   the vocabulary (`<|EOT|>`, `<audio_12>`, `<tool_call>`, …) is a special token to the
//!   grammar engine, so none of them can appear inside the name or the JSON either.
//! - **After a completed call** (every choice but `None`): only `<tool_call>` (another call)
//!   or `<|EOT|>` (end of the turn). The model cannot go on to invent the tool's result.
//!
//! The grammar is canonical where real outputs vary (`function  \n`, `\n get_date_time`):
//! under the constraint the model emits the canonical form, which [`super::parse_tool_call`]
//! reads like the others. A JSON string has no length limit: a model that never closes one
//! runs until `max_new_tokens`, and the demultiplexer reports the call as unclosed.
//!
//! # Using it
//!
//! Building the grammar engine's view of the vocabulary takes a while for a large tokenizer,
//! so build a [`ToolCallGrammar`] once per tokenizer and tool set and take a cheap
//! [`ToolCallConstraint`] from it for each generation ([`ToolCallGrammar::constraint`]);
//! [`ToolCallConstraint::new`] does both at once.
//!
//! The constraint follows the turn through the `generated` ids that
//! [`LogitsMask::apply`] receives (the ids of the current generation, without the prompt):
//! before masking it feeds the ids it has not seen yet to its state machine. When `generated`
//! is empty again after ids were seen, a new generation began and the constraint resets (no
//! completed call, free again). Callers that run their own decoding loop can instead feed
//! each sampled id with [`ToolCallConstraint::observe`] and mask with
//! [`ToolCallConstraint::mask_logits`]. Logits may cover more ids than the tokenizer (the
//! model's embedding table is padded): outside a call those extra ids are left alone, inside
//! a call and whenever a token is forced they are forbidden.
//!
//! An id the constraint did not allow (because the logits were not masked with it) is an
//! [`Error::ToolConstraint`].

use std::fmt;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use toktrie_hf_tokenizers::ByteTokenizer;

use super::toolcall::FUNCTION_KEYWORD;
use crate::generate::{allow_only_ids, forbid_ids, LogitsMask};
use crate::tokenizer::{SpecialTokens, StepTokenizer};
use crate::tool::ToolDefinition;
use crate::{Error, Result};

/// Which tool calls a turn may or must make (OpenAI's `tool_choice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides: it may speak, call declared tools, or both.
    #[default]
    Auto,
    /// No tool call: `<tool_call>` is never allowed.
    None,
    /// The turn starts with a call to a declared tool and holds only calls.
    Required,
    /// Like [`ToolChoice::Required`], and every call is to this tool.
    Named(String),
}

/// The compiled tool-call grammars of one tokenizer and one tool set; cheap to clone and
/// shareable between threads. See the module documentation.
#[derive(Clone)]
pub struct ToolCallGrammar {
    inner: Arc<GrammarInner>,
}

struct GrammarInner {
    factory: Arc<ParserFactory>,
    special: SpecialTokens,
    /// Number of ids the grammar engine knows (the tokenizer's vocabulary).
    vocab: usize,
    /// The declared tool names, in declaration order.
    names: Vec<String>,
    /// A call to any declared tool; `None` without tools.
    any: Option<Matcher>,
    /// A call to `names[i]` only.
    each: Vec<Matcher>,
}

impl fmt::Debug for ToolCallGrammar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCallGrammar")
            .field("tools", &self.inner.names)
            .field("vocab", &self.inner.vocab)
            .finish_non_exhaustive()
    }
}

impl ToolCallGrammar {
    /// Builds the grammar engine's view of `tokenizer` and compiles the call grammar of
    /// `tools` (all of them, and each alone for [`ToolChoice::Named`]).
    ///
    /// Fails with [`Error::Tool`] for a tool whose name is empty, holds whitespace or a
    /// control character, or is declared twice, or whose `parameters` are not an object
    /// schema the grammar engine supports; with [`Error::ToolConstraint`] if the tokenizer
    /// cannot be bridged.
    pub fn new(tokenizer: &StepTokenizer, tools: &[ToolDefinition]) -> Result<Self> {
        let factory = Arc::new(parser_factory(tokenizer)?);
        Self::compile(factory, *tokenizer.special(), tools)
    }

    /// The same tokenizer with another tool set; skips rebuilding the vocabulary view.
    pub fn with_tools(&self, tools: &[ToolDefinition]) -> Result<Self> {
        Self::compile(Arc::clone(&self.inner.factory), self.inner.special, tools)
    }

    /// The declared tool names, in declaration order.
    pub fn tool_names(&self) -> &[String] {
        &self.inner.names
    }

    /// The special-token ids the constraint switches on.
    pub fn special(&self) -> &SpecialTokens {
        &self.inner.special
    }

    /// A fresh constraint for one generation under `choice`.
    ///
    /// Fails with [`Error::Tool`] for [`ToolChoice::Required`] without any declared tool and
    /// for [`ToolChoice::Named`] with an undeclared name. [`ToolChoice::Auto`] without tools
    /// behaves as [`ToolChoice::None`].
    pub fn constraint(&self, choice: ToolChoice) -> Result<ToolCallConstraint> {
        let inner = &self.inner;
        let template = match &choice {
            ToolChoice::None => None,
            ToolChoice::Auto => inner.any.clone(),
            ToolChoice::Required => {
                Some(
                    inner.any.clone().ok_or_else(|| Error::Tool {
                        name: "tool_choice".to_owned(),
                        message: "\"required\" needs at least one declared tool; none is declared"
                            .to_owned(),
                    })?,
                )
            }
            ToolChoice::Named(name) => {
                let index =
                    inner.names.iter().position(|n| n == name).ok_or_else(|| Error::Tool {
                        name: name.clone(),
                        message: format!(
                            "tool_choice names a tool that is not declared (declared: {})",
                            inner.names.join(", ")
                        ),
                    })?;
                inner.each.get(index).cloned()
            }
        };
        Ok(ToolCallConstraint {
            grammar: self.clone(),
            choice,
            template,
            lead_in: Vec::new(),
            state: CallState::Outside,
            seen: 0,
            completed: 0,
            single_call: false,
        })
    }

    fn compile(
        factory: Arc<ParserFactory>,
        special: SpecialTokens,
        tools: &[ToolDefinition],
    ) -> Result<Self> {
        let mut names: Vec<String> = Vec::with_capacity(tools.len());
        for tool in tools {
            check_name(&tool.name, &names)?;
            names.push(tool.name.clone());
        }
        let end = special.tool_call_end;
        let mut each = Vec::with_capacity(tools.len());
        for tool in tools {
            let matcher = compile_calls(&factory, &[tool], end)
                .map_err(|message| Error::Tool { name: tool.name.clone(), message })?;
            each.push(matcher);
        }
        let any = if tools.is_empty() {
            None
        } else {
            let all: Vec<&ToolDefinition> = tools.iter().collect();
            Some(
                compile_calls(&factory, &all, end)
                    .map_err(|message| Error::Tool { name: names.join(", "), message })?,
            )
        };
        let vocab = factory.tok_env().tok_trie().vocab_size();
        Ok(Self { inner: Arc::new(GrammarInner { factory, special, vocab, names, any, each }) })
    }
}

/// The vocabulary view of the grammar engine: token bytes from the `tokenizers` tokenizer,
/// every added token a special token (matched only by id, never by its text).
fn parser_factory(tokenizer: &StepTokenizer) -> Result<ParserFactory> {
    let bridge_err =
        |message: String| Error::ToolConstraint(format!("tokenizer bridge: {message}"));
    let hf = tokenizer.hf_tokenizer().clone();
    // ByteTokenizer indexes its token table by id up to this size: every id must fit.
    let size = hf.get_vocab_size(true);
    if size != tokenizer.vocab_size() {
        return Err(bridge_err(format!(
            "the tokenizer has {size} tokens but ids up to {} (ids must be contiguous)",
            tokenizer.vocab_size()
        )));
    }
    let bytes = ByteTokenizer::from_tokenizer(hf).map_err(|e| bridge_err(format!("{e:#}")))?;
    let env: TokEnv = bytes.into_tok_env(None).map_err(|e| bridge_err(format!("{e:#}")))?;
    let trie = env.tok_trie();
    for id in 0..trie.vocab_size() {
        let Ok(token) = u32::try_from(id) else { break };
        if tokenizer.is_added(i64::from(token)) && !trie.is_special_token(token) {
            return Err(bridge_err(format!(
                "the added token {:?} (id {id}) is not a special token to the grammar engine, \
                 so its text could be generated inside a call",
                tokenizer.token_str(i64::from(token)).unwrap_or_default()
            )));
        }
    }
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| bridge_err(format!("{e:#}")))?;
    factory.quiet();
    Ok(factory)
}

/// Tool names must survive `parse_tool_call`'s trimming and the line format.
fn check_name(name: &str, earlier: &[String]) -> Result<()> {
    let bad =
        |message: &str| Err(Error::Tool { name: name.to_owned(), message: message.to_owned() });
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("the name holds whitespace or a control character");
    }
    if earlier.iter().any(|n| n == name) {
        return bad("the tool is declared twice");
    }
    Ok(())
}

/// Compiles the grammar of a call to one of `tools`, up to and including `</tool_call>`.
fn compile_calls(
    factory: &ParserFactory,
    tools: &[&ToolDefinition],
    end: i64,
) -> std::result::Result<Matcher, String> {
    let grammar = lark_grammar(tools, end)?;
    let parser = factory
        .create_parser(TopLevelGrammar::from_lark(grammar))
        .map_err(|e| format!("the grammar engine rejects the arguments schema: {e:#}"))?;
    let matcher = Matcher::new(Ok(parser));
    match matcher.get_error() {
        Some(e) => Err(format!("the grammar engine rejects the arguments schema: {e}")),
        None => Ok(matcher),
    }
}

/// `start: call_0 | call_1 …`, one rule per tool:
/// `call_i: "function\n" "name" "\n" %json {schema} <[end id]>`.
fn lark_grammar(tools: &[&ToolDefinition], end: i64) -> std::result::Result<String, String> {
    let alternatives: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    let mut grammar = format!("start: {}\n", alternatives.join(" | "));
    let keyword = quoted(&format!("{FUNCTION_KEYWORD}\n"))?;
    for (i, tool) in tools.iter().enumerate() {
        let name = quoted(&tool.name)?;
        let schema = serde_json::to_string(&super::call_schema::arguments_schema(tool)?)
            .map_err(|e| e.to_string())?;
        grammar.push_str(&format!("call_{i}: {keyword} {name} \"\\n\" %json {schema} <[{end}]>\n"));
    }
    Ok(grammar)
}

/// A lark string literal (lark literals use JSON string syntax).
fn quoted(text: &str) -> std::result::Result<String, String> {
    serde_json::to_string(text).map_err(|e| e.to_string())
}

/// The grammar-constrained tool-call mask of one generation; see the module documentation.
///
/// It is `Send`, so it can travel in a `GenerationRequest` as a
/// `Box<dyn LogitsMask + Send>`.
pub struct ToolCallConstraint {
    grammar: ToolCallGrammar,
    choice: ToolChoice,
    /// The parser state at the start of a call body; `None` when calls are forbidden.
    template: Option<Matcher>,
    /// Ids forced before the first `<tool_call>` under `Required` / `Named`.
    lead_in: Vec<i64>,
    state: CallState,
    /// Ids of this generation fed so far.
    seen: usize,
    /// Calls closed with `</tool_call>` in this generation.
    completed: usize,
    /// At most one call per generation (OpenAI's `parallel_tool_calls: false`).
    single_call: bool,
}

enum CallState {
    Outside,
    Inside(Box<Matcher>),
}

/// What the mask does outside a call.
enum OutsideRule {
    /// Every id but these.
    Forbid(Vec<i64>),
    /// Only these ids.
    Only(Vec<i64>),
}

impl OutsideRule {
    fn allows(&self, id: i64) -> bool {
        match self {
            OutsideRule::Forbid(ids) => !ids.contains(&id),
            OutsideRule::Only(ids) => ids.contains(&id),
        }
    }
}

impl fmt::Debug for ToolCallConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCallConstraint")
            .field("choice", &self.choice)
            .field("lead_in", &self.lead_in)
            .field("in_call", &self.in_call())
            .field("seen", &self.seen)
            .field("completed", &self.completed)
            .finish_non_exhaustive()
    }
}

impl ToolCallConstraint {
    /// Builds the grammar for `tools` and a constraint under `choice`: the same as
    /// [`ToolCallGrammar::new`] followed by [`ToolCallGrammar::constraint`]. Keep a
    /// [`ToolCallGrammar`] instead when generating more than once with the same tools.
    pub fn new(
        tokenizer: &StepTokenizer,
        tools: &[ToolDefinition],
        choice: ToolChoice,
    ) -> Result<Self> {
        ToolCallGrammar::new(tokenizer, tools)?.constraint(choice)
    }

    /// Ids forced, in order, before the first `<tool_call>` under [`ToolChoice::Required`]
    /// and [`ToolChoice::Named`] (ignored otherwise): `[<tts_end>]` in speech mode. They may
    /// not be `<tool_call>`, `</tool_call>` or `<|EOT|>`.
    pub fn with_lead_in(mut self, ids: Vec<i64>) -> Result<Self> {
        let special = self.grammar.special();
        let reserved = [special.tool_call_start, special.tool_call_end, special.eot];
        if let Some(id) = ids.iter().find(|id| reserved.contains(id)) {
            return Err(Error::ToolConstraint(format!(
                "the lead-in may not hold <tool_call>, </tool_call> or <|EOT|> (found id {id})"
            )));
        }
        self.lead_in = ids;
        Ok(self)
    }

    /// Allows at most one call: after the first `</tool_call>` only `<|EOT|>` may follow
    /// (OpenAI's `parallel_tool_calls: false`).
    #[must_use]
    pub fn with_single_call(mut self) -> Self {
        self.single_call = true;
        self
    }

    /// The choice it enforces.
    pub fn choice(&self) -> &ToolChoice {
        &self.choice
    }

    /// The grammar it came from.
    pub fn grammar(&self) -> &ToolCallGrammar {
        &self.grammar
    }

    /// Whether a call is open (`<tool_call>` seen, `</tool_call>` not yet).
    pub fn in_call(&self) -> bool {
        matches!(self.state, CallState::Inside(_))
    }

    /// How many calls were closed with `</tool_call>` in this generation.
    pub fn completed_calls(&self) -> usize {
        self.completed
    }

    /// How many ids of this generation it has seen.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Forgets the generation: no id seen, no call open or completed.
    pub fn reset(&mut self) {
        self.state = CallState::Outside;
        self.seen = 0;
        self.completed = 0;
    }

    /// Feeds the next generated id. Fails with [`Error::ToolConstraint`] if the mask did not
    /// allow it; the state is then unchanged outside a call, and a call's parser stays failed.
    pub fn observe(&mut self, token: i64) -> Result<()> {
        let special = self.grammar.inner.special;
        match &mut self.state {
            CallState::Inside(matcher) => {
                let id = u32::try_from(token)
                    .ok()
                    .filter(|&id| (id as usize) < self.grammar.inner.vocab)
                    .ok_or_else(|| {
                        Error::ToolConstraint(format!(
                            "id {token} (generated id {}) is outside the tokenizer's vocabulary, \
                             inside a tool call",
                            self.seen
                        ))
                    })?;
                matcher.consume_token(id).map_err(|e| {
                    Error::ToolConstraint(format!(
                        "id {token} (generated id {}) does not continue the tool call: {e}",
                        self.seen
                    ))
                })?;
                if token == special.tool_call_end {
                    self.completed += 1;
                    self.state = CallState::Outside;
                }
            }
            CallState::Outside => {
                if !self.outside_rule().allows(token) {
                    return Err(Error::ToolConstraint(format!(
                        "id {token} (generated id {}) is not allowed here under tool_choice \
                         {:?} ({} completed calls)",
                        self.seen, self.choice, self.completed
                    )));
                }
                if token == special.tool_call_start {
                    // The rule only allows `<tool_call>` when a template exists.
                    if let Some(template) = &self.template {
                        self.state = CallState::Inside(Box::new(template.clone()));
                    }
                }
            }
        }
        self.seen += 1;
        Ok(())
    }

    /// Sets the logits of every id not allowed next to `-inf`, for the current state.
    pub fn mask_logits(&mut self, logits: &mut Tensor) -> Result<()> {
        let vocab = self.grammar.inner.vocab;
        match &mut self.state {
            CallState::Inside(matcher) => {
                let allowed = matcher.compute_mask().map_err(|e| {
                    Error::ToolConstraint(format!(
                        "cannot compute the allowed ids after generated id {}: {e}",
                        self.seen
                    ))
                })?;
                let size = usize::try_from(logits.size1()?).unwrap_or(0);
                let mut forbidden = vec![true; size];
                allowed.iter_set_entries(|id| {
                    if id < vocab {
                        if let Some(slot) = forbidden.get_mut(id) {
                            *slot = false;
                        }
                    }
                });
                let forbidden = Tensor::f_from_slice(&forbidden)?.f_to_device(logits.device())?;
                let _ = logits.f_masked_fill_(&forbidden, f64::NEG_INFINITY)?;
                Ok(())
            }
            CallState::Outside => match self.outside_rule() {
                OutsideRule::Forbid(ids) => forbid_ids(logits, &ids),
                OutsideRule::Only(ids) => allow_only_ids(logits, &ids),
            },
        }
    }

    fn outside_rule(&self) -> OutsideRule {
        let special = &self.grammar.inner.special;
        let (start, end) = (special.tool_call_start, special.tool_call_end);
        if self.template.is_none() {
            return OutsideRule::Forbid(vec![start, end]);
        }
        if self.completed > 0 && self.single_call {
            return OutsideRule::Only(vec![special.eot]);
        }
        if self.completed > 0 {
            return OutsideRule::Only(vec![start, special.eot]);
        }
        match self.choice {
            ToolChoice::Required | ToolChoice::Named(_) => {
                OutsideRule::Only(vec![self.lead_in.get(self.seen).copied().unwrap_or(start)])
            }
            ToolChoice::Auto | ToolChoice::None => OutsideRule::Forbid(vec![end]),
        }
    }
}

impl LogitsMask for ToolCallConstraint {
    /// Feeds the ids of `generated` not seen yet (resetting first if `generated` is empty
    /// after ids were seen), then masks `logits`; see the module documentation.
    fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> Result<()> {
        if generated.len() < self.seen {
            if !generated.is_empty() {
                return Err(Error::ToolConstraint(format!(
                    "the generation holds {} ids but {} were already seen",
                    generated.len(),
                    self.seen
                )));
            }
            self.reset();
        }
        for &token in &generated[self.seen..] {
            self.observe(token)?;
        }
        self.mask_logits(logits)
    }
}
