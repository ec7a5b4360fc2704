//! `wgvae sample`: images decoded from latent codes drawn from the prior, from the aggregated
//! posterior of a data set, or from a Gaussian fitted to a data set's posterior means; a PNG
//! grid of the images and/or a `.npy` of the codes.
//!
//! A conditional model (trained with `--conditional`) draws from the prior for the classes
//! of `--class` (all its classes without it): one row of the grid per class, `--n` images
//! each, decoded with that class's one-hot label. The rows share their codes (column j of
//! every row decodes the same z), so they differ by their class alone.
//!
//! All draws are made on the host by [`HostRng::derive`]`(seed, `[`SAMPLE_STREAM`]`)`, in
//! this order for each code: (aggregate only) the index i, uniform over the inputs; then the D
//! standard normal ε of the code. The same run, flags and seed give the same codes, whatever
//! the adapter.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::decode::{self, MAX_CODES};
use crate::cli::open_context;
use crate::model::Vae;
use crate::rng::HostRng;
use crate::tool::encode::{encode_params_set, encode_set};

/// The host random stream of `sample` (ASCII "SAMPLE").
pub const SAMPLE_STREAM: u64 = 0x5341_4D50_4C45;

/// Where the codes come from.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The prior N(0, T²I)
    Prior,
    /// The aggregated posterior (1/M) Σᵢ q(z|xᵢ): a draw of q(z|xᵢ) with its noise scaled by
    /// T (z = μᵢ + T·σᵢ·ε for the diagonal family), i uniform
    Aggregate,
    /// A full-covariance Gaussian fitted to the posterior means: mean + T·L·ε
    Gaussian,
}

/// Flags of `wgvae sample`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    wgvae sample --run runs/mnist --n 64 --out-png samples.png\n  \
    wgvae sample --run runs/sprites --n 100 --temperature 0.7 --out-png s.png --out-npy z.npy\n  \
    wgvae sample --run runs/sprites --from aggregate --sprites 1000 --n 64 --out-png agg.png\n  \
    wgvae sample --run runs/mnist --from gaussian --images t10k-images-idx3-ubyte.gz \
    --n 64 --out-png g.png\n  \
    wgvae sample --run runs/cvae --class 0-9 --n 10 --out-png digits.png\n\n\
    --out-npy writes the codes used, (n, D) float32: `wgvae decode --latents` of it gives the \
    same images. Draws come from the host generator with the fixed stream 0x53414D504C45 \
    (\"SAMPLE\") of --seed: per code, the input index (aggregate) and then D normals.\n\n\
    A conditional model (train --conditional) draws one row per class of --class (every class \
    without it), --n images a row; every row decodes the same --n codes, so the rows differ by \
    their class alone. --out-npy then holds the codes row by row, (classes·n, D); `decode` \
    needs a class for every code (--class C, or --labels FILE with one label per code).")]
pub struct SampleArgs {
    /// Run directory holding checkpoint.safetensors
    #[arg(long)]
    pub run: PathBuf,
    /// Number of images (1..=65536; default 64); for a conditional model, images per class
    /// (default 10)
    #[arg(long, allow_negative_numbers = true)]
    pub n: Option<usize>,
    /// A conditional model: the classes to draw, one grid row each, e.g. `--class 3`,
    /// `--class 0 1 2`, `--class 0-9` or `--class 1,7` (default: every class)
    #[arg(long = "class", num_args = 1.., action = clap::ArgAction::Append)]
    pub class: Vec<super::anomaly::ClassSet>,
    /// Scale of the noise: T in N(0, T²I), μᵢ + T·σᵢ·ε or mean + T·L·ε (0 to 100)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Where the codes come from
    #[arg(long, value_enum, default_value_t = Source::Prior)]
    pub from: Source,
    /// --from aggregate|gaussian: image file (IDX, .gz or raw, or a .npy array of images)
    #[arg(long, conflicts_with = "sprites")]
    pub images: Option<PathBuf>,
    /// --from aggregate|gaussian: this many built-in sprites
    #[arg(long, allow_negative_numbers = true)]
    pub sprites: Option<usize>,
    /// --sprites: seed of the factor combinations
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub sprites_seed: u64,
    /// Output PNG grid of the images (ceil(sqrt(n)) columns)
    #[arg(long)]
    pub out_png: Option<PathBuf>,
    /// Output .npy of the codes, (n, D) float32
    #[arg(long)]
    pub out_npy: Option<PathBuf>,
    /// Seed of the draws
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Replace existing output files
    #[arg(long)]
    pub force: bool,
}

