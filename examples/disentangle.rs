//! Trains a VAE, a β-VAE (β = 4), a β-TCVAE (β = 6) and a FactorVAE (γ = 35) on the built-in
//! sprites with the same seed, architecture and budget, and prints one table: test −ELBO, recon,
//! KL, the total correlation of q(z) (the minibatch-stratified estimate on the test set), and the
//! disentanglement metrics BetaVAE, FactorVAE, MIG, DCI disentanglement and SAP.
//!
//! ```text
//! cargo run --release --example disentangle                       # ~20 min on a CPU adapter
//! cargo run --release --example disentangle -- --long              # 3.3× the training, ~45 min
//! cargo run --release --example disentangle -- --long --reference  # paper-sized (a GPU's job)
//! ```
//!
//! What it should show: penalising the total correlation (β-TCVAE, FactorVAE) leaves q(z) with
//! less of it than the plain VAE and puts those models ahead of it on MIG; a plain β-VAE buys
//! its disentanglement with reconstruction (higher recon, lower KL). The default budget is short
//! and the metrics use small samples (`ScoreConfig::quick`), so its figures are noisy; `--long`
//! trains 6 epochs of 20,000 sprites instead of 3 of 12,000; `--reference` uses the paper's
//! 6 × 1000 discriminator and scores with the reference sample sizes (10,000 + 5,000 points per
//! metric: the sampled scores encode about two million images per model, hours on a CPU
//! adapter).
//!
//! Each model's run directory (under `--out`) holds its checkpoint, metrics, pictures (the
//! traversals are sorted by KL), charts (`kl_per_dim.png` among them) and a bar chart of its
//! metric scores (`scores.png`); the table also goes to `--out/table.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use wgvae::model::discriminator::DiscriminatorConfig;
use wgvae::ops::tc::Estimator;
use wgvae::tool::score::{ScoreConfig, Scores, score_sprites_model, total_correlation};
use wgvae::train::objective::ObjectiveSpec;
use wgvae::train::{DataSource, ModelSpec, TrainConfig, Trainer};

