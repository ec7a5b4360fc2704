//! f64 twins of the planar-flow posterior's kernels ([`crate::ops::posterior_planar`]), in the
//! same layouts: q (B, P) = `[μ (D) | log σ² (D) | (u (D), w (D), b) per flow]`; z, ε (S, B, D)
//! with draw s of row b in row s·B + b. Also log q(z_K | x) by the change of variables through
//! the dense Jacobian, independent of the kernels' rank-one determinant formula.

use crate::ops::posterior_planar::{DELTA, flow_offset, param_dim};

/// m(a) = −1 + softplus(a), stable for large |a|.
fn m(a: f64) -> f64 {
    -1.0 + a.max(0.0) + (-a.abs()).exp().ln_1p()
}

/// û = u + (m(wᵀu) − wᵀu) w / max(‖w‖², δ) of flow `k` of row `row`.
pub fn hat_u(q: &[f64], row: usize, d: usize, flows: usize, k: usize) -> Vec<f64> {
    let p = param_dim(d, flows).expect("a small size");
    let f0 = row * p + flow_offset(d, k);
    let (u, w) = (&q[f0..f0 + d], &q[f0 + d..f0 + 2 * d]);
    let wu: f64 = (0..d).map(|i| w[i] * u[i]).sum();
    let ww: f64 = (0..d).map(|i| w[i] * w[i]).sum();
    let c = (m(wu) - wu) / ww.max(DELTA as f64);
    (0..d).map(|i| u[i] + c * w[i]).collect()
}

/// Applies flow `k` of row `row` to z in place; returns log|1 + ûᵀψ|.
fn apply(q: &[f64], row: usize, d: usize, flows: usize, k: usize, z: &mut [f64]) -> f64 {
    let p = param_dim(d, flows).expect("a small size");
    let f0 = row * p + flow_offset(d, k);
    let w = &q[f0 + d..f0 + 2 * d];
    let uh = hat_u(q, row, d, flows, k);
    let a = q[f0 + 2 * d] + (0..d).map(|i| w[i] * z[i]).sum::<f64>();
    let h = a.tanh();
    let wuh: f64 = (0..d).map(|i| w[i] * uh[i]).sum();
    for i in 0..d {
        z[i] += uh[i] * h;
    }
    (1.0 + (1.0 - h * h) * wuh).abs().ln()
}

fn base_draw(q: &[f64], eps: &[f64], row: usize, r: usize, d: usize, p: usize) -> Vec<f64> {
    (0..d)
        .map(|i| q[row * p + i] + (0.5 * q[row * p + d + i]).exp() * eps[r * d + i])
        .collect()
}

/// (z_K (S, B, D), Σ_k log|det_k| (S·B,)).
pub fn planar_forward(
    q: &[f64],
    eps: &[f64],
    b: usize,
    d: usize,
    flows: usize,
    samples: usize,
) -> (Vec<f64>, Vec<f64>) {
    let p = param_dim(d, flows).expect("a small size");
    let mut z = vec![0.0; samples * b * d];
    let mut ld = vec![0.0; samples * b];
    for r in 0..samples * b {
        let row = r % b;
        let mut zz = base_draw(q, eps, row, r, d, p);
        for k in 0..flows {
            ld[r] += apply(q, row, d, flows, k, &mut zz);
        }
        z[r * d..(r + 1) * d].copy_from_slice(&zz);
    }
    (z, ld)
}

