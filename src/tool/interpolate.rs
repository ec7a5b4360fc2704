//! `wgvae interpolate`: a PNG strip from one input to another — input I, the decoded codes
//! along the path between their posterior means (spherical by default, or a straight line),
//! input J. A conditional model encodes I and J under their class labels and decodes the
//! path under I's label, or under `--class C`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::decode;
use crate::cli::open_context;
use crate::latent::{lerp, slerp};
use crate::model::Vae;
use crate::viz::Inference;

/// Flags of `wgvae interpolate`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    wgvae interpolate --run runs/mnist --images t10k-images-idx3-ubyte.gz --from 3 --to 7 \
    --out interp.png\n  \
    wgvae interpolate --run runs/sprites --sprites 100 --from 0 --to 1 --steps 12 --linear \
    --out interp.png\n\n\
    The strip is input I, --steps decoded codes at t = 0, 1/(S-1), …, 1 from μ_I to μ_J \
    (so the first and last are the reconstructions of I and J), then input J. A conditional \
    model (train --conditional) encodes I and J under their labels (--labels, or the labels \
    the inputs carry) and decodes the whole path under the label of I, or under --class C.")]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub input: super::RunInput,
    /// A conditional model: the class label of each input (IDX labels file, .gz or raw, or a
    /// .npy array; one per input); default: the labels the inputs carry
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// A conditional model: decode the whole path under this class (default: the label of
    /// input --from)
    #[arg(long = "class", allow_negative_numbers = true)]
    pub class: Option<i64>,
    /// Index of the first input in the set
    #[arg(long, allow_negative_numbers = true)]
    pub from: usize,
    /// Index of the last input in the set
    #[arg(long, allow_negative_numbers = true)]
    pub to: usize,
    /// Decoded codes between the two inputs (2..=64)
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    pub steps: usize,
    /// A straight line between the means instead of the spherical path
    #[arg(long)]
    pub linear: bool,
    /// Output PNG
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out
    #[arg(long)]
    pub force: bool,
}

/// The codes decoded, (steps, D) row-major.
pub fn run(args: &InterpolateArgs) -> Result<Vec<f32>> {
    if !(2..=64).contains(&args.steps) {
        bail!("--steps {}: must be between 2 and 64", args.steps);
    }
    decode::prepare_file(&args.out, "--out", args.force)?;
    let (ck, mut set) = args.input.load()?;
    for (flag, i) in [("--from", args.from), ("--to", args.to)] {
        if i >= set.n {
            bail!(
                "{flag} {i}: the set has {} inputs (indices 0..{})",
                set.n,
                set.n
            );
        }
    }
    let run = &args.input.run;
    let class = decode::class_and_labels(
        args.class,
        ck.model.classes,
        &mut set,
        args.labels.as_deref(),
        run,
        "interpolate",
    )?;
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let d = vae.cfg.latent;
    let inf = Inference::new(&ctx, &vae, 2, 0)?;
    // A conditional model: I and J encoded under their labels, the path decoded under I's
    // label or --class.
    let labels = decode::labels_u32(&set);
    let path_labels = match vae.condition {
        Some(_) => {
            inf.set_labels(&ctx, &vae, &[labels[args.from], labels[args.to]])?;
            Some(vec![class.unwrap_or(labels[args.from]); args.steps])
        }
        None => None,
    };
    let (first, last) = (set.to_f32(args.from), set.to_f32(args.to));
    let (mu, _) = inf.encode(&ctx, &vae, &[first.as_slice(), last.as_slice()].concat())?;
    let (a, b) = (&mu[..d], &mu[d..2 * d]);
    let path: fn(&[f32], &[f32], f32) -> Vec<f32> = if args.linear { lerp } else { slerp };
    let z: Vec<f32> = (0..args.steps)
        .flat_map(|s| path(a, b, s as f32 / (args.steps - 1) as f32))
        .collect();
    let mut strip = first;
    strip.extend(decode::decode_codes(
        &ctx,
        &vae,
        &z,
        path_labels.as_deref(),
    )?);
    strip.extend(last);
    let n = args.steps + 2;
    decode::create_parent(&args.out)?;
    crate::image::save_grid_png_chw(
        &args.out,
        &strip,
        n,
        decode::image_shape(&vae),
        n,
        2,
        decode::png_scale(&vae),
    )
    .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
    Ok(z)
}
