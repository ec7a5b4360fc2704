//! Disentanglement metrics: how well a representation separates the ground-truth factors that
//! generated the data. Everything here runs on the host in f64.
//!
//! The definitions follow the reference implementations of the disentanglement literature
//! (Locatello et al., 2019) metric by metric; every difference is listed in the metric's module:
//!
//! | metric | module | input |
//! | --- | --- | --- |
//! | MIG, mutual information gap (Chen et al., 2018) | [`mig`] | codes and factors |
//! | DCI disentanglement, completeness, informativeness (Eastwood & Williams, 2018) | [`dci`] | codes and factors, train/test |
//! | SAP, separated attribute predictability (Kumar et al., 2018) | [`sap`] | codes and factors, train/test |
//! | BetaVAE score (Higgins et al., 2017) | [`beta_vae`] | a [`GroundTruth`] and an encoder |
//! | FactorVAE score (Kim & Mnih, 2018) | [`factor_vae`] | a [`GroundTruth`] and an encoder |
//!
//! # Inputs
//! Codes are an `(N, R)` [`Matrix<f64>`] (one row per example, e.g. the encoder means μ);
//! factors an `(N, F)` [`Matrix<u64>`] of discrete factor values (any non-negative integers:
//! only equality matters). Continuous factors must be discretised by the caller. Every function
//! checks its inputs (shapes, finite codes, sizes) and returns an error instead of panicking.
//!
//! The BetaVAE and FactorVAE scores need observations drawn with chosen factors: they take a
//! [`GroundTruth`] (factor sizes and a sampler of factor tuples) and an encoder closure
//! `&mut dyn FnMut(&[Vec<usize>]) -> Result<Vec<Vec<f64>>>` that maps factor tuples to codes
//! (for the built-in sprites: render the tuples with [`crate::data::sprites::render`] and encode
//! them). [`sample_codes`] draws a coded sample for MIG, DCI and SAP the same way, and
//! [`evaluate_ground_truth`] computes those three from a ground truth at the reference sample
//! sizes.
//!
//! # Randomness
//! Every draw (factor tuples, the train/test split) comes from [`HostRng`] (PCG64 MCG, whose
//! stream is documented as portable; see [`crate::rng`]) derived from a seed (default 0) and a
//! stream constant per purpose, so a given seed gives the same figures on every machine.

pub mod beta_vae;
pub mod cli;
pub mod dci;
pub mod factor_vae;
pub mod mig;
pub mod sap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::rng::HostRng;

pub use beta_vae::{BetaVaeConfig, BetaVaeScore, LogisticRegression, beta_vae_score};
pub use dci::{DciScore, GbtConfig, completeness, dci, disentanglement};
pub use factor_vae::{FactorVaeConfig, FactorVaeScore, factor_vae_score};
pub use mig::{MigScore, mig};
pub use sap::{SapScore, sap};

/// Bins of the histogram discretisation of codes (MIG; the least SAP uses).
pub const DEFAULT_BINS: usize = 20;
/// Fraction of the rows that train the DCI and SAP predictors: the reference sizes of 10,000
/// training and 5,000 test points.
pub const DEFAULT_TRAIN_FRACTION: f64 = 2.0 / 3.0;
/// Rows [`evaluate_arrays`] uses by default (10,000 train + 5,000 test); larger inputs are
/// subsampled by the seeded shuffle.
pub const DEFAULT_MAX_ROWS: usize = 15_000;
/// Factor tuples per call of the encoder closure, at most: a call never splits the batch of one
/// BetaVAE or FactorVAE point, so it holds up to `max(encode_rows, 2·batch_size)` tuples.
pub const DEFAULT_ENCODE_ROWS: usize = 4096;

/// Stream of [`HostRng::derive`] of the train/test split.
const SPLIT_STREAM: u64 = 0x0073_706c_6974; // "split"
/// Stream of [`HostRng::derive`] of [`evaluate_ground_truth`]'s sample.
const SAMPLE_STREAM: u64 = 0x0073_616d_706c; // "sampl"

