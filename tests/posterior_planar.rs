//! The planar-flow posterior's kernels: every kernel against its f64 twin on shapes that no
//! workgroup size divides, the twin's backward against central differences (the path through
//! z_K and the log-determinant path, with û's constraint active), the flow without flows (and
//! with w = 0, b = 0) against the diagonal posterior, invertibility, and log q against the
//! change-of-variables density through the dense Jacobian.

mod common;

use common::{assert_close, ctx, data};
use wgvae::cpu;
use wgvae::cpu::posterior_planar as twin;
use wgvae::gpu::{Program, Tensor};
use wgvae::model::posterior::KlGrad;
use wgvae::model::{Diagonal, GradWrite, PlanarFlow, Posterior, PosteriorKind, VaeConfig};
use wgvae::ops::posterior_planar::{
    KL_NOISE, LogDetWeight, MAX_FLOWS, MAX_LATENT, Noise, flow_offset, param_dim, planar_backward,
    planar_forward, planar_log_weights,
};
use wgvae::ops::reparam::{RngStep, Stream};
use wgvae::train::checkpoint::{self, Checkpoint};
use wgvae::train::objective::ObjectiveSpec;
use wgvae::train::{DataSource, ModelSpec, TrainConfig, Trainer};

use std::path::{Path, PathBuf};

use common::tool::{text, wgvae};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn run(p: Program) {
    p.run(ctx()).unwrap();
}

/// Parameters (B, P): μ in [−1, 1), log σ² in [−1, 1), u, w in [−s, s) with s = `scale`,
/// b in [−0.5, 0.5).
fn params(seed: u64, b: usize, d: usize, k: usize, scale: f32) -> Vec<f32> {
    let p = param_dim(d, k).unwrap();
    let mut q = data(seed, b * p, -scale, scale);
    let base = data(seed + 1, b * 2 * d, -1.0, 1.0);
    let bias = data(seed + 2, b * k, -0.5, 0.5);
    for r in 0..b {
        q[r * p..r * p + 2 * d].copy_from_slice(&base[r * 2 * d..(r + 1) * 2 * d]);
        for f in 0..k {
            q[r * p + flow_offset(d, f) + 2 * d] = bias[r * k + f];
        }
    }
    q
}

const DIMS: [usize; 4] = [1, 3, 7, 13];
const FLOWS: [usize; 3] = [1, 2, 8];
const BATCHES: [usize; 3] = [1, 7, 67];

fn zeros(shape: &[usize]) -> Tensor<f32> {
    Tensor::<f32>::zeros(ctx(), "t", shape).unwrap()
}

#[test]
fn forward_backward_and_log_weights_match_the_twin() {
    let ctx = ctx();
    let mut case = 0usize;
    for d in DIMS {
        for k in FLOWS {
            for b in BATCHES {
                for s in [1, 3] {
                    case += 1;
                    let what = format!("D={d} K={k} B={b} S={s}");
                    let p = param_dim(d, k).unwrap();
                    let q_h = params(10 + case as u64, b, d, k, 0.8);
                    let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
                    let eps_h = data(20 + case as u64, s * b * d, -2.0, 2.0);
                    let eps = Tensor::from_slice(ctx, "eps", &[s * b, d], &eps_h).unwrap();
                    let (z, ld) = (zeros(&[s * b, d]), zeros(&[s * b]));
                    let mut prog = Program::new();
                    prog.push(
                        planar_forward(ctx, "fwd", &q, d, k, &eps, &z, Some(&ld), s, Noise::Given)
                            .unwrap(),
                    );
                    run(prog);
                    let (q64, e64) = (f64s(&q_h), f64s(&eps_h));
                    let (z_r, ld_r) = twin::planar_forward(&q64, &e64, b, d, k, s);
                    let z_h = z.read(ctx).unwrap();
                    let ld_h = ld.read(ctx).unwrap();
                    assert_close(&format!("z {what}"), &z_h, &z_r, 2e-5, 2e-5);
                    assert_close(&format!("logdet {what}"), &ld_h, &ld_r, 2e-5, 2e-5);

                    // The backward: stored or accumulated, with or without the log-det term,
                    // with or without the base's volume.
                    let dz_h = data(30 + case as u64, s * b * d, -1.0, 1.0);
                    let dz = Tensor::from_slice(ctx, "dz", &[s * b, d], &dz_h).unwrap();
                    let cw_h = data(40 + case as u64, s * b, -1.5, 1.5);
                    let cw = Tensor::from_slice(ctx, "cw", &[s * b], &cw_h).unwrap();
                    let base_h = data(50, b * p, -1.0, 1.0);
                    let (acc, with_c, volume) = (
                        case.is_multiple_of(2),
                        !case.is_multiple_of(3),
                        case % 4 < 2,
                    );
                    let dq = Tensor::from_slice(ctx, "dq", &[b, p], &base_h).unwrap();
                    let weight = with_c.then_some(LogDetWeight {
                        weights: &cw,
                        scale: 1.0,
                        volume,
                    });
                    let mut prog = Program::new();
                    prog.push(
                        planar_backward(ctx, "bwd", &q, d, k, &eps, Some(&dz), weight, &dq, s, acc)
                            .unwrap(),
                    );
                    run(prog);
                    let (base, cw64) = (f64s(&base_h), f64s(&cw_h));
                    let want = twin::planar_backward(
                        &q64,
                        &e64,
                        &f64s(&dz_h),
                        with_c.then_some(cw64.as_slice()),
                        volume,
                        b,
                        d,
                        k,
                        s,
                        acc.then_some(base.as_slice()),
                    );
                    assert_close(
                        &format!("dq {what} accumulate={acc} logdet={with_c} volume={volume}"),
                        &dq.read(ctx).unwrap(),
                        &want,
                        1e-4,
                        1e-4,
                    );

                    // The log-weights from the GPU's z and log-dets.
                    let nll_h = data(60 + case as u64, s * b, 1.0, 9.0);
                    let nll = Tensor::from_slice(ctx, "nll", &[s * b], &nll_h).unwrap();
                    let lw = zeros(&[s * b]);
                    let mut prog = Program::new();
                    prog.push(
                        planar_log_weights(ctx, "lw", &q, d, k, &nll, &z, &eps, Some(&ld), &lw, s)
                            .unwrap(),
                    );
                    run(prog);
                    let want = twin::planar_log_weights(
                        &q64,
                        &f64s(&nll_h),
                        &f64s(&z_h),
                        &e64,
                        &f64s(&ld_h),
                        b,
                        d,
                        k,
                        s,
                    );
                    assert_close(
                        &format!("log w {what}"),
                        &lw.read(ctx).unwrap(),
                        &want,
                        2e-5,
                        2e-5,
                    );
                }
            }
        }
    }
}

