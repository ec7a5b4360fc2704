//! The factor probe: known answers on synthetic codes, the real sprites factors as an oracle
//! code, determinism, degenerate codes and bad input.

use std::time::Instant;

use wgvae::data::Factors;
use wgvae::data::sprites::{self, SpritesConfig, combination, factor_values, select};
use wgvae::probe::{ProbeReport, probe};
use wgvae::rng::HostRng;

/// Factors of `n` distinct sprites combinations (no rendering), as `generate` would give them.
fn sprite_factors(n: usize, seed: u64) -> Factors {
    let idx = select(&SpritesConfig {
        n_train: 0,
        n_test: n,
        seed,
    })
    .unwrap();
    let mut values = Vec::new();
    let mut classes = Vec::new();
    for &k in &idx {
        let c = combination(k);
        values.extend_from_slice(&factor_values(c));
        classes.extend(c.iter().map(|&v| v as u32));
    }
    Factors {
        names: sprites::FACTOR_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        sizes: sprites::FACTOR_SIZES.to_vec(),
        values,
        classes,
    }
}

/// Column of factor `name` in `f`.
fn col(f: &Factors, name: &str) -> usize {
    f.names.iter().position(|n| n == name).unwrap()
}

/// `(n, dims)` codes, row `i` = `code(factor values of i, class indices of i, rng)`.
fn codes(
    f: &Factors,
    dims: usize,
    seed: u64,
    code: impl Fn(&[f32], &[u32], &mut HostRng) -> Vec<f64>,
) -> Vec<f32> {
    let n = f.values.len() / f.n_factors();
    let mut rng = HostRng::new(seed);
    let mut out = Vec::with_capacity(n * dims);
    for i in 0..n {
        let row = code(f.values_of(i), f.classes_of(i), &mut rng);
        assert_eq!(row.len(), dims);
        out.extend(row.iter().map(|&v| v as f32));
    }
    out
}

fn r2(r: &ProbeReport, name: &str) -> (f64, f64) {
    let p = r
        .get(name)
        .unwrap_or_else(|| panic!("no target {name} in {r:?}"));
    (p.linear, p.knn)
}

fn assert_all_finite(r: &ProbeReport) {
    for p in &r.factors {
        assert!(p.linear.is_finite() && p.knn.is_finite(), "{p:?}");
    }
    if let Some(s) = &r.shape {
        assert!(s.logistic.is_finite() && s.knn.is_finite() && s.chance.is_finite());
    }
}

const CONTINUOUS: [&str; 3] = ["pos_x", "pos_y", "scale"];

#[test]
fn invertible_linear_code_is_read_linearly() {
    let f = sprite_factors(1000, 1);
    let (x, y, s, o) = (
        col(&f, "pos_x"),
        col(&f, "pos_y"),
        col(&f, "scale"),
        col(&f, "orientation"),
    );
    // A fixed invertible mixing (unit diagonal plus a strictly lower triangle) of
    // [x, y, scale, cos θ, sin θ], plus noise of std 1e-3.
    let mix = [
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [0.7, 1.0, 0.0, 0.0, 0.0],
        [-0.4, 0.9, 1.0, 0.0, 0.0],
        [0.3, -0.8, 0.5, 1.0, 0.0],
        [0.6, 0.2, -0.9, 0.4, 1.0],
    ];
    let mu = codes(&f, 5, 2, |v, _, rng| {
        let t = f64::from(v[o]);
        let g = [
            f64::from(v[x]),
            f64::from(v[y]),
            f64::from(v[s]),
            t.cos(),
            t.sin(),
        ];
        mix.iter()
            .map(|m| m.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() + 1e-3 * rng.normal())
            .collect()
    });
    let r = probe(&mu, 5, &f, 7).unwrap();
    println!("linear code: {r}");
    assert_all_finite(&r);
    assert_eq!((r.n, r.n_fit, r.n_score, r.k), (1000, 500, 500, 5));
    for name in CONTINUOUS
        .iter()
        .chain(&["orientation_cos1", "orientation_sin1"])
    {
        let (lin, _) = r2(&r, name);
        assert!(lin >= 0.99, "{name}: linear R² {lin}\n{r}");
    }
    // cos 2θ = cos²θ − sin²θ is not linear in (cos θ, sin θ) but a smooth function of the code.
    // 5 neighbours among 500 points in 5 dimensions, three of them other factors, read it only
    // roughly (0.79-0.84 over split seeds 0-7), but far better than a line.
    let (lin, knn) = r2(&r, "orientation_cos2");
    assert!(lin < 0.3, "cos 2θ linear R² {lin}\n{r}");
    assert!(knn > 0.7 && knn > lin + 0.5, "cos 2θ 5-NN R² {knn}\n{r}");
}

