//! The trainer: one library type behind the `train_gpu` example and `wgvae train`.
//!
//! A training step is one command encoder replaying prepared dispatches — batch gather,
//! forward, loss, backward, Adam, loss bookkeeping, step counter — submitted once. Nothing is
//! read back per step: the loss sums accumulate on the GPU and are read at most every
//! `readback_every` steps and at the end of each epoch.

pub mod checkpoint;
pub mod objective;
pub mod resources;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{self, Dataset, Split};
use crate::error::{Error, Result};
use crate::eval::{EvalReport, Evaluator};
use crate::gpu::{GpuContext, Program, Staging, Tensor};
use crate::model::objective::{metrics_program, slots, step_program};
use crate::model::{
    Activations, Arch, Gradients, Likelihood, MetricMeans, ParamGroup, Phase, Vae, VaeConfig,
};
use crate::ops::Activation;
use crate::ops::adam::AdamConfig;
use crate::ops::condition::gather_labels;
use crate::ops::data::{Binarize, GatherOptions, StepState, binarize_split, gather_with};
use crate::ops::reparam::{RngStep, Stream};
use crate::rng::HostRng;
use checkpoint::{Checkpoint, TrainState};

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DataSource {
    /// The built-in procedural sprites (64×64, after dSprites).
    Sprites {
        n_train: usize,
        n_test: usize,
        seed: u64,
    },
    /// A directory of image files: IDX (`train-images-idx3-ubyte[.gz]`, `t10k-…`, greyscale)
    /// or NumPy (`train-images.npy`, `test-images.npy`, greyscale or colour; see
    /// [`crate::data::load_dir`]). Named `idx` in run files for compatibility.
    Idx { dir: PathBuf },
}

impl DataSource {
    pub fn load(&self) -> Result<Split> {
        Ok(match self {
            DataSource::Sprites {
                n_train,
                n_test,
                seed,
            } => data::sprites::generate(&data::sprites::SpritesConfig {
                n_train: *n_train,
                n_test: *n_test,
                seed: *seed,
            })?,
            DataSource::Idx { dir } => data::load_dir(dir)?,
        })
    }
}

/// Keeps the training images whose label is in `classes` (all with `None`); the test set
/// is kept whole.
fn keep_classes(mut split: Split, classes: Option<&[u8]>) -> Result<Split> {
    let Some(classes) = classes else {
        return Ok(split);
    };
    let Some(labels) = &split.train.labels else {
        return Err(Error::Config(format!(
            "--classes: the training set `{}` has no labels (an IDX train-labels-idx1-ubyte[.gz] \
             or train-labels.npy next to the images)",
            split.train.name
        )));
    };
    let keep: Vec<usize> = (0..labels.len())
        .filter(|&i| classes.contains(&labels[i]))
        .collect();
    if keep.is_empty() {
        return Err(Error::Config(format!(
            "--classes {classes:?}: no training image of `{}` has one of these labels",
            split.train.name
        )));
    }
    split.train = split.train.subset(&keep);
    Ok(split)
}

/// Architecture choices that do not depend on the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Fully connected only, or convolutions first.
    #[serde(default)]
    pub arch: ArchKind,
    /// Output channels of each convolution (`--arch conv`); empty: [`Arch::conv_for`] the
    /// image size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conv_channels: Vec<usize>,
    /// Kernel size of the convolutions (stride 2, padding (kernel − 1)/2).
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: usize,
    /// `--arch conv` with a fully connected decoder instead of the mirror.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mlp_decoder: bool,
    pub enc_hidden: Vec<usize>,
    pub dec_hidden: Vec<usize>,
    pub latent: usize,
    pub activation: Activation,
    pub likelihood: Likelihood,
    /// The posterior family (`--posterior`); absent in older runs: diagonal.
    #[serde(default)]
    pub posterior: crate::model::PosteriorKind,
}

fn default_conv_kernel() -> usize {
    4
}

/// The family of architecture a run asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ArchKind {
    #[default]
    Mlp,
    Conv,
}

impl Default for ModelSpec {
    /// One hidden layer of 400, latent 20, ReLU, Bernoulli logits.
    fn default() -> Self {
        ModelSpec {
            arch: ArchKind::Mlp,
            conv_channels: Vec::new(),
            conv_kernel: default_conv_kernel(),
            mlp_decoder: false,
            enc_hidden: vec![400],
            dec_hidden: vec![400],
            latent: 20,
            activation: Activation::Relu,
            likelihood: Likelihood::Bernoulli,
            posterior: crate::model::PosteriorKind::Diagonal,
        }
    }
}

impl ModelSpec {
    /// The architecture for `channels × height × width` images.
    pub fn for_images(&self, channels: usize, height: usize, width: usize) -> VaeConfig {
        let arch = match self.arch {
            ArchKind::Mlp => Arch::Mlp,
            ArchKind::Conv => Arch::Conv {
                channels: if self.conv_channels.is_empty() {
                    Arch::conv_channels_for(height, width)
                } else {
                    self.conv_channels.clone()
                },
                kernel: self.conv_kernel,
                stride: 2,
                padding: self.conv_kernel.saturating_sub(1) / 2,
                mlp_decoder: self.mlp_decoder,
            },
        };
        VaeConfig {
            height,
            width,
            channels,
            arch,
            enc_hidden: self.enc_hidden.clone(),
            dec_hidden: self.dec_hidden.clone(),
            latent: self.latent,
            activation: self.activation,
            likelihood: self.likelihood,
            classes: None,
            posterior: self.posterior,
        }
    }
}

/// The number of classes of a conditional model of `split`: max label + 1 over its training
/// and test labels. Errors name the set without labels.
pub fn classes_of(split: &Split) -> Result<usize> {
    let mut max = 0u8;
    for (set, what, idx, npy) in [
        (&split.train, "training", "train", "train"),
        (&split.test, "test", "t10k", "test"),
    ] {
        let Some(labels) = &set.labels else {
            return Err(Error::Config(format!(
                "--conditional: the {what} set `{}` has no labels (an IDX \
                 {idx}-labels-idx1-ubyte[.gz] or {npy}-labels.npy next to the images); a \
                 conditional VAE needs the class of every image",
                set.name
            )));
        };
        max = max.max(labels.iter().copied().max().unwrap_or(0));
    }
    Ok(max as usize + 1)
}

