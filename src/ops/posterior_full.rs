//! Kernels of the full-covariance Gaussian posterior N(μ, L Lᵀ) (`shaders/posterior_full.wgsl`):
//! the draw z = μ + L ε, its backward, the closed-form KL with its gradient (β, a ramp, row
//! weights, or the capacity term) and the IWAE log-weights.
//!
//! The parameters of a row are `[μ (D) | v (D) | the strictly lower entries of L, row-major]`,
//! P = 2D + D(D−1)/2 values, with L_ii = exp(v_i / 2) (v_i = log L_ii²): with zero lower entries
//! the first 2D values are exactly the diagonal posterior's `[μ | log σ²]`, and the draw, the
//! KL and the log-weights equal the diagonal ones. The f64 twins are in
//! [`crate::cpu::posterior_full`].

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::kl::{Capacity, KlRamp};
use crate::ops::reparam::{RngStep, Stream};
use crate::ops::shape_err;

/// Most latent dimensions the kernels take: one invocation keeps a row's ε in registers.
pub const MAX_LATENT: usize = 64;

/// Values per row, 2D + D(D−1)/2, or `None` when that overflows `usize`.
pub fn param_dim(latent: usize) -> Option<usize> {
    let lower = latent.checked_mul(latent.checked_sub(1)?)? / 2;
    latent.checked_mul(2)?.checked_add(lower)
}

/// Offset in a row of the lower entry (i, j) of L, j < i.
pub fn lower_index(latent: usize, i: usize, j: usize) -> usize {
    2 * latent + i * (i - 1) / 2 + j
}

/// Refuses a latent size the kernels cannot take.
pub fn check_latent(latent: usize) -> Result<()> {
    if latent == 0 || latent > MAX_LATENT {
        return Err(Error::Config(format!(
            "latent size {latent} (--latent): the full-covariance posterior (--posterior full) \
             takes 1 to {MAX_LATENT} dimensions"
        )));
    }
    Ok(())
}

/// Mirrors `FullParams` in shaders/posterior_full.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FullParams {
    pub batch: u32,
    pub dim: u32,
    pub samples: u32,
    pub stride: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub stream: u32,
    pub use_state: u32,
    pub accumulate: u32,
    pub write_grad: u32,
    pub use_weights: u32,
    pub grad_weight: f32,
    pub ramp: u32,
    pub period: u32,
    pub cap_steps: u32,
    pub gamma: f32,
    pub c_max: f32,
    pub _pad: [u32; 2],
}

/// Checks q (B, P) for `latent` and returns (B, P).
fn check_q(op: &'static str, q: &Tensor<f32>, latent: usize) -> Result<(usize, usize)> {
    check_latent(latent)?;
    let p = param_dim(latent).unwrap_or(usize::MAX);
    let (b, cols) = q.dims2();
    if cols != p || q.is_empty() {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected (B, {p}) = [mu | log L_ii^2 | lower L] for D = {latent}",
                q.label(),
                q.shape()
            ),
        ));
    }
    Ok((b, p))
}