/// The encoder closure of the sampled metrics: factor tuples in, one code row per tuple out.
pub type Encoder<'a> = dyn FnMut(&[Vec<usize>]) -> Result<Vec<Vec<f64>>> + 'a;

/// A row-major `(rows, cols)` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Copy> Matrix<T> {
    /// A matrix over `data` (`rows·cols` elements, row-major).
    pub fn new(rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::Shape {
                op: "matrix",
                detail: format!(
                    "{rows} rows of {cols} columns do not match {} elements",
                    data.len()
                ),
            });
        }
        Ok(Matrix { rows, cols, data })
    }

    /// A matrix from rows of equal length (`cols` is needed for zero rows).
    pub fn from_rows(rows: &[Vec<T>], cols: usize) -> Result<Self> {
        let mut data = Vec::with_capacity(rows.len().saturating_mul(cols));
        for (i, r) in rows.iter().enumerate() {
            if r.len() != cols {
                return Err(Error::Shape {
                    op: "matrix",
                    detail: format!("row {i} has {} columns, expected {cols}", r.len()),
                });
            }
            data.extend_from_slice(r);
        }
        Matrix::new(rows.len(), cols, data)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Row `i`. Panics if `i >= rows`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Element `(i, j)`. Panics if out of range.
    pub fn get(&self, i: usize, j: usize) -> T {
        self.data[i * self.cols + j]
    }

    /// Column `j` as a vector. Panics if `j >= cols`.
    pub fn column(&self, j: usize) -> Vec<T> {
        (0..self.rows).map(|i| self.get(i, j)).collect()
    }

    /// The rows `indices`, in that order. Panics if an index is `>= rows`.
    pub fn select_rows(&self, indices: &[usize]) -> Self {
        let mut data = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: indices.len(),
            cols: self.cols,
            data,
        }
    }

    /// The rows as vectors (for JSON).
    pub fn to_rows(&self) -> Vec<Vec<T>> {
        (0..self.rows).map(|i| self.row(i).to_vec()).collect()
    }
}

// ---- Ground truth ----------------------------------------------------------------------------

/// A data set generated by discrete, independent factors: what the sampled metrics draw from.
pub trait GroundTruth {
    /// Number of values of each factor (each at least 1).
    fn factor_sizes(&self) -> &[usize];

    /// `n` factor tuples, each value `< factor_sizes()[f]`. The default draws every factor
    /// uniformly and independently (factor by factor within a tuple, tuple after tuple), as for
    /// a data set that holds every combination once, such as the built-in sprites.
    fn sample_factors(&self, n: usize, rng: &mut HostRng) -> Vec<Vec<usize>> {
        let sizes = self.factor_sizes();
        (0..n)
            .map(|_| {
                sizes
                    .iter()
                    .map(|&s| rng.below(s.max(1) as u64) as usize)
                    .collect()
            })
            .collect()
    }
}

/// Independent uniform factors of the given sizes (the default [`GroundTruth::sample_factors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniformFactors {
    sizes: Vec<usize>,
}

impl UniformFactors {
    /// Factors of these sizes: at least one factor, each of at least one value.
    pub fn new(sizes: Vec<usize>) -> Result<Self> {
        if sizes.is_empty() || sizes.contains(&0) {
            return Err(Error::Config(format!(
                "ground truth factor sizes {sizes:?}: need at least one factor, each of at least \
                 one value"
            )));
        }
        Ok(UniformFactors { sizes })
    }
}

impl GroundTruth for UniformFactors {
    fn factor_sizes(&self) -> &[usize] {
        &self.sizes
    }
}

/// Checks a ground truth's sizes for metric `op`.
pub(crate) fn check_ground_truth(op: &'static str, gt: &dyn GroundTruth) -> Result<()> {
    let sizes = gt.factor_sizes();
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(Error::Config(format!(
            "{op}: ground truth factor sizes {sizes:?}: need at least one factor, each of at \
             least one value"
        )));
    }
    Ok(())
}

