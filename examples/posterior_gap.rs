//! How far each posterior family's bound stays from the exact log-likelihood, on a model where
//! both are known in closed form: the linear-Gaussian decoder x = W z + b + σ·n, z ~ N(0, I)
//! (probabilistic PCA; see `wgvae::linear_gaussian`). A mean-field (diagonal) q cannot
//! represent the posterior's correlation: its best ELBO stays ½(Σᵢ log Λᵢᵢ − log det Λ) nats
//! below log p(x), Λ = WᵀW/σ² + I the posterior precision.
//!
//! The decoder is frozen at the true W and b; only the encoder (one linear layer from x to the
//! posterior's parameters) is trained, on the GPU, to maximise the ELBO (for the flows,
//! planar and inverse autoregressive, which have no closed-form KL, its single-draw estimate;
//! the IAF's own networks train with the encoder). Then every family's ELBO and IWAE bound
//! (`--k` draws) are estimated on the GPU and compared with the exact log p(x).
//!
//! ```sh
//! cargo run --release --example posterior_gap                     # a model of its own
//! cargo run --release --example posterior_gap -- --w W.npy --b b.npy --sigma 0.3 --x x.npy
//! ```
//!
//! `W` is a (dx, dz) array, `b` (dx,), `x` (n, dx), any float or integer dtype. The picture
//! (`--png`, default `posterior_gap.png`) shows one input's exact posterior (its 1, 2 and 3
//! standard-deviation ellipses, red) against draws from each family's q(z|x) (blue), in the
//! first two latent dimensions.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use wgvae::gpu::GpuContext;
use wgvae::linear_gaussian::{FitOptions, LinearGaussian, bounds, ellipse, fit_encoder};
use wgvae::metrics::cli::{read_matrix, read_vector};
use wgvae::model::PosteriorKind;
use wgvae::plot::{Scatter, scatter_panels_png};

