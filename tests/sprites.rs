//! The procedural sprites set: determinism, disjoint splits, factors, and rendering geometry.

use std::collections::HashSet;

use wgvae::data::sprites::{
    self, FACTOR_NAMES, FACTOR_SIZES, N_COMBINATIONS, SIZE, SpritesConfig, combination,
    combination_index, generate, render, select,
};
use wgvae::data::{DataError, Dataset};

fn small(seed: u64) -> SpritesConfig {
    SpritesConfig {
        n_train: 400,
        n_test: 100,
        seed,
    }
}

/// Combination indices of a generated data set, recovered from its factor classes.
fn combination_indices(d: &Dataset) -> Vec<usize> {
    let f = d.factors.as_ref().unwrap();
    (0..d.n)
        .map(|i| {
            let c = f.classes_of(i);
            combination_index([0, 1, 2, 3, 4].map(|k| c[k] as usize))
        })
        .collect()
}

fn foreground(img: &[u8]) -> usize {
    img.iter().filter(|&&v| v == 255).count()
}

/// Mean (row, col) of the foreground pixels.
fn centroid(img: &[u8]) -> (f64, f64) {
    let (mut r, mut c, mut n) = (0.0, 0.0, 0.0);
    for (i, &v) in img.iter().enumerate() {
        if v == 255 {
            r += (i / SIZE) as f64;
            c += (i % SIZE) as f64;
            n += 1.0;
        }
    }
    (r / n, c / n)
}

fn touches_border(img: &[u8]) -> bool {
    (0..SIZE).any(|k| {
        img[k] != 0
            || img[(SIZE - 1) * SIZE + k] != 0
            || img[k * SIZE] != 0
            || img[k * SIZE + SIZE - 1] != 0
    })
}

#[test]
fn same_seed_same_bytes_other_seed_other_selection() {
    let a = generate(&small(11)).unwrap();
    let b = generate(&small(11)).unwrap();
    assert_eq!(a, b);
    let c = generate(&small(12)).unwrap();
    assert_ne!(combination_indices(&a.train), combination_indices(&c.train));
    assert_ne!(a.train.pixels, c.train.pixels);
}

#[test]
fn selection_algorithm_is_pinned() {
    // Reference values of the documented algorithm (SplitMix64 + partial Fisher-Yates),
    // computed with an independent implementation; they must never change across versions.
    let cfg = |seed| SpritesConfig {
        n_train: 5,
        n_test: 3,
        seed,
    };
    assert_eq!(
        select(&cfg(0)).unwrap(),
        [
            134575, 190118, 195877, 448897, 180935, 486220, 110687, 183158
        ]
    );
    assert_eq!(
        select(&cfg(1)).unwrap(),
        [
            105665, 235406, 19470, 336812, 176281, 714203, 692493, 592667
        ]
    );
    let split = generate(&cfg(0)).unwrap();
    assert_eq!(combination_indices(&split.test), [486220, 110687, 183158]);
    // A prefix of a larger draw is the smaller draw.
    let longer = select(&SpritesConfig {
        n_train: 100,
        n_test: 0,
        seed: 0,
    })
    .unwrap();
    assert_eq!(&longer[..8], &select(&cfg(0)).unwrap()[..]);
}

