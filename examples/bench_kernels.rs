//! Micro-benchmarks of the wgvae compute kernels, one call at a time.
//!
//! For every kernel and shape the dispatch (or two-dispatch program) is prepared once, run
//! twice to warm up, then run `--reps` times (default 7) in a compute pass of its own; the
//! median is reported. When the adapter offers timestamp queries the time is the GPU time
//! between the beginning and the end of that pass (`GpuTimer`); otherwise it is the wall
//! clock around submit + wait. The wall-clock median (submit, error-scope checks and the wait
//! for the device included) is always recorded beside it.
//!
//! Measured: the GEMM (NN forward with the fused bias + ReLU epilogue and with a plain store,
//! TN weight gradients, NT input gradients) at the classic MNIST VAE's shapes (784-400-20,
//! batch 128) and at 1024³, reported in GFLOP/s (2·M·K·N / t), with every GEMM family the
//! adapter runs (tiled, register-blocked, and subgroup8 where subgroups are 8 lanes) timed side
//! by side at 1024³ and at the VAE's NN + bias + ReLU, TN and NT products, the other shapes with
//! the context's family; and the memory-bound kernels
//! (reparameterization, KL, Bernoulli likelihood, reductions, Adam, batch gather), reported in
//! GB/s of the distinct bytes each kernel reads plus writes (counted per kernel below).
//!
//! Convolutions: every convolution of the conv architectures (64×64 and 28×28 grey images, the
//! layer list in `examples/common/conv_bench.rs`) at batch 64, each with the context's kernel
//! family: forward (bias + ReLU fused), input gradient (ReLU' of the producer fused) and weight
//! gradient in GFLOP/s of the nominal 2·B·P·C_out·C_in·KH·KW (P the pixels of the smaller image),
//! and the bias gradient in GB/s. On a shared machine the load changes from one second to the
//! next, so each timed run of a conv pass follows a run of the reference GEMM (128, 784, 400)
//! NN + bias + ReLU, and the pass is reported as the median over those pairs of its rate over
//! the GEMM's, next to the rate of the same GEMM in the GEMM rows. A table at the end lists
//! every pass; the target is ≥ 50% of the GEMM rate. `bench_conv` times the same passes alone.
//!
//! Run:
//!
//! ```text
//! cargo run --release --example bench_kernels -- [--json PATH] [--reps N] [--quick]
//!     [--gemm-only | --conv-only]
//! ```
//!
//! `WGVAE_BACKEND`, `WGVAE_ADAPTER` and `WGVAE_GEMM` pick the adapter and GEMM kernel family
//! as everywhere else. `--quick` skips the 1024³ GEMM and the K=100 / R=12800 variants and
//! takes 5 timed runs. `--gemm-only` skips the convolutions and the memory-bound kernels;
//! `--conv-only` times the reference GEMM and the convolutions only. `--json PATH` also writes
//! the results as JSON (atomically).
//!
//! The figures describe one adapter and driver only: whenever you quote them, quote the adapter
//! name (printed first, and recorded in the JSON) with them. On a CPU adapter such as Mesa's
//! lavapipe they measure the CPU, not a GPU.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use wgvae::gpu::{Dispatch, GemmVariant, GpuContext, Program, Tensor};
use wgvae::ops::adam::{AdamConfig, AdamScratch};
use wgvae::ops::data::StepState;
use wgvae::ops::gemm::{gemm_with, subgroup8_fits};
use wgvae::ops::reparam::{RngStep, Stream};
use wgvae::ops::{Activation, Epilogue, Trans};
use wgvae::rng::HostRng;

#[path = "common/conv_bench.rs"]
mod conv_bench;

use conv_bench::{REFERENCE_GEMM, ReferenceGemm, Timing, WARMUP, median};

/// Timed runs per case without `--reps` (5 with `--quick`).
const DEFAULT_REPS: u32 = 7;
const QUICK_REPS: u32 = 5;

/// The classic VAE: 784 → 400 → (20 + 20) | 20 → 400 → 784, batch 128.
const BATCH: usize = 128;
const PIXELS: usize = 784;
const HIDDEN: usize = 400;
const LATENT: usize = 20;
/// Images per batch of the convolutions.
const CONV_BATCH: usize = 64;
/// The share of the reference GEMM rate every conv pass should reach.
const CONV_TARGET: f64 = 0.5;

