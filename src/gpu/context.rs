//! Device ownership: adapter choice, device creation, error scopes and submission.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::kernels::{KernelKey, PipelineCache};

/// Which GEMM kernel family the context uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmVariant {
    /// Register-blocked, one subgroup of 8 lanes per workgroup, operands shared by subgroup
    /// shuffles instead of workgroup memory. Fastest on CPU adapters (lavapipe, llvmpipe).
    Subgroup8,
    /// Register-blocked without workgroup memory or subgroups: each invocation keeps a tile of
    /// C in registers and reads A and B with vec4 loads where their layout allows. The default
    /// on CPU adapters whose subgroups are not 8 lanes (llvmpipe on OpenGL, other SIMD widths).
    /// Takes every shape.
    Regblock,
    /// 64×64 workgroup-memory tile, 4×4 outputs per invocation. Fastest on real GPUs; also the
    /// fallback for shapes the subgroup kernel cannot take (dimensions not multiples of 4).
    Tiled,
}

impl GemmVariant {
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::Subgroup8 => "subgroup8",
            GemmVariant::Regblock => "regblock",
            GemmVariant::Tiled => "tiled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "subgroup8" | "sg8" | "cpu" => Some(GemmVariant::Subgroup8),
            "regblock" | "rb" => Some(GemmVariant::Regblock),
            "tiled" | "gpu" => Some(GemmVariant::Tiled),
            _ => None,
        }
    }
}

/// How to pick the adapter. [`ContextOptions::from_env`] reads `WGVAE_BACKEND`,
/// `WGVAE_ADAPTER`, `WGVAE_GEMM` and `WGVAE_SHADER_CHECKS`.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Restrict to these backends (`None`: every backend compiled in).
    pub backends: Option<wgpu::Backends>,
    /// Adapter index (in enumeration order) or a case-insensitive substring of its name.
    pub adapter: Option<String>,
    /// Force a GEMM kernel family instead of choosing by adapter class.
    pub gemm: Option<GemmVariant>,
    /// Keep wgpu's shader bounds checks and loop bounding (slower; for debugging kernels).
    pub shader_checks: bool,
    /// Do not request timestamp queries even when offered (`WGVAE_TIMESTAMPS=0`).
    pub no_timestamps: bool,
}

impl ContextOptions {
    pub fn from_env() -> Result<Self> {
        let mut opts = ContextOptions::default();
        if let Ok(v) = std::env::var("WGVAE_BACKEND") {
            opts.backends = Some(parse_backends(&v)?);
        }
        if let Ok(v) = std::env::var("WGVAE_ADAPTER")
            && !v.trim().is_empty()
        {
            opts.adapter = Some(v.trim().to_string());
        }
        if let Ok(v) = std::env::var("WGVAE_GEMM")
            && !v.trim().is_empty()
        {
            opts.gemm = Some(GemmVariant::parse(v.trim()).ok_or_else(|| {
                Error::AdapterSelection(format!(
                    "WGVAE_GEMM=`{v}` is not a GEMM variant (use `subgroup8`, `regblock` or `tiled`)"
                ))
            })?);
        }
        if let Ok(v) = std::env::var("WGVAE_SHADER_CHECKS") {
            opts.shader_checks = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Ok(v) = std::env::var("WGVAE_TIMESTAMPS") {
            opts.no_timestamps = matches!(v.trim(), "0" | "false" | "no" | "off");
        }
        Ok(opts)
    }
}

/// Parses `vulkan`, `metal`, `dx12`, `gl` (comma-separated lists allowed).
pub fn parse_backends(s: &str) -> Result<wgpu::Backends> {
    let mut out = wgpu::Backends::empty();
    for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()) {
        if part.is_empty() {
            continue;
        }
        out |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            other => {
                return Err(Error::AdapterSelection(format!(
                    "WGVAE_BACKEND=`{s}`: unknown backend `{other}` (use vulkan, metal, dx12 or gl)"
                )));
            }
        };
    }
    if out.is_empty() {
        return Err(Error::AdapterSelection(format!(
            "WGVAE_BACKEND=`{s}` names no backend (use vulkan, metal, dx12 or gl)"
        )));
    }
    Ok(out)
}

