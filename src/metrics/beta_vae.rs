//! The BetaVAE score (Higgins et al., 2017, "β-VAE: learning basic visual concepts with a
//! constrained variational framework"), as the reference's `beta_vae_sklearn`.
//!
//! One training point: draw a factor index `k` uniformly, two batches of `batch_size` factor
//! tuples, copy factor `k` of the first batch into the second (so each pair shares factor `k`),
//! encode both, and take the mean over the batch of `|z₁ − z₂|` per code dimension; the label is
//! `k`. A linear classifier is fitted to `num_train` such points, and the score is its accuracy
//! on `num_eval` fresh points (the training accuracy is reported too). Defaults are the
//! reference's: batches of 64, 10,000 training and 5,000 evaluation points.
//!
//! # The classifier
//! The reference fits its library's default logistic regression (multinomial, L2 penalty with
//! `C = 1`, intercept unpenalised, L-BFGS for at most 100 iterations on the raw features).
//! [`LogisticRegression`] minimises the same objective, `C·Σ cross-entropy + ½‖W‖²`, with
//! Nesterov-accelerated gradient descent (step `1/L` from a Gershgorin bound of the Hessian,
//! restarted when the momentum points uphill) for at most [`BetaVaeConfig::max_iters`]
//! iterations, but on features standardised by the training points' mean and standard
//! deviation (a feature constant over the training points is dropped). Standardising makes the
//! problem well conditioned for plain gradient descent and the score independent of each code
//! dimension's scale; the L2 penalty then acts on the standardised weights, so the fitted model
//! differs slightly from the reference's on the same points.

use serde::Serialize;

use super::{Encoder, GroundTruth, Matrix, check_ground_truth, draw_factors, encode_checked};
use crate::error::{Error, Result};
use crate::rng::HostRng;

/// Stream of [`HostRng::derive`] of the BetaVAE score's draws.
const STREAM: u64 = 0x0062_6574_6176; // "betav"

/// Sample sizes and classifier settings of [`beta_vae_score`].
#[derive(Clone, Debug, PartialEq)]
pub struct BetaVaeConfig {
    /// Pairs averaged into one point.
    pub batch_size: usize,
    pub num_train: usize,
    pub num_eval: usize,
    pub seed: u64,
    /// Inverse L2 strength of the logistic regression.
    pub c: f64,
    /// Most gradient steps of the logistic regression.
    pub max_iters: usize,
    /// Factor tuples per call of the encoder (whole points per call, at least one).
    pub encode_rows: usize,
}

impl Default for BetaVaeConfig {
    fn default() -> Self {
        BetaVaeConfig {
            batch_size: 64,
            num_train: 10_000,
            num_eval: 5_000,
            seed: 0,
            c: 1.0,
            max_iters: 1000,
            encode_rows: super::DEFAULT_ENCODE_ROWS,
        }
    }
}

/// Accuracies of the BetaVAE classifier.
#[derive(Clone, Debug, Serialize)]
pub struct BetaVaeScore {
    pub train_accuracy: f64,
    /// The score.
    pub eval_accuracy: f64,
}

/// The BetaVAE score of the representation `encode` of `gt` (see the module docs).
pub fn beta_vae_score(
    gt: &dyn GroundTruth,
    encode: &mut Encoder<'_>,
    cfg: &BetaVaeConfig,
) -> Result<BetaVaeScore> {
    check_ground_truth("beta_vae", gt)?;
    if cfg.batch_size == 0 || cfg.num_train == 0 || cfg.num_eval == 0 || cfg.encode_rows == 0 {
        return Err(Error::Config(format!(
            "beta_vae: batch size {}, {} training and {} evaluation points, {} rows per encoder \
             call: all must be at least 1",
            cfg.batch_size, cfg.num_train, cfg.num_eval, cfg.encode_rows
        )));
    }
    let mut rng = HostRng::derive(cfg.seed, STREAM);
    let mut dims = None;
    let f = gt.factor_sizes().len();
    let (x_train, y_train) = points(gt, encode, cfg, cfg.num_train, &mut rng, &mut dims)?;
    let model = LogisticRegression::fit(&x_train, &y_train, f, cfg.c, cfg.max_iters)?;
    let train_accuracy = model.accuracy(&x_train, &y_train);
    let (x_eval, y_eval) = points(gt, encode, cfg, cfg.num_eval, &mut rng, &mut dims)?;
    Ok(BetaVaeScore {
        train_accuracy,
        eval_accuracy: model.accuracy(&x_eval, &y_eval),
    })
}

