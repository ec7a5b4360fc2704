//! 2-D convolutions on NCHW images as implicit GEMMs: [`Conv2d`] and [`ConvTranspose2d`], each
//! with a forward pass (bias + activation fused), an input gradient (the activation derivative
//! of the input's producer optionally fused, taken from its stored output), a weight gradient
//! and a bias gradient.
//!
//! # Kernels
//!
//! Three products (`shaders/conv_common.wgsl` defines them exactly) cover the six passes. In
//! each, A is gathered from an image inside the tile loads — no im2col matrix is ever stored —
//! and B is either the weights, packed once per call into a zero-padded (K, N) matrix
//! (`conv_aux.wgsl::pack`, a copy the size of the weights), or a dense gradient image:
//!
//! | pass | product | A gathered from | N (columns) | B |
//! | --- | --- | --- | --- | --- |
//! | Conv2d forward | `OP_FWD` | x | out channels | W (out, in, KH, KW) packed (in·KH·KW, out) |
//! | Conv2d input gradient | `OP_DGRAD` | dy | in channels | W packed per phase |
//! | Conv2d weight gradient | `OP_WGRAD` | x | out channels | dy |
//! | ConvTranspose2d forward | `OP_DGRAD` | x | out channels | W (in, out, KH, KW) packed per phase |
//! | ConvTranspose2d input gradient | `OP_FWD` | dy | in channels | W packed (out·KH·KW, in) |
//! | ConvTranspose2d weight gradient | `OP_WGRAD` | dy | in channels | x |
//! | bias gradients | `conv_aux.wgsl::bias_grad` | | | |
//!
//! Rows of `OP_FWD` and `OP_DGRAD` are output pixels (B·H·W of them: the long dimension), the
//! depth is (channel, tap), and the columns are output channels, so the result lands in NCHW
//! with the bias per column. `OP_DGRAD` (a transposed convolution) runs one slice per output
//! phase (`(y + pad) mod stride`, workgroup z), in which exactly the taps `kh ≡ phase` meet real
//! pixels: no multiply-add is spent on the zeros that a stride-2 transposed convolution would
//! otherwise insert (3/4 of them at stride 2). `OP_WGRAD` has the taps (in·KH·KW) as rows, the
//! output channels as columns and every pixel of the batch as depth; it splits the depth over
//! workgroups (z) when the tile grid alone would leave cores idle, and a second pass adds the
//! partial sums in a fixed order, so results repeat bit for bit.
//!
//! The kernel family follows [`GpuContext::gemm_variant`]:
//!
//! - `conv_subgroup8.wgsl` ([`GemmVariant::Subgroup8`]): one 8-lane subgroup computes a
//!   TM×32·TNV tile (TM 16 or 32 rows, 64 for a weight gradient with one column group; TNV 1–2
//!   vec4 column groups per lane); each gathered element is loaded by one lane and broadcast by
//!   `subgroupShuffle`. When an `OP_FWD` output plane is a multiple of 4 (and one column group
//!   per lane), the epilogue transposes 4 rows in registers and reads the producer's output and
//!   writes the result as vec4: with one input channel the depth is only 16, and the scalar
//!   epilogue cost as much as the multiply-adds (the fused input gradient of a 32 -> 1 channel
//!   transposed layer measured ~1.15x faster on lavapipe).
//! - `conv_regblock.wgsl` ([`GemmVariant::Regblock`]): 8 invocations share TM (8/16) rows and
//!   each owns TNV (1/2/4) vec4 column groups.
//! - `conv_tiled.wgsl` ([`GemmVariant::Tiled`]): 64×64 workgroup-memory tiles, 16 deep, 4×4 per
//!   invocation; the gather happens in the cooperative tile load.
//! - `conv_narrow.wgsl` (every family, `OP_DGRAD` into at most [`NARROW_MAX_N`] channels: a
//!   decoder's output layer): with so few columns the implicit GEMM would load each gathered
//!   element for one multiply-add, so each invocation instead keeps a block of output pixels of
//!   every phase in registers and applies all taps to one loaded patch of the input (direct
//!   convolution, weights read in PyTorch's layout; on 8-lane subgroups the lanes load a
//!   channel's weights together and share them by `subgroupShuffle`, and 2 x 4 lanes with
//!   neighbouring blocks share the overlaps of their input patches the same way).
//! - `conv_single.wgsl` (every family, `OP_FWD` from one input channel into output grids whose
//!   width is a multiple of 4: an encoder's first convolution, a decoder's last input
//!   gradient): direct convolution, each input patch loaded once for a group of output channels.
//! - `conv_wsingle.wgsl` (8-lane subgroups, `OP_WGRAD` from one gathered channel: the weight
//!   gradients of those two layers): each lane keeps the sums of 4 channels' taps in
//!   registers; the lanes walk the same 8-pixel blocks, load the input patch together and share
//!   it by `subgroupShuffle`, so each gathered element costs an eighth of a load per lane
//!   (1.3-1.6x the implicit GEMM's rate on lavapipe, whose 16 rows left each gathered element
//!   one row's worth of multiply-adds).
//!
//! On lavapipe every element a kernel loads costs far more than a multiply-add, so the tiles
//! are chosen to load few elements per multiply-add; each distinct tile, product and layer
//! geometry (for the narrow kernel) is a pipeline compiled on first use, so there are few tile
//! sizes. `examples/bench_conv.rs` measures them against the GEMM.
//!
//! Every shape is accepted: padding, ragged tiles and depth tails are masked in the gather,
//! packed weights are zero past K and N. Sizes are checked against `u32`/`i32` indexing and the
//! 65,535-workgroup limit per axis before anything is allocated.

use crate::error::Result;
use crate::gpu::{Dispatch, GemmVariant, GpuContext, KernelKey, Program, Shader, Tensor};
use crate::ops::{Activation, shape_err};

/// A 2-D convolution layer (PyTorch's `Conv2d` without dilation or groups): weights
/// (out, in, KH, KW), bias (out,), images NCHW. Pairs are (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    /// (KH, KW)
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl Conv2d {
    /// Stride 1, no padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride: (1, 1),
            padding: (0, 0),
        }
    }
    pub fn with_stride(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: (usize, usize)) -> Self {
        self.padding = padding;
        self
    }
    /// (out, in, KH, KW)
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels,
            self.kernel.0,
            self.kernel.1,
        ]
    }
    /// Checks that channels, kernel and stride are positive.
    pub fn validate(&self) -> Result<()> {
        check_layer(
            "Conv2d",
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.stride,
        )
    }
    /// Output (OH, OW) for an input (H, W): `(H + 2·pad − KH) / stride + 1`.
    pub fn output_size(&self, (h, w): (usize, usize)) -> Result<(usize, usize)> {
        self.validate()?;
        let axis = |len: usize, k: usize, s: usize, p: usize, name: &str| {
            let padded = p
                .checked_mul(2)
                .and_then(|v| v.checked_add(len))
                .ok_or_else(|| shape_err("Conv2d", format!("{name} {len} + 2·{p} overflows")))?;
            if len == 0 || padded < k {
                return Err(shape_err(
                    "Conv2d",
                    format!("input {name} {len} with padding {p} is smaller than the kernel ({k})"),
                ));
            }
            Ok((padded - k) / s + 1)
        };
        Ok((
            axis(h, self.kernel.0, self.stride.0, self.padding.0, "height")?,
            axis(w, self.kernel.1, self.stride.1, self.padding.1, "width")?,
        ))
    }
}