/// Draws `n` factor tuples of `gt` with `rng` and checks them against the factor sizes.
pub(crate) fn draw_factors(
    op: &'static str,
    gt: &dyn GroundTruth,
    n: usize,
    rng: &mut HostRng,
) -> Result<Vec<Vec<usize>>> {
    let tuples = gt.sample_factors(n, rng);
    let sizes = gt.factor_sizes();
    if tuples.len() != n {
        return Err(Error::Shape {
            op,
            detail: format!(
                "the ground truth returned {} factor tuples, {n} were asked for",
                tuples.len()
            ),
        });
    }
    for (i, t) in tuples.iter().enumerate() {
        if t.len() != sizes.len() || t.iter().zip(sizes).any(|(&v, &s)| v >= s) {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "factor tuple {i} is {t:?}, which does not fit the factor sizes {sizes:?}"
                ),
            });
        }
    }
    Ok(tuples)
}

/// Calls `encode` on `tuples` and checks its answer: one row per tuple, every row of the same
/// length (`dims`, fixed by the first call when `None`), every value finite.
pub(crate) fn encode_checked(
    op: &'static str,
    encode: &mut Encoder<'_>,
    tuples: &[Vec<usize>],
    dims: &mut Option<usize>,
) -> Result<Vec<Vec<f64>>> {
    let codes = encode(tuples)?;
    if codes.len() != tuples.len() {
        return Err(Error::Shape {
            op,
            detail: format!(
                "the encoder returned {} codes for {} factor tuples",
                codes.len(),
                tuples.len()
            ),
        });
    }
    for (i, c) in codes.iter().enumerate() {
        let want = *dims.get_or_insert(c.len());
        if c.len() != want || want == 0 {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "the encoder returned a code of {} dimensions, expected {want} (and at least 1)",
                    c.len()
                ),
            });
        }
        if let Some(j) = c.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "{op}: the encoder returned {} in dimension {j} of the code of factors {:?}",
                c[j], tuples[i]
            )));
        }
    }
    Ok(codes)
}

// ---- Checks of array inputs ------------------------------------------------------------------

/// Checks that codes and factors are non-empty, have the same rows and that codes are finite.
pub(crate) fn check_pair(
    op: &'static str,
    codes: &Matrix<f64>,
    factors: &Matrix<u64>,
) -> Result<()> {
    if codes.rows() != factors.rows() {
        return Err(Error::Shape {
            op,
            detail: format!(
                "{} rows of codes but {} rows of factors; they must match",
                codes.rows(),
                factors.rows()
            ),
        });
    }
    if codes.rows() == 0 || codes.cols() == 0 || factors.cols() == 0 {
        return Err(Error::Shape {
            op,
            detail: format!(
                "codes ({}, {}) and factors ({}, {}): need at least one row, code and factor",
                codes.rows(),
                codes.cols(),
                factors.rows(),
                factors.cols()
            ),
        });
    }
    if let Some(e) = codes.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "{op}: code {} of row {} is {}; codes must be finite",
            e % codes.cols(),
            e / codes.cols(),
            codes.data()[e]
        )));
    }
    Ok(())
}

/// Checks a train/test pair of code and factor matrices for `op`.
pub(crate) fn check_split(
    op: &'static str,
    train: (&Matrix<f64>, &Matrix<u64>),
    test: (&Matrix<f64>, &Matrix<u64>),
) -> Result<()> {
    check_pair(op, train.0, train.1)?;
    check_pair(op, test.0, test.1)?;
    if train.0.cols() != test.0.cols() || train.1.cols() != test.1.cols() {
        return Err(Error::Shape {
            op,
            detail: format!(
                "training codes/factors have {}/{} columns, test codes/factors {}/{}; they must \
                 match",
                train.0.cols(),
                train.1.cols(),
                test.0.cols(),
                test.1.cols()
            ),
        });
    }
    Ok(())
}

// ---- Discretisation and information ----------------------------------------------------------

