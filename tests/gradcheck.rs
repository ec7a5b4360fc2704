//! Finite-difference gradient check (f64, CPU) of the composite loss
//! linear → activation → linear → reparameterize → KL + likelihood, against the gradients the
//! GPU forward and backward programs compute.

mod common;

use common::{contexts, data};
use wgvae::cpu;
use wgvae::gpu::{GpuContext, Program, Tensor};
use wgvae::model::{GaussianSigma, Likelihood, ParamLayout, Vae, VaeConfig};
use wgvae::ops::Activation;
use wgvae::ops::data::{GatherOptions, StepState, gather_with};
use wgvae::ops::reparam::{RngStep, Stream};

/// The batch of a check: every row holds an input, or only the first `valid` rows do (the
/// last, partial batch of an epoch; the rest are padding with row weight 0).
#[derive(Clone, Copy)]
enum Rows {
    Full,
    Valid(usize),
}

/// [`check_with`] on every full batch, under each GEMM family ([`common::contexts`]).
fn check(cfg: VaeConfig, batch: usize, samples: usize, beta: f32) {
    check_with(cfg, batch, samples, beta, Rows::Full, |_, _| {});
}

/// The gradient check under each GEMM family ([`common::contexts`]).
fn check_with(
    cfg: VaeConfig,
    batch: usize,
    samples: usize,
    beta: f32,
    rows: Rows,
    tweak: impl Fn(&ParamLayout, &mut [f32]),
) {
    for ctx in contexts() {
        check_on(ctx, cfg.clone(), batch, samples, beta, rows, &tweak);
    }
}

fn check_on(
    ctx: &GpuContext,
    cfg: VaeConfig,
    batch: usize,
    samples: usize,
    beta: f32,
    rows: Rows,
    tweak: &impl Fn(&ParamLayout, &mut [f32]),
) {
    let mut init = cfg.init_params(11);
    let layout = cfg.layout();
    tweak(&layout, &mut init);
    let vae = Vae::new(ctx, &cfg, &init).unwrap();
    let act = vae.activations(ctx, batch, samples).unwrap();
    let g = vae.gradients(ctx, &act).unwrap();
    let pixels = cfg.input_dim();
    let valid = match rows {
        Rows::Full => {
            act.x
                .write(ctx, &data(12, batch * pixels, 0.0, 1.0))
                .unwrap();
            batch
        }
        Rows::Valid(valid) => {
            // The training gather at the second step of an epoch over batch + valid images:
            // `valid` rows of images, then padding, and the row weights to match.
            let n = batch + valid;
            let images_h: Vec<u8> = (0..n * pixels).map(|i| (i * 37 % 251) as u8).collect();
            let images = Tensor::from_slice(ctx, "images", &[n, pixels], &images_h).unwrap();
            let order: Vec<u32> = (0..n as u32).rev().collect();
            let perm = Tensor::from_slice(ctx, "perm", &[n], &order).unwrap();
            let state = StepState::new(ctx, "state").unwrap();
            state.set(ctx, 8, 7).unwrap();
            let opts = GatherOptions {
                state: Some(&state),
                weights: Some(&act.w),
                binarize: None,
            };
            let mut p = Program::new();
            p.push(gather_with(ctx, "gather", &images, pixels, &perm, &act.x, 0, opts).unwrap());
            p.run(ctx).unwrap();
            let (x_want, w_want) =
                cpu::data::gather_weighted(&images_h, pixels, &order, batch, batch);
            common::assert_close("gathered x", &act.x.read(ctx).unwrap(), &x_want, 0.0, 1e-7);
            common::assert_close("row weights", &act.w.read(ctx).unwrap(), &w_want, 0.0, 1e-7);
            // Fill the padded rows with inputs: the weights alone must keep them out.
            let junk = data(13, (batch - valid) * pixels, 0.0, 1.0);
            act.x.write_at(ctx, valid * pixels, &junk).unwrap();
            valid
        }
    };
    let x_h = act.x.read(ctx).unwrap();
    let w: Vec<f64> = act.w.read(ctx).unwrap().iter().map(|&v| v as f64).collect();
    let mut p = vae
        .forward_program(
            ctx,
            &act,
            Some(&g),
            beta,
            99,
            RngStep::Fixed(3),
            Stream::Train,
        )
        .unwrap();
    p.extend(vae.backward_program(ctx, &act, &g).unwrap());
    p.run(ctx).unwrap();
    let gpu = g.params.flat.read(ctx).unwrap();
    let eps = act.eps.read(ctx).unwrap();

    // The GPU's loss must match the twin's at the same parameters and noise.
    let params: Vec<f64> = init.iter().map(|&v| v as f64).collect();
    let (nll_r, kl_r) = cpu::vae_forward(&cfg, &params, &x_h, batch, samples, &eps);
    common::assert_close("nll", &act.nll.read(ctx).unwrap(), &nll_r, 1e-4, 1e-5);
    common::assert_close("kl", &act.kl.read(ctx).unwrap(), &kl_r, 1e-5, 1e-5);

    // Padded rows reach no gradient: every per-row gradient buffer (decoder and encoder
    // outputs, z, the per-element log sigma) is exactly 0 in them, so the weight GEMMs and bias
    // column sums add nothing from them.
    if valid < batch {
        let mut per_row: Vec<(String, Vec<f32>)> = Vec::new();
        for t in g.dec.iter().chain(&g.enc).chain([&g.z]) {
            per_row.push((t.label().to_string(), t.read(ctx).unwrap()));
        }
        if let Some(t) = &g.log_sigma_elem {
            per_row.push((t.label().to_string(), t.read(ctx).unwrap()));
        }
        for (name, v) in &per_row {
            let rows_total = if name.contains("encoder") {
                batch
            } else {
                batch * samples
            };
            let width = v.len() / rows_total;
            for (r, row) in v.chunks(width).enumerate() {
                if r % batch >= valid {
                    assert!(
                        row.iter().all(|&e| e == 0.0),
                        "{name}: padded row {r} has gradient {row:?}"
                    );
                }
            }
        }
    }

    // Central differences in f64: truncation O(h^2) and rounding O(1e-16 / h) both far below
    // the tolerance. Tolerance: the GPU gradients are f32 sums of O(10) terms, so ~1e-6
    // relative; 1e-3 relative + 2e-5 absolute separates that from any wrong term.
    let h = 1e-5;
    let loss = |pp: &[f64]| {
        cpu::vae::vae_loss_weighted(&cfg, pp, &x_h, batch, samples, &eps, beta as f64, &w)
    };
    let mut worst = (0.0f64, String::new());
    // Large models: a spread of entries of every tensor (the first, the last and every
    // stride-th), small ones in full.
    let stride = |len: usize| {
        if layout.count() > 4000 {
            (len / 12).max(1)
        } else {
            1
        }
    };
    for spec in &layout.tensors {
        let picks = (0..spec.len())
            .step_by(stride(spec.len()))
            .chain(std::iter::once(spec.len() - 1));
        for i in picks {
            let k = spec.offset + i;
            let mut pp = params.clone();
            pp[k] += h;
            let up = loss(&pp);
            pp[k] -= 2.0 * h;
            let down = loss(&pp);
            let fd = (up - down) / (2.0 * h);
            let err = (gpu[k] as f64 - fd).abs();
            let tol = 2e-5 + 1e-3 * fd.abs();
            assert!(
                err <= tol,
                "{}[{i}]: GPU gradient {} vs finite difference {fd} (error {err:e} > {tol:e})",
                spec.name,
                gpu[k]
            );
            if err > worst.0 {
                worst = (err, format!("{}[{i}]", spec.name));
            }
        }
    }
    eprintln!(
        "gradient check (GEMM {}): {} parameters, {valid} of {batch} rows valid, largest error {:e} at {}",
        ctx.gemm_variant.name(),
        layout.count(),
        worst.0,
        worst.1
    );
}

