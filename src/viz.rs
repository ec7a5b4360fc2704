//! Pictures of a model: reconstructions, samples from the prior, latent traversals and a
//! spherical interpolation, written as PNG grids.

use std::path::Path;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::image::{ImageShape, save_grid_png_chw, save_rows_png_chw};
use crate::latent::slerp;
use crate::model::{Activations, Likelihood, Posterior, Vae};
use crate::ops::data::StepState;
use crate::ops::reparam::{RngStep, Stream};

/// Encodes and decodes through prepared programs with a fixed batch of latents.
pub struct Inference {
    pub act: Activations,
    encode: Program,
    decode: Program,
    sample: Program,
    /// draws z from q(z|x) of the encoded batch, noise from `draw_state`'s step
    draw: Program,
    draw_state: StepState,
    /// Whether class labels were given (a conditional model encodes and decodes only then).
    labelled: std::cell::Cell<bool>,
}

impl Inference {
    pub fn new(ctx: &GpuContext, vae: &Vae, batch: usize, seed: u64) -> Result<Self> {
        let act = vae.activations(ctx, batch, 1)?;
        let encode = vae.encode_program(ctx, &act)?;
        let decode = vae.decode_program(ctx, &act)?;
        // Prior samples: the diagonal reparameterization on mu = 0, log sigma^2 = 0, whatever
        // the model's family (z = ε, the draw every family makes from its prior parameters).
        let latent = vae.cfg.latent;
        let prior_q = Tensor::zeros(ctx, "prior params", &[batch, 2 * latent])?;
        let mut sample = Program::new();
        sample.extend(crate::model::Diagonal { latent }.sample(
            ctx,
            &prior_q,
            &act.z,
            &act.eps,
            1,
            seed,
            RngStep::Fixed(0),
            Stream::Prior,
        )?);
        // Posterior draws: the evaluation stream, a new step (so new noise) per batch.
        let draw_state = StepState::new(ctx, "draw step")?;
        let draw = vae.posterior.sample(
            ctx,
            act.posterior_params(),
            &act.z,
            &act.eps,
            1,
            seed,
            RngStep::State(&draw_state),
            Stream::Eval,
        )?;
        Ok(Inference {
            act,
            encode,
            decode,
            sample,
            draw,
            draw_state,
            labelled: std::cell::Cell::new(false),
        })
    }

    /// The class labels of the next encodes and decodes of a conditional model: one per row
    /// of the batch (fewer: the rest get class 0), each below the model's classes.
    pub fn set_labels(&self, ctx: &GpuContext, vae: &Vae, labels: &[u32]) -> Result<()> {
        let classes = vae.condition.map_or(0, |c| c.classes);
        self.act.set_labels(ctx, labels, classes)?;
        self.labelled.set(true);
        Ok(())
    }

    /// Refuses a conditional model's encode or decode before [`Inference::set_labels`].
    fn check_labels(&self, vae: &Vae, what: &str) -> Result<()> {
        if let Some(c) = vae.condition
            && !self.labelled.get()
        {
            return Err(Error::Config(format!(
                "this is a conditional model ({} classes): {what} needs the class of every \
                 image or code; give --labels FILE (one label per input or code) or, to decode, \
                 --class C (`wgvae sample --class` draws a conditional model's classes)",
                c.classes
            )));
        }
        Ok(())
    }

    pub fn batch(&self) -> usize {
        self.act.batch
    }

    /// Posterior means and standard deviations of up to `batch` images ([0,1] pixels, (n, P)).
    pub fn encode(
        &self,
        ctx: &GpuContext,
        vae: &Vae,
        images: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let q = self.encode_params(ctx, vae, images)?;
        let n = q.len() / vae.posterior.param_dim().max(1);
        Ok((vae.posterior.location(&q, n), vae.posterior.scale(&q, n)))
    }

    /// The posterior's parameters (n, param_dim) of up to `batch` images (n, P): what
    /// [`crate::model::Posterior::cpu_sample`] draws from, for any family.
    pub fn encode_params(&self, ctx: &GpuContext, vae: &Vae, images: &[f32]) -> Result<Vec<f32>> {
        self.check_labels(vae, "encoding")?;
        let n = self.fill_x(ctx, images)?;
        self.encode.run(ctx)?;
        let mut q = self.act.posterior_params().read(ctx)?;
        q.truncate(n * vae.posterior.param_dim());
        Ok(q)
    }

