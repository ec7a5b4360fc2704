//! CPU twins of `ops::conv`, in f64, straight from the definition. A convolution links a *wide*
//! image (a Conv2d's input, a ConvTranspose2d's output) with a *narrow* one (a Conv2d's output,
//! a ConvTranspose2d's input) by the terms
//!
//! ```text
//! wide[b, cw, n_y·sh − ph + kh, n_x·sw − pw + kw] · w[cn, cw, kh, kw] · narrow[b, cn, n_y, n_x]
//! ```
//!
//! (terms outside the wide image dropped); every pass of both layers is one loop over these
//! terms (`Terms::for_each`) that adds each into the tensor it computes. The GPU kernels
//! instead gather rows of implicit GEMMs (split by output phase for the transposed products,
//! from packed weights), so the two are independent derivations of the same sums. The twins
//! take f32 (GPU inputs) or f64 slices (finite differences). Images are NCHW, weights in
//! PyTorch's layouts: Conv2d (out, in, KH, KW), ConvTranspose2d (in, out, KH, KW), both
//! (narrow channels, wide channels, KH, KW).

use crate::cpu::{activate, activate_grad_from_output};
use crate::ops::Activation;
use crate::ops::conv::{Conv2d, ConvTranspose2d};

/// Size of a convolution's output along one axis: `(len + 2 pad − k) / stride + 1`.
fn conv_len(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    assert!(
        len + 2 * pad >= k,
        "kernel {k} exceeds the padded length {len} + 2·{pad}"
    );
    (len + 2 * pad - k) / stride + 1
}

/// `base + d − pad` when it lies in [0, len).
fn inside(base: usize, d: usize, pad: usize, len: usize) -> Option<usize> {
    (base + d).checked_sub(pad).filter(|&v| v < len)
}

/// An input element in f64 (the twins take f32 or f64 slices).
fn f<T: Into<f64>>(v: T) -> f64 {
    v.into()
}

fn check_len<T>(what: &str, v: &[T], want: usize) {
    assert_eq!(
        v.len(),
        want,
        "{what} has {} elements, expected {want}",
        v.len()
    );
}

/// Multiplies `g` by act'(y) taken from the activation output `y` (the producer's output).
fn apply_producer<T: Copy + Into<f64>>(g: &mut [f64], producer: Option<(&[T], Activation)>) {
    if let Some((y, act)) = producer {
        check_len("producer output", y, g.len());
        for (v, &o) in g.iter_mut().zip(y) {
            *v *= activate_grad_from_output(act, f(o));
        }
    }
}

/// y = act(y + bias[channel]) for y (B, C, plane).
fn add_bias_act<T: Copy + Into<f64>>(y: &mut [f64], bias: &[T], plane: usize, act: Activation) {
    for image in y.chunks_mut(bias.len() * plane) {
        for (values, &b) in image.chunks_mut(plane).zip(bias) {
            for v in values {
                *v = activate(act, *v + f(b));
            }
        }
    }
}

/// `len` zeros, or the previous values of an accumulated gradient.
fn start_from<T: Copy + Into<f64>>(what: &str, previous: Option<&[T]>, len: usize) -> Vec<f64> {
    match previous {
        Some(old) => {
            check_len(what, old, len);
            old.iter().map(|&v| f(v)).collect()
        }
        None => vec![0.0; len],
    }
}