#[test]
fn nonlinear_code_is_read_by_knn_not_linearly() {
    let f = sprite_factors(1000, 3);
    let (x, y) = (col(&f, "pos_x"), col(&f, "pos_y"));
    // Each position on its own 315° arc of the unit circle: injective, smooth, constant speed,
    // far from linear; nothing else is coded.
    let arc = |v: f32| {
        let a = 1.75 * std::f64::consts::PI * f64::from(v);
        [a.cos(), a.sin()]
    };
    let mu = codes(&f, 4, 4, |v, _, _| {
        let (a, b) = (arc(v[x]), arc(v[y]));
        vec![a[0], a[1], b[0], b[1]]
    });
    let r = probe(&mu, 4, &f, 7).unwrap();
    println!("arc code: {r}");
    assert_all_finite(&r);
    for name in ["pos_x", "pos_y"] {
        let (lin, knn) = r2(&r, name);
        assert!(knn >= 0.95, "{name}: 5-NN R² {knn}\n{r}");
        assert!(
            lin <= 0.85 && lin < knn - 0.15,
            "{name}: linear R² {lin}\n{r}"
        );
        assert_eq!(r.best_r2(name), Some(knn));
    }
    // Scale and orientation are independent of the code.
    for name in [
        "scale",
        "orientation_cos1",
        "orientation_sin1",
        "orientation_cos4",
    ] {
        let (lin, knn) = r2(&r, name);
        assert!(lin <= 0.05 && knn <= 0.05, "{name}: {lin} / {knn}\n{r}");
    }
    assert!(r.best_r2("orientation").unwrap() <= 0.05, "{r}");
}

#[test]
fn code_of_four_fold_angle_is_read_at_harmonic_four_only() {
    // A square repeats every 90°: a code that knows θ only modulo 90° holds (cos 4θ, sin 4θ).
    let f = sprite_factors(1000, 5);
    let o = col(&f, "orientation");
    let mu = codes(&f, 2, 6, |v, _, _| {
        let t = 4.0 * f64::from(v[o]);
        vec![t.cos(), t.sin()]
    });
    let r = probe(&mu, 2, &f, 11).unwrap();
    println!("4θ code: {r}");
    let (l4, k4) = r.angle_r2("orientation", 4).unwrap();
    assert!(l4 >= 0.99 && k4 >= 0.95, "4θ: {l4} / {k4}\n{r}");
    // Linearly, nothing of θ itself is there. (The k-NN probe can still read θ: the 40 grid
    // angles, steps of 2π/39, stay distinct modulo 90°, so equal codes mean equal angles.)
    let (l1, _) = r.angle_r2("orientation", 1).unwrap();
    let (l2, _) = r.angle_r2("orientation", 2).unwrap();
    assert!(l1 <= 0.05 && l2 <= 0.05, "1θ: {l1}, 2θ: {l2}\n{r}");
    assert!(r.best_r2("orientation").unwrap() >= 0.99);
}

#[test]
fn shape_clusters_are_classified_and_absent_shape_is_at_chance() {
    let f = sprite_factors(1000, 7);
    let x = col(&f, "pos_x");
    let sh = col(&f, "shape");
    // Shape as separated clusters (centres 2√2 apart, noise std 0.3) plus pos_x.
    let mu = codes(&f, 4, 8, |v, c, rng| {
        let mut row: Vec<f64> = (0..3)
            .map(|k| 2.0 * f64::from(c[sh] == k) + 0.3 * rng.normal())
            .collect();
        row.push(f64::from(v[x]));
        row
    });
    let r = probe(&mu, 4, &f, 9).unwrap();
    println!("shape clusters: {r}");
    let s = r.shape.as_ref().unwrap();
    assert_eq!(s.n_classes, 3);
    assert!(s.logistic >= 0.98 && s.knn >= 0.98, "{s:?}");
    assert!(s.chance > 0.3 && s.chance < 0.4, "{s:?}");
    assert!(r.best_shape_accuracy().unwrap() >= 0.98);

    // The shape is not in the code: accuracy within a tolerance of chance.
    let mu = codes(&f, 4, 10, |v, _, rng| {
        vec![rng.normal(), rng.normal(), rng.normal(), f64::from(v[x])]
    });
    let r = probe(&mu, 4, &f, 9).unwrap();
    println!("shape absent: {r}");
    let s = r.shape.as_ref().unwrap();
    for acc in [s.logistic, s.knn] {
        assert!(
            acc <= s.chance + 0.05 && acc >= 1.0 / 3.0 - 0.08,
            "accuracy {acc} vs chance {}: {s:?}",
            s.chance
        );
    }
    assert!(r2(&r, "pos_x").0 >= 0.99);
}