/// A 2-D transposed convolution (PyTorch's `ConvTranspose2d` without dilation or groups): weights
/// (in, out, KH, KW), bias (out,), images NCHW. It is the adjoint of [`Conv2d`] with the same
/// kernel, stride and padding; `output_padding` (< stride) adds rows and columns at the bottom
/// and right so that a stride-s layer can invert any input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub output_padding: (usize, usize),
}

impl ConvTranspose2d {
    /// Stride 1, no padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Self {
        ConvTranspose2d {
            in_channels,
            out_channels,
            kernel,
            stride: (1, 1),
            padding: (0, 0),
            output_padding: (0, 0),
        }
    }
    pub fn with_stride(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: (usize, usize)) -> Self {
        self.padding = padding;
        self
    }
    pub fn with_output_padding(mut self, output_padding: (usize, usize)) -> Self {
        self.output_padding = output_padding;
        self
    }
    /// (in, out, KH, KW)
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.in_channels,
            self.out_channels,
            self.kernel.0,
            self.kernel.1,
        ]
    }
    /// Checks channels, kernel and stride (positive) and output padding (< stride).
    pub fn validate(&self) -> Result<()> {
        check_layer(
            "ConvTranspose2d",
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.stride,
        )?;
        if self.output_padding.0 >= self.stride.0 || self.output_padding.1 >= self.stride.1 {
            return Err(shape_err(
                "ConvTranspose2d",
                format!(
                    "output padding {:?} must be smaller than the stride {:?}",
                    self.output_padding, self.stride
                ),
            ));
        }
        Ok(())
    }
    /// Output (OH, OW) for an input (H, W): `(H − 1)·stride − 2·pad + KH + output_padding`.
    pub fn output_size(&self, (h, w): (usize, usize)) -> Result<(usize, usize)> {
        self.validate()?;
        let axis = |len: usize, k: usize, s: usize, p: usize, op: usize, name: &str| {
            if len == 0 {
                return Err(shape_err("ConvTranspose2d", format!("input {name} is 0")));
            }
            let full = (len - 1)
                .checked_mul(s)
                .and_then(|v| v.checked_add(k + op))
                .ok_or_else(|| shape_err("ConvTranspose2d", format!("output {name} overflows")))?;
            match p.checked_mul(2).and_then(|pp| full.checked_sub(pp)) {
                Some(v) if v > 0 => Ok(v),
                _ => Err(shape_err(
                    "ConvTranspose2d",
                    format!("input {name} {len} gives no output with padding {p} and kernel {k}"),
                )),
            }
        };
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        let (oph, opw) = self.output_padding;
        Ok((
            axis(h, self.kernel.0, sh, ph, oph, "height")?,
            axis(w, self.kernel.1, sw, pw, opw, "width")?,
        ))
    }
}

fn check_layer(
    op: &'static str,
    cin: usize,
    cout: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
) -> Result<()> {
    if cin == 0 || cout == 0 || kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
        return Err(shape_err(
            op,
            format!(
                "channels ({cin} in, {cout} out), kernel {kernel:?} and stride {stride:?} must be positive"
            ),
        ));
    }
    Ok(())
}

/// Mirrors `ConvParams` in shaders/conv_common.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    pub batch: u32,
    pub src_c: u32,
    pub src_h: u32,
    pub src_w: u32,
    pub n: u32,
    pub n4: u32,
    pub grid_h: u32,
    pub grid_w: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub m: u32,
    pub k: u32,
    pub k_pad: u32,
    pub p_pad: u32,
    pub k_split: u32,
    pub splits: u32,
    pub epilogue: u32,
    pub act: u32,
    /// LeakyReLU slope
    pub slope: f32,
    pub op: u32,
}

/// The three products of conv_common.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    Fwd,
    Dgrad,
    Wgrad,
}

impl Product {
    fn code(self) -> u32 {
        match self {
            Product::Fwd => 0,
            Product::Dgrad => 1,
            Product::Wgrad => 2,
        }
    }
}

/// Epilogue codes (mirror EPI_* in conv_common.wgsl).
const EPI_STORE: u32 = 0;
const EPI_ACCUMULATE: u32 = 1;
const EPI_BIAS_ACT: u32 = 2;
const EPI_ACT_GRAD: u32 = 3;

/// The convolution a product indexes: the gathered image `src` (B, C, SH, SW), the grid of
/// output pixels (FWD/DGRAD) or of g's pixels (WGRAD) (GH, GW), and N columns.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    src_c: usize,
    src_h: usize,
    src_w: usize,
    n: usize,
    grid_h: usize,
    grid_w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

/// Rows and depth of one output phase of `OP_DGRAD` (mirrors `phase_info`).
fn phase_dims(g: &Geometry, z: usize) -> (usize, usize) {
    let count_from = |first: usize, len: usize, s: usize| {
        if first >= len {
            0
        } else {
            (len - first).div_ceil(s)
        }
    };
    let (sh, sw) = g.stride;
    let (rh, rw) = (z / sw, z % sw);
    let ih0 = (rh + sh - g.padding.0 % sh) % sh;
    let iw0 = (rw + sw - g.padding.1 % sw) % sw;
    let rows = g.batch * count_from(ih0, g.grid_h, sh) * count_from(iw0, g.grid_w, sw);
    let depth = g.src_c * count_from(rh, g.kernel.0, sh) * count_from(rw, g.kernel.1, sw);
    (rows, depth)
}

/// The kernel family and tile for a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    variant: GemmVariant,
    /// Rows per workgroup (subgroup8, tiled) or per invocation (regblock).
    tm: u32,
    /// vec4 column groups per lane / invocation (1 for tiled).
    tnv: u32,
    /// Rows of C per workgroup.
    rows: usize,
    /// Columns of C per workgroup.
    cols: usize,
}

/// Regblock invocations per workgroup.
const REGBLOCK_WX: u32 = 8;

