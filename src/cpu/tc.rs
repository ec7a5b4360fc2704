//! f64 twin of shaders/tc.wgsl (see [`crate::ops::tc`] for the estimator and its conventions):
//! the β-TCVAE terms per row and the analytic gradient of
//! Σ_i w_i (α·mi_i + β·tc_i + γ·dimkl_i) with respect to z and the posterior parameters.
//! Written the direct way, with the (B, B) log-weight matrix and every pair (i, j) spelled out.

use std::f64::consts::PI;

use crate::ops::tc::{Estimator, TcWeights};

/// The twin's forward results, each per row (B,) unless noted; 0 for padded rows.
#[derive(Clone, Debug)]
pub struct TcTwin {
    /// log q(z_i|x_i)
    pub logqz_condx: Vec<f64>,
    /// log q(z_i), estimated
    pub logqz: Vec<f64>,
    /// log Π_d q(z_id), estimated
    pub logqz_product: Vec<f64>,
    /// log p(z_i) under N(0, I)
    pub logpz: Vec<f64>,
    pub mi: Vec<f64>,
    pub tc: Vec<f64>,
    pub dimkl: Vec<f64>,
    /// (B, D) logsumexp_j (L_ijd + c_ij)
    pub lse_dim: Vec<f64>,
}

fn log_normal(z: f64, mu: f64, lv: f64) -> f64 {
    -0.5 * ((z - mu) * (z - mu) * (-lv).exp() + lv + (2.0 * PI).ln())
}

fn logsumexp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The log importance weights c (B, B): row i is the sample, column j the posterior; −∞ where
/// row i or row j is padding (weight 0). M = the number of valid rows, N' = max(N, M). MWS, and
/// either estimator when M = 1: −ln(M·N'). MSS with M ≥ 2, m = M − 1: ln(1/N') on the diagonal,
/// ln((N' − m)/(N'·m)) at (i, the next valid row after i, cyclically), ln(1/m) elsewhere.
pub fn log_weight_matrix(weights: &[f64], dataset_size: usize, estimator: Estimator) -> Vec<f64> {
    let b = weights.len();
    let valid: Vec<usize> = (0..b).filter(|&i| weights[i] > 0.0).collect();
    let m_valid = valid.len();
    let mut c = vec![f64::NEG_INFINITY; b * b];
    if m_valid == 0 {
        return c;
    }
    let n = dataset_size.max(m_valid) as f64;
    if estimator == Estimator::Mss && m_valid >= 2 {
        let m = (m_valid - 1) as f64;
        let strat = ((n - m) / (n * m)).ln();
        for (r, &i) in valid.iter().enumerate() {
            let next = valid[(r + 1) % m_valid];
            for &j in &valid {
                c[i * b + j] = if j == i {
                    -n.ln()
                } else if j == next {
                    strat
                } else {
                    -m.ln()
                };
            }
        }
    } else {
        let all = -((m_valid as f64).ln() + n.ln());
        for &i in &valid {
            for &j in &valid {
                c[i * b + j] = all;
            }
        }
    }
    c
}

/// L (B, B, D): L[i, j, d] = log N(z_id; μ_jd, e^lv_jd).
fn pair_log_densities(params: &[f64], z: &[f64], b: usize, d: usize) -> Vec<f64> {
    let mut l = vec![0.0; b * b * d];
    for i in 0..b {
        for j in 0..b {
            for k in 0..d {
                l[(i * b + j) * d + k] = log_normal(
                    z[i * d + k],
                    params[j * 2 * d + k],
                    params[j * 2 * d + d + k],
                );
            }
        }
    }
    l
}

