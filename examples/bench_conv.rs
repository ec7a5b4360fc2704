//! Throughput of the convolution kernels on the layers of the standard 64×64 architecture (grey
//! images: four 4×4 stride-2 pad-1 convolutions with 32, 32, 64, 64 channels, 64 → 32 → 16 → 8
//! → 4, and the transposed mirror back to one channel), batch 64: forward (bias + ReLU fused),
//! input gradient (ReLU' of the producer fused) and weight gradient of every layer, in GFLOP/s,
//! next to the GEMM rate at (128, 784, 400) NN + bias + ReLU measured in the same run.
//!
//! The target on a CPU adapter is every pass at ≥ 50% of that GEMM rate. On a shared machine
//! the load changes from one second to the next, so every timed run of a pass is paired with a
//! run of the GEMM just before it, and the table reports the median over the pairs of the ratio
//! of the two rates as well as each median rate. On lavapipe (2 cores, subgroup8 family) the
//! interior layers run at 70–120% of the GEMM and the layers with one image channel at about
//! half of it, except the last transposed convolution's input gradient (35–42%): a product only
//! 16 deep whose 32 output channels each read the producer's output (for ReLU') and write the
//! gradient, so it moves more elements per pixel than it gathers.
//!
//! Every pass is its whole prepared program (weight packing, the product, the split-sum
//! reduction), run twice to warm up and then `--reps` times in a compute pass of its own. Time
//! is from GPU timestamps when the adapter offers them, else the wall clock around submit +
//! wait. FLOPs are the nominal 2·B·(output pixels)·C_out·C_in·KH·KW of the layer (the same for
//! all three passes).
//!
//! ```text
//! cargo run --release --example bench_conv -- [--batch 64] [--reps 5] [--only TEXT]
//! ```
//!
//! `WGVAE_GEMM=subgroup8|regblock|tiled` picks the kernel family for both the GEMM and the
//! convolutions. Quote the adapter name printed first with any figure.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use wgvae::gpu::{GpuContext, GpuTimer, Program, Tensor};
use wgvae::ops::conv::{self, Conv2d, ConvProgram, ConvTranspose2d};
use wgvae::ops::{Activation, Epilogue, Trans, gemm};
use wgvae::rng::HostRng;

const WARMUP: usize = 2;

#[derive(Parser, Debug)]
#[command(
    name = "bench_conv",
    about = "GFLOP/s of the convolution kernels on the standard 64x64 architecture"
)]
struct Args {
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Timed runs per pass; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Only the layers whose name (e.g. `convT 32->1`) contains this text.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

struct Bench<'a> {
    ctx: &'a GpuContext,
    timer: Option<GpuTimer>,
    reps: usize,
    rng: HostRng,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

impl Bench<'_> {
    fn uniform(&mut self, label: &str, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor<f32>> {
        let data = self.rng.uniform_vec(shape.iter().product(), lo, hi);
        Tensor::from_slice(self.ctx, label, shape, &data)
            .with_context(|| format!("creating {label} {shape:?}"))
    }

    fn zeros(&self, label: &str, shape: &[usize]) -> Result<Tensor<f32>> {
        Tensor::zeros(self.ctx, label, shape).with_context(|| format!("creating {label} {shape:?}"))
    }

    /// Nanoseconds of one run of `prog` in a pass of its own.
    fn run_once(&self, what: &str, prog: &Program) -> Result<f64> {
        let mut enc = self.ctx.encoder("bench_conv");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench_conv"),
                timestamp_writes: self.timer.as_ref().map(|t| t.timestamp_writes()),
            });
            prog.record_pass(&mut pass);
        }
        if let Some(t) = &self.timer {
            t.resolve(&mut enc);
        }
        let t0 = Instant::now();
        self.ctx
            .submit(what, enc)
            .with_context(|| format!("running {what}"))?;
        self.ctx
            .wait()
            .with_context(|| format!("waiting for {what}"))?;
        let wall = t0.elapsed().as_secs_f64() * 1e9;
        Ok(match &self.timer {
            Some(t) => t.read_ns(self.ctx)?,
            None => wall,
        })
    }

    /// Runs `prog` and the reference GEMM alternately (warm-up runs first) and returns the
    /// nanoseconds of each timed pair, so that both see the same load on a shared machine.
    fn time_pairs(&self, what: &str, prog: &Program, gemm: &Program) -> Result<Vec<(f64, f64)>> {
        let mut pairs = Vec::with_capacity(self.reps);
        for i in 0..WARMUP + self.reps {
            let g = self.run_once("the GEMM", gemm)?;
            let c = self.run_once(what, prog)?;
            if i >= WARMUP {
                pairs.push((c, g));
            }
        }
        Ok(pairs)
    }

    /// The reference GEMM: (128, 784, 400) NN with bias + ReLU, its FLOPs and its operands.
    fn gemm(&mut self) -> Result<(Program, f64, Vec<Tensor<f32>>)> {
        let (m, k, n) = (128, 784, 400);
        let a = self.uniform("A", &[m, k], -1.0, 1.0)?;
        let b = self.uniform("B", &[k, n], -1.0, 1.0)?;
        let c = self.zeros("C", &[m, n])?;
        let bias = self.uniform("bias", &[n], -0.1, 0.1)?;
        let d = gemm(
            self.ctx,
            "gemm",
            &a,
            &b,
            &c,
            Trans::NN,
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::Relu,
            },
        )
        .context("preparing the GEMM")?;
        let mut p = Program::new();
        p.push(d);
        Ok((p, 2.0 * (m * k * n) as f64, vec![a, b, c, bias]))
    }
}

