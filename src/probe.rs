//! Factor probe: how well each generative factor of a data set can be read from a latent code.
//!
//! Given the encoder means μ of a test set (`n × D`) and that set's ground-truth [`Factors`],
//! [`probe`] splits the rows by a seeded shuffle into a fit half and a scoring half, fits two
//! probes per target on the fit half and scores them on the other:
//!
//! - **linear**: least squares with intercept on μ standardised by the fit half's per-dimension
//!   mean and std, solved by Cholesky on the normal equations with a ridge of `1e-8·trace`;
//!   robust to constant and collinear μ columns;
//! - **k-NN** ([`K`] = 5): Euclidean on the same standardised μ (constant columns drop out),
//!   prediction = mean of the neighbours' targets, brute force in `O(n²·D)` time and `O(n·D)`
//!   memory. Distance ties go to the lower fit row, so the result is deterministic.
//!
//! Targets, by factor name:
//!
//! - `"shape"` is categorical (class indices from [`Factors::classes`]): accuracy of an
//!   L2-regularised multinomial logistic regression (accelerated gradient descent in f64 on
//!   standardised μ) and of a k-NN majority vote, with the chance level (largest class frequency
//!   of the scoring half);
//! - `"orientation"` is an angle in radians: the probe reads `cos kθ` and `sin kθ` for
//!   `k` in [`HARMONICS`] (1, 2, 4: a heart repeats every 360°, an ellipse every 180°, a square
//!   every 90°, so a code may only know the angle up to that symmetry);
//! - every other factor (`scale`, `pos_x`, `pos_y`) is continuous ([`Factors::values`]).
//!
//! Scores are R² = 1 − SS_res/SS_tot on the scoring half (SS_tot about the scoring half's own
//! mean): 1 is perfect, 0 is as good as a constant, negative is worse than a constant. A target
//! that is constant on the scoring half gets 0. No score is ever NaN or infinite.
//!
//! The probe is pure CPU code in f64. Sets larger than [`MAX_ROWS`] are subsampled (the same
//! seeded shuffle) so that the quadratic k-NN stays fast.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::data::Factors;
use crate::error::{Error, Result};
use crate::linalg::{cholesky, cholesky_solve};
use crate::rng::HostRng;

/// Neighbours of the k-NN probes.
pub const K: usize = 5;
/// Harmonics `k` of the orientation targets `cos kθ`, `sin kθ`.
pub const HARMONICS: [u32; 3] = [1, 2, 4];
/// Most rows the probe uses; larger sets are subsampled by the seeded shuffle.
pub const MAX_ROWS: usize = 10_000;
/// Fewest rows the probe accepts (two per half).
pub const MIN_ROWS: usize = 4;
/// Name of the categorical factor.
pub const SHAPE: &str = "shape";
/// Name of the angular factor (radians).
pub const ORIENTATION: &str = "orientation";

/// L2 penalty of the logistic probe (on the weights, not the biases; per fit row).
const LOGISTIC_L2: f64 = 1e-3;
/// Iterations of the logistic probe's accelerated gradient descent.
const LOGISTIC_ITERS: usize = 300;
/// Stream of [`HostRng::derive`] that draws the split.
const SPLIT_STREAM: u64 = 0x0070_726f_6265; // "probe"

/// What a continuous target is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The factor's value itself.
    Continuous,
    /// `cos(harmonic·θ)` of an angular factor.
    Cos,
    /// `sin(harmonic·θ)` of an angular factor.
    Sin,
}

/// Scores of one continuous target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorProbe {
    /// Target name: the factor's name, or `<factor>_cos<k>` / `<factor>_sin<k>`.
    pub name: String,
    /// The factor it is computed from.
    pub factor: String,
    pub kind: TargetKind,
    /// `k` of `cos kθ` / `sin kθ`; absent for continuous targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmonic: Option<u32>,
    /// R² of the linear probe on the scoring half.
    pub linear: f64,
    /// R² of the k-NN probe on the scoring half.
    pub knn: f64,
}

impl FactorProbe {
    /// The better of the two R².
    pub fn best(&self) -> f64 {
        self.linear.max(self.knn)
    }
}