/// Everything a run needs; serialized into the run directory and the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: DataSource,
    pub model: ModelSpec,
    pub epochs: usize,
    pub batch: usize,
    pub adam: AdamConfig,
    /// Weight of the KL term (β-VAE; 1 gives the ELBO).
    pub beta: f32,
    pub seed: u64,
    /// Run directory.
    pub out: PathBuf,
    /// Importance samples of the IWAE bound (0: not computed).
    pub iwae_k: usize,
    /// Compute the IWAE bound every this many epochs (0: after the last epoch only).
    pub iwae_every: usize,
    pub eval_batch: usize,
    /// Read the running loss back at most every this many steps (the progress bar's refresh).
    pub readback_every: usize,
    /// No progress bar and no per-epoch lines.
    pub quiet: bool,
    /// Write the PNG grids at the end.
    pub pictures: bool,
    /// Binarisation of the images (none, fixed, dynamic); absent in older runs: none.
    #[serde(default)]
    pub binarize: Binarize,
    /// KL warm-up: the KL's weight in the gradient rises linearly from β/N at the first step to
    /// β at step N and stays there (0: off). Absent in older runs: off.
    #[serde(default)]
    pub kl_warmup: usize,
    /// Start the decoder's output bias at the training images' marginal (log-odds of the mean
    /// pixel for Bernoulli, the mean for Gaussian; per pixel for a linear output layer, per
    /// channel for a convolutional one) instead of at random, so that the first steps are not
    /// spent learning the background. Absent in older runs: off.
    #[serde(default)]
    pub output_bias_init: bool,
    /// The objective (absent in older runs: the ELBO weighted by `beta`).
    #[serde(default)]
    pub objective: objective::ObjectiveSpec,
    /// Cyclical annealing of the KL's weight (absent: none).
    #[serde(default)]
    pub kl_cycles: Option<objective::KlCycles>,
    /// Train only on the training images whose label is in this list (`--classes`); the
    /// test set is kept whole. Absent in older runs: every image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u8>>,
    /// A conditional VAE (`--conditional`): the images' class labels enter the encoder and the
    /// decoder as one-hot vectors over max label + 1 classes (of the training and test labels;
    /// recorded in the model). Absent in older runs: off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conditional: bool,
    /// A fresh run may replace the files of another run in `out` (never recorded).
    #[serde(skip)]
    pub overwrite: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: DataSource::Sprites {
                n_train: 10_000,
                n_test: 1_000,
                seed: 0,
            },
            model: ModelSpec::default(),
            epochs: 5,
            batch: 128,
            adam: AdamConfig::default(),
            beta: 1.0,
            kl_warmup: 0,
            output_bias_init: false,
            objective: objective::ObjectiveSpec::Elbo,
            kl_cycles: None,
            seed: 0,
            out: PathBuf::from("runs/latest"),
            iwae_k: 0,
            iwae_every: 0,
            eval_batch: 500,
            readback_every: 50,
            quiet: false,
            pictures: true,
            binarize: Binarize::None,
            classes: None,
            conditional: false,
            overwrite: false,
        }
    }
}

/// A configuration value out of its range: the field (as in the run's JSON), its value and the
/// rule it breaks. The caller words it for where the value came from: a command-line flag
/// ([`Invalid::flag`]) or a field of a stored run configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    /// Path of the field in the run configuration, e.g. `adam.lr`.
    pub field: &'static str,
    pub value: String,
    pub rule: String,
}

