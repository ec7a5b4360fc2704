//! Convolution kernels against their f64 CPU twins, every kernel family: forward, input
//! gradient (with and without the producer's activation derivative), weight gradient and bias
//! gradient (stored and accumulated) of Conv2d and ConvTranspose2d, on shapes that are not
//! multiples of any tile and on the layers of the standard 64×64 and 28×28 architectures; and a
//! finite-difference check of conv → tanh → transposed conv against the GPU gradients.

mod common;
#[path = "common/variants.rs"]
mod variants;

use std::sync::OnceLock;

use common::{assert_close, ctx, data};
use variants::variant_ctx;
use wgvae::cpu::conv as twin;
use wgvae::gpu::{GemmVariant, GpuContext, Tensor};
use wgvae::ops::Activation;
use wgvae::ops::conv::{self, Conv2d, ConvProgram, ConvTranspose2d};

/// Tolerance for sums of `depth` products of values in [-1, 1]: f32 accumulation error grows
/// like sqrt(depth)·2⁻²⁴ per term and at worst depth·2⁻²⁴; 4e-6·depth is above the worst case
/// yet far below the error of a wrong index or a missing tap (of the order of one product).
fn tol(depth: usize) -> (f64, f64) {
    (4e-6 * depth as f64 + 1e-6, 1e-5)
}

fn upload(ctx: &GpuContext, label: &str, shape: &[usize], v: &[f32]) -> Tensor<f32> {
    Tensor::from_slice(ctx, label, shape, v).unwrap()
}

fn run(ctx: &GpuContext, p: wgvae::Result<ConvProgram>) {
    p.unwrap().run(ctx).unwrap();
}

