//! The β-TCVAE minibatch decomposition of the KL (shaders/tc.wgsl): per row, the index-code
//! mutual information, the total correlation and the dimension-wise KL, and the gradient of
//! Σ_i w_i (α·mi_i + β·tc_i + γ·dimkl_i) with respect to the samples and the posterior
//! parameters.
//!
//! Layout: the diagonal posterior's parameters `params` (B, 2D) = [μ | log σ²], one sample per
//! row `z` (B, D), row weights `weights` (B,). Rows of weight 0 are padding: they are left out as
//! samples and as posteriors (their terms and gradients are exactly 0 and the other rows do not
//! see them); the number of valid rows M is counted on the GPU from the weights, so a partial
//! last batch needs no upload.
//!
//! With L_ijd = log N(z_id; μ_jd, σ²_jd):
//! - log q(z_i) ≈ logsumexp_j (Σ_d L_ijd + c_ij), log Π_d q(z_id) ≈ Σ_d logsumexp_j (L_ijd + c_ij),
//!   log q(z_i|x_i) = Σ_d L_iid, log p(z_i) = Σ_d log N(z_id; 0, 1);
//! - mi = log q(z|x) − log q(z), tc = log q(z) − log Πq(z), dimkl = log Πq(z) − log p(z), which
//!   sum to the single-sample KL estimate log q(z|x) − log p(z).
//!
//! The log importance weights c_ij, with N' = max(N, M) (the data set holds at least the batch's
//! distinct rows):
//! - [`Estimator::Mws`]: c_ij = −ln(M·N'), as in the paper and its reference code. Its log q(z)
//!   estimates q(z)/N', so its mi is ln N' larger than the stratified estimate for the same
//!   batch (a constant: no effect on the gradient).
//! - [`Estimator::Mss`] (M ≥ 2, m = M − 1): e^c_ii = 1/N', e^c_ij = (N' − m)/(N'·m) for j the next
//!   valid row after i (cyclically: for trailing padding j = (i + 1) mod M), 1/m for the other
//!   valid rows. Every row of e^c sums to 1. This is the matrix the reference code's
//!   `_log_importance_weight_matrix` intends (its strided writes fill columns 0 and 1 instead of
//!   the diagonal and the superdiagonal, and its wrap-around entry sits one row too high).
//! - M = 1 (a batch of one valid row): both estimators use c = −ln N' (W = [1/N']), so
//!   log q(z) = log q(z|x) − ln N', mi = ln N', tc = (D − 1)·ln N' and no division by m = 0.
//! - M = 0: every output is 0.
//!
//! Cost: O(B²·D) arithmetic in each of the three main kernels, no (B, B, D) buffer; the scratch
//! holds a (B, B) matrix (see [`TcScratch::new`]). The kernels give each invocation 4 rows so
//! that every constant loaded serves 4 rows: on lavapipe (2 cores) B = 128, D = 10 takes about
//! 3 ms forward and 4 ms backward, B = 512, D = 10 about 45 ms and 60 ms.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Program, Shader, Tensor, groups_for};
use crate::model::GradWrite;
use crate::ops::shape_err;

/// How log q(z) and log Π q(z_d) are estimated from the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Minibatch weighted sampling: every posterior of the batch weighs 1/(M·N).
    #[default]
    Mws,
    /// Minibatch stratified sampling: the sample's own posterior 1/N, one neighbour
    /// (N − M + 1)/(N·(M − 1)), the others 1/(M − 1).
    Mss,
}

impl Estimator {
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Mws => "mws",
            Estimator::Mss => "mss",
        }
    }

    /// The code of `TcParams::estimator` in shaders/tc.wgsl.
    pub fn code(self) -> u32 {
        match self {
            Estimator::Mws => 0,
            Estimator::Mss => 1,
        }
    }
}

impl std::str::FromStr for Estimator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "mws" => Ok(Estimator::Mws),
            "mss" => Ok(Estimator::Mss),
            other => Err(format!(
                "estimator `{other}`: use mws (minibatch weighted sampling) or mss (minibatch \
                 stratified sampling)"
            )),
        }
    }
}

/// The loss weights: loss = Σ_i w_i (α·mi_i + β·tc_i + γ·dimkl_i). α = β = γ = 1 is the KL.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TcWeights {
    pub alpha: f32,
    pub beta: f32,
    pub gamma: f32,
}

