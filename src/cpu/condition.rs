//! CPU twins of `shaders/condition.wgsl`: the one-hot label columns, the concatenation's
//! forward and backward copies, and the gather of a batch's labels.

use crate::ops::Activation;

/// `y[r, offset + c] = (c < classes && labels[r % B] == c)` for the columns from `offset` to
/// the end of each row of a (rows, width) buffer; the first `offset` columns are left as they
/// are.
pub fn onehot(
    labels: &[u32],
    y: &mut [f64],
    rows: usize,
    width: usize,
    offset: usize,
    classes: usize,
) {
    for r in 0..rows {
        let label = labels[r % labels.len()] as usize;
        for c in 0..width - offset {
            y[r * width + offset + c] = if c < classes && label == c { 1.0 } else { 0.0 };
        }
    }
}

/// `y[r, j] = x[r, j]` for j < F (x (rows, F), y (rows, width)).
pub fn concat_forward(x: &[f64], y: &mut [f64], rows: usize, features: usize, width: usize) {
    for r in 0..rows {
        y[r * width..r * width + features].copy_from_slice(&x[r * features..(r + 1) * features]);
    }
}

/// `dx[r, j] (= or +=) du[r, j] · act'(producer[r, j])` for j < F.
pub fn concat_backward(
    du: &[f64],
    dx: &mut [f64],
    rows: usize,
    features: usize,
    width: usize,
    accumulate: bool,
    producer: Option<(&[f64], Activation)>,
) {
    for r in 0..rows {
        for j in 0..features {
            let i = r * features + j;
            let mut g = du[r * width + j];
            if let Some((y, act)) = producer {
                g *= super::activate_grad_from_output(act, y[i]);
            }
            dx[i] = if accumulate { dx[i] + g } else { g };
        }
    }
}

/// The labels of the rows gathered at position `pos` of `perm`: `labels[perm[pos + r]]`,
/// 0 past the end of `perm`.
pub fn gather_labels(labels: &[u8], perm: &[u32], pos: usize, rows: usize) -> Vec<u32> {
    (0..rows)
        .map(|r| {
            perm.get(pos + r)
                .map_or(0, |&i| labels[(i as usize).min(labels.len() - 1)] as u32)
        })
        .collect()
}