#[test]
fn sprites_oracle_code_and_noise_code() {
    let split = sprites::generate(&SpritesConfig {
        n_train: 0,
        n_test: 600,
        seed: 21,
    })
    .unwrap();
    let f = split.test.factors.as_ref().unwrap();
    assert_eq!(split.test.n, 600);
    let (x, y, s, o, sh) = (
        col(f, "pos_x"),
        col(f, "pos_y"),
        col(f, "scale"),
        col(f, "orientation"),
        col(f, "shape"),
    );
    // The oracle: the factor values themselves, angle as (cos, sin), shape one-hot.
    let mu = codes(f, 8, 0, |v, c, _| {
        let t = f64::from(v[o]);
        let mut row = vec![
            f64::from(v[x]),
            f64::from(v[y]),
            f64::from(v[s]),
            t.cos(),
            t.sin(),
        ];
        row.extend((0..3).map(|k| f64::from(c[sh] == k)));
        row
    });
    let r = probe(&mu, 8, f, 3).unwrap();
    println!("oracle code: {r}");
    assert_all_finite(&r);
    assert_eq!((r.n_fit, r.n_score), (300, 300));
    for name in CONTINUOUS {
        let (lin, _) = r2(&r, name);
        assert!(lin >= 0.99, "{name}: linear R² {lin}\n{r}");
        assert!(r.best_r2(name).unwrap() >= 0.99);
    }
    for name in ["orientation_cos1", "orientation_sin1"] {
        assert!(r2(&r, name).0 >= 0.99, "{name}\n{r}");
    }
    let shape = r.shape.as_ref().unwrap();
    assert!(shape.logistic >= 0.99 && shape.knn >= 0.9, "{shape:?}");
    let line = r.to_string();
    assert!(
        line.contains("x R² 1.00/")
            && line.contains("scale 1.00/")
            && line.contains("shape acc 1.00/"),
        "{line}"
    );

    // Pure noise: nothing is readable.
    let noise = codes(f, 10, 1, |_, _, rng| {
        (0..10).map(|_| rng.normal()).collect()
    });
    let r = probe(&noise, 10, f, 3).unwrap();
    println!("noise code: {r}");
    assert_all_finite(&r);
    for p in &r.factors {
        assert!(p.linear <= 0.05 && p.knn <= 0.05, "{p:?}\n{r}");
        // Near zero, not wildly negative either.
        assert!(p.linear >= -0.25 && p.knn >= -0.5, "{p:?}\n{r}");
    }
    let shape = r.shape.as_ref().unwrap();
    assert!(
        shape.logistic <= shape.chance + 0.08 && shape.knn <= shape.chance + 0.08,
        "{shape:?}"
    );
}

#[test]
fn same_seed_same_report_other_seed_other_split() {
    let f = sprite_factors(400, 12);
    let mu = codes(&f, 6, 13, |v, _, rng| {
        (0..6)
            .map(|d| f64::from(v[d % 5]) + 0.5 * rng.normal())
            .collect()
    });
    let a = probe(&mu, 6, &f, 42).unwrap();
    let b = probe(&mu, 6, &f, 42).unwrap();
    assert_eq!(a, b);
    let c = probe(&mu, 6, &f, 43).unwrap();
    assert_ne!(a, c);
    // f64 codes with the same values give the same report.
    let mu64: Vec<f64> = mu.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(probe(&mu64, 6, &f, 42).unwrap(), a);
    // JSON round trip (what metrics.jsonl holds).
    let json = serde_json::to_string(&a).unwrap();
    let back: ProbeReport = serde_json::from_str(&json).unwrap();
    // (Decimal text reads back to within an ulp or so.)
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12;
    assert_eq!(
        (back.n, back.n_fit, back.n_score, back.k),
        (a.n, a.n_fit, a.n_score, a.k)
    );
    assert_eq!(back.factors.len(), a.factors.len());
    for (p, q) in back.factors.iter().zip(&a.factors) {
        assert_eq!(
            (&p.name, &p.factor, p.kind, p.harmonic),
            (&q.name, &q.factor, q.kind, q.harmonic)
        );
        assert!(
            close(p.linear, q.linear) && close(p.knn, q.knn),
            "{p:?} vs {q:?}"
        );
    }
    let (p, q) = (back.shape.unwrap(), a.shape.clone().unwrap());
    assert!(close(p.logistic, q.logistic) && close(p.knn, q.knn) && close(p.chance, q.chance));
    assert!(json.contains("\"orientation_cos4\"") && json.contains("\"shape\""));
}

