//! The VAE: its configuration, the layout of its parameters in one flat buffer, and the GPU
//! programs of its forward and backward passes.

pub mod condition;
pub mod discriminator;
pub mod flows;
pub mod module;
pub mod network;
pub mod objective;
pub mod posterior;
pub mod vae;

pub use flows::{Iaf, PlanarFlow};
pub use module::{Conv, ConvKind, GradWrite, Init, Linear, Module, ParamDecl};
pub use network::Sequential;
pub use objective::{Elbo, MetricMeans, Objective, ParamGroup, Phase, Term};
pub use posterior::{Diagonal, FullCovariance, OwnParam, Posterior, PosteriorKind};
pub use vae::{Activations, Condition, GpuParams, Gradients, Vae};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::tensor::VIEW_ALIGN;
use crate::ops::{Activation, conv};
use crate::rng::HostRng;

/// The decoder's likelihood p(x | z).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Likelihood {
    /// Bernoulli with logits, for images in [0, 1].
    Bernoulli,
    /// Gaussian with mean from the decoder and log σ fixed, or learned (shared or per pixel).
    Gaussian { log_sigma: GaussianSigma },
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaussianSigma {
    Fixed(f32),
    LearnedShared,
    LearnedPerPixel,
}

/// Most hidden layers the encoder, or the decoder, may have.
pub const MAX_HIDDEN_LAYERS: usize = 256;

/// Most channels an image or a convolution may have.
pub const MAX_CHANNELS: usize = 65_536;

/// Most classes of a conditional VAE (labels are bytes).
pub const MAX_CLASSES: usize = 256;

/// Most elements of the flat parameter buffer, padding included: the GPU kernels (Adam's fused
/// update among them) index it with 32-bit integers.
pub const MAX_PARAMS: usize = u32::MAX as usize;

/// Sizes of a parameter layout, computed with checked arithmetic.
struct Sizes {
    input: usize,
    count: usize,
    total: usize,
}

/// The layers between the image and the posterior's parameters (and back).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Arch {
    /// Fully connected layers only: image → `enc_hidden` → posterior; latent → `dec_hidden` →
    /// image.
    #[default]
    Mlp,
    /// Convolutions `conv1…convL` (kernel × kernel, stride, padding; `channels[i]` output
    /// channels each) then fully connected layers `enc_hidden` → posterior; the decoder mirrors
    /// it: latent → `dec_hidden` → the last convolution's output size → transposed convolutions
    /// `deconv1…deconvL` back to the image's channels and size (output padding chosen so that
    /// every size matches the encoder's exactly).
    Conv {
        channels: Vec<usize>,
        kernel: usize,
        stride: usize,
        padding: usize,
        /// The decoder is fully connected (latent → `dec_hidden` → image) instead of the
        /// mirror: a convolutional encoder with a cheap decoder.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        mlp_decoder: bool,
    },
}

impl Arch {
    /// The convolutional network for `height × width` images: four 4×4 stride-2 convolutions
    /// of 32, 32, 64, 64 channels for images of 64 pixels or more a side, two of 32 and 64
    /// below that (28×28: 28 → 14 → 7).
    pub fn conv_for(height: usize, width: usize) -> Arch {
        Arch::Conv {
            channels: Arch::conv_channels_for(height, width),
            kernel: 4,
            stride: 2,
            padding: 1,
            mlp_decoder: false,
        }
    }

    /// The channels of [`Arch::conv_for`].
    pub fn conv_channels_for(height: usize, width: usize) -> Vec<usize> {
        if height.min(width) >= 64 {
            vec![32, 32, 64, 64]
        } else {
            vec![32, 64]
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Arch::Mlp => "mlp",
            Arch::Conv { .. } => "conv",
        }
    }
}

fn one() -> usize {
    1
}