impl Invalid {
    fn new(field: &'static str, value: impl std::fmt::Display, rule: impl Into<String>) -> Self {
        Invalid {
            field,
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// The command-line flag that sets this field.
    pub fn flag(&self) -> &'static str {
        match self.field {
            "batch" => "--batch",
            "epochs" => "--epochs",
            "adam.lr" => "--lr",
            "adam.beta1" => "--adam-beta1",
            "adam.beta2" => "--adam-beta2",
            "adam.eps" => "--adam-eps",
            "adam.clip_norm" => "--clip",
            "adam.weight_decay" => "--weight-decay",
            "beta" => "--beta",
            "kl_warmup" => "--kl-warmup",
            "kl_cycles.cycles" => "--kl-cycles",
            "kl_cycles.ratio" => "--kl-cycle-ratio",
            "kl_cycles.period" => "a setting",
            "objective.gamma" => "--gamma",
            "objective.c_max" => "--capacity",
            "objective.steps" => "--capacity-steps",
            "objective.alpha" => "--alpha",
            "objective.disc.layers" => "--disc-layers",
            "objective.disc.width" | "objective.disc" => "--disc-width",
            "objective.disc.adam.lr" => "--disc-lr",
            "objective.k" => "--iwae-train-k",
            "model.conv_channels" => "--conv-channels",
            "model.conv_kernel" => "--conv-kernel",
            "model.latent" => "--latent",
            "model.enc_hidden" | "model.dec_hidden" => "--hidden",
            "model.activation" => "--activation",
            "model.likelihood.log_sigma" => "--log-sigma",
            "data.n_train" => "--n-train",
            "data.n_test" => "--n-test",
            "data.dir" => "--data",
            "out" => "--out",
            "iwae_k" => "--iwae-k",
            "iwae_every" => "--iwae-every",
            _ => "a setting",
        }
    }

    /// As an error about a command-line flag: `--lr -1: must be a positive number`.
    pub fn as_flag_error(&self) -> Error {
        Error::Config(format!("{} {}: {}", self.flag(), self.value, self.rule))
    }

    /// As an error about a stored run configuration: names the file and the field.
    pub fn as_stored_error(&self, path: &Path, prefix: &str) -> Error {
        Error::Checkpoint {
            path: path.to_path_buf(),
            detail: format!(
                "field `{prefix}{}` is {}: {}",
                self.field, self.value, self.rule
            ),
        }
    }
}

/// Largest batch, latent size, hidden width, image count or sample count a configuration may
/// name (2^24). Far beyond any useful value; keeps every product of two of them inside `u64`
/// and every row count inside the kernels' `u32` indices.
pub const MAX_COUNT: usize = 1 << 24;

impl TrainConfig {
    /// Checks every value of the configuration; the first one out of range is returned.
    pub fn check(&self) -> std::result::Result<(), Invalid> {
        let count = |field: &'static str, v: usize, min: usize| {
            if v < min || v > MAX_COUNT {
                Err(Invalid::new(
                    field,
                    v,
                    format!("must be in {min}..={MAX_COUNT}"),
                ))
            } else {
                Ok(())
            }
        };
        let positive = |field: &'static str, v: f32| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Invalid::new(field, v, "must be a positive number"))
            }
        };
        let non_negative = |field: &'static str, v: f32, zero: &str| {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Invalid::new(
                    field,
                    v,
                    format!("must be a number ≥ 0 ({zero})"),
                ))
            }
        };
        let unit = |field: &'static str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Invalid::new(field, v, "must be in [0, 1)"))
            }
        };
        count("batch", self.batch, 1)?;
        count("epochs", self.epochs, 1)?;
        positive("adam.lr", self.adam.lr)?;
        unit("adam.beta1", self.adam.beta1)?;
        unit("adam.beta2", self.adam.beta2)?;
        positive("adam.eps", self.adam.eps)?;
        non_negative(
            "adam.clip_norm",
            self.adam.clip_norm,
            "0 turns clipping off",
        )?;
        non_negative("adam.weight_decay", self.adam.weight_decay, "0 gives Adam")?;
        non_negative("beta", self.beta, "1 gives the ELBO")?;
        count("kl_warmup", self.kl_warmup, 0)?;
        if let Some(c) = &self.kl_cycles {
            count("kl_cycles.cycles", c.cycles, 1)?;
            if !(c.ratio > 0.0 && c.ratio <= 1.0) {
                return Err(Invalid::new(
                    "kl_cycles.ratio",
                    c.ratio,
                    "must be in (0, 1]",
                ));
            }
            if let Some(p) = c.period {
                count("kl_cycles.period", p, 1)?;
            }
            if self.kl_warmup > 0 {
                return Err(Invalid::new(
                    "kl_warmup",
                    self.kl_warmup,
                    "a warm-up and cyclical annealing (--kl-cycles) cannot be combined",
                ));
            }
        }
        match &self.objective {
            objective::ObjectiveSpec::Elbo => {}
            objective::ObjectiveSpec::Iwae { k } => {
                let max = objective::MAX_IWAE_TRAIN_K;
                if *k == 0 || *k > max {
                    return Err(Invalid::new(
                        "objective.k",
                        k,
                        format!("must be in 1..={max}"),
                    ));
                }
                if k.checked_mul(self.batch).is_none_or(|n| n > MAX_COUNT) {
                    return Err(Invalid::new(
                        "objective.k",
                        k,
                        format!("K·batch must be at most {MAX_COUNT}"),
                    ));
                }
                if self.beta != 1.0 {
                    return Err(Invalid::new(
                        "beta",
                        self.beta,
                        "the IWAE objective has no KL weight; drop --beta",
                    ));
                }
                if let Some(c) = &self.kl_cycles {
                    return Err(Invalid::new(
                        "kl_cycles.cycles",
                        c.cycles,
                        "the IWAE objective has no KL weight to schedule; drop --kl-cycles",
                    ));
                }
                if self.kl_warmup > 0 {
                    return Err(Invalid::new(
                        "kl_warmup",
                        self.kl_warmup,
                        "the IWAE objective has no KL weight to schedule; drop --kl-warmup",
                    ));
                }
            }
            objective::ObjectiveSpec::TcVae { alpha, gamma, .. } => {
                non_negative("objective.alpha", *alpha, "0 drops the mutual information")?;
                non_negative("objective.gamma", *gamma, "0 drops the dimension-wise KL")?;
                if self.kl_warmup > 0 || self.kl_cycles.is_some() {
                    return Err(Invalid::new(
                        "kl_warmup",
                        self.kl_warmup,
                        "β-TCVAE weighs its terms itself; drop --kl-warmup and --kl-cycles",
                    ));
                }
            }
            objective::ObjectiveSpec::FactorVae { gamma, disc } => {
                non_negative("objective.gamma", *gamma, "0 gives the ELBO")?;
                if disc.latent != self.model.latent {
                    return Err(Invalid::new(
                        "objective.disc.latent",
                        disc.latent,
                        format!(
                            "the discriminator must take the model's {} latent dimensions",
                            self.model.latent
                        ),
                    ));
                }
                let max_layers = crate::model::MAX_HIDDEN_LAYERS;
                if disc.layers == 0 || disc.layers > max_layers {
                    return Err(Invalid::new(
                        "objective.disc.layers",
                        disc.layers,
                        format!("must be in 1..={max_layers}"),
                    ));
                }
                count("objective.disc.width", disc.width, 1)?;
                positive("objective.disc.adam.lr", disc.adam.lr)?;
                if let Err(e) = disc.validate() {
                    return Err(Invalid::new(
                        "objective.disc",
                        format!("{}x{}", disc.layers, disc.width),
                        e.to_string(),
                    ));
                }
            }
            objective::ObjectiveSpec::Capacity {
                gamma,
                c_max,
                steps,
            } => {
                positive("objective.gamma", *gamma)?;
                non_negative("objective.c_max", *c_max, "nats")?;
                if let Some(s) = steps {
                    count("objective.steps", *s, 0)?;
                }
                if self.kl_warmup > 0 || self.kl_cycles.is_some() {
                    return Err(Invalid::new(
                        "objective.c_max",
                        c_max,
                        "the capacity objective schedules the KL itself; drop --kl-warmup and --kl-cycles",
                    ));
                }
            }
        }
        count("model.latent", self.model.latent, 1)?;
        for &c in &self.model.conv_channels {
            if c == 0 || c > crate::model::MAX_CHANNELS {
                return Err(Invalid::new(
                    "model.conv_channels",
                    c,
                    format!("each must be between 1 and {}", crate::model::MAX_CHANNELS),
                ));
            }
        }
        if self.model.conv_channels.len() > crate::model::MAX_HIDDEN_LAYERS {
            return Err(Invalid::new(
                "model.conv_channels",
                self.model.conv_channels.len(),
                format!("at most {} convolutions", crate::model::MAX_HIDDEN_LAYERS),
            ));
        }
        if self.model.arch == ArchKind::Conv && !(2..=64).contains(&self.model.conv_kernel) {
            return Err(Invalid::new(
                "model.conv_kernel",
                self.model.conv_kernel,
                "must be between 2 and 64 (stride 2)",
            ));
        }
        for (field, widths) in [
            ("model.enc_hidden", &self.model.enc_hidden),
            ("model.dec_hidden", &self.model.dec_hidden),
        ] {
            if widths.is_empty() {
                return Err(Invalid::new(
                    field,
                    "empty",
                    "name at least one hidden width",
                ));
            }
            for &h in widths.iter() {
                count(field, h, 1)?;
            }
        }
        if let Err(e) = self.model.activation.validate() {
            return Err(Invalid::new(
                "model.activation",
                format!("{:?}", self.model.activation),
                e.to_string(),
            ));
        }
        if let Likelihood::Gaussian {
            log_sigma: crate::model::GaussianSigma::Fixed(v),
        } = self.model.likelihood
            && crate::ops::likelihood::check_fixed_log_sigma(v).is_err()
        {
            return Err(Invalid::new(
                "model.likelihood.log_sigma",
                v,
                format!(
                    "must be a finite number ≥ {} (ln 0.01, the floor of σ), `shared` or `per-pixel`",
                    crate::ops::likelihood::LOG_SIGMA_MIN
                ),
            ));
        }
        match &self.data {
            DataSource::Sprites {
                n_train, n_test, ..
            } => {
                count("data.n_train", *n_train, 1)?;
                count("data.n_test", *n_test, 1)?;
            }
            DataSource::Idx { dir } => {
                if dir.to_str().is_none() {
                    return Err(Invalid::new(
                        "data.dir",
                        dir.display(),
                        "the path is not valid UTF-8 and cannot be recorded in the run's configuration; rename it",
                    ));
                }
            }
        }
        if self.out.to_str().is_none() {
            return Err(Invalid::new(
                "out",
                self.out.display(),
                "the path is not valid UTF-8 and cannot be recorded in the run's configuration; rename it",
            ));
        }
        if self.iwae_k > MAX_COUNT {
            return Err(Invalid::new(
                "iwae_k",
                self.iwae_k,
                format!("must be in 0..={MAX_COUNT}"),
            ));
        }
        count("eval_batch", self.eval_batch, 1)?;
        count("readback_every", self.readback_every, 1)?;
        Ok(())
    }

    /// [`TrainConfig::check`] with the error worded for command-line flags.
    /// The model of this run for `split`: [`ModelSpec::for_images`] of its image size, with
    /// [`classes_of`] the split for a conditional run.
    pub fn model_for(&self, split: &Split) -> Result<VaeConfig> {
        let mut model =
            self.model
                .for_images(split.train.channels, split.train.height, split.train.width);
        if self.conditional {
            model.classes = Some(classes_of(split)?);
        }
        Ok(model)
    }

    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|e| e.as_flag_error())
    }

    /// The run configuration stored in a checkpoint's `run` metadata, parsed and checked; every
    /// error names the file and the field.
    pub fn from_run_json(path: &Path, run: &serde_json::Value) -> Result<TrainConfig> {
        let cfg: TrainConfig =
            serde_json::from_value(run.clone()).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                detail: format!("metadata field `run`: {e}"),
            })?;
        cfg.check().map_err(|e| e.as_stored_error(path, "run."))?;
        Ok(cfg)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    /// Training loss (Σ weight · term: recon + β·KL for the ELBO), nats per sample, averaged
    /// over the epoch.
    pub train_loss: f64,
    /// The objective's terms averaged over the epoch, `train_<name>` (`train_recon`,
    /// `train_kl`), written as fields of the line.
    #[serde(flatten)]
    pub train_terms: std::collections::BTreeMap<String, f64>,
    /// Test −ELBO and its parts.
    pub test_neg_elbo: f64,
    pub test_recon: f64,
    pub test_kl: f64,
    pub test_neg_iwae: Option<f64>,
    pub iwae_k: Option<usize>,
    pub active_units: usize,
    /// Test KL per latent dimension, nats.
    #[serde(default)]
    pub test_kl_per_dim: Vec<f64>,
    /// Factor probe of the test means (data sets with ground-truth factors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::probe::ProbeReport>,
    pub train_seconds: f64,
    pub samples_per_second: f64,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub epochs: Vec<EpochMetrics>,
    pub last_eval: Option<EvalReport>,
    pub out: PathBuf,
    /// Seconds from `Trainer::new` to the end of the first step.
    pub first_step_seconds: Option<f64>,
}

