//! Finite-difference gradient check (f64, CPU) of the composite loss
//! linear → activation → linear → reparameterize → KL + likelihood, against the gradients the
//! GPU forward and backward programs compute.

mod common;

use common::{ctx, data};
use wgvae::cpu;
use wgvae::model::{GaussianSigma, Likelihood, Vae, VaeConfig};
use wgvae::ops::Activation;
use wgvae::ops::reparam::{RngStep, Stream};

fn check(cfg: VaeConfig, batch: usize, samples: usize, beta: f32) {
    let ctx = ctx();
    let init = cfg.init_params(11);
    let vae = Vae::new(ctx, &cfg, &init).unwrap();
    let act = vae.activations(ctx, batch, samples).unwrap();
    let g = vae.gradients(ctx, &act).unwrap();
    let x_h = data(12, batch * cfg.input_dim(), 0.0, 1.0);
    act.x.write(ctx, &x_h).unwrap();
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

    // Central differences in f64: truncation O(h^2) and rounding O(1e-16 / h) both far below
    // the tolerance. Tolerance: the GPU gradients are f32 sums of O(10) terms, so ~1e-6
    // relative; 1e-3 relative + 2e-5 absolute separates that from any wrong term.
    let h = 1e-5;
    let layout = cfg.layout();
    let mut worst = (0.0f64, String::new());
    for spec in &layout.tensors {
        for i in 0..spec.len() {
            let k = spec.offset + i;
            let mut pp = params.clone();
            pp[k] += h;
            let up = cpu::vae_loss(&cfg, &pp, &x_h, batch, samples, &eps, beta as f64);
            pp[k] -= 2.0 * h;
            let down = cpu::vae_loss(&cfg, &pp, &x_h, batch, samples, &eps, beta as f64);
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
        "gradient check: {} parameters, largest error {:e} at {}",
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
        enc_hidden: vec![6],
        dec_hidden: vec![],
        latent: 2,
        activation: Activation::Relu,
        likelihood: Likelihood::Bernoulli,
    };
    check(cfg, 3, 1, 1.0);
}

#[test]
fn gradcheck_tanh_aligned_shapes_two_samples_beta() {
    // Multiples of 4 everywhere, so the subgroup GEMM kernel is used on CPU adapters.
    let cfg = VaeConfig {
        height: 2,
        width: 4,
        enc_hidden: vec![12],
        dec_hidden: vec![8],
        latent: 4,
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
    };
    check(cfg, 4, 2, 4.0);
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
            enc_hidden: vec![5],
            dec_hidden: vec![4],
            latent: 3,
            activation: Activation::LeakyRelu(0.1),
            likelihood: Likelihood::Gaussian { log_sigma: sigma },
        };
        check(cfg, 5, 1, 0.5);
    }
}