/// `num` points of the BetaVAE score: features `(num, R)` and labels.
fn points(
    gt: &dyn GroundTruth,
    encode: &mut Encoder<'_>,
    cfg: &BetaVaeConfig,
    num: usize,
    rng: &mut HostRng,
    dims: &mut Option<usize>,
) -> Result<(Matrix<f64>, Vec<usize>)> {
    let f = gt.factor_sizes().len();
    let b = cfg.batch_size;
    let per_call = (cfg.encode_rows / b.saturating_mul(2)).max(1);
    let mut features = Vec::new();
    let mut labels = Vec::with_capacity(num);
    let mut done = 0;
    while done < num {
        let k = per_call.min(num - done);
        let mut tuples = Vec::with_capacity(k * 2 * b);
        for _ in 0..k {
            let index = rng.below(f as u64) as usize;
            let first = draw_factors("beta_vae", gt, b, rng)?;
            let mut second = draw_factors("beta_vae", gt, b, rng)?;
            for (s, t) in second.iter_mut().zip(&first) {
                s[index] = t[index];
            }
            labels.push(index);
            tuples.extend(first);
            tuples.extend(second);
        }
        let codes = encode_checked("beta_vae", encode, &tuples, dims)?;
        let r = dims.unwrap_or(0);
        for pair in codes.chunks_exact(2 * b) {
            let (z1, z2) = pair.split_at(b);
            let mut feat = vec![0.0; r];
            for (a, c) in z1.iter().zip(z2) {
                for ((s, &u), &v) in feat.iter_mut().zip(a).zip(c) {
                    *s += (u - v).abs();
                }
            }
            features.extend(feat.iter().map(|s| s / b as f64));
        }
        done += k;
    }
    let r = dims.unwrap_or(0);
    Ok((Matrix::new(num, r, features)?, labels))
}

/// Multinomial logistic regression with an L2 penalty on standardised features (see the module
/// docs).
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticRegression {
    classes: usize,
    dims: usize,
    mean: Vec<f64>,
    /// `1/std` of each feature (0: constant, dropped).
    inv_std: Vec<f64>,
    /// `classes × (dims + 1)` weights, the bias last.
    w: Vec<f64>,
}

