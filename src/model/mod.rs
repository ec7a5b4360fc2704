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

    pub fn input_dim(&self) -> usize {
        self.height * self.width
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(what));
        if self.input_dim() == 0 {
            return bad(format!(
                "image size {}x{} is empty",
                self.height, self.width
            ));
        }
        if self.latent == 0 {
            return bad("latent size must be at least 1".into());
        }
        if let Some(h) = self
            .enc_hidden
            .iter()
            .chain(&self.dec_hidden)
            .find(|&&h| h == 0)
        {
            return bad(format!("hidden layer width {h} must be at least 1"));
        }
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
        enc_dims.push(2 * self.latent);
        let mut dec_dims = vec![self.latent];
        dec_dims.extend(&self.dec_hidden);
        dec_dims.push(self.input_dim());
        (
            mk("encoder", enc_dims, self.activation),
            mk("decoder", dec_dims, self.activation),
        )
    }

    /// Where each parameter lives in the flat parameter buffer.
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
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let layout = self.layout();
        let mut flat = vec![0.0f32; layout.total];
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
        flat
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
        self.shape.iter().product()
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
        let offset = self.total.div_ceil(align) * align;
        let spec = ParamSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            offset,
        };
        self.total = offset + spec.len();
        self.tensors.push(spec);
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Number of parameters (padding excluded).
    pub fn count(&self) -> usize {
        self.tensors.iter().map(|t| t.len()).sum()
    }
}
