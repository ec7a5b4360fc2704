//! CPU twin of the whole IWAE estimate in f64: encoder, sampling with given ε, decoder,
//! likelihood, prior and posterior densities, log-mean-exp over the K samples.

use crate::model::{GaussianSigma, Likelihood, Sequential, VaeConfig};

/// The IWAE estimate of one batch in f64.
#[derive(Clone, Debug)]
pub struct IwaeTwin {
    /// (K, B): log p(x_b | z_kb) + log p(z_kb) − log q(z_kb | x_b), sample k of input b at
    /// k·B + b.
    pub log_w: Vec<f64>,
    /// (B,): log (1/K) Σ_k exp(log_w[k, b]), the bound on log p(x_b).
    pub bound: Vec<f64>,
}

/// `rows` inputs through `net` in f64, weights read from `params` (flat layout of `cfg`).
fn run(cfg: &VaeConfig, params: &[f64], net: &Sequential, x: Vec<f64>, rows: usize) -> Vec<f64> {
    let layout = cfg.layout();
    let get = |name: &str| -> &[f64] {
        let s = layout.get(name).expect("parameter in the layout");
        &params[s.offset..s.offset + s.len()]
    };
    net.cpu_forward(&get, &x, rows).pop().expect("a module")
}

/// The IWAE estimate for inputs `x` (B, P) with K = `samples` draws each, the standard normal
/// draws `eps` (K·B, D) given in the GPU's layout (sample k of input b in row k·B + b), and
/// parameters `params` in the flat layout of `cfg.layout()`.
///
/// Every density is written out in full (log 2π terms included, log q from z through the
/// posterior's [`crate::model::Posterior::cpu_log_density`]), so the twin shares no
/// simplification with the GPU kernel.
pub fn iwae(
    cfg: &VaeConfig,
    params: &[f64],
    x: &[f32],
    batch: usize,
    samples: usize,
    eps: &[f32],
) -> IwaeTwin {
    let d = cfg.latent;
    let p = cfg.input_dim();
    assert_eq!(x.len(), batch * p, "x must be (B, P)");
    assert_eq!(eps.len(), samples * batch * d, "eps must be (K·B, D)");
    let (enc, dec) = cfg.networks().expect("a valid configuration");
    let enc_out = run(
        cfg,
        params,
        &enc,
        x.iter().map(|&v| v as f64).collect(),
        batch,
    );
    let kb = samples * batch;
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    // z from the posterior's twin; log q(z | x) written out from z (not from ε).
    let mut q = cfg.posterior();
    q.bind(&cfg.layout(), None, Some(params))
        .expect("the layout of the configuration");
    let eps64: Vec<f64> = eps.iter().map(|&v| v as f64).collect();
    let z = q.cpu_sample(&enc_out, &eps64, batch, samples);
    let log_q = q.cpu_log_density(&enc_out, &z, batch, samples);
    // log p(z) − log q(z | x) per row.
    let prior_minus_post: Vec<f64> = (0..kb)
        .map(|r| {
            let log_p: f64 = z[r * d..(r + 1) * d]
                .iter()
                .map(|&zv| -half_log_2pi - 0.5 * zv * zv)
                .sum();
            log_p - log_q[r]
        })
        .collect();
    let out = run(cfg, params, &dec, z, kb);
    let layout = cfg.layout();
    let log_sigma = |pi: usize| -> f64 {
        match cfg.likelihood {
            Likelihood::Gaussian { log_sigma } => match log_sigma {
                GaussianSigma::Fixed(v) => v as f64,
                GaussianSigma::LearnedShared | GaussianSigma::LearnedPerPixel => {
                    let s = layout.get("decoder.log_sigma").expect("learned log sigma");
                    params[s.offset + if s.len() == 1 { 0 } else { pi }]
                }
            },
            Likelihood::Bernoulli => 0.0,
        }
    };
    let mut log_w = vec![0.0; kb];
    for r in 0..kb {
        let b = r % batch;
        let mut log_px = 0.0;
        for pi in 0..p {
            let o = out[r * p + pi];
            let t = x[b * p + pi] as f64;
            log_px += match cfg.likelihood {
                // log σ(o)^t (1 − σ(o))^(1−t) = t·o − log(1 + e^o)
                Likelihood::Bernoulli => t * o - (o.max(0.0) + (-o.abs()).exp().ln_1p()),
                Likelihood::Gaussian { .. } => {
                    let s = log_sigma(pi);
                    let u = (t - o) * (-s).exp();
                    -half_log_2pi - s - 0.5 * u * u
                }
            };
        }
        log_w[r] = log_px + prior_minus_post[r];
    }
    let bound = (0..batch)
        .map(|b| {
            let m = (0..samples)
                .map(|k| log_w[k * batch + b])
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..samples).map(|k| (log_w[k * batch + b] - m).exp()).sum();
            m + s.ln() - (samples as f64).ln()
        })
        .collect();
    IwaeTwin { log_w, bound }
}
