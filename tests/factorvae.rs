//! FactorVAE's GPU pieces against their f64 twins: the per-dimension permutation (bit for bit,
//! padding rows, new permutations every step), the discriminator's loss and the total-correlation
//! estimate (batches of 1, 7, 13, 67 with padding rows), the discriminator's gradients against
//! central finite differences of the twin, and a short training run in which it learns to tell
//! dependent latents from their permutation, and fails to tell independent ones.

mod common;

use common::{assert_close, contexts, ctx, data};
use wgvae::cpu;
use wgvae::gpu::{GpuContext, Program, Tensor};
use wgvae::model::discriminator::{Discriminator, DiscriminatorConfig};
use wgvae::ops::adam::AdamConfig;
use wgvae::ops::data::StepState;
use wgvae::ops::factor::{PermuteOutput, disc_loss, permute_dims, tc_estimate};
use wgvae::ops::reduce::metric_accumulate;
use wgvae::ops::reparam::RngStep;
use wgvae::rng::HostRng;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Row weights of a gathered batch of `b` rows of which the first `valid` hold data.
fn weights(b: usize, valid: usize) -> Vec<f32> {
    (0..b)
        .map(|r| if r < valid { 1.0 / valid as f32 } else { 0.0 })
        .collect()
}

/// The batches the kernels are checked on: (B, weights), padding trailing as the gather writes
/// it, and one with padding rows in the middle (the kernels take any pattern).
fn batches() -> Vec<(usize, Vec<f32>)> {
    let mut v: Vec<(usize, Vec<f32>)> = [1usize, 7, 13, 67]
        .iter()
        .map(|&b| (b, weights(b, b - b / 4)))
        .collect();
    let mut holes = weights(13, 13);
    for r in [0, 5, 6, 12] {
        holes[r] = 0.0;
    }
    let share = 1.0 / 9.0;
    for x in holes.iter_mut().filter(|x| **x > 0.0) {
        *x = share;
    }
    v.push((13, holes));
    v
}

/// Runs `permute_dims` on the GPU and returns its output.
fn gpu_permute(
    ctx: &GpuContext,
    z: &[f32],
    w: &[f32],
    d: usize,
    layout: PermuteOutput,
    seed: u64,
    step: RngStep<'_>,
) -> Vec<f32> {
    let b = w.len();
    let zt = Tensor::from_slice(ctx, "z", &[b, d], z).unwrap();
    let wt = Tensor::from_slice(ctx, "w", &[b], w).unwrap();
    let rows = match layout {
        PermuteOutput::Alone => b,
        PermuteOutput::Stacked => 2 * b,
    };
    // Prefilled with a value the kernel never writes, so an unwritten element shows.
    let out = Tensor::from_slice(ctx, "out", &[rows, d], &vec![-7.5f32; rows * d]).unwrap();
    permute_dims(ctx, "permute", &zt, &wt, &out, layout, seed, step)
        .unwrap()
        .run(ctx)
        .unwrap();
    out.read(ctx).unwrap()
}

