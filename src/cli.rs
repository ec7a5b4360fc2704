//! The command-line front ends (`wgvae` and the `train_gpu` example) share these arguments and
//! entry points; all logic lives in [`crate::train`] and [`crate::eval`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use crate::data;
use crate::eval::{EvalReport, Evaluator};
use crate::gpu::GpuContext;
use crate::model::{GaussianSigma, Likelihood, Vae};
use crate::ops::Activation;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::{DataSource, ModelSpec, ResumeOptions, RunSummary, TrainConfig, Trainer};

/// Flags of `train_gpu` and `wgvae train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Directory of IDX files (train-images-idx3-ubyte[.gz], t10k-…) or NumPy files
    /// (train-images.npy, test-images.npy: greyscale or colour), or a folder of PNG/JPEG images
    /// (train/ and test/ subfolders, else 10% held out by a seeded shuffle; class subfolders
    /// give labels); default: the built-in sprites
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train only on the images whose label (the digit; the shape of the sprites) is in this
    /// set, e.g. 0-8 or 0,1,2 (--data needs its labels files); the test set is kept whole, so
    /// `wgvae anomaly` can score the other classes. Recorded in the run; --resume keeps it
    #[arg(long)]
    pub classes: Option<crate::tool::anomaly::ClassSet>,
    /// A conditional VAE: the images' class labels (one-hot over max label + 1 classes) enter
    /// the encoder and the decoder (--data needs its labels files; the built-in sprites'
    /// label is the shape). `wgvae sample --class C` then draws class C. Recorded in the run
    #[arg(long)]
    pub conditional: bool,
    /// Epochs to train (default: 3 on the built-in sprites, 5 with --data; with --resume: epochs
    /// to add, default 5)
    #[arg(long, allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    pub batch: usize,
    /// Adam learning rate (default: 3e-3 on the built-in sprites, 1e-3 with --data)
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Weight of the KL term (β-VAE)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub beta: f32,
    /// KL warm-up over this many steps: the KL's weight rises linearly from β/N to β (0: off)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub kl_warmup: usize,
    /// Cyclical annealing of the KL's weight: the run is cut into this many periods, in each of
    /// which the weight rises linearly from near 0 to β, then stays at β
    #[arg(long, allow_negative_numbers = true)]
    pub kl_cycles: Option<usize>,
    /// --kl-cycles: the share of each period spent rising, in (0, 1]
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub kl_cycle_ratio: f32,
    /// Objective: elbo (recon + β·KL; β-VAE with --beta), capacity (recon + γ·|KL − C|, C
    /// rising linearly from 0 to --capacity nats over --capacity-steps steps), tc-vae (recon +
    /// α·MI + β·TC + γ·dimension-wise KL, from the minibatch estimator) or factor-vae (recon +
    /// β·KL + γ·TC, TC estimated by a discriminator trained alongside) or iwae (the negative
    /// importance-weighted bound with --iwae-train-k draws per input)
    #[arg(long, value_enum, default_value_t = ObjectiveKind::Elbo)]
    pub objective: ObjectiveKind,
    /// Weight γ of the objective's extra term (capacity: default 1000; tc-vae: of the
    /// dimension-wise KL, default 1; factor-vae: of the TC, default 35)
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f32>,
    /// --objective capacity: the final capacity C in nats (default 25)
    #[arg(long, allow_negative_numbers = true)]
    pub capacity: Option<f32>,
    /// --objective capacity: steps over which C rises (default: the whole run)
    #[arg(long, allow_negative_numbers = true)]
    pub capacity_steps: Option<usize>,
    /// --objective tc-vae: weight α of the index-code mutual information (default 1)
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f32>,
    /// --objective tc-vae: the estimator of log q(z): mws (minibatch weighted sampling) or mss
    /// (minibatch stratified sampling)
    #[arg(long, value_enum)]
    pub tc_estimator: Option<TcEstimatorArg>,
    /// --objective factor-vae: hidden layers of the discriminator (default 6)
    #[arg(long, allow_negative_numbers = true)]
    pub disc_layers: Option<usize>,
    /// --objective factor-vae: units per hidden layer of the discriminator (default 1000)
    #[arg(long, allow_negative_numbers = true)]
    pub disc_width: Option<usize>,
    /// --objective factor-vae: the discriminator's Adam learning rate (default 1e-4; β1 0.5,
    /// β2 0.9)
    #[arg(long, allow_negative_numbers = true)]
    pub disc_lr: Option<f32>,
    /// --objective iwae: latent draws per input of the training bound (default 5; 1 gives the
    /// ELBO with a Monte Carlo KL)
    #[arg(long, allow_negative_numbers = true)]
    pub iwae_train_k: Option<usize>,
    /// Start the decoder's output bias at the training images' marginal (log-odds of the mean
    /// pixel) instead of at random: true or false (default: true on the built-in sprites, false
    /// with --data; the flag alone means true)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub output_bias_init: Option<bool>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Run directory (default: runs/<data set name>, or the first of runs/<name>-2, -3, …
    /// that holds no run). An existing run there is refused unless --overwrite
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run files in --out (checkpoint, metrics, config, pictures) with this run's
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run in this directory from its checkpoint, with the run's own configuration
    /// (only --epochs, the epochs to add, --quiet, --no-pictures and --data, where the data
    /// moved, apply)
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No progress bar or per-epoch lines
    #[arg(long)]
    pub quiet: bool,
    /// Latent dimensions (default: 10 on the built-in sprites, 20 with --data)
    #[arg(long, allow_negative_numbers = true)]
    pub latent: Option<usize>,
    /// Posterior family q(z|x): diagonal (N(mu, diag sigma^2)), full (N(mu, L L^T), a
    /// lower-triangular L; at most 64 latent dimensions), planar (planar flows on a diagonal
    /// base) or iaf (an inverse autoregressive flow on a diagonal base); the flows take at most
    /// 64 latent dimensions and train with --objective elbo or iwae
    #[arg(long, default_value = "diagonal")]
    pub posterior: crate::model::PosteriorKind,
    /// --posterior planar: the number of planar flows (default 8, at most 32); --posterior
    /// iaf: the number of autoregressive steps (default 4, at most 16)
    #[arg(long, allow_negative_numbers = true)]
    pub flows: Option<usize>,
    /// --posterior iaf: hidden units of each step's masked network, also the size of the
    /// context the encoder gives it (default 64, at most 256)
    #[arg(long, allow_negative_numbers = true)]
    pub iaf_hidden: Option<usize>,
    /// Architecture: mlp (fully connected) or conv (4x4 stride-2 convolutions, then fully
    /// connected layers; the decoder mirrors them with transposed convolutions)
    #[arg(long, value_enum, default_value_t = crate::train::ArchKind::Mlp)]
    pub arch: crate::train::ArchKind,
    /// Hidden fully connected layer widths of encoder and decoder, comma-separated (default:
    /// 400 with --arch mlp, 256 with --arch conv)
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub hidden: Option<Vec<usize>>,
    /// --arch conv: output channels of each convolution, comma-separated (default: 32,32,64,64
    /// for images of 64 pixels a side or more, 32,64 below)
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub conv_channels: Option<Vec<usize>>,
    /// --arch conv: kernel size of every convolution (stride 2, padding (kernel-1)/2)
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub conv_kernel: usize,
    /// --arch conv: a fully connected decoder (latent → --hidden → image) instead of the
    /// mirror of the encoder
    #[arg(long)]
    pub mlp_decoder: bool,
    /// Hidden activation: relu, leaky_relu, leaky_relu:SLOPE (0 < SLOPE <= 1), tanh, sigmoid
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Likelihood: bernoulli, or gaussian with --log-sigma
    #[arg(long, default_value = "bernoulli")]
    pub likelihood: String,
    /// Gaussian log σ: a number (fixed), `shared` or `per-pixel` (learned)
    #[arg(long, default_value = "shared", allow_negative_numbers = true)]
    pub log_sigma: String,
    /// Importance samples for the test IWAE bound after the last epoch (0: off)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub iwae_k: usize,
    /// Also compute the IWAE bound every N epochs
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub iwae_every: usize,
    /// Sprites: training images
    #[arg(long, default_value_t = 26_000, allow_negative_numbers = true)]
    pub n_train: usize,
    /// Sprites: held-out images (the factor probe fits on one half and scores on the other;
    /// its k-NN probes need many points to find a factor that the code holds nonlinearly)
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    pub n_test: usize,
    /// Clip the global gradient norm (0: off)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub clip: f32,
    /// Decoupled weight decay (AdamW; 0: Adam)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f32,
    /// Skip the PNG grids
    #[arg(long)]
    pub no_pictures: bool,
    /// Binarise images as Bernoulli targets: none (grey levels), fixed (training set drawn once),
    /// dynamic (drawn afresh each step); with fixed or dynamic the test set is drawn once
    #[arg(long, value_enum, default_value_t = crate::ops::data::Binarize::None)]
    pub binarize: crate::ops::data::Binarize,
    /// The flags given on the command line (filled by [`TrainArgs::note_explicit`]), so that
    /// `--resume` can say which of them it ignores.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// The objectives `--objective` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectiveKind {
    Elbo,
    Capacity,
    TcVae,
    FactorVae,
    Iwae,
}

