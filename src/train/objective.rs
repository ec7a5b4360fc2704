//! The objective a run trains, as recorded in its configuration, and what it builds on the GPU:
//! the named terms the trainer reports, the per-row buffers they are summed from, and how the
//! KL enters the gradient.
//!
//! - [`ObjectiveSpec::Elbo`]: recon + β·KL (β = 1: the negative ELBO; β-VAE otherwise). The
//!   KL's weight in the gradient may follow a schedule: a linear warm-up
//!   ([`super::TrainConfig::kl_warmup`]) or cyclical annealing ([`KlCycles`], Fu et al. 2019).
//! - [`ObjectiveSpec::Capacity`]: recon + γ·|KL − C(t)| with C rising linearly from 0 to
//!   `c_max` nats (Burgess et al. 2018); KL is the batch mean.
//! - [`ObjectiveSpec::TcVae`]: recon + α·MI + β·TC + γ·dimension-wise KL, the KL split by the
//!   minibatch estimator of log q(z) (Chen et al. 2018) over the batch, with the data set's
//!   size N ([`crate::ops::tc`]); the three terms are reported, and the closed-form KL beside
//!   them.
//! - [`ObjectiveSpec::FactorVae`]: recon + β·KL + γ·TC with the total correlation estimated
//!   by a discriminator (Kim & Mnih 2018), trained in the same step as a second phase with its
//!   own Adam ([`crate::model::discriminator`]).
//! - [`ObjectiveSpec::Iwae`]: the negative importance-weighted bound with K draws per input
//!   (Burda et al. 2016), log K − logsumexp_s [log p(x|z_s) + log p(z_s) − log q(z_s|x)]; the
//!   mean reconstruction NLL over the draws and the closed-form KL are reported beside it. Its
//!   gradient: the likelihood's scaled by the normalised importance weights ω ([`IwaeTrain`]),
//!   the prior's and the posterior's log-determinant's added at z and at the posterior's
//!   parameters, the closed-form KL's left out (weight 0).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::GradWrite;
use crate::model::discriminator::{DiscWorkspace, Discriminator, DiscriminatorConfig, FactorVae};
use crate::model::objective::{Objective, Phase, Term};
use crate::model::vae::{Activations, Gradients, KlWeight};
use crate::ops::data::StepState;
use crate::ops::iwae_train::{IwaeRows, iwae_prior_dz, iwae_rescale, iwae_softmax};
use crate::ops::kl::{Capacity, KlRamp};
use crate::ops::tc::{Estimator, TcScratch, TcTerms, TcWeights, tc_backward, tc_forward};
use crate::train::checkpoint::GroupState;

/// What a run minimises (absent in older runs: the ELBO, weighted by `beta`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectiveSpec {
    /// recon + β·KL, β from [`super::TrainConfig::beta`].
    #[default]
    Elbo,
    /// recon + γ·|KL − C(t)|, C(t) = c_max·min(1, t / steps) at step t.
    Capacity {
        gamma: f32,
        /// nats
        c_max: f32,
        /// steps over which C rises; absent: the whole run (resolved when the run starts)
        #[serde(default)]
        steps: Option<usize>,
    },
    /// recon + α·MI + β·TC + γ·dimension-wise KL (β from [`super::TrainConfig::beta`]).
    TcVae {
        alpha: f32,
        gamma: f32,
        #[serde(default)]
        estimator: Estimator,
    },
    /// recon + β·KL + γ·TC, TC from a discriminator trained alongside.
    FactorVae {
        gamma: f32,
        disc: DiscriminatorConfig,
    },
    /// The negative IWAE bound with `k` draws per input (k = 1: the ELBO with a Monte Carlo KL).
    Iwae { k: usize },
}

/// Most draws per input [`ObjectiveSpec::Iwae`] takes (the training activations hold K·B
/// rows).
pub const MAX_IWAE_TRAIN_K: usize = 4096;

impl ObjectiveSpec {
    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            ObjectiveSpec::Elbo => "elbo",
            ObjectiveSpec::Capacity { .. } => "capacity",
            ObjectiveSpec::TcVae { .. } => "tc_vae",
            ObjectiveSpec::FactorVae { .. } => "factor_vae",
            ObjectiveSpec::Iwae { .. } => "iwae",
        }
    }

    /// Latent draws per input in the training step: K for the IWAE objective, 1 otherwise.
    pub fn train_samples(&self) -> usize {
        match self {
            ObjectiveSpec::Iwae { k } => *k,
            _ => 1,
        }
    }
}