#[test]
fn permutation_matches_twin_and_permutes_each_column_over_valid_rows() {
    let ctx = ctx();
    let state = StepState::new(ctx, "state").unwrap();
    for (b, w) in batches() {
        for d in [1usize, 3, 10] {
            // Distinct values; padding rows hold values that must never appear in z_perm.
            let mut z = data(b as u64 * 13 + d as u64, b * d, -3.0, 3.0);
            for r in (0..b).filter(|&r| w[r] == 0.0) {
                for c in 0..d {
                    z[r * d + c] = 1000.0 + (r * d + c) as f32;
                }
            }
            let w64 = f64s(&w);
            let seed = 0x0123_4567_89ab_cdefu64 ^ b as u64;
            let step = 41u32;
            let alone = gpu_permute(
                ctx,
                &z,
                &w,
                d,
                PermuteOutput::Alone,
                seed,
                RngStep::Fixed(step),
            );
            let want = cpu::factor::permute_dims(&z, &w64, b, d, seed, step);
            assert_eq!(
                alone, want,
                "B={b} D={d}: GPU permutation differs from the twin"
            );
            // The step state gives the same draw as the fixed step it holds.
            state.set(ctx, step, 0).unwrap();
            let stacked = gpu_permute(
                ctx,
                &z,
                &w,
                d,
                PermuteOutput::Stacked,
                seed,
                RngStep::State(&state),
            );
            assert_eq!(&stacked[..b * d], &z[..], "B={b} D={d}: stacked copy of z");
            assert_eq!(&stacked[b * d..], &want[..], "B={b} D={d}: stacked z_perm");
            for c in 0..d {
                let col = |v: &[f32], valid: bool| -> Vec<f32> {
                    let mut x: Vec<f32> = (0..b)
                        .filter(|&r| (w[r] > 0.0) == valid)
                        .map(|r| v[r * d + c])
                        .collect();
                    if valid {
                        x.sort_by(f32::total_cmp);
                    }
                    x
                };
                assert_eq!(col(&alone, true), col(&z, true), "B={b} D={d} column {c}");
                assert!(
                    col(&alone, false).iter().all(|&x| x == 0.0),
                    "B={b} D={d} column {c}: padding rows must be 0"
                );
            }
        }
    }
}

#[test]
fn permutations_differ_across_steps_and_columns() {
    let ctx = ctx();
    let (b, d) = (67usize, 4usize);
    let w = weights(b, 60);
    // z[r, c] = r: z_perm then spells out the permutation of every column.
    let z: Vec<f32> = (0..b * d).map(|i| (i / d) as f32).collect();
    let state = StepState::new(ctx, "state").unwrap();
    let zt = Tensor::from_slice(ctx, "z", &[b, d], &z).unwrap();
    let wt = Tensor::from_slice(ctx, "w", &[b], &w).unwrap();
    let out = Tensor::<f32>::zeros(ctx, "out", &[b, d]).unwrap();
    // One prepared program replayed with the step advanced on the GPU, as in training.
    let mut prog = permute_dims(
        ctx,
        "permute",
        &zt,
        &wt,
        &out,
        PermuteOutput::Alone,
        9,
        RngStep::State(&state),
    )
    .unwrap();
    prog.push(state.advance(ctx).unwrap());
    let mut seen: Vec<Vec<u32>> = Vec::new();
    for step in 0..5u32 {
        prog.run(ctx).unwrap();
        let got = out.read(ctx).unwrap();
        assert_eq!(
            got,
            cpu::factor::permute_dims(&z, &f64s(&w), b, d, 9, step),
            "step {step}"
        );
        for c in 0..d {
            let perm: Vec<u32> = (0..60).map(|r| got[r * d + c] as u32).collect();
            let fixed = perm
                .iter()
                .enumerate()
                .filter(|&(i, &p)| i as u32 == p)
                .count();
            assert!(
                fixed < 10,
                "step {step} column {c}: {fixed} of 60 rows stay"
            );
            assert!(
                !seen.contains(&perm),
                "step {step} column {c} repeats a permutation"
            );
            seen.push(perm);
        }
    }
    assert_eq!(state.read(ctx).unwrap().0, 5);
}

/// The twin is the GPU's permutation bit for bit (above), so the distribution is checked on
/// it: over 3000 steps and 4 columns every valid row goes to every valid row equally often.
#[test]
fn permutation_is_uniform_over_the_valid_rows() {
    let (b, d, valid) = (6usize, 4usize, 5usize);
    let w: Vec<f64> = (0..b).map(|r| if r < valid { 0.2 } else { 0.0 }).collect();
    let z: Vec<u32> = (0..b * d).map(|i| (i / d) as u32).collect();
    let steps = 3000u32;
    let mut counts = vec![0u32; valid * valid];
    for step in 0..steps {
        let p = cpu::factor::permute_dims(&z, &w, b, d, 77, step);
        for dest in 0..valid {
            for c in 0..d {
                counts[p[dest * d + c] as usize * valid + dest] += 1;
            }
        }
    }
    // Each cell: binomial(12000, 1/5): mean 2400, sd 43.8; 5 sd = 219.
    let n = (steps as usize * d) as f64;
    let mean = n / valid as f64;
    let sd = (n * 0.2 * 0.8).sqrt();
    for (i, &c) in counts.iter().enumerate() {
        assert!(
            (c as f64 - mean).abs() < 5.0 * sd,
            "source {} -> row {}: {c} times, expected {mean} ± {}",
            i / valid,
            i % valid,
            5.0 * sd
        );
    }
}