#[test]
fn gradcheck_relu_bernoulli_odd_shapes() {
    // linear(5→6) → ReLU → linear(6→2·2) → reparam → linear(2→5) → Bernoulli + KL; shapes
    // that no kernel tile divides.
    let cfg = VaeConfig {
        height: 1,
        width: 5,
        channels: 1,
        arch: wgvae::model::Arch::Mlp,
        enc_hidden: vec![6],
        dec_hidden: vec![],
        latent: 2,
        activation: Activation::Relu,
        likelihood: Likelihood::Bernoulli,
        classes: None,
        posterior: wgvae::model::PosteriorKind::Diagonal,
    };
    check(cfg.clone(), 3, 1, 1.0);
    // The last batch of an epoch: 3 of 5 rows hold images.
    check_with(cfg, 5, 1, 1.0, Rows::Valid(3), |_, _| {});
}

#[test]
fn gradcheck_tanh_aligned_shapes_two_samples_beta() {
    // Multiples of 4 everywhere, so the subgroup GEMM kernel is used on CPU adapters.
    let cfg = VaeConfig {
        height: 2,
        width: 4,
        channels: 1,
        arch: wgvae::model::Arch::Mlp,
        enc_hidden: vec![12],
        dec_hidden: vec![8],
        latent: 4,
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        classes: None,
        posterior: wgvae::model::PosteriorKind::Diagonal,
    };
    check(cfg.clone(), 4, 2, 4.0);
    check_with(cfg, 4, 2, 4.0, Rows::Valid(1), |_, _| {});
}