/// Histogram discretisation of one code: `bins` equal-width bins between the smallest and the
/// largest value (a constant code: between `v − 0.5` and `v + 0.5`), and each value's label
/// is the number of left bin edges `≤` it, in `1..=bins` — numpy's
/// `digitize(x, histogram(x, bins)[1][:-1])`, edges computed as `histogram` does
/// (`lo + k·((hi − lo)/bins)`). Values must be finite (a NaN gets label 0). `bins ≥ 1`.
pub fn histogram_discretize(values: &[f64], bins: usize) -> Vec<u64> {
    let edges = histogram_edges(values, bins);
    values
        .iter()
        .map(|&x| edges.partition_point(|&e| e <= x) as u64)
        .collect()
}

/// The `bins` left edges of [`histogram_discretize`].
pub(crate) fn histogram_edges(values: &[f64], bins: usize) -> Vec<f64> {
    let bins = bins.max(1);
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, 1.0);
    }
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let step = (hi - lo) / bins as f64;
    (0..bins).map(|k| k as f64 * step + lo).collect()
}

/// Labels mapped to `0..k` in increasing order of value; returns the dense labels and `k`.
pub(crate) fn dense_labels(labels: &[u64]) -> (Vec<u32>, usize) {
    let mut values = labels.to_vec();
    values.sort_unstable();
    values.dedup();
    let dense = labels
        .iter()
        .map(|v| values.partition_point(|u| u < v) as u32)
        .collect();
    (dense, values.len())
}

/// Entropy in nats of the empirical distribution of `labels` (0 for an empty slice).
pub fn entropy(labels: &[u64]) -> f64 {
    let (dense, k) = dense_labels(labels);
    let mut counts = vec![0usize; k];
    for &d in &dense {
        counts[d as usize] += 1;
    }
    let n = labels.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Mutual information in nats between two discrete variables given as paired samples (the
/// plug-in estimate from their contingency table, clipped at 0 like the reference's
/// `mutual_info_score`). Panics if the lengths differ.
pub fn mutual_information(a: &[u64], b: &[u64]) -> f64 {
    assert_eq!(a.len(), b.len(), "mutual_information: paired samples");
    if a.is_empty() {
        return 0.0;
    }
    let (da, ka) = dense_labels(a);
    let (db, kb) = dense_labels(b);
    let mut ca = vec![0usize; ka];
    let mut cb = vec![0usize; kb];
    for (&x, &y) in da.iter().zip(&db) {
        ca[x as usize] += 1;
        cb[y as usize] += 1;
    }
    // Joint counts: sort the pair keys (ka·kb ≤ n² fits in u64 for any slice in memory).
    let mut keys: Vec<u64> = da
        .iter()
        .zip(&db)
        .map(|(&x, &y)| u64::from(x) * kb as u64 + u64::from(y))
        .collect();
    keys.sort_unstable();
    let n = a.len() as f64;
    let mut mi = 0.0;
    let mut i = 0;
    while i < keys.len() {
        let mut j = i;
        while j < keys.len() && keys[j] == keys[i] {
            j += 1;
        }
        let nxy = (j - i) as f64;
        let x = (keys[i] / kb as u64) as usize;
        let y = (keys[i] % kb as u64) as usize;
        mi += nxy / n * (n * nxy / (ca[x] as f64 * cb[y] as f64)).ln();
        i = j;
    }
    mi.max(0.0)
}

// ---- Splits ----------------------------------------------------------------------------------

/// A seeded train/test split of `n ≥ 2` rows: a shuffle by [`HostRng::derive`]`(seed, "split")`,
/// then the first `ceil(n·train_fraction)` rows (at least 1 and at most `n − 1`) train and the
/// rest test. The reference splits its (already i.i.d.) rows in file order; the shuffle makes
/// the split independent of how a file's rows are ordered.
pub fn split_rows(n: usize, train_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if n < 2 {
        return Err(Error::Config(format!(
            "a train/test split needs at least 2 rows, got {n}"
        )));
    }
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(Error::Config(format!(
            "train fraction {train_fraction}: must be strictly between 0 and 1"
        )));
    }
    let perm = HostRng::derive(seed, SPLIT_STREAM).permutation(n);
    let n_train = ((n as f64 * train_fraction).ceil() as usize).clamp(1, n - 1);
    let train = perm[..n_train].iter().map(|&i| i as usize).collect();
    let test = perm[n_train..].iter().map(|&i| i as usize).collect();
    Ok((train, test))
}

// ---- MIG, DCI and SAP together -----------------------------------------------------------------

/// How [`evaluate_arrays`] computes MIG, DCI and SAP from one set of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayConfig {
    /// Histogram bins of MIG (and the least of SAP).
    pub bins: usize,
    /// Fraction of the used rows that train the DCI and SAP predictors.
    pub train_fraction: f64,
    /// At most this many rows are used; a larger input is subsampled by the seeded shuffle.
    pub max_rows: usize,
    /// Seed of the shuffle (split and subsample).
    pub seed: u64,
    /// The DCI predictor.
    pub gbt: GbtConfig,
}

