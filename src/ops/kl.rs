//! Closed-form KL(N(μ, σ²) ‖ N(0, I)) per sample and per dimension, gradient fused.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::data::StepState;
use crate::ops::shape_err;

/// Mirrors `KlParams` in shaders/kl.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KlParams {
    pub batch: u32,
    pub dim: u32,
    pub grad_weight: f32,
    pub write_grad: u32,
    pub use_weights: u32,
    /// > 0: the gradient is scaled by [`ramp_factor`] of the step in the step state
    pub ramp: u32,
    /// > 0 (with `ramp`): the ramp restarts every `period` steps (cyclical annealing)
    pub period: u32,
    pub _pad: u32,
}

/// Prepares: kl_sample (B,), kl_elem (B, D) from enc (B, 2D); with `grad = Some((genc, w))`
/// also genc = w·∂KL/∂enc (overwrites; the reparam backward then accumulates into it).
pub fn kl(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    kl_sample: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
) -> Result<Dispatch> {
    kl_weighted(ctx, label, enc, kl_sample, kl_elem, grad, None)
}

/// [`kl`] with row weights `w` (B,): the gradient of row b is w·w[b]·∂KL/∂enc, exactly 0 where
/// the row weight is 0.
pub fn kl_weighted(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    kl_sample: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
    weights: Option<&Tensor<f32>>,
) -> Result<Dispatch> {
    kl_scheduled(ctx, label, enc, kl_sample, kl_elem, grad, weights, None)
}

/// A schedule of the KL's weight in the gradient, read from the GPU step state at every step:
/// at step t (0-based) the gradient is scaled by [`ramp_factor`]`(t, ramp, period)`.
/// A linear warm-up is `period = 0`; cyclical annealing restarts the ramp every `period` steps.
#[derive(Clone, Copy)]
pub struct KlRamp<'a> {
    pub state: &'a StepState,
    /// steps over which the weight rises from 1/ramp to 1 (at least 1)
    pub ramp: u32,
    /// 0: one ramp at the start (warm-up); otherwise the length of a cycle in steps
    pub period: u32,
}

impl<'a> KlRamp<'a> {
    /// A linear warm-up over `steps` steps.
    pub fn warmup(state: &'a StepState, steps: u32) -> Self {
        KlRamp {
            state,
            ramp: steps,
            period: 0,
        }
    }
}

/// The factor of a KL ramp at step `t` (0-based): min(1, (t' + 1) / ramp) with t' = t, or
/// t mod period when `period` > 0. `ramp` = 0 means no ramp (factor 1).
pub fn ramp_factor(t: u32, ramp: u32, period: u32) -> f64 {
    if ramp == 0 {
        return 1.0;
    }
    let tt = if period > 0 { t % period } else { t };
    ((tt as f64 + 1.0) / ramp as f64).min(1.0)
}

/// [`kl_weighted`] with an optional ramp (warm-up or cyclical) applied to the gradient (the
/// KL values themselves are unscaled).
#[allow(clippy::too_many_arguments)]
pub fn kl_scheduled(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    kl_sample: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
    weights: Option<&Tensor<f32>>,
    ramp: Option<KlRamp<'_>>,
) -> Result<Dispatch> {
    let (b, two_d) = enc.dims2();
    let d = two_d / 2;
    if let Some(w) = weights
        && w.len() != b
    {
        return Err(shape_err(
            "kl",
            format!("row weights {:?} for {b} rows", w.shape()),
        ));
    }
    if two_d % 2 != 0 || kl_sample.len() != b || kl_elem.len() != b * d {
        return Err(shape_err(
            "kl",
            format!(
                "enc {:?}, kl_sample {:?}, kl_elem {:?}: expected (B, 2D), (B,), (B, D)",
                enc.shape(),
                kl_sample.shape(),
                kl_elem.shape()
            ),
        ));
    }
    if let Some((g, _)) = grad
        && g.len() != enc.len()
    {
        return Err(shape_err(
            "kl",
            format!("gradient {:?} must match enc {:?}", g.shape(), enc.shape()),
        ));
    }
    let params = KlParams {
        batch: b as u32,
        dim: d as u32,
        grad_weight: grad.map(|g| g.1).unwrap_or(0.0),
        write_grad: grad.is_some() as u32,
        use_weights: weights.is_some() as u32,
        ramp: ramp.map_or(0, |r| r.ramp),
        period: ramp.map_or(0, |r| r.period),
        _pad: 0,
    };
    let genc = match grad {
        Some((g, _)) => g.binding(),
        None => ctx.dummy.as_entire_binding(),
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Kl, "kl"),
        label,
        &[
            (0, enc.binding()),
            (1, kl_sample.binding()),
            (2, kl_elem.binding()),
            (3, genc),
            // Without weights the kernel never reads the slot; enc stands in.
            (10, weights.unwrap_or(enc).binding()),
            (
                11,
                match ramp {
                    Some(r) => r.state.tensor.binding(),
                    // Never read without a ramp; enc (read-only here too) stands in, since
                    // the dummy buffer may be bound read-write as the gradient.
                    None => enc.binding(),
                },
            ),
        ],
        Some((4, &params)),
        groups_for(b, 64),
    )
}

