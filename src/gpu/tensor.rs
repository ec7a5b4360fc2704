//! Typed, shape-aware GPU buffers and the one staging readback path.

use std::marker::PhantomData;
use std::sync::{Arc, mpsc};

use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// Element types a [`Tensor`] can hold. `u8` tensors are packed four to a `u32` word in WGSL.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    const NAME: &'static str;
}
impl Element for f32 {
    const NAME: &'static str = "f32";
}
impl Element for u32 {
    const NAME: &'static str = "u32";
}
impl Element for i32 {
    const NAME: &'static str = "i32";
}
impl Element for u8 {
    const NAME: &'static str = "u8";
}

/// Buffers are sized to a multiple of 16 bytes so that `array<vec4<f32>>` views are valid.
fn padded_size(bytes: usize) -> u64 {
    (bytes.max(16).div_ceil(16) * 16) as u64
}

/// Byte alignment of views into a shared buffer (the largest `min_storage_buffer_offset_alignment`
/// WebGPU allows).
pub const VIEW_ALIGN: usize = 256;

/// A dense row-major array of `T` with a known shape in a GPU storage buffer: either a whole
/// buffer or a view at an aligned offset into one (parameters and gradients each live in one
/// buffer, sliced per layer, so the optimizer updates all of them in one dispatch).
pub struct Tensor<T: Element> {
    buffer: Arc<wgpu::Buffer>,
    /// Byte offset of element 0 in `buffer`.
    offset: u64,
    shape: Vec<usize>,
    label: String,
    _t: PhantomData<T>,
}

impl<T: Element> std::fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor<{}>({} {:?})", T::NAME, self.label, self.shape)
    }
}