/// Cyclical annealing of the KL's weight (Fu et al. 2019): the run is cut into `cycles`
/// periods; in each, the weight rises linearly from β/ramp to β over the first
/// `ratio`·period steps, then stays at β.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KlCycles {
    pub cycles: usize,
    /// share of each period spent rising, in (0, 1]
    pub ratio: f32,
    /// steps per period; absent: the run's steps / cycles (resolved when the run starts)
    #[serde(default)]
    pub period: Option<usize>,
}

impl KlCycles {
    /// Steps of the rise in each period (at least 1).
    pub fn ramp(&self, period: usize) -> usize {
        ((self.ratio as f64 * period as f64).round() as usize).max(1)
    }
}

/// `ObjectiveSpec::Capacity`'s objective: terms `recon` (weight 1), `kl` (reported, weight 0)
/// and `capacity` (γ·|KL − C(t)|, weight 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityObjective;

impl Objective for CapacityObjective {
    fn name(&self) -> &'static str {
        "capacity"
    }
    fn terms(&self) -> Vec<Term> {
        vec![
            Term {
                name: "recon",
                weight: 1.0,
            },
            Term {
                name: "kl",
                weight: 0.0,
            },
            Term {
                name: "capacity",
                weight: 1.0,
            },
        ]
    }
}

/// `ObjectiveSpec::TcVae`'s objective: `recon` (1), `kl` (the closed form, reported with
/// weight 0), `mi` (α), `tc` (β), `dim_kl` (γ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TcVaeObjective {
    pub weights: TcWeights,
}

impl Objective for TcVaeObjective {
    fn name(&self) -> &'static str {
        "tc_vae"
    }
    fn terms(&self) -> Vec<Term> {
        let w = self.weights;
        [
            ("recon", 1.0),
            ("kl", 0.0),
            ("mi", w.alpha),
            ("tc", w.beta),
            ("dim_kl", w.gamma),
        ]
        .into_iter()
        .map(|(name, weight)| Term {
            name,
            weight: weight as f64,
        })
        .collect()
    }
}

/// `ObjectiveSpec::Iwae`'s objective: `iwae` (the negative bound, weight 1), `recon` (the mean
/// NLL over the draws, reported with weight 0) and `kl` (the closed form, weight 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IwaeObjective {
    pub k: usize,
}

impl Objective for IwaeObjective {
    fn name(&self) -> &'static str {
        "iwae"
    }
    fn terms(&self) -> Vec<Term> {
        [("iwae", 1.0), ("recon", 0.0), ("kl", 0.0)]
            .into_iter()
            .map(|(name, weight)| Term { name, weight })
            .collect()
    }
}

/// The IWAE objective's buffers. With the log-weights log w_sb (row s·B + b) and
/// ω_sb = softmax_s(log w_sb), the loss Σ_b w_b [log K − logsumexp_s log w_sb] has
/// ∂/∂nll_sb = w_b ω_sb, ∂/∂log p(z_sb) = −w_b ω_sb and ∂/∂log q(z_sb|x_b) = w_b ω_sb.
/// After the forward pass ([`IwaeTrain::after_forward`]) the likelihood's stored
/// gradient w_b·(1/K)·∂nll is rescaled by K·ω; between the decoder's backward and the
/// posterior's sample backward ([`IwaeTrain::latent_terms`]) the prior adds w_b ω_sb z_sb
/// at z and the posterior its fixed-ε log-density gradient at its parameters
/// ([`crate::model::Posterior::log_q_backward`]); the sample backward then carries dz into the
/// parameters. The closed-form KL stores a zero gradient (weight 0). At K = 1, ω = 1 and the
/// gradient is that of the single-draw estimate log p(x|z) + log p(z) − log q(z|x).
pub struct IwaeTrain {
    k: usize,
    posterior: Arc<dyn crate::model::Posterior>,
    /// (K·B,) log-weights
    logw: Tensor<f32>,
    /// (K·B,) ω
    omega: Tensor<f32>,
    /// (K·B,) w_b·ω_sb
    weighted: Tensor<f32>,
    /// (B,) the negative bound per input
    loss: Tensor<f32>,
    /// (B,) the mean NLL over the draws
    recon: Tensor<f32>,
}