/// Architecture of a VAE: image size, layers, latent size, likelihood.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Image height and width.
    pub height: usize,
    pub width: usize,
    /// Image channels (1: greyscale, 3: colour); the input is channels · height · width values.
    #[serde(default = "one")]
    pub channels: usize,
    /// Convolutions before the fully connected layers, or none.
    #[serde(default)]
    pub arch: Arch,
    /// Hidden fully connected layer widths of the encoder (… → hidden… → posterior parameters).
    pub enc_hidden: Vec<usize>,
    /// Hidden fully connected layer widths of the decoder (latent → hidden… → …).
    pub dec_hidden: Vec<usize>,
    pub latent: usize,
    pub activation: Activation,
    pub likelihood: Likelihood,
    /// A conditional VAE: the number of classes C of the one-hot label that the encoder (before
    /// its first fully connected layer) and the decoder (with z) take as input. `None` (absent
    /// in older checkpoints): unconditional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// The posterior family q(z | x); absent in older checkpoints: diagonal.
    #[serde(default)]
    pub posterior: PosteriorKind,
}

impl VaeConfig {
    /// The classic MNIST VAE: 784-400-20-400-784, ReLU, Bernoulli logits.
    pub fn classic(height: usize, width: usize) -> Self {
        VaeConfig {
            height,
            width,
            channels: 1,
            arch: Arch::Mlp,
            enc_hidden: vec![400],
            dec_hidden: vec![400],
            latent: 20,
            activation: Activation::Relu,
            likelihood: Likelihood::Bernoulli,
            classes: None,
            posterior: PosteriorKind::Diagonal,
        }
    }

    /// The convolutional VAE for `height × width` greyscale images ([`Arch::conv_for`]), one
    /// 256-unit hidden layer each side, latent 10.
    pub fn conv(height: usize, width: usize) -> Self {
        VaeConfig {
            arch: Arch::conv_for(height, width),
            enc_hidden: vec![256],
            dec_hidden: vec![256],
            latent: 10,
            ..VaeConfig::classic(height, width)
        }
    }

    /// Values per image, `channels · height · width` (saturating: call [`VaeConfig::validate`]
    /// first, or use [`VaeConfig::input_dim_checked`]).
    pub fn input_dim(&self) -> usize {
        self.input_dim_checked().unwrap_or(usize::MAX)
    }

    /// `channels · height · width`, or `None` if the product overflows `usize`.
    pub fn input_dim_checked(&self) -> Option<usize> {
        self.height
            .checked_mul(self.width)
            .and_then(|v| v.checked_mul(self.channels))
    }

    /// Number of parameters (padding excluded), or `None` if any size on the way overflows
    /// `usize`. Computed without allocating; use it for limit checks before [`VaeConfig::layout`]
    /// or [`VaeConfig::init_params`].
    pub fn param_count_checked(&self) -> Option<usize> {
        self.sizes().ok().map(|s| s.count)
    }

    /// Elements of the flat parameter buffer, padding included (`layout().total`), or `None` if
    /// any size on the way overflows `usize`. Computed without allocating.
    pub fn layout_total_checked(&self) -> Option<usize> {
        self.sizes().ok().map(|s| s.total)
    }

    /// [`VaeConfig::layout_total_checked`] with the reason when it fails: the size that
    /// overflows, or the layer whose geometry is impossible.
    pub fn layout_total_explained(&self) -> std::result::Result<usize, String> {
        self.sizes().map(|s| s.total)
    }

    /// The posterior family.
    pub fn posterior(&self) -> Box<dyn Posterior> {
        self.posterior.build(self.latent)
    }

