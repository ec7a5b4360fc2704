//! FactorVAE's kernels (shaders/factor.wgsl): the per-dimension permutation of a batch of
//! latents across its valid rows, the discriminator's two-class cross-entropy with its gradient
//! and accuracy, and the total-correlation estimate with its gradient. Twins in
//! [`crate::cpu::factor`].

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Program, Shader, Tensor, groups_for};
use crate::ops::reparam::RngStep;
use crate::ops::shape_err;

/// The Philox counter word that keeps the permutation's keys apart from every other stream
/// (the reparameterisation's 0..2, the binarising gather's `BINARIZE_STREAM`); mirrors
/// `PERMUTE_STREAM` in shaders/factor.wgsl.
pub const PERMUTE_STREAM: u32 = 0x7065_726d;

/// Mirrors `PermuteParams` in shaders/factor.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PermuteParams {
    pub batch: u32,
    pub dim: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// added to state[0] when `use_state` is 1
    pub step: u32,
    pub use_state: u32,
    /// 0: the output is (B, D) z_perm; B: the output is (2B, D) [z; z_perm]
    pub out_row0: u32,
    pub _pad: u32,
}

/// What the permutation's output buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermuteOutput {
    /// (B, D): z_perm alone.
    Alone,
    /// (2B, D): rows 0..B a copy of z, rows B..2B z_perm — the discriminator's input in one
    /// buffer.
    Stacked,
}

/// Prepares z_perm: every latent dimension of z (B, D) permuted independently across the rows
/// whose weight in `w` (B,) is > 0 (the padding rows of a partial batch take no part; their
/// rows of z_perm are written as 0). The permutations come from Philox keyed by `seed` at
/// `step` (with [`RngStep::State`]: the GPU step state, so every training step draws new ones
/// without an upload): element (b, d) gets a 32-bit key and goes to the valid row whose index
/// among the valid rows is its key's rank in column d (ties broken by the row index).
/// Twin: [`crate::cpu::factor::permute_dims`], bit for bit.
///
/// Two dispatches (keys, then ranks); the (B, D) key scratch is allocated here and kept by the
/// returned program, so recording it allocates nothing. Cost O(B²·D) per step.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding, and the RNG's
pub fn permute_dims(
    ctx: &GpuContext,
    label: &str,
    z: &Tensor<f32>,
    w: &Tensor<f32>,
    out: &Tensor<f32>,
    layout: PermuteOutput,
    seed: u64,
    step: RngStep<'_>,
) -> Result<Program> {
    let (b, d) = z.dims2();
    let rows_out = match layout {
        PermuteOutput::Alone => b,
        PermuteOutput::Stacked => 2 * b,
    };
    if z.shape().len() != 2 || b == 0 || d == 0 || w.len() != b || out.shape() != [rows_out, d] {
        return Err(shape_err(
            "permute_dims",
            format!(
                "{label}: z {:?}, row weights {:?}, output {:?}: expected (B, D), (B,) and \
                 ({rows_out}, D) for {layout:?}",
                z.shape(),
                w.shape(),
                out.shape()
            ),
        ));
    }
    u32::try_from(rows_out * d).map_err(|_| {
        shape_err(
            "permute_dims",
            format!("{label}: {rows_out}x{d} elements overflow 32-bit indexing"),
        )
    })?;
    let (fixed, state) = match step {
        RngStep::Fixed(s) => (s, None),
        RngStep::State(st) => (0, Some(st)),
    };
    let params = PermuteParams {
        batch: b as u32,
        dim: d as u32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        step: fixed,
        use_state: state.is_some() as u32,
        out_row0: match layout {
            PermuteOutput::Alone => 0,
            PermuteOutput::Stacked => b as u32,
        },
        _pad: 0,
    };
    let keys = Tensor::<u32>::zeros(ctx, &format!("{label} keys"), &[b, d])?;
    let state_binding = match state {
        Some(s) => s.tensor.binding(),
        // Never read without a state; z (read-only here too) stands in.
        None => z.binding(),
    };
    let mut p = Program::new();
    p.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Factor, "permute_keys"),
        &format!("{label} keys"),
        &[(2, keys.binding()), (3, state_binding)],
        Some((4, &params)),
        groups_for((b * d).div_ceil(4), 64),
    )?);
    p.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Factor, "permute_dims"),
        label,
        &[
            (0, z.binding()),
            (1, w.binding()),
            (5, keys.binding()),
            (6, out.binding()),
        ],
        Some((4, &params)),
        groups_for(b * d, 64),
    )?);
    p.keep(keys.buffer().clone());
    Ok(p)
}