impl<T: Element> Tensor<T> {
    /// A zero-filled tensor.
    pub fn zeros(ctx: &GpuContext, label: &str, shape: &[usize]) -> Result<Self> {
        let len: usize = shape.iter().product();
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Shape {
                op: "Tensor::zeros",
                detail: format!("{label}: shape {shape:?} overflows"),
            })?;
        let size = padded_size(bytes);
        let max = ctx.device.limits().max_storage_buffer_binding_size;
        if size > max {
            return Err(Error::Shape {
                op: "Tensor::zeros",
                detail: format!(
                    "{label}: {size} bytes exceed the adapter's storage binding limit of {max}"
                ),
            });
        }
        let buffer = ctx.scoped(&format!("allocating {label}"), || {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(Tensor {
            buffer: Arc::new(buffer),
            offset: 0,
            shape: shape.to_vec(),
            label: label.to_string(),
            _t: PhantomData,
        })
    }

    /// A view of `shape` starting at element `offset` of `parent` (which may itself be a view).
    /// The offset must be a multiple of [`VIEW_ALIGN`] bytes.
    pub fn view(parent: &Tensor<T>, label: &str, offset: usize, shape: &[usize]) -> Result<Self> {
        let len: usize = shape.iter().product();
        let byte_off = offset * std::mem::size_of::<T>();
        if !byte_off.is_multiple_of(VIEW_ALIGN) || offset + len > parent.len() {
            return Err(Error::Shape {
                op: "Tensor::view",
                detail: format!(
                    "{label}: {shape:?} at element {offset} does not fit {} {:?} at a {VIEW_ALIGN}-byte boundary",
                    parent.label, parent.shape
                ),
            });
        }
        Ok(Tensor {
            buffer: parent.buffer.clone(),
            offset: parent.offset + byte_off as u64,
            shape: shape.to_vec(),
            label: label.to_string(),
            _t: PhantomData,
        })
    }

    /// The binding of this tensor's bytes (rounded up to 16) for a bind group.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        let bytes = (self.len() * std::mem::size_of::<T>()).max(16).div_ceil(16) * 16;
        let avail = self.buffer.size() - self.offset;
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new((bytes as u64).min(avail)),
        })
    }

    /// A tensor initialised from host data (`data.len()` must equal the shape's product).
    pub fn from_slice(ctx: &GpuContext, label: &str, shape: &[usize], data: &[T]) -> Result<Self> {
        let t = Self::zeros(ctx, label, shape)?;
        t.write(ctx, data)?;
        Ok(t)
    }

    /// Uploads `data` over the whole tensor (queued; takes effect before the next submit).
    pub fn write(&self, ctx: &GpuContext, data: &[T]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape {
                op: "Tensor::write",
                detail: format!(
                    "{}: {} elements given for shape {:?} ({} elements)",
                    self.label,
                    data.len(),
                    self.shape,
                    self.len()
                ),
            });
        }
        self.write_at(ctx, 0, data)
    }

    /// Uploads `data` starting at element `offset`.
    pub fn write_at(&self, ctx: &GpuContext, offset: usize, data: &[T]) -> Result<()> {
        if offset + data.len() > self.len() {
            return Err(Error::Shape {
                op: "Tensor::write_at",
                detail: format!(
                    "{}: writing {} elements at {offset} overruns {} elements",
                    self.label,
                    data.len(),
                    self.len()
                ),
            });
        }
        let mut bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
        let start = offset * std::mem::size_of::<T>();
        // Queue writes must start and end on 4-byte boundaries; pad u8 data with zeros.
        if !start.is_multiple_of(4) {
            return Err(Error::Shape {
                op: "Tensor::write_at",
                detail: format!("{}: byte offset {start} is not a multiple of 4", self.label),
            });
        }
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        if bytes.is_empty() {
            return Ok(());
        }
        ctx.queue
            .write_buffer(&self.buffer, self.offset + start as u64, &bytes);
        Ok(())
    }

    /// Reads the whole tensor back (blocks until the GPU is done).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<T>> {
        let bytes = (self.len() * std::mem::size_of::<T>()) as u64;
        let staging = Staging::new(ctx, bytes.div_ceil(4) * 4)?;
        let raw = staging.read(ctx, &self.buffer, self.offset, bytes.div_ceil(4) * 4)?;
        let mut out = vec![T::zeroed(); self.len()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&raw[..bytes as usize]);
        Ok(out)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Byte offset of element 0 in [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Rows and columns of a 2-D tensor (a 1-D tensor is one row).
    pub fn dims2(&self) -> (usize, usize) {
        match self.shape.len() {
            0 => (1, 1),
            1 => (1, self.shape[0]),
            _ => {
                let cols = *self.shape.last().expect("non-empty shape");
                (self.len() / cols.max(1), cols)
            }
        }
    }
    /// Changes the logical shape without touching the data (same element count).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let len: usize = shape.iter().product();
        if len != self.len() {
            return Err(Error::Shape {
                op: "Tensor::reshape",
                detail: format!("{}: {:?} -> {shape:?}", self.label, self.shape),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

/// A reusable `MAP_READ` buffer: the only way data comes back from the GPU.
pub struct Staging {
    buffer: wgpu::Buffer,
    size: u64,
}

impl Staging {
    pub fn new(ctx: &GpuContext, size: u64) -> Result<Self> {
        let size = size.max(4).div_ceil(4) * 4;
        let buffer = ctx.scoped("allocating a staging buffer", || {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgvae staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(Staging { buffer, size })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Copies `size` bytes of `src` from `offset` into the staging buffer, waits, and returns them.
    pub fn read(
        &self,
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        if size > self.size || !size.is_multiple_of(4) || !offset.is_multiple_of(4) {
            return Err(Error::Readback(format!(
                "cannot read {size} bytes at {offset} through a {}-byte staging buffer",
                self.size
            )));
        }
        let mut enc = ctx.encoder("readback");
        enc.copy_buffer_to_buffer(src, offset, &self.buffer, 0, size);
        ctx.submit("copying to the staging buffer", enc)?;
        self.map_and_copy(ctx, size)
    }

    /// Maps the first `size` bytes (after a copy recorded by the caller was submitted).
    pub fn map_and_copy(&self, ctx: &GpuContext, size: u64) -> Result<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        self.buffer
            .map_async(wgpu::MapMode::Read, 0..size, move |r| {
                let _ = tx.send(r);
            });
        ctx.wait()?;
        rx.recv()
            .map_err(|_| Error::Readback("the map callback never ran".into()))?
            .map_err(|e| Error::Readback(format!("mapping the staging buffer: {e}")))?;
        let out = {
            let view = self
                .buffer
                .get_mapped_range(0..size)
                .map_err(|e| Error::Readback(format!("{e}")))?;
            view.to_vec()
        };
        self.buffer.unmap();
        Ok(out)
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}