/// Diagonal jitter of the covariance before its Cholesky factor, relative to its mean
/// variance (raised tenfold while the factorisation fails).
const JITTER: f64 = 1e-6;

/// What `sample` drew.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    /// The codes, (n, D) row-major (for a conditional model, class by class).
    pub z: Vec<f32>,
    pub n: usize,
    /// A conditional model's class of each code.
    pub labels: Option<Vec<u32>>,
}

/// Draws the codes and writes the grid and/or the codes.
pub fn run(args: &SampleArgs) -> Result<Sampled> {
    if args.out_png.is_none() && args.out_npy.is_none() {
        bail!("give --out-png FILE and/or --out-npy FILE");
    }
    if let Some(n) = args.n
        && !(1..=MAX_CODES).contains(&n)
    {
        bail!("--n {n}: must be between 1 and {MAX_CODES}");
    }
    let t = args.temperature;
    if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
        bail!("--temperature {t}: must be between 0 and 100");
    }
    let has_input = args.images.is_some() || args.sprites.is_some();
    match (args.from, has_input) {
        (Source::Prior, true) => bail!("--images/--sprites: only for --from aggregate|gaussian"),
        (Source::Aggregate | Source::Gaussian, false) => {
            let name = if args.from == Source::Aggregate {
                "aggregate"
            } else {
                "gaussian"
            };
            bail!("--from {name}: give --images FILE or --sprites N")
        }
        _ => {}
    }
    if let Some(p) = &args.out_png {
        decode::prepare_file(p, "--out-png", args.force)?;
    }
    if let Some(p) = &args.out_npy {
        decode::prepare_file(p, "--out-npy", args.force)?;
    }
    if args.out_png.is_some() && args.out_png == args.out_npy {
        bail!("--out-png and --out-npy name the same file");
    }
    let (ck, set) = if has_input {
        let input = super::RunInput {
            run: args.run.clone(),
            images: args.images.clone(),
            sprites: args.sprites,
            sprites_seed: args.sprites_seed,
        };
        let (ck, set) = input.load()?;
        (ck, Some(set))
    } else {
        (decode::load_checkpoint(&args.run)?.0, None)
    };
    let d = ck.model.latent;
    // A conditional model: the class of each code, `per_class` codes a class in a row.
    let labels: Option<(Vec<u32>, usize)> = match ck.model.classes {
        Some(classes) => {
            if args.from != Source::Prior {
                bail!(
                    "--from {}: the run in {} is a conditional model; encoding needs the images' \
                     labels, which `sample` does not read: use --from prior with --class",
                    if args.from == Source::Aggregate {
                        "aggregate"
                    } else {
                        "gaussian"
                    },
                    args.run.display()
                );
            }
            let wanted = chosen_classes(&args.class, classes, &args.run)?;
            let per_class = args.n.unwrap_or(10);
            let total = per_class.saturating_mul(wanted.len());
            if total > MAX_CODES {
                bail!(
                    "--n {per_class} for {} classes: {total} images, more than {MAX_CODES}",
                    wanted.len()
                );
            }
            let l = wanted
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c as u32, per_class))
                .collect();
            Some((l, per_class))
        }
        None => {
            if !args.class.is_empty() {
                bail!(
                    "--class: the run in {} is not a conditional model (it was trained without \
                     --conditional)",
                    args.run.display()
                );
            }
            None
        }
    };
    let n = match &labels {
        Some((l, _)) => l.len(),
        None => args.n.unwrap_or(64),
    };
    let len = n
        .checked_mul(d)
        .filter(|&l| l <= isize::MAX as usize / 8)
        .with_context(|| format!("--n {n}: {n} codes of size {d} do not fit in memory"))?;
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let mut rng = HostRng::derive(args.seed, SAMPLE_STREAM);
    let mut z = Vec::with_capacity(len);
    match (args.from, &set) {
        (Source::Aggregate, Some(set)) => {
            // Each code is a draw of q(z|xᵢ) of the model's own family (a full covariance's
            // correlations, a flow's shape), its base noise scaled by T.
            let q = encode_params_set(&ctx, &vae, set)?;
            let p = vae.posterior.param_dim();
            let mut eps = vec![0.0f64; d];
            for _ in 0..n {
                let i = rng.below(set.n as u64) as usize;
                let row: Vec<f64> = q[i * p..(i + 1) * p].iter().map(|&v| v as f64).collect();
                eps.iter_mut().for_each(|e| *e = t * rng.normal());
                z.extend(
                    vae.posterior
                        .cpu_sample(&row, &eps, 1, 1)
                        .into_iter()
                        .map(|v| v as f32),
                );
            }
        }
        (Source::Gaussian, Some(set)) => {
            let (mu, _, _) = encode_set(&ctx, &vae, set, 0)?;
            let (mean, l) = fit_gaussian(&mu, d)?;
            let mut eps = vec![0.0f64; d];
            for _ in 0..n {
                eps.iter_mut().for_each(|e| *e = rng.normal());
                for r in 0..d {
                    let v: f64 = (0..=r).map(|c| l[r * d + c] * eps[c]).sum();
                    z.push((mean[r] + t * v) as f32);
                }
            }
        }
        _ => match &labels {
            // The same `per_class` codes for every class: column j of each row decodes one z,
            // so the rows differ by their class alone.
            Some((l, per_class)) => {
                let shared: Vec<f32> = (0..*per_class * d)
                    .map(|_| (t * rng.normal()) as f32)
                    .collect();
                for _ in 0..l.len() / (*per_class).max(1) {
                    z.extend_from_slice(&shared);
                }
            }
            None => {
                for _ in 0..len {
                    z.push((t * rng.normal()) as f32);
                }
            }
        },
    }
    if let Some(p) = &args.out_png {
        match &labels {
            Some((l, per_class)) => {
                let images = decode_with_labels(&ctx, &vae, &z, l)?;
                decode::create_parent(p)?;
                crate::image::save_grid_png_chw(
                    p,
                    &images,
                    n,
                    decode::image_shape(&vae),
                    *per_class,
                    2,
                    decode::png_scale(&vae),
                )
                .with_context(|| format!("writing {}", p.display()))?;
            }
            None => {
                let images = decode::decode_latents(&ctx, &vae, &z)?;
                decode::save_grid(p, &vae, &images, n)?;
            }
        }
    }
    if let Some(p) = &args.out_npy {
        decode::create_parent(p)?;
        crate::data::npy::write_npy_f32(p, &[n, d], &z)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(Sampled {
        z,
        n,
        labels: labels.map(|(l, _)| l),
    })
}

