//! The full-covariance Gaussian posterior N(μ, L Lᵀ): every kernel against its f64 twin on
//! shapes that no workgroup size divides, central-difference gradients of the KL and of the
//! path through z, the diagonal special case against `Diagonal`, log q against the Gaussian
//! density written out, and whole runs with `--posterior full` (training, exact resume, the
//! checkpoint, IWAE evaluation).

mod common;

use std::path::{Path, PathBuf};

use common::tool::{text, wgvae};
use common::{assert_close, ctx, data};
use wgvae::cpu;
use wgvae::cpu::posterior_full as twin;
use wgvae::gpu::{Program, Tensor};
use wgvae::model::posterior::KlGrad;
use wgvae::model::{Diagonal, FullCovariance, GradWrite, Posterior, PosteriorKind, Vae, VaeConfig};
use wgvae::ops::data::StepState;
use wgvae::ops::kl::{Capacity, KlRamp};
use wgvae::ops::posterior_full::{
    MAX_LATENT, full_kl, full_kl_capacity, full_log_weights, full_sample, full_sample_backward,
    lower_index, param_dim,
};
use wgvae::ops::reparam::{RngStep, Stream};
use wgvae::train::checkpoint::{self, Checkpoint};
use wgvae::train::{DataSource, ModelSpec, TrainConfig, Trainer};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn run(p: Program) {
    p.run(ctx()).unwrap();
}

/// Posterior parameters (B, P) of a well-conditioned q: μ in [−1, 1), log L_ii² in [−1, 1),
/// lower entries in [−0.5, 0.5).
fn params(seed: u64, b: usize, d: usize) -> Vec<f32> {
    let p = param_dim(d).unwrap();
    let mu = data(seed, b * d, -1.0, 1.0);
    let v = data(seed + 1, b * d, -1.0, 1.0);
    let low = data(seed + 2, b * p, -0.5, 0.5);
    let mut q = vec![0.0; b * p];
    for r in 0..b {
        for i in 0..d {
            q[r * p + i] = mu[r * d + i];
            q[r * p + d + i] = v[r * d + i];
        }
        for k in 2 * d..p {
            q[r * p + k] = low[r * p + k];
        }
    }
    q
}

const DIMS: [usize; 4] = [1, 3, 7, 13];
const BATCHES: [usize; 3] = [1, 7, 67];

#[test]
fn sample_and_its_backward_match_the_twin() {
    let ctx = ctx();
    for d in DIMS {
        for b in BATCHES {
            for k in [1, 3] {
                let what = format!("D={d} B={b} K={k}");
                let p = param_dim(d).unwrap();
                let q_h = params(10 + d as u64, b, d);
                let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
                let z = Tensor::<f32>::zeros(ctx, "z", &[k * b, d]).unwrap();
                let eps = Tensor::<f32>::zeros(ctx, "eps", &[k * b, d]).unwrap();
                let mut prog = Program::new();
                prog.push(
                    full_sample(
                        ctx,
                        "sample",
                        &q,
                        d,
                        &z,
                        &eps,
                        k,
                        77,
                        RngStep::Fixed(5),
                        Stream::Train,
                    )
                    .unwrap(),
                );
                run(prog);
                // ε: the reparam kernel's Philox + Box–Muller stream (f32 transcendental
                // functions: float accuracy).
                let eps_h = eps.read(ctx).unwrap();
                let eps_r = cpu::reparam_eps(k * b * d, 77, 5, Stream::Train as u32);
                assert_close(&format!("eps {what}"), &eps_h, &eps_r, 2e-5, 2e-5);
                // z = μ + L ε from the GPU's ε: f32 sums of ≤ 13 products of O(1) terms.
                let z_r = twin::full_sample(&f64s(&q_h), &f64s(&eps_h), b, d, k);
                assert_close(
                    &format!("z {what}"),
                    &z.read(ctx).unwrap(),
                    &z_r,
                    1e-5,
                    1e-5,
                );

                // The backward, stored and accumulated.
                let dz_h = data(20 + d as u64, k * b * d, -1.0, 1.0);
                let dz = Tensor::from_slice(ctx, "dz", &[k * b, d], &dz_h).unwrap();
                let base_h = data(30, b * p, -1.0, 1.0);
                for acc in [false, true] {
                    let dq = Tensor::from_slice(ctx, "dq", &[b, p], &base_h).unwrap();
                    let mut prog = Program::new();
                    prog.push(
                        full_sample_backward(ctx, "back", &q, d, &dz, &eps, &dq, k, acc).unwrap(),
                    );
                    run(prog);
                    let base = f64s(&base_h);
                    let want = twin::full_sample_backward(
                        &f64s(&q_h),
                        &f64s(&dz_h),
                        &f64s(&eps_h),
                        b,
                        d,
                        k,
                        acc.then_some(base.as_slice()),
                    );
                    assert_close(
                        &format!("dq {what} accumulate={acc}"),
                        &dq.read(ctx).unwrap(),
                        &want,
                        1e-5,
                        1e-5,
                    );
                }
            }
        }
    }
}