/// dq (B, P) = ∂/∂q Σ_r [dz_r·z_K,r + c_r (Σ_k log|det_k| + [volume] Σ_i log σ_i)] at fixed ε
/// (+ `base` when accumulating; no c: only the dz path), by reverse-mode differentiation of the
/// chain with every z_k kept.
#[allow(clippy::too_many_arguments)]
pub fn planar_backward(
    q: &[f64],
    eps: &[f64],
    dz: &[f64],
    cw: Option<&[f64]>,
    volume: bool,
    b: usize,
    d: usize,
    flows: usize,
    samples: usize,
    base: Option<&[f64]>,
) -> Vec<f64> {
    let p = param_dim(d, flows).expect("a small size");
    let mut g = match base {
        Some(x) => x.to_vec(),
        None => vec![0.0; b * p],
    };
    for r in 0..samples * b {
        let row = r % b;
        let cr = cw.map_or(0.0, |c| c[r]);
        let mut zs = vec![base_draw(q, eps, row, r, d, p)];
        for k in 0..flows {
            let mut next = zs[k].clone();
            apply(q, row, d, flows, k, &mut next);
            zs.push(next);
        }
        let mut gz = dz[r * d..(r + 1) * d].to_vec();
        for k in (0..flows).rev() {
            let f0 = row * p + flow_offset(d, k);
            let u = &q[f0..f0 + d];
            let w = &q[f0 + d..f0 + 2 * d];
            let zt = &zs[k];
            let wu: f64 = (0..d).map(|i| w[i] * u[i]).sum();
            let ww: f64 = (0..d).map(|i| w[i] * w[i]).sum();
            let n = ww.max(DELTA as f64);
            let c = (m(wu) - wu) / n;
            let uh: Vec<f64> = (0..d).map(|i| u[i] + c * w[i]).collect();
            let wuh: f64 = (0..d).map(|i| w[i] * uh[i]).sum();
            let a = q[f0 + 2 * d] + (0..d).map(|i| w[i] * zt[i]).sum::<f64>();
            let h = a.tanh();
            let gg = 1.0 - h * h;
            let det = 1.0 + gg * wuh;
            let dh: f64 = (0..d).map(|i| gz[i] * uh[i]).sum();
            let dg = cr * wuh / det;
            let dwuh = cr * gg / det;
            let da = (dh - 2.0 * h * dg) * gg;
            let duh: Vec<f64> = (0..d).map(|i| gz[i] * h + dwuh * w[i]).collect();
            let dc: f64 = (0..d).map(|i| duh[i] * w[i]).sum();
            let sig = 1.0 / (1.0 + (-wu).exp());
            let dwu = dc * (sig - 1.0) / n;
            let dn = if ww >= DELTA as f64 { -dc * c / n } else { 0.0 };
            for i in 0..d {
                g[f0 + i] += duh[i] + dwu * w[i];
                g[f0 + d + i] +=
                    dwuh * uh[i] + da * zt[i] + c * duh[i] + dwu * u[i] + 2.0 * dn * w[i];
                gz[i] += da * w[i];
            }
            g[f0 + 2 * d] += da;
        }
        for i in 0..d {
            let sigma = (0.5 * q[row * p + d + i]).exp();
            g[row * p + i] += gz[i];
            g[row * p + d + i] +=
                0.5 * gz[i] * eps[r * d + i] * sigma + volume as u8 as f64 * 0.5 * cr;
        }
    }
    g
}

/// log w (S, B) = −nll + Σ_i (ε_i² − z_i² + log σ_i²) / 2 + Σ_k log|det_k|, as the kernel.
#[allow(clippy::too_many_arguments)]
pub fn planar_log_weights(
    q: &[f64],
    nll: &[f64],
    z: &[f64],
    eps: &[f64],
    logdet: &[f64],
    b: usize,
    d: usize,
    flows: usize,
    samples: usize,
) -> Vec<f64> {
    let p = param_dim(d, flows).expect("a small size");
    (0..samples * b)
        .map(|r| {
            let row = r % b;
            let s: f64 = (0..d)
                .map(|i| {
                    let (e, zz) = (eps[r * d + i], z[r * d + i]);
                    0.5 * (e * e - zz * zz + q[row * p + d + i])
                })
                .sum();
            s + logdet[r] - nll[r]
        })
        .collect()
}

/// log|det A| of a dense (n, n) matrix by Gaussian elimination with partial pivoting.
pub fn log_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut out = 0.0;
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&x, &y| a[x * n + c].abs().total_cmp(&a[y * n + c].abs()))
            .unwrap_or(c);
        if piv != c {
            for j in 0..n {
                a.swap(c * n + j, piv * n + j);
            }
        }
        let v = a[c * n + c];
        out += v.abs().ln();
        for i in c + 1..n {
            let f = a[i * n + c] / v;
            for j in c..n {
                a[i * n + j] -= f * a[c * n + j];
            }
        }
    }
    out
}