#[test]
fn the_drawn_noise_is_the_reparameterisation_stream() {
    let ctx = ctx();
    for (d, k, b, s) in [(3, 2, 7, 3), (13, 8, 67, 1), (1, 1, 1, 3)] {
        let what = format!("D={d} K={k} B={b} S={s}");
        let p = param_dim(d, k).unwrap();
        let q_h = params(70 + d as u64, b, d, k, 0.8);
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let (z, eps, ld) = (zeros(&[s * b, d]), zeros(&[s * b, d]), zeros(&[s * b]));
        let noise = Noise::Draw {
            seed: 77,
            step: RngStep::Fixed(5),
            stream: Stream::Train,
        };
        let mut prog = Program::new();
        prog.push(planar_forward(ctx, "fwd", &q, d, k, &eps, &z, Some(&ld), s, noise).unwrap());
        run(prog);
        let eps_h = eps.read(ctx).unwrap();
        let eps_r = cpu::reparam_eps(s * b * d, 77, 5, Stream::Train as u32);
        assert_close(&format!("eps {what}"), &eps_h, &eps_r, 2e-5, 2e-5);
        let (z_r, ld_r) = twin::planar_forward(&f64s(&q_h), &f64s(&eps_h), b, d, k, s);
        assert_close(
            &format!("z {what}"),
            &z.read(ctx).unwrap(),
            &z_r,
            2e-5,
            2e-5,
        );
        assert_close(
            &format!("ld {what}"),
            &ld.read(ctx).unwrap(),
            &ld_r,
            2e-5,
            2e-5,
        );
    }
}

/// L(q) = Σ_r [dz_r·z_K,r + c_r (Σ_k log|det_k| + [volume] Σ_i log σ_i)] in f64.
#[allow(clippy::too_many_arguments)]
fn objective(
    q: &[f64],
    eps: &[f64],
    dz: &[f64],
    cw: &[f64],
    volume: bool,
    b: usize,
    d: usize,
    k: usize,
    s: usize,
) -> f64 {
    let p = param_dim(d, k).unwrap();
    let (z, ld) = twin::planar_forward(q, eps, b, d, k, s);
    let mut out: f64 = z.iter().zip(dz).map(|(a, g)| a * g).sum();
    for r in 0..s * b {
        let row = r % b;
        let vol: f64 = (0..d).map(|i| 0.5 * q[row * p + d + i]).sum();
        out += cw[r] * (ld[r] + if volume { vol } else { 0.0 });
    }
    out
}