/// The training state on the GPU and the prepared programs.
pub struct Trainer<'c> {
    ctx: &'c GpuContext,
    pub cfg: TrainConfig,
    pub vae: Vae,
    pub split: Split,
    train_images: Tensor<u8>,
    /// A conditional model's training labels (N,).
    train_labels: Option<Tensor<u32>>,
    perm: Tensor<u32>,
    pub act: Activations,
    pub grads: Gradients,
    /// The optimizer state of the model's parameters (one group: every parameter).
    pub group: ParamGroup,
    objective: objective::TrainObjective,
    pub state: StepState,
    metrics: Tensor<f32>,
    staging: Staging,
    step_program: Program,
    evaluator: Evaluator,
    /// Epochs finished.
    pub epoch: usize,
    /// Steps finished.
    pub step: u64,
    started: Instant,
    /// The epoch of the checkpoint this run was resumed from.
    resumed_from: Option<usize>,
    /// The epoch of the last checkpoint this process wrote.
    saved_epoch: Option<usize>,
}

impl<'c> Trainer<'c> {
    /// A fresh run: loads the data, initialises the model, prepares every program.
    ///
    /// Refuses a run directory that holds another run's files unless `cfg.overwrite`; with it,
    /// those files are removed once everything is prepared, just before training starts.
    pub fn new(ctx: &'c GpuContext, mut cfg: TrainConfig) -> Result<Self> {
        let started = Instant::now();
        if let DataSource::Idx { dir } = &mut cfg.data
            && let Ok(abs) = std::path::absolute(&*dir)
        {
            // Recorded absolute, so that `--resume` works from any working directory.
            *dir = abs;
        }
        cfg.validate()?;
        resources::host_budget()?;
        let existing = run_files(&cfg.out);
        if !existing.is_empty() && !cfg.overwrite {
            return Err(Error::Config(format!(
                "--out {}: the directory holds another run ({}); continue it with --resume {}, \
                 choose another --out, or pass --overwrite to replace it",
                cfg.out.display(),
                existing.join(", "),
                cfg.out.display()
            )));
        }
        if let DataSource::Sprites {
            n_train, n_test, ..
        } = cfg.data
        {
            let n = (n_train as u64).saturating_add(n_test as u64);
            resources::check_host(
                n.saturating_mul((data::sprites::SIZE * data::sprites::SIZE) as u64 + 64),
                &format!("{n} generated sprites"),
                "--n-train or --n-test",
            )?;
        }
        let split = keep_classes(cfg.data.load()?, cfg.classes.as_deref())?;
        let model = cfg.model_for(&split)?;
        check_resources(ctx, &cfg, &model, &split)?;
        let mut params = model.init_params(cfg.seed);
        if cfg.output_bias_init {
            init_output_bias(&model, &split.train, &mut params);
        }
        let fresh = Resumed {
            params: &params,
            moments: None,
            groups: Vec::new(),
            state: TrainState { epoch: 0, step: 0 },
        };
        let trainer = Self::build(ctx, cfg, split, fresh, started)?;
        for name in &existing {
            let path = trainer.cfg.out.join(name);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(trainer)
    }

    /// Continues the run in `dir` for `more_epochs` epochs from its checkpoint.
    pub fn resume(
        ctx: &'c GpuContext,
        dir: &Path,
        more_epochs: usize,
        quiet: Option<bool>,
    ) -> Result<Self> {
        Self::resume_with(
            ctx,
            dir,
            &ResumeOptions {
                more_epochs,
                quiet,
                data: None,
            },
        )
    }

    /// Continues the run in `dir` from its checkpoint, with the run's own configuration.
    pub fn resume_with(ctx: &'c GpuContext, dir: &Path, opts: &ResumeOptions) -> Result<Self> {
        let started = Instant::now();
        if dir.to_str().is_none() {
            return Err(Error::Config(format!(
                "--resume {}: the path is not valid UTF-8; rename it",
                dir.display()
            )));
        }
        if opts.more_epochs == 0 {
            return Err(Error::Config(
                "--epochs 0: with --resume, --epochs is the number of epochs to add and must be at least 1".into(),
            ));
        }
        let path = dir.join(checkpoint::FILE_NAME);
        let ck = Checkpoint::load(&path)?;
        let mut cfg = TrainConfig::from_run_json(&path, &ck.run)?;
        cfg.epochs = ck
            .state
            .epoch
            .checked_add(opts.more_epochs)
            .filter(|&e| e <= MAX_COUNT)
            .ok_or_else(|| Error::Checkpoint {
                path: path.clone(),
                detail: format!(
                    "field `state.epoch` is {}: adding {} epochs goes past the limit of {MAX_COUNT}",
                    ck.state.epoch, opts.more_epochs
                ),
            })?;
        cfg.out = dir.to_path_buf();
        if let Some(q) = opts.quiet {
            cfg.quiet = q;
        }
        let recorded_dir = match (&mut cfg.data, &opts.data) {
            (DataSource::Idx { dir }, Some(new_dir)) => {
                *dir = std::path::absolute(new_dir).unwrap_or_else(|_| new_dir.clone());
                None
            }
            (DataSource::Sprites { .. }, Some(new_dir)) => {
                return Err(Error::Config(format!(
                    "--data {} with --resume: this run trained on the built-in sprites, which are generated, not read",
                    new_dir.display()
                )));
            }
            (DataSource::Idx { dir }, None) => Some(dir.clone()),
            (DataSource::Sprites { .. }, None) => None,
        };
        cfg.validate()?;
        let split = cfg.data.load().map_err(|e| match &recorded_dir {
            Some(d) => Error::Context {
                context: format!(
                    "the run's data directory {} (recorded in {}, field `run.data.dir`{}) cannot be read; if the data moved, pass --data NEW_DIR with --resume",
                    d.display(),
                    path.display(),
                    if d.is_relative() {
                        ", relative to the working directory the run started from"
                    } else {
                        ""
                    }
                ),
                inner: Box::new(e),
            },
            None => e,
        })?;
        let split = keep_classes(split, cfg.classes.as_deref())?;
        let want = cfg.model_for(&split)?;
        if want != ck.model {
            return Err(Error::Checkpoint {
                path,
                detail: format!(
                    "written for the architecture {}, but the data and run configuration need {}",
                    serde_json::to_string(&ck.model).unwrap_or_default(),
                    serde_json::to_string(&want).unwrap_or_default()
                ),
            });
        }
        check_resources(ctx, &cfg, &want, &split)?;
        let moments = match (ck.adam_m, ck.adam_v) {
            (Some(m), Some(v)) => Some((m, v)),
            _ => {
                return Err(Error::Checkpoint {
                    path,
                    detail: "no optimizer state (the `optimizer.adam_m.*` and `optimizer.adam_v.*` tensors): cannot resume exactly".into(),
                });
            }
        };
        let groups = match &cfg.objective {
            objective::ObjectiveSpec::FactorVae { disc, .. } => {
                vec![Checkpoint::read_group(&path, &disc.layout())?]
            }
            _ => Vec::new(),
        };
        let resumed = Resumed {
            params: &ck.params,
            moments,
            groups,
            state: ck.state,
        };
        let mut trainer = Self::build(ctx, cfg, split, resumed, started)?;
        trainer.resumed_from = Some(trainer.epoch);
        Ok(trainer)
    }

    fn build(
        ctx: &'c GpuContext,
        cfg: TrainConfig,
        mut split: Split,
        from: Resumed<'_>,
        started: Instant,
    ) -> Result<Self> {
        let Resumed {
            params,
            moments,
            groups,
            state: state0,
        } = from;
        binarize_split(&mut split, cfg.binarize, cfg.seed);
        let model = cfg.model_for(&split)?;
        let shape = |d: &Dataset| (d.channels, d.height, d.width);
        if shape(&split.test) != shape(&split.train) {
            return Err(Error::Config(format!(
                "train images are {}x{}x{} (channels x height x width) but test images are {}x{}x{}",
                split.train.channels,
                split.train.height,
                split.train.width,
                split.test.channels,
                split.test.height,
                split.test.width
            )));
        }
        let vae = Vae::new(ctx, &model, params)?;
        let pixels = model.input_dim();
        let train_images = Tensor::from_slice(
            ctx,
            "train images",
            &[split.train.n, pixels],
            &split.train.pixels,
        )?;
        let perm = Tensor::zeros(ctx, "epoch order", &[split.train.n])?;
        // A conditional model's training labels live on the GPU next to the images (as u32,
        // 4 bytes an image); `model_for` checked that there are labels.
        let train_labels = match (&vae.condition, &split.train.labels) {
            (Some(_), Some(l)) => {
                let wide: Vec<u32> = l.iter().map(|&v| v as u32).collect();
                Some(Tensor::from_slice(
                    ctx,
                    "train labels",
                    &[split.train.n],
                    &wide,
                )?)
            }
            _ => None,
        };
        let act = vae.activations(ctx, cfg.batch, cfg.objective.train_samples())?;
        let grads = vae.gradients(ctx, &act)?;
        let group = ParamGroup::new(ctx, "vae", &vae.layout, cfg.adam)?;
        if let Some((m, v)) = &moments {
            group.load_moments(ctx, m, v)?;
        }
        let steps_per_epoch = split.train.n.div_ceil(cfg.batch);
        let mut cfg = cfg;
        resolve_schedules(&mut cfg, steps_per_epoch);
        let ramp = match (&cfg.kl_cycles, cfg.kl_warmup) {
            (Some(c), _) => {
                let period = c.period.unwrap_or(1);
                (c.ramp(period), period)
            }
            (None, w) => (w, 0),
        };
        let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let objective = objective::TrainObjective::new(
            ctx,
            &cfg,
            (to_u32(ramp.0), to_u32(ramp.1)),
            &vae.posterior,
            split.train.n,
            groups.first(),
        )?;
        let n_metrics = slots::len(objective.objective.terms().len());
        let state = StepState::new(ctx, "step state")?;
        let metrics = Tensor::zeros(ctx, "train metrics", &[n_metrics])?;
        let staging = Staging::new(ctx, (n_metrics * 4) as u64)?;

        let mut gather = Program::new();
        gather.push(gather_with(
            ctx,
            "batch gather",
            &train_images,
            pixels,
            &perm,
            &act.x,
            0,
            GatherOptions {
                state: Some(&state),
                weights: Some(&act.w),
                binarize: (cfg.binarize == Binarize::Dynamic).then_some(cfg.seed),
            },
        )?);
        if let (Some(labels), Some(out)) = (&train_labels, &act.labels) {
            gather.push(gather_labels(
                ctx,
                "label gather",
                labels,
                &perm,
                out,
                0,
                Some(&state),
            )?);
        }
        let mut gradients = vae.forward_program_with(
            ctx,
            &act,
            Some(&grads),
            objective.kl_weight(&state),
            cfg.seed,
            RngStep::State(&state),
            Stream::Train,
        )?;
        gradients.extend(objective.after_forward(ctx, &act, &grads)?);
        gradients.extend(vae.backward_program_with(
            ctx,
            &act,
            &grads,
            objective.latent_terms(ctx, &act, &grads)?,
        )?);
        let mut phases = vec![Phase {
            name: "vae".into(),
            gradients,
            update: group.update_program(ctx, &vae.params, &grads.params, &state)?,
        }];
        phases.extend(objective.extra_phases(ctx, &act, cfg.seed, &state)?);
        let mut bookkeeping = metrics_program(
            ctx,
            objective.objective.as_ref(),
            &objective.rows(&act),
            &metrics,
            Some(&act.w),
        )?;
        bookkeeping.push(state.advance(ctx)?);
        let p = step_program(gather, phases, bookkeeping);

        let evaluator =
            Evaluator::new(ctx, &vae, &split.test, cfg.eval_batch, cfg.iwae_k, cfg.seed)?;
        std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
        Ok(Trainer {
            ctx,
            cfg,
            vae,
            split,
            train_images,
            train_labels,
            perm,
            act,
            grads,
            group,
            objective,
            state,
            metrics,
            staging,
            step_program: p,
            evaluator,
            epoch: state0.epoch,
            step: state0.step,
            started,
            resumed_from: None,
            saved_epoch: None,
        })
    }

    /// Dispatches recorded per training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.step_program.len()
    }

