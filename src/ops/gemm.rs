//! GEMM `C = op(A)·op(B)` with fused epilogues: bias + activation (forward), accumulate
//! (weight gradients), activation backward (input gradients).

use crate::error::Result;
use crate::gpu::{Dispatch, GemmVariant, GpuContext, KernelKey, Shader, Tensor};
use crate::ops::{Activation, shape_err};

/// Which operands are transposed. `NN`: forward `Y = X·W`; `NT`: `dX = dY·Wᵀ`;
/// `TN`: `dW = Xᵀ·dY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trans {
    NN,
    NT,
    TN,
}

impl Trans {
    pub fn a(self) -> bool {
        self == Trans::TN
    }
    pub fn b(self) -> bool {
        self == Trans::NT
    }
}

/// What happens to the product before it is stored in C.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `C = P`
    Store,
    /// `C += P`
    Accumulate,
    /// `C = act(P + bias)`, bias of shape (N,)
    BiasAct {
        bias: &'a Tensor<f32>,
        act: Activation,
    },
    /// `C = P ⊙ act'(·)`, with act' computed from the activation's output `output` (M, N)
    ActGrad {
        output: &'a Tensor<f32>,
        act: Activation,
    },
}

impl Epilogue<'_> {
    fn code(&self) -> u32 {
        match self {
            Epilogue::Store => 0,
            Epilogue::Accumulate => 1,
            Epilogue::BiasAct { .. } => 2,
            Epilogue::ActGrad { .. } => 3,
        }
    }
    fn act(&self) -> Activation {
        match self {
            Epilogue::BiasAct { act, .. } | Epilogue::ActGrad { act, .. } => *act,
            _ => Activation::Identity,
        }
    }
}

/// Mirrors `GemmParams` in the GEMM shaders.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// LeakyReLU slope
    pub slope: f32,
}

/// (M, K, N) of `op(A)·op(B)`, checked against C.
pub fn gemm_dims(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    c: &Tensor<f32>,
    trans: Trans,
) -> Result<(usize, usize, usize)> {
    let (ar, ac) = a.dims2();
    let (br, bc) = b.dims2();
    let (m, k) = if trans.a() { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if trans.b() { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(shape_err(
            "gemm",
            format!(
                "{trans:?}: inner dimensions differ: {} {:?} gives K={k}, {} {:?} gives K={kb}",
                a.label(),
                a.shape(),
                b.label(),
                b.shape()
            ),
        ));
    }
    if c.dims2() != (m, n) {
        return Err(shape_err(
            "gemm",
            format!(
                "{trans:?}: output {} is {:?}, expected ({m}, {n})",
                c.label(),
                c.shape()
            ),
        ));
    }
    if m == 0 || n == 0 || k == 0 {
        return Err(shape_err(
            "gemm",
            format!("empty product ({m}x{k})·({k}x{n})"),
        ));
    }
    Ok((m, k, n))
}

/// Whether the subgroup kernel takes this shape (its vec4 loads need these multiples of 4).
pub fn subgroup8_fits(m: usize, k: usize, n: usize, trans: Trans) -> bool {
    n.is_multiple_of(4)
        && (!trans.b() || k.is_multiple_of(4))
        && (!trans.a() || m.is_multiple_of(4))
}

/// Tile of the subgroup kernel for a shape: (rows per workgroup, vec4 groups per lane).
pub fn subgroup8_tile(m: usize, n: usize) -> (u32, u32) {
    let tnv: u32 = if n >= 256 { 2 } else { 1 };
    let mut tm: u32 = if m >= 96 {
        32
    } else if m >= 16 {
        16
    } else {
        8
    };
    // Keep at least 16 workgroups when the shape allows, so both cores of a small CPU adapter
    // stay busy.
    let groups = |tm: u32| m.div_ceil(tm as usize) * n.div_ceil(32 * tnv as usize);
    while tm > 8 && groups(tm) < 16 {
        tm /= 2;
    }
    (tm, tnv)
}

/// Tile of the register-blocked kernel for a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegblockTile {
    /// Rows of C per invocation (a multiple of 4).
    pub tm: u32,
    /// vec4 column groups of C per invocation.
    pub tnv: u32,
    /// Invocations per workgroup (side by side along the columns).
    pub wx: u32,
}

impl RegblockTile {
    /// Workgroups along (columns, rows) for an (M, N) output.
    pub fn groups(self, m: usize, n: usize) -> (usize, usize) {
        (
            n.div_ceil(4 * (self.wx * self.tnv) as usize),
            m.div_ceil(self.tm as usize),
        )
    }
}

/// Tile of the register-blocked kernel for an (M, N) output. 16 rows x 16 columns per
/// invocation keeps 256 accumulators and makes each vec4 load feed 8 vec4 FMAs; larger tiles
/// were at most 20% faster on lavapipe but took 3x as long to compile. Narrow or short outputs
/// get narrower tiles so few columns and rows are computed only to be dropped, and the rows
/// shrink until there are 16 workgroups when the shape allows, so every core has work.
pub fn regblock_tile(m: usize, n: usize) -> RegblockTile {
    let wx = 8u32;
    let n4 = n.div_ceil(4);
    let tnv = if n4 <= 8 {
        1
    } else if n4 <= 16 {
        2
    } else {
        4
    };
    let mut tile = RegblockTile {
        tm: if m <= 4 {
            4
        } else if m <= 8 {
            8
        } else {
            16
        },
        tnv,
        wx,
    };
    let count = |t: RegblockTile| {
        let (x, y) = t.groups(m, n);
        x * y
    };
    while tile.tm > 4 && count(tile) < 16 {
        tile.tm /= 2;
    }
    tile
}