/// The tile for an (M, N) output with `z` slices: wide enough for N, and rows shrunk until there
/// are 16 workgroups when the shape allows, so every core of a CPU adapter has work.
fn choose_tile(variant: GemmVariant, kind: Product, m: usize, n: usize, z: usize) -> Tile {
    let n4 = n.div_ceil(4);
    let count = |rows: usize, cols: usize| m.div_ceil(rows) * n.div_ceil(cols) * z;
    match variant {
        GemmVariant::Subgroup8 => {
            let tnv: u32 = if n4 > 8 { 2 } else { 1 };
            // 32 rows, or 16 when that leaves too few workgroups to keep every core busy (each
            // tile size is a pipeline compiled on first use, so there are few of them).
            let cols = 32 * tnv as usize;
            let mut tm: u32 = if m >= 96 && count(32, cols) >= 16 {
                32
            } else {
                16
            };
            // The weight gradient's depth is long and split for parallelism; with one column
            // group per lane, 64 rows halve its loads of g per multiply-add (measured 1.3-1.8x
            // faster on lavapipe; 64 rows with two groups, or in the other products, were 3x
            // slower).
            if kind == Product::Wgrad && tnv == 1 && m >= 64 {
                tm = 64;
            }
            Tile {
                variant,
                tm,
                tnv,
                rows: tm as usize,
                cols,
            }
        }
        GemmVariant::Regblock => {
            let tnv: u32 = if n4 <= 8 {
                1
            } else if n4 <= 16 {
                2
            } else {
                4
            };
            let cols = (4 * REGBLOCK_WX * tnv) as usize;
            let tm: u32 = if m > 8 && count(16, cols) >= 16 {
                16
            } else {
                8
            };
            Tile {
                variant,
                tm,
                tnv,
                rows: tm as usize,
                cols,
            }
        }
        GemmVariant::Tiled => Tile {
            variant,
            tm: 64,
            tnv: 1,
            rows: 64,
            cols: 64,
        },
    }
}

/// A prepared convolution pass: its dispatches (weight packing, the product, a split-sum
/// reduction) and the scratch buffers they use (packed weights, partial sums), allocated once
/// here and kept alive with the dispatches. Record it every step; nothing is allocated then.
#[derive(Debug)]
pub struct ConvProgram {
    pub program: Program,
    workspace: Vec<Tensor<f32>>,
}

impl ConvProgram {
    /// Records every dispatch into an open compute pass.
    pub fn record_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.program.record_pass(pass);
    }
    /// Encodes, submits and waits: for tests and one-off work.
    pub fn run(&self, ctx: &GpuContext) -> Result<()> {
        self.program.run(ctx)
    }
    /// The scratch buffers (packed weights, partial sums).
    pub fn workspace(&self) -> &[Tensor<f32>] {
        &self.workspace
    }
    /// The dispatches and the scratch buffers, for a caller that merges the dispatches into a
    /// larger program: it must keep the buffers as long as it keeps the dispatches.
    pub fn into_parts(self) -> (Program, Vec<Tensor<f32>>) {
        (self.program, self.workspace)
    }
}

fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{what} = {v} exceeds the u32 range")))
}

fn mul(op: &'static str, what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| shape_err(op, format!("{what} {factors:?} overflows")))
}