#[test]
fn degenerate_codes_give_finite_non_positive_scores() {
    let f = sprite_factors(300, 14);
    // Every dimension constant.
    let r = probe(&vec![0.25f32; 300 * 3], 3, &f, 1).unwrap();
    assert_all_finite(&r);
    assert_eq!(r.constant_dims, 3);
    for p in &r.factors {
        assert!(p.linear <= 0.0 && p.knn <= 0.0, "{p:?}");
    }
    // Collinear columns (x, 2x, x, constant) and a huge scale: still exact, never NaN.
    let x = col(&f, "pos_x");
    let mu = codes(&f, 5, 0, |v, _, _| {
        let a = f64::from(v[x]);
        vec![a, 2.0 * a, a, 7.0, 1e30 * a]
    });
    let r = probe(&mu, 5, &f, 1).unwrap();
    assert_all_finite(&r);
    assert_eq!(r.constant_dims, 1);
    assert!(r2(&r, "pos_x").0 >= 0.999, "{r}");
    assert!(r2(&r, "pos_y").0 <= 0.05, "{r}");
}

#[test]
fn bad_input_is_an_error_naming_the_sizes() {
    let f = sprite_factors(10, 15);
    let err = probe(&[0.0f32; 29], 3, &f, 0).unwrap_err().to_string();
    assert!(
        err.contains("29") && err.contains("10 rows") && err.contains("30"),
        "{err}"
    );
    let err = probe(&[0.0f32; 0], 0, &f, 0).unwrap_err().to_string();
    assert!(err.contains("0 dimensions"), "{err}");
    let small = sprite_factors(3, 15);
    let err = probe(&[0.0f32; 6], 2, &small, 0).unwrap_err().to_string();
    assert!(
        err.contains("3 rows") && err.contains("at least 4"),
        "{err}"
    );
    let mut mu = vec![0.0f32; 20];
    mu[13] = f32::NAN;
    let err = probe(&mu, 2, &f, 0).unwrap_err().to_string();
    assert!(err.contains("μ[6, 1]"), "{err}");
    let mut bad = f.clone();
    bad.classes[5 * 5] = 3; // row 5, shape
    let err = probe(&[0.0f32; 20], 2, &bad, 0).unwrap_err().to_string();
    assert!(err.contains("class 3") && err.contains("0..3"), "{err}");
    let mut bad = f.clone();
    bad.values.pop();
    let err = probe(&[0.0f32; 20], 2, &bad, 0).unwrap_err().to_string();
    assert!(err.contains("49 values"), "{err}");
}

#[test]
fn thousand_rows_of_twenty_dims_is_fast() {
    let f = sprite_factors(1000, 16);
    let mu = codes(&f, 20, 17, |v, _, rng| {
        (0..20)
            .map(|d| f64::from(v[d % 5]) + rng.normal())
            .collect()
    });
    let t = Instant::now();
    let r = probe(&mu, 20, &f, 0).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("probe n=1000 D=20: {:.1} ms\n{r}", secs * 1e3);
    assert_all_finite(&r);
    assert!(secs < 2.0, "{secs} s");
}

#[test]
fn large_sets_are_subsampled_to_max_rows() {
    let n = wgvae::probe::MAX_ROWS + 1;
    let f = sprite_factors(n, 18);
    let x = col(&f, "pos_x");
    let mu = codes(&f, 1, 0, |v, _, _| vec![f64::from(v[x])]);
    let t = Instant::now();
    let r = probe(&mu, 1, &f, 5).unwrap();
    println!("probe n={n} D=1: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    assert_eq!(r.n, n);
    assert_eq!(r.n_fit + r.n_score, wgvae::probe::MAX_ROWS);
    assert_eq!(r.n_fit, r.n_score);
    assert!(r2(&r, "pos_x").0 >= 0.999, "{r}");
}
