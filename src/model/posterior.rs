//! Posteriors q(z | x): from the encoder's output they draw z with the in-shader counter RNG,
//! give the KL to the prior N(0, I) (closed form where one exists) and log-weights for the IWAE
//! bound, and backpropagate through the draw and the KL into the encoder's output.

use std::fmt::Debug;

use crate::cpu::posterior_full as twin;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::ParamLayout;
use crate::model::module::GradWrite;
use crate::ops::iwae_train::iwae_logdet_backward;
use crate::ops::kl::{Capacity, KlRamp, iwae_log_weights, kl_capacity, kl_scheduled};
use crate::ops::posterior_full::{
    self as full, full_kl, full_kl_capacity, full_log_weights, full_sample, full_sample_backward,
};
use crate::ops::reparam::{RngStep, Stream, reparam_backward, reparam_forward};

/// Which family of posteriors a model uses (`VaeConfig::posterior`, `--posterior`); written
/// in lowercase in configurations and checkpoints. Older checkpoints, which do not name one,
/// are [`PosteriorKind::Diagonal`]. Flows are variants carrying their sizes
/// ([`PosteriorKind::Planar`]); inverse autoregressive flows would be another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosteriorKind {
    /// N(μ, diag σ²), [`Diagonal`].
    #[default]
    Diagonal,
    /// N(μ, L Lᵀ) with a lower-triangular L, [`FullCovariance`].
    Full,
    /// `flows` planar flows on a diagonal base, [`crate::model::PlanarFlow`]; written
    /// `{"planar": {"flows": K}}` (K = 8 when absent).
    Planar {
        #[serde(default = "default_flows")]
        flows: usize,
    },
    /// `flows` steps of an inverse autoregressive flow on a diagonal base, each a MADE with
    /// `hidden` units, [`crate::model::Iaf`]; written `{"iaf": {"flows": K, "hidden": H}}`.
    Iaf {
        #[serde(default = "default_iaf_flows")]
        flows: usize,
        #[serde(default = "default_iaf_hidden")]
        hidden: usize,
    },
}

fn default_iaf_flows() -> usize {
    crate::model::flows::DEFAULT_IAF_FLOWS
}

fn default_iaf_hidden() -> usize {
    crate::model::flows::DEFAULT_IAF_HIDDEN
}

fn default_flows() -> usize {
    crate::model::flows::DEFAULT_FLOWS
}

