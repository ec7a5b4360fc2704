//! DCI: disentanglement, completeness and informativeness (Eastwood & Williams, 2018, "A
//! framework for the quantitative evaluation of disentangled representations"), as the
//! reference computes them for discrete factors.
//!
//! For each factor `j` a classifier predicts the factor's value from all `R` codes; its feature
//! importances (normalised to sum 1) are column `j` of the `(R, F)` importance matrix `B`, and its
//! accuracy on held-out rows is the factor's informativeness. Then
//! - disentanglement: `D = Σ_i ρ_i (1 − H_F(P_i·))`, `P_ij = B_ij / Σ_k B_ik`, `ρ_i = Σ_j B_ij / Σ B`;
//! - completeness: `C = Σ_j ρ_j (1 − H_R(P̃_·j))`, `P̃_ij = B_ij / Σ_k B_kj`, `ρ_j = Σ_i B_ij / Σ B`;
//! - informativeness: the mean over the factors of the classifier's test accuracy (and, as the
//!   reference also reports, its training accuracy),
//!
//! with `H_K` the entropy in base `K` of the row (column) plus `1e-11` per entry, normalised —
//! the reference's `scipy.stats.entropy(B + 1e-11, base=K)`.
//!
//! # The classifier
//! The reference uses a gradient boosted trees classifier with its library's defaults; this one
//! is written to the same recipe ([`GbtClassifier`]): multinomial deviance, one regression tree
//! per class and round on the residuals `1{y = k} − p_k`, 100 rounds, learning rate 0.1, trees
//! of depth 3 with at least one row per leaf, splits chosen by the squared-error reduction on
//! every feature, leaf values by one Newton step `(K−1)/K · Σr / Σp(1−p)`, initial scores the
//! log class priors; a feature's importance is the squared-error reduction of its splits summed
//! over every tree. Differences:
//! - two classes get two trees per round (the multinomial form), not one binomial tree;
//! - split thresholds lie midway between consecutive distinct values of the feature over all
//!   training rows (the reference: over the node's rows), found from per-node histograms of
//!   the residuals; a feature with more than [`MAX_FEATURE_BINS`] distinct training values is
//!   cut at 255 row quantiles instead, as histogram-based boosting does, so its splits are
//!   approximate;
//! - when several features offer a split of exactly the same best reduction (duplicated codes),
//!   the split uses the first and its reduction is shared equally among them; the reference
//!   breaks such ties by a random feature order, which shares them only on average. So duplicated
//!   codes get equal importance and the figures do not depend on a random state;
//! - a split is made only when it reduces the squared error by more than `1e-10` of the node's
//!   sum of squared residuals (the reference splits any impure node); a constant code is never
//!   split on, so an all-constant representation has an all-zero importance matrix;
//! - factors are fitted in parallel threads; the result does not depend on their number.
//!
//! Degenerate matrices: an all-zero importance matrix gives `D = C = 0` (as in the reference);
//! with a single factor (code) the base-1 entropy is undefined in the reference: here `D = 1`
//! (`C = 1`) when any importance is positive. A factor with a single value in the training rows
//! (where the reference's classifier fails) gets an all-zero importance column and no accuracy:
//! it is left out of the informativeness means; if every factor is constant, DCI is an error.

use serde::Serialize;

use super::{Matrix, check_split, dense_labels};
use crate::error::{Error, Result};

/// The boosted trees of [`GbtClassifier`].
#[derive(Clone, Debug, PartialEq)]
pub struct GbtConfig {
    /// Boosting rounds (each fits one tree per class).
    pub rounds: usize,
    pub learning_rate: f64,
    /// Depth of every tree (levels of splits).
    pub max_depth: usize,
    /// Fewest training rows in a leaf.
    pub min_samples_leaf: usize,
}

impl Default for GbtConfig {
    fn default() -> Self {
        GbtConfig {
            rounds: 100,
            learning_rate: 0.1,
            max_depth: 3,
            min_samples_leaf: 1,
        }
    }
}

impl GbtConfig {
    fn check(&self) -> Result<()> {
        if self.rounds == 0
            || self.max_depth == 0
            || self.min_samples_leaf == 0
            || !(self.learning_rate.is_finite() && self.learning_rate > 0.0)
        {
            return Err(Error::Config(format!(
                "boosted trees {self:?}: rounds, depth and leaf size must be at least 1 and the \
                 learning rate positive"
            )));
        }
        Ok(())
    }
}

