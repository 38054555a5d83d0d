//! Reciprocal-rank fusion (RRF) of ranked candidate lists.
//!
//! Each list contributes `w / (k + r)` to every id it ranks, with `r` the 1-based rank in that
//! list and `w` the list's weight (1 by default); ids are ordered by the summed score. Only the
//! order of each list matters: the retrievers' own scores (BM25, cosine) are on incomparable
//! scales and are ignored, which is the point of RRF (Cormack, Clarke & Büttcher, SIGIR 2009).
//!
//! **k.** [`DEFAULT_RRF_K`] is 60, the value Cormack et al. found near-optimal (and not
//! critical), also LanceDB's default. Qdrant's own server-side fusion defaults to k = 2, which
//! lets the first few ranks of a single list dominate; with two retrievers of different
//! strengths, 60 rewards agreement between them more than a high rank in one.
//!
//! **Weights** scale a list's contributions (the usual weighted-RRF form). Qdrant's weighted
//! variant instead stretches ranks, `1 / (r / w + k - 1)`. Unweighted, Qdrant's score is
//! `1 / (r + k - 1)`: the same ranking as this one with `k` one larger.
//!
//! **Ties** (equal fused scores) are broken by ascending id, so the output is a pure function of
//! the inputs. Scores are summed in f64, list by list, in input order.
//!
//! An id listed twice in one list counts once, at its best rank.

use std::collections::HashMap;
use std::hash::Hash;

use crate::{Error, Result};

/// The default RRF constant (Cormack et al. 2009; LanceDB's default).
pub const DEFAULT_RRF_K: f64 = 60.0;

/// Fusion parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RrfParams {
    /// The rank offset `k` (> 0); larger values flatten the contribution of top ranks.
    pub k: f64,
    /// One weight (> 0) per list, or `None` for all 1.
    pub weights: Option<Vec<f64>>,
}

impl Default for RrfParams {
    fn default() -> Self {
        Self { k: DEFAULT_RRF_K, weights: None }
    }
}

/// One fused id.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused<T> {
    /// The id.
    pub id: T,
    /// The summed RRF score.
    pub score: f64,
    /// Its 1-based rank in each input list (`None` where the list does not have it).
    pub ranks: Vec<Option<usize>>,
}

/// Fuses ranked id lists (best first) into one ranking, best first. See the module docs.
///
/// Errors when `k` is not a positive finite number, or `weights` does not give one positive
/// finite weight per list.
pub fn rrf<T: Clone + Eq + Hash + Ord>(
    lists: &[Vec<T>],
    params: &RrfParams,
) -> Result<Vec<Fused<T>>> {
    if !(params.k.is_finite() && params.k > 0.0) {
        return Err(Error::InvalidFusion(format!("k = {} must be a positive number", params.k)));
    }
    if let Some(w) = &params.weights {
        if w.len() != lists.len() {
            return Err(Error::InvalidFusion(format!(
                "{} weights given for {} candidate lists",
                w.len(),
                lists.len()
            )));
        }
        if let Some(bad) = w.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(Error::InvalidFusion(format!("weight {bad} must be a positive number")));
        }
    }
    let mut acc: HashMap<&T, (f64, Vec<Option<usize>>)> = HashMap::new();
    for (i, list) in lists.iter().enumerate() {
        let weight = params.weights.as_ref().map_or(1.0, |w| w[i]);
        for (pos, id) in list.iter().enumerate() {
            let entry = acc.entry(id).or_insert_with(|| (0.0, vec![None; lists.len()]));
            if entry.1[i].is_some() {
                continue;
            }
            let rank = pos + 1;
            entry.1[i] = Some(rank);
            entry.0 += weight / (params.k + rank as f64);
        }
    }
    let mut fused: Vec<Fused<T>> = acc
        .into_iter()
        .map(|(id, (score, ranks))| Fused { id: id.clone(), score, ranks })
        .collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(f: &[Fused<&'static str>]) -> Vec<&'static str> {
        f.iter().map(|f| f.id).collect()
    }

    #[test]
    fn hand_computed_table_with_k_1() {
        // k = 1:  a: 1/(1+1)            = 0.5
        //         b: 1/(1+2) + 1/(1+1)  = 0.8333…
        //         c: 1/(1+2)            = 0.3333…
        let lists = vec![vec!["a", "b"], vec!["b", "c"]];
        let out = rrf(&lists, &RrfParams { k: 1.0, weights: None }).unwrap();
        assert_eq!(ids(&out), vec!["b", "a", "c"]);
        assert!((out[0].score - (1.0 / 3.0 + 0.5)).abs() < 1e-12);
        assert!((out[1].score - 0.5).abs() < 1e-12);
        assert!((out[2].score - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(out[0].ranks, vec![Some(2), Some(1)]);
        assert_eq!(out[1].ranks, vec![Some(1), None]);
    }

    #[test]
    fn weights_scale_contributions() {
        // k = 1, weights (1, 3):  a: 1/2 = 0.5;  c: 3/3 = 1.0;  b: 1/3 + 3/2 = 1.8333…
        let lists = vec![vec!["a", "b"], vec!["b", "c"]];
        let out = rrf(&lists, &RrfParams { k: 1.0, weights: Some(vec![1.0, 3.0]) }).unwrap();
        assert_eq!(ids(&out), vec!["b", "c", "a"]);
        assert!((out[1].score - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_break_by_ascending_id_whatever_the_input_order() {
        let one = rrf(&[vec!["z", "m"], vec!["m", "z"]], &RrfParams::default()).unwrap();
        let two = rrf(&[vec!["m", "z"], vec!["z", "m"]], &RrfParams::default()).unwrap();
        assert_eq!(ids(&one), vec!["m", "z"]);
        assert_eq!(ids(&two), vec!["m", "z"]);
        assert_eq!(one[0].score, one[1].score);
    }

    #[test]
    fn duplicates_count_once_at_their_best_rank() {
        let out = rrf(&[vec!["a", "a", "b"]], &RrfParams { k: 1.0, weights: None }).unwrap();
        assert_eq!(out[0].ranks, vec![Some(1)]);
        assert!((out[0].score - 0.5).abs() < 1e-12);
        // b keeps its position (3), not a compacted one.
        assert!((out[1].score - 0.25).abs() < 1e-12);
    }

    #[test]
    fn empty_inputs_fuse_to_nothing() {
        assert!(rrf::<u64>(&[], &RrfParams::default()).unwrap().is_empty());
        assert!(rrf::<u64>(&[vec![], vec![]], &RrfParams::default()).unwrap().is_empty());
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let lists = vec![vec![1u64], vec![2u64]];
        for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(rrf(&lists, &RrfParams { k, weights: None }).is_err());
        }
        let err = rrf(&lists, &RrfParams { k: 60.0, weights: Some(vec![1.0]) }).unwrap_err();
        assert!(err.to_string().contains("1 weights given for 2"), "{err}");
        assert!(rrf(&lists, &RrfParams { k: 60.0, weights: Some(vec![1.0, 0.0]) }).is_err());
    }
}