/// What the library knows about the adapter it runs on.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}",
            self.name, self.backend, self.device_type
        )?;
        if !self.driver_info.is_empty() {
            write!(f, ", {}", self.driver_info)?;
        }
        write!(f, ")")
    }
}

/// Capabilities the kernels care about.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// `TIMESTAMP_QUERY` was granted: compute passes can carry timestamps.
    pub timestamps: bool,
    /// `SUBGROUP` was granted.
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
}

/// The device, its queue and the pipeline cache. Create one per process and share it by
/// reference; everything that allocates GPU memory takes `&GpuContext`.
pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: AdapterSummary,
    pub caps: Caps,
    pub gemm_variant: GemmVariant,
    pub(crate) shader_checks: bool,
    pub(crate) pipelines: Mutex<PipelineCache>,
    /// Whether the WGSL front end accepts `enable <extension>;`, probed once per extension.
    enables: Mutex<HashMap<&'static str, bool>>,
    /// 16 bytes bound to kernel inputs an invocation does not use.
    pub(crate) dummy: wgpu::Buffer,
    _instance: wgpu::Instance,
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 1,
        _ => 0,
    };
    (ty, backend)
}

/// The GEMM family for an adapter class: CPU adapters get the subgroup kernel when their
/// subgroups are exactly 8 lanes (lavapipe) and the register-blocked kernel otherwise (llvmpipe
/// on OpenGL, other SIMD widths); GPUs get the workgroup-memory tile.
fn default_gemm_variant(device_type: wgpu::DeviceType, subgroup8: bool) -> GemmVariant {
    match device_type {
        wgpu::DeviceType::Cpu if subgroup8 => GemmVariant::Subgroup8,
        wgpu::DeviceType::Cpu => GemmVariant::Regblock,
        _ => GemmVariant::Tiled,
    }
}

/// See [`GpuContext::advice`].
fn adapter_advice(info: &AdapterSummary) -> Option<String> {
    (info.device_type == wgpu::DeviceType::Cpu && info.backend == wgpu::Backend::Gl).then(|| {
        format!(
            "running on {} through OpenGL; Mesa's Vulkan CPU driver (lavapipe) runs wgvae's \
             matrix products 2-3x faster: install it (Debian/Ubuntu: `apt-get install \
             mesa-vulkan-drivers libvulkan1`) and wgvae picks it by default",
            info.name
        )
    })
}

