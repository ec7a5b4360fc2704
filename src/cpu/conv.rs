//! CPU twins of `ops::conv`, in f64: direct loops over the definitions. The GPU gathers; the
//! twins of the transposed products scatter, so the two are independent derivations of the same
//! sums. They take f32 (GPU inputs) or f64 slices (finite differences). Images are NCHW,
//! weights in PyTorch's layouts: Conv2d (out, in, KH, KW), ConvTranspose2d (in, out, KH, KW).

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

/// y (B, out, OH, OW) = act(conv(x) + bias) for x (B, in, H, W).
pub fn conv2d_forward<T: Copy + Into<f64>>(
    layer: &Conv2d,
    batch: usize,
    (h, w): (usize, usize),
    x: &[T],
    weight: &[T],
    bias: &[T],
    act: Activation,
) -> Vec<f64> {
    let (ci_n, co_n) = (layer.in_channels, layer.out_channels);
    let (kh_n, kw_n) = layer.kernel;
    let (sh, sw) = layer.stride;
    let (ph, pw) = layer.padding;
    let oh_n = conv_len(h, kh_n, sh, ph);
    let ow_n = conv_len(w, kw_n, sw, pw);
    check_len("x", x, batch * ci_n * h * w);
    check_len("weight", weight, co_n * ci_n * kh_n * kw_n);
    check_len("bias", bias, co_n);
    let mut y = vec![0.0f64; batch * co_n * oh_n * ow_n];
    for b in 0..batch {
        for co in 0..co_n {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut s = f(bias[co]);
                    for ci in 0..ci_n {
                        for kh in 0..kh_n {
                            let Some(ih) = inside(oh * sh, kh, ph, h) else {
                                continue;
                            };
                            for kw in 0..kw_n {
                                let Some(iw) = inside(ow * sw, kw, pw, w) else {
                                    continue;
                                };
                                s += f(x[((b * ci_n + ci) * h + ih) * w + iw])
                                    * f(weight[((co * ci_n + ci) * kh_n + kh) * kw_n + kw]);
                            }
                        }
                    }
                    y[((b * co_n + co) * oh_n + oh) * ow_n + ow] = activate(act, s);
                }
            }
        }
    }
    y
}

/// dx (B, in, H, W) = convᵀ(dy) ⊙ act'(producer output), for dy (B, out, OH, OW): every
/// output gradient scattered back along the taps that produced it.
pub fn conv2d_input_grad<T: Copy + Into<f64>>(
    layer: &Conv2d,
    batch: usize,
    (h, w): (usize, usize),
    dy: &[T],
    weight: &[T],
    producer: Option<(&[T], Activation)>,
) -> Vec<f64> {
    let (ci_n, co_n) = (layer.in_channels, layer.out_channels);
    let (kh_n, kw_n) = layer.kernel;
    let (sh, sw) = layer.stride;
    let (ph, pw) = layer.padding;
    let oh_n = conv_len(h, kh_n, sh, ph);
    let ow_n = conv_len(w, kw_n, sw, pw);
    check_len("dy", dy, batch * co_n * oh_n * ow_n);
    check_len("weight", weight, co_n * ci_n * kh_n * kw_n);
    let mut dx = vec![0.0f64; batch * ci_n * h * w];
    for b in 0..batch {
        for co in 0..co_n {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let g = f(dy[((b * co_n + co) * oh_n + oh) * ow_n + ow]);
                    for ci in 0..ci_n {
                        for kh in 0..kh_n {
                            let Some(ih) = inside(oh * sh, kh, ph, h) else {
                                continue;
                            };
                            for kw in 0..kw_n {
                                let Some(iw) = inside(ow * sw, kw, pw, w) else {
                                    continue;
                                };
                                dx[((b * ci_n + ci) * h + ih) * w + iw] +=
                                    g * f(weight[((co * ci_n + ci) * kh_n + kh) * kw_n + kw]);
                            }
                        }
                    }
                }
            }
        }
    }
    apply_producer(&mut dx, producer);
    dx
}

