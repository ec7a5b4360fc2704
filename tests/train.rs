//! End-to-end training on the GPU: the loss falls, the outputs of a run exist, resume is exact,
//! IWAE with k = 1 is the single-sample ELBO, and bad input gives clear errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{contexts, ctx, ctx_tiled};
use wgvae::eval::Evaluator;
use wgvae::gpu::GpuContext;
use wgvae::model::Vae;
use wgvae::model::{GaussianSigma, Likelihood};
use wgvae::ops::data::Binarize;
use wgvae::ops::kl::iwae_log_weights;
use wgvae::ops::likelihood::LOG_SIGMA_MIN;
use wgvae::ops::reparam::{RngStep, Stream};
use wgvae::train::checkpoint::{self, Checkpoint};
use wgvae::train::{ArchKind, DataSource, ModelSpec, TrainConfig, Trainer};

fn mnist512() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-512")
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wgvae-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn small_cfg(out: &Path) -> TrainConfig {
    TrainConfig {
        data: DataSource::Idx { dir: mnist512() },
        batch: 32,
        epochs: 2,
        out: out.to_path_buf(),
        quiet: true,
        pictures: false,
        eval_batch: 128,
        ..TrainConfig::default()
    }
}

#[test]
fn short_mnist_run_learns_and_writes_its_outputs() {
    let ctx = ctx();
    let out = tmp("short");
    let cfg = TrainConfig {
        epochs: 4,
        pictures: true,
        iwae_k: 8,
        ..small_cfg(&out)
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    let start = t.evaluate(false).unwrap();
    let s = t.train().unwrap();
    let end = s.last_eval.clone().unwrap();
    eprintln!(
        "mnist-512: test -ELBO {:.1} at start, {:.1} after 4 epochs of 16 steps",
        start.neg_elbo, end.neg_elbo
    );
    // An untrained decoder scores ~784 ln 2 = 543 nats; 64 steps bring the test loss far below.
    assert!(start.neg_elbo > 500.0, "start {}", start.neg_elbo);
    assert!(
        end.neg_elbo < 0.5 * start.neg_elbo,
        "{} -> {}",
        start.neg_elbo,
        end.neg_elbo
    );
    let train_losses: Vec<f64> = s.epochs.iter().map(|m| m.train_loss).collect();
    assert!(
        train_losses.windows(2).all(|w| w[1] < w[0]),
        "train loss not falling: {train_losses:?}"
    );
    // The IWAE bound is at least as tight as the ELBO (up to Monte Carlo noise).
    let iw = end.neg_iwae.unwrap();
    assert!(
        iw < end.neg_elbo + 1.0,
        "-IWAE {iw} vs -ELBO {}",
        end.neg_elbo
    );
    // Outputs of a run.
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let ck = Checkpoint::load(&out.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.state.epoch, 4);
    assert_eq!(ck.state.step, 4 * 16);
    assert!(out.join("config.json").exists());
    for png in [
        "reconstructions.png",
        "samples.png",
        "traversals.png",
        "interpolation.png",
    ] {
        let (h, w, px) = wgvae::image::read_png_gray(&out.join(png)).unwrap();
        assert!(h >= 28 && w >= 28, "{png}: {h}x{w}");
        // Padding is grey 128: strokes brighter than it and background darker must both show.
        let (lo, hi) = (px.iter().min().unwrap(), px.iter().max().unwrap());
        assert!(
            *lo < 30 && *hi > 150,
            "{png} looks blank: pixels {lo}..{hi}"
        );
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn resume_is_exact() {
    // Batches of 40: 13 steps per epoch, the last of 32 images.
    check_resume(ctx(), "", |out| TrainConfig {
        batch: 40,
        ..small_cfg(out)
    });
}

#[test]
fn resume_is_exact_with_the_tiled_gemm_and_dynamic_binarisation() {
    check_resume(ctx_tiled(), "-tiled", |out| TrainConfig {
        batch: 40,
        binarize: Binarize::Dynamic,
        ..tiny_cfg(out)
    });
}

#[test]
fn resume_is_exact_for_a_conv_vae() {
    // 28×28 through conv 4, conv 8 (4×4, stride 2: 14×14, 7×7), fc 32 and back.
    check_resume(ctx(), "-conv", |out| TrainConfig {
        batch: 40,
        model: small_conv(),
        ..small_cfg(out)
    });
}

fn small_conv() -> ModelSpec {
    ModelSpec {
        arch: ArchKind::Conv,
        conv_channels: vec![4, 8],
        enc_hidden: vec![32],
        dec_hidden: vec![32],
        latent: 4,
        ..ModelSpec::default()
    }
}

/// Colour images (3 × 12 × 10, CHW) from `.npy` files: a coloured rectangle on black.
fn colour_npy(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let (c, h, w) = (3, 12, 10);
    let make = |n: usize, seed: usize| -> Vec<u8> {
        let mut v = vec![0u8; n * c * h * w];
        for i in 0..n {
            let k = i * 7 + seed;
            let (y0, x0) = (k % 5, (k / 5) % 4);
            let colour = [
                (k * 37 % 256) as u8,
                (k * 91 % 256) as u8,
                (k * 53 % 256) as u8,
            ];
            for (ch, &col) in colour.iter().enumerate() {
                for y in y0..y0 + 6 {
                    for x in x0..x0 + 5 {
                        v[((i * c + ch) * h + y) * w + x] = col;
                    }
                }
            }
        }
        v
    };
    // Written channels-first (N, C, H, W).
    wgvae::data::npy::write_npy_u8(
        &dir.join("train-images.npy"),
        &[n_train, c, h, w],
        &make(n_train, 0),
    )
    .unwrap();
    wgvae::data::npy::write_npy_u8(
        &dir.join("test-images.npy"),
        &[n_test, c, h, w],
        &make(n_test, 3),
    )
    .unwrap();
}

#[test]
fn colour_images_train_through_a_conv_vae_and_come_back_in_colour() {
    let ctx = ctx();
    let dir = tmp("colour-data");
    colour_npy(&dir, 60, 20);
    let out = tmp("colour-run");
    let cfg = TrainConfig {
        data: DataSource::Idx { dir: dir.clone() },
        model: ModelSpec {
            conv_channels: vec![4, 6],
            ..small_conv()
        },
        batch: 16,
        epochs: 6,
        out: out.clone(),
        quiet: true,
        pictures: true,
        eval_batch: 32,
        adam: wgvae::ops::adam::AdamConfig {
            lr: 3e-3,
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    assert_eq!(t.vae.cfg.channels, 3);
    assert_eq!(t.vae.cfg.input_dim(), 3 * 12 * 10);
    let start = t.evaluate(false).unwrap().neg_elbo;
    let s = t.train().unwrap();
    let end = s.last_eval.unwrap().neg_elbo;
    eprintln!("colour 3x12x10 conv VAE: test -ELBO {start:.1} -> {end:.1} after 6 epochs");
    assert!(end < start - 20.0, "test -ELBO {start} -> {end}");
    for name in [
        "reconstructions.png",
        "samples.png",
        "traversals.png",
        "interpolation.png",
    ] {
        let (_, _, channels, _) = wgvae::image::read_png(&out.join(name)).unwrap();
        assert_eq!(channels, 3, "{name} is not RGB");
    }
    let ck = Checkpoint::load(&out.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.model.channels, 3);
    let bytes = std::fs::read(out.join(checkpoint::FILE_NAME)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // PyTorch's layouts: Conv2d (out, in, kh, kw), ConvTranspose2d (in, out, kh, kw).
    assert_eq!(
        st.tensor("encoder.conv1.weight").unwrap().shape(),
        &[4, 3, 4, 4]
    );
    assert_eq!(
        st.tensor("decoder.deconv2.weight").unwrap().shape(),
        &[4, 3, 4, 4]
    );
    assert_eq!(
        st.tensor("encoder.fc1.weight").unwrap().shape(),
        &[32, 6 * 3 * 2]
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn output_bias_starts_at_the_marginal_log_odds() {
    let ctx = ctx();
    for (model, per_pixel) in [(ModelSpec::default(), true), (small_conv(), false)] {
        let out = tmp("bias-init");
        let cfg = TrainConfig {
            model,
            output_bias_init: true,
            ..small_cfg(&out)
        };
        let t = Trainer::new(ctx, cfg).unwrap();
        let params = t.vae.read_params(ctx).unwrap();
        let last = t.vae.decoder.modules.last().unwrap();
        let spec = t
            .vae
            .layout
            .get(&t.vae.decoder.param_name(last.as_ref(), "bias"))
            .unwrap();
        let train = &t.split.train;
        let p = train.image_len();
        let logit = |sum: f64, n: f64| {
            let m = (sum / (n * 255.0)).clamp(1e-3, 1.0 - 1e-3);
            (m / (1.0 - m)).ln()
        };
        let want: Vec<f64> = if per_pixel {
            (0..p)
                .map(|j| {
                    let s: f64 = (0..train.n).map(|i| train.image(i)[j] as f64).sum();
                    logit(s, train.n as f64)
                })
                .collect()
        } else {
            let s: f64 = train.pixels.iter().map(|&v| v as f64).sum();
            vec![logit(s, (train.n * p) as f64)]
        };
        assert_eq!(spec.len(), want.len());
        common::assert_close(
            "output bias",
            &params[spec.offset..spec.offset + spec.len()],
            &want,
            1e-5,
            1e-5,
        );
        // Corner pixels of MNIST are always 0: the clamp keeps their log-odds finite.
        if per_pixel {
            assert!((params[spec.offset] as f64 - (1e-3f64 / (1.0 - 1e-3)).ln()).abs() < 1e-4);
        }
        let _ = std::fs::remove_dir_all(out);
    }
}

/// Two epochs straight, and one epoch then one more resumed from the checkpoint: the same
/// bits in the losses, the parameters and the optimizer state.
fn check_resume(ctx: &GpuContext, tag: &str, cfg: impl Fn(&Path) -> TrainConfig) {
    let straight = tmp(&format!("straight{tag}"));
    let split = tmp(&format!("split{tag}"));
    let mut a = Trainer::new(ctx, cfg(&straight)).unwrap();
    assert_eq!(a.steps_per_epoch(), 13);
    let sa = a.train().unwrap();
    assert_eq!(a.step, 26);
    let mut b = Trainer::new(
        ctx,
        TrainConfig {
            epochs: 1,
            ..cfg(&split)
        },
    )
    .unwrap();
    b.train().unwrap();
    drop(b);
    let mut c = Trainer::resume(ctx, &split, 1, Some(true)).unwrap();
    let sc = c.train().unwrap();
    assert_eq!(sc.epochs.len(), 2, "resumed history keeps epoch 1");
    // The resumed run knows epoch 1 from metrics.jsonl: compare it after the same JSON round
    // trip (decimal text need not give back every bit of an f64).
    let via_json =
        |v: f64| -> f64 { serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap() };
    for (x, y) in sa.epochs.iter().zip(&sc.epochs) {
        assert_eq!(x.epoch, y.epoch);
        let seen = |v: f64| if x.epoch == 1 { via_json(v) } else { v };
        assert_eq!(
            seen(x.train_loss).to_bits(),
            y.train_loss.to_bits(),
            "train loss, epoch {}",
            x.epoch
        );
        assert_eq!(
            seen(x.test_neg_elbo).to_bits(),
            y.test_neg_elbo.to_bits(),
            "test -ELBO, epoch {}",
            x.epoch
        );
    }
    let pa = a.vae.read_params(ctx).unwrap();
    let pc = c.vae.read_params(ctx).unwrap();
    assert!(
        pa.iter().zip(&pc).all(|(x, y)| x.to_bits() == y.to_bits()),
        "parameters differ"
    );
    assert_eq!(a.optimizer_state().unwrap(), c.optimizer_state().unwrap());
    let _ = std::fs::remove_dir_all(straight);
    let _ = std::fs::remove_dir_all(split);
}

/// A small run under each GEMM family but the default's, which
/// `short_mnist_run_learns_and_writes_its_outputs` covers.
#[test]
fn small_runs_learn_under_the_other_gemm() {
    for ctx in contexts().into_iter().skip(1) {
        let out = tmp(&format!("learn-{}", ctx.gemm_variant.name()));
        let cfg = TrainConfig {
            epochs: 4,
            batch: 48,
            adam: wgvae::ops::adam::AdamConfig {
                lr: 3e-3,
                ..Default::default()
            },
            ..tiny_cfg(&out)
        };
        let mut t = Trainer::new(ctx, cfg).unwrap();
        let start = t.evaluate(false).unwrap().neg_elbo;
        let s = t.train().unwrap();
        let end = s.last_eval.unwrap().neg_elbo;
        let losses: Vec<f64> = s.epochs.iter().map(|m| m.train_loss).collect();
        eprintln!(
            "GEMM {}: test -ELBO {start:.1} -> {end:.1}, train loss {losses:?}",
            ctx.gemm_variant.name()
        );
        assert!(end < 0.6 * start, "{start} -> {end}");
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]),
            "train loss not falling: {losses:?}"
        );
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn every_image_once_per_epoch_with_a_weighted_partial_last_batch() {
    let ctx = ctx();
    let out = tmp("partial");
    let cfg = TrainConfig {
        batch: 48,
        epochs: 1,
        model: wgvae::train::ModelSpec {
            enc_hidden: vec![32],
            dec_hidden: vec![32],
            latent: 4,
            ..Default::default()
        },
        ..small_cfg(&out)
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    let n = t.split.train.n;
    assert_eq!(n, 512);
    // 10 steps of 48 and a last one of 32.
    assert_eq!(t.steps_per_epoch(), 11);
    let pixels = t.split.train.image_len();
    let mut index: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for i in 0..n {
        index
            .entry(t.split.train.image(i).to_vec())
            .or_default()
            .push(i);
    }
    let mut seen = vec![0usize; n];
    let mut rows_gathered = Vec::new();
    t.begin_epoch().unwrap();
    for _ in 0..t.steps_per_epoch() {
        t.submit_step().unwrap();
        ctx.wait().unwrap();
        let x = t.act.x.read(ctx).unwrap();
        let w = t.act.w.read(ctx).unwrap();
        let valid = w.iter().filter(|&&v| v > 0.0).count();
        rows_gathered.push(valid);
        for (r, row) in x.chunks(pixels).enumerate() {
            if r >= valid {
                assert!(row.iter().all(|&v| v == 0.0), "padded row {r} holds data");
                assert_eq!(w[r], 0.0);
                continue;
            }
            assert_eq!(w[r], 1.0 / valid as f32, "row weight");
            let bytes: Vec<u8> = row.iter().map(|&v| (v * 255.0).round() as u8).collect();
            let same = index
                .get(bytes.as_slice())
                .expect("a gathered row is a training image");
            // Duplicated images (if any) share their visits.
            let i = *same.iter().find(|&&i| seen[i] == 0).unwrap_or(&same[0]);
            seen[i] += 1;
        }
    }
    assert_eq!(rows_gathered, [48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 32]);
    assert!(seen.iter().all(|&c| c == 1), "each image once per epoch");
    let sums = t.read_metrics().unwrap();
    let (count, bad) = (sums.count, sums.nonfinite);
    assert_eq!(
        count, n as f64,
        "the epoch's loss averages over every image"
    );
    assert!(!bad);
    // A full epoch through train(): the step count, the checkpoint and samples/s agree.
    let mut t = Trainer::new(
        ctx,
        TrainConfig {
            overwrite: true,
            ..t.cfg.clone()
        },
    )
    .unwrap();
    let s = t.train().unwrap();
    assert_eq!(t.step, 11);
    let m = &s.epochs[0];
    assert_eq!(m.step, 11);
    let samples = m.samples_per_second * m.train_seconds;
    assert!(
        (samples - n as f64).abs() < 1e-6 * n as f64,
        "{samples} samples"
    );
    let ck = Checkpoint::load(&out.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.state.step, 11);
    let _ = std::fs::remove_dir_all(out);
}

/// A small model on mnist-512 (fast on any adapter).
fn tiny_cfg(out: &Path) -> TrainConfig {
    TrainConfig {
        model: wgvae::train::ModelSpec {
            enc_hidden: vec![32],
            dec_hidden: vec![32],
            latent: 4,
            ..Default::default()
        },
        ..small_cfg(out)
    }
}

/// The gathered batch after each of the next `steps` steps: (x, row weights).
fn gathered(t: &mut Trainer, steps: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let ctx = ctx();
    (0..steps)
        .map(|_| {
            t.submit_step().unwrap();
            ctx.wait().unwrap();
            (t.act.x.read(ctx).unwrap(), t.act.w.read(ctx).unwrap())
        })
        .collect()
}

#[test]
fn binarised_training_and_test_sets() {
    let ctx = ctx();
    let raw = wgvae::data::load_idx_dir(&mnist512()).unwrap();
    let pixels = raw.train.image_len();
    let binary = |v: &[u8]| v.iter().all(|&b| b == 0 || b == 255);
    let out = tmp("bin-fixed");
    let cfg = TrainConfig {
        binarize: Binarize::Fixed,
        batch: 48,
        ..tiny_cfg(&out)
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    // The test set: binarised once, the same binary set for every run and mode.
    let test_fixed = t.test_set().pixels.clone();
    assert!(binary(&test_fixed));
    assert_ne!(test_fixed, raw.test.pixels);
    let ink = |v: &[u8]| v.iter().filter(|&&b| b > 127).count() as f64 / v.len() as f64;
    let grey_mean = raw.test.pixels.iter().map(|&b| b as f64).sum::<f64>()
        / (255.0 * raw.test.pixels.len() as f64);
    assert!(
        (ink(&test_fixed) - grey_mean).abs() < 0.01,
        "{} vs {grey_mean}",
        ink(&test_fixed)
    );
    // Fixed: the training set is binary on the GPU and every epoch sees the same images.
    let train_bytes = t.split.train.pixels.clone();
    assert!(binary(&train_bytes));
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for i in 0..t.split.train.n {
        index.insert(t.split.train.image(i).to_vec(), i);
    }
    let mut per_image: Vec<Option<Vec<f32>>> = vec![None; t.split.train.n];
    let mut compared = 0;
    for epoch in 0..2 {
        t.epoch = epoch;
        t.begin_epoch().unwrap();
        for (x, w) in gathered(&mut t, 3) {
            for (row, _) in x.chunks(pixels).zip(&w) {
                assert!(row.iter().all(|&v| v == 0.0 || v == 1.0));
                let bytes: Vec<u8> = row.iter().map(|&v| (v * 255.0) as u8).collect();
                let i = *index
                    .get(&bytes)
                    .expect("a row is a binarised training image");
                match &per_image[i] {
                    Some(seen) => {
                        assert_eq!(seen, &row.to_vec(), "image {i} changed between epochs");
                        compared += 1;
                    }
                    None => per_image[i] = Some(row.to_vec()),
                }
            }
        }
    }
    assert!(compared > 10, "{compared} images seen in both epochs");
    assert_eq!(t.split.train.pixels, train_bytes);
    drop(t);

    // Dynamic: grey bytes on the GPU, binary batches drawn afresh every step.
    let out_d = tmp("bin-dynamic");
    let cfg = TrainConfig {
        binarize: Binarize::Dynamic,
        seed: 9,
        batch: 48,
        ..tiny_cfg(&out_d)
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    assert_eq!(
        t.test_set().pixels,
        test_fixed,
        "another seed and mode, the same test set"
    );
    assert_eq!(
        t.split.train.pixels, raw.train.pixels,
        "training bytes stay grey"
    );
    // Pixels that are 0 in every training image can only be drawn as 0.
    let never: Vec<bool> = (0..pixels)
        .map(|p| (0..raw.train.n).all(|i| raw.train.image(i)[p] == 0))
        .collect();
    t.begin_epoch().unwrap();
    let steps = t.steps_per_epoch();
    let first = gathered(&mut t, steps);
    t.epoch = 0; // the same order again, at later steps
    t.begin_epoch().unwrap();
    let second = gathered(&mut t, steps);
    let mut ones = 0usize;
    let mut values = 0usize;
    let mut differ = 0usize;
    for ((x1, w1), (x2, _)) in first.iter().zip(&second) {
        let valid = w1.iter().filter(|&&v| v > 0.0).count();
        for (v1, v2) in x1[..valid * pixels].iter().zip(&x2[..valid * pixels]) {
            assert!(*v1 == 0.0 || *v1 == 1.0);
            ones += (*v1 == 1.0) as usize;
            differ += (v1 != v2) as usize;
        }
        values += valid * pixels;
        for (k, &v) in x1.iter().enumerate() {
            if never[k % pixels] {
                assert_eq!(v, 0.0);
            }
        }
    }
    assert_eq!(values, raw.train.n * pixels);
    let train_grey = raw.train.pixels.iter().map(|&b| b as f64).sum::<f64>()
        / (255.0 * raw.train.pixels.len() as f64);
    let frac = ones as f64 / values as f64;
    assert!((frac - train_grey).abs() < 0.005, "{frac} vs {train_grey}");
    // Same images in the same order, drawn again: the grey pixels come out differently.
    assert!(
        differ > values / 100,
        "only {differ} of {values} draws differ"
    );

    // Runs written before binarisation existed read as `none`.
    let mut json = serde_json::to_value(&t.cfg).unwrap();
    json.as_object_mut().unwrap().remove("binarize");
    let old: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.binarize, Binarize::None);
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(out_d);
}

#[test]
fn iwae_with_one_sample_is_the_single_sample_elbo() {
    let ctx = ctx();
    let out = tmp("iwae1");
    let t = Trainer::new(ctx, small_cfg(&out)).unwrap();
    let vae: &Vae = &t.vae;
    let (b, d) = (16, vae.cfg.latent);
    let act = vae.activations(ctx, b, 1).unwrap();
    let x: Vec<f32> = (0..b).flat_map(|i| t.test_set().to_f32(i)).collect();
    act.x.write(ctx, &x).unwrap();
    let mut p = vae
        .forward_program(ctx, &act, None, 1.0, 5, RngStep::Fixed(0), Stream::Eval)
        .unwrap();
    let logw = wgvae::gpu::Tensor::<f32>::zeros(ctx, "logw", &[1, b]).unwrap();
    let bound = wgvae::gpu::Tensor::<f32>::zeros(ctx, "bound", &[b]).unwrap();
    let enc = act.enc.last().unwrap();
    p.push(iwae_log_weights(ctx, "logw", enc, &act.nll, &act.z, &act.eps, &logw, 1).unwrap());
    p.push(wgvae::ops::reduce::logmeanexp(ctx, "lme", &logw, &bound, 1.0, false).unwrap());
    p.run(ctx).unwrap();
    // log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2), in f64 from the same eps.
    let (nll, z, eps, e) = (
        act.nll.read(ctx).unwrap(),
        act.z.read(ctx).unwrap(),
        act.eps.read(ctx).unwrap(),
        enc.read(ctx).unwrap(),
    );
    let want: Vec<f64> = (0..b)
        .map(|r| {
            let mut s = -(nll[r] as f64);
            for k in 0..d {
                let (zz, ee, lv) = (
                    z[r * d + k] as f64,
                    eps[r * d + k] as f64,
                    e[r * 2 * d + d + k] as f64,
                );
                s += -0.5 * zz * zz + 0.5 * ee * ee + 0.5 * lv;
            }
            s
        })
        .collect();
    // Terms of size ~500 in f32: 1e-5 relative.
    common::assert_close(
        "IWAE k=1 vs single-sample ELBO",
        &bound.read(ctx).unwrap(),
        &want,
        1e-3,
        1e-5,
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn evaluator_rejects_images_of_another_size() {
    let ctx = ctx();
    let out = tmp("size");
    let t = Trainer::new(ctx, small_cfg(&out)).unwrap();
    let sprites = wgvae::data::sprites::generate(&wgvae::data::sprites::SpritesConfig {
        n_train: 4,
        n_test: 4,
        seed: 1,
    })
    .unwrap();
    let err = Evaluator::new(ctx, &t.vae, &sprites.test, 8, 0, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("64x64") && err.contains("28x28"), "{err}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn corrupt_idx_data_names_the_file() {
    let ctx = ctx();
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::copy(mnist512().join(f), dir.join(f)).unwrap();
    }
    // Truncate the test images.
    let raw = std::fs::read(mnist512().join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), &raw[..raw.len() / 2]).unwrap();
    let cfg = TrainConfig {
        data: DataSource::Idx { dir: dir.clone() },
        ..small_cfg(&dir.join("run"))
    };
    let err = Trainer::new(ctx, cfg).err().unwrap().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte.gz"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resume_from_another_architecture_is_refused() {
    let ctx = ctx();
    let a = tmp("arch-a");
    let mut t = Trainer::new(
        ctx,
        TrainConfig {
            epochs: 1,
            ..small_cfg(&a)
        },
    )
    .unwrap();
    t.train().unwrap();
    drop(t);
    // Rewrite the checkpoint as if a 10-dimensional latent had been trained.
    let path = a.join(checkpoint::FILE_NAME);
    let mut ck = Checkpoint::load(&path).unwrap();
    let mut run: TrainConfig = serde_json::from_value(ck.run.clone()).unwrap();
    run.model.latent = 10;
    ck.run = serde_json::to_value(&run).unwrap();
    ck.save(&a).unwrap();
    let err = Trainer::resume(ctx, &a, 1, Some(true))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("architecture"),
        "{err}"
    );
    // A truncated checkpoint is an error naming the file, not a panic.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = Trainer::resume(ctx, &a, 1, Some(true))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(a);
}

#[test]
fn nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let ctx = ctx();
    let out = tmp("nan");
    let mut t = Trainer::new(
        ctx,
        TrainConfig {
            epochs: 1,
            ..small_cfg(&out)
        },
    )
    .unwrap();
    t.train().unwrap();
    let good = std::fs::read(out.join(checkpoint::FILE_NAME)).unwrap();
    // Poison the decoder's output bias: every logit of the next forward pass is NaN.
    let layout = t.vae.layout.clone();
    let spec = layout.get("decoder.fc2.bias").unwrap();
    t.vae
        .params
        .flat
        .write_at(ctx, spec.offset, &[f32::NAN])
        .unwrap();
    t.cfg.epochs = 2;
    let err = t.train().expect_err("NaN must stop training").to_string();
    assert!(
        err.contains("NaN") && err.contains("epoch 1, the last good one"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join(checkpoint::FILE_NAME)).unwrap(),
        good,
        "checkpoint was overwritten"
    );
    let ck = Checkpoint::load(&out.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.state.epoch, 1);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn sprites_run_trains() {
    let ctx = ctx();
    let out = tmp("sprites");
    let cfg = TrainConfig {
        data: DataSource::Sprites {
            n_train: 256,
            n_test: 64,
            seed: 3,
        },
        model: wgvae::train::ModelSpec {
            enc_hidden: vec![64],
            dec_hidden: vec![64],
            latent: 6,
            ..Default::default()
        },
        batch: 16,
        epochs: 3,
        adam: wgvae::ops::adam::AdamConfig {
            lr: 3e-3,
            ..Default::default()
        },
        out: out.clone(),
        quiet: true,
        pictures: true,
        eval_batch: 64,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    let start = t.evaluate(false).unwrap().neg_elbo;
    let s = t.train().unwrap();
    let end = s.last_eval.unwrap().neg_elbo;
    eprintln!("sprites: test -ELBO {start:.1} at start, {end:.1} after 48 steps");
    assert!(end < 0.5 * start, "sprites -ELBO {start} -> {end}");
    assert!(out.join("samples.png").exists());
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn binarize_flag_parses_and_names_itself_on_error() {
    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: wgvae::cli::TrainArgs,
    }
    let cfg_of = |extra: &[&str]| {
        let mut argv = vec!["train", "--out", "unused-run-dir"];
        argv.extend_from_slice(extra);
        <Cmd as clap::Parser>::try_parse_from(argv).map(|c| c.args.to_config().unwrap())
    };
    assert_eq!(cfg_of(&[]).unwrap().binarize, Binarize::None);
    assert_eq!(
        cfg_of(&["--binarize", "fixed"]).unwrap().binarize,
        Binarize::Fixed
    );
    assert_eq!(
        cfg_of(&["--binarize", "dynamic"]).unwrap().binarize,
        Binarize::Dynamic
    );
    let e = cfg_of(&["--binarize", "half"]).err().unwrap().to_string();
    assert!(
        e.contains("--binarize") && e.contains("half") && e.contains("dynamic"),
        "{e}"
    );
}

/// Writes an IDX image file (magic 0x803, big-endian sizes, then the bytes).
fn write_idx(path: &Path, n: usize, h: usize, w: usize, pixels: &[u8]) {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend_from_slice(pixels);
    std::fs::write(path, b).unwrap();
}

/// Images that are black but for one pixel (4x4, pixel 5 varies): 15 of 16 pixels are the
/// same in every image, where a learned Gaussian σ would shrink without end.
fn one_pixel_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let img = |i: usize| -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v[5] = (i * 53 % 256) as u8;
        v
    };
    let train: Vec<u8> = (0..20).flat_map(img).collect();
    let test: Vec<u8> = (20..28).flat_map(img).collect();
    write_idx(&dir.join("train-images-idx3-ubyte"), 20, 4, 4, &train);
    write_idx(&dir.join("t10k-images-idx3-ubyte"), 8, 4, 4, &test);
}

#[test]
fn learned_sigma_stops_at_its_floor_on_constant_background() {
    let ctx = ctx();
    let dir = tmp(&format!("one-pixel-{}", ctx.gemm_variant.name()));
    one_pixel_data(&dir);
    let p = 16.0;
    // Every pixel's NLL is at least log σ_min + ½ ln 2π (the squared error is ≥ 0).
    let bound = p * (LOG_SIGMA_MIN as f64 + 0.5 * (2.0 * std::f64::consts::PI).ln());
    for sigma in [GaussianSigma::LearnedPerPixel, GaussianSigma::LearnedShared] {
        let cfg = TrainConfig {
            data: DataSource::Idx { dir: dir.clone() },
            model: wgvae::train::ModelSpec {
                enc_hidden: vec![16],
                dec_hidden: vec![16],
                latent: 2,
                likelihood: Likelihood::Gaussian { log_sigma: sigma },
                ..Default::default()
            },
            batch: 8, // 3 steps per epoch, the last of 4 images
            adam: wgvae::ops::adam::AdamConfig {
                lr: 0.03,
                ..Default::default()
            },
            out: dir.join(format!("run-{sigma:?}")),
            quiet: true,
            pictures: false,
            eval_batch: 8,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(ctx, cfg).unwrap();
        let mut recon = Vec::new();
        for epoch in 0..100 {
            t.epoch = epoch;
            t.begin_epoch().unwrap();
            for _ in 0..t.steps_per_epoch() {
                t.submit_step().unwrap();
            }
            let sums = t.read_metrics().unwrap();
            let (r, count, bad) = (sums.get("recon").unwrap(), sums.count, sums.nonfinite);
            assert_eq!(count, 20.0);
            assert!(!bad && r.is_finite(), "{sigma:?}: epoch {epoch}: recon {r}");
            recon.push(r);
        }
        let low = recon.iter().cloned().fold(f64::INFINITY, f64::min);
        eprintln!(
            "{sigma:?} (GEMM {}): train recon {:.2} after 1 epoch, {:.2} after 300 steps, lowest {low:.2}; floor bound {bound:.2}",
            ctx.gemm_variant.name(),
            recon[0],
            recon[99]
        );
        assert!(
            low >= bound - 1e-3 * bound.abs(),
            "{sigma:?}: recon {low} < {bound}"
        );
        // And it gets near it: the background is learned to within σ_min.
        let late = recon[80..].iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(late < bound + 0.5 * bound.abs(), "{sigma:?}: recon {late}");
    }
    // A fixed log σ below the floor is refused, naming the flag and the floor.
    for v in [-6.0f32, f32::NAN] {
        let cfg = TrainConfig {
            model: wgvae::train::ModelSpec {
                likelihood: Likelihood::Gaussian {
                    log_sigma: GaussianSigma::Fixed(v),
                },
                ..Default::default()
            },
            ..small_cfg(&dir.join("fixed"))
        };
        let e = Trainer::new(ctx, cfg).err().unwrap().to_string();
        assert!(
            e.contains("--log-sigma") && e.contains("-4.60517") && e.contains("ln 0.01"),
            "{e}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