/// Logits with a spread of values, a few extremes and ties; NaN in the padding rows (their
/// gradient must still be exactly 0).
fn logits(seed: u64, rows: usize, b: usize, w: &[f32]) -> Vec<f32> {
    let mut l = data(seed, rows * 2, -6.0, 6.0);
    let n = l.len();
    l[0] = 40.0;
    if n > 5 {
        l[3] = -40.0;
        l[5] = l[4]; // a tie
    }
    for r in 0..rows {
        if w[r % b] == 0.0 {
            l[2 * r] = f32::NAN;
        }
    }
    l
}

#[test]
fn disc_loss_matches_twin() {
    let ctx = ctx();
    for (b, w) in batches() {
        let l = logits(b as u64 + 100, 2 * b, b, &w);
        let lt = Tensor::from_slice(ctx, "logits", &[2 * b, 2], &l).unwrap();
        let wt = Tensor::from_slice(ctx, "w", &[b], &w).unwrap();
        let loss = Tensor::<f32>::zeros(ctx, "loss", &[b]).unwrap();
        let acc = Tensor::<f32>::zeros(ctx, "acc", &[b]).unwrap();
        let g = Tensor::from_slice(ctx, "g", &[2 * b, 2], &vec![9.0f32; 4 * b]).unwrap();
        let mut p = Program::new();
        p.push(disc_loss(ctx, "disc loss", &lt, &wt, &loss, &acc, &g).unwrap());
        p.run(ctx).unwrap();
        let (loss_r, acc_r, g_r) = cpu::factor::disc_loss(&f64s(&l), &f64s(&w));
        let valid: Vec<usize> = (0..b).filter(|&r| w[r] > 0.0).collect();
        let pick = |v: &[f32]| valid.iter().map(|&r| v[r]).collect::<Vec<_>>();
        let pick64 = |v: &[f64]| valid.iter().map(|&r| v[r]).collect::<Vec<_>>();
        // softplus of |x| <= 80 in f32: relative rounding of the result, ~1e-6 absolute near 0.
        assert_close(
            &format!("loss B={b}"),
            &pick(&loss.read(ctx).unwrap()),
            &pick64(&loss_r),
            2e-6,
            2e-6,
        );
        // The argmax of the same f32 values: exact.
        assert_close(
            &format!("accuracy B={b}"),
            &pick(&acc.read(ctx).unwrap()),
            &pick64(&acc_r),
            0.0,
            0.0,
        );
        let g_got = g.read(ctx).unwrap();
        // w/2 · a probability: f32 exp rounding, absolute ~1e-7 of values ≤ 0.5.
        assert_close(&format!("dlogits B={b}"), &g_got, &g_r, 1e-7, 1e-5);
        for r in (0..b).filter(|&r| w[r] == 0.0) {
            for row in [r, b + r] {
                assert_eq!(
                    &g_got[2 * row..2 * row + 2],
                    &[0.0, 0.0],
                    "padding row {row}"
                );
            }
        }
    }
}

