//! Posteriors q(z | x): from the encoder's output they draw z with the in-shader counter RNG,
//! give the KL to the prior N(0, I) (closed form where one exists) and log-weights for the IWAE
//! bound, and backpropagate through the draw and the KL into the encoder's output.

use std::fmt::Debug;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::module::GradWrite;
use crate::ops::kl::{Capacity, KlRamp, iwae_log_weights, kl_capacity, kl_scheduled};
use crate::ops::reparam::{RngStep, Stream, reparam_backward, reparam_forward};

/// A family of approximate posteriors, parameterised per row by the encoder's output.
pub trait Posterior: Debug + Send + Sync {
    /// Its name in configurations and reports (`diagonal`).
    fn name(&self) -> &'static str;
    /// Latent dimensions D.
    fn latent(&self) -> usize;
    /// Encoder outputs per row that parameterise q.
    fn param_dim(&self) -> usize;
    /// The location of q (its mean) for each of `rows` rows of parameters: (rows, D).
    fn location(&self, params: &[f32], rows: usize) -> Vec<f32>;
    /// The per-dimension standard deviation of q for each row: (rows, D).
    fn scale(&self, params: &[f32], rows: usize) -> Vec<f32>;
    /// The parameters of one row for which q is the prior.
    fn prior_params(&self) -> Vec<f32>;

    /// `samples` draws z (K·B, D) per row, sample s of row b in row s·B + b, with the noise
    /// behind them in `eps`.
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        z: &Tensor<f32>,
        eps: &Tensor<f32>,
        samples: usize,
        seed: u64,
        step: RngStep<'_>,
        stream: Stream,
    ) -> Result<Program>;

    /// KL(q || p) per row (B,) and per row and dimension (B, D); with `grad`, writes
    /// β·s_t·w_b·∂KL_b/∂params into `grad.dparams` per `grad.write` (w = the row weights, s_t
    /// the warm-up factor of step t, 1 without one).
    #[allow(clippy::too_many_arguments)]
    fn kl(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        kl: &Tensor<f32>,
        kl_elem: &Tensor<f32>,
        grad: Option<KlGrad<'_>>,
        weights: Option<&Tensor<f32>>,
    ) -> Result<Program>;

    /// d params (per `write`) of the loss through z, from dz.
    #[allow(clippy::too_many_arguments)]
    fn sample_backward(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        dz: &Tensor<f32>,
        eps: &Tensor<f32>,
        dparams: &Tensor<f32>,
        samples: usize,
        write: GradWrite,
    ) -> Result<Program>;

    /// IWAE log-weights log p(x|z) + log p(z) − log q(z|x), (K, B), from the reconstruction
    /// NLL of each draw.
    #[allow(clippy::too_many_arguments)]
    fn log_weights(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        nll: &Tensor<f32>,
        z: &Tensor<f32>,
        eps: &Tensor<f32>,
        logw: &Tensor<f32>,
        samples: usize,
    ) -> Result<Program>;

    /// CPU twin of [`Posterior::sample`] for given noise: z (K·B, D).
    fn cpu_sample(&self, params: &[f64], eps: &[f64], rows: usize, samples: usize) -> Vec<f64>;
    /// CPU twin of the KL per row.
    fn cpu_kl(&self, params: &[f64], rows: usize) -> Vec<f64>;
}

/// Where and how a posterior's KL writes its gradient.
#[derive(Clone, Copy)]
pub struct KlGrad<'a> {
    /// the gradient at the posterior's parameters
    pub dparams: &'a Tensor<f32>,
    /// the KL's weight in the loss
    pub beta: f32,
    /// a schedule of that weight over the steps (warm-up, cyclical annealing)
    pub ramp: Option<KlRamp<'a>>,
    /// instead of β·KL, the controlled-capacity term γ·|KL − C(t)| of the batch's mean KL,
    /// with its per-row value written into the tensor (B,)
    pub capacity: Option<(Capacity<'a>, &'a Tensor<f32>)>,
    pub write: GradWrite,
}

/// The mean-field Gaussian q(z|x) = N(μ, diag σ²), parameterised as [μ | log σ²] (B, 2D):
/// z = μ + σ ε, closed-form KL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diagonal {
    pub latent: usize,
}

