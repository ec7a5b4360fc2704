//! The inverse autoregressive flow's kernels: every kernel against its f64 twin on shapes that
//! no workgroup size divides (with the masked-out weights and the padding zero or NaN, which
//! the kernels must never read), the backward stored and accumulated through every path, the
//! twin's backward against central differences, the autoregressive structure and log q against
//! the dense Jacobian, the exact inverse, and the size checks.

mod common;

use common::{assert_close, ctx, data};
use wgvae::cpu;
use wgvae::cpu::posterior_iaf as twin;
use wgvae::cpu::posterior_planar::log_abs_det;
use wgvae::gpu::{Program, Tensor};
use wgvae::ops::posterior_iaf::{
    IafSizes, MAX_FLOWS, MAX_HIDDEN, MAX_LATENT, iaf_backward, iaf_forward, iaf_kl, iaf_log_weights,
};
use wgvae::ops::posterior_planar::{KL_NOISE, LogDetWeight, Noise, planar_forward};
use wgvae::ops::reparam::{RngStep, Stream};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn run(p: Program) {
    p.run(ctx()).unwrap();
}

fn one(d: wgvae::gpu::Dispatch) -> Program {
    let mut p = Program::new();
    p.push(d);
    p
}

fn zeros(shape: &[usize]) -> Tensor<f32> {
    Tensor::<f32>::zeros(ctx(), "t", shape).unwrap()
}

fn sizes(latent: usize, flows: usize, hidden: usize) -> IafSizes {
    IafSizes {
        latent,
        flows,
        hidden,
    }
}

/// q (B, P): μ, log σ² and the context h in [−1, 1).
fn params(seed: u64, b: usize, sz: IafSizes) -> Vec<f32> {
    data(seed, b * sz.param_dim().unwrap(), -1.0, 1.0)
}

/// What each element of the own region is: a weight, a masked-out weight (not a connection) or
/// padding. Built from the masks' definition, independently of the kernels.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Slot {
    Weight,
    Masked,
    Padding,
}

fn slots(sz: IafSizes) -> Vec<Slot> {
    let (offs, len) = sz.own_offsets().unwrap();
    let (d, h) = (sz.latent, sz.hidden);
    let mut out = vec![Slot::Padding; len];
    let lens = [h * d, h * h, h, d * h, d, d * h, d];
    for (t, o) in offs.iter().enumerate() {
        for k in 0..7 {
            out[o[k]..o[k] + lens[k]].fill(Slot::Weight);
        }
        for j in 0..h {
            let mj = sz.hidden_degree(j);
            for i in 0..d {
                let deg = sz.degree(t, i);
                if deg > mj {
                    out[o[0] + j * d + i] = Slot::Masked;
                } else {
                    out[o[3] + i * h + j] = Slot::Masked;
                    out[o[5] + i * h + j] = Slot::Masked;
                }
            }
        }
    }
    out
}

/// The own region: w1 in ±1/√D, c1, wm, ws in ±1/√H, b1, bm in ±0.5, bs in [0.5, 2.5);
/// masked-out entries and padding set to `fill`.
fn weights(seed: u64, sz: IafSizes, fill: f32) -> Vec<f32> {
    let (offs, len) = sz.own_offsets().unwrap();
    let (d, h) = (sz.latent, sz.hidden);
    let (a, c) = (1.0 / (d as f32).sqrt(), 1.0 / (h as f32).sqrt());
    let parts = [
        (h * d, -a, a),
        (h * h, -c, c),
        (h, -0.5, 0.5),
        (d * h, -c, c),
        (d, -0.5, 0.5),
        (d * h, -c, c),
        (d, 0.5, 2.5),
    ];
    let mut w = vec![fill; len];
    for (t, o) in offs.iter().enumerate() {
        for (k, &(n, lo, hi)) in parts.iter().enumerate() {
            let v = data(seed + (7 * t + k) as u64, n, lo, hi);
            w[o[k]..o[k] + n].copy_from_slice(&v);
        }
    }
    for (x, s) in w.iter_mut().zip(slots(sz)) {
        if s != Slot::Weight {
            *x = fill;
        }
    }
    w
}

