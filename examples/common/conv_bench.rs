//! Shared by `bench_conv` and `bench_kernels` (included with `#[path]`): the convolution layers
//! of the conv architectures, their prepared passes at a given batch, the reference GEMM and
//! the timing of one program, alone or paired with a run of that GEMM.
//!
//! The conv architectures (grey images, every layer 4×4, stride 2, padding 1):
//!
//! - 64×64: encoder Conv2d 1→32, 32→32, 32→64, 64→64 (64 → 32 → 16 → 8 → 4), then Linear
//!   1024→256→2·latent; decoder Linear latent→256→1024, then ConvTranspose2d 64→64, 64→32,
//!   32→32, 32→1 (4 → 8 → 16 → 32 → 64).
//! - 28×28: encoder Conv2d 1→32 (28 → 14), 32→64 (14 → 7), Linear 64·7·7→256; decoder mirror,
//!   ConvTranspose2d 64→32 (7 → 14), 32→1 (14 → 28).
//!
//! Only the convolutions are listed here; the linear layers are GEMMs.

// Each bench uses part of this module.
#![allow(dead_code)]

use std::time::Instant;

use anyhow::{Context, Result};
use wgvae::gpu::{GpuContext, GpuTimer, Program, Tensor};
use wgvae::ops::conv::{self, Conv2d, ConvProgram, ConvTranspose2d};
use wgvae::ops::{Activation, Epilogue, Trans, gemm};
use wgvae::rng::HostRng;

/// Untimed runs before the timed ones.
pub const WARMUP: usize = 2;

/// The reference GEMM: (M, K, N) NN with bias + ReLU, the first layer of the classic MNIST VAE
/// at batch 128.
pub const REFERENCE_GEMM: (usize, usize, usize) = (128, 784, 400);

#[derive(Clone, Copy, Debug)]
pub enum Layer {
    Conv(Conv2d),
    ConvT(ConvTranspose2d),
}

/// One convolution of an architecture and its input size (square).
#[derive(Clone, Copy, Debug)]
pub struct LayerShape {
    /// The architecture: `64x64` or `28x28`.
    pub arch: &'static str,
    pub layer: Layer,
    pub hw: usize,
}

/// Every convolution of the 64×64 architecture, then of the 28×28 one, in the order the
/// training step runs their forward passes.
pub fn conv_layers() -> Vec<LayerShape> {
    let (k, s, p) = ((4, 4), (2, 2), (1, 1));
    let c = |i, o| Layer::Conv(Conv2d::new(i, o, k).with_stride(s).with_padding(p));
    let t = |i, o| Layer::ConvT(ConvTranspose2d::new(i, o, k).with_stride(s).with_padding(p));
    let arch64 = [
        (c(1, 32), 64),
        (c(32, 32), 32),
        (c(32, 64), 16),
        (c(64, 64), 8),
        (t(64, 64), 4),
        (t(64, 32), 8),
        (t(32, 32), 16),
        (t(32, 1), 32),
    ];
    let arch28 = [
        (c(1, 32), 28),
        (c(32, 64), 14),
        (t(64, 32), 7),
        (t(32, 1), 14),
    ];
    let shape = |arch| move |(layer, hw)| LayerShape { arch, layer, hw };
    arch64
        .into_iter()
        .map(shape("64x64"))
        .chain(arch28.into_iter().map(shape("28x28")))
        .collect()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A tensor of uniform values in [lo, hi).
pub fn uniform(
    ctx: &GpuContext,
    rng: &mut HostRng,
    label: &str,
    shape: &[usize],
    lo: f32,
    hi: f32,
) -> Result<Tensor<f32>> {
    let data = rng.uniform_vec(shape.iter().product(), lo, hi);
    Tensor::from_slice(ctx, label, shape, &data)
        .with_context(|| format!("creating {label} {shape:?}"))
}

pub fn zeros(ctx: &GpuContext, label: &str, shape: &[usize]) -> Result<Tensor<f32>> {
    Tensor::zeros(ctx, label, shape).with_context(|| format!("creating {label} {shape:?}"))
}

/// Times programs: GPU timestamps around a pass when the adapter offers them, else the wall
/// clock around submit + wait.
pub struct Timing<'a> {
    pub ctx: &'a GpuContext,
    timer: Option<GpuTimer>,
}

impl<'a> Timing<'a> {
    pub fn new(ctx: &'a GpuContext) -> Result<Self> {
        let timer = GpuTimer::new(ctx).context("creating the GPU timer")?;
        Ok(Timing { ctx, timer })
    }

    pub fn gpu_timestamps(&self) -> bool {
        self.timer.is_some()
    }