#[test]
fn default_split_is_disjoint_binary_and_labelled() {
    let cfg = SpritesConfig::default();
    let split = generate(&cfg).unwrap();
    assert_eq!((split.train.n, split.test.n), (cfg.n_train, cfg.n_test));
    let train: HashSet<usize> = combination_indices(&split.train).into_iter().collect();
    let test: HashSet<usize> = combination_indices(&split.test).into_iter().collect();
    assert_eq!(train.len(), cfg.n_train, "duplicate combinations in train");
    assert_eq!(test.len(), cfg.n_test, "duplicate combinations in test");
    assert!(train.is_disjoint(&test));
    for d in [&split.train, &split.test] {
        assert_eq!(d.name, "sprites");
        assert_eq!((d.channels, d.height, d.width), (1, 64, 64));
        assert_eq!(d.pixels.len(), d.n * 64 * 64);
        d.check().unwrap();
        let labels = d.labels.as_ref().unwrap();
        assert_eq!(labels.len(), d.n);
        let f = d.factors.as_ref().unwrap();
        for (i, &label) in labels.iter().enumerate() {
            let img = d.image(i);
            assert!(
                img.iter().all(|&v| v == 0 || v == 255),
                "image {i} not binary"
            );
            assert!(foreground(img) > 0, "image {i} empty");
            assert!(!touches_border(img), "image {i} touches the border");
            assert_eq!(u32::from(label), f.classes_of(i)[0]);
        }
    }
    // Every shape and every value of every factor shows up in 20,000 draws.
    let f = split.train.factors.as_ref().unwrap();
    for (k, &size) in FACTOR_SIZES.iter().enumerate() {
        let seen: HashSet<u32> = (0..split.train.n).map(|i| f.classes_of(i)[k]).collect();
        assert_eq!(seen.len(), size, "factor {}", FACTOR_NAMES[k]);
    }
}

#[test]
fn factor_values_and_ranges() {
    let split = generate(&small(5)).unwrap();
    let f = split.train.factors.as_ref().unwrap();
    assert_eq!(f.names, FACTOR_NAMES);
    assert_eq!(f.sizes, FACTOR_SIZES);
    assert_eq!(f.values.len(), split.train.n * 5);
    assert_eq!(f.classes.len(), split.train.n * 5);
    for i in 0..split.train.n {
        let c = f.classes_of(i);
        let v = f.values_of(i);
        for k in 0..5 {
            assert!((c[k] as usize) < FACTOR_SIZES[k]);
        }
        assert_eq!(v[0], c[0] as f32);
        assert!((v[1] - (0.5 + 0.1 * c[1] as f32)).abs() < 1e-6);
        assert!((0.5..=1.0).contains(&v[1]));
        assert!((v[2] - c[2] as f32 * std::f32::consts::TAU / 39.0).abs() < 1e-5);
        assert!((0.0..=std::f32::consts::TAU + 1e-6).contains(&v[2]));
        assert!((v[3] - c[3] as f32 / 31.0).abs() < 1e-6);
        assert!((v[4] - c[4] as f32 / 31.0).abs() < 1e-6);
        assert!((0.0..=1.0).contains(&v[3]) && (0.0..=1.0).contains(&v[4]));
    }
    // Extremes of the value ranges are hit exactly.
    assert_eq!(sprites::scale_value(5), 1.0);
    assert_eq!(sprites::orientation_value(39), std::f64::consts::TAU);
    assert_eq!(sprites::position_value(31), 1.0);
}

#[test]
fn combination_encoding() {
    assert_eq!(N_COMBINATIONS, 737_280);
    assert_eq!(combination(0), [0; 5]);
    assert_eq!(combination(32), [0, 0, 0, 1, 0]);
    assert_eq!(combination(N_COMBINATIONS - 1), [2, 5, 39, 31, 31]);
    for k in (0..N_COMBINATIONS).step_by(997) {
        assert_eq!(combination_index(combination(k)), k);
    }
}

