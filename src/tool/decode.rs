//! `wgvae decode`: latent codes from a `.npy` array ((n, D), float32 or float64) decoded by a
//! run's model into a PNG grid of about √n columns. Also the helpers the other generating
//! subcommands share: the checkpoint of a run, output files that are not replaced without
//! `--force`, decoding in GPU batches and the grid layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cli::open_context;
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
    The latents are an (n, D) float32 or float64 .npy array, D the model's latent size; the \
    grid has ceil(sqrt(n)) columns, row-major in the order of the array's rows.")]
pub struct DecodeArgs {
    /// Run directory holding checkpoint.safetensors
    #[arg(long)]
    pub run: PathBuf,
    /// (n, D) array of latent codes (.npy, float32 or float64)
    #[arg(long)]
    pub latents: PathBuf,
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
    let d = vae.cfg.latent;
    let n = z.len() / d.max(1);
    if n == 0 {
        bail!("decode: no latents");
    }
    let inf = Inference::new(ctx, vae, BATCH.min(n), 0)?;
    let mut out = Vec::with_capacity(n.saturating_mul(vae.cfg.input_dim()));
    for chunk in z.chunks(inf.batch() * d) {
        out.extend(inf.decode(ctx, vae, chunk)?);
    }
    Ok(out)
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
    let m = crate::metrics::cli::read_latents(path)?;
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
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let n = z.len() / vae.cfg.latent;
    let images = decode_latents(&ctx, &vae, &z)?;
    save_grid(&args.out, &vae, &images, n)?;
    Ok(n)
}