#[test]
fn kl_and_its_gradient_match_the_twin() {
    let ctx = ctx();
    for d in DIMS {
        for b in BATCHES {
            let what = format!("D={d} B={b}");
            let p = param_dim(d).unwrap();
            let q_h = params(40 + d as u64, b, d);
            let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
            let kl = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
            let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
            let g = Tensor::from_slice(ctx, "dq", &[b, p], &vec![9.0; b * p]).unwrap();
            // Row weights with a zero (a padded row): its gradient must be exactly 0.
            let mut w_h = vec![1.0 / b as f32; b];
            if b > 1 {
                w_h[b - 1] = 0.0;
            }
            let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
            let beta = 0.7f32;
            for weighted in [false, true] {
                let mut prog = Program::new();
                prog.push(
                    full_kl(
                        ctx,
                        "kl",
                        &q,
                        d,
                        &kl,
                        &ke,
                        Some((&g, beta)),
                        weighted.then_some(&w),
                        None,
                    )
                    .unwrap(),
                );
                run(prog);
                let scale: Vec<f64> = (0..b)
                    .map(|r| beta as f64 * if weighted { w_h[r] as f64 } else { 1.0 })
                    .collect();
                let (kl_r, ke_r, g_r) = twin::full_kl(&f64s(&q_h), b, d, &scale);
                // KL: f32 sums of ≤ 13 + 78 positive O(1) terms.
                assert_close(
                    &format!("kl {what}"),
                    &kl.read(ctx).unwrap(),
                    &kl_r,
                    1e-5,
                    1e-5,
                );
                assert_close(
                    &format!("kl elem {what}"),
                    &ke.read(ctx).unwrap(),
                    &ke_r,
                    1e-5,
                    1e-5,
                );
                let got = g.read(ctx).unwrap();
                assert_close(&format!("kl grad {what}"), &got, &g_r, 1e-6, 1e-5);
                if weighted && b > 1 {
                    assert!(
                        got[(b - 1) * p..].iter().all(|&v| v == 0.0),
                        "{what}: padded row"
                    );
                }
            }
            // The joint KL is the marginal KLs plus the total correlation of q, which is ≥ 0.
            let (kl_r, ke_r, _) = twin::full_kl(&f64s(&q_h), b, d, &vec![0.0; b]);
            for r in 0..b {
                let marg: f64 = ke_r[r * d..(r + 1) * d].iter().sum();
                assert!(
                    kl_r[r] >= marg - 1e-12,
                    "{what}: KL {} < Σ marginal {marg}",
                    kl_r[r]
                );
            }
        }
    }
}

#[test]
fn kl_ramp_and_capacity_match_the_twin() {
    let ctx = ctx();
    let (b, d) = (7, 5);
    let p = param_dim(d).unwrap();
    let q_h = params(50, b, d);
    let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
    let kl = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
    let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
    let g = Tensor::<f32>::zeros(ctx, "dq", &[b, p]).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let mut prog = Program::new();
    prog.push(
        full_kl(
            ctx,
            "kl",
            &q,
            d,
            &kl,
            &ke,
            Some((&g, 0.5)),
            None,
            Some(KlRamp::warmup(&state, 10)),
        )
        .unwrap(),
    );
    for (t, factor) in [(0u32, 0.1), (3, 0.4), (9, 1.0), (250, 1.0)] {
        state.set(ctx, t, 0).unwrap();
        prog.run(ctx).unwrap();
        let (kl_r, _, g_r) = twin::full_kl(&f64s(&q_h), b, d, &vec![0.5 * factor; b]);
        assert_close("ramp kl", &kl.read(ctx).unwrap(), &kl_r, 1e-5, 1e-5);
        assert_close(
            &format!("ramp grad t={t}"),
            &g.read(ctx).unwrap(),
            &g_r,
            1e-6,
            1e-5,
        );
    }
    // Capacity: both sides of C(t), with a padded row.
    let mut w_h = vec![1.0 / 6.0f32; b];
    w_h[6] = 0.0;
    let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
    let pen = Tensor::<f32>::zeros(ctx, "penalty", &[b]).unwrap();
    let (kl_r, _, _) = twin::full_kl(&f64s(&q_h), b, d, &vec![0.0; b]);
    let mean: f64 = (0..b).map(|r| w_h[r] as f64 * kl_r[r]).sum();
    // C(t) = c_max·t/80 is 0, c_max/2 or c_max: with c_max = 3·mean the t = 40 and 100 steps
    // are above the mean KL and t = 0 below it (2·mean would put t = 40 on the kink of |KL − C|,
    // where f32 and f64 may take different sides).
    for c_max in [mean as f32 * 0.5, mean as f32 * 3.0] {
        for t in [0u32, 40, 100] {
            let cap = Capacity {
                state: &state,
                gamma: 3.0,
                c_max,
                steps: 80,
            };
            let mut prog = Program::new();
            prog.push(full_kl(ctx, "kl", &q, d, &kl, &ke, None, None, None).unwrap());
            prog.push(full_kl_capacity(ctx, "cap", &q, d, &kl, &g, &pen, &w, cap).unwrap());
            state.set(ctx, t, 0).unwrap();
            prog.run(ctx).unwrap();
            let (pen_r, g_r) =
                twin::full_kl_capacity(&f64s(&q_h), b, d, &f64s(&w_h), 3.0, c_max as f64, 80, t);
            let what = format!("capacity c_max={c_max} t={t}");
            assert_close(&what, &pen.read(ctx).unwrap(), &pen_r, 1e-5, 1e-5);
            let got = g.read(ctx).unwrap();
            assert_close(&format!("{what} grad"), &got, &g_r, 1e-6, 1e-5);
            assert!(got[6 * p..].iter().all(|&v| v == 0.0), "{what}: padded row");
        }
    }
}

