//! The VAE on the GPU: parameters, activation and gradient buffers for a fixed batch, and the
//! prepared programs of the forward pass, the backward pass and the optimizer step.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::posterior::KlGrad;
use crate::model::{
    Elbo, GaussianSigma, GradWrite, Likelihood, ParamLayout, Posterior, Sequential, VaeConfig,
};
use crate::ops::condition::onehot;
use crate::ops::kl::{Capacity, KlRamp};
use crate::ops::likelihood::{LogSigma, bernoulli_weighted, gaussian_weighted};
use crate::ops::reduce::{SUM_GROUPS, col_sum, sum_all};
use crate::ops::reparam::{RngStep, Stream};
use crate::ops::shape_err;

/// A flat buffer of all parameters (or of their gradients, or of an optimizer moment) and a
/// view per named tensor, in the order of [`ParamLayout::tensors`].
pub struct GpuParams {
    pub flat: Tensor<f32>,
    pub views: Vec<Tensor<f32>>,
}

impl GpuParams {
    pub fn zeros(ctx: &GpuContext, layout: &ParamLayout, label: &str) -> Result<Self> {
        let flat = Tensor::zeros(ctx, label, &[layout.total.max(1)])?;
        let views = layout
            .tensors
            .iter()
            .map(|t| Tensor::view(&flat, &format!("{label} {}", t.name), t.offset, &t.shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuParams { flat, views })
    }

    pub fn get(&self, layout: &ParamLayout, name: &str) -> &Tensor<f32> {
        let i = layout
            .tensors
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no parameter named {name}"));
        &self.views[i]
    }
}

/// Buffers of one forward pass for B inputs and K latent samples each.
pub struct Activations {
    pub batch: usize,
    pub samples: usize,
    /// (B, P) inputs in [0, 1]
    pub x: Tensor<f32>,
    /// (B,) row weights of the loss: the gradients of [`Vae::forward_program`] are those of
    /// Σ_b w_b [(1/K) Σ_s nll_sb + β KL_b]. Starts at 1/B (the batch mean); the training gather
    /// overwrites it every step with 1/valid for the rows that hold an image and 0 for the
    /// padded rows of a partial last batch.
    pub w: Tensor<f32>,
    /// the encoder's module outputs (B, features); the last holds the posterior's parameters
    pub enc: Vec<Tensor<f32>>,
    /// (K·B, D) latent samples, sample s of input b in row s·B + b
    pub z: Tensor<f32>,
    /// (K·B, D) the standard normal draws behind z
    pub eps: Tensor<f32>,
    /// the decoder's module outputs (K·B, features); the last is (K·B, P) logits (Bernoulli)
    /// or means
    pub dec: Vec<Tensor<f32>>,
    /// (K·B,) reconstruction NLL per sample
    pub nll: Tensor<f32>,
    /// (B,) KL(q(z|x) || p(z)) per input
    pub kl: Tensor<f32>,
    /// (B, D) KL per input and latent dimension
    pub kl_elem: Tensor<f32>,
    /// (B,) class labels of a conditional model's inputs (`None` for an unconditional one):
    /// the encoder's and decoder's forward programs write their one-hot columns from it (the
    /// decoder's K·B rows: row s·B + b takes label b). The training and evaluation gathers
    /// write it with the images; [`Activations::set_labels`] uploads labels for other uses.
    pub labels: Option<Tensor<u32>>,
}

impl Activations {
    /// Uploads the labels of up to `batch` inputs (the rest get label 0), each checked below
    /// `classes`. Errors for an unconditional model's activations.
    pub fn set_labels(&self, ctx: &GpuContext, labels: &[u32], classes: usize) -> Result<()> {
        let Some(t) = &self.labels else {
            return Err(Error::Config(
                "class labels given to an unconditional model".into(),
            ));
        };
        if labels.len() > self.batch {
            return Err(Error::Config(format!(
                "{} labels for a batch of {}",
                labels.len(),
                self.batch
            )));
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Config(format!(
                "class {l}: the model has classes 0 to {}",
                classes.saturating_sub(1)
            )));
        }
        let mut full = vec![0u32; self.batch];
        full[..labels.len()].copy_from_slice(labels);
        t.write(ctx, &full)
    }

    /// The posterior's parameters, (B, param_dim).
    pub fn posterior_params(&self) -> &Tensor<f32> {
        self.enc.last().expect("a network has at least one module")
    }
    /// The decoder's output, (K·B, P).
    pub fn output(&self) -> &Tensor<f32> {
        self.dec.last().expect("a network has at least one module")
    }
}

