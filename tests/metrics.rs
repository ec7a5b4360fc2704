//! Disentanglement metrics: the pieces against hand-computed values, and golden tests on a toy
//! ground truth of ten independent factors of ten values each, as the reference tests itself —
//! the identity representation scores high on every metric, an all-zero one low, a duplicated
//! one has no MIG gap — and `wgvae metrics` end to end, with bad inputs named.

use std::path::{Path, PathBuf};
use std::process::Command;

use wgvae::Result;
use wgvae::data::npy::{write_npy_f32, write_npy_i64};
use wgvae::metrics::{
    self, BetaVaeConfig, Encoder, FactorVaeConfig, GbtConfig, LogisticRegression, Matrix,
    UniformFactors, beta_vae_score, completeness, dci, disentanglement, entropy, factor_vae_score,
    histogram_discretize, mig, mutual_information, sample_codes, sap, split_rows,
};
use wgvae::rng::HostRng;

const LN2: f64 = std::f64::consts::LN_2;

fn toy() -> UniformFactors {
    UniformFactors::new(vec![10; 10]).unwrap()
}

fn identity(t: &[Vec<usize>]) -> Result<Vec<Vec<f64>>> {
    Ok(t.iter()
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect())
}

fn zero(t: &[Vec<usize>]) -> Result<Vec<Vec<f64>>> {
    Ok(t.iter().map(|r| vec![0.0; r.len()]).collect())
}

fn duplicated(t: &[Vec<usize>]) -> Result<Vec<Vec<f64>>> {
    Ok(t.iter()
        .map(|r| r.iter().chain(r).map(|&v| v as f64).collect())
        .collect())
}

/// Codes and factors of `n` toy points through `encode`.
fn sample(encode: &mut Encoder<'_>, n: usize, seed: u64) -> (Matrix<f64>, Matrix<u64>) {
    sample_codes(&toy(), encode, n, seed, 4096).unwrap()
}

fn m(rows: &[&[f64]]) -> Matrix<f64> {
    let v: Vec<Vec<f64>> = rows.iter().map(|r| r.to_vec()).collect();
    Matrix::from_rows(&v, rows[0].len()).unwrap()
}