impl IwaeTrain {
    /// The buffers for `batch` inputs and `k` draws each of posterior `posterior`; K·batch is
    /// checked against [`super::MAX_COUNT`] before anything is allocated.
    pub fn new(
        ctx: &GpuContext,
        posterior: Arc<dyn crate::model::Posterior>,
        batch: usize,
        k: usize,
    ) -> Result<Self> {
        let kb = k
            .checked_mul(batch)
            .filter(|&n| (1..=super::MAX_COUNT).contains(&n))
            .ok_or_else(|| {
                crate::Error::Config(format!(
                    "--iwae-train-k {k} with --batch {batch}: K·batch must be in 1..={}",
                    super::MAX_COUNT
                ))
            })?;
        let t = |name: &str, n: usize| Tensor::zeros(ctx, name, &[n]);
        Ok(IwaeTrain {
            k,
            posterior,
            logw: t("iwae log w", kb)?,
            omega: t("iwae omega", kb)?,
            weighted: t("iwae w·omega", kb)?,
            loss: t("iwae loss", batch)?,
            recon: t("iwae recon", batch)?,
        })
    }

    /// Draws per input.
    pub fn k(&self) -> usize {
        self.k
    }
    /// (B,) the negative bound of each input, log K − logsumexp_s log w_sb.
    pub fn loss(&self) -> &Tensor<f32> {
        &self.loss
    }
    /// (B,) the mean reconstruction NLL over the draws.
    pub fn recon(&self) -> &Tensor<f32> {
        &self.recon
    }
    /// (K·B,) the log-weights.
    pub fn log_weights(&self) -> &Tensor<f32> {
        &self.logw
    }
    /// (K·B,) the normalised importance weights ω.
    pub fn omega(&self) -> &Tensor<f32> {
        &self.omega
    }

    /// Recorded after [`crate::model::Vae::forward_program_with`] (with a KL weight of 0) and
    /// before the backward pass: the log-weights, their softmax over the draws (the per-row
    /// loss) and the rescaling of the likelihood's stored gradient by K·ω.
    pub fn after_forward(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        grads: &Gradients,
    ) -> Result<Program> {
        let t = self;
        if act.samples != t.k {
            return Err(crate::Error::Config(format!(
                "the IWAE objective takes {} draws per input, the activations hold {}",
                t.k, act.samples
            )));
        }
        let mut p = t.posterior.log_weights(
            ctx,
            act.posterior_params(),
            &act.nll,
            &act.z,
            &act.eps,
            &t.logw,
            t.k,
        )?;
        p.push(iwae_softmax(
            ctx,
            "iwae softmax",
            &t.logw,
            &act.nll,
            &act.w,
            IwaeRows {
                omega: &t.omega,
                weighted: &t.weighted,
                loss: &t.loss,
                recon: &t.recon,
            },
            t.k,
        )?);
        let scale = t.k as f32;
        let g_out = grads.dec.last().expect("a network has at least one module");
        p.push(iwae_rescale(ctx, "iwae rescale", g_out, &t.omega, scale)?);
        if let Some(gls) = &grads.log_sigma_elem {
            p.push(iwae_rescale(
                ctx,
                "iwae rescale log sigma",
                gls,
                &t.omega,
                scale,
            )?);
        }
        Ok(p)
    }

    /// Recorded as the `latent_terms` of [`crate::model::Vae::backward_program_with`]: the
    /// prior's gradient w_b ω_sb z_sb at z and the posterior's fixed-ε log-density gradient at
    /// its parameters.
    pub fn latent_terms(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        grads: &Gradients,
    ) -> Result<Program> {
        let dparams = grads.enc.last().expect("a network has at least one module");
        let mut p = Program::new();
        p.push(iwae_prior_dz(
            ctx,
            "iwae prior dz",
            &act.z,
            &self.weighted,
            &grads.z,
        )?);
        p.extend(self.posterior.log_q_backward(
            ctx,
            act.posterior_params(),
            &act.eps,
            &self.weighted,
            dparams,
            Some(&grads.params.flat),
            self.k,
        )?);
        Ok(p)
    }
}

/// β-TCVAE's buffers: the estimator's scratch and the three per-row terms.
pub(crate) struct TcState {
    weights: TcWeights,
    estimator: Estimator,
    dataset_size: usize,
    scratch: TcScratch,
    mi: Tensor<f32>,
    tc: Tensor<f32>,
    dimkl: Tensor<f32>,
}

/// The GPU side of a run's objective: the objective's terms and the buffers it owns.
pub(crate) struct TrainObjective {
    pub objective: Box<dyn Objective>,
    spec: ObjectiveSpec,
    beta: f32,
    /// (ramp, period) of the KL's weight; ramp 0: none
    ramp: (u32, u32),
    /// per-row capacity penalty (B,)
    penalty: Option<Tensor<f32>>,
    /// FactorVAE's discriminator and its buffers
    pub disc: Option<(Discriminator, DiscWorkspace)>,
    tc: Option<TcState>,
    iwae: Option<IwaeTrain>,
}

