//! Objectives and parameter groups.
//!
//! An [`Objective`] names the per-row terms it is made of and how they weigh into the loss; the
//! trainer accumulates each term over an epoch on the GPU (one Kahan-summed slot per name, in
//! one metrics buffer) and reports them by name without knowing what they are, so a new term
//! (total correlation, a discriminator's loss) is a new name, not new trainer code.
//!
//! A [`ParamGroup`] is the optimizer side of a set of parameters: their gradients' optimizer
//! state (Adam's moments), the optimizer's configuration and scratch. A training step is a list
//! of [`Phase`]s, each computing gradients for one group and updating it, all recorded into one
//! compute pass and one submit.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::{GpuParams, ParamLayout};
use crate::ops::adam::{AdamConfig, AdamScratch, adam};
use crate::ops::data::StepState;
use crate::ops::reduce::metric_accumulate;

/// A named per-row term of an objective and its weight in the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub name: &'static str,
    pub weight: f64,
}

/// What a model is trained to minimise, as named terms: loss = Σ weight · term.
pub trait Objective {
    fn name(&self) -> &'static str;
    fn terms(&self) -> Vec<Term>;
}

/// The negative ELBO with a weight β on the KL term (β-VAE; β = 1 is the ELBO):
/// terms `recon` (−log p(x|z)) and `kl` (KL(q(z|x) || p(z))).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Elbo {
    pub beta: f32,
}

impl Objective for Elbo {
    fn name(&self) -> &'static str {
        "elbo"
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
        ]
    }
}

/// Slots of a metrics buffer: `[count, non-finite flag, (sum, compensation) per term]`.
pub mod slots {
    pub const COUNT: usize = 0;
    pub const NONFINITE: usize = 1;
    /// Floats of a metrics buffer for `terms` terms.
    pub fn len(terms: usize) -> usize {
        2 + 2 * terms
    }
    /// The running sum of term `i`.
    pub fn term(i: usize) -> usize {
        2 + 2 * i
    }
}

/// One dispatch per term adds its per-row values (rows of weight > 0 only, with `weights`)
/// into its slot of `metrics`; the first also counts the rows. `rows[i]` holds term i.
pub fn metrics_program(
    ctx: &GpuContext,
    objective: &dyn Objective,
    rows: &[&Tensor<f32>],
    metrics: &Tensor<f32>,
    weights: Option<&Tensor<f32>>,
) -> Result<Program> {
    let terms = objective.terms();
    if rows.len() != terms.len() || metrics.len() != slots::len(terms.len()) {
        return Err(Error::Config(format!(
            "objective {}: {} terms, {} per-row buffers, a metrics buffer of {}",
            objective.name(),
            terms.len(),
            rows.len(),
            metrics.len()
        )));
    }
    let mut p = Program::new();
    for (i, (t, r)) in terms.iter().zip(rows).enumerate() {
        p.push(metric_accumulate(
            ctx,
            &format!("metric {}", t.name),
            r,
            metrics,
            i,
            weights,
        )?);
    }
    Ok(p)
}

/// Means of an objective's terms over the rows accumulated so far.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricMeans {
    /// Σ weight · term mean
    pub loss: f64,
    /// (name, mean per row) of every term, in the objective's order
    pub terms: Vec<(&'static str, f64)>,
    pub count: f64,
    /// a term was NaN or infinite in some row
    pub nonfinite: bool,
}

impl MetricMeans {
    /// Reads a metrics buffer's contents.
    pub fn from_slots(objective: &dyn Objective, m: &[f32]) -> Self {
        let count = m[slots::COUNT] as f64;
        let terms: Vec<(&'static str, f64)> = objective
            .terms()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name, m[slots::term(i)] as f64 / count.max(1.0)))
            .collect();
        let loss = objective
            .terms()
            .iter()
            .zip(&terms)
            .map(|(t, (_, v))| t.weight * v)
            .sum();
        MetricMeans {
            loss,
            terms,
            count,
            nonfinite: m[slots::NONFINITE] != 0.0,
        }
    }

    /// The mean of the term `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|(n, _)| *n == name).map(|t| t.1)
    }
}

/// The optimizer state of a group of parameters (laid out as `layout`): Adam's moments, its
/// configuration and scratch.
pub struct ParamGroup {
    pub name: String,
    pub layout: ParamLayout,
    pub adam: AdamConfig,
    pub m: GpuParams,
    pub v: GpuParams,
    scratch: AdamScratch,
}

impl ParamGroup {
    pub fn new(
        ctx: &GpuContext,
        name: &str,
        layout: &ParamLayout,
        adam: AdamConfig,
    ) -> Result<Self> {
        Ok(ParamGroup {
            name: name.to_string(),
            layout: layout.clone(),
            adam,
            m: GpuParams::zeros(ctx, layout, &format!("{name} adam m"))?,
            v: GpuParams::zeros(ctx, layout, &format!("{name} adam v"))?,
            scratch: AdamScratch::new(ctx)?,
        })
    }

    /// Uploads saved moments (flat layout).
    pub fn load_moments(&self, ctx: &GpuContext, m: &[f32], v: &[f32]) -> Result<()> {
        self.m.flat.write(ctx, m)?;
        self.v.flat.write(ctx, v)
    }

    /// Reads the moments back (flat layout).
    pub fn read_moments(&self, ctx: &GpuContext) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.m.flat.read(ctx)?, self.v.flat.read(ctx)?))
    }

    /// One optimizer step of `params` from `grads` (both laid out as the group).
    pub fn update_program(
        &self,
        ctx: &GpuContext,
        params: &GpuParams,
        grads: &GpuParams,
        state: &StepState,
    ) -> Result<Program> {
        adam(
            ctx,
            &format!("{} adam", self.name),
            &params.flat,
            &grads.flat,
            &self.m.flat,
            &self.v.flat,
            state,
            &self.scratch,
            &self.adam,
        )
    }
}

/// A part of a training step: the program that computes a group's gradients (forward and
/// backward), followed by the group's update.
pub struct Phase {
    pub name: String,
    pub gradients: Program,
    pub update: Program,
}

/// One training step: a prologue (the batch gather), every phase in order, an epilogue (the
/// metric sums, the step counter), to be recorded into one compute pass.
pub fn step_program(prologue: Program, phases: Vec<Phase>, epilogue: Program) -> Program {
    let mut p = prologue;
    for phase in phases {
        p.extend(phase.gradients);
        p.extend(phase.update);
    }
    p.extend(epilogue);
    p
}
