//! Typed errors of the library. Binaries and examples wrap them in `anyhow` at the edge.

use std::path::PathBuf;

/// One sentence that tells a user without a GPU how to get an adapter.
pub const INSTALL_HINT: &str = "install a Vulkan driver: on Linux without a GPU, Mesa's lavapipe \
(`apt-get install mesa-vulkan-drivers libvulkan1`) runs the kernels on the CPU; otherwise install \
your GPU vendor's Vulkan, Metal or DirectX 12 driver";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched (or none exists at all).
    #[error("no GPU adapter found ({detail}); {hint}", hint = INSTALL_HINT)]
    NoAdapter { detail: String },

    /// `WGVAE_BACKEND` / `WGVAE_ADAPTER` could not be honoured.
    #[error("adapter selection: {0}")]
    AdapterSelection(String),

    #[error("could not create a device on adapter `{adapter}`: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A wgpu validation error caught by an error scope.
    #[error("GPU validation error while {context}: {message}")]
    Validation { context: String, message: String },

    #[error("GPU out of memory while {context}")]
    OutOfMemory { context: String },

    #[error("GPU internal error while {context}: {message}")]
    Internal { context: String, message: String },

    /// Operands whose shapes do not fit the operation.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),

    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// The operating system refused a file operation. (The OS error is part of the message, not
    /// a separate cause, so that it is printed once.)
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    #[error("checkpoint {}: {detail}", path.display())]
    Checkpoint { path: PathBuf, detail: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// An error with what was being done when it happened.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },

    /// The loss became NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
}