/// [`weights`] with random values also where the masks cut a connection, so that only the
/// masks make a step autoregressive.
fn unmasked_weights(seed: u64, sz: IafSizes) -> Vec<f32> {
    let mut w = weights(seed, sz, 0.0);
    let noise = data(seed + 99, w.len(), -1.0, 1.0);
    for ((x, s), v) in w.iter_mut().zip(slots(sz)).zip(noise) {
        if s == Slot::Masked {
            *x = v;
        }
    }
    w
}

/// A backward's paths: (through z_K, Some((scale, volume)) with the log-determinants,
/// accumulate).
type Variant = (bool, Option<(f32, bool)>, bool);

/// (D, K, H, B, S): every value of each appears, none a multiple of a workgroup size.
const CASES: [(usize, usize, usize, usize, usize); 8] = [
    (1, 1, 1, 1, 1),
    (3, 2, 5, 7, 3),
    (7, 3, 17, 67, 1),
    (13, 1, 17, 7, 3),
    (13, 3, 5, 1, 3),
    (7, 2, 1, 67, 3),
    (3, 3, 17, 1, 1),
    (1, 2, 5, 67, 1),
];

#[test]
fn every_kernel_matches_its_twin() {
    let ctx = ctx();
    for (n, &(d, k, h, b, s)) in CASES.iter().enumerate() {
        let sz = sizes(d, k, h);
        let what = format!("D={d} K={k} H={h} B={b} S={s}");
        let p = sz.param_dim().unwrap();
        let (_, len) = sz.own_offsets().unwrap();
        let slot = slots(sz);
        let seed = 1000 * (n as u64 + 1);
        // Odd cases poison what the kernels must never read.
        let poison = n % 2 == 1;
        let q_h = params(seed, b, sz);
        let w_h = weights(seed + 1, sz, if poison { f32::NAN } else { 0.0 });
        if !poison {
            let mut masked = weights(seed + 1, sz, 0.0);
            masked
                .iter_mut()
                .zip(&slot)
                .filter(|(_, s)| **s == Slot::Masked)
                .for_each(|(x, _)| *x = 1.0);
            twin::init_mask(sz, &mut masked);
            assert_eq!(masked, w_h, "{what}: init_mask");
        }
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let w = Tensor::from_slice(ctx, "w", &[len], &w_h).unwrap();
        let (q64, w64) = (f64s(&q_h), f64s(&w_h));

        // The forward with ε drawn in-shader, then given.
        let (z, eps, z2) = (zeros(&[s * b, d]), zeros(&[s * b, d]), zeros(&[s * b, d]));
        let rng_seed = 7 + n as u64;
        let noise = Noise::Draw {
            seed: rng_seed,
            step: RngStep::Fixed(3),
            stream: Stream::Train,
        };
        run(one(
            iaf_forward(ctx, "fwd", &q, &w, sz, &eps, &z, s, noise).unwrap()
        ));
        let eps_h = eps.read(ctx).unwrap();
        let eps_r = cpu::reparam_eps(s * b * d, rng_seed, 3, Stream::Train as u32);
        assert_close(&format!("eps {what}"), &eps_h, &eps_r, 2e-5, 2e-5);
        let e64 = f64s(&eps_h);
        let (z_r, _) = twin::iaf_forward(&q64, &w64, &e64, b, sz, s);
        let z_h = z.read(ctx).unwrap();
        assert_close(&format!("z {what}"), &z_h, &z_r, 5e-5, 5e-5);
        run(one(iaf_forward(
            ctx,
            "fwd",
            &q,
            &w,
            sz,
            &eps,
            &z2,
            s,
            Noise::Given,
        )
        .unwrap()));
        assert_eq!(z2.read(ctx).unwrap(), z_h, "{what}: z from the given ε");

        // The log-weights from the kernel's z_K.
        let nll_h = data(seed + 2, s * b, 1.0, 9.0);
        let nll = Tensor::from_slice(ctx, "nll", &[s * b], &nll_h).unwrap();
        let lw = zeros(&[s * b]);
        run(one(iaf_log_weights(
            ctx, "lw", &q, &w, sz, &nll, &z, &eps, &lw, s,
        )
        .unwrap()));
        let want = twin::iaf_log_weights(&q64, &w64, &f64s(&nll_h), &e64, b, sz, s);
        assert_close(
            &format!("log w {what}"),
            &lw.read(ctx).unwrap(),
            &want,
            1e-4,
            1e-5,
        );

        // The backward: every path, stored and accumulated.
        let dz_h = data(seed + 3, s * b * d, -1.0, 1.0);
        let dz = Tensor::from_slice(ctx, "dz", &[s * b, d], &dz_h).unwrap();
        let cw_h = data(seed + 4, s * b, -1.5, 1.5);
        let cw = Tensor::from_slice(ctx, "cw", &[s * b], &cw_h).unwrap();
        let dq_base = data(seed + 5, b * p, -1.0, 1.0);
        let dw_base = data(seed + 6, len, -1.0, 1.0);
        let scratch = zeros(&[sz.scratch_len(b, s).unwrap()]);
        let variants: [Variant; 5] = [
            (true, None, false),
            (false, Some((1.0, false)), true),
            (false, Some((-1.0, true)), false),
            (true, Some((-1.0, true)), true),
            (true, Some((0.5, false)), false),
        ];
        for (dz_on, c, acc) in variants {
            let mode = format!("{what} dz={dz_on} logdet={c:?} accumulate={acc}");
            let dq = Tensor::from_slice(ctx, "dq", &[b, p], &dq_base).unwrap();
            let dw = Tensor::from_slice(ctx, "dw", &[len], &dw_base).unwrap();
            let weight = c.map(|(scale, volume)| LogDetWeight {
                weights: &cw,
                scale,
                volume,
            });
            run(iaf_backward(
                ctx,
                "bwd",
                &q,
                &w,
                sz,
                &eps,
                dz_on.then_some(&dz),
                weight,
                &dq,
                &dw,
                &scratch,
                s,
                acc,
            )
            .unwrap());
            let (dz64, cw64) = (f64s(&dz_h), f64s(&cw_h));
            let (gq, gw) = twin::iaf_backward(
                &q64,
                &w64,
                &e64,
                dz_on.then_some(dz64.as_slice()),
                c.map(|(scale, volume)| (cw64.as_slice(), scale as f64, volume)),
                b,
                sz,
                s,
            );
            let plus = |g: Vec<f64>, base: &[f32]| -> Vec<f64> {
                g.iter()
                    .zip(base)
                    .map(|(x, y)| x + if acc { *y as f64 } else { 0.0 })
                    .collect()
            };
            assert_close(
                &format!("dq {mode}"),
                &dq.read(ctx).unwrap(),
                &plus(gq, &dq_base),
                2e-4,
                2e-4,
            );
            let mut want_w = plus(gw, &dw_base);
            let got_w = dw.read(ctx).unwrap();
            for (e, sl) in slot.iter().enumerate() {
                // Padding is never written; masked-out entries get exactly 0.
                let exact = match sl {
                    Slot::Padding => Some(dw_base[e]),
                    Slot::Masked if acc => Some(dw_base[e]),
                    Slot::Masked => Some(0.0),
                    Slot::Weight => None,
                };
                if let Some(x) = exact {
                    assert_eq!(
                        got_w[e].to_bits(),
                        x.to_bits(),
                        "{mode}: dw[{e}] ({sl:?}) is {} instead of {x}",
                        got_w[e]
                    );
                    want_w[e] = x as f64;
                }
            }
            assert_close(&format!("dw {mode}"), &got_w, &want_w, 2e-4, 2e-4);
        }

        // The KL's single draw at its fixed noise; with a gradient it stores zeros.
        let (seed_kl, step_kl, stream_kl) = KL_NOISE;
        let kl_eps = cpu::reparam_eps(b * d, seed_kl, step_kl, stream_kl as u32);
        let (kl_r, ke_r) = twin::iaf_kl(&q64, &w64, &kl_eps, b, sz);
        for with_grad in [false, true] {
            let (kl, ke) = (zeros(&[b]), zeros(&[b, d]));
            let garbage_q = data(seed + 7, b * p, 5.0, 6.0);
            let garbage_w = data(seed + 8, len + 5, 5.0, 6.0);
            let dq = Tensor::from_slice(ctx, "dq", &[b, p], &garbage_q).unwrap();
            let dw = Tensor::from_slice(ctx, "dw", &[len + 5], &garbage_w).unwrap();
            let grad = with_grad.then_some((&dq, &dw));
            run(iaf_kl(ctx, "kl", &q, &w, sz, &kl, &ke, grad).unwrap());
            let tag = format!("{what} grad={with_grad}");
            assert_close(
                &format!("kl {tag}"),
                &kl.read(ctx).unwrap(),
                &kl_r,
                1e-4,
                1e-5,
            );
            assert_close(
                &format!("kl elem {tag}"),
                &ke.read(ctx).unwrap(),
                &ke_r,
                1e-5,
                1e-5,
            );
            let (gq, gw) = (dq.read(ctx).unwrap(), dw.read(ctx).unwrap());
            if with_grad {
                assert!(gq.iter().all(|&x| x == 0.0), "{tag}: dq {gq:?}");
                assert!(gw[..len].iter().all(|&x| x == 0.0), "{tag}: dw");
                assert_eq!(gw[len..], garbage_w[len..], "{tag}: dw past the region");
            } else {
                assert_eq!(gq, garbage_q, "{tag}: dq");
                assert_eq!(gw, garbage_w, "{tag}: dw");
            }
        }
    }
}