    /// The encoder and decoder networks, or a description of the first size that overflows or
    /// geometry that is impossible. Builds descriptions only: nothing is allocated in proportion
    /// to the sizes.
    pub fn networks(&self) -> std::result::Result<(Sequential, Sequential), String> {
        let input = self.input_dim_checked().ok_or_else(|| {
            format!(
                "image size {}x{}x{} overflows: the value count does not fit in {} bits",
                self.channels,
                self.height,
                self.width,
                usize::BITS
            )
        })?;
        let enc_out = self.posterior.param_dim(self.latent).ok_or_else(|| {
            format!(
                "latent size {} overflows: the encoder's output (the {} posterior's parameters) \
                 does not fit in {} bits",
                self.latent,
                self.posterior.name(),
                usize::BITS
            )
        })?;
        let act = self.activation;
        let mut enc: Vec<Box<dyn Module>> = Vec::new();
        let mut dec_convs: Vec<Box<dyn Module>> = Vec::new();
        let mut flat = input;
        let mut dec_flat = input;
        if let Arch::Conv {
            channels,
            kernel,
            stride,
            padding,
            mlp_decoder,
        } = &self.arch
        {
            let (k, s, p) = (*kernel, *stride, *padding);
            let mut sizes = vec![(self.height, self.width)];
            let mut chans = vec![self.channels];
            for (i, &c) in channels.iter().enumerate() {
                let layer = conv::Conv2d::new(chans[i], c, (k, k))
                    .with_stride((s, s))
                    .with_padding((p, p));
                let m = Conv::new(
                    &format!("conv{}", i + 1),
                    ConvKind::Forward(layer),
                    sizes[i],
                    act,
                )
                .map_err(|e| format!("layer encoder.conv{}: {e}", i + 1))?;
                sizes.push(m.output);
                chans.push(c);
                enc.push(Box::new(m));
            }
            let last = *sizes.last().unwrap_or(&(0, 0));
            flat = last
                .0
                .checked_mul(last.1)
                .and_then(|v| v.checked_mul(*chans.last().unwrap_or(&0)))
                .ok_or_else(|| "the last convolution's output size overflows".to_string())?;
            let n = if *mlp_decoder { 0 } else { channels.len() };
            if n > 0 {
                dec_flat = flat;
            }
            for j in 0..n {
                // deconv{j+1} undoes conv{n-j}: sizes[n-j] -> sizes[n-j-1].
                let (from, to) = (sizes[n - j], sizes[n - j - 1]);
                let base = |len: usize| {
                    (len - 1)
                        .checked_mul(s)
                        .and_then(|v| v.checked_add(k))
                        .and_then(|v| v.checked_sub(2 * p))
                };
                let op = |len: usize, want: usize| {
                    base(len)
                        .and_then(|b| want.checked_sub(b))
                        .filter(|&o| o < s)
                };
                let (Some(oph), Some(opw)) = (op(from.0, to.0), op(from.1, to.1)) else {
                    return Err(format!(
                        "layer decoder.deconv{}: no transposed convolution with kernel {k}, \
                         stride {s}, padding {p} maps {}x{} back to {}x{}",
                        j + 1,
                        from.0,
                        from.1,
                        to.0,
                        to.1
                    ));
                };
                let layer = conv::ConvTranspose2d::new(chans[n - j], chans[n - j - 1], (k, k))
                    .with_stride((s, s))
                    .with_padding((p, p))
                    .with_output_padding((oph, opw));
                let m = Conv::new(
                    &format!("deconv{}", j + 1),
                    ConvKind::Transposed(layer),
                    from,
                    if j + 1 == n {
                        Activation::Identity
                    } else {
                        act
                    },
                )
                .map_err(|e| format!("layer decoder.deconv{}: {e}", j + 1))?;
                dec_convs.push(Box::new(m));
            }
        }
        let linears = |dims: Vec<usize>, last_act: Activation| -> Vec<Box<dyn Module>> {
            let n = dims.len() - 1;
            (0..n)
                .map(|i| {
                    Box::new(Linear {
                        name: format!("fc{}", i + 1),
                        inp: dims[i],
                        out: dims[i + 1],
                        act: if i + 1 == n { last_act } else { act },
                    }) as Box<dyn Module>
                })
                .collect()
        };
        // A conditional VAE appends the one-hot label to the encoder's first fully connected
        // input and to z.
        let classes = self.classes.unwrap_or(0);
        let mut dec_in = self.latent;
        if classes > 0 {
            let widen = |f: usize, what: &str| {
                condition::width(f, classes).ok_or_else(|| {
                    format!(
                        "{what} {f} plus {classes} classes overflows {} bits",
                        usize::BITS
                    )
                })
            };
            enc.push(Box::new(condition::Concat::new(flat, classes)));
            flat = widen(flat, "the encoder's fully connected input")?;
            dec_in = widen(self.latent, "the latent size")?;
        }
        let mut enc_dims = vec![flat];
        enc_dims.extend(&self.enc_hidden);
        enc_dims.push(enc_out);
        enc.extend(linears(enc_dims, Activation::Identity));
        let mut dec_dims = vec![dec_in];
        dec_dims.extend(&self.dec_hidden);
        dec_dims.push(dec_flat);
        let mut dec: Vec<Box<dyn Module>> = Vec::new();
        if classes > 0 {
            dec.push(Box::new(condition::Concat::new(self.latent, classes)));
        }
        dec.extend(linears(
            dec_dims,
            if dec_convs.is_empty() {
                Activation::Identity
            } else {
                act
            },
        ));
        dec.extend(dec_convs);
        Ok((
            Sequential::new("encoder", enc),
            Sequential::new("decoder", dec),
        ))
    }

