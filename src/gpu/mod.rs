//! The GPU layer: context, typed buffers, the kernel registry and prepared dispatches.

pub mod context;
pub mod dispatch;
pub mod kernels;
pub mod tensor;
pub mod timer;

pub use context::{AdapterSummary, Caps, ContextOptions, GemmVariant, GpuContext};
pub use dispatch::{Dispatch, Program, groups_for};
pub use kernels::{Define, KernelKey, Shader};
pub use tensor::{Element, Staging, Tensor};
pub use timer::GpuTimer;