#[derive(Parser)]
#[command(about = "Compare VAE, β-VAE, β-TCVAE and FactorVAE on the built-in sprites (wgvae)")]
struct Cli {
    /// Train longer: 6 epochs of 20,000 sprites
    #[arg(long)]
    long: bool,
    /// The paper's 6 × 1000 discriminator and the reference sample sizes of the metrics
    #[arg(long)]
    reference: bool,
    /// Epochs (default 3, or 6 with --long)
    #[arg(long)]
    epochs: Option<usize>,
    /// Training images (default 12,000, or 20,000 with --long)
    #[arg(long)]
    n_train: Option<usize>,
    /// Directory of the four runs
    #[arg(long, default_value = "runs/disentangle")]
    out: PathBuf,
    /// Replace earlier runs in --out
    #[arg(long)]
    overwrite: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Row {
    name: &'static str,
    neg_elbo: f64,
    recon: f64,
    kl: f64,
    tc: f64,
    scores: Scores,
    seconds: f64,
}

fn main() {
    wgvae::cli::quiet_wayland_probe();
    env_logger::init();
    if let Err(e) = run(Cli::parse()) {
        wgvae::cli::exit_with(e);
    }
}

fn run(cli: Cli) -> Result<()> {
    let ctx = wgvae::cli::open_context()?;
    let epochs = cli.epochs.unwrap_or(if cli.long { 6 } else { 3 });
    let n_train = cli
        .n_train
        .unwrap_or(if cli.long { 20_000 } else { 12_000 });
    let latent = 10;
    let mut disc = DiscriminatorConfig::paper(latent);
    if !cli.reference {
        // The paper's 6 × 1000 discriminator costs several times the VAE per step on a CPU
        // adapter; without --reference a smaller one.
        disc.layers = 3;
        disc.width = 256;
    }
    let models: [(&str, f32, ObjectiveSpec); 4] = [
        ("VAE", 1.0, ObjectiveSpec::Elbo),
        ("β-VAE (β=4)", 4.0, ObjectiveSpec::Elbo),
        (
            "β-TCVAE (β=6)",
            6.0,
            ObjectiveSpec::TcVae {
                alpha: 1.0,
                gamma: 1.0,
                estimator: Estimator::Mss,
            },
        ),
        (
            "FactorVAE (γ=35)",
            1.0,
            ObjectiveSpec::FactorVae { gamma: 35.0, disc },
        ),
    ];
    let scoring = if cli.reference {
        ScoreConfig::reference(cli.seed)
    } else {
        ScoreConfig::quick(cli.seed)
    };
    println!(
        "adapter: {} — {} epochs on {n_train} sprites per model, latent {latent}, metrics on {} \
         sample sizes",
        ctx.info,
        epochs,
        if cli.reference {
            "the reference"
        } else {
            "small (ScoreConfig::quick)"
        }
    );
    let mut rows = Vec::new();
    for (i, (name, beta, objective)) in models.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let dir = ["vae", "beta-vae", "beta-tcvae", "factor-vae"][i];
        let cfg = TrainConfig {
            data: DataSource::Sprites {
                n_train,
                n_test: 2000,
                seed: cli.seed,
            },
            model: ModelSpec {
                latent,
                ..Default::default()
            },
            epochs,
            batch: 128,
            adam: wgvae::ops::adam::AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
            beta,
            objective,
            output_bias_init: true,
            seed: cli.seed,
            out: cli.out.join(dir),
            overwrite: cli.overwrite,
            quiet: true,
            ..TrainConfig::default()
        };
        println!("training {name} …");
        let mut t = Trainer::new(&ctx, cfg).with_context(|| format!("setting up {name}"))?;
        let summary = t.train().with_context(|| format!("training {name}"))?;
        let eval = summary
            .last_eval
            .context("the run ended without an evaluation")?;
        let tc = total_correlation(
            &ctx,
            &t.vae,
            &t.split.test,
            256,
            n_train,
            Estimator::Mss,
            cli.seed,
        )?;
        let scores = score_sprites_model(&ctx, &t.vae, &scoring)?;
        let chart = t.cfg.out.join("scores.png");
        let (labels, values): (Vec<String>, Vec<f64>) = [
            ("BetaVAE", scores.beta_vae),
            ("FactorVAE", scores.factor_vae),
            ("MIG", scores.mig),
            ("DCI-D", scores.dci_disentanglement),
            ("DCI-C", scores.dci_completeness),
            ("DCI-I", scores.dci_informativeness),
            ("SAP", scores.sap),
        ]
        .into_iter()
        .map(|(l, v)| (l.to_string(), v))
        .unzip();
        wgvae::plot::bar_chart_png(
            &chart,
            &format!("{name}: disentanglement metrics"),
            &labels,
            &values,
            "score",
        )
        .with_context(|| format!("writing {}", chart.display()))?;
        let row = Row {
            name,
            neg_elbo: eval.neg_elbo,
            recon: eval.recon,
            kl: eval.kl,
            tc,
            scores,
            seconds: started.elapsed().as_secs_f64(),
        };
        print_row(&row);
        rows.push(row);
    }
    println!();
    println!("| model | −ELBO | recon | KL | TC | BetaVAE | FactorVAE | MIG | DCI-D | SAP | s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        print_row(r);
    }
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "model": r.name, "neg_elbo": r.neg_elbo, "recon": r.recon, "kl": r.kl,
                "tc": r.tc, "scores": r.scores, "seconds": r.seconds,
            })
        })
        .collect();
    let path = cli.out.join("table.json");
    wgvae::fsio::write_atomic(&path, &serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn print_row(r: &Row) {
    let s = &r.scores;
    println!(
        "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
        r.name,
        r.neg_elbo,
        r.recon,
        r.kl,
        r.tc,
        s.beta_vae,
        s.factor_vae,
        s.mig,
        s.dci_disentanglement,
        s.sap,
        r.seconds
    );
}