#[derive(Parser, Debug)]
#[command(
    name = "bench_kernels",
    about = "Times the wgvae compute kernels one call at a time (median of N runs)"
)]
struct Args {
    /// Also write the results as JSON to PATH (written to PATH.tmp, then renamed).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Timed runs per kernel and shape; the median is reported [default: 7, 5 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(5..=10_000))]
    reps: Option<u32>,
    /// Smoke run: skip the 1024³ GEMM and the K=100 / R=12800 variants, take 5 runs.
    #[arg(long)]
    quick: bool,
    /// Time the GEMM only (skip the convolutions and the memory-bound kernels).
    #[arg(long, conflicts_with = "conv_only")]
    gemm_only: bool,
    /// Time the reference GEMM and the convolutions only.
    #[arg(long)]
    conv_only: bool,
}

/// One result row (also the JSON record).
#[derive(Serialize, Debug)]
struct Row {
    kernel: String,
    /// GEMM kernel family that ran (`null` for the other kernels).
    variant: Option<String>,
    shape: String,
    /// Median per call by the report's timing method, in µs.
    median_us: f64,
    /// Median wall clock per call (submit + wait), in µs.
    wall_median_us: f64,
    gflops: Option<f64>,
    gbps: Option<f64>,
    /// Conv passes: median rate of the reference GEMM runs paired with this pass's runs.
    paired_gemm_gflops: Option<f64>,
    /// Conv passes: median over the pairs of (pass rate / GEMM rate), in %.
    pct_of_gemm: Option<f64>,
    reps: usize,
}

#[derive(Serialize)]
struct AdapterJson<'a> {
    name: &'a str,
    backend: String,
    device_type: String,
    driver: &'a str,
    driver_info: &'a str,
}

#[derive(Serialize)]
struct Report<'a> {
    adapter: AdapterJson<'a>,
    gemm_variant: &'static str,
    timing: &'static str,
    warmup: usize,
    results: &'a [Row],
}

/// The work one call does: floating-point operations or bytes moved.
#[derive(Clone, Copy)]
enum Work {
    Flops(f64),
    Bytes(f64),
}

/// Bytes of `n` f32 values.
fn f32s(n: usize) -> f64 {
    4.0 * n as f64
}

fn program(d: Dispatch) -> Program {
    let mut p = Program::new();
    p.push(d);
    p
}

struct Bench<'a> {
    ctx: &'a GpuContext,
    timing: Timing<'a>,
    reps: usize,
    rng: HostRng,
    rows: Vec<Row>,
}

impl Bench<'_> {
    fn method(&self) -> &'static str {
        if self.timing.gpu_timestamps() {
            "gpu-timestamps"
        } else {
            "wall-clock"
        }
    }

    /// A tensor of uniform values in [lo, hi).
    fn uniform(&mut self, label: &str, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor<f32>> {
        conv_bench::uniform(self.ctx, &mut self.rng, label, shape, lo, hi)
    }

    fn zeros(&self, label: &str, shape: &[usize]) -> Result<Tensor<f32>> {
        conv_bench::zeros(self.ctx, label, shape)
    }

    /// Records (and prints) a row.
    fn record(&mut self, row: Row) {
        print_row(&row, self.method());
        self.rows.push(row);
    }

    /// Times `prog` and records (and prints) a row.
    fn case(
        &mut self,
        kernel: &str,
        variant: Option<&str>,
        shape: &str,
        prog: &Program,
        work: Work,
    ) -> Result<()> {
        let what = format!("{kernel} {shape}");
        let (ns, wall_ns) = self.timing.medians(&what, prog, self.reps)?;
        // Units: flops / ns = GFLOP/s, bytes / ns = GB/s.
        let rate = |x: f64| (ns > 0.0).then(|| x / ns);
        let (gflops, gbps) = match work {
            Work::Flops(f) => (rate(f), None),
            Work::Bytes(b) => (None, rate(b)),
        };
        self.record(Row {
            kernel: kernel.to_string(),
            variant: variant.map(str::to_string),
            shape: shape.to_string(),
            median_us: ns / 1e3,
            wall_median_us: wall_ns / 1e3,
            gflops,
            gbps,
            paired_gemm_gflops: None,
            pct_of_gemm: None,
            reps: self.reps,
        });
        Ok(())
    }

    /// `C = epilogue(op(A)·op(B))` at (M, K, N) with `variant` (or its tiled fallback).
    fn gemm(
        &mut self,
        variant: GemmVariant,
        trans: Trans,
        (m, k, n): (usize, usize, usize),
        bias_relu: bool,
    ) -> Result<()> {
        let a_shape = if trans.a() { [k, m] } else { [m, k] };
        let b_shape = if trans.b() { [n, k] } else { [k, n] };
        let a = self.uniform("A", &a_shape, -1.0, 1.0)?;
        let b = self.uniform("B", &b_shape, -1.0, 1.0)?;
        let c = self.zeros("C", &[m, n])?;
        let bias = self.uniform("bias", &[n], -0.1, 0.1)?;
        let epilogue = if bias_relu {
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::Relu,
            }
        } else {
            Epilogue::Store
        };
        let ran = if variant == GemmVariant::Subgroup8 && !subgroup8_fits(m, k, n, trans) {
            GemmVariant::Tiled
        } else {
            variant
        };
        let t = match trans {
            Trans::NN => "nn",
            Trans::NT => "nt",
            Trans::TN => "tn",
        };
        let kernel = format!("gemm_{t}_{}", if bias_relu { "bias_relu" } else { "store" });
        let shape = format!("m={m} k={k} n={n}");
        let d = gemm_with(self.ctx, variant, &kernel, &a, &b, &c, trans, epilogue)
            .with_context(|| format!("preparing {kernel} {shape}"))?;
        let flops = 2.0 * (m * k * n) as f64;
        self.case(
            &kernel,
            Some(ran.name()),
            &shape,
            &program(d),
            Work::Flops(flops),
        )
    }
}