#[test]
fn the_backward_is_the_central_difference_of_the_flow() {
    for (d, k, b, s, volume) in [
        (1, 1, 1, 1, false),
        (3, 2, 2, 3, true),
        (7, 8, 2, 2, false),
        (13, 2, 1, 3, true),
    ] {
        let what = format!("D={d} K={k} B={b} S={s}");
        let p = param_dim(d, k).unwrap();
        let mut q = f64s(&params(80 + d as u64, b, d, k, 1.0));
        // Make the constraint bite on flow 0 of row 0: wᵀu = −3 < −1, so û ≠ u.
        let f0 = flow_offset(d, 0);
        let ww: f64 = (0..d).map(|i| q[f0 + d + i] * q[f0 + d + i]).sum();
        for i in 0..d {
            q[f0 + i] = -3.0 * q[f0 + d + i] / ww;
        }
        let eps = f64s(&data(81, s * b * d, -2.0, 2.0));
        let uh = twin::hat_u(&q, 0, d, k, 0);
        let wuh: f64 = (0..d).map(|i| q[f0 + d + i] * uh[i]).sum();
        assert!(wuh > -1.0 && (wuh - (-1.0 + (-3.0f64).exp().ln_1p())).abs() < 1e-6);
        for (dz_on, c_on) in [(true, false), (false, true), (true, true)] {
            let dz: Vec<f64> = f64s(&data(82, s * b * d, -1.0, 1.0))
                .into_iter()
                .map(|x| if dz_on { x } else { 0.0 })
                .collect();
            let cw: Vec<f64> = f64s(&data(83, s * b, 0.5, 1.5))
                .into_iter()
                .map(|x| if c_on { x } else { 0.0 })
                .collect();
            let g = twin::planar_backward(
                &q,
                &eps,
                &dz,
                c_on.then_some(cw.as_slice()),
                volume,
                b,
                d,
                k,
                s,
                None,
            );
            let h = 1e-6;
            for j in 0..b * p {
                let (mut qp, mut qm) = (q.clone(), q.clone());
                qp[j] += h;
                qm[j] -= h;
                let num = (objective(&qp, &eps, &dz, &cw, volume, b, d, k, s)
                    - objective(&qm, &eps, &dz, &cw, volume, b, d, k, s))
                    / (2.0 * h);
                assert!(
                    (num - g[j]).abs() <= 1e-6 * (1.0 + num.abs()),
                    "{what} dz={dz_on} logdet={c_on}: d q[{j}] analytic {} vs central {num}",
                    g[j]
                );
            }
        }
    }
}

#[test]
fn the_gpu_backward_is_the_central_difference_of_the_gpu_forward() {
    // The same check on the kernels themselves, in f32 (coarser step and tolerance).
    let ctx = ctx();
    let (d, k, b, s) = (3, 2, 2, 2);
    let p = param_dim(d, k).unwrap();
    let q_h = params(90, b, d, k, 0.8);
    let eps_h = data(91, s * b * d, -2.0, 2.0);
    let dz_h = data(92, s * b * d, -1.0, 1.0);
    let cw_h = data(93, s * b, 0.5, 1.5);
    let eps = Tensor::from_slice(ctx, "eps", &[s * b, d], &eps_h).unwrap();
    let dz = Tensor::from_slice(ctx, "dz", &[s * b, d], &dz_h).unwrap();
    let cw = Tensor::from_slice(ctx, "cw", &[s * b], &cw_h).unwrap();
    let (z, ld, dq) = (zeros(&[s * b, d]), zeros(&[s * b]), zeros(&[b, p]));
    let gpu_obj = |qv: &[f32]| -> f64 {
        let q = Tensor::from_slice(ctx, "q", &[b, p], qv).unwrap();
        let mut prog = Program::new();
        prog.push(
            planar_forward(ctx, "fwd", &q, d, k, &eps, &z, Some(&ld), s, Noise::Given).unwrap(),
        );
        run(prog);
        let zz = z.read(ctx).unwrap();
        let l = ld.read(ctx).unwrap();
        let a: f64 = zz
            .iter()
            .zip(&dz_h)
            .map(|(x, g)| *x as f64 * *g as f64)
            .sum();
        a + l
            .iter()
            .zip(&cw_h)
            .map(|(x, c)| *x as f64 * *c as f64)
            .sum::<f64>()
    };
    let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
    let weight = Some(LogDetWeight {
        weights: &cw,
        scale: 1.0,
        volume: false,
    });
    let mut prog = Program::new();
    prog.push(
        planar_backward(ctx, "bwd", &q, d, k, &eps, Some(&dz), weight, &dq, s, false).unwrap(),
    );
    run(prog);
    let g = dq.read(ctx).unwrap();
    let h = 1e-2f32;
    for j in 0..b * p {
        let (mut qp, mut qm) = (q_h.clone(), q_h.clone());
        qp[j] += h;
        qm[j] -= h;
        let num = (gpu_obj(&qp) - gpu_obj(&qm)) / (2.0 * h as f64);
        assert!(
            (num - g[j] as f64).abs() <= 2e-3 * (1.0 + num.abs()),
            "d q[{j}]: kernel {} vs central difference {num}",
            g[j]
        );
    }
}