    /// Like [`Inference::encode`], and also one draw z ~ q(z|x) per image (n, D); `step`
    /// picks the noise (the same step and seed give the same draws), so that each batch of a
    /// larger set gets its own.
    pub fn encode_draw(
        &self,
        ctx: &GpuContext,
        vae: &Vae,
        images: &[f32],
        step: u32,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (mu, sigma) = self.encode(ctx, vae, images)?;
        self.draw_state.set(ctx, step, 0)?;
        self.draw.run(ctx)?;
        let n = mu.len() / vae.cfg.latent.max(1);
        let mut z = self.act.z.read(ctx)?;
        z.truncate(n * vae.cfg.latent);
        Ok((mu, sigma, z))
    }

    /// Decoded images (mean of p(x|z) in [0, 1]) of up to `batch` latents (n, D).
    pub fn decode(&self, ctx: &GpuContext, vae: &Vae, z: &[f32]) -> Result<Vec<f32>> {
        self.check_labels(vae, "decoding")?;
        let d = vae.cfg.latent;
        let n = z.len() / d;
        if n > self.batch() || !z.len().is_multiple_of(d) {
            return Err(Error::Config(format!(
                "decode: {} values are not up to {} latents of size {d}",
                z.len(),
                self.batch()
            )));
        }
        let mut full = vec![0.0f32; self.batch() * d];
        full[..z.len()].copy_from_slice(z);
        self.act.z.write(ctx, &full)?;
        self.decode.run(ctx)?;
        self.read_images(ctx, vae, n)
    }

    /// `n` images decoded from z ~ N(0, I) drawn in-shader.
    pub fn sample_prior(&self, ctx: &GpuContext, vae: &Vae, n: usize) -> Result<Vec<f32>> {
        self.check_labels(vae, "sampling")?;
        self.sample.run(ctx)?;
        self.decode.run(ctx)?;
        self.read_images(ctx, vae, n.min(self.batch()))
    }

    fn read_images(&self, ctx: &GpuContext, vae: &Vae, n: usize) -> Result<Vec<f32>> {
        let p = vae.cfg.input_dim();
        let out = self.act.output().read(ctx)?;
        Ok(out[..n * p]
            .iter()
            .map(|&v| match vae.cfg.likelihood {
                Likelihood::Bernoulli => 1.0 / (1.0 + (-v).exp()),
                Likelihood::Gaussian { .. } => v.clamp(0.0, 1.0),
            })
            .collect())
    }

    fn fill_x(&self, ctx: &GpuContext, images: &[f32]) -> Result<usize> {
        let p = self.act.x.dims2().1;
        let n = images.len() / p;
        if n > self.batch() || !images.len().is_multiple_of(p) {
            return Err(Error::Config(format!(
                "encode: {} values are not up to {} images of {p} pixels",
                images.len(),
                self.batch()
            )));
        }
        let mut full = vec![0.0f32; self.batch() * p];
        full[..images.len()].copy_from_slice(images);
        self.act.x.write(ctx, &full)?;
        Ok(n)
    }
}

/// Most dimensions a traversal grid shows.
pub const MAX_TRAVERSED: usize = 32;

/// Latent dimensions by decreasing mean KL(q(z_d|x) || N(0, 1)) over the rows of `mu` and
/// `sigma` ((n, d) each): `(dimension, KL in nats)`, at most [`MAX_TRAVERSED`].
pub fn dims_by_kl(mu: &[f32], sigma: &[f32], d: usize) -> Vec<(usize, f64)> {
    let n = (mu.len() / d.max(1)).max(1);
    let mut kl: Vec<(usize, f64)> = (0..d)
        .map(|k| {
            let s: f64 = (0..mu.len() / d.max(1))
                .map(|i| {
                    let (m, sg) = (mu[i * d + k] as f64, (sigma[i * d + k] as f64).max(1e-30));
                    0.5 * (m * m + sg * sg - 1.0) - sg.ln()
                })
                .sum();
            (k, s / n as f64)
        })
        .collect();
    kl.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    kl.truncate(MAX_TRAVERSED);
    kl
}

/// One row of `steps` decoded images per dimension of `dims`, that dimension swept over
/// [−3, 3] with the others at `base` (D,).
pub fn traversal_rows(
    ctx: &GpuContext,
    vae: &Vae,
    inf: &Inference,
    base: &[f32],
    dims: &[(usize, f64)],
    steps: usize,
) -> Result<Vec<Vec<f32>>> {
    let d = vae.cfg.latent;
    let mut rows = Vec::with_capacity(dims.len());
    for &(k, _) in dims {
        let mut out = Vec::new();
        // Decode in chunks of the inference batch.
        let zs: Vec<Vec<f32>> = (0..steps)
            .map(|s| {
                let mut z = base[..d].to_vec();
                z[k] = -3.0 + 6.0 * s as f32 / (steps.max(2) - 1) as f32;
                z
            })
            .collect();
        for chunk in zs.chunks(inf.batch()) {
            out.extend(inf.decode(ctx, vae, &chunk.concat())?);
        }
        rows.push(out);
    }
    Ok(rows)
}