    /// Every image once per epoch: the last step takes the remainder, n − (steps − 1)·batch
    /// rows, and averages its loss over them (the gather's row weights).
    pub fn steps_per_epoch(&self) -> usize {
        self.split.train.n.div_ceil(self.cfg.batch)
    }

    /// Encodes and submits one training step (no wait, no readback).
    pub fn submit_step(&mut self) -> Result<wgpu::SubmissionIndex> {
        let mut enc = self.ctx.encoder("train step");
        self.step_program.record(&mut enc, "train step");
        let idx = self.ctx.submit("submitting a training step", enc)?;
        self.step += 1;
        Ok(idx)
    }

    /// Uploads the epoch's order of the training images and positions the step state.
    pub fn begin_epoch(&mut self) -> Result<()> {
        let order = HostRng::derive(self.cfg.seed, 0xE90C_0000 + self.epoch as u64)
            .permutation(self.split.train.n);
        self.perm.write(self.ctx, &order)?;
        let step =
            u32::try_from(self.step).map_err(|_| Error::Config("more than 2^32 steps".into()))?;
        self.state.set(self.ctx, step, step)?;
        self.metrics
            .write(self.ctx, &vec![0.0; self.metrics.len()])?;
        Ok(())
    }

    /// Reads the sums of the objective's terms over the epoch so far, as means per sample.
    pub fn read_metrics(&self) -> Result<MetricMeans> {
        let raw = self.staging.read(
            self.ctx,
            self.metrics.buffer(),
            self.metrics.offset(),
            (self.metrics.len() * 4) as u64,
        )?;
        Ok(MetricMeans::from_slots(
            self.objective.objective.as_ref(),
            bytemuck::cast_slice(&raw),
        ))
    }

