//! `wgvae decode`: latent codes from a `.npy` array ((n, D), float32 or float64) decoded by a
//! run's model into a PNG grid of about √n columns; a conditional model decodes every code
//! under `--class C`, or code i under label i of `--labels FILE`. Also the helpers the other
//! generating subcommands share: the checkpoint of a run, output files that are not replaced
//! without `--force`, a conditional model's labels and classes, decoding in GPU batches and
//! the grid layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cli::open_context;
use crate::data::Dataset;
use crate::gpu::GpuContext;
use crate::image::{ImageShape, save_grid_png_chw};
use crate::model::Vae;
use crate::train::checkpoint::{self, Checkpoint};
use crate::viz::Inference;

/// Flags of `wgvae decode`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  \
    wgvae sample --run runs/sprites --n 64 --out-npy z.npy\n  \
    wgvae decode --run runs/sprites --latents z.npy --out decoded.png\n\n\
    wgvae decode --run runs/cvae --latents z.npy --class 3 --out threes.png\n\n\
    The latents are an (n, D) float32 or float64 .npy array, D the model's latent size; the \
    grid has ceil(sqrt(n)) columns, row-major in the order of the array's rows. A conditional \
    model (train --conditional) needs the class of every code: --class C for all of them, or \
    --labels FILE with one label per code (IDX labels or .npy, n of them).")]
pub struct DecodeArgs {
    /// Run directory holding checkpoint.safetensors
    #[arg(long)]
    pub run: PathBuf,
    /// (n, D) array of latent codes (.npy, float32 or float64)
    #[arg(long)]
    pub latents: PathBuf,
    /// A conditional model: decode every code under this class
    #[arg(
        long = "class",
        conflicts_with = "labels",
        allow_negative_numbers = true
    )]
    pub class: Option<i64>,
    /// A conditional model: the class of each code, one per row of --latents (IDX labels
    /// file, .gz or raw, or a .npy array)
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output PNG
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out
    #[arg(long)]
    pub force: bool,
}

/// Most latent codes one subcommand decodes (`--n` of `sample`, rows of `decode`).
pub const MAX_CODES: usize = 65536;

/// Latents decoded per GPU batch.
const BATCH: usize = 256;

/// The checkpoint of the run in `run`.
pub fn load_checkpoint(run: &Path) -> Result<(Checkpoint, PathBuf)> {
    let path = run.join(checkpoint::FILE_NAME);
    let ck = Checkpoint::load(&path)?;
    Ok((ck, path))
}

/// Refuses to replace an existing `path` (named by `flag`) unless `force`.
pub fn prepare_file(path: &Path, flag: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{flag} {}: already exists; pass --force to replace it",
            path.display()
        );
    }
    Ok(())
}

/// Creates the parent directory of an output file.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
    }
    Ok(())
}

/// The images of `z` ((n, D) row-major), decoded in batches of up to 256 latents.
pub fn decode_latents(ctx: &GpuContext, vae: &Vae, z: &[f32]) -> Result<Vec<f32>> {
    decode_codes(ctx, vae, z, None)
}

/// The images of `z` ((n, D) row-major), decoded in batches of up to 256 latents; with
/// `labels` (one per code, a conditional model), code i under class `labels[i]`.
pub fn decode_codes(
    ctx: &GpuContext,
    vae: &Vae,
    z: &[f32],
    labels: Option<&[u32]>,
) -> Result<Vec<f32>> {
    let d = vae.cfg.latent.max(1);
    let n = z.len() / d;
    if n == 0 {
        bail!("decode: no latents");
    }
    if let Some(l) = labels
        && l.len() != n
    {
        bail!("decode: {n} codes and {} labels", l.len());
    }
    let inf = Inference::new(ctx, vae, BATCH.min(n), 0)?;
    let mut out = Vec::with_capacity(n.saturating_mul(vae.cfg.input_dim()));
    for (b, chunk) in z.chunks(inf.batch() * d).enumerate() {
        if let Some(l) = labels {
            let start = b * inf.batch();
            inf.set_labels(ctx, vae, &l[start..(start + chunk.len() / d)])?;
        }
        out.extend(inf.decode(ctx, vae, chunk)?);
    }
    Ok(out)
}