#[test]
fn without_flows_or_with_flat_flows_it_is_the_diagonal_posterior() {
    // u = 0 is not the identity here: û = u + (m(wᵀu) − wᵀu) w/‖w‖² = m(0) w/‖w‖² ≠ 0 for
    // u = 0. K = 0 is, and so is w = 0, b = 0 (û = u, tanh(0) = 0, det = 1) for any u.
    let ctx = ctx();
    for (d, k, b, s) in [(1, 0, 7, 3), (3, 0, 67, 1), (7, 3, 7, 3), (13, 8, 1, 3)] {
        let what = format!("D={d} K={k} B={b} S={s}");
        let p = param_dim(d, k).unwrap();
        let diag_h = data(100 + d as u64, b * 2 * d, -1.5, 1.5);
        let mut q_h = data(101, b * p, -1.0, 1.0);
        for r in 0..b {
            q_h[r * p..r * p + 2 * d].copy_from_slice(&diag_h[r * 2 * d..(r + 1) * 2 * d]);
            for f in 0..k {
                let o = r * p + flow_offset(d, f);
                q_h[o + d..o + 2 * d + 1].fill(0.0);
            }
        }
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let qd = Tensor::from_slice(ctx, "qd", &[b, 2 * d], &diag_h).unwrap();
        let (z, eps, ld) = (zeros(&[s * b, d]), zeros(&[s * b, d]), zeros(&[s * b]));
        let (zd, ed) = (zeros(&[s * b, d]), zeros(&[s * b, d]));
        let nll = Tensor::from_slice(ctx, "nll", &[s * b], &data(102, s * b, 1.0, 9.0)).unwrap();
        let (lw, lwd) = (zeros(&[s * b]), zeros(&[s * b]));
        let noise = Noise::Draw {
            seed: 41,
            step: RngStep::Fixed(6),
            stream: Stream::Train,
        };
        let dp = Diagonal { latent: d };
        let mut prog = Program::new();
        prog.push(planar_forward(ctx, "fwd", &q, d, k, &eps, &z, Some(&ld), s, noise).unwrap());
        prog.push(
            planar_log_weights(ctx, "lw", &q, d, k, &nll, &z, &eps, Some(&ld), &lw, s).unwrap(),
        );
        prog.extend(
            dp.sample(ctx, &qd, &zd, &ed, s, 41, RngStep::Fixed(6), Stream::Train)
                .unwrap(),
        );
        prog.extend(dp.log_weights(ctx, &qd, &nll, &zd, &ed, &lwd, s).unwrap());
        run(prog);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(eps.read(ctx).unwrap()),
            bits(ed.read(ctx).unwrap()),
            "{what}: eps"
        );
        let close = |name: &str, a: Vec<f32>, b: Vec<f32>| {
            assert_close(&format!("{what}: {name}"), &a, &f64s(&b), 1e-6, 1e-6);
        };
        close("z", z.read(ctx).unwrap(), zd.read(ctx).unwrap());
        close("log w", lw.read(ctx).unwrap(), lwd.read(ctx).unwrap());
        assert!(
            ld.read(ctx).unwrap().iter().all(|&x| x == 0.0),
            "{what}: log det"
        );
        // The twin's log q is the diagonal Gaussian's.
        let eps64 = f64s(&eps.read(ctx).unwrap());
        let (z64, _) = twin::planar_forward(&f64s(&q_h), &eps64, b, d, k, s);
        let got = twin::planar_log_density(&f64s(&q_h), &eps64, b, d, k, s);
        let want = dp.cpu_log_density(&f64s(&diag_h), &z64, b, s);
        for (x, y) in got.iter().zip(&want) {
            assert!(
                (x - y).abs() < 1e-9 * (1.0 + y.abs()),
                "{what}: log q {x} vs {y}"
            );
        }
    }
}

