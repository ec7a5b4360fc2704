//! Prepared kernel invocations. A [`Dispatch`] owns its pipeline, bind group and parameter
//! buffer, all created once; recording it into a compute pass allocates nothing, so a training
//! step is a replay of prepared dispatches.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::Result;
use crate::gpu::GpuContext;
use crate::gpu::kernels::KernelKey;

/// Most workgroups a dispatch puts along x; kernels that cover more use grid-stride loops.
pub const MAX_GROUPS_X: u32 = 65535;

/// One prepared kernel invocation: pipeline + bind group + workgroup counts.
pub struct Dispatch {
    label: String,
    kernel: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    params: Option<wgpu::Buffer>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dispatch({} {:?})", self.label, self.groups)
    }
}

impl Dispatch {
    /// Prepares a dispatch of `key` with storage buffers at the given binding numbers and,
    /// optionally, a uniform parameter struct at binding `params.0`.
    pub fn new<P: bytemuck::Pod>(
        ctx: &GpuContext,
        key: &KernelKey,
        label: &str,
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        params: Option<(u32, &P)>,
        groups: [u32; 3],
    ) -> Result<Self> {
        let pipeline = ctx.pipeline(key)?;
        let context = format!("binding {label} ({})", key.label());
        let (bind_group, params_buf) = ctx.scoped(&context, || {
            let params_buf = params.map(|(_, p)| {
                ctx.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytemuck::bytes_of(p),
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    })
            });
            let mut entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .map(|(binding, res)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: res.clone(),
                })
                .collect();
            if let (Some((binding, _)), Some(buf)) = (params, params_buf.as_ref()) {
                entries.push(wgpu::BindGroupEntry {
                    binding,
                    resource: buf.as_entire_binding(),
                });
            }
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            (bind_group, params_buf)
        })?;
        Ok(Dispatch {
            label: label.to_string(),
            kernel: key.label(),
            pipeline,
            bind_group,
            groups,
            params: params_buf,
        })
    }

    /// Records the dispatch into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.groups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    /// Rewrites the uniform parameters (queued; takes effect at the next submit). Used between
    /// evaluation batches, never inside the training step.
    pub fn set_params<P: bytemuck::Pod>(&self, ctx: &GpuContext, p: &P) {
        if let Some(buf) = &self.params {
            ctx.queue.write_buffer(buf, 0, bytemuck::bytes_of(p));
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
    /// The kernel it runs: `file::entry` and its defines (e.g. which GEMM family was chosen).
    pub fn kernel(&self) -> &str {
        &self.kernel
    }
    pub fn groups(&self) -> [u32; 3] {
        self.groups
    }
}

/// An ordered list of dispatches, recorded into one compute pass. wgpu orders the dispatches
/// of a pass and inserts the barriers their buffer uses need.
#[derive(Default, Debug)]
pub struct Program {
    pub dispatches: Vec<Dispatch>,
    /// Scratch buffers the dispatches use (packed weights, partial sums), kept alive as long
    /// as the program.
    keep: Vec<wgpu::Buffer>,
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
    pub fn extend(&mut self, other: Program) {
        self.dispatches.extend(other.dispatches);
        self.keep.extend(other.keep);
    }
    /// Keeps `buffer` alive as long as this program (scratch that only its dispatches use).
    pub fn keep(&mut self, buffer: wgpu::Buffer) {
        self.keep.push(buffer);
    }
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Records every dispatch into `pass`.
    pub fn record_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    /// Records every dispatch into a new compute pass of `encoder`.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, label: &str) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        self.record_pass(&mut pass);
    }

    /// Encodes, submits and waits: for tests and one-off work, not for training steps.
    pub fn run(&self, ctx: &GpuContext) -> Result<()> {
        let mut enc = ctx.encoder("program");
        self.record(&mut enc, "program");
        ctx.submit("running a program", enc)?;
        ctx.wait()
    }
}

/// Workgroup counts for `n` items at `per_group` items per workgroup, capped at
/// [`MAX_GROUPS_X`] (kernels loop over the rest with a grid stride).
pub fn groups_for(n: usize, per_group: usize) -> [u32; 3] {
    let g = n.div_ceil(per_group.max(1)).min(MAX_GROUPS_X as usize) as u32;
    [g, 1, 1]
}