/// The classes of the conditional model in `run`; for an unconditional one, an error naming
/// `flag`, which only a conditional model takes.
pub fn conditional_classes(classes: Option<usize>, flag: &str, run: &Path) -> Result<usize> {
    match classes {
        Some(c) => Ok(c),
        None => bail!(
            "{flag}: the run in {} is not a conditional model (it was trained without \
             --conditional); {flag} is only for a conditional model",
            run.display()
        ),
    }
}

/// `--class C` checked against the conditional model in `run` (`classes` its classes, `None`
/// for an unconditional model, which refuses the flag).
pub fn class_flag(class: i64, classes: Option<usize>, run: &Path) -> Result<u32> {
    let classes = conditional_classes(classes, "--class", run)?;
    match u32::try_from(class) {
        Ok(c) if (c as usize) < classes => Ok(c),
        _ => bail!(
            "--class {class}: the conditional model in {} knows classes 0 to {}",
            run.display(),
            classes.saturating_sub(1)
        ),
    }
}

/// Checks that every label of `labels` (read from `source`) is a class of the conditional
/// model in `run`; `what` names one entry ("input", "code").
fn check_label_range(
    labels: &[u8],
    classes: usize,
    source: &str,
    what: &str,
    run: &Path,
) -> Result<()> {
    if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
        bail!(
            "{source}: {what} {i} has label {}, but the conditional model in {} knows classes \
             0 to {}",
            labels[i],
            run.display(),
            classes.saturating_sub(1)
        );
    }
    Ok(())
}

/// Reads `--labels FILE`, which must hold `n` labels (one per `what`, e.g. "images" or
/// "codes", of `of`).
pub fn read_counted_labels(path: &Path, n: usize, what: &str, of: &str) -> Result<Vec<u8>> {
    let labels = super::read_labels(path, "--labels")?;
    if labels.len() != n {
        bail!(
            "--labels {}: {} labels, but {of} {n} {what}; the counts must match",
            path.display(),
            labels.len()
        );
    }
    Ok(labels)
}

/// The `--class` and `--labels` flags of a tool that encodes inputs and decodes them
/// (reconstruct, traverse, interpolate): the class to decode under, if given (checked by
/// [`class_flag`]), with the inputs' labels attached by [`input_labels`].
pub fn class_and_labels(
    class: Option<i64>,
    classes: Option<usize>,
    set: &mut Dataset,
    labels: Option<&Path>,
    run: &Path,
    tool: &str,
) -> Result<Option<u32>> {
    let class = class.map(|c| class_flag(c, classes, run)).transpose()?;
    input_labels(classes, set, labels, run, tool)?;
    Ok(class)
}

/// Gives the inputs `set` of a conditional model (`classes`, `None` if unconditional) the
/// labels each is encoded under: those of `--labels FILE` (`labels`), else the ones the inputs
/// carry (the built-in sprites' shapes). An unconditional model refuses `--labels`; a
/// conditional one refuses inputs without labels and labels that are not its classes. `tool`
/// names the subcommand in the errors.
pub fn input_labels(
    classes: Option<usize>,
    set: &mut Dataset,
    labels: Option<&Path>,
    run: &Path,
    tool: &str,
) -> Result<()> {
    let Some(classes) = classes else {
        if labels.is_some() {
            conditional_classes(None, "--labels", run)?;
        }
        return Ok(());
    };
    let source = match labels {
        Some(path) => {
            set.labels = Some(read_counted_labels(
                path,
                set.n,
                "images",
                "the inputs are",
            )?);
            format!("--labels {}", path.display())
        }
        None => "the inputs' labels".to_string(),
    };
    let Some(l) = &set.labels else {
        bail!(
            "this is a conditional model ({classes} classes): `wgvae {tool}` encodes each input \
             under its class label, and the inputs carry none; give --labels FILE (one label \
             per input: IDX labels, .gz or raw, or a .npy array)"
        );
    };
    if l.len() != set.n {
        bail!(
            "{source}: {} labels for {} images in `{}`",
            l.len(),
            set.n,
            set.name
        );
    }
    check_label_range(l, classes, &source, "input", run)
}