/// log q(z_K | x) (S·B,) by the change of variables: z_K = f(ε) with f = f_K ∘ … ∘ f_1 ∘
/// (μ + σ ⊙ ·); its Jacobian J = J_K ⋯ J_1 diag(σ) is built densely (J_k = I + û_k ψ_kᵀ) and
/// log q = log N(ε; 0, I) − log|det J| (log 2π terms included).
pub fn planar_log_density(
    q: &[f64],
    eps: &[f64],
    b: usize,
    d: usize,
    flows: usize,
    samples: usize,
) -> Vec<f64> {
    let p = param_dim(d, flows).expect("a small size");
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    (0..samples * b)
        .map(|r| {
            let row = r % b;
            let mut z = base_draw(q, eps, row, r, d, p);
            // J = diag(σ).
            let mut jac = vec![0.0; d * d];
            for i in 0..d {
                jac[i * d + i] = (0.5 * q[row * p + d + i]).exp();
            }
            for k in 0..flows {
                let f0 = row * p + flow_offset(d, k);
                let w = &q[f0 + d..f0 + 2 * d];
                let uh = hat_u(q, row, d, flows, k);
                let a = q[f0 + 2 * d] + (0..d).map(|i| w[i] * z[i]).sum::<f64>();
                let h = a.tanh();
                // J_k = I + û (1 − h²) wᵀ; J ← J_k J.
                let mut next = jac.clone();
                for j in 0..d {
                    let wj: f64 = (0..d).map(|l| w[l] * jac[l * d + j]).sum();
                    for i in 0..d {
                        next[i * d + j] += uh[i] * (1.0 - h * h) * wj;
                    }
                }
                jac = next;
                for i in 0..d {
                    z[i] += uh[i] * h;
                }
            }
            let ee: f64 = (0..d).map(|i| eps[r * d + i] * eps[r * d + i]).sum();
            -0.5 * ee - d as f64 * half_log_2pi - log_abs_det(jac, d)
        })
        .collect()
}

/// The KL's single-draw estimate at the noise ε (B, D) of each row, as `planar_kl` computes
/// it: (log q(z_K) − log N(z_K; 0, I) (B,), the base Gaussian's KL per dimension (B, D)).
pub fn planar_kl(q: &[f64], eps: &[f64], b: usize, d: usize, flows: usize) -> (Vec<f64>, Vec<f64>) {
    let p = param_dim(d, flows).expect("a small size");
    let (z, ld) = planar_forward(q, eps, b, d, flows, 1);
    let mut kl = vec![0.0; b];
    let mut ke = vec![0.0; b * d];
    for row in 0..b {
        let mut s = -ld[row];
        for i in 0..d {
            let (mu, lv, e, zz) = (
                q[row * p + i],
                q[row * p + d + i],
                eps[row * d + i],
                z[row * d + i],
            );
            s += 0.5 * (zz * zz - e * e - lv);
            ke[row * d + i] = 0.5 * (mu * mu + lv.exp_m1() - lv);
        }
        kl[row] = s;
    }
    (kl, ke)
}

/// Inverts the flow: the noise ε (S·B, D) behind draws z_K (S·B, D). Each flow is undone by
/// solving wᵀz_k = α + wᵀû tanh(α + b) for α = wᵀz_{k−1} (strictly increasing in α when
/// wᵀû > −1) by bisection, then z_{k−1} = z_k − û tanh(α + b).
pub fn planar_inverse(
    q: &[f64],
    z: &[f64],
    b: usize,
    d: usize,
    flows: usize,
    samples: usize,
) -> Vec<f64> {
    let p = param_dim(d, flows).expect("a small size");
    let mut eps = vec![0.0; samples * b * d];
    for r in 0..samples * b {
        let row = r % b;
        let mut y = z[r * d..(r + 1) * d].to_vec();
        for k in (0..flows).rev() {
            let f0 = row * p + flow_offset(d, k);
            let w = &q[f0 + d..f0 + 2 * d];
            let bias = q[f0 + 2 * d];
            let uh = hat_u(q, row, d, flows, k);
            let wuh: f64 = (0..d).map(|i| w[i] * uh[i]).sum();
            let wy: f64 = (0..d).map(|i| w[i] * y[i]).sum();
            let (mut lo, mut hi) = (wy - wuh.abs() - 1.0, wy + wuh.abs() + 1.0);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if mid + wuh * (mid + bias).tanh() < wy {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let h = (0.5 * (lo + hi) + bias).tanh();
            for i in 0..d {
                y[i] -= uh[i] * h;
            }
        }
        for i in 0..d {
            eps[r * d + i] = (y[i] - q[row * p + i]) / (0.5 * q[row * p + d + i]).exp();
        }
    }
    eps
}

/// log q(z_K | x) (S·B,) from the draws z_K alone: ε by [`planar_inverse`], then the change of
/// variables of [`planar_log_density`].
pub fn planar_log_density_of_z(
    q: &[f64],
    z: &[f64],
    b: usize,
    d: usize,
    flows: usize,
    samples: usize,
) -> Vec<f64> {
    let eps = planar_inverse(q, z, b, d, flows, samples);
    planar_log_density(q, &eps, b, d, flows, samples)
}