#[test]
fn log_weights_match_the_twin_and_the_gaussian_density() {
    let ctx = ctx();
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    for d in DIMS {
        for b in BATCHES {
            for k in [1, 3] {
                let what = format!("D={d} B={b} K={k}");
                let p = param_dim(d).unwrap();
                let q_h = params(60 + d as u64, b, d);
                let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
                let z = Tensor::<f32>::zeros(ctx, "z", &[k * b, d]).unwrap();
                let eps = Tensor::<f32>::zeros(ctx, "eps", &[k * b, d]).unwrap();
                let nll_h = data(61, k * b, 50.0, 150.0);
                let nll = Tensor::from_slice(ctx, "nll", &[k * b], &nll_h).unwrap();
                let logw = Tensor::<f32>::zeros(ctx, "logw", &[k * b]).unwrap();
                let mut prog = Program::new();
                prog.push(
                    full_sample(
                        ctx,
                        "sample",
                        &q,
                        d,
                        &z,
                        &eps,
                        k,
                        3,
                        RngStep::Fixed(1),
                        Stream::Eval,
                    )
                    .unwrap(),
                );
                prog.push(full_log_weights(ctx, "logw", &q, d, &nll, &z, &eps, &logw, k).unwrap());
                run(prog);
                let (z_h, eps_h) = (z.read(ctx).unwrap(), eps.read(ctx).unwrap());
                let got = logw.read(ctx).unwrap();
                let want = twin::full_log_weights(
                    &f64s(&q_h),
                    &f64s(&nll_h),
                    &f64s(&z_h),
                    &f64s(&eps_h),
                    b,
                    d,
                    k,
                );
                // log w ~ −100: f32 rounding of the nll alone is ~1e-5.
                assert_close(&format!("logw {what}"), &got, &want, 1e-4, 1e-6);
                // log w + nll = log N(z; 0, I) − log q(z | x), log q written out from z alone
                // (a triangular solve for L⁻¹(z − μ)): the ε path of the kernel agrees with
                // the density of the z it drew. The f32 z carries ~1e-7 relative error that
                // the solve amplifies by at most the condition of L.
                let log_q = twin::full_log_density(&f64s(&q_h), &f64s(&z_h), b, d, k);
                for r in 0..k * b {
                    let log_p: f64 = z_h[r * d..(r + 1) * d]
                        .iter()
                        .map(|&v| -half_log_2pi - 0.5 * (v as f64).powi(2))
                        .sum();
                    let want = log_p - log_q[r];
                    let have = got[r] as f64 + nll_h[r] as f64;
                    assert!(
                        (have - want).abs() < 2e-4 * (1.0 + d as f64),
                        "{what} row {r}: log p − log q {have} vs the density {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn kl_gradient_is_the_central_difference_of_the_kl() {
    let ctx = ctx();
    for d in [3, 7] {
        let b = 5;
        let p = param_dim(d).unwrap();
        let q_h = params(70 + d as u64, b, d);
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let kl = Tensor::<f32>::zeros(ctx, "kl", &[b]).unwrap();
        let ke = Tensor::<f32>::zeros(ctx, "kl elem", &[b, d]).unwrap();
        let g = Tensor::<f32>::zeros(ctx, "dq", &[b, p]).unwrap();
        let w_h: Vec<f32> = (0..b).map(|r| 0.1 + 0.2 * r as f32).collect();
        let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
        let mut prog = Program::new();
        prog.push(full_kl(ctx, "kl", &q, d, &kl, &ke, Some((&g, 1.3)), Some(&w), None).unwrap());
        run(prog);
        let got = g.read(ctx).unwrap();
        // f(q) = 1.3 Σ_b w_b KL_b from the dense-L twin (trace, log det), so the check does not
        // share the kernel's per-entry formula.
        let f = |qq: &[f64]| -> f64 {
            let (kl, _, _) = twin::full_kl(qq, b, d, &vec![0.0; b]);
            (0..b).map(|r| 1.3 * w_h[r] as f64 * kl[r]).sum()
        };
        let base = f64s(&q_h);
        let h = 1e-5;
        for i in 0..b * p {
            let mut qq = base.clone();
            qq[i] += h;
            let up = f(&qq);
            qq[i] -= 2.0 * h;
            let fd = (up - f(&qq)) / (2.0 * h);
            let err = (got[i] as f64 - fd).abs();
            assert!(
                err <= 1e-5 + 1e-4 * fd.abs(),
                "D={d} dq[{i}]: {} vs {fd}",
                got[i]
            );
        }
    }
}

#[test]
fn sample_gradient_is_the_central_difference_of_a_function_of_z() {
    let ctx = ctx();
    for (d, k) in [(3, 1), (7, 3)] {
        let b = 5;
        let p = param_dim(d).unwrap();
        let q_h = params(80 + d as u64, b, d);
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let z = Tensor::<f32>::zeros(ctx, "z", &[k * b, d]).unwrap();
        let eps = Tensor::<f32>::zeros(ctx, "eps", &[k * b, d]).unwrap();
        // F(z) = Σ c·z, so dF/dz = c.
        let c_h = data(81, k * b * d, -1.0, 1.0);
        let c = Tensor::from_slice(ctx, "c", &[k * b, d], &c_h).unwrap();
        let dq = Tensor::<f32>::zeros(ctx, "dq", &[b, p]).unwrap();
        let mut prog = Program::new();
        prog.push(
            full_sample(
                ctx,
                "s",
                &q,
                d,
                &z,
                &eps,
                k,
                9,
                RngStep::Fixed(2),
                Stream::Train,
            )
            .unwrap(),
        );
        prog.push(full_sample_backward(ctx, "b", &q, d, &c, &eps, &dq, k, false).unwrap());
        run(prog);
        let got = dq.read(ctx).unwrap();
        let eps_h = f64s(&eps.read(ctx).unwrap());
        let f = |qq: &[f64]| -> f64 {
            let zz = twin::full_sample(qq, &eps_h, b, d, k);
            zz.iter().zip(&c_h).map(|(a, &cc)| a * cc as f64).sum()
        };
        let base = f64s(&q_h);
        let h = 1e-5;
        for i in 0..b * p {
            let mut qq = base.clone();
            qq[i] += h;
            let up = f(&qq);
            qq[i] -= 2.0 * h;
            let fd = (up - f(&qq)) / (2.0 * h);
            let err = (got[i] as f64 - fd).abs();
            assert!(
                err <= 2e-5 + 1e-4 * fd.abs(),
                "D={d} K={k} dq[{i}]: {} vs {fd}",
                got[i]
            );
        }
    }
}

#[test]
fn zero_lower_entries_give_the_diagonal_posterior() {
    let ctx = ctx();
    for (d, b, k) in [(1, 7, 3), (3, 67, 1), (7, 7, 3), (13, 1, 3)] {
        let what = format!("D={d} B={b} K={k}");
        let p = param_dim(d).unwrap();
        let diag_h = data(90 + d as u64, b * 2 * d, -1.5, 1.5);
        let mut full_h = vec![0.0f32; b * p];
        for r in 0..b {
            full_h[r * p..r * p + 2 * d].copy_from_slice(&diag_h[r * 2 * d..(r + 1) * 2 * d]);
        }
        let (fp, dp) = (FullCovariance { latent: d }, Diagonal { latent: d });
        let qf = Tensor::from_slice(ctx, "qf", &[b, p], &full_h).unwrap();
        let qd = Tensor::from_slice(ctx, "qd", &[b, 2 * d], &diag_h).unwrap();
        let t = |label: &str, shape: &[usize]| Tensor::<f32>::zeros(ctx, label, shape).unwrap();
        let (zf, ef, zd, ed) = (
            t("zf", &[k * b, d]),
            t("ef", &[k * b, d]),
            t("zd", &[k * b, d]),
            t("ed", &[k * b, d]),
        );
        let (klf, kef, kld, ked) = (
            t("klf", &[b]),
            t("kef", &[b, d]),
            t("kld", &[b]),
            t("ked", &[b, d]),
        );
        let (gf, gd) = (t("gf", &[b, p]), t("gd", &[b, 2 * d]));
        let dz_h = data(91, k * b * d, -1.0, 1.0);
        let dz = Tensor::from_slice(ctx, "dz", &[k * b, d], &dz_h).unwrap();
        let nll = Tensor::from_slice(ctx, "nll", &[k * b], &data(92, k * b, 1.0, 9.0)).unwrap();
        let (lwf, lwd) = (t("lwf", &[k * b]), t("lwd", &[k * b]));
        let mut prog = Program::new();
        for (post, q, z, e, kl, ke, g, lw) in [
            (&fp as &dyn Posterior, &qf, &zf, &ef, &klf, &kef, &gf, &lwf),
            (&dp as &dyn Posterior, &qd, &zd, &ed, &kld, &ked, &gd, &lwd),
        ] {
            prog.extend(
                post.sample(ctx, q, z, e, k, 41, RngStep::Fixed(6), Stream::Train)
                    .unwrap(),
            );
            prog.extend(post.kl(ctx, q, kl, ke, store_grad(g, 0.8), None).unwrap());
            prog.extend(
                post.sample_backward(ctx, q, &dz, e, g, None, k, GradWrite::Accumulate)
                    .unwrap(),
            );
            prog.extend(post.log_weights(ctx, q, &nll, z, e, lw, k).unwrap());
        }
        run(prog);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        // The same Philox words and the same Box–Muller code: ε is the same bit for bit.
        assert_eq!(
            bits(ef.read(ctx).unwrap()),
            bits(ed.read(ctx).unwrap()),
            "{what}: eps"
        );
        let close = |name: &str, a: Vec<f32>, b: Vec<f32>| {
            assert_close(&format!("{what}: {name}"), &a, &f64s(&b), 1e-6, 1e-6);
        };
        let (z_full, z_diag) = (zf.read(ctx).unwrap(), zd.read(ctx).unwrap());
        let same = z_full
            .iter()
            .zip(&z_diag)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        eprintln!(
            "{what}: z bit-identical to the diagonal's in {same} of {}",
            z_full.len()
        );
        close("z", z_full, z_diag);
        close("kl", klf.read(ctx).unwrap(), kld.read(ctx).unwrap());
        close("kl elem", kef.read(ctx).unwrap(), ked.read(ctx).unwrap());
        close("log w", lwf.read(ctx).unwrap(), lwd.read(ctx).unwrap());
        // The gradient at [μ | log σ²] is the diagonal one; at the lower entries it is the
        // path through z only (the KL's L_ij = 0 adds nothing), Σ_s dz_i ε_j.
        let (g_full, g_diag) = (gf.read(ctx).unwrap(), gd.read(ctx).unwrap());
        let eps_h = f64s(&ef.read(ctx).unwrap());
        for r in 0..b {
            close(
                "grad [mu | logvar]",
                g_full[r * p..r * p + 2 * d].to_vec(),
                g_diag[r * 2 * d..(r + 1) * 2 * d].to_vec(),
            );
            for i in 1..d {
                for j in 0..i {
                    let want: f64 = (0..k)
                        .map(|s| dz_h[(s * b + r) * d + i] as f64 * eps_h[(s * b + r) * d + j])
                        .sum();
                    let got = g_full[r * p + lower_index(d, i, j)] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{what}: dL[{i},{j}] {got} vs {want}"
                    );
                }
            }
        }
        // The twins agree too, and location/scale read the same q.
        let (qf64, qd64) = (f64s(&full_h), f64s(&diag_h));
        assert_eq!(fp.cpu_kl(&qf64, b).len(), b);
        for (x, y) in fp.cpu_kl(&qf64, b).iter().zip(dp.cpu_kl(&qd64, b)) {
            assert!(
                (x - y).abs() < 1e-12 * (1.0 + y.abs()),
                "{what}: twin KL {x} vs {y}"
            );
        }
        assert_eq!(
            fp.location(&full_h, b),
            dp.location(&diag_h, b),
            "{what}: location"
        );
        for (x, y) in fp.scale(&full_h, b).iter().zip(dp.scale(&diag_h, b)) {
            assert!((x - y).abs() <= 1e-6 * y, "{what}: scale {x} vs {y}");
        }
    }
}

/// β·∂KL stored into `g`.
fn store_grad(g: &Tensor<f32>, beta: f32) -> Option<KlGrad<'_>> {
    Some(KlGrad {
        dparams: g,
        beta,
        ramp: None,
        capacity: None,
        write: GradWrite::Store,
        own: None,
    })
}

#[test]
fn scale_is_the_marginal_standard_deviation() {
    // D = 2: Σ = L Lᵀ with L = [[a, 0], [c, e]]: Σ_00 = a², Σ_11 = c² + e².
    let (a, c, e) = (0.5f64, -0.7f64, 1.3f64);
    let q = [
        0.1f32,
        -0.2,
        (a * a).ln() as f32,
        (e * e).ln() as f32,
        c as f32,
    ];
    let post = FullCovariance { latent: 2 };
    assert_eq!(post.param_dim(), 5);
    assert_eq!(post.location(&q, 1), vec![0.1, -0.2]);
    let s = post.scale(&q, 1);
    assert!((s[0] as f64 - a).abs() < 1e-6, "{s:?}");
    assert!((s[1] as f64 - (c * c + e * e).sqrt()).abs() < 1e-6, "{s:?}");
    // The prior's parameters give N(0, I): KL 0.
    let prior: Vec<f64> = f64s(&post.prior_params().unwrap());
    assert_eq!(post.cpu_kl(&prior, 1), vec![0.0]);
}

#[test]
fn sizes_beyond_the_kernels_are_refused_clearly() {
    let ctx = ctx();
    assert_eq!(param_dim(64), Some(2144));
    let d = MAX_LATENT + 1;
    let p = param_dim(d).unwrap();
    let q = Tensor::<f32>::zeros(ctx, "q", &[2, p]).unwrap();
    let z = Tensor::<f32>::zeros(ctx, "z", &[2, d]).unwrap();
    let e = full_sample(
        ctx,
        "s",
        &q,
        d,
        &z,
        &z,
        1,
        0,
        RngStep::Fixed(0),
        Stream::Train,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("latent size 65") && e.contains("1 to 64"), "{e}");
    // A q of the wrong width names the tensor and the expected shape.
    let q = Tensor::<f32>::zeros(ctx, "q", &[2, 8]).unwrap();
    let z = Tensor::<f32>::zeros(ctx, "z", &[2, 3]).unwrap();
    let e = full_sample(
        ctx,
        "s",
        &q,
        3,
        &z,
        &z,
        1,
        0,
        RngStep::Fixed(0),
        Stream::Train,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("expected (B, 9)"), "{e}");
    // The configuration refuses the latent size before anything is built.
    let mut cfg = VaeConfig::classic(4, 4);
    cfg.posterior = PosteriorKind::Full;
    cfg.latent = 65;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("latent size 65") && e.contains("full-covariance"),
        "{e}"
    );
    cfg.latent = 64;
    cfg.validate().unwrap();
    let e = PosteriorKind::parse("cholesky").unwrap_err();
    assert!(
        e.contains("posterior `cholesky`") && e.contains("diagonal or full"),
        "{e}"
    );
}

#[test]
fn configurations_name_the_posterior_and_older_ones_are_diagonal() {
    let mut cfg = VaeConfig::classic(4, 4);
    cfg.latent = 3;
    let mut old = serde_json::to_value(&cfg).unwrap();
    assert_eq!(old["posterior"], "diagonal");
    old.as_object_mut().unwrap().remove("posterior");
    let back: VaeConfig = serde_json::from_value(old).unwrap();
    assert_eq!(back.posterior, PosteriorKind::Diagonal);
    cfg.posterior = PosteriorKind::Full;
    let s = serde_json::to_string(&cfg).unwrap();
    assert!(s.contains(r#""posterior":"full""#), "{s}");
    let back: VaeConfig = serde_json::from_str(&s).unwrap();
    assert_eq!(back.posterior, PosteriorKind::Full);
    // The encoder's last layer outputs the posterior's parameters: 2·3 + 3 = 9.
    let (enc, _) = cfg.networks().unwrap();
    assert_eq!(cfg.posterior().param_dim(), 9);
    let last = cfg.layout();
    let bias = last.get("encoder.fc2.bias").unwrap();
    assert_eq!(bias.shape, vec![9], "{enc:?}");
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wgvae-full-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn full_cfg(out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: DataSource::Idx {
            dir: common::tool::mnist(),
        },
        model: ModelSpec {
            enc_hidden: vec![64],
            dec_hidden: vec![64],
            latent: 6,
            posterior: PosteriorKind::Full,
            ..ModelSpec::default()
        },
        batch: 32,
        epochs,
        out: out.to_path_buf(),
        quiet: true,
        pictures: false,
        eval_batch: 128,
        ..TrainConfig::default()
    }
}

#[test]
fn a_full_covariance_run_learns_resumes_exactly_and_records_its_posterior() {
    let ctx = ctx();
    let straight = tmp("straight");
    let split = tmp("split");
    let mut a = Trainer::new(ctx, full_cfg(&straight, 2)).unwrap();
    assert_eq!(a.vae.posterior.name(), "full");
    let start = a.evaluate(false).unwrap();
    let sa = a.train().unwrap();
    let end = sa.last_eval.clone().unwrap();
    eprintln!(
        "full posterior, mnist-512: test -ELBO {:.1} -> {:.1} after 2 epochs",
        start.neg_elbo, end.neg_elbo
    );
    assert!(
        end.neg_elbo < 0.7 * start.neg_elbo,
        "{} -> {}",
        start.neg_elbo,
        end.neg_elbo
    );
    let mut b = Trainer::new(ctx, full_cfg(&split, 1)).unwrap();
    b.train().unwrap();
    drop(b);
    let mut c = Trainer::resume(ctx, &split, 1, Some(true)).unwrap();
    assert_eq!(c.vae.posterior.name(), "full");
    let sc = c.train().unwrap();
    assert_eq!(sc.epochs.len(), 2);
    common::assert_resumed_exactly(&a, &sa, &c, &sc, "full posterior");
    let ck = Checkpoint::load(&straight.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.model.posterior, PosteriorKind::Full);
    let config = std::fs::read_to_string(straight.join("config.json")).unwrap();
    assert!(config.contains(r#""posterior": "full""#), "{config}");
    let _ = std::fs::remove_dir_all(straight);
    let _ = std::fs::remove_dir_all(split);
}

#[test]
fn the_cli_trains_a_full_posterior_and_evaluates_its_iwae_bound() {
    let dir = tmp("cli");
    let run_dir = dir.join("run");
    let out = wgvae()
        .args([
            "train",
            "--quiet",
            "--no-pictures",
            "--epochs",
            "2",
            "--posterior",
            "full",
        ])
        .args(["--hidden", "32", "--latent", "4", "--batch", "32", "--data"])
        .arg(common::tool::mnist())
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ck = Checkpoint::load(&run_dir.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.model.posterior, PosteriorKind::Full);
    let images = common::tool::mnist().join("t10k-images-idx3-ubyte.gz");
    let (elbo, iwae) = common::tool::eval_bounds(&run_dir, &images, 16);
    eprintln!("full posterior eval: -ELBO {elbo:.2}, -IWAE(16) {iwae:.2}");
    // The IWAE bound is finite, positive and at least as tight as the ELBO (Monte Carlo noise
    // aside); its value is checked against the twin in
    // `the_evaluators_iwae_bound_matches_the_twin_of_the_whole_estimate`.
    assert!(
        iwae.is_finite() && iwae > 0.0 && iwae < elbo + 0.5,
        "{iwae} vs {elbo}"
    );
    // The aggregated posterior draws from q(z|x) itself, correlations included: from one
    // input, the codes' covariance is that input's L Lᵀ.
    let set = wgvae::data::load_dir(&common::tool::mnist())
        .unwrap()
        .test
        .subset(&[0]);
    let one = dir.join("one.npy");
    wgvae::data::npy::write_npy_u8(&one, &[1, 28, 28], &set.pixels).unwrap();
    let agg = dir.join("agg.npy");
    let n = 4000;
    let out = wgvae()
        .args([
            "sample",
            "--from",
            "aggregate",
            "--n",
            &n.to_string(),
            "--run",
        ])
        .arg(&run_dir)
        .arg("--images")
        .arg(&one)
        .arg("--out-npy")
        .arg(&agg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let z = common::tool::npy_f32(&agg).2;
    let d = 4;
    assert_eq!(z.len(), n * d);
    let ctx = ctx();
    let vae = Vae::new(ctx, &ck.model, &ck.params).unwrap();
    let q = wgvae::tool::encode::encode_params_set(ctx, &vae, &set).unwrap();
    let l = twin::cholesky_factor(&f64s(&q), 0, d);
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|r| z[r * d + j] as f64).sum::<f64>() / n as f64)
        .collect();
    let mut worst: f64 = 0.0;
    let mut strongest: f64 = 0.0;
    for i in 0..d {
        for j in 0..d {
            let want: f64 = (0..d).map(|t| l[i * d + t] * l[j * d + t]).sum();
            let got = (0..n)
                .map(|r| (z[r * d + i] as f64 - mean[i]) * (z[r * d + j] as f64 - mean[j]))
                .sum::<f64>()
                / (n - 1) as f64;
            let scale = (0..d).map(|t| l[i * d + t].powi(2)).sum::<f64>().sqrt()
                * (0..d).map(|t| l[j * d + t].powi(2)).sum::<f64>().sqrt();
            worst = worst.max((got - want).abs() / scale);
            if i != j {
                strongest = strongest.max(want.abs() / scale);
            }
        }
    }
    eprintln!(
        "aggregate draws from one input: covariance within {worst:.3} (relative) of L Lᵀ, \
         strongest correlation {strongest:.3}"
    );
    assert!(worst < 0.1, "aggregate covariance off by {worst}");
    // A bad value names the flag.
    let out = wgvae()
        .args(["train", "--posterior", "banana", "--out"])
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("banana"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_whole_full_covariance_vae_passes_the_gradient_check() {
    // linear(6→5) → tanh → linear(5→P = 2·4 + 6 = 14) → full posterior (K = 2) → linear(4→6)
    // → Bernoulli + β·KL; the GPU gradient of every parameter against central differences of
    // the f64 twin of the loss.
    let ctx = ctx();
    let mut cfg = VaeConfig::classic(2, 3);
    cfg.enc_hidden = vec![5];
    cfg.dec_hidden = vec![];
    cfg.latent = 4;
    cfg.activation = wgvae::ops::Activation::Tanh;
    cfg.posterior = PosteriorKind::Full;
    let (batch, samples, beta) = (3, 2, 0.6f32);
    let init = cfg.init_params(5);
    let layout = cfg.layout();
    let vae = Vae::new(ctx, &cfg, &init).unwrap();
    let act = vae.activations(ctx, batch, samples).unwrap();
    let g = vae.gradients(ctx, &act).unwrap();
    act.x
        .write(ctx, &data(6, batch * cfg.input_dim(), 0.0, 1.0))
        .unwrap();
    let mut p = vae
        .forward_program(
            ctx,
            &act,
            Some(&g),
            beta,
            4,
            RngStep::Fixed(1),
            Stream::Train,
        )
        .unwrap();
    p.extend(vae.backward_program(ctx, &act, &g).unwrap());
    p.run(ctx).unwrap();
    let gpu = g.params.flat.read(ctx).unwrap();
    let eps = act.eps.read(ctx).unwrap();
    let x_h = act.x.read(ctx).unwrap();
    let params = f64s(&init);
    let (nll_r, kl_r) = cpu::vae_forward(&cfg, &params, &x_h, batch, samples, &eps);
    assert_close("nll", &act.nll.read(ctx).unwrap(), &nll_r, 1e-4, 1e-5);
    assert_close("kl", &act.kl.read(ctx).unwrap(), &kl_r, 1e-5, 1e-5);
    let loss = |pp: &[f64]| cpu::vae_loss(&cfg, pp, &x_h, batch, samples, &eps, beta as f64);
    let h = 1e-5;
    let mut n = 0;
    for spec in &layout.tensors {
        for i in 0..spec.len() {
            let k = spec.offset + i;
            let mut pp = params.clone();
            pp[k] += h;
            let up = loss(&pp);
            pp[k] -= 2.0 * h;
            let fd = (up - loss(&pp)) / (2.0 * h);
            let err = (gpu[k] as f64 - fd).abs();
            assert!(
                err <= 2e-5 + 1e-3 * fd.abs(),
                "{}[{i}]: GPU {} vs finite difference {fd}",
                spec.name,
                gpu[k]
            );
            n += 1;
        }
    }
    assert_eq!(n, layout.count());
}

#[test]
fn the_evaluators_iwae_bound_matches_the_twin_of_the_whole_estimate() {
    // The f64 twin draws z through `FullCovariance::cpu_sample` and takes log q from z alone
    // (a triangular solve), so this checks the evaluator's rows, samples and log-mean-exp with
    // a full posterior end to end.
    let mut cfg = VaeConfig::classic(3, 4);
    cfg.enc_hidden = vec![7];
    cfg.dec_hidden = vec![6];
    cfg.latent = 3;
    cfg.posterior = PosteriorKind::Full;
    // Twice PyTorch's initial scale: lower entries and log L_ii² away from 0.
    let params: Vec<f32> = cfg.init_params(11).iter().map(|v| 2.0 * v).collect();
    common::evaluator_iwae_matches_the_twin(&cfg, &params);
}

/// Fits the encoder alone of a linear-Gaussian VAE (x = W z + b + σ n, decoder frozen at the
/// true W, b) by Adam on the host over the GPU's gradients of the encoder's parameters, and
/// returns (mean analytic ELBO, mean exact log p(x)) over the data, in nats per input.
///
/// The training loop is test-only: every step runs the model's forward and backward programs
/// (one draw per step from the GPU step state), reads the gradient back, updates only the
/// `encoder.*` entries of the flat buffer and writes it back. The ELBO is computed in closed
/// form in f64 from the learned encoder, E_q log p(x|z) = −P/2 log 2πσ² − (‖x − Wμ − b‖² +
/// tr(W S Wᵀ)) / 2σ², minus the KL, so no Monte Carlo noise enters the comparison.
fn fit_linear_gaussian(posterior: PosteriorKind) -> (f64, f64) {
    let ctx = ctx();
    let (dz, px, n, k) = (2usize, 3usize, 16usize, 8usize);
    let sigma = 0.5f64;
    // Nearly collinear columns: the posterior precision Λ = WᵀW/σ² + I is strongly coupled.
    let w = [[1.0, 0.8], [0.6, 0.7], [0.3, 0.1]];
    let bias = [0.2, -0.1, 0.05];
    let mut cfg = VaeConfig::classic(1, px);
    cfg.enc_hidden = vec![];
    cfg.dec_hidden = vec![];
    cfg.latent = dz;
    cfg.likelihood = wgvae::model::Likelihood::Gaussian {
        log_sigma: wgvae::model::GaussianSigma::Fixed(sigma.ln() as f32),
    };
    cfg.posterior = posterior;
    let layout = cfg.layout();
    let mut params = cfg.init_params(3);
    let dec_w = layout.get("decoder.fc1.weight").unwrap();
    assert_eq!(dec_w.shape, vec![dz, px], "decoder weight stored (in, out)");
    for i in 0..dz {
        for o in 0..px {
            params[dec_w.offset + i * px + o] = w[o][i] as f32;
        }
    }
    let dec_b = layout.get("decoder.fc1.bias").unwrap();
    for o in 0..px {
        params[dec_b.offset + o] = bias[o] as f32;
    }
    // Data from the model.
    let mut rng = wgvae::rng::HostRng::new(17);
    let mut x = vec![0.0f64; n * px];
    for r in 0..n {
        let z: Vec<f64> = (0..dz).map(|_| rng.normal()).collect();
        for o in 0..px {
            x[r * px + o] =
                bias[o] + (0..dz).map(|i| w[o][i] * z[i]).sum::<f64>() + sigma * rng.normal();
        }
    }
    let vae = Vae::new(ctx, &cfg, &params).unwrap();
    let act = vae.activations(ctx, n, k).unwrap();
    let g = vae.gradients(ctx, &act).unwrap();
    act.x
        .write(ctx, &x.iter().map(|&v| v as f32).collect::<Vec<_>>())
        .unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let mut prog = vae
        .forward_program(
            ctx,
            &act,
            Some(&g),
            1.0,
            5,
            RngStep::State(&state),
            Stream::Train,
        )
        .unwrap();
    prog.extend(vae.backward_program(ctx, &act, &g).unwrap());
    let enc: Vec<usize> = layout
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("encoder."))
        .flat_map(|t| t.offset..t.offset + t.len())
        .collect();
    let (mut m1, mut m2) = (vec![0.0f64; enc.len()], vec![0.0f64; enc.len()]);
    let mut theta: Vec<f64> = enc.iter().map(|&i| params[i] as f64).collect();
    let steps = 600;
    for t in 0..steps {
        state.set(ctx, t as u32, 0).unwrap();
        prog.run(ctx).unwrap();
        let grad = g.params.flat.read(ctx).unwrap();
        let lr = if t < 400 {
            0.05
        } else if t < 500 {
            0.01
        } else {
            0.002
        };
        let bc1 = 1.0 - 0.9f64.powi(t + 1);
        let bc2 = 1.0 - 0.999f64.powi(t + 1);
        for (j, &i) in enc.iter().enumerate() {
            let gj = grad[i] as f64;
            m1[j] = 0.9 * m1[j] + 0.1 * gj;
            m2[j] = 0.999 * m2[j] + 0.001 * gj * gj;
            theta[j] -= lr * (m1[j] / bc1) / ((m2[j] / bc2).sqrt() + 1e-8);
            params[i] = theta[j] as f32;
        }
        vae.params.flat.write(ctx, &params).unwrap();
    }
    // The learned encoder's output per row, in f64.
    let ew = layout.get("encoder.fc1.weight").unwrap();
    let eb = layout.get("encoder.fc1.bias").unwrap();
    let pq = cfg.posterior().param_dim();
    let mut q = vec![0.0f64; n * pq];
    for r in 0..n {
        for c in 0..pq {
            q[r * pq + c] = params[eb.offset + c] as f64
                + (0..px)
                    .map(|i| x[r * px + i] * params[ew.offset + i * pq + c] as f64)
                    .sum::<f64>();
        }
    }
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    // Marginal covariance of x: C = W Wᵀ + σ² I (3×3), its inverse and determinant.
    let mut c = [[0.0f64; 3]; 3];
    for a in 0..3 {
        for b in 0..3 {
            c[a][b] = (0..dz).map(|i| w[a][i] * w[b][i]).sum::<f64>()
                + if a == b { sigma * sigma } else { 0.0 };
        }
    }
    let det = c[0][0] * (c[1][1] * c[2][2] - c[1][2] * c[2][1])
        - c[0][1] * (c[1][0] * c[2][2] - c[1][2] * c[2][0])
        + c[0][2] * (c[1][0] * c[2][1] - c[1][1] * c[2][0]);
    let cof = |a: usize, b: usize| {
        let (r0, r1) = ((a + 1) % 3, (a + 2) % 3);
        let (c0, c1) = ((b + 1) % 3, (b + 2) % 3);
        c[r0][c0] * c[r1][c1] - c[r0][c1] * c[r1][c0]
    };
    let (mut elbo, mut logp) = (0.0, 0.0);
    for r in 0..n {
        let xr = &x[r * px..(r + 1) * px];
        let d: Vec<f64> = (0..px).map(|o| xr[o] - bias[o]).collect();
        // Cofactor inverse of the symmetric C: C⁻¹_ab = cof(b, a) / det.
        let quad: f64 = (0..3)
            .flat_map(|a| (0..3).map(move |b| (a, b)))
            .map(|(a, b)| d[a] * cof(b, a) / det * d[b])
            .sum();
        logp += -(px as f64) * half_log_2pi - 0.5 * det.ln() - 0.5 * quad;
        // q = N(μ, S), S = L Lᵀ (diagonal: exp(v)).
        let row = &q[r * pq..(r + 1) * pq];
        let mu = &row[..dz];
        let s: Vec<f64> = match posterior {
            PosteriorKind::Full => {
                let l = twin::cholesky_factor(row, 0, dz);
                (0..dz * dz)
                    .map(|ij| {
                        let (i, j) = (ij / dz, ij % dz);
                        (0..dz).map(|t| l[i * dz + t] * l[j * dz + t]).sum()
                    })
                    .collect()
            }
            _ => (0..dz * dz)
                .map(|ij| {
                    let (i, j) = (ij / dz, ij % dz);
                    if i == j { row[dz + i].exp() } else { 0.0 }
                })
                .collect(),
        };
        let resid: f64 = (0..px)
            .map(|o| (d[o] - (0..dz).map(|i| w[o][i] * mu[i]).sum::<f64>()).powi(2))
            .sum();
        // tr(W S Wᵀ) = Σ_o Σ_ij W_oi S_ij W_oj.
        let tr: f64 = (0..px)
            .map(|o| {
                (0..dz * dz)
                    .map(|ij| w[o][ij / dz] * s[ij] * w[o][ij % dz])
                    .sum::<f64>()
            })
            .sum();
        let rec = -(px as f64) * (half_log_2pi + sigma.ln()) - (resid + tr) / (2.0 * sigma * sigma);
        let kl = cfg.posterior().cpu_kl(row, 1)[0];
        elbo += rec - kl;
    }
    (elbo / n as f64, logp / n as f64)
}

#[test]
fn on_a_linear_gaussian_model_the_full_posterior_is_exact_and_the_diagonal_pays_the_mean_field_gap()
{
    // Λ = WᵀW/σ² + I for the W of `fit_linear_gaussian`; the mean-field gap of the diagonal
    // family is ½(Σ_i log Λ_ii − log det Λ), for every input.
    let w = [[1.0f64, 0.8], [0.6, 0.7], [0.3, 0.1]];
    let s2 = 0.25;
    let mut lam = [[0.0f64; 2]; 2];
    for i in 0..2 {
        for j in 0..2 {
            lam[i][j] = (0..3).map(|o| w[o][i] * w[o][j]).sum::<f64>() / s2
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    let gap = 0.5
        * (lam[0][0].ln() + lam[1][1].ln() - (lam[0][0] * lam[1][1] - lam[0][1] * lam[1][0]).ln());
    let (elbo_full, logp) = fit_linear_gaussian(PosteriorKind::Full);
    let (elbo_diag, logp_d) = fit_linear_gaussian(PosteriorKind::Diagonal);
    assert_eq!(logp, logp_d);
    eprintln!(
        "linear Gaussian: log p(x) {logp:.4}, full ELBO {elbo_full:.4} (gap {:.4}), diagonal \
         ELBO {elbo_diag:.4} (gap {:.4}, mean-field gap {gap:.4})",
        logp - elbo_full,
        logp - elbo_diag
    );
    assert!(
        gap > 0.3,
        "the posterior is not correlated enough to tell: gap {gap}"
    );
    assert!(
        elbo_full <= logp + 1e-9,
        "ELBO {elbo_full} above log p(x) {logp}"
    );
    assert!(
        logp - elbo_full < 0.01,
        "full: {elbo_full} vs log p(x) {logp}"
    );
    assert!(
        ((logp - elbo_diag) - gap).abs() < 0.02,
        "diagonal: gap {} vs mean-field gap {gap}",
        logp - elbo_diag
    );
}

#[test]
fn the_capacity_objective_trains_a_full_posterior_and_tc_vae_refuses_it() {
    use wgvae::train::objective::ObjectiveSpec;
    let ctx = ctx();
    let out = tmp("capacity");
    let cfg = TrainConfig {
        epochs: 1,
        objective: ObjectiveSpec::Capacity {
            gamma: 10.0,
            c_max: 5.0,
            steps: None,
        },
        ..full_cfg(&out, 1)
    };
    let mut t = Trainer::new(ctx, cfg).unwrap();
    let s = t.train().unwrap();
    let terms = &s.epochs[0].train_terms;
    let (kl, cap) = (terms["train_kl"], terms["train_capacity"]);
    eprintln!("full posterior, capacity objective: train KL {kl:.3}, capacity term {cap:.3}");
    assert!(
        kl.is_finite() && kl > 0.0 && cap.is_finite() && cap >= 0.0,
        "{terms:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    let cfg = TrainConfig {
        objective: ObjectiveSpec::TcVae {
            alpha: 1.0,
            gamma: 1.0,
            estimator: Default::default(),
        },
        ..full_cfg(&out, 1)
    };
    let e = Trainer::new(ctx, cfg)
        .err()
        .expect("tc-vae with a full posterior")
        .to_string();
    assert!(e.contains("tc-vae needs --posterior diagonal"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}