#[test]
fn the_drawn_noise_is_the_planar_flows_draw() {
    let ctx = ctx();
    let (d, b, s) = (3, 7, 3);
    let sz = sizes(d, 2, 5);
    let (_, len) = sz.own_offsets().unwrap();
    let q = Tensor::from_slice(ctx, "q", &[b, 11], &params(1, b, sz)).unwrap();
    let w = Tensor::from_slice(ctx, "w", &[len], &weights(2, sz, 0.0)).unwrap();
    let qp = Tensor::from_slice(ctx, "qp", &[b, 2 * d], &data(3, b * 2 * d, -1.0, 1.0)).unwrap();
    let (z, eps, zp, epsp) = (
        zeros(&[s * b, d]),
        zeros(&[s * b, d]),
        zeros(&[s * b, d]),
        zeros(&[s * b, d]),
    );
    let noise = Noise::Draw {
        seed: 0x1234_5678_9abc,
        step: RngStep::Fixed(11),
        stream: Stream::Eval,
    };
    let mut prog = Program::new();
    prog.push(iaf_forward(ctx, "iaf", &q, &w, sz, &eps, &z, s, noise).unwrap());
    prog.push(planar_forward(ctx, "planar", &qp, d, 0, &epsp, &zp, None, s, noise).unwrap());
    run(prog);
    let (a, c) = (eps.read(ctx).unwrap(), epsp.read(ctx).unwrap());
    assert!(
        a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
        "the IAF's ε {a:?} vs the planar flow's {c:?}"
    );
}

