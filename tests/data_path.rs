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
        binarize: None,
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
            binarize: None,
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

/// One binarising gather at (seed, step) of `perm` from position `base`.
#[allow(clippy::too_many_arguments)]
fn binarised(
    images_h: &[u8],
    pixels: usize,
    perm_h: &[u32],
    rows: usize,
    base: usize,
    seed: u64,
    step: u32,
) -> Vec<f32> {
    let ctx = ctx();
    let n = images_h.len() / pixels;
    let images = Tensor::from_slice(ctx, "images", &[n, pixels], images_h).unwrap();
    let perm = Tensor::from_slice(ctx, "perm", &[perm_h.len()], perm_h).unwrap();
    let x = Tensor::<f32>::zeros(ctx, "x", &[rows, pixels]).unwrap();
    let w = Tensor::<f32>::zeros(ctx, "w", &[rows]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    state.set(ctx, step, step).unwrap();
    let opts = GatherOptions {
        state: Some(&state),
        weights: Some(&w),
        binarize: Some(seed),
    };
    let mut p = Program::new();
    p.push(gather_with(ctx, "bin gather", &images, pixels, &perm, &x, base, opts).unwrap());
    p.run(ctx).unwrap();
    x.read(ctx).unwrap()
}

#[test]
fn binarising_gather_matches_twin_and_repeats_for_the_same_seed_and_step() {
    // 37 grey images of 49 pixels (not a multiple of 4: the last Philox draw of a row is
    // partly used), a batch of 8 from position 32: 5 valid rows, 3 padded.
    let (n, pixels, rows) = (37, 49, 8);
    let images_h: Vec<u8> = (0..n * pixels).map(|i| (i * 89 % 256) as u8).collect();
    let perm_h: Vec<u32> = wgvae::rng::HostRng::new(5).permutation(n);
    let seed = 0x0123_4567_89ab_cdefu64;
    let a = binarised(&images_h, pixels, &perm_h, rows, 32, seed, 41);
    let (want, _) = cpu::data::gather_train(&images_h, pixels, &perm_h, 32, rows, Some((seed, 41)));
    assert_close("binarised x", &a, &want, 0.0, 0.0);
    assert!(
        a.iter().all(|&v| v == 0.0 || v == 1.0),
        "values other than 0 and 1"
    );
    assert!(a[5 * pixels..].iter().all(|&v| v == 0.0), "padded rows");
    assert_eq!(a, binarised(&images_h, pixels, &perm_h, rows, 32, seed, 41));
    let ones = |v: &[f32]| v.iter().filter(|&&x| x == 1.0).count();
    for (other, what) in [
        (
            binarised(&images_h, pixels, &perm_h, rows, 32, seed, 42),
            "step + 1",
        ),
        (
            binarised(&images_h, pixels, &perm_h, rows, 32, seed ^ (1 << 40), 41),
            "another seed",
        ),
    ] {
        let differ = a.iter().zip(&other).filter(|(x, y)| x != y).count();
        // About half the 245 grey pixels' draws disagree; the same draws would give 0.
        assert!(differ > 40, "{what}: only {differ} pixels differ");
        assert!(ones(&other) > 40, "{what}");
    }
}

#[test]
fn binarised_pixels_have_mean_byte_over_255() {
    // One image holding every grey level 0..=255, gathered 64 times per batch over 24 steps:
    // 1,536 draws per level.
    let pixels = 256;
    let images_h: Vec<u8> = (0..=255u8).collect();
    let perm_h = vec![0u32; 64];
    let draws = 64 * 24;
    let mut ones = vec![0usize; pixels];
    for step in 0..24 {
        let x = binarised(&images_h, pixels, &perm_h, 64, 0, 7, 1000 + step);
        for row in x.chunks(pixels) {
            for (p, &v) in row.iter().enumerate() {
                ones[p] += (v == 1.0) as usize;
            }
        }
    }
    assert_eq!(ones[0], 0, "byte 0 is never 1");
    assert_eq!(ones[255], draws, "byte 255 is always 1");
    let mut total_z = 0.0;
    for (byte, &k) in ones.iter().enumerate() {
        let p = byte as f64 / 255.0;
        let mean = k as f64 / draws as f64;
        let sd = (p * (1.0 - p) / draws as f64).sqrt().max(1e-9);
        // 256 levels: a 5 sd deviation has probability ~1e-4 overall.
        assert!(
            (mean - p).abs() <= 5.0 * sd + 1e-6,
            "byte {byte}: mean {mean} vs {p}"
        );
        total_z += (mean - p) / sd.max(1e-3);
    }
    // The deviations do not all lean one way (a biased threshold would).
    assert!(total_z.abs() / (254f64).sqrt() < 5.0, "summed z {total_z}");
}

#[test]
fn host_binarisation_is_seeded_binary_and_unbiased() {
    use wgvae::ops::data::{Binarize, binarize_bytes};
    let grey: Vec<u8> = (0..200_000).map(|i| (i % 256) as u8).collect();
    let mut a = grey.clone();
    binarize_bytes(&mut a, 3, 9);
    let mut again = grey.clone();
    binarize_bytes(&mut again, 3, 9);
    assert_eq!(a, again, "same seed and stream, same binary set");
    let mut other = grey.clone();
    binarize_bytes(&mut other, 4, 9);
    assert_ne!(a, other);
    assert!(a.iter().all(|&v| v == 0 || v == 255));
    for (g, b) in grey.iter().zip(&a) {
        if *g == 0 || *g == 255 {
            assert_eq!(g, b);
        }
    }
    let mean_grey = grey.iter().map(|&v| v as f64).sum::<f64>() / grey.len() as f64 / 255.0;
    let mean_bin = a.iter().filter(|&&v| v == 255).count() as f64 / a.len() as f64;
    // sd of the mean of 200,000 draws with p ≈ 0.5: 0.0011.
    assert!(
        (mean_bin - mean_grey).abs() < 0.006,
        "{mean_bin} vs {mean_grey}"
    );
    assert_eq!(Binarize::parse(" Dynamic"), Ok(Binarize::Dynamic));
    let e = Binarize::parse("sometimes").unwrap_err();
    assert!(e.contains("--binarize") && e.contains("sometimes"), "{e}");
}
