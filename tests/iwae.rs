//! The evaluator's IWAE bound at K > 1 against the f64 twin of the whole estimate, with batch
//! sizes and image counts that expose row-indexing mistakes (rows k·E + b, a partial last
//! batch).

mod common;

use common::{assert_close, ctx};
use wgvae::cpu;
use wgvae::data::Dataset;
use wgvae::eval::Evaluator;
use wgvae::model::{GaussianSigma, Likelihood, Vae, VaeConfig};
use wgvae::ops::Activation;
use wgvae::rng::HostRng;

fn dataset(n: usize, height: usize, width: usize, seed: u64) -> Dataset {
    let mut rng = HostRng::new(seed);
    Dataset {
        name: "iwae-test".into(),
        n,
        channels: 1,
        height,
        width,
        pixels: (0..n * height * width)
            .map(|_| rng.below(256) as u8)
            .collect(),
        labels: None,
        factors: None,
    }
}

/// Runs every IWAE batch of an evaluator with `batch` images per evaluation batch and K =
/// `k`, and compares each image's bound with the twin given the GPU's own ε; then the
/// evaluator's −IWAE with the mean of the twin's bounds.
fn check(cfg: &VaeConfig, n: usize, batch: usize, k: usize, expect_e: usize) {
    let ctx = ctx();
    // Twice PyTorch's initial scale: posteriors with log σ² away from 0 and log-weights
    // that differ between samples by more than a nat.
    let params: Vec<f32> = cfg.init_params(11).iter().map(|v| 2.0 * v).collect();
    let vae = Vae::new(ctx, cfg, &params).unwrap();
    let params64: Vec<f64> = vae
        .read_params(ctx)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let data = dataset(n, cfg.height, cfg.width, 3 + n as u64);
    let ev = Evaluator::new(ctx, &vae, &data, batch, k, 5).unwrap();
    let e = ev.iwae_batch_images().unwrap();
    assert_eq!(e, expect_e, "images per IWAE batch");
    let p = cfg.input_dim();
    let d = cfg.latent;
    let mut twin_all = Vec::new();
    let mut spread = 0.0f64;
    let mut prev_eps: Option<Vec<f32>> = None;
    for bi in 0..n.div_ceil(e) {
        let got = ev.iwae_batch(ctx, bi).unwrap();
        let valid = (n - bi * e).min(e);
        assert_eq!(got.len(), valid, "batch {bi}: bounds per image");
        let eps = ev.iwae_eps().unwrap().read(ctx).unwrap();
        assert_eq!(eps.len(), k * e * d);
        if let Some(prev) = &prev_eps {
            assert_ne!(
                prev,
                &eps,
                "batch {bi} drew the same eps as batch {}",
                bi - 1
            );
        }
        // The batch's inputs as the gather builds them: rows past the data set are zero.
        let mut x = vec![0.0f32; e * p];
        for r in 0..valid {
            for (j, &v) in data.image(bi * e + r).iter().enumerate() {
                x[r * p + j] = v as f32 / 255.0;
            }
        }
        let twin = cpu::iwae(cfg, &params64, &x, e, k, &eps);
        for b in 0..valid {
            let w: Vec<f64> = (0..k).map(|s| twin.log_w[s * e + b]).collect();
            let (lo, hi) = w
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            spread = spread.max(hi - lo);
        }
        // Bounds of ~30-50 nats from f32 sums over P pixels and D dimensions: about one ulp
        // (4e-6) of rounding seen. A wrong row (another image or sample) is off by nats.
        assert_close(
            &format!("IWAE bounds, n={n} batch={batch} K={k}, IWAE batch {bi}"),
            &got,
            &twin.bound[..valid],
            5e-5,
            1e-6,
        );
        twin_all.extend_from_slice(&twin.bound[..valid]);
        prev_eps = Some(eps);
    }
    // The samples must disagree for log-mean-exp over K to be tested at all.
    assert!(
        spread > 1.0,
        "log-weights of one image span only {spread} nats"
    );
    let err = ev.run_with(ctx, d + 1, true).unwrap_err().to_string();
    assert!(err.contains("latent"), "{err}");
    let report = ev.run_with(ctx, d, true).unwrap();
    assert_eq!(report.iwae_k, Some(k));
    let want = -twin_all.iter().sum::<f64>() / n as f64;
    let got = report.neg_iwae.unwrap();
    assert!(
        (got - want).abs() < 1e-4,
        "-IWAE over the data set {got} vs twin {want}"
    );
}

fn small(activation: Activation, likelihood: Likelihood) -> VaeConfig {
    VaeConfig {
        height: 5,
        width: 7,
        channels: 1,
        arch: wgvae::model::Arch::Mlp,
        enc_hidden: vec![13],
        dec_hidden: vec![11],
        latent: 3,
        activation,
        likelihood,
        classes: None,
        posterior: wgvae::model::PosteriorKind::Diagonal,
    }
}

#[test]
fn iwae_bernoulli_batch_3_k_5_matches_twin() {
    // 11 images in IWAE batches of 3: the last holds 2.
    check(&small(Activation::Tanh, Likelihood::Bernoulli), 11, 3, 5, 3);
}

#[test]
fn iwae_bernoulli_batch_7_k_2_matches_twin() {
    check(&small(Activation::Relu, Likelihood::Bernoulli), 11, 7, 2, 7);
}

#[test]
fn iwae_gaussian_batch_4_k_8_matches_twin() {
    let cfg = small(
        Activation::leaky_relu(0.2).unwrap(),
        Likelihood::Gaussian {
            log_sigma: GaussianSigma::LearnedPerPixel,
        },
    );
    check(&cfg, 10, 4, 8, 4);
}

#[test]
fn iwae_batch_is_sized_by_memory() {
    use wgvae::eval::iwae_images_per_batch;
    let classic = VaeConfig::classic(28, 28);
    let (mib, max_buffer) = (1u64 << 20, 128u64 << 20);
    // K = 5000: one image's activations are 4·(1246 + 5000·1226) = 24,524,984 bytes, and its
    // (K, 784) decoder output alone 15,680,000 bytes: 128 MiB holds 8 of those.
    assert_eq!(
        iwae_images_per_batch(&classic, 5000, 500, 256 * mib, max_buffer).unwrap(),
        8
    );
    assert_eq!(
        iwae_images_per_batch(&classic, 5000, 500, 256 * mib, 1 << 40).unwrap(),
        10
    );
    assert_eq!(
        iwae_images_per_batch(&classic, 5000, 500, 64 * mib, max_buffer).unwrap(),
        2
    );
    // At least one image, however small the budget; at most the eval batch.
    assert_eq!(
        iwae_images_per_batch(&classic, 5000, 500, 1, max_buffer).unwrap(),
        1
    );
    assert_eq!(
        iwae_images_per_batch(&classic, 1, 500, 256 * mib, max_buffer).unwrap(),
        500
    );
    assert_eq!(
        iwae_images_per_batch(&classic, 100, 7, 256 * mib, max_buffer).unwrap(),
        7
    );
    // K·E rows stay within one GEMM (524,280 rows) for a tiny model.
    let tiny = small(Activation::Relu, Likelihood::Bernoulli);
    assert_eq!(
        iwae_images_per_batch(&tiny, 100_000, 500, 256 * mib, max_buffer).unwrap(),
        5
    );
    // Too many samples for one image: a clear error naming the flag, never an overflow.
    for k in [1_000_000, usize::MAX / 2, usize::MAX] {
        let e = iwae_images_per_batch(&classic, k, 500, 256 * mib, max_buffer)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--iwae-k"), "k = {k}: {e}");
    }
}