impl PosteriorKind {
    /// The flag's and the configuration's spelling.
    pub fn name(self) -> &'static str {
        match self {
            PosteriorKind::Diagonal => "diagonal",
            PosteriorKind::Full => "full",
            PosteriorKind::Planar { .. } => "planar",
            PosteriorKind::Iaf { .. } => "iaf",
        }
    }

    /// Parses `diagonal`, `full` or `planar` (with the default number of flows); the error
    /// names the value and what is accepted.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "diagonal" => Ok(PosteriorKind::Diagonal),
            "full" => Ok(PosteriorKind::Full),
            "planar" => Ok(PosteriorKind::Planar {
                flows: default_flows(),
            }),
            "iaf" => Ok(PosteriorKind::Iaf {
                flows: default_iaf_flows(),
                hidden: default_iaf_hidden(),
            }),
            other => Err(format!(
                "posterior `{other}`: use diagonal or full (Gaussians), planar or iaf (flows)"
            )),
        }
    }

    /// Whether the family's KL to the prior has a closed form (a flow's has not: it trains
    /// through the single-draw estimate of the ELBO, or the IWAE bound).
    pub fn closed_form_kl(self) -> bool {
        !matches!(
            self,
            PosteriorKind::Planar { .. } | PosteriorKind::Iaf { .. }
        )
    }

    /// Encoder outputs per row for `latent` dimensions, or `None` when that overflows.
    pub fn param_dim(self, latent: usize) -> Option<usize> {
        match self {
            PosteriorKind::Diagonal => latent.checked_mul(2),
            PosteriorKind::Full => full::param_dim(latent),
            PosteriorKind::Planar { flows } => {
                crate::ops::posterior_planar::param_dim(latent, flows)
            }
            PosteriorKind::Iaf { flows, hidden } => crate::ops::posterior_iaf::IafSizes {
                latent,
                flows,
                hidden,
            }
            .param_dim(),
        }
    }

    /// Checks that the family takes `latent` dimensions.
    pub fn check_latent(self, latent: usize) -> Result<()> {
        match self {
            PosteriorKind::Diagonal => Ok(()),
            PosteriorKind::Full => full::check_latent(latent),
            PosteriorKind::Planar { flows } => {
                crate::ops::posterior_planar::check_sizes(latent, flows)
            }
            PosteriorKind::Iaf { flows, hidden } => crate::ops::posterior_iaf::IafSizes {
                latent,
                flows,
                hidden,
            }
            .check(),
        }
    }

    /// The parameters of the family itself for `latent` dimensions, shared by every row (an
    /// inverse autoregressive flow's networks), as [`Posterior::own_params`] declares them.
    pub fn own_params(self, latent: usize) -> Vec<OwnParam> {
        match self {
            PosteriorKind::Iaf { .. } => self.build(latent).own_params(),
            _ => Vec::new(),
        }
    }

    /// The family for `latent` dimensions.
    pub fn build(self, latent: usize) -> Box<dyn Posterior> {
        match self {
            PosteriorKind::Diagonal => Box::new(Diagonal { latent }),
            PosteriorKind::Full => Box::new(FullCovariance { latent }),
            PosteriorKind::Planar { flows } => Box::new(crate::model::PlanarFlow { latent, flows }),
            PosteriorKind::Iaf { flows, hidden } => Box::new(crate::model::Iaf::new(
                crate::ops::posterior_iaf::IafSizes {
                    latent,
                    flows,
                    hidden,
                },
            )),
        }
    }
}

impl std::str::FromStr for PosteriorKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        PosteriorKind::parse(s)
    }
}

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
    /// The parameters of one row for which q is the prior, or `None` when no row's are (a
    /// flow with parameters of its own): draw from the prior N(0, I) directly.
    fn prior_params(&self) -> Option<Vec<f32>>;

    /// Parameters of the family itself, shared by every row (an inverse autoregressive flow's
    /// autoregressive networks): none for a family parameterised by the encoder alone. They
    /// live in the model's flat parameter buffer after the encoder's, named `posterior.<name>`,
    /// and train with the rest.
    fn own_params(&self) -> Vec<OwnParam> {
        Vec::new()
    }

    /// Finishes the initialisation of the own parameters in `flat` (laid out as `layout`)
    /// after each was filled from its [`OwnParam::init`]: an autoregressive flow zeroes the
    /// weights its masks cut.
    fn init_own(&self, _layout: &ParamLayout, _flat: &mut [f32]) {}

    /// Gives a family with [`Posterior::own_params`] their place in `layout` and their values:
    /// `gpu` the model's flat parameter buffer (read by its programs), `host` the flat values
    /// (read by its `cpu_` methods). A family without own parameters has nothing to bind.
    fn bind(
        &mut self,
        _layout: &ParamLayout,
        _gpu: Option<&Tensor<f32>>,
        _host: Option<&[f64]>,
    ) -> Result<()> {
        Ok(())
    }

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

    /// d params (per `write`) of the loss through z, from dz; a family with parameters of its
    /// own writes theirs, per `write` too, into their place in `own` (the flat gradient
    /// buffer).
    #[allow(clippy::too_many_arguments)]
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

    /// Accumulates into `dparams` (B, param_dim) the gradient, at fixed noise ε, of each
    /// draw's own log density log q(z(ε, params) | params), weighted per draw by `coef`
    /// (K·B,), the loss's derivative with respect to that log density (the IWAE objective's
    /// w_b·ω_sb). For a Gaussian z = μ + L ε this is the log-determinant's alone, −Σ_i log L_ii;
    /// the draw's path through z is [`Posterior::sample_backward`]'s. A family without it
    /// refuses the IWAE objective with an error naming itself. A family with parameters of its
    /// own accumulates theirs into their place in `own` (the flat gradient buffer).
    #[allow(clippy::too_many_arguments)]
    fn log_q_backward(
        &self,
        _ctx: &GpuContext,
        _params: &Tensor<f32>,
        _eps: &Tensor<f32>,
        _coef: &Tensor<f32>,
        _dparams: &Tensor<f32>,
        _own: Option<&Tensor<f32>>,
        _samples: usize,
    ) -> Result<Program> {
        Err(Error::Config(format!(
            "--objective iwae: the {} posterior has no log-density gradient",
            self.name()
        )))
    }

    /// CPU twin of [`Posterior::sample`] for given noise: z (K·B, D).
    fn cpu_sample(&self, params: &[f64], eps: &[f64], rows: usize, samples: usize) -> Vec<f64>;
    /// CPU twin of the KL per row.
    fn cpu_kl(&self, params: &[f64], rows: usize) -> Vec<f64>;
    /// log q(z | x) (K·B,) of the draws z (K·B, D) in f64, written out from z alone (log 2π
    /// terms included).
    fn cpu_log_density(&self, params: &[f64], z: &[f64], rows: usize, samples: usize) -> Vec<f64>;
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
    /// the flat gradient buffer, where a family with parameters of its own writes the KL's
    /// gradient of those (per `write`)
    pub own: Option<&'a Tensor<f32>>,
}