/// Scores of the categorical factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassProbe {
    pub name: String,
    /// Number of classes (the factor's size).
    pub n_classes: usize,
    /// Accuracy of the logistic probe on the scoring half.
    pub logistic: f64,
    /// Accuracy of the k-NN majority vote on the scoring half.
    pub knn: f64,
    /// Largest class frequency of the scoring half.
    pub chance: f64,
}

/// Everything [`probe`] measured. Serialises to one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Seed of the split.
    pub seed: u64,
    /// Rows given; at most [`MAX_ROWS`] of them are used.
    pub n: usize,
    /// Rows the probes were fitted on and scored on.
    pub n_fit: usize,
    pub n_score: usize,
    /// Dimensions of μ.
    pub dims: usize,
    /// Dimensions of μ that are constant on the fit half (ignored by every probe).
    pub constant_dims: usize,
    /// Neighbours of the k-NN probes.
    pub k: usize,
    /// Continuous targets, in factor order (angular factors expand to cos/sin per harmonic).
    pub factors: Vec<FactorProbe>,
    /// The categorical factor, when the set has one named `"shape"`.
    #[serde(default)]
    pub shape: Option<ClassProbe>,
}

impl ProbeReport {
    /// The target named `name` (e.g. `"pos_x"`, `"orientation_cos2"`).
    pub fn get(&self, name: &str) -> Option<&FactorProbe> {
        self.factors.iter().find(|f| f.name == name)
    }

    /// Mean R² of `cos kθ` and `sin kθ` of angular factor `factor` at harmonic `k`, as
    /// `(linear, knn)`.
    pub fn angle_r2(&self, factor: &str, k: u32) -> Option<(f64, f64)> {
        let mut parts = self
            .factors
            .iter()
            .filter(|f| f.factor == factor && f.harmonic == Some(k));
        let a = parts.next()?;
        let b = parts.next()?;
        Some((0.5 * (a.linear + b.linear), 0.5 * (a.knn + b.knn)))
    }

    /// The better-of-two R² of a target; for an angular factor's name (e.g. `"orientation"`),
    /// the best over harmonics and probes of the mean R² of its cos and sin.
    pub fn best_r2(&self, name: &str) -> Option<f64> {
        if let Some(f) = self.get(name) {
            return Some(f.best());
        }
        HARMONICS
            .iter()
            .filter_map(|&k| self.angle_r2(name, k))
            .map(|(l, n)| l.max(n))
            .reduce(f64::max)
    }

    /// The better of the logistic and k-NN shape accuracies.
    pub fn best_shape_accuracy(&self) -> Option<f64> {
        self.shape.as_ref().map(|s| s.logistic.max(s.knn))
    }
}

/// Short label of a factor in the one-line summary.
fn short(name: &str) -> &str {
    match name {
        "pos_x" => "x",
        "pos_y" => "y",
        other => other,
    }
}

impl fmt::Display for ProbeReport {
    /// `probe (linear / 5-NN, 500 fit / 500 scored): x R² 0.93/0.97  y 0.94/0.97  scale …
    /// orientation cos/sin 1θ 0.01/0.03 2θ … 4θ …  shape acc 0.41/0.55 (chance 0.34)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "probe (linear / {}-NN, {} fit / {} scored):",
            self.k, self.n_fit, self.n_score
        )?;
        // Positions first, then the other continuous factors in factor order.
        let mut continuous: Vec<&FactorProbe> = self
            .factors
            .iter()
            .filter(|p| p.kind == TargetKind::Continuous)
            .collect();
        continuous.sort_by_key(|p| match p.name.as_str() {
            "pos_x" => 0,
            "pos_y" => 1,
            _ => 2,
        });
        for (i, p) in continuous.iter().enumerate() {
            let r2 = if i == 0 { " R²" } else { "" };
            write!(f, " {}{r2} {:.2}/{:.2} ", short(&p.name), p.linear, p.knn)?;
        }
        let mut angles: Vec<&str> = Vec::new();
        for p in &self.factors {
            if p.kind != TargetKind::Continuous && !angles.contains(&p.factor.as_str()) {
                angles.push(&p.factor);
            }
        }
        for a in angles {
            write!(f, " {a} cos/sin")?;
            for k in HARMONICS {
                if let Some((l, n)) = self.angle_r2(a, k) {
                    write!(f, " {k}θ {l:.2}/{n:.2}")?;
                }
            }
            write!(f, " ")?;
        }
        if let Some(s) = &self.shape {
            write!(
                f,
                " {} acc {:.2}/{:.2} (chance {:.2})",
                s.name, s.logistic, s.knn, s.chance
            )?;
        }
        Ok(())
    }
}

