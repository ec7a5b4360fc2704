//! Latent-space arithmetic: interpolation and vector arithmetic on codes.

/// Linear interpolation (1 − t)·a + t·b.
pub fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (1.0 - t) * x + t * y)
        .collect()
}

/// Spherical linear interpolation between a and b (falls back to `lerp` when they are
/// nearly parallel). Keeps codes at the norms a Gaussian prior makes typical.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let cos = (dot / (na * nb)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    if omega.sin().abs() < 1e-6 {
        return lerp(a, b, t);
    }
    let t = t as f64;
    let wa = ((1.0 - t) * omega).sin() / omega.sin();
    let wb = (t * omega).sin() / omega.sin();
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32)
        .collect()
}

/// a − b + c ("king − man + woman").
pub fn arithmetic(a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .zip(c)
        .map(|((&x, &y), &z)| x - y + z)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_endpoints_and_norm() {
        let a = [1.0f32, 0.0, 0.0];
        let b = [0.0f32, 2.0, 0.0];
        assert_eq!(slerp(&a, &b, 0.0), a.to_vec());
        let end = slerp(&a, &b, 1.0);
        assert!((end[1] - 2.0).abs() < 1e-6 && end[0].abs() < 1e-6);
        // Halfway between orthogonal unit vectors lies on the unit circle.
        let u = [0.0f32, 1.0, 0.0];
        let mid = slerp(&a, &u, 0.5);
        let n: f32 = mid.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-6, "{mid:?}");
        // Parallel vectors fall back to lerp.
        assert_eq!(slerp(&a, &a, 0.3), a.to_vec());
    }

    #[test]
    fn arithmetic_is_elementwise() {
        assert_eq!(
            arithmetic(&[1.0, 2.0], &[0.5, 1.0], &[2.0, 0.0]),
            vec![2.5, 1.0]
        );
    }
}
