//! Deterministic reductions: column sums, row sums, sums to a scalar (two stages), log-mean-exp
//! over samples, and the training loss bookkeeping.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Program, Shader, Tensor, groups_for};
use crate::ops::shape_err;

/// Mirrors `ReduceParams` in shaders/reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReduceParams {
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    pub accumulate: u32,
    pub square: u32,
    pub out_index: u32,
    pub groups: u32,
    pub _pad: u32,
}

fn reduce_dispatch(
    ctx: &GpuContext,
    entry: &'static str,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    params: ReduceParams,
    groups: [u32; 3],
) -> Result<Dispatch> {
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Reduce, entry),
        label,
        &[(0, x.binding()), (1, y.binding())],
        Some((2, &params)),
        groups,
    )
}

/// Which axis of x (R, C) a [`sum_axis`] reduction removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Σ over rows → (C,): bias gradients.
    Rows,
    /// Σ over columns → (R,), one workgroup per row.
    Cols,
}

/// y (+)= scale · Σ over `axis` of x (R, C).
pub fn sum_axis(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    axis: Axis,
    scale: f32,
    accumulate: bool,
) -> Result<Dispatch> {
    let (r, c) = x.dims2();
    let (entry, out_len, groups) = match axis {
        Axis::Rows => ("col_sum", c, groups_for(c, 64)),
        Axis::Cols => ("row_sum", r, [r.min(65535) as u32, 1, 1]),
    };
    if y.len() != out_len {
        return Err(shape_err(
            "sum_axis",
            format!("{axis:?}: {:?} -> {:?}", x.shape(), y.shape()),
        ));
    }
    let p = ReduceParams {
        rows: r as u32,
        cols: c as u32,
        scale,
        accumulate: accumulate as u32,
        ..Default::default()
    };
    reduce_dispatch(ctx, entry, label, x, y, p, groups)
}

/// y (C,) (+)= scale · Σ_rows x (R, C).
pub fn col_sum(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    scale: f32,
    accumulate: bool,
) -> Result<Dispatch> {
    sum_axis(ctx, label, x, y, Axis::Rows, scale, accumulate)
}

/// y (R,) (+)= scale · Σ_cols x (R, C).
pub fn row_sum(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    scale: f32,
    accumulate: bool,
) -> Result<Dispatch> {
    sum_axis(ctx, label, x, y, Axis::Cols, scale, accumulate)
}

/// Number of partial sums the scalar reductions use.
pub const SUM_GROUPS: usize = 256;

/// A two-stage scalar reduction: `partials` (SUM_GROUPS,) is scratch; y[out_index] (+)=
/// scale · Σ x (or Σ x² with `square`).
#[allow(clippy::too_many_arguments)]
pub fn sum_all(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor<f32>,
    partials: &Tensor<f32>,
    y: &Tensor<f32>,
    out_index: usize,
    scale: f32,
    square: bool,
    accumulate: bool,
) -> Result<Program> {
    if partials.len() < SUM_GROUPS || out_index >= y.len() {
        return Err(shape_err(
            "sum_all",
            format!(
                "partials {:?} (need {SUM_GROUPS}), out index {out_index} of {:?}",
                partials.shape(),
                y.shape()
            ),
        ));
    }
    let n = x.len();
    let stage1 = ReduceParams {
        rows: 1,
        cols: n as u32,
        scale: 1.0,
        square: square as u32,
        groups: SUM_GROUPS as u32,
        ..Default::default()
    };
    let stage2 = ReduceParams {
        rows: 1,
        cols: SUM_GROUPS as u32,
        scale,
        accumulate: accumulate as u32,
        out_index: out_index as u32,
        groups: SUM_GROUPS as u32,
        ..Default::default()
    };
    let mut p = Program::new();
    p.push(reduce_dispatch(
        ctx,
        "sum_partial",
        label,
        x,
        partials,
        stage1,
        [SUM_GROUPS as u32, 1, 1],
    )?);
    p.push(reduce_dispatch(
        ctx,
        "sum_final",
        label,
        partials,
        y,
        stage2,
        [1, 1, 1],
    )?);
    Ok(p)
}