impl Default for ArrayConfig {
    fn default() -> Self {
        ArrayConfig {
            bins: DEFAULT_BINS,
            train_fraction: DEFAULT_TRAIN_FRACTION,
            max_rows: DEFAULT_MAX_ROWS,
            seed: 0,
            gbt: GbtConfig::default(),
        }
    }
}

/// MIG, DCI and SAP of one set of rows.
#[derive(Clone, Debug, Serialize)]
pub struct ArrayMetrics {
    /// Rows given.
    pub rows_total: usize,
    /// Rows used (at most [`ArrayConfig::max_rows`]): MIG is computed on all of them.
    pub rows: usize,
    /// Rows that trained the DCI and SAP predictors, and rows that scored them.
    pub train_rows: usize,
    pub test_rows: usize,
    pub codes: usize,
    pub factors: usize,
    pub mig: MigScore,
    pub dci: DciScore,
    pub sap: SapScore,
}

/// MIG on all used rows; DCI and SAP trained on a seeded split of them ([`split_rows`]).
pub fn evaluate_arrays(
    codes: &Matrix<f64>,
    factors: &Matrix<u64>,
    cfg: &ArrayConfig,
) -> Result<ArrayMetrics> {
    check_pair("metrics", codes, factors)?;
    if cfg.max_rows < 2 {
        return Err(Error::Config(format!(
            "max rows {}: must be at least 2",
            cfg.max_rows
        )));
    }
    let n = codes.rows();
    let (mut train, mut test) = split_rows(n, cfg.train_fraction, cfg.seed)?;
    if n > cfg.max_rows {
        // The split is a shuffle: its first rows are a uniform subsample. Re-split them in the
        // same proportion.
        let all: Vec<usize> = train.iter().chain(&test).copied().collect();
        let used = &all[..cfg.max_rows];
        let n_train =
            ((cfg.max_rows as f64 * cfg.train_fraction).ceil() as usize).clamp(1, cfg.max_rows - 1);
        train = used[..n_train].to_vec();
        test = used[n_train..].to_vec();
    }
    let used: Vec<usize> = train.iter().chain(&test).copied().collect();
    let (c_used, f_used) = (codes.select_rows(&used), factors.select_rows(&used));
    let (c_train, f_train) = (codes.select_rows(&train), factors.select_rows(&train));
    let (c_test, f_test) = (codes.select_rows(&test), factors.select_rows(&test));
    Ok(ArrayMetrics {
        rows_total: n,
        rows: used.len(),
        train_rows: train.len(),
        test_rows: test.len(),
        codes: codes.cols(),
        factors: factors.cols(),
        mig: mig(&c_used, &f_used, cfg.bins)?,
        dci: dci(&c_train, &f_train, &c_test, &f_test, &cfg.gbt)?,
        sap: sap(&c_train, &f_train, &c_test, &f_test, cfg.bins)?,
    })
}

