//! `wgvae reconstruct`: inputs and their reconstructions (the decoded posterior means) as a
//! PNG, rows of up to 16 inputs each above the row of their reconstructions.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::decode;
use crate::cli::open_context;
use crate::image::save_rows_png_chw;
use crate::model::Vae;
use crate::viz::Inference;

/// Flags of `wgvae reconstruct`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    wgvae reconstruct --run runs/mnist --images t10k-images-idx3-ubyte.gz --n 32 --out rec.png\n  \
    wgvae reconstruct --run runs/sprites --sprites 100 --start 40 --n 16 --out rec.png\n\n\
    Rows of up to 16 inputs, each followed by the row of their reconstructions (the decoded \
    posterior means).")]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub input: super::RunInput,
    /// Number of inputs (1..=1024)
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    pub n: usize,
    /// Index of the first input in the set
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub start: usize,
    /// Output PNG
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out
    #[arg(long)]
    pub force: bool,
}

/// Most inputs one picture shows.
pub const MAX_INPUTS: usize = 1024;

/// Inputs per row of the picture.
pub const ROW: usize = 16;

/// The number of inputs shown.
pub fn run(args: &ReconstructArgs) -> Result<usize> {
    if !(1..=MAX_INPUTS).contains(&args.n) {
        bail!("--n {}: must be between 1 and {MAX_INPUTS}", args.n);
    }
    decode::prepare_file(&args.out, "--out", args.force)?;
    let (ck, set) = args.input.load()?;
    let end = args.start.checked_add(args.n).filter(|&e| e <= set.n);
    let Some(end) = end else {
        bail!(
            "--start {} --n {}: the set has {} inputs (indices 0..{})",
            args.start,
            args.n,
            set.n,
            set.n
        );
    };
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let inf = Inference::new(&ctx, &vae, ROW.min(args.n), 0)?;
    let mut rows = Vec::new();
    for first in (args.start..end).step_by(ROW) {
        let last = (first + ROW).min(end);
        let inputs: Vec<f32> = (first..last).flat_map(|i| set.to_f32(i)).collect();
        let (mu, _) = inf.encode(&ctx, &vae, &inputs)?;
        let recon = inf.decode(&ctx, &vae, &mu)?;
        rows.push(inputs);
        rows.push(recon);
    }
    decode::create_parent(&args.out)?;
    save_rows_png_chw(
        &args.out,
        &rows,
        decode::image_shape(&vae),
        2,
        decode::png_scale(&vae),
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(args.n)
}