fn diag5() -> Vec<Vec<f64>> {
    (0..5)
        .map(|i| (0..5).map(|j| if i == j { 5.0 } else { 0.0 }).collect())
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

// ---- Pieces --------------------------------------------------------------------------------

#[test]
fn histogram_discretisation_matches_numpy() {
    // digitize(x, histogram(x, 3)[1][:-1]) of the reference's own test.
    let up = histogram_discretize(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3);
    assert_eq!(up, vec![1, 1, 2, 2, 3, 3]);
    let down = histogram_discretize(&[0.6, 0.5, 0.4, 0.3, 0.2, 0.1], 3);
    assert_eq!(down, vec![3, 3, 2, 2, 1, 1]);
    // Edges 0, 2.5, 5, 7.5 of [0, 10] in 4 bins: a value on an edge goes to the bin it opens,
    // the maximum to the last bin.
    let b = histogram_discretize(&[0.0, 2.5, 2.4, 5.0, 7.5, 10.0, 9.99], 4);
    assert_eq!(b, vec![1, 2, 1, 3, 4, 4, 4]);
    // Ten integer values in 20 bins: each its own bin.
    let ten: Vec<f64> = (0..10).map(f64::from).collect();
    let d = histogram_discretize(&ten, 20);
    let mut u = d.clone();
    u.dedup();
    assert_eq!(u.len(), 10, "{d:?}");
    // A constant code: range v ± 0.5, every value in the middle bin.
    assert_eq!(histogram_discretize(&[3.0; 4], 20), vec![11; 4]);
}

#[test]
fn entropy_and_mutual_information_by_hand() {
    assert!(close(entropy(&[1, 1, 2, 2, 3, 3]), 3f64.ln(), 1e-12));
    assert_eq!(entropy(&[7, 7, 7]), 0.0);
    // p = (1/4, 3/4): −¼ln¼ − ¾ln¾.
    let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert!(close(entropy(&[5, 9, 9, 9]), h, 1e-12));
    // The reference's test: identical and independent pairs.
    assert!(close(
        mutual_information(&[1, 2, 1, 2], &[1, 2, 1, 2]),
        LN2,
        1e-12
    ));
    assert!(mutual_information(&[1, 2, 1, 2], &[2, 2, 1, 1]).abs() < 1e-12);
    assert!(close(
        mutual_information(&[1, 1, 2, 2], &[2, 2, 1, 1]),
        LN2,
        1e-12
    ));
    // a = (0,0,1,1), b = (0,1,1,1): p(0,0) = p(0,1) = ¼, p(1,1) = ½; p(a) = (½,½), p(b) = (¼,¾):
    // I = ¼ln(¼/⅛) + ¼ln(¼/(3/8)) + ½ln(½/(3/8)).
    let want = 0.25 * 2f64.ln() + 0.25 * (2.0f64 / 3.0).ln() + 0.5 * (4.0f64 / 3.0).ln();
    let got = mutual_information(&[0, 0, 1, 1], &[0, 1, 1, 1]);
    assert!(close(got, want, 1e-12), "{got} vs {want}");
    // Symmetric, and label values do not matter.
    assert!(close(
        mutual_information(&[0, 1, 1, 1], &[0, 0, 1, 1]),
        want,
        1e-12
    ));
    assert!(close(
        mutual_information(&[40, 40, 3, 3], &[9, 1, 1, 1]),
        want,
        1e-12
    ));
}

#[test]
fn split_is_seeded_disjoint_and_covers_the_rows() {
    let (train, test) = split_rows(100, 0.9, 3).unwrap();
    assert_eq!((train.len(), test.len()), (90, 10));
    let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(split_rows(100, 0.9, 3).unwrap(), (train.clone(), test));
    assert_ne!(split_rows(100, 0.9, 4).unwrap().0, train);
    // ceil(n·fraction), at least one row each side.
    assert_eq!(split_rows(10, 2.0 / 3.0, 0).unwrap().0.len(), 7);
    assert_eq!(split_rows(2, 0.99, 0).unwrap().0.len(), 1);
    assert!(split_rows(1, 0.5, 0).is_err());
    assert!(split_rows(10, 1.0, 0).is_err());
    assert!(split_rows(10, f64::NAN, 0).is_err());
}

/// The reference's tests of the DCI scores of given importance matrices.
#[test]
fn dci_scores_of_importance_matrices() {
    let d = Matrix::from_rows(&diag5(), 5).unwrap();
    assert!(close(disentanglement(&d), 1.0, 1e-9));
    assert!(close(completeness(&d), 1.0, 1e-9));
    // Codes that matter for nothing do not count.
    let empty = m(&[&[1.0, 0.0], &[0.0, 1.0], &[0.0, 0.0]]);
    assert!(close(disentanglement(&empty), 1.0, 1e-9));
    assert!(close(completeness(&empty), 1.0, 1e-9));
    let z = Matrix::new(10, 10, vec![0.0; 100]).unwrap();
    assert_eq!(disentanglement(&z), 0.0);
    assert_eq!(completeness(&z), 0.0);
    let target = 1.0 - LN2 / 10f64.ln();
    // Redundant codes: each factor spread over two codes.
    let mut rows = diag5();
    rows.extend(diag5());
    let redundant = Matrix::from_rows(&rows, 5).unwrap();
    assert!(close(disentanglement(&redundant), 1.0, 1e-9));
    assert!(close(completeness(&redundant), target, 1e-9));
    // Missed factors.
    let missed = Matrix::from_rows(&diag5()[..2], 5).unwrap();
    assert!(close(disentanglement(&missed), 1.0, 1e-9));
    assert!(close(completeness(&missed), 1.0, 1e-9));
    // One code for two factors: 5 codes, 10 factors.
    let two: Vec<Vec<f64>> = diag5()
        .into_iter()
        .map(|r| r.iter().chain(&r).copied().collect())
        .collect();
    let two = Matrix::from_rows(&two, 10).unwrap();
    assert!(close(disentanglement(&two), target, 1e-9));
    assert!(close(completeness(&two), 1.0, 1e-9));
    // Only code 0 covers two factors (9 codes, 10 factors): it carries 2/10 of the importance.
    let mut nine = vec![vec![0.0; 10]; 9];
    nine[0][0] = 1.0;
    nine[0][1] = 1.0;
    for (i, row) in nine.iter_mut().enumerate().skip(1) {
        row[i + 1] = 1.0;
    }
    let nine = Matrix::from_rows(&nine, 10).unwrap();
    assert!(close(disentanglement(&nine), 0.8 + 0.2 * target, 1e-9));
}

#[test]
fn logistic_regression_separates_a_separable_toy() {
    // Three blobs in 2-D, one far-scaled feature: perfectly separable.
    let mut rng = HostRng::new(5);
    let centres = [(0.0, 0.0), (4.0, 0.0), (0.0, 4.0)];
    let mut draw = |n: usize| {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = i % 3;
            let (x, y) = centres[c];
            rows.push(vec![
                1000.0 * (x + 0.3 * rng.normal()),
                y + 0.3 * rng.normal(),
            ]);
            labels.push(c);
        }
        (Matrix::from_rows(&rows, 2).unwrap(), labels)
    };
    let (x, y) = draw(150);
    let model = LogisticRegression::fit(&x, &y, 3, 1.0, 1000).unwrap();
    assert_eq!(model.accuracy(&x, &y), 1.0);
    let (xt, yt) = draw(300);
    assert_eq!(model.accuracy(&xt, &yt), 1.0);
    // A fourth class never seen is never predicted; bad inputs are errors.
    let model4 = LogisticRegression::fit(&x, &y, 4, 1.0, 1000).unwrap();
    assert!((0..xt.rows()).all(|i| model4.predict(xt.row(i)) < 3));
    assert!(LogisticRegression::fit(&x, &y, 2, 1.0, 10).is_err());
    assert!(LogisticRegression::fit(&x, &y[1..], 3, 1.0, 10).is_err());
    assert!(LogisticRegression::fit(&x, &y, 3, 0.0, 10).is_err());
}

