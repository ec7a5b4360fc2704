//! Evaluation on a data set: −ELBO with its reconstruction and KL parts, the IWAE bound with
//! k importance samples (log-mean-exp over k on the GPU), KL per latent dimension and the
//! number of active units.

use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Staging, Tensor};
use crate::model::{Activations, Posterior, Vae, VaeConfig};
use crate::ops::condition::gather_labels;
use crate::ops::data::{StepState, gather};
use crate::ops::reduce::logmeanexp;
use crate::ops::reparam::{RngStep, Stream};

/// Figures of one evaluation, in nats per sample.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub n: usize,
    /// −ELBO = recon + KL (β = 1: the bound on −log p(x)).
    pub neg_elbo: f64,
    pub recon: f64,
    pub kl: f64,
    /// −IWAE bound with k samples, when asked.
    pub iwae_k: Option<usize>,
    pub neg_iwae: Option<f64>,
    /// Mean KL per latent dimension.
    pub kl_per_dim: Vec<f64>,
    /// Cov_x(E_q[z_d]) per dimension.
    pub mean_variance: Vec<f64>,
    /// Dimensions with Cov_x(E_q[z_d]) > 0.01.
    pub active_units: usize,
    /// How well each ground-truth factor can be read from the means (data sets with factors;
    /// see [`crate::probe`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::probe::ProbeReport>,
}

/// Bytes the activations of one IWAE batch (its K·E decoder rows and the rest) may take;
/// [`iwae_images_per_batch`] sizes E by it.
pub const IWAE_MEMORY_BUDGET: u64 = 256 << 20;

/// Most rows a GEMM takes (65,535 workgroup rows of 8 rows each): K·E must stay below it.
const MAX_GEMM_ROWS: u64 = 65_535 * 8;

/// Images per IWAE batch for `k` samples each: the largest E ≤ `max_images` whose
/// activations (the K·E-row decoder outputs, z, ε, the log-weights, and the E-row encoder
/// outputs) take at most `budget` bytes, whose largest single tensor fits `max_buffer` bytes,
/// and whose K·E rows fit one GEMM; at least 1. Errors, naming `--iwae-k`, when even one
/// image's tensors exceed `max_buffer` or the GEMM's rows; all sizes use checked arithmetic.
pub fn iwae_images_per_batch(
    cfg: &VaeConfig,
    k: usize,
    max_images: usize,
    budget: u64,
    max_buffer: u64,
) -> Result<usize> {
    let too_big = |what: &str| {
        Error::Config(format!(
            "--iwae-k {k}: {what} of one image overflows 64-bit arithmetic; lower --iwae-k"
        ))
    };
    let k64 = k as u64;
    if k == 0 {
        return Err(Error::Config(
            "--iwae-k must be at least 1 for the IWAE bound".into(),
        ));
    }
    let (enc, dec) = cfg.networks().map_err(Error::Config)?;
    let pixels = cfg
        .input_dim_checked()
        .ok_or_else(|| too_big("the pixel count"))? as u64;
    let latent = cfg.latent as u64;
    // Floats per image of every activation tensor: (floats, whether it has K rows per image).
    let mut tensors: Vec<(u64, bool)> = vec![(pixels, false), (1, false), (latent, false)];
    tensors.extend(enc.modules.iter().map(|m| (m.out_features() as u64, false)));
    tensors.extend(dec.modules.iter().map(|m| (m.out_features() as u64, true)));
    // z, ε, nll, log w; the bound.
    tensors.extend([
        (latent, true),
        (latent, true),
        (1, true),
        (1, true),
        (1, false),
    ]);
    let mut per_image = 0u64;
    let mut widest = 0u64;
    for (floats, per_sample) in tensors {
        let f = if per_sample {
            floats
                .checked_mul(k64)
                .ok_or_else(|| too_big("an activation"))?
        } else {
            floats
        };
        let bytes = f.checked_mul(4).ok_or_else(|| too_big("an activation"))?;
        per_image = per_image
            .checked_add(bytes)
            .ok_or_else(|| too_big("the activations"))?;
        widest = widest.max(bytes);
    }
    let by_buffer = max_buffer / widest.max(1);
    if by_buffer == 0 {
        return Err(Error::Config(format!(
            "--iwae-k {k}: one image's {k} samples need a {widest}-byte activation, more than \
             the {max_buffer} bytes one buffer may hold on this adapter; lower --iwae-k"
        )));
    }
    let by_rows = MAX_GEMM_ROWS / k64;
    if by_rows == 0 {
        return Err(Error::Config(format!(
            "--iwae-k {k}: more samples than the {MAX_GEMM_ROWS} rows one GEMM takes; lower --iwae-k"
        )));
    }
    let by_budget = (budget / per_image.max(1)).max(1);
    let e = by_budget
        .min(by_buffer)
        .min(by_rows)
        .min(max_images.max(1) as u64);
    Ok(e as usize)
}