const HEADER: [&str; 8] = [
    "kernel",
    "variant",
    "shape",
    "median µs",
    "wall µs",
    "rate",
    "unit",
    "timing",
];

fn print_header() {
    let h = HEADER;
    println!(
        "{:<18} {:<9} {:<22} {:>11} {:>11} {:>9} {:<7} {}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    );
    println!("{}", "-".repeat(100));
}

fn print_row(r: &Row, method: &str) {
    let (rate, unit) = match (r.gflops, r.gbps) {
        (Some(g), _) => (format!("{g:.2}"), "GFLOP/s"),
        (None, Some(b)) => (format!("{b:.2}"), "GB/s"),
        (None, None) => ("-".to_string(), ""),
    };
    let paired = match (r.paired_gemm_gflops, r.pct_of_gemm) {
        (Some(g), Some(pct)) => format!(" (paired GEMM {g:.2} GFLOP/s, {pct:.0}%)"),
        _ => String::new(),
    };
    println!(
        "{:<18} {:<9} {:<22} {:>11.1} {:>11.1} {:>9} {:<7} {}{paired}",
        r.kernel,
        r.variant.as_deref().unwrap_or("-"),
        r.shape,
        r.median_us,
        r.wall_median_us,
        rate,
        unit,
        method
    );
}

/// Writes `json` to `path` through `path.tmp` and a rename.
fn write_json_atomic(path: &Path, json: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, json)
        .with_context(|| format!("writing bench JSON to {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "writing bench JSON to {} (renaming {})",
            path.display(),
            tmp.display()
        )
    })
}

/// The GEMM families this adapter can run: the tiled and register-blocked kernels everywhere,
/// the subgroup kernel where subgroups are exactly 8 lanes.
fn variants(ctx: &GpuContext) -> Vec<GemmVariant> {
    let mut v = vec![GemmVariant::Tiled, GemmVariant::Regblock];
    let caps = &ctx.caps;
    if caps.subgroups && caps.subgroup_min_size == 8 && caps.subgroup_max_size == 8 {
        v.push(GemmVariant::Subgroup8);
    }
    v
}