impl Posterior for Diagonal {
    fn name(&self) -> &'static str {
        "diagonal"
    }
    fn latent(&self) -> usize {
        self.latent
    }
    fn param_dim(&self) -> usize {
        2 * self.latent
    }
    fn location(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let d = self.latent;
        (0..rows)
            .flat_map(|r| params[r * 2 * d..r * 2 * d + d].iter().copied())
            .collect()
    }
    fn scale(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let d = self.latent;
        (0..rows)
            .flat_map(|r| {
                params[r * 2 * d + d..(r + 1) * 2 * d]
                    .iter()
                    .map(|&lv| (0.5 * lv).exp())
            })
            .collect()
    }
    fn prior_params(&self) -> Vec<f32> {
        vec![0.0; 2 * self.latent]
    }

    fn sample(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        z: &Tensor<f32>,
        eps: &Tensor<f32>,
        samples: usize,
        seed: u64,
        step: RngStep<'_>,
        stream: Stream,
    ) -> Result<Program> {
        let mut p = Program::new();
        p.push(reparam_forward(
            ctx, "reparam", params, z, eps, samples, seed, step, stream,
        )?);
        Ok(p)
    }

    fn kl(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        kl: &Tensor<f32>,
        kl_elem: &Tensor<f32>,
        grad: Option<KlGrad<'_>>,
        weights: Option<&Tensor<f32>>,
    ) -> Result<Program> {
        if grad.is_some_and(|g| g.write == GradWrite::Accumulate) {
            return Err(Error::Config(
                "diagonal posterior: the KL gradient is stored, not accumulated".into(),
            ));
        }
        let mut p = Program::new();
        if let Some((g, (capacity, penalty))) = grad.and_then(|g| g.capacity.map(|c| (g, c))) {
            let weights = weights.ok_or_else(|| {
                Error::Config("diagonal posterior: the capacity term needs row weights".into())
            })?;
            p.push(kl_scheduled(
                ctx, "kl", params, kl, kl_elem, None, None, None,
            )?);
            p.push(kl_capacity(
                ctx,
                "kl capacity",
                params,
                kl,
                g.dparams,
                penalty,
                weights,
                capacity,
            )?);
            return Ok(p);
        }
        p.push(kl_scheduled(
            ctx,
            "kl",
            params,
            kl,
            kl_elem,
            grad.map(|g| (g.dparams, g.beta)),
            weights,
            grad.and_then(|g| g.ramp),
        )?);
        Ok(p)
    }

    fn sample_backward(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        dz: &Tensor<f32>,
        eps: &Tensor<f32>,
        dparams: &Tensor<f32>,
        samples: usize,
        write: GradWrite,
    ) -> Result<Program> {
        let mut p = Program::new();
        p.push(reparam_backward(
            ctx,
            "reparam backward",
            params,
            dz,
            eps,
            dparams,
            samples,
            write == GradWrite::Accumulate,
        )?);
        Ok(p)
    }

    fn log_weights(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        nll: &Tensor<f32>,
        z: &Tensor<f32>,
        eps: &Tensor<f32>,
        logw: &Tensor<f32>,
        samples: usize,
    ) -> Result<Program> {
        let mut p = Program::new();
        p.push(iwae_log_weights(
            ctx, "log w", params, nll, z, eps, logw, samples,
        )?);
        Ok(p)
    }

    fn cpu_sample(&self, params: &[f64], eps: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        let d = self.latent;
        let mut z = vec![0.0; rows * samples * d];
        for b in 0..rows {
            for j in 0..d {
                let mu = params[b * 2 * d + j];
                let sigma = (0.5 * params[b * 2 * d + d + j]).exp();
                for s in 0..samples {
                    let r = s * rows + b;
                    z[r * d + j] = mu + sigma * eps[r * d + j];
                }
            }
        }
        z
    }

    fn cpu_kl(&self, params: &[f64], rows: usize) -> Vec<f64> {
        let d = self.latent;
        (0..rows)
            .map(|b| {
                (0..d)
                    .map(|j| {
                        let mu = params[b * 2 * d + j];
                        let lv = params[b * 2 * d + d + j];
                        0.5 * (mu * mu + lv.exp() - 1.0 - lv)
                    })
                    .sum()
            })
            .collect()
    }
}
