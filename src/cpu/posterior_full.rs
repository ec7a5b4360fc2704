//! f64 twins of the full-covariance posterior's kernels ([`crate::ops::posterior_full`]), in
//! the same layouts: q (B, P) = `[μ (D) | v (D) | lower L row-major]` with L_ii = exp(v_i / 2);
//! z, ε (K, B, D) with sample s of row b in row s·B + b.

use crate::ops::posterior_full::{lower_index, param_dim};

/// L of row `b` as a dense (D, D) lower-triangular matrix, row-major.
pub fn cholesky_factor(q: &[f64], b: usize, d: usize) -> Vec<f64> {
    let p = param_dim(d).expect("a small latent size");
    let row = &q[b * p..(b + 1) * p];
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        l[i * d + i] = (0.5 * row[d + i]).exp();
        for j in 0..i {
            l[i * d + j] = row[lower_index(d, i, j)];
        }
    }
    l
}

/// z (K, B, D) = μ + L ε.
pub fn full_sample(q: &[f64], eps: &[f64], b: usize, d: usize, samples: usize) -> Vec<f64> {
    let p = param_dim(d).expect("a small latent size");
    let mut z = vec![0.0; samples * b * d];
    for row in 0..b {
        let l = cholesky_factor(q, row, d);
        for s in 0..samples {
            let r = s * b + row;
            for i in 0..d {
                let mut v = q[row * p + i];
                for j in 0..=i {
                    v += l[i * d + j] * eps[r * d + j];
                }
                z[r * d + i] = v;
            }
        }
    }
    z
}

/// dq (B, P) = [Σ_s dz | Σ_s dz_i ε_i L_ii / 2 | Σ_s dz_i ε_j] (+ `base` when accumulating).
pub fn full_sample_backward(
    q: &[f64],
    dz: &[f64],
    eps: &[f64],
    b: usize,
    d: usize,
    samples: usize,
    base: Option<&[f64]>,
) -> Vec<f64> {
    let p = param_dim(d).expect("a small latent size");
    let mut g = match base {
        Some(x) => x.to_vec(),
        None => vec![0.0; b * p],
    };
    for row in 0..b {
        for s in 0..samples {
            let r = s * b + row;
            for i in 0..d {
                let dzi = dz[r * d + i];
                g[row * p + i] += dzi;
                let lii = (0.5 * q[row * p + d + i]).exp();
                g[row * p + d + i] += 0.5 * dzi * eps[r * d + i] * lii;
                for j in 0..i {
                    g[row * p + lower_index(d, i, j)] += dzi * eps[r * d + j];
                }
            }
        }
    }
    g
}

/// (KL per row (B,), marginal KL per dimension (B, D), gradient (B, P) with row b scaled by
/// `scale[b]`). The KL is ½(tr(L Lᵀ) + μᵀμ − D − log det(L Lᵀ)), computed from the dense L;
/// the marginal KL of z_i is ½(μ_i² + Σ_ii − 1 − log Σ_ii), Σ = L Lᵀ.
pub fn full_kl(q: &[f64], b: usize, d: usize, scale: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let p = param_dim(d).expect("a small latent size");
    let mut kl = vec![0.0; b];
    let mut ke = vec![0.0; b * d];
    let mut g = vec![0.0; b * p];
    for row in 0..b {
        let l = cholesky_factor(q, row, d);
        let mut trace = 0.0;
        let mut mm = 0.0;
        let mut logdet = 0.0;
        for i in 0..d {
            let mu = q[row * p + i];
            let sii: f64 = (0..=i).map(|j| l[i * d + j] * l[i * d + j]).sum();
            trace += sii;
            mm += mu * mu;
            logdet += 2.0 * l[i * d + i].ln();
            ke[row * d + i] = 0.5 * (mu * mu + sii - 1.0 - sii.ln());
        }
        kl[row] = 0.5 * (trace + mm - d as f64 - logdet);
        for k in 0..p {
            let x = q[row * p + k];
            g[row * p + k] = scale[row]
                * if (d..2 * d).contains(&k) {
                    0.5 * x.exp_m1()
                } else {
                    x
                };
        }
    }
    (kl, ke, g)
}

/// The capacity term from the per-row KL: (penalty (B,), gradient (B, P)) with KL = Σ_b w_b kl_b,
/// C = c_max·min(1, t / steps) (c_max when steps = 0).
#[allow(clippy::too_many_arguments)]
pub fn full_kl_capacity(
    q: &[f64],
    b: usize,
    d: usize,
    w: &[f64],
    gamma: f64,
    c_max: f64,
    steps: u32,
    t: u32,
) -> (Vec<f64>, Vec<f64>) {
    let (kl, _, _) = full_kl(q, b, d, &vec![0.0; b]);
    let mean: f64 = (0..b).map(|i| w[i] * kl[i]).sum();
    let c = if steps > 0 {
        c_max * (t as f64 / steps as f64).min(1.0)
    } else {
        c_max
    };
    let diff = mean - c;
    let coef = gamma
        * if diff > 0.0 {
            1.0
        } else if diff < 0.0 {
            -1.0
        } else {
            0.0
        };
    let scale: Vec<f64> = w.iter().map(|&x| coef * x).collect();
    let (_, _, g) = full_kl(q, b, d, &scale);
    (vec![gamma * diff.abs(); b], g)
}

/// log w (K, B) = −nll + Σ_i (ε_i² − z_i² + v_i) / 2, as the kernel computes it from ε.
pub fn full_log_weights(
    q: &[f64],
    nll: &[f64],
    z: &[f64],
    eps: &[f64],
    b: usize,
    d: usize,
    samples: usize,
) -> Vec<f64> {
    let p = param_dim(d).expect("a small latent size");
    (0..samples * b)
        .map(|r| {
            let row = r % b;
            let s: f64 = (0..d)
                .map(|i| {
                    let (e, zz) = (eps[r * d + i], z[r * d + i]);
                    0.5 * (e * e - zz * zz + q[row * p + d + i])
                })
                .sum();
            s - nll[r]
        })
        .collect()
}

/// log q(z | x) (K·B,) written out from z alone: L u = z − μ solved by forward substitution,
/// log q = −½‖u‖² − Σ_i log L_ii − (D/2) log 2π.
pub fn full_log_density(q: &[f64], z: &[f64], b: usize, d: usize, samples: usize) -> Vec<f64> {
    let p = param_dim(d).expect("a small latent size");
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    (0..samples * b)
        .map(|r| {
            let row = r % b;
            let l = cholesky_factor(q, row, d);
            let mut u = vec![0.0; d];
            let mut out = -(d as f64) * half_log_2pi;
            for i in 0..d {
                let mut v = z[r * d + i] - q[row * p + i];
                for j in 0..i {
                    v -= l[i * d + j] * u[j];
                }
                u[i] = v / l[i * d + i];
                out -= 0.5 * u[i] * u[i] + l[i * d + i].ln();
            }
            out
        })
        .collect()
}

/// The marginal standard deviations sqrt(diag(L Lᵀ)) (B, D).
pub fn marginal_std(q: &[f64], b: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(b * d);
    for row in 0..b {
        let l = cholesky_factor(q, row, d);
        for i in 0..d {
            out.push(
                (0..=i)
                    .map(|j| l[i * d + j] * l[i * d + j])
                    .sum::<f64>()
                    .sqrt(),
            );
        }
    }
    out
}