fn check_len(op: &'static str, t: &Tensor<f32>, want: usize, what: &str) -> Result<()> {
    if t.len() != want {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected {want} elements ({what})",
                t.label(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

fn base(b: usize, latent: usize, p: usize, samples: usize) -> FullParams {
    FullParams {
        batch: b as u32,
        dim: latent as u32,
        samples: samples as u32,
        stride: p as u32,
        ..Default::default()
    }
}

/// Prepares the draw: z and ε (K, B, D) from q (B, P), sample s of row b in row s·B + b; ε is
/// the same as [`crate::ops::reparam::reparam_forward`] draws for that (seed, step, stream).
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn full_sample(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    z: &Tensor<f32>,
    eps: &Tensor<f32>,
    samples: usize,
    seed: u64,
    step: RngStep<'_>,
    stream: Stream,
) -> Result<Dispatch> {
    let op = "full_sample";
    let (b, p) = check_q(op, q, latent)?;
    if samples == 0 {
        return Err(shape_err(op, "samples must be at least 1".into()));
    }
    let n = samples * b * latent;
    check_len(op, z, n, "K·B·D")?;
    check_len(op, eps, n, "K·B·D")?;
    let (fixed, state) = match step {
        RngStep::Fixed(s) => (s, None),
        RngStep::State(st) => (0, Some(st)),
    };
    let params = FullParams {
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        step: fixed,
        stream: stream as u32,
        use_state: state.is_some() as u32,
        ..base(b, latent, p, samples)
    };
    let state_binding = match state {
        Some(s) => s.tensor.binding(),
        None => ctx.dummy.as_entire_binding(),
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorFull, "full_sample"),
        label,
        &[
            (1, q.binding()),
            (2, z.binding()),
            (3, eps.binding()),
            (4, state_binding),
        ],
        Some((0, &params)),
        groups_for(samples * b, 64),
    )
}

/// Prepares the backward through the draw: dq (B, P) (+)= [Σ_s dz | Σ_s dz_i ε_i L_ii/2 |
/// Σ_s dz_i ε_j].
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn full_sample_backward(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    dz: &Tensor<f32>,
    eps: &Tensor<f32>,
    dq: &Tensor<f32>,
    samples: usize,
    accumulate: bool,
) -> Result<Dispatch> {
    let op = "full_sample_backward";
    let (b, p) = check_q(op, q, latent)?;
    if samples == 0 {
        return Err(shape_err(op, "samples must be at least 1".into()));
    }
    let n = samples * b * latent;
    check_len(op, dz, n, "K·B·D")?;
    check_len(op, eps, n, "K·B·D")?;
    check_len(op, dq, b * p, "B·P, the shape of q")?;
    let params = FullParams {
        accumulate: accumulate as u32,
        ..base(b, latent, p, samples)
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorFull, "full_sample_backward"),
        label,
        &[
            (1, q.binding()),
            (5, dz.binding()),
            (6, eps.binding()),
            (7, dq.binding()),
        ],
        Some((0, &params)),
        groups_for(b * p, 64),
    )
}

/// Prepares the KL per row (B,) and the marginal KL per dimension (B, D); with
/// `grad = Some((dq, β))` also dq = β·s_t·w_b·∂KL_b/∂q (overwrites), s_t the ramp's factor at
/// the step in the step state (1 without a ramp), w_b the row weights (1 without).
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn full_kl(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    kl: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
    weights: Option<&Tensor<f32>>,
    ramp: Option<KlRamp<'_>>,
) -> Result<Dispatch> {
    let op = "full_kl";
    let (b, p) = check_q(op, q, latent)?;
    check_len(op, kl, b, "B")?;
    check_len(op, kl_elem, b * latent, "B·D")?;
    if let Some(w) = weights {
        check_len(op, w, b, "B row weights")?;
    }
    if let Some((g, _)) = grad {
        check_len(op, g, b * p, "B·P, the shape of q")?;
    }
    let params = FullParams {
        write_grad: grad.is_some() as u32,
        grad_weight: grad.map_or(0.0, |g| g.1),
        use_weights: weights.is_some() as u32,
        ramp: ramp.map_or(0, |r| r.ramp),
        period: ramp.map_or(0, |r| r.period),
        ..base(b, latent, p, 1)
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorFull, "full_kl"),
        label,
        &[
            (1, q.binding()),
            (
                4,
                match ramp {
                    Some(r) => r.state.tensor.binding(),
                    // Never read without a ramp; q (read-only here too) stands in, since the
                    // dummy buffer may be bound read-write as the gradient.
                    None => q.binding(),
                },
            ),
            (
                7,
                match grad {
                    Some((g, _)) => g.binding(),
                    None => ctx.dummy.as_entire_binding(),
                },
            ),
            (8, kl.binding()),
            (9, kl_elem.binding()),
            // Without weights the kernel never reads the slot; q stands in.
            (10, weights.unwrap_or(q).binding()),
        ],
        Some((0, &params)),
        groups_for(b, 64),
    )
}

/// Prepares the capacity term from the per-row KL that [`full_kl`] wrote: `penalty` (B,) =
/// γ·|KL − C(t)| in every row, dq = γ·sign(KL − C(t))·w_b·∂KL_b/∂q (overwrites), KL = Σ_b w_b kl_b.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn full_kl_capacity(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    kl: &Tensor<f32>,
    dq: &Tensor<f32>,
    penalty: &Tensor<f32>,
    weights: &Tensor<f32>,
    capacity: Capacity<'_>,
) -> Result<Dispatch> {
    let op = "full_kl_capacity";
    let (b, p) = check_q(op, q, latent)?;
    check_len(op, kl, b, "B")?;
    check_len(op, penalty, b, "B")?;
    check_len(op, weights, b, "B row weights")?;
    check_len(op, dq, b * p, "B·P, the shape of q")?;
    let params = FullParams {
        cap_steps: capacity.steps,
        gamma: capacity.gamma,
        c_max: capacity.c_max,
        ..base(b, latent, p, 1)
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorFull, "full_kl_capacity"),
        label,
        &[
            (1, q.binding()),
            (4, capacity.state.tensor.binding()),
            (7, dq.binding()),
            (10, weights.binding()),
            (11, kl.binding()),
            (12, penalty.binding()),
        ],
        Some((0, &params)),
        groups_for(b, 64),
    )
}

/// Prepares the IWAE log-weights log w (K, B) = −nll + log N(z; 0, I) − log q(z|x) from q (B, P),
/// nll (K·B,), z and ε (K, B, D) of [`full_sample`].
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn full_log_weights(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    nll: &Tensor<f32>,
    z: &Tensor<f32>,
    eps: &Tensor<f32>,
    logw: &Tensor<f32>,
    samples: usize,
) -> Result<Dispatch> {
    let op = "full_log_weights";
    let (b, p) = check_q(op, q, latent)?;
    if samples == 0 {
        return Err(shape_err(op, "samples must be at least 1".into()));
    }
    let kb = samples * b;
    check_len(op, nll, kb, "K·B")?;
    check_len(op, logw, kb, "K·B")?;
    check_len(op, z, kb * latent, "K·B·D")?;
    check_len(op, eps, kb * latent, "K·B·D")?;
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorFull, "full_log_weights"),
        label,
        &[
            (1, q.binding()),
            (6, eps.binding()),
            (13, nll.binding()),
            (14, z.binding()),
            (15, logw.binding()),
        ],
        Some((0, &base(b, latent, p, samples))),
        groups_for(kb, 64),
    )
}