fn gemm_cases(b: &mut Bench<'_>, quick: bool) -> Result<()> {
    let v = b.ctx.gemm_variant;
    let big = (1024, 1024, 1024);
    // Every family side by side: the encoder's forward product (NN + bias + ReLU), the weight
    // gradient of the first layer (TN) and the input gradient through the decoder's last layer
    // (NT), and 1024³.
    let mut compare = vec![
        (Trans::NN, (BATCH, PIXELS, HIDDEN), true),
        (Trans::TN, (PIXELS, BATCH, HIDDEN), false),
        (Trans::NT, (BATCH, PIXELS, HIDDEN), false),
    ];
    if !quick {
        compare.push((Trans::NN, big, false));
    }
    for &(trans, shape, bias_relu) in &compare {
        for variant in variants(b.ctx) {
            b.gemm(variant, trans, shape, bias_relu)?;
        }
    }
    // The remaining shapes of the classic VAE with the context's family.
    // NN forward: encoder 784→400 (plain store), 400→(μ|log σ²), decoder 20→400, 400→784.
    b.gemm(v, Trans::NN, (BATCH, PIXELS, HIDDEN), false)?;
    for shape in [
        (BATCH, HIDDEN, 2 * LATENT),
        (BATCH, LATENT, HIDDEN),
        (BATCH, HIDDEN, PIXELS),
    ] {
        for bias_relu in [true, false] {
            b.gemm(v, Trans::NN, shape, bias_relu)?;
        }
    }
    // Weight gradients dW = Xᵀ·dY of the last layer (A stored (K, M)).
    b.gemm(v, Trans::TN, (HIDDEN, BATCH, PIXELS), false)?;
    // Input gradients dX = dY·Wᵀ (B stored (N, K)) through the encoder's first layer.
    b.gemm(v, Trans::NT, (BATCH, HIDDEN, PIXELS), false)?;
    Ok(())
}