#[test]
fn boosted_trees_read_a_factor_from_its_code() {
    // y = floor(3·x₀), x₁ noise: the trees split on x₀ only where it matters.
    let mut rng = HostRng::new(9);
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for _ in 0..300 {
        let x0 = rng.uniform();
        rows.push(vec![x0, rng.uniform()]);
        y.push((3.0 * x0) as u64 + 10);
    }
    let x = Matrix::from_rows(&rows, 2).unwrap();
    let cfg = GbtConfig {
        rounds: 20,
        ..GbtConfig::default()
    };
    let model = metrics::dci::GbtClassifier::fit(&x, &y, &cfg).unwrap();
    let hits = (0..300)
        .filter(|&i| model.predict(x.row(i)) == y[i])
        .count();
    assert_eq!(hits, 300);
    let imp = model.feature_importances();
    assert!(close(imp[0] + imp[1], 1.0, 1e-12));
    assert!(imp[0] > 0.99, "{imp:?}");
    let rows: Vec<u64> = (0..300).map(|i| model.predict(x.row(i))).collect();
    assert_eq!(model.predict_rows(&x), rows);
    assert_eq!(model.predict(&[0.1, 0.5]), 10);
    assert_eq!(model.predict(&[0.9, 0.5]), 12);
}

// ---- Golden tests on the toy ground truth ------------------------------------------------------