/// Gradient buffers matching [`Activations`], plus the parameter gradients. `enc` and `dec`
/// hold each module's output gradient before its activation.
pub struct Gradients {
    pub params: GpuParams,
    pub enc: Vec<Tensor<f32>>,
    pub z: Tensor<f32>,
    pub dec: Vec<Tensor<f32>>,
    /// (K·B, P) per-element d/dlog sigma of a learned Gaussian scale
    pub log_sigma_elem: Option<Tensor<f32>>,
    /// scratch for reducing a shared log sigma gradient
    pub partials: Tensor<f32>,
}

/// How the KL term enters the gradient: weight β, optionally ramped by the step (warm-up,
/// cyclical annealing), or replaced by the controlled-capacity term γ·|KL − C(t)| whose per-row
/// value goes into the given tensor (B,).
#[derive(Clone, Copy)]
pub struct KlWeight<'a> {
    pub beta: f32,
    pub ramp: Option<KlRamp<'a>>,
    pub capacity: Option<(Capacity<'a>, &'a Tensor<f32>)>,
}

impl KlWeight<'_> {
    /// A constant weight β.
    pub fn beta(beta: f32) -> Self {
        KlWeight {
            beta,
            ramp: None,
            capacity: None,
        }
    }
}

/// The model on the GPU: encoder network → posterior → decoder network → likelihood, and
/// the parameters of all of them in one flat buffer (one view per named tensor).
pub struct Vae {
    pub cfg: VaeConfig,
    pub layout: ParamLayout,
    pub encoder: Sequential,
    /// The posterior family, bound to its own parameters in `params` if it has any (shared
    /// with the objectives and evaluators that build programs around it).
    pub posterior: Arc<dyn Posterior>,
    pub decoder: Sequential,
    pub params: GpuParams,
    /// A conditional model's label inputs: the position of the conditioning module in the
    /// encoder and in the decoder, and the number of classes.
    pub condition: Option<Condition>,
}

/// Where a conditional VAE's one-hot label enters its networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Index of the [`crate::model::condition::Concat`] module in the encoder.
    pub encoder: usize,
    /// Its index in the decoder (0: z is concatenated with the label).
    pub decoder: usize,
    pub classes: usize,
}

impl Vae {
    /// Uploads `flat` (laid out as `cfg.layout()`) as the model's parameters.
    pub fn new(ctx: &GpuContext, cfg: &VaeConfig, flat: &[f32]) -> Result<Self> {
        cfg.validate()?;
        let layout = cfg.layout();
        if flat.len() != layout.total {
            return Err(Error::Config(format!(
                "{} parameter values given, the architecture needs {}",
                flat.len(),
                layout.total
            )));
        }
        let params = GpuParams::zeros(ctx, &layout, "params")?;
        params.flat.write(ctx, flat)?;
        let (encoder, decoder) = cfg.networks().map_err(Error::Config)?;
        let mut posterior = cfg.posterior();
        if !posterior.own_params().is_empty() {
            let host: Vec<f64> = flat.iter().map(|&v| v as f64).collect();
            posterior.bind(&layout, Some(&params.flat), Some(&host))?;
        }
        let posterior: Arc<dyn Posterior> = Arc::from(posterior);
        let find = |net: &Sequential| {
            net.modules
                .iter()
                .position(|m| m.name() == crate::model::condition::NAME)
        };
        let condition = match (cfg.classes, find(&encoder), find(&decoder)) {
            (Some(classes), Some(encoder), Some(decoder)) => Some(Condition {
                encoder,
                decoder,
                classes,
            }),
            (None, None, None) => None,
            _ => {
                return Err(Error::Config(
                    "the networks do not match the configuration's classes".into(),
                ));
            }
        };
        Ok(Vae {
            cfg: cfg.clone(),
            layout,
            encoder,
            posterior,
            decoder,
            params,
            condition,
        })
    }

    /// The training objective: the negative ELBO with weight β on the KL.
    pub fn objective(&self, beta: f32) -> Elbo {
        Elbo { beta }
    }