fn shape_err(detail: String) -> Error {
    Error::Shape {
        op: "factor probe",
        detail,
    }
}

/// How a target column is computed from a row of factor values.
type Column = Box<dyn Fn(&[f32]) -> f64>;

/// A categorical target: class indices of the used rows.
struct Categorical {
    name: String,
    n_classes: usize,
    fit: Vec<usize>,
    score: Vec<usize>,
}

/// Probes how well each factor can be read from the codes `mu`: `(n, dims)` row-major, one row
/// per row of `factors` (f32 or f64). `seed` fixes the split: same inputs and seed, same report.
///
/// Errors (never panics) when `dims` is 0, the sizes of `mu` and `factors` disagree, `factors`
/// is inconsistent, there are fewer than [`MIN_ROWS`] rows, a μ or factor value is not finite,
/// or a shape class is out of range.
pub fn probe<T: Copy + Into<f64>>(
    mu: &[T],
    dims: usize,
    factors: &Factors,
    seed: u64,
) -> Result<ProbeReport> {
    let nf = factors.n_factors();
    if dims == 0 {
        return Err(shape_err("μ has 0 dimensions; need at least 1".into()));
    }
    if nf == 0 {
        return Err(shape_err(
            "the factors have no columns (names is empty)".into(),
        ));
    }
    if factors.sizes.len() != nf {
        return Err(shape_err(format!(
            "factors: {} names but {} sizes",
            nf,
            factors.sizes.len()
        )));
    }
    if !factors.values.len().is_multiple_of(nf) || factors.classes.len() != factors.values.len() {
        return Err(shape_err(format!(
            "factors: {} values and {} classes for {nf} factors; both must be n·{nf}",
            factors.values.len(),
            factors.classes.len()
        )));
    }
    let n = factors.values.len() / nf;
    let want = n.checked_mul(dims).ok_or_else(|| {
        shape_err(format!(
            "{n} rows × {dims} dimensions overflow the address space"
        ))
    })?;
    if mu.len() != want {
        return Err(shape_err(format!(
            "μ has {} values but the factors have {n} rows × {dims} dimensions = {want}",
            mu.len()
        )));
    }
    if u32::try_from(n).is_err() {
        return Err(shape_err(format!(
            "{n} rows; the probe takes at most {} (it subsamples {MAX_ROWS})",
            u32::MAX
        )));
    }
    if n < MIN_ROWS {
        return Err(shape_err(format!(
            "{n} rows; the probe needs at least {MIN_ROWS} (two to fit, two to score)"
        )));
    }
    if let Some(i) = mu.iter().position(|&v| !v.into().is_finite()) {
        return Err(shape_err(format!(
            "μ[{}, {}] is not finite ({})",
            i / dims,
            i % dims,
            mu[i].into()
        )));
    }
    if let Some(i) = factors.values.iter().position(|v| !v.is_finite()) {
        return Err(shape_err(format!(
            "factor `{}` of row {} is not finite ({})",
            factors.names[i % nf],
            i / nf,
            factors.values[i]
        )));
    }

    // The split: a seeded shuffle, capped at MAX_ROWS, first half fits, second half scores.
    let mut perm = HostRng::derive(seed, SPLIT_STREAM).permutation(n);
    perm.truncate(MAX_ROWS);
    let used = perm.len();
    let n_fit = used / 2;
    let (fit_rows, score_rows) = perm.split_at(n_fit);
    let n_score = score_rows.len();

    // Targets.
    let mut targets: Vec<FactorProbe> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    let mut categorical: Option<Categorical> = None;
    for (f, name) in factors.names.iter().enumerate() {
        if name == SHAPE {
            let n_classes = factors.sizes[f];
            let class_of = |rows: &[u32]| -> Result<Vec<usize>> {
                rows.iter()
                    .map(|&r| {
                        let c = factors.classes[r as usize * nf + f];
                        if (c as usize) < n_classes {
                            Ok(c as usize)
                        } else {
                            Err(shape_err(format!(
                                "factor `{name}` of row {r} has class {c}, out of range \
                                 0..{n_classes}"
                            )))
                        }
                    })
                    .collect()
            };
            categorical = Some(Categorical {
                name: name.clone(),
                n_classes,
                fit: class_of(fit_rows)?,
                score: class_of(score_rows)?,
            });
        } else if name == ORIENTATION {
            for k in HARMONICS {
                for kind in [TargetKind::Cos, TargetKind::Sin] {
                    let (suffix, g): (&str, fn(f64) -> f64) = match kind {
                        TargetKind::Cos => ("cos", f64::cos),
                        _ => ("sin", f64::sin),
                    };
                    targets.push(FactorProbe {
                        name: format!("{name}_{suffix}{k}"),
                        factor: name.clone(),
                        kind,
                        harmonic: Some(k),
                        linear: 0.0,
                        knn: 0.0,
                    });
                    columns.push(Box::new(move |row: &[f32]| {
                        g(f64::from(k) * f64::from(row[f]))
                    }));
                }
            }
        } else {
            targets.push(FactorProbe {
                name: name.clone(),
                factor: name.clone(),
                kind: TargetKind::Continuous,
                harmonic: None,
                linear: 0.0,
                knn: 0.0,
            });
            columns.push(Box::new(move |row: &[f32]| f64::from(row[f])));
        }
    }
    let nt = targets.len();
    // (rows, nt) row-major target matrices of both halves.
    let target_matrix = |rows: &[u32]| -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len() * nt);
        for &r in rows {
            let row = factors.values_of(r as usize);
            out.extend(columns.iter().map(|c| c(row)));
        }
        out
    };
    let y_fit = target_matrix(fit_rows);
    let y_score = target_matrix(score_rows);

    // Standardised μ of both halves, by the fit half's statistics.
    let stats = Standardiser::fit(mu, dims, fit_rows);
    let z_fit = stats.apply(mu, fit_rows);
    let z_score = stats.apply(mu, score_rows);

    // Linear probe.
    let pred_linear = linear_predict(&z_fit, &y_fit, &z_score, dims, nt);
    // k-NN probe: regression of every target and classification of the shape in one pass.
    let k = K.min(n_fit);
    let (pred_knn, class_knn) = knn_predict(
        &z_fit,
        &z_score,
        dims,
        k,
        &y_fit,
        nt,
        categorical
            .as_ref()
            .map(|c| (c.fit.as_slice(), c.n_classes)),
    );
    for (t, probe) in targets.iter_mut().enumerate() {
        probe.linear = r2(&y_score, &pred_linear, nt, t);
        probe.knn = r2(&y_score, &pred_knn, nt, t);
    }

    let shape = categorical.map(|c| {
        let logits = logistic_predict(&z_fit, &c.fit, &z_score, dims, c.n_classes);
        let pred_logistic: Vec<usize> = logits
            .chunks_exact(c.n_classes.max(1))
            .map(argmax)
            .collect();
        let mut counts = vec![0usize; c.n_classes];
        for &y in &c.score {
            counts[y] += 1;
        }
        let largest = counts.iter().copied().max().unwrap_or(0);
        ClassProbe {
            name: c.name,
            n_classes: c.n_classes,
            logistic: accuracy(&pred_logistic, &c.score),
            knn: accuracy(&class_knn, &c.score),
            chance: largest as f64 / n_score as f64,
        }
    });

    Ok(ProbeReport {
        seed,
        n,
        n_fit,
        n_score,
        dims,
        constant_dims: stats.scale.iter().filter(|&&s| s == 0.0).count(),
        k,
        factors: targets,
        shape,
    })
}

