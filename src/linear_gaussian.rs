//! Models whose answers are known: the linear-Gaussian decoder x = W z + b + σ·n with
//! z ~ N(0, I) and n ~ N(0, I) (probabilistic PCA). Its marginal is p(x) = N(b, W Wᵀ + σ² I)
//! and its posterior p(z|x) = N(Λ⁻¹ Wᵀ(x − b)/σ², Λ⁻¹), with precision Λ = WᵀW/σ² + I, so
//! every bound a posterior family reaches can be compared with the exact log p(x).
//!
//! A mean-field (diagonal) q cannot represent Λ's off-diagonal coupling: its best ELBO stays
//! ½(Σᵢ log Λᵢᵢ − log det Λ) nats below log p(x) for every x ([`LinearGaussian::mean_field_gap`]),
//! while a full-covariance q can be exact.
//!
//! [`fit_encoder`] freezes the decoder at the true W and b and trains only the encoder (one
//! linear layer from x to the posterior's parameters, which can represent the exact posterior's
//! mean and covariance) on the GPU with Adam, one submit per step; [`bounds`] estimates the
//! ELBO and the IWAE bound of every input on the GPU. The `posterior_gap` example and the
//! exactness tests are built on these.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::linalg::{cholesky, cholesky_solve, forward_solve};
use crate::model::vae::{KlWeight, Vae};
use crate::model::{GaussianSigma, Likelihood, PosteriorKind, VaeConfig};
use crate::ops::adam::{AdamConfig, AdamScratch, adam};
use crate::ops::data::StepState;
use crate::ops::reparam::{RngStep, Stream};
use crate::rng::HostRng;
use crate::train::objective::IwaeTrain;

/// Most latent dimensions (the full-covariance posterior's limit).
pub const MAX_LATENT: usize = 64;
/// Most inputs × draws of one [`bounds`] pass.
pub const MAX_EVAL_ROWS: usize = 1 << 24;
/// Smallest σ (the Gaussian likelihood's floor).
pub const MIN_SIGMA: f64 = 0.01;

/// A linear-Gaussian model x = W z + b + σ·n.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGaussian {
    pub dx: usize,
    pub dz: usize,
    /// (dx, dz), row-major
    pub w: Vec<f64>,
    /// (dx,)
    pub b: Vec<f64>,
    pub sigma: f64,
}

fn config_err(detail: String) -> Error {
    Error::Config(detail)
}

impl LinearGaussian {
    /// Checks the sizes (W holding dx·dz values, b dx, 1 ≤ dz ≤ [`MAX_LATENT`]), that every
    /// value is finite and that σ ≥ [`MIN_SIGMA`].
    pub fn new(w: Vec<f64>, dx: usize, dz: usize, b: Vec<f64>, sigma: f64) -> Result<Self> {
        if dx == 0 || !(1..=MAX_LATENT).contains(&dz) {
            return Err(config_err(format!(
                "W is ({dx}, {dz}): it needs at least one row and 1 to {MAX_LATENT} columns"
            )));
        }
        if dx.checked_mul(dz) != Some(w.len()) {
            return Err(config_err(format!(
                "W holds {} values, not {dx}·{dz}",
                w.len()
            )));
        }
        if b.len() != dx {
            return Err(config_err(format!(
                "b has {} values, but W has {dx} rows",
                b.len()
            )));
        }
        if let Some(v) = w.iter().chain(&b).find(|v| !v.is_finite()) {
            return Err(config_err(format!(
                "W and b must be finite; one value is {v}"
            )));
        }
        if !(sigma.is_finite() && sigma >= MIN_SIGMA) {
            return Err(config_err(format!(
                "σ {sigma}: must be at least {MIN_SIGMA}"
            )));
        }
        Ok(LinearGaussian {
            dx,
            dz,
            w,
            b,
            sigma,
        })
    }

    /// The built-in model: dx = 4, dz = 2, W's columns nearly parallel, so that the two
    /// coordinates of every posterior are strongly correlated (mean-field gap 0.60 nats at
    /// σ = 0.5).
    pub fn builtin(sigma: f64) -> Result<Self> {
        LinearGaussian::new(
            vec![1.0, 0.8, 0.6, 0.7, 0.3, 0.1, 0.5, 0.45],
            4,
            2,
            vec![0.2, -0.1, 0.05, 0.0],
            sigma,
        )
    }

    /// `n` inputs drawn from the model, (n, dx).
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f64> {
        let (dx, dz) = (self.dx, self.dz);
        let mut rng = HostRng::new(seed ^ 0x9a7);
        let mut x = vec![0.0; n * dx];
        for r in 0..n {
            let z: Vec<f64> = (0..dz).map(|_| rng.normal()).collect();
            for o in 0..dx {
                x[r * dx + o] = self.b[o]
                    + (0..dz).map(|i| self.w[o * dz + i] * z[i]).sum::<f64>()
                    + self.sigma * rng.normal();
            }
        }
        x
    }