/// A parameter tensor of a posterior family itself ([`Posterior::own_params`]): its name
/// under `posterior.` in the layout and checkpoints, its shape (PyTorch's `(out, in)` for a
/// weight) and its initialiser.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnParam {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: crate::model::module::Init,
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
    fn prior_params(&self) -> Option<Vec<f32>> {
        Some(vec![0.0; 2 * self.latent])
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
        _own: Option<&Tensor<f32>>,
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

    fn log_q_backward(
        &self,
        ctx: &GpuContext,
        _params: &Tensor<f32>,
        _eps: &Tensor<f32>,
        coef: &Tensor<f32>,
        dparams: &Tensor<f32>,
        _own: Option<&Tensor<f32>>,
        samples: usize,
    ) -> Result<Program> {
        // log q(μ + σ ε) = log N(ε; 0, I) − Σ_i ½ log σ²_i.
        let mut p = Program::new();
        p.push(iwae_logdet_backward(
            ctx,
            "log q backward",
            coef,
            dparams,
            self.latent,
            self.latent,
            samples,
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

    fn cpu_log_density(&self, params: &[f64], z: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        let d = self.latent;
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        (0..samples * rows)
            .map(|r| {
                let b = r % rows;
                (0..d)
                    .map(|j| {
                        let mu = params[b * 2 * d + j];
                        let lv = params[b * 2 * d + d + j];
                        let u = (z[r * d + j] - mu) * (-0.5 * lv).exp();
                        -half_log_2pi - 0.5 * lv - 0.5 * u * u
                    })
                    .sum()
            })
            .collect()
    }
}

/// The full-covariance Gaussian q(z|x) = N(μ, L Lᵀ), L lower-triangular with a positive
/// diagonal. Per row the encoder outputs `[μ (D) | v (D) | the D(D−1)/2 strictly lower entries
/// of L, row-major]` (P = 2D + D(D−1)/2) with L_ii = exp(v_i / 2), i.e. v_i = log L_ii²: with zero
/// lower entries the first 2D values are exactly [`Diagonal`]'s `[μ | log σ²]` and every kernel
/// gives what the diagonal one gives. z = μ + L ε with the same ε as the diagonal draw; the KL to
/// N(0, I) is ½(tr(L Lᵀ) + μᵀμ − D − 2 Σ log L_ii). `kl_elem` holds the KL of each marginal
/// q(z_i) = N(μ_i, Σ_ii) (Σ = L Lᵀ), which ranks dimensions in reports; these do not sum to the
/// joint KL. At most [`crate::ops::posterior_full::MAX_LATENT`] dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullCovariance {
    pub latent: usize,
}

impl FullCovariance {
    fn p(&self) -> usize {
        full::param_dim(self.latent).unwrap_or(usize::MAX)
    }
}

impl Posterior for FullCovariance {
    fn name(&self) -> &'static str {
        "full"
    }
    fn latent(&self) -> usize {
        self.latent
    }
    fn param_dim(&self) -> usize {
        self.p()
    }
    fn location(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let (d, p) = (self.latent, self.p());
        (0..rows)
            .flat_map(|r| params[r * p..r * p + d].iter().copied())
            .collect()
    }
    fn scale(&self, params: &[f32], rows: usize) -> Vec<f32> {
        let q: Vec<f64> = params[..rows * self.p()]
            .iter()
            .map(|&v| v as f64)
            .collect();
        twin::marginal_std(&q, rows, self.latent)
            .into_iter()
            .map(|v| v as f32)
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
        p.push(full_sample(
            ctx,
            "full posterior sample",
            params,
            self.latent,
            z,
            eps,
            samples,
            seed,
            step,
            stream,
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
                "full-covariance posterior: the KL gradient is stored, not accumulated".into(),
            ));
        }
        let d = self.latent;
        let mut p = Program::new();
        if let Some((g, (capacity, penalty))) = grad.and_then(|g| g.capacity.map(|c| (g, c))) {
            let weights = weights.ok_or_else(|| {
                Error::Config(
                    "full-covariance posterior: the capacity term needs row weights".into(),
                )
            })?;
            p.push(full_kl(
                ctx,
                "full posterior kl",
                params,
                d,
                kl,
                kl_elem,
                None,
                None,
                None,
            )?);
            p.push(full_kl_capacity(
                ctx,
                "full posterior kl capacity",
                params,
                d,
                kl,
                g.dparams,
                penalty,
                weights,
                capacity,
            )?);
            return Ok(p);
        }
        p.push(full_kl(
            ctx,
            "full posterior kl",
            params,
            d,
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
        _own: Option<&Tensor<f32>>,
        samples: usize,
        write: GradWrite,
    ) -> Result<Program> {
        let mut p = Program::new();
        p.push(full_sample_backward(
            ctx,
            "full posterior sample backward",
            params,
            self.latent,
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
        p.push(full_log_weights(
            ctx,
            "full posterior log w",
            params,
            self.latent,
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
        _params: &Tensor<f32>,
        _eps: &Tensor<f32>,
        coef: &Tensor<f32>,
        dparams: &Tensor<f32>,
        _own: Option<&Tensor<f32>>,
        samples: usize,
    ) -> Result<Program> {
        // log q(μ + L ε) = log N(ε; 0, I) − Σ_i log L_ii = … − Σ_i ½ v_i; the lower entries
        // do not enter the determinant.
        let mut p = Program::new();
        p.push(iwae_logdet_backward(
            ctx,
            "full posterior log q backward",
            coef,
            dparams,
            self.latent,
            self.latent,
            samples,
        )?);
        Ok(p)
    }

    fn cpu_sample(&self, params: &[f64], eps: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        twin::full_sample(params, eps, rows, self.latent, samples)
    }

    fn cpu_kl(&self, params: &[f64], rows: usize) -> Vec<f64> {
        twin::full_kl(params, rows, self.latent, &vec![0.0; rows]).0
    }

    fn cpu_log_density(&self, params: &[f64], z: &[f64], rows: usize, samples: usize) -> Vec<f64> {
        twin::full_log_density(params, z, rows, self.latent, samples)
    }
}