/// Where each output of a batch lands in one staging buffer: the outputs are copied there in
/// the batch's own command encoder, so a batch is one submit and one map.
struct Readback {
    staging: Staging,
    /// Byte offsets in `staging` of each tensor copied, in order.
    offsets: Vec<u64>,
    bytes: u64,
}

impl Readback {
    fn new(ctx: &GpuContext, tensors: &[&Tensor<f32>]) -> Result<Self> {
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut bytes = 0u64;
        for t in tensors {
            offsets.push(bytes);
            let len = (t.len() as u64)
                .checked_mul(4)
                .ok_or_else(|| Error::Config(format!("{}: too large to read back", t.label())))?;
            bytes = bytes
                .checked_add(len)
                .ok_or_else(|| Error::Config("evaluation outputs too large to read back".into()))?;
        }
        Ok(Readback {
            staging: Staging::new(ctx, bytes)?,
            offsets,
            bytes,
        })
    }

    /// Sets the batch position, records `program` and the copies of `tensors` (in the order
    /// given to [`Readback::new`]) into one encoder, submits, waits and returns each tensor's
    /// values.
    fn run(
        &self,
        ctx: &GpuContext,
        state: &StepState,
        bi: usize,
        program: &Program,
        tensors: &[&Tensor<f32>],
    ) -> Result<Vec<Vec<f32>>> {
        let step = u32::try_from(bi)
            .map_err(|_| Error::Config(format!("evaluation batch {bi} exceeds 32 bits")))?;
        state.set(ctx, step, 0)?;
        let mut enc = ctx.encoder("evaluation batch");
        program.record(&mut enc, "evaluation batch");
        for (t, &off) in tensors.iter().zip(&self.offsets) {
            enc.copy_buffer_to_buffer(
                t.buffer(),
                t.offset(),
                self.staging.buffer(),
                off,
                t.len() as u64 * 4,
            );
        }
        ctx.submit("evaluating a batch", enc)?;
        let raw = self.staging.map_and_copy(ctx, self.bytes)?;
        Ok(tensors
            .iter()
            .zip(&self.offsets)
            .map(|(t, &off)| {
                let start = off as usize;
                raw[start..start + t.len() * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .collect())
    }
}

struct IwaeRun {
    k: usize,
    act: Activations,
    program: Program,
    bound: Tensor<f32>,
    readback: Readback,
}

/// Prepared evaluation of one data set for one model: the data set lives on the GPU, and the
/// programs and staging buffers are built once; each batch is one submit and one map.
pub struct Evaluator {
    pub n: usize,
    pub batch: usize,
    /// The data set, resident on the GPU as bytes (N, P).
    pub images: Tensor<u8>,
    state: StepState,
    act: Activations,
    program: Program,
    readback: Readback,
    iwae: Option<IwaeRun>,
    posterior: std::sync::Arc<dyn Posterior>,
}

impl Evaluator {
    /// `iwae_k` = 0 skips the IWAE bound. `seed` fixes the noise of the estimates. The IWAE
    /// pass takes as many images per batch as fit [`IWAE_MEMORY_BUDGET`] and the adapter's
    /// buffer limits (see [`iwae_images_per_batch`]), at most `batch`.
    pub fn new(
        ctx: &GpuContext,
        vae: &Vae,
        data: &Dataset,
        batch: usize,
        iwae_k: usize,
        seed: u64,
    ) -> Result<Self> {
        let pixels = vae.cfg.input_dim();
        if data.image_len() != pixels {
            return Err(Error::Config(format!(
                "data set `{}` has {}x{} images, the model takes {}x{}",
                data.name, data.height, data.width, vae.cfg.height, vae.cfg.width
            )));
        }
        if data.n == 0 {
            return Err(Error::Config(format!("data set `{}` is empty", data.name)));
        }
        let n32 = u32::try_from(data.n).map_err(|_| {
            Error::Config(format!(
                "data set `{}` has {} images, more than 2^32",
                data.name, data.n
            ))
        })?;
        let batch = batch.min(data.n).max(1);
        let images = Tensor::from_slice(ctx, "eval images", &[data.n, pixels], &data.pixels)?;
        let order: Vec<u32> = (0..n32).collect();
        let perm = Tensor::from_slice(ctx, "eval order", &[data.n], &order)?;
        let state = StepState::new(ctx, "eval batch")?;
        let labels = eval_labels(ctx, vae, data)?;
        let act = vae.activations(ctx, batch, 1)?;
        let mut program = Program::new();
        program.push(gather(
            ctx,
            "eval gather",
            &images,
            pixels,
            &perm,
            &act.x,
            0,
            Some(&state),
        )?);
        if let (Some(l), Some(out)) = (&labels, &act.labels) {
            program.push(gather_labels(
                ctx,
                "eval label gather",
                l,
                &perm,
                out,
                0,
                Some(&state),
            )?);
        }
        program.extend(vae.forward_program(
            ctx,
            &act,
            None,
            1.0,
            seed,
            RngStep::State(&state),
            Stream::Eval,
        )?);
        let readback = Readback::new(ctx, &elbo_outputs(&act))?;
        let iwae = if iwae_k > 0 {
            let limits = ctx.device.limits();
            let max_buffer = limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size);
            let eb =
                iwae_images_per_batch(&vae.cfg, iwae_k, batch, IWAE_MEMORY_BUDGET, max_buffer)?;
            let iact = vae.activations(ctx, eb, iwae_k)?;
            let logw = Tensor::zeros(ctx, "log w", &[iwae_k, eb])?;
            let bound = Tensor::zeros(ctx, "iwae bound", &[eb])?;
            let mut p = Program::new();
            p.push(gather(
                ctx,
                "iwae gather",
                &images,
                pixels,
                &perm,
                &iact.x,
                0,
                Some(&state),
            )?);
            if let (Some(l), Some(out)) = (&labels, &iact.labels) {
                p.push(gather_labels(
                    ctx,
                    "iwae label gather",
                    l,
                    &perm,
                    out,
                    0,
                    Some(&state),
                )?);
            }
            p.extend(vae.forward_program(
                ctx,
                &iact,
                None,
                1.0,
                seed ^ 0x1a2e,
                RngStep::State(&state),
                Stream::Eval,
            )?);
            p.extend(vae.posterior.log_weights(
                ctx,
                iact.posterior_params(),
                &iact.nll,
                &iact.z,
                &iact.eps,
                &logw,
                iwae_k,
            )?);
            p.push(logmeanexp(ctx, "iwae", &logw, &bound, 1.0, false)?);
            let readback = Readback::new(ctx, &[&bound])?;
            Some(IwaeRun {
                k: iwae_k,
                act: iact,
                program: p,
                bound,
                readback,
            })
        } else {
            None
        };
        Ok(Evaluator {
            n: data.n,
            batch,
            images,
            state,
            act,
            program,
            readback,
            iwae,
            posterior: vae.posterior.clone(),
        })
    }

    /// Images per IWAE batch (`None` when built with k = 0). IWAE batch `bi` holds images
    /// `bi·E .. min((bi + 1)·E, n)`.
    pub fn iwae_batch_images(&self) -> Option<usize> {
        self.iwae.as_ref().map(|iw| iw.act.batch)
    }

    /// Runs IWAE batch `bi` and returns the bound log p̂(x) of each of its images (nats, one
    /// per image, the padding rows of a last partial batch left out).
    pub fn iwae_batch(&self, ctx: &GpuContext, bi: usize) -> Result<Vec<f32>> {
        let iw = self.iwae.as_ref().ok_or_else(|| {
            Error::Config("this evaluator was built without the IWAE bound (k = 0)".into())
        })?;
        let eb = iw.act.batch;
        if bi >= self.n.div_ceil(eb) {
            return Err(Error::Config(format!(
                "IWAE batch {bi} is past the {} images of the data set",
                self.n
            )));
        }
        let valid = (self.n - bi * eb).min(eb);
        let mut out = iw
            .readback
            .run(ctx, &self.state, bi, &iw.program, &[&iw.bound])?;
        let mut b = out.pop().unwrap_or_default();
        b.truncate(valid);
        Ok(b)
    }

    /// The standard normal draws (K·E, D) behind the last IWAE batch run, sample k of image
    /// b in row k·E + b (for checking the estimate against [`crate::cpu::iwae`]).
    pub fn iwae_eps(&self) -> Option<&Tensor<f32>> {
        self.iwae.as_ref().map(|iw| &iw.act.eps)
    }

    /// Per-image figures in nats, in data-set order: −ELBO (recon + KL, β = 1) of every image
    /// and, with `with_iwae` (an evaluator built with k > 0), the −IWAE bound −log p̂(x).
    /// Batched as [`Evaluator::run`]: one submit and one readback per batch.
    pub fn per_image(
        &self,
        ctx: &GpuContext,
        with_iwae: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let mut neg_elbo = Vec::with_capacity(self.n);
        let outputs = [&self.act.nll, &self.act.kl];
        for bi in 0..self.n.div_ceil(self.batch) {
            let got = self
                .readback
                .run(ctx, &self.state, bi, &self.program, &outputs)?;
            let [nll, kl] = &got[..] else {
                return Err(Error::Readback(
                    "an evaluation batch returned the wrong number of outputs".into(),
                ));
            };
            let valid = (self.n - bi * self.batch).min(self.batch);
            neg_elbo.extend((0..valid).map(|r| nll[r] + kl[r]));
        }
        let neg_iwae = match self.iwae.as_ref().filter(|_| with_iwae) {
            Some(iw) => {
                let mut v = Vec::with_capacity(self.n);
                for bi in 0..self.n.div_ceil(iw.act.batch) {
                    v.extend(self.iwae_batch(ctx, bi)?.iter().map(|&b| -b));
                }
                Some(v)
            }
            None => None,
        };
        Ok((neg_elbo, neg_iwae))
    }

    /// Runs the evaluation over the whole data set (with the IWAE bound when this evaluator
    /// was built with k > 0).
    pub fn run(&self, ctx: &GpuContext, latent: usize) -> Result<EvalReport> {
        self.run_with(ctx, latent, true)
    }

    /// Like [`Evaluator::run`]; `with_iwae = false` skips the (costlier) IWAE pass.
    pub fn run_with(&self, ctx: &GpuContext, latent: usize, with_iwae: bool) -> Result<EvalReport> {
        self.run_collect(ctx, latent, with_iwae, None)
    }

    /// Like [`Evaluator::run_with`]; with `means`, also collects the posterior means μ of every
    /// image, `(n, latent)` row-major.
    pub fn run_collect(
        &self,
        ctx: &GpuContext,
        latent: usize,
        with_iwae: bool,
        mut means: Option<&mut Vec<f32>>,
    ) -> Result<EvalReport> {
        let model_latent = self.act.kl_elem.dims2().1;
        if latent != model_latent {
            return Err(Error::Config(format!(
                "evaluation asked for {latent} latent dimensions, the model has {model_latent}"
            )));
        }
        let mut recon = 0.0f64;
        let mut kl = 0.0f64;
        let mut kl_dim = vec![0.0f64; latent];
        let mut mu_sum = vec![0.0f64; latent];
        let mut mu_sq = vec![0.0f64; latent];
        let batches = self.n.div_ceil(self.batch);
        let outputs = elbo_outputs(&self.act);
        for bi in 0..batches {
            // The gather reads position state[0] * rows: batch bi.
            let got = self
                .readback
                .run(ctx, &self.state, bi, &self.program, &outputs)?;
            let [nll, klv, kle, enc] = &got[..] else {
                return Err(Error::Readback(
                    "an evaluation batch returned the wrong number of outputs".into(),
                ));
            };
            let valid = (self.n - bi * self.batch).min(self.batch);
            let loc = self.posterior.location(enc, valid);
            if let Some(m) = means.as_deref_mut() {
                m.extend_from_slice(&loc);
            }
            for r in 0..valid {
                recon += nll[r] as f64;
                kl += klv[r] as f64;
                for d in 0..latent {
                    kl_dim[d] += kle[r * latent + d] as f64;
                    let mu = loc[r * latent + d] as f64;
                    mu_sum[d] += mu;
                    mu_sq[d] += mu * mu;
                }
            }
        }
        let n = self.n as f64;
        let (mut iwae_k, mut neg_iwae) = (None, None);
        if let Some(iw) = self.iwae.as_ref().filter(|_| with_iwae) {
            let mut total = 0.0f64;
            for bi in 0..self.n.div_ceil(iw.act.batch) {
                total += self
                    .iwae_batch(ctx, bi)?
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>();
            }
            iwae_k = Some(iw.k);
            neg_iwae = Some(-total / n);
        }
        let mean_variance: Vec<f64> = (0..latent)
            .map(|d| {
                let m = mu_sum[d] / n;
                (mu_sq[d] / n - m * m).max(0.0)
            })
            .collect();
        let report = EvalReport {
            n: self.n,
            neg_elbo: (recon + kl) / n,
            recon: recon / n,
            kl: kl / n,
            iwae_k,
            neg_iwae,
            kl_per_dim: kl_dim.iter().map(|v| v / n).collect(),
            active_units: mean_variance.iter().filter(|&&v| v > 0.01).count(),
            mean_variance,
            probe: None,
        };
        if !report.neg_elbo.is_finite() || neg_iwae.is_some_and(|v: f64| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "evaluation produced a non-finite loss (−ELBO {}, −IWAE {:?})",
                report.neg_elbo, neg_iwae
            )));
        }
        Ok(report)
    }
}