#[test]
fn every_flow_stays_invertible() {
    // wᵀû = m(wᵀu) > −1 for u, w at any scale (up to û's ‖w‖² guard).
    let mut worst = f64::INFINITY;
    for (seed, scale) in [(1u64, 0.1f32), (2, 1.0), (3, 5.0), (4, 30.0)] {
        for d in [1, 3, 7, 13] {
            let q = f64s(&params(seed * 100 + d as u64, 50, d, 2, scale));
            for row in 0..50 {
                for f in 0..2 {
                    let o = row * param_dim(d, 2).unwrap() + flow_offset(d, f);
                    let w = &q[o + d..o + 2 * d];
                    let uh = twin::hat_u(&q, row, d, 2, f);
                    let wuh: f64 = (0..d).map(|i| w[i] * uh[i]).sum();
                    // = m(wᵀu) > −1 up to the rounding of wᵀu + (m − wᵀu).
                    let wu: f64 = (0..d).map(|i| w[i] * q[o + i]).sum();
                    assert!(
                        wuh >= -1.0 - 1e-14 * (1.0 + wu.abs()),
                        "D={d} scale={scale}: w.uh = {wuh}"
                    );
                    worst = worst.min(wuh);
                }
            }
        }
    }
    eprintln!("smallest w.uh over the draws: {worst}");
    // On the GPU: with D = 1 each z_K is a strictly increasing function of ε, for flows whose
    // raw u would fold the line (w u = −1.5: 1 + w u (1 − tanh²) < 0 where the tanh crosses 0).
    let ctx = ctx();
    let (d, k, n) = (1, 3, 257);
    let p = param_dim(d, k).unwrap();
    let mut q_h = params(5, 1, d, k, 3.0);
    q_h[0] = 0.0; // μ
    q_h[1] = 0.0; // log σ²: z_0 = ε
    for f in 0..k {
        let o = flow_offset(d, f);
        let w = q_h[o + 1].signum() * q_h[o + 1].abs().max(0.5);
        q_h[o + 1] = w;
        q_h[o] = -1.5 / w;
    }
    let eps_h: Vec<f32> = (0..n)
        .map(|i| -4.0 + 8.0 * i as f32 / (n - 1) as f32)
        .collect();
    // Without the fix the first flow alone folds the line.
    let (o, q64) = (flow_offset(d, 0), f64s(&q_h));
    let raw: Vec<f64> = eps_h
        .iter()
        .map(|&e| e as f64 + q64[o] * (q64[o + 1] * e as f64 + q64[o + 2]).tanh())
        .collect();
    assert!(
        raw.windows(2).any(|x| x[1] < x[0]),
        "the raw flow should fold: {raw:?}"
    );
    let rows: Vec<f32> = (0..n).flat_map(|_| q_h.iter().copied()).collect();
    let q = Tensor::from_slice(ctx, "q", &[n, p], &rows).unwrap();
    let eps = Tensor::from_slice(ctx, "eps", &[n, d], &eps_h).unwrap();
    let (z, ld) = (zeros(&[n, d]), zeros(&[n]));
    let mut prog = Program::new();
    prog.push(planar_forward(ctx, "fwd", &q, d, k, &eps, &z, Some(&ld), 1, Noise::Given).unwrap());
    run(prog);
    let z_h = z.read(ctx).unwrap();
    for i in 1..n {
        assert!(z_h[i] > z_h[i - 1], "z_K not increasing at {i}: {z_h:?}");
    }
    // And the kernel's log-det sum is log dz_K/dε (σ = 1), against the twin and against a
    // central difference of the twin's z_K.
    let e64 = f64s(&eps_h);
    let (_, ld64) = twin::planar_forward(&q64, &e64, 1, d, k, n);
    assert_close("log dz/deps", &ld.read(ctx).unwrap(), &ld64, 2e-5, 2e-5);
    let h = 1e-6;
    for (i, &e) in e64.iter().enumerate() {
        let (zp, _) = twin::planar_forward(&q64, &[e + h], 1, d, k, 1);
        let (zm, _) = twin::planar_forward(&q64, &[e - h], 1, d, k, 1);
        let slope = (zp[0] - zm[0]) / (2.0 * h);
        assert!(
            (slope.ln() - ld64[i]).abs() < 1e-5,
            "eps {e}: log slope {} vs log det {}",
            slope.ln(),
            ld64[i]
        );
    }
}

#[test]
fn log_q_is_the_change_of_variables_density() {
    let ctx = ctx();
    for (d, k, b, s) in [(1, 8, 7, 3), (3, 2, 7, 1), (7, 8, 3, 3), (13, 2, 67, 1)] {
        let what = format!("D={d} K={k} B={b} S={s}");
        let p = param_dim(d, k).unwrap();
        let q_h = params(110 + d as u64, b, d, k, 1.5);
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let eps_h = data(111, s * b * d, -2.0, 2.0);
        let eps = Tensor::from_slice(ctx, "eps", &[s * b, d], &eps_h).unwrap();
        let (z, ld, lw) = (zeros(&[s * b, d]), zeros(&[s * b]), zeros(&[s * b]));
        // nll = 0: log w = log N(z_K; 0, I) − log q(z_K | x).
        let nll = zeros(&[s * b]);
        let mut prog = Program::new();
        prog.push(
            planar_forward(ctx, "fwd", &q, d, k, &eps, &z, Some(&ld), s, Noise::Given).unwrap(),
        );
        prog.push(
            planar_log_weights(ctx, "lw", &q, d, k, &nll, &z, &eps, Some(&ld), &lw, s).unwrap(),
        );
        run(prog);
        let (q64, e64) = (f64s(&q_h), f64s(&eps_h));
        let log_q = twin::planar_log_density(&q64, &e64, b, d, k, s);
        let (z64, ld64) = twin::planar_forward(&q64, &e64, b, d, k, s);
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let mut want = Vec::new();
        for r in 0..s * b {
            let row = r % b;
            // The kernels' formula in f64: log N(z_0; μ, σ²) − Σ log|det_k|.
            let base: f64 = (0..d)
                .map(|i| -0.5 * e64[r * d + i].powi(2) - 0.5 * q64[row * p + d + i] - half_log_2pi)
                .sum();
            let formula = base - ld64[r];
            assert!(
                (formula - log_q[r]).abs() < 1e-9 * (1.0 + formula.abs()),
                "{what}: rank-one log q {formula} vs dense {}",
                log_q[r]
            );
            let zz: f64 = (0..d).map(|i| z64[r * d + i].powi(2)).sum();
            want.push(-0.5 * zz - d as f64 * half_log_2pi - log_q[r]);
        }
        assert_close(
            &format!("{what}: log w"),
            &lw.read(ctx).unwrap(),
            &want,
            5e-5,
            5e-5,
        );
    }
}