/// Mirrors `DiscLossParams` in shaders/factor.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DiscLossParams {
    pub batch: u32,
    pub _pad: [u32; 3],
}

/// Prepares the discriminator's loss from its logits (2B, 2) on [z; z_perm] (class 0 for rows
/// 0..B, class 1 for rows B..2B) and the row weights `w` (B,):
/// `loss[b] = (CE(logits[b], 0) + CE(logits[B + b], 1)) / 2`,
/// `accuracy[b]` = the mean of the two rows' argmax being right (a tie counts as class 0), and
/// `dlogits` (2B, 2) = ∂(Σ_b w[b]·loss[b])/∂logits, stored, exactly 0 for rows of weight 0.
/// `loss` and `accuracy` are unweighted per-row values (for the metric sums, which weigh
/// nothing and leave out rows of weight 0). Twin: [`crate::cpu::factor::disc_loss`].
pub fn disc_loss(
    ctx: &GpuContext,
    label: &str,
    logits: &Tensor<f32>,
    w: &Tensor<f32>,
    loss: &Tensor<f32>,
    accuracy: &Tensor<f32>,
    dlogits: &Tensor<f32>,
) -> Result<Dispatch> {
    let b = w.len();
    if b == 0
        || logits.shape() != [2 * b, 2]
        || dlogits.shape() != [2 * b, 2]
        || loss.len() != b
        || accuracy.len() != b
    {
        return Err(shape_err(
            "disc_loss",
            format!(
                "{label}: logits {:?}, row weights {:?}, loss {:?}, accuracy {:?}, dlogits {:?}: \
                 expected (2B, 2), (B,), (B,), (B,), (2B, 2)",
                logits.shape(),
                w.shape(),
                loss.shape(),
                accuracy.shape(),
                dlogits.shape()
            ),
        ));
    }
    let params = DiscLossParams {
        batch: b as u32,
        _pad: [0; 3],
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Factor, "disc_loss"),
        label,
        &[
            (7, logits.binding()),
            (8, w.binding()),
            (9, loss.binding()),
            (10, accuracy.binding()),
            (11, dlogits.binding()),
        ],
        Some((12, &params)),
        groups_for(b, 64),
    )
}

/// Mirrors `TcParams` in shaders/factor.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TcParams {
    pub batch: u32,
    pub gamma: f32,
    pub _pad: [u32; 2],
}

/// Prepares the total-correlation estimate from the discriminator's logits (B, 2) on z:
/// `tc[b] = logits[b, 0] − logits[b, 1]` (= log D/(1 − D), D the probability of "from q(z)"),
/// and `dlogits` (B, 2) = γ·w[b]·(1, −1) = ∂(γ Σ_b w[b]·tc[b])/∂logits, stored, exactly 0 for
/// rows of weight 0. Twin: [`crate::cpu::factor::tc_estimate`].
pub fn tc_estimate(
    ctx: &GpuContext,
    label: &str,
    logits: &Tensor<f32>,
    w: &Tensor<f32>,
    tc: &Tensor<f32>,
    dlogits: &Tensor<f32>,
    gamma: f32,
) -> Result<Dispatch> {
    let b = w.len();
    if b == 0 || logits.shape() != [b, 2] || dlogits.shape() != [b, 2] || tc.len() != b {
        return Err(shape_err(
            "tc_estimate",
            format!(
                "{label}: logits {:?}, row weights {:?}, tc {:?}, dlogits {:?}: expected (B, 2), \
                 (B,), (B,), (B, 2)",
                logits.shape(),
                w.shape(),
                tc.shape(),
                dlogits.shape()
            ),
        ));
    }
    let params = TcParams {
        batch: b as u32,
        gamma,
        _pad: [0; 2],
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Factor, "tc_estimate"),
        label,
        &[
            (13, logits.binding()),
            (14, w.binding()),
            (15, tc.binding()),
            (16, dlogits.binding()),
        ],
        Some((17, &params)),
        groups_for(b, 64),
    )
}
