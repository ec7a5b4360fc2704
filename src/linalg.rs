//! Small dense linear algebra on the host, f64, row-major: the Cholesky factor and the
//! triangular solves that the factor probe, the fitted Gaussian of `wgvae sample` and the
//! linear-Gaussian models use.

/// Cholesky factor `L` (lower, row-major `m × m`) of the symmetric `a`, or `None` if a pivot
/// is not positive (or not finite).
pub fn cholesky(a: &[f64], m: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let mut s = a[i * m + j];
            for p in 0..j {
                s -= l[i * m + p] * l[j * m + p];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * m + i] = s.sqrt();
            } else {
                l[i * m + j] = s / l[j * m + j];
            }
        }
    }
    Some(l)
}

/// Solves `L y = b` in place (forward substitution).
pub fn forward_solve(l: &[f64], m: usize, b: &mut [f64]) {
    for i in 0..m {
        let mut s = b[i];
        for p in 0..i {
            s -= l[i * m + p] * b[p];
        }
        b[i] = s / l[i * m + i];
    }
}

/// Solves `L Lᵀ x = b` in place.
pub fn cholesky_solve(l: &[f64], m: usize, b: &mut [f64]) {
    forward_solve(l, m, b);
    for i in (0..m).rev() {
        let mut s = b[i];
        for p in i + 1..m {
            s -= l[p * m + i] * b[p];
        }
        b[i] = s / l[i * m + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] → x = [0.5, 0].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let mut b = [2.0, 1.0];
        cholesky_solve(&l, 2, &mut b);
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        // L y = [2, 1] with L = [[2, 0], [1, √2]] → y = [1, 0].
        let mut y = [2.0, 1.0];
        forward_solve(&l, 2, &mut y);
        assert!((y[0] - 1.0).abs() < 1e-12 && y[1].abs() < 1e-12, "{y:?}");
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
