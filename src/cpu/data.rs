//! CPU twins of the training gather: the row weights of a possibly partial batch.

/// (x (rows, P), w (rows,)) of the training gather at position `pos` of `perm`: rows past the
/// end of `perm` are zero and have weight 0; the valid rows have weight 1/valid.
pub fn gather_weighted(
    images: &[u8],
    pixels: usize,
    perm: &[u32],
    pos: usize,
    rows: usize,
) -> (Vec<f64>, Vec<f64>) {
    let valid = perm.len().saturating_sub(pos).min(rows);
    let mut x = vec![0.0; rows * pixels];
    let mut w = vec![0.0; rows];
    for r in 0..valid {
        let item = perm[pos + r] as usize;
        for p in 0..pixels {
            x[r * pixels + p] = images[item * pixels + p] as f64 / 255.0;
        }
        w[r] = 1.0 / valid as f64;
    }
    (x, w)
}