/// The labels of `set` as u32 (for [`Inference::set_labels`]); empty without labels.
pub fn labels_u32(set: &Dataset) -> Vec<u32> {
    set.labels
        .as_ref()
        .map_or_else(Vec::new, |l| l.iter().map(|&v| v as u32).collect())
}

/// The shape of the model's images.
pub fn image_shape(vae: &Vae) -> ImageShape {
    ImageShape {
        channels: vae.cfg.channels,
        height: vae.cfg.height,
        width: vae.cfg.width,
    }
}

/// Upscaling of small images in the PNGs (2 for images up to 32 pixels high).
pub fn png_scale(vae: &Vae) -> usize {
    if vae.cfg.height <= 32 { 2 } else { 1 }
}

/// Columns of the grid of `n` images: ceil(√n).
pub fn grid_columns(n: usize) -> usize {
    let mut c = (n as f64).sqrt() as usize;
    while c * c < n {
        c += 1;
    }
    while c > 1 && (c - 1) * (c - 1) >= n {
        c -= 1;
    }
    c.max(1)
}

/// Writes `images` (n of the model's images) to `path` as a grid of [`grid_columns`] columns.
pub fn save_grid(path: &Path, vae: &Vae, images: &[f32], n: usize) -> Result<()> {
    create_parent(path)?;
    save_grid_png_chw(
        path,
        images,
        n,
        image_shape(vae),
        grid_columns(n),
        2,
        png_scale(vae),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Reads `(n, D)` latents from `path` as f32, checked against the model's latent size `d`.
pub fn read_codes(path: &Path, d: usize, ck_path: &Path) -> Result<Vec<f32>> {
    let m = crate::metrics::cli::read_latents(path).context("--latents")?;
    if m.cols() != d {
        bail!(
            "--latents {}: codes of size {}, but the model in {} has {d} latent dimensions",
            path.display(),
            m.cols(),
            ck_path.display()
        );
    }
    if m.rows() == 0 || m.rows() > MAX_CODES {
        bail!(
            "--latents {}: {} codes; must be between 1 and {MAX_CODES}",
            path.display(),
            m.rows()
        );
    }
    let z: Vec<f32> = m.data().iter().map(|&v| v as f32).collect();
    if let Some(i) = z.iter().position(|v| !v.is_finite()) {
        bail!(
            "--latents {}: row {}, column {} does not fit in float32",
            path.display(),
            i / d,
            i % d
        );
    }
    Ok(z)
}

/// The number of codes decoded.
pub fn run(args: &DecodeArgs) -> Result<usize> {
    prepare_file(&args.out, "--out", args.force)?;
    let (ck, ck_path) = load_checkpoint(&args.run)?;
    let z = read_codes(&args.latents, ck.model.latent, &ck_path)?;
    let n = z.len() / ck.model.latent.max(1);
    // A conditional model: the class of each code.
    let labels: Option<Vec<u32>> = match (args.class, &args.labels) {
        (Some(c), _) => Some(vec![class_flag(c, ck.model.classes, &args.run)?; n]),
        (None, Some(path)) => {
            let classes = conditional_classes(ck.model.classes, "--labels", &args.run)?;
            let of = format!("--latents {} holds", args.latents.display());
            let l = read_counted_labels(path, n, "codes", &of)?;
            let source = format!("--labels {}", path.display());
            check_label_range(&l, classes, &source, "code", &args.run)?;
            Some(l.iter().map(|&v| v as u32).collect())
        }
        (None, None) => {
            if let Some(classes) = ck.model.classes {
                bail!(
                    "this is a conditional model ({classes} classes): decoding needs the class \
                     of every code; give --class C (0 to {}) for all of them, or --labels FILE \
                     with one label per code",
                    classes.saturating_sub(1)
                );
            }
            None
        }
    };
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let images = decode_codes(&ctx, &vae, &z, labels.as_deref())?;
    save_grid(&args.out, &vae, &images, n)?;
    Ok(n)
}
