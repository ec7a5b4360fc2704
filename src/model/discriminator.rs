//! FactorVAE's discriminator (Kim & Mnih, "Disentangling by Factorising", 2018): an MLP that
//! tells latents drawn from q(z) (class 0) from latents whose dimensions were permuted
//! independently across the batch, i.e. drawn from the product of q's marginals (class 1). Its
//! logit difference estimates the total correlation the VAE is penalised by.
//!
//! # One training step with a discriminator
//!
//! ```text
//! gather                     x, row weights w (B,)
//! phase "vae":
//!   forward                  z (B, D) (one sample per input), nll, kl, their gradients
//!   decoder backward         dz (B, D)                                     stored
//!   tc_program               D(z) -> tc (B,), dz += γ·w_b·∂tc_b/∂z_b        accumulated
//!   posterior sample backward, encoder backward, the VAE's Adam
//! phase "discriminator" (disc_phase):
//!   permute                  [z; z_perm] (2B, D), permutation from Philox(seed, state[0])
//!   forward, loss            D([z; z_perm]) -> loss (B,), accuracy (B,), dlogits (2B, 2)
//!   backward                 the discriminator's parameter gradients      stored
//!   update                   the discriminator's Adam
//! metrics                    recon, kl, tc, disc_loss, disc_accuracy (B,) each, over w > 0
//! advance                    state[0] += 1
//! ```
//!
//! The VAE phase uses the discriminator of the previous step; the discriminator then learns on
//! the z of this step's forward pass (computed before the VAE's update), detached: nothing of
//! its phase flows into the VAE. Every buffer, dispatch and bind group is built once, by
//! [`Discriminator::workspace`], [`Discriminator::disc_phase`] and
//! [`Discriminator::tc_program`]; a step only replays them.

use serde::{Deserialize, Serialize};

use crate::cpu::factor as twin;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::module::{GradWrite, Init, Linear, Module};
use crate::model::network::Sequential;
use crate::model::objective::{Objective, ParamGroup, Phase, Term};
use crate::model::{GpuParams, MAX_HIDDEN_LAYERS, MAX_PARAMS, ParamLayout};
use crate::ops::Activation;
use crate::ops::adam::AdamConfig;
use crate::ops::data::StepState;
use crate::ops::factor::{PermuteOutput, disc_loss, permute_dims, tc_estimate};
use crate::ops::reparam::RngStep;
use crate::rng::HostRng;

/// The network's name: parameters are `discriminator.fc1.weight`, `discriminator.fc1.bias`, …
pub const NETWORK: &str = "discriminator";

/// Name of the per-row total-correlation estimate among an objective's terms.
pub const TERM_TC: &str = "tc";
/// Name of the discriminator's per-row loss among an objective's terms.
pub const TERM_DISC_LOSS: &str = "disc_loss";
/// Name of the discriminator's per-row accuracy among an objective's terms.
pub const TERM_DISC_ACCURACY: &str = "disc_accuracy";

/// The host RNG stream of the discriminator's initial weights (the VAE's is another).
const INIT_STREAM: u64 = 0xD15C;

/// Most units a hidden layer may have.
pub const MAX_WIDTH: usize = 1 << 20;

/// The discriminator's shape and optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorConfig {
    /// D, the latent size (its input)
    pub latent: usize,
    /// hidden layers (the paper: 6)
    pub layers: usize,
    /// units per hidden layer (the paper: 1000)
    pub width: usize,
    /// LeakyReLU slope of the hidden layers (the paper: 0.2)
    pub slope: f32,
    /// its own Adam (the paper: lr 1e-4, β1 0.5, β2 0.9)
    pub adam: AdamConfig,
}

impl DiscriminatorConfig {
    /// The paper's discriminator for `latent` dimensions: 6 hidden layers of 1000 units,
    /// LeakyReLU(0.2), Adam with lr 1e-4, β1 0.5, β2 0.9.
    pub fn paper(latent: usize) -> Self {
        DiscriminatorConfig {
            latent,
            layers: 6,
            width: 1000,
            slope: 0.2,
            adam: AdamConfig {
                lr: 1e-4,
                beta1: 0.5,
                beta2: 0.9,
                ..AdamConfig::default()
            },
        }
    }