#[test]
fn mig_golden() {
    let (c, f) = sample(&mut identity, 3000, 0);
    let good = mig(&c, &f, 20).unwrap().score;
    let (c, f) = sample(&mut zero, 3000, 0);
    let bad = mig(&c, &f, 20).unwrap().score;
    let (c, f) = sample(&mut duplicated, 3000, 0);
    let dup = mig(&c, &f, 20).unwrap();
    eprintln!(
        "MIG: identity {good:.4}, zero {bad:.4}, duplicated {:.4}",
        dup.score
    );
    assert!((0.9..=1.0).contains(&good), "{good}");
    assert!((0.0..=0.2).contains(&bad), "{bad}");
    assert!((0.0..=0.1).contains(&dup.score), "{}", dup.score);
    assert_eq!(dup.mutual_info.len(), 20);
    // A constant factor has no gap and is left out; all constant is an error.
    let c = Matrix::new(4, 1, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    let f = Matrix::new(4, 2, vec![0, 5, 1, 5, 2, 5, 3, 5]).unwrap();
    let s = mig(&c, &f, 20).unwrap();
    assert_eq!(s.per_factor[1], None);
    assert!(close(s.score, 1.0, 1e-12));
    let f = Matrix::new(4, 1, vec![5; 4]).unwrap();
    assert!(mig(&c, &f, 20).is_err());
}

fn dci_of(encode: &mut Encoder<'_>) -> metrics::DciScore {
    let (c, f) = sample(encode, 1000, 1);
    let (ct, ft) = sample(encode, 1000, 2);
    dci(&c, &f, &ct, &ft, &GbtConfig::default()).unwrap()
}

#[test]
fn dci_golden() {
    let good = dci_of(&mut identity);
    let bad = dci_of(&mut zero);
    let dup = dci_of(&mut duplicated);
    let show = |s: &metrics::DciScore| {
        format!(
            "D {:.4} C {:.4} I {:.4} (train {:.4})",
            s.disentanglement, s.completeness, s.informativeness_test, s.informativeness_train
        )
    };
    eprintln!(
        "DCI: identity {}; zero {}; duplicated {}",
        show(&good),
        show(&bad),
        show(&dup)
    );
    for v in [
        good.disentanglement,
        good.completeness,
        good.informativeness_test,
    ] {
        assert!((0.9..=1.0).contains(&v), "{}", show(&good));
    }
    for v in [
        bad.disentanglement,
        bad.completeness,
        bad.informativeness_test,
    ] {
        assert!((0.0..=0.2).contains(&v), "{}", show(&bad));
    }
    // Duplicated codes: each factor shared equally by two of the 20 codes, so completeness is
    // 1 − ln2/ln20 (the reference's test asks for 1 − ln2/ln10 ± 0.1, which this also meets).
    assert!((0.9..=1.0).contains(&dup.disentanglement), "{}", show(&dup));
    assert!(
        close(dup.completeness, 1.0 - LN2 / 20f64.ln(), 0.01),
        "{}",
        show(&dup)
    );
    assert!(
        close(dup.completeness, 1.0 - LN2 / 10f64.ln(), 0.1),
        "{}",
        show(&dup)
    );
}

#[test]
fn dci_one_code_for_two_factors() {
    let target = 1.0 - LN2 / 10f64.ln();
    // Five codes, code k = 10·f_2k + f_2k+1: every code covers two factors.
    let mut pairs = |t: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Ok(t.iter()
            .map(|r| {
                (0..5)
                    .map(|k| (10 * r[2 * k] + r[2 * k + 1]) as f64)
                    .collect()
            })
            .collect())
    };
    let s = dci_of(&mut pairs);
    // Nine codes: code 0 = 10·f0 + f1, codes 1..8 = f2..f9; only code 0 covers two factors and
    // it carries 2/10 of the importance: D = 0.8 + 0.2·target.
    let mut nine = |t: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Ok(t.iter()
            .map(|r| {
                std::iter::once((10 * r[0] + r[1]) as f64)
                    .chain(r[2..].iter().map(|&v| v as f64))
                    .collect()
            })
            .collect())
    };
    let s9 = dci_of(&mut nine);
    eprintln!(
        "DCI one code for two factors: 5 codes D {:.4} C {:.4} I {:.4} (1 − ln2/ln10 = {target:.4}); \
         9 codes D {:.4} C {:.4} I {:.4} (0.8 + 0.2·target = {:.4})",
        s.disentanglement,
        s.completeness,
        s.informativeness_test,
        s9.disentanglement,
        s9.completeness,
        s9.informativeness_test,
        0.8 + 0.2 * target
    );
    // The reference's tolerance for DCI figures of sampled data.
    assert!(close(s.disentanglement, target, 0.1), "{s:?}");
    assert!(s.completeness > 0.9, "{s:?}");
    assert!(
        close(s9.disentanglement, 0.8 + 0.2 * target, 0.05),
        "{s9:?}"
    );
}