/// The classes of `--class` in the order given (each once), or all `classes` without it;
/// errors name a class the model in `run` does not know.
pub fn chosen_classes(
    given: &[super::anomaly::ClassSet],
    classes: usize,
    run: &std::path::Path,
) -> Result<Vec<usize>> {
    if given.is_empty() {
        return Ok((0..classes).collect());
    }
    let mut out: Vec<usize> = Vec::new();
    for &c in given.iter().flat_map(|s| s.0.iter()) {
        let c = c as usize;
        if c >= classes {
            bail!(
                "--class {c}: the conditional model in {} knows classes 0 to {}",
                run.display(),
                classes - 1
            );
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The images of `z` ((n, D) row-major) decoded with class `labels[i]` for code i, in GPU
/// batches of up to 256.
pub fn decode_with_labels(
    ctx: &crate::gpu::GpuContext,
    vae: &Vae,
    z: &[f32],
    labels: &[u32],
) -> Result<Vec<f32>> {
    let d = vae.cfg.latent.max(1);
    let n = z.len() / d;
    if n == 0 || labels.len() != n {
        bail!("decode: {n} codes and {} labels", labels.len());
    }
    let inf = crate::viz::Inference::new(ctx, vae, n.min(256), 0)?;
    let mut out = Vec::with_capacity(n.saturating_mul(vae.cfg.input_dim()));
    for (chunk, l) in z.chunks(inf.batch() * d).zip(labels.chunks(inf.batch())) {
        inf.set_labels(ctx, vae, l)?;
        out.extend(inf.decode(ctx, vae, chunk)?);
    }
    Ok(out)
}

/// Mean and lower Cholesky factor L (D×D row-major, L·Lᵀ = Σ + jitter·I) of the rows of `mu`
/// ((m, D)): Σ the sample covariance (divisor m − 1; zero for one row).
pub fn fit_gaussian(mu: &[f32], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let m = mu.len() / d.max(1);
    if m == 0 {
        bail!("fit_gaussian: no codes");
    }
    let mut mean = vec![0.0f64; d];
    for row in mu.chunks_exact(d) {
        for (a, &v) in mean.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    mean.iter_mut().for_each(|a| *a /= m as f64);
    let mut cov = vec![0.0f64; d * d];
    for row in mu.chunks_exact(d) {
        for r in 0..d {
            let x = row[r] as f64 - mean[r];
            for c in 0..=r {
                cov[r * d + c] += x * (row[c] as f64 - mean[c]);
            }
        }
    }
    let div = (m.max(2) - 1) as f64;
    for r in 0..d {
        for c in 0..=r {
            cov[r * d + c] /= div;
            cov[c * d + r] = cov[r * d + c];
        }
    }
    let scale = ((0..d).map(|k| cov[k * d + k]).sum::<f64>() / d as f64).max(1e-12);
    let mut jitter = JITTER * scale;
    for _ in 0..8 {
        let mut a = cov.clone();
        (0..d).for_each(|k| a[k * d + k] += jitter);
        if let Some(l) = crate::linalg::cholesky(&a, d) {
            return Ok((mean, l));
        }
        jitter *= 10.0;
    }
    bail!("the covariance of the posterior means is not positive definite (even with jitter)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L·Lᵀ gives back the sample covariance (up to the jitter) on correlated codes.
    #[test]
    fn fitted_gaussian_factor_reproduces_covariance() {
        let mut rng = HostRng::new(3);
        let d = 3;
        let mut mu = Vec::new();
        for _ in 0..500 {
            let (a, b, c) = (rng.normal(), rng.normal(), rng.normal());
            mu.extend([1.0 + a, -2.0 + 0.5 * a + b, 0.3 * c - a].map(|v| v as f32));
        }
        let (mean, l) = fit_gaussian(&mu, d).unwrap();
        assert!((mean[0] - 1.0).abs() < 0.2 && (mean[1] + 2.0).abs() < 0.2);
        let want = [[1.0, 0.5, -1.0], [0.5, 1.25, -0.5], [-1.0, -0.5, 1.09]];
        for r in 0..d {
            for c in 0..d {
                let got: f64 = (0..d).map(|k| l[r * d + k] * l[c * d + k]).sum();
                assert!(
                    (got - want[r][c]).abs() < 0.2,
                    "Σ[{r}][{c}] {got} vs {}",
                    want[r][c]
                );
            }
            for c in r + 1..d {
                assert_eq!(l[r * d + c], 0.0);
            }
        }
    }

    /// One code (zero covariance) still factors, through the jitter.
    #[test]
    fn single_code_uses_jitter() {
        let (mean, l) = fit_gaussian(&[0.5, -1.0], 2).unwrap();
        assert_eq!(mean, vec![0.5, -1.0]);
        assert!(l[0] > 0.0 && l[0] < 1e-3 && l[3] > 0.0 && l[3] < 1e-3);
    }
}