/// DCI scores and the importance matrix.
#[derive(Clone, Debug, Serialize)]
pub struct DciScore {
    pub disentanglement: f64,
    pub completeness: f64,
    /// Mean test accuracy of the per-factor classifiers.
    pub informativeness_test: f64,
    /// Mean training accuracy of the per-factor classifiers.
    pub informativeness_train: f64,
    /// Test accuracy of each factor's classifier (`None`: the factor is constant on the
    /// training rows, and left out of the means).
    pub accuracy_per_factor: Vec<Option<f64>>,
    /// `B`, `[code][factor]`: each column sums to 1 (or is all zero).
    pub importance: Vec<Vec<f64>>,
}

/// DCI of the codes: classifiers trained on `(train_codes, train_factors)`, informativeness
/// measured on `(test_codes, test_factors)`.
pub fn dci(
    train_codes: &Matrix<f64>,
    train_factors: &Matrix<u64>,
    test_codes: &Matrix<f64>,
    test_factors: &Matrix<u64>,
    cfg: &GbtConfig,
) -> Result<DciScore> {
    check_split(
        "dci",
        (train_codes, train_factors),
        (test_codes, test_factors),
    )?;
    cfg.check()?;
    let (r, f) = (train_codes.cols(), train_factors.cols());
    let fit_one = |j: usize| -> (Vec<f64>, f64, f64) {
        let y = train_factors.column(j);
        let (model, train_pred) = GbtClassifier::fit_checked(train_codes, &y, cfg);
        let acc = |pred: &[u64], truth: &[u64]| {
            let hits = pred.iter().zip(truth).filter(|(p, t)| p == t).count();
            hits as f64 / truth.len() as f64
        };
        let train_acc = acc(&train_pred, &y);
        let test_acc = acc(&model.predict_rows(test_codes), &test_factors.column(j));
        (model.feature_importances(), train_acc, test_acc)
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, f);
    // Factors with the most values (trees) first, each taken by the next free thread.
    let mut queue: Vec<usize> = (0..f).collect();
    let classes: Vec<usize> = (0..f)
        .map(|j| dense_labels(&train_factors.column(j)).1)
        .collect();
    queue.sort_by_key(|&j| std::cmp::Reverse(classes[j]));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<(Vec<f64>, f64, f64)>> = vec![None; f];
    std::thread::scope(|s| {
        let (fit_one, queue, next) = (&fit_one, &queue, &next);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let q = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&j) = queue.get(q) else { break };
                        done.push((j, fit_one(j)));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            // A panic in a worker is a bug here, not bad input: re-raise it.
            let done = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (j, res) in done {
                results[j] = Some(res);
            }
        }
    });
    let mut importance = vec![0.0; r * f];
    let mut train_acc = Vec::with_capacity(f);
    let mut test_acc = Vec::with_capacity(f);
    for (j, res) in results.into_iter().enumerate() {
        let (imp, a_train, a_test) = res.unwrap_or_else(|| (vec![0.0; r], 0.0, 0.0));
        for (i, v) in imp.into_iter().enumerate() {
            importance[i * f + j] = v;
        }
        // A factor constant on the training rows has nothing to predict.
        let varies = classes[j] >= 2;
        train_acc.push(varies.then_some(a_train));
        test_acc.push(varies.then_some(a_test));
    }
    let mean = |v: &[Option<f64>]| {
        let some: Vec<f64> = v.iter().flatten().copied().collect();
        (!some.is_empty()).then(|| some.iter().sum::<f64>() / some.len() as f64)
    };
    let (Some(informativeness_test), Some(informativeness_train)) =
        (mean(&test_acc), mean(&train_acc))
    else {
        return Err(Error::Config(
            "dci: every factor is constant on the training rows; DCI needs a factor that varies"
                .into(),
        ));
    };
    let b = Matrix::new(r, f, importance)?;
    Ok(DciScore {
        disentanglement: disentanglement(&b),
        completeness: completeness(&b),
        informativeness_test,
        informativeness_train,
        accuracy_per_factor: test_acc,
        importance: b.to_rows(),
    })
}