/// The terms for posterior parameters `params` (B, 2D) = [μ | log σ²], samples `z` (B, D) and
/// row weights `weights` (B,) (0 = padding), N = `dataset_size`.
pub fn tc_forward(
    params: &[f64],
    z: &[f64],
    weights: &[f64],
    d: usize,
    dataset_size: usize,
    estimator: Estimator,
) -> TcTwin {
    let b = weights.len();
    assert_eq!(params.len(), b * 2 * d, "params (B, 2D)");
    assert_eq!(z.len(), b * d, "z (B, D)");
    let c = log_weight_matrix(weights, dataset_size, estimator);
    let l = pair_log_densities(params, z, b, d);
    let mut t = TcTwin {
        logqz_condx: vec![0.0; b],
        logqz: vec![0.0; b],
        logqz_product: vec![0.0; b],
        logpz: vec![0.0; b],
        mi: vec![0.0; b],
        tc: vec![0.0; b],
        dimkl: vec![0.0; b],
        lse_dim: vec![0.0; b * d],
    };
    let ln2pi = (2.0 * PI).ln();
    for i in (0..b).filter(|&i| weights[i] > 0.0) {
        let cols = (0..b).filter(|&j| weights[j] > 0.0);
        let s = |j: usize| (0..d).map(|k| l[(i * b + j) * d + k]).sum::<f64>();
        let a = logsumexp(cols.clone().map(|j| s(j) + c[i * b + j]));
        let mut p = 0.0;
        for k in 0..d {
            let bd = logsumexp(cols.clone().map(|j| l[(i * b + j) * d + k] + c[i * b + j]));
            t.lse_dim[i * d + k] = bd;
            p += bd;
        }
        let q = s(i);
        let r: f64 = (0..d).map(|k| -0.5 * (z[i * d + k].powi(2) + ln2pi)).sum();
        t.logqz_condx[i] = q;
        t.logqz[i] = a;
        t.logqz_product[i] = p;
        t.logpz[i] = r;
        t.mi[i] = q - a;
        t.tc[i] = a - p;
        t.dimkl[i] = p - r;
    }
    t
}

/// Σ_i w_i (α·mi_i + β·tc_i + γ·dimkl_i).
pub fn tc_loss(t: &TcTwin, weights: &[f64], loss: TcWeights) -> f64 {
    let (al, be, ga) = (loss.alpha as f64, loss.beta as f64, loss.gamma as f64);
    (0..weights.len())
        .map(|i| weights[i] * (al * t.mi[i] + be * t.tc[i] + ga * t.dimkl[i]))
        .sum()
}

/// The gradient of [`tc_loss`] at the same operands: (∂/∂z (B, D), ∂/∂params (B, 2D)). Exactly 0
/// in padded rows.
pub fn tc_backward(
    params: &[f64],
    z: &[f64],
    weights: &[f64],
    d: usize,
    dataset_size: usize,
    estimator: Estimator,
    loss: TcWeights,
) -> (Vec<f64>, Vec<f64>) {
    let b = weights.len();
    let t = tc_forward(params, z, weights, d, dataset_size, estimator);
    let c = log_weight_matrix(weights, dataset_size, estimator);
    let l = pair_log_densities(params, z, b, d);
    let (al, be, ga) = (loss.alpha as f64, loss.beta as f64, loss.gamma as f64);
    let mut dz = vec![0.0; b * d];
    let mut dp = vec![0.0; b * 2 * d];
    for i in (0..b).filter(|&i| weights[i] > 0.0) {
        let w = weights[i];
        // loss_i = w (α Q + (β − α) A + (γ − β) P − γ R)
        let (ai, pi, qi) = (w * (be - al), w * (ga - be), w * al);
        for j in (0..b).filter(|&j| weights[j] > 0.0) {
            let s: f64 = (0..d).map(|k| l[(i * b + j) * d + k]).sum();
            let softmax = (s + c[i * b + j] - t.logqz[i]).exp();
            for k in 0..d {
                let rho = (l[(i * b + j) * d + k] + c[i * b + j] - t.lse_dim[i * d + k]).exp();
                // ∂loss / ∂L_ijd
                let g = ai * softmax + pi * rho + if i == j { qi } else { 0.0 };
                let (mu, lv) = (params[j * 2 * d + k], params[j * 2 * d + d + k]);
                let diff = z[i * d + k] - mu;
                let u = diff * (-lv).exp();
                dz[i * d + k] -= g * u;
                dp[j * 2 * d + k] += g * u;
                dp[j * 2 * d + d + k] += g * 0.5 * (diff * u - 1.0);
            }
        }
        for k in 0..d {
            // −γ R_i: ∂/∂z_id = w γ z_id
            dz[i * d + k] += w * ga * z[i * d + k];
        }
    }
    (dz, dp)
}