#[test]
fn tc_estimate_matches_twin() {
    let ctx = ctx();
    for (b, w) in batches() {
        let l = logits(b as u64 + 200, b, b, &w);
        let lt = Tensor::from_slice(ctx, "logits", &[b, 2], &l).unwrap();
        let wt = Tensor::from_slice(ctx, "w", &[b], &w).unwrap();
        let tc = Tensor::<f32>::zeros(ctx, "tc", &[b]).unwrap();
        let g = Tensor::from_slice(ctx, "g", &[b, 2], &vec![9.0f32; 2 * b]).unwrap();
        let gamma = 6.4f32;
        let mut p = Program::new();
        p.push(tc_estimate(ctx, "tc", &lt, &wt, &tc, &g, gamma).unwrap());
        p.run(ctx).unwrap();
        let (tc_r, g_r) = cpu::factor::tc_estimate(&f64s(&l), &f64s(&w), gamma as f64);
        let tc_got = tc.read(ctx).unwrap();
        for r in 0..b {
            if w[r] > 0.0 {
                // One f32 subtraction.
                assert!(
                    (tc_got[r] as f64 - tc_r[r]).abs() <= 1e-6 * tc_r[r].abs().max(1.0),
                    "tc B={b} row {r}: {} vs {}",
                    tc_got[r],
                    tc_r[r]
                );
            }
        }
        // γ·w in f32 against f64.
        assert_close(
            &format!("tc dlogits B={b}"),
            &g.read(ctx).unwrap(),
            &g_r,
            0.0,
            1e-6,
        );
    }
}

#[test]
fn shape_errors_are_reported() {
    let ctx = ctx();
    let z = Tensor::<f32>::zeros(ctx, "z", &[5, 3]).unwrap();
    let w = Tensor::<f32>::zeros(ctx, "w", &[4]).unwrap();
    let out = Tensor::<f32>::zeros(ctx, "out", &[5, 3]).unwrap();
    let e = permute_dims(
        ctx,
        "p",
        &z,
        &w,
        &out,
        PermuteOutput::Alone,
        1,
        RngStep::Fixed(0),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("row weights [4]"), "{e}");
    let w5 = Tensor::<f32>::zeros(ctx, "w", &[5]).unwrap();
    let e = permute_dims(
        ctx,
        "p",
        &z,
        &w5,
        &out,
        PermuteOutput::Stacked,
        1,
        RngStep::Fixed(0),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("(10, D)"), "{e}");
    let cfg = small_config(3);
    let disc = Discriminator::new(ctx, &cfg, &cfg.init_params(1).unwrap()).unwrap();
    let ws = disc.workspace(ctx, 4).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let e = disc
        .disc_phase(ctx, &ws, &z, &w, 1, &state)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("workspace of 4 rows"), "{e}");
    assert!(Discriminator::new(ctx, &cfg, &[0.0; 3]).is_err());
}

fn small_config(latent: usize) -> DiscriminatorConfig {
    DiscriminatorConfig {
        latent,
        layers: 3,
        width: 5,
        slope: 0.2,
        adam: AdamConfig {
            lr: 1e-3,
            beta1: 0.5,
            beta2: 0.9,
            ..AdamConfig::default()
        },
    }
}

/// Central differences of `f` at `x` along each coordinate.
fn fd(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let mut a = x.to_vec();
            a[i] += h;
            let mut c = x.to_vec();
            c[i] -= h;
            (f(&a) - f(&c)) / (2.0 * h)
        })
        .collect()
}

/// |GPU − finite difference| ≤ 1e-4 + 2e-3·|fd| (the tolerance of tests/modules.rs: f32
/// GEMMs over a few hundred terms against f64 differences with h = 1e-6).
fn assert_fd(what: &str, got: &[f32], want: &[f64]) {
    assert_close(what, got, want, 1e-4, 2e-3);
}

