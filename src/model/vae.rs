//! The VAE on the GPU: parameters, activation and gradient buffers for a fixed batch, and the
//! prepared programs of the forward pass, the backward pass and the optimizer step.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::{GaussianSigma, LayerSpec, Likelihood, ParamLayout, VaeConfig};
use crate::ops::adam::{AdamConfig, AdamScratch, adam};
use crate::ops::data::StepState;
use crate::ops::gemm::{Epilogue, Trans, gemm};
use crate::ops::kl::kl_weighted;
use crate::ops::likelihood::{LogSigma, bernoulli_weighted, gaussian_weighted};
use crate::ops::reduce::{SUM_GROUPS, col_sum, sum_all};
use crate::ops::reparam::{RngStep, Stream, reparam_backward, reparam_forward};
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
    /// outputs of the encoder layers; the last is (B, 2D) = [mu | log sigma^2]
    pub enc: Vec<Tensor<f32>>,
    /// (K·B, D) latent samples, sample s of input b in row s·B + b
    pub z: Tensor<f32>,
    /// (K·B, D) the standard normal draws behind z
    pub eps: Tensor<f32>,
    /// outputs of the decoder layers; the last is (K·B, P) logits (Bernoulli) or means
    pub dec: Vec<Tensor<f32>>,
    /// (K·B,) reconstruction NLL per sample
    pub nll: Tensor<f32>,
    /// (B,) KL(q(z|x) || p(z)) per input
    pub kl: Tensor<f32>,
    /// (B, D) KL per input and latent dimension
    pub kl_elem: Tensor<f32>,
}

/// Gradient buffers matching [`Activations`], plus the parameter gradients.
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

