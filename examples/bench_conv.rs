//! Throughput of the convolution kernels on the layers of the conv architectures (grey images,
//! 4×4 stride-2 pad-1 layers; 64×64: convolutions with 32, 32, 64, 64 channels, 64 → 32 → 16 →
//! 8 → 4, and the transposed mirror back to one channel; 28×28: 32, 64 channels, 28 → 14 → 7 and
//! back; the list is in `examples/common/conv_bench.rs`), batch 64: forward (bias + ReLU fused),
//! input gradient (ReLU' of the producer fused) and weight gradient of every layer, in GFLOP/s,
//! next to the GEMM rate at (128, 784, 400) NN + bias + ReLU measured in the same run, and the
//! time of the bias gradient. `bench_kernels` times the same passes among all the kernels.
//!
//! The target on a CPU adapter is every pass at ≥ 50% of that GEMM rate. On a shared machine
//! the load changes from one second to the next, so every timed run of a pass is paired with a
//! run of the GEMM just before it, and the table reports the median over the pairs of the ratio
//! of the two rates as well as each median rate. On lavapipe (2 cores, subgroup8 family, 3 runs
//! of `bench_kernels --conv-only` with nothing else running; README has the table) every pass
//! reached 50% or more of the GEMM except the input gradient of the last transposed
//! convolutions (32 -> 1 channel: 46–49% at 64×64, 38–41% at 28×28), which reads the
//! producer's output for ReLU' and writes the gradient for every 16 multiply-adds.
//!
//! Every pass is its whole prepared program (weight packing, the product, the split-sum
//! reduction), run twice to warm up and then `--reps` times in a compute pass of its own. Time
//! is from GPU timestamps when the adapter offers them, else the wall clock around submit +
//! wait. FLOPs are the nominal 2·B·P·C_out·C_in·KH·KW of the layer, P the pixels of the smaller
//! image (a convolution's output, a transposed convolution's input), the same for all three
//! passes.
//!
//! ```text
//! cargo run --release --example bench_conv -- [--batch 64] [--reps 5] [--only TEXT]
//! ```
//!
//! `--only` keeps the layers whose name, e.g. `64x64 convT 32->1 32->64`, contains TEXT.
//!
//! `WGVAE_GEMM=subgroup8|regblock|tiled` picks the kernel family for both the GEMM and the
//! convolutions. Quote the adapter name printed first with any figure.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use wgvae::gpu::GpuContext;
use wgvae::rng::HostRng;

#[path = "common/conv_bench.rs"]
mod conv_bench;

use conv_bench::{LayerShape, ReferenceGemm, Timing, WARMUP, median};

#[derive(Parser, Debug)]
#[command(
    name = "bench_conv",
    about = "GFLOP/s of the convolution kernels on the conv architectures' layers"
)]
struct Args {
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Timed runs per pass; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Only the layers whose name (e.g. `64x64 convT 32->1 32->64`) contains this text.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

/// One timed pass.
struct Row {
    layer: String,
    pass: &'static str,
    /// Median time of the pass, µs.
    us: f64,
    /// Median rate of the pass (none for the bias gradient).
    gflops: Option<f64>,
    /// Median rate of the GEMM runs paired with it.
    gemm_gflops: Option<f64>,
    /// Median over the pairs of (pass rate / GEMM rate).
    ratio: Option<f64>,
}

/// Times the forward, input-gradient and weight-gradient programs of one layer, each paired
/// with the reference GEMM, and its bias gradient.
fn bench_layer(
    timing: &Timing<'_>,
    rng: &mut HostRng,
    gemm: &ReferenceGemm,
    shape: &LayerShape,
    batch: usize,
    reps: usize,
) -> Result<Vec<Row>> {
    let passes = shape.prepare(timing.ctx, rng, batch)?;
    let layer = format!("{} {}", shape.arch, passes.label);
    let mut rows = Vec::new();
    for (pass, p) in &passes.products {
        let what = format!("{layer} {pass}");
        let r = timing.paired(&what, &p.program, passes.flops, gemm, reps)?;
        let row = Row {
            layer: layer.clone(),
            pass,
            us: r.ns / 1e3,
            gflops: Some(r.gflops),
            gemm_gflops: Some(r.gemm_gflops),
            ratio: Some(r.ratio),
        };
        println!(
            "  {:<28} {:<12} {:>10.0} µs {:>7.2} GFLOP/s  (GEMM {:.2}, {:.0}%)",
            row.layer,
            row.pass,
            row.us,
            r.gflops,
            r.gemm_gflops,
            100.0 * r.ratio
        );
        rows.push(row);
    }
    let what = format!("{layer} bias grad");
    let (ns, _) = timing.medians(&what, &passes.bias_grad.program, reps)?;
    println!(
        "  {:<28} {:<12} {:>10.0} µs {:>7.2} GB/s",
        layer,
        "bias grad",
        ns / 1e3,
        passes.bias_grad_bytes / ns
    );
    rows.push(Row {
        layer,
        pass: "bias grad",
        us: ns / 1e3,
        gflops: None,
        gemm_gflops: None,
        ratio: None,
    });
    Ok(rows)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let batch = args.batch as usize;
    let reps = args.reps as usize;
    let started = Instant::now();
    let ctx = GpuContext::new().context("creating the GPU context")?;
    let timing = Timing::new(&ctx)?;
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
        "timing:      {}; median of {reps} runs after {WARMUP} warm-up runs",
        if timing.gpu_timestamps() {
            "GPU timestamps"
        } else {
            "wall clock"
        },
    );
    let mut rng = HostRng::new(0xC0_4E);
    let gemm = ReferenceGemm::new(&ctx, &mut rng)?;
    println!("convolutions at batch {batch} (each run paired with a run of the GEMM):");
    let mut rows = Vec::new();
    for shape in conv_bench::conv_layers() {
        let name = format!("{} {}", shape.arch, shape.label()?);
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        rows.extend(bench_layer(&timing, &mut rng, &gemm, &shape, batch, reps)?);
    }
    let mut gemm_all: Vec<f64> = rows.iter().filter_map(|r| r.gemm_gflops).collect();
    let gemm_median = median(&mut gemm_all);

    println!();
    println!(
        "GEMM (128, 784, 400) NN + bias + ReLU, median over the passes: {gemm_median:.2} GFLOP/s"
    );
    println!();
    println!("| layer (batch {batch}) | pass | µs | GFLOP/s | GEMM GFLOP/s (paired) | % of GEMM |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            r.layer,
            r.pass,
            r.us,
            rate(r.gflops),
            rate(r.gemm_gflops),
            r.ratio
                .map_or_else(|| "-".to_string(), |q| format!("{:.0}%", 100.0 * q)),
        );
    }
    let below: Vec<String> = rows
        .iter()
        .filter(|r| r.ratio.is_some_and(|q| q < 0.5))
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
