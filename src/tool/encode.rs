//! `wgvae encode`: the posterior of every input of a data set as `.npy` arrays — means μ,
//! standard deviations σ and one draw z ~ q(z|x) — and, for the built-in sprites, their
//! ground-truth factors, so that any tool can score a representation from the same arrays
//! (`wgvae metrics --latents mu.npy --factors factors.npy`). A conditional model encodes each
//! input under its class label (`--labels FILE`, or the labels the inputs carry).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cli::open_context;
use crate::data::{self, Dataset};
use crate::model::Vae;
use crate::train::checkpoint::Checkpoint;
use crate::viz::Inference;

/// Flags of `wgvae encode`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    wgvae encode --run runs/sprites --sprites 10000 --out latents/\n  \
    wgvae encode --run runs/mnist --images t10k-images-idx3-ubyte.gz --out latents/\n  \
    wgvae encode --run runs/cvae --images t10k-images-idx3-ubyte.gz \
    --labels t10k-labels-idx1-ubyte.gz --out latents/\n\n\
    Writes mu.npy, sigma.npy and z.npy ((n, latent) float32); with --sprites also \
    factors.npy ((n, 5) int64 class indices of shape, scale, orientation, pos_x, pos_y) and \
    factor_values.npy ((n, 5) float32). A conditional model (train --conditional) encodes \
    each input under its class: --labels, or the labels the inputs carry (the sprites' \
    shapes).")]
pub struct EncodeArgs {
    #[command(flatten)]
    pub input: super::RunInput,
    /// A conditional model: the class label of each input (IDX labels file, .gz or raw, or a
    /// .npy array; one per input); default: the labels the inputs carry
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output directory
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing output files
    #[arg(long)]
    pub force: bool,
    /// Seed of the draws z
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
}

/// Images encoded per GPU batch.
const BATCH: usize = 256;

/// What `encode` wrote.
#[derive(Debug)]
pub struct Encoded {
    pub n: usize,
    pub latent: usize,
    pub files: Vec<PathBuf>,
}

pub fn run(args: &EncodeArgs) -> Result<Encoded> {
    let (ck, mut set) = args.input.load()?;
    super::decode::input_labels(
        ck.model.classes,
        &mut set,
        args.labels.as_deref(),
        &args.input.run,
        "encode",
    )?;
    let mut names = vec!["mu.npy", "sigma.npy", "z.npy"];
    if set.factors.is_some() {
        names.extend(["factors.npy", "factor_values.npy"]);
    }
    let paths = super::prepare_outputs(&args.out, &names, args.force)?;
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let (mu, sigma, z) = encode_set(&ctx, &vae, &set, args.seed)?;
    let d = vae.cfg.latent;
    let shape = [set.n, d];
    let write = |p: &Path, v: &[f32]| {
        data::npy::write_npy_f32(p, &shape, v).with_context(|| format!("writing {}", p.display()))
    };
    write(&paths[0], &mu)?;
    write(&paths[1], &sigma)?;
    write(&paths[2], &z)?;
    if let Some(f) = &set.factors {
        let k = f.n_factors();
        let classes: Vec<i64> = f.classes.iter().map(|&c| c as i64).collect();
        data::npy::write_npy_i64(&paths[3], &[set.n, k], &classes)
            .with_context(|| format!("writing {}", paths[3].display()))?;
        data::npy::write_npy_f32(&paths[4], &[set.n, k], &f.values)
            .with_context(|| format!("writing {}", paths[4].display()))?;
    }
    Ok(Encoded {
        n: set.n,
        latent: d,
        files: paths,
    })
}

/// μ, σ and one draw z (each (n, D) row-major) of every image of `set`.
pub fn encode_set(
    ctx: &crate::gpu::GpuContext,
    vae: &Vae,
    set: &Dataset,
    seed: u64,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (mut mu, mut sigma, mut z) = (Vec::new(), Vec::new(), Vec::new());
    in_batches(ctx, vae, set, seed, |inf, images, step| {
        let (m, s, zz) = inf.encode_draw(ctx, vae, images, step)?;
        mu.extend(m);
        sigma.extend(s);
        z.extend(zz);
        Ok(())
    })?;
    Ok((mu, sigma, z))
}

/// The posterior's parameters of every input of `set`, (n, param_dim).
pub fn encode_params_set(
    ctx: &crate::gpu::GpuContext,
    vae: &Vae,
    set: &Dataset,
) -> Result<Vec<f32>> {
    let mut q = Vec::new();
    in_batches(ctx, vae, set, 0, |inf, images, _| {
        q.extend(inf.encode_params(ctx, vae, images)?);
        Ok(())
    })?;
    Ok(q)
}

/// Calls `f` with an [`Inference`] and each batch of `set`'s images (and the batch's index),
/// in order; a conditional model gets each batch's labels first.
fn in_batches(
    ctx: &crate::gpu::GpuContext,
    vae: &Vae,
    set: &Dataset,
    seed: u64,
    mut f: impl FnMut(&Inference, &[f32], u32) -> Result<()>,
) -> Result<()> {
    let inf = Inference::new(ctx, vae, BATCH.min(set.n.max(1)), seed)?;
    for (step, start) in (0..set.n).step_by(inf.batch()).enumerate() {
        let end = (start + inf.batch()).min(set.n);
        let images: Vec<f32> = (start..end).flat_map(|i| set.to_f32(i)).collect();
        // A conditional model encodes each image under its own label (`Inference` refuses
        // it when the set has none).
        if vae.condition.is_some()
            && let Some(labels) = &set.labels
        {
            let l: Vec<u32> = labels[start..end].iter().map(|&v| v as u32).collect();
            inf.set_labels(ctx, vae, &l)?;
        }
        f(&inf, &images, step as u32)?;
    }
    Ok(())
}

/// `n` built-in sprites with their factors, for a model of sprites' size.
pub fn sprites_for_run(ck: &Checkpoint, ck_path: &Path, n: usize, seed: u64) -> Result<Dataset> {
    let side = data::sprites::SIZE;
    if (ck.model.channels, ck.model.height, ck.model.width) != (1, side, side) {
        bail!(
            "--sprites: the model in {} takes {}x{}x{} images, the sprites are 1x{side}x{side}",
            ck_path.display(),
            ck.model.channels,
            ck.model.height,
            ck.model.width
        );
    }
    if n == 0 || n > data::sprites::N_COMBINATIONS {
        bail!(
            "--sprites {n}: must be between 1 and {} (the distinct factor combinations)",
            data::sprites::N_COMBINATIONS
        );
    }
    let bytes = (n as u64).saturating_mul((side * side) as u64 + 64);
    crate::train::resources::check_host(bytes, &format!("{n} sprites"), "--sprites")?;
    let split = data::sprites::generate(&data::sprites::SpritesConfig {
        n_train: 0,
        n_test: n,
        seed,
    })?;
    Ok(split.test)
}