/// The kernels index elements with `i32`: every buffer must hold fewer than 2³¹ elements.
fn check_index_range(op: &'static str, t: &Tensor<f32>) -> Result<()> {
    if t.len() > i32::MAX as usize {
        return Err(shape_err(
            op,
            format!(
                "{} {:?} has more than 2^31 - 1 elements",
                t.label(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

fn expect_shape(op: &'static str, role: &str, t: &Tensor<f32>, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(shape_err(
            op,
            format!(
                "{role} `{}` has shape {:?}, expected {want:?}",
                t.label(),
                t.shape()
            ),
        ));
    }
    check_index_range(op, t)
}

/// (B, C, H, W) of an NCHW tensor with `channels` channels.
fn image_dims(
    op: &'static str,
    role: &str,
    t: &Tensor<f32>,
    channels: usize,
) -> Result<(usize, usize, usize)> {
    match *t.shape() {
        [b, c, h, w] if c == channels && b > 0 && h > 0 && w > 0 => {
            check_index_range(op, t)?;
            Ok((b, h, w))
        }
        _ => Err(shape_err(
            op,
            format!(
                "{role} `{}` has shape {:?}, expected (batch, {channels}, height, width) with \
                 positive sizes",
                t.label(),
                t.shape()
            ),
        )),
    }
}

/// The B operand of a product.
enum Operand<'a> {
    /// Weights in PyTorch's layout, packed by `conv_aux.wgsl::pack`.
    Weights(&'a Tensor<f32>),
    /// OP_WGRAD: the dense gradient image g (B, N, GH, GW).
    Image(&'a Tensor<f32>),
}

/// The epilogue of a product.
enum Epi<'a> {
    Store,
    Accumulate,
    BiasAct(&'a Tensor<f32>, Activation),
    ActGrad(&'a Tensor<f32>, Activation),
}

const MAX_GROUPS: usize = 65535;

/// Sets the epilogue fields of `params` and returns the (bias, aux) bindings.
fn epilogue_bindings<'a>(
    ctx: &'a GpuContext,
    params: &mut ConvParams,
    epi: &'a Epi<'a>,
) -> Result<(wgpu::BindingResource<'a>, wgpu::BindingResource<'a>)> {
    let dummy = || ctx.dummy.as_entire_binding();
    Ok(match epi {
        Epi::Store => (dummy(), dummy()),
        Epi::Accumulate => {
            params.epilogue = EPI_ACCUMULATE;
            (dummy(), dummy())
        }
        Epi::BiasAct(b, act) => {
            act.validate()?;
            params.epilogue = EPI_BIAS_ACT;
            params.act = act.code();
            params.slope = act.slope();
            (b.binding(), dummy())
        }
        Epi::ActGrad(t, act) => {
            act.validate()?;
            params.epilogue = EPI_ACT_GRAD;
            params.act = act.code();
            params.slope = act.slope();
            (dummy(), t.binding())
        }
    })
}

/// Block of `conv_narrow.wgsl`: quads (one output pixel per phase) per invocation, and the
/// patch of src they reach.
#[derive(Clone, Copy, Debug)]
struct NarrowTile {
    tqy: usize,
    tqx: usize,
    py: usize,
    px: usize,
    /// Smallest patch offset QH + j − th along each axis.
    dy: i64,
    dx: i64,
}

/// Most output channels the narrow transposed convolution takes.
pub const NARROW_MAX_N: usize = 4;

/// The narrow kernel's block when it takes the product: OP_DGRAD into at most
/// [`NARROW_MAX_N`] channels, kernels up to 8 and strides up to 4 (its loops are unrolled at
/// compile time). Every family takes it: the implicit GEMM's tiles would leave all but N of
/// their 32 or 64 columns idle (on lavapipe the tiled family ran the 32 -> 1 channel layer
/// 30x slower that way).
fn narrow_tile(kind: Product, g: &Geometry) -> Option<NarrowTile> {
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    if kind != Product::Dgrad || g.n > NARROW_MAX_N || kh > 8 || kw > 8 || sh > 4 || sw > 4 {
        return None;
    }
    // At most 32 vec4 accumulators (phases x channels x TQY x TQX / 4): with more, lavapipe
    // stopped keeping them in registers (the 32 -> 1 channel 4x4 stride-2 layer ran 7x slower
    // with 8x8 quads than with the 4x8 quads it gets here, and compiled 5x longer).
    let cells = sh * sw * g.n;
    let mut tqx = if cells <= 4 { 8 } else { 4 };
    let mut tqy = (128 / (cells * tqx)).clamp(1, 8);
    // A block of at least 24 quads that pads the phase grid less, when there is one (28 x 28
    // outputs at stride 2: 14 x 14 quads fill 4 x 7-quad blocks exactly, not 8 x 4).
    let (qh, qw) = (g.grid_h.div_ceil(sh), g.grid_w.div_ceil(sw));
    let padded = |ty: usize, tx: usize| qh.div_ceil(ty) * ty * qw.div_ceil(tx) * tx;
    for tx in [8, 4] {
        for ty in 1..=8 {
            if tx * ty >= 24 && cells * tx * ty <= 128 && padded(ty, tx) < padded(tqy, tqx) {
                (tqy, tqx) = (ty, tx);
            }
        }
    }
    // Patch rows: QH(rh) + j − th over the phases rh, their taps th and the block's rows j.
    let axis = |tq: usize, k: usize, s: usize, pad: usize| {
        let rp = pad % s;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for r in 0..s {
            let first = (r + s - rp) % s;
            let q = ((first + rp - r) / s) as i64;
            for t in (0..).take_while(|t| r + t * s < k) {
                lo = lo.min(q - t as i64);
                hi = hi.max(q + tq as i64 - 1 - t as i64);
            }
        }
        if lo > hi {
            (0, 1)
        } else {
            (lo, (hi - lo + 1) as usize)
        }
    };
    let (dy, py) = axis(tqy, kh, sh, g.padding.0);
    let (dx, px) = axis(tqx, kw, sw, g.padding.1);
    Some(NarrowTile {
        tqy,
        tqx,
        py,
        px,
        dy,
        dx,
    })
}

/// Block of `conv_single.wgsl`: output channels per group, output pixels per invocation, and
/// the patch of src they reach.
#[derive(Clone, Copy, Debug)]
struct SingleTile {
    nn: usize,
    ty: usize,
    tx: usize,
    py: usize,
    px: usize,
}

/// The single-channel kernel's block when it takes the product: OP_FWD from one input channel,
/// kernels up to 8 and strides up to 4 (its loops are unrolled at compile time), into a number
/// of channels with a divisor in 4..=8 or at most 8 channels (the channels of a group are the
/// same for every block, and a group never reads past the end of the weights), on output grids
/// whose width is a multiple of 4 (it stores vec4; on lavapipe its scalar stores made it slower
/// than the implicit GEMM at 14 x 14 outputs, 1.4x faster as vec4 at 32 x 32).
fn single_tile(kind: Product, g: &Geometry) -> Option<SingleTile> {
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    if kind != Product::Fwd
        || g.src_c != 1
        || !g.grid_w.is_multiple_of(4)
        || kh > 8
        || kw > 8
        || sh > 4
        || sw > 4
    {
        return None;
    }
    let nn = if g.n <= 8 {
        g.n
    } else {
        (4..=8).rev().find(|d| g.n.is_multiple_of(*d))?
    };
    // At most 32 vec4 accumulators (channels x TY x TX / 4), as in conv_narrow.wgsl.
    let tx = if g.grid_w == 4 { 4 } else { 8 };
    let ty = (128 / (nn * tx)).clamp(1, 8);
    Some(SingleTile {
        nn,
        ty,
        tx,
        py: (ty - 1) * sh + kh,
        px: (tx - 1) * sw + kw,
    })
}

/// Block of `conv_wsingle.wgsl`: channels per lane, pixels of g's grid per block, and the patch
/// of src they reach.
#[derive(Clone, Copy, Debug)]
struct WsingleTile {
    nl: usize,
    ty: usize,
    tx: usize,
    py: usize,
    px: usize,
}

/// The one-channel weight-gradient kernel's block when it takes the product: OP_WGRAD from one
/// gathered channel on 8-lane subgroups (the lanes share the patch by `subgroupShuffle`),
/// kernels up to 8 and strides up to 4. Its loops are unrolled at compile time, and on lavapipe
/// the kernel ran 4-7x slower once the unrolled body (NL·TY·TX·KH·KW multiply-adds) passed
/// 512 or the patch passed about 64 elements (2 channels per lane x 4 x 4 pixels, 4 x 8 x 2):
/// so blocks are 8 pixels (7 where that pads the grid less: 14-wide grids), NL at most 4.
fn wsingle_tile(variant: GemmVariant, kind: Product, g: &Geometry) -> Option<WsingleTile> {
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    if variant != GemmVariant::Subgroup8
        || kind != Product::Wgrad
        || g.src_c != 1
        || kh > 8
        || kw > 8
        || sh > 4
        || sw > 4
    {
        return None;
    }
    let padded = |ty: usize, tx: usize| g.grid_h.div_ceil(ty) * ty * g.grid_w.div_ceil(tx) * tx;
    let (ty, tx) = [(4, 2), (2, 4), (1, 8), (1, 7)]
        .into_iter()
        .filter(|&(ty, tx)| ((ty - 1) * sh + kh) * ((tx - 1) * sw + kw) <= 72)
        .min_by_key(|&(ty, tx)| padded(ty, tx))?;
    let nl = g.n.div_ceil(8).min(4).min(512 / (ty * tx * kh * kw));
    if nl == 0 {
        return None;
    }
    Some(WsingleTile {
        nl,
        ty,
        tx,
        py: (ty - 1) * sh + kh,
        px: (tx - 1) * sw + kw,
    })
}

/// The scratch buffer of a split weight gradient: partial sums (splits, M, N).
fn partial_sums(
    ctx: &GpuContext,
    op: &'static str,
    label: &str,
    (splits, m, n): (usize, usize, usize),
) -> Result<Tensor<f32>> {
    let len = mul(op, "partial sums", &[splits, m, n])?;
    to_u32(op, "partial sums", len)?;
    Tensor::zeros(ctx, &format!("{label} partial sums"), &[splits, m, n])
}

/// The dispatch adding partial sums (splits, M, N) in split order into dW (N, M)
/// (`conv_aux.wgsl::wgrad_reduce`; `params` carries M, N, the splits and the epilogue).
fn split_sum(
    ctx: &GpuContext,
    label: &str,
    partials: &Tensor<f32>,
    out: &Tensor<f32>,
    params: &ConvParams,
) -> Result<Dispatch> {
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::ConvAux, "wgrad_reduce"),
        &format!("{label} split sum"),
        &[(0, partials.binding()), (2, out.binding())],
        Some((5, params)),
        crate::gpu::groups_for(params.m as usize * params.n as usize, 64),
    )
}

/// Workgroups of a direct kernel (`conv_narrow.wgsl`, `conv_single.wgsl`) over a grid of
/// (rows, columns) blocks, and whether its lanes share patches (`load_patch`): on 8-lane
/// subgroups 2 x 4 neighbouring blocks, whose patches start `own` (rows, columns) apart, share
/// their overlaps when a patch reaches no further than its neighbours' corners (on lavapipe
/// 1.1-1.3x faster for the 32 -> 1 channel layers, whose patches are 1.9x their blocks). One
/// 8-lane subgroup per workgroup on CPU adapters, 64 invocations on GPUs.
/// Returns (invocations per workgroup, workgroups per image, share).
fn direct_groups(
    ctx: &GpuContext,
    (blocks_y, blocks_x): (usize, usize),
    (py, px): (usize, usize),
    (own_y, own_x): (usize, usize),
) -> (usize, usize, bool) {
    let wg = if ctx.gemm_variant == GemmVariant::Tiled {
        64
    } else {
        8
    };
    let share = ctx.gemm_variant == GemmVariant::Subgroup8 && py <= 2 * own_y && px <= 2 * own_x;
    let groups = if share {
        blocks_y.div_ceil(2) * blocks_x.div_ceil(4)
    } else {
        (blocks_y * blocks_x).div_ceil(wg)
    };
    (wg, groups, share)
}

/// A direct kernel's key with the layer's kernel size and stride as defines.
fn with_window(key: KernelKey, (kh, kw): (usize, usize), (sh, sw): (usize, usize)) -> KernelKey {
    key.u32("KH", kh as u32)
        .u32("KW", kw as u32)
        .u32("SH", sh as u32)
        .u32("SW", sw as u32)
}

/// Prepares one product: weight packing when B is a weight tensor, the product, and the split
/// reduction when OP_WGRAD splits its depth.
#[allow(clippy::too_many_arguments)]
fn product(
    ctx: &GpuContext,
    op: &'static str,
    label: &str,
    kind: Product,
    geo: &Geometry,
    src: &Tensor<f32>,
    operand: Operand<'_>,
    out: &Tensor<f32>,
    epi: Epi<'_>,
) -> Result<ConvProgram> {
    let (sh, sw) = geo.stride;
    let (kh, kw) = geo.kernel;
    let taps = mul(op, "kernel size", &[kh, kw])?;
    let depth_fwd = mul(op, "channels x taps", &[geo.src_c, taps])?;
    let plane = mul(op, "output plane", &[geo.grid_h, geo.grid_w])?;
    let phases = if kind == Product::Dgrad {
        mul(op, "stride", &[sh, sw])?
    } else {
        1
    };
    // (rows of the tallest slice, depth, depth of packed weights)
    let (m, k, k_pad, p_pad) = match kind {
        Product::Fwd => {
            let m = mul(op, "rows", &[geo.batch, plane])?;
            (m, depth_fwd, depth_fwd.div_ceil(16) * 16, 0)
        }
        Product::Dgrad => {
            if phases > MAX_GROUPS {
                return Err(shape_err(
                    op,
                    format!("stride {:?} has more than {MAX_GROUPS} phases", geo.stride),
                ));
            }
            let (mut m, mut k) = (0, 0);
            for z in 0..phases {
                let (r, d) = phase_dims(geo, z);
                m = m.max(r);
                k = k.max(d);
            }
            (m, k, k.div_ceil(16).max(1) * 16, 0)
        }
        Product::Wgrad => {
            let p_pad = plane.div_ceil(8) * 8;
            (depth_fwd, mul(op, "pixels", &[geo.batch, p_pad])?, 0, p_pad)
        }
    };
    let n = geo.n;
    let n4 = n.div_ceil(4);
    // OP_WGRAD makes its workgroups by splitting the depth, so its tile keeps all its rows.
    let slices = match kind {
        Product::Wgrad => (k / 64).max(1),
        _ => phases,
    };
    let tile = choose_tile(ctx.gemm_variant, kind, m.max(1), n, slices);
    let gx = m.max(1).div_ceil(tile.rows);
    let gy = n.div_ceil(tile.cols);
    if gx > MAX_GROUPS || gy > MAX_GROUPS {
        return Err(shape_err(
            op,
            format!(
                "{label}: {m} rows x {n} columns need {gx} x {gy} workgroups of {} x {}, more than \
                 {MAX_GROUPS} along one axis (use a smaller batch)",
                tile.rows, tile.cols
            ),
        ));
    }
    // OP_WGRAD: split the depth until there are enough workgroups, each split at least 8 chunks
    // of 8 pixels deep.
    let (splits, k_split) = if kind == Product::Wgrad {
        let chunks = k / 8;
        let target: usize = if tile.variant == GemmVariant::Tiled {
            256
        } else {
            32
        };
        let want = target.div_ceil(gx * gy).max(1);
        let s = want.min((chunks / 8).max(1)).min(256);
        let k_split = chunks.div_ceil(s) * 8;
        (k.div_ceil(k_split), k_split)
    } else {
        (1, 0)
    };
    let split = splits > 1;

    let mut params = ConvParams {
        batch: to_u32(op, "batch", geo.batch)?,
        src_c: to_u32(op, "channels", geo.src_c)?,
        src_h: to_u32(op, "height", geo.src_h)?,
        src_w: to_u32(op, "width", geo.src_w)?,
        n: to_u32(op, "columns", n)?,
        n4: to_u32(op, "column groups", n4)?,
        grid_h: to_u32(op, "grid height", geo.grid_h)?,
        grid_w: to_u32(op, "grid width", geo.grid_w)?,
        kh: to_u32(op, "kernel height", kh)?,
        kw: to_u32(op, "kernel width", kw)?,
        sh: to_u32(op, "stride", sh)?,
        sw: to_u32(op, "stride", sw)?,
        ph: to_u32(op, "padding", geo.padding.0)?,
        pw: to_u32(op, "padding", geo.padding.1)?,
        m: to_u32(op, "rows", m)?,
        k: to_u32(op, "depth", k)?,
        k_pad: to_u32(op, "packed depth", k_pad)?,
        p_pad: to_u32(op, "padded plane", p_pad)?,
        k_split: to_u32(op, "split depth", k_split)?,
        splits: to_u32(op, "splits", splits)?,
        epilogue: EPI_STORE,
        act: 0,
        slope: 0.0,
        op: kind.code(),
    };
    // Indices the kernels form stay below the sizes of the buffers they index, which are below
    // 2^31 elements; these two are formed before masking.
    to_u32(op, "rows x taps", mul(op, "rows", &[m.max(1), taps])?)?;
    to_u32(op, "depth", k + 8)?;

    let dummy = || ctx.dummy.as_entire_binding();
    let mut program = Program::new();
    let mut workspace = Vec::new();

    if let (Some(nt), Operand::Weights(w)) = (narrow_tile(kind, geo), &operand) {
        let (bias, aux) = epilogue_bindings(ctx, &mut params, &epi)?;
        let (blocks_y, blocks_x) = (
            geo.grid_h.div_ceil(sh).div_ceil(nt.tqy),
            geo.grid_w.div_ceil(sw).div_ceil(nt.tqx),
        );
        let blocks = blocks_y * blocks_x;
        let (wg, gx, share) =
            direct_groups(ctx, (blocks_y, blocks_x), (nt.py, nt.px), (nt.tqy, nt.tqx));
        if gx > MAX_GROUPS || geo.batch > MAX_GROUPS {
            return Err(shape_err(
                op,
                format!(
                    "{label}: {blocks} output blocks per image in {} images exceed {MAX_GROUPS} \
                     workgroups along one axis",
                    geo.batch
                ),
            ));
        }
        let shader = if ctx.gemm_variant == GemmVariant::Subgroup8 {
            Shader::ConvNarrowSubgroup8
        } else {
            Shader::ConvNarrow
        };
        let key = with_window(KernelKey::new(shader, "narrow"), geo.kernel, geo.stride)
            .u32("EPILOGUE", params.epilogue)
            .u32("ACT", params.act)
            .u32("WG", wg as u32)
            .u32("RPH", (geo.padding.0 % sh) as u32)
            .u32("RPW", (geo.padding.1 % sw) as u32)
            .u32("NN", n as u32)
            .u32("TQY", nt.tqy as u32)
            .u32("TQX", nt.tqx as u32)
            .u32("PY", nt.py as u32)
            .u32("PX", nt.px as u32)
            .u32("DYB", (1024 + nt.dy) as u32)
            .u32("DXB", (1024 + nt.dx) as u32)
            .flag("SHARE", share)
            .u32("OWN_Y", nt.tqy as u32)
            .u32("OWN_X", nt.tqx as u32);
        program.push(Dispatch::new(
            ctx,
            &key,
            label,
            &[
                (0, src.binding()),
                (1, w.binding()),
                (2, out.binding()),
                (3, bias),
                (4, aux),
            ],
            Some((5, &params)),
            [gx as u32, 1, geo.batch as u32],
        )?);
        return Ok(ConvProgram { program, workspace });
    }

    if let (Some(st), Operand::Weights(w)) = (single_tile(kind, geo), &operand) {
        let (bias, aux) = epilogue_bindings(ctx, &mut params, &epi)?;
        let (blocks_y, blocks_x) = (geo.grid_h.div_ceil(st.ty), geo.grid_w.div_ceil(st.tx));
        let blocks = blocks_y * blocks_x;
        // Neighbouring patches start TY·SH rows and TX·SW columns apart.
        let (own_y, own_x) = ((st.ty * sh).min(st.py), (st.tx * sw).min(st.px));
        let (wg, gx, share) =
            direct_groups(ctx, (blocks_y, blocks_x), (st.py, st.px), (own_y, own_x));
        let groups = n / st.nn;
        if gx > MAX_GROUPS || groups > MAX_GROUPS || geo.batch > MAX_GROUPS {
            return Err(shape_err(
                op,
                format!(
                    "{label}: {blocks} output blocks of {groups} channel groups per image in {} \
                     images exceed {MAX_GROUPS} workgroups along one axis",
                    geo.batch
                ),
            ));
        }
        let shader = if ctx.gemm_variant == GemmVariant::Subgroup8 {
            Shader::ConvSingleSubgroup8
        } else {
            Shader::ConvSingle
        };
        let key = with_window(KernelKey::new(shader, "single"), geo.kernel, geo.stride)
            .u32("EPILOGUE", params.epilogue)
            .u32("ACT", params.act)
            .u32("WG", wg as u32)
            .u32("NN", st.nn as u32)
            .u32("TY", st.ty as u32)
            .u32("TX", st.tx as u32)
            .u32("PY", st.py as u32)
            .u32("PX", st.px as u32)
            .flag("SHARE", share)
            .u32("OWN_Y", own_y as u32)
            .u32("OWN_X", own_x as u32);
        program.push(Dispatch::new(
            ctx,
            &key,
            label,
            &[
                (0, src.binding()),
                (1, w.binding()),
                (3, bias),
                (8, out.binding()),
                (9, aux),
            ],
            Some((5, &params)),
            [gx as u32, groups as u32, geo.batch as u32],
        )?);
        return Ok(ConvProgram { program, workspace });
    }

    if let (Some(wt), Operand::Image(gimg)) = (wsingle_tile(ctx.gemm_variant, kind, geo), &operand)
    {
        let blocks = geo.grid_h.div_ceil(wt.ty) * geo.grid_w.div_ceil(wt.tx);
        let units = mul(op, "pixel blocks", &[geo.batch, blocks])?;
        let groups = n.div_ceil(8 * wt.nl);
        // About 32 workgroups, as for the implicit GEMM's split.
        let want = 32usize.div_ceil(groups).clamp(1, units.max(1));
        let per = units.max(1).div_ceil(want);
        let splits = units.max(1).div_ceil(per);
        if splits > MAX_GROUPS || groups > MAX_GROUPS {
            return Err(shape_err(
                op,
                format!(
                    "{label}: {splits} splits x {groups} channel groups exceed {MAX_GROUPS} \
                     workgroups along one axis"
                ),
            ));
        }
        let partials = partial_sums(ctx, op, label, (splits, m, n))?;
        let (_, _) = epilogue_bindings(ctx, &mut params, &epi)?;
        params.k_split = to_u32(op, "split depth", per)?;
        params.splits = to_u32(op, "splits", splits)?;
        let key = with_window(
            KernelKey::new(Shader::ConvWsingleSubgroup8, "wsingle"),
            geo.kernel,
            geo.stride,
        )
        .u32("NL", wt.nl as u32)
        .u32("TY", wt.ty as u32)
        .u32("TX", wt.tx as u32)
        .u32("PY", wt.py as u32)
        .u32("PX", wt.px as u32);
        program.push(Dispatch::new(
            ctx,
            &key,
            label,
            &[
                (0, src.binding()),
                (2, partials.binding()),
                (6, gimg.binding()),
            ],
            Some((5, &params)),
            [splits as u32, groups as u32, 1],
        )?);
        program.push(split_sum(ctx, label, &partials, out, &params)?);
        workspace.push(partials);
        return Ok(ConvProgram { program, workspace });
    }

    // B operand.
    if let Operand::Weights(w) = operand {
        let len = mul(op, "packed weights", &[phases, k_pad, 4 * n4])?;
        to_u32(op, "packed weights", len)?;
        let packed = Tensor::zeros(ctx, &format!("{label} packed weights"), &[len])?;
        let pack_params = ConvParams { ..params };
        program.push(Dispatch::new(
            ctx,
            &KernelKey::new(Shader::ConvAux, "pack"),
            &format!("{label} pack"),
            &[(0, w.binding()), (2, packed.binding())],
            Some((5, &pack_params)),
            crate::gpu::groups_for(len, 64),
        )?);
        workspace.push(packed);
    }
    let (bias, aux) = epilogue_bindings(ctx, &mut params, &epi)?;

    // Where the product writes: OP_WGRAD with splits writes partial sums.
    let partials = if split {
        Some(partial_sums(ctx, op, label, (splits, m, n))?)
    } else {
        None
    };
    let target = partials.as_ref().unwrap_or(out);
    let (b_bind, g_bind, g4_bind) = match operand {
        Operand::Weights(_) => {
            let packed = workspace
                .last()
                .ok_or_else(|| shape_err(op, "internal: packed weights missing".to_string()))?;
            (packed.binding(), dummy(), dummy())
        }
        Operand::Image(g) => (dummy(), g.binding(), g.binding()),
    };
    let vec_g = plane.is_multiple_of(4);
    let main_params = if split {
        ConvParams {
            epilogue: EPI_STORE,
            ..params
        }
    } else {
        params
    };
    let key = match tile.variant {
        GemmVariant::Subgroup8 => KernelKey::new(Shader::ConvSubgroup8, "conv")
            .u32("OP", kind.code())
            .u32("TM", tile.tm)
            .u32("TNV", tile.tnv),
        GemmVariant::Regblock => KernelKey::new(Shader::ConvRegblock, "conv")
            .u32("OP", kind.code())
            .u32("TM", tile.tm)
            .u32("TNV", tile.tnv)
            .u32("WX", REGBLOCK_WX),
        GemmVariant::Tiled => KernelKey::new(Shader::ConvTiled, "conv").u32("OP", kind.code()),
    }
    .u32("EPILOGUE", main_params.epilogue)
    .u32("ACT", main_params.act)
    .flag("VEC_G", kind == Product::Wgrad && vec_g)
    .flag("SPLIT", split);
    // Subgroup8's OP_FWD epilogue reads aux and writes out as vec4 when the plane allows.
    let key = if tile.variant == GemmVariant::Subgroup8 {
        key.flag("VEC_OUT", kind == Product::Fwd && vec_g && tile.tnv == 1)
    } else {
        key
    };
    let aux4 = aux.clone();
    let mut bindings = vec![
        (0, src.binding()),
        (1, b_bind),
        (2, target.binding()),
        (3, bias),
        (4, aux),
        (6, g_bind),
    ];
    if tile.variant != GemmVariant::Tiled {
        bindings.push((7, g4_bind));
    }
    if tile.variant == GemmVariant::Subgroup8 {
        bindings.push((8, target.binding()));
        bindings.push((9, aux4));
    }
    program.push(Dispatch::new(
        ctx,
        &key,
        label,
        &bindings,
        Some((5, &main_params)),
        [gx as u32, gy as u32, phases.max(splits) as u32],
    )?);
    if let Some(partials) = partials {
        program.push(split_sum(ctx, label, &partials, out, &params)?);
        workspace.push(partials);
    }
    Ok(ConvProgram { program, workspace })
}

/// What the pass wrappers need of either layer kind.
trait Layer {
    /// `ConvTranspose2d`: its forward is `OP_DGRAD` and its input gradient `OP_FWD`.
    const TRANSPOSED: bool;
    /// (in, out)
    fn channels(&self) -> (usize, usize);
    fn kernel_stride_padding(&self) -> [(usize, usize); 3];
    fn weights(&self) -> [usize; 4];
    fn output_hw(&self, hw: (usize, usize)) -> Result<(usize, usize)>;
}

/// The same fields and methods on both layer kinds.
macro_rules! impl_layer {
    ($layer:ty, $transposed:expr) => {
        impl Layer for $layer {
            const TRANSPOSED: bool = $transposed;
            fn channels(&self) -> (usize, usize) {
                (self.in_channels, self.out_channels)
            }
            fn kernel_stride_padding(&self) -> [(usize, usize); 3] {
                [self.kernel, self.stride, self.padding]
            }
            fn weights(&self) -> [usize; 4] {
                self.weight_shape()
            }
            fn output_hw(&self, hw: (usize, usize)) -> Result<(usize, usize)> {
                self.output_size(hw)
            }
        }
    };
}

impl_layer!(Conv2d, false);
impl_layer!(ConvTranspose2d, true);

/// The image a product of a layer gathers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gathered {
    /// The layer's input x (in channels; rows over the output grid): the forward, and the
    /// weight gradient of a Conv2d.
    Input,
    /// The output gradient dy (out channels; rows over the input grid): the input gradient, and
    /// the weight gradient of a ConvTranspose2d (the adjoint convolution's).
    OutputGrad,
}

impl Geometry {
    /// A product of `layer` between its input (B, in, H, W) and output (B, out, OH, OW). A
    /// transposed layer is the adjoint of the convolution that maps (OH, OW) to (H, W), and its
    /// products index along that convolution with the same fields.
    fn of<L: Layer>(
        layer: &L,
        batch: usize,
        input: (usize, usize),
        output: (usize, usize),
        gathered: Gathered,
    ) -> Geometry {
        let (cin, cout) = layer.channels();
        let [kernel, stride, padding] = layer.kernel_stride_padding();
        let ((src_c, (src_h, src_w)), (n, (grid_h, grid_w))) = match gathered {
            Gathered::Input => ((cin, input), (cout, output)),
            Gathered::OutputGrad => ((cout, output), (cin, input)),
        };
        Geometry {
            batch,
            src_c,
            src_h,
            src_w,
            n,
            grid_h,
            grid_w,
            kernel,
            stride,
            padding,
        }
    }
}

/// The forward pass of either layer kind (`OP_FWD`, or `OP_DGRAD` for a transposed layer).
#[allow(clippy::too_many_arguments)]
fn forward<L: Layer>(
    ctx: &GpuContext,
    op: &'static str,
    label: &str,
    layer: &L,
    x: &Tensor<f32>,
    weight: &Tensor<f32>,
    bias: &Tensor<f32>,
    y: &Tensor<f32>,
    act: Activation,
) -> Result<ConvProgram> {
    let (cin, cout) = layer.channels();
    let (b, h, w) = image_dims(op, "input", x, cin)?;
    let (oh, ow) = layer.output_hw((h, w))?;
    expect_shape(op, "weight", weight, &layer.weights())?;
    expect_shape(op, "bias", bias, &[cout])?;
    expect_shape(op, "output", y, &[b, cout, oh, ow])?;
    let kind = if L::TRANSPOSED {
        Product::Dgrad
    } else {
        Product::Fwd
    };
    let geo = Geometry::of(layer, b, (h, w), (oh, ow), Gathered::Input);
    let epi = Epi::BiasAct(bias, act);
    product(
        ctx,
        op,
        label,
        kind,
        &geo,
        x,
        Operand::Weights(weight),
        y,
        epi,
    )
}

/// The input gradient of either layer kind (`OP_DGRAD`, or `OP_FWD` for a transposed layer).
#[allow(clippy::too_many_arguments)]
fn input_grad<L: Layer>(
    ctx: &GpuContext,
    op: &'static str,
    label: &str,
    layer: &L,
    dy: &Tensor<f32>,
    weight: &Tensor<f32>,
    dx: &Tensor<f32>,
    producer: Producer<'_>,
) -> Result<ConvProgram> {
    let (cin, cout) = layer.channels();
    let (b, h, w) = image_dims(op, "input gradient", dx, cin)?;
    let (oh, ow) = layer.output_hw((h, w))?;
    expect_shape(op, "weight", weight, &layer.weights())?;
    expect_shape(op, "output gradient", dy, &[b, cout, oh, ow])?;
    let epi = match producer {
        Some((t, act)) => {
            expect_shape(op, "producer output", t, dx.shape())?;
            Epi::ActGrad(t, act)
        }
        None => Epi::Store,
    };
    let kind = if L::TRANSPOSED {
        Product::Fwd
    } else {
        Product::Dgrad
    };
    let geo = Geometry::of(layer, b, (h, w), (oh, ow), Gathered::OutputGrad);
    product(
        ctx,
        op,
        label,
        kind,
        &geo,
        dy,
        Operand::Weights(weight),
        dx,
        epi,
    )
}

/// The weight gradient of either layer kind (`OP_WGRAD`, gathering x for a Conv2d and dy for a
/// transposed layer).
#[allow(clippy::too_many_arguments)]
fn weight_grad<L: Layer>(
    ctx: &GpuContext,
    op: &'static str,
    label: &str,
    layer: &L,
    x: &Tensor<f32>,
    dy: &Tensor<f32>,
    dw: &Tensor<f32>,
    accumulate: bool,
) -> Result<ConvProgram> {
    let (cin, cout) = layer.channels();
    let (b, h, w) = image_dims(op, "input", x, cin)?;
    let (oh, ow) = layer.output_hw((h, w))?;
    expect_shape(op, "output gradient", dy, &[b, cout, oh, ow])?;
    expect_shape(op, "weight gradient", dw, &layer.weights())?;
    let epi = if accumulate {
        Epi::Accumulate
    } else {
        Epi::Store
    };
    let (gathered, src, dense) = if L::TRANSPOSED {
        (Gathered::OutputGrad, dy, x)
    } else {
        (Gathered::Input, x, dy)
    };
    let geo = Geometry::of(layer, b, (h, w), (oh, ow), gathered);
    let dense = Operand::Image(dense);
    product(ctx, op, label, Product::Wgrad, &geo, src, dense, dw, epi)
}

/// Prepares y (B, out, OH, OW) = act(conv(x) + bias) for x (B, in, H, W), weight
/// (out, in, KH, KW), bias (out,).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    ctx: &GpuContext,
    label: &str,
    layer: &Conv2d,
    x: &Tensor<f32>,
    weight: &Tensor<f32>,
    bias: &Tensor<f32>,
    y: &Tensor<f32>,
    act: Activation,
) -> Result<ConvProgram> {
    let op = "conv2d_forward";
    forward(ctx, op, label, layer, x, weight, bias, y, act)
}

