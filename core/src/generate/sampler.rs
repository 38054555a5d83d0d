//! Choosing the next token from a logits vector: repetition penalty, temperature, top-k,
//! top-p and a seeded random draw, in the order and with the semantics of transformers'
//! `RepetitionPenaltyLogitsProcessor`, `TemperatureLogitsWarper`, `TopKLogitsWarper` and
//! `TopPLogitsWarper`, plus a [`LogitsMask`] hook for constrained decoding.
//!
//! The tensor work stays on the logits' device; only the kept candidates (after top-k / top-p)
//! are copied to the CPU for the draw. The draw uses [`rand::rngs::StdRng`], so it is
//! reproducible for a given seed and `rand` version, but it is not torch's generator: the same
//! seed does not give the tokens `torch.multinomial` would.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// How to pick tokens. [`Default`] gives the official examples' settings (stepfun-ai/Step-Audio2
/// `stepaudio2.py` and `examples.py`) with transformers' default top-k of 50, no seed and no stop token: add the
/// `<|EOT|>` id to `stop_tokens`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Logits are divided by it. `0.0` means greedy (argmax, no randomness).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens; `0` disables it.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probabilities add up to at least
    /// `top_p` (always at least one); `1.0` disables it. In `[0, 1]`.
    pub top_p: f64,
    /// transformers' repetition penalty over every id already in the context (prompt
    /// included): a negative logit is multiplied by it, a positive one divided. `1.0`
    /// disables it. Must be > 0.
    pub repetition_penalty: f64,
    /// Seed of the random draw; `None` seeds from the operating system.
    pub seed: Option<u64>,
    /// The most tokens one generation may produce (stop token excluded).
    pub max_new_tokens: usize,
    /// Ids that end the generation when sampled; they are not part of the output.
    pub stop_tokens: Vec<i64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            repetition_penalty: 1.05,
            seed: None,
            max_new_tokens: 2048,
            stop_tokens: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0, no penalty) with the given stop tokens.
    pub fn greedy(max_new_tokens: usize, stop_tokens: Vec<i64>) -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: None,
            max_new_tokens,
            stop_tokens,
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, message: String| {
            Err(Error::InvalidSamplingParams { name, message })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", format!("{} is not a finite value >= 0", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", format!("{} is not in [0, 1]", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                format!("{} is not a finite value > 0", self.repetition_penalty),
            );
        }
        Ok(())
    }

    /// Whether `id` is one of the stop tokens.
    pub fn is_stop(&self, id: i64) -> bool {
        self.stop_tokens.contains(&id)
    }
}

/// A hook that edits the logits before each draw, for grammar-constrained decoding.
///
/// `apply` receives a private copy of the step's logits (1-D, `f32`, on the model's device)
/// and the ids generated so far in this generation (not the prompt). It may change the tensor
/// in place or replace it; set a forbidden id's logit to `-inf` to rule it out
/// ([`forbid_ids`] and [`allow_only_ids`] do that). The repetition penalty, temperature,
/// top-k and top-p run after it, so probabilities are renormalised over the allowed ids. If no
/// id is left, sampling fails with [`Error::AllTokensMasked`].
pub trait LogitsMask {
    /// Edits `logits` for the next draw.
    fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> Result<()>;
}

impl<F> LogitsMask for F
where
    F: FnMut(&mut Tensor, &[i64]) -> Result<()>,
{
    fn apply(&mut self, logits: &mut Tensor, generated: &[i64]) -> Result<()> {
        self(logits, generated)
    }
}

/// Sets the logits of `ids` to `-inf`. Every id must be inside the vocabulary.
pub fn forbid_ids(logits: &mut Tensor, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let index = ids_tensor(logits, ids)?;
    let _ = logits.f_index_fill_(0, &index, f64::NEG_INFINITY)?;
    Ok(())
}

/// Sets the logits of every id not in `ids` to `-inf`. Every id must be inside the vocabulary.
pub fn allow_only_ids(logits: &mut Tensor, ids: &[i64]) -> Result<()> {
    let index = ids_tensor(logits, ids)?;
    let kept = logits.f_index_select(0, &index)?;
    let mut masked = logits.f_full_like(f64::NEG_INFINITY)?;
    let _ = masked.f_index_copy_(0, &index, &kept)?;
    *logits = masked;
    Ok(())
}

/// An int64 index tensor on the logits' device, after checking every id against the vocabulary.
fn ids_tensor(logits: &Tensor, ids: &[i64]) -> Result<Tensor> {
    let vocab = logits.size1()?;
    if let Some(&id) = ids.iter().find(|&&id| !(0..vocab).contains(&id)) {
        return Err(Error::UnknownTokenId { id, vocab_size: usize::try_from(vocab).unwrap_or(0) });
    }
    Ok(Tensor::f_from_slice(ids)?.f_to_device(logits.device())?)
}

/// The candidates of one draw: ids and their probabilities, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Token ids, most likely first.
    pub ids: Vec<i64>,
    /// Their probabilities after every filter, summing to 1 (up to rounding).
    pub probs: Vec<f32>,
}