/// Whether the register-blocked kernel reads A and B as vec4: true when the operand's
/// contiguous dimension (A: K, or M when transposed; B: N, or K when transposed) is a multiple
/// of 4.
pub fn regblock_vec4(m: usize, k: usize, n: usize, trans: Trans) -> (bool, bool) {
    let a = if trans.a() { m } else { k };
    let b = if trans.b() { k } else { n };
    (a.is_multiple_of(4), b.is_multiple_of(4))
}

/// Prepares `C = epilogue(op(A)·op(B))` with the context's GEMM kernel family.
pub fn gemm(
    ctx: &GpuContext,
    label: &str,
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    c: &Tensor<f32>,
    trans: Trans,
    epilogue: Epilogue<'_>,
) -> Result<Dispatch> {
    gemm_with(ctx, ctx.gemm_variant, label, a, b, c, trans, epilogue)
}

/// Like [`gemm`] with the kernel family forced; shapes the subgroup kernel cannot take fall
/// back to the tiled kernel (the register-blocked and tiled kernels take every shape).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    ctx: &GpuContext,
    variant: GemmVariant,
    label: &str,
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    c: &Tensor<f32>,
    trans: Trans,
    epilogue: Epilogue<'_>,
) -> Result<Dispatch> {
    let (m, k, n) = gemm_dims(a, b, c, trans)?;
    epilogue.act().validate()?;
    let dummy = || ctx.dummy.as_entire_binding();
    let (bias, aux) = match epilogue {
        Epilogue::BiasAct { bias, .. } => {
            if bias.len() != n {
                return Err(shape_err(
                    "gemm",
                    format!(
                        "bias {} has {} elements, expected N={n}",
                        bias.label(),
                        bias.len()
                    ),
                ));
            }
            (bias.binding(), dummy())
        }
        Epilogue::ActGrad { output, .. } => {
            if output.dims2() != (m, n) {
                return Err(shape_err(
                    "gemm",
                    format!(
                        "activation output {} is {:?}, expected ({m}, {n})",
                        output.label(),
                        output.shape()
                    ),
                ));
            }
            (dummy(), output.binding())
        }
        _ => (dummy(), dummy()),
    };
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        slope: epilogue.act().slope(),
    };
    // One workgroup row per tile of rows: at most 65,535 of them (WebGPU's limit).
    if m.div_ceil(8) > 65535 || n.div_ceil(32) > 65535 {
        return Err(shape_err(
            "gemm",
            format!("({m}x{k})·({k}x{n}) needs more than 65,535 workgroups along one axis"),
        ));
    }
    let use_sg8 = variant == GemmVariant::Subgroup8 && subgroup8_fits(m, k, n, trans);
    if variant == GemmVariant::Regblock {
        let t = regblock_tile(m, n);
        let (vec_a, vec_b) = regblock_vec4(m, k, n, trans);
        let shader = if n.is_multiple_of(4) {
            Shader::GemmRegblock
        } else {
            Shader::GemmRegblockScalarC
        };
        let key = KernelKey::new(shader, "gemm")
            .flag("TRANS_A", trans.a())
            .flag("TRANS_B", trans.b())
            .u32("EPILOGUE", epilogue.code())
            .u32("ACT", epilogue.act().code())
            .u32("TM", t.tm)
            .u32("TNV", t.tnv)
            .u32("WX", t.wx)
            .flag("VEC_A", vec_a)
            .flag("VEC_B", vec_b)
            .flag("K_TAIL", !k.is_multiple_of(4));
        let (gx, gy) = t.groups(m, n);
        let groups = [gx as u32, gy as u32, 1];
        Dispatch::new(
            ctx,
            &key,
            label,
            &[
                (0, a.binding()),
                (1, b.binding()),
                (2, c.binding()),
                (3, bias),
                (4, aux),
                (6, a.binding()),
                (7, b.binding()),
            ],
            Some((5, &params)),
            groups,
        )
    } else if use_sg8 {
        let (tm, tnv) = subgroup8_tile(m, n);
        let key = KernelKey::new(Shader::GemmSubgroup8, "gemm")
            .flag("TRANS_A", trans.a())
            .flag("TRANS_B", trans.b())
            .u32("EPILOGUE", epilogue.code())
            .u32("ACT", epilogue.act().code())
            .u32("TM", tm)
            .u32("TNV", tnv);
        let groups = [
            n.div_ceil(32 * tnv as usize) as u32,
            m.div_ceil(tm as usize) as u32,
            1,
        ];
        Dispatch::new(
            ctx,
            &key,
            label,
            &[
                (0, a.binding()),
                (1, b.binding()),
                (2, c.binding()),
                (3, bias),
                (4, aux),
                (6, a.binding()),
            ],
            Some((5, &params)),
            groups,
        )
    } else {
        let key = KernelKey::new(Shader::GemmTiled, "gemm")
            .flag("TRANS_A", trans.a())
            .flag("TRANS_B", trans.b())
            .u32("EPILOGUE", epilogue.code())
            .u32("ACT", epilogue.act().code());
        let groups = [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1];
        Dispatch::new(
            ctx,
            &key,
            label,
            &[
                (0, a.binding()),
                (1, b.binding()),
                (2, c.binding()),
                (3, bias),
                (4, aux),
            ],
            Some((5, &params)),
            groups,
        )
    }
}
