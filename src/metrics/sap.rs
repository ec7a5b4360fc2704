//! SAP, the separated attribute predictability score (Kumar et al., 2018, "Variational inference
//! of disentangled latent concepts from unlabeled observations"), in the reference's variant for
//! discrete factors.
//!
//! For every code `i` and factor `j`, a classifier that sees only code `i` is trained to predict
//! factor `j` on the training rows and scored on the test rows, giving the `(R, F)` score matrix
//! `S`. Per factor, the gap is the difference between the two best codes' scores; SAP is the mean
//! of the gaps over the factors.
//!
//! # The single-code classifier, and the score
//! The reference fits a linear SVM (one-vs-rest, `C = 0.01`, balanced class weights) to the one
//! code. A one-dimensional one-vs-rest linear classifier can only give each class one interval of
//! the code, in the order of its slopes, and a middle class that no single threshold separates
//! from the rest is rarely predicted at all. Here the classifier is thresholded the other way
//! round: the code's training range is cut into `B_j = max(bins, 2·K_j)` equal-width bins (the
//! histogram edges of [`super::histogram_discretize`]; `K_j` the values factor `j` takes in the
//! training rows), and each bin predicts the most frequent training value among its rows (ties:
//! the smallest value; an empty bin, or a test code below the range: the most frequent value
//! overall, resp. the first bin). A code that orders a factor's values monotonically is read
//! perfectly, whatever its scale.
//!
//! The reference's entry of `S` is the plain test accuracy, whose floor is the chance level (the
//! most frequent value's share), so a perfect code for a factor of `K` equally frequent values
//! scores at most `1 − 1/K` above a useless one (0.9 for ten values). Here each entry is the
//! accuracy above chance, `(acc − chance) / (1 − chance)` clipped to `[0, 1]`, with `chance` the
//! test accuracy of always predicting the training rows' most frequent value (0 when that is
//! already perfect), so a perfect code scores 1 and a useless one 0 as in the reference's
//! continuous-factor variant. [`SapScore::score_unadjusted`] is the same gap computed from the
//! plain accuracies, for comparison with the reference's figures.
//!
//! A factor with a single value in the training rows (where the reference's classifier fails)
//! has no gap and is left out of the mean; if every factor is constant, SAP is an error. With a
//! single code the second-best score is taken as 0.

use serde::Serialize;

use super::{Matrix, check_split, dense_labels, histogram_edges};
use crate::error::{Error, Result};

/// SAP and its score matrix.
#[derive(Clone, Debug, Serialize)]
pub struct SapScore {
    /// Mean over the factors of the gap between the two best codes' chance-adjusted accuracies.
    pub score: f64,
    /// The same from the plain test accuracies.
    pub score_unadjusted: f64,
    /// Gap of each factor (chance-adjusted; `None`: the factor is constant on the training
    /// rows, and left out of the mean).
    pub per_factor: Vec<Option<f64>>,
    /// Chance-adjusted accuracy, `[code][factor]`.
    pub matrix: Vec<Vec<f64>>,
    /// Plain test accuracy, `[code][factor]`.
    pub accuracy: Vec<Vec<f64>>,
    /// Chance level of each factor on the test rows.
    pub chance: Vec<f64>,
}

/// SAP of the codes: single-code classifiers trained on `(train_codes, train_factors)` with at
/// least `bins` bins, scored on `(test_codes, test_factors)`.
pub fn sap(
    train_codes: &Matrix<f64>,
    train_factors: &Matrix<u64>,
    test_codes: &Matrix<f64>,
    test_factors: &Matrix<u64>,
    bins: usize,
) -> Result<SapScore> {
    check_split(
        "sap",
        (train_codes, train_factors),
        (test_codes, test_factors),
    )?;
    if bins == 0 {
        return Err(Error::Config("sap: bins must be at least 1".into()));
    }
    let (r, f) = (train_codes.cols(), train_factors.cols());
    let code_train: Vec<Vec<f64>> = (0..r).map(|i| train_codes.column(i)).collect();
    let code_test: Vec<Vec<f64>> = (0..r).map(|i| test_codes.column(i)).collect();
    let mut accuracy = vec![vec![0.0; f]; r];
    let mut matrix = vec![vec![0.0; f]; r];
    let mut chance = Vec::with_capacity(f);
    for j in 0..f {
        let y_train = train_factors.column(j);
        let y_test = test_factors.column(j);
        let (dense, k) = dense_labels(&y_train);
        let mut values = y_train.clone();
        values.sort_unstable();
        values.dedup();
        let majority = values[majority_class(&dense, k)];
        let hits = |pred: &dyn Fn(usize) -> u64| {
            y_test
                .iter()
                .enumerate()
                .filter(|&(t, &y)| pred(t) == y)
                .count() as f64
                / y_test.len() as f64
        };
        let c = hits(&|_| majority);
        chance.push(c);
        let n_bins = bins.max(k.saturating_mul(2));
        for i in 0..r {
            let edges = histogram_edges(&code_train[i], n_bins);
            let bin_of = |x: f64| edges.partition_point(|&e| e <= x).max(1) - 1;
            // Majority value per bin from the sorted (bin, class) keys.
            let mut keys: Vec<u64> = code_train[i]
                .iter()
                .zip(&dense)
                .map(|(&x, &d)| bin_of(x) as u64 * k as u64 + u64::from(d))
                .collect();
            keys.sort_unstable();
            let mut predict = vec![majority; n_bins];
            let mut best = vec![0usize; n_bins];
            let mut a = 0;
            while a < keys.len() {
                let mut b = a;
                while b < keys.len() && keys[b] == keys[a] {
                    b += 1;
                }
                let bin = (keys[a] / k as u64) as usize;
                let class = (keys[a] % k as u64) as usize;
                // Keys ascend, so on equal counts the smaller class, seen first, stays.
                if b - a > best[bin] {
                    best[bin] = b - a;
                    predict[bin] = values[class];
                }
                a = b;
            }
            let acc = hits(&|t| predict[bin_of(code_test[i][t])]);
            accuracy[i][j] = acc;
            matrix[i][j] = if c < 1.0 {
                ((acc - c) / (1.0 - c)).clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
    }
    let gap = |m: &Vec<Vec<f64>>, j: usize| {
        let mut col: Vec<f64> = m.iter().map(|row| row[j]).collect();
        col.sort_by(|a, b| b.total_cmp(a));
        col[0] - col.get(1).copied().unwrap_or(0.0)
    };
    let varies: Vec<usize> = (0..f)
        .filter(|&j| dense_labels(&train_factors.column(j)).1 >= 2)
        .collect();
    if varies.is_empty() {
        return Err(Error::Config(
            "sap: every factor is constant on the training rows; SAP needs a factor that varies"
                .into(),
        ));
    }
    let per_factor: Vec<Option<f64>> = (0..f)
        .map(|j| varies.contains(&j).then(|| gap(&matrix, j)))
        .collect();
    let mean =
        |m: &Vec<Vec<f64>>| varies.iter().map(|&j| gap(m, j)).sum::<f64>() / varies.len() as f64;
    Ok(SapScore {
        score: mean(&matrix),
        score_unadjusted: mean(&accuracy),
        per_factor,
        matrix,
        accuracy,
        chance,
    })
}

/// The most frequent of the dense labels `0..k` (the smallest on ties).
fn majority_class(dense: &[u32], k: usize) -> usize {
    let mut counts = vec![0usize; k];
    for &d in dense {
        counts[d as usize] += 1;
    }
    let mut best = 0;
    for (c, &n) in counts.iter().enumerate() {
        if n > counts[best] {
            best = c;
        }
    }
    best
}
