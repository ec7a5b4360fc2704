//! Small maps over flat arrays.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::shape_err;

/// Mirrors `MapParams` in shaders/elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MapParams {
    pub n: u32,
    pub op: u32,
    pub value: f32,
    pub _pad: u32,
}

fn map(
    ctx: &GpuContext,
    label: &str,
    src: Option<&Tensor<f32>>,
    dst: &Tensor<f32>,
    op: u32,
    value: f32,
) -> Result<Dispatch> {
    if let Some(s) = src
        && s.len() != dst.len()
    {
        return Err(shape_err(
            "map",
            format!("{:?} -> {:?}", s.shape(), dst.shape()),
        ));
    }
    let p = MapParams {
        n: dst.len() as u32,
        op,
        value,
        _pad: 0,
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Elementwise, "map"),
        label,
        &[
            (
                0,
                src.map(|s| s.binding())
                    .unwrap_or(ctx.dummy.as_entire_binding()),
            ),
            (1, dst.binding()),
        ],
        Some((2, &p)),
        groups_for(dst.len(), 64 * 4),
    )
}

/// dst = σ(src) (probabilities from logits).
pub fn sigmoid(
    ctx: &GpuContext,
    label: &str,
    src: &Tensor<f32>,
    dst: &Tensor<f32>,
) -> Result<Dispatch> {
    map(ctx, label, Some(src), dst, 0, 0.0)
}

/// dst = value.
pub fn fill(ctx: &GpuContext, label: &str, dst: &Tensor<f32>, value: f32) -> Result<Dispatch> {
    map(ctx, label, None, dst, 1, value)
}

/// dst = value · src.
pub fn scale(
    ctx: &GpuContext,
    label: &str,
    src: &Tensor<f32>,
    dst: &Tensor<f32>,
    value: f32,
) -> Result<Dispatch> {
    map(ctx, label, Some(src), dst, 2, value)
}