    /// Checks every field (named as `discriminator.<field>` in the error) and the parameter
    /// count with checked arithmetic, before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: String, rule: &str| {
            Err(Error::Config(format!(
                "discriminator.{field} {value}: {rule}"
            )))
        };
        if self.latent == 0 || self.latent > MAX_WIDTH {
            return bad(
                "latent",
                self.latent.to_string(),
                &format!("must be in 1..={MAX_WIDTH}"),
            );
        }
        if self.layers == 0 || self.layers > MAX_HIDDEN_LAYERS {
            return bad(
                "layers",
                self.layers.to_string(),
                &format!(
                    "must be in 1..={MAX_HIDDEN_LAYERS} (a discriminator without a hidden layer \
                     is linear and cannot see dependence between dimensions)"
                ),
            );
        }
        if self.width == 0 || self.width > MAX_WIDTH {
            return bad(
                "width",
                self.width.to_string(),
                &format!("must be in 1..={MAX_WIDTH}"),
            );
        }
        if let Err(e) = Activation::leaky_relu(self.slope) {
            return bad("slope", self.slope.to_string(), &e.to_string());
        }
        let a = &self.adam;
        if !(a.lr.is_finite() && a.lr > 0.0) {
            return bad("adam.lr", a.lr.to_string(), "must be a positive number");
        }
        for (field, v) in [("adam.beta1", a.beta1), ("adam.beta2", a.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(field, v.to_string(), "must be in [0, 1)");
            }
        }
        if !(a.eps.is_finite() && a.eps > 0.0) {
            return bad("adam.eps", a.eps.to_string(), "must be a positive number");
        }
        for (field, v) in [
            ("adam.weight_decay", a.weight_decay),
            ("adam.clip_norm", a.clip_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, v.to_string(), "must be a number ≥ 0");
            }
        }
        let total = self.layout_total_checked().ok_or_else(|| {
            Error::Config(format!(
                "discriminator of {} layers of {} units: the parameter count overflows",
                self.layers, self.width
            ))
        })?;
        if total > MAX_PARAMS {
            return bad(
                "width",
                self.width.to_string(),
                &format!(
                    "{} layers of it make {total} parameters (with padding), more than the \
                     limit of {MAX_PARAMS}",
                    self.layers
                ),
            );
        }
        Ok(())
    }

    /// Elements of the flat parameter buffer (padding included), or None on overflow.
    fn layout_total_checked(&self) -> Option<usize> {
        let align = crate::gpu::tensor::VIEW_ALIGN / 4;
        let mut total = 0usize;
        for m in &self.network().modules {
            for d in m.params() {
                let len = d.shape.iter().try_fold(1usize, |a, &v| a.checked_mul(v))?;
                total = total.checked_next_multiple_of(align)?.checked_add(len)?;
            }
        }
        Some(total)
    }

    /// The network: `fc1` (D → width), `fc2` … `fc<layers>` (width → width), all LeakyReLU,
    /// then `fc<layers+1>` (width → 2) with no activation: the logits of class 0 ("from q(z)")
    /// and class 1 ("permuted").
    pub fn network(&self) -> Sequential {
        let act = Activation::LeakyRelu(self.slope);
        let mut modules: Vec<Box<dyn Module>> = Vec::with_capacity(self.layers + 1);
        let mut inp = self.latent;
        for i in 0..=self.layers {
            let last = i == self.layers;
            let out = if last { 2 } else { self.width };
            modules.push(Box::new(Linear {
                name: format!("fc{}", i + 1),
                inp,
                out,
                act: if last { Activation::Identity } else { act },
            }));
            inp = out;
        }
        Sequential::new(NETWORK, modules)
    }

    /// Where each parameter lives in the discriminator's flat buffer (its modules'
    /// declarations, in order; linear weights (in, out), checkpoints hold PyTorch's (out, in)).
    /// Sizes saturate: call [`DiscriminatorConfig::validate`] first on a configuration from a
    /// file or flag.
    pub fn layout(&self) -> ParamLayout {
        let net = self.network();
        let mut l = ParamLayout::default();
        for m in &net.modules {
            for d in m.params() {
                l.push_tensor(&net.param_name(m.as_ref(), d.name), &d.shape);
            }
        }
        l
    }

    /// Initial parameters, validated first: PyTorch's `nn.Linear` default, U(−1/√in, 1/√in) for
    /// weights and biases, from the host RNG keyed by `seed` (a stream apart from the VAE's).
    pub fn init_params(&self, seed: u64) -> Result<Vec<f32>> {
        self.validate()?;
        let net = self.network();
        let layout = self.layout();
        let mut flat: Vec<f32> = Vec::new();
        flat.try_reserve_exact(layout.total).map_err(|_| {
            Error::Config(format!(
                "cannot allocate the discriminator's {} parameters in host memory",
                layout.total
            ))
        })?;
        flat.resize(layout.total, 0.0);
        let mut rng = HostRng::derive(seed, INIT_STREAM);
        for m in &net.modules {
            for d in m.params() {
                let Some(spec) = layout.get(&net.param_name(m.as_ref(), d.name)) else {
                    continue;
                };
                let values = &mut flat[spec.offset..spec.offset + spec.len()];
                match d.init {
                    Init::Uniform(bound) => {
                        for v in values {
                            *v = bound * (2.0 * rng.uniform() as f32 - 1.0);
                        }
                    }
                    Init::Constant(c) => values.fill(c),
                }
            }
        }
        Ok(flat)
    }

    /// CPU twin of the forward pass: every module's output for `rows` rows of `x`, with the
    /// parameters `params` laid out as [`DiscriminatorConfig::layout`].
    pub fn cpu_forward(&self, params: &[f64], x: &[f64], rows: usize) -> Vec<Vec<f64>> {
        let layout = self.layout();
        let lookup = |name: &str| -> &[f64] {
            layout
                .get(name)
                .map_or(&[][..], |s| &params[s.offset..s.offset + s.len()])
        };
        self.network().cpu_forward(&lookup, x, rows)
    }

    /// Runs the twin's backward from `dlogits` and returns (flat parameter gradients laid out
    /// as the layout, input gradient).
    fn cpu_backward(
        &self,
        params: &[f64],
        x: &[f64],
        outs: &[Vec<f64>],
        dlogits: &[f64],
        rows: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let layout = self.layout();
        let lookup = |name: &str| -> &[f64] {
            layout
                .get(name)
                .map_or(&[][..], |s| &params[s.offset..s.offset + s.len()])
        };
        let (named, dx) = self.network().cpu_backward(&lookup, x, outs, dlogits, rows);
        let mut flat = vec![0.0; layout.total];
        for (name, g) in named {
            if let Some(s) = layout.get(&name) {
                flat[s.offset..s.offset + s.len()].copy_from_slice(&g);
            }
        }
        (flat, dx)
    }

    /// CPU twin of the discriminator phase's gradient program from z and z_perm (B, D) and the
    /// row weights (B,): per-row loss and accuracy, and the gradients of Σ_b w_b·loss_b with
    /// respect to the parameters (flat, laid out as the layout).
    pub fn cpu_disc_loss(
        &self,
        params: &[f64],
        z: &[f64],
        z_perm: &[f64],
        w: &[f64],
    ) -> DiscLossTwin {
        let b = w.len();
        let mut x = z.to_vec();
        x.extend_from_slice(z_perm);
        let outs = self.cpu_forward(params, &x, 2 * b);
        let logits = outs.last().map_or(&[][..], |v| v.as_slice());
        let (loss, accuracy, dlogits) = twin::disc_loss(logits, w);
        let (grads, _) = self.cpu_backward(params, &x, &outs, &dlogits, 2 * b);
        DiscLossTwin {
            loss,
            accuracy,
            grads,
        }
    }

    /// CPU twin of [`Discriminator::tc_program`]: the per-row estimate and γ·Σ_b w_b ∂tc_b/∂z
    /// (B, D) (what the program adds to dz).
    pub fn cpu_tc(&self, params: &[f64], z: &[f64], w: &[f64], gamma: f64) -> TcTwin {
        let b = w.len();
        let outs = self.cpu_forward(params, z, b);
        let logits = outs.last().map_or(&[][..], |v| v.as_slice());
        let (tc, dlogits) = twin::tc_estimate(logits, w, gamma);
        let (_, dz) = self.cpu_backward(params, z, &outs, &dlogits, b);
        TcTwin { tc, dz }
    }
}