/// L = Σ_r [dz_r·z_K,r + scale·c_r (Σ log σ(s) + [volume] Σ_i ½ log σ²_i)] in f64.
#[allow(clippy::too_many_arguments)]
fn objective(
    q: &[f64],
    w: &[f64],
    eps: &[f64],
    dz: &[f64],
    cw: &[f64],
    volume: bool,
    b: usize,
    sz: IafSizes,
    s: usize,
) -> f64 {
    let (d, p) = (sz.latent, sz.param_dim().unwrap());
    let (z, ld) = twin::iaf_forward(q, w, eps, b, sz, s);
    let mut out: f64 = z.iter().zip(dz).map(|(a, g)| a * g).sum();
    for r in 0..s * b {
        let row = r % b;
        let vol: f64 = (0..d).map(|i| 0.5 * q[row * p + d + i]).sum();
        out += cw[r] * (ld[r] + if volume { vol } else { 0.0 });
    }
    out
}

#[test]
fn the_twins_backward_is_the_central_difference_of_its_forward() {
    for (n, &(d, k, h, b, s, volume)) in [
        (1, 1, 1, 2, 1, false),
        (3, 2, 5, 2, 3, true),
        (7, 3, 4, 1, 2, false),
        (4, 2, 3, 2, 1, true),
    ]
    .iter()
    .enumerate()
    {
        let sz = sizes(d, k, h);
        let what = format!("D={d} K={k} H={h} B={b} S={s}");
        let p = sz.param_dim().unwrap();
        let slot = slots(sz);
        let seed = 500 + 10 * n as u64;
        let q = f64s(&params(seed, b, sz));
        let w = f64s(&unmasked_weights(seed + 1, sz));
        let eps = f64s(&data(seed + 2, s * b * d, -2.0, 2.0));
        for (dz_on, c_on) in [(true, false), (false, true), (true, true)] {
            let dz: Vec<f64> = f64s(&data(seed + 3, s * b * d, -1.0, 1.0))
                .into_iter()
                .map(|x| if dz_on { x } else { 0.0 })
                .collect();
            let cw: Vec<f64> = f64s(&data(seed + 4, s * b, -1.5, 1.5))
                .into_iter()
                .map(|x| if c_on { x } else { 0.0 })
                .collect();
            let (gq, gw) = twin::iaf_backward(
                &q,
                &w,
                &eps,
                dz_on.then_some(dz.as_slice()),
                c_on.then_some((cw.as_slice(), 1.0, volume)),
                b,
                sz,
                s,
            );
            let f = |qq: &[f64], ww: &[f64]| objective(qq, ww, &eps, &dz, &cw, volume, b, sz, s);
            let step = 1e-6;
            let close = |num: f64, g: f64| (num - g).abs() <= 1e-6 * (1.0 + num.abs());
            for j in 0..b * p {
                let (mut qp, mut qm) = (q.clone(), q.clone());
                qp[j] += step;
                qm[j] -= step;
                let num = (f(&qp, &w) - f(&qm, &w)) / (2.0 * step);
                assert!(
                    close(num, gq[j]),
                    "{what} dz={dz_on} logdet={c_on}: d q[{j}] analytic {} vs central {num}",
                    gq[j]
                );
            }
            for (e, sl) in slot.iter().enumerate() {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp[e] += step;
                wm[e] -= step;
                let num = (f(&q, &wp) - f(&q, &wm)) / (2.0 * step);
                if *sl == Slot::Weight {
                    assert!(
                        close(num, gw[e]),
                        "{what} dz={dz_on} logdet={c_on}: d w[{e}] analytic {} vs central {num}",
                        gw[e]
                    );
                } else {
                    // Never read: the objective does not move, the gradient is exactly 0.
                    assert!(
                        num == 0.0 && gw[e] == 0.0,
                        "{what}: w[{e}] ({sl:?}): central {num}, analytic {}",
                        gw[e]
                    );
                }
            }
        }
    }
}

