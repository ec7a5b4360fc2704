//! Training objectives beyond the ELBO, end to end: the controlled-capacity term holds the KL
//! near its target; cyclical annealing records its period; terms are reported by name.

mod common;

use std::path::{Path, PathBuf};

use common::ctx;
use wgvae::model::discriminator::DiscriminatorConfig;
use wgvae::train::checkpoint::Checkpoint;
use wgvae::train::objective::{KlCycles, ObjectiveSpec};
use wgvae::train::{DataSource, ModelSpec, TrainConfig, Trainer};

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wgvae-obj-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A small MLP on the committed 512-digit MNIST subset.
fn cfg(out: &Path) -> TrainConfig {
    TrainConfig {
        data: DataSource::Idx {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-512"),
        },
        model: ModelSpec {
            enc_hidden: vec![64],
            dec_hidden: vec![64],
            latent: 8,
            ..Default::default()
        },
        batch: 32,
        epochs: 6,
        adam: wgvae::ops::adam::AdamConfig {
            lr: 3e-3,
            ..Default::default()
        },
        out: out.to_path_buf(),
        quiet: true,
        pictures: false,
        eval_batch: 128,
        ..TrainConfig::default()
    }
}

fn recorded(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap()
}

#[test]
fn capacity_holds_the_kl_near_its_target() {
    let ctx = ctx();
    let out_elbo = tmp("elbo");
    let elbo = Trainer::new(ctx, cfg(&out_elbo)).unwrap().train().unwrap();
    let kl_elbo = elbo.last_eval.unwrap().kl;

    let out = tmp("capacity");
    let c_max = 2.0;
    let mut t = Trainer::new(
        ctx,
        TrainConfig {
            objective: ObjectiveSpec::Capacity {
                gamma: 50.0,
                c_max,
                steps: None,
            },
            ..cfg(&out)
        },
    )
    .unwrap();
    let s = t.train().unwrap();
    let last = s.epochs.last().unwrap();
    let kl = s.last_eval.unwrap().kl;
    eprintln!(
        "KL after 6 epochs: ELBO {kl_elbo:.2}, capacity (C → {c_max}) {kl:.2}; train terms {:?}",
        last.train_terms
    );
    // The ELBO run's KL is far above the capacity; the capacity run's sits near it.
    assert!(kl_elbo > 3.0 * c_max as f64, "ELBO KL {kl_elbo}");
    assert!(kl < 0.5 * kl_elbo, "capacity KL {kl} vs ELBO KL {kl_elbo}");
    assert!(
        (kl - c_max as f64).abs() < 1.5,
        "capacity KL {kl} vs C {c_max}"
    );
    for name in ["train_recon", "train_kl", "train_capacity"] {
        assert!(last.train_terms.contains_key(name), "{name} missing");
    }
    // loss = recon + capacity (the KL is reported with weight 0)
    let (r, p) = (
        last.train_terms["train_recon"],
        last.train_terms["train_capacity"],
    );
    assert!((last.train_loss - (r + p)).abs() < 1e-6 * last.train_loss.abs().max(1.0));
    assert!(p >= 0.0);
    // The rise was resolved to the whole run: 6 epochs of ceil(512 / 32) = 16 steps.
    let run = &recorded(&out)["run"];
    assert_eq!(run["objective"]["kind"], "capacity");
    assert_eq!(run["objective"]["steps"], 96);
    for d in [out, out_elbo] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn cyclical_annealing_records_its_period_and_keeps_it_on_resume() {
    let ctx = ctx();
    let out = tmp("cycles");
    let c = TrainConfig {
        epochs: 2,
        kl_cycles: Some(KlCycles {
            cycles: 3,
            ratio: 0.5,
            period: None,
        }),
        ..cfg(&out)
    };
    let s = Trainer::new(ctx, c).unwrap().train().unwrap();
    assert!(s.last_eval.unwrap().neg_elbo.is_finite());
    // 2 epochs × 16 steps in 3 cycles: periods of 11 steps.
    assert_eq!(recorded(&out)["run"]["kl_cycles"]["period"], 11);
    let opts = wgvae::train::ResumeOptions {
        more_epochs: 1,
        quiet: Some(true),
        data: None,
    };
    let mut t = Trainer::resume_with(ctx, &out, &opts).unwrap();
    t.train().unwrap();
    assert_eq!(recorded(&out)["run"]["kl_cycles"]["period"], 11);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn schedules_that_cannot_be_combined_are_refused() {
    let out = tmp("refused");
    let both = TrainConfig {
        kl_warmup: 10,
        kl_cycles: Some(KlCycles {
            cycles: 2,
            ratio: 0.5,
            period: None,
        }),
        ..cfg(&out)
    };
    let e = both.validate().unwrap_err().to_string();
    assert!(e.contains("--kl-warmup"), "{e}");
    let bad_ratio = TrainConfig {
        kl_cycles: Some(KlCycles {
            cycles: 2,
            ratio: 1.5,
            period: None,
        }),
        ..cfg(&out)
    };
    let e = bad_ratio.validate().unwrap_err().to_string();
    assert!(e.contains("--kl-cycle-ratio 1.5"), "{e}");
    let capacity_with_warmup = TrainConfig {
        kl_warmup: 5,
        objective: ObjectiveSpec::Capacity {
            gamma: 10.0,
            c_max: 5.0,
            steps: None,
        },
        ..cfg(&out)
    };
    let e = capacity_with_warmup.validate().unwrap_err().to_string();
    assert!(e.contains("--capacity"), "{e}");
    let negative_gamma = TrainConfig {
        objective: ObjectiveSpec::Capacity {
            gamma: -1.0,
            c_max: 5.0,
            steps: None,
        },
        ..cfg(&out)
    };
    let e = negative_gamma.validate().unwrap_err().to_string();
    assert!(e.contains("--gamma -1"), "{e}");
}

fn factor_vae(out: &Path, epochs: usize) -> TrainConfig {
    let mut disc = DiscriminatorConfig::paper(8);
    disc.layers = 2;
    disc.width = 32;
    TrainConfig {
        epochs,
        objective: ObjectiveSpec::FactorVae { gamma: 10.0, disc },
        ..cfg(out)
    }
}

#[test]
fn factor_vae_trains_both_networks_and_resumes_exactly() {
    let ctx = ctx();
    let straight = tmp("fvae-straight");
    let s = Trainer::new(ctx, factor_vae(&straight, 2))
        .unwrap()
        .train()
        .unwrap();
    let last = s.epochs.last().unwrap();
    eprintln!("FactorVAE terms after 2 epochs: {:?}", last.train_terms);
    for name in [
        "train_recon",
        "train_kl",
        "train_tc",
        "train_disc_loss",
        "train_disc_accuracy",
    ] {
        assert!(last.train_terms.contains_key(name), "{name} missing");
    }
    let acc = last.train_terms["train_disc_accuracy"];
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
    let disc_loss = last.train_terms["train_disc_loss"];
    assert!(disc_loss > 0.0 && disc_loss < 1.0, "disc loss {disc_loss}");
    // loss = recon + KL + γ·TC
    let t = &last.train_terms;
    let want = t["train_recon"] + t["train_kl"] + 10.0 * t["train_tc"];
    assert!(
        (last.train_loss - want).abs() < 1e-6 * want.abs(),
        "{} vs {want}",
        last.train_loss
    );

    // One epoch, then one more from the checkpoint: the same weights, bit for bit, for both
    // the VAE and the discriminator (whose parameters and moments the checkpoint carries).
    let split = tmp("fvae-split");
    Trainer::new(ctx, factor_vae(&split, 1))
        .unwrap()
        .train()
        .unwrap();
    let opts = wgvae::train::ResumeOptions {
        more_epochs: 1,
        quiet: Some(true),
        data: None,
    };
    Trainer::resume_with(ctx, &split, &opts)
        .unwrap()
        .train()
        .unwrap();
    let layout = match &factor_vae(&split, 1).objective {
        ObjectiveSpec::FactorVae { disc, .. } => disc.layout(),
        _ => unreachable!(),
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let ck = |d: &Path| {
        let p = d.join("checkpoint.safetensors");
        (
            Checkpoint::load(&p).unwrap(),
            Checkpoint::read_group(&p, &layout).unwrap(),
        )
    };
    let (a, ga) = ck(&straight);
    let (b, gb) = ck(&split);
    assert_eq!(bits(&a.params), bits(&b.params), "VAE parameters");
    assert_eq!(
        bits(&ga.params),
        bits(&gb.params),
        "discriminator parameters"
    );
    assert_eq!(bits(&ga.adam_v), bits(&gb.adam_v), "discriminator moments");
    // The discriminator was trained: its weights moved from their initial values.
    let init = match &factor_vae(&split, 1).objective {
        ObjectiveSpec::FactorVae { disc, .. } => disc.init_params(0).unwrap(),
        _ => unreachable!(),
    };
    let moved = ga.params.iter().zip(&init).filter(|(a, b)| a != b).count();
    assert!(
        moved > init.len() / 2,
        "{moved} of {} weights moved",
        init.len()
    );
    for d in [straight, split] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn tc_vae(out: &Path, beta: f32, estimator: wgvae::ops::tc::Estimator) -> TrainConfig {
    TrainConfig {
        epochs: 3,
        beta,
        objective: ObjectiveSpec::TcVae {
            alpha: 1.0,
            gamma: 1.0,
            estimator,
        },
        ..cfg(out)
    }
}

#[test]
fn tc_vae_reports_its_decomposition_and_penalises_the_total_correlation() {
    let ctx = ctx();
    let mut tcs = Vec::new();
    for (beta, estimator) in [
        (1.0, wgvae::ops::tc::Estimator::Mss),
        (8.0, wgvae::ops::tc::Estimator::Mss),
        (8.0, wgvae::ops::tc::Estimator::Mws),
    ] {
        let out = tmp(&format!("tcvae-{beta}-{}", estimator.name()));
        let s = Trainer::new(ctx, tc_vae(&out, beta, estimator))
            .unwrap()
            .train()
            .unwrap();
        let t = &s.epochs.last().unwrap().train_terms;
        eprintln!("β-TCVAE β {beta} {}: {t:?}", estimator.name());
        let (kl, mi, tc, dim) = (
            t["train_kl"],
            t["train_mi"],
            t["train_tc"],
            t["train_dim_kl"],
        );
        // The three terms add up to the single-sample estimate of the KL, whose epoch mean is
        // close to the closed form's.
        assert!(
            (mi + tc + dim - kl).abs() < 0.1 * kl + 0.5,
            "{mi} + {tc} + {dim} vs {kl}"
        );
        let loss = s.epochs.last().unwrap().train_loss;
        let want = t["train_recon"] + mi + beta as f64 * tc + dim;
        assert!(
            (loss - want).abs() < 1e-6 * want.abs(),
            "loss {loss} vs {want}"
        );
        tcs.push(tc);
        let _ = std::fs::remove_dir_all(out);
    }
    // A heavier weight on the total correlation leaves less of it (stratified estimates; the
    // weighted-sampling estimator carries offsets of the order of (D − 1)·ln(N·M) in TC,
    // as the paper's estimator does).
    assert!(tcs[1] < tcs[0], "TC with β 8 {} vs β 1 {}", tcs[1], tcs[0]);
}