    /// Checks that `x` holds whole rows of dx finite values; returns the row count.
    pub fn rows(&self, x: &[f64]) -> Result<usize> {
        if x.is_empty() || !x.len().is_multiple_of(self.dx) {
            return Err(config_err(format!(
                "x holds {} values: it needs whole rows of {} (the rows of W)",
                x.len(),
                self.dx
            )));
        }
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            return Err(config_err(format!("x must be finite; one value is {v}")));
        }
        Ok(x.len() / self.dx)
    }

    /// The exact log p(x) of every row of `x`.
    pub fn log_px(&self, x: &[f64]) -> Result<Vec<f64>> {
        let n = self.rows(x)?;
        let (dx, dz) = (self.dx, self.dz);
        let mut c = vec![0.0; dx * dx];
        for a in 0..dx {
            for b in 0..dx {
                c[a * dx + b] = (0..dz)
                    .map(|i| self.w[a * dz + i] * self.w[b * dz + i])
                    .sum::<f64>()
                    + if a == b { self.sigma * self.sigma } else { 0.0 };
            }
        }
        let lc = cholesky(&c, dx)
            .ok_or_else(|| config_err("W Wᵀ + σ² I is not positive definite".into()))?;
        let log_det: f64 = (0..dx).map(|i| 2.0 * lc[i * dx + i].ln()).sum();
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        Ok((0..n)
            .map(|r| {
                let mut y: Vec<f64> = (0..dx).map(|o| x[r * dx + o] - self.b[o]).collect();
                forward_solve(&lc, dx, &mut y);
                -0.5 * (dx as f64 * ln2pi + log_det + y.iter().map(|v| v * v).sum::<f64>())
            })
            .collect())
    }

    /// The posterior precision Λ = WᵀW/σ² + I, (dz, dz).
    pub fn precision(&self) -> Vec<f64> {
        let (dx, dz) = (self.dx, self.dz);
        let s2 = self.sigma * self.sigma;
        let mut lam = vec![0.0; dz * dz];
        for i in 0..dz {
            for j in 0..dz {
                lam[i * dz + j] = (0..dx)
                    .map(|o| self.w[o * dz + i] * self.w[o * dz + j])
                    .sum::<f64>()
                    / s2
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        lam
    }

    /// ½(Σᵢ log Λᵢᵢ − log det Λ): how far below log p(x) the best mean-field ELBO stays.
    pub fn mean_field_gap(&self) -> f64 {
        let dz = self.dz;
        let lam = self.precision();
        // Λ = WᵀW/σ² + I is positive definite for every W.
        let ll = cholesky(&lam, dz).unwrap_or_else(|| vec![1.0; dz * dz]);
        let log_det: f64 = (0..dz).map(|i| 2.0 * ll[i * dz + i].ln()).sum();
        0.5 * ((0..dz).map(|i| lam[i * dz + i].ln()).sum::<f64>() - log_det)
    }

    /// The exact posterior of one input `x` (dx,): its mean (dz,) and covariance Λ⁻¹ (dz, dz).
    pub fn posterior(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (dx, dz) = (self.dx, self.dz);
        let s2 = self.sigma * self.sigma;
        let ll = cholesky(&self.precision(), dz).unwrap_or_else(|| vec![1.0; dz * dz]);
        let solve = |v: &[f64]| {
            let mut x = v.to_vec();
            cholesky_solve(&ll, dz, &mut x);
            x
        };
        let rhs: Vec<f64> = (0..dz)
            .map(|i| {
                (0..dx)
                    .map(|o| self.w[o * dz + i] * (x[o] - self.b[o]))
                    .sum::<f64>()
                    / s2
            })
            .collect();
        let mut cov = vec![0.0; dz * dz];
        for j in 0..dz {
            let e: Vec<f64> = (0..dz).map(|i| f64::from(u8::from(i == j))).collect();
            for (i, v) in solve(&e).into_iter().enumerate() {
                cov[i * dz + j] = v;
            }
        }
        (solve(&rhs), cov)
    }

    /// The VAE of this model with a `posterior` family: a linear encoder x → the posterior's
    /// parameters, a linear decoder z → x, a Gaussian likelihood with the fixed σ.
    pub fn config(&self, posterior: PosteriorKind) -> VaeConfig {
        let mut cfg = VaeConfig::classic(1, self.dx);
        cfg.enc_hidden = vec![];
        cfg.dec_hidden = vec![];
        cfg.latent = self.dz;
        cfg.likelihood = Likelihood::Gaussian {
            log_sigma: GaussianSigma::Fixed(self.sigma.ln() as f32),
        };
        cfg.posterior = posterior;
        cfg
    }

    /// Parameters of [`LinearGaussian::config`]'s model: the encoder initialised from `seed`,
    /// the decoder set to W and b.
    pub fn params(&self, cfg: &VaeConfig, seed: u64) -> Result<Vec<f32>> {
        let mut params = cfg.try_init_params(seed)?;
        let layout = cfg.layout();
        let spec = |name: &str| {
            layout
                .get(name)
                .cloned()
                .ok_or_else(|| config_err(format!("the model has no parameter {name}")))
        };
        let (dw, db) = (spec("decoder.fc1.weight")?, spec("decoder.fc1.bias")?);
        let (dx, dz) = (self.dx, self.dz);
        // A linear weight is stored (in, out): element (i, o) of the decoder is W[o][i].
        for i in 0..dz {
            for o in 0..dx {
                params[dw.offset + i * dx + o] = self.w[o * dz + i] as f32;
            }
        }
        for o in 0..dx {
            params[db.offset + o] = self.b[o] as f32;
        }
        Ok(params)
    }
}

/// The points of the `k`-standard-deviation ellipse of a 2-D Gaussian with `mean` and
/// covariance [[a, b], [b, d]].
pub fn ellipse(mean: (f64, f64), cov: [f64; 3], k: f64) -> Vec<(f64, f64)> {
    let [a, b, d] = cov;
    let l00 = a.max(0.0).sqrt();
    let l10 = if l00 > 0.0 { b / l00 } else { 0.0 };
    let l11 = (d - l10 * l10).max(0.0).sqrt();
    (0..=120)
        .map(|t| {
            let th = t as f64 / 120.0 * std::f64::consts::TAU;
            let (u, v) = (k * th.cos(), k * th.sin());
            (mean.0 + l00 * u, mean.1 + l10 * u + l11 * v)
        })
        .collect()
}

/// How [`fit_encoder`] trains.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// Adam steps, each over all inputs with one draw per input
    pub steps: usize,
    /// The first learning rate: it drops to a fifth at 60% of the steps and to a
    /// twenty-fifth at 80%.
    pub lr: f32,
    pub seed: u64,
    /// Train the importance-weighted bound with this many draws per input instead of the ELBO
    /// with its closed-form KL. A family without a closed-form KL (a flow) trains with 1
    /// draw when this is `None`: the ELBO with a single-draw KL.
    pub iwae_k: Option<usize>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            steps: 1500,
            lr: 0.03,
            seed: 0,
            iwae_k: None,
        }
    }
}

