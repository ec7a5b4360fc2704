//! The β-TCVAE kernels (shaders/tc.wgsl) against their f64 twin, the twin's gradient against
//! central differences, and the properties of the decomposition: the terms sum to the
//! single-sample KL, padded rows change nothing, identical posteriors give zero mutual
//! information and total correlation under stratified sampling.
//!
//! Shapes: B = 1, 2, 3, 5, 7, 13, 67 (the kernels take rows 4 to an invocation and 16
//! invocations to a workgroup: partial blocks, two workgroups), D = 1, 3, 5, 10 and 67 (the
//! dimensions go 8 at a time: partial chunks, and beyond the 8 the forward keeps in registers);
//! padded rows carry NaN, so a kernel that reads them fails the comparison. Each case runs with
//! N ≫ M and N = M + 1, where the stratified neighbour's weight stands out.

mod common;

use common::{ctx, data};
use wgvae::cpu::tc as twin;
use wgvae::gpu::{Program, Tensor};
use wgvae::model::GradWrite;
use wgvae::ops::tc::{Estimator, TcScratch, TcTerms, TcWeights, tc_backward, tc_forward};

const N: usize = 1000;
const ESTIMATORS: [Estimator; 2] = [Estimator::Mws, Estimator::Mss];
/// (B, valid rows, D): every shape with and without trailing padding, one with padding inside.
const SHAPES: [(usize, usize, usize); 11] = [
    (1, 1, 1),
    (2, 2, 3),
    (3, 2, 3),
    (7, 7, 5),
    (7, 4, 5),
    (13, 13, 10),
    (13, 9, 10),
    (67, 67, 3),
    (67, 40, 3),
    (5, 5, 67),
    (5, 3, 67),
];
const LOSS: TcWeights = TcWeights {
    alpha: 1.3,
    beta: 4.0,
    gamma: 0.7,
};

/// A batch: posterior parameters (B, 2D), samples (B, D), row weights (B,).
struct Batch {
    b: usize,
    d: usize,
    params: Vec<f32>,
    z: Vec<f32>,
    w: Vec<f32>,
}

impl Batch {
    /// The first `valid` rows valid with unequal weights around 1/valid, the others padding
    /// (weight 0, NaN parameters and samples). z = μ + σ·ε with ε ∈ [−2, 2).
    fn new(b: usize, valid: usize, d: usize, seed: u64) -> Batch {
        let mut w = vec![0.0f32; b];
        let jitter = data(seed, b, 0.5, 1.5);
        for i in 0..valid {
            w[i] = jitter[i] / valid as f32;
        }
        Self::with_weights(w, d, seed)
    }

    fn with_weights(w: Vec<f32>, d: usize, seed: u64) -> Batch {
        let b = w.len();
        let mu = data(seed + 1, b * d, -1.5, 1.5);
        let lv = data(seed + 2, b * d, -2.0, 1.0);
        let eps = data(seed + 3, b * d, -2.0, 2.0);
        let mut params = vec![f32::NAN; b * 2 * d];
        let mut z = vec![f32::NAN; b * d];
        for i in (0..b).filter(|&i| w[i] > 0.0) {
            for k in 0..d {
                params[i * 2 * d + k] = mu[i * d + k];
                params[i * 2 * d + d + k] = lv[i * d + k];
                z[i * d + k] = mu[i * d + k] + (0.5 * lv[i * d + k]).exp() * eps[i * d + k];
            }
        }
        Batch { b, d, params, z, w }
    }

    fn valid(&self, i: usize) -> bool {
        self.w[i] > 0.0
    }

    fn twin(&self, est: Estimator) -> twin::TcTwin {
        self.twin_with(est, N)
    }

