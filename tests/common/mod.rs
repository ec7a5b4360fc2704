//! Shared test helpers: the GPU context (a test fails, never skips, without an adapter) and
//! comparisons against the CPU twins.
#![allow(dead_code)]

pub mod tool;

use std::sync::OnceLock;

use wgvae::gpu::GpuContext;
use wgvae::gpu::context::{ContextOptions, GemmVariant};

/// The process-wide context. Panics (fails the test) with the library's install hint when no
/// adapter exists.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => {
            eprintln!("test adapter: {} (GEMM {})", c.info, c.gemm_variant.name());
            c
        }
        Err(e) => panic!("wgvae tests need a GPU adapter: {e}"),
    })
}

/// A second process-wide context on the same adapter that always uses the `tiled` GEMM, the
/// kernel every real GPU runs, so that CPU-only CI exercises it end to end too.
pub fn ctx_tiled() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let opts = ContextOptions::from_env()
            .map(|o| ContextOptions {
                gemm: Some(GemmVariant::Tiled),
                ..o
            })
            .unwrap_or_else(|e| panic!("wgvae tests: {e}"));
        match GpuContext::with_options(&opts) {
            Ok(c) => {
                eprintln!("test adapter: {} (GEMM {})", c.info, c.gemm_variant.name());
                c
            }
            Err(e) => panic!("wgvae tests need a GPU adapter: {e}"),
        }
    })
}

/// The contexts a GEMM-dependent test runs under: the default one, and the `tiled` one when
/// the default uses another GEMM family.
pub fn contexts() -> Vec<&'static GpuContext> {
    let default = ctx();
    if default.gemm_variant == GemmVariant::Tiled {
        vec![default]
    } else {
        vec![default, ctx_tiled()]
    }
}

/// Deterministic test data in [lo, hi).
pub fn data(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    wgvae::rng::HostRng::new(seed).uniform_vec(n, lo, hi)
}

/// Asserts |got - want| <= atol + rtol |want| elementwise. On failure prints the first
/// mismatches, the largest error and its index.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut bad = Vec::new();
    let mut max_err = 0.0f64;
    let mut max_idx = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let ok = err <= atol + rtol * w.abs() && g.is_finite() == w.is_finite();
        if err > max_err || (!g.is_finite() && w.is_finite()) {
            max_err = if g.is_finite() { err } else { f64::INFINITY };
            max_idx = i;
        }
        if !ok && bad.len() < 8 {
            bad.push(format!("  [{i}] got {g:e} want {w:e} err {err:e}"));
        }
    }
    if !bad.is_empty() {
        panic!(
            "{what}: mismatches (atol {atol:e}, rtol {rtol:e}); max error {max_err:e} at [{max_idx}] (got {:e}, want {:e})\n{}",
            got[max_idx],
            want[max_idx],
            bad.join("\n")
        );
    }
}

/// Checks that run `c` (resumed) ended where run `a` (straight through) did, bit for bit: the
/// last epoch's train loss and test −ELBO, every parameter and the optimizer's moments.
pub fn assert_resumed_exactly(
    a: &wgvae::train::Trainer<'_>,
    sa: &wgvae::train::RunSummary,
    c: &wgvae::train::Trainer<'_>,
    sc: &wgvae::train::RunSummary,
    tag: &str,
) {
    let ctx = ctx();
    let (x, y) = (sa.epochs.last().unwrap(), sc.epochs.last().unwrap());
    assert_eq!(x.epoch, y.epoch, "{tag}: last epoch");
    assert_eq!(
        x.train_loss.to_bits(),
        y.train_loss.to_bits(),
        "{tag}: train loss, epoch {}",
        x.epoch
    );
    assert_eq!(
        x.test_neg_elbo.to_bits(),
        y.test_neg_elbo.to_bits(),
        "{tag}: test -ELBO, epoch {}",
        x.epoch
    );
    let pa = a.vae.read_params(ctx).unwrap();
    let pc = c.vae.read_params(ctx).unwrap();
    assert!(
        pa.iter().zip(&pc).all(|(x, y)| x.to_bits() == y.to_bits()),
        "{tag}: parameters differ after resuming"
    );
    assert_eq!(
        a.optimizer_state().unwrap(),
        c.optimizer_state().unwrap(),
        "{tag}: optimizer state"
    );
}

/// Checks the evaluator's IWAE bound of `cfg` with `params` (a 3×4-pixel model) against the f64
/// twin of the whole estimate (`cpu::iwae`: z through the posterior's twin, log q from z alone):
/// 11 random images, 4 per evaluation batch (a partial last batch), k = 5, per batch and in
/// the report's mean.
pub fn evaluator_iwae_matches_the_twin(cfg: &wgvae::model::VaeConfig, params: &[f32]) {
    let ctx = ctx();
    assert_eq!((cfg.height, cfg.width, cfg.channels), (3, 4, 1));
    let (n, batch, k) = (11, 4, 5);
    let vae = wgvae::model::Vae::new(ctx, cfg, params).unwrap();
    let params64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let mut rng = wgvae::rng::HostRng::new(8);
    let set = wgvae::data::Dataset {
        name: "iwae-twin".into(),
        n,
        channels: 1,
        height: 3,
        width: 4,
        pixels: (0..n * 12).map(|_| rng.below(256) as u8).collect(),
        labels: None,
        factors: None,
    };
    let ev = wgvae::eval::Evaluator::new(ctx, &vae, &set, batch, k, 5).unwrap();
    let e = ev.iwae_batch_images().unwrap();
    let mut all = Vec::new();
    for bi in 0..n.div_ceil(e) {
        let got = ev.iwae_batch(ctx, bi).unwrap();
        let valid = (n - bi * e).min(e);
        let eps = ev.iwae_eps().unwrap().read(ctx).unwrap();
        let mut x = vec![0.0f32; e * 12];
        for r in 0..valid {
            for (j, &v) in set.image(bi * e + r).iter().enumerate() {
                x[r * 12 + j] = v as f32 / 255.0;
            }
        }
        let twin = wgvae::cpu::iwae(cfg, &params64, &x, e, k, &eps);
        assert_close(
            &format!("IWAE batch {bi}"),
            &got,
            &twin.bound[..valid],
            5e-5,
            1e-6,
        );
        all.extend_from_slice(&twin.bound[..valid]);
    }
    let report = ev.run_with(ctx, 3, true).unwrap();
    let want = -all.iter().sum::<f64>() / n as f64;
    let got = report.neg_iwae.unwrap();
    assert!((got - want).abs() < 1e-4, "-IWAE {got} vs twin {want}");
}
