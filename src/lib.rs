//! wgvae: variational autoencoders whose math runs on the GPU as WGSL compute kernels.
//!
//! - [`gpu`]: the device context, typed buffers, the kernel registry and prepared dispatches.
//! - [`ops`]: host wrappers of the kernels in `shaders/`; [`cpu`]: their f64 CPU twins.

pub mod cli;
pub mod cpu;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsio;
pub mod gpu;
pub mod image;
pub mod latent;
pub mod linalg;
pub mod linear_gaussian;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod plot;
pub mod probe;
pub mod rng;
pub mod tool;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