    /// The sizes of the parameter layout computed with checked arithmetic, or a description of
    /// the first one that overflows.
    fn sizes(&self) -> std::result::Result<Sizes, String> {
        let input = self.input_dim_checked().ok_or_else(|| {
            format!(
                "image size {}x{} overflows: the pixel count does not fit in {} bits",
                self.height,
                self.width,
                usize::BITS
            )
        })?;
        let (enc, dec) = self.networks()?;
        let align = VIEW_ALIGN / 4;
        let mut sizes = Sizes {
            input,
            count: 0,
            total: 0,
        };
        let mut push = |name: &dyn Fn() -> String, len: Option<usize>| {
            let overflow = || {
                format!(
                    "{} overflows: the parameter count does not fit in {} bits",
                    name(),
                    usize::BITS
                )
            };
            let len = len.ok_or_else(overflow)?;
            sizes.count = sizes.count.checked_add(len).ok_or_else(overflow)?;
            sizes.total = sizes
                .total
                .checked_next_multiple_of(align)
                .and_then(|offset| offset.checked_add(len))
                .ok_or_else(overflow)?;
            Ok::<(), String>(())
        };
        for (i, net) in [&enc, &dec].into_iter().enumerate() {
            for m in &net.modules {
                for d in m.params() {
                    push(
                        &|| format!("layer {}.{} {} {:?}", net.name, m.name(), d.name, d.shape),
                        d.shape.iter().try_fold(1usize, |a, &v| a.checked_mul(v)),
                    )?;
                }
            }
            if i == 0 {
                for t in self.posterior.own_params(self.latent) {
                    push(
                        &|| format!("posterior.{} {:?}", t.name, t.shape),
                        t.shape.iter().try_fold(1usize, |a, &v| a.checked_mul(v)),
                    )?;
                }
            }
        }
        if let Some(len) = self.log_sigma_len() {
            push(&|| "decoder.log_sigma".to_string(), Some(len))?;
        }
        Ok(sizes)
    }

