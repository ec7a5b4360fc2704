//! Normalizing-flow posteriors on a diagonal Gaussian base: K planar flows
//! (`shaders/posterior_planar.wgsl`, [`crate::ops::posterior_planar`]), whose parameters all
//! come from the encoder, and an inverse autoregressive flow ([`Iaf`]), whose networks are
//! parameters of the family itself.
//!
//! The flow has no closed-form KL to the prior. Its [`Posterior::kl`] reports a single-draw
//! Monte Carlo estimate at a fixed noise and stores a zero gradient; a training gradient comes
//! through the draw ([`Posterior::sample_backward`]) and the fixed-noise log density
//! ([`Posterior::log_q_backward`]), which is how the importance-weighted objective trains any
//! posterior. So a planar flow trains with `--objective iwae`, or with `--objective elbo`,
//! which for a flow is that objective's K = 1 (the ELBO's single-draw estimate, β = 1); the
//! objectives that need the KL in closed form (capacity, tc-vae, factor-vae) refuse it.

use crate::cpu::posterior_iaf as iaf_twin;
use crate::cpu::posterior_planar as twin;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::ParamLayout;
use crate::model::module::{GradWrite, Init};
use crate::model::posterior::{KlGrad, OwnParam, Posterior};
use crate::ops::posterior_iaf::{self as iaf, IafSizes};
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
    fn prior_params(&self) -> Option<Vec<f32>> {
        Some(vec![0.0; self.p()])
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
        _own: Option<&Tensor<f32>>,
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
        _own: Option<&Tensor<f32>>,
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

/// Steps of an inverse autoregressive flow when `--flows` is not given.
pub const DEFAULT_IAF_FLOWS: usize = 4;
/// Hidden units of each step's MADE when `--iaf-hidden` is not given.
pub const DEFAULT_IAF_HIDDEN: usize = 64;
/// The initial bias of every step's gate s: σ(2) ≈ 0.88, so that each step starts close to
/// the identity.
pub const IAF_GATE_BIAS: f32 = 2.0;

/// q(z | x) as an inverse autoregressive flow (`shaders/posterior_iaf.wgsl`,
/// [`crate::ops::posterior_iaf`]): z_0 = μ + σ ε, then K steps
/// z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t with σ_t = sigmoid(s_t) and [m_t, s_t] the output of a
/// MADE (one hidden layer of H ELU units, masked so that output i sees only the inputs before
/// it in the step's order, the order reversed every other step) of z_{t−1} and the row's
/// context h. The encoder outputs `[μ (D) | log σ² (D) | h (H)]`; the MADEs' weights are the
/// family's own parameters ([`Posterior::own_params`]), shared by every row, named
/// `posterior.<t>.<w1|c1|b1|wm|bm|ws|bs>`. log q(z_K|x) = log N(z_0; μ, σ²) − Σ_t Σ_i log σ_t,i.
///
/// Like a planar flow it has no closed-form KL: it trains through the ELBO's single-draw
/// estimate (`--objective elbo`) or the IWAE bound, and [`Posterior::kl`] reports a single-draw
/// estimate at fixed noise.
#[derive(Debug)]
pub struct Iaf {
    pub sizes: IafSizes,
    /// Offset of the first own tensor in the flat buffer, once bound.
    start: Option<usize>,
    /// The own parameters' region of the model's flat parameter buffer.
    gpu: Option<Tensor<f32>>,
    /// Their values (the region, padding included), for the `cpu_` methods.
    host: Option<Vec<f64>>,
}

impl Iaf {
    /// An unbound flow: [`Posterior::bind`] gives it its weights.
    pub fn new(sizes: IafSizes) -> Self {
        Iaf {
            sizes,
            start: None,
            gpu: None,
            host: None,
        }
    }

    fn p(&self) -> usize {
        self.sizes.param_dim().unwrap_or(usize::MAX)
    }

    fn region_len(&self) -> Result<usize> {
        self.sizes
            .own_offsets()
            .map(|(_, len)| len)
            .ok_or_else(|| Error::Config("the IAF's parameter sizes overflow".into()))
    }

    fn weights(&self) -> Result<&Tensor<f32>> {
        self.gpu.as_ref().ok_or_else(|| {
            Error::Config("the IAF posterior's weights are not bound to a model".into())
        })
    }

    /// The own parameters' gradient: their region of the flat gradient buffer `flat`.
    fn own_grad(&self, flat: Option<&Tensor<f32>>) -> Result<Tensor<f32>> {
        let (Some(flat), Some(start)) = (flat, self.start) else {
            return Err(Error::Config(
                "the IAF posterior's backward needs the gradient buffer of its own parameters"
                    .into(),
            ));
        };
        Tensor::view(flat, "d posterior iaf", start, &[self.region_len()?])
    }

    fn host_weights(&self) -> &[f64] {
        self.host.as_deref().unwrap_or(&[])
    }

    fn scratch(&self, ctx: &GpuContext, rows: usize, samples: usize) -> Result<Tensor<f32>> {
        let len = self
            .sizes
            .scratch_len(rows, samples)
            .ok_or_else(|| Error::Config("the IAF backward's scratch size overflows".into()))?;
        Tensor::zeros(ctx, "iaf backward scratch", &[len.max(1)])
    }

    fn rows_f64(&self, params: &[f32], rows: usize) -> Vec<f64> {
        params[..rows * self.p()]
            .iter()
            .map(|&v| v as f64)
            .collect()
    }
}

impl Posterior for Iaf {
    fn name(&self) -> &'static str {
        "iaf"
    }
    fn latent(&self) -> usize {
        self.sizes.latent
    }
    fn param_dim(&self) -> usize {
        self.p()
    }
    /// The flow applied to the base's mean (ε = 0); the base's mean μ while unbound.
    fn location(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let (d, p) = (self.sizes.latent, self.p());
        match &self.host {
            Some(w) => {
                let q = self.rows_f64(params, rows);
                let eps = vec![0.0; rows * d];
                iaf_twin::iaf_forward(&q, w, &eps, rows, self.sizes, 1)
                    .0
                    .into_iter()
                    .map(|v| v as f32)
                    .collect()
            }
            None => (0..rows)
                .flat_map(|r| params[r * p..r * p + d].iter().copied())
                .collect(),
        }
    }
    /// The base Gaussian's σ.
    fn scale(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let (d, p) = (self.sizes.latent, self.p());
        (0..rows)
            .flat_map(|r| {
                params[r * p + d..r * p + 2 * d]
                    .iter()
                    .map(|&lv| (0.5 * lv).exp())
            })
            .collect()
    }
    /// No row's parameters make the flow the prior: its steps are shared.
    fn prior_params(&self) -> Option<Vec<f32>> {
        None
    }

    fn own_params(&self) -> Vec<OwnParam> {
        let (d, h) = (self.sizes.latent as f32, self.sizes.hidden as f32);
        self.sizes
            .own_tensors()
            .into_iter()
            .map(|(name, shape)| {
                let init = match name.rsplit('.').next().unwrap_or("") {
                    "w1" => Init::Uniform(1.0 / d.sqrt()),
                    "c1" | "wm" => Init::Uniform(1.0 / h.sqrt()),
                    "ws" => Init::Uniform(0.1 / h.sqrt()),
                    "bs" => Init::Constant(IAF_GATE_BIAS),
                    _ => Init::Constant(0.0),
                };
                OwnParam { name, shape, init }
            })
            .collect()
    }

    fn init_own(&self, layout: &ParamLayout, flat: &mut [f32]) {
        let first = layout.get(&format!("posterior.{}", self.sizes.own_tensors()[0].0));
        if let (Some(first), Ok(len)) = (first, self.region_len())
            && let Some(region) = flat.get_mut(first.offset..first.offset + len)
        {
            iaf_twin::init_mask(self.sizes, region);
        }
    }

    fn bind(
        &mut self,
        layout: &ParamLayout,
        gpu: Option<&Tensor<f32>>,
        host: Option<&[f64]>,
    ) -> Result<()> {
        let (offsets, len) = self
            .sizes
            .own_offsets()
            .ok_or_else(|| Error::Config("the IAF's parameter sizes overflow".into()))?;
        let tensors = self.sizes.own_tensors();
        let find = |name: &str| {
            layout
                .get(&format!("posterior.{name}"))
                .map(|s| s.offset)
                .ok_or_else(|| {
                    Error::Config(format!("the model has no parameter posterior.{name}"))
                })
        };
        let start = find(&tensors[0].0)?;
        for (i, (name, _)) in tensors.iter().enumerate() {
            let want = start + offsets[i / 7][i % 7];
            if find(name)? != want {
                return Err(Error::Config(format!(
                    "posterior.{name} is not where the IAF kernels read it"
                )));
            }
        }
        if let Some(flat) = gpu {
            self.gpu = Some(Tensor::view(flat, "posterior iaf", start, &[len])?);
        }
        if let Some(values) = host {
            let region = values.get(start..start + len).ok_or_else(|| {
                Error::Config(format!(
                    "{} parameter values: the IAF's weights end at {}",
                    values.len(),
                    start + len
                ))
            })?;
            self.host = Some(region.to_vec());
        }
        self.start = Some(start);
        Ok(())
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
        p.push(iaf::iaf_forward(
            ctx,
            "iaf sample",
            params,
            self.weights()?,
            self.sizes,
            eps,
            z,
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
        let own = match grad {
            Some(g) => {
                if g.beta != 0.0 || g.capacity.is_some() {
                    return Err(Error::Config(
                        "--posterior iaf has no closed-form KL to weigh: train it with \
                         --objective elbo (its single-draw estimate) or --objective iwae"
                            .into(),
                    ));
                }
                if g.write == GradWrite::Accumulate {
                    return Err(Error::Config(
                        "IAF posterior: the KL gradient is stored, not accumulated".into(),
                    ));
                }
                Some((g.dparams, self.own_grad(g.own)?))
            }
            None => None,
        };
        iaf::iaf_kl(
            ctx,
            "iaf kl",
            params,
            self.weights()?,
            self.sizes,
            kl,
            kl_elem,
            own.as_ref().map(|(dq, dw)| (*dq, dw)),
        )
    }

    fn sample_backward(
        &self,
        ctx: &GpuContext,
        params: &Tensor<f32>,
        dz: &Tensor<f32>,
        eps: &Tensor<f32>,
        dparams: &Tensor<f32>,
        own: Option<&Tensor<f32>>,
        samples: usize,
        write: GradWrite,
    ) -> Result<Program> {
        let rows = params.dims2().0;
        iaf::iaf_backward(
            ctx,
            "iaf sample backward",
            params,
            self.weights()?,
            self.sizes,
            eps,
            Some(dz),
            None,
            dparams,
            &self.own_grad(own)?,
            &self.scratch(ctx, rows, samples)?,
            samples,
            write == GradWrite::Accumulate,
        )
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
        p.push(iaf::iaf_log_weights(
            ctx,
            "iaf log weights",
            params,
            self.weights()?,
            self.sizes,
            nll,
            z,
            eps,
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
        own: Option<&Tensor<f32>>,
        samples: usize,
    ) -> Result<Program> {
        // log q(z_K(ε)) = log N(ε; 0, I) − Σ_i log σ_i − Σ_t Σ_i log σ_t,i at fixed ε, weighted
        // by coef (the path through z is sample_backward's).
        let rows = params.dims2().0;
        iaf::iaf_backward(
            ctx,
            "iaf log q backward",
            params,
            self.weights()?,
            self.sizes,
            eps,
            None,
            Some(LogDetWeight {
                weights: coef,
                scale: -1.0,
                volume: true,
            }),
            dparams,
            &self.own_grad(own)?,
            &self.scratch(ctx, rows, samples)?,
            samples,
            true,
        )
    }

    fn cpu_sample(&self, params: &[f64], eps: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        iaf_twin::iaf_forward(params, self.host_weights(), eps, rows, self.sizes, samples).0
    }

    /// The single-draw estimate at the kernel's fixed noise.
    fn cpu_kl(&self, params: &[f64], rows: usize) -> Vec<f64> {
        let (seed, step, stream) = KL_NOISE;
        let eps = crate::cpu::reparam_eps(rows * self.sizes.latent, seed, step, stream as u32);
        iaf_twin::iaf_kl(params, self.host_weights(), &eps, rows, self.sizes).0
    }

    fn cpu_log_density(&self, params: &[f64], z: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        iaf_twin::iaf_log_density_of_z(params, self.host_weights(), z, rows, self.sizes, samples)
    }
}