    fn twin_with(&self, est: Estimator, n: usize) -> twin::TcTwin {
        twin::tc_forward(
            &f64s(&self.params),
            &f64s(&self.z),
            &f64s(&self.w),
            self.d,
            n,
            est,
        )
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The batch on the GPU with the forward pass prepared.
struct Gpu {
    params: Tensor<f32>,
    z: Tensor<f32>,
    w: Tensor<f32>,
    scratch: TcScratch,
    mi: Tensor<f32>,
    tc: Tensor<f32>,
    dimkl: Tensor<f32>,
}

impl Gpu {
    fn new(batch: &Batch) -> Gpu {
        let ctx = ctx();
        let (b, d) = (batch.b, batch.d);
        Gpu {
            params: Tensor::from_slice(ctx, "params", &[b, 2 * d], &batch.params).unwrap(),
            z: Tensor::from_slice(ctx, "z", &[b, d], &batch.z).unwrap(),
            w: Tensor::from_slice(ctx, "w", &[b], &batch.w).unwrap(),
            scratch: TcScratch::new(ctx, b, d).unwrap(),
            mi: Tensor::zeros(ctx, "mi", &[b]).unwrap(),
            tc: Tensor::zeros(ctx, "tc", &[b]).unwrap(),
            dimkl: Tensor::zeros(ctx, "dimkl", &[b]).unwrap(),
        }
    }

    fn terms(&self) -> TcTerms<'_> {
        TcTerms {
            mi: &self.mi,
            tc: &self.tc,
            dimkl: &self.dimkl,
        }
    }

    fn forward(&self, est: Estimator) -> Program {
        self.forward_with(est, N)
    }

    fn forward_with(&self, est: Estimator, n: usize) -> Program {
        tc_forward(
            ctx(),
            "tc",
            &self.params,
            &self.z,
            &self.w,
            n,
            est,
            &self.scratch,
            self.terms(),
        )
        .unwrap()
    }

    /// (mi, tc, dimkl, densities (B, 4), lse_dim (B, D)) as the GPU holds them.
    fn read(&self) -> [Vec<f32>; 5] {
        let ctx = ctx();
        let stats_flat = self.scratch.stats.read(ctx).unwrap();
        let stats: Vec<&[f32]> = stats_flat.chunks(self.scratch.stats.shape()[1]).collect();
        [
            self.mi.read(ctx).unwrap(),
            self.tc.read(ctx).unwrap(),
            self.dimkl.read(ctx).unwrap(),
            stats.iter().flat_map(|r| r[..4].to_vec()).collect(),
            stats.iter().flat_map(|r| r[4..].to_vec()).collect(),
        ]
    }
}

/// Compares the valid rows' values with the twin and requires exact zeros in padded rows.
/// `cols` values per row. Tolerance atol + rtol·|want|.
fn check_rows(
    what: &str,
    batch: &Batch,
    cols: usize,
    got: &[f32],
    want: &[f64],
    atol: f64,
    rtol: f64,
) {
    assert_eq!(got.len(), batch.b * cols, "{what}: length");
    let mut worst = (0.0f64, 0usize);
    let mut bad = Vec::new();
    for i in 0..batch.b {
        for c in 0..cols {
            let k = i * cols + c;
            if !batch.valid(i) {
                assert_eq!(
                    got[k].to_bits(),
                    0,
                    "{what}: padded row {i} col {c} is {}",
                    got[k]
                );
                continue;
            }
            let err = (got[k] as f64 - want[k]).abs();
            // NaN fails too
            let within = err <= atol + rtol * want[k].abs();
            if !within {
                if bad.len() < 8 {
                    bad.push(format!(
                        "  [{i}, {c}] got {:e} want {:e} err {err:e}",
                        got[k], want[k]
                    ));
                }
                worst = (f64::INFINITY, k);
            } else if err > worst.0 {
                worst = (err, k);
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: mismatches (atol {atol:e}, rtol {rtol:e}), worst at [{}]\n{}",
        worst.1,
        bad.join("\n")
    );
}

fn densities(t: &twin::TcTwin) -> Vec<f64> {
    (0..t.mi.len())
        .flat_map(|i| [t.logqz_condx[i], t.logqz[i], t.logqz_product[i], t.logpz[i]])
        .collect()
}

// Forward tolerance: the pairwise log-densities reach a few hundred nats per dimension (|z_i −
// μ_j| up to ~6 with σ² down to e^−2); an f32 sum of D of them carries ~1e-7 relative error
// of that magnitude, which the log-sum-exps pass on (lavapipe: 5e-5 at most, at D = 67). A
// wrong weight, index or term is off by far more (ln 2 at least).
const FWD_ATOL: f64 = 5e-4;
const FWD_RTOL: f64 = 1e-5;

/// Both estimators, each with the data set much larger than the batch and with N = M + 1 (where
/// the stratified weights differ most: the neighbour's weight is 2/(M + 1) times the others').
fn estimators(valid: usize) -> [(Estimator, usize); 4] {
    [
        (Estimator::Mws, N),
        (Estimator::Mss, N),
        (Estimator::Mws, valid + 1),
        (Estimator::Mss, valid + 1),
    ]
}

#[test]
fn forward_matches_twin() {
    for (case, &(b, valid, d)) in SHAPES.iter().enumerate() {
        let batch = Batch::new(b, valid, d, 100 + case as u64);
        let gpu = Gpu::new(&batch);
        for (est, n) in estimators(valid) {
            gpu.forward_with(est, n).run(ctx()).unwrap();
            let [mi, tc, dimkl, dens, lse] = gpu.read();
            let want = batch.twin_with(est, n);
            let what = |x: &str| format!("{x} {est:?} N={n} B={b} valid={valid} D={d}");
            check_rows(&what("mi"), &batch, 1, &mi, &want.mi, FWD_ATOL, FWD_RTOL);
            check_rows(&what("tc"), &batch, 1, &tc, &want.tc, FWD_ATOL, FWD_RTOL);
            check_rows(
                &what("dimkl"),
                &batch,
                1,
                &dimkl,
                &want.dimkl,
                FWD_ATOL,
                FWD_RTOL,
            );
            check_rows(
                &what("densities"),
                &batch,
                4,
                &dens,
                &densities(&want),
                FWD_ATOL,
                FWD_RTOL,
            );
            check_rows(
                &what("lse_dim"),
                &batch,
                d,
                &lse,
                &want.lse_dim,
                FWD_ATOL,
                FWD_RTOL,
            );
        }
    }
}

#[test]
fn backward_matches_twin() {
    let ctx = ctx();
    for (case, &(b, valid, d)) in SHAPES.iter().enumerate() {
        let batch = Batch::new(b, valid, d, 200 + case as u64);
        let gpu = Gpu::new(&batch);
        let dz_base = data(300 + case as u64, b * d, -1.0, 1.0);
        let dp_base = data(400 + case as u64, b * 2 * d, -1.0, 1.0);
        for (est, n) in estimators(valid) {
            let (gz, gp) = twin::tc_backward(
                &f64s(&batch.params),
                &f64s(&batch.z),
                &f64s(&batch.w),
                d,
                n,
                est,
                LOSS,
            );
            for write in [GradWrite::Store, GradWrite::Accumulate] {
                let dz = Tensor::from_slice(ctx, "dz", &[b, d], &dz_base).unwrap();
                let dp = Tensor::from_slice(ctx, "dparams", &[b, 2 * d], &dp_base).unwrap();
                let mut prog = gpu.forward_with(est, n);
                prog.extend(
                    tc_backward(
                        ctx,
                        "tc",
                        &gpu.params,
                        &gpu.z,
                        &gpu.w,
                        n,
                        est,
                        &gpu.scratch,
                        LOSS,
                        &dz,
                        &dp,
                        write,
                    )
                    .unwrap(),
                );
                prog.run(ctx).unwrap();
                let dz_got = dz.read(ctx).unwrap();
                let dp_got = dp.read(ctx).unwrap();
                let acc = write == GradWrite::Accumulate;
                let what =
                    |x: &str| format!("{x} {est:?} N={n} {write:?} B={b} valid={valid} D={d}");
                // The gradient sums B terms per element, each up to |G|·|z − μ|/σ² ≈ 6·e²
                // times a softmax weight whose f32 exponent carries the forward error (see
                // FWD_ATOL). Tolerance relative to the largest gradient element of the case:
                // lavapipe stays within 1.1e-6 of it; 5e-5 leaves room for the looser exp of
                // other adapters.
                let scale_z = gz.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let scale_p = gp.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let mut want_dz = Vec::with_capacity(b * d);
                let mut want_dp = Vec::with_capacity(b * 2 * d);
                for i in 0..b {
                    for k in 0..d {
                        let base = dz_base[i * d + k];
                        if batch.valid(i) {
                            want_dz.push(base as f64 + gz[i * d + k]);
                        } else {
                            // padded rows: dz untouched, bit for bit
                            assert_eq!(
                                dz_got[i * d + k].to_bits(),
                                base.to_bits(),
                                "{}",
                                what("dz")
                            );
                            want_dz.push(base as f64);
                        }
                    }
                    for k in 0..2 * d {
                        let base = if acc { dp_base[i * 2 * d + k] } else { 0.0 };
                        if batch.valid(i) {
                            want_dp.push(base as f64 + gp[i * 2 * d + k]);
                        } else {
                            // padded rows: 0 stored or nothing added, bit for bit
                            assert_eq!(
                                dp_got[i * 2 * d + k].to_bits(),
                                base.to_bits(),
                                "{} padded row {i}",
                                what("dparams")
                            );
                            want_dp.push(base as f64);
                        }
                    }
                }
                common::assert_close(&what("dz"), &dz_got, &want_dz, 5e-5 * scale_z + 1e-6, 1e-6);
                common::assert_close(
                    &what("dparams"),
                    &dp_got,
                    &want_dp,
                    5e-5 * scale_p + 1e-6,
                    1e-6,
                );
            }
        }
    }
}

/// The twin's analytic gradient against central differences of the twin's loss, in f64, for
/// every element (padded rows included: their gradient is 0 and the loss does not change).
#[test]
fn twin_gradient_matches_finite_differences() {
    let interior = [0.2, 0.0, 0.3, 0.1, 0.0, 0.25];
    for &(b, valid, d) in &[(1, 1, 2), (4, 4, 3), (6, 4, 3), (5, 3, 1), (6, 0, 2)] {
        for (est, n) in estimators(b) {
            // valid = 0: the interior-padding weights above (rows 1 and 4 padded)
            let batch = if valid == 0 {
                Batch::with_weights(interior.to_vec(), d, 550)
            } else {
                Batch::new(b, valid, d, 500 + b as u64)
            };
            // Padded rows finite here, so that a perturbation of them could show.
            let mut params = f64s(&batch.params);
            let mut z = f64s(&batch.z);
            for v in params.iter_mut().chain(z.iter_mut()) {
                if v.is_nan() {
                    *v = 0.3;
                }
            }
            let w = f64s(&batch.w);
            let loss = |p: &[f64], z: &[f64]| {
                twin::tc_loss(&twin::tc_forward(p, z, &w, d, n, est), &w, LOSS)
            };
            let (gz, gp) = twin::tc_backward(&params, &z, &w, d, n, est, LOSS);
            let h = 1e-5;
            let check = |what: &str, k: usize, analytic: f64, fd: f64| {
                // Truncation error h²·f'''/6 and rounding 1e-16·|loss|/h: both far below 1e-6.
                assert!(
                    (analytic - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "{est:?} N={n} B={b} valid={valid} D={d} {what}[{k}]: analytic {analytic:e}, central difference {fd:e}"
                );
            };
            for k in 0..z.len() {
                let mut zp = z.clone();
                zp[k] += h;
                let mut zm = z.clone();
                zm[k] -= h;
                check(
                    "dz",
                    k,
                    gz[k],
                    (loss(&params, &zp) - loss(&params, &zm)) / (2.0 * h),
                );
            }
            for k in 0..params.len() {
                let mut pp = params.clone();
                pp[k] += h;
                let mut pm = params.clone();
                pm[k] -= h;
                check(
                    "dparams",
                    k,
                    gp[k],
                    (loss(&pp, &z) - loss(&pm, &z)) / (2.0 * h),
                );
            }
            // Not a vacuous comparison: the gradient is far from 0.
            assert!(
                gz.iter().chain(&gp).any(|g| g.abs() > 1e-2),
                "{est:?}: zero gradient"
            );
        }
    }
}

#[test]
fn terms_sum_to_the_single_sample_kl() {
    let batch = Batch::new(13, 11, 5, 600);
    let gpu = Gpu::new(&batch);
    for est in ESTIMATORS {
        gpu.forward(est).run(ctx()).unwrap();
        let [mi, tc, dimkl, dens, _] = gpu.read();
        let want = batch.twin(est);
        let (mut max_term, mut max_diff) = ([0.0f32; 3], [0.0f32; 3]);
        for i in (0..batch.b).filter(|&i| batch.valid(i)) {
            let (q, a, p, r) = (
                dens[4 * i],
                dens[4 * i + 1],
                dens[4 * i + 2],
                dens[4 * i + 3],
            );
            let sum = mi[i] as f64 + tc[i] as f64 + dimkl[i] as f64;
            // Each term is a difference of two of the four f32 densities, rounded once: the
            // identity holds to a few ulp of the largest of them.
            let ulp = q.abs().max(a.abs()).max(p.abs()).max(r.abs()) as f64 * f32::EPSILON as f64;
            assert!(
                (sum - (q as f64 - r as f64)).abs() <= 4.0 * ulp,
                "{est:?} row {i}: mi + tc + dimkl = {sum}, log q(z|x) - log p(z) = {}",
                q - r
            );
            let kl = want.logqz_condx[i] - want.logpz[i];
            assert!(
                (sum - kl).abs() <= 3.0 * FWD_ATOL,
                "{est:?} row {i}: {sum} vs twin {kl}"
            );
            for (m, v) in max_term.iter_mut().zip([mi[i], tc[i], dimkl[i]]) {
                *m = m.max(v.abs());
            }
            for (m, v) in
                max_diff
                    .iter_mut()
                    .zip([mi[i] - tc[i], tc[i] - dimkl[i], dimkl[i] - mi[i]])
            {
                *m = m.max(v.abs());
            }
        }
        // The identity is not a tautology of equal or zero terms.
        assert!(
            max_term.iter().all(|&m| m > 0.1),
            "{est:?}: terms {max_term:?}"
        );
        assert!(
            max_diff.iter().all(|&m| m > 0.1),
            "{est:?}: differences {max_diff:?}"
        );
    }
}

/// Padded rows (anywhere in the batch) give the same values and gradients in the other rows as
/// the batch without them.
#[test]
fn padding_rows_change_nothing() {
    let ctx = ctx();
    let d = 4;
    let w = vec![0.1, 0.0, 0.2, 0.3, 0.0, 0.0, 0.15, 0.25, 0.0];
    let padded = Batch::with_weights(w.clone(), d, 700);
    let keep: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0.0).collect();
    let compact = Batch {
        b: keep.len(),
        d,
        params: keep
            .iter()
            .flat_map(|&i| padded.params[i * 2 * d..(i + 1) * 2 * d].to_vec())
            .collect(),
        z: keep
            .iter()
            .flat_map(|&i| padded.z[i * d..(i + 1) * d].to_vec())
            .collect(),
        w: keep.iter().map(|&i| w[i]).collect(),
    };
    for est in ESTIMATORS {
        let mut results = Vec::new();
        for batch in [&padded, &compact] {
            let gpu = Gpu::new(batch);
            let dz = Tensor::<f32>::zeros(ctx, "dz", &[batch.b, d]).unwrap();
            let dp = Tensor::<f32>::zeros(ctx, "dp", &[batch.b, 2 * d]).unwrap();
            let mut prog = gpu.forward(est);
            prog.extend(
                tc_backward(
                    ctx,
                    "tc",
                    &gpu.params,
                    &gpu.z,
                    &gpu.w,
                    N,
                    est,
                    &gpu.scratch,
                    LOSS,
                    &dz,
                    &dp,
                    GradWrite::Store,
                )
                .unwrap(),
            );
            prog.run(ctx).unwrap();
            let [mi, tc, dimkl, _, _] = gpu.read();
            // The twin, which handles padding wherever it sits, agrees with either batch.
            let want = batch.twin(est);
            check_rows("mi", batch, 1, &mi, &want.mi, FWD_ATOL, FWD_RTOL);
            check_rows("tc", batch, 1, &tc, &want.tc, FWD_ATOL, FWD_RTOL);
            check_rows("dimkl", batch, 1, &dimkl, &want.dimkl, FWD_ATOL, FWD_RTOL);
            results.push([mi, tc, dimkl, dz.read(ctx).unwrap(), dp.read(ctx).unwrap()]);
        }
        for (t, name) in ["mi", "tc", "dimkl", "dz", "dparams"].iter().enumerate() {
            let per_row = results[0][t].len() / w.len();
            let got: Vec<f32> = keep
                .iter()
                .flat_map(|&i| results[0][t][i * per_row..(i + 1) * per_row].to_vec())
                .collect();
            // Same operations in the same order for the valid rows: equal up to the order of
            // the workgroup's tree sums, which the padding shifts.
            let want = f64s(&results[1][t]);
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            common::assert_close(&format!("{name} {est:?}"), &got, &want, 1e-5 * scale, 0.0);
        }
    }
}

/// q(z|x) the same N(0, I) for every row: stratified sampling estimates q(z) exactly (its
/// weights sum to 1 per row), so mi = tc = dimkl = 0; weighted sampling's 1/(M·N) weights give
/// mi = ln N, tc = (D − 1)·ln N, dimkl = −D·ln N.
#[test]
fn identical_posteriors() {
    for &(b, valid, d) in &[(7, 7, 3), (67, 50, 5), (2, 2, 1), (4, 1, 3)] {
        let w: Vec<f32> = (0..b).map(|i| if i < valid { 1.0 } else { 0.0 }).collect();
        let mut batch = Batch::with_weights(w, d, 800);
        for i in 0..valid {
            batch.params[i * 2 * d..(i + 1) * 2 * d].fill(0.0);
        }
        batch.z = batch
            .z
            .iter()
            .map(|v| if v.is_nan() { *v } else { v * 1.3 })
            .collect();
        let gpu = Gpu::new(&batch);
        let ln_n = (N as f64).ln();
        for est in ESTIMATORS {
            gpu.forward(est).run(ctx()).unwrap();
            let [mi, tc, dimkl, _, _] = gpu.read();
            let dd = d as f64;
            let (want_mi, want_tc, want_dkl) = if est == Estimator::Mss && valid >= 2 {
                (0.0, 0.0, 0.0)
            } else {
                (ln_n, (dd - 1.0) * ln_n, -dd * ln_n)
            };
            for i in 0..valid {
                for (name, got, want) in [
                    ("mi", mi[i], want_mi),
                    ("tc", tc[i], want_tc),
                    ("dimkl", dimkl[i], want_dkl),
                ] {
                    // log-sum-exps of M equal f32 values: ~1e-6 per dimension.
                    assert!(
                        (got as f64 - want).abs() < 1e-4 * (1.0 + dd),
                        "{est:?} B={b} valid={valid} D={d} row {i}: {name} {got}, want {want}"
                    );
                }
            }
        }
    }
}

/// The stratified weights: every valid row sums to 1, and for trailing padding the entries are
/// 1/N on the diagonal, (N − m)/(N·m) at (i, i + 1 mod M), 1/m elsewhere.
#[test]
fn stratified_weight_matrix() {
    for &(b, valid, n) in &[(6, 6, 1000), (6, 4, 1000), (3, 2, 2), (5, 5, 5), (4, 3, 1)] {
        let w: Vec<f64> = (0..b).map(|i| if i < valid { 1.0 } else { 0.0 }).collect();
        let c = twin::log_weight_matrix(&w, n, Estimator::Mss);
        let nn = n.max(valid) as f64;
        let m = (valid - 1) as f64;
        for i in 0..b {
            for j in 0..b {
                let got = c[i * b + j].exp();
                let want = if i >= valid || j >= valid {
                    0.0
                } else if i == j {
                    1.0 / nn
                } else if j == (i + 1) % valid {
                    (nn - m) / (nn * m)
                } else {
                    1.0 / m
                };
                assert!(
                    (got - want).abs() < 1e-12,
                    "B={b} M={valid} N={n} W[{i},{j}] = {got}, want {want}"
                );
            }
            if i < valid {
                let row: f64 = (0..b).map(|j| c[i * b + j].exp()).sum();
                assert!(
                    (row - 1.0).abs() < 1e-12,
                    "B={b} M={valid} N={n} row {i} sums to {row}"
                );
            }
        }
    }
}

/// M = 1: both estimators use W = [1/N]; finite terms and gradients, equal to the twin's.
#[test]
fn a_single_valid_row_is_finite() {
    let ctx = ctx();
    let d = 3;
    let batch = Batch::new(4, 1, d, 900);
    let gpu = Gpu::new(&batch);
    let ln_n = (N as f64).ln();
    for est in ESTIMATORS {
        let dz = Tensor::<f32>::zeros(ctx, "dz", &[4, d]).unwrap();
        let dp = Tensor::<f32>::zeros(ctx, "dp", &[4, 2 * d]).unwrap();
        let mut prog = gpu.forward(est);
        prog.extend(
            tc_backward(
                ctx,
                "tc",
                &gpu.params,
                &gpu.z,
                &gpu.w,
                N,
                est,
                &gpu.scratch,
                LOSS,
                &dz,
                &dp,
                GradWrite::Store,
            )
            .unwrap(),
        );
        prog.run(ctx).unwrap();
        let [mi, tc, _, _, _] = gpu.read();
        assert!((mi[0] as f64 - ln_n).abs() < 1e-4, "{est:?}: mi {}", mi[0]);
        assert!(
            (tc[0] as f64 - 2.0 * ln_n).abs() < 1e-4,
            "{est:?}: tc {}",
            tc[0]
        );
        let (gz, gp) = twin::tc_backward(
            &f64s(&batch.params),
            &f64s(&batch.z),
            &f64s(&batch.w),
            d,
            N,
            est,
            LOSS,
        );
        let mut gz = gz;
        let mut gp = gp;
        gz.truncate(d);
        gp.truncate(2 * d);
        let dz_got = dz.read(ctx).unwrap();
        let dp_got = dp.read(ctx).unwrap();
        assert!(dz_got.iter().chain(&dp_got).all(|v| v.is_finite()));
        common::assert_close("dz row 0", &dz_got[..d], &gz, 1e-5, 1e-4);
        common::assert_close("dparams row 0", &dp_got[..2 * d], &gp, 1e-5, 1e-4);
    }
}

#[test]
fn bad_operands_are_named() {
    let ctx = ctx();
    let batch = Batch::new(5, 5, 3, 1000);
    let gpu = Gpu::new(&batch);
    let forward = |z: &Tensor<f32>, w: &Tensor<f32>, scratch: &TcScratch, n: usize| {
        tc_forward(
            ctx,
            "tc",
            &gpu.params,
            z,
            w,
            n,
            Estimator::Mss,
            scratch,
            gpu.terms(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let z_bad = Tensor::<f32>::zeros(ctx, "z", &[5, 4]).unwrap();
    let w_bad = Tensor::<f32>::zeros(ctx, "w", &[4]).unwrap();
    let scratch_bad = TcScratch::new(ctx, 5, 2).unwrap();
    for (e, want) in [
        (forward(&z_bad, &gpu.w, &gpu.scratch, N), "samples [5, 4]"),
        (
            forward(&gpu.z, &w_bad, &gpu.scratch, N),
            "row weights [4] for 5 rows",
        ),
        (
            forward(&gpu.z, &gpu.w, &scratch_bad, N),
            "scratch for (B, D) = (5, 2)",
        ),
        (forward(&gpu.z, &gpu.w, &gpu.scratch, 0), "data set size 0"),
    ] {
        assert!(e.contains(want), "`{e}` lacks `{want}`");
    }
    let short = Tensor::<f32>::zeros(ctx, "mi", &[3]).unwrap();
    let e = tc_forward(
        ctx,
        "tc",
        &gpu.params,
        &gpu.z,
        &gpu.w,
        N,
        Estimator::Mws,
        &gpu.scratch,
        TcTerms {
            mi: &gpu.mi,
            tc: &short,
            dimkl: &gpu.dimkl,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("term `tc` [3]"), "{e}");
    let dz = Tensor::<f32>::zeros(ctx, "dz", &[5, 3]).unwrap();
    let dp_bad = Tensor::<f32>::zeros(ctx, "dp", &[5, 3]).unwrap();
    let e = tc_backward(
        ctx,
        "tc",
        &gpu.params,
        &gpu.z,
        &gpu.w,
        N,
        Estimator::Mss,
        &gpu.scratch,
        LOSS,
        &dz,
        &dp_bad,
        GradWrite::Store,
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("dparams [5, 3]"), "{e}");
    let e = tc_backward(
        ctx,
        "tc",
        &gpu.params,
        &gpu.z,
        &gpu.w,
        N,
        Estimator::Mss,
        &gpu.scratch,
        TcWeights {
            beta: f32::NAN,
            ..LOSS
        },
        &dz,
        &Tensor::<f32>::zeros(ctx, "dp", &[5, 6]).unwrap(),
        GradWrite::Store,
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("beta"), "{e}");
    let e = TcScratch::new(ctx, 0, 3)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch 0"), "{e}");
}