impl TrainObjective {
    /// The objective of `cfg` (its optional step counts resolved) for a model of `latent`
    /// dimensions trained on `dataset_size` images. `ramp` = (steps of the KL weight's rise,
    /// period; 0: no cycle); (0, 0): constant weight. A discriminator starts from `disc_state`
    /// (a checkpoint's) or from fresh weights drawn from the run's seed.
    pub fn new(
        ctx: &GpuContext,
        cfg: &super::TrainConfig,
        ramp: (u32, u32),
        posterior: &Arc<dyn crate::model::Posterior>,
        dataset_size: usize,
        disc_state: Option<&GroupState>,
    ) -> Result<Self> {
        let (spec, beta, batch, seed) = (&cfg.objective, cfg.beta, cfg.batch, cfg.seed);
        let latent = posterior.latent();
        // The β-TCVAE estimators evaluate q(z_i | x) of a diagonal Gaussian, [μ | log σ²].
        if matches!(spec, ObjectiveSpec::TcVae { .. })
            && cfg.model.posterior != crate::model::PosteriorKind::Diagonal
        {
            return Err(crate::Error::Config(format!(
                "--objective tc-vae needs --posterior diagonal (the run asks for {})",
                cfg.model.posterior.name()
            )));
        }
        let mut penalty = None;
        let mut disc = None;
        let mut tc = None;
        let mut iwae = None;
        let objective: Box<dyn Objective> = match spec {
            ObjectiveSpec::Elbo if cfg.model.posterior.closed_form_kl() => {
                Box::new(crate::model::Elbo { beta })
            }
            // A flow's KL has no closed form: the ELBO trains through its single-draw
            // estimate log p(x|z) + log p(z) − log q(z|x), the IWAE bound's K = 1 (the terms
            // reported are still the reconstruction and the flow's KL estimate).
            ObjectiveSpec::Elbo => {
                if beta != 1.0 || ramp != (0, 0) {
                    return Err(crate::Error::Config(format!(
                        "--posterior {} has no closed-form KL: the ELBO trains through its \
                         single-draw estimate, which takes no KL weight (--beta 1, no \
                         --kl-warmup or --kl-cycles)",
                        cfg.model.posterior.name()
                    )));
                }
                iwae = Some(IwaeTrain::new(ctx, posterior.clone(), batch, 1)?);
                Box::new(crate::model::Elbo { beta })
            }
            ObjectiveSpec::Capacity { .. } => {
                penalty = Some(Tensor::zeros(ctx, "capacity penalty", &[batch])?);
                Box::new(CapacityObjective)
            }
            ObjectiveSpec::TcVae {
                alpha,
                gamma,
                estimator,
            } => {
                let weights = TcWeights {
                    alpha: *alpha,
                    beta,
                    gamma: *gamma,
                };
                let row = |name: &str| Tensor::zeros(ctx, name, &[batch]);
                tc = Some(TcState {
                    weights,
                    estimator: *estimator,
                    dataset_size,
                    scratch: TcScratch::new(ctx, batch, latent)?,
                    mi: row("tc-vae mi")?,
                    tc: row("tc-vae tc")?,
                    dimkl: row("tc-vae dim kl")?,
                });
                Box::new(TcVaeObjective { weights })
            }
            ObjectiveSpec::FactorVae { gamma, disc: cfg } => {
                let d = match disc_state {
                    Some(g) => {
                        let d = Discriminator::new(ctx, cfg, &g.params)?;
                        d.group.load_moments(ctx, &g.adam_m, &g.adam_v)?;
                        d
                    }
                    None => Discriminator::new(ctx, cfg, &cfg.init_params(seed)?)?,
                };
                let ws = d.workspace(ctx, batch)?;
                disc = Some((d, ws));
                Box::new(FactorVae {
                    beta,
                    gamma: *gamma,
                })
            }
            ObjectiveSpec::Iwae { k } => {
                let k = *k;
                iwae = Some(IwaeTrain::new(ctx, posterior.clone(), batch, k)?);
                Box::new(IwaeObjective { k })
            }
        };
        Ok(TrainObjective {
            objective,
            spec: spec.clone(),
            beta,
            ramp,
            penalty,
            disc,
            tc,
            iwae,
        })
    }

    /// The program recorded between the forward pass and the backward pass: the IWAE
    /// objective's ([`IwaeTrain::after_forward`]); empty for the other objectives.
    pub fn after_forward(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        grads: &Gradients,
    ) -> Result<Program> {
        match &self.iwae {
            Some(t) => t.after_forward(ctx, act, grads),
            None => Ok(Program::new()),
        }
    }