/// `1 − H_K(p)`: `p` (non-negative) plus `1e-11` per entry, normalised; entropy in base `K =
/// p.len()` (1 for `K = 1`).
fn one_minus_entropy(p: &[f64]) -> f64 {
    let k = p.len();
    if k <= 1 {
        return 1.0;
    }
    let total: f64 = p.iter().map(|v| v + 1e-11).sum();
    let h: f64 = p
        .iter()
        .map(|v| {
            let q = (v + 1e-11) / total;
            if q > 0.0 { -q * q.ln() } else { 0.0 }
        })
        .sum();
    1.0 - h / (k as f64).ln()
}

/// DCI disentanglement of an `(R codes, F factors)` importance matrix (entries taken as
/// absolute values; they must be finite). 0 for an all-zero matrix.
pub fn disentanglement(importance: &Matrix<f64>) -> f64 {
    weighted_score(importance, false)
}

/// DCI completeness of an `(R codes, F factors)` importance matrix (entries taken as absolute
/// values; they must be finite). 0 for an all-zero matrix.
pub fn completeness(importance: &Matrix<f64>) -> f64 {
    weighted_score(importance, true)
}

/// Σ over codes (or, `by_factor`, factors) of `(1 − H)·weight`.
fn weighted_score(b: &Matrix<f64>, by_factor: bool) -> f64 {
    let total: f64 = b.data().iter().map(|v| v.abs()).sum();
    if total == 0.0 {
        return 0.0;
    }
    let groups: Vec<Vec<f64>> = if by_factor {
        (0..b.cols())
            .map(|j| b.column(j).iter().map(|v| v.abs()).collect())
            .collect()
    } else {
        (0..b.rows())
            .map(|i| b.row(i).iter().map(|v| v.abs()).collect())
            .collect()
    };
    groups
        .iter()
        .map(|g| one_minus_entropy(g) * g.iter().sum::<f64>() / total)
        .sum()
}

// ---- Gradient boosted trees ------------------------------------------------------------------

const LEAF: u32 = u32::MAX;
/// Most bins of a feature (so a bin index fits in a byte).
pub const MAX_FEATURE_BINS: usize = 256;
/// A split must reduce the squared error by more than this fraction of the node's Σr².
const MIN_GAIN: f64 = 1e-10;
/// Splits whose reductions differ by at most this fraction of the node's Σr² are ties.
const TIE: f64 = 1e-12;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Node {
    /// Feature of the split, or [`LEAF`].
    feature: u32,
    /// Training rows whose bin is `<= bin` go left.
    bin: u8,
    /// The same split on values: `x[feature] <= threshold` goes left.
    threshold: f64,
    left: u32,
    right: u32,
    /// Leaf value (already scaled by the learning rate).
    value: f64,
}

