//! The training gather on colour images: a 3-channel data set of odd size (3x5x7, so images
//! straddle u32 words) read from a channels-last `.npy` file, gathered in batches of 7 with a
//! partial last batch, against the CPU conversion of the NumPy layout and the gather's twin.

mod common;

use std::path::PathBuf;

use common::{assert_close, ctx};
use wgvae::cpu;
use wgvae::data::npy::write_npy_u8;
use wgvae::data::{Dataset, NPY_TEST_IMAGES, NPY_TRAIN_IMAGES, load_dir};
use wgvae::gpu::{Program, Tensor};
use wgvae::ops::data::{GatherOptions, StepState, gather_with};

const N: usize = 23;
const C: usize = 3;
const H: usize = 5;
const W: usize = 7;
const ROWS: usize = 7;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wgvae-test-gather-rgb-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Byte of image i, row y, column x, channel c in the channels-last file.
fn nhwc(i: usize, y: usize, x: usize, c: usize) -> u8 {
    ((i * 131 + y * 37 + x * 11 + c * 89) % 256) as u8
}

/// The 23 training images, written as (N, H, W, C) under a directory named by `name` and
/// loaded as CHW.
fn load(name: &str) -> Dataset {
    let dir = scratch(name);
    let mut bytes = Vec::with_capacity(N * H * W * C);
    for i in 0..N {
        for y in 0..H {
            for x in 0..W {
                for c in 0..C {
                    bytes.push(nhwc(i, y, x, c));
                }
            }
        }
    }
    write_npy_u8(&dir.join(NPY_TRAIN_IMAGES), &[N, H, W, C], &bytes).unwrap();
    write_npy_u8(
        &dir.join(NPY_TEST_IMAGES),
        &[1, H, W, C],
        &bytes[..H * W * C],
    )
    .unwrap();
    let split = load_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    split.train
}

#[test]
fn gather_of_three_channel_images_matches_the_cpu_conversion() {
    let ctx = ctx();
    let data = load("plain");
    assert_eq!(
        (data.n, data.channels, data.height, data.width),
        (N, C, H, W)
    );
    let pixels = data.image_len();
    assert_eq!(pixels, 105);
    let perm_h: Vec<u32> = wgvae::rng::HostRng::new(5).permutation(N);
    let images = Tensor::from_slice(ctx, "images", &[N, pixels], &data.pixels).unwrap();
    let perm = Tensor::from_slice(ctx, "perm", &[N], &perm_h).unwrap();
    let x = Tensor::<f32>::zeros(ctx, "x", &[ROWS, pixels]).unwrap();
    let w = Tensor::<f32>::zeros(ctx, "w", &[ROWS]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let opts = GatherOptions {
        state: Some(&state),
        weights: Some(&w),
        binarize: None,
    };
    let mut p = Program::new();
    p.push(gather_with(ctx, "gather", &images, pixels, &perm, &x, 0, opts).unwrap());
    p.push(state.advance(ctx).unwrap());
    state.set(ctx, 40, 40).unwrap();
    // Batches at positions 0, 7, 14 (full), 21 (2 images) and 28 (none).
    for (k, valid) in [7, 7, 7, 2, 0].into_iter().enumerate() {
        p.run(ctx).unwrap();
        let got = x.read(ctx).unwrap();
        // Row r is image perm[7k + r] in CHW order: value (c, y, x) from NHWC (y, x, c).
        let mut want = vec![0.0f64; ROWS * pixels];
        for r in 0..valid {
            let i = perm_h[k * ROWS + r] as usize;
            for c in 0..C {
                for y in 0..H {
                    for xx in 0..W {
                        want[r * pixels + (c * H + y) * W + xx] =
                            f64::from(nhwc(i, y, xx, c)) / 255.0;
                    }
                }
            }
            // The data set's own conversion gives the same row.
            let row: Vec<f64> = data.to_f32(i).iter().map(|&v| f64::from(v)).collect();
            assert_close(
                &format!("to_f32 of image {i}"),
                &got[r * pixels..(r + 1) * pixels],
                &row,
                0.0,
                1e-7,
            );
        }
        assert_close(&format!("x, batch {k}"), &got, &want, 0.0, 1e-7);
        let (x_twin, w_twin) =
            cpu::data::gather_weighted(&data.pixels, pixels, &perm_h, k * ROWS, ROWS);
        assert_close(&format!("x twin, batch {k}"), &got, &x_twin, 0.0, 1e-7);
        assert_close(
            &format!("w, batch {k}"),
            &w.read(ctx).unwrap(),
            &w_twin,
            0.0,
            1e-7,
        );
        let weighted = w_twin.iter().filter(|&&v| v > 0.0).count();
        assert_eq!(weighted, valid, "batch {k}");
    }
}

#[test]
fn binarising_gather_of_three_channel_images_matches_its_twin() {
    let ctx = ctx();
    let data = load("binary");
    let pixels = data.image_len();
    let perm_h: Vec<u32> = wgvae::rng::HostRng::new(9).permutation(N);
    let images = Tensor::from_slice(ctx, "images", &[N, pixels], &data.pixels).unwrap();
    let perm = Tensor::from_slice(ctx, "perm", &[N], &perm_h).unwrap();
    let x = Tensor::<f32>::zeros(ctx, "x", &[ROWS, pixels]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let seed = 0x0123_4567_89ab_cdef;
    let opts = GatherOptions {
        state: Some(&state),
        weights: None,
        binarize: Some(seed),
    };
    let mut p = Program::new();
    p.push(gather_with(ctx, "bin gather", &images, pixels, &perm, &x, 0, opts).unwrap());
    // The partial last batch: step 13 of an epoch that began at step 10 is position 21.
    state.set(ctx, 13, 10).unwrap();
    p.run(ctx).unwrap();
    let got = x.read(ctx).unwrap();
    let (want, _) =
        cpu::data::gather_train(&data.pixels, pixels, &perm_h, 21, ROWS, Some((seed, 13)));
    assert_close("binarised x", &got, &want, 0.0, 0.0);
    assert!(got[..2 * pixels].contains(&1.0));
    assert!(got[..2 * pixels].contains(&0.0));
    assert!(got[2 * pixels..].iter().all(|&v| v == 0.0));
}