/// Draws `n` factor tuples of `gt` (with a [`HostRng`] from `seed` and a fixed stream) and
/// encodes them, `encode_rows` tuples per call. Returns the `(n, R)` codes and `(n, F)` factors.
pub fn sample_codes(
    gt: &dyn GroundTruth,
    encode: &mut Encoder<'_>,
    n: usize,
    seed: u64,
    encode_rows: usize,
) -> Result<(Matrix<f64>, Matrix<u64>)> {
    check_ground_truth("sample", gt)?;
    if n == 0 || encode_rows == 0 {
        return Err(Error::Config(format!(
            "sample: {n} points in calls of {encode_rows}: both must be at least 1"
        )));
    }
    let mut rng = HostRng::derive(seed, SAMPLE_STREAM);
    let f = gt.factor_sizes().len();
    let mut dims = None;
    let mut codes = Vec::new();
    let mut factors = Vec::new();
    let mut done = 0;
    while done < n {
        let k = encode_rows.min(n - done);
        let tuples = draw_factors("sample", gt, k, &mut rng)?;
        let c = encode_checked("sample", encode, &tuples, &mut dims)?;
        for (t, row) in tuples.iter().zip(c) {
            factors.extend(t.iter().map(|&v| v as u64));
            codes.extend(row);
        }
        done += k;
    }
    let r = dims.unwrap_or(0);
    Ok((Matrix::new(n, r, codes)?, Matrix::new(n, f, factors)?))
}

/// Sample sizes of [`evaluate_ground_truth`].
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruthConfig {
    /// Points that train the DCI and SAP predictors; MIG is computed on these.
    pub num_train: usize,
    /// Points that score the DCI and SAP predictors.
    pub num_test: usize,
    pub bins: usize,
    pub seed: u64,
    pub encode_rows: usize,
    pub gbt: GbtConfig,
}

impl Default for GroundTruthConfig {
    /// The reference sizes: 10,000 training and 5,000 test points.
    fn default() -> Self {
        GroundTruthConfig {
            num_train: 10_000,
            num_test: 5_000,
            bins: DEFAULT_BINS,
            seed: 0,
            encode_rows: DEFAULT_ENCODE_ROWS,
            gbt: GbtConfig::default(),
        }
    }
}

/// MIG (on the training points), DCI and SAP from `num_train + num_test` points drawn from `gt`
/// and encoded by `encode`, as the reference computes them from a ground-truth data set.
pub fn evaluate_ground_truth(
    gt: &dyn GroundTruth,
    encode: &mut Encoder<'_>,
    cfg: &GroundTruthConfig,
) -> Result<ArrayMetrics> {
    let n = cfg.num_train.checked_add(cfg.num_test).ok_or_else(|| {
        Error::Config(format!(
            "{} + {} points overflow",
            cfg.num_train, cfg.num_test
        ))
    })?;
    if cfg.num_train == 0 || cfg.num_test == 0 {
        return Err(Error::Config(format!(
            "{} training and {} test points: both must be at least 1",
            cfg.num_train, cfg.num_test
        )));
    }
    let (codes, factors) = sample_codes(gt, encode, n, cfg.seed, cfg.encode_rows)?;
    let train: Vec<usize> = (0..cfg.num_train).collect();
    let test: Vec<usize> = (cfg.num_train..n).collect();
    let (c_train, f_train) = (codes.select_rows(&train), factors.select_rows(&train));
    let (c_test, f_test) = (codes.select_rows(&test), factors.select_rows(&test));
    Ok(ArrayMetrics {
        rows_total: n,
        rows: n,
        train_rows: cfg.num_train,
        test_rows: cfg.num_test,
        codes: codes.cols(),
        factors: factors.cols(),
        mig: mig(&c_train, &f_train, cfg.bins)?,
        dci: dci(&c_train, &f_train, &c_test, &f_test, &cfg.gbt)?,
        sap: sap(&c_train, &f_train, &c_test, &f_test, cfg.bins)?,
    })
}

/// Index of the largest value (the first on ties, as numpy's `argmax`).
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Variance with `ddof = 1` of each column of `rows` (0 for fewer than two rows).
pub(crate) fn column_variances(rows: &[Vec<f64>], dims: usize) -> Vec<f64> {
    let n = rows.len();
    if n < 2 {
        return vec![0.0; dims];
    }
    let mut mean = vec![0.0; dims];
    for r in rows {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0; dims];
    for r in rows {
        for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(r) {
            *s += (v - m) * (v - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= (n - 1) as f64);
    var
}