/// The dense Jacobian ∂f_i/∂x_j (n, n) by central differences.
fn jacobian(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let step = 1e-6;
    let mut jac = vec![0.0; n * n];
    for j in 0..n {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[j] += step;
        xm[j] -= step;
        let (fp, fm) = (f(&xp), f(&xm));
        for i in 0..n {
            jac[i * n + j] = (fp[i] - fm[i]) / (2.0 * step);
        }
    }
    jac
}

#[test]
fn each_step_is_autoregressive_and_log_q_is_the_change_of_variables() {
    // One step, in its own order: ∂z'_i/∂z_j = 0 exactly when deg_t(j) > deg_t(i), and the
    // diagonal is σ_i > 0 (lower triangular in the step's order; an odd step reverses it).
    let (d, h) = (6, 7);
    let sz = sizes(d, 2, h);
    let q = f64s(&params(600, 1, sz));
    let w = f64s(&unmasked_weights(601, sz));
    let x = f64s(&data(602, d, -2.0, 2.0));
    for t in 0..2 {
        let jac = jacobian(
            |z| {
                let mut z = z.to_vec();
                twin::apply_step(&q, &w, sz, 0, t, &mut z);
                z
            },
            &x,
        );
        for i in 0..d {
            for j in 0..d {
                let v = jac[i * d + j];
                if sz.degree(t, j) > sz.degree(t, i) {
                    assert_eq!(v, 0.0, "step {t}: d z'_{i} / d z_{j}");
                } else if i == j {
                    assert!(v > 0.0 && v < 1.0, "step {t}: d z'_{i} / d z_{i} = {v}");
                }
            }
        }
        // And some entry below the diagonal is not 0: the step does mix the dimensions.
        let below = (0..d * d)
            .filter(|&e| sz.degree(t, e % d) < sz.degree(t, e / d))
            .any(|e| jac[e].abs() > 1e-6);
        assert!(below, "step {t}: no dimension depends on another");
    }
    // With ε_j → z_K of a one-step flow it is lower triangular in index order.
    let sz1 = sizes(d, 1, h);
    let w1 = f64s(&unmasked_weights(603, sz1));
    let q1 = f64s(&params(604, 1, sz1));
    let jac = jacobian(|e| twin::iaf_forward(&q1, &w1, e, 1, sz1, 1).0, &x);
    for i in 0..d {
        for j in i + 1..d {
            assert_eq!(jac[i * d + j], 0.0, "d z_K,{i} / d eps_{j}");
        }
    }
    // log q(z_K | x) = log N(ε; 0, I) − log|det ∂z_K/∂ε| through K = 3 steps.
    for (d, k, h, b) in [(5, 3, 7, 2), (1, 2, 3, 1), (3, 3, 17, 1)] {
        let sz = sizes(d, k, h);
        let q = f64s(&params(610 + d as u64, b, sz));
        let w = f64s(&unmasked_weights(611 + d as u64, sz));
        let eps = f64s(&data(612 + d as u64, b * d, -2.0, 2.0));
        let log_q = twin::iaf_log_q(&q, &w, &eps, b, sz, 1);
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        for r in 0..b {
            let e = &eps[r * d..(r + 1) * d];
            let jac = jacobian(
                |e| {
                    // Row r alone: the other rows' noise stays fixed.
                    let mut all = eps.clone();
                    all[r * d..(r + 1) * d].copy_from_slice(e);
                    twin::iaf_forward(&q, &w, &all, b, sz, 1).0[r * d..(r + 1) * d].to_vec()
                },
                e,
            );
            let ee: f64 = e.iter().map(|x| x * x).sum();
            let dense = -0.5 * ee - d as f64 * half_log_2pi - log_abs_det(jac, d);
            assert!(
                (dense - log_q[r]).abs() < 1e-6 * (1.0 + dense.abs()),
                "D={d} K={k} H={h} row {r}: log q {} vs dense {dense}",
                log_q[r]
            );
        }
    }
}