/// The figures of one conv layer for the closing table.
struct ConvLine {
    arch: &'static str,
    layer: String,
    /// (pass, GFLOP/s, % of the paired GEMM rate) of the forward, input and weight gradients.
    products: Vec<(&'static str, f64, f64)>,
    /// The bias gradient: (µs, GB/s).
    bias_grad: (f64, f64),
}

/// Every convolution of the conv architectures at batch [`CONV_BATCH`], each conv pass paired
/// with the reference GEMM.
fn conv_cases(b: &mut Bench<'_>) -> Result<Vec<ConvLine>> {
    let ctx = b.ctx;
    let family = ctx.gemm_variant.name();
    let gemm = ReferenceGemm::new(ctx, &mut b.rng)?;
    let mut lines = Vec::new();
    for shape in conv_bench::conv_layers() {
        let passes = shape.prepare(ctx, &mut b.rng, CONV_BATCH)?;
        let (kind, dims) = passes
            .label
            .split_once(' ')
            .context("a conv layer label names its kind first")?;
        let shape_text = format!("{} {dims} B={CONV_BATCH}", shape.arch);
        let mut products = Vec::new();
        for (pass, p) in &passes.products {
            let kernel = format!("{kind}_{}", pass.replace(' ', "_"));
            let what = format!("{kernel} {shape_text}");
            let r = b
                .timing
                .paired(&what, &p.program, passes.flops, &gemm, b.reps)?;
            b.record(Row {
                kernel,
                variant: Some(family.to_string()),
                shape: shape_text.clone(),
                median_us: r.ns / 1e3,
                wall_median_us: r.wall_ns / 1e3,
                gflops: Some(r.gflops),
                gbps: None,
                paired_gemm_gflops: Some(r.gemm_gflops),
                pct_of_gemm: Some(100.0 * r.ratio),
                reps: b.reps,
            });
            products.push((*pass, r.gflops, 100.0 * r.ratio));
        }
        let kernel = format!("{kind}_bias_grad");
        let bytes = Work::Bytes(passes.bias_grad_bytes);
        b.case(&kernel, None, &shape_text, &passes.bias_grad.program, bytes)?;
        let bias_grad = b
            .rows
            .last()
            .map(|r| (r.median_us, r.gbps.unwrap_or(f64::NAN)))
            .context("the bias gradient's row")?;
        lines.push(ConvLine {
            arch: shape.arch,
            layer: passes.label.clone(),
            products,
            bias_grad,
        });
    }
    Ok(lines)
}

/// The conv passes side by side, each as a % of the reference GEMM rate.
fn print_conv_table(b: &Bench<'_>, lines: &[ConvLine]) {
    let family = b.ctx.gemm_variant.name();
    let (m, k, n) = REFERENCE_GEMM;
    let shape = format!("m={m} k={k} n={n}");
    let reference = b
        .rows
        .iter()
        .filter(|r| r.kernel == "gemm_nn_bias_relu" && r.shape == shape)
        .find(|r| r.variant.as_deref() == Some(family))
        .and_then(|r| r.gflops);
    let mut paired: Vec<f64> = b.rows.iter().filter_map(|r| r.paired_gemm_gflops).collect();
    println!();
    println!(
        "Convolutions at batch {CONV_BATCH} ({family} kernels) against the GEMM ({m}, {k}, {n}) \
         NN + bias + ReLU:"
    );
    if let Some(g) = reference {
        println!("  {g:.2} GFLOP/s in its {family} row above;");
    }
    println!(
        "  {:.2} GFLOP/s, median of its runs paired with the conv passes.",
        median(&mut paired)
    );
    println!(
        "% of GEMM: median over the pairs of (pass rate / rate of the GEMM run just before it); \
         target >= {:.0}%.",
        100.0 * CONV_TARGET
    );
    println!();
    println!(
        "| arch | layer | forward GFLOP/s (% of GEMM) | input grad | weight grad | bias grad µs \
         (GB/s) |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut below = Vec::new();
    for l in lines {
        let cells: Vec<String> = l
            .products
            .iter()
            .map(|&(pass, gflops, pct)| {
                if pct < 100.0 * CONV_TARGET {
                    below.push(format!("{} {} {pass} ({pct:.0}%)", l.arch, l.layer));
                }
                format!("{gflops:.2} ({pct:.0}%)")
            })
            .collect();
        println!(
            "| {} | {} | {} | {:.0} ({:.2}) |",
            l.arch,
            l.layer,
            cells.join(" | "),
            l.bias_grad.0,
            l.bias_grad.1
        );
    }
    println!();
    if below.is_empty() {
        println!(
            "every conv pass at >= {:.0}% of the GEMM rate",
            100.0 * CONV_TARGET
        );
    } else {
        println!(
            "below {:.0}% of the GEMM rate: {}",
            100.0 * CONV_TARGET,
            below.join("; ")
        );
    }
}

fn memory_cases(b: &mut Bench<'_>, quick: bool) -> Result<()> {
    let ctx = b.ctx;
    let (bs, d) = (BATCH, LATENT);
    let enc = b.uniform("enc", &[bs, 2 * d], -1.0, 1.0)?;
    let samples: &[usize] = if quick { &[1] } else { &[1, 100] };

    // reparam_forward: reads enc (B, 2D) once, writes z and ε (K, B, D).
    for &k in samples {
        let z = b.zeros("z", &[k, bs, d])?;
        let eps = b.zeros("eps", &[k, bs, d])?;
        let disp = wgvae::ops::reparam::reparam_forward(
            ctx,
            "reparam_forward",
            &enc,
            &z,
            &eps,
            k,
            42,
            RngStep::Fixed(0),
            Stream::Train,
        )?;
        let bytes = f32s(2 * bs * d) + 2.0 * f32s(k * bs * d);
        let shape = format!("K={k} B={bs} D={d}");
        b.case(
            "reparam_forward",
            None,
            &shape,
            &program(disp),
            Work::Bytes(bytes),
        )?;
    }

    // reparam_backward (overwrite): reads log σ² (B, D) of enc, dz and ε (K, B, D); writes
    // genc (B, 2D).
    for &k in samples {
        let dz = b.uniform("dz", &[k, bs, d], -1.0, 1.0)?;
        let eps = b.uniform("eps", &[k, bs, d], -2.0, 2.0)?;
        let genc = b.zeros("genc", &[bs, 2 * d])?;
        let disp = wgvae::ops::reparam::reparam_backward(
            ctx,
            "reparam_backward",
            &enc,
            &dz,
            &eps,
            &genc,
            k,
            false,
        )?;
        let bytes = f32s(bs * d) + 2.0 * f32s(k * bs * d) + f32s(2 * bs * d);
        let shape = format!("K={k} B={bs} D={d}");
        b.case(
            "reparam_backward",
            None,
            &shape,
            &program(disp),
            Work::Bytes(bytes),
        )?;
    }

    // kl with its gradient: reads enc (B, 2D); writes kl_sample (B,), kl_elem (B, D) and
    // genc (B, 2D).
    {
        let kl_sample = b.zeros("kl_sample", &[bs])?;
        let kl_elem = b.zeros("kl_elem", &[bs, d])?;
        let genc = b.zeros("genc", &[bs, 2 * d])?;
        let disp = wgvae::ops::kl::kl(
            ctx,
            "kl",
            &enc,
            &kl_sample,
            &kl_elem,
            Some((&genc, 1.0 / bs as f32)),
        )?;
        let bytes = f32s(2 * bs * d) + f32s(bs) + f32s(bs * d) + f32s(2 * bs * d);
        b.case(
            "kl",
            None,
            &format!("B={bs} D={d}"),
            &program(disp),
            Work::Bytes(bytes),
        )?;
    }

    // bernoulli with its gradient: reads logits (R, P) and the targets (B, P) (each target row
    // is reused R/B times; counted once); writes nll (R,) and grad (R, P). P: MNIST's 784 and
    // the sprites' 64 x 64.
    for pixels in [PIXELS, 4096] {
        let target = b.uniform("target", &[bs, pixels], 0.0, 1.0)?;
        let rows: &[usize] = if quick || pixels != PIXELS {
            &[bs]
        } else {
            &[bs, 100 * bs]
        };
        for &r in rows {
            let logits = b.uniform("logits", &[r, pixels], -4.0, 4.0)?;
            let nll = b.zeros("nll", &[r])?;
            let grad = b.zeros("grad", &[r, pixels])?;
            let disp = wgvae::ops::likelihood::bernoulli(
                ctx,
                "bernoulli",
                &logits,
                &target,
                &nll,
                Some((&grad, 1.0 / bs as f32)),
            )?;
            let bytes = f32s(r * pixels) + f32s(bs * pixels) + f32s(r) + f32s(r * pixels);
            let shape = format!("R={r} P={pixels} B={bs}");
            b.case(
                "bernoulli",
                None,
                &shape,
                &program(disp),
                Work::Bytes(bytes),
            )?;
        }
    }

    // col_sum (bias gradients): reads x (R, C), writes y (C,).
    for cols in [HIDDEN, PIXELS] {
        let x = b.uniform("x", &[bs, cols], -1.0, 1.0)?;
        let y = b.zeros("y", &[cols])?;
        let disp = wgvae::ops::reduce::col_sum(ctx, "col_sum", &x, &y, 1.0, false)?;
        let bytes = f32s(bs * cols) + f32s(cols);
        b.case(
            "col_sum",
            None,
            &format!("R={bs} C={cols}"),
            &program(disp),
            Work::Bytes(bytes),
        )?;
    }

    // sum_all (two dispatches): stage 1 reads x (n,) and writes SUM_GROUPS partials; stage 2
    // reads them and writes one value.
    {
        let n = 1_000_000;
        let groups = wgvae::ops::reduce::SUM_GROUPS;
        let x = b.uniform("x", &[n], -1.0, 1.0)?;
        let partials = b.zeros("partials", &[groups])?;
        let y = b.zeros("y", &[1])?;
        let prog =
            wgvae::ops::reduce::sum_all(ctx, "sum_all", &x, &partials, &y, 0, 1.0, false, false)?;
        let bytes = f32s(n) + 2.0 * f32s(groups) + f32s(1);
        b.case(
            "sum_all",
            None,
            &format!("n={n}"),
            &prog,
            Work::Bytes(bytes),
        )?;
    }

    // logmeanexp: reads x (K, B) (twice: max, then sum of exps; counted once), writes y (B,).
    {
        let k = 100;
        let x = b.uniform("log weights", &[k, bs], -200.0, -50.0)?;
        let y = b.zeros("y", &[bs])?;
        let disp = wgvae::ops::reduce::logmeanexp(ctx, "logmeanexp", &x, &y, 1.0, false)?;
        let bytes = f32s(k * bs) + f32s(bs);
        b.case(
            "logmeanexp",
            None,
            &format!("K={k} B={bs}"),
            &program(disp),
            Work::Bytes(bytes),
        )?;
    }

    // adam over the whole model: reads params, grads, m, v (n,) and writes params, m, v; with
    // clipping, the squared-norm reduction first reads grads once more (plus its partials).
    {
        // The classic VAE's parameter count (652,824), from the model's own layout.
        let n = wgvae::model::VaeConfig::classic(28, 28).layout().count();
        let params = b.uniform("params", &[n], -0.1, 0.1)?;
        let grads = b.uniform("grads", &[n], -0.01, 0.01)?;
        let m = b.zeros("m", &[n])?;
        let v = b.zeros("v", &[n])?;
        let state = StepState::new(ctx, "step state")?;
        let scratch = AdamScratch::new(ctx)?;
        let groups = wgvae::ops::reduce::SUM_GROUPS;
        for clip in [0.0, 1.0] {
            let cfg = AdamConfig {
                clip_norm: clip,
                ..AdamConfig::default()
            };
            let prog = wgvae::ops::adam::adam(
                ctx, "adam", &params, &grads, &m, &v, &state, &scratch, &cfg,
            )?;
            let mut bytes = f32s(4 * n) + f32s(3 * n);
            if clip > 0.0 {
                bytes += f32s(n) + 2.0 * f32s(groups) + f32s(1);
            }
            let kernel = if clip > 0.0 { "adam+clip" } else { "adam" };
            b.case(kernel, None, &format!("n={n}"), &prog, Work::Bytes(bytes))?;
        }
    }

    // gather: reads one row of P bytes per batch row from the u8 set and its index in perm;
    // writes x (B, P) as f32.
    {
        let n_images = 6000;
        let bytes_u8: Vec<u8> = (0..n_images * PIXELS)
            .map(|_| b.rng.next_u64() as u8)
            .collect();
        let images = Tensor::<u8>::from_slice(ctx, "images", &[n_images, PIXELS], &bytes_u8)?;
        let perm_data = b.rng.permutation(n_images);
        let perm = Tensor::<u32>::from_slice(ctx, "perm", &[n_images], &perm_data)?;
        let x = b.zeros("x", &[bs, PIXELS])?;
        let disp = wgvae::ops::data::gather(ctx, "gather", &images, PIXELS, &perm, &x, 0, None)?;
        let bytes = (bs * PIXELS) as f64 + 4.0 * bs as f64 + f32s(bs * PIXELS);
        let shape = format!("B={bs} P={PIXELS} N={n_images}");
        b.case("gather", None, &shape, &program(disp), Work::Bytes(bytes))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let reps = args
        .reps
        .unwrap_or(if args.quick { QUICK_REPS } else { DEFAULT_REPS }) as usize;

    // Fail before the (slow) run when the JSON could not be written afterwards.
    if let Some(path) = &args.json {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        anyhow::ensure!(
            dir.is_dir(),
            "writing bench JSON to {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }

    let ctx = GpuContext::new().context("creating the GPU context")?;
    let info = &ctx.info;
    let timing = Timing::new(&ctx)?;
    println!("adapter:     {}", info.name);
    println!("backend:     {:?}", info.backend);
    println!("device type: {:?}", info.device_type);
    println!("driver:      {} ({})", info.driver, info.driver_info);
    println!(
        "GEMM kernel: {} (and convolutions)",
        ctx.gemm_variant.name()
    );
    println!(
        "timing:      {} (GPU timestamps {}); median of {reps} runs after {WARMUP} warm-up runs",
        if timing.gpu_timestamps() {
            "gpu-timestamps"
        } else {
            "wall-clock"
        },
        if timing.gpu_timestamps() {
            "offered and used"
        } else {
            "not offered"
        },
    );
    println!("Quote these figures together with the adapter name above.");
    println!();
    print_header();

    let mut bench = Bench {
        ctx: &ctx,
        timing,
        reps,
        rng: HostRng::new(0x5EED_BE0C),
        rows: Vec::new(),
    };
    if args.conv_only {
        let (m, k, n) = REFERENCE_GEMM;
        bench.gemm(ctx.gemm_variant, Trans::NN, (m, k, n), true)?;
    } else {
        gemm_cases(&mut bench, args.quick)?;
    }
    let conv = if args.gemm_only {
        Vec::new()
    } else {
        conv_cases(&mut bench)?
    };
    if !args.gemm_only && !args.conv_only {
        memory_cases(&mut bench, args.quick)?;
    }
    if !conv.is_empty() {
        print_conv_table(&bench, &conv);
    }

    if let Some(path) = &args.json {
        let report = Report {
            adapter: AdapterJson {
                name: &info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: &info.driver,
                driver_info: &info.driver_info,
            },
            gemm_variant: ctx.gemm_variant.name(),
            timing: bench.method(),
            warmup: WARMUP,
            results: &bench.rows,
        };
        let json = serde_json::to_string_pretty(&report).context("serializing the results")?;
        write_json_atomic(path, &json)?;
        println!();
        println!("wrote {}", path.display());
    }
    println!(
        "{} cases in {:.1} s",
        bench.rows.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
