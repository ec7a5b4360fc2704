//! The VAE: its configuration, the layout of its parameters in one flat buffer, and the GPU
//! programs of its forward and backward passes.

pub mod vae;

pub use vae::{Activations, GpuParams, Gradients, Vae};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::tensor::VIEW_ALIGN;
use crate::ops::Activation;
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

/// Most elements of the flat parameter buffer, padding included: the GPU kernels (Adam's fused
/// update among them) index it with 32-bit integers.
pub const MAX_PARAMS: usize = u32::MAX as usize;

/// Sizes of a parameter layout, computed with checked arithmetic.
struct Sizes {
    input: usize,
    count: usize,
    total: usize,
}

/// Architecture of an MLP VAE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Image height and width; the input is their product of pixels.
    pub height: usize,
    pub width: usize,
    /// Hidden layer widths of the encoder (input → hidden… → 2·latent).
    pub enc_hidden: Vec<usize>,
    /// Hidden layer widths of the decoder (latent → hidden… → input).
    pub dec_hidden: Vec<usize>,
    pub latent: usize,
    pub activation: Activation,
    pub likelihood: Likelihood,
}

impl VaeConfig {
    /// The classic MNIST VAE: 784-400-20-400-784, ReLU, Bernoulli logits.
    pub fn classic(height: usize, width: usize) -> Self {
        VaeConfig {
            height,
            width,
            enc_hidden: vec![400],
            dec_hidden: vec![400],
            latent: 20,
            activation: Activation::Relu,
            likelihood: Likelihood::Bernoulli,
        }
    }

    /// Pixels per image, `height · width` (saturating: call [`VaeConfig::validate`] first, or use
    /// [`VaeConfig::input_dim_checked`]).
    pub fn input_dim(&self) -> usize {
        self.height.saturating_mul(self.width)
    }

    /// `height · width`, or `None` if the product overflows `usize`.
    pub fn input_dim_checked(&self) -> Option<usize> {
        self.height.checked_mul(self.width)
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
        let enc_out = self.latent.checked_mul(2).ok_or_else(|| {
            format!(
                "latent size {} overflows: the encoder's output 2*latent does not fit in {} bits",
                self.latent,
                usize::BITS
            )
        })?;
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
        for (prefix, first, hidden, last) in [
            ("encoder", input, &self.enc_hidden, enc_out),
            ("decoder", self.latent, &self.dec_hidden, input),
        ] {
            let dims: Vec<usize> = std::iter::once(first)
                .chain(hidden.iter().copied())
                .chain(std::iter::once(last))
                .collect();
            for (i, pair) in dims.windows(2).enumerate() {
                let (inp, out) = (pair[0], pair[1]);
                push(
                    &|| format!("layer {prefix}.fc{} ({inp} -> {out})", i + 1),
                    inp.checked_mul(out),
                )?;
                push(
                    &|| format!("layer {prefix}.fc{} bias ({out})", i + 1),
                    Some(out),
                )?;
            }
        }
        match self.likelihood {
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedShared,
            } => push(&|| "decoder.log_sigma".to_string(), Some(1))?,
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedPerPixel,
            } => push(&|| "decoder.log_sigma".to_string(), Some(input))?,
            _ => {}
        }
        Ok(sizes)
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

    /// Encoder layers, then decoder layers.
    pub fn layers(&self) -> (Vec<LayerSpec>, Vec<LayerSpec>) {
        let mk = |prefix: &str, dims: Vec<usize>, act: Activation| -> Vec<LayerSpec> {
            let n = dims.len() - 1;
            (0..n)
                .map(|i| LayerSpec {
                    name: format!("{prefix}.fc{}", i + 1),
                    inp: dims[i],
                    out: dims[i + 1],
                    act: if i + 1 == n {
                        Activation::Identity
                    } else {
                        act
                    },
                })
                .collect()
        };
        let mut enc_dims = vec![self.input_dim()];
        enc_dims.extend(&self.enc_hidden);
        enc_dims.push(self.latent.saturating_mul(2));
        let mut dec_dims = vec![self.latent];
        dec_dims.extend(&self.dec_hidden);
        dec_dims.push(self.input_dim());
        (
            mk("encoder", enc_dims, self.activation),
            mk("decoder", dec_dims, self.activation),
        )
    }

    /// Where each parameter lives in the flat parameter buffer. Sizes saturate instead of
    /// wrapping: call [`VaeConfig::validate`] first on a configuration from a file or flag.
    pub fn layout(&self) -> ParamLayout {
        let (enc, dec) = self.layers();
        let mut l = ParamLayout::default();
        for layer in enc.iter().chain(&dec) {
            l.push(&format!("{}.weight", layer.name), &[layer.inp, layer.out]);
            l.push(&format!("{}.bias", layer.name), &[layer.out]);
        }
        match self.likelihood {
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedShared,
            } => l.push("decoder.log_sigma", &[1]),
            Likelihood::Gaussian {
                log_sigma: GaussianSigma::LearnedPerPixel,
            } => l.push("decoder.log_sigma", &[self.input_dim()]),
            _ => {}
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
        let (enc, dec) = self.layers();
        for layer in enc.iter().chain(&dec) {
            let bound = 1.0 / (layer.inp as f32).sqrt();
            for suffix in ["weight", "bias"] {
                let spec = layout
                    .get(&format!("{}.{suffix}", layer.name))
                    .expect("layer in layout");
                for v in &mut flat[spec.offset..spec.offset + spec.len()] {
                    *v = bound * (2.0 * rng.uniform() as f32 - 1.0);
                }
            }
        }
    }
}

/// One linear layer `y = act(x·W + b)` with W (inp, out).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    pub name: String,
    pub inp: usize,
    pub out: usize,
    pub act: Activation,
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
        // The layout of an unvalidated configuration saturates instead of wrapping.
        assert_eq!(huge.layout().total, usize::MAX);
    }
}
