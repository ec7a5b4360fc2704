//! GPU timestamps around compute passes, for benchmarks.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Staging};

/// Measures the GPU time of compute passes with timestamp queries (when the adapter offers
/// them). Create once, pass `timestamp_writes()` to a pass, then `resolve` and `read_ns`.
pub struct GpuTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: Staging,
    period_ns: f64,
}

impl GpuTimer {
    /// `None` when the context has no timestamp queries.
    pub fn new(ctx: &GpuContext) -> Result<Option<Self>> {
        if !ctx.caps.timestamps {
            return Ok(None);
        }
        let (set, resolve) = ctx.scoped("creating timestamp queries", || {
            let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wgvae timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgvae timer resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve)
        })?;
        let staging = Staging::new(ctx, 16)?;
        Ok(Some(GpuTimer {
            set,
            resolve,
            staging,
            period_ns: ctx.queue.get_timestamp_period() as f64,
        }))
    }

    /// Timestamp writes for a pass: start at its beginning, end at its end.
    pub fn timestamp_writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }
    }

    /// Records the resolve of both timestamps (after the timed pass, same encoder).
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
    }

    /// Nanoseconds between the two timestamps (after the encoder was submitted).
    pub fn read_ns(&self, ctx: &GpuContext) -> Result<f64> {
        let raw = self.staging.read(ctx, &self.resolve, 0, 16)?;
        let t: &[u64] = bytemuck::cast_slice(&raw);
        if t[1] < t[0] {
            return Err(Error::Readback("timestamps out of order".into()));
        }
        Ok((t[1] - t[0]) as f64 * self.period_ns)
    }
}