#[test]
fn sap_golden() {
    let run = |encode: &mut Encoder<'_>| {
        let (c, f) = sample(encode, 2000, 3);
        let (ct, ft) = sample(encode, 2000, 4);
        sap(&c, &f, &ct, &ft, 20).unwrap()
    };
    let good = run(&mut identity);
    let bad = run(&mut zero);
    let dup = run(&mut duplicated);
    eprintln!(
        "SAP: identity {:.4} (plain accuracies {:.4}), zero {:.4}, duplicated {:.4}",
        good.score, good.score_unadjusted, bad.score, dup.score
    );
    assert!((0.9..=1.0).contains(&good.score), "{}", good.score);
    assert!((0.0..=0.2).contains(&bad.score), "{}", bad.score);
    assert!((0.0..=0.2).contains(&dup.score), "{}", dup.score);
    // Plain accuracy of the perfect code is 1, of an unrelated one about chance (0.1).
    assert_eq!(good.accuracy[3][3], 1.0);
    assert!(good.accuracy[4][3] < 0.2, "{}", good.accuracy[4][3]);
}

#[test]
fn beta_vae_golden() {
    let cfg = BetaVaeConfig {
        batch_size: 5,
        num_train: 500,
        num_eval: 500,
        ..BetaVaeConfig::default()
    };
    let good = beta_vae_score(&toy(), &mut identity, &cfg).unwrap();
    let bad = beta_vae_score(&toy(), &mut zero, &cfg).unwrap();
    eprintln!("BetaVAE: identity {good:?}, zero {bad:?}");
    assert!((0.9..=1.0).contains(&good.train_accuracy), "{good:?}");
    assert!((0.9..=1.0).contains(&good.eval_accuracy), "{good:?}");
    assert!((0.0..=0.2).contains(&bad.eval_accuracy), "{bad:?}");
    // Seeded: the same figures again; another seed draws other points.
    let again = beta_vae_score(&toy(), &mut identity, &cfg).unwrap();
    assert_eq!(again.eval_accuracy, good.eval_accuracy);
}

#[test]
fn factor_vae_golden() {
    let cfg = FactorVaeConfig {
        batch_size: 5,
        num_train: 1000,
        num_eval: 1000,
        num_variance_estimate: 1000,
        ..FactorVaeConfig::default()
    };
    let good = factor_vae_score(&toy(), &mut identity, &cfg).unwrap();
    let bad = factor_vae_score(&toy(), &mut zero, &cfg).unwrap();
    eprintln!(
        "FactorVAE: identity train {:.4} eval {:.4} ({} active); zero train {:.4} eval {:.4} \
         ({} active)",
        good.train_accuracy,
        good.eval_accuracy,
        good.active_dims,
        bad.train_accuracy,
        bad.eval_accuracy,
        bad.active_dims
    );
    assert!((0.9..=1.0).contains(&good.train_accuracy), "{good:?}");
    assert!((0.9..=1.0).contains(&good.eval_accuracy), "{good:?}");
    assert_eq!(good.active_dims, 10);
    assert!((0.0..=0.2).contains(&bad.eval_accuracy), "{bad:?}");
    assert_eq!(bad.active_dims, 0);
    // A collapsed dimension in front: pruned, and the votes go to the dimensions themselves.
    let mut padded = |t: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Ok(t.iter()
            .map(|r| {
                std::iter::once(0.01)
                    .chain(r.iter().map(|&v| v as f64))
                    .collect()
            })
            .collect())
    };
    let p = factor_vae_score(&toy(), &mut padded, &cfg).unwrap();
    assert_eq!(p.active_dims, 10);
    assert!(p.eval_accuracy >= 0.9, "{p:?}");
    for (k, votes) in p.votes.iter().enumerate() {
        assert_eq!(votes[0], 0);
        let best = (0..11).max_by_key(|&d| (votes[d], std::cmp::Reverse(d)));
        assert_eq!(best, Some(k + 1), "{votes:?}");
    }
}