/// Mirrors `CapacityParams` in shaders/kl.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CapacityParams {
    pub batch: u32,
    pub dim: u32,
    pub steps: u32,
    pub _pad0: u32,
    pub gamma: f32,
    pub c_max: f32,
    pub _pad1: [u32; 2],
}

/// The controlled-capacity KL term γ·|KL − C(t)|, C(t) = c_max·min(1, t / steps) (t from the
/// step state; `steps` = 0: C = c_max throughout), KL the batch's weighted mean of `kl_sample`.
#[derive(Clone, Copy)]
pub struct Capacity<'a> {
    pub state: &'a StepState,
    pub gamma: f32,
    pub c_max: f32,
    pub steps: u32,
}

/// Prepares the capacity penalty and its gradient from the per-row KL that [`kl_weighted`]
/// wrote into `kl_sample`: `penalty` (B,) = γ·|KL − C(t)| in every row (its weighted mean is the
/// penalty), and genc (B, 2D) = γ·sign(KL − C(t))·w_b·∂KL_b/∂enc (overwrites), with KL =
/// Σ_b w_b·kl_b over the row weights `weights`.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn kl_capacity(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    kl_sample: &Tensor<f32>,
    genc: &Tensor<f32>,
    penalty: &Tensor<f32>,
    weights: &Tensor<f32>,
    capacity: Capacity<'_>,
) -> Result<Dispatch> {
    let (b, two_d) = enc.dims2();
    if two_d % 2 != 0
        || kl_sample.len() != b
        || penalty.len() != b
        || weights.len() != b
        || genc.len() != enc.len()
    {
        return Err(shape_err(
            "kl capacity",
            format!(
                "enc {:?}, kl {:?}, penalty {:?}, weights {:?}, genc {:?}: expected (B, 2D), \
                 (B,), (B,), (B,), (B, 2D)",
                enc.shape(),
                kl_sample.shape(),
                penalty.shape(),
                weights.shape(),
                genc.shape()
            ),
        ));
    }
    let params = CapacityParams {
        batch: b as u32,
        dim: (two_d / 2) as u32,
        steps: capacity.steps,
        _pad0: 0,
        gamma: capacity.gamma,
        c_max: capacity.c_max,
        _pad1: [0; 2],
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Kl, "kl_capacity"),
        label,
        &[
            (0, enc.binding()),
            (3, genc.binding()),
            (10, weights.binding()),
            (11, capacity.state.tensor.binding()),
            (13, kl_sample.binding()),
            (14, penalty.binding()),
        ],
        Some((12, &params)),
        groups_for(b, 64),
    )
}

/// Mirrors `IwaeParams` in shaders/kl.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct IwaeParams {
    pub batch: u32,
    pub dim: u32,
    pub samples: u32,
    pub _pad: u32,
}

/// Prepares the importance log-weights log w (K, B) = −nll + log p(z) − log q(z|x) from
/// enc (B, 2D), nll (K·B,), z and ε (K, B, D).
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn iwae_log_weights(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    nll: &Tensor<f32>,
    z: &Tensor<f32>,
    eps: &Tensor<f32>,
    logw: &Tensor<f32>,
    samples: usize,
) -> Result<Dispatch> {
    let (b, two_d) = enc.dims2();
    let d = two_d / 2;
    let kb = samples * b;
    if nll.len() != kb || logw.len() != kb || z.len() != kb * d || eps.len() != kb * d {
        return Err(shape_err(
            "iwae_log_weights",
            format!(
                "enc {:?}, nll {:?}, z {:?}, eps {:?}, logw {:?} for K={samples}",
                enc.shape(),
                nll.shape(),
                z.shape(),
                eps.shape(),
                logw.shape()
            ),
        ));
    }
    let params = IwaeParams {
        batch: b as u32,
        dim: d as u32,
        samples: samples as u32,
        _pad: 0,
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Kl, "iwae_log_weights"),
        label,
        &[
            (0, enc.binding()),
            (5, nll.binding()),
            (6, z.binding()),
            (7, eps.binding()),
            (8, logw.binding()),
        ],
        Some((9, &params)),
        groups_for(kb, 64),
    )
}
