//! Adam / AdamW with bias correction, fused over every parameter, with optional global-norm
//! clipping.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Program, Shader, Tensor, groups_for};
use crate::ops::data::StepState;
use crate::ops::reduce::{SUM_GROUPS, sum_all};
use crate::ops::shape_err;

/// Optimizer settings (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value; 0 turns clipping off.
    pub clip_norm: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: 0.0,
        }
    }
}

/// Mirrors `AdamParams` in shaders/adam.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamParams {
    pub n: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub clip: f32,
    pub _pad: u32,
}

/// Scratch the optimizer step needs when clipping: partial sums and the squared norm.
pub struct AdamScratch {
    pub partials: Tensor<f32>,
    pub norm_sq: Tensor<f32>,
}

impl AdamScratch {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(AdamScratch {
            partials: Tensor::zeros(ctx, "grad norm partials", &[SUM_GROUPS])?,
            norm_sq: Tensor::zeros(ctx, "grad norm^2", &[1])?,
        })
    }
}

/// Prepares one optimizer step over flat `params`, `grads`, `m`, `v` (n,), reading the step
/// number from `state` (this is step state[0] + 1). With clipping, the squared global norm is
/// reduced first (two more dispatches).
#[allow(clippy::too_many_arguments)]
pub fn adam(
    ctx: &GpuContext,
    label: &str,
    params: &Tensor<f32>,
    grads: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    state: &StepState,
    scratch: &AdamScratch,
    cfg: &AdamConfig,
) -> Result<Program> {
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n {
        return Err(shape_err(
            "adam",
            format!(
                "params {:?}, grads {:?}, m {:?}, v {:?} must have equal sizes",
                params.shape(),
                grads.shape(),
                m.shape(),
                v.shape()
            ),
        ));
    }
    let mut p = Program::new();
    if cfg.clip_norm > 0.0 {
        p.extend(sum_all(
            ctx,
            "grad norm^2",
            grads,
            &scratch.partials,
            &scratch.norm_sq,
            0,
            1.0,
            true,
            false,
        )?);
    }
    let ap = AdamParams {
        n: n as u32,
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        clip: cfg.clip_norm,
        _pad: 0,
    };
    p.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Adam, "adam"),
        label,
        &[
            (0, params.binding()),
            (1, grads.binding()),
            (2, m.binding()),
            (3, v.binding()),
            (4, state.tensor.binding()),
            (5, scratch.norm_sq.binding()),
        ],
        Some((6, &ap)),
        groups_for(n.div_ceil(4), 64 * 4),
    )?);
    Ok(p)
}