    fn nonfinite_error(&self) -> Error {
        let ck = self.cfg.out.join(checkpoint::FILE_NAME);
        let kept = match (self.saved_epoch, self.resumed_from) {
            (Some(e), _) => format!(
                "the checkpoint of epoch {e}, the last good one, is kept at {}",
                ck.display()
            ),
            (None, Some(e)) => format!(
                "the checkpoint this run resumed from (epoch {e}) is left unchanged at {}",
                ck.display()
            ),
            (None, None) => "no checkpoint was written".to_string(),
        };
        Error::NonFinite(format!(
            "the training loss became NaN or infinite in epoch {} (by step {}); stopping. Try a lower --lr (this run: {:e}). {kept}",
            self.epoch + 1,
            self.step,
            self.cfg.adam.lr
        ))
    }

    /// Writes the checkpoint of the current state (atomically).
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let params = self.vae.read_params(self.ctx)?;
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "parameter {i} is not finite; the checkpoint in {} is left as it was",
                self.cfg.out.display()
            )));
        }
        let ck = Checkpoint {
            model: self.vae.cfg.clone(),
            run: serde_json::to_value(&self.cfg).map_err(|e| {
                Error::Config(format!("the run configuration cannot be recorded: {e}"))
            })?,
            state: TrainState {
                epoch: self.epoch,
                step: self.step,
            },
            params,
            adam_m: Some(self.group.m.flat.read(self.ctx)?),
            adam_v: Some(self.group.v.flat.read(self.ctx)?),
            groups: self.objective.group_states(self.ctx)?,
        };
        let path = ck.save(&self.cfg.out)?;
        self.saved_epoch = Some(self.epoch);
        let mut config = serde_json::json!({
            "model": self.vae.cfg,
            "run": self.cfg,
        });
        // A folder data set's class names: label i is classes[i] (what `--class`, `--normal`
        // and the labels in `wgvae` outputs count in).
        if !self.split.classes.is_empty() {
            config["classes"] = serde_json::json!(self.split.classes);
        }
        let config_json = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::Config(format!("the run configuration cannot be recorded: {e}")))?;
        checkpoint::write_atomic(&self.cfg.out.join("config.json"), &config_json)?;
        Ok(path)
    }

    /// Evaluates the model on the test split.
    /// With ground-truth factors (the sprites), the report carries the factor probe of the
    /// test set's means, fitted on one half and scored on the other (seeded by the run's seed).
    pub fn evaluate(&self, with_iwae: bool) -> Result<EvalReport> {
        let latent = self.vae.cfg.latent;
        let Some(factors) = &self.split.test.factors else {
            return self.evaluator.run_with(self.ctx, latent, with_iwae);
        };
        let mut means = Vec::new();
        let mut report =
            self.evaluator
                .run_collect(self.ctx, latent, with_iwae, Some(&mut means))?;
        if self.split.test.n >= crate::probe::MIN_ROWS {
            report.probe = Some(crate::probe::probe(&means, latent, factors, self.cfg.seed)?);
        }
        Ok(report)
    }

    /// Trains until `cfg.epochs` epochs are done, writing metrics, checkpoints and pictures.
    pub fn train(&mut self) -> Result<RunSummary> {
        let metrics_path = self.cfg.out.join("metrics.jsonl");
        let mut history = read_metrics_file(&metrics_path, self.epoch)?;
        let steps = self.steps_per_epoch();
        let mut first_step_seconds = None;
        let mut last_eval = None;
        while self.epoch < self.cfg.epochs {
            self.begin_epoch()?;
            let bar = if self.cfg.quiet {
                indicatif::ProgressBar::hidden()
            } else {
                let b = indicatif::ProgressBar::new(steps as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.set_prefix(format!("{}/{}", self.epoch + 1, self.cfg.epochs));
                b
            };
            let t0 = Instant::now();
            let mut in_flight: VecDeque<wgpu::SubmissionIndex> = VecDeque::new();
            for s in 0..steps {
                in_flight.push_back(self.submit_step()?);
                // Keep at most two steps queued: the host stays just ahead of the device.
                while in_flight.len() > 2 {
                    let idx = in_flight.pop_front().expect("non-empty");
                    self.ctx.wait_for(idx)?;
                    if first_step_seconds.is_none() {
                        first_step_seconds = Some(self.started.elapsed().as_secs_f64());
                    }
                }
                bar.set_position((s + 1 - in_flight.len()) as u64);
                if (s + 1) % self.cfg.readback_every == 0 && !self.cfg.quiet {
                    let sums = self.read_metrics()?;
                    let (loss, bad) = (sums.loss, sums.nonfinite);
                    if bad {
                        bar.abandon();
                        return Err(self.nonfinite_error());
                    }
                    bar.set_message(format!("loss {loss:.2}"));
                }
            }
            self.ctx.wait()?;
            if first_step_seconds.is_none() {
                first_step_seconds = Some(self.started.elapsed().as_secs_f64());
            }
            let train_seconds = t0.elapsed().as_secs_f64();
            bar.finish_and_clear();
            let sums = self.read_metrics()?;
            let (loss, count) = (sums.loss, sums.count);
            if sums.nonfinite || !loss.is_finite() {
                return Err(self.nonfinite_error());
            }
            self.epoch += 1;
            let last = self.epoch == self.cfg.epochs;
            let with_iwae = self.cfg.iwae_k > 0
                && (last
                    || (self.cfg.iwae_every > 0 && self.epoch.is_multiple_of(self.cfg.iwae_every)));
            let report = self.evaluate(with_iwae)?;
            self.save_checkpoint()?;
            let m = EpochMetrics {
                epoch: self.epoch,
                step: self.step,
                train_loss: loss,
                train_terms: sums
                    .terms
                    .iter()
                    .map(|(name, v)| (format!("train_{name}"), *v))
                    .collect(),
                test_neg_elbo: report.neg_elbo,
                test_recon: report.recon,
                test_kl: report.kl,
                test_neg_iwae: report.neg_iwae,
                iwae_k: report.iwae_k,
                active_units: report.active_units,
                test_kl_per_dim: report.kl_per_dim.clone(),
                probe: report.probe.clone(),
                train_seconds,
                samples_per_second: count / train_seconds,
            };
            history.push(m.clone());
            write_metrics_file(&metrics_path, &history)?;
            if !self.cfg.quiet {
                let iw = match (m.iwae_k, m.test_neg_iwae) {
                    (Some(k), Some(v)) => format!("  test -IWAE(k={k}) {v:.2}"),
                    _ => String::new(),
                };
                let terms = sums
                    .terms
                    .iter()
                    .map(|(name, v)| format!("{name} {v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                println!(
                    "epoch {:>3}/{}  train loss {:.2} ({terms})  test -ELBO {:.2}{iw}  AU {}  {:.0} samples/s",
                    m.epoch,
                    self.cfg.epochs,
                    m.train_loss,
                    m.test_neg_elbo,
                    m.active_units,
                    m.samples_per_second
                );
            }
            last_eval = Some(report);
        }
        if self.cfg.pictures {
            crate::viz::save_run_pictures(
                self.ctx,
                &self.vae,
                &self.split.test,
                &self.cfg.out,
                self.cfg.seed,
            )?;
            crate::plot::run_charts(&self.cfg.out)?;
        }
        Ok(RunSummary {
            epochs: history,
            last_eval,
            out: self.cfg.out.clone(),
            first_step_seconds,
        })
    }

    /// The Adam moments, for tests of exact resumption.
    pub fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.group.m.flat.read(self.ctx)?,
            self.group.v.flat.read(self.ctx)?,
        ))
    }

    /// A conditional model's training labels on the GPU, (N,) u32.
    pub fn train_labels(&self) -> Option<&Tensor<u32>> {
        self.train_labels.as_ref()
    }

    pub fn train_images(&self) -> &Tensor<u8> {
        &self.train_images
    }

    pub fn test_set(&self) -> &Dataset {
        &self.split.test
    }
}

