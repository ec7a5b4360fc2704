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