#[test]
fn gradcheck_gaussian_learned_sigma() {
    for sigma in [
        GaussianSigma::LearnedShared,
        GaussianSigma::LearnedPerPixel,
        GaussianSigma::Fixed(-0.5),
    ] {
        let cfg = VaeConfig {
            height: 1,
            width: 6,
            channels: 1,
            arch: wgvae::model::Arch::Mlp,
            enc_hidden: vec![5],
            dec_hidden: vec![4],
            latent: 3,
            activation: Activation::LeakyRelu(0.1),
            likelihood: Likelihood::Gaussian { log_sigma: sigma },
            classes: None,
            posterior: wgvae::model::PosteriorKind::Diagonal,
        };
        check(cfg.clone(), 5, 1, 0.5);
        check_with(cfg, 6, 1, 0.5, Rows::Valid(4), |_, _| {});
    }
}

#[test]
fn gradcheck_gaussian_sigma_at_its_floor() {
    // Learned log σ below the floor ln 0.01 (every other pixel for per-pixel σ): the loss is
    // that of σ = 0.01 there, flat in log σ, and the GPU's gradient must be the clamp's.
    for sigma in [GaussianSigma::LearnedShared, GaussianSigma::LearnedPerPixel] {
        let cfg = VaeConfig {
            height: 1,
            width: 6,
            channels: 1,
            arch: wgvae::model::Arch::Mlp,
            enc_hidden: vec![5],
            dec_hidden: vec![4],
            latent: 3,
            activation: Activation::Tanh,
            likelihood: Likelihood::Gaussian { log_sigma: sigma },
            classes: None,
            posterior: wgvae::model::PosteriorKind::Diagonal,
        };
        let below = |layout: &ParamLayout, flat: &mut [f32]| {
            let spec = layout.get("decoder.log_sigma").unwrap();
            for (i, v) in flat[spec.offset..spec.offset + spec.len()]
                .iter_mut()
                .enumerate()
            {
                *v = if i % 2 == 0 { -6.0 } else { -1.5 };
            }
        };
        check_with(cfg.clone(), 4, 1, 1.0, Rows::Full, below);
        check_with(cfg, 5, 1, 1.0, Rows::Valid(2), below);
    }
}

#[test]
fn gradcheck_conv_vae_through_the_seam() {
    // conv(1→3, 3×3, s2, p1) 7×6 → 4×3, conv(3→2) → 2×2, fc 8 → 2·2; decoder fc 2 → 8, then
    // transposed convolutions with output padding back to 4×3 and 7×6: the whole composition
    // (encoder network, posterior, decoder network, likelihood) against the f64 twin.
    let cfg = VaeConfig {
        height: 7,
        width: 6,
        channels: 1,
        arch: wgvae::model::Arch::Conv {
            channels: vec![3, 2],
            kernel: 3,
            stride: 2,
            padding: 1,
            mlp_decoder: false,
        },
        enc_hidden: vec![],
        dec_hidden: vec![],
        latent: 2,
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        classes: None,
        posterior: wgvae::model::PosteriorKind::Diagonal,
    };
    check(cfg.clone(), 3, 2, 1.0);
    check_with(cfg, 4, 1, 1.0, Rows::Valid(3), |_, _| {});
}

#[test]
fn gradcheck_conv_vae_at_64x64() {
    // The 64×64 geometry of the default conv architecture (four 4×4 stride-2 layers, so every
    // kernel path the real layers take: split weight gradients, the narrow output layer) with
    // few channels, so the f64 twin stays cheap; a spread of every tensor's entries.
    let cfg = VaeConfig {
        height: 64,
        width: 64,
        channels: 1,
        arch: wgvae::model::Arch::Conv {
            channels: vec![4, 4, 8, 8],
            kernel: 4,
            stride: 2,
            padding: 1,
            mlp_decoder: false,
        },
        enc_hidden: vec![16],
        dec_hidden: vec![16],
        latent: 3,
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        classes: None,
        posterior: wgvae::model::PosteriorKind::Diagonal,
    };
    check(cfg, 2, 1, 1.0);
}

#[test]
fn gradcheck_conv_encoder_with_a_fully_connected_decoder() {
    // --mlp-decoder: conv(1→3) 7×6 → 4×3, fc 12 → 2·2; decoder fc 2 → 5 → 42.
    let cfg = VaeConfig {
        height: 7,
        width: 6,
        channels: 1,
        arch: wgvae::model::Arch::Conv {
            channels: vec![3],
            kernel: 3,
            stride: 2,
            padding: 1,
            mlp_decoder: true,
        },
        enc_hidden: vec![],
        dec_hidden: vec![5],
        latent: 2,
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        classes: None,
        posterior: wgvae::model::PosteriorKind::Diagonal,
    };
    let (_, dec) = cfg.networks().unwrap();
    assert_eq!(dec.modules.len(), 2);
    assert!(dec.modules.iter().all(|m| m.params()[0].shape.len() == 2));
    assert_eq!(dec.out_features(), 42);
    check(cfg, 3, 1, 1.0);
}