/// y (B,) (+)= scale · (logsumexp_k x[k, b] − log K) for x (K, B).
pub fn logmeanexp(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    scale: f32,
    accumulate: bool,
) -> Result<Dispatch> {
    let (k, b) = x.dims2();
    if y.len() != b {
        return Err(shape_err(
            "logmeanexp",
            format!("{:?} -> {:?}", x.shape(), y.shape()),
        ));
    }
    let p = ReduceParams {
        rows: k as u32,
        cols: b as u32,
        scale,
        accumulate: accumulate as u32,
        ..Default::default()
    };
    reduce_dispatch(ctx, "logmeanexp", label, x, y, p, groups_for(b, 64))
}

/// Mirrors `LossParams` in shaders/reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LossParams {
    pub rows: u32,
    pub beta: f32,
    pub use_weights: u32,
    /// [`metric_accumulate`]: the term's slot
    pub slot: u32,
}

/// Slots of the metrics buffer that [`loss_accumulate`] maintains.
pub mod metric {
    pub const RECON: usize = 0;
    pub const KL: usize = 2;
    pub const LOSS: usize = 4;
    pub const COUNT: usize = 6;
    pub const NONFINITE: usize = 7;
    pub const LEN: usize = 8;
}

/// metrics (8,): Kahan-compensated running sums of recon, KL and recon + β·KL over rows,
/// the row count, and a sticky non-finite flag.
pub fn loss_accumulate(
    ctx: &GpuContext,
    label: &str,
    recon: &Tensor<f32>,
    kl: &Tensor<f32>,
    metrics: &Tensor<f32>,
    beta: f32,
) -> Result<Dispatch> {
    loss_accumulate_weighted(ctx, label, recon, kl, metrics, beta, None)
}

/// [`loss_accumulate`] over the rows whose weight in `weights` (B,) is > 0 only: the sums,
/// the count and the non-finite flag leave the padded rows of a partial batch out.
pub fn loss_accumulate_weighted(
    ctx: &GpuContext,
    label: &str,
    recon: &Tensor<f32>,
    kl: &Tensor<f32>,
    metrics: &Tensor<f32>,
    beta: f32,
    weights: Option<&Tensor<f32>>,
) -> Result<Dispatch> {
    if recon.len() != kl.len()
        || metrics.len() != metric::LEN
        || weights.is_some_and(|w| w.len() != recon.len())
    {
        return Err(shape_err(
            "loss_accumulate",
            format!(
                "recon {:?}, kl {:?}, metrics {:?}, row weights {:?}",
                recon.shape(),
                kl.shape(),
                metrics.shape(),
                weights.map(|w| w.shape())
            ),
        ));
    }
    let p = LossParams {
        rows: recon.len() as u32,
        beta,
        use_weights: weights.is_some() as u32,
        slot: 0,
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Reduce, "loss_accumulate"),
        label,
        &[
            (3, recon.binding()),
            (4, kl.binding()),
            (5, metrics.binding()),
            // Without weights the kernel never reads the slot; recon stands in.
            (7, weights.unwrap_or(recon).binding()),
        ],
        Some((6, &p)),
        [1, 1, 1],
    )
}

/// Adds the per-row values of one objective term (B,) into slot `slot` of a metrics buffer laid
/// out as `[count, non-finite flag, (sum, compensation) per term]` (Kahan-compensated); slot 0
/// also counts the rows; a non-finite value sets the sticky flag. With `weights` (B,), only the
/// rows of weight > 0 count.
pub fn metric_accumulate(
    ctx: &GpuContext,
    label: &str,
    term: &Tensor<f32>,
    metrics: &Tensor<f32>,
    slot: usize,
    weights: Option<&Tensor<f32>>,
) -> Result<Dispatch> {
    if metrics.len() < 2 + 2 * (slot + 1) || weights.is_some_and(|w| w.len() != term.len()) {
        return Err(shape_err(
            "metric_accumulate",
            format!(
                "term {:?}, metrics {:?}, slot {slot}, row weights {:?}",
                term.shape(),
                metrics.shape(),
                weights.map(|w| w.shape())
            ),
        ));
    }
    let p = LossParams {
        rows: term.len() as u32,
        beta: 0.0,
        use_weights: weights.is_some() as u32,
        slot: slot as u32,
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Reduce, "metric_accumulate"),
        label,
        &[
            (3, term.binding()),
            (5, metrics.binding()),
            (7, weights.unwrap_or(term).binding()),
        ],
        Some((6, &p)),
        [1, 1, 1],
    )
}
