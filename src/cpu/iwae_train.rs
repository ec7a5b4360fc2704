//! CPU twins of `ops::iwae_train` in f64 (same layouts: sample s of input b in row s·B + b).

/// The twin of `iwae_softmax`: (ω (K·B), w_b·ω (K·B), loss (B), mean NLL (B)) for `logw` and
/// `nll` (K·B) and the row weights `w` (B).
pub fn iwae_softmax(
    logw: &[f64],
    nll: &[f64],
    w: &[f64],
    samples: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let b = w.len();
    let mut omega = vec![0.0; samples * b];
    let mut wo = vec![0.0; samples * b];
    let mut loss = vec![0.0; b];
    let mut recon = vec![0.0; b];
    for i in 0..b {
        let m = (0..samples)
            .map(|s| logw[s * b + i])
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..samples).map(|s| (logw[s * b + i] - m).exp()).sum();
        let lse = m + sum.ln();
        for s in 0..samples {
            let r = s * b + i;
            omega[r] = (logw[r] - lse).exp();
            wo[r] = w[i] * omega[r];
        }
        loss[i] = (samples as f64).ln() - lse;
        recon[i] = (0..samples).map(|s| nll[s * b + i]).sum::<f64>() / samples as f64;
    }
    (omega, wo, loss, recon)
}

/// The twin of `iwae_rescale`: g[r, j] · scale · ω[r].
pub fn iwae_rescale(g: &[f64], omega: &[f64], scale: f64) -> Vec<f64> {
    let cols = g.len() / omega.len();
    g.iter()
        .enumerate()
        .map(|(i, &v)| v * scale * omega[i / cols])
        .collect()
}

/// The twin of `iwae_prior_dz`: dz + weighted[r] · z[r, j].
pub fn iwae_prior_dz(z: &[f64], weighted: &[f64], dz: &[f64]) -> Vec<f64> {
    let d = z.len() / weighted.len();
    dz.iter()
        .zip(z)
        .enumerate()
        .map(|(i, (&g, &zv))| g + weighted[i / d] * zv)
        .collect()
}

/// The twin of `iwae_logdet_backward`: dparams (B, stride) plus −½ Σ_s coef[s·B + b] at
/// columns offset..offset + dim of row b.
pub fn iwae_logdet_backward(
    coef: &[f64],
    dparams: &[f64],
    stride: usize,
    dim: usize,
    offset: usize,
    samples: usize,
) -> Vec<f64> {
    let b = dparams.len() / stride;
    let mut out = dparams.to_vec();
    for i in 0..b {
        let c: f64 = (0..samples).map(|s| coef[s * b + i]).sum();
        for j in 0..dim {
            out[i * stride + offset + j] -= 0.5 * c;
        }
    }
    out
}