/// Values an activation can output (the stored output the backward reads), with exact zeros for
/// ReLU.
fn act_outputs(act: Activation, seed: u64, n: usize) -> Vec<f32> {
    data(seed, n, -2.0, 2.0)
        .into_iter()
        .map(|v| wgvae::cpu::activate(act, v as f64) as f32)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Layer {
    Conv(Conv2d),
    ConvT(ConvTranspose2d),
}

impl Layer {
    fn channels(self) -> (usize, usize) {
        match self {
            Layer::Conv(l) => (l.in_channels, l.out_channels),
            Layer::ConvT(l) => (l.in_channels, l.out_channels),
        }
    }
    fn weight_shape(self) -> [usize; 4] {
        match self {
            Layer::Conv(l) => l.weight_shape(),
            Layer::ConvT(l) => l.weight_shape(),
        }
    }
    fn output_size(self, hw: (usize, usize)) -> (usize, usize) {
        match self {
            Layer::Conv(l) => l.output_size(hw).unwrap(),
            Layer::ConvT(l) => l.output_size(hw).unwrap(),
        }
    }
}

/// A layer, a batch size and an input (H, W).
type Shape = (Layer, usize, (usize, usize));

const ACTS: [Activation; 5] = [
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Identity,
];

/// The expected results of every pass of one layer on one input.
struct Case {
    layer: Layer,
    batch: usize,
    hw: (usize, usize),
    ohw: (usize, usize),
    act: Activation,
    grad_act: Activation,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
    producer: Vec<f32>,
    old_dw: Vec<f32>,
    old_db: Vec<f32>,
    y: Vec<f64>,
    dx: Vec<f64>,
    dx_act: Vec<f64>,
    dw: Vec<f64>,
    dw_acc: Vec<f64>,
    db: Vec<f64>,
    db_acc: Vec<f64>,
}

fn case(layer: Layer, batch: usize, hw: (usize, usize), seed: u64) -> Case {
    let (cin, cout) = layer.channels();
    let ohw = layer.output_size(hw);
    let ws = layer.weight_shape();
    let wlen: usize = ws.iter().product();
    let act = ACTS[seed as usize % ACTS.len()];
    let grad_act = ACTS[(seed as usize + 2) % ACTS.len()];
    let x = data(seed, batch * cin * hw.0 * hw.1, -1.0, 1.0);
    let w = data(seed + 1, wlen, -1.0, 1.0);
    let bias = data(seed + 2, cout, -1.0, 1.0);
    let dy = data(seed + 3, batch * cout * ohw.0 * ohw.1, -1.0, 1.0);
    let producer = act_outputs(grad_act, seed + 4, x.len());
    let old_dw = data(seed + 5, wlen, -1.0, 1.0);
    let old_db = data(seed + 6, cout, -1.0, 1.0);
    let (y, dx, dx_act, dw, dw_acc) = match layer {
        Layer::Conv(l) => (
            twin::conv2d_forward(&l, batch, hw, &x, &w, &bias, act),
            twin::conv2d_input_grad(&l, batch, hw, &dy, &w, None),
            twin::conv2d_input_grad(&l, batch, hw, &dy, &w, Some((&producer, grad_act))),
            twin::conv2d_weight_grad(&l, batch, hw, &x, &dy, None),
            twin::conv2d_weight_grad(&l, batch, hw, &x, &dy, Some(&old_dw)),
        ),
        Layer::ConvT(l) => (
            twin::conv_transpose2d_forward(&l, batch, hw, &x, &w, &bias, act),
            twin::conv_transpose2d_input_grad(&l, batch, hw, &dy, &w, None),
            twin::conv_transpose2d_input_grad(&l, batch, hw, &dy, &w, Some((&producer, grad_act))),
            twin::conv_transpose2d_weight_grad(&l, batch, hw, &x, &dy, None),
            twin::conv_transpose2d_weight_grad(&l, batch, hw, &x, &dy, Some(&old_dw)),
        ),
    };
    let plane = ohw.0 * ohw.1;
    let db = twin::conv_bias_grad(&dy, batch, cout, plane, None);
    let db_acc = twin::conv_bias_grad(&dy, batch, cout, plane, Some(&old_db));
    Case {
        layer,
        batch,
        hw,
        ohw,
        act,
        grad_act,
        x,
        w,
        bias,
        dy,
        producer,
        old_dw,
        old_db,
        y,
        dx,
        dx_act,
        dw,
        dw_acc,
        db,
        db_acc,
    }
}

/// Runs every pass of `c` on `ctx` and compares with the twins.
fn check(ctx: &GpuContext, c: &Case) {
    let (cin, cout) = c.layer.channels();
    let (b, (h, w), (oh, ow)) = (c.batch, c.hw, c.ohw);
    let ws = c.layer.weight_shape();
    let taps = ws[2] * ws[3];
    let what = format!(
        "{} {:?} batch {b} {h}x{w} -> {oh}x{ow}",
        ctx.gemm_variant.name(),
        c.layer
    );
    let xs = [b, cin, h, w];
    let ys = [b, cout, oh, ow];
    let x = upload(ctx, "x", &xs, &c.x);
    let wt = upload(ctx, "w", &ws, &c.w);
    let bias = upload(ctx, "bias", &[cout], &c.bias);
    let dy = upload(ctx, "dy", &ys, &c.dy);
    let producer = upload(ctx, "producer output", &xs, &c.producer);
    let y = Tensor::<f32>::zeros(ctx, "y", &ys).unwrap();
    let dx = Tensor::<f32>::zeros(ctx, "dx", &xs).unwrap();
    let dw = Tensor::<f32>::zeros(ctx, "dw", &ws).unwrap();
    let db = Tensor::<f32>::zeros(ctx, "db", &[cout]).unwrap();
    // Depths of the sums, for the tolerances: every output of the forward and the input
    // gradient sums at most (channels · taps) products, every weight gradient (batch · pixels).
    let (fwd_depth, dx_depth, dw_depth) = match c.layer {
        Layer::Conv(_) => (cin * taps, cout * taps, b * oh * ow),
        Layer::ConvT(_) => (cin * taps, cout * taps, b * h * w),
    };

    let (fwd, dgrad, dgrad_act, wgrad, wgrad_acc) = match c.layer {
        Layer::Conv(l) => (
            conv::conv2d_forward(ctx, "fwd", &l, &x, &wt, &bias, &y, c.act),
            conv::conv2d_input_grad(ctx, "dgrad", &l, &dy, &wt, &dx, None),
            conv::conv2d_input_grad(
                ctx,
                "dgrad act",
                &l,
                &dy,
                &wt,
                &dx,
                Some((&producer, c.grad_act)),
            ),
            conv::conv2d_weight_grad(ctx, "wgrad", &l, &x, &dy, &dw, false),
            conv::conv2d_weight_grad(ctx, "wgrad acc", &l, &x, &dy, &dw, true),
        ),
        Layer::ConvT(l) => (
            conv::conv_transpose2d_forward(ctx, "fwd", &l, &x, &wt, &bias, &y, c.act),
            conv::conv_transpose2d_input_grad(ctx, "dgrad", &l, &dy, &wt, &dx, None),
            conv::conv_transpose2d_input_grad(
                ctx,
                "dgrad act",
                &l,
                &dy,
                &wt,
                &dx,
                Some((&producer, c.grad_act)),
            ),
            conv::conv_transpose2d_weight_grad(ctx, "wgrad", &l, &x, &dy, &dw, false),
            conv::conv_transpose2d_weight_grad(ctx, "wgrad acc", &l, &x, &dy, &dw, true),
        ),
    };

    run(ctx, fwd);
    let (a, r) = tol(fwd_depth);
    let act = c.act;
    assert_close(
        &format!("{what} forward {act:?}"),
        &y.read(ctx).unwrap(),
        &c.y,
        a,
        r,
    );

    run(ctx, dgrad);
    let (a, r) = tol(dx_depth);
    assert_close(
        &format!("{what} input grad"),
        &dx.read(ctx).unwrap(),
        &c.dx,
        a,
        r,
    );
    run(ctx, dgrad_act);
    let ga = c.grad_act;
    assert_close(
        &format!("{what} input grad with {ga:?}'"),
        &dx.read(ctx).unwrap(),
        &c.dx_act,
        a,
        r,
    );

    let (a, r) = tol(dw_depth);
    run(ctx, wgrad);
    assert_close(
        &format!("{what} weight grad"),
        &dw.read(ctx).unwrap(),
        &c.dw,
        a,
        r,
    );
    dw.write(ctx, &c.old_dw).unwrap();
    run(ctx, wgrad_acc);
    assert_close(
        &format!("{what} weight grad accumulated"),
        &dw.read(ctx).unwrap(),
        &c.dw_acc,
        a,
        r,
    );

    let (a, r) = tol(b * oh * ow);
    run(ctx, conv::conv_bias_grad(ctx, "db", &dy, &db, false));
    assert_close(
        &format!("{what} bias grad"),
        &db.read(ctx).unwrap(),
        &c.db,
        a,
        r,
    );
    db.write(ctx, &c.old_db).unwrap();
    run(ctx, conv::conv_bias_grad(ctx, "db acc", &dy, &db, true));
    assert_close(
        &format!("{what} bias grad accumulated"),
        &db.read(ctx).unwrap(),
        &c.db_acc,
        a,
        r,
    );
}

fn conv(cin: usize, cout: usize, k: (usize, usize), s: (usize, usize), p: (usize, usize)) -> Layer {
    Layer::Conv(Conv2d::new(cin, cout, k).with_stride(s).with_padding(p))
}

fn convt(
    cin: usize,
    cout: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    op: (usize, usize),
) -> Layer {
    Layer::ConvT(
        ConvTranspose2d::new(cin, cout, k)
            .with_stride(s)
            .with_padding(p)
            .with_output_padding(op),
    )
}

/// Kernels 1, 3, 4, 5 and rectangular ones, stride 1, 2 and 3 (and a stride above the kernel,
/// where some output phases have no taps), padding 0, 1 and 2, output padding, channels 1, 2,
/// 3, odd and past 32 (two column groups per lane), batch 1, 2, 3 and 7, spatial sizes that fit
/// no tile. Transposed products into at most 4 channels take the narrow kernel (channels 1, 2,
/// 3 here), the others (5, 7, 37) the implicit GEMM.
fn awkward() -> Vec<Shape> {
    vec![
        (conv(3, 5, (1, 1), (1, 1), (0, 0)), 1, (5, 7)),
        (conv(1, 3, (3, 3), (1, 1), (1, 1)), 7, (13, 13)),
        (conv(3, 7, (4, 4), (2, 2), (1, 1)), 1, (28, 28)),
        (conv(5, 4, (5, 5), (2, 2), (0, 0)), 7, (13, 13)),
        (conv(3, 9, (3, 5), (1, 2), (1, 0)), 2, (5, 7)),
        (conv(1, 1, (1, 1), (2, 2), (0, 0)), 7, (13, 13)),
        (conv(7, 33, (3, 3), (1, 1), (1, 1)), 3, (5, 7)),
        (conv(1, 5, (4, 4), (2, 2), (1, 1)), 1, (64, 64)),
        (convt(3, 5, (3, 3), (2, 2), (1, 1), (1, 1)), 7, (5, 7)),
        (convt(4, 3, (4, 4), (2, 2), (1, 1), (0, 0)), 1, (7, 7)),
        (convt(5, 7, (5, 5), (1, 1), (2, 2), (0, 0)), 2, (13, 13)),
        (convt(3, 2, (1, 1), (2, 2), (0, 0), (1, 0)), 7, (5, 7)),
        (convt(1, 3, (3, 4), (2, 1), (0, 1), (1, 0)), 3, (5, 7)),
        (convt(33, 1, (4, 4), (2, 2), (1, 1), (0, 0)), 1, (5, 7)),
        (convt(3, 37, (4, 4), (2, 2), (1, 1), (0, 0)), 1, (16, 16)),
        (conv(2, 3, (3, 3), (3, 3), (1, 1)), 2, (13, 13)),
        (convt(2, 1, (5, 5), (3, 3), (2, 2), (2, 1)), 2, (5, 7)),
        // Output planes that are multiples of 4 (the vec4 epilogue of OP_FWD on 8-lane
        // subgroups) with row counts no tile divides: 4x6 planes in 7 images, and input
        // gradients into 5 and 7 channels of 6x6 and 4x4 planes, with stride 1 and 2 and
        // padding 0 and 1.
        (conv(3, 5, (3, 3), (1, 1), (0, 0)), 7, (6, 8)),
        (convt(5, 3, (3, 3), (1, 1), (1, 1), (0, 0)), 7, (6, 6)),
        (convt(7, 3, (4, 4), (2, 2), (0, 0), (0, 0)), 7, (4, 4)),
    ]
}

/// Gather products (OP_FWD) from one channel, which take conv_single.wgsl when the output width
/// is a multiple of 4 and the channel count has a divisor in 4..=8 or is at most 8: Conv2d forwards from one channel (bias and every
/// activation) and input gradients of transposed layers into one channel (stored, and times the
/// producer's activation derivative); kernels 1, 3, 4 and 5x3, stride 1, 2 and 3, padding 0 and
/// 1, channels 1, 3, 5, 12, 32 and 11 (no such divisor: the implicit GEMM), batch 1, 2 and 7,
/// output grids no block divides (and narrower than one block); and three it does not take.
/// On 8-lane subgroups the weight gradients of all of these gather from one channel and take
/// conv_wsingle.wgsl (channels 1 to 32 per 4-channel lanes, 8- and 7-pixel blocks, ragged
/// grids, several images per split).
fn single() -> Vec<Shape> {
    vec![
        (conv(1, 3, (3, 3), (2, 2), (0, 0)), 7, (13, 17)),
        (conv(1, 5, (1, 1), (1, 1), (0, 0)), 1, (5, 8)),
        (conv(1, 32, (4, 4), (2, 2), (1, 1)), 7, (13, 8)),
        (conv(1, 1, (4, 4), (1, 1), (1, 1)), 1, (9, 13)),
        (conv(1, 12, (3, 3), (1, 1), (1, 1)), 2, (3, 4)),
        (conv(1, 5, (5, 3), (3, 2), (1, 0)), 2, (17, 17)),
        (conv(1, 5, (3, 3), (1, 1), (1, 1)), 7, (5, 12)),
        (conv(1, 3, (4, 4), (2, 2), (1, 1)), 2, (10, 24)),
        (convt(32, 1, (4, 4), (2, 2), (1, 1), (0, 0)), 7, (7, 12)),
        (convt(5, 1, (3, 3), (1, 1), (0, 0), (0, 0)), 2, (5, 8)),
        (convt(3, 1, (1, 1), (2, 2), (0, 0), (1, 1)), 7, (5, 4)),
        (convt(32, 1, (4, 4), (2, 2), (1, 1), (0, 0)), 7, (3, 4)),
        (convt(32, 1, (4, 4), (2, 2), (1, 1), (0, 0)), 1, (32, 32)),
        // Not taken: 11 channels (no divisor in 4..=8), widths 5 and 9 (not multiples of 4).
        (conv(1, 11, (3, 3), (1, 1), (1, 1)), 2, (5, 8)),
        (conv(1, 5, (3, 3), (2, 2), (1, 1)), 2, (9, 9)),
        (convt(32, 1, (4, 4), (2, 2), (1, 1), (0, 0)), 3, (7, 9)),
    ]
}

/// The standard 64x64 architecture (grey images): four 4x4 stride-2 pad-1 convolutions with
/// 32, 32, 64, 64 channels (64 -> 32 -> 16 -> 8 -> 4) and the transposed mirror, at batch 1
/// (other batches: the awkward and 28x28 cases).
fn standard64() -> Vec<Shape> {
    let s = (2, 2);
    let p = (1, 1);
    let k = (4, 4);
    vec![
        (conv(1, 32, k, s, p), 1, (64, 64)),
        (conv(32, 32, k, s, p), 1, (32, 32)),
        (conv(32, 64, k, s, p), 1, (16, 16)),
        (conv(64, 64, k, s, p), 1, (8, 8)),
        (convt(64, 64, k, s, p, (0, 0)), 1, (4, 4)),
        (convt(64, 32, k, s, p, (0, 0)), 1, (8, 8)),
        (convt(32, 32, k, s, p, (0, 0)), 1, (16, 16)),
        (convt(32, 1, k, s, p, (0, 0)), 1, (32, 32)),
    ]
}

/// The 28x28 variant: 28 -> 14 -> 7 and back.
fn standard28() -> Vec<Shape> {
    let s = (2, 2);
    let p = (1, 1);
    let k = (4, 4);
    vec![
        (conv(1, 32, k, s, p), 3, (28, 28)),
        (conv(32, 64, k, s, p), 3, (14, 14)),
        (convt(64, 32, k, s, p, (0, 0)), 3, (7, 7)),
        (convt(32, 1, k, s, p, (0, 0)), 3, (14, 14)),
    ]
}

/// The cases of one list with their twin results, computed once and shared by the families.
fn cases(list: &'static str) -> &'static [Case] {
    static AWKWARD: OnceLock<Vec<Case>> = OnceLock::new();
    static STANDARD64: OnceLock<Vec<Case>> = OnceLock::new();
    static STANDARD28: OnceLock<Vec<Case>> = OnceLock::new();
    static SINGLE: OnceLock<Vec<Case>> = OnceLock::new();
    let (cell, layers, seed): (_, fn() -> Vec<Shape>, u64) = match list {
        "awkward" => (&AWKWARD, awkward, 100),
        "standard64" => (&STANDARD64, standard64, 400),
        "standard28" => (&STANDARD28, standard28, 700),
        "single" => (&SINGLE, single, 1000),
        _ => unreachable!("no case list {list}"),
    };
    cell.get_or_init(|| {
        layers()
            .into_iter()
            .enumerate()
            .map(|(i, (layer, batch, hw))| case(layer, batch, hw, seed + 10 * i as u64))
            .collect()
    })
}

fn check_all(variant: GemmVariant, list: &'static str) {
    let Some(ctx) = variant_ctx(variant) else {
        return;
    };
    for c in cases(list) {
        check(ctx, c);
    }
}

/// ½ Σ (y − t)² of x → conv1 → tanh → convT, all in f64 (the twins on f64 slices).
#[allow(clippy::too_many_arguments)]
fn fd_loss(
    conv1: &Conv2d,
    convt2: &ConvTranspose2d,
    batch: usize,
    hw: (usize, usize),
    x: &[f64],
    w1: &[f64],
    b1: &[f64],
    w2: &[f64],
    b2: &[f64],
    t: &[f64],
) -> f64 {
    let h = twin::conv2d_forward(conv1, batch, hw, x, w1, b1, Activation::Tanh);
    let hw1 = conv1.output_size(hw).unwrap();
    let y = twin::conv_transpose2d_forward(convt2, batch, hw1, &h, w2, b2, Activation::Identity);
    y.iter().zip(t).map(|(y, t)| 0.5 * (y - t) * (y - t)).sum()
}

/// Gradients of conv → tanh → transposed conv from the GPU kernels (forward with the fused
/// bias + tanh, input gradient with the fused tanh', weight and bias gradients) against central
/// finite differences of the f64 loss, for every parameter and every input value.
fn gradcheck(variant: GemmVariant) {
    let Some(ctx) = variant_ctx(variant) else {
        return;
    };
    let batch = 2;
    let hw = (7, 7);
    let conv1 = Conv2d::new(2, 3, (3, 3))
        .with_stride((2, 2))
        .with_padding((1, 1));
    let convt2 = ConvTranspose2d::new(3, 2, (3, 3))
        .with_stride((2, 2))
        .with_padding((1, 1));
    let hw1 = conv1.output_size(hw).unwrap();
    assert_eq!(convt2.output_size(hw1).unwrap(), hw);
    let xs = [batch, 2, hw.0, hw.1];
    let hs = [batch, 3, hw1.0, hw1.1];
    let n_x: usize = xs.iter().product();
    let x = data(1, n_x, -1.0, 1.0);
    let w1 = data(2, 2 * 3 * 9, -0.5, 0.5);
    let b1 = data(3, 3, -0.5, 0.5);
    let w2 = data(4, 3 * 2 * 9, -0.5, 0.5);
    let b2 = data(5, 2, -0.5, 0.5);
    let t = data(6, n_x, -1.0, 1.0);

    let gx = upload(ctx, "x", &xs, &x);
    let gw1 = upload(ctx, "w1", &conv1.weight_shape(), &w1);
    let gb1 = upload(ctx, "b1", &[3], &b1);
    let gw2 = upload(ctx, "w2", &convt2.weight_shape(), &w2);
    let gb2 = upload(ctx, "b2", &[2], &b2);
    let h = Tensor::<f32>::zeros(ctx, "h", &hs).unwrap();
    let y = Tensor::<f32>::zeros(ctx, "y", &xs).unwrap();
    run(
        ctx,
        conv::conv2d_forward(ctx, "conv1", &conv1, &gx, &gw1, &gb1, &h, Activation::Tanh),
    );
    run(
        ctx,
        conv::conv_transpose2d_forward(
            ctx,
            "convt2",
            &convt2,
            &h,
            &gw2,
            &gb2,
            &y,
            Activation::Identity,
        ),
    );
    let dy_host: Vec<f32> = y
        .read(ctx)
        .unwrap()
        .iter()
        .zip(&t)
        .map(|(y, t)| y - t)
        .collect();
    let dy = upload(ctx, "dy", &xs, &dy_host);
    let dw2 = Tensor::<f32>::zeros(ctx, "dw2", &convt2.weight_shape()).unwrap();
    let db2 = Tensor::<f32>::zeros(ctx, "db2", &[2]).unwrap();
    let dpre = Tensor::<f32>::zeros(ctx, "dpre1", &hs).unwrap();
    let dw1 = Tensor::<f32>::zeros(ctx, "dw1", &conv1.weight_shape()).unwrap();
    let db1 = Tensor::<f32>::zeros(ctx, "db1", &[3]).unwrap();
    let dx = Tensor::<f32>::zeros(ctx, "dx", &xs).unwrap();
    run(
        ctx,
        conv::conv_transpose2d_weight_grad(ctx, "dw2", &convt2, &h, &dy, &dw2, false),
    );
    run(ctx, conv::conv_bias_grad(ctx, "db2", &dy, &db2, false));
    run(
        ctx,
        conv::conv_transpose2d_input_grad(
            ctx,
            "dh",
            &convt2,
            &dy,
            &gw2,
            &dpre,
            Some((&h, Activation::Tanh)),
        ),
    );
    run(
        ctx,
        conv::conv2d_weight_grad(ctx, "dw1", &conv1, &gx, &dpre, &dw1, false),
    );
    run(ctx, conv::conv_bias_grad(ctx, "db1", &dpre, &db1, false));
    run(
        ctx,
        conv::conv2d_input_grad(ctx, "dx", &conv1, &dpre, &gw1, &dx, None),
    );

    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let mut params = [f64s(&x), f64s(&w1), f64s(&b1), f64s(&w2), f64s(&b2)];
    let t = f64s(&t);
    let gpu = [&dx, &dw1, &db1, &dw2, &db2];
    let names = ["dx", "dW1", "db1", "dW2", "db2"];
    let eps = 1e-4;
    for which in 0..params.len() {
        let mut fd = Vec::with_capacity(params[which].len());
        for i in 0..params[which].len() {
            let v = params[which][i];
            let mut loss_at = |value: f64| {
                params[which][i] = value;
                let [x, w1, b1, w2, b2] = &params;
                fd_loss(&conv1, &convt2, batch, hw, x, w1, b1, w2, b2, &t)
            };
            let up = loss_at(v + eps);
            let down = loss_at(v - eps);
            params[which][i] = v;
            fd.push((up - down) / (2.0 * eps));
        }
        // The GPU's forward is f32 (inputs rounded, sums in f32) and the differences are
        // exact to ~1e-9 here, so the tolerance covers f32 error on gradients of size ~1-10;
        // a missing tap or a missing tanh' is off by far more.
        assert_close(
            &format!("{} gradcheck {}", variant.name(), names[which]),
            &gpu[which].read(ctx).unwrap(),
            &fd,
            2e-4,
            1e-3,
        );
    }
}

/// One test per kernel family of each check, in a module named after the check:
/// `awkward::subgroup8`, `finite_differences::tiled`, ...
macro_rules! family_tests {
    ($($name:ident: $check:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn subgroup8() {
                ($check)(GemmVariant::Subgroup8);
            }
            #[test]
            fn regblock() {
                ($check)(GemmVariant::Regblock);
            }
            #[test]
            fn tiled() {
                ($check)(GemmVariant::Tiled);
            }
        }
    )*};
}

family_tests! {
    awkward: |v| check_all(v, "awkward");
    standard64: |v| check_all(v, "standard64");
    standard28: |v| check_all(v, "standard28");
    single: |v| check_all(v, "single");
    finite_differences: gradcheck;
}

#[test]
fn bad_shapes_and_layers_are_reported() {
    let ctx = ctx();
    let layer = Conv2d::new(3, 4, (3, 3)).with_padding((1, 1));
    let x = Tensor::<f32>::zeros(ctx, "x", &[2, 3, 5, 5]).unwrap();
    let w = Tensor::<f32>::zeros(ctx, "w", &[4, 3, 3, 3]).unwrap();
    let w_bad = Tensor::<f32>::zeros(ctx, "w bad", &[3, 4, 3, 3]).unwrap();
    let bias = Tensor::<f32>::zeros(ctx, "bias", &[4]).unwrap();
    let y = Tensor::<f32>::zeros(ctx, "y", &[2, 4, 5, 5]).unwrap();
    let y_bad = Tensor::<f32>::zeros(ctx, "y bad", &[2, 4, 4, 5]).unwrap();
    let msg = |r: wgvae::Result<ConvProgram>| r.unwrap_err().to_string();
    let fwd = |layer: &Conv2d, x, w, y, act| {
        msg(conv::conv2d_forward(ctx, "f", layer, x, w, &bias, y, act))
    };
    let relu = Activation::Relu;

    let e = fwd(&layer, &x, &w_bad, &y, relu);
    assert!(
        e.contains("conv2d_forward: weight `w bad`") && e.contains("[4, 3, 3, 3]"),
        "{e}"
    );
    let e = fwd(&layer, &x, &w, &y_bad, relu);
    assert!(
        e.contains("output `y bad`") && e.contains("[2, 4, 5, 5]"),
        "{e}"
    );
    let e = fwd(&layer, &y, &w, &y, relu);
    assert!(
        e.contains("input `y`") && e.contains("(batch, 3, height, width)"),
        "{e}"
    );
    let e = fwd(&layer, &x, &w, &y, Activation::LeakyRelu(0.0));
    assert!(e.contains("slope 0"), "{e}");
    let e = msg(conv::conv2d_input_grad(
        ctx,
        "d",
        &layer,
        &y,
        &w,
        &x,
        Some((&y, relu)),
    ));
    assert!(e.contains("producer output `y`"), "{e}");
    let e = fwd(&Conv2d::new(3, 4, (7, 7)), &x, &w, &y, relu);
    assert!(e.contains("smaller than the kernel"), "{e}");
    let zero = Conv2d::new(3, 4, (3, 3)).with_stride((0, 1));
    assert!(zero.validate().unwrap_err().to_string().contains("stride"));

    // The transposed layer's passes name their own operands: input y (2, 4, 5, 5), output x
    // (2, 3, 5, 5), weights (in, out, KH, KW) = (4, 3, 3, 3).
    let tl = ConvTranspose2d::new(4, 3, (3, 3)).with_padding((1, 1));
    let e = msg(conv::conv_transpose2d_forward(
        ctx, "t", &tl, &y, &w_bad, &bias, &x, relu,
    ));
    assert!(
        e.contains("conv_transpose2d_forward: weight `w bad`") && e.contains("[4, 3, 3, 3]"),
        "{e}"
    );
    let e = msg(conv::conv_transpose2d_input_grad(
        ctx, "t", &tl, &x, &w, &y_bad, None,
    ));
    assert!(
        e.contains("conv_transpose2d_input_grad: output gradient `x`")
            && e.contains("[2, 3, 4, 5]"),
        "{e}"
    );
    let e = msg(conv::conv_transpose2d_weight_grad(
        ctx, "t", &tl, &y, &x, &w_bad, false,
    ));
    assert!(
        e.contains("conv_transpose2d_weight_grad: weight gradient `w bad`")
            && e.contains("[4, 3, 3, 3]"),
        "{e}"
    );
    let t = ConvTranspose2d::new(3, 4, (4, 4))
        .with_stride((2, 2))
        .with_output_padding((2, 0));
    let e = t.output_size((5, 5)).unwrap_err().to_string();
    assert!(e.contains("output padding (2, 0)"), "{e}");
    let db = Tensor::<f32>::zeros(ctx, "db", &[5]).unwrap();
    let e = msg(conv::conv_bias_grad(ctx, "db", &y, &db, false));
    assert!(e.contains("(batch, 5, height, width)"), "{e}");
}