#[test]
fn sizes_beyond_the_kernels_are_refused_clearly() {
    let ctx = ctx();
    assert_eq!(param_dim(64, 32), Some(128 + 32 * 129));
    assert_eq!(param_dim(usize::MAX, 1), None);
    let too_big = [
        (MAX_LATENT + 1, 1, "latent size 65"),
        (3, MAX_FLOWS + 1, "33 flows"),
    ];
    for (d, k, msg) in too_big {
        let p = param_dim(d, k).unwrap();
        let q = zeros(&[2, p]);
        let z = zeros(&[2, d]);
        let ld = zeros(&[2]);
        let e = planar_forward(ctx, "f", &q, d, k, &z, &z, Some(&ld), 1, Noise::Given)
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg), "{e}");
    }
    // A q of the wrong width names the tensor and the expected shape.
    let q = zeros(&[2, 8]);
    let z = zeros(&[2, 3]);
    let ld = zeros(&[2]);
    let e = planar_forward(ctx, "f", &q, 3, 1, &z, &z, Some(&ld), 1, Noise::Given)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected (B, 13)"), "{e}");
    // Wrong sizes of the backward's operands are named.
    let q = zeros(&[2, 13]);
    let dq = zeros(&[2, 12]);
    let e = planar_backward(ctx, "b", &q, 3, 1, &z, Some(&z), None, &dq, 1, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("B·P"), "{e}");
    let e = planar_forward(ctx, "f", &q, 3, 1, &z, &z, Some(&ld), 0, Noise::Given)
        .unwrap_err()
        .to_string();
    assert!(e.contains("samples must be at least 1"), "{e}");
}

#[test]
fn the_posterior_trait_matches_the_twins() {
    let ctx = ctx();
    for (d, k, b, s) in [(3, 2, 7, 3), (7, 8, 67, 1), (1, 1, 1, 3)] {
        let what = format!("D={d} K={k} B={b} S={s}");
        let post = PlanarFlow {
            latent: d,
            flows: k,
        };
        let p = post.param_dim();
        assert_eq!(p, param_dim(d, k).unwrap());
        let q_h = params(120 + d as u64, b, d, k, 0.8);
        let q64 = f64s(&q_h);
        let q = Tensor::from_slice(ctx, "q", &[b, p], &q_h).unwrap();
        let (z, eps) = (zeros(&[s * b, d]), zeros(&[s * b, d]));
        let (kl, ke, lw) = (zeros(&[b]), zeros(&[b, d]), zeros(&[s * b]));
        let nll_h = data(121, s * b, 1.0, 9.0);
        let nll = Tensor::from_slice(ctx, "nll", &[s * b], &nll_h).unwrap();
        let dz_h = data(122, s * b * d, -1.0, 1.0);
        let dz = Tensor::from_slice(ctx, "dz", &[s * b, d], &dz_h).unwrap();
        let coef_h = data(123, s * b, 0.0, 1.0);
        let coef = Tensor::from_slice(ctx, "coef", &[s * b], &coef_h).unwrap();
        // A nonzero start: the KL must store its (zero) gradient over it.
        let g = Tensor::from_slice(ctx, "g", &[b, p], &data(124, b * p, -1.0, 1.0)).unwrap();
        let kl_grad = KlGrad {
            dparams: &g,
            beta: 0.0,
            ramp: None,
            capacity: None,
            write: GradWrite::Store,
            own: None,
        };
        let mut prog = post
            .sample(ctx, &q, &z, &eps, s, 9, RngStep::Fixed(2), Stream::Train)
            .unwrap();
        prog.extend(post.kl(ctx, &q, &kl, &ke, Some(kl_grad), None).unwrap());
        prog.extend(post.log_weights(ctx, &q, &nll, &z, &eps, &lw, s).unwrap());
        prog.extend(
            post.log_q_backward(ctx, &q, &eps, &coef, &g, None, s)
                .unwrap(),
        );
        prog.extend(
            post.sample_backward(ctx, &q, &dz, &eps, &g, None, s, GradWrite::Accumulate)
                .unwrap(),
        );
        run(prog);
        let eps64 = f64s(&eps.read(ctx).unwrap());
        let z_h = z.read(ctx).unwrap();
        assert_close(
            &format!("{what}: z"),
            &z_h,
            &post.cpu_sample(&q64, &eps64, b, s),
            2e-5,
            2e-5,
        );
        // The KL's single draw at its fixed noise.
        assert_close(
            &format!("{what}: kl"),
            &kl.read(ctx).unwrap(),
            &post.cpu_kl(&q64, b),
            5e-5,
            5e-5,
        );
        let (seed, step, stream) = KL_NOISE;
        let kl_eps = cpu::reparam_eps(b * d, seed, step, stream as u32);
        let (_, ke_r) = twin::planar_kl(&q64, &kl_eps, b, d, k);
        assert_close(
            &format!("{what}: kl elem"),
            &ke.read(ctx).unwrap(),
            &ke_r,
            1e-5,
            1e-5,
        );
        // log w with log q read from z alone (the twin inverts the flow).
        let log_q = post.cpu_log_density(&q64, &f64s(&z_h), b, s);
        let want: Vec<f64> = (0..s * b)
            .map(|r| {
                let zz: f64 = (0..d).map(|i| (z_h[r * d + i] as f64).powi(2)).sum();
                -(nll_h[r] as f64)
                    - 0.5 * zz
                    - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
                    - log_q[r]
            })
            .collect();
        assert_close(
            &format!("{what}: log w"),
            &lw.read(ctx).unwrap(),
            &want,
            1e-4,
            1e-4,
        );
        // The gradient: 0 from the KL, then Σ coef·∂log q at fixed ε, then the path through z.
        let coef64 = f64s(&coef_h);
        let neg: Vec<f64> = coef64.iter().map(|c| -c).collect();
        let log_q_grad = twin::planar_backward(
            &q64,
            &eps64,
            &vec![0.0; s * b * d],
            Some(neg.as_slice()),
            true,
            b,
            d,
            k,
            s,
            None,
        );
        let want = twin::planar_backward(
            &q64,
            &eps64,
            &f64s(&dz_h),
            None,
            false,
            b,
            d,
            k,
            s,
            Some(log_q_grad.as_slice()),
        );
        assert_close(
            &format!("{what}: grad"),
            &g.read(ctx).unwrap(),
            &want,
            1e-4,
            1e-4,
        );
        // The fixed-ε log-q gradient is the central difference of log q(z_K(ε, q) | q).
        let lq = |qq: &[f64]| -> f64 {
            twin::planar_log_density(qq, &eps64, b, d, k, s)
                .iter()
                .zip(&coef64)
                .map(|(l, c)| l * c)
                .sum()
        };
        for j in (0..b * p).step_by(7) {
            let (mut qp, mut qm) = (q64.clone(), q64.clone());
            qp[j] += 1e-6;
            qm[j] -= 1e-6;
            let num = (lq(&qp) - lq(&qm)) / 2e-6;
            assert!(
                (num - log_q_grad[j]).abs() < 1e-6 * (1.0 + num.abs()),
                "{what}: d log q / d q[{j}] {} vs {num}",
                log_q_grad[j]
            );
        }
        // The twin's inverse recovers ε.
        let back = twin::planar_inverse(&q64, &post.cpu_sample(&q64, &eps64, b, s), b, d, k, s);
        for (x, y) in back.iter().zip(&eps64) {
            assert!((x - y).abs() < 1e-8, "{what}: inverse {x} vs {y}");
        }
        // The prior's parameters make q the prior; location/scale read rows.
        let prior = post.prior_params().unwrap();
        assert_eq!(prior.len(), p);
        let lp = post.cpu_log_density(&f64s(&prior), &[0.5; 7][..d], 1, 1)[0];
        let want = -0.5 * 0.25 * d as f64 - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
        assert!(
            (lp - want).abs() < 1e-12,
            "{what}: prior log q {lp} vs {want}"
        );
        assert_eq!(post.location(&q_h, b).len(), b * d);
        assert_eq!(post.scale(&q_h, b).len(), b * d);
    }
}