impl Node {
    fn leaf() -> Self {
        Node {
            feature: LEAF,
            bin: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            value: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn predict(&self, x: &[f64]) -> f64 {
        let mut t = 0;
        loop {
            let n = &self.nodes[t];
            if n.feature == LEAF {
                return n.value;
            }
            t = if x[n.feature as usize] <= n.threshold {
                n.left as usize
            } else {
                n.right as usize
            };
        }
    }
}

/// The training features as bins: feature `f`'s thresholds `t_0 < t_1 < …` cut its values into
/// bins, `bin(x)` = the number of thresholds `< x`, so `x <= t_b` exactly when `bin(x) <= b`.
struct Binned {
    cols: usize,
    /// `(rows, cols)` row-major bins.
    bins: Vec<u8>,
    thresholds: Vec<Vec<f64>>,
    /// Start of each feature's bins in a histogram.
    offset: Vec<usize>,
    /// Bins of all features together.
    total: usize,
    /// Features with at least one threshold (the others are constant).
    split_features: Vec<usize>,
}

impl Binned {
    fn new(x: &Matrix<f64>) -> Self {
        let (n, r) = (x.rows(), x.cols());
        let mut thresholds = Vec::with_capacity(r);
        for j in 0..r {
            let mut col = x.column(j);
            col.sort_by(f64::total_cmp);
            let mut distinct = col.clone();
            distinct.dedup();
            let between = |a: f64, b: f64| {
                let mid = a + (b - a) / 2.0;
                if mid < b { mid } else { a }
            };
            let t: Vec<f64> = if distinct.len() <= MAX_FEATURE_BINS {
                distinct.windows(2).map(|w| between(w[0], w[1])).collect()
            } else {
                // Row quantiles: cut before positions k·n/256 where the value changes.
                let mut t: Vec<f64> = (1..MAX_FEATURE_BINS)
                    .map(|k| k * n / MAX_FEATURE_BINS)
                    .filter(|&p| p > 0 && col[p - 1] < col[p])
                    .map(|p| between(col[p - 1], col[p]))
                    .collect();
                t.dedup();
                t
            };
            thresholds.push(t);
        }
        let mut offset = Vec::with_capacity(r);
        let mut total = 0;
        for t in &thresholds {
            offset.push(total);
            total += t.len() + 1;
        }
        let mut bins = vec![0u8; n * r];
        for i in 0..n {
            for (j, t) in thresholds.iter().enumerate() {
                let x = x.get(i, j);
                bins[i * r + j] = t.partition_point(|&v| v < x) as u8;
            }
        }
        let split_features = (0..r).filter(|&j| !thresholds[j].is_empty()).collect();
        Binned {
            cols: r,
            bins,
            thresholds,
            offset,
            total,
            split_features,
        }
    }
}

/// The best split of a node found so far.
#[derive(Clone, Debug)]
struct Best {
    gain: f64,
    feature: usize,
    bin: usize,
    /// Features whose best split ties with this one (the first is `feature`).
    ties: Vec<usize>,
}

/// A gradient boosted trees classifier on real features (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct GbtClassifier {
    /// The class values, increasing; predictions are among them.
    classes: Vec<u64>,
    /// Initial score of each class (log prior).
    init: Vec<f64>,
    /// `rounds × classes` trees, round-major.
    trees: Vec<Tree>,
    /// Summed squared-error reduction of each feature's splits.
    gains: Vec<f64>,
}

impl GbtClassifier {
    /// Fits the classifier to the rows of `x` (finite values) and their labels `y`.
    pub fn fit(x: &Matrix<f64>, y: &[u64], cfg: &GbtConfig) -> Result<Self> {
        if x.rows() != y.len() || x.rows() == 0 || x.cols() == 0 {
            return Err(Error::Shape {
                op: "boosted trees",
                detail: format!(
                    "{} rows of {} features and {} labels: need matching, non-empty inputs",
                    x.rows(),
                    x.cols(),
                    y.len()
                ),
            });
        }
        if x.data().iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite(
                "boosted trees: the features must be finite".into(),
            ));
        }
        cfg.check()?;
        Ok(Self::fit_checked(x, y, cfg).0)
    }

    /// [`GbtClassifier::fit`] on inputs already checked; also returns the predictions of the
    /// training rows (from the scores boosting accumulated for them).
    fn fit_checked(x: &Matrix<f64>, y: &[u64], cfg: &GbtConfig) -> (Self, Vec<u64>) {
        let (n, r) = (x.rows(), x.cols());
        let (dense, k) = dense_labels(y);
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let mut counts = vec![0usize; k];
        for &d in &dense {
            counts[d as usize] += 1;
        }
        let init: Vec<f64> = counts.iter().map(|&c| (c as f64 / n as f64).ln()).collect();
        let mut model = GbtClassifier {
            classes,
            init,
            trees: Vec::new(),
            gains: vec![0.0; r],
        };
        if k < 2 {
            let only = model.classes[0];
            return (model, vec![only; n]);
        }
        let data = Binned::new(x);
        let mut raw: Vec<f64> = (0..n).flat_map(|_| model.init.iter().copied()).collect();
        let mut prob = vec![0.0; n * k];
        let mut resid = vec![0.0; n];
        let mut hess = vec![0.0; n];
        let newton = (k as f64 - 1.0) / k as f64;
        let mut grower = Grower::new(n);
        for _ in 0..cfg.rounds {
            prob.copy_from_slice(&raw);
            for p in prob.chunks_exact_mut(k) {
                softmax(p);
            }
            for c in 0..k {
                for i in 0..n {
                    let p = prob[i * k + c];
                    resid[i] = f64::from(u8::from(dense[i] as usize == c)) - p;
                    hess[i] = p * (1.0 - p);
                }
                let tree = grower.grow(&data, &resid, &hess, cfg, newton, &mut model.gains);
                for (i, &leaf) in grower.leaf_of.iter().enumerate() {
                    raw[i * k + c] += tree.nodes[leaf as usize].value;
                }
                model.trees.push(tree);
            }
        }
        let pred = raw
            .chunks_exact(k)
            .map(|s| model.classes[super::argmax(s)])
            .collect();
        (model, pred)
    }

    /// The predicted class values of the rows of `x` (as [`GbtClassifier::predict`], tree by
    /// tree over all rows).
    pub fn predict_rows(&self, x: &Matrix<f64>) -> Vec<u64> {
        let k = self.classes.len();
        let mut score: Vec<f64> = (0..x.rows())
            .flat_map(|_| self.init.iter().copied())
            .collect();
        if k >= 2 {
            for (t, tree) in self.trees.iter().enumerate() {
                let c = t % k;
                for i in 0..x.rows() {
                    score[i * k + c] += tree.predict(x.row(i));
                }
            }
        }
        score
            .chunks_exact(k)
            .map(|s| self.classes[super::argmax(s)])
            .collect()
    }

    /// The predicted class value of one row of features.
    pub fn predict(&self, x: &[f64]) -> u64 {
        let k = self.classes.len();
        let mut score = self.init.clone();
        if k >= 2 {
            for round in self.trees.chunks_exact(k) {
                for (s, t) in score.iter_mut().zip(round) {
                    *s += t.predict(x);
                }
            }
        }
        self.classes[super::argmax(&score)]
    }

    /// Feature importances: each feature's summed squared-error reduction, normalised to sum 1
    /// (all zero when no tree split).
    pub fn feature_importances(&self) -> Vec<f64> {
        let total: f64 = self.gains.iter().sum();
        if total > 0.0 {
            self.gains.iter().map(|g| g / total).collect()
        } else {
            vec![0.0; self.gains.len()]
        }
    }
}

