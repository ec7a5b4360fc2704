//! MIG, the mutual information gap (Chen et al., 2018, "Isolating sources of disentanglement in
//! VAEs"), as the reference's `discrete_mig`.
//!
//! Each code is discretised by [`histogram_discretize`] (default [`super::DEFAULT_BINS`] = 20
//! equal-width bins); `I(z_i; v_j)` is the plug-in mutual information between discretised code
//! `i` and factor `j` ([`mutual_information`]), `H(v_j)` the factor's empirical entropy, both in
//! nats. Per factor, the gap is `(I_top1 − I_top2) / H(v_j)` between the two codes that share
//! the most information with it; MIG is the mean of the gaps over the factors.
//!
//! Differences from the reference, for inputs where it has no answer:
//! - a factor that is constant over the sample (`H = 0`, where the reference divides by zero)
//!   has no gap and is left out of the mean; if every factor is constant, MIG is an error;
//! - with a single code the second-best information is taken as 0 (the reference indexes past
//!   its sorted array).

use serde::Serialize;

use super::{Matrix, check_pair, entropy, histogram_discretize, mutual_information};
use crate::error::{Error, Result};

/// MIG and what it is made of.
#[derive(Clone, Debug, Serialize)]
pub struct MigScore {
    /// Mean of the per-factor gaps over the factors that vary.
    pub score: f64,
    /// Normalised gap of each factor (`None`: the factor is constant over the sample).
    pub per_factor: Vec<Option<f64>>,
    /// `I(z_i; v_j)` in nats, `[code][factor]`.
    pub mutual_info: Vec<Vec<f64>>,
    /// `H(v_j)` in nats.
    pub entropy: Vec<f64>,
    pub bins: usize,
}

/// MIG of `(N, R)` codes against `(N, F)` discrete factors, codes discretised into `bins`.
pub fn mig(codes: &Matrix<f64>, factors: &Matrix<u64>, bins: usize) -> Result<MigScore> {
    check_pair("mig", codes, factors)?;
    if bins == 0 {
        return Err(Error::Config("mig: bins must be at least 1".into()));
    }
    let discrete: Vec<Vec<u64>> = (0..codes.cols())
        .map(|i| histogram_discretize(&codes.column(i), bins))
        .collect();
    let columns: Vec<Vec<u64>> = (0..factors.cols()).map(|j| factors.column(j)).collect();
    let entropy: Vec<f64> = columns.iter().map(|c| entropy(c)).collect();
    let mutual_info: Vec<Vec<f64>> = discrete
        .iter()
        .map(|z| columns.iter().map(|v| mutual_information(z, v)).collect())
        .collect();
    let per_factor: Vec<Option<f64>> = (0..factors.cols())
        .map(|j| {
            if entropy[j] <= 0.0 {
                return None;
            }
            let mut m: Vec<f64> = mutual_info.iter().map(|row| row[j]).collect();
            m.sort_by(|a, b| b.total_cmp(a));
            let second = m.get(1).copied().unwrap_or(0.0);
            Some((m[0] - second) / entropy[j])
        })
        .collect();
    let gaps: Vec<f64> = per_factor.iter().flatten().copied().collect();
    if gaps.is_empty() {
        return Err(Error::Config(
            "mig: every factor is constant over the sample; MIG needs a factor that varies".into(),
        ));
    }
    Ok(MigScore {
        score: gaps.iter().sum::<f64>() / gaps.len() as f64,
        per_factor,
        mutual_info,
        entropy,
        bins,
    })
}