    /// One run of `prog` in a compute pass of its own: (GPU ns when timestamps are used, wall
    /// ns of submit + wait).
    pub fn run_once(&self, what: &str, prog: &Program) -> Result<(Option<f64>, f64)> {
        let ctx = self.ctx;
        let mut enc = ctx.encoder("bench");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: self.timer.as_ref().map(|t| t.timestamp_writes()),
            });
            prog.record_pass(&mut pass);
        }
        if let Some(t) = &self.timer {
            t.resolve(&mut enc);
        }
        let t0 = Instant::now();
        ctx.submit(what, enc)
            .with_context(|| format!("running {what}"))?;
        ctx.wait().with_context(|| format!("waiting for {what}"))?;
        let wall = t0.elapsed().as_secs_f64() * 1e9;
        let gpu = match &self.timer {
            Some(t) => Some(t.read_ns(ctx).with_context(|| format!("timing {what}"))?),
            None => None,
        };
        Ok((gpu, wall))
    }

    /// Nanoseconds of one run by the timing method.
    pub fn ns(&self, what: &str, prog: &Program) -> Result<f64> {
        let (gpu, wall) = self.run_once(what, prog)?;
        Ok(gpu.unwrap_or(wall))
    }

    /// Medians of `reps` runs of `prog` after the warm-up runs: (ns by the timing method, wall
    /// ns).
    pub fn medians(&self, what: &str, prog: &Program, reps: usize) -> Result<(f64, f64)> {
        for _ in 0..WARMUP {
            self.run_once(what, prog)?;
        }
        let mut gpu = Vec::with_capacity(reps);
        let mut wall = Vec::with_capacity(reps);
        for _ in 0..reps {
            let (g, w) = self.run_once(what, prog)?;
            gpu.extend(g);
            wall.push(w);
        }
        let wall_ns = median(&mut wall);
        let ns = if gpu.is_empty() {
            wall_ns
        } else {
            median(&mut gpu)
        };
        Ok((ns, wall_ns))
    }

    /// `prog` (of `flops` nominal FLOPs) timed `reps` times, each run right after a run of the
    /// reference GEMM so that both see the same load on a shared machine.
    pub fn paired(
        &self,
        what: &str,
        prog: &Program,
        flops: f64,
        gemm: &ReferenceGemm,
        reps: usize,
    ) -> Result<Paired> {
        let mut pairs = Vec::with_capacity(reps);
        let mut wall = Vec::with_capacity(reps);
        for i in 0..WARMUP + reps {
            let g = self.ns("the reference GEMM", &gemm.program)?;
            let (c_gpu, c_wall) = self.run_once(what, prog)?;
            if i >= WARMUP {
                pairs.push((c_gpu.unwrap_or(c_wall), g));
                wall.push(c_wall);
            }
        }
        let mut ns: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let mut gemm_rates: Vec<f64> = pairs.iter().map(|p| gemm.flops / p.1).collect();
        let mut ratios: Vec<f64> = pairs
            .iter()
            .map(|p| (flops / p.0) / (gemm.flops / p.1))
            .collect();
        let ns = median(&mut ns);
        // Units: flops / ns = GFLOP/s.
        Ok(Paired {
            ns,
            wall_ns: median(&mut wall),
            gflops: flops / ns,
            gemm_gflops: median(&mut gemm_rates),
            ratio: median(&mut ratios),
        })
    }
}

/// A program timed in pairs with the reference GEMM.
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    /// Median nanoseconds of the program by the timing method.
    pub ns: f64,
    /// Median wall-clock nanoseconds of the program (submit + wait).
    pub wall_ns: f64,
    /// Its median rate.
    pub gflops: f64,
    /// The median rate of the GEMM runs paired with it.
    pub gemm_gflops: f64,
    /// Median over the pairs of (program rate / GEMM rate).
    pub ratio: f64,
}

/// [`REFERENCE_GEMM`] prepared with the context's kernel family.
pub struct ReferenceGemm {
    pub program: Program,
    pub flops: f64,
    _operands: Vec<Tensor<f32>>,
}

impl ReferenceGemm {
    pub fn new(ctx: &GpuContext, rng: &mut HostRng) -> Result<Self> {
        let (m, k, n) = REFERENCE_GEMM;
        let a = uniform(ctx, rng, "A", &[m, k], -1.0, 1.0)?;
        let b = uniform(ctx, rng, "B", &[k, n], -1.0, 1.0)?;
        let c = zeros(ctx, "C", &[m, n])?;
        let bias = uniform(ctx, rng, "bias", &[n], -0.1, 0.1)?;
        let epilogue = Epilogue::BiasAct {
            bias: &bias,
            act: Activation::Relu,
        };
        let d = gemm(ctx, "reference gemm", &a, &b, &c, Trans::NN, epilogue)
            .context("preparing the reference GEMM")?;
        let mut program = Program::new();
        program.push(d);
        Ok(ReferenceGemm {
            program,
            flops: 2.0 * (m * k * n) as f64,
            _operands: vec![a, b, c, bias],
        })
    }
}