/// The outputs of the −ELBO program read back per batch: nll (B,), KL (B,), KL per dimension
/// (B, D) and the posterior's parameters (B, param_dim).
/// A conditional model's labels of `data` on the GPU (u32), each checked below its classes;
/// `None` for an unconditional model. A conditional model refuses data without labels.
fn eval_labels(ctx: &GpuContext, vae: &Vae, data: &Dataset) -> Result<Option<Tensor<u32>>> {
    let Some(c) = &vae.condition else {
        return Ok(None);
    };
    let Some(labels) = &data.labels else {
        return Err(Error::Config(format!(
            "this is a conditional model ({} classes): evaluating `{}` needs the images' labels, \
             and the data set has none (give them with `--labels FILE` to `wgvae eval` or `wgvae anomaly`)",
            c.classes, data.name
        )));
    };
    if let Some(i) = labels.iter().position(|&l| l as usize >= c.classes) {
        return Err(Error::Config(format!(
            "data set `{}`: image {i} has label {}, but the conditional model knows classes 0 to {}",
            data.name,
            labels[i],
            c.classes - 1
        )));
    }
    let wide: Vec<u32> = labels.iter().map(|&v| v as u32).collect();
    Ok(Some(Tensor::from_slice(
        ctx,
        "eval labels",
        &[labels.len()],
        &wide,
    )?))
}

fn elbo_outputs(act: &Activations) -> [&Tensor<f32>; 4] {
    [&act.nll, &act.kl, &act.kl_elem, act.posterior_params()]
}