/// The estimators `--tc-estimator` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcEstimatorArg {
    Mws,
    Mss,
}

/// Flags that still apply with `--resume`.
const RESUME_FLAGS: [&str; 5] = ["--resume", "--epochs", "--quiet", "--no-pictures", "--data"];

impl TrainArgs {
    pub fn to_config(&self) -> Result<TrainConfig> {
        let activation =
            Activation::parse(&self.activation).map_err(|e| anyhow::anyhow!("--activation {e}"))?;
        let likelihood = match self.likelihood.as_str() {
            "bernoulli" => Likelihood::Bernoulli,
            "gaussian" => Likelihood::Gaussian {
                log_sigma: match self.log_sigma.as_str() {
                    "shared" => GaussianSigma::LearnedShared,
                    "per-pixel" | "per_pixel" => GaussianSigma::LearnedPerPixel,
                    v => GaussianSigma::Fixed(v.parse().map_err(|_| {
                        anyhow::anyhow!("--log-sigma `{v}`: use a number, `shared` or `per-pixel`")
                    })?),
                },
            },
            other => bail!("--likelihood `{other}`: use bernoulli or gaussian"),
        };
        let data = match &self.data {
            Some(dir) => DataSource::Idx { dir: dir.clone() },
            None => DataSource::Sprites {
                n_train: self.n_train,
                n_test: self.n_test,
                seed: self.seed,
            },
        };
        let name = match &self.data {
            Some(dir) => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "idx".into()),
            None => "sprites".into(),
        };
        if self.arch == crate::train::ArchKind::Mlp
            && (self.conv_channels.is_some()
                || self.mlp_decoder
                || self.explicit.iter().any(|f| f == "--conv-kernel"))
        {
            bail!("--conv-channels, --conv-kernel and --mlp-decoder apply to --arch conv only");
        }
        let hidden = self.hidden.clone().unwrap_or_else(|| match self.arch {
            crate::train::ArchKind::Mlp => vec![400],
            crate::train::ArchKind::Conv => vec![256],
        });
        if self.kl_cycles.is_none() && self.explicit.iter().any(|f| f == "--kl-cycle-ratio") {
            bail!("--kl-cycle-ratio applies with --kl-cycles only");
        }
        let capacity_flags = self.capacity.is_some() || self.capacity_steps.is_some();
        let disc_flags =
            self.disc_layers.is_some() || self.disc_width.is_some() || self.disc_lr.is_some();
        if capacity_flags && self.objective != ObjectiveKind::Capacity {
            bail!("--capacity and --capacity-steps apply to --objective capacity only");
        }
        if disc_flags && self.objective != ObjectiveKind::FactorVae {
            bail!("--disc-layers, --disc-width and --disc-lr apply to --objective factor-vae only");
        }
        if (self.alpha.is_some() || self.tc_estimator.is_some())
            && self.objective != ObjectiveKind::TcVae
        {
            bail!("--alpha and --tc-estimator apply to --objective tc-vae only");
        }
        if self.iwae_train_k.is_some() && self.objective != ObjectiveKind::Iwae {
            bail!("--iwae-train-k applies to --objective iwae only");
        }
        use crate::model::PosteriorKind;
        let posterior = match (self.posterior, self.flows, self.iaf_hidden) {
            (PosteriorKind::Planar { .. }, Some(flows), None) => PosteriorKind::Planar { flows },
            (PosteriorKind::Iaf { flows, hidden }, f, h) => PosteriorKind::Iaf {
                flows: f.unwrap_or(flows),
                hidden: h.unwrap_or(hidden),
            },
            (_, _, Some(_)) => bail!("--iaf-hidden applies to --posterior iaf only"),
            (_, Some(_), _) => bail!("--flows applies to --posterior planar or iaf only"),
            (p, None, None) => p,
        };
        if !posterior.closed_form_kl()
            && !matches!(self.objective, ObjectiveKind::Iwae | ObjectiveKind::Elbo)
        {
            bail!(
                "--posterior {} has no closed-form KL: train it with --objective elbo (through \
                 its single-draw estimate) or --objective iwae",
                posterior.name()
            );
        }
        let latent = self
            .latent
            .unwrap_or(if self.data.is_none() { 10 } else { 20 });
        let objective = match self.objective {
            ObjectiveKind::Elbo => {
                if self.gamma.is_some() {
                    bail!("--gamma applies to --objective capacity, tc-vae or factor-vae only");
                }
                crate::train::objective::ObjectiveSpec::Elbo
            }
            ObjectiveKind::TcVae => crate::train::objective::ObjectiveSpec::TcVae {
                alpha: self.alpha.unwrap_or(1.0),
                gamma: self.gamma.unwrap_or(1.0),
                estimator: match self.tc_estimator {
                    Some(TcEstimatorArg::Mss) => crate::ops::tc::Estimator::Mss,
                    _ => crate::ops::tc::Estimator::Mws,
                },
            },
            ObjectiveKind::FactorVae => {
                let mut disc = crate::model::discriminator::DiscriminatorConfig::paper(latent);
                disc.layers = self.disc_layers.unwrap_or(disc.layers);
                disc.width = self.disc_width.unwrap_or(disc.width);
                disc.adam.lr = self.disc_lr.unwrap_or(disc.adam.lr);
                crate::train::objective::ObjectiveSpec::FactorVae {
                    gamma: self.gamma.unwrap_or(35.0),
                    disc,
                }
            }
            ObjectiveKind::Iwae => {
                if self.gamma.is_some() {
                    bail!("--gamma applies to --objective capacity, tc-vae or factor-vae only");
                }
                crate::train::objective::ObjectiveSpec::Iwae {
                    k: self.iwae_train_k.unwrap_or(5),
                }
            }
            ObjectiveKind::Capacity => crate::train::objective::ObjectiveSpec::Capacity {
                gamma: self.gamma.unwrap_or(1000.0),
                c_max: self.capacity.unwrap_or(25.0),
                steps: self.capacity_steps,
            },
        };
        // The built-in sprites have their own defaults, chosen so that the default run learns
        // shape, scale and position within minutes on a CPU adapter.
        let sprites = self.data.is_none();
        let defaults = TrainConfig::default();
        Ok(TrainConfig {
            data,
            model: ModelSpec {
                arch: self.arch,
                conv_channels: self.conv_channels.clone().unwrap_or_default(),
                conv_kernel: self.conv_kernel,
                mlp_decoder: self.mlp_decoder,
                enc_hidden: hidden.clone(),
                dec_hidden: hidden.iter().rev().copied().collect(),
                latent,
                activation,
                likelihood,
                posterior,
            },
            epochs: self.epochs.unwrap_or(if sprites { 3 } else { 5 }),
            batch: self.batch,
            adam: crate::ops::adam::AdamConfig {
                lr: self.lr.unwrap_or(if sprites { 3e-3 } else { 1e-3 }),
                clip_norm: self.clip,
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            beta: self.beta,
            kl_warmup: self.kl_warmup,
            kl_cycles: self
                .kl_cycles
                .map(|cycles| crate::train::objective::KlCycles {
                    cycles,
                    ratio: self.kl_cycle_ratio,
                    period: None,
                }),
            objective,
            output_bias_init: self.output_bias_init.unwrap_or(sprites),
            seed: self.seed,
            out: match &self.out {
                Some(out) => out.clone(),
                None => fresh_run_dir(Path::new("runs"), &name)?,
            },
            overwrite: self.overwrite,
            iwae_k: self.iwae_k,
            iwae_every: self.iwae_every,
            quiet: self.quiet,
            pictures: !self.no_pictures,
            binarize: self.binarize,
            classes: self.classes.as_ref().map(|c| c.0.clone()),
            conditional: self.conditional,
            ..defaults
        })
    }
}