/// Writes `reconstructions.png`, `samples.png`, `traversals.png` and `interpolation.png`
/// into `dir` for a model and its test images.
pub fn save_run_pictures(
    ctx: &GpuContext,
    vae: &Vae,
    test: &Dataset,
    dir: &Path,
    seed: u64,
) -> Result<()> {
    let (h, w) = (vae.cfg.height, vae.cfg.width);
    let shape = ImageShape {
        channels: vae.cfg.channels,
        height: h,
        width: w,
    };
    let d = vae.cfg.latent;
    let scale = if h <= 32 { 2 } else { 1 };
    let inf = Inference::new(ctx, vae, 64, seed)?;
    // A conditional model draws with the test images' labels (first image's label for the
    // traversals and the interpolation) and samples a row of 8 per class.
    let labels: Option<Vec<u32>> = match (&vae.condition, &test.labels) {
        (Some(_), Some(l)) => Some(l.iter().take(64).map(|&v| v as u32).collect()),
        (Some(c), None) => {
            return Err(Error::Config(format!(
                "this is a conditional model ({} classes): its pictures need the labels of `{}`",
                c.classes, test.name
            )));
        }
        _ => None,
    };
    let set_first = |n: usize| -> Result<()> {
        match &labels {
            Some(l) => inf.set_labels(ctx, vae, &l[..n.min(l.len())]),
            None => Ok(()),
        }
    };
    let n_rec = test.n.min(16);
    let inputs: Vec<f32> = (0..n_rec).flat_map(|i| test.to_f32(i)).collect();
    set_first(n_rec)?;
    let (mu, _) = inf.encode(ctx, vae, &inputs)?;
    let recon = inf.decode(ctx, vae, &mu)?;
    save_rows_png_chw(
        &dir.join("reconstructions.png"),
        &[inputs, recon],
        shape,
        2,
        scale,
    )?;

    match vae.condition {
        Some(c) => {
            let mut samples = Vec::new();
            for class in 0..c.classes.min(MAX_TRAVERSED) {
                inf.set_labels(ctx, vae, &[class as u32; 64])?;
                samples.extend(inf.sample_prior(ctx, vae, 8)?);
            }
            let n = samples.len() / (shape.channels * h * w).max(1);
            save_grid_png_chw(&dir.join("samples.png"), &samples, n, shape, 8, 2, scale)?;
        }
        None => {
            let samples = inf.sample_prior(ctx, vae, 64)?;
            save_grid_png_chw(&dir.join("samples.png"), &samples, 64, shape, 8, 2, scale)?;
        }
    }

    // Traversals of every dimension (at most MAX_TRAVERSED), by decreasing KL, around the first
    // test image's posterior mean.
    let n_enc = test.n.min(64);
    let enc_in: Vec<f32> = (0..n_enc).flat_map(|i| test.to_f32(i)).collect();
    set_first(n_enc)?;
    let (mus, sigmas) = inf.encode(ctx, vae, &enc_in)?;
    if let Some(l) = &labels {
        inf.set_labels(ctx, vae, &[l[0]; 64])?;
    }
    let order = dims_by_kl(&mus, &sigmas, d);
    let rows = traversal_rows(ctx, vae, &inf, &mus[..d], &order, 9)?;
    save_rows_png_chw(&dir.join("traversals.png"), &rows, shape, 2, scale)?;

    // Spherical interpolation between two test images' posterior means, inputs at the ends.
    if test.n >= 2 {
        let (a, b) = (&mus[..d], &mus[d..2 * d]);
        let steps = 8;
        let mut zs = Vec::new();
        for s in 0..steps {
            zs.extend(slerp(a, b, s as f32 / (steps - 1) as f32));
        }
        let mut row = test.to_f32(0);
        row.extend(inf.decode(ctx, vae, &zs)?);
        row.extend(test.to_f32(1));
        save_grid_png_chw(
            &dir.join("interpolation.png"),
            &row,
            steps + 2,
            shape,
            steps + 2,
            2,
            scale,
        )?;
    }
    Ok(())
}
