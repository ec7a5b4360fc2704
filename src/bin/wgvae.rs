//! `wgvae`: train and evaluate VAEs on the GPU.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wgvae",
    version,
    about = "Variational autoencoders on the GPU (WGSL kernels through wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a VAE (same flags as the train_gpu example)
    Train(Box<wgvae::cli::TrainArgs>),
    /// Evaluate a run's checkpoint on an image file (IDX, or .npy)
    Eval {
        /// Run directory holding checkpoint.safetensors
        #[arg(long)]
        run: PathBuf,
        /// IDX image file (.gz or raw), or a .npy array of images
        #[arg(long)]
        images: PathBuf,
        /// Labels of the images (IDX labels file, .gz or raw, or a .npy array): a conditional
        /// model needs them
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Importance samples for the IWAE bound (0: off)
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        iwae_k: usize,
        /// Also write the figures as JSON here
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        seed: u64,
    },
    /// Disentanglement metrics (MIG, DCI, SAP) of latent codes against ground-truth factors
    Metrics(wgvae::metrics::cli::MetricsArgs),
    /// Encode a data set: posterior means, standard deviations and a draw per input as .npy
    /// (with --sprites also the ground-truth factors)
    Encode(wgvae::tool::encode::EncodeArgs),
    /// Draw a run's charts (curves, terms, active units, KL per dimension) as PNG files
    #[command(after_help = "Example: wgvae plot runs/mnist   (reads runs/mnist/metrics.jsonl)")]
    Plot {
        /// Run directory holding metrics.jsonl; the charts are written next to it
        #[arg(value_name = "RUN_DIR")]
        run: PathBuf,
    },
    /// Traversals of every latent dimension, by decreasing KL, around one input's code (PNG)
    Traverse(wgvae::tool::traverse::TraverseArgs),
    /// Images decoded from codes drawn from the prior, the aggregated posterior of a data set
    /// or a Gaussian fitted to its posterior means (PNG grid and/or .npy of the codes)
    Sample(wgvae::tool::sample::SampleArgs),
    /// Inputs and their reconstructions (decoded posterior means) as a PNG
    Reconstruct(wgvae::tool::reconstruct::ReconstructArgs),
    /// Decode latent codes from a .npy array into a PNG grid
    Decode(wgvae::tool::decode::DecodeArgs),
    /// A PNG strip from one input to another through the decoded path between their codes
    Interpolate(wgvae::tool::interpolate::InterpolateArgs),
    /// Score inputs by −log p(x) (importance-sampled) or −ELBO; with labels, the AUROC of
    /// telling classes outside --normal apart (CSV of scores, histogram PNG)
    Anomaly(wgvae::tool::anomaly::AnomalyArgs),
    /// Latent arithmetic: move inputs' codes along the difference of two groups' mean codes
    /// (by label or by index) and decode them at several strengths (PNG grid, .npy)
    Edit(wgvae::tool::edit::EditArgs),
    /// Every adapter wgpu sees (name, backend, type, the limits that matter), which one wgvae
    /// uses and why (example: WGVAE_BACKEND=vulkan wgvae info)
    Info,
}

fn main() {
    wgvae::cli::quiet_wayland_probe();
    env_logger::init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = run(cli, &matches) {
        wgvae::cli::exit_with(e);
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(mut args) => {
            if let Some(m) = matches.subcommand_matches("train") {
                args.note_explicit(m);
            }
            wgvae::cli::train(&args)?;
        }
        Command::Eval {
            run,
            images,
            labels,
            iwae_k,
            json,
            seed,
        } => {
            wgvae::cli::eval(
                &run,
                &images,
                labels.as_deref(),
                iwae_k,
                json.as_deref(),
                seed,
            )?;
        }
        Command::Metrics(args) => {
            wgvae::metrics::cli::run(&args)?;
        }
        Command::Encode(args) => {
            let e = wgvae::tool::encode::run(&args)?;
            println!(
                "encoded {} inputs into {} latent dimensions:",
                e.n, e.latent
            );
            for f in &e.files {
                println!("  {}", f.display());
            }
        }
        Command::Plot { run } => {
            for f in wgvae::plot::run_charts(&run)? {
                println!("{}", f.display());
            }
        }
        Command::Traverse(args) => {
            let order = wgvae::tool::traverse::run(&args)?;
            println!("wrote {}; rows by decreasing KL:", args.out.display());
            for (row, (dim, kl)) in order.iter().enumerate() {
                println!("  row {row}: z{dim} (KL {kl:.3} nats)");
            }
        }
        Command::Sample(args) => {
            let codes = wgvae::tool::sample::run(&args)?;
            let outs: Vec<String> = [&args.out_png, &args.out_npy]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            println!("sampled {} codes; wrote {}", codes.n, outs.join(", "));
        }
        Command::Reconstruct(args) => {
            let n = wgvae::tool::reconstruct::run(&args)?;
            println!(
                "wrote {} ({n} inputs and reconstructions)",
                args.out.display()
            );
        }
        Command::Decode(args) => {
            let n = wgvae::tool::decode::run(&args)?;
            println!("wrote {} ({n} decoded codes)", args.out.display());
        }
        Command::Interpolate(args) => {
            wgvae::tool::interpolate::run(&args)?;
            println!(
                "wrote {} ({} decoded codes)",
                args.out.display(),
                args.steps
            );
        }
        Command::Anomaly(args) => {
            print!("{}", wgvae::tool::anomaly::run(&args)?);
        }
        Command::Edit(args) => {
            println!("{}", wgvae::tool::edit::run(&args)?);
            println!("wrote {}", args.out.display());
            if let Some(npy) = &args.npy {
                println!("wrote {npy}", npy = npy.display());
            }
        }
        Command::Info => {
            let (adapters, why) = wgvae::gpu::context::list_adapters()?;
            println!("adapters wgpu sees ({}):", adapters.len());
            for a in &adapters {
                println!(
                    "{} {}: {} ({:?}, {:?}; {}), storage binding {} MiB, buffer {} MiB, \
                     workgroup memory {} KiB, {} invocations, subgroups {}",
                    if a.chosen { "*" } else { " " },
                    a.index,
                    a.name,
                    a.backend,
                    a.device_type,
                    a.driver,
                    a.max_storage_binding >> 20,
                    a.max_buffer >> 20,
                    a.max_workgroup_storage >> 10,
                    a.max_invocations,
                    if a.subgroups { "yes" } else { "no" }
                );
            }
            println!("* the one wgvae uses: {why}");
            let ctx = wgvae::cli::open_context()?;
            println!("adapter: {}", ctx.info);
            println!("GEMM kernel: {}", ctx.gemm_variant.name());
            println!(
                "timestamps: {}, subgroups: {} ({}..{} lanes)",
                ctx.caps.timestamps,
                ctx.caps.subgroups,
                ctx.caps.subgroup_min_size,
                ctx.caps.subgroup_max_size
            );
        }
    }
    Ok(())
}