    /// Elements of a learned log σ (1 shared, one per value per pixel), if any.
    fn log_sigma_len(&self) -> Option<usize> {
        match self.likelihood {
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedShared,
            } => Some(1),
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedPerPixel,
            } => Some(self.input_dim()),
            _ => None,
        }
    }

    /// Checks that the configuration describes a model wgvae can build: non-empty sizes, at most
    /// [`MAX_HIDDEN_LAYERS`] hidden layers per side, finite activation slope and fixed log σ, and
    /// every size (pixels, each layer's `in·out`, the parameter count, the padded layout) computed
    /// with checked arithmetic and within [`MAX_PARAMS`]. Nothing is allocated: call it before
    /// [`VaeConfig::layout`] or [`VaeConfig::init_params`] on a configuration from a file or flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(what));
        if self.height == 0 || self.width == 0 {
            return bad(format!(
                "image size {}x{} is empty",
                self.height, self.width
            ));
        }
        if self.latent == 0 {
            return bad("latent size must be at least 1".into());
        }
        self.posterior.check_latent(self.latent)?;
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return bad(format!(
                "image channels {} must be between 1 and {MAX_CHANNELS}",
                self.channels
            ));
        }
        if let Arch::Conv {
            channels,
            kernel,
            stride,
            ..
        } = &self.arch
        {
            if channels.is_empty() || channels.len() > MAX_HIDDEN_LAYERS {
                return bad(format!(
                    "the convolutional encoder has {} layers: it needs 1 to {MAX_HIDDEN_LAYERS}",
                    channels.len()
                ));
            }
            if let Some(c) = channels.iter().find(|&&c| c == 0 || c > MAX_CHANNELS) {
                return bad(format!(
                    "convolution channels {c} must be between 1 and {MAX_CHANNELS}"
                ));
            }
            if *kernel == 0 || *kernel > 64 || *stride == 0 || *stride > *kernel {
                return bad(format!(
                    "convolution kernel {kernel} and stride {stride}: need 1 <= stride <= kernel <= 64"
                ));
            }
        }
        for (side, hidden) in [("encoder", &self.enc_hidden), ("decoder", &self.dec_hidden)] {
            if hidden.len() > MAX_HIDDEN_LAYERS {
                return bad(format!(
                    "the {side} has {} hidden layers, more than the limit of {MAX_HIDDEN_LAYERS}",
                    hidden.len()
                ));
            }
        }
        if let Some(h) = self
            .enc_hidden
            .iter()
            .chain(&self.dec_hidden)
            .find(|&&h| h == 0)
        {
            return bad(format!("hidden layer width {h} must be at least 1"));
        }
        if let Some(c) = self.classes
            && !(1..=MAX_CLASSES).contains(&c)
        {
            return bad(format!(
                "classes {c}: a conditional model needs 1 to {MAX_CLASSES} classes"
            ));
        }
        if let Activation::LeakyRelu(slope) = self.activation
            && !slope.is_finite()
        {
            return bad(format!("leaky ReLU slope {slope} must be a finite number"));
        }
        self.activation.validate()?;
        if let Likelihood::Gaussian {
            log_sigma: GaussianSigma::Fixed(v),
        } = self.likelihood
            && !v.is_finite()
        {
            return bad(format!(
                "fixed Gaussian log sigma {v} must be a finite number"
            ));
        }
        let sizes = self.sizes().map_err(Error::Config)?;
        if sizes.total > MAX_PARAMS {
            return bad(format!(
                "the model has {} parameters ({} elements with padding), more than the limit of \
                 {MAX_PARAMS}: the GPU kernels index the parameter buffer with 32-bit integers",
                sizes.count, sizes.total
            ));
        }
        debug_assert_eq!(sizes.input, self.input_dim());
        Ok(())
    }

    /// Where each parameter lives in the flat parameter buffer: the encoder's modules', the
    /// posterior family's own (`posterior.*`, an inverse autoregressive flow's), the decoder's,
    /// then a learned log σ. Sizes saturate instead of wrapping: call
    /// [`VaeConfig::validate`] first on a configuration from a file or flag; an impossible
    /// configuration gives an empty layout.
    pub fn layout(&self) -> ParamLayout {
        let mut l = ParamLayout::default();
        let Ok((enc, dec)) = self.networks() else {
            return l;
        };
        for (i, net) in [&enc, &dec].into_iter().enumerate() {
            for m in &net.modules {
                for d in m.params() {
                    l.push(&net.param_name(m.as_ref(), d.name), &d.shape);
                }
            }
            if i == 0 {
                for t in self.posterior.own_params(self.latent) {
                    l.push(&format!("posterior.{}", t.name), &t.shape);
                }
            }
        }
        if let Some(len) = self.log_sigma_len() {
            l.push("decoder.log_sigma", &[len]);
        }
        l
    }

    /// Initial parameters: PyTorch's `nn.Linear` default, U(−1/√in, 1/√in) for weights and
    /// biases; learned log σ starts at 0.
    ///
    /// Allocates `layout().total` floats: call [`VaeConfig::validate`] first (or use
    /// [`VaeConfig::try_init_params`]) on a configuration from a file or flag.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let layout = self.layout();
        let mut flat = vec![0.0f32; layout.total];
        self.fill_init(&layout, &mut flat, seed);
        flat
    }

    /// [`VaeConfig::init_params`] after [`VaeConfig::validate`], with a failed allocation of the
    /// flat buffer reported as an error instead of aborting.
    pub fn try_init_params(&self, seed: u64) -> Result<Vec<f32>> {
        self.validate()?;
        let layout = self.layout();
        let mut flat: Vec<f32> = Vec::new();
        flat.try_reserve_exact(layout.total).map_err(|_| {
            Error::Config(format!(
                "cannot allocate {} parameters ({} bytes) in host memory",
                layout.total,
                layout.total.saturating_mul(4)
            ))
        })?;
        flat.resize(layout.total, 0.0);
        self.fill_init(&layout, &mut flat, seed);
        Ok(flat)
    }

    fn fill_init(&self, layout: &ParamLayout, flat: &mut [f32], seed: u64) {
        let mut rng = HostRng::derive(seed, 0x1417);
        let Ok((enc, dec)) = self.networks() else {
            return;
        };
        let mut fill = |name: &str, init: Init| {
            if let Some(spec) = layout.get(name) {
                let values = &mut flat[spec.offset..spec.offset + spec.len()];
                match init {
                    Init::Uniform(bound) => {
                        for v in values {
                            *v = bound * (2.0 * rng.uniform() as f32 - 1.0);
                        }
                    }
                    Init::Constant(c) => values.fill(c),
                }
            }
        };
        for (i, net) in [&enc, &dec].into_iter().enumerate() {
            for m in &net.modules {
                for d in m.params() {
                    fill(&net.param_name(m.as_ref(), d.name), d.init);
                }
            }
            if i == 0 {
                for t in self.posterior.own_params(self.latent) {
                    fill(&format!("posterior.{}", t.name), t.init);
                }
            }
        }
        // e.g. an autoregressive flow's weights are zero where its masks cut a connection.
        self.posterior().init_own(layout, flat);
    }
}