/// Where a run starts: the model's parameters and moments, the other groups' states, the
/// position in training (fresh: initial weights, no moments, no groups, step 0).
struct Resumed<'a> {
    params: &'a [f32],
    moments: Option<(Vec<f32>, Vec<f32>)>,
    groups: Vec<checkpoint::GroupState>,
    state: TrainState,
}

/// Options of [`Trainer::resume_with`].
#[derive(Clone, Debug, Default)]
pub struct ResumeOptions {
    /// Epochs to add (at least 1).
    pub more_epochs: usize,
    /// Override the run's `quiet`.
    pub quiet: Option<bool>,
    /// Read the data from here instead of the run's recorded directory (IDX runs only).
    pub data: Option<PathBuf>,
}

/// The files a run writes into its directory.
pub const RUN_FILES: [&str; 11] = [
    checkpoint::FILE_NAME,
    "metrics.jsonl",
    "config.json",
    "reconstructions.png",
    "samples.png",
    "traversals.png",
    "interpolation.png",
    "curves.png",
    "terms.png",
    "active_units.png",
    "kl_per_dim.png",
];

/// The run files already present in `dir`.
pub fn run_files(dir: &Path) -> Vec<&'static str> {
    RUN_FILES
        .iter()
        .copied()
        .filter(|f| dir.join(f).symlink_metadata().is_ok())
        .collect()
}