/// Mirrors `TcParams` in shaders/tc.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TcParams {
    pub batch: u32,
    pub dim: u32,
    /// N, the number of images in the data set
    pub dataset_size: u32,
    /// [`Estimator::code`]
    pub estimator: u32,
    pub alpha: f32,
    pub beta: f32,
    pub gamma: f32,
    /// backward: 1 adds the parameter gradient to dparams ([`GradWrite::Accumulate`]), 0 stores
    pub accumulate: u32,
}

/// Per-batch buffers the forward pass writes and the backward pass reads, allocated once for a
/// (batch, latent dimension). Values in padded rows are unspecified except where noted.
pub struct TcScratch {
    /// (B, 4 + D) per row: [log q(z|x), log q(z), log Π_d q(z_d), log p(z) | logsumexp_j
    /// (L_ijd + c_ij) for each d, the estimate of log q(z_id)]; all 0 in padded rows
    pub stats: Tensor<f32>,
    /// (B, B): S_ij = log q(z_i|x_j) for valid i and j (the backward passes' softmax)
    pub pair: Tensor<f32>,
    /// (B, 3D) per row: [μ | 1/σ² | −(log σ² + ln 2π)/2], the constants of the log-densities
    pub prec: Tensor<f32>,
    /// (B, 4) per row: [M, next valid row, previous valid row, 1 if valid else 0] (next =
    /// previous = the row itself for a padded row or the only valid row)
    pub rows: Tensor<u32>,
    batch: usize,
    dim: usize,
}

impl TcScratch {
    /// Columns of [`TcScratch::stats`]; the per-dimension log-sum-exps follow from column 4.
    pub const LOG_QZ_CONDX: usize = 0;
    pub const LOG_QZ: usize = 1;
    pub const LOG_QZ_PRODUCT: usize = 2;
    pub const LOG_PZ: usize = 3;
    pub const LSE_DIM: usize = 4;

