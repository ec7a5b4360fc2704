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
    /// > 0: the gradient is scaled by min(1, (step + 1) / warmup), step from the step state
    pub warmup: u32,
    pub _pad: [u32; 2],
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

/// A linear KL warm-up: at step t (0-based, read from the GPU step state) the KL gradient is
/// scaled by min(1, (t + 1) / `steps`).
#[derive(Clone, Copy)]
pub struct Warmup<'a> {
    pub state: &'a StepState,
    pub steps: u32,
}

/// [`kl_weighted`] with an optional KL warm-up applied to the gradient (the KL values
/// themselves are unscaled).
#[allow(clippy::too_many_arguments)]
pub fn kl_scheduled(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    kl_sample: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
    weights: Option<&Tensor<f32>>,
    warmup: Option<Warmup<'_>>,
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
        warmup: warmup.map_or(0, |w| w.steps),
        _pad: [0; 2],
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
                match warmup {
                    Some(w) => w.state.tensor.binding(),
                    // Never read without a warm-up; enc (read-only here too) stands in, since
                    // the dummy buffer may be bound read-write as the gradient.
                    None => enc.binding(),
                },
            ),
        ],
        Some((4, &params)),
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