/// A named parameter tensor at `offset` (elements) of the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameters packed into one buffer, each at a 256-byte boundary so it can be bound alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamLayout {
    pub tensors: Vec<ParamSpec>,
    /// Elements of the flat buffer, padding included.
    pub total: usize,
}

impl ParamLayout {
    fn push(&mut self, name: &str, shape: &[usize]) {
        let align = VIEW_ALIGN / 4;
        let offset = self
            .total
            .checked_next_multiple_of(align)
            .unwrap_or(usize::MAX);
        let spec = ParamSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            offset,
        };
        self.total = offset.saturating_add(spec.len());
        self.tensors.push(spec);
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Appends a tensor at the next 256-byte boundary (sizes saturate: check them first).
    pub fn push_tensor(&mut self, name: &str, shape: &[usize]) {
        self.push(name, shape);
    }

    /// Number of parameters (padding excluded).
    pub fn count(&self) -> usize {
        self.tensors
            .iter()
            .fold(0usize, |a, t| a.saturating_add(t.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> Vec<VaeConfig> {
        let mut v = vec![VaeConfig::classic(28, 28), VaeConfig::classic(3, 5)];
        let mut deep = VaeConfig::classic(7, 9);
        deep.enc_hidden = vec![33, 17, 5];
        deep.dec_hidden = vec![];
        deep.likelihood = Likelihood::Gaussian {
            log_sigma: GaussianSigma::LearnedPerPixel,
        };
        v.push(deep);
        let mut shared = VaeConfig::classic(2, 1);
        shared.latent = 1;
        shared.likelihood = Likelihood::Gaussian {
            log_sigma: GaussianSigma::LearnedShared,
        };
        v.push(shared);
        v
    }

    #[test]
    fn checked_sizes_match_the_layout() {
        for cfg in configs() {
            cfg.validate().unwrap();
            let layout = cfg.layout();
            assert_eq!(cfg.param_count_checked(), Some(layout.count()), "{cfg:?}");
            assert_eq!(cfg.layout_total_checked(), Some(layout.total), "{cfg:?}");
            assert_eq!(cfg.try_init_params(3).unwrap(), cfg.init_params(3));
        }
        // 784·400 + 400 + 400·40 + 40 + 20·400 + 400 + 400·784 + 784.
        assert_eq!(
            VaeConfig::classic(28, 28).param_count_checked(),
            Some(652_824)
        );
    }

    #[test]
    fn absurd_sizes_are_refused_without_allocating() {
        let msg = |cfg: &VaeConfig| cfg.validate().unwrap_err().to_string();
        // Hidden width 4·10⁹: fits in usize, but not in the GPU's 32-bit indexing.
        let mut wide = VaeConfig::classic(28, 28);
        wide.enc_hidden = vec![4_000_000_000];
        let m = msg(&wide);
        assert!(m.contains("more than the limit of 4294967295"), "{m}");
        assert!(wide.param_count_checked().unwrap() > MAX_PARAMS);
        // (2³²+1)² wraps to 2³³+1 in release builds; checked, it is an overflow.
        let side = (1usize << 32) + 1;
        let huge = VaeConfig::classic(side, side);
        assert_eq!(huge.input_dim_checked(), None);
        assert_eq!(huge.param_count_checked(), None);
        assert_eq!(huge.input_dim(), usize::MAX);
        let m = msg(&huge);
        assert!(
            m.contains("image size 4294967297x4294967297 overflows"),
            "{m}"
        );
        // A layer whose in·out overflows, and a total that overflows only when summed.
        let mut layer = VaeConfig::classic(1, 1);
        layer.enc_hidden = vec![usize::MAX / 2, 3];
        let m = msg(&layer);
        assert!(m.contains("layer encoder.fc2"), "{m}");
        let mut sum = VaeConfig::classic(1, 1);
        sum.enc_hidden = vec![
            usize::MAX / 4,
            1,
            usize::MAX / 4,
            1,
            usize::MAX / 4,
            1,
            usize::MAX / 4,
        ];
        assert_eq!(sum.param_count_checked(), None);
        assert!(msg(&sum).contains("overflows"));
        let mut latent = VaeConfig::classic(28, 28);
        latent.latent = usize::MAX;
        assert!(msg(&latent).contains("latent size"));
        let mut deep = VaeConfig::classic(2, 2);
        deep.dec_hidden = vec![1; MAX_HIDDEN_LAYERS + 1];
        assert!(msg(&deep).contains("257 hidden layers"));
        let mut slope = VaeConfig::classic(2, 2);
        slope.activation = Activation::LeakyRelu(f32::NAN);
        assert!(msg(&slope).contains("slope"));
        let mut sigma = VaeConfig::classic(2, 2);
        sigma.likelihood = Likelihood::Gaussian {
            log_sigma: GaussianSigma::Fixed(f32::INFINITY),
        };
        assert!(msg(&sigma).contains("log sigma inf"));
        for (h, w) in [(0, 5), (5, 0)] {
            assert!(msg(&VaeConfig::classic(h, w)).contains("is empty"));
        }
        // The layout of an unvalidated configuration whose sizes overflow is empty.
        assert_eq!(huge.layout().total, 0);
        assert!(huge.layout().tensors.is_empty());
    }
}