/// The producer epilogue of the input gradients: `Some((output, act))` multiplies the gradient
/// by act'(·) computed from `output`, the producer's stored activation output (the layer's
/// input itself).
pub type Producer<'a> = Option<(&'a Tensor<f32>, Activation)>;

/// Prepares dx (B, in, H, W) = convᵀ(dy) ⊙ act'(producer output) for dy (B, out, OH, OW) and
/// weight (out, in, KH, KW). `dx` fixes H and W (several input sizes share one output size at
/// stride > 1).
pub fn conv2d_input_grad(
    ctx: &GpuContext,
    label: &str,
    layer: &Conv2d,
    dy: &Tensor<f32>,
    weight: &Tensor<f32>,
    dx: &Tensor<f32>,
    producer: Producer<'_>,
) -> Result<ConvProgram> {
    let op = "conv2d_input_grad";
    input_grad(ctx, op, label, layer, dy, weight, dx, producer)
}

/// Prepares dW (out, in, KH, KW) (+)= Σ over images and output pixels of dy ⊗ the input patch,
/// for x (B, in, H, W) and dy (B, out, OH, OW).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_grad(
    ctx: &GpuContext,
    label: &str,
    layer: &Conv2d,
    x: &Tensor<f32>,
    dy: &Tensor<f32>,
    dw: &Tensor<f32>,
    accumulate: bool,
) -> Result<ConvProgram> {
    let op = "conv2d_weight_grad";
    weight_grad(ctx, op, label, layer, x, dy, dw, accumulate)
}
/// Prepares db (C,) (+)= Σ over images and pixels of dy (B, C, OH, OW): the bias gradient of a
/// [`Conv2d`] (C = out channels) or a [`ConvTranspose2d`] (C = its out channels).
pub fn conv_bias_grad(
    ctx: &GpuContext,
    label: &str,
    dy: &Tensor<f32>,
    db: &Tensor<f32>,
    accumulate: bool,
) -> Result<ConvProgram> {
    const OP: &str = "conv_bias_grad";
    let channels = db.len();
    let (b, h, w) = image_dims(OP, "output gradient", dy, channels)?;
    expect_shape(OP, "bias gradient", db, &[channels])?;
    if channels > MAX_GROUPS * 64 {
        return Err(shape_err(
            OP,
            format!("{channels} channels exceed {}", MAX_GROUPS * 64),
        ));
    }
    let params = ConvParams {
        batch: to_u32(OP, "batch", b)?,
        n: to_u32(OP, "channels", channels)?,
        grid_h: to_u32(OP, "height", h)?,
        grid_w: to_u32(OP, "width", w)?,
        epilogue: if accumulate {
            EPI_ACCUMULATE
        } else {
            EPI_STORE
        },
        ..Default::default()
    };
    let mut program = Program::new();
    program.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::ConvAux, "bias_grad"),
        label,
        &[(0, dy.binding()), (2, db.binding()), (6, dy.binding())],
        Some((5, &params)),
        [channels.min(MAX_GROUPS) as u32, 1, 1],
    )?);
    Ok(ConvProgram {
        program,
        workspace: Vec::new(),
    })
}

