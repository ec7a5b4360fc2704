//! The FactorVAE score (Kim & Mnih, 2018, "Disentangling by factorising"), as the reference's
//! `factor_vae_score`.
//!
//! 1. Global scale: encode `num_variance_estimate` random factor tuples and take each code
//!    dimension's variance (`ddof = 1`). Dimensions whose standard deviation is below
//!    `prune_threshold` (0.05, the reference's configured value) are pruned as collapsed to the
//!    prior (so is a dimension of zero variance, whatever the threshold); if none is left the
//!    score is 0.
//! 2. One vote: draw a factor index `k` uniformly and `batch_size` factor tuples, set factor `k`
//!    of every tuple to the first tuple's value, encode them, and divide each active dimension's
//!    variance over the batch (`ddof = 1`) by its global variance; the dimension with the smallest
//!    ratio (the first on ties) votes for factor `k`.
//! 3. The majority-vote classifier maps each dimension to the factor it got most training votes
//!    for (the first on ties); the score is the fraction of `num_eval` fresh votes it gets right
//!    (the training accuracy, on the training votes, is reported too).
//!
//! Defaults are the reference's configuration: batches of 64, 10,000 training and 5,000
//! evaluation votes, 10,000 points for the global variances, threshold 0.05.
//!
//! Difference: the reference takes the arg-min over the active dimensions' ratios and records
//! its position *among the active dimensions* as the dimension that votes, which is a different
//! dimension as soon as a dimension before it was pruned; here the vote goes to the dimension
//! itself. (With no pruned dimension the two agree.) `active_dims` is the number of dimensions
//! kept (the reference reports the number of dimensions).

use serde::Serialize;

use super::{
    Encoder, GroundTruth, check_ground_truth, column_variances, draw_factors, encode_checked,
};
use crate::error::{Error, Result};
use crate::rng::HostRng;

/// Stream of [`HostRng::derive`] of the FactorVAE score's draws.
const STREAM: u64 = 0x0066_6163_7476; // "factv"

/// Sample sizes of [`factor_vae_score`].
#[derive(Clone, Debug, PartialEq)]
pub struct FactorVaeConfig {
    /// Tuples per vote (at least 2).
    pub batch_size: usize,
    pub num_train: usize,
    pub num_eval: usize,
    /// Tuples for the global variances (at least 2).
    pub num_variance_estimate: usize,
    /// Dimensions with a global standard deviation below this are pruned.
    pub prune_threshold: f64,
    pub seed: u64,
    /// Factor tuples per call of the encoder (whole votes per call, at least one).
    pub encode_rows: usize,
}

impl Default for FactorVaeConfig {
    fn default() -> Self {
        FactorVaeConfig {
            batch_size: 64,
            num_train: 10_000,
            num_eval: 5_000,
            num_variance_estimate: 10_000,
            prune_threshold: 0.05,
            seed: 0,
            encode_rows: super::DEFAULT_ENCODE_ROWS,
        }
    }
}

/// Accuracies of the majority-vote classifier.
#[derive(Clone, Debug, Serialize)]
pub struct FactorVaeScore {
    pub train_accuracy: f64,
    /// The score.
    pub eval_accuracy: f64,
    /// Dimensions not pruned.
    pub active_dims: usize,
    /// Training votes, `[factor][dimension]`.
    pub votes: Vec<Vec<u64>>,
}

/// The FactorVAE score of the representation `encode` of `gt` (see the module docs).
pub fn factor_vae_score(
    gt: &dyn GroundTruth,
    encode: &mut Encoder<'_>,
    cfg: &FactorVaeConfig,
) -> Result<FactorVaeScore> {
    check_ground_truth("factor_vae", gt)?;
    if cfg.batch_size < 2
        || cfg.num_variance_estimate < 2
        || cfg.num_train == 0
        || cfg.num_eval == 0
        || cfg.encode_rows == 0
        || !(cfg.prune_threshold.is_finite() && cfg.prune_threshold >= 0.0)
    {
        return Err(Error::Config(format!(
            "factor_vae: {cfg:?}: batch size and variance points must be at least 2, the vote \
             counts and rows per encoder call at least 1, the threshold finite and non-negative"
        )));
    }
    let mut rng = HostRng::derive(cfg.seed, STREAM);
    let mut dims = None;
    let f = gt.factor_sizes().len();

    let mut sample = Vec::with_capacity(cfg.num_variance_estimate);
    let mut done = 0;
    while done < cfg.num_variance_estimate {
        let k = cfg.encode_rows.min(cfg.num_variance_estimate - done);
        let tuples = draw_factors("factor_vae", gt, k, &mut rng)?;
        sample.extend(encode_checked("factor_vae", encode, &tuples, &mut dims)?);
        done += k;
    }
    let r = dims.unwrap_or(0);
    let global = column_variances(&sample, r);
    drop(sample);
    let active: Vec<usize> = (0..r)
        .filter(|&d| global[d].sqrt() >= cfg.prune_threshold && global[d] > 0.0)
        .collect();
    if active.is_empty() {
        return Ok(FactorVaeScore {
            train_accuracy: 0.0,
            eval_accuracy: 0.0,
            active_dims: 0,
            votes: vec![vec![0; r]; f],
        });
    }
    let mut votes = |num: usize, rng: &mut HostRng| -> Result<Vec<Vec<u64>>> {
        let b = cfg.batch_size;
        let per_call = (cfg.encode_rows / b).max(1);
        let mut v = vec![vec![0u64; r]; f];
        let mut done = 0;
        while done < num {
            let k = per_call.min(num - done);
            let mut tuples = Vec::with_capacity(k * b);
            let mut indices = Vec::with_capacity(k);
            for _ in 0..k {
                let index = rng.below(f as u64) as usize;
                let mut batch = draw_factors("factor_vae", gt, b, rng)?;
                let fixed = batch[0][index];
                batch.iter_mut().for_each(|t| t[index] = fixed);
                indices.push(index);
                tuples.extend(batch);
            }
            let codes = encode_checked("factor_vae", encode, &tuples, &mut dims)?;
            for (batch, &index) in codes.chunks_exact(b).zip(&indices) {
                let local = column_variances(batch, r);
                let mut best = active[0];
                for &d in &active[1..] {
                    if local[d] / global[d] < local[best] / global[best] {
                        best = d;
                    }
                }
                v[index][best] += 1;
            }
            done += k;
        }
        Ok(v)
    };
    let train = votes(cfg.num_train, &mut rng)?;
    let eval = votes(cfg.num_eval, &mut rng)?;
    // Majority vote: each dimension's factor (the first on ties).
    let classifier: Vec<usize> = (0..r)
        .map(|d| {
            let mut best = 0;
            for k in 1..f {
                if train[k][d] > train[best][d] {
                    best = k;
                }
            }
            best
        })
        .collect();
    let accuracy = |v: &Vec<Vec<u64>>| {
        let total: u64 = v.iter().flatten().sum();
        let right: u64 = (0..r).map(|d| v[classifier[d]][d]).sum();
        right as f64 / total.max(1) as f64
    };
    Ok(FactorVaeScore {
        train_accuracy: accuracy(&train),
        eval_accuracy: accuracy(&eval),
        active_dims: active.len(),
        votes: train,
    })
}
