//! The training step's data path against its CPU twins: the gather's row weights for a partial
//! last batch, row-weighted likelihood and KL gradients (exactly 0 in padded rows), and loss
//! bookkeeping that counts only the valid rows.

mod common;

use common::{assert_close, ctx, data};
use wgvae::cpu;
use wgvae::gpu::{Program, Tensor};
use wgvae::ops::data::{GatherOptions, StepState, gather_with};
use wgvae::ops::kl::kl_weighted;
use wgvae::ops::likelihood::{LogSigma, bernoulli_weighted, gaussian_weighted};
use wgvae::ops::reduce::{loss_accumulate_weighted, metric};

/// Row weights of a batch of `rows` with `valid` images: 1/valid, then 0.
fn weights(rows: usize, valid: usize) -> Vec<f32> {
    (0..rows)
        .map(|r| if r < valid { 1.0 / valid as f32 } else { 0.0 })
        .collect()
}

#[test]
fn gather_writes_row_weights_at_every_position() {
    let ctx = ctx();
    // 37 images of 49 pixels (rows straddle u32 words), batches of 8: four full batches, a
    // last one of 5 rows, and one wholly past the end.
    let (n, pixels, rows) = (37, 49, 8);
    let images_h: Vec<u8> = (0..n * pixels).map(|i| (i * 7 % 256) as u8).collect();
    let perm_h: Vec<u32> = wgvae::rng::HostRng::new(3).permutation(n);
    let images = Tensor::from_slice(ctx, "images", &[n, pixels], &images_h).unwrap();
    let perm = Tensor::from_slice(ctx, "perm", &[n], &perm_h).unwrap();
    let x = Tensor::<f32>::zeros(ctx, "x", &[rows, pixels]).unwrap();
    let w = Tensor::<f32>::zeros(ctx, "w", &[rows]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let opts = GatherOptions {
        state: Some(&state),
        weights: Some(&w),
    };
    let mut p = Program::new();
    p.push(gather_with(ctx, "gather", &images, pixels, &perm, &x, 0, opts).unwrap());
    p.push(state.advance(ctx).unwrap());
    state.set(ctx, 100, 100).unwrap(); // an epoch that began at global step 100
    for k in 0..6 {
        p.run(ctx).unwrap();
        let (x_r, w_r) = cpu::data::gather_weighted(&images_h, pixels, &perm_h, k * rows, rows);
        assert_close(
            &format!("x, step {k}"),
            &x.read(ctx).unwrap(),
            &x_r,
            0.0,
            1e-7,
        );
        assert_close(
            &format!("w, step {k}"),
            &w.read(ctx).unwrap(),
            &w_r,
            0.0,
            1e-7,
        );
        let valid = w_r.iter().filter(|&&v| v > 0.0).count();
        assert_eq!(valid, [8, 8, 8, 8, 5, 0][k], "step {k}");
    }
    // A weight vector of the wrong length is a shape error, not a panic.
    let short = Tensor::<f32>::zeros(ctx, "short", &[rows - 1]).unwrap();
    let err = gather_with(
        ctx,
        "gather",
        &images,
        pixels,
        &perm,
        &x,
        0,
        GatherOptions {
            state: None,
            weights: Some(&short),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("row weights"), "{err}");
}

#[test]
fn weighted_likelihood_and_kl_gradients_match_twins_and_vanish_in_padded_rows() {
    let ctx = ctx();
    for &(b, valid, p, k, d) in &[(5, 3, 33, 1, 3), (7, 7, 20, 2, 4), (9, 1, 129, 2, 7)] {
        let r = k * b;
        let w_h = weights(b, valid);
        let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
        let mut out_h = data(71, r * p, -4.0, 4.0);
        // A non-finite output in a padded row must not leak into its gradient.
        if valid < b {
            out_h[(r - 1) * p] = f32::NAN;
        }
        let target_h = data(72, b * p, 0.0, 1.0);
        let out = Tensor::from_slice(ctx, "out", &[r, p], &out_h).unwrap();
        let target = Tensor::from_slice(ctx, "x", &[b, p], &target_h).unwrap();
        let nll = Tensor::<f32>::zeros(ctx, "nll", &[r]).unwrap();
        let g = Tensor::<f32>::zeros(ctx, "g", &[r, p]).unwrap();
        let gls = Tensor::<f32>::zeros(ctx, "gls", &[r, p]).unwrap();
        let ls_h = data(73, p, -1.0, 0.5);
        let ls = Tensor::from_slice(ctx, "ls", &[p], &ls_h).unwrap();
        let scale = 1.0 / k as f32;
        // Twin gradient of row i: the unweighted twin's (scale 1) times scale·w[i % B], or 0.
        let weigh = |g1: &[f64]| -> Vec<f64> {
            g1.chunks(p)
                .enumerate()
                .flat_map(|(i, row)| {
                    let s = scale as f64 * w_h[i % b] as f64;
                    row.iter().map(move |&v| if s == 0.0 { 0.0 } else { s * v })
                })
                .collect()
        };
        let mut prog = Program::new();
        prog.push(
            bernoulli_weighted(ctx, "bce", &out, &target, &nll, Some((&g, scale)), Some(&w))
                .unwrap(),
        );
        prog.run(ctx).unwrap();
        let (_, g1) = cpu::bernoulli(&out_h, &target_h, r, p, 1.0);
        assert_close(
            "bernoulli grad",
            &g.read(ctx).unwrap(),
            &weigh(&g1),
            1e-6,
            1e-5,
        );

        let mut prog = Program::new();
        prog.push(
            gaussian_weighted(
                ctx,
                "gauss",
                &out,
                &target,
                LogSigma::PerPixel(&ls),
                &nll,
                Some((&g, Some(&gls), scale)),
                Some(&w),
            )
            .unwrap(),
        );
        prog.run(ctx).unwrap();
        let (_, g1, gls1) = cpu::gaussian(&out_h, &target_h, &ls_h, r, p, 1.0);
        assert_close(
            "gaussian grad",
            &g.read(ctx).unwrap(),
            &weigh(&g1),
            1e-5,
            1e-5,
        );
        assert_close(
            "gaussian grad ls",
            &gls.read(ctx).unwrap(),
            &weigh(&gls1),
            1e-5,
            1e-5,
        );

        let mut enc_h = data(74, b * 2 * d, -2.0, 2.0);
        if valid < b {
            enc_h[(b - 1) * 2 * d + d] = f32::INFINITY; // log variance of a padded row
        }
        let enc = Tensor::from_slice(ctx, "enc", &[b, 2 * d], &enc_h).unwrap();
        let ks = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
        let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
        let genc = Tensor::<f32>::zeros(ctx, "genc", &[b, 2 * d]).unwrap();
        let beta = 2.5f32;
        let mut prog = Program::new();
        prog.push(kl_weighted(ctx, "kl", &enc, &ks, &ke, Some((&genc, beta)), Some(&w)).unwrap());
        prog.run(ctx).unwrap();
        let (_, _, gk1) = cpu::kl(&enc_h, b, d, 1.0);
        let want: Vec<f64> = gk1
            .chunks(2 * d)
            .enumerate()
            .flat_map(|(i, row)| {
                let s = beta as f64 * w_h[i] as f64;
                row.iter().map(move |&v| if s == 0.0 { 0.0 } else { s * v })
            })
            .collect();
        assert_close("kl grad", &genc.read(ctx).unwrap(), &want, 1e-6, 1e-5);
    }
}

#[test]
fn loss_sums_count_only_valid_rows() {
    let ctx = ctx();
    let (b, valid) = (77, 50);
    let recon_h = data(41, b, 50.0, 150.0);
    let kl_h = data(42, b, 0.0, 30.0);
    let recon = Tensor::from_slice(ctx, "recon", &[b], &recon_h).unwrap();
    let klt = Tensor::from_slice(ctx, "kl", &[b], &kl_h).unwrap();
    let w = Tensor::from_slice(ctx, "w", &[b], &weights(b, valid)).unwrap();
    let metrics = Tensor::<f32>::zeros(ctx, "metrics", &[metric::LEN]).unwrap();
    let mut p = Program::new();
    p.push(loss_accumulate_weighted(ctx, "loss", &recon, &klt, &metrics, 2.0, Some(&w)).unwrap());
    p.run(ctx).unwrap();
    p.run(ctx).unwrap();
    let m = metrics.read(ctx).unwrap();
    let sr: f64 = 2.0 * recon_h[..valid].iter().map(|&v| v as f64).sum::<f64>();
    let sk: f64 = 2.0 * kl_h[..valid].iter().map(|&v| v as f64).sum::<f64>();
    assert_close("recon sum", &[m[metric::RECON]], &[sr], 0.0, 1e-6);
    assert_close("kl sum", &[m[metric::KL]], &[sk], 0.0, 1e-6);
    assert_close("loss sum", &[m[metric::LOSS]], &[sr + 2.0 * sk], 0.0, 1e-6);
    assert_eq!(m[metric::COUNT], 2.0 * valid as f32);
    // A non-finite value in a padded row is not the model's: not flagged. In a valid row it is.
    recon.write_at(ctx, valid + 3, &[f32::NAN]).unwrap();
    p.run(ctx).unwrap();
    assert_eq!(metrics.read(ctx).unwrap()[metric::NONFINITE], 0.0);
    recon.write_at(ctx, valid - 1, &[f32::NAN]).unwrap();
    p.run(ctx).unwrap();
    assert_eq!(metrics.read(ctx).unwrap()[metric::NONFINITE], 1.0);
}