fn check_discriminator(ctx: &GpuContext) {
    let (b, d, valid) = (7usize, 3usize, 5usize);
    let cfg = small_config(d);
    let layout = cfg.layout();
    let p_h = data(11, layout.total, -0.6, 0.6);
    let p64 = f64s(&p_h);
    let disc = Discriminator::new(ctx, &cfg, &p_h).unwrap();
    let ws = disc.workspace(ctx, b).unwrap();
    let w_h = weights(b, valid);
    let w64 = f64s(&w_h);
    let z_h = data(12, b * d, -1.5, 1.5);
    let z64 = f64s(&z_h);
    let z = Tensor::from_slice(ctx, "z", &[b, d], &z_h).unwrap();
    let w = Tensor::from_slice(ctx, "w", &[b], &w_h).unwrap();
    let variant = ctx.gemm_variant.name();

    // tc: the estimate, and γ·Σ w ∂tc/∂z added onto what dz holds.
    let gamma = 2.5f32;
    let prefill = data(13, b * d, -1.0, 1.0);
    let dz = Tensor::from_slice(ctx, "dz", &[b, d], &prefill).unwrap();
    disc.tc_program(ctx, &ws, &z, &w, &dz, gamma)
        .unwrap()
        .run(ctx)
        .unwrap();
    let twin = cfg.cpu_tc(&p64, &z64, &w64, gamma as f64);
    assert_close(
        &format!("tc on GEMM {variant}"),
        &ws.tc.read(ctx).unwrap(),
        &twin.tc,
        1e-5,
        1e-4,
    );
    let added: Vec<f32> = dz
        .read(ctx)
        .unwrap()
        .iter()
        .zip(&prefill)
        .map(|(a, b)| a - b)
        .collect();
    let want = fd(&z64, &|zz| {
        let t = cfg.cpu_tc(&p64, zz, &w64, 0.0);
        t.tc.iter()
            .zip(&w64)
            .map(|(t, w)| gamma as f64 * w * t)
            .sum()
    });
    assert_fd(&format!("tc dz on GEMM {variant}"), &added, &want);
    assert_close(
        &format!("tc dz vs twin on GEMM {variant}"),
        &added,
        &twin.dz,
        1e-5,
        1e-3,
    );
    for r in valid..b {
        assert!(
            added[r * d..(r + 1) * d].iter().all(|&g| g == 0.0),
            "padding row {r} of dz"
        );
    }
    // Nothing reached the discriminator's parameters, gradients or optimizer.
    assert_eq!(disc.read_params(ctx).unwrap(), p_h);
    assert!(disc.grads.flat.read(ctx).unwrap().iter().all(|&g| g == 0.0));

    // The discriminator's phase at step 3: permutation, loss, accuracy, parameter gradients.
    let state = StepState::new(ctx, "state").unwrap();
    state.set(ctx, 3, 0).unwrap();
    let seed = 0xFAC7_0125u64;
    let phase = disc.disc_phase(ctx, &ws, &z, &w, seed, &state).unwrap();
    phase.gradients.run(ctx).unwrap();
    let zp = cpu::factor::permute_dims(&z64, &w64, b, d, seed, 3);
    let input = ws.input.read(ctx).unwrap();
    assert_eq!(f64s(&input[..b * d]), z64);
    assert_eq!(f64s(&input[b * d..]), zp);
    let twin = cfg.cpu_disc_loss(&p64, &z64, &zp, &w64);
    assert_close(
        &format!("disc loss on GEMM {variant}"),
        &ws.loss.read(ctx).unwrap(),
        &twin.loss,
        1e-5,
        1e-4,
    );
    assert_close(
        &format!("disc accuracy on GEMM {variant}"),
        &ws.accuracy.read(ctx).unwrap(),
        &twin.accuracy,
        0.0,
        0.0,
    );
    let grads = disc.grads.flat.read(ctx).unwrap();
    let want = fd(&p64, &|pp| {
        let t = cfg.cpu_disc_loss(pp, &z64, &zp, &w64);
        t.loss.iter().zip(&w64).map(|(l, w)| w * l).sum()
    });
    for spec in &layout.tensors {
        let r = spec.offset..spec.offset + spec.len();
        assert_fd(
            &format!("{} on GEMM {variant}", spec.name),
            &grads[r.clone()],
            &want[r.clone()],
        );
        assert_close(
            &format!("twin {} on GEMM {variant}", spec.name),
            &grads[r.clone()],
            &twin.grads[r],
            1e-5,
            1e-3,
        );
    }

    // The update: Adam at step t = 4 from zero moments.
    phase.update.run(ctx).unwrap();
    let zeros = vec![0.0f32; layout.total];
    let (p_r, _, _) = cpu::adam(&p_h, &grads, &zeros, &zeros, 4, &cfg.adam);
    assert_close(
        &format!("updated parameters on GEMM {variant}"),
        &disc.read_params(ctx).unwrap(),
        &p_r,
        1e-6,
        1e-6,
    );
}

