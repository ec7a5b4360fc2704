//! wgvae: variational autoencoders whose math runs on the GPU as WGSL compute kernels.
//!
//! - [`gpu`]: the device context, typed buffers, the kernel registry and prepared dispatches.
//! - [`ops`]: host wrappers of the kernels in `shaders/`; [`cpu`]: their f64 CPU twins.

pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod image;
pub mod model;
pub mod ops;
pub mod rng;

pub use error::{Error, Result};