/// dW (out, in, KH, KW) = Σ over images and output pixels of dy ⊗ the input patch
/// (+ `accumulate`, the previous dW).
pub fn conv2d_weight_grad<T: Copy + Into<f64>>(
    layer: &Conv2d,
    batch: usize,
    (h, w): (usize, usize),
    x: &[T],
    dy: &[T],
    accumulate: Option<&[T]>,
) -> Vec<f64> {
    let (ci_n, co_n) = (layer.in_channels, layer.out_channels);
    let (kh_n, kw_n) = layer.kernel;
    let (sh, sw) = layer.stride;
    let (ph, pw) = layer.padding;
    let oh_n = conv_len(h, kh_n, sh, ph);
    let ow_n = conv_len(w, kw_n, sw, pw);
    check_len("x", x, batch * ci_n * h * w);
    check_len("dy", dy, batch * co_n * oh_n * ow_n);
    let mut dw: Vec<f64> = match accumulate {
        Some(old) => {
            check_len("previous dW", old, co_n * ci_n * kh_n * kw_n);
            old.iter().map(|&v| f(v)).collect()
        }
        None => vec![0.0; co_n * ci_n * kh_n * kw_n],
    };
    for co in 0..co_n {
        for ci in 0..ci_n {
            for kh in 0..kh_n {
                for kw in 0..kw_n {
                    let mut s = 0.0f64;
                    for b in 0..batch {
                        for oh in 0..oh_n {
                            let Some(ih) = inside(oh * sh, kh, ph, h) else {
                                continue;
                            };
                            for ow in 0..ow_n {
                                let Some(iw) = inside(ow * sw, kw, pw, w) else {
                                    continue;
                                };
                                s += f(dy[((b * co_n + co) * oh_n + oh) * ow_n + ow])
                                    * f(x[((b * ci_n + ci) * h + ih) * w + iw]);
                            }
                        }
                    }
                    dw[((co * ci_n + ci) * kh_n + kh) * kw_n + kw] += s;
                }
            }
        }
    }
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
    let mut db: Vec<f64> = match accumulate {
        Some(old) => {
            check_len("previous db", old, channels);
            old.iter().map(|&v| f(v)).collect()
        }
        None => vec![0.0; channels],
    };
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
    (h, w): (usize, usize),
    x: &[T],
    weight: &[T],
    bias: &[T],
    act: Activation,
) -> Vec<f64> {
    let (ci_n, co_n) = (layer.in_channels, layer.out_channels);
    let (kh_n, kw_n) = layer.kernel;
    let (sh, sw) = layer.stride;
    let (ph, pw) = layer.padding;
    let (oh_n, ow_n) = layer
        .output_size((h, w))
        .expect("the transposed convolution's output size");
    check_len("x", x, batch * ci_n * h * w);
    check_len("weight", weight, ci_n * co_n * kh_n * kw_n);
    check_len("bias", bias, co_n);
    let mut y = vec![0.0f64; batch * co_n * oh_n * ow_n];
    for b in 0..batch {
        for ci in 0..ci_n {
            for ih in 0..h {
                for iw in 0..w {
                    let v = f(x[((b * ci_n + ci) * h + ih) * w + iw]);
                    for co in 0..co_n {
                        for kh in 0..kh_n {
                            let Some(oh) = inside(ih * sh, kh, ph, oh_n) else {
                                continue;
                            };
                            for kw in 0..kw_n {
                                let Some(ow) = inside(iw * sw, kw, pw, ow_n) else {
                                    continue;
                                };
                                y[((b * co_n + co) * oh_n + oh) * ow_n + ow] +=
                                    v * f(weight[((ci * co_n + co) * kh_n + kh) * kw_n + kw]);
                            }
                        }
                    }
                }
            }
        }
    }
    for image in y.chunks_mut(co_n * oh_n * ow_n) {
        for (plane, &b) in image.chunks_mut(oh_n * ow_n).zip(bias) {
            for v in plane {
                *v = activate(act, *v + f(b));
            }
        }
    }
    y
}

