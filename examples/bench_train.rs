//! Times a training step after warm-up: by default the classic MNIST step (784-400-20-400-784,
//! batch 128); `--arch conv` the convolutional VAE; `--sprites` on the 64×64 sprites.
//!
//! ```text
//! cargo run --release --example bench_train -- [--steps N] [--data DIR | --sprites]
//!     [--arch mlp|conv] [--batch B] [--json PATH]
//! ```
//!
//! Prints samples/s, ms per step, dispatches and submits per step, bytes read back per step and
//! the time from process start to the first finished step. Quote figures with the adapter name.
//! Data: `--data`, else ../shared/data/mnist-8k when present, else tests/data/mnist-512 (the
//! cost of a step does not depend on the pixels).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use wgvae::train::{ArchKind, DataSource, ModelSpec, TrainConfig, Trainer};

#[derive(Parser)]
struct Args {
    /// Timed steps (after 10 warm-up steps)
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long)]
    data: Option<PathBuf>,
    /// The built-in 64×64 sprites (2,000 generated) instead of IDX files
    #[arg(long, conflicts_with = "data")]
    sprites: bool,
    #[arg(long, value_enum, default_value_t = ArchKind::Mlp)]
    arch: ArchKind,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// --arch conv: channels of each convolution (default: by image size)
    #[arg(long, value_delimiter = ',')]
    conv_channels: Vec<usize>,
    /// Hidden fully connected widths (default: 400 with mlp, 256 with conv)
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<usize>,
    /// Also write the figures as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let t0 = Instant::now();
    wgvae::cli::quiet_wayland_probe();
    env_logger::init();
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = args.data.clone().unwrap_or_else(|| {
        let shared = root.join("../shared/data/mnist-8k");
        if shared.is_dir() {
            shared
        } else {
            root.join("tests/data/mnist-512")
        }
    });
    let ctx = wgvae::cli::open_context()?;
    let out = std::env::temp_dir().join(format!("wgvae-bench-train-{}", std::process::id()));
    let hidden = match (args.arch, args.hidden.is_empty()) {
        (_, false) => args.hidden.clone(),
        (ArchKind::Mlp, true) => vec![400],
        (ArchKind::Conv, true) => vec![256],
    };
    let data = if args.sprites {
        DataSource::Sprites {
            n_train: 2000,
            n_test: 200,
            seed: 0,
        }
    } else {
        DataSource::Idx { dir: dir.clone() }
    };
    let cfg = TrainConfig {
        data,
        model: ModelSpec {
            arch: args.arch,
            conv_channels: args.conv_channels.clone(),
            enc_hidden: hidden.clone(),
            dec_hidden: hidden,
            ..ModelSpec::default()
        },
        batch: args.batch,
        out: out.clone(),
        quiet: true,
        pictures: false,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&ctx, cfg).with_context(|| format!("loading {}", dir.display()))?;
    let per_epoch = t.steps_per_epoch();
    let mut in_epoch = 0;
    let mut step = |t: &mut Trainer| -> anyhow::Result<wgpu::SubmissionIndex> {
        if in_epoch == 0 {
            t.begin_epoch()?;
        }
        let idx = t.submit_step()?;
        in_epoch = (in_epoch + 1) % per_epoch;
        Ok(idx)
    };
    let first = step(&mut t)?;
    ctx.wait_for(first)?;
    let first_step = t0.elapsed().as_secs_f64();
    for _ in 0..10 {
        step(&mut t)?;
    }
    ctx.wait()?;
    let start = Instant::now();
    let mut queue = std::collections::VecDeque::new();
    for _ in 0..args.steps {
        queue.push_back(step(&mut t)?);
        while queue.len() > 2 {
            ctx.wait_for(queue.pop_front().expect("non-empty"))?;
        }
    }
    ctx.wait()?;
    let secs = start.elapsed().as_secs_f64();
    let ms = secs * 1e3 / args.steps as f64;
    let sps = (args.steps * args.batch) as f64 / secs;
    let dispatches = t.dispatches_per_step();
    // The trainer reads the 32-byte loss sums every 50 steps (progress bar) and at epoch ends.
    let readback_per_step = 32.0 / 50.0;
    println!(
        "adapter: {}  (GEMM kernel {})",
        ctx.info,
        ctx.gemm_variant.name()
    );
    println!(
        "data: {} ({} images), batch {}, {} model {} parameters",
        if args.sprites {
            "sprites".to_string()
        } else {
            dir.display().to_string()
        },
        t.split.train.n,
        args.batch,
        args.arch
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        t.vae.layout.count()
    );
    println!(
        "first step finished {first_step:.2} s after start (context, data, {} pipelines compiled)",
        ctx.pipelines_compiled()
    );
    println!(
        "{} steps: {ms:.2} ms per step, {sps:.0} samples/s",
        args.steps
    );
    println!(
        "per step: {dispatches} dispatches, 1 submit, {readback_per_step:.2} bytes read back (32 B every 50 steps)"
    );
    if let Some(path) = &args.json {
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "adapter": ctx.info.name, "backend": format!("{:?}", ctx.info.backend),
            "gemm_variant": ctx.gemm_variant.name(), "steps": args.steps, "batch": args.batch, "ms_per_step": ms,
            "samples_per_second": sps, "dispatches_per_step": dispatches, "submits_per_step": 1,
            "readback_bytes_per_step": readback_per_step, "first_step_seconds": first_step,
        }))?;
        wgvae::train::checkpoint::write_atomic(path, &body)?;
    }
    let _ = std::fs::remove_dir_all(out);
    Ok(())
}
