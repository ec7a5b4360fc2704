//! CPU twins of the training gather: the row weights of a possibly partial batch, and the
//! binarising draw.

use crate::ops::data::{BINARIZE_STREAM, binarize_threshold};
use crate::rng::philox4x32;

/// (x (rows, P), w (rows,)) of the training gather at position `pos` of `perm`: rows past the
/// end of `perm` are zero and have weight 0; the valid rows have weight 1/valid.
pub fn gather_weighted(
    images: &[u8],
    pixels: usize,
    perm: &[u32],
    pos: usize,
    rows: usize,
) -> (Vec<f64>, Vec<f64>) {
    gather_train(images, pixels, perm, pos, rows, None)
}

/// [`gather_weighted`], binarising with `Some((seed, step))`: pixel p of row r is 1 when the
/// top 24 bits of word p % 4 of Philox((p / 4, step, BINARIZE_STREAM, r), seed) are below
/// [`binarize_threshold`] of its byte, else 0.
pub fn gather_train(
    images: &[u8],
    pixels: usize,
    perm: &[u32],
    pos: usize,
    rows: usize,
    binarize: Option<(u64, u32)>,
) -> (Vec<f64>, Vec<f64>) {
    let valid = perm.len().saturating_sub(pos).min(rows);
    let mut x = vec![0.0; rows * pixels];
    let mut w = vec![0.0; rows];
    for r in 0..valid {
        let item = perm[pos + r] as usize;
        for p in 0..pixels {
            let byte = images[item * pixels + p];
            x[r * pixels + p] = match binarize {
                None => byte as f64 / 255.0,
                Some((seed, step)) => {
                    let bits = philox4x32(
                        [(p / 4) as u32, step, BINARIZE_STREAM, r as u32],
                        [seed as u32, (seed >> 32) as u32],
                    );
                    if (bits[p % 4] >> 8) < binarize_threshold(byte) {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
        }
        w[r] = 1.0 / valid as f64;
    }
    (x, w)
}