#[test]
fn the_inverse_recovers_the_noise_and_log_q_of_z() {
    for (d, k, h, b, s) in [
        (1, 1, 1, 3, 2),
        (3, 2, 5, 3, 2),
        (7, 3, 17, 2, 1),
        (13, 3, 5, 1, 3),
    ] {
        let what = format!("D={d} K={k} H={h} B={b} S={s}");
        let sz = sizes(d, k, h);
        let q = f64s(&params(700 + d as u64, b, sz));
        let w = f64s(&unmasked_weights(701 + d as u64, sz));
        let eps = f64s(&data(702 + d as u64, s * b * d, -2.5, 2.5));
        let (z, _) = twin::iaf_forward(&q, &w, &eps, b, sz, s);
        let back = twin::iaf_inverse(&q, &w, &z, b, sz, s);
        for (i, (x, y)) in back.iter().zip(&eps).enumerate() {
            assert!((x - y).abs() < 1e-9, "{what}: inverse [{i}] {x} vs {y}");
        }
        let from_z = twin::iaf_log_density_of_z(&q, &w, &z, b, sz, s);
        let from_eps = twin::iaf_log_q(&q, &w, &eps, b, sz, s);
        for (x, y) in from_z.iter().zip(&from_eps) {
            assert!((x - y).abs() < 1e-9, "{what}: log q(z) {x} vs {y}");
        }
    }
}

