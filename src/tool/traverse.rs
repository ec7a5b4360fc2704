//! `wgvae traverse`: one row per latent dimension, by decreasing KL, each sweeping that
//! dimension over [−3, 3] around one input's posterior mean, as a PNG grid. A conditional
//! model encodes each input under its class label and decodes the traversal under the
//! traversed input's label, or under `--class C`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::decode;
use crate::cli::open_context;
use crate::image::{ImageShape, save_rows_png_chw};
use crate::model::Vae;
use crate::tool::encode::encode_set;
use crate::viz::{Inference, dims_by_kl, traversal_rows};

/// Flags of `wgvae traverse`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  \
    wgvae traverse --run runs/sprites --sprites 1000 --index 3 --out traversals.png\n\n\
    The KL of each dimension is its mean over the inputs; rows are printed in order with it. \
    A conditional model (train --conditional) encodes each input under its label (--labels, \
    or the labels the inputs carry) and decodes the traversal under the label of input \
    --index, or under --class C.")]
pub struct TraverseArgs {
    #[command(flatten)]
    pub input: super::RunInput,
    /// A conditional model: the class label of each input (IDX labels file, .gz or raw, or a
    /// .npy array; one per input); default: the labels the inputs carry
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// A conditional model: decode the traversal under this class (default: the label of
    /// input --index)
    #[arg(long = "class", allow_negative_numbers = true)]
    pub class: Option<i64>,
    /// The input whose code is traversed (its row in the set)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub index: usize,
    /// Images per row
    #[arg(long, default_value_t = 9, allow_negative_numbers = true)]
    pub steps: usize,
    /// Output PNG
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out
    #[arg(long)]
    pub force: bool,
}

/// Dimensions in row order with their KL (nats).
pub fn run(args: &TraverseArgs) -> Result<Vec<(usize, f64)>> {
    if !(2..=64).contains(&args.steps) {
        bail!("--steps {}: must be between 2 and 64", args.steps);
    }
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let (ck, mut set) = args.input.load()?;
    if args.index >= set.n {
        bail!(
            "--index {}: the set has {} inputs (0..{})",
            args.index,
            set.n,
            set.n
        );
    }
    let run = &args.input.run;
    let class = decode::class_and_labels(
        args.class,
        ck.model.classes,
        &mut set,
        args.labels.as_deref(),
        run,
        "traverse",
    )?;
    // A conditional model: the class the traversal is decoded under.
    let decode_class = class.or_else(|| decode::labels_u32(&set).get(args.index).copied());
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let d = vae.cfg.latent;
    let (mu, sigma, _) = encode_set(&ctx, &vae, &set, 0)?;
    let order = dims_by_kl(&mu, &sigma, d);
    let inf = Inference::new(&ctx, &vae, args.steps, 0)?;
    if let (Some(_), Some(c)) = (&vae.condition, decode_class) {
        inf.set_labels(&ctx, &vae, &vec![c; inf.batch()])?;
    }
    let base = &mu[args.index * d..(args.index + 1) * d];
    let rows = traversal_rows(&ctx, &vae, &inf, base, &order, args.steps)?;
    let shape = ImageShape {
        channels: vae.cfg.channels,
        height: vae.cfg.height,
        width: vae.cfg.width,
    };
    let scale = if vae.cfg.height <= 32 { 2 } else { 1 };
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
    }
    save_rows_png_chw(&args.out, &rows, shape, 2, scale)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(order)
}