#[test]
fn constant_factors_are_left_out_of_the_means() {
    // The toy with factor 9 fixed at 7: MIG, DCI and SAP leave it out; all fixed is an error.
    let fix = |f: &Matrix<u64>, all: bool| {
        let data = f
            .data()
            .iter()
            .enumerate()
            .map(|(e, &v)| if all || e % 10 == 9 { 7 } else { v })
            .collect();
        Matrix::new(f.rows(), f.cols(), data).unwrap()
    };
    let (c, f) = sample(&mut identity, 300, 5);
    let (ct, ft) = sample(&mut identity, 300, 6);
    let (f1, ft1) = (fix(&f, false), fix(&ft, false));
    let gbt = GbtConfig {
        rounds: 10,
        ..GbtConfig::default()
    };
    let m = mig(&c, &f1, 20).unwrap();
    let d = dci(&c, &f1, &ct, &ft1, &gbt).unwrap();
    let s = sap(&c, &f1, &ct, &ft1, 20).unwrap();
    assert_eq!(m.per_factor[9], None);
    assert_eq!(d.accuracy_per_factor[9], None);
    assert_eq!(s.per_factor[9], None);
    assert!(d.importance.iter().all(|row| row[9] == 0.0));
    let mean9 = |v: &[Option<f64>]| v[..9].iter().map(|x| x.unwrap()).sum::<f64>() / 9.0;
    assert!(close(m.score, mean9(&m.per_factor), 1e-12));
    assert!(close(
        d.informativeness_test,
        mean9(&d.accuracy_per_factor),
        1e-12
    ));
    assert!(close(s.score, mean9(&s.per_factor), 1e-12));
    let (f2, ft2) = (fix(&f, true), fix(&ft, true));
    for e in [
        mig(&c, &f2, 20).unwrap_err(),
        dci(&c, &f2, &ct, &ft2, &gbt).unwrap_err(),
        sap(&c, &f2, &ct, &ft2, 20).unwrap_err(),
    ] {
        assert!(e.to_string().contains("constant"), "{e}");
    }
}

#[test]
fn bad_encoders_and_ground_truths_are_errors() {
    let cfg = BetaVaeConfig {
        batch_size: 2,
        num_train: 4,
        num_eval: 4,
        ..BetaVaeConfig::default()
    };
    let mut short = |t: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Ok(t.iter().skip(1).map(|_| vec![0.0]).collect())
    };
    let e = beta_vae_score(&toy(), &mut short, &cfg).unwrap_err();
    assert!(e.to_string().contains("codes for"), "{e}");
    let mut nan = |t: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Ok(t.iter().map(|_| vec![0.0, f64::NAN]).collect())
    };
    let e = beta_vae_score(&toy(), &mut nan, &cfg).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    let mut ragged = |t: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Ok(t.iter()
            .enumerate()
            .map(|(i, _)| vec![0.0; 1 + i % 2])
            .collect())
    };
    let fcfg = FactorVaeConfig {
        batch_size: 1,
        ..FactorVaeConfig::default()
    };
    assert!(factor_vae_score(&toy(), &mut identity, &fcfg).is_err());
    let fcfg = FactorVaeConfig {
        num_variance_estimate: 10,
        num_train: 2,
        num_eval: 2,
        batch_size: 3,
        ..FactorVaeConfig::default()
    };
    let e = factor_vae_score(&toy(), &mut ragged, &fcfg).unwrap_err();
    assert!(e.to_string().contains("dimensions"), "{e}");
    let mut failing = |_: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        Err(wgvae::Error::Config("encoder down".into()))
    };
    let e = beta_vae_score(&toy(), &mut failing, &cfg).unwrap_err();
    assert!(e.to_string().contains("encoder down"), "{e}");
    assert!(UniformFactors::new(vec![]).is_err());
    assert!(UniformFactors::new(vec![3, 0]).is_err());
    // Array metrics: mismatched rows and non-finite codes.
    let c = Matrix::new(3, 1, vec![0.0, 1.0, f64::INFINITY]).unwrap();
    let f = Matrix::new(3, 1, vec![0, 1, 2]).unwrap();
    let e = mig(&c, &f, 20).unwrap_err();
    assert!(e.to_string().contains("row 2"), "{e}");
    let f2 = Matrix::new(2, 1, vec![0, 1]).unwrap();
    assert!(sap(&c, &f, &c, &f2, 20).is_err());
    assert!(Matrix::new(2, 2, vec![0.0; 3]).is_err());
}