/// Adapter limits and the host budget, before the model's parameters are allocated.
fn check_resources(
    ctx: &GpuContext,
    cfg: &TrainConfig,
    model: &VaeConfig,
    split: &Split,
) -> Result<()> {
    resources::check_run(
        &resources::RunShape {
            model,
            batch: cfg.batch,
            eval_batch: cfg.eval_batch,
            n_train: split.train.n,
            n_test: split.test.n,
        },
        &ctx.device.limits(),
        &ctx.info.name,
    )
}

/// The lines of an existing metrics file up to `epoch` (a resumed run replaces later ones when
/// it writes the file again).
fn read_metrics_file(path: &Path, epoch: usize) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let m: EpochMetrics = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("{}: line {}: {e}", path.display(), i + 1)))?;
        if m.epoch <= epoch {
            kept.push(m);
        }
    }
    Ok(kept)
}

/// Replaces the metrics file atomically with one JSON line per epoch.
fn write_metrics_file(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut body = String::new();
    for m in history {
        let line = serde_json::to_string(m)
            .map_err(|e| Error::Config(format!("metrics of epoch {}: {e}", m.epoch)))?;
        body.push_str(&line);
        body.push('\n');
    }
    checkpoint::write_atomic(path, body.as_bytes())
}

/// Fills the step counts a fresh run's schedules leave to the run's length: the period of
/// cyclical annealing (the run's steps / cycles) and the capacity's rise (the whole run).
fn resolve_schedules(cfg: &mut TrainConfig, steps_per_epoch: usize) {
    let total = cfg.epochs.saturating_mul(steps_per_epoch).max(1);
    if let Some(c) = &mut cfg.kl_cycles
        && c.period.is_none()
    {
        c.period = Some(total.div_ceil(c.cycles.max(1)).max(1));
    }
    if let objective::ObjectiveSpec::Capacity { steps, .. } = &mut cfg.objective
        && steps.is_none()
    {
        *steps = Some(total);
    }
}

/// Sets the bias of the decoder's last module to the marginal of the training images: per
/// output unit of a linear layer (one per value), per channel of a convolution. Bernoulli
/// outputs get the log-odds of the mean (the mean clamped to [0.001, 0.999]), Gaussian ones the
/// mean.
fn init_output_bias(model: &VaeConfig, train: &Dataset, params: &mut [f32]) {
    let Ok((_, dec)) = model.networks() else {
        return;
    };
    let Some(last) = dec.modules.last() else {
        return;
    };
    let layout = model.layout();
    let Some(spec) = layout.get(&dec.param_name(last.as_ref(), "bias")) else {
        return;
    };
    let len = train.image_len();
    let groups = spec.len();
    if train.n == 0 || groups == 0 || !len.is_multiple_of(groups) {
        return;
    }
    // A linear output layer has one bias per value (groups = len): each value its own mean;
    // a convolution one per channel (groups = C): the mean over the channel's plane.
    let per = len / groups;
    let mut sums = vec![0f64; groups];
    for i in 0..train.n {
        for (j, &v) in train.image(i).iter().enumerate() {
            sums[j / per] += v as f64;
        }
    }
    let count = (train.n * per) as f64 * 255.0;
    for (b, s) in params[spec.offset..spec.offset + groups]
        .iter_mut()
        .zip(&sums)
    {
        let mean = s / count;
        *b = match model.likelihood {
            Likelihood::Bernoulli => {
                let m = mean.clamp(1e-3, 1.0 - 1e-3);
                (m / (1.0 - m)).ln() as f32
            }
            Likelihood::Gaussian { .. } => mean as f32,
        };
    }
}
