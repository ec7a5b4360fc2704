//! Every posterior family trained with the ELBO and with the IWAE bound under the same budget,
//! on real digits: test −ELBO, −IWAE(k) and active units, as the table in README.
//!
//! ```sh
//! cargo run --release --example posterior_mnist                       # ../shared/data/mnist-8k, 5 epochs
//! cargo run --release --example posterior_mnist -- --data DIR --epochs 20 --families diagonal,iaf
//! ```
//!
//! Each run is `wgvae train --data DIR --epochs E --posterior P [--objective iwae
//! --iwae-train-k K] --iwae-k k` with every other flag at its default (MLP 784-400-20, Adam
//! 1e-3, batch 128; planar with 8 flows, IAF with 4 steps of 64 units), written to
//! `--out`/`<family>-<objective>` (which must not hold a run yet).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use wgvae::cli::TrainArgs;

#[derive(Parser, Debug)]
#[command(about = "Posterior families × objectives on MNIST under one budget")]
struct Args {
    /// IDX (or NumPy) directory of the digits
    #[arg(long, default_value = "../shared/data/mnist-8k")]
    data: PathBuf,
    /// Training epochs of every run
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Draws per input of the IWAE objective
    #[arg(long, default_value_t = 5)]
    train_k: usize,
    /// Draws per input of the test IWAE bound
    #[arg(long, default_value_t = 100)]
    iwae_k: usize,
    /// Families, comma-separated: diagonal, full, planar, iaf
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "diagonal,full,planar,iaf"
    )]
    families: Vec<String>,
    /// Where the runs go, one directory each
    #[arg(long, default_value = "posterior-mnist")]
    out: PathBuf,
}

#[derive(Parser, Debug)]
struct Train {
    #[command(flatten)]
    args: TrainArgs,
}

fn main() -> Result<()> {
    wgvae::cli::quiet_wayland_probe();
    let a = Args::parse();
    println!(
        "| posterior | trained with | test −ELBO | test −IWAE({}) | test KL | active units | training time |",
        a.iwae_k
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for family in &a.families {
        for objective in ["elbo", "iwae"] {
            let out = a.out.join(format!("{family}-{objective}"));
            if out.exists() {
                bail!(
                    "{} exists: remove it or choose another --out",
                    out.display()
                );
            }
            let mut argv: Vec<String> = ["train", "--quiet", "--no-pictures", "--posterior"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            argv.push(family.clone());
            argv.extend(["--epochs".into(), a.epochs.to_string()]);
            argv.extend(["--iwae-k".into(), a.iwae_k.to_string()]);
            if objective == "iwae" {
                argv.extend(["--objective".into(), "iwae".into()]);
                argv.extend(["--iwae-train-k".into(), a.train_k.to_string()]);
            }
            argv.extend(["--data".into(), a.data.display().to_string()]);
            argv.extend(["--out".into(), out.display().to_string()]);
            let args = Train::try_parse_from(&argv)
                .with_context(|| format!("--families {family}"))?
                .args;
            let run = wgvae::cli::train(&args)
                .with_context(|| format!("training {family} with the {objective} objective"))?;
            let last = run.epochs.last().context("the run trained no epoch")?;
            let seconds: f64 = run.epochs.iter().map(|e| e.train_seconds).sum();
            let iwae = last
                .test_neg_iwae
                .map_or("–".to_string(), |v| format!("{v:.2}"));
            let with = match objective {
                "elbo" => "ELBO".to_string(),
                _ => format!("IWAE (K = {})", a.train_k),
            };
            println!(
                "| {family} | {with} | {:.2} | {iwae} | {:.2} | {}/{} | {seconds:.0} s |",
                last.test_neg_elbo,
                last.test_kl,
                last.active_units,
                last.test_kl_per_dim.len()
            );
        }
    }
    Ok(())
}