#[test]
fn too_many_examples_is_an_error() {
    let e = generate(&SpritesConfig {
        n_train: N_COMBINATIONS,
        n_test: 1,
        seed: 0,
    })
    .unwrap_err();
    assert!(matches!(e, DataError::Config { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("737280") && msg.contains("n_train + n_test"),
        "{msg}"
    );
    let e = select(&SpritesConfig {
        n_train: usize::MAX,
        n_test: 2,
        seed: 0,
    })
    .unwrap_err();
    assert!(matches!(e, DataError::Config { .. }), "{e}");
    // Exactly all combinations: a permutation.
    let mut all = select(&SpritesConfig {
        n_train: N_COMBINATIONS - 10,
        n_test: 10,
        seed: 9,
    })
    .unwrap();
    all.sort_unstable();
    assert!(all.iter().enumerate().all(|(i, &k)| i == k));
}

#[test]
fn largest_shapes_stay_inside_the_frame() {
    for shape in 0..3 {
        for orient in 0..40 {
            for x in [0, 31] {
                for y in [0, 31] {
                    let img = render(shape, 5, orient, x, y);
                    assert!(foreground(&img) > 0);
                    assert!(
                        !touches_border(&img),
                        "shape {shape} orientation {orient} at ({x}, {y}) touches the border"
                    );
                }
            }
        }
    }
}

#[test]
fn orientation_rotates_the_ellipse() {
    let flat = render(1, 5, 0, 16, 16);
    let quarter = render(1, 5, 10, 16, 16); // 10/39 of a turn, about 92 degrees
    assert_ne!(flat, quarter);
    // At angle 0 the long axis is horizontal, near 90 degrees vertical.
    let extent = |img: &[u8], horizontal: bool| {
        let coords: Vec<usize> = (0..SIZE * SIZE)
            .filter(|&i| img[i] == 255)
            .map(|i| if horizontal { i % SIZE } else { i / SIZE })
            .collect();
        coords.iter().max().unwrap() - coords.iter().min().unwrap() + 1
    };
    assert!(extent(&flat, true) > extent(&flat, false) + 5);
    assert!(extent(&quarter, false) > extent(&quarter, true) + 5);
    // Orientations 0 and 2 pi are the same picture up to rounding at the edge.
    let full = render(1, 5, 39, 16, 16);
    let differing = flat.iter().zip(&full).filter(|(a, b)| a != b).count();
    assert!(differing <= 2, "{differing} pixels differ");
}

#[test]
fn shapes_differ_and_have_the_expected_area() {
    let imgs: Vec<Vec<u8>> = (0..3).map(|s| render(s, 5, 3, 10, 20)).collect();
    assert_ne!(imgs[0], imgs[1]);
    assert_ne!(imgs[0], imgs[2]);
    assert_ne!(imgs[1], imgs[2]);
    // Areas at scale 1 (r = 9.5 px): square 2 r^2, ellipse pi r^2 / 2, heart ~2.31 r^2.
    let r2 = 9.5f64 * 9.5;
    for (shape, area) in [
        (0, 2.0 * r2),
        (1, std::f64::consts::PI * r2 / 2.0),
        (2, 2.307 * r2),
    ] {
        let got = foreground(&render(shape, 5, 0, 16, 16)) as f64;
        assert!(
            (got - area).abs() < 0.1 * area,
            "shape {shape}: {got} px, expected about {area:.0}"
        );
    }
}

#[test]
fn scale_and_position_move_the_shape() {
    for shape in 0..3 {
        let sizes: Vec<usize> = (0..6)
            .map(|s| foreground(&render(shape, s, 0, 16, 16)))
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{shape}: {sizes:?}");
        let (r0, c0) = centroid(&render(shape, 3, 7, 0, 0));
        let (r1, c1) = centroid(&render(shape, 3, 7, 31, 0));
        let (r2, c2) = centroid(&render(shape, 3, 7, 0, 31));
        // pos_x moves right by 42 px, pos_y moves down by 42 px.
        assert!((c1 - c0 - 42.0).abs() < 1.0 && (r1 - r0).abs() < 1.0);
        assert!((r2 - r0 - 42.0).abs() < 1.0 && (c2 - c0).abs() < 1.0);
    }
    // The heart points down: more of it lies above its bounding circle's centre.
    let heart = render(2, 5, 0, 16, 16);
    let center_row = 11.0 + 42.0 * 16.0 / 31.0;
    let above = (0..SIZE * SIZE)
        .filter(|&i| heart[i] == 255 && ((i / SIZE) as f64) + 0.5 < center_row)
        .count();
    assert!(above * 2 > foreground(&heart));
}
