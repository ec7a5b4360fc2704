//! CPU twins of FactorVAE's kernels (shaders/factor.wgsl, [`crate::ops::factor`]).

use crate::ops::factor::PERMUTE_STREAM;
use crate::rng::philox4x32;

/// The permutation's keys (B·D,) at (seed, step): word i % 4 of Philox4x32-10 with counter
/// (i / 4, step, [`PERMUTE_STREAM`], 0), as `permute_keys` draws them.
pub fn permute_keys(n: usize, seed: u64, step: u32) -> Vec<u32> {
    let mut keys = Vec::with_capacity(n);
    for t in 0..n.div_ceil(4) {
        let r = philox4x32(
            [t as u32, step, PERMUTE_STREAM, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        for word in r {
            if keys.len() < n {
                keys.push(word);
            }
        }
    }
    keys
}

/// z_perm (B, D) of [`crate::ops::factor::permute_dims`] (its `Alone` output), bit for bit:
/// each column permuted across the rows with w > 0 by the rank of its keys (ties broken by the
/// row index); rows with w ≤ 0 (or NaN) are 0. `step` is the step the kernel sees (the fixed
/// step plus the step state's counter).
pub fn permute_dims<T: Copy + Default>(
    z: &[T],
    w: &[f64],
    b: usize,
    d: usize,
    seed: u64,
    step: u32,
) -> Vec<T> {
    let keys = permute_keys(b * d, seed, step);
    let valid: Vec<usize> = (0..b).filter(|&r| w[r] > 0.0).collect();
    let mut out = vec![T::default(); b * d];
    for col in 0..d {
        let mut order: Vec<(u32, usize)> = valid.iter().map(|&r| (keys[r * d + col], r)).collect();
        order.sort_unstable();
        // The source of rank k goes to the k-th valid row.
        for (k, &(_, src)) in order.iter().enumerate() {
            out[valid[k] * d + col] = z[src * d + col];
        }
    }
    out
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The twin of `disc_loss`: from logits (2B, 2) (rows 0..B class 0, rows B..2B class 1) and row
/// weights (B,), (loss (B,), accuracy (B,), dlogits (2B, 2)) with
/// loss[b] = (CE(logits[b], 0) + CE(logits[B + b], 1)) / 2 and dlogits the gradient of
/// Σ_b w[b]·loss[b] (0 for rows of weight 0).
pub fn disc_loss(logits: &[f64], w: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let b = w.len();
    let mut loss = vec![0.0; b];
    let mut acc = vec![0.0; b];
    let mut g = vec![0.0; 4 * b];
    for i in 0..b {
        let (ir, ip) = (2 * i, 2 * (b + i));
        let (r0, r1) = (logits[ir], logits[ir + 1]);
        let (p0, p1) = (logits[ip], logits[ip + 1]);
        loss[i] = 0.5 * (softplus(r1 - r0) + softplus(p0 - p1));
        acc[i] = 0.5 * (f64::from(u8::from(r0 >= r1)) + f64::from(u8::from(p1 > p0)));
        let gw = 0.5 * w[i];
        if gw != 0.0 {
            let sr = sigmoid(r1 - r0);
            let sp = sigmoid(p0 - p1);
            g[ir] = -gw * sr;
            g[ir + 1] = gw * sr;
            g[ip] = gw * sp;
            g[ip + 1] = -gw * sp;
        }
    }
    (loss, acc, g)
}

/// The twin of `tc_estimate`: from logits (B, 2) and row weights (B,), (tc (B,), dlogits (B, 2))
/// with tc[b] = logits[b, 0] − logits[b, 1] and dlogits = γ·w[b]·(1, −1).
pub fn tc_estimate(logits: &[f64], w: &[f64], gamma: f64) -> (Vec<f64>, Vec<f64>) {
    let b = w.len();
    let mut tc = vec![0.0; b];
    let mut g = vec![0.0; 2 * b];
    for i in 0..b {
        tc[i] = logits[2 * i] - logits[2 * i + 1];
        let s = gamma * w[i];
        if s != 0.0 {
            g[2 * i] = s;
            g[2 * i + 1] = -s;
        }
    }
    (tc, g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_moves_only_valid_rows() {
        let (b, d) = (9, 3);
        let z: Vec<f64> = (0..b * d).map(|i| i as f64).collect();
        let mut w = vec![1.0; b];
        w[2] = 0.0;
        w[8] = 0.0;
        let p = permute_dims(&z, &w, b, d, 7, 3);
        for col in 0..d {
            let got: Vec<f64> = (0..b).map(|r| p[r * d + col]).collect();
            assert_eq!(got[2], 0.0);
            assert_eq!(got[8], 0.0);
            let mut valid_got: Vec<f64> = (0..b).filter(|&r| w[r] > 0.0).map(|r| got[r]).collect();
            let mut valid_z: Vec<f64> = (0..b)
                .filter(|&r| w[r] > 0.0)
                .map(|r| z[r * d + col])
                .collect();
            valid_got.sort_by(f64::total_cmp);
            valid_z.sort_by(f64::total_cmp);
            assert_eq!(valid_got, valid_z, "column {col}");
        }
    }

    #[test]
    fn losses_at_known_points() {
        // Equal logits: CE = ln 2 for both rows, the real row counts as right (tie → class 0).
        let (loss, acc, g) = disc_loss(&[0.0, 0.0, 0.0, 0.0], &[1.0]);
        assert!((loss[0] - std::f64::consts::LN_2).abs() < 1e-15);
        assert_eq!(acc[0], 0.5);
        assert_eq!(g, vec![-0.25, 0.25, 0.25, -0.25]);
        let (tc, g) = tc_estimate(&[2.0, -1.0], &[0.5], 3.0);
        assert_eq!(tc, vec![3.0]);
        assert_eq!(g, vec![1.5, -1.5]);
    }
}