#[test]
fn sizes_layout_and_masks() {
    assert!(sizes(1, 1, 1).check().is_ok());
    assert!(sizes(MAX_LATENT, MAX_FLOWS, MAX_HIDDEN).check().is_ok());
    for (sz, flag, value) in [
        (sizes(0, 1, 1), "--latent", "latent size 0"),
        (sizes(65, 1, 1), "--latent", "latent size 65"),
        (sizes(3, 17, 1), "--flows", "17 flow steps"),
        (sizes(3, 0, 1), "--flows", "0 flow steps"),
        (sizes(3, 1, 0), "--iaf-hidden", "0 hidden units"),
        (sizes(3, 1, 257), "--iaf-hidden", "257 hidden units"),
    ] {
        let e = sz.check().unwrap_err().to_string();
        assert!(e.contains(flag) && e.contains(value), "{sz:?}: {e}");
    }
    // D = 3, K = 2, H = 5: every tensor at a multiple of 64, step 1 after step 0's bs.
    let sz = sizes(3, 2, 5);
    assert_eq!(sz.param_dim(), Some(11));
    let (offs, len) = sz.own_offsets().unwrap();
    assert_eq!(
        offs,
        vec![
            [0, 64, 128, 192, 256, 320, 384],
            [448, 512, 576, 640, 704, 768, 832]
        ]
    );
    assert_eq!(len, 835);
    let t = sz.own_tensors();
    assert_eq!(t.len(), 14);
    assert_eq!(t[0], ("0.w1".to_string(), vec![5, 3]));
    assert_eq!(t[1], ("0.c1".to_string(), vec![5, 5]));
    assert_eq!(t[3], ("0.wm".to_string(), vec![3, 5]));
    assert_eq!(t[13], ("1.bs".to_string(), vec![3]));
    assert_eq!(sz.scratch_len(7, 3), Some(3 * 7 * 2 * (2 * 5 + 3 * 3)));
    let m: Vec<usize> = (0..5).map(|j| sz.hidden_degree(j)).collect();
    assert_eq!(m, [1, 2, 1, 2, 1]);
    assert_eq!(
        (0..3).map(|i| sz.degree(0, i)).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        (0..3).map(|i| sz.degree(1, i)).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert!((0..4).all(|j| sizes(1, 1, 4).hidden_degree(j) == 1));
    assert_eq!(sizes(usize::MAX, 1, 1).param_dim(), None);
    assert_eq!(sizes(3, 2, usize::MAX / 2).own_offsets(), None);
    assert_eq!(sizes(3, 2, 5).scratch_len(usize::MAX, 2), None);
    // init_mask on D = 3, H = 5: w1[j, i] stays iff deg(i) ≤ m_j, wm/ws[i, j] iff m_j < deg(i).
    let mut w = vec![1.0f32; len];
    twin::init_mask(sz, &mut w);
    // Step 0 (deg = 1, 2, 3): w1 row j = 0 (m = 1) keeps i = 0 only, row 1 (m = 2) i = 0, 1.
    assert_eq!(&w[0..6], &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    // wm row i = 0 (deg 1) is all masked, row 2 (deg 3) all kept, row 1 keeps m_j = 1.
    assert_eq!(
        &w[192..207],
        &[
            0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0
        ]
    );
    assert_eq!(w[192..207], w[320..335], "ws masked as wm");
    // Step 1 (deg = 3, 2, 1): w1 row 0 keeps i = 2 only.
    assert_eq!(&w[448..451], &[0.0, 0.0, 1.0]);
    // Everything else (c1, biases, padding) is untouched: 44 zeros in all.
    assert_eq!(w.iter().filter(|&&x| x == 0.0).count(), 44);
    let s = slots(sz);
    assert!(
        w.iter()
            .zip(&s)
            .all(|(x, sl)| (*x == 0.0) == (*sl == Slot::Masked))
    );
}

#[test]
fn operations_refuse_bad_operands_clearly() {
    let ctx = ctx();
    let sz = sizes(3, 2, 5);
    let (_, len) = sz.own_offsets().unwrap();
    let (b, s) = (2, 1);
    let q = zeros(&[b, 11]);
    let w = zeros(&[len]);
    let z = zeros(&[b, 3]);
    let eps = zeros(&[b, 3]);
    let err = |r: wgvae::Result<Program>| r.unwrap_err().to_string();
    let errd = |r: wgvae::Result<wgvae::gpu::Dispatch>| r.unwrap_err().to_string();
    // Sizes beyond the kernels name the flag.
    let e = errd(iaf_forward(
        ctx,
        "f",
        &zeros(&[b, 2 * 65 + 5]),
        &w,
        sizes(65, 2, 5),
        &eps,
        &z,
        s,
        Noise::Given,
    ));
    assert!(e.contains("--latent"), "{e}");
    let e = errd(iaf_forward(
        ctx,
        "f",
        &q,
        &w,
        sizes(3, 17, 5),
        &eps,
        &z,
        s,
        Noise::Given,
    ));
    assert!(e.contains("--flows"), "{e}");
    // A q of the wrong width, a short own region, short z and ε, zero samples.
    let e = errd(iaf_forward(
        ctx,
        "f",
        &zeros(&[b, 10]),
        &w,
        sz,
        &eps,
        &z,
        s,
        Noise::Given,
    ));
    assert!(
        e.contains("iaf_forward") && e.contains("expected (B, 11)"),
        "{e}"
    );
    let e = errd(iaf_forward(
        ctx,
        "f",
        &q,
        &zeros(&[len - 1]),
        sz,
        &eps,
        &z,
        s,
        Noise::Given,
    ));
    assert!(e.contains(&format!("at least {len}")), "{e}");
    let e = errd(iaf_forward(
        ctx,
        "f",
        &q,
        &w,
        sz,
        &eps,
        &zeros(&[b, 2]),
        s,
        Noise::Given,
    ));
    assert!(e.contains("expected 6 elements"), "{e}");
    let e = errd(iaf_forward(ctx, "f", &q, &w, sz, &eps, &z, 0, Noise::Given));
    assert!(e.contains("samples must be at least 1"), "{e}");
    let (nll, lw) = (zeros(&[b]), zeros(&[b - 1]));
    let e = errd(iaf_log_weights(
        ctx, "l", &q, &w, sz, &nll, &z, &eps, &lw, s,
    ));
    assert!(e.contains("iaf_log_weights") && e.contains("S·B"), "{e}");
    // The backward's operands: dq, dw, the scratch, dz, the log-det weights.
    let (dq, dw) = (zeros(&[b, 11]), zeros(&[len]));
    let scratch = zeros(&[sz.scratch_len(b, s).unwrap()]);
    let e = err(iaf_backward(
        ctx,
        "b",
        &q,
        &w,
        sz,
        &eps,
        Some(&z),
        None,
        &zeros(&[b, 10]),
        &dw,
        &scratch,
        s,
        false,
    ));
    assert!(e.contains("B·P"), "{e}");
    let e = err(iaf_backward(
        ctx,
        "b",
        &q,
        &w,
        sz,
        &eps,
        Some(&z),
        None,
        &dq,
        &zeros(&[len - 3]),
        &scratch,
        s,
        false,
    ));
    assert!(e.contains("own weights' gradient"), "{e}");
    let short = zeros(&[sz.scratch_len(b, s).unwrap() - 1]);
    let e = err(iaf_backward(
        ctx,
        "b",
        &q,
        &w,
        sz,
        &eps,
        Some(&z),
        None,
        &dq,
        &dw,
        &short,
        s,
        false,
    ));
    assert!(e.contains("the scratch"), "{e}");
    let e = err(iaf_backward(
        ctx,
        "b",
        &q,
        &w,
        sz,
        &eps,
        Some(&zeros(&[5])),
        None,
        &dq,
        &dw,
        &scratch,
        s,
        false,
    ));
    assert!(e.contains("S·B·D"), "{e}");
    let cw = zeros(&[3]);
    let weight = Some(LogDetWeight {
        weights: &cw,
        scale: 1.0,
        volume: false,
    });
    let e = err(iaf_backward(
        ctx, "b", &q, &w, sz, &eps, None, weight, &dq, &dw, &scratch, s, false,
    ));
    assert!(e.contains("log-determinant weights"), "{e}");
    // The KL's outputs and gradient.
    let (kl, ke) = (zeros(&[b]), zeros(&[b, 3]));
    let e = err(iaf_kl(ctx, "k", &q, &w, sz, &zeros(&[b + 1]), &ke, None));
    assert!(e.contains("iaf_kl"), "{e}");
    let e = err(iaf_kl(
        ctx,
        "k",
        &q,
        &w,
        sz,
        &kl,
        &ke,
        Some((&dq, &zeros(&[len - 1]))),
    ));
    assert!(e.contains("own weights' gradient"), "{e}");
}
