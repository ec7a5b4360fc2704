//! CPU twin of the whole VAE forward pass in f64: the loss the GPU programs differentiate.

use crate::cpu::activate;
use crate::model::{GaussianSigma, Likelihood, VaeConfig};
use crate::ops::likelihood::LOG_SIGMA_MIN;

/// Per-input terms of one forward pass: (nll (K·B,), kl (B,)), with latent noise `eps`
/// (K·B, D) given, parameters in the flat layout of `cfg.layout()`.
pub fn vae_forward(
    cfg: &VaeConfig,
    params: &[f64],
    x: &[f32],
    batch: usize,
    samples: usize,
    eps: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let layout = cfg.layout();
    let get = |name: &str| {
        let s = layout.get(name).expect("parameter");
        &params[s.offset..s.offset + s.len()]
    };
    let (enc, dec) = cfg.layers();
    let d = cfg.latent;
    let pdim = cfg.input_dim();
    // Forward in f64 throughout: weights are read from `params` (f64) so finite differences
    // of size 1e-6 are seen exactly.
    let lin = |act, x: &[f64], rows: usize, name: &str, inp: usize, out: usize| {
        let w = get(&format!("{name}.weight"));
        let b = get(&format!("{name}.bias"));
        let mut y = vec![0.0; rows * out];
        for r in 0..rows {
            for j in 0..out {
                let mut s = b[j];
                for i in 0..inp {
                    s += x[r * inp + i] * w[i * out + j];
                }
                y[r * out + j] = activate(act, s);
            }
        }
        y
    };
    let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for l in &enc {
        h = lin(l.act, &h, batch, &l.name, l.inp, l.out);
    }
    let enc_out = h;
    let kb = batch * samples;
    let mut z = vec![0.0; kb * d];
    let mut kl = vec![0.0; batch];
    for b in 0..batch {
        for j in 0..d {
            let mu = enc_out[b * 2 * d + j];
            let lv = enc_out[b * 2 * d + d + j];
            kl[b] += 0.5 * (mu * mu + lv.exp() - 1.0 - lv);
            for s in 0..samples {
                let r = s * batch + b;
                z[r * d + j] = mu + (0.5 * lv).exp() * eps[r * d + j] as f64;
            }
        }
    }
    let mut h = z;
    for l in &dec {
        h = lin(l.act, &h, kb, &l.name, l.inp, l.out);
    }
    let mut nll = vec![0.0; kb];
    for r in 0..kb {
        let b = r % batch;
        for pi in 0..pdim {
            let o = h[r * pdim + pi];
            let t = x[b * pdim + pi] as f64;
            nll[r] += match cfg.likelihood {
                Likelihood::Bernoulli => o.max(0.0) + (-o.abs()).exp().ln_1p() - t * o,
                Likelihood::Gaussian { log_sigma } => {
                    // log σ = max(value, LOG_SIGMA_MIN), as in the kernel.
                    let s = match log_sigma {
                        GaussianSigma::Fixed(v) => v as f64,
                        GaussianSigma::LearnedShared => get("decoder.log_sigma")[0],
                        GaussianSigma::LearnedPerPixel => get("decoder.log_sigma")[pi],
                    }
                    .max(LOG_SIGMA_MIN as f64);
                    0.5 * (o - t).powi(2) * (-2.0 * s).exp()
                        + s
                        + 0.5 * (2.0 * std::f64::consts::PI).ln()
                }
            };
        }
    }
    (nll, kl)
}

/// The batch-mean loss (1/B) Σ_b [(1/K) Σ_s nll_sb + β KL_b].
pub fn vae_loss(
    cfg: &VaeConfig,
    params: &[f64],
    x: &[f32],
    batch: usize,
    samples: usize,
    eps: &[f32],
    beta: f64,
) -> f64 {
    let w = vec![1.0 / batch as f64; batch];
    vae_loss_weighted(cfg, params, x, batch, samples, eps, beta, &w)
}

/// The row-weighted loss Σ_b w_b [(1/K) Σ_s nll_sb + β KL_b] (w_b = 1/valid for the rows of a
/// partial batch that hold an image, 0 for its padded rows). Rows of weight 0 are left out
/// entirely, so whatever they hold cannot reach the result.
#[allow(clippy::too_many_arguments)]
pub fn vae_loss_weighted(
    cfg: &VaeConfig,
    params: &[f64],
    x: &[f32],
    batch: usize,
    samples: usize,
    eps: &[f32],
    beta: f64,
    w: &[f64],
) -> f64 {
    let (nll, kl) = vae_forward(cfg, params, x, batch, samples, eps);
    let mut loss = 0.0;
    for b in (0..batch).filter(|&b| w[b] != 0.0) {
        let recon: f64 = (0..samples).map(|s| nll[s * batch + b]).sum::<f64>() / samples as f64;
        loss += w[b] * (recon + beta * kl[b]);
    }
    loss
}
