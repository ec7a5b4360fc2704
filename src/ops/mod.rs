//! Host wrappers of the kernels. Each builds a prepared [`crate::gpu::Dispatch`] after checking
//! the shapes of its operands; recording it into a pass is all a training step does.

pub mod adam;
pub mod data;
pub mod elementwise;
pub mod gemm;
pub mod kl;
pub mod likelihood;
pub mod reduce;
pub mod reparam;

pub use gemm::{Epilogue, Trans, gemm};

/// Activation functions fused into GEMM epilogues. Codes mirror `shaders/common.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

impl Activation {
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::LeakyRelu(_) => 2,
            Activation::Tanh => 3,
            Activation::Sigmoid => 4,
        }
    }
    pub fn slope(self) -> f32 {
        match self {
            Activation::LeakyRelu(s) => s,
            _ => 0.0,
        }
    }
}

pub(crate) fn shape_err(op: &'static str, detail: String) -> crate::Error {
    crate::Error::Shape { op, detail }
}
