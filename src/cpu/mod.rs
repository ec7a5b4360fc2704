//! CPU twins of the kernels, in f64: the references the GPU results are tested against.
//! Each twin has the name of its kernel wrapper and takes host slices in the same layout.

pub mod condition;
pub mod conv;
pub mod data;
pub mod factor;
pub mod gemm;
pub mod iwae;
pub mod iwae_train;
pub mod kernels;
pub mod posterior_full;
pub mod posterior_iaf;
pub mod posterior_planar;
pub mod tc;
pub mod vae;

pub use gemm::{CpuEpilogue, gemm};
pub use iwae::{IwaeTwin, iwae};
pub use kernels::*;
pub use vae::{vae_forward, vae_loss};

use crate::ops::Activation;

/// The activation in f64 (mirrors `activate` in shaders/common.wgsl).
pub fn activate(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                x * s as f64
            }
        }
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// The activation's derivative at its input x: the mathematical reference the GPU's
/// derivative-from-output is tested against.
pub fn activate_grad(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::LeakyRelu(s) => {
            if x > 0.0 {
                1.0
            } else {
                s as f64
            }
        }
        Activation::Tanh => 1.0 - x.tanh().powi(2),
        Activation::Sigmoid => {
            let y = 1.0 / (1.0 + (-x).exp());
            y * (1.0 - y)
        }
    }
}

/// The activation's derivative from its output y (mirrors `activate_grad_from_output`). Equal
/// to [`activate_grad`] at the input for every activation that passes
/// [`Activation::validate`] (for LeakyReLU: slope in (0, 1], so y > 0 exactly when x > 0).
pub fn activate_grad_from_output(act: Activation, y: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::LeakyRelu(s) => {
            if y > 0.0 {
                1.0
            } else {
                s as f64
            }
        }
        Activation::Tanh => 1.0 - y * y,
        Activation::Sigmoid => y * (1.0 - y),
    }
}