/// What [`DiscriminatorConfig::cpu_disc_loss`] computes.
#[derive(Clone, Debug)]
pub struct DiscLossTwin {
    /// (B,) per-row loss
    pub loss: Vec<f64>,
    /// (B,) per-row accuracy
    pub accuracy: Vec<f64>,
    /// flat parameter gradients of Σ_b w_b·loss_b
    pub grads: Vec<f64>,
}

/// What [`DiscriminatorConfig::cpu_tc`] computes.
#[derive(Clone, Debug)]
pub struct TcTwin {
    /// (B,) per-row estimate
    pub tc: Vec<f64>,
    /// (B, D) γ·w_b·∂tc_b/∂z_b
    pub dz: Vec<f64>,
}

/// The discriminator on the GPU: its network, parameters, gradients and optimizer, in buffers
/// of its own (apart from the VAE's).
pub struct Discriminator {
    pub cfg: DiscriminatorConfig,
    pub net: Sequential,
    pub layout: ParamLayout,
    /// all parameters in one buffer, one view per tensor (`discriminator.fc1.weight` (in, out))
    pub params: GpuParams,
    /// gradients of the discriminator's loss, laid out as `params`: stored (every tensor,
    /// every step) by [`Discriminator::disc_phase`], read by its update
    pub grads: GpuParams,
    /// Adam's moments and configuration (group name `discriminator`)
    pub group: ParamGroup,
}

