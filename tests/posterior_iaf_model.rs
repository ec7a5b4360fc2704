//! The inverse autoregressive flow as a model's posterior: its configuration and the layout
//! of its own networks (`posterior.<t>.*`, masked entries zero), the evaluator's IWAE bound
//! against the f64 twin of the whole estimate, training (masks kept, the ELBO through its
//! single-draw estimate bit for bit IWAE(1), networks in the checkpoint) and the command line.
//! The kernels against their twins are `tests/posterior_iaf.rs`; the whole VAE's gradient
//! against central differences, training and exact resume are in `tests/iwae_train.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::ctx;
use common::tool::{text, wgvae};
use wgvae::model::{PosteriorKind, VaeConfig};
use wgvae::ops::posterior_iaf::IafSizes;
use wgvae::train::checkpoint::{self, Checkpoint};
use wgvae::train::objective::ObjectiveSpec;
use wgvae::train::{DataSource, ModelSpec, TrainConfig, Trainer};

/// Checks that every entry of the IAF's weights that its masks cut is exactly 0, and returns
/// how many connected entries are not.
fn check_masks(cfg: &VaeConfig, flat: &[f32], sizes: IafSizes, what: &str) -> usize {
    let layout = cfg.layout();
    let (d, h) = (sizes.latent, sizes.hidden);
    let mut nonzero = 0;
    for t in 0..sizes.flows {
        let get = |n: &str| {
            let s = layout.get(&format!("posterior.{t}.{n}")).unwrap();
            &flat[s.offset..s.offset + s.len()]
        };
        let w1 = get("w1");
        for j in 0..h {
            for i in 0..d {
                let v = w1[j * d + i];
                if sizes.degree(t, i) <= sizes.hidden_degree(j) {
                    nonzero += (v != 0.0) as usize;
                } else {
                    assert_eq!(v, 0.0, "{what}: step {t} w1[{j}, {i}] is cut by the mask");
                }
            }
        }
        for n in ["wm", "ws"] {
            let w = get(n);
            for i in 0..d {
                for j in 0..h {
                    let v = w[i * h + j];
                    if sizes.hidden_degree(j) < sizes.degree(t, i) {
                        nonzero += (v != 0.0) as usize;
                    } else {
                        assert_eq!(v, 0.0, "{what}: step {t} {n}[{i}, {j}] is cut by the mask");
                    }
                }
            }
        }
    }
    nonzero
}

