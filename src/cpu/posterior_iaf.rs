//! f64 twins of the inverse autoregressive flow's kernels ([`crate::ops::posterior_iaf`]), in
//! the same layouts: q (B, P) = `[μ (D) | log σ² (D) | h (H)]`; z, ε (S, B, D) with draw s of row
//! b in row s·B + b; the own weights `w` laid out as the kernels' region
//! ([`IafSizes::own_offsets`]). Also the flow's exact inverse (step by step, in order of
//! increasing degree) and log q of given draws through it.

use crate::ops::posterior_iaf::IafSizes;

/// The region layout of `sizes` (the twins take sizes within the kernels' limits).
fn offsets(sizes: IafSizes) -> (Vec<[usize; 7]>, usize) {
    sizes
        .own_offsets()
        .expect("IAF sizes within the kernels' limits")
}

fn param_dim(sizes: IafSizes) -> usize {
    sizes
        .param_dim()
        .expect("IAF sizes within the kernels' limits")
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// log σ(s) = −softplus(−s), stable for large |s|.
fn log_sigmoid(s: f64) -> f64 {
    -((-s).max(0.0) + (-s.abs()).exp().ln_1p())
}

/// One step's MADE outputs for z: (a (H), g (H), m (D), s (D)).
struct Made {
    a: Vec<f64>,
    g: Vec<f64>,
    m: Vec<f64>,
    s: Vec<f64>,
}

/// The MADE of step `t` (offsets `o`) on z with context h.
fn made(sizes: IafSizes, w: &[f64], o: &[usize; 7], t: usize, h: &[f64], z: &[f64]) -> Made {
    let (d, hh) = (sizes.latent, sizes.hidden);
    let mut a = vec![0.0; hh];
    let mut g = vec![0.0; hh];
    let mut m: Vec<f64> = w[o[4]..o[4] + d].to_vec();
    let mut s: Vec<f64> = w[o[6]..o[6] + d].to_vec();
    for j in 0..hh {
        let mj = sizes.hidden_degree(j);
        let mut aj = w[o[2] + j];
        for (c, hc) in h.iter().enumerate() {
            aj += w[o[1] + j * hh + c] * hc;
        }
        for (i, zi) in z.iter().enumerate() {
            if sizes.degree(t, i) <= mj {
                aj += w[o[0] + j * d + i] * zi;
            }
        }
        a[j] = aj;
        g[j] = if aj > 0.0 { aj } else { aj.exp_m1() };
        for i in 0..d {
            if mj < sizes.degree(t, i) {
                m[i] += w[o[3] + i * hh + j] * g[j];
                s[i] += w[o[5] + i * hh + j] * g[j];
            }
        }
    }
    Made { a, g, m, s }
}

/// The context h of row `row`.
fn context(q: &[f64], sizes: IafSizes, row: usize) -> &[f64] {
    let p = param_dim(sizes);
    let d = sizes.latent;
    &q[row * p + 2 * d..(row + 1) * p]
}

/// Applies step `t` of the flow to z (row `row`'s context) in place; returns Σ_i log σ(s_i).
pub fn apply_step(
    q: &[f64],
    w: &[f64],
    sizes: IafSizes,
    row: usize,
    t: usize,
    z: &mut [f64],
) -> f64 {
    let (offs, _) = offsets(sizes);
    let out = made(sizes, w, &offs[t], t, context(q, sizes, row), z);
    let mut ld = 0.0;
    for ((zi, s), m) in z.iter_mut().zip(&out.s).zip(&out.m) {
        *zi = sigmoid(*s) * *zi + sigmoid(-s) * m;
        ld += log_sigmoid(*s);
    }
    ld
}

fn base_draw(q: &[f64], eps: &[f64], sizes: IafSizes, row: usize, r: usize) -> Vec<f64> {
    let (d, p) = (sizes.latent, param_dim(sizes));
    (0..d)
        .map(|i| q[row * p + i] + (0.5 * q[row * p + d + i]).exp() * eps[r * d + i])
        .collect()
}

/// (z_K (S, B, D), Σ_t Σ_i log σ(s_t,i) (S·B,)).
pub fn iaf_forward(
    q: &[f64],
    w: &[f64],
    eps: &[f64],
    rows: usize,
    sizes: IafSizes,
    samples: usize,
) -> (Vec<f64>, Vec<f64>) {
    let d = sizes.latent;
    let mut z = vec![0.0; samples * rows * d];
    let mut ld = vec![0.0; samples * rows];
    for r in 0..samples * rows {
        let row = r % rows;
        let mut zz = base_draw(q, eps, sizes, row, r);
        for t in 0..sizes.flows {
            ld[r] += apply_step(q, w, sizes, row, t, &mut zz);
        }
        z[r * d..(r + 1) * d].copy_from_slice(&zz);
    }
    (z, ld)
}

/// log q(z_K | x) (S·B,) of the draws at ε: Σ_i [−½ ε_i² − ½ log 2π − ½ log σ²_i] − Σ log σ(s).
pub fn iaf_log_q(
    q: &[f64],
    w: &[f64],
    eps: &[f64],
    rows: usize,
    sizes: IafSizes,
    samples: usize,
) -> Vec<f64> {
    let (d, p) = (sizes.latent, param_dim(sizes));
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let (_, ld) = iaf_forward(q, w, eps, rows, sizes, samples);
    (0..samples * rows)
        .map(|r| {
            let row = r % rows;
            let base: f64 = (0..d)
                .map(|i| {
                    let e = eps[r * d + i];
                    -0.5 * e * e - half_log_2pi - 0.5 * q[row * p + d + i]
                })
                .sum();
            base - ld[r]
        })
        .collect()
}

/// log w (S, B) = −nll + log N(z_K; 0, I) − log q(z_K|x)
/// = −nll + Σ_i (ε_i² − z_i² + log σ_i²) / 2 + Σ_t Σ_i log σ(s_t,i), z_K from ε.
pub fn iaf_log_weights(
    q: &[f64],
    w: &[f64],
    nll: &[f64],
    eps: &[f64],
    rows: usize,
    sizes: IafSizes,
    samples: usize,
) -> Vec<f64> {
    let (d, p) = (sizes.latent, param_dim(sizes));
    let (z, ld) = iaf_forward(q, w, eps, rows, sizes, samples);
    (0..samples * rows)
        .map(|r| {
            let row = r % rows;
            let s: f64 = (0..d)
                .map(|i| {
                    let (e, zz) = (eps[r * d + i], z[r * d + i]);
                    0.5 * (e * e - zz * zz + q[row * p + d + i])
                })
                .sum();
            s + ld[r] - nll[r]
        })
        .collect()
}

/// The KL's single-draw estimate at the noise ε (B, D) of each row, as `iaf_kl` computes it:
/// (log q(z_K) − log N(z_K; 0, I) (B,), the base Gaussian's KL per dimension (B, D)).
pub fn iaf_kl(
    q: &[f64],
    w: &[f64],
    eps: &[f64],
    rows: usize,
    sizes: IafSizes,
) -> (Vec<f64>, Vec<f64>) {
    let (d, p) = (sizes.latent, param_dim(sizes));
    let (z, ld) = iaf_forward(q, w, eps, rows, sizes, 1);
    let mut kl = vec![0.0; rows];
    let mut ke = vec![0.0; rows * d];
    for row in 0..rows {
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

/// (dq (B, P), dw (region)) = ∂/∂(q, w) Σ_r [dz_r·z_K,r + c_r (Σ_t Σ_i log σ(s_t,i) + [volume]
/// Σ_i ½ log σ²_i)] at fixed ε, c_r = scale·weights[r] for `cw = Some((weights, scale,
/// volume))` (no c: no log-determinant term; no dz: no path through z_K), by reverse-mode
/// differentiation with every step's values kept. dw is 0 at the padding and at every entry
/// that is not a connection.
#[allow(clippy::too_many_arguments)]
pub fn iaf_backward(
    q: &[f64],
    w: &[f64],
    eps: &[f64],
    dz: Option<&[f64]>,
    cw: Option<(&[f64], f64, bool)>,
    rows: usize,
    sizes: IafSizes,
    samples: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (d, hh, p) = (sizes.latent, sizes.hidden, param_dim(sizes));
    let (offs, len) = offsets(sizes);
    let mut dq = vec![0.0; rows * p];
    let mut dw = vec![0.0; len];
    for r in 0..samples * rows {
        let row = r % rows;
        let h = context(q, sizes, row).to_vec();
        let cr = cw.map_or(0.0, |(c, scale, _)| scale * c[r]);
        let volume = cw.is_some_and(|(_, _, v)| v);
        // The forward, keeping each step's input and MADE values.
        let mut z = base_draw(q, eps, sizes, row, r);
        let mut kept = Vec::with_capacity(sizes.flows);
        for (t, o) in offs.iter().enumerate() {
            let out = made(sizes, w, o, t, &h, &z);
            let prev = z.clone();
            for ((zi, s), m) in z.iter_mut().zip(&out.s).zip(&out.m) {
                *zi = sigmoid(*s) * *zi + sigmoid(-s) * m;
            }
            kept.push((prev, out));
        }
        let mut gz: Vec<f64> = match dz {
            Some(g) => g[r * d..(r + 1) * d].to_vec(),
            None => vec![0.0; d],
        };
        for t in (0..sizes.flows).rev() {
            let o = &offs[t];
            let (zp, out) = &kept[t];
            let mut dm = vec![0.0; d];
            let mut ds = vec![0.0; d];
            for i in 0..d {
                let (sig, one_m) = (sigmoid(out.s[i]), sigmoid(-out.s[i]));
                dm[i] = gz[i] * one_m;
                ds[i] = gz[i] * (zp[i] - out.m[i]) * sig * one_m + cr * one_m;
                gz[i] *= sig;
                dw[o[4] + i] += dm[i];
                dw[o[6] + i] += ds[i];
            }
            for j in 0..hh {
                let mj = sizes.hidden_degree(j);
                let mut dg = 0.0;
                for i in 0..d {
                    if mj < sizes.degree(t, i) {
                        dg += w[o[3] + i * hh + j] * dm[i] + w[o[5] + i * hh + j] * ds[i];
                        dw[o[3] + i * hh + j] += dm[i] * out.g[j];
                        dw[o[5] + i * hh + j] += ds[i] * out.g[j];
                    }
                }
                let da = dg * if out.a[j] > 0.0 { 1.0 } else { out.a[j].exp() };
                dw[o[2] + j] += da;
                for c in 0..hh {
                    dw[o[1] + j * hh + c] += da * h[c];
                    dq[row * p + 2 * d + c] += w[o[1] + j * hh + c] * da;
                }
                for i in 0..d {
                    if sizes.degree(t, i) <= mj {
                        dw[o[0] + j * d + i] += da * zp[i];
                        gz[i] += w[o[0] + j * d + i] * da;
                    }
                }
            }
        }
        for i in 0..d {
            let sigma = (0.5 * q[row * p + d + i]).exp();
            dq[row * p + i] += gz[i];
            dq[row * p + d + i] +=
                0.5 * gz[i] * eps[r * d + i] * sigma + if volume { 0.5 * cr } else { 0.0 };
        }
    }
    (dq, dw)
}

/// Inverts the flow: the noise ε (S·B, D) behind draws z_K (S·B, D). Each step, last first, is
/// undone exactly in order of increasing degree: m_i and σ(s_i) depend only on the dimensions of
/// lower degree, already recovered, so z_prev,i = (z_i − (1 − σ_i) m_i) / σ_i.
pub fn iaf_inverse(
    q: &[f64],
    w: &[f64],
    z: &[f64],
    rows: usize,
    sizes: IafSizes,
    samples: usize,
) -> Vec<f64> {
    let (d, p) = (sizes.latent, param_dim(sizes));
    let (offs, _) = offsets(sizes);
    let mut eps = vec![0.0; samples * rows * d];
    for r in 0..samples * rows {
        let row = r % rows;
        let h = context(q, sizes, row);
        let mut y = z[r * d..(r + 1) * d].to_vec();
        for t in (0..sizes.flows).rev() {
            let mut x = vec![0.0; d];
            for k in 1..=d {
                let i = (0..d)
                    .find(|&i| sizes.degree(t, i) == k)
                    .expect("the degrees are a permutation of 1..=D");
                let out = made(sizes, w, &offs[t], t, h, &x);
                let (sig, one_m) = (sigmoid(out.s[i]), sigmoid(-out.s[i]));
                x[i] = (y[i] - one_m * out.m[i]) / sig;
            }
            y = x;
        }
        for i in 0..d {
            eps[r * d + i] = (y[i] - q[row * p + i]) / (0.5 * q[row * p + d + i]).exp();
        }
    }
    eps
}

/// log q(z | x) (S·B,) of given draws z: ε by [`iaf_inverse`], then [`iaf_log_q`].
pub fn iaf_log_density_of_z(
    q: &[f64],
    w: &[f64],
    z: &[f64],
    rows: usize,
    sizes: IafSizes,
    samples: usize,
) -> Vec<f64> {
    let eps = iaf_inverse(q, w, z, rows, sizes, samples);
    iaf_log_q(q, w, &eps, rows, sizes, samples)
}

/// Zeroes every entry of w1, wm and ws in an own-weight region `w` that is not a connection
/// (used at initialisation, so that the stored weights are the masked ones). Entries beyond
/// `w`'s end are left alone.
pub fn init_mask(sizes: IafSizes, w: &mut [f32]) {
    let Some((offs, _)) = sizes.own_offsets() else {
        return;
    };
    let (d, hh) = (sizes.latent, sizes.hidden);
    let mut zero = |k: usize| {
        if let Some(x) = w.get_mut(k) {
            *x = 0.0;
        }
    };
    for (t, o) in offs.iter().enumerate() {
        for j in 0..hh {
            let mj = sizes.hidden_degree(j);
            for i in 0..d {
                if sizes.degree(t, i) > mj {
                    zero(o[0] + j * d + i);
                }
                if mj >= sizes.degree(t, i) {
                    zero(o[3] + i * hh + j);
                    zero(o[5] + i * hh + j);
                }
            }
        }
    }
}