impl LogisticRegression {
    /// Fits `classes` classes (labels `< classes`) to the rows of `x` (finite values),
    /// minimising `c·Σ cross-entropy + ½‖W‖²` (biases unpenalised) for at most `max_iters` steps.
    pub fn fit(
        x: &Matrix<f64>,
        y: &[usize],
        classes: usize,
        c: f64,
        max_iters: usize,
    ) -> Result<Self> {
        let (n, d) = (x.rows(), x.cols());
        if n == 0 || d == 0 || n != y.len() || classes == 0 || y.iter().any(|&l| l >= classes) {
            return Err(Error::Shape {
                op: "logistic regression",
                detail: format!(
                    "{n} rows, {} labels, {classes} classes: need matching non-empty inputs, at \
                     least one feature ({d} given) and labels below the class count",
                    y.len()
                ),
            });
        }
        if !(c.is_finite() && c > 0.0) || x.data().iter().any(|v| !v.is_finite()) {
            return Err(Error::Config(format!(
                "logistic regression: C = {c} must be positive and the features finite"
            )));
        }
        let nf = n as f64;
        let mut mean = vec![0.0; d];
        for i in 0..n {
            for (m, &v) in mean.iter_mut().zip(x.row(i)) {
                *m += v / nf;
            }
        }
        let mut var = vec![0.0; d];
        for i in 0..n {
            for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(x.row(i)) {
                *s += (v - m) * (v - m) / nf;
            }
        }
        let inv_std: Vec<f64> = var
            .iter()
            .zip(&mean)
            .map(|(&v, &m)| {
                let sd = v.sqrt();
                if sd > 1e-12 * (1.0 + m.abs()) {
                    1.0 / sd
                } else {
                    0.0
                }
            })
            .collect();
        let mut model = LogisticRegression {
            classes,
            dims: d,
            mean,
            inv_std,
            w: vec![0.0; classes * (d + 1)],
        };
        let z: Vec<f64> = (0..n).flat_map(|i| model.standardise(x.row(i))).collect();
        let p = d + 1;
        let lambda = 1.0 / (c * nf);
        // Lipschitz bound of the mean cross-entropy's gradient: ½·λ_max(Z̃ᵀZ̃/n) + λ, with λ_max
        // bounded by the largest absolute row sum (Z̃: the standardised features and a 1).
        let mut gram = vec![0.0; p * p];
        for row in z.chunks_exact(d) {
            for a in 0..p {
                let za = if a < d { row[a] } else { 1.0 };
                for b in 0..p {
                    let zb = if b < d { row[b] } else { 1.0 };
                    gram[a * p + b] += za * zb / nf;
                }
            }
        }
        let lmax = gram
            .chunks_exact(p)
            .map(|r| r.iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max);
        let step = 1.0 / (0.5 * lmax + lambda);
        let k = classes;
        let mut w = vec![0.0; k * p];
        let mut w_prev = w.clone();
        let mut v = w.clone();
        let mut grad = vec![0.0; k * p];
        let mut logits = vec![0.0; k];
        let mut t = 1.0f64;
        for _ in 0..max_iters {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (i, &label) in y.iter().enumerate() {
                let zi = &z[i * d..(i + 1) * d];
                logits_into(&v, zi, &mut logits);
                softmax(&mut logits);
                for (class, &pk) in logits.iter().enumerate() {
                    let r = (pk - f64::from(u8::from(class == label))) / nf;
                    let g = &mut grad[class * p..(class + 1) * p];
                    for (gj, &zj) in g.iter_mut().zip(zi) {
                        *gj += r * zj;
                    }
                    g[d] += r;
                }
            }
            for class in 0..k {
                for j in 0..d {
                    grad[class * p + j] += lambda * v[class * p + j];
                }
            }
            let gmax = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            w_prev.copy_from_slice(&w);
            for ((wi, &vi), &g) in w.iter_mut().zip(&v).zip(&grad) {
                *wi = vi - step * g;
            }
            if gmax < 1e-9 {
                break;
            }
            // Restart the momentum when it points uphill (gradient restart).
            let uphill: f64 = grad
                .iter()
                .zip(w.iter().zip(&w_prev))
                .map(|(g, (a, b))| g * (a - b))
                .sum();
            let t_next = if uphill > 0.0 {
                1.0
            } else {
                (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0
            };
            let beta = if uphill > 0.0 {
                0.0
            } else {
                (t - 1.0) / t_next
            };
            for ((vi, &wi), &pi) in v.iter_mut().zip(&w).zip(&w_prev) {
                *vi = wi + beta * (wi - pi);
            }
            t = t_next;
        }
        model.w = w;
        Ok(model)
    }

    fn standardise(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(&self.mean)
            .zip(&self.inv_std)
            .map(|((&v, &m), &s)| (v - m) * s)
            .collect()
    }

    /// The predicted class of one row (`dims` features); the first class on ties.
    pub fn predict(&self, x: &[f64]) -> usize {
        let z = self.standardise(&x[..self.dims.min(x.len())]);
        let mut logits = vec![0.0; self.classes];
        logits_into(&self.w, &z, &mut logits);
        super::argmax(&logits)
    }

    /// Fraction of the rows of `x` predicted as their label.
    pub fn accuracy(&self, x: &Matrix<f64>, y: &[usize]) -> f64 {
        let n = x.rows().min(y.len());
        if n == 0 {
            return 0.0;
        }
        let hits = (0..n).filter(|&i| self.predict(x.row(i)) == y[i]).count();
        hits as f64 / n as f64
    }
}

/// `out[k] = w_k · z + b_k` for weights laid out `classes × (d + 1)`.
fn logits_into(w: &[f64], z: &[f64], out: &mut [f64]) {
    let p = z.len() + 1;
    for (k, o) in out.iter_mut().enumerate() {
        let wk = &w[k * p..(k + 1) * p];
        *o = wk[z.len()] + wk.iter().zip(z).map(|(a, b)| a * b).sum::<f64>();
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