#[test]
fn configurations_name_the_flow_and_lay_out_its_networks() {
    let mut cfg = VaeConfig::classic(4, 4);
    cfg.latent = 3;
    cfg.posterior = PosteriorKind::Iaf {
        flows: 2,
        hidden: 5,
    };
    let s = serde_json::to_string(&cfg).unwrap();
    assert!(
        s.contains(r#""posterior":{"iaf":{"flows":2,"hidden":5}}"#),
        "{s}"
    );
    let back: VaeConfig = serde_json::from_str(&s).unwrap();
    assert_eq!(back.posterior, cfg.posterior);
    let dflt: VaeConfig =
        serde_json::from_str(&s.replace(r#"{"flows":2,"hidden":5}"#, "{}")).unwrap();
    assert_eq!(
        dflt.posterior,
        PosteriorKind::Iaf {
            flows: 4,
            hidden: 64
        }
    );
    // The encoder outputs [μ | log σ² | h]: 2·3 + 5 values.
    assert_eq!(cfg.posterior().param_dim(), 11);
    let layout = cfg.layout();
    assert_eq!(layout.get("encoder.fc2.bias").unwrap().shape, vec![11]);
    // Each step's MADE, PyTorch's (out, in), after the encoder and before the decoder.
    for t in 0..2 {
        for (n, shape) in [
            ("w1", vec![5, 3]),
            ("c1", vec![5, 5]),
            ("b1", vec![5]),
            ("wm", vec![3, 5]),
            ("bm", vec![3]),
            ("ws", vec![3, 5]),
            ("bs", vec![3]),
        ] {
            let spec = layout.get(&format!("posterior.{t}.{n}")).unwrap();
            assert_eq!(spec.shape, shape, "posterior.{t}.{n}");
        }
    }
    let pos = |name: &str| layout.tensors.iter().position(|t| t.name == name).unwrap();
    assert!(pos("encoder.fc2.bias") < pos("posterior.0.w1"));
    assert!(pos("posterior.1.bs") < pos("decoder.fc1.weight"));
    // Fresh weights: zero wherever a mask cuts, the gates' bias at 2 (σ ≈ 0.88).
    let sizes = IafSizes {
        latent: 3,
        flows: 2,
        hidden: 5,
    };
    let flat = cfg.init_params(5);
    assert!(check_masks(&cfg, &flat, sizes, "init") > 10);
    let bs = layout.get("posterior.1.bs").unwrap();
    assert!(flat[bs.offset..bs.offset + 3].iter().all(|&v| v == 2.0));
    for (posterior, want) in [
        (
            PosteriorKind::Iaf {
                flows: 17,
                hidden: 5,
            },
            "--flows",
        ),
        (
            PosteriorKind::Iaf {
                flows: 2,
                hidden: 0,
            },
            "--iaf-hidden",
        ),
        (
            PosteriorKind::Iaf {
                flows: 2,
                hidden: 257,
            },
            "--iaf-hidden",
        ),
    ] {
        cfg.posterior = posterior;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{posterior:?}: {e}");
    }
    cfg.posterior = PosteriorKind::Iaf {
        flows: 2,
        hidden: 5,
    };
    cfg.latent = 65;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("--latent"), "{e}");
}

#[test]
fn the_evaluators_iwae_bound_matches_the_twin_of_the_whole_estimate() {
    // The twin draws z through the flow's f64 forward and takes log q from z alone (inverting
    // the steps), so this checks the kernels, the bound weights and the evaluator's rows end
    // to end.
    let mut cfg = VaeConfig::classic(3, 4);
    cfg.enc_hidden = vec![7];
    cfg.dec_hidden = vec![6];
    cfg.latent = 3;
    cfg.posterior = PosteriorKind::Iaf {
        flows: 3,
        hidden: 5,
    };
    let params: Vec<f32> = cfg.init_params(11).iter().map(|v| 2.0 * v).collect();
    common::evaluator_iwae_matches_the_twin(&cfg, &params);
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wgvae-iaf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

const SIZES: IafSizes = IafSizes {
    latent: 6,
    flows: 2,
    hidden: 16,
};

fn iaf_cfg(out: &Path, objective: ObjectiveSpec) -> TrainConfig {
    TrainConfig {
        data: DataSource::Idx {
            dir: common::tool::mnist(),
        },
        model: ModelSpec {
            enc_hidden: vec![64],
            dec_hidden: vec![64],
            latent: SIZES.latent,
            posterior: PosteriorKind::Iaf {
                flows: SIZES.flows,
                hidden: SIZES.hidden,
            },
            ..ModelSpec::default()
        },
        objective,
        batch: 32,
        epochs: 1,
        out: out.to_path_buf(),
        quiet: true,
        pictures: false,
        eval_batch: 128,
        ..TrainConfig::default()
    }
}

#[test]
fn training_keeps_the_masks_and_the_elbo_is_iwae_with_one_draw() {
    let ctx = ctx();
    let (out_e, out_i) = (tmp("elbo"), tmp("iwae1"));
    let mut e = Trainer::new(ctx, iaf_cfg(&out_e, ObjectiveSpec::Elbo)).unwrap();
    assert_eq!(e.vae.posterior.name(), "iaf");
    let before = e.vae.read_params(ctx).unwrap();
    let se = e.train().unwrap();
    let mut i = Trainer::new(ctx, iaf_cfg(&out_i, ObjectiveSpec::Iwae { k: 1 })).unwrap();
    i.train().unwrap();
    let (pe, pi) = (
        e.vae.read_params(ctx).unwrap(),
        i.vae.read_params(ctx).unwrap(),
    );
    assert!(
        pe.iter().zip(&pi).all(|(x, y)| x.to_bits() == y.to_bits()),
        "the ELBO of a flow and IWAE(1) trained apart"
    );
    let terms = &se.epochs[0].train_terms;
    assert!(terms.contains_key("train_kl"), "{terms:?}");
    // The flow's networks trained (every step's tensors moved), and stayed masked.
    let cfg = &e.vae.cfg;
    let layout = cfg.layout();
    for t in &layout.tensors {
        if t.name.starts_with("posterior.") {
            let r = t.offset..t.offset + t.len();
            let moved = pe[r.clone()]
                .iter()
                .zip(&before[r])
                .filter(|(a, b)| a != b)
                .count();
            assert!(moved > 0, "{} did not train", t.name);
        }
    }
    assert!(check_masks(cfg, &pe, SIZES, "after an epoch") > 0);
    // The checkpoint holds the networks under their names, masks and all.
    let ck = Checkpoint::load(&out_e.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.model.posterior, cfg.posterior);
    assert_eq!(ck.params, pe);
    let _ = std::fs::remove_dir_all(out_e);
    let _ = std::fs::remove_dir_all(out_i);
}

#[test]
fn the_cli_trains_an_iaf_samples_it_and_refuses_it_where_it_does_not_apply() {
    let dir = tmp("cli");
    let run_dir = dir.join("run");
    let out = wgvae()
        .args(["train", "--quiet", "--no-pictures", "--epochs", "1"])
        .args(["--posterior", "iaf", "--flows", "2", "--iaf-hidden", "12"])
        .args(["--objective", "iwae", "--iwae-train-k", "2"])
        .args(["--hidden", "32", "--latent", "4", "--batch", "32", "--data"])
        .arg(common::tool::mnist())
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ck = Checkpoint::load(&run_dir.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(
        ck.model.posterior,
        PosteriorKind::Iaf {
            flows: 2,
            hidden: 12
        }
    );
    let images = common::tool::mnist().join("t10k-images-idx3-ubyte.gz");
    let (elbo, iwae) = common::tool::eval_bounds(&run_dir, &images, 16);
    eprintln!("iaf eval: -ELBO {elbo:.2}, -IWAE(16) {iwae:.2}");
    assert!(
        iwae.is_finite() && iwae > 0.0 && iwae < elbo + 1.0,
        "{iwae} vs {elbo}"
    );
    // Prior samples, and draws of the aggregate posterior through the flow's f64 twin: at
    // T = 0 each is the flow at ε = 0 of some input, the location `encode` reports.
    let png = dir.join("prior.png");
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&run_dir)
        .args(["--n", "8", "--out-png"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "prior: {}", text(&out));
    assert!(png.exists());
    let agg = dir.join("agg.npy");
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&run_dir)
        .args([
            "--from",
            "aggregate",
            "--n",
            "6",
            "--temperature",
            "0",
            "--images",
        ])
        .arg(&images)
        .arg("--out-npy")
        .arg(&agg)
        .output()
        .unwrap();
    assert!(out.status.success(), "aggregate: {}", text(&out));
    let enc = dir.join("enc");
    let out = wgvae()
        .args(["encode", "--run"])
        .arg(&run_dir)
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&enc)
        .output()
        .unwrap();
    assert!(out.status.success(), "encode: {}", text(&out));
    let mu = common::tool::npy_f32(&enc.join("mu.npy")).2;
    let za = common::tool::npy_f32(&agg).2;
    assert_eq!(za.len(), 6 * 4);
    for row in za.chunks(4) {
        assert!(
            mu.chunks(4).any(|m| m == row),
            "aggregate code {row:?} at T = 0 is no input's location"
        );
    }
    for (args, want) in [
        (
            &["--posterior", "iaf", "--objective", "capacity"][..],
            "--posterior iaf has no closed-form KL",
        ),
        (&["--posterior", "iaf", "--beta", "4"][..], "--beta 1"),
        (
            &["--iaf-hidden", "8"][..],
            "--iaf-hidden applies to --posterior iaf only",
        ),
        (
            &["--posterior", "planar", "--iaf-hidden", "8"][..],
            "--iaf-hidden applies to --posterior iaf only",
        ),
        (&["--posterior", "iaf", "--flows", "17"][..], "--flows"),
        (
            &["--posterior", "iaf", "--iaf-hidden", "300"][..],
            "--iaf-hidden",
        ),
    ] {
        let (data, bad) = (common::tool::mnist(), dir.join("bad"));
        let mut all = vec!["train", "--quiet", "--no-pictures", "--data"];
        all.extend([data.to_str().unwrap(), "--out", bad.to_str().unwrap()]);
        all.extend(args);
        common::tool::fails(&all, &[want]);
    }
    let _ = std::fs::remove_dir_all(dir);
}