/// The per-batch buffers of the discriminator, allocated once for a batch of B rows.
pub struct DiscWorkspace {
    pub batch: usize,
    /// (2B, D): rows 0..B a copy of z, rows B..2B z_perm (its rows of weight 0 hold 0);
    /// written by the discriminator phase
    pub input: Tensor<f32>,
    /// the modules' outputs on `input` (2B, features); the last is the logits (2B, 2)
    pub outs: Vec<Tensor<f32>>,
    /// the modules' output gradients before their activation (2B, features)
    pub gouts: Vec<Tensor<f32>>,
    /// (B,) per-row loss (CE(D(z_b), 0) + CE(D(z_perm_b), 1)) / 2, unweighted: the term
    /// [`TERM_DISC_LOSS`]
    pub loss: Tensor<f32>,
    /// (B,) per-row accuracy (0, ½ or 1), unweighted: the term [`TERM_DISC_ACCURACY`]
    pub accuracy: Tensor<f32>,
    /// (B,) per-row total-correlation estimate logit0 − logit1 of D(z), unweighted: the term
    /// [`TERM_TC`]
    pub tc: Tensor<f32>,
    /// the modules' outputs on z (B, features), for the estimate
    pub tc_outs: Vec<Tensor<f32>>,
    /// the modules' output gradients on z (B, features)
    pub tc_gouts: Vec<Tensor<f32>>,
    /// where the estimate's backward puts the discriminator's parameter gradients (the
    /// network's backward always writes them): written every step, read by nothing, never
    /// used for an update
    pub tc_param_sink: GpuParams,
}

impl Discriminator {
    /// Uploads `flat` (laid out as `cfg.layout()`, e.g. from [`DiscriminatorConfig::init_params`]
    /// or a checkpoint) and allocates its gradients and Adam's moments.
    pub fn new(ctx: &GpuContext, cfg: &DiscriminatorConfig, flat: &[f32]) -> Result<Self> {
        cfg.validate()?;
        let layout = cfg.layout();
        if flat.len() != layout.total {
            return Err(Error::Config(format!(
                "{} discriminator parameter values given, the architecture needs {}",
                flat.len(),
                layout.total
            )));
        }
        let params = GpuParams::zeros(ctx, &layout, "discriminator params")?;
        params.flat.write(ctx, flat)?;
        Ok(Discriminator {
            cfg: *cfg,
            net: cfg.network(),
            grads: GpuParams::zeros(ctx, &layout, "discriminator grads")?,
            group: ParamGroup::new(ctx, NETWORK, &layout, cfg.adam)?,
            layout,
            params,
        })
    }

    /// Reads the parameters back (flat layout).
    pub fn read_params(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.params.flat.read(ctx)
    }

