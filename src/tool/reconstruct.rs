//! `wgvae reconstruct`: inputs and their reconstructions (the decoded posterior means) as a
//! PNG, rows of up to 16 inputs each above the row of their reconstructions. A conditional
//! model encodes each input under its class label and decodes it under the same label, or
//! under `--class C` (the same style drawn as another class).

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
    wgvae reconstruct --run runs/sprites --sprites 100 --start 40 --n 16 --out rec.png\n  \
    wgvae reconstruct --run runs/cvae --images t10k-images-idx3-ubyte.gz \
    --labels t10k-labels-idx1-ubyte.gz --class 3 --out threes.png\n\n\
    Rows of up to 16 inputs, each followed by the row of their reconstructions (the decoded \
    posterior means). A conditional model (train --conditional) encodes each input under its \
    label (--labels, or the labels the inputs carry) and decodes it under the same label, or \
    under --class C.")]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub input: super::RunInput,
    /// A conditional model: the class label of each input (IDX labels file, .gz or raw, or a
    /// .npy array; one per input); default: the labels the inputs carry
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// A conditional model: decode every input under this class (default: its own label)
    #[arg(long = "class", allow_negative_numbers = true)]
    pub class: Option<i64>,
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
    let (ck, mut set) = args.input.load()?;
    let run = &args.input.run;
    let class = decode::class_and_labels(
        args.class,
        ck.model.classes,
        &mut set,
        args.labels.as_deref(),
        run,
        "reconstruct",
    )?;
    let labels = decode::labels_u32(&set);
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
    let class_row = class.map(|c| vec![c; ROW]);
    let mut rows = Vec::new();
    for first in (args.start..end).step_by(ROW) {
        let last = (first + ROW).min(end);
        let inputs: Vec<f32> = (first..last).flat_map(|i| set.to_f32(i)).collect();
        // A conditional model: encoded under each input's label, decoded under it or --class.
        if vae.condition.is_some() {
            inf.set_labels(&ctx, &vae, &labels[first..last])?;
        }
        let (mu, _) = inf.encode(&ctx, &vae, &inputs)?;
        if let Some(row) = &class_row {
            inf.set_labels(&ctx, &vae, &row[..last - first])?;
        }
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
