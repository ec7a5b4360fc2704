//! CPU twin of the whole VAE forward pass in f64: the loss the GPU programs differentiate.

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
    let get = |name: &str| -> &[f64] {
        let s = layout.get(name).expect("parameter");
        &params[s.offset..s.offset + s.len()]
    };
    let (enc, dec) = cfg.networks().expect("a valid configuration");
    let mut q = cfg.posterior();
    q.bind(&layout, None, Some(params))
        .expect("the layout of the configuration");
    let pdim = cfg.input_dim();
    // Forward in f64 throughout: weights are read from `params` (f64) so finite differences
    // of size 1e-6 are seen exactly.
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let enc_out = enc.cpu_forward(&get, &xs, batch).pop().expect("a module");
    let kb = batch * samples;
    let eps: Vec<f64> = eps.iter().map(|&v| v as f64).collect();
    let z = q.cpu_sample(&enc_out, &eps, batch, samples);
    let kl = q.cpu_kl(&enc_out, batch);
    let h = dec.cpu_forward(&get, &z, kb).pop().expect("a module");
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