/// Prepares y (B, out, OH, OW) = act(convᵀ(x) + bias) for x (B, in, H, W), weight
/// (in, out, KH, KW), bias (out,); (OH, OW) from [`ConvTranspose2d::output_size`].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_forward(
    ctx: &GpuContext,
    label: &str,
    layer: &ConvTranspose2d,
    x: &Tensor<f32>,
    weight: &Tensor<f32>,
    bias: &Tensor<f32>,
    y: &Tensor<f32>,
    act: Activation,
) -> Result<ConvProgram> {
    let op = "conv_transpose2d_forward";
    forward(ctx, op, label, layer, x, weight, bias, y, act)
}

/// Prepares dx (B, in, H, W) = conv(dy) ⊙ act'(producer output) for dy (B, out, OH, OW) and
/// weight (in, out, KH, KW).
pub fn conv_transpose2d_input_grad(
    ctx: &GpuContext,
    label: &str,
    layer: &ConvTranspose2d,
    dy: &Tensor<f32>,
    weight: &Tensor<f32>,
    dx: &Tensor<f32>,
    producer: Producer<'_>,
) -> Result<ConvProgram> {
    let op = "conv_transpose2d_input_grad";
    input_grad(ctx, op, label, layer, dy, weight, dx, producer)
}

/// Prepares dW (in, out, KH, KW) (+)= Σ over images and input pixels of x ⊗ the patch of dy it
/// reached, for x (B, in, H, W) and dy (B, out, OH, OW).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_weight_grad(
    ctx: &GpuContext,
    label: &str,
    layer: &ConvTranspose2d,
    x: &Tensor<f32>,
    dy: &Tensor<f32>,
    dw: &Tensor<f32>,
    accumulate: bool,
) -> Result<ConvProgram> {
    let op = "conv_transpose2d_weight_grad";
    weight_grad(ctx, op, label, layer, x, dy, dw, accumulate)
}