#[test]
fn evaluate_arrays_subsamples_and_is_seeded() {
    let (c, f) = sample(&mut identity, 600, 7);
    let cfg = metrics::ArrayConfig {
        max_rows: 300,
        gbt: GbtConfig {
            rounds: 10,
            ..GbtConfig::default()
        },
        ..metrics::ArrayConfig::default()
    };
    let a = metrics::evaluate_arrays(&c, &f, &cfg).unwrap();
    assert_eq!(
        (a.rows_total, a.rows, a.train_rows, a.test_rows),
        (600, 300, 200, 100)
    );
    let b = metrics::evaluate_arrays(&c, &f, &cfg).unwrap();
    assert_eq!(a.mig.score, b.mig.score);
    assert_eq!(a.dci.disentanglement, b.dci.disentanglement);
    assert_eq!(a.sap.score, b.sap.score);
    assert!(a.mig.score > 0.8 && a.sap.score > 0.8, "{a:?}");
}

// ---- `wgvae metrics` ---------------------------------------------------------------------------

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgvae-metrics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wgvae(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgvae"))
        .arg("metrics")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text)
}

fn os<P: AsRef<std::ffi::OsStr> + ?Sized>(p: &P) -> &std::ffi::OsStr {
    p.as_ref()
}

/// `n` identity rows of `f` factors: latents (f4) and factors (i8).
fn write_identity(dir: &Path, n: usize, f: usize) -> (PathBuf, PathBuf) {
    let mut rng = HostRng::new(11);
    let factors: Vec<i64> = (0..n * f).map(|_| rng.below(10) as i64).collect();
    let latents: Vec<f32> = factors.iter().map(|&v| v as f32).collect();
    let (l, fp) = (dir.join("latents.npy"), dir.join("factors.npy"));
    write_npy_f32(&l, &[n, f], &latents).unwrap();
    write_npy_i64(&fp, &[n, f], &factors).unwrap();
    (l, fp)
}

