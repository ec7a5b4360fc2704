//! The importance-weighted bound as a training objective (`shaders/iwae_train.wgsl`): the
//! softmax of the log-weights over each input's K draws (normalised importance weights, the
//! per-row loss), and the gradient pieces that turn the ELBO's kernels into the IWAE's: the
//! rescaling of the likelihood's gradient, the prior's gradient at z and the log-determinant's
//! at the posterior's parameters. Mirrored by [`crate::cpu::iwae_train`].

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::shape_err;

/// Mirrors `IwParams` in shaders/iwae_train.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct IwParams {
    pub batch: u32,
    pub samples: u32,
    pub cols: u32,
    pub stride: u32,
    pub offset: u32,
    pub scale: f32,
    pub _pad: [u32; 2],
}

fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{what} {v} exceeds 2^32 - 1")))
}

/// K·B·cols, checked.
fn total(op: &'static str, batch: usize, samples: usize, cols: usize) -> Result<usize> {
    let n = batch
        .checked_mul(samples)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| shape_err(op, format!("{samples}·{batch}·{cols} overflows")))?;
    to_u32(op, "elements", n)?;
    Ok(n)
}

/// The per-row buffers of [`iwae_softmax`].
#[derive(Clone, Copy)]
pub struct IwaeRows<'a> {
    /// (K·B,) ω_sb = softmax_s(log w_sb)
    pub omega: &'a Tensor<f32>,
    /// (K·B,) w_b·ω_sb: the loss's derivative with respect to each draw's log q
    pub weighted: &'a Tensor<f32>,
    /// (B,) log K − logsumexp_s log w_sb, the negative IWAE bound of each input
    pub loss: &'a Tensor<f32>,
    /// (B,) the mean reconstruction NLL over the K draws
    pub recon: &'a Tensor<f32>,
}

/// Prepares, for `logw` and `nll` (K·B,) and the row weights `w` (B,), the buffers of
/// [`IwaeRows`].
pub fn iwae_softmax(
    ctx: &GpuContext,
    label: &str,
    logw: &Tensor<f32>,
    nll: &Tensor<f32>,
    w: &Tensor<f32>,
    out: IwaeRows<'_>,
    samples: usize,
) -> Result<Dispatch> {
    let b = w.len();
    let kb = total("iwae_softmax", b, samples, 1)?;
    if b == 0
        || samples == 0
        || logw.len() != kb
        || nll.len() != kb
        || out.omega.len() != kb
        || out.weighted.len() != kb
        || out.loss.len() != b
        || out.recon.len() != b
    {
        return Err(shape_err(
            "iwae_softmax",
            format!(
                "{label}: logw {:?}, nll {:?}, w {:?}, omega {:?}, wω {:?}, loss {:?}, recon {:?} for K={samples}",
                logw.shape(),
                nll.shape(),
                w.shape(),
                out.omega.shape(),
                out.weighted.shape(),
                out.loss.shape(),
                out.recon.shape()
            ),
        ));
    }
    let p = IwParams {
        batch: to_u32("iwae_softmax", "batch", b)?,
        samples: to_u32("iwae_softmax", "samples", samples)?,
        ..Default::default()
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::IwaeTrain, "iwae_softmax"),
        label,
        &[
            (0, logw.binding()),
            (1, nll.binding()),
            (2, w.binding()),
            (3, out.omega.binding()),
            (4, out.weighted.binding()),
            (5, out.loss.binding()),
            (6, out.recon.binding()),
        ],
        Some((40, &p)),
        groups_for(b, 64),
    )
}

