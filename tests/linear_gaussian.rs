//! Exactness on linear-Gaussian models, whose log p(x) and posterior are known in closed form:
//! a full-covariance posterior reaches log p(x), a diagonal one stops at the analytic
//! mean-field gap, a planar flow lands between the two, and the IWAE bound with many draws closes in on log p(x) from below.

mod common;

use common::ctx;
use wgvae::linear_gaussian::{FitOptions, LinearGaussian, bounds, fit_encoder};
use wgvae::model::PosteriorKind;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn closed_forms_agree_with_the_one_dimensional_model() {
    // dx = dz = 1: p(x) = N(b, w² + σ²), p(z|x) = N(w(x − b)/(w² + σ²), σ²/(w² + σ²)).
    let (w, b, s) = (1.7, -0.3, 0.4);
    let m = LinearGaussian::new(vec![w], 1, 1, vec![b], s).unwrap();
    let xs = [-2.0, 0.1, 0.9, 3.3];
    let lp = m.log_px(&xs).unwrap();
    for (x, got) in xs.iter().zip(&lp) {
        let v = w * w + s * s;
        let want = -0.5 * ((2.0 * std::f64::consts::PI * v).ln() + (x - b) * (x - b) / v);
        assert!((got - want).abs() < 1e-12, "log p({x}) {got} vs {want}");
        let (mu, cov) = m.posterior(&[*x]);
        assert!((mu[0] - w * (x - b) / v).abs() < 1e-12);
        assert!((cov[0] - s * s / v).abs() < 1e-12);
    }
    assert!(m.mean_field_gap().abs() < 1e-12, "one latent has no gap");
    // Orthogonal columns of W: the posterior factorises, no gap either.
    let m =
        LinearGaussian::new(vec![1.0, 0.0, 0.0, 2.0, 0.0, 0.0], 3, 2, vec![0.0; 3], 0.5).unwrap();
    assert!(m.mean_field_gap().abs() < 1e-12);
    // The built-in model is strongly coupled.
    let g = LinearGaussian::builtin(0.5).unwrap().mean_field_gap();
    assert!((0.55..0.65).contains(&g), "mean-field gap {g}");
}

#[test]
fn bad_models_are_refused_with_the_value_at_fault() {
    let err = |r: wgvae::error::Result<LinearGaussian>| r.unwrap_err().to_string();
    assert!(err(LinearGaussian::new(vec![1.0; 5], 3, 2, vec![0.0; 3], 0.5)).contains("5 values"));
    assert!(err(LinearGaussian::new(vec![1.0; 6], 3, 2, vec![0.0; 2], 0.5)).contains("b has 2"));
    assert!(err(LinearGaussian::new(vec![1.0; 6], 3, 2, vec![0.0; 3], 0.001)).contains("0.001"));
    assert!(
        err(LinearGaussian::new(
            vec![1.0; 3],
            3,
            1,
            vec![f64::NAN; 3],
            0.5
        ))
        .contains("NaN")
    );
    assert!(err(LinearGaussian::new(vec![1.0; 65], 1, 65, vec![0.0], 0.5)).contains("1 to 64"));
    let m = LinearGaussian::builtin(0.5).unwrap();
    assert!(
        m.log_px(&[0.0; 6])
            .unwrap_err()
            .to_string()
            .contains("whole rows of 4")
    );
}

#[test]
fn the_full_posterior_is_exact_and_the_diagonal_pays_the_mean_field_gap() {
    let ctx = ctx();
    let m = LinearGaussian::builtin(0.5).unwrap();
    let x = m.sample(48, 3);
    let exact = mean(&m.log_px(&x).unwrap());
    let gap = m.mean_field_gap();
    let opts = FitOptions {
        steps: 900,
        seed: 1,
        ..FitOptions::default()
    };
    let k = 1000;
    let mut rows = Vec::new();
    for family in [
        PosteriorKind::Full,
        PosteriorKind::Diagonal,
        PosteriorKind::Planar { flows: 4 },
        PosteriorKind::Iaf {
            flows: 2,
            hidden: 8,
        },
    ] {
        let vae = fit_encoder(ctx, &m, family, &x, opts).unwrap();
        let b = bounds(ctx, &vae, &x, k, 7).unwrap();
        let (elbo, iwae) = (mean(&b.elbo), mean(&b.iwae));
        eprintln!(
            "{family:?}: ELBO {elbo:.4} ± {:.4}, IWAE(k={k}) {iwae:.4} ± {:.4}, log p(x) \
             {exact:.4}, mean-field gap {gap:.4}",
            b.elbo_se, b.iwae_se
        );
        // No bound may sit above log p(x) by more than its Monte Carlo error.
        assert!(
            elbo <= exact + 3.0 * b.elbo_se + 1e-4,
            "{family:?}: ELBO above log p(x)"
        );
        assert!(
            iwae <= exact + 3.0 * b.iwae_se + 1e-4,
            "{family:?}: IWAE above log p(x)"
        );
        assert!(iwae >= elbo - 1e-6, "{family:?}: IWAE below the ELBO");
        rows.push((family, elbo, iwae));
    }
    let (_, full_elbo, full_iwae) = rows[0];
    let (_, diag_elbo, diag_iwae) = rows[1];
    assert!(
        exact - full_elbo < 0.01,
        "full: ELBO gap {}",
        exact - full_elbo
    );
    assert!(
        exact - full_iwae < 0.05,
        "full: IWAE gap {}",
        exact - full_iwae
    );
    assert!(
        ((exact - diag_elbo) - gap).abs() < 0.02,
        "diagonal: ELBO gap {} against the mean-field gap {gap}",
        exact - diag_elbo
    );
    // A planar flow on a diagonal base lands between the two, or better.
    let (_, planar_elbo, _) = rows[2];
    assert!(
        planar_elbo > diag_elbo + 0.1 * gap,
        "planar: ELBO {planar_elbo} against the diagonal's {diag_elbo}"
    );
    // So does an inverse autoregressive flow, whose networks train with the encoder.
    let (_, iaf_elbo, _) = rows[3];
    assert!(
        iaf_elbo > diag_elbo + 0.5 * gap,
        "iaf: ELBO {iaf_elbo} against the diagonal's {diag_elbo}"
    );
    // Importance sampling recovers much of what the diagonal q misses.
    assert!(
        exact - diag_iwae < 0.5 * gap,
        "diagonal: IWAE gap {}",
        exact - diag_iwae
    );
}
