//! CPU twin of `ops::gemm`.

use crate::cpu::{activate, activate_grad_from_output};
use crate::ops::{Activation, Trans};

/// Epilogue of the CPU twin; slices in the same layouts as the GPU operands.
#[derive(Clone, Copy, Debug)]
pub enum CpuEpilogue<'a> {
    Store,
    /// the previous C, (M, N)
    Accumulate(&'a [f32]),
    /// bias (N,)
    BiasAct(&'a [f32], Activation),
    /// activation output (M, N)
    ActGrad(&'a [f32], Activation),
}

/// `epilogue(op(A)·op(B))` in f64. `a` is (M, K) or (K, M) when `trans.a()`; `b` is (K, N) or
/// (N, K) when `trans.b()`. Returns C (M, N).
pub fn gemm(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans: Trans,
    epilogue: CpuEpilogue<'_>,
) -> Vec<f64> {
    assert_eq!(
        a.len(),
        m * k,
        "A has {} elements, expected {}",
        a.len(),
        m * k
    );
    assert_eq!(
        b.len(),
        k * n,
        "B has {} elements, expected {}",
        b.len(),
        k * n
    );
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for kk in 0..k {
            let av = if trans.a() {
                a[kk * m + i]
            } else {
                a[i * k + kk]
            } as f64;
            if av == 0.0 {
                continue;
            }
            for j in 0..n {
                let bv = if trans.b() {
                    b[j * k + kk]
                } else {
                    b[kk * n + j]
                } as f64;
                c[i * n + j] += av * bv;
            }
        }
    }
    for i in 0..m {
        for j in 0..n {
            let v = &mut c[i * n + j];
            match epilogue {
                CpuEpilogue::Store => {}
                CpuEpilogue::Accumulate(old) => *v += old[i * n + j] as f64,
                CpuEpilogue::BiasAct(bias, act) => *v = activate(act, *v + bias[j] as f64),
                CpuEpilogue::ActGrad(out, act) => {
                    *v *= activate_grad_from_output(act, out[i * n + j] as f64)
                }
            }
        }
    }
    c
}