    /// Allocates the buffers of both programs for batches of `batch` rows.
    pub fn workspace(&self, ctx: &GpuContext, batch: usize) -> Result<DiscWorkspace> {
        if batch == 0 {
            return Err(Error::Config(
                "the discriminator's batch must be at least 1".into(),
            ));
        }
        let rows2 = batch.checked_mul(2).ok_or_else(|| {
            Error::Config(format!("discriminator batch {batch}: 2·batch overflows"))
        })?;
        Ok(DiscWorkspace {
            batch,
            input: Tensor::zeros(ctx, "discriminator input", &[rows2, self.cfg.latent])?,
            outs: self.net.buffers(ctx, rows2, "out")?,
            gouts: self.net.buffers(ctx, rows2, "grad")?,
            loss: Tensor::zeros(ctx, "disc_loss", &[batch])?,
            accuracy: Tensor::zeros(ctx, "disc_accuracy", &[batch])?,
            tc: Tensor::zeros(ctx, "tc", &[batch])?,
            tc_outs: self.net.buffers(ctx, batch, "tc out")?,
            tc_gouts: self.net.buffers(ctx, batch, "tc grad")?,
            tc_param_sink: GpuParams::zeros(ctx, &self.layout, "discriminator tc param sink")?,
        })
    }

    fn check(&self, op: &str, ws: &DiscWorkspace, z: &Tensor<f32>, w: &Tensor<f32>) -> Result<()> {
        if z.shape() != [ws.batch, self.cfg.latent] || w.len() != ws.batch {
            return Err(Error::Shape {
                op: "discriminator",
                detail: format!(
                    "{op}: z {:?} and row weights {:?} for a workspace of {} rows and a latent \
                     size of {}: expected ({}, {}) and ({},)",
                    z.shape(),
                    w.shape(),
                    ws.batch,
                    self.cfg.latent,
                    ws.batch,
                    self.cfg.latent,
                    ws.batch
                ),
            });
        }
        Ok(())
    }

    /// The discriminator's phase of a training step, built once. Its gradient program permutes
    /// z (B, D) into `ws.input` = [z; z_perm] (the permutation over the rows of `w` (B,) > 0,
    /// drawn from Philox keyed by `seed` at the step `state[0]`, so new every step), runs the
    /// network on the 2B rows, writes `ws.loss`, `ws.accuracy` (B,) and the gradient of
    /// Σ_b w_b·loss_b at the logits, and stores every parameter gradient in `self.grads`. Its
    /// update is the group's Adam step (bias correction from `state[0]`).
    ///
    /// Record it after the VAE's phase (which computes z and uses the discriminator before
    /// this update) and before the step counter advances. One forward over one stacked
    /// (2B, D) buffer instead of two over B rows: one set of buffers, one GEMM per layer and
    /// one backward, and the loss kernel sees both halves of a row pair at once.
    pub fn disc_phase(
        &self,
        ctx: &GpuContext,
        ws: &DiscWorkspace,
        z: &Tensor<f32>,
        w: &Tensor<f32>,
        seed: u64,
        state: &StepState,
    ) -> Result<Phase> {
        self.check("disc_phase", ws, z, w)?;
        let mut p = permute_dims(
            ctx,
            "discriminator permute",
            z,
            w,
            &ws.input,
            PermuteOutput::Stacked,
            seed,
            RngStep::State(state),
        )?;
        p.extend(
            self.net
                .forward(ctx, &self.params, &self.layout, &ws.input, &ws.outs)?,
        );
        p.push(disc_loss(
            ctx,
            "discriminator loss",
            last(&ws.outs)?,
            w,
            &ws.loss,
            &ws.accuracy,
            last(&ws.gouts)?,
        )?);
        p.extend(self.net.backward(
            ctx,
            &self.params,
            &self.grads,
            &self.layout,
            GradWrite::Store,
            &ws.input,
            &ws.outs,
            &ws.gouts,
            None,
        )?);
        Ok(Phase {
            name: NETWORK.to_string(),
            gradients: p,
            update: self
                .group
                .update_program(ctx, &self.params, &self.grads, state)?,
        })
    }