/// dx (B, in, H, W) = Σ over taps of dy (B, out, OH, OW) at the pixels x reached, times the
/// weights, ⊙ act'(producer output).
pub fn conv_transpose2d_input_grad<T: Copy + Into<f64>>(
    layer: &ConvTranspose2d,
    batch: usize,
    (h, w): (usize, usize),
    dy: &[T],
    weight: &[T],
    producer: Option<(&[T], Activation)>,
) -> Vec<f64> {
    let (ci_n, co_n) = (layer.in_channels, layer.out_channels);
    let (kh_n, kw_n) = layer.kernel;
    let (sh, sw) = layer.stride;
    let (ph, pw) = layer.padding;
    let (oh_n, ow_n) = layer
        .output_size((h, w))
        .expect("the transposed convolution's output size");
    check_len("dy", dy, batch * co_n * oh_n * ow_n);
    check_len("weight", weight, ci_n * co_n * kh_n * kw_n);
    let mut dx = vec![0.0f64; batch * ci_n * h * w];
    for b in 0..batch {
        for ci in 0..ci_n {
            for ih in 0..h {
                for iw in 0..w {
                    let mut s = 0.0f64;
                    for co in 0..co_n {
                        for kh in 0..kh_n {
                            let Some(oh) = inside(ih * sh, kh, ph, oh_n) else {
                                continue;
                            };
                            for kw in 0..kw_n {
                                let Some(ow) = inside(iw * sw, kw, pw, ow_n) else {
                                    continue;
                                };
                                s += f(dy[((b * co_n + co) * oh_n + oh) * ow_n + ow])
                                    * f(weight[((ci * co_n + co) * kh_n + kh) * kw_n + kw]);
                            }
                        }
                    }
                    dx[((b * ci_n + ci) * h + ih) * w + iw] = s;
                }
            }
        }
    }
    apply_producer(&mut dx, producer);
    dx
}

/// dW (in, out, KH, KW) = Σ over images and input pixels of x ⊗ the patch of dy it reached
/// (+ `accumulate`).
pub fn conv_transpose2d_weight_grad<T: Copy + Into<f64>>(
    layer: &ConvTranspose2d,
    batch: usize,
    (h, w): (usize, usize),
    x: &[T],
    dy: &[T],
    accumulate: Option<&[T]>,
) -> Vec<f64> {
    let (ci_n, co_n) = (layer.in_channels, layer.out_channels);
    let (kh_n, kw_n) = layer.kernel;
    let (sh, sw) = layer.stride;
    let (ph, pw) = layer.padding;
    let (oh_n, ow_n) = layer
        .output_size((h, w))
        .expect("the transposed convolution's output size");
    check_len("x", x, batch * ci_n * h * w);
    check_len("dy", dy, batch * co_n * oh_n * ow_n);
    let len = ci_n * co_n * kh_n * kw_n;
    let mut dw: Vec<f64> = match accumulate {
        Some(old) => {
            check_len("previous dW", old, len);
            old.iter().map(|&v| f(v)).collect()
        }
        None => vec![0.0; len],
    };
    for b in 0..batch {
        for ci in 0..ci_n {
            for ih in 0..h {
                for iw in 0..w {
                    let v = f(x[((b * ci_n + ci) * h + ih) * w + iw]);
                    for co in 0..co_n {
                        for kh in 0..kh_n {
                            let Some(oh) = inside(ih * sh, kh, ph, oh_n) else {
                                continue;
                            };
                            for kw in 0..kw_n {
                                let Some(ow) = inside(iw * sw, kw, pw, ow_n) else {
                                    continue;
                                };
                                dw[((ci * co_n + co) * kh_n + kh) * kw_n + kw] +=
                                    v * f(dy[((b * co_n + co) * oh_n + oh) * ow_n + ow]);
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}