/// Per-dimension mean and 1/std of the fit half; `scale` is 0 for a (numerically) constant
/// dimension, which then drops out of every probe.
struct Standardiser {
    dims: usize,
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Standardiser {
    fn fit<T: Copy + Into<f64>>(mu: &[T], dims: usize, rows: &[u32]) -> Self {
        let n = rows.len() as f64;
        let mut mean = vec![0.0; dims];
        let mut max_abs = vec![0.0f64; dims];
        for &r in rows {
            let x = &mu[r as usize * dims..(r as usize + 1) * dims];
            for ((m, a), &v) in mean.iter_mut().zip(&mut max_abs).zip(x) {
                let v: f64 = v.into();
                *m += v;
                *a = a.max(v.abs());
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; dims];
        for &r in rows {
            let x = &mu[r as usize * dims..(r as usize + 1) * dims];
            for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(x) {
                let e = v.into() - m;
                *s += e * e;
            }
        }
        let scale = var
            .iter()
            .zip(&max_abs)
            .map(|(&v, &m)| {
                let std = (v / n).sqrt();
                // Spread at the level of rounding is no spread.
                if std > 1e-12 * m && std > 0.0 {
                    1.0 / std
                } else {
                    0.0
                }
            })
            .collect();
        Standardiser { dims, mean, scale }
    }

    /// `(rows, dims)` standardised codes of `rows`.
    fn apply<T: Copy + Into<f64>>(&self, mu: &[T], rows: &[u32]) -> Vec<f64> {
        let dims = self.dims;
        let mut out = Vec::with_capacity(rows.len() * dims);
        for &r in rows {
            let x = &mu[r as usize * dims..(r as usize + 1) * dims];
            for ((&v, &m), &s) in x.iter().zip(&self.mean).zip(&self.scale) {
                out.push((v.into() - m) * s);
            }
        }
        out
    }
}

/// Least squares with intercept of every target column on the (centred, standardised) fit codes,
/// ridge `1e-8·trace(ZᵀZ)`; returns the `(n_score, nt)` predictions.
fn linear_predict(z_fit: &[f64], y_fit: &[f64], z_score: &[f64], d: usize, nt: usize) -> Vec<f64> {
    let n_fit = z_fit.len() / d;
    let n_score = z_score.len() / d;
    // Target means (the intercept: the codes are centred on the fit half).
    let mut y_mean = vec![0.0; nt];
    for row in y_fit.chunks_exact(nt.max(1)) {
        for (m, &v) in y_mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    y_mean.iter_mut().for_each(|m| *m /= n_fit as f64);
    // Normal equations: A = ZᵀZ (d × d), B = Zᵀ(Y − ȳ) (d × nt).
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d * nt];
    for (x, y) in z_fit.chunks_exact(d).zip(y_fit.chunks_exact(nt.max(1))) {
        for i in 0..d {
            let xi = x[i];
            if xi == 0.0 {
                continue;
            }
            for j in 0..=i {
                a[i * d + j] += xi * x[j];
            }
            for t in 0..nt {
                b[i * nt + t] += xi * (y[t] - y_mean[t]);
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            a[j * d + i] = a[i * d + j];
        }
    }
    let trace: f64 = (0..d).map(|i| a[i * d + i]).sum();
    // Coefficients (d × nt); zero when the codes carry nothing (all dimensions constant).
    let mut beta = vec![0.0; d * nt];
    if trace > 0.0 {
        let mut ridge = 1e-8 * trace;
        let mut factor = None;
        for _ in 0..8 {
            let mut ar = a.clone();
            for i in 0..d {
                ar[i * d + i] += ridge;
            }
            factor = cholesky(&ar, d);
            if factor.is_some() {
                break;
            }
            ridge *= 100.0;
        }
        if let Some(l) = factor {
            let mut col = vec![0.0; d];
            for t in 0..nt {
                for i in 0..d {
                    col[i] = b[i * nt + t];
                }
                cholesky_solve(&l, d, &mut col);
                for i in 0..d {
                    beta[i * nt + t] = col[i];
                }
            }
        }
    }
    let mut pred = Vec::with_capacity(n_score * nt);
    for x in z_score.chunks_exact(d) {
        for t in 0..nt {
            let mut s = y_mean[t];
            for i in 0..d {
                s += x[i] * beta[i * nt + t];
            }
            pred.push(s);
        }
    }
    pred
}

/// Brute-force k-NN: for every scoring row, the `k` nearest fit rows (squared Euclidean, ties to
/// the lower fit row). Returns the `(n_score, nt)` mean targets of the neighbours and, when
/// `classes` is given, the majority class (ties to the class of the nearest tied neighbour).
fn knn_predict(
    z_fit: &[f64],
    z_score: &[f64],
    d: usize,
    k: usize,
    y_fit: &[f64],
    nt: usize,
    classes: Option<(&[usize], usize)>,
) -> (Vec<f64>, Vec<usize>) {
    let n_score = z_score.len() / d;
    let mut pred = Vec::with_capacity(n_score * nt);
    let mut voted = Vec::with_capacity(if classes.is_some() { n_score } else { 0 });
    let mut best: Vec<(f64, usize)> = Vec::with_capacity(k + 1);
    let mut votes = vec![0usize; classes.map_or(0, |c| c.1)];
    for q in z_score.chunks_exact(d) {
        best.clear();
        for (j, x) in z_fit.chunks_exact(d).enumerate() {
            let worst = if best.len() == k {
                best[k - 1].0
            } else {
                f64::INFINITY
            };
            let mut dist = 0.0;
            for i in 0..d {
                let e = q[i] - x[i];
                dist += e * e;
                if dist >= worst {
                    break;
                }
            }
            if dist < worst {
                // Insert after every entry at most as far (keeps ties in fit-row order).
                let at = best.partition_point(|&(b, _)| b <= dist);
                best.insert(at, (dist, j));
                best.truncate(k);
            }
        }
        let inv = 1.0 / best.len() as f64;
        for t in 0..nt {
            pred.push(best.iter().map(|&(_, j)| y_fit[j * nt + t]).sum::<f64>() * inv);
        }
        if let Some((labels, _)) = classes {
            votes.iter_mut().for_each(|v| *v = 0);
            for &(_, j) in &best {
                votes[labels[j]] += 1;
            }
            let top = votes.iter().copied().max().unwrap_or(0);
            let winner = best
                .iter()
                .map(|&(_, j)| labels[j])
                .find(|&c| votes[c] == top)
                .unwrap_or(0);
            voted.push(winner);
        }
    }
    (pred, voted)
}

/// Multinomial logistic regression on the standardised codes (with biases), L2 penalty
/// [`LOGISTIC_L2`] on the weights, [`LOGISTIC_ITERS`] steps of Nesterov-accelerated gradient
/// descent with step 1/L from a Gershgorin bound on the Hessian. Returns the `(n_score, c)`
/// logits of the scoring rows.
fn logistic_predict(
    z_fit: &[f64],
    y_fit: &[usize],
    z_score: &[f64],
    d: usize,
    c: usize,
) -> Vec<f64> {
    let n_score = z_score.len() / d;
    if c == 0 {
        return Vec::new();
    }
    let n = y_fit.len() as f64;
    let p = d + 1; // weights and bias per class
    // Lipschitz bound of the gradient: ½·λ_max(X̃ᵀX̃/n) + λ, λ_max bounded by the largest
    // absolute row sum of X̃ᵀX̃/n (X̃ = codes with a column of ones).
    let mut gram = vec![0.0; p * p];
    for x in z_fit.chunks_exact(d) {
        for i in 0..p {
            let xi = if i < d { x[i] } else { 1.0 };
            for j in 0..p {
                let xj = if j < d { x[j] } else { 1.0 };
                gram[i * p + j] += xi * xj;
            }
        }
    }
    let lmax = gram
        .chunks_exact(p)
        .map(|r| r.iter().map(|v| v.abs()).sum::<f64>() / n)
        .fold(0.0, f64::max);
    let step = 1.0 / (0.5 * lmax + LOGISTIC_L2);

    let logits_of = |w: &[f64], x: &[f64], out: &mut [f64]| {
        for (k, o) in out.iter_mut().enumerate() {
            let wk = &w[k * p..(k + 1) * p];
            let mut s = wk[d];
            for i in 0..d {
                s += wk[i] * x[i];
            }
            *o = s;
        }
    };
    let mut w = vec![0.0; c * p];
    let mut w_prev = w.clone();
    let mut v = w.clone();
    let mut grad = vec![0.0; c * p];
    let mut logits = vec![0.0; c];
    for it in 0..LOGISTIC_ITERS {
        // Look-ahead point v = w + (it − 1)/(it + 2)·(w − w_prev).
        let momentum = if it == 0 {
            0.0
        } else {
            (it as f64 - 1.0) / (it as f64 + 2.0)
        };
        for ((vi, &wi), &pi) in v.iter_mut().zip(&w).zip(&w_prev) {
            *vi = wi + momentum * (wi - pi);
        }
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (x, &y) in z_fit.chunks_exact(d).zip(y_fit) {
            logits_of(&v, x, &mut logits);
            softmax(&mut logits);
            for k in 0..c {
                let r = (logits[k] - if k == y { 1.0 } else { 0.0 }) / n;
                let gk = &mut grad[k * p..(k + 1) * p];
                for i in 0..d {
                    gk[i] += r * x[i];
                }
                gk[d] += r;
            }
        }
        for k in 0..c {
            for i in 0..d {
                grad[k * p + i] += LOGISTIC_L2 * v[k * p + i];
            }
        }
        w_prev.copy_from_slice(&w);
        for ((wi, &vi), &g) in w.iter_mut().zip(&v).zip(&grad) {
            *wi = vi - step * g;
        }
    }
    let mut out = vec![0.0; n_score * c];
    for (x, o) in z_score.chunks_exact(d).zip(out.chunks_exact_mut(c)) {
        logits_of(&w, x, o);
    }
    out
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

/// Index of the largest value (the first on ties).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn accuracy(pred: &[usize], truth: &[usize]) -> f64 {
    let hits = pred.iter().zip(truth).filter(|(a, b)| a == b).count();
    hits as f64 / truth.len().max(1) as f64
}

/// R² of column `t` of the `(rows, nt)` predictions against the targets; 0 when the target is
/// constant on these rows.
fn r2(y: &[f64], pred: &[f64], nt: usize, t: usize) -> f64 {
    let rows = y.len() / nt;
    let mean = (0..rows).map(|r| y[r * nt + t]).sum::<f64>() / rows as f64;
    let (mut ss_tot, mut ss_res, mut ss_y) = (0.0, 0.0, 0.0);
    for r in 0..rows {
        let v = y[r * nt + t];
        ss_tot += (v - mean) * (v - mean);
        ss_res += (v - pred[r * nt + t]) * (v - pred[r * nt + t]);
        ss_y += v * v;
    }
    // A spread at the level of rounding (e.g. cos 4θ of a set whose angles are multiples of
    // 90°) is no spread.
    if ss_tot <= 1e-20 * ss_y || !ss_tot.is_finite() {
        return 0.0;
    }
    let r2 = 1.0 - ss_res / ss_tot;
    if r2.is_finite() { r2 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r2_known_values() {
        let y = [1.0, 2.0, 3.0];
        assert_eq!(r2(&y, &y, 1, 0), 1.0);
        assert_eq!(r2(&y, &[2.0, 2.0, 2.0], 1, 0), 0.0);
        // SS_res = 1 + 0 + 1 = 2, SS_tot = 2 → 0; a worse guess goes negative.
        assert_eq!(r2(&y, &[2.0, 3.0, 2.0], 1, 0), -0.5);
        assert_eq!(r2(&[5.0, 5.0], &[0.0, 9.0], 1, 0), 0.0);
    }

    #[test]
    fn knn_ties_go_to_the_lower_row_and_nearest_class() {
        // Four fit points at the same place: the 3 nearest are rows 0, 1, 2.
        let z_fit = [0.0, 0.0, 0.0, 0.0];
        let y_fit = [1.0, 2.0, 3.0, 100.0];
        let (pred, classes) =
            knn_predict(&z_fit, &[0.0], 1, 3, &y_fit, 1, Some((&[1, 0, 2, 0], 3)));
        assert_eq!(pred, vec![2.0]);
        // One vote each for 1, 0, 2: the nearest (row 0, class 1) wins.
        assert_eq!(classes, vec![1]);
    }
}