#[test]
fn configurations_name_the_flows_and_the_elbo_trains_them_through_a_single_draw() {
    assert_eq!(
        PosteriorKind::parse("planar").unwrap(),
        PosteriorKind::Planar { flows: 8 }
    );
    let e = PosteriorKind::parse("radial").unwrap_err();
    assert!(e.contains("radial") && e.contains("planar"), "{e}");
    let mut cfg = VaeConfig::classic(4, 4);
    cfg.latent = 3;
    cfg.posterior = PosteriorKind::Planar { flows: 2 };
    let s = serde_json::to_string(&cfg).unwrap();
    assert!(s.contains(r#""posterior":{"planar":{"flows":2}}"#), "{s}");
    let back: VaeConfig = serde_json::from_str(&s).unwrap();
    assert_eq!(back.posterior, PosteriorKind::Planar { flows: 2 });
    let dflt: VaeConfig = serde_json::from_str(&s.replace(r#"{"flows":2}"#, "{}")).unwrap();
    assert_eq!(dflt.posterior, PosteriorKind::Planar { flows: 8 });
    // The encoder outputs 2·3 + 2·(2·3 + 1) = 20 values.
    assert_eq!(cfg.posterior().param_dim(), 20);
    assert_eq!(
        cfg.layout().get("encoder.fc2.bias").unwrap().shape,
        vec![20]
    );
    cfg.posterior = PosteriorKind::Planar { flows: 33 };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("33 flows") && e.contains("--flows"), "{e}");
    cfg.posterior = PosteriorKind::Planar { flows: 2 };
    cfg.latent = 65;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("latent size 65") && e.contains("planar"), "{e}");
    // The ELBO trains a flow through its single-draw estimate: the same steps as the IWAE
    // bound with K = 1, bit for bit.
    let ctx = ctx();
    let (out_e, out_i) = (tmp("elbo"), tmp("iwae1"));
    let mut c = planar_cfg(&out_e, 1);
    c.objective = ObjectiveSpec::Elbo;
    let mut e = Trainer::new(ctx, c.clone()).unwrap();
    let se = e.train().unwrap();
    let mut i = Trainer::new(ctx, planar_cfg(&out_i, 1)).unwrap();
    i.train().unwrap();
    let (pe, pi) = (
        e.vae.read_params(ctx).unwrap(),
        i.vae.read_params(ctx).unwrap(),
    );
    assert!(
        pe.iter().zip(&pi).all(|(x, y)| x.to_bits() == y.to_bits()),
        "the ELBO of a flow and IWAE(1) trained apart"
    );
    let terms = &se.epochs[0].train_terms;
    assert!(
        terms.contains_key("train_recon") && terms.contains_key("train_kl"),
        "{terms:?}"
    );
    // Without a closed-form KL there is no KL weight to set or schedule.
    c.beta = 2.0;
    c.out = tmp("beta2");
    let err = Trainer::new(ctx, c)
        .err()
        .expect("β = 2 refused")
        .to_string();
    assert!(
        err.contains("no closed-form KL") && err.contains("--beta 1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(out_e);
    let _ = std::fs::remove_dir_all(out_i);
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wgvae-planar-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn planar_cfg(out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: DataSource::Idx {
            dir: common::tool::mnist(),
        },
        model: ModelSpec {
            enc_hidden: vec![64],
            dec_hidden: vec![64],
            latent: 6,
            posterior: PosteriorKind::Planar { flows: 4 },
            ..ModelSpec::default()
        },
        objective: ObjectiveSpec::Iwae { k: 1 },
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
fn a_planar_flow_run_learns_resumes_exactly_and_records_its_posterior() {
    let ctx = ctx();
    let straight = tmp("straight");
    let split = tmp("split");
    let mut a = Trainer::new(ctx, planar_cfg(&straight, 2)).unwrap();
    assert_eq!(a.vae.posterior.name(), "planar");
    let start = a.evaluate(false).unwrap();
    let sa = a.train().unwrap();
    let end = sa.last_eval.clone().unwrap();
    let losses: Vec<f64> = sa.epochs.iter().map(|m| m.train_loss).collect();
    eprintln!(
        "planar flows (K = 4), mnist-512, --objective iwae --iwae-train-k 1: train loss {losses:?}, \
         test -ELBO {:.1} -> {:.1}",
        start.neg_elbo, end.neg_elbo
    );
    assert!(losses[1] < losses[0], "{losses:?}");
    assert!(
        end.neg_elbo < 0.7 * start.neg_elbo,
        "{} -> {}",
        start.neg_elbo,
        end.neg_elbo
    );
    let mut b = Trainer::new(ctx, planar_cfg(&split, 1)).unwrap();
    b.train().unwrap();
    drop(b);
    let mut c = Trainer::resume(ctx, &split, 1, Some(true)).unwrap();
    assert_eq!(c.vae.posterior.name(), "planar");
    let sc = c.train().unwrap();
    assert_eq!(sc.epochs.len(), 2);
    common::assert_resumed_exactly(&a, &sa, &c, &sc, "planar flows");
    let ck = Checkpoint::load(&straight.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.model.posterior, PosteriorKind::Planar { flows: 4 });
    let _ = std::fs::remove_dir_all(straight);
    let _ = std::fs::remove_dir_all(split);
}

#[test]
fn the_cli_takes_planar_flows_and_refuses_them_where_they_do_not_apply() {
    let dir = tmp("cli");
    let run_dir = dir.join("run");
    let out = wgvae()
        .args(["train", "--quiet", "--no-pictures", "--epochs", "1"])
        .args(["--posterior", "planar", "--flows", "3"])
        .args(["--objective", "iwae", "--iwae-train-k", "1"])
        .args(["--hidden", "32", "--latent", "4", "--batch", "32", "--data"])
        .arg(common::tool::mnist())
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ck = Checkpoint::load(&run_dir.join(checkpoint::FILE_NAME)).unwrap();
    assert_eq!(ck.model.posterior, PosteriorKind::Planar { flows: 3 });
    let images = common::tool::mnist().join("t10k-images-idx3-ubyte.gz");
    let (elbo, iwae) = common::tool::eval_bounds(&run_dir, &images, 16);
    eprintln!("planar flows eval: -ELBO {elbo:.2}, -IWAE(16) {iwae:.2}");
    // The ELBO's KL is a single draw, the IWAE bound 16: finite, positive, and the IWAE bound
    // at least as tight (Monte Carlo noise aside).
    assert!(
        iwae.is_finite() && iwae > 0.0 && iwae < elbo + 1.0,
        "{iwae} vs {elbo}"
    );
    for (args, want) in [
        (
            &["--posterior", "planar", "--objective", "capacity"][..],
            "--posterior planar has no closed-form KL",
        ),
        (&["--posterior", "planar", "--beta", "4"][..], "--beta 1"),
        (
            &["--flows", "3"][..],
            "--flows applies to --posterior planar or iaf only",
        ),
        (
            &[
                "--posterior",
                "planar",
                "--flows",
                "40",
                "--objective",
                "iwae",
            ][..],
            "40 flows",
        ),
    ] {
        let (data, bad) = (common::tool::mnist(), dir.join("bad"));
        let mut all = vec!["train", "--quiet", "--no-pictures", "--data"];
        all.extend([data.to_str().unwrap(), "--out", bad.to_str().unwrap()]);
        all.extend(args);
        common::tool::fails(&all, &[want]);
    }
    let _ = std::fs::remove_dir_all(dir);
}