    /// Allocates the scratch: 4·B² + 4·B·(4 + 3D) bytes of f32 and 16·B bytes of u32 (the
    /// (B, B) matrix dominates: 64 MiB at B = 4096). An error names the size that does not fit.
    pub fn new(ctx: &GpuContext, batch: usize, dim: usize) -> Result<Self> {
        check_sizes(batch, dim)?;
        Ok(TcScratch {
            stats: Tensor::zeros(ctx, "tc statistics", &[batch, 4 + dim])?,
            pair: Tensor::zeros(ctx, "tc pairwise log-densities", &[batch, batch])?,
            prec: Tensor::zeros(ctx, "tc log-density constants", &[batch, 3 * dim])?,
            rows: Tensor::zeros(ctx, "tc rows", &[batch, 4])?,
            batch,
            dim,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The per-row terms [`tc_forward`] writes, each (B,); 0 for padded rows.
#[derive(Clone, Copy, Debug)]
pub struct TcTerms<'a> {
    /// log q(z|x) − log q(z): the index-code mutual information
    pub mi: &'a Tensor<f32>,
    /// log q(z) − log Π_d q(z_d): the total correlation
    pub tc: &'a Tensor<f32>,
    /// log Π_d q(z_d) − log p(z): the dimension-wise KL
    pub dimkl: &'a Tensor<f32>,
}

fn check_sizes(batch: usize, dim: usize) -> Result<()> {
    // The kernels index in u32; the largest buffers are (B, 3D) and (B, B).
    let fits = |n: Option<usize>| n.is_some_and(|n| n <= u32::MAX as usize);
    if batch == 0
        || dim == 0
        || !fits(batch.checked_mul(dim).and_then(|n| n.checked_mul(3)))
        || !fits(batch.checked_mul(batch))
        || !fits(dim.checked_add(4).and_then(|n| n.checked_mul(batch)))
    {
        return Err(shape_err(
            "tc",
            format!(
                "batch {batch}, latent {dim}: both must be ≥ 1, and 3·B·D and B² must fit in 32 \
                 bits"
            ),
        ));
    }
    Ok(())
}

/// Checks the shared operands and returns (B, D).
fn check_operands(
    op: &'static str,
    params: &Tensor<f32>,
    z: &Tensor<f32>,
    weights: &Tensor<f32>,
    dataset_size: usize,
    scratch: &TcScratch,
) -> Result<(usize, usize)> {
    let (b, two_d) = params.dims2();
    let d = two_d / 2;
    if params.shape().len() != 2 || two_d % 2 != 0 || d == 0 {
        return Err(shape_err(
            op,
            format!(
                "posterior parameters {:?}: expected (B, 2D) = [mu | logvar] with D ≥ 1",
                params.shape()
            ),
        ));
    }
    check_sizes(b, d)?;
    if z.len() != b * d || z.dims2().1 != d {
        return Err(shape_err(
            op,
            format!(
                "samples {:?} for posterior parameters {:?}: expected ({b}, {d}), one sample per row",
                z.shape(),
                params.shape()
            ),
        ));
    }
    if weights.len() != b {
        return Err(shape_err(
            op,
            format!("row weights {:?} for {b} rows", weights.shape()),
        ));
    }
    if scratch.batch != b || scratch.dim != d {
        return Err(shape_err(
            op,
            format!(
                "scratch for (B, D) = ({}, {}) used with ({b}, {d})",
                scratch.batch, scratch.dim
            ),
        ));
    }
    if dataset_size == 0 || dataset_size > u32::MAX as usize {
        return Err(shape_err(
            op,
            format!("data set size {dataset_size}: must be in [1, {}]", u32::MAX),
        ));
    }
    Ok((b, d))
}

/// Prepares the forward pass, three dispatches: the row table (`scratch.rows`, one workgroup;
/// M comes from the weights on the GPU), the log-density constants (`scratch.prec`), then the
/// terms `terms.mi`, `terms.tc`, `terms.dimkl` (B,), `scratch.stats` and `scratch.pair`.
/// `dataset_size` is N, the number of images in the training set (a uniform fixed here).
#[allow(clippy::too_many_arguments)] // one argument per kernel operand
pub fn tc_forward(
    ctx: &GpuContext,
    label: &str,
    params: &Tensor<f32>,
    z: &Tensor<f32>,
    weights: &Tensor<f32>,
    dataset_size: usize,
    estimator: Estimator,
    scratch: &TcScratch,
    terms: TcTerms<'_>,
) -> Result<Program> {
    let (b, d) = check_operands("tc_forward", params, z, weights, dataset_size, scratch)?;
    for (name, t) in [("mi", terms.mi), ("tc", terms.tc), ("dimkl", terms.dimkl)] {
        if t.len() != b {
            return Err(shape_err(
                "tc_forward",
                format!(
                    "term `{name}` {:?} for {b} rows: expected ({b},)",
                    t.shape()
                ),
            ));
        }
    }
    let p = TcParams {
        batch: b as u32,
        dim: d as u32,
        dataset_size: dataset_size as u32,
        estimator: estimator.code(),
        alpha: 0.0,
        beta: 0.0,
        gamma: 0.0,
        accumulate: 0,
    };
    let mut prog = Program::new();
    prog.push(Dispatch::new(
        ctx,
        &kernel("tc_rows", d),
        &format!("{label} rows"),
        &[(2, weights.binding()), (15, scratch.rows.binding())],
        Some((3, &p)),
        [1, 1, 1],
    )?);
    prog.push(Dispatch::new(
        ctx,
        &kernel("tc_prepare", d),
        &format!("{label} constants"),
        &[(0, params.binding()), (13, scratch.prec.binding())],
        Some((3, &p)),
        groups_for(b * d, 64),
    )?);
    prog.push(Dispatch::new(
        ctx,
        &kernel("tc_forward", d),
        label,
        &[
            (1, z.binding()),
            (4, scratch.stats.binding()),
            (5, terms.mi.binding()),
            (6, terms.tc.binding()),
            (7, terms.dimkl.binding()),
            (8, scratch.pair.binding()),
            (14, scratch.prec.binding()),
            (16, scratch.rows.binding()),
        ],
        Some((3, &p)),
        row_groups(b),
    )?);
    Ok(prog)
}

/// Prepares the backward pass of loss = Σ_i w_i (α·mi_i + β·tc_i + γ·dimkl_i), to run after
/// [`tc_forward`] with the same operands and scratch: two dispatches,
/// 1. `dz` (B, D) += ∂loss/∂z (always accumulated: the decoder's gradient is already there;
///    padded rows are left untouched),
/// 2. `dparams` (B, 2D) = or += ∂loss/∂[μ | log σ²] through every pairwise term, as `write`
///    says (padded rows: 0 stored, or nothing added).
///
/// The path from z back to the parameters (the reparameterisation) is not included: the
/// posterior's `sample_backward` carries `dz` there afterwards, so this runs before it.
///
/// The backward kernels read the posterior through what [`tc_forward`] left in `scratch` (the
/// parameters at forward time); `params`, `z` and `weights` must be the forward's operands (the
/// shapes are checked here, `z` and `weights` are read again). α, β, γ are uniforms fixed here:
/// a schedule rewrites them with `Dispatch::set_params` on the program's two dispatches (the
/// struct is [`TcParams`]), outside the step.
#[allow(clippy::too_many_arguments)] // one argument per kernel operand
pub fn tc_backward(
    ctx: &GpuContext,
    label: &str,
    params: &Tensor<f32>,
    z: &Tensor<f32>,
    weights: &Tensor<f32>,
    dataset_size: usize,
    estimator: Estimator,
    scratch: &TcScratch,
    loss: TcWeights,
    dz: &Tensor<f32>,
    dparams: &Tensor<f32>,
    write: GradWrite,
) -> Result<Program> {
    let (b, d) = check_operands("tc_backward", params, z, weights, dataset_size, scratch)?;
    if dz.len() != b * d {
        return Err(shape_err(
            "tc_backward",
            format!("dz {:?}: expected ({b}, {d}) like the samples", dz.shape()),
        ));
    }
    if dparams.len() != 2 * b * d {
        return Err(shape_err(
            "tc_backward",
            format!(
                "dparams {:?}: expected ({b}, {}) like the posterior parameters",
                dparams.shape(),
                2 * d
            ),
        ));
    }
    for (name, v) in [
        ("alpha", loss.alpha),
        ("beta", loss.beta),
        ("gamma", loss.gamma),
    ] {
        if !v.is_finite() {
            return Err(crate::Error::Config(format!(
                "tc_backward: loss weight {name} = {v} must be finite"
            )));
        }
    }
    let p = TcParams {
        batch: b as u32,
        dim: d as u32,
        dataset_size: dataset_size as u32,
        estimator: estimator.code(),
        alpha: loss.alpha,
        beta: loss.beta,
        gamma: loss.gamma,
        accumulate: (write == GradWrite::Accumulate) as u32,
    };
    let common = [
        (1, z.binding()),
        (2, weights.binding()),
        (9, scratch.stats.binding()),
        (10, scratch.pair.binding()),
        (14, scratch.prec.binding()),
        (16, scratch.rows.binding()),
    ];
    let mut prog = Program::new();
    let mut bz = common.to_vec();
    bz.push((11, dz.binding()));
    prog.push(Dispatch::new(
        ctx,
        &kernel("tc_backward_z", d),
        &format!("{label} dz"),
        &bz,
        Some((3, &p)),
        row_groups(b),
    )?);
    let mut bp = common.to_vec();
    bp.push((12, dparams.binding()));
    prog.push(Dispatch::new(
        ctx,
        &kernel("tc_backward_params", d),
        &format!("{label} dparams"),
        &bp,
        Some((3, &p)),
        row_groups(b),
    )?);
    Ok(prog)
}

/// Dimensions the O(B²·D) kernels keep in private arrays at a time (`CHUNK` in the shader).
const MAX_CHUNK: usize = 8;
/// Rows per invocation and invocations per workgroup of those kernels (`R`, `WGR`).
const ROWS_PER_INVOCATION: usize = 4;
const INVOCATIONS: usize = 16;

/// An entry of shaders/tc.wgsl compiled for `dim` latent dimensions.
fn kernel(entry: &'static str, dim: usize) -> KernelKey {
    KernelKey::new(Shader::Tc, entry).u32("CHUNK", dim.clamp(1, MAX_CHUNK) as u32)
}

/// Workgroups of the O(B²·D) kernels (grid-stride beyond the dispatch limit).
fn row_groups(b: usize) -> [u32; 3] {
    groups_for(b.div_ceil(ROWS_PER_INVOCATION), INVOCATIONS)
}

#[cfg(test)]
mod tests {
    use super::Estimator;

    #[test]
    fn estimator_names_round_trip() {
        for e in [Estimator::Mws, Estimator::Mss] {
            assert_eq!(e.name().parse::<Estimator>(), Ok(e));
            let s = serde_json::to_string(&e).unwrap();
            assert_eq!(s, format!("\"{}\"", e.name()));
            assert_eq!(serde_json::from_str::<Estimator>(&s).unwrap(), e);
        }
        let e = "mwss".parse::<Estimator>().unwrap_err();
        assert!(e.contains("estimator `mwss`"), "{e}");
    }
}