/// The terms of one convolution (see the module docs): sizes of the wide and narrow images and
/// the window that links them.
struct Terms {
    batch: usize,
    /// Channels and (H, W) of the wide image.
    wide_c: usize,
    wide: (usize, usize),
    /// Channels and (H, W) of the narrow image.
    narrow_c: usize,
    narrow: (usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

impl Terms {
    /// A Conv2d on input (H, W): the input is wide, the output narrow.
    fn conv2d(layer: &Conv2d, batch: usize, (h, w): (usize, usize)) -> Terms {
        let (kh, kw) = layer.kernel;
        let (sh, sw) = layer.stride;
        let (ph, pw) = layer.padding;
        Terms {
            batch,
            wide_c: layer.in_channels,
            wide: (h, w),
            narrow_c: layer.out_channels,
            narrow: (conv_len(h, kh, sh, ph), conv_len(w, kw, sw, pw)),
            kernel: layer.kernel,
            stride: layer.stride,
            padding: layer.padding,
        }
    }

    /// A ConvTranspose2d on input (H, W): the output is wide, the input narrow.
    fn conv_transpose2d(layer: &ConvTranspose2d, batch: usize, hw: (usize, usize)) -> Terms {
        let wide = layer
            .output_size(hw)
            .expect("the transposed convolution's output size");
        Terms {
            batch,
            wide_c: layer.out_channels,
            wide,
            narrow_c: layer.in_channels,
            narrow: hw,
            kernel: layer.kernel,
            stride: layer.stride,
            padding: layer.padding,
        }
    }

    fn wide_len(&self) -> usize {
        self.batch * self.wide_c * self.wide.0 * self.wide.1
    }

    fn narrow_len(&self) -> usize {
        self.batch * self.narrow_c * self.narrow.0 * self.narrow.1
    }

    fn weight_len(&self) -> usize {
        self.narrow_c * self.wide_c * self.kernel.0 * self.kernel.1
    }

    /// Calls `term(wide index, weight index, narrow index)` for every term, images outermost.
    fn for_each(&self, mut term: impl FnMut(usize, usize, usize)) {
        let (wc_n, nc_n) = (self.wide_c, self.narrow_c);
        let (h, w) = self.wide;
        let (nh_n, nw_n) = self.narrow;
        let (kh_n, kw_n) = self.kernel;
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        for b in 0..self.batch {
            for cn in 0..nc_n {
                for ny in 0..nh_n {
                    for nx in 0..nw_n {
                        let narrow = ((b * nc_n + cn) * nh_n + ny) * nw_n + nx;
                        for cw in 0..wc_n {
                            for kh in 0..kh_n {
                                let Some(wy) = inside(ny * sh, kh, ph, h) else {
                                    continue;
                                };
                                for kw in 0..kw_n {
                                    let Some(wx) = inside(nx * sw, kw, pw, w) else {
                                        continue;
                                    };
                                    term(
                                        ((b * wc_n + cw) * h + wy) * w + wx,
                                        ((cn * wc_n + cw) * kh_n + kh) * kw_n + kw,
                                        narrow,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y (B, out, OH, OW) = act(conv(x) + bias) for x (B, in, H, W).
pub fn conv2d_forward<T: Copy + Into<f64>>(
    layer: &Conv2d,
    batch: usize,
    hw: (usize, usize),
    x: &[T],
    weight: &[T],
    bias: &[T],
    act: Activation,
) -> Vec<f64> {
    let t = Terms::conv2d(layer, batch, hw);
    check_len("x", x, t.wide_len());
    check_len("weight", weight, t.weight_len());
    check_len("bias", bias, t.narrow_c);
    let mut y = vec![0.0f64; t.narrow_len()];
    t.for_each(|xi, wi, yi| y[yi] += f(x[xi]) * f(weight[wi]));
    add_bias_act(&mut y, bias, t.narrow.0 * t.narrow.1, act);
    y
}

/// dx (B, in, H, W) = convᵀ(dy) ⊙ act'(producer output), for dy (B, out, OH, OW): every
/// output gradient scattered back along the taps that produced it.
pub fn conv2d_input_grad<T: Copy + Into<f64>>(
    layer: &Conv2d,
    batch: usize,
    hw: (usize, usize),
    dy: &[T],
    weight: &[T],
    producer: Option<(&[T], Activation)>,
) -> Vec<f64> {
    let t = Terms::conv2d(layer, batch, hw);
    check_len("dy", dy, t.narrow_len());
    check_len("weight", weight, t.weight_len());
    let mut dx = vec![0.0f64; t.wide_len()];
    t.for_each(|xi, wi, yi| dx[xi] += f(dy[yi]) * f(weight[wi]));
    apply_producer(&mut dx, producer);
    dx
}

/// dW (out, in, KH, KW) = Σ over images and output pixels of dy ⊗ the input patch
/// (+ `accumulate`, the previous dW).
pub fn conv2d_weight_grad<T: Copy + Into<f64>>(
    layer: &Conv2d,
    batch: usize,
    hw: (usize, usize),
    x: &[T],
    dy: &[T],
    accumulate: Option<&[T]>,
) -> Vec<f64> {
    let t = Terms::conv2d(layer, batch, hw);
    check_len("x", x, t.wide_len());
    check_len("dy", dy, t.narrow_len());
    let mut dw = start_from("previous dW", accumulate, t.weight_len());
    t.for_each(|xi, wi, yi| dw[wi] += f(dy[yi]) * f(x[xi]));
    dw
}

/// db (C,) = Σ over images and pixels of dy (B, C, plane) (+ `accumulate`). The bias gradient of
/// both layer kinds.
pub fn conv_bias_grad<T: Copy + Into<f64>>(
    dy: &[T],
    batch: usize,
    channels: usize,
    plane: usize,
    accumulate: Option<&[T]>,
) -> Vec<f64> {
    check_len("dy", dy, batch * channels * plane);
    let mut db = start_from("previous db", accumulate, channels);
    for b in 0..batch {
        for (c, d) in db.iter_mut().enumerate() {
            let start = (b * channels + c) * plane;
            *d += dy[start..start + plane].iter().map(|&v| f(v)).sum::<f64>();
        }
    }
    db
}

/// y (B, out, OH, OW) = act(convᵀ(x) + bias) for x (B, in, H, W), OH = (H − 1)·sh − 2·ph + KH +
/// output padding: every input pixel scattered along the taps.
pub fn conv_transpose2d_forward<T: Copy + Into<f64>>(
    layer: &ConvTranspose2d,
    batch: usize,
    hw: (usize, usize),
    x: &[T],
    weight: &[T],
    bias: &[T],
    act: Activation,
) -> Vec<f64> {
    let t = Terms::conv_transpose2d(layer, batch, hw);
    check_len("x", x, t.narrow_len());
    check_len("weight", weight, t.weight_len());
    check_len("bias", bias, t.wide_c);
    let mut y = vec![0.0f64; t.wide_len()];
    t.for_each(|yi, wi, xi| y[yi] += f(x[xi]) * f(weight[wi]));
    add_bias_act(&mut y, bias, t.wide.0 * t.wide.1, act);
    y
}

/// dx (B, in, H, W) = Σ over taps of dy (B, out, OH, OW) at the pixels x reached, times the
/// weights, ⊙ act'(producer output).
pub fn conv_transpose2d_input_grad<T: Copy + Into<f64>>(
    layer: &ConvTranspose2d,
    batch: usize,
    hw: (usize, usize),
    dy: &[T],
    weight: &[T],
    producer: Option<(&[T], Activation)>,
) -> Vec<f64> {
    let t = Terms::conv_transpose2d(layer, batch, hw);
    check_len("dy", dy, t.wide_len());
    check_len("weight", weight, t.weight_len());
    let mut dx = vec![0.0f64; t.narrow_len()];
    t.for_each(|yi, wi, xi| dx[xi] += f(dy[yi]) * f(weight[wi]));
    apply_producer(&mut dx, producer);
    dx
}

/// dW (in, out, KH, KW) = Σ over images and input pixels of x ⊗ the patch of dy it reached
/// (+ `accumulate`).
pub fn conv_transpose2d_weight_grad<T: Copy + Into<f64>>(
    layer: &ConvTranspose2d,
    batch: usize,
    hw: (usize, usize),
    x: &[T],
    dy: &[T],
    accumulate: Option<&[T]>,
) -> Vec<f64> {
    let t = Terms::conv_transpose2d(layer, batch, hw);
    check_len("x", x, t.narrow_len());
    check_len("dy", dy, t.wide_len());
    let mut dw = start_from("previous dW", accumulate, t.weight_len());
    t.for_each(|yi, wi, xi| dw[wi] += f(x[xi]) * f(dy[yi]));
    dw
}