fn softmax(v: &mut [f64]) {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in v.iter_mut() {
        *x /= s;
    }
}

/// Sum of residuals and count of rows in one bin.
#[derive(Clone, Copy, Debug, Default)]
struct Bin {
    sum: f64,
    count: u32,
}

/// A node being grown: its rows are `rows[start..end]` of the [`Grower`].
struct Open {
    node: u32,
    start: usize,
    end: usize,
    /// Its histogram over every feature's bins (`None` at the last level, where nodes are not
    /// split).
    hist: Option<Vec<Bin>>,
}

/// Grows regression trees level by level on histograms of the binned features: a node's
/// histogram is built from its rows, or as its parent's minus its sibling's for the larger
/// child, and every split is found by one pass over the bins.
struct Grower {
    /// Row indices, partitioned so that each node's rows are contiguous.
    rows: Vec<u32>,
    /// Scratch for the stable partition.
    scratch: Vec<u32>,
    /// After [`Grower::grow`]: the leaf of each row.
    leaf_of: Vec<u32>,
    /// Histograms to reuse.
    pool: Vec<Vec<Bin>>,
}

impl Grower {
    fn new(n: usize) -> Self {
        Grower {
            rows: (0..n as u32).collect(),
            scratch: Vec::with_capacity(n),
            leaf_of: vec![0; n],
            pool: Vec::new(),
        }
    }

    fn histogram(&mut self, data: &Binned, resid: &[f64], start: usize, end: usize) -> Vec<Bin> {
        let mut h = self.pool.pop().unwrap_or_default();
        h.clear();
        h.resize(data.total, Bin::default());
        let r = data.cols;
        for &row in &self.rows[start..end] {
            let row = row as usize;
            let v = resid[row];
            let bins = &data.bins[row * r..(row + 1) * r];
            for &f in &data.split_features {
                let b = &mut h[data.offset[f] + bins[f] as usize];
                b.sum += v;
                b.count += 1;
            }
        }
        h
    }

