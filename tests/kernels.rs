//! Non-GEMM kernels against their CPU twins, on shapes that are not multiples of the
//! workgroup sizes.

mod common;

use common::{assert_close, ctx, data};
use wgvae::cpu;
use wgvae::gpu::GemmVariant;
use wgvae::gpu::{Program, Tensor};
use wgvae::model::VaeConfig;
use wgvae::ops::Activation;
use wgvae::ops::adam::{AdamConfig, AdamScratch, adam};
use wgvae::ops::data::{StepState, gather};
use wgvae::ops::elementwise;
use wgvae::ops::gemm::{Epilogue, Trans, gemm_with};
use wgvae::ops::kl::kl;
use wgvae::ops::likelihood::{LogSigma, bernoulli, bernoulli_weighted, gaussian};
use wgvae::ops::reduce::{self, SUM_GROUPS, metric};
use wgvae::ops::reparam::{RngStep, Stream, reparam_backward, reparam_forward};

fn run(d: impl IntoIterator<Item = wgvae::gpu::Dispatch>) {
    let mut p = Program::new();
    for x in d {
        p.push(x);
    }
    p.run(ctx()).unwrap();
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn reparam_forward_matches_twin() {
    let ctx = ctx();
    for &(b, d, k) in &[(1, 1, 1), (7, 3, 1), (33, 20, 5), (129, 7, 2)] {
        let enc_h = data(b as u64 * 31 + d as u64, b * 2 * d, -2.0, 2.0);
        let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
        let z = Tensor::<f32>::zeros(ctx, "z", &[k, b, d]).unwrap();
        let eps = Tensor::<f32>::zeros(ctx, "eps", &[k, b, d]).unwrap();
        let seed = 0x1234_5678_9abc_def0u64;
        run([reparam_forward(
            ctx,
            "rp",
            &enc,
            &z,
            &eps,
            k,
            seed,
            RngStep::Fixed(17),
            Stream::Train,
        )
        .unwrap()]);
        let eps_ref = cpu::reparam_eps(k * b * d, seed, 17, Stream::Train as u32);
        // The integer Philox is exact; Box-Muller's f32 log, sqrt, cos and sin differ from f64
        // by a few ulp of values up to ~5 in magnitude.
        assert_close("eps", &eps.read(ctx).unwrap(), &eps_ref, 2e-5, 2e-5);
        let z_ref = cpu::reparam_forward(&enc_h, &eps_ref, b, d, k);
        // z = mu + exp(lv/2) eps: exp(1) * the eps error, plus f32 rounding of the sum.
        assert_close("z", &z.read(ctx).unwrap(), &z_ref, 1e-4, 1e-5);
    }
}

#[test]
fn reparam_backward_matches_twin() {
    let ctx = ctx();
    for &(b, d, k) in &[(1, 1, 1), (7, 3, 3), (129, 20, 2)] {
        let enc_h = data(5, b * 2 * d, -2.0, 2.0);
        let dz_h = data(6, k * b * d, -1.0, 1.0);
        let eps_h = data(7, k * b * d, -3.0, 3.0);
        let base_h = data(8, b * 2 * d, -1.0, 1.0);
        let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
        let dz = Tensor::from_slice(ctx, "dz", &[k, b, d], &dz_h).unwrap();
        let eps = Tensor::from_slice(ctx, "eps", &[k, b, d], &eps_h).unwrap();
        for acc in [false, true] {
            let g = Tensor::from_slice(ctx, "genc", &[b, 2 * d], &base_h).unwrap();
            run([reparam_backward(ctx, "rpb", &enc, &dz, &eps, &g, k, acc).unwrap()]);
            let want =
                cpu::reparam_backward(&enc_h, &dz_h, &eps_h, b, d, k, acc.then_some(&base_h[..]));
            // sums of K products of magnitude <= 3 * exp(1): f32 rounding ~1e-6 relative.
            assert_close(
                &format!("genc acc={acc}"),
                &g.read(ctx).unwrap(),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): enough for a KS bound of ~2e-3.
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn draw(b: usize, d: usize, seed: u64, step: u32, stream: Stream) -> Vec<f32> {
    let ctx = ctx();
    let enc = Tensor::<f32>::zeros(ctx, "enc", &[b, 2 * d]).unwrap(); // mu = 0, logvar = 0
    let z = Tensor::<f32>::zeros(ctx, "z", &[b, d]).unwrap();
    let eps = Tensor::<f32>::zeros(ctx, "eps", &[b, d]).unwrap();
    run([reparam_forward(
        ctx,
        "rng",
        &enc,
        &z,
        &eps,
        1,
        seed,
        RngStep::Fixed(step),
        stream,
    )
    .unwrap()]);
    let zs = z.read(ctx).unwrap();
    assert_eq!(
        zs,
        eps.read(ctx).unwrap(),
        "with mu = 0 and sigma = 1, z must equal eps"
    );
    zs
}

#[test]
fn rng_is_standard_normal() {
    let n = 1024 * 1024;
    let mut x: Vec<f64> = draw(1024, 1024, 42, 0, Stream::Train)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    // A correct N(0,1) sample of n = 2^20 has sd(mean) = 1/1024 and sd(var) = sqrt(2/n) =
    // 1.4e-3: both bounds are 5 standard deviations.
    assert!(mean.abs() < 5.0 / 1024.0, "mean {mean}");
    assert!(
        (var - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(),
        "variance {var}"
    );
    // Kolmogorov-Smirnov: P(D > 1.95 / sqrt(n)) = 0.001 for a correct generator.
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut d_max = 0.0f64;
    for (i, &v) in x.iter().enumerate() {
        let f = normal_cdf(v);
        d_max = d_max
            .max((f - i as f64 / n as f64).abs())
            .max(((i + 1) as f64 / n as f64 - f).abs());
    }
    let bound = 1.95 / (n as f64).sqrt();
    eprintln!(
        "N(0,1) check over {n} draws: mean {mean:.2e}, var {var:.5}, KS D {d_max:.2e} (bound {bound:.2e})"
    );
    assert!(d_max < bound, "KS statistic {d_max} >= {bound}");
    // Tails exist and are not absurd: P(|z| > 4) ~ 6.3e-5 -> ~66 of 2^20.
    let tail = x.iter().filter(|v| v.abs() > 4.0).count();
    assert!((20..200).contains(&tail), "{tail} draws beyond 4 sigma");
}

#[test]
fn rng_streams_repeat_and_differ() {
    let a = draw(33, 20, 7, 3, Stream::Train);
    let again = draw(33, 20, 7, 3, Stream::Train);
    assert_eq!(a, again, "same (seed, step) must give the same eps");
    for (other, what) in [
        (draw(33, 20, 7, 4, Stream::Train), "step + 1"),
        (draw(33, 20, 8, 3, Stream::Train), "seed + 1"),
        (
            draw(33, 20, (1u64 << 32) | 7, 3, Stream::Train),
            "high seed word",
        ),
        (draw(33, 20, 7, 3, Stream::Eval), "another stream"),
    ] {
        let same = a.iter().zip(&other).filter(|(x, y)| x == y).count();
        assert!(same < 3, "{what}: {same} of {} draws equal", a.len());
        let corr: f64 = a
            .iter()
            .zip(&other)
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum::<f64>()
            / a.len() as f64;
        // 660 pairs: sd of the correlation ~ 1/sqrt(660) = 0.039.
        assert!(corr.abs() < 0.2, "{what}: correlation {corr}");
    }
}

#[test]
fn kl_matches_twin() {
    let ctx = ctx();
    for &(b, d) in &[(1, 1), (7, 20), (129, 33)] {
        // logvar near 0 exercises the cancellation-free branch, large |logvar| the other.
        let mut enc_h = data(11, b * 2 * d, -3.0, 3.0);
        for i in 0..b {
            enc_h[i * 2 * d + d] = 1e-3 * (i as f32 + 1.0);
        }
        let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
        let ks = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
        let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
        let g = Tensor::<f32>::zeros(ctx, "genc", &[b, 2 * d]).unwrap();
        run([kl(ctx, "kl", &enc, &ks, &ke, Some((&g, 0.25))).unwrap()]);
        let (ks_r, ke_r, g_r) = cpu::kl(&enc_h, b, d, 0.25);
        // Terms up to exp(3) ~ 20: f32 exp is good to a few ulp; sums of D terms.
        assert_close("kl elem", &ke.read(ctx).unwrap(), &ke_r, 2e-6, 1e-5);
        assert_close(
            "kl sample",
            &ks.read(ctx).unwrap(),
            &ks_r,
            2e-6 * d as f64,
            1e-5,
        );
        assert_close("kl grad", &g.read(ctx).unwrap(), &g_r, 1e-6, 1e-5);
    }
}

#[test]
fn kl_warmup_scales_the_gradient_by_the_step() {
    let ctx = ctx();
    let (b, d) = (7, 5);
    let enc_h = data(12, b * 2 * d, -2.0, 2.0);
    let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
    let ks = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
    let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
    let g = Tensor::<f32>::zeros(ctx, "genc", &[b, 2 * d]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let warm = wgvae::ops::kl::KlRamp::warmup(&state, 10);
    let dispatch =
        wgvae::ops::kl::kl_scheduled(ctx, "kl", &enc, &ks, &ke, Some((&g, 0.5)), None, Some(warm))
            .unwrap();
    let mut p = Program::new();
    p.push(dispatch);
    // Step t weighs the gradient by min(1, (t + 1) / 10); the KL values are not scaled.
    for (t, factor) in [(0u32, 0.1), (3, 0.4), (9, 1.0), (250, 1.0)] {
        state.set(ctx, t, 0).unwrap();
        p.run(ctx).unwrap();
        let (ks_r, _, g_r) = cpu::kl(&enc_h, b, d, 0.5 * factor);
        assert_close("kl sample", &ks.read(ctx).unwrap(), &ks_r, 1e-5, 1e-5);
        assert_close(
            &format!("kl grad at step {t}"),
            &g.read(ctx).unwrap(),
            &g_r,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn kl_cycles_restart_the_ramp_every_period() {
    let ctx = ctx();
    let (b, d) = (9, 3);
    let enc_h = data(13, b * 2 * d, -2.0, 2.0);
    let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
    let ks = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
    let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
    let g = Tensor::<f32>::zeros(ctx, "genc", &[b, 2 * d]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let ramp = wgvae::ops::kl::KlRamp {
        state: &state,
        ramp: 4,
        period: 7,
    };
    let mut p = Program::new();
    p.push(
        wgvae::ops::kl::kl_scheduled(ctx, "kl", &enc, &ks, &ke, Some((&g, 2.0)), None, Some(ramp))
            .unwrap(),
    );
    // Period 7, rise over 4 steps: factors 1/4, 2/4, 3/4, 1, 1, 1, 1, then again from 1/4.
    for (t, factor) in [
        (0u32, 0.25),
        (2, 0.75),
        (3, 1.0),
        (6, 1.0),
        (7, 0.25),
        (15, 0.5),
    ] {
        assert_eq!(wgvae::ops::kl::ramp_factor(t, 4, 7), factor, "step {t}");
        state.set(ctx, t, 0).unwrap();
        p.run(ctx).unwrap();
        let (_, _, g_r) = cpu::kl(&enc_h, b, d, 2.0 * factor);
        assert_close(
            &format!("kl grad at step {t}"),
            &g.read(ctx).unwrap(),
            &g_r,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn kl_capacity_matches_twin_on_both_sides_of_c() {
    let ctx = ctx();
    // 67 rows (not a multiple of the workgroup), the last 4 padding (weight 0).
    for (b, d, valid) in [(1usize, 1usize, 1usize), (7, 5, 7), (67, 3, 63)] {
        let enc_h = data(21 + b as u64, b * 2 * d, -1.5, 1.5);
        let w_h: Vec<f32> = (0..b)
            .map(|r| if r < valid { 1.0 / valid as f32 } else { 0.0 })
            .collect();
        let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
        let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
        let ks = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
        let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
        let g = Tensor::from_slice(ctx, "genc", &[b, 2 * d], &vec![7.0; b * 2 * d]).unwrap();
        let pen = Tensor::<f32>::zeros(ctx, "penalty", &[b]).unwrap();
        let state = StepState::new(ctx, "state").unwrap();
        let (ks_h, _, _) = cpu::kl(&enc_h, b, d, 1.0);
        let kl_mean: f64 = (0..b).map(|r| w_h[r] as f64 * ks_h[r]).sum();
        // C(t) = c_max·min(1, t/100): below the batch KL early, above it late.
        let c_max = 2.0 * kl_mean as f32 + 1.0;
        let cap = wgvae::ops::kl::Capacity {
            state: &state,
            gamma: 30.0,
            c_max,
            steps: 100,
        };
        let mut p = Program::new();
        p.push(wgvae::ops::kl::kl_scheduled(ctx, "kl", &enc, &ks, &ke, None, None, None).unwrap());
        p.push(wgvae::ops::kl::kl_capacity(ctx, "cap", &enc, &ks, &g, &pen, &w, cap).unwrap());
        for t in [0u32, 10, 90, 100, 5000] {
            state.set(ctx, t, 0).unwrap();
            p.run(ctx).unwrap();
            let (pen_r, g_r) = cpu::kl_capacity(&enc_h, &w_h, b, d, 30.0, c_max as f64, t, 100);
            let at = format!("B {b} D {d} step {t}");
            assert_close(
                &format!("penalty {at}"),
                &pen.read(ctx).unwrap(),
                &pen_r,
                1e-4,
                1e-4,
            );
            let got = g.read(ctx).unwrap();
            assert_close(&format!("grad {at}"), &got, &g_r, 1e-5, 1e-4);
            // The sign flips where C(t) passes the batch KL; padding rows get exactly 0.
            let c = c_max as f64 * (t as f64 / 100.0).min(1.0);
            let mu0 = enc_h[0] as f64;
            assert_eq!(
                (got[0] as f64 * mu0).signum(),
                (kl_mean - c).signum(),
                "{at}: gradient sign (γ·sign(KL − C)·w·μ)"
            );
            assert!(
                got[valid * 2 * d..].iter().all(|&v| v == 0.0),
                "{at}: padding"
            );
        }
    }
}

#[test]
fn bernoulli_matches_twin() {
    let ctx = ctx();
    // P a multiple of 4 takes the vec4 kernel (784, 4, 260, 4096), the others the scalar one.
    let shapes = [
        (1, 1, 1),
        (7, 33, 1),
        (33, 784, 3),
        (5, 129, 2),
        (3, 4, 2),
        (2, 260, 3),
        (3, 4096, 1),
    ];
    for &(b, p, k) in &shapes {
        let r = k * b;
        // Extreme logits check the stable softplus and sigmoid.
        let mut logits_h = data(21, r * p, -12.0, 12.0);
        logits_h[0] = 80.0;
        if logits_h.len() > 1 {
            logits_h[1] = -80.0;
        }
        let target_h = data(22, b * p, 0.0, 1.0);
        let logits = Tensor::from_slice(ctx, "logits", &[r, p], &logits_h).unwrap();
        let target = Tensor::from_slice(ctx, "x", &[b, p], &target_h).unwrap();
        let nll = Tensor::<f32>::zeros(ctx, "nll", &[r]).unwrap();
        let g = Tensor::<f32>::zeros(ctx, "g", &[r, p]).unwrap();
        run([bernoulli(ctx, "bce", &logits, &target, &nll, Some((&g, 0.5))).unwrap()]);
        let (nll_r, g_r) = cpu::bernoulli(&logits_h, &target_h, r, p, 0.5);
        // Per-element terms up to ~80 summed over P in f32: relative 1e-6 per term.
        assert_close("bce nll", &nll.read(ctx).unwrap(), &nll_r, 1e-4, 1e-5);
        assert_close("bce grad", &g.read(ctx).unwrap(), &g_r, 1e-6, 1e-5);
        // Row weights scale each row's gradient, and a row of weight 0 gets exactly 0.
        let w_h: Vec<f32> = (0..b).map(|i| if i == b - 1 { 0.0 } else { 1.5 }).collect();
        let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
        run([bernoulli_weighted(
            ctx,
            "bce w",
            &logits,
            &target,
            &nll,
            Some((&g, 0.5)),
            Some(&w),
        )
        .unwrap()]);
        let g_w: Vec<f64> = g_r
            .iter()
            .enumerate()
            .map(|(i, &v)| v * w_h[(i / p) % b] as f64)
            .collect();
        let got = g.read(ctx).unwrap();
        assert_close("bce weighted grad", &got, &g_w, 1e-6, 1e-5);
        assert_close(
            "bce weighted nll",
            &nll.read(ctx).unwrap(),
            &nll_r,
            1e-4,
            1e-5,
        );
        for (i, &v) in got.iter().enumerate() {
            if (i / p) % b == b - 1 {
                assert_eq!(v, 0.0, "({b}, {p}, {k}): element {i} of a row of weight 0");
            }
        }
    }
}

#[test]
fn gaussian_matches_twin() {
    let ctx = ctx();
    for &(b, p, k) in &[(1, 1, 1), (7, 33, 2), (33, 784, 1)] {
        let r = k * b;
        let mean_h = data(31, r * p, -1.0, 2.0);
        let target_h = data(32, b * p, 0.0, 1.0);
        let mean = Tensor::from_slice(ctx, "mean", &[r, p], &mean_h).unwrap();
        let target = Tensor::from_slice(ctx, "x", &[b, p], &target_h).unwrap();
        let nll = Tensor::<f32>::zeros(ctx, "nll", &[r]).unwrap();
        let g = Tensor::<f32>::zeros(ctx, "g", &[r, p]).unwrap();
        let gls = Tensor::<f32>::zeros(ctx, "gls", &[r, p]).unwrap();
        let ls_pp_h = data(33, p, -1.5, 0.5);
        let ls_pp = Tensor::from_slice(ctx, "ls", &[p], &ls_pp_h).unwrap();
        let ls_sh = Tensor::from_slice(ctx, "ls1", &[1], &[-0.7f32]).unwrap();
        for (mode, ls_host) in [
            (LogSigma::Fixed(-0.3), vec![-0.3f32]),
            (LogSigma::Shared(&ls_sh), vec![-0.7f32]),
            (LogSigma::PerPixel(&ls_pp), ls_pp_h.clone()),
        ] {
            let learned = !matches!(mode, LogSigma::Fixed(_));
            run([gaussian(
                ctx,
                "gauss",
                &mean,
                &target,
                mode,
                &nll,
                Some((&g, learned.then_some(&gls), 0.25)),
            )
            .unwrap()]);
            let (nll_r, g_r, gls_r) = cpu::gaussian(&mean_h, &target_h, &ls_host, r, p, 0.25);
            assert_close("gauss nll", &nll.read(ctx).unwrap(), &nll_r, 1e-4, 1e-5);
            assert_close("gauss grad", &g.read(ctx).unwrap(), &g_r, 1e-5, 1e-5);
            if learned {
                assert_close("gauss grad ls", &gls.read(ctx).unwrap(), &gls_r, 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn reductions_match_twins() {
    let ctx = ctx();
    for &(r, c) in &[(1, 1), (7, 33), (129, 400), (400, 7), (3, 784)] {
        let x_h = data((r * c) as u64, r * c, -1.0, 1.0);
        let x = Tensor::from_slice(ctx, "x", &[r, c], &x_h).unwrap();
        let ycol = Tensor::from_slice(ctx, "ycol", &[c], &vec![1.0; c]).unwrap();
        let yrow = Tensor::<f32>::zeros(ctx, "yrow", &[r]).unwrap();
        let partials = Tensor::<f32>::zeros(ctx, "partials", &[SUM_GROUPS]).unwrap();
        let ys = Tensor::<f32>::zeros(ctx, "ys", &[3]).unwrap();
        let lme = Tensor::<f32>::zeros(ctx, "lme", &[c]).unwrap();
        let mut p = Program::new();
        p.push(reduce::col_sum(ctx, "col", &x, &ycol, 0.5, true).unwrap());
        p.push(reduce::row_sum(ctx, "row", &x, &yrow, 1.0, false).unwrap());
        p.extend(reduce::sum_all(ctx, "sum", &x, &partials, &ys, 1, 1.0, false, false).unwrap());
        p.extend(reduce::sum_all(ctx, "sumsq", &x, &partials, &ys, 2, 2.0, true, false).unwrap());
        p.push(reduce::logmeanexp(ctx, "lme", &x, &lme, 1.0, false).unwrap());
        p.run(ctx).unwrap();
        // Sums of n values in [-1, 1]: f32 error below n * 2^-24 in the worst case.
        let tol = |n: usize| 1e-7 * n as f64 + 1e-6;
        let col_r: Vec<f64> = cpu::col_sum(&x_h, r, c)
            .iter()
            .map(|v| 1.0 + 0.5 * v)
            .collect();
        assert_close("col_sum", &ycol.read(ctx).unwrap(), &col_r, tol(r), 1e-6);
        assert_close(
            "row_sum",
            &yrow.read(ctx).unwrap(),
            &cpu::row_sum(&x_h, r, c),
            tol(c),
            1e-6,
        );
        let s = ys.read(ctx).unwrap();
        assert_close(
            "sum_all",
            &s[1..],
            &[cpu::sum_all(&x_h, false), 2.0 * cpu::sum_all(&x_h, true)],
            tol(r * c),
            1e-6,
        );
        assert_close(
            "logmeanexp",
            &lme.read(ctx).unwrap(),
            &cpu::logmeanexp(&x_h, r, c),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn reductions_are_bit_identical_across_runs() {
    let ctx = ctx();
    let n = 100_003;
    let x = Tensor::from_slice(ctx, "x", &[n], &data(99, n, -1.0, 1.0)).unwrap();
    let partials = Tensor::<f32>::zeros(ctx, "partials", &[SUM_GROUPS]).unwrap();
    let ys = Tensor::<f32>::zeros(ctx, "ys", &[1]).unwrap();
    let p = reduce::sum_all(ctx, "sum", &x, &partials, &ys, 0, 1.0, false, false).unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        p.run(ctx).unwrap();
        seen.push(ys.read(ctx).unwrap()[0].to_bits());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "sums differ between runs: {seen:?}"
    );
}

#[test]
fn loss_accumulate_sums_and_flags_nonfinite() {
    let ctx = ctx();
    let b = 77;
    let recon_h = data(41, b, 50.0, 150.0);
    let kl_h = data(42, b, 0.0, 30.0);
    let recon = Tensor::from_slice(ctx, "recon", &[b], &recon_h).unwrap();
    let klt = Tensor::from_slice(ctx, "kl", &[b], &kl_h).unwrap();
    let metrics = Tensor::<f32>::zeros(ctx, "metrics", &[metric::LEN]).unwrap();
    let d = reduce::loss_accumulate(ctx, "loss", &recon, &klt, &metrics, 2.0).unwrap();
    let mut p = Program::new();
    p.push(d);
    for _ in 0..3 {
        p.run(ctx).unwrap();
    }
    let m = metrics.read(ctx).unwrap();
    let sr: f64 = 3.0 * recon_h.iter().map(|&v| v as f64).sum::<f64>();
    let sk: f64 = 3.0 * kl_h.iter().map(|&v| v as f64).sum::<f64>();
    assert_close("recon sum", &[m[metric::RECON]], &[sr], 0.0, 1e-6);
    assert_close("kl sum", &[m[metric::KL]], &[sk], 0.0, 1e-6);
    assert_close("loss sum", &[m[metric::LOSS]], &[sr + 2.0 * sk], 0.0, 1e-6);
    assert_eq!(m[metric::COUNT], 3.0 * b as f32);
    assert_eq!(m[metric::NONFINITE], 0.0);
    recon.write_at(ctx, 5, &[f32::NAN]).unwrap();
    p.run(ctx).unwrap();
    assert_eq!(
        metrics.read(ctx).unwrap()[metric::NONFINITE],
        1.0,
        "NaN not flagged"
    );
}

#[test]
fn adam_matches_twin() {
    let ctx = ctx();
    for (n, cfg) in [
        (1usize, AdamConfig::default()),
        (
            1000,
            AdamConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        ),
        (
            4099,
            AdamConfig {
                clip_norm: 0.5,
                lr: 3e-3,
                ..Default::default()
            },
        ),
    ] {
        let p_h = data(51, n, -1.0, 1.0);
        let g_h = data(52, n, -0.1, 0.1);
        let m_h = data(53, n, -0.01, 0.01);
        let v_h = data(54, n, 0.0, 1e-4);
        let params = Tensor::from_slice(ctx, "p", &[n], &p_h).unwrap();
        let grads = Tensor::from_slice(ctx, "g", &[n], &g_h).unwrap();
        let m = Tensor::from_slice(ctx, "m", &[n], &m_h).unwrap();
        let v = Tensor::from_slice(ctx, "v", &[n], &v_h).unwrap();
        let state = StepState::new(ctx, "state").unwrap();
        state.set(ctx, 6, 0).unwrap(); // this is step t = 7
        let scratch = AdamScratch::new(ctx).unwrap();
        adam(ctx, "adam", &params, &grads, &m, &v, &state, &scratch, &cfg)
            .unwrap()
            .run(ctx)
            .unwrap();
        let (p_r, m_r, v_r) = cpu::adam(&p_h, &g_h, &m_h, &v_h, 7, &cfg);
        // One update of size ~lr: f32 rounding of p plus the update's relative error.
        assert_close("adam p", &params.read(ctx).unwrap(), &p_r, 1e-6, 1e-6);
        assert_close("adam m", &m.read(ctx).unwrap(), &m_r, 1e-9, 1e-5);
        assert_close("adam v", &v.read(ctx).unwrap(), &v_r, 1e-12, 1e-5);
    }
}

#[test]
fn gather_and_step_state() {
    let ctx = ctx();
    let (n, pixels, rows) = (37, 49, 5); // odd pixel count: rows straddle u32 words
    let images_h: Vec<u8> = (0..n * pixels).map(|i| (i * 7 % 256) as u8).collect();
    let perm_h: Vec<u32> = wgvae::rng::HostRng::new(3).permutation(n);
    let images = Tensor::from_slice(ctx, "images", &[n, pixels], &images_h).unwrap();
    let perm = Tensor::from_slice(ctx, "perm", &[n], &perm_h).unwrap();
    let x = Tensor::<f32>::zeros(ctx, "x", &[rows, pixels]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    state.set(ctx, 10, 8).unwrap(); // third batch of the epoch
    let mut p = Program::new();
    p.push(gather(ctx, "gather", &images, pixels, &perm, &x, 1, Some(&state)).unwrap());
    p.push(state.advance(ctx).unwrap());
    p.run(ctx).unwrap();
    let want = cpu::gather(&images_h, pixels, &perm_h, 1 + 2 * rows, rows);
    assert_close("gather", &x.read(ctx).unwrap(), &want, 0.0, 1e-7);
    assert_eq!(state.read(ctx).unwrap(), (11, 8));
    // Past the end: zero rows.
    let x2 = Tensor::<f32>::zeros(ctx, "x2", &[rows, pixels]).unwrap();
    run([gather(ctx, "tail", &images, pixels, &perm, &x2, n - 2, None).unwrap()]);
    let want = cpu::gather(&images_h, pixels, &perm_h, n - 2, rows);
    assert_close("gather tail", &x2.read(ctx).unwrap(), &want, 0.0, 1e-7);
}

#[test]
fn elementwise_maps() {
    let ctx = ctx();
    let n = 1001;
    let x_h = data(61, n, -30.0, 30.0);
    let x = Tensor::from_slice(ctx, "x", &[n], &x_h).unwrap();
    let y = Tensor::<f32>::zeros(ctx, "y", &[n]).unwrap();
    run([elementwise::sigmoid(ctx, "sig", &x, &y).unwrap()]);
    let want: Vec<f64> = x_h
        .iter()
        .map(|&v| 1.0 / (1.0 + (-(v as f64)).exp()))
        .collect();
    assert_close("sigmoid", &y.read(ctx).unwrap(), &want, 1e-7, 1e-6);
    run([elementwise::scale(ctx, "scale", &x, &y, -2.0).unwrap()]);
    assert_close(
        "scale",
        &y.read(ctx).unwrap(),
        &f64s(&x_h).iter().map(|v| -2.0 * v).collect::<Vec<_>>(),
        0.0,
        1e-7,
    );
    run([elementwise::fill(ctx, "fill", &y, 3.5).unwrap()]);
    assert!(y.read(ctx).unwrap().iter().all(|&v| v == 3.5));
}

/// Values in [-1, 1] rounded to multiples of 1/8: products and sums of a few of them are exact
/// in f32, so the sign of every pre-activation is the same on the GPU and in f64.
fn eighths(seed: u64, n: usize) -> Vec<f32> {
    data(seed, n, -1.0, 1.0)
        .into_iter()
        .map(|v| (v * 8.0).round() / 8.0)
        .collect()
}

/// One hidden layer forward, `h = act(x·W1 + b1)`, and the backward through it,
/// `dh = (dy·W2ᵀ) ⊙ act'(h)` with the derivative taken from the GPU's own output h (as the
/// model's backward does), against f64 with the derivative taken at the pre-activation.
fn activation_layer_case(
    variant: GemmVariant,
    act: Activation,
    m: usize,
    k: usize,
    h: usize,
    o: usize,
) {
    let ctx = ctx();
    let x_h = eighths(71, m * k);
    let w1_h = eighths(72, k * h);
    let b1_h = eighths(73, h);
    let dy_h = data(74, m * o, -1.0, 1.0);
    let w2_h = data(75, h * o, -1.0, 1.0);
    let x = Tensor::from_slice(ctx, "x", &[m, k], &x_h).unwrap();
    let w1 = Tensor::from_slice(ctx, "w1", &[k, h], &w1_h).unwrap();
    let b1 = Tensor::from_slice(ctx, "b1", &[h], &b1_h).unwrap();
    let dy = Tensor::from_slice(ctx, "dy", &[m, o], &dy_h).unwrap();
    let w2 = Tensor::from_slice(ctx, "w2", &[h, o], &w2_h).unwrap();
    let hid = Tensor::<f32>::zeros(ctx, "h", &[m, h]).unwrap();
    let dh = Tensor::<f32>::zeros(ctx, "dh", &[m, h]).unwrap();
    let fwd = Epilogue::BiasAct { bias: &b1, act };
    let bwd = Epilogue::ActGrad { output: &hid, act };
    run([
        gemm_with(ctx, variant, "fwd", &x, &w1, &hid, Trans::NN, fwd).unwrap(),
        gemm_with(ctx, variant, "bwd", &dy, &w2, &dh, Trans::NT, bwd).unwrap(),
    ]);
    let pre = cpu::gemm(&x_h, &w1_h, m, k, h, Trans::NN, cpu::CpuEpilogue::Store);
    let pre: Vec<f64> = pre
        .iter()
        .enumerate()
        .map(|(i, v)| v + b1_h[i % h] as f64)
        .collect();
    let h_ref: Vec<f64> = pre.iter().map(|&s| cpu::activate(act, s)).collect();
    let what = format!("{variant:?} {act:?} M={m} K={k} H={h} O={o}");
    assert_close(
        &format!("{what} forward"),
        &hid.read(ctx).unwrap(),
        &h_ref,
        1e-6,
        1e-6,
    );
    let back = cpu::gemm(&dy_h, &w2_h, m, o, h, Trans::NT, cpu::CpuEpilogue::Store);
    let dh_ref: Vec<f64> = back
        .iter()
        .zip(&pre)
        .map(|(g, &s)| g * cpu::activate_grad(act, s))
        .collect();
    assert_close(
        &format!("{what} backward"),
        &dh.read(ctx).unwrap(),
        &dh_ref,
        4e-6 * o as f64 + 1e-6,
        1e-5,
    );
}

#[test]
fn leaky_relu_forward_and_backward_match_twin() {
    let ctx = ctx();
    let mut variants = vec![GemmVariant::Tiled];
    if ctx.caps.subgroups && ctx.caps.subgroup_min_size == 8 && ctx.caps.subgroup_max_size == 8 {
        variants.push(GemmVariant::Subgroup8);
    }
    for variant in variants {
        for slope in [0.2f32, 0.01, 1.0] {
            let act = Activation::leaky_relu(slope).unwrap();
            // (37, 13, 36, 20) fits the subgroup kernel; (7, 5, 33, 9) falls back to tiles.
            activation_layer_case(variant, act, 37, 13, 36, 20);
            activation_layer_case(variant, act, 7, 5, 33, 9);
        }
        activation_layer_case(variant, Activation::Relu, 37, 13, 36, 20);
    }
}

#[test]
fn leaky_relu_slopes_outside_0_1_are_refused() {
    let ctx = ctx();
    let x = Tensor::<f32>::zeros(ctx, "x", &[3, 4]).unwrap();
    let w = Tensor::<f32>::zeros(ctx, "w", &[4, 4]).unwrap();
    let y = Tensor::<f32>::zeros(ctx, "y", &[3, 4]).unwrap();
    let b = Tensor::<f32>::zeros(ctx, "b", &[4]).unwrap();
    for slope in [-0.2f32, 0.0, 1.5, f32::NAN, f32::INFINITY] {
        let e = Activation::leaky_relu(slope).unwrap_err().to_string();
        assert!(e.contains("slope") && e.contains("(0, 1]"), "{slope}: {e}");
        let e = Activation::parse(&format!("leaky_relu:{slope}")).unwrap_err();
        assert!(
            e.contains("leaky_relu:") && e.contains("(0, 1]"),
            "{slope}: {e}"
        );
        let act = Activation::LeakyRelu(slope);
        let cfg = VaeConfig {
            activation: act,
            ..VaeConfig::classic(28, 28)
        };
        assert!(cfg.validate().is_err(), "VaeConfig accepted slope {slope}");
        let fwd = Epilogue::BiasAct { bias: &b, act };
        let bwd = Epilogue::ActGrad { output: &y, act };
        for (epi, name) in [(fwd, "forward"), (bwd, "backward")] {
            let r = gemm_with(ctx, ctx.gemm_variant, "g", &x, &w, &y, Trans::NN, epi);
            let e = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("slope"), "{name} GEMM with slope {slope}: `{e}`");
        }
    }
}