#[test]
fn discriminator_gradients_match_finite_differences() {
    for ctx in contexts() {
        check_discriminator(ctx);
    }
}

const STEPS: u32 = 200;
const MEASURED: u32 = 50;
const LR: f32 = 3e-3;

/// Trains a small discriminator for `steps` steps on fresh latents every step (B = 64, the
/// last 3 rows padding) and returns its accuracy averaged over the last `MEASURED` steps
/// (metric sums on the GPU, read once).
fn train_accuracy(correlated: bool, steps: u32) -> f64 {
    let ctx = ctx();
    let (b, d, valid) = (64usize, 3usize, 61usize);
    let cfg = DiscriminatorConfig {
        width: 16,
        layers: 2,
        adam: AdamConfig {
            lr: LR,
            ..small_config(d).adam
        },
        ..small_config(d)
    };
    let disc = Discriminator::new(ctx, &cfg, &cfg.init_params(3).unwrap()).unwrap();
    let ws = disc.workspace(ctx, b).unwrap();
    let z = Tensor::<f32>::zeros(ctx, "z", &[b, d]).unwrap();
    let w = Tensor::from_slice(ctx, "w", &[b], &weights(b, valid)).unwrap();
    let state = StepState::new(ctx, "state").unwrap();
    let metrics = Tensor::<f32>::zeros(ctx, "metrics", &[4]).unwrap();
    // One step as the trainer records it: the phase's gradients, its update, the counter.
    let phase = disc.disc_phase(ctx, &ws, &z, &w, 5, &state).unwrap();
    let mut step = Program::new();
    step.extend(phase.gradients);
    step.extend(phase.update);
    step.push(state.advance(ctx).unwrap());
    let mut metric = Program::new();
    metric.push(metric_accumulate(ctx, "accuracy", &ws.accuracy, &metrics, 0, Some(&w)).unwrap());
    let mut rng = HostRng::new(if correlated { 21 } else { 22 });
    let mut z_h = vec![0.0f32; b * d];
    for t in 0..steps {
        for r in 0..b {
            let z1 = rng.normal();
            let z2 = if correlated {
                z1 + 0.1 * rng.normal()
            } else {
                rng.normal()
            };
            let z3 = rng.normal();
            z_h[r * d..(r + 1) * d].copy_from_slice(&[z1 as f32, z2 as f32, z3 as f32]);
        }
        z.write(ctx, &z_h).unwrap();
        step.run(ctx).unwrap();
        if t + MEASURED >= steps {
            metric.run(ctx).unwrap();
        }
    }
    let m = metrics.read(ctx).unwrap();
    assert_eq!(m[0] as usize, MEASURED as usize * valid, "rows counted");
    assert_eq!(m[1], 0.0, "non-finite accuracy");
    m[2] as f64 / m[0] as f64
}

#[test]
fn discriminator_learns_dependence_not_independence() {
    let dependent = train_accuracy(true, STEPS);
    let independent = train_accuracy(false, STEPS);
    eprintln!(
        "accuracy over the last {MEASURED} of {STEPS} steps: dependent {dependent:.3}, independent {independent:.3}"
    );
    assert!(dependent > 0.8, "dependent latents: accuracy {dependent}");
    assert!(
        (independent - 0.5).abs() < 0.08,
        "independent latents: accuracy {independent}"
    );
}