    /// The best split of a node with histogram `h`, `sum`/`count` rows and Σr² `sq`.
    fn best_split(
        data: &Binned,
        h: &[Bin],
        sum: f64,
        count: usize,
        sq: f64,
        min_leaf: usize,
    ) -> Option<Best> {
        let tol = TIE * sq;
        let mut best: Option<Best> = None;
        for &f in &data.split_features {
            let bins = &h[data.offset[f]..data.offset[f] + data.thresholds[f].len() + 1];
            let (mut sl, mut nl) = (0.0, 0usize);
            // Splits after each non-empty bin but the last.
            for (b, bin) in bins[..bins.len() - 1].iter().enumerate() {
                if bin.count == 0 {
                    continue;
                }
                sl += bin.sum;
                nl += bin.count as usize;
                if nl < min_leaf {
                    continue;
                }
                let nr = count - nl;
                if nr < min_leaf {
                    break;
                }
                let sr = sum - sl;
                let gain = sl * sl / nl as f64 + sr * sr / nr as f64 - sum * sum / count as f64;
                match &mut best {
                    None => {
                        best = Some(Best {
                            gain,
                            feature: f,
                            bin: b,
                            ties: vec![f],
                        })
                    }
                    Some(x) if gain > x.gain + tol => {
                        *x = Best {
                            gain,
                            feature: f,
                            bin: b,
                            ties: vec![f],
                        }
                    }
                    Some(x) if gain >= x.gain - tol => {
                        if !x.ties.contains(&f) {
                            x.ties.push(f);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        best.filter(|b| b.gain > MIN_GAIN * sq)
    }

    fn grow(
        &mut self,
        data: &Binned,
        resid: &[f64],
        hess: &[f64],
        cfg: &GbtConfig,
        newton: f64,
        gains: &mut [f64],
    ) -> Tree {
        let n = resid.len();
        for (i, r) in self.rows.iter_mut().enumerate() {
            *r = i as u32;
        }
        let mut nodes = vec![Node::leaf()];
        let mut leaves: Vec<(u32, usize, usize)> = Vec::new();
        let root_hist = (cfg.max_depth > 0).then(|| self.histogram(data, resid, 0, n));
        let mut level = vec![Open {
            node: 0,
            start: 0,
            end: n,
            hist: root_hist,
        }];
        for depth in 0..=cfg.max_depth {
            let mut next = Vec::new();
            for open in level {
                let Open {
                    node,
                    start,
                    end,
                    hist,
                } = open;
                let Some(h) = hist else {
                    leaves.push((node, start, end));
                    continue;
                };
                let (mut sum, mut sq) = (0.0, 0.0);
                for &row in &self.rows[start..end] {
                    let v = resid[row as usize];
                    sum += v;
                    sq += v * v;
                }
                let best = Self::best_split(data, &h, sum, end - start, sq, cfg.min_samples_leaf);
                let Some(b) = best else {
                    self.pool.push(h);
                    leaves.push((node, start, end));
                    continue;
                };
                let share = b.gain / b.ties.len() as f64;
                for &f in &b.ties {
                    gains[f] += share;
                }
                // Stable partition of the node's rows: left (bin <= b) first.
                let r = data.cols;
                let (f, bin) = (b.feature, b.bin as u8);
                self.scratch.clear();
                let mut w = start;
                for i in start..end {
                    let row = self.rows[i];
                    if data.bins[row as usize * r + f] <= bin {
                        self.rows[w] = row;
                        w += 1;
                    } else {
                        self.scratch.push(row);
                    }
                }
                self.rows[w..end].copy_from_slice(&self.scratch);
                let left = nodes.len() as u32;
                nodes.push(Node::leaf());
                nodes.push(Node::leaf());
                nodes[node as usize] = Node {
                    feature: f as u32,
                    bin,
                    threshold: data.thresholds[f][b.bin],
                    left,
                    right: left + 1,
                    value: 0.0,
                };
                let (lh, rh) = if depth + 1 < cfg.max_depth {
                    // The smaller child from its rows, the larger as the difference.
                    let left_small = w - start <= end - w;
                    let small = if left_small {
                        self.histogram(data, resid, start, w)
                    } else {
                        self.histogram(data, resid, w, end)
                    };
                    let mut large = h;
                    for (l, s) in large.iter_mut().zip(&small) {
                        l.sum -= s.sum;
                        l.count -= s.count;
                    }
                    if left_small {
                        (Some(small), Some(large))
                    } else {
                        (Some(large), Some(small))
                    }
                } else {
                    self.pool.push(h);
                    (None, None)
                };
                next.push(Open {
                    node: left,
                    start,
                    end: w,
                    hist: lh,
                });
                next.push(Open {
                    node: left + 1,
                    start: w,
                    end,
                    hist: rh,
                });
            }
            level = next;
            if level.is_empty() {
                break;
            }
        }
        // Leaf values: one Newton step of the multinomial deviance, times the learning rate.
        for (node, start, end) in leaves {
            let (mut num, mut den) = (0.0, 0.0);
            for &row in &self.rows[start..end] {
                num += resid[row as usize];
                den += hess[row as usize];
                self.leaf_of[row as usize] = node;
            }
            nodes[node as usize].value = if den.abs() < 1e-150 {
                0.0
            } else {
                cfg.learning_rate * newton * num / den
            };
        }
        Tree { nodes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minus_entropy_known_values() {
        assert!((one_minus_entropy(&[1.0, 0.0]) - 1.0).abs() < 1e-9);
        assert!(one_minus_entropy(&[1.0, 1.0]).abs() < 1e-12);
        let want = 1.0 - 2f64.ln() / 4f64.ln();
        assert!((one_minus_entropy(&[3.0, 3.0, 0.0, 0.0]) - want).abs() < 1e-9);
    }

    #[test]
    fn bins_cut_midway_between_distinct_values() {
        let x = Matrix::new(4, 2, vec![3.0, 7.0, 1.0, 7.0, 4.0, 7.0, 1.0, 7.0]).unwrap();
        let b = Binned::new(&x);
        assert_eq!(b.thresholds[0], vec![2.0, 3.5]);
        assert!(b.thresholds[1].is_empty());
        assert_eq!(b.split_features, vec![0]);
        assert_eq!(b.offset, vec![0, 3]);
        assert_eq!(b.total, 4);
        assert_eq!(b.bins, vec![1, 0, 0, 0, 2, 0, 0, 0]);
        // More distinct values than bins: quantile cuts, every bin index in range.
        let many: Vec<f64> = (0..1000).map(|i| (i as f64).sqrt()).collect();
        let b = Binned::new(&Matrix::new(1000, 1, many).unwrap());
        assert_eq!(b.thresholds[0].len(), MAX_FEATURE_BINS - 1);
        assert_eq!(b.bins[0], 0);
        assert_eq!(b.bins[999] as usize, MAX_FEATURE_BINS - 1);
    }

    #[test]
    fn a_tree_splits_between_distinct_values() {
        // One feature; the residual is +1 for x ≤ 2 and −1 above: one split at 2.5.
        let x = Matrix::new(4, 1, vec![3.0, 1.0, 4.0, 2.0]).unwrap();
        let data = Binned::new(&x);
        let resid = [-1.0, 1.0, -1.0, 1.0];
        let hess = [0.25; 4];
        let cfg = GbtConfig {
            max_depth: 1,
            learning_rate: 1.0,
            ..GbtConfig::default()
        };
        let mut g = Grower::new(4);
        let mut gains = vec![0.0];
        let tree = g.grow(&data, &resid, &hess, &cfg, 1.0, &mut gains);
        assert_eq!(tree.nodes[0].feature, 0);
        assert_eq!(tree.nodes[0].threshold, 2.5);
        // Σr² = 4 before, 0 after.
        assert!((gains[0] - 4.0).abs() < 1e-12);
        assert_eq!(tree.predict(&[1.5]), 1.0 / 0.25);
        assert_eq!(tree.predict(&[3.5]), -1.0 / 0.25);
        assert_eq!(g.leaf_of, vec![2, 1, 2, 1]);
    }

    #[test]
    fn duplicated_features_share_a_split() {
        // Two identical columns and a third that is noise: the split's reduction is shared.
        let x = Matrix::new(
            6,
            3,
            vec![
                0.0, 0.0, 5.0, 1.0, 1.0, 3.0, 2.0, 2.0, 5.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0,
                5.0, 3.0,
            ],
        )
        .unwrap();
        let data = Binned::new(&x);
        let resid = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0];
        let cfg = GbtConfig {
            max_depth: 2,
            ..GbtConfig::default()
        };
        let mut g = Grower::new(6);
        let mut gains = vec![0.0; 3];
        let tree = g.grow(&data, &resid, &[0.25; 6], &cfg, 0.5, &mut gains);
        assert_eq!(tree.nodes[0].feature, 0);
        assert_eq!(tree.nodes[0].threshold, 2.5);
        assert_eq!(gains[0], gains[1]);
        assert!((gains[0] + gains[1] - 6.0).abs() < 1e-12, "{gains:?}");
        assert_eq!(gains[2], 0.0);
    }
}
