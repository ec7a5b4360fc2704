//! CPU twins of the non-GEMM kernels, in f64.

use crate::ops::adam::AdamConfig;
use crate::rng::{box_muller, philox4x32, u01};

/// ε (K·B·D) of `reparam_forward` for (seed, step, stream): bit-exact integer Philox, then
/// Box–Muller in f64.
pub fn reparam_eps(n: usize, seed: u64, step: u32, stream: u32) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for t in 0..n.div_ceil(4) {
        let r = philox4x32(
            [t as u32, step, stream, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        let (a, b) = box_muller(u01(r[0]), u01(r[1]));
        let (c, d) = box_muller(u01(r[2]), u01(r[3]));
        for v in [a, b, c, d] {
            if out.len() < n {
                out.push(v);
            }
        }
    }
    out
}

/// z (K, B, D) = μ + exp(logvar / 2)·ε from enc (B, 2D) and ε (K, B, D).
pub fn reparam_forward(enc: &[f32], eps: &[f64], b: usize, d: usize, samples: usize) -> Vec<f64> {
    let mut z = vec![0.0; samples * b * d];
    for s in 0..samples {
        for i in 0..b {
            for j in 0..d {
                let mu = enc[i * 2 * d + j] as f64;
                let lv = enc[i * 2 * d + d + j] as f64;
                let k = (s * b + i) * d + j;
                z[k] = mu + (0.5 * lv).exp() * eps[k];
            }
        }
    }
    z
}

/// genc (B, 2D) = [Σ_k dz | Σ_k dz·ε·σ/2] (+ `base` when accumulating).
pub fn reparam_backward(
    enc: &[f32],
    dz: &[f32],
    eps: &[f32],
    b: usize,
    d: usize,
    samples: usize,
    base: Option<&[f32]>,
) -> Vec<f64> {
    let mut g: Vec<f64> = match base {
        Some(x) => x.iter().map(|&v| v as f64).collect(),
        None => vec![0.0; b * 2 * d],
    };
    for i in 0..b {
        for j in 0..d {
            let lv = enc[i * 2 * d + d + j] as f64;
            let hs = 0.5 * (0.5 * lv).exp();
            for s in 0..samples {
                let k = (s * b + i) * d + j;
                g[i * 2 * d + j] += dz[k] as f64;
                g[i * 2 * d + d + j] += dz[k] as f64 * eps[k] as f64 * hs;
            }
        }
    }
    g
}

/// (kl per sample (B,), kl per element (B, D), gradient (B, 2D) scaled by `w`).
pub fn kl(enc: &[f32], b: usize, d: usize, w: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut ks = vec![0.0; b];
    let mut ke = vec![0.0; b * d];
    let mut g = vec![0.0; b * 2 * d];
    for i in 0..b {
        for j in 0..d {
            let mu = enc[i * 2 * d + j] as f64;
            let lv = enc[i * 2 * d + d + j] as f64;
            let k = 0.5 * (mu * mu + lv.exp_m1() - lv);
            ke[i * d + j] = k;
            ks[i] += k;
            g[i * 2 * d + j] = w * mu;
            g[i * 2 * d + d + j] = w * 0.5 * lv.exp_m1();
        }
    }
    (ks, ke, g)
}

#[allow(clippy::too_many_arguments)] // the kernel's operands and parameters, one each
/// Twin of the capacity kernel: (penalty per row (B,), gradient (B, 2D)) of
/// γ·|Σ_b w_b kl_b − C(t)| with C(t) = c_max·min(1, t / steps) (`steps` = 0: c_max).
pub fn kl_capacity(
    enc: &[f32],
    w: &[f32],
    b: usize,
    d: usize,
    gamma: f64,
    c_max: f64,
    t: u32,
    steps: u32,
) -> (Vec<f64>, Vec<f64>) {
    let (ks, _, g1) = kl(enc, b, d, 1.0);
    let kl_mean: f64 = (0..b).map(|i| w[i] as f64 * ks[i]).sum();
    let c = if steps == 0 {
        c_max
    } else {
        c_max * (t as f64 / steps as f64).min(1.0)
    };
    let diff = kl_mean - c;
    let coef = gamma * diff.signum() * (diff != 0.0) as u8 as f64;
    let g = (0..b * 2 * d)
        .map(|k| coef * w[k / (2 * d)] as f64 * g1[k])
        .collect();
    (vec![gamma * diff.abs(); b], g)
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// (nll (R,), gradient (R, P) scaled by `scale`) of the Bernoulli with logits; row r uses
/// target row r % B.
pub fn bernoulli(
    logits: &[f32],
    target: &[f32],
    r: usize,
    p: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let b = target.len() / p;
    let mut nll = vec![0.0; r];
    let mut g = vec![0.0; r * p];
    for i in 0..r {
        for j in 0..p {
            let l = logits[i * p + j] as f64;
            let x = target[(i % b) * p + j] as f64;
            nll[i] += softplus(l) - x * l;
            g[i * p + j] = scale * (sigmoid(l) - x);
        }
    }
    (nll, g)
}

/// (nll (R,), ∂/∂mean (R, P), ∂/∂log σ per element (R, P)), all gradients scaled by `scale`;
/// `log_sigma` has 1 (shared) or P (per pixel) values.
pub fn gaussian(
    mean: &[f32],
    target: &[f32],
    log_sigma: &[f32],
    r: usize,
    p: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let b = target.len() / p;
    let mut nll = vec![0.0; r];
    let mut g = vec![0.0; r * p];
    let mut gls = vec![0.0; r * p];
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    for i in 0..r {
        for j in 0..p {
            let s_raw = if log_sigma.len() == 1 {
                log_sigma[0]
            } else {
                log_sigma[j]
            } as f64;
            // log σ is floored (ops::likelihood::LOG_SIGMA_MIN); the clamp's gradient is 0 below.
            let floor = crate::ops::likelihood::LOG_SIGMA_MIN as f64;
            let s = s_raw.max(floor);
            let diff = mean[i * p + j] as f64 - target[(i % b) * p + j] as f64;
            let q = diff * diff * (-2.0 * s).exp();
            nll[i] += 0.5 * q + s + half_log_2pi;
            g[i * p + j] = scale * diff * (-2.0 * s).exp();
            gls[i * p + j] = if s_raw > floor {
                scale * (1.0 - q)
            } else {
                0.0
            };
        }
    }
    (nll, g, gls)
}

/// Σ over rows of x (R, C) → (C,).
pub fn col_sum(x: &[f32], r: usize, c: usize) -> Vec<f64> {
    let mut y = vec![0.0; c];
    for i in 0..r {
        for j in 0..c {
            y[j] += x[i * c + j] as f64;
        }
    }
    y
}

/// Σ over columns of x (R, C) → (R,).
pub fn row_sum(x: &[f32], r: usize, c: usize) -> Vec<f64> {
    (0..r)
        .map(|i| x[i * c..(i + 1) * c].iter().map(|&v| v as f64).sum())
        .collect()
}

/// Σ x (or Σ x²).
pub fn sum_all(x: &[f32], square: bool) -> f64 {
    x.iter()
        .map(|&v| {
            if square {
                v as f64 * v as f64
            } else {
                v as f64
            }
        })
        .sum()
}

/// log mean_k exp(x[k, b]) for x (K, B) → (B,).
pub fn logmeanexp(x: &[f32], k: usize, b: usize) -> Vec<f64> {
    (0..b)
        .map(|j| {
            let m = (0..k)
                .map(|i| x[i * b + j] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..k).map(|i| (x[i * b + j] as f64 - m).exp()).sum();
            m + s.ln() - (k as f64).ln()
        })
        .collect()
}

/// One Adam/AdamW step at step number `t` (1-based); returns (params, m, v).
pub fn adam(
    params: &[f32],
    grads: &[f32],
    m: &[f32],
    v: &[f32],
    t: u32,
    cfg: &AdamConfig,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let norm = grads
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt();
    let gs = if cfg.clip_norm > 0.0 && norm > cfg.clip_norm as f64 {
        cfg.clip_norm as f64 / norm
    } else {
        1.0
    };
    let (b1, b2) = (cfg.beta1 as f64, cfg.beta2 as f64);
    let bc1 = 1.0 - b1.powi(t as i32);
    let bc2 = 1.0 - b2.powi(t as i32);
    let lr = cfg.lr as f64;
    let mut po = Vec::with_capacity(params.len());
    let mut mo = Vec::with_capacity(params.len());
    let mut vo = Vec::with_capacity(params.len());
    for i in 0..params.len() {
        let g = grads[i] as f64 * gs;
        let mi = b1 * m[i] as f64 + (1.0 - b1) * g;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * g * g;
        let mut p = params[i] as f64;
        p -= lr * cfg.weight_decay as f64 * p;
        p -= lr * (mi / bc1) / ((vi / bc2).sqrt() + cfg.eps as f64);
        po.push(p);
        mo.push(mi);
        vo.push(vi);
    }
    (po, mo, vo)
}

/// x (rows, P) gathered from u8 images (N, P) in the order `perm` from position `pos`.
pub fn gather(images: &[u8], pixels: usize, perm: &[u32], pos: usize, rows: usize) -> Vec<f64> {
    let mut x = vec![0.0; rows * pixels];
    for r in 0..rows {
        if pos + r < perm.len() {
            let item = perm[pos + r] as usize;
            for p in 0..pixels {
                x[r * pixels + p] = images[item * pixels + p] as f64 / 255.0;
            }
        }
    }
    x
}