#[derive(Clone, Copy)]
enum Layer {
    Conv(Conv2d),
    ConvT(ConvTranspose2d),
}

/// One timed pass.
struct Row {
    layer: String,
    pass: &'static str,
    /// Median time of the pass, µs.
    us: f64,
    /// Median rate of the pass.
    gflops: f64,
    /// Median rate of the GEMM runs paired with it.
    gemm_gflops: f64,
    /// Median over the pairs of (pass rate / GEMM rate).
    ratio: f64,
}

/// Times the forward, input-gradient and weight-gradient programs of one layer at input
/// (batch, C_in, hw, hw).
fn bench_layer(
    bench: &mut Bench<'_>,
    gemm: &(Program, f64, Vec<Tensor<f32>>),
    layer: Layer,
    batch: usize,
    hw: usize,
    only: Option<&str>,
) -> Result<Vec<Row>> {
    let ctx = bench.ctx;
    let (cin, cout, ws, (oh, ow), name) = match layer {
        Layer::Conv(l) => (
            l.in_channels,
            l.out_channels,
            l.weight_shape(),
            l.output_size((hw, hw))?,
            "conv",
        ),
        Layer::ConvT(l) => (
            l.in_channels,
            l.out_channels,
            l.weight_shape(),
            l.output_size((hw, hw))?,
            "convT",
        ),
    };
    let label = format!("{name} {cin}->{cout} {hw}->{oh}");
    if only.is_some_and(|o| !label.contains(o)) {
        return Ok(Vec::new());
    }
    let xs = [batch, cin, hw, hw];
    let ys = [batch, cout, oh, ow];
    let x = bench.uniform("x", &xs, 0.0, 1.0)?;
    let w = bench.uniform("w", &ws, -0.1, 0.1)?;
    let bias = bench.uniform("bias", &[cout], -0.1, 0.1)?;
    let y = bench.zeros("y", &ys)?;
    let dy = bench.uniform("dy", &ys, -1.0, 1.0)?;
    let dx = bench.zeros("dx", &xs)?;
    let dw = bench.zeros("dw", &ws)?;
    let relu = Activation::Relu;
    let producer = Some((&x, relu));
    let (fwd, dgrad, wgrad) = match layer {
        Layer::Conv(l) => (
            conv::conv2d_forward(ctx, "fwd", &l, &x, &w, &bias, &y, relu)?,
            conv::conv2d_input_grad(ctx, "dgrad", &l, &dy, &w, &dx, producer)?,
            conv::conv2d_weight_grad(ctx, "wgrad", &l, &x, &dy, &dw, false)?,
        ),
        Layer::ConvT(l) => (
            conv::conv_transpose2d_forward(ctx, "fwd", &l, &x, &w, &bias, &y, relu)?,
            conv::conv_transpose2d_input_grad(ctx, "dgrad", &l, &dy, &w, &dx, producer)?,
            conv::conv_transpose2d_weight_grad(ctx, "wgrad", &l, &x, &dy, &dw, false)?,
        ),
    };
    let pixels = match layer {
        Layer::Conv(_) => oh * ow,
        Layer::ConvT(_) => hw * hw,
    };
    let flops = 2.0 * (batch * pixels * cin * cout * ws[2] * ws[3]) as f64;
    let mut rows = Vec::new();
    for (pass, p) in [
        ("forward", &fwd),
        ("input grad", &dgrad),
        ("weight grad", &wgrad),
    ] {
        let p: &ConvProgram = p;
        let pairs = bench.time_pairs(&format!("{label} {pass}"), &p.program, &gemm.0)?;
        let mut conv_ns: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let mut gemm_rates: Vec<f64> = pairs.iter().map(|p| gemm.1 / p.1).collect();
        let mut ratios: Vec<f64> = pairs
            .iter()
            .map(|p| (flops / p.0) / (gemm.1 / p.1))
            .collect();
        let ns = median(&mut conv_ns);
        let row = Row {
            layer: label.clone(),
            pass,
            us: ns / 1e3,
            gflops: flops / ns,
            gemm_gflops: median(&mut gemm_rates),
            ratio: median(&mut ratios),
        };
        println!(
            "  {:<22} {:<12} {:>10.0} µs {:>7.2} GFLOP/s  (GEMM {:.2}, {:.0}%)",
            row.layer,
            row.pass,
            row.us,
            row.gflops,
            row.gemm_gflops,
            100.0 * row.ratio
        );
        rows.push(row);
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let batch = args.batch as usize;
    let started = Instant::now();
    let ctx = GpuContext::new().context("creating the GPU context")?;
    let timer = GpuTimer::new(&ctx).context("creating the GPU timer")?;
    println!(
        "adapter:     {} ({:?}, {:?})",
        ctx.info.name, ctx.info.backend, ctx.info.device_type
    );
    println!(
        "driver:      {} ({})",
        ctx.info.driver, ctx.info.driver_info
    );
    println!(
        "kernels:     {} (GEMM and convolutions)",
        ctx.gemm_variant.name()
    );
    println!(
        "timing:      {}; median of {} runs after {WARMUP} warm-up runs",
        if timer.is_some() {
            "GPU timestamps"
        } else {
            "wall clock"
        },
        args.reps
    );
    let mut bench = Bench {
        ctx: &ctx,
        timer,
        reps: args.reps as usize,
        rng: HostRng::new(0xC0_4E),
    };

    let gemm = bench.gemm()?;
    println!("convolutions at batch {batch} (each run paired with a run of the GEMM):");
    let (k, s, p) = ((4, 4), (2, 2), (1, 1));
    let c = |i, o| Layer::Conv(Conv2d::new(i, o, k).with_stride(s).with_padding(p));
    let t = |i, o| Layer::ConvT(ConvTranspose2d::new(i, o, k).with_stride(s).with_padding(p));
    let layers = [
        (c(1, 32), 64),
        (c(32, 32), 32),
        (c(32, 64), 16),
        (c(64, 64), 8),
        (t(64, 64), 4),
        (t(64, 32), 8),
        (t(32, 32), 16),
        (t(32, 1), 32),
    ];
    let mut rows = Vec::new();
    for (layer, hw) in layers {
        rows.extend(bench_layer(
            &mut bench,
            &gemm,
            layer,
            batch,
            hw,
            args.only.as_deref(),
        )?);
    }
    let mut gemm_all: Vec<f64> = rows.iter().map(|r| r.gemm_gflops).collect();
    let gemm_median = if gemm_all.is_empty() {
        0.0
    } else {
        median(&mut gemm_all)
    };

    println!();
    println!(
        "GEMM (128, 784, 400) NN + bias + ReLU, median over the passes: {gemm_median:.2} GFLOP/s"
    );
    println!();
    println!("| layer (batch {batch}) | pass | µs | GFLOP/s | GEMM GFLOP/s (paired) | % of GEMM |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0}% |",
            r.layer,
            r.pass,
            r.us,
            r.gflops,
            r.gemm_gflops,
            100.0 * r.ratio
        );
    }
    let below: Vec<String> = rows
        .iter()
        .filter(|r| r.ratio < 0.5)
        .map(|r| format!("{} {}", r.layer, r.pass))
        .collect();
    println!();
    if below.is_empty() {
        println!("every pass at >= 50% of the GEMM rate");
    } else {
        println!("below 50% of the GEMM rate: {}", below.join("; "));
    }
    println!("{:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