impl TrainArgs {
    /// Records which flags `matches` got from the command line (call after parsing).
    pub fn note_explicit(&mut self, matches: &ArgMatches) {
        let cmd = <TrainArgs as Args>::augment_args(clap::Command::new("train"));
        let known: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
        self.explicit = matches
            .ids()
            .filter(|id| known.contains(&id.as_str()))
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| format!("--{}", id.as_str().replace('_', "-")))
            .collect();
    }

    /// The flags given with `--resume` that it does not apply.
    pub fn ignored_with_resume(&self) -> Vec<&str> {
        self.explicit
            .iter()
            .map(String::as_str)
            .filter(|f| !RESUME_FLAGS.contains(f))
            .collect()
    }
}

/// `root/name`, or the first of `root/name-2`, `root/name-3`, … that holds no run files.
fn fresh_run_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let first = root.join(name);
    if crate::train::run_files(&first).is_empty() {
        return Ok(first);
    }
    (2..10_000)
        .map(|i| root.join(format!("{name}-{i}")))
        .find(|d| crate::train::run_files(d).is_empty())
        .with_context(|| format!("{}: no free run directory name; pass --out", root.display()))
}

/// libwayland, which the Vulkan loader probes, prints an alarming line to stderr when no
/// runtime directory is set (headless machines, CI). Point it at the temp directory.
/// Call first thing in `main`, before any thread exists.
pub fn quiet_wayland_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called at the start of main, while the process is single-threaded.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

