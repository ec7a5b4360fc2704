//! Fused reparameterization `z = μ + σ·ε`, ε drawn in-shader, and its backward.
//!
//! ε is Philox4x32-10 of (element / 4, step, stream) under the seed, then Box–Muller in f32.
//! The Philox integers are bit-identical on every adapter; ε agrees across adapters (and with
//! the f64 twin [`crate::cpu::reparam_eps`]) only to float accuracy, because WGSL's `log`,
//! `sqrt`, `sin` and `cos` are specified to within an error bound. See [`crate::rng`].

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::data::StepState;
use crate::ops::shape_err;

/// Which random stream a draw belongs to; the same (seed, step) in two streams gives
/// independent ε.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    Train = 0,
    Eval = 1,
    Prior = 2,
}

/// Mirrors `ReparamParams` in shaders/reparam.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReparamParams {
    pub batch: u32,
    pub dim: u32,
    pub samples: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub stream: u32,
    pub use_state: u32,
    pub accumulate: u32,
    pub _pad: [u32; 3],
}

/// Where the RNG step comes from: a fixed number, or the GPU step state plus an offset.
#[derive(Clone, Copy)]
pub enum RngStep<'a> {
    Fixed(u32),
    State(&'a StepState),
}

fn check(enc: &Tensor<f32>, z: &Tensor<f32>, samples: usize) -> Result<(usize, usize)> {
    let (b, two_d) = enc.dims2();
    if two_d % 2 != 0 || two_d == 0 {
        return Err(shape_err(
            "reparam",
            format!(
                "{} {:?}: expected (B, 2D) [mu | logvar]",
                enc.label(),
                enc.shape()
            ),
        ));
    }
    let d = two_d / 2;
    if z.len() != samples * b * d || samples == 0 {
        return Err(shape_err(
            "reparam",
            format!(
                "{} {:?}: expected (K={samples}, B={b}, D={d}) elements",
                z.label(),
                z.shape()
            ),
        ));
    }
    Ok((b, d))
}

/// Prepares the forward: z, ε (K, B, D) from enc (B, 2D).
#[allow(clippy::too_many_arguments)]
pub fn reparam_forward(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    z: &Tensor<f32>,
    eps: &Tensor<f32>,
    samples: usize,
    seed: u64,
    step: RngStep<'_>,
    stream: Stream,
) -> Result<Dispatch> {
    let (b, d) = check(enc, z, samples)?;
    check(enc, eps, samples)?;
    let (fixed, state) = match step {
        RngStep::Fixed(s) => (s, None),
        RngStep::State(st) => (0, Some(st)),
    };
    let params = ReparamParams {
        batch: b as u32,
        dim: d as u32,
        samples: samples as u32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        step: fixed,
        stream: stream as u32,
        use_state: state.is_some() as u32,
        accumulate: 0,
        _pad: [0; 3],
    };
    let state_binding = match state {
        Some(s) => s.tensor.binding(),
        None => ctx.dummy.as_entire_binding(),
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Reparam, "reparam_forward"),
        label,
        &[
            (0, enc.binding()),
            (1, z.binding()),
            (2, eps.binding()),
            (3, state_binding),
        ],
        Some((4, &params)),
        groups_for((samples * b * d).div_ceil(4), 64),
    )
}

/// Prepares the backward: genc (B, 2D) (+)= [Σ_k dz | Σ_k dz·ε·σ/2].
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn reparam_backward(
    ctx: &GpuContext,
    label: &str,
    enc: &Tensor<f32>,
    dz: &Tensor<f32>,
    eps: &Tensor<f32>,
    genc: &Tensor<f32>,
    samples: usize,
    accumulate: bool,
) -> Result<Dispatch> {
    let (b, d) = check(enc, dz, samples)?;
    check(enc, eps, samples)?;
    if genc.len() != enc.len() {
        return Err(shape_err(
            "reparam_backward",
            format!(
                "{} {:?} must match {:?}",
                genc.label(),
                genc.shape(),
                enc.shape()
            ),
        ));
    }
    let params = ReparamParams {
        batch: b as u32,
        dim: d as u32,
        samples: samples as u32,
        accumulate: accumulate as u32,
        ..Default::default()
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Reparam, "reparam_backward"),
        label,
        &[
            (0, enc.binding()),
            (5, dz.binding()),
            (6, eps.binding()),
            (7, genc.binding()),
        ],
        Some((4, &params)),
        groups_for(b * d, 64),
    )
}