    /// The total-correlation term of the VAE's phase, built once: the network on z (B, D),
    /// `ws.tc` (B,) = logit0 − logit1, and γ·w_b·∂tc_b/∂z_b ACCUMULATED into `dz` (B, D),
    /// which must already hold the decoder's gradient at z. No gradient reaches the
    /// discriminator's parameters or its optimizer: the backward's parameter gradients go to
    /// `ws.tc_param_sink`, which nothing reads.
    ///
    /// Record it after the pass that stores `dz` (the decoder's backward) and before the pass
    /// that reads it (the posterior's sample backward), and before the discriminator's update
    /// of the same step.
    pub fn tc_program(
        &self,
        ctx: &GpuContext,
        ws: &DiscWorkspace,
        z: &Tensor<f32>,
        w: &Tensor<f32>,
        dz: &Tensor<f32>,
        gamma: f32,
    ) -> Result<Program> {
        self.check("tc_program", ws, z, w)?;
        if dz.shape() != z.shape() {
            return Err(Error::Shape {
                op: "discriminator",
                detail: format!(
                    "tc_program: dz {:?} must match z {:?}",
                    dz.shape(),
                    z.shape()
                ),
            });
        }
        if !gamma.is_finite() {
            return Err(Error::Config(format!(
                "the total correlation's weight gamma {gamma} must be a finite number"
            )));
        }
        let mut p = self
            .net
            .forward(ctx, &self.params, &self.layout, z, &ws.tc_outs)?;
        p.push(tc_estimate(
            ctx,
            "tc estimate",
            last(&ws.tc_outs)?,
            w,
            &ws.tc,
            last(&ws.tc_gouts)?,
            gamma,
        )?);
        p.extend(self.net.backward(
            ctx,
            &self.params,
            &ws.tc_param_sink,
            &self.layout,
            GradWrite::Store,
            z,
            &ws.tc_outs,
            &ws.tc_gouts,
            Some((dz, GradWrite::Accumulate)),
        )?);
        Ok(p)
    }
}

fn last(v: &[Tensor<f32>]) -> Result<&Tensor<f32>> {
    v.last().ok_or_else(|| Error::Shape {
        op: "discriminator",
        detail: "a network without modules".into(),
    })
}

/// FactorVAE's objective: the negative ELBO plus γ times the total-correlation estimate
/// (terms `recon`, `kl` (weight β, 1 in the paper), `tc` (weight γ)), and the discriminator's
/// `disc_loss` and `disc_accuracy`, reported by name with weight 0 (they are not part of the
/// VAE's loss).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FactorVae {
    pub beta: f32,
    pub gamma: f32,
}

impl Objective for FactorVae {
    fn name(&self) -> &'static str {
        "factor_vae"
    }
    fn terms(&self) -> Vec<Term> {
        vec![
            Term {
                name: "recon",
                weight: 1.0,
            },
            Term {
                name: "kl",
                weight: self.beta as f64,
            },
            Term {
                name: TERM_TC,
                weight: self.gamma as f64,
            },
            Term {
                name: TERM_DISC_LOSS,
                weight: 0.0,
            },
            Term {
                name: TERM_DISC_ACCURACY,
                weight: 0.0,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_and_names() {
        let cfg = DiscriminatorConfig::paper(10);
        cfg.validate().unwrap();
        let net = cfg.network();
        assert_eq!(net.modules.len(), 7);
        let layout = cfg.layout();
        assert_eq!(layout.tensors[0].name, "discriminator.fc1.weight");
        assert_eq!(layout.tensors[0].shape, vec![10, 1000]);
        assert_eq!(layout.tensors[13].name, "discriminator.fc7.bias");
        assert_eq!(layout.tensors[13].shape, vec![2]);
        // 10·1000 + 1000 + 5·(1000·1000 + 1000) + 1000·2 + 2
        assert_eq!(layout.count(), 5_018_002);
        assert_eq!(cfg.layout_total_checked(), Some(layout.total));
        assert_eq!(
            (cfg.adam.lr, cfg.adam.beta1, cfg.adam.beta2),
            (1e-4, 0.5, 0.9)
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let base = DiscriminatorConfig::paper(3);
        let msg = |f: &dyn Fn(&mut DiscriminatorConfig)| {
            let mut c = base;
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(msg(&|c| c.layers = 0).contains("discriminator.layers 0"));
        assert!(msg(&|c| c.width = 0).contains("discriminator.width 0"));
        assert!(msg(&|c| c.latent = 0).contains("discriminator.latent 0"));
        assert!(msg(&|c| c.slope = -1.0).contains("discriminator.slope -1"));
        assert!(msg(&|c| c.adam.beta1 = 1.0).contains("discriminator.adam.beta1 1"));
        assert!(msg(&|c| c.adam.lr = f32::NAN).contains("discriminator.adam.lr NaN"));
        let m = msg(&|c| {
            c.width = MAX_WIDTH;
            c.layers = MAX_HIDDEN_LAYERS;
        });
        assert!(m.contains("more than the limit"), "{m}");
    }
}