/// The prepared passes of one layer at one batch: forward (bias + ReLU fused), input gradient
/// (ReLU' of the producer fused), weight gradient, bias gradient.
pub struct LayerPasses {
    /// e.g. `conv 32->64 16->8`
    pub label: String,
    /// Nominal FLOPs of each of the three products, 2·B·P·C_out·C_in·KH·KW with P the pixels
    /// of the smaller image (a convolution's output, a transposed convolution's input).
    pub flops: f64,
    /// Bytes the bias gradient reads (dy) and writes (db).
    pub bias_grad_bytes: f64,
    /// (pass name, program) of the forward, input gradient and weight gradient.
    pub products: [(&'static str, ConvProgram); 3],
    pub bias_grad: ConvProgram,
    _operands: Vec<Tensor<f32>>,
}

impl LayerShape {
    /// `conv 32->64 16->8` or `convT 64->32 8->16`.
    pub fn label(&self) -> Result<String> {
        let (name, cin, cout, (oh, _)) = match self.layer {
            Layer::Conv(l) => (
                "conv",
                l.in_channels,
                l.out_channels,
                l.output_size((self.hw, self.hw))?,
            ),
            Layer::ConvT(l) => (
                "convT",
                l.in_channels,
                l.out_channels,
                l.output_size((self.hw, self.hw))?,
            ),
        };
        Ok(format!("{name} {cin}->{cout} {}->{oh}", self.hw))
    }

    /// Random operands of every pass of the layer at `batch` and the prepared programs.
    pub fn prepare(
        &self,
        ctx: &GpuContext,
        rng: &mut HostRng,
        batch: usize,
    ) -> Result<LayerPasses> {
        let hw = self.hw;
        let (cin, cout, ws, (oh, ow)) = match self.layer {
            Layer::Conv(l) => (
                l.in_channels,
                l.out_channels,
                l.weight_shape(),
                l.output_size((hw, hw))?,
            ),
            Layer::ConvT(l) => (
                l.in_channels,
                l.out_channels,
                l.weight_shape(),
                l.output_size((hw, hw))?,
            ),
        };
        let label = self.label()?;
        let xs = [batch, cin, hw, hw];
        let ys = [batch, cout, oh, ow];
        let x = uniform(ctx, rng, "x", &xs, 0.0, 1.0)?;
        let w = uniform(ctx, rng, "w", &ws, -0.1, 0.1)?;
        let bias = uniform(ctx, rng, "bias", &[cout], -0.1, 0.1)?;
        let y = zeros(ctx, "y", &ys)?;
        let dy = uniform(ctx, rng, "dy", &ys, -1.0, 1.0)?;
        let dx = zeros(ctx, "dx", &xs)?;
        let dw = zeros(ctx, "dw", &ws)?;
        let db = zeros(ctx, "db", &[cout])?;
        let relu = Activation::Relu;
        let producer = Some((&x, relu));
        let what = |pass: &str| format!("preparing the {pass} of {label}");
        let (fwd, dgrad, wgrad, pixels) = match self.layer {
            Layer::Conv(l) => (
                conv::conv2d_forward(ctx, "fwd", &l, &x, &w, &bias, &y, relu),
                conv::conv2d_input_grad(ctx, "dgrad", &l, &dy, &w, &dx, producer),
                conv::conv2d_weight_grad(ctx, "wgrad", &l, &x, &dy, &dw, false),
                oh * ow,
            ),
            Layer::ConvT(l) => (
                conv::conv_transpose2d_forward(ctx, "fwd", &l, &x, &w, &bias, &y, relu),
                conv::conv_transpose2d_input_grad(ctx, "dgrad", &l, &dy, &w, &dx, producer),
                conv::conv_transpose2d_weight_grad(ctx, "wgrad", &l, &x, &dy, &dw, false),
                hw * hw,
            ),
        };
        let bias_grad = conv::conv_bias_grad(ctx, "bgrad", &dy, &db, false)
            .with_context(|| what("bias gradient"))?;
        let flops = 2.0 * (batch * pixels * cin * cout * ws[2] * ws[3]) as f64;
        Ok(LayerPasses {
            flops,
            bias_grad_bytes: 4.0 * (dy.len() + cout) as f64,
            products: [
                ("forward", fwd.with_context(|| what("forward"))?),
                ("input grad", dgrad.with_context(|| what("input gradient"))?),
                (
                    "weight grad",
                    wgrad.with_context(|| what("weight gradient"))?,
                ),
            ],
            bias_grad,
            label,
            _operands: vec![x, w, bias, y, dy, dx, dw, db],
        })
    }
}