    /// The terms recorded between the decoder's backward and the posterior's sample backward
    /// (see [`crate::model::Vae::backward_program_with`]): FactorVAE's γ·∂TC/∂z, β-TCVAE's
    /// terms, the IWAE objective's prior and log-determinant gradients.
    pub fn latent_terms(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        grads: &Gradients,
    ) -> Result<Program> {
        if let Some(t) = &self.iwae {
            return t.latent_terms(ctx, act, grads);
        }
        if let Some(t) = &self.tc {
            let q = act.posterior_params();
            let dparams = grads.enc.last().expect("a network has at least one module");
            let mut p = tc_forward(
                ctx,
                "tc-vae terms",
                q,
                &act.z,
                &act.w,
                t.dataset_size,
                t.estimator,
                &t.scratch,
                TcTerms {
                    mi: &t.mi,
                    tc: &t.tc,
                    dimkl: &t.dimkl,
                },
            )?;
            // The KL's closed-form gradient was stored as 0 (β = 0 below); the three terms
            // add theirs, and their path through z.
            p.extend(tc_backward(
                ctx,
                "tc-vae backward",
                q,
                &act.z,
                &act.w,
                t.dataset_size,
                t.estimator,
                &t.scratch,
                t.weights,
                &grads.z,
                dparams,
                GradWrite::Accumulate,
            )?);
            return Ok(p);
        }
        match (&self.spec, &self.disc) {
            (ObjectiveSpec::FactorVae { gamma, .. }, Some((d, ws))) => {
                d.tc_program(ctx, ws, &act.z, &act.w, &grads.z, *gamma)
            }
            _ => Ok(Program::new()),
        }
    }

    /// Phases after the model's own: FactorVAE's discriminator update.
    pub fn extra_phases(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        seed: u64,
        state: &StepState,
    ) -> Result<Vec<Phase>> {
        match &self.disc {
            Some((d, ws)) => Ok(vec![d.disc_phase(ctx, ws, &act.z, &act.w, seed, state)?]),
            None => Ok(Vec::new()),
        }
    }

    /// The state of the groups trained besides the model, for a checkpoint.
    pub fn group_states(&self, ctx: &GpuContext) -> Result<Vec<GroupState>> {
        match &self.disc {
            Some((d, _)) => {
                let (m, v) = d.group.read_moments(ctx)?;
                Ok(vec![GroupState {
                    layout: d.layout.clone(),
                    params: d.read_params(ctx)?,
                    adam_m: m,
                    adam_v: v,
                }])
            }
            None => Ok(Vec::new()),
        }
    }

    /// How the KL enters the training gradient.
    pub fn kl_weight<'a>(&'a self, state: &'a StepState) -> KlWeight<'a> {
        let ramp = (self.ramp.0 > 0).then_some(KlRamp {
            state,
            ramp: self.ramp.0,
            period: self.ramp.1,
        });
        let capacity = match (&self.spec, &self.penalty) {
            (
                ObjectiveSpec::Capacity {
                    gamma,
                    c_max,
                    steps,
                },
                Some(p),
            ) => Some((
                Capacity {
                    state,
                    gamma: *gamma,
                    c_max: *c_max,
                    steps: steps.map_or(0, |s| u32::try_from(s).unwrap_or(u32::MAX)),
                },
                p,
            )),
            _ => None,
        };
        KlWeight {
            // β-TCVAE replaces the KL's gradient by its three terms' (written later).
            // The IWAE objective's gradient takes no closed-form KL.
            beta: if self.tc.is_some() || self.iwae.is_some() {
                0.0
            } else {
                self.beta
            },
            ramp,
            capacity,
        }
    }

    /// The per-row buffers of the objective's terms, in its order.
    pub fn rows<'a>(&'a self, act: &'a Activations) -> Vec<&'a Tensor<f32>> {
        if let (Some(t), ObjectiveSpec::Iwae { .. }) = (&self.iwae, &self.spec) {
            return vec![&t.loss, &t.recon, &act.kl];
        }
        let mut rows = vec![&act.nll, &act.kl];
        rows.extend(self.penalty.as_ref());
        if let Some((_, ws)) = &self.disc {
            rows.extend([&ws.tc, &ws.loss, &ws.accuracy]);
        }
        if let Some(t) = &self.tc {
            rows.extend([&t.mi, &t.tc, &t.dimkl]);
        }
        rows
    }
}