    fn log_sigma<'a>(&'a self) -> LogSigma<'a> {
        match self.cfg.likelihood {
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::Fixed(v),
            } => LogSigma::Fixed(v),
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedShared,
            } => LogSigma::Shared(self.params.get(&self.layout, "decoder.log_sigma")),
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedPerPixel,
            } => LogSigma::PerPixel(self.params.get(&self.layout, "decoder.log_sigma")),
            Likelihood::Bernoulli => LogSigma::Fixed(0.0),
        }
    }

    fn learned_sigma(&self) -> bool {
        matches!(
            self.cfg.likelihood,
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedShared | GaussianSigma::LearnedPerPixel
            }
        )
    }

    /// Allocates the buffers of a forward pass over `batch` inputs, `samples` latent draws each.
    pub fn activations(
        &self,
        ctx: &GpuContext,
        batch: usize,
        samples: usize,
    ) -> Result<Activations> {
        if batch == 0 || samples == 0 {
            return Err(Error::Config(format!(
                "batch ({batch}) and samples ({samples}) must be at least 1"
            )));
        }
        let kb = batch * samples;
        let d = self.cfg.latent;
        Ok(Activations {
            batch,
            samples,
            x: Tensor::zeros(ctx, "x", &[batch, self.cfg.input_dim()])?,
            w: Tensor::from_slice(
                ctx,
                "row weights",
                &[batch],
                &vec![1.0 / batch as f32; batch],
            )?,
            enc: self.encoder.buffers(ctx, batch, "out")?,
            z: Tensor::zeros(ctx, "z", &[kb, d])?,
            eps: Tensor::zeros(ctx, "eps", &[kb, d])?,
            dec: self.decoder.buffers(ctx, kb, "out")?,
            nll: Tensor::zeros(ctx, "nll", &[kb])?,
            kl: Tensor::zeros(ctx, "kl", &[batch])?,
            kl_elem: Tensor::zeros(ctx, "kl per dim", &[batch, d])?,
            labels: match self.condition {
                Some(_) => Some(Tensor::zeros(ctx, "labels", &[batch])?),
                None => None,
            },
        })
    }

    pub fn gradients(&self, ctx: &GpuContext, act: &Activations) -> Result<Gradients> {
        let like =
            |t: &Tensor<f32>| Tensor::<f32>::zeros(ctx, &format!("d {}", t.label()), t.shape());
        Ok(Gradients {
            params: GpuParams::zeros(ctx, &self.layout, "grads")?,
            enc: act.enc.iter().map(like).collect::<Result<Vec<_>>>()?,
            z: like(&act.z)?,
            dec: act.dec.iter().map(like).collect::<Result<Vec<_>>>()?,
            log_sigma_elem: if self.learned_sigma() {
                Some(like(act.output())?)
            } else {
                None
            },
            partials: Tensor::zeros(ctx, "log sigma grad partials", &[SUM_GROUPS])?,
        })
    }

    /// The encoder: act.x → act.enc (the last output holds the posterior's parameters). A
    /// conditional model first writes the one-hot labels of `act.labels` into its
    /// conditioning module's output.
    pub fn encode_program(&self, ctx: &GpuContext, act: &Activations) -> Result<Program> {
        let mut p = self.label_columns(ctx, act, &act.enc, |c| c.encoder, &self.encoder)?;
        p.extend(
            self.encoder
                .forward(ctx, &self.params, &self.layout, &act.x, &act.enc)?,
        );
        Ok(p)
    }

    /// The decoder: act.z → act.dec (the last output is logits or means, (K·B, P)); for a
    /// conditional model with the one-hot labels of `act.labels` next to z.
    pub fn decode_program(&self, ctx: &GpuContext, act: &Activations) -> Result<Program> {
        let mut p = self.label_columns(ctx, act, &act.dec, |c| c.decoder, &self.decoder)?;
        p.extend(
            self.decoder
                .forward(ctx, &self.params, &self.layout, &act.z, &act.dec)?,
        );
        Ok(p)
    }

    /// The one-hot label columns of a conditioning module's output buffer (nothing for an
    /// unconditional model).
    fn label_columns(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        outs: &[Tensor<f32>],
        index: impl Fn(&Condition) -> usize,
        net: &Sequential,
    ) -> Result<Program> {
        let mut p = Program::new();
        if let Some(c) = &self.condition {
            let labels = act.labels.as_ref().ok_or_else(|| {
                Error::Config("a conditional model's activations need labels".into())
            })?;
            let i = index(c);
            p.push(onehot(
                ctx,
                &format!("{}.{} labels", net.name, crate::model::condition::NAME),
                labels,
                &outs[i],
                net.modules[i].in_features(),
                c.classes,
            )?);
        }
        Ok(p)
    }

    /// Encoder, sampling, decoder, likelihood and KL. With `grads`, the likelihood and KL
    /// kernels also store their gradients of the weighted loss
    /// Σ_b w_b [(1/K) Σ_s nll_sb + β KL_b] with w = `act.w` (1/B each unless a gather wrote
    /// it: the batch mean, or the mean over the valid rows of a partial batch), at the
    /// decoder's output and the posterior's parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_program(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        grads: Option<&Gradients>,
        beta: f32,
        seed: u64,
        step: RngStep<'_>,
        stream: Stream,
    ) -> Result<Program> {
        self.forward_program_with(ctx, act, grads, KlWeight::beta(beta), seed, step, stream)
    }

    /// [`Vae::forward_program`] with the KL's weight in the gradient as `kl`: β, a ramp of it
    /// (warm-up, cyclical annealing), or the controlled-capacity term.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_program_with(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        grads: Option<&Gradients>,
        kl: KlWeight<'_>,
        seed: u64,
        step: RngStep<'_>,
        stream: Stream,
    ) -> Result<Program> {
        let mut p = self.encode_program(ctx, act)?;
        let q = act.posterior_params();
        p.extend(self.posterior.sample(
            ctx,
            q,
            &act.z,
            &act.eps,
            act.samples,
            seed,
            step,
            stream,
        )?);
        p.extend(self.decode_program(ctx, act)?);
        let out = act.output();
        let recon_scale = 1.0 / act.samples as f32;
        let weights = grads.map(|_| &act.w);
        let g_out = grads.map(|g| g.dec.last().expect("a network has at least one module"));
        match self.cfg.likelihood {
            Likelihood::Bernoulli => p.push(bernoulli_weighted(
                ctx,
                "bernoulli nll",
                out,
                &act.x,
                &act.nll,
                g_out.map(|g| (g, recon_scale)),
                weights,
            )?),
            Likelihood::Gaussian { .. } => p.push(gaussian_weighted(
                ctx,
                "gaussian nll",
                out,
                &act.x,
                self.log_sigma(),
                &act.nll,
                grads
                    .zip(g_out)
                    .map(|(g, go)| (go, g.log_sigma_elem.as_ref(), recon_scale)),
                weights,
            )?),
        }
        p.extend(self.posterior.kl(
            ctx,
            q,
            &act.kl,
            &act.kl_elem,
            grads.map(|g| KlGrad {
                dparams: g.enc.last().expect("a network has at least one module"),
                beta: kl.beta,
                ramp: kl.ramp,
                capacity: kl.capacity,
                write: GradWrite::Store,
                own: Some(&g.params.flat),
            }),
            weights,
        )?);
        Ok(p)
    }

    /// Backpropagates the gradients that [`Vae::forward_program`] stored at the decoder output
    /// and the posterior's parameters into every parameter gradient (each stored once).
    pub fn backward_program(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        g: &Gradients,
    ) -> Result<Program> {
        self.backward_program_with(ctx, act, g, Program::new())
    }

    /// [`Vae::backward_program`] with `latent_terms` recorded between the decoder's backward
    /// (which stores dL/dz into `g.z`) and the posterior's sample backward (which carries `g.z`
    /// into the posterior's parameters): the place for terms of the objective that depend on z
    /// and the posterior's parameters (total correlation, a discriminator's estimate), which
    /// accumulate into `g.z` and into the encoder's last gradient `g.enc`.
    pub fn backward_program_with(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        g: &Gradients,
        latent_terms: Program,
    ) -> Result<Program> {
        let mut p = self.decoder.backward(
            ctx,
            &self.params,
            &g.params,
            &self.layout,
            GradWrite::Store,
            &act.z,
            &act.dec,
            &g.dec,
            Some((&g.z, GradWrite::Store)),
        )?;
        if let Some(gls) = &g.log_sigma_elem {
            let target = g.params.get(&self.layout, "decoder.log_sigma");
            match self.cfg.likelihood {
                Likelihood::Gaussian {
                    log_sigma: GaussianSigma::LearnedPerPixel,
                } => p.push(col_sum(ctx, "d log sigma", gls, target, 1.0, false)?),
                _ => p.extend(sum_all(
                    ctx,
                    "d log sigma",
                    gls,
                    &g.partials,
                    target,
                    0,
                    1.0,
                    false,
                    false,
                )?),
            }
        }
        p.extend(latent_terms);
        // The KL stored β·w_b·∂KL at the posterior's parameters; add the path through z.
        p.extend(self.posterior.sample_backward(
            ctx,
            act.posterior_params(),
            &g.z,
            &act.eps,
            g.enc.last().expect("a network has at least one module"),
            Some(&g.params.flat),
            act.samples,
            GradWrite::Accumulate,
        )?);
        p.extend(self.encoder.backward(
            ctx,
            &self.params,
            &g.params,
            &self.layout,
            GradWrite::Store,
            &act.x,
            &act.enc,
            &g.enc,
            None,
        )?);
        Ok(p)
    }

    /// Reads all parameters back (flat layout).
    pub fn read_params(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.params.flat.read(ctx)
    }

    /// Checks that `act` was made for this model's input size.
    pub fn check_input(&self, act: &Activations) -> Result<()> {
        if act.x.dims2().1 != self.cfg.input_dim() {
            return Err(shape_err(
                "vae",
                format!(
                    "inputs of {} values for a model of {}",
                    act.x.dims2().1,
                    self.cfg.input_dim()
                ),
            ));
        }
        Ok(())
    }
}
