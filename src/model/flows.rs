//! Normalizing-flow posteriors: K planar flows on a diagonal Gaussian base
//! (`shaders/posterior_planar.wgsl`, [`crate::ops::posterior_planar`]).
//!
//! The flow has no closed-form KL to the prior. Its [`Posterior::kl`] reports a single-draw
//! Monte Carlo estimate at a fixed noise and stores a zero gradient; a training gradient comes
//! through the draw ([`Posterior::sample_backward`]) and the fixed-noise log density
//! ([`Posterior::log_q_backward`]), which is how the importance-weighted objective trains any
//! posterior. So a planar flow trains with `--objective iwae`, or with `--objective elbo`,
//! which for a flow is that objective's K = 1 (the ELBO's single-draw estimate, β = 1); the
//! objectives that need the KL in closed form (capacity, tc-vae, factor-vae) refuse it.

use crate::cpu::posterior_planar as twin;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::module::GradWrite;
use crate::model::posterior::{KlGrad, Posterior};
use crate::ops::posterior_planar::{
    self as planar, KL_NOISE, LogDetWeight, Noise, planar_backward, planar_forward, planar_kl,
    planar_log_weights,
};
use crate::ops::reparam::{RngStep, Stream};

/// Flows of a planar-flow posterior when `--flows` is not given.
pub const DEFAULT_FLOWS: usize = 8;

/// q(z | x): z_0 = μ + σ ε, then K planar flows z_k = z_{k−1} + û_k tanh(w_kᵀ z_{k−1} + b_k),
/// parameterised per row as `[μ (D) | log σ² (D) | (u_k (D), w_k (D), b_k) for k = 1..K]`
/// (2D + K(2D + 1) values; with w_k = 0, b_k = 0 every flow is the identity and q is the
/// diagonal posterior of the first 2D values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanarFlow {
    pub latent: usize,
    pub flows: usize,
}

impl PlanarFlow {
    fn p(&self) -> usize {
        planar::param_dim(self.latent, self.flows).unwrap_or(usize::MAX)
    }

    fn rows_f64(&self, params: &[f32], rows: usize) -> Vec<f64> {
        params[..rows * self.p()]
            .iter()
            .map(|&v| v as f64)
            .collect()
    }
}

impl Posterior for PlanarFlow {
    fn name(&self) -> &'static str {
        "planar"
    }
    fn latent(&self) -> usize {
        self.latent
    }
    fn param_dim(&self) -> usize {
        self.p()
    }
    /// The flow applied to the base's mean, f(μ) (ε = 0): q's mean has no closed form.
    fn location(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let q = self.rows_f64(params, rows);
        let eps = vec![0.0; rows * self.latent];
        twin::planar_forward(&q, &eps, rows, self.latent, self.flows, 1)
            .0
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }
    /// The base Gaussian's σ.
    fn scale(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let (d, p) = (self.latent, self.p());
        (0..rows)
            .flat_map(|r| {
                params[r * p + d..r * p + 2 * d]
                    .iter()
                    .map(|&lv| (0.5 * lv).exp())
            })
            .collect()
    }
    fn prior_params(&self) -> Vec<f32> {
        vec![0.0; self.p()]
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
        p.push(planar_forward(
            ctx,
            "planar sample",
            params,
            self.latent,
            self.flows,
            eps,
            z,
            None,
            samples,
            Noise::Draw { seed, step, stream },
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
        _weights: Option<&Tensor<f32>>,
    ) -> Result<Program> {
        if let Some(g) = grad {
            if g.beta != 0.0 || g.capacity.is_some() {
                return Err(Error::Config(
                    "--posterior planar has no closed-form KL to weigh: train it with \
                     --objective elbo (its single-draw estimate) or --objective iwae"
                        .into(),
                ));
            }
            if g.write == GradWrite::Accumulate {
                return Err(Error::Config(
                    "planar-flow posterior: the KL gradient is stored, not accumulated".into(),
                ));
            }
        }
        let mut p = Program::new();
        p.push(planar_kl(
            ctx,
            "planar kl",
            params,
            self.latent,
            self.flows,
            kl,
            kl_elem,
            grad.map(|g| g.dparams),
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
        p.push(planar_backward(
            ctx,
            "planar sample backward",
            params,
            self.latent,
            self.flows,
            eps,
            Some(dz),
            None,
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
        p.push(planar_log_weights(
            ctx,
            "planar log weights",
            params,
            self.latent,
            self.flows,
            nll,
            z,
            eps,
            None,
            logw,
            samples,
        )?);
        Ok(p)
    }

    fn log_q_backward(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        eps: &Tensor<f32>,
        coef: &Tensor<f32>,
        dparams: &Tensor<f32>,
        samples: usize,
    ) -> Result<Program> {
        // log q(z_K(ε)) = log N(ε; 0, I) − Σ_i log σ_i − Σ_k log|det_k|: the log-determinants
        // and the base's volume weighted by −coef, at fixed ε (the path through z is
        // sample_backward's).
        let mut p = Program::new();
        p.push(planar_backward(
            ctx,
            "planar log q backward",
            params,
            self.latent,
            self.flows,
            eps,
            None,
            Some(LogDetWeight {
                weights: coef,
                scale: -1.0,
                volume: true,
            }),
            dparams,
            samples,
            true,
        )?);
        Ok(p)
    }

    fn cpu_sample(&self, params: &[f64], eps: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        twin::planar_forward(params, eps, rows, self.latent, self.flows, samples).0
    }

    /// The single-draw estimate at the kernel's fixed noise (that ε from the f64 Philox and
    /// Box–Muller, equal to the kernel's to float accuracy).
    fn cpu_kl(&self, params: &[f64], rows: usize) -> Vec<f64> {
        let (seed, step, stream) = KL_NOISE;
        let eps = crate::cpu::reparam_eps(rows * self.latent, seed, step, stream as u32);
        twin::planar_kl(params, &eps, rows, self.latent, self.flows).0
    }

    fn cpu_log_density(&self, params: &[f64], z: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        twin::planar_log_density_of_z(params, z, rows, self.latent, self.flows, samples)
    }
}