#[test]
fn cli_prints_and_writes_the_figures() {
    let d = scratch("cli");
    let (l, f) = write_identity(&d, 600, 4);
    let json = d.join("m.json");
    let args = [
        os("--latents"),
        l.as_os_str(),
        os("--factors"),
        f.as_os_str(),
        os("--json"),
        json.as_os_str(),
        os("--dci-rounds"),
        os("30"),
    ];
    let (ok, text) = wgvae(&args);
    assert!(ok, "{text}");
    for line in ["MIG", "DCI disentanglement", "DCI completeness", "SAP"] {
        assert!(text.contains(line), "{text}");
    }
    assert!(text.contains("400 train / 200 test"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let m = &v["metrics"];
    let fig = |p: &str| m.pointer(p).and_then(|x| x.as_f64()).unwrap();
    eprintln!(
        "CLI identity: MIG {:.4} D {:.4} C {:.4} I {:.4} SAP {:.4}",
        fig("/mig/score"),
        fig("/dci/disentanglement"),
        fig("/dci/completeness"),
        fig("/dci/informativeness_test"),
        fig("/sap/score")
    );
    for p in [
        "/mig/score",
        "/dci/disentanglement",
        "/dci/completeness",
        "/dci/informativeness_test",
        "/sap/score",
    ] {
        assert!((0.9..=1.0).contains(&fig(p)), "{p}: {}", fig(p));
    }
    assert_eq!(m["rows"], 600);
    assert_eq!(m["dci"]["importance"].as_array().unwrap().len(), 4);
    // The printed MIG is the JSON's, to the 4 decimals printed.
    assert!(
        text.contains(&format!("{:.4}", fig("/mig/score"))),
        "{text}"
    );
    // An existing file is kept unless --force.
    std::fs::write(&json, "keep").unwrap();
    let (ok, text) = wgvae(&args);
    assert!(
        !ok && text.contains("--force") && text.contains("m.json"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&json).unwrap(), "keep");
    let mut forced = args.to_vec();
    forced.push(os("--force"));
    let (ok, text) = wgvae(&forced);
    assert!(ok, "{text}");
    assert!(std::fs::read_to_string(&json).unwrap().contains("\"mig\""));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn cli_bad_inputs_name_the_file() {
    let d = scratch("bad");
    let (l, f) = write_identity(&d, 20, 2);
    let run = |lat: &Path, fac: &Path| {
        wgvae(&[
            os("--latents"),
            lat.as_os_str(),
            os("--factors"),
            fac.as_os_str(),
            os("--dci-rounds"),
            os("2"),
        ])
    };
    // Sanity: the good pair runs.
    let (ok, text) = run(&l, &f);
    assert!(ok, "{text}");

    // Mismatched N: both files named with their row counts.
    let (l_short, _) = {
        let sub = d.join("short");
        std::fs::create_dir_all(&sub).unwrap();
        write_identity(&sub, 19, 2)
    };
    let (ok, text) = run(&l_short, &f);
    assert!(!ok);
    assert!(
        text.contains("short/latents.npy: 19 rows") && text.contains("factors.npy: 20 rows"),
        "{text}"
    );

    // A 1-D array.
    let one_d = d.join("one_d.npy");
    write_npy_f32(&one_d, &[20], &[0.0; 20]).unwrap();
    let (ok, text) = run(&one_d, &f);
    assert!(
        !ok && text.contains("one_d.npy") && text.contains("`shape`"),
        "{text}"
    );
    assert!(text.contains("2-D"), "{text}");

    // A missing file.
    let (ok, text) = run(&l, &d.join("nope.npy"));
    assert!(
        !ok && text.contains("nope.npy") && text.contains("os error 2"),
        "{text}"
    );

    // NaN in the latents: file, row and column named.
    let mut vals = vec![0.0f32; 40];
    vals[2 * 7 + 1] = f32::NAN;
    let nan = d.join("nan.npy");
    write_npy_f32(&nan, &[20, 2], &vals).unwrap();
    let (ok, text) = run(&nan, &f);
    assert!(
        !ok && text.contains("nan.npy") && text.contains("row 7, column 1") && text.contains("NaN"),
        "{text}"
    );

    // Negative and fractional factors.
    let neg = d.join("neg.npy");
    let mut ints = vec![1i64; 40];
    ints[5] = -3;
    write_npy_i64(&neg, &[20, 2], &ints).unwrap();
    let (ok, text) = run(&l, &neg);
    assert!(
        !ok && text.contains("neg.npy") && text.contains("-3"),
        "{text}"
    );
    let frac = d.join("frac.npy");
    let mut fl = vec![1.0f32; 40];
    fl[0] = 0.5;
    write_npy_f32(&frac, &[20, 2], &fl).unwrap();
    let (ok, text) = run(&l, &frac);
    assert!(
        !ok && text.contains("frac.npy") && text.contains("row 0, column 0"),
        "{text}"
    );
    // Whole-number floats are accepted as factors.
    let whole = d.join("whole.npy");
    write_npy_f32(&whole, &[20, 2], &[2.0; 40]).unwrap();
    let (ok, text) = run(&l, &whole);
    // Every factor is constant: MIG has nothing to measure, and says so.
    assert!(!ok && text.contains("constant"), "{text}");

    // Not a .npy file, and a truncated one.
    let junk = d.join("junk.npy");
    std::fs::write(&junk, b"hello, world").unwrap();
    let (ok, text) = run(&junk, &f);
    assert!(
        !ok && text.contains("junk.npy") && text.contains("not a .npy file"),
        "{text}"
    );
    let cut = d.join("cut.npy");
    let bytes = std::fs::read(&l).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let (ok, text) = run(&cut, &f);
    assert!(
        !ok && text.contains("cut.npy") && text.contains("truncated"),
        "{text}"
    );

    // Bad flags.
    let (ok, text) = wgvae(&[
        os("--latents"),
        l.as_os_str(),
        os("--factors"),
        f.as_os_str(),
        os("--bins"),
        os("0"),
    ]);
    assert!(!ok && text.contains("--bins 0"), "{text}");
    let _ = std::fs::remove_dir_all(d);
}