/// Prepares `g[r, j] *= scale · omega[r]` for a (K·B, cols) gradient `g` and `omega` (K·B,).
pub fn iwae_rescale(
    ctx: &GpuContext,
    label: &str,
    g: &Tensor<f32>,
    omega: &Tensor<f32>,
    scale: f32,
) -> Result<Dispatch> {
    let rows = omega.len();
    if rows == 0 || !g.len().is_multiple_of(rows) || g.is_empty() {
        return Err(shape_err(
            "iwae_rescale",
            format!(
                "{label}: g {:?} is not a whole number of rows of omega {:?}",
                g.shape(),
                omega.shape()
            ),
        ));
    }
    let cols = g.len() / rows;
    let n = total("iwae_rescale", rows, 1, cols)?;
    let p = IwParams {
        batch: to_u32("iwae_rescale", "rows", rows)?,
        samples: 1,
        cols: to_u32("iwae_rescale", "cols", cols)?,
        scale,
        ..Default::default()
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::IwaeTrain, "iwae_rescale"),
        label,
        &[(10, g.binding()), (11, omega.binding())],
        Some((40, &p)),
        groups_for(n, 64),
    )
}

/// Prepares `dz[r, j] += weighted[r] · z[r, j]` for z and dz (K·B, D) and `weighted` (K·B,):
/// the gradient of −log p(z) under the weights w_b ω_sb.
pub fn iwae_prior_dz(
    ctx: &GpuContext,
    label: &str,
    z: &Tensor<f32>,
    weighted: &Tensor<f32>,
    dz: &Tensor<f32>,
) -> Result<Dispatch> {
    let rows = weighted.len();
    let (zr, d) = z.dims2();
    if rows == 0 || zr != rows || dz.shape() != z.shape() || d == 0 {
        return Err(shape_err(
            "iwae_prior_dz",
            format!(
                "{label}: z {:?}, dz {:?}, weights {:?}",
                z.shape(),
                dz.shape(),
                weighted.shape()
            ),
        ));
    }
    let n = total("iwae_prior_dz", rows, 1, d)?;
    let p = IwParams {
        batch: to_u32("iwae_prior_dz", "rows", rows)?,
        samples: 1,
        cols: to_u32("iwae_prior_dz", "latent", d)?,
        ..Default::default()
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::IwaeTrain, "iwae_prior_dz"),
        label,
        &[
            (20, dz.binding()),
            (21, z.binding()),
            (22, weighted.binding()),
        ],
        Some((40, &p)),
        groups_for(n, 64),
    )
}

/// Prepares `dparams[b, offset + i] += −½ Σ_s coef[s·B + b]` for i < `dim`, `dparams`
/// (B, stride) and `coef` (K·B,): the fixed-ε gradient of a Gaussian posterior's log density
/// of its own draw, −Σ_i log L_ii with L_ii = exp(v_i / 2) stored at `offset + i`, weighted by
/// coef = ∂L/∂log q.
pub fn iwae_logdet_backward(
    ctx: &GpuContext,
    label: &str,
    coef: &Tensor<f32>,
    dparams: &Tensor<f32>,
    dim: usize,
    offset: usize,
    samples: usize,
) -> Result<Dispatch> {
    let (b, stride) = dparams.dims2();
    let fits = offset.checked_add(dim).is_some_and(|e| e <= stride);
    let kb = total("iwae_logdet_backward", b, samples, 1)?;
    if b == 0 || dim == 0 || samples == 0 || !fits || coef.len() != kb {
        return Err(shape_err(
            "iwae_logdet_backward",
            format!(
                "{label}: {dim} log-scales at {offset} of dparams {:?}, coef {:?} for K={samples}",
                dparams.shape(),
                coef.shape()
            ),
        ));
    }
    let n = total("iwae_logdet_backward", b, 1, dim)?;
    let p = IwParams {
        batch: to_u32("iwae_logdet_backward", "batch", b)?,
        samples: to_u32("iwae_logdet_backward", "samples", samples)?,
        cols: to_u32("iwae_logdet_backward", "latent", dim)?,
        stride: to_u32("iwae_logdet_backward", "stride", stride)?,
        offset: to_u32("iwae_logdet_backward", "offset", offset)?,
        ..Default::default()
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::IwaeTrain, "iwae_logdet_backward"),
        label,
        &[(30, dparams.binding()), (31, coef.binding())],
        Some((40, &p)),
        groups_for(n, 64),
    )
}