/// Opens the GPU context and prints, on stderr, any advice about the adapter (a CPU adapter on
/// OpenGL when a Vulkan driver would be much faster).
pub fn open_context() -> Result<GpuContext> {
    let ctx = GpuContext::new()?;
    if let Some(advice) = ctx.advice() {
        eprintln!("note: {advice}");
    }
    Ok(ctx)
}

/// Prints an error of a front end as one line (with its causes) and exits with status 1.
pub fn exit_with(e: anyhow::Error) -> ! {
    eprintln!("error: {e:#}");
    std::process::exit(1)
}

/// Reads an image file (IDX or .npy) for the model of checkpoint `ck` (read from `ck_path`):
/// binarised as the run's test set was if the run trained on binary images, and checked
/// against the model's image size. Returns the images and the run's binarisation.
pub fn images_for_run(
    ck: &Checkpoint,
    ck_path: &Path,
    images: &Path,
) -> Result<(data::Dataset, crate::ops::data::Binarize)> {
    let mut set = data::load_images_file(images)?;
    // A model trained on binary images is scored on binary images, drawn as its test set was.
    let binarize: crate::ops::data::Binarize = ck
        .run
        .get("binarize")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: metadata field `run.binarize`: {e}", ck_path.display()))?
        .unwrap_or_default();
    if binarize != crate::ops::data::Binarize::None {
        crate::ops::data::binarize_bytes(
            &mut set.pixels,
            crate::ops::data::TEST_SEED,
            crate::ops::data::TEST_STREAM,
        );
        println!(
            "the run trained on binarised images (--binarize {}); {} is binarised the same way",
            binarize.name(),
            images.display()
        );
    }
    if (set.height, set.width) != (ck.model.height, ck.model.width) {
        bail!(
            "{}: images are {}x{}, but the model in {} takes {}x{}",
            images.display(),
            set.height,
            set.width,
            ck_path.display(),
            ck.model.height,
            ck.model.width
        );
    }
    if set.channels != ck.model.channels {
        bail!(
            "{}: images have {} channel(s), but the model in {} takes {}",
            images.display(),
            set.channels,
            ck_path.display(),
            ck.model.channels
        );
    }
    Ok((set, binarize))
}