#[derive(Parser, Debug)]
#[command(about = "Posterior families against the exact log p(x) of a linear-Gaussian model")]
struct Args {
    /// Decoder weight W, a (dx, dz) .npy array; with --x (and optionally --b) instead of the
    /// built-in model
    #[arg(long, requires = "x")]
    w: Option<PathBuf>,
    /// Decoder bias b, a (dx,) .npy array (default 0)
    #[arg(long, requires = "w")]
    b: Option<PathBuf>,
    /// Observation noise σ (at least 0.01)
    #[arg(long, default_value_t = 0.5)]
    sigma: f64,
    /// Data x, an (n, dx) .npy array
    #[arg(long, requires = "w")]
    x: Option<PathBuf>,
    /// Inputs drawn from the built-in model
    #[arg(long, default_value_t = 256)]
    n: usize,
    /// Adam steps of each encoder (all inputs, one draw each, per step)
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Draws per input of the IWAE bound and of the ELBO's estimate
    #[arg(long, default_value_t = 1000)]
    k: usize,
    /// The picture of one input's posterior
    #[arg(long, default_value = "posterior_gap.png")]
    png: PathBuf,
    /// The input the picture shows
    #[arg(long, default_value_t = 0)]
    show: usize,
    /// Layers of the planar flow
    #[arg(long, default_value_t = 8)]
    flows: usize,
    /// Steps of the inverse autoregressive flow
    #[arg(long, default_value_t = 2)]
    iaf_flows: usize,
    /// Hidden units of each IAF step
    #[arg(long, default_value_t = 16)]
    iaf_hidden: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The model and its inputs, from the flags.
fn model(args: &Args) -> Result<(LinearGaussian, Vec<f64>)> {
    let (Some(wp), Some(xp)) = (&args.w, &args.x) else {
        ensure!(args.n >= 1, "--n {}: must be at least 1", args.n);
        let m = LinearGaussian::builtin(args.sigma).context("--sigma")?;
        let x = m.sample(args.n, args.seed);
        return Ok((m, x));
    };
    let w = read_matrix(wp, "W")?;
    let x = read_matrix(xp, "x")?;
    let (dx, dz) = (w.rows(), w.cols());
    ensure!(
        x.cols() == dx,
        "--x {}: rows of {} values, but --w {} is ({dx}, {dz}): x needs {dx} values per row",
        xp.display(),
        x.cols(),
        wp.display()
    );
    let b = match &args.b {
        Some(bp) => read_vector(bp)?,
        None => vec![0.0; dx],
    };
    let m = LinearGaussian::new(w.data().to_vec(), dx, dz, b, args.sigma)
        .with_context(|| format!("--w {} / --b / --sigma", wp.display()))?;
    Ok((m, x.data().to_vec()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.steps >= 1,
        "--steps {}: must be at least 1",
        args.steps
    );
    ensure!(args.k >= 1, "--k {}: must be at least 1", args.k);
    let (m, x) = model(&args)?;
    let log_px = m.log_px(&x)?;
    let n = log_px.len();
    ensure!(args.show < n, "--show {}: there are {n} inputs", args.show);
    let ctx = GpuContext::new().context("creating the GPU context")?;
    println!(
        "linear-Gaussian model: dx {}, dz {}, σ {}, {n} inputs; {} steps; adapter {}",
        m.dx,
        m.dz,
        m.sigma,
        args.steps,
        ctx.adapter.get_info().name
    );
    let exact = log_px.iter().sum::<f64>() / n as f64;
    let gap = m.mean_field_gap();
    let opts = FitOptions {
        steps: args.steps,
        seed: args.seed,
        ..FitOptions::default()
    };
    let (mean, cov) = m.posterior(&x[args.show * m.dx..(args.show + 1) * m.dx]);
    let (mean2, cov2) = if m.dz > 1 {
        ((mean[0], mean[1]), [cov[0], cov[1], cov[m.dz + 1]])
    } else {
        ((mean[0], 0.0), [cov[0], 0.0, 1e-12])
    };
    let ellipses: Vec<Vec<(f64, f64)>> = [1.0, 2.0, 3.0]
        .iter()
        .map(|&k| ellipse(mean2, cov2, k))
        .collect();
    println!(
        "\n| family | ELBO | exact log p(x) | gap | IWAE (k = {}) | IWAE gap | mean-field gap (analytic) |",
        args.k
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut panels = Vec::new();
    for family in [
        PosteriorKind::Diagonal,
        PosteriorKind::Full,
        PosteriorKind::Planar { flows: args.flows },
        PosteriorKind::Iaf {
            flows: args.iaf_flows,
            hidden: args.iaf_hidden,
        },
    ] {
        let vae = fit_encoder(&ctx, &m, family, &x, opts)?;
        let b = bounds(&ctx, &vae, &x, args.k, args.seed ^ 0xe7a1)?;
        let elbo = b.elbo.iter().sum::<f64>() / n as f64;
        let iwae = b.iwae.iter().sum::<f64>() / n as f64;
        let name = vae.posterior.name();
        println!(
            "| {name} | {elbo:.4} ± {:.4} | {exact:.4} | {:.4} | {iwae:.4} ± {:.4} | {:.4} | {gap:.4} |",
            b.elbo_se,
            exact - elbo,
            b.iwae_se,
            exact - iwae,
        );
        let dz = m.dz;
        let points = (0..args.k.min(400))
            .map(|s| {
                let r = (s * n + args.show) * dz;
                let second = if dz > 1 { b.z[r + 1] as f64 } else { 0.0 };
                (b.z[r] as f64, second)
            })
            .collect();
        panels.push(Scatter {
            title: format!("q(z|x): {name} (ELBO gap {:.3} nats)", exact - elbo),
            points,
            curves: ellipses.clone(),
        });
    }
    println!("(nats per input, averaged over the inputs; ± the Monte Carlo standard errors)");
    scatter_panels_png(
        &args.png,
        &format!(
            "input {}: exact posterior (1, 2, 3 sd, red) and draws of q (blue)",
            args.show
        ),
        "z1",
        "z2",
        &panels,
    )?;
    println!("wrote {}", args.png.display());
    Ok(())
}