/// The instance on the backends `opts` allows and the adapters it offers.
fn enumerate(opts: &ContextOptions) -> (wgpu::Instance, Vec<wgpu::Adapter>, wgpu::Backends) {
    let backends = opts
        .backends
        .unwrap_or_else(wgpu::Instance::enabled_backend_features);
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        flags: wgpu::InstanceFlags::from_env_or_default(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    (instance, adapters, backends)
}

/// One adapter as `wgvae info` lists it.
#[derive(Clone, Debug)]
pub struct AdapterListing {
    /// Its index in enumeration order (what `WGVAE_ADAPTER=<index>` selects).
    pub index: usize,
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    /// Largest storage buffer one binding may hold (bytes): bounds the biggest tensor.
    pub max_storage_binding: u64,
    /// Largest buffer (bytes).
    pub max_buffer: u64,
    /// Workgroup memory (bytes) and invocations per workgroup the kernels may use.
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    /// Subgroup operations offered (the subgroup GEMM kernels need them).
    pub subgroups: bool,
    /// Whether the environment's choice (or, without one, the ranking) picks this adapter.
    pub chosen: bool,
}

/// Every adapter on the backends the environment allows (`WGVAE_BACKEND`), which one a context
/// would use and why: `WGVAE_ADAPTER` when set, otherwise the highest rank (discrete GPU >
/// integrated > virtual > CPU, then Vulkan/Metal/DX12 > GL).
pub fn list_adapters() -> Result<(Vec<AdapterListing>, String)> {
    let opts = ContextOptions::from_env()?;
    let (_instance, adapters, _) = enumerate(&opts);
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    let (chosen, why) = match &opts.adapter {
        Some(sel) => match sel.parse::<usize>() {
            Ok(i) => (
                (i < infos.len()).then_some(i),
                format!("WGVAE_ADAPTER={sel} selects it by index"),
            ),
            Err(_) => {
                let needle = sel.to_ascii_lowercase();
                let best = infos
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.name.to_ascii_lowercase().contains(&needle))
                    .max_by_key(|(_, i)| rank(i))
                    .map(|(k, _)| k);
                (
                    best,
                    format!("WGVAE_ADAPTER={sel}: the best-ranked adapter whose name contains it"),
                )
            }
        },
        None => (
            infos
                .iter()
                .enumerate()
                .max_by_key(|(_, i)| rank(i))
                .map(|(k, _)| k),
            "the best-ranked adapter: discrete GPU > integrated > virtual > CPU, then \
             Vulkan/Metal/DX12 > GL (set WGVAE_ADAPTER or WGVAE_BACKEND to choose)"
                .to_string(),
        ),
    };
    let listing = adapters
        .iter()
        .zip(&infos)
        .enumerate()
        .map(|(index, (a, info))| {
            let l = a.limits();
            AdapterListing {
                index,
                name: info.name.clone(),
                backend: info.backend,
                device_type: info.device_type,
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_storage_binding: l.max_storage_buffer_binding_size,
                max_buffer: l.max_buffer_size,
                max_workgroup_storage: l.max_compute_workgroup_storage_size,
                max_invocations: l.max_compute_invocations_per_workgroup,
                subgroups: a.features().contains(wgpu::Features::SUBGROUP),
                chosen: chosen == Some(index),
            }
        })
        .collect();
    Ok((listing, why))
}

