//! Evaluation on a data set: −ELBO with its reconstruction and KL parts, the IWAE bound with
//! k importance samples (log-mean-exp over k on the GPU), KL per latent dimension and the
//! number of active units.

use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::{Activations, Vae};
use crate::ops::data::{StepState, gather};
use crate::ops::kl::iwae_log_weights;
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
}

struct IwaeRun {
    k: usize,
    act: Activations,
    program: Program,
    bound: Tensor<f32>,
}

/// Prepared evaluation of one data set for one model: the data set lives on the GPU, and the
/// programs are built once and replayed per batch.
pub struct Evaluator {
    pub n: usize,
    pub batch: usize,
    /// The data set, resident on the GPU as bytes (N, P).
    pub images: Tensor<u8>,
    state: StepState,
    act: Activations,
    program: Program,
    iwae: Option<IwaeRun>,
}

impl Evaluator {
    /// `iwae_k` = 0 skips the IWAE bound. `seed` fixes the noise of the estimates.
    pub fn new(
        ctx: &GpuContext,
        vae: &Vae,
        data: &Dataset,
        batch: usize,
        iwae_k: usize,
        seed: u64,
    ) -> Result<Self> {
        let pixels = vae.cfg.input_dim();
        if data.height * data.width != pixels {
            return Err(Error::Config(format!(
                "data set `{}` has {}x{} images, the model takes {}x{}",
                data.name, data.height, data.width, vae.cfg.height, vae.cfg.width
            )));
        }
        if data.n == 0 {
            return Err(Error::Config(format!("data set `{}` is empty", data.name)));
        }
        let batch = batch.min(data.n).max(1);
        let images = Tensor::from_slice(ctx, "eval images", &[data.n, pixels], &data.pixels)?;
        let order: Vec<u32> = (0..data.n as u32).collect();
        let perm = Tensor::from_slice(ctx, "eval order", &[data.n], &order)?;
        let state = StepState::new(ctx, "eval batch")?;
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
        program.extend(vae.forward_program(
            ctx,
            &act,
            None,
            1.0,
            seed,
            RngStep::State(&state),
            Stream::Eval,
        )?);
        let iwae = if iwae_k > 0 {
            // Keep the K·E decoder rows near 6,400 so memory stays small.
            let eb = (6400 / iwae_k.max(1)).clamp(1, batch);
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
            p.extend(vae.forward_program(
                ctx,
                &iact,
                None,
                1.0,
                seed ^ 0x1a2e,
                RngStep::State(&state),
                Stream::Eval,
            )?);
            let enc_out = iact.enc.last().expect("encoder has a layer");
            p.push(iwae_log_weights(
                ctx, "log w", enc_out, &iact.nll, &iact.z, &iact.eps, &logw, iwae_k,
            )?);
            p.push(logmeanexp(ctx, "iwae", &logw, &bound, 1.0, false)?);
            Some(IwaeRun {
                k: iwae_k,
                act: iact,
                program: p,
                bound,
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
            iwae,
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
        self.state.set(ctx, bi as u32, 0)?;
        iw.program.run(ctx)?;
        let valid = (self.n - bi * eb).min(eb);
        let mut b = iw.bound.read(ctx)?;
        b.truncate(valid);
        Ok(b)
    }

    /// The standard normal draws (K·E, D) behind the last IWAE batch run, sample k of image
    /// b in row k·E + b (for checking the estimate against [`crate::cpu::iwae`]).
    pub fn iwae_eps(&self) -> Option<&Tensor<f32>> {
        self.iwae.as_ref().map(|iw| &iw.act.eps)
    }

    /// Runs the evaluation over the whole data set (with the IWAE bound when this evaluator
    /// was built with k > 0).
    pub fn run(&self, ctx: &GpuContext, latent: usize) -> Result<EvalReport> {
        self.run_with(ctx, latent, true)
    }

    /// Like [`Evaluator::run`]; `with_iwae = false` skips the (costlier) IWAE pass.
    pub fn run_with(&self, ctx: &GpuContext, latent: usize, with_iwae: bool) -> Result<EvalReport> {
        let mut recon = 0.0f64;
        let mut kl = 0.0f64;
        let mut kl_dim = vec![0.0f64; latent];
        let mut mu_sum = vec![0.0f64; latent];
        let mut mu_sq = vec![0.0f64; latent];
        let batches = self.n.div_ceil(self.batch);
        for bi in 0..batches {
            // The gather reads position state[0] * rows: batch bi.
            self.state.set(ctx, bi as u32, 0)?;
            self.program.run(ctx)?;
            let valid = (self.n - bi * self.batch).min(self.batch);
            let nll = self.act.nll.read(ctx)?;
            let klv = self.act.kl.read(ctx)?;
            let kle = self.act.kl_elem.read(ctx)?;
            let enc = self
                .act
                .enc
                .last()
                .expect("encoder has a layer")
                .read(ctx)?;
            for r in 0..valid {
                recon += nll[r] as f64;
                kl += klv[r] as f64;
                for d in 0..latent {
                    kl_dim[d] += kle[r * latent + d] as f64;
                    let mu = enc[r * 2 * latent + d] as f64;
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