/// The model on the GPU.
pub struct Vae {
    pub cfg: VaeConfig,
    pub layout: ParamLayout,
    pub enc_layers: Vec<LayerSpec>,
    pub dec_layers: Vec<LayerSpec>,
    pub params: GpuParams,
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
        let (enc_layers, dec_layers) = cfg.layers();
        Ok(Vae {
            cfg: cfg.clone(),
            layout,
            enc_layers,
            dec_layers,
            params,
        })
    }

    fn w(&self, layer: &LayerSpec) -> &Tensor<f32> {
        self.params
            .get(&self.layout, &format!("{}.weight", layer.name))
    }
    fn b(&self, layer: &LayerSpec) -> &Tensor<f32> {
        self.params
            .get(&self.layout, &format!("{}.bias", layer.name))
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
        let enc = self
            .enc_layers
            .iter()
            .map(|l| Tensor::zeros(ctx, &format!("{} out", l.name), &[batch, l.out]))
            .collect::<Result<Vec<_>>>()?;
        let dec = self
            .dec_layers
            .iter()
            .map(|l| Tensor::zeros(ctx, &format!("{} out", l.name), &[kb, l.out]))
            .collect::<Result<Vec<_>>>()?;
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
            enc,
            z: Tensor::zeros(ctx, "z", &[kb, d])?,
            eps: Tensor::zeros(ctx, "eps", &[kb, d])?,
            dec,
            nll: Tensor::zeros(ctx, "nll", &[kb])?,
            kl: Tensor::zeros(ctx, "kl", &[batch])?,
            kl_elem: Tensor::zeros(ctx, "kl per dim", &[batch, d])?,
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
                Some(like(act.dec.last().expect("decoder has a layer"))?)
            } else {
                None
            },
            partials: Tensor::zeros(ctx, "log sigma grad partials", &[SUM_GROUPS])?,
        })
    }

    /// The encoder: act.x → act.enc (the last output is [mu | log sigma^2]).
    pub fn encode_program(&self, ctx: &GpuContext, act: &Activations) -> Result<Program> {
        self.mlp_program(ctx, &self.enc_layers, &act.x, &act.enc)
    }

    /// The decoder: act.z → act.dec (the last output is logits or means, (K·B, P)).
    pub fn decode_program(&self, ctx: &GpuContext, act: &Activations) -> Result<Program> {
        self.mlp_program(ctx, &self.dec_layers, &act.z, &act.dec)
    }

    /// `outputs[i] = act_i(outputs[i-1]·W_i + b_i)` with `outputs[-1] = input`.
    fn mlp_program(
        &self,
        ctx: &GpuContext,
        layers: &[LayerSpec],
        input: &Tensor<f32>,
        outputs: &[Tensor<f32>],
    ) -> Result<Program> {
        let mut p = Program::new();
        for (i, layer) in layers.iter().enumerate() {
            let x = if i == 0 { input } else { &outputs[i - 1] };
            p.push(gemm(
                ctx,
                &layer.name,
                x,
                self.w(layer),
                &outputs[i],
                Trans::NN,
                Epilogue::BiasAct {
                    bias: self.b(layer),
                    act: layer.act,
                },
            )?);
        }
        Ok(p)
    }

    /// Encoder, sampling, decoder, likelihood and KL. With `grads`, the likelihood and KL
    /// kernels also write their gradients of the weighted loss
    /// Σ_b w_b [(1/K) Σ_s nll_sb + β KL_b] with w = `act.w` (1/B each unless a gather wrote
    /// it: the batch mean, or the mean over the valid rows of a partial batch).
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
        let mut p = self.encode_program(ctx, act)?;
        let enc_out = act.enc.last().expect("encoder has a layer");
        p.push(reparam_forward(
            ctx,
            "reparam",
            enc_out,
            &act.z,
            &act.eps,
            act.samples,
            seed,
            step,
            stream,
        )?);
        p.extend(self.decode_program(ctx, act)?);
        let out = act.dec.last().expect("decoder has a layer");
        let recon_scale = 1.0 / act.samples as f32;
        let weights = grads.map(|_| &act.w);
        match self.cfg.likelihood {
            Likelihood::Bernoulli => p.push(bernoulli_weighted(
                ctx,
                "bernoulli nll",
                out,
                &act.x,
                &act.nll,
                grads.map(|g| (g.dec.last().expect("decoder has a layer"), recon_scale)),
                weights,
            )?),
            Likelihood::Gaussian { .. } => p.push(gaussian_weighted(
                ctx,
                "gaussian nll",
                out,
                &act.x,
                self.log_sigma(),
                &act.nll,
                grads.map(|g| {
                    (
                        g.dec.last().expect("decoder has a layer"),
                        g.log_sigma_elem.as_ref(),
                        recon_scale,
                    )
                }),
                weights,
            )?),
        }
        p.push(kl_weighted(
            ctx,
            "kl",
            enc_out,
            &act.kl,
            &act.kl_elem,
            grads.map(|g| (g.enc.last().expect("encoder has a layer"), beta)),
            weights,
        )?);
        Ok(p)
    }

    /// Backpropagates the gradients that [`Vae::forward_program`] wrote at the decoder output
    /// and encoder output into every parameter gradient.
    pub fn backward_program(
        &self,
        ctx: &GpuContext,
        act: &Activations,
        g: &Gradients,
    ) -> Result<Program> {
        let mut p = Program::new();
        for (j, layer) in self.dec_layers.iter().enumerate().rev() {
            let gout = &g.dec[j];
            let input = if j == 0 { &act.z } else { &act.dec[j - 1] };
            self.layer_backward(ctx, &mut p, layer, input, gout, g)?;
            let (g_in, epi) = if j == 0 {
                (&g.z, Epilogue::Store)
            } else {
                let prev = &self.dec_layers[j - 1];
                (
                    &g.dec[j - 1],
                    Epilogue::ActGrad {
                        output: &act.dec[j - 1],
                        act: prev.act,
                    },
                )
            };
            p.push(gemm(
                ctx,
                &format!("d {} input", layer.name),
                gout,
                self.w(layer),
                g_in,
                Trans::NT,
                epi,
            )?);
        }
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
        let enc_out = act.enc.last().expect("encoder has a layer");
        let g_enc_out = g.enc.last().expect("encoder has a layer");
        // The KL kernel wrote β·w_b·∂KL into g_enc_out; add the reconstruction path.
        p.push(reparam_backward(
            ctx,
            "reparam backward",
            enc_out,
            &g.z,
            &act.eps,
            g_enc_out,
            act.samples,
            true,
        )?);
        for (i, layer) in self.enc_layers.iter().enumerate().rev() {
            let gout = &g.enc[i];
            let input = if i == 0 { &act.x } else { &act.enc[i - 1] };
            self.layer_backward(ctx, &mut p, layer, input, gout, g)?;
            if i > 0 {
                let prev = &self.enc_layers[i - 1];
                p.push(gemm(
                    ctx,
                    &format!("d {} input", layer.name),
                    gout,
                    self.w(layer),
                    &g.enc[i - 1],
                    Trans::NT,
                    Epilogue::ActGrad {
                        output: &act.enc[i - 1],
                        act: prev.act,
                    },
                )?);
            }
        }
        Ok(p)
    }

    /// dW = inputᵀ·gout, db = Σ_rows gout.
    fn layer_backward(
        &self,
        ctx: &GpuContext,
        p: &mut Program,
        layer: &LayerSpec,
        input: &Tensor<f32>,
        gout: &Tensor<f32>,
        g: &Gradients,
    ) -> Result<()> {
        let dw = g
            .params
            .get(&self.layout, &format!("{}.weight", layer.name));
        let db = g.params.get(&self.layout, &format!("{}.bias", layer.name));
        p.push(gemm(
            ctx,
            &format!("d {}.weight", layer.name),
            input,
            gout,
            dw,
            Trans::TN,
            Epilogue::Store,
        )?);
        p.push(col_sum(
            ctx,
            &format!("d {}.bias", layer.name),
            gout,
            db,
            1.0,
            false,
        )?);
        Ok(())
    }

    /// The optimizer step over every parameter.
    #[allow(clippy::too_many_arguments)]
    pub fn optimizer_program(
        &self,
        ctx: &GpuContext,
        g: &Gradients,
        m: &GpuParams,
        v: &GpuParams,
        state: &StepState,
        scratch: &AdamScratch,
        cfg: &AdamConfig,
    ) -> Result<Program> {
        adam(
            ctx,
            "adam",
            &self.params.flat,
            &g.params.flat,
            &m.flat,
            &v.flat,
            state,
            scratch,
            cfg,
        )
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
                    "inputs of {} pixels for a model of {}",
                    act.x.dims2().1,
                    self.cfg.input_dim()
                ),
            ));
        }
        Ok(())
    }
}