impl GpuContext {
    /// Creates a context on the adapter chosen by the environment (see [`ContextOptions`]).
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::from_env()?)
    }

    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        let (instance, adapters, backends) = enumerate(opts);
        let listing = adapters
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let info = a.get_info();
                format!(
                    "{i}: {} ({:?}, {:?})",
                    info.name, info.backend, info.device_type
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if adapters.is_empty() {
            return Err(Error::NoAdapter {
                detail: format!("no adapter on backends {backends:?}"),
            });
        }
        let adapter = match &opts.adapter {
            Some(sel) => {
                if let Ok(idx) = sel.parse::<usize>() {
                    adapters
                        .into_iter()
                        .nth(idx)
                        .ok_or_else(|| Error::NoAdapter {
                            detail: format!("WGVAE_ADAPTER={sel} but the adapters are [{listing}]"),
                        })?
                } else {
                    let needle = sel.to_ascii_lowercase();
                    adapters
                        .into_iter()
                        .filter(|a| a.get_info().name.to_ascii_lowercase().contains(&needle))
                        .max_by_key(|a| rank(&a.get_info()))
                        .ok_or_else(|| Error::NoAdapter {
                            detail: format!(
                                "no adapter name contains `{sel}`; the adapters are [{listing}]"
                            ),
                        })?
                }
            }
            None => adapters
                .into_iter()
                .max_by_key(|a| rank(&a.get_info()))
                .expect("adapters is not empty"),
        };
        Self::from_adapter(instance, adapter, opts)
    }

    fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        opts: &ContextOptions,
    ) -> Result<Self> {
        let ainfo = adapter.get_info();
        let info = AdapterSummary {
            name: ainfo.name.clone(),
            backend: ainfo.backend,
            device_type: ainfo.device_type,
            driver: ainfo.driver.clone(),
            driver_info: ainfo.driver_info.clone(),
        };
        let offered = adapter.features();
        let mut features = wgpu::Features::empty();
        for f in [
            wgpu::Features::TIMESTAMP_QUERY,
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
            wgpu::Features::SUBGROUP,
        ] {
            let is_timestamp = f != wgpu::Features::SUBGROUP;
            if offered.contains(f) && !(is_timestamp && opts.no_timestamps) {
                features |= f;
            }
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgvae"),
            required_features: features,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
        let caps = Caps {
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: ainfo.subgroup_min_size,
            subgroup_max_size: ainfo.subgroup_max_size,
        };
        let subgroup8 =
            caps.subgroups && caps.subgroup_min_size == 8 && caps.subgroup_max_size == 8;
        let gemm_variant = match opts.gemm {
            Some(GemmVariant::Subgroup8) if !subgroup8 => {
                return Err(Error::AdapterSelection(format!(
                    "the subgroup8 GEMM needs subgroups of exactly 8 lanes; {} has {}..{}{}",
                    info.name,
                    caps.subgroup_min_size,
                    caps.subgroup_max_size,
                    if caps.subgroups {
                        ""
                    } else {
                        " and no subgroup support"
                    }
                )));
            }
            Some(v) => v,
            None => default_gemm_variant(info.device_type, subgroup8),
        };
        log::info!(
            "wgvae: adapter {info}, GEMM kernel {}, timestamps {}",
            gemm_variant.name(),
            caps.timestamps
        );
        if let Some(advice) = adapter_advice(&info) {
            log::warn!("wgvae: {advice}");
        }
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgvae unused input"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuContext {
            dummy,
            adapter,
            device,
            queue,
            info,
            caps,
            gemm_variant,
            shader_checks: opts.shader_checks,
            pipelines: Mutex::new(PipelineCache::default()),
            enables: Mutex::new(HashMap::new()),
            _instance: instance,
        })
    }

    /// One line of advice about the adapter, when a faster setup is likely within reach: a CPU
    /// adapter on OpenGL (llvmpipe) means no Vulkan driver was found, and Mesa's Vulkan CPU
    /// driver (lavapipe), with its 8-lane subgroups, runs wgvae's GEMM 2-3x faster. `None`
    /// otherwise.
    pub fn advice(&self) -> Option<String> {
        adapter_advice(&self.info)
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a caught error into
    /// a typed [`Error`].
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out = f();
        let e_internal = pollster::block_on(internal.pop());
        let e_val = pollster::block_on(val.pop());
        let e_oom = pollster::block_on(oom.pop());
        if let Some(e) = e_val {
            return Err(Error::Validation {
                context: context.to_string(),
                message: e.to_string(),
            });
        }
        if e_oom.is_some() {
            return Err(Error::OutOfMemory {
                context: context.to_string(),
            });
        }
        if let Some(e) = e_internal {
            return Err(Error::Internal {
                context: context.to_string(),
                message: e.to_string(),
            });
        }
        Ok(out)
    }

    /// Submits one command buffer, with its validation errors returned as [`Error`].
    pub fn submit(
        &self,
        context: &str,
        encoder: wgpu::CommandEncoder,
    ) -> Result<wgpu::SubmissionIndex> {
        self.scoped(context, || self.queue.submit([encoder.finish()]))
    }

    /// Blocks until the given submission has finished.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| Error::Readback(format!("waiting for the device: {e}")))
    }

    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Blocks until the GPU has finished all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Readback(format!("waiting for the device: {e}")))
    }

    /// Returns the cached compute pipeline for `key`, compiling it on first use.
    pub fn pipeline(&self, key: &KernelKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.lock().expect("pipeline cache lock").get(key) {
            return Ok(p);
        }
        let p = Arc::new(crate::gpu::kernels::compile(self, key)?);
        self.pipelines
            .lock()
            .expect("pipeline cache lock")
            .insert(key.clone(), p.clone());
        Ok(p)
    }

    /// Whether this device's WGSL front end accepts the directive `enable <extension>;`
    /// (probed once per extension with an empty kernel). WGSL requires `enable subgroups;`
    /// before subgroup built-ins, but the naga of wgpu 30 refuses that directive ("not yet
    /// supported": its subgroup support is not yet complete against the specification, see
    /// gfx-rs/wgpu#8202 and #5555) while accepting the built-ins without it; kernels are then
    /// compiled without the directive.
    pub fn accepts_enable(&self, extension: &'static str) -> bool {
        if let Some(&known) = self
            .enables
            .lock()
            .expect("enable cache lock")
            .get(extension)
        {
            return known;
        }
        let probe = format!("enable {extension};\n@compute @workgroup_size(1)\nfn main() {{}}\n");
        let accepted = self
            .scoped("probing an enable directive", || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some("wgvae enable probe"),
                        source: wgpu::ShaderSource::Wgsl(probe.as_str().into()),
                    })
            })
            .is_ok();
        if !accepted {
            log::debug!(
                "wgvae: the WGSL front end refuses `enable {extension};`; compiling without it"
            );
        }
        self.enables
            .lock()
            .expect("enable cache lock")
            .insert(extension, accepted);
        accepted
    }

    /// Number of pipelines compiled so far (each is compiled once).
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.lock().expect("pipeline cache lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(backend: wgpu::Backend, device_type: wgpu::DeviceType) -> AdapterSummary {
        AdapterSummary {
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".to_string(),
            backend,
            device_type,
            driver: String::new(),
            driver_info: String::new(),
        }
    }

    #[test]
    fn gemm_family_by_adapter_class() {
        use wgpu::DeviceType::*;
        assert_eq!(default_gemm_variant(Cpu, true), GemmVariant::Subgroup8);
        assert_eq!(default_gemm_variant(Cpu, false), GemmVariant::Regblock);
        for ty in [DiscreteGpu, IntegratedGpu, VirtualGpu, Other] {
            assert_eq!(default_gemm_variant(ty, true), GemmVariant::Tiled);
            assert_eq!(default_gemm_variant(ty, false), GemmVariant::Tiled);
        }
    }

    #[test]
    fn gemm_family_names_round_trip() {
        for v in [
            GemmVariant::Subgroup8,
            GemmVariant::Regblock,
            GemmVariant::Tiled,
        ] {
            assert_eq!(GemmVariant::parse(v.name()), Some(v));
            assert_eq!(GemmVariant::parse(&v.name().to_uppercase()), Some(v));
        }
        assert_eq!(GemmVariant::parse("blocked"), None);
    }

    #[test]
    fn advice_only_for_a_cpu_adapter_on_opengl() {
        let gl_cpu = adapter_advice(&summary(wgpu::Backend::Gl, wgpu::DeviceType::Cpu))
            .expect("advice for llvmpipe on OpenGL");
        assert!(!gl_cpu.contains('\n'), "one line: {gl_cpu}");
        assert!(
            gl_cpu.contains("apt-get install mesa-vulkan-drivers libvulkan1"),
            "{gl_cpu}"
        );
        assert!(gl_cpu.contains("llvmpipe"), "names the adapter: {gl_cpu}");
        for (backend, ty) in [
            (wgpu::Backend::Vulkan, wgpu::DeviceType::Cpu),
            (wgpu::Backend::Gl, wgpu::DeviceType::IntegratedGpu),
            (wgpu::Backend::Gl, wgpu::DeviceType::DiscreteGpu),
            (wgpu::Backend::Vulkan, wgpu::DeviceType::DiscreteGpu),
            (wgpu::Backend::Metal, wgpu::DeviceType::IntegratedGpu),
        ] {
            assert_eq!(
                adapter_advice(&summary(backend, ty)),
                None,
                "{backend:?} {ty:?}"
            );
        }
    }
}