/// `train_gpu` / `wgvae train`.
pub fn train(args: &TrainArgs) -> Result<RunSummary> {
    let ctx = open_context()?;
    if !args.quiet {
        println!(
            "adapter: {} — GEMM kernel {}",
            ctx.info,
            ctx.gemm_variant.name()
        );
    }
    let mut trainer = match &args.resume {
        Some(dir) => {
            let ignored = args.ignored_with_resume();
            if !ignored.is_empty() {
                eprintln!(
                    "note: --resume continues the run with its own configuration; ignoring {}",
                    ignored.join(", ")
                );
            }
            let mut t = Trainer::resume_with(
                &ctx,
                dir,
                &ResumeOptions {
                    more_epochs: args.epochs.unwrap_or(5),
                    quiet: Some(args.quiet),
                    data: args.data.clone(),
                },
            )
            .with_context(|| format!("resuming the run in {}", dir.display()))?;
            if args.no_pictures {
                t.cfg.pictures = false;
            }
            t
        }
        None => Trainer::new(&ctx, args.to_config()?)?,
    };
    if !args.quiet {
        let s = &trainer.split;
        println!(
            "data: {} train / {} test images of {}x{} ({}); model {} parameters; {} dispatches and 1 submit per step; run directory {}",
            s.train.n,
            s.test.n,
            s.train.height,
            s.train.width,
            s.train.name,
            trainer.vae.layout.count(),
            trainer.dispatches_per_step(),
            trainer.cfg.out.display()
        );
        if !s.classes.is_empty() {
            let names: Vec<String> = s
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{i} {c}"))
                .collect();
            println!("labels from class folders: {}", names.join(", "));
        }
    }
    let summary = trainer.train()?;
    if !args.quiet {
        if let Some(t) = summary.first_step_seconds {
            println!("first training step finished {t:.2} s after start");
        }
        if let Some(r) = &summary.last_eval {
            print_report("test", r);
            if let Some(p) = &r.probe {
                println!("{p}");
            }
        }
        println!(
            "wrote {}/{{metrics.jsonl, checkpoint.safetensors, config.json{}}}",
            summary.out.display(),
            if trainer.cfg.pictures {
                ", reconstructions.png, samples.png, traversals.png, interpolation.png, curves.png, terms.png, active_units.png, kl_per_dim.png"
            } else {
                ""
            }
        );
    }
    Ok(summary)
}