/// Picks tokens according to [`SamplingParams`]; owns the random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// Validates `params` and seeds the generator.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Ok(Self { params, rng })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token.
    ///
    /// - `logits`: 1-D over the vocabulary, any float kind, any device; not modified.
    /// - `context`: every id the repetition penalty considers (earlier turns, the prompt and
    ///   the generated ids), duplicates allowed.
    /// - `generated`: the ids generated so far in this generation, for the mask.
    /// - `step`: the generation step, for error messages.
    pub fn sample(
        &mut self,
        logits: &Tensor,
        context: &[i64],
        generated: &[i64],
        mask: Option<&mut dyn LogitsMask>,
        step: usize,
    ) -> Result<i64> {
        let scores = self.processed_logits(logits, context, generated, mask, step)?;
        if self.params.temperature == 0.0 {
            return Ok(scores.f_argmax(0, false)?.f_int64_value(&[])?);
        }
        let candidates = self.filter(&scores)?;
        let total: f64 = candidates.probs.iter().map(|&p| f64::from(p)).sum();
        let mut target = self.rng.gen::<f64>() * total;
        for (&id, &p) in candidates.ids.iter().zip(&candidates.probs) {
            let p = f64::from(p);
            if target < p {
                return Ok(id);
            }
            target -= p;
        }
        // Rounding left `target` just above the last probability: take the last candidate
        // with a non-zero probability.
        candidates
            .ids
            .iter()
            .zip(&candidates.probs)
            .rev()
            .find(|(_, &p)| p > 0.0)
            .map(|(&id, _)| id)
            .ok_or(Error::AllTokensMasked { step })
    }

    /// The distribution [`Sampler::sample`] draws from (for tests and diagnostics). With
    /// temperature 0 it is the argmax alone, with probability 1.
    pub fn candidates(
        &self,
        logits: &Tensor,
        context: &[i64],
        generated: &[i64],
        mask: Option<&mut dyn LogitsMask>,
    ) -> Result<Candidates> {
        let scores = self.processed_logits(logits, context, generated, mask, 0)?;
        if self.params.temperature == 0.0 {
            let id = scores.f_argmax(0, false)?.f_int64_value(&[])?;
            return Ok(Candidates { ids: vec![id], probs: vec![1.0] });
        }
        self.filter(&scores)
    }

    /// Copy, mask, repetition penalty; checks the result has a finite maximum and no NaN.
    fn processed_logits(
        &self,
        logits: &Tensor,
        context: &[i64],
        generated: &[i64],
        mask: Option<&mut dyn LogitsMask>,
        step: usize,
    ) -> Result<Tensor> {
        if logits.dim() != 1 || logits.numel() == 0 {
            return Err(Error::InvalidLogits(format!(
                "expected a non-empty 1-D tensor over the vocabulary, got shape {:?}",
                logits.size()
            )));
        }
        if !matches!(logits.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            return Err(Error::InvalidLogits(format!(
                "expected a float tensor, got {:?}",
                logits.kind()
            )));
        }
        // A private f32 copy: the mask may edit it in place.
        let mut scores = logits.f_to_dtype(Kind::Float, false, true)?;
        if let Some(mask) = mask {
            mask.apply(&mut scores, generated)?;
            if scores.size() != logits.size() {
                return Err(Error::InvalidLogits(format!(
                    "the logits mask changed the shape from {:?} to {:?}",
                    logits.size(),
                    scores.size()
                )));
            }
        }
        if self.params.repetition_penalty != 1.0 && !context.is_empty() {
            scores = repetition_penalty(&scores, context, self.params.repetition_penalty)?;
        }
        if scores.f_isnan()?.f_any()?.f_int64_value(&[])? != 0 {
            return Err(Error::InvalidLogits(format!("NaN at generation step {step}")));
        }
        let max = scores.f_max()?.f_double_value(&[])?;
        if max == f64::NEG_INFINITY {
            return Err(Error::AllTokensMasked { step });
        }
        Ok(scores)
    }

    /// Temperature, top-k, softmax, top-p; returns the kept candidates on the CPU.
    fn filter(&self, scores: &Tensor) -> Result<Candidates> {
        let scores = scores.f_div_scalar(self.params.temperature)?;
        let vocab = scores.size1()?;
        let top_k = i64::try_from(self.params.top_k).unwrap_or(i64::MAX);
        let (values, indices) = if top_k > 0 && top_k < vocab {
            scores.f_topk(top_k, 0, true, true)?
        } else {
            scores.f_sort(0, true)?
        };
        let probs = values.f_softmax(0, Kind::Float)?;
        // top-p: keep token i while the mass of the tokens ranked above it is below top_p;
        // the token that crosses top_p is kept, and so is the first one.
        let keep = if self.params.top_p < 1.0 {
            let above = probs.f_cumsum(0, Kind::Float)?.f_sub(&probs)?;
            let n = above.f_lt(self.params.top_p)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
            n.max(1)
        } else {
            probs.size1()?
        };
        let probs = probs.f_narrow(0, 0, keep)?;
        let probs = probs.f_div(&probs.f_sum(Kind::Float)?)?;
        let ids = indices.f_narrow(0, 0, keep)?;
        let probs = Vec::<f32>::try_from(&probs)?;
        let ids = Vec::<i64>::try_from(&ids)?;
        Ok(Candidates { ids, probs })
    }
}

/// transformers' repetition penalty: for every id in `context`, a logit below zero is
/// multiplied by `penalty`, any other logit divided by it (once per id, however often it
/// occurs).
pub fn repetition_penalty(scores: &Tensor, context: &[i64], penalty: f64) -> Result<Tensor> {
    let index = ids_tensor(scores, context)?;
    let picked = scores.f_gather(0, &index, false)?;
    let negative = picked.f_lt(0.0)?;
    let penalised =
        picked.f_mul_scalar(penalty)?.f_where_self(&negative, &picked.f_div_scalar(penalty)?)?;
    // Duplicate ids write the same value, so scattering them is harmless.
    Ok(scores.f_scatter(0, &index, &penalised)?)
}