/// Builds the VAE of `model` with a `posterior` family and trains its encoder alone on the
/// inputs `x` (n, dx) to maximise the ELBO, the decoder frozen at W and b. Every step is one
/// prepared program (forward, backward, Adam on the encoder's parameters, the step counter)
/// and one submit; nothing is read back until the end.
pub fn fit_encoder(
    ctx: &GpuContext,
    model: &LinearGaussian,
    posterior: PosteriorKind,
    x: &[f64],
    opts: FitOptions,
) -> Result<Vae> {
    let n = model.rows(x)?;
    let cfg = model.config(posterior);
    let params = model.params(&cfg, opts.seed)?;
    let vae = Vae::new(ctx, &cfg, &params)?;
    let layout = &vae.layout;
    // The encoder's parameters, then the posterior family's own (an IAF's), come first in the
    // flat buffer: Adam updates that prefix only.
    let trained = |name: &str| name.starts_with("encoder.") || name.starts_with("posterior.");
    let enc_end = layout
        .tensors
        .iter()
        .filter(|t| trained(&t.name))
        .map(|t| t.offset + t.len())
        .max()
        .ok_or_else(|| config_err("the model has no encoder parameters".into()))?;
    if layout
        .tensors
        .iter()
        .any(|t| !trained(&t.name) && t.offset < enc_end)
    {
        return Err(config_err(
            "the encoder's parameters are not a prefix of the flat buffer".into(),
        ));
    }
    let iwae_k = opts.iwae_k.or((!posterior.closed_form_kl()).then_some(1));
    let iwae = iwae_k
        .map(|k| IwaeTrain::new(ctx, vae.posterior.clone(), n, k))
        .transpose()?;
    let act = vae.activations(ctx, n, iwae_k.unwrap_or(1))?;
    act.x
        .write(ctx, &x.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
    let g = vae.gradients(ctx, &act)?;
    let p_enc = Tensor::view(&vae.params.flat, "encoder params", 0, &[enc_end])?;
    let g_enc = Tensor::view(&g.params.flat, "encoder grads", 0, &[enc_end])?;
    let m = Tensor::<f32>::zeros(ctx, "encoder adam m", &[enc_end])?;
    let v = Tensor::<f32>::zeros(ctx, "encoder adam v", &[enc_end])?;
    let scratch = AdamScratch::new(ctx)?;
    let state = StepState::new(ctx, "step")?;
    state.set(ctx, 0, 0)?;
    let mut programs = Vec::new();
    for lr in [opts.lr, opts.lr / 5.0, opts.lr / 25.0] {
        let kl = KlWeight::beta(if iwae.is_some() { 0.0 } else { 1.0 });
        let mut p = vae.forward_program_with(
            ctx,
            &act,
            Some(&g),
            kl,
            opts.seed,
            RngStep::State(&state),
            Stream::Train,
        )?;
        let latent_terms = match &iwae {
            Some(t) => {
                p.extend(t.after_forward(ctx, &act, &g)?);
                t.latent_terms(ctx, &act, &g)?
            }
            None => Program::new(),
        };
        p.extend(vae.backward_program_with(ctx, &act, &g, latent_terms)?);
        let adam_cfg = AdamConfig {
            lr,
            ..AdamConfig::default()
        };
        p.extend(adam(
            ctx,
            "encoder adam",
            &p_enc,
            &g_enc,
            &m,
            &v,
            &state,
            &scratch,
            &adam_cfg,
        )?);
        p.push(state.advance(ctx)?);
        programs.push(p);
    }
    for t in 0..opts.steps {
        let phase = match t * 10 / opts.steps {
            0..=5 => 0,
            6..=7 => 1,
            _ => 2,
        };
        let mut enc = ctx.encoder("linear-Gaussian step");
        programs[phase].record(&mut enc, "step");
        let index = ctx.submit("a linear-Gaussian training step", enc)?;
        if t % 100 == 99 {
            ctx.wait_for(index)?;
        }
    }
    ctx.wait()?;
    Ok(vae)
}

/// Every input's bounds from `k` draws of q(z|x).
#[derive(Clone, Debug)]
pub struct Bounds {
    /// The ELBO's Monte Carlo estimate per input: the mean of the k log-weights
    pub elbo: Vec<f64>,
    /// The IWAE bound per input: log of the mean of the k weights
    pub iwae: Vec<f64>,
    /// Standard error of the mean over inputs of `elbo`
    pub elbo_se: f64,
    /// Standard error of the mean over inputs of `iwae` (delta method)
    pub iwae_se: f64,
    /// The draws, (k·n, dz), draw s of input b in row s·n + b
    pub z: Vec<f32>,
}

/// Estimates each input's ELBO and IWAE bound from `k` draws of the trained `vae`'s q(z|x), on
/// the GPU (the evaluation noise stream, `seed`).
pub fn bounds(ctx: &GpuContext, vae: &Vae, x: &[f64], k: usize, seed: u64) -> Result<Bounds> {
    let dx = vae.cfg.input_dim();
    if x.is_empty() || !x.len().is_multiple_of(dx) {
        return Err(config_err(format!(
            "x holds {} values: it needs whole rows of {dx}",
            x.len()
        )));
    }
    let n = x.len() / dx;
    let rows = n
        .checked_mul(k)
        .filter(|&r| k >= 1 && r <= MAX_EVAL_ROWS)
        .ok_or_else(|| {
            config_err(format!(
                "k {k} × {n} inputs: between 1 and {MAX_EVAL_ROWS} draws in all"
            ))
        })?;
    let ev = vae.activations(ctx, n, k)?;
    ev.x.write(ctx, &x.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
    let logw = Tensor::<f32>::zeros(ctx, "log w", &[rows])?;
    let mut p: Program =
        vae.forward_program(ctx, &ev, None, 1.0, seed, RngStep::Fixed(0), Stream::Eval)?;
    p.extend(vae.posterior.log_weights(
        ctx,
        ev.posterior_params(),
        &ev.nll,
        &ev.z,
        &ev.eps,
        &logw,
        k,
    )?);
    p.run(ctx)?;
    let lw = logw.read(ctx)?;
    let (mut elbo, mut iwae) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut var_elbo, mut var_iwae) = (0.0, 0.0);
    let kf = k as f64;
    for b in 0..n {
        let col: Vec<f64> = (0..k).map(|s| lw[s * n + b] as f64).collect();
        let mean = col.iter().sum::<f64>() / kf;
        let top = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = col.iter().map(|v| (v - top).exp()).collect();
        let w_mean = w.iter().sum::<f64>() / kf;
        if k > 1 {
            var_elbo += col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (kf - 1.0) / kf;
            let w_var = w.iter().map(|v| (v - w_mean).powi(2)).sum::<f64>() / (kf - 1.0);
            var_iwae += w_var / (kf * w_mean * w_mean);
        }
        elbo.push(mean);
        iwae.push(top + w_mean.ln());
    }
    let nf = n as f64;
    Ok(Bounds {
        elbo,
        iwae,
        elbo_se: var_elbo.sqrt() / nf,
        iwae_se: var_iwae.sqrt() / nf,
        z: ev.z.read(ctx)?,
    })
}
