//! The class label of a conditional VAE on the GPU (`shaders/condition.wgsl`): the one-hot
//! label columns of a [`crate::model::condition::Concat`] output, the concatenation's forward
//! and backward copies, and the training gather of the batch's labels.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::data::StepState;
use crate::ops::{Activation, shape_err};

/// Mirrors `OneHotParams` in shaders/condition.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OneHotParams {
    pub rows: u32,
    pub batch: u32,
    pub width: u32,
    pub offset: u32,
    pub classes: u32,
    pub _pad: [u32; 3],
}

/// Mirrors `ConcatParams` in shaders/condition.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConcatParams {
    pub rows: u32,
    pub features: u32,
    pub width: u32,
    pub accumulate: u32,
    pub has_producer: u32,
    pub act: u32,
    pub slope: f32,
    pub _pad: u32,
}

/// Mirrors `LabelGatherParams` in shaders/condition.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LabelGatherParams {
    pub rows: u32,
    pub base: u32,
    pub n_items: u32,
    pub use_state: u32,
    pub n_labels: u32,
    pub _pad: [u32; 3],
}

fn to_u32(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err("condition", format!("{what} {v} exceeds 2^32 - 1")))
}

/// Prepares `y[r, offset + c] = (c < classes && labels[r % B] == c)` for every column from
/// `offset` to the row's end, r < rows of `y`: the one-hot label columns of a (rows, width)
/// buffer and zeros after them, B = `labels.len()` (rows a multiple of B: the K·B rows of a
/// decoder buffer take input b's label in rows s·B + b).
pub fn onehot(
    ctx: &GpuContext,
    label: &str,
    labels: &Tensor<u32>,
    y: &Tensor<f32>,
    offset: usize,
    classes: usize,
) -> Result<Dispatch> {
    let (rows, width) = y.dims2();
    let batch = labels.len();
    let fits = offset.checked_add(classes).is_some_and(|e| e <= width);
    if batch == 0 || classes == 0 || !fits || !rows.is_multiple_of(batch) {
        return Err(shape_err(
            "onehot",
            format!(
                "{label}: {classes} label columns at {offset} of {:?} for {batch} labels",
                y.shape()
            ),
        ));
    }
    let params = OneHotParams {
        rows: to_u32("rows", rows)?,
        batch: to_u32("labels", batch)?,
        width: to_u32("width", width)?,
        offset: to_u32("offset", offset)?,
        classes: to_u32("classes", classes)?,
        _pad: [0; 3],
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Condition, "onehot"),
        label,
        &[(0, labels.binding()), (1, y.binding())],
        Some((2, &params)),
        groups_for(rows.saturating_mul(width - offset), 64),
    )
}

fn concat_shapes(
    op: &'static str,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
) -> Result<(usize, usize, usize)> {
    let (rows, f) = x.dims2();
    let (yrows, width) = y.dims2();
    if rows != yrows || f == 0 || width < f {
        return Err(shape_err(
            op,
            format!("{label}: {:?} into {:?}", x.shape(), y.shape()),
        ));
    }
    Ok((rows, f, width))
}

/// Prepares `y[r, j] = x[r, j]` for j < F, x (rows, F), y (rows, width ≥ F): the input part
/// of a concatenation (the label columns are written by [`onehot`]).
pub fn concat_forward(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
) -> Result<Dispatch> {
    let (rows, f, width) = concat_shapes("concat_forward", label, x, y)?;
    let params = ConcatParams {
        rows: to_u32("rows", rows)?,
        features: to_u32("features", f)?,
        width: to_u32("width", width)?,
        ..Default::default()
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Condition, "concat_forward"),
        label,
        &[(3, x.binding()), (4, y.binding())],
        Some((5, &params)),
        groups_for(rows.saturating_mul(f), 64),
    )
}

/// Prepares `dx[r, j] (= or +=) du[r, j] · act'(producer[r, j])` for j < F: the gradient of a
/// concatenation at its input, du (rows, width), dx and the producer's output (rows, F).
pub fn concat_backward(
    ctx: &GpuContext,
    label: &str,
    du: &Tensor<f32>,
    dx: &Tensor<f32>,
    accumulate: bool,
    producer: Option<(&Tensor<f32>, Activation)>,
) -> Result<Dispatch> {
    let (rows, f, width) = concat_shapes("concat_backward", label, dx, du)?;
    if let Some((t, act)) = producer {
        act.validate()?;
        if t.shape() != dx.shape() {
            return Err(shape_err(
                "concat_backward",
                format!("{label}: producer {:?} for dx {:?}", t.shape(), dx.shape()),
            ));
        }
    }
    let act = producer.map_or(Activation::Identity, |(_, a)| a);
    let params = ConcatParams {
        rows: to_u32("rows", rows)?,
        features: to_u32("features", f)?,
        width: to_u32("width", width)?,
        accumulate: accumulate as u32,
        has_producer: producer.is_some() as u32,
        act: act.code(),
        slope: act.slope(),
        _pad: 0,
    };
    let prod = match producer {
        Some((t, _)) => t.binding(),
        None => ctx.dummy.as_entire_binding(),
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Condition, "concat_backward"),
        label,
        &[(6, du.binding()), (7, dx.binding()), (9, prod)],
        Some((8, &params)),
        groups_for(rows.saturating_mul(f), 64),
    )
}

/// Prepares `out[r] = labels[perm[pos + r]]` with `pos = base` (+ the batch offset of the
/// current step with `state`), 0 past the end of `perm`: the labels of the rows that
/// [`crate::ops::data::gather_with`] gathers with the same `perm`, `base` and `state`.
pub fn gather_labels(
    ctx: &GpuContext,
    label: &str,
    labels: &Tensor<u32>,
    perm: &Tensor<u32>,
    out: &Tensor<u32>,
    base: usize,
    state: Option<&StepState>,
) -> Result<Dispatch> {
    if labels.is_empty() || out.is_empty() {
        return Err(shape_err(
            "gather_labels",
            format!("{label}: {} labels into {:?}", labels.len(), out.shape()),
        ));
    }
    let params = LabelGatherParams {
        rows: to_u32("rows", out.len())?,
        base: to_u32("base", base)?,
        n_items: to_u32("positions", perm.len())?,
        use_state: state.is_some() as u32,
        n_labels: to_u32("labels", labels.len())?,
        _pad: [0; 3],
    };
    let state_binding = match state {
        Some(s) => s.tensor.binding(),
        None => ctx.dummy.as_entire_binding(),
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Condition, "gather_labels"),
        label,
        &[
            (10, labels.binding()),
            (11, perm.binding()),
            (12, out.binding()),
            (13, state_binding),
        ],
        Some((14, &params)),
        groups_for(out.len(), 64),
    )
}