pub fn print_report(what: &str, r: &EvalReport) {
    println!(
        "{what}: {} images  -ELBO {:.3} nats (recon {:.3} + KL {:.3}){}  active units {}/{}",
        r.n,
        r.neg_elbo,
        r.recon,
        r.kl,
        match (r.iwae_k, r.neg_iwae) {
            (Some(k), Some(v)) => format!("  -IWAE(k={k}) {v:.3}"),
            _ => String::new(),
        },
        r.active_units,
        r.kl_per_dim.len()
    );
}

/// `wgvae eval`: evaluates a run's checkpoint on an image file (IDX, or `.npy`).
pub fn eval(
    run: &Path,
    images: &Path,
    labels: Option<&Path>,
    iwae_k: usize,
    json: Option<&Path>,
    seed: u64,
) -> Result<EvalReport> {
    if iwae_k > crate::train::MAX_COUNT {
        bail!(
            "--iwae-k {iwae_k}: must be in 0..={}",
            crate::train::MAX_COUNT
        );
    }
    let ck_path = run.join(checkpoint::FILE_NAME);
    let ck = Checkpoint::load(&ck_path)?;
    let (mut set, binarize) = images_for_run(&ck, &ck_path, images)?;
    if let Some(path) = labels {
        crate::tool::attach_labels(&mut set, path, "--labels")?;
    }
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let ev = Evaluator::new(&ctx, &vae, &set, 500, iwae_k, seed)?;
    let report = ev.run(&ctx, vae.cfg.latent)?;
    print_report(&images.display().to_string(), &report);
    if let Some(path) = json {
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "run": run.display().to_string(),
            "images": images.display().to_string(),
            "adapter": ctx.info.name,
            "binarized": binarize != crate::ops::data::Binarize::None,
            "report": report,
        }))?;
        checkpoint::write_atomic(path, &body)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
