//! The kernel registry: every WGSL file is embedded here with `include_str!`, and every
//! (shader, entry point, defines) combination is compiled once and cached.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::gpu::GpuContext;

/// Helpers shared by all kernels (activations, the counter-based RNG); prepended to each file.
const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// One WGSL file of `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    GemmSubgroup8,
    /// `gemm_regblock.wgsl` with C and aux accessed as vec4 (N a multiple of 4).
    GemmRegblock,
    /// `gemm_regblock.wgsl` with C and aux accessed as scalars (any N).
    GemmRegblockScalarC,
    GemmTiled,
    Reduce,
    Reparam,
    Kl,
    Likelihood,
    Adam,
    Data,
    Elementwise,
    ConvSubgroup8,
    ConvRegblock,
    ConvTiled,
    ConvAux,
    ConvNarrow,
    ConvNarrowSubgroup8,
    ConvSingle,
    ConvSingleSubgroup8,
    ConvWsingleSubgroup8,
    Factor,
    Tc,
    Condition,
    PosteriorFull,
    IwaeTrain,
    PosteriorPlanar,
    PosteriorIaf,
}

impl Shader {
    pub const ALL: [Shader; 27] = [
        Shader::GemmSubgroup8,
        Shader::GemmRegblock,
        Shader::GemmRegblockScalarC,
        Shader::GemmTiled,
        Shader::Reduce,
        Shader::Reparam,
        Shader::Kl,
        Shader::Likelihood,
        Shader::Adam,
        Shader::Data,
        Shader::Elementwise,
        Shader::ConvSubgroup8,
        Shader::ConvRegblock,
        Shader::ConvTiled,
        Shader::ConvAux,
        Shader::ConvNarrow,
        Shader::ConvNarrowSubgroup8,
        Shader::ConvSingle,
        Shader::ConvSingleSubgroup8,
        Shader::ConvWsingleSubgroup8,
        Shader::Factor,
        Shader::Tc,
        Shader::Condition,
        Shader::PosteriorFull,
        Shader::IwaeTrain,
        Shader::PosteriorPlanar,
        Shader::PosteriorIaf,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Shader::GemmSubgroup8 => "gemm_subgroup8.wgsl",
            Shader::GemmRegblock => "gemm_regblock.wgsl+c4",
            Shader::GemmRegblockScalarC => "gemm_regblock.wgsl+c1",
            Shader::GemmTiled => "gemm_tiled.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Reparam => "reparam.wgsl",
            Shader::Kl => "kl.wgsl",
            Shader::Likelihood => "likelihood.wgsl",
            Shader::Adam => "adam.wgsl",
            Shader::Data => "data.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::ConvSubgroup8 => "conv_subgroup8.wgsl",
            Shader::ConvRegblock => "conv_regblock.wgsl",
            Shader::ConvTiled => "conv_tiled.wgsl",
            Shader::ConvAux => "conv_aux.wgsl",
            Shader::ConvNarrow => "conv_narrow.wgsl",
            Shader::ConvNarrowSubgroup8 => "conv_narrow.wgsl+sg8",
            Shader::ConvSingle => "conv_single.wgsl",
            Shader::ConvSingleSubgroup8 => "conv_single.wgsl+sg8",
            Shader::ConvWsingleSubgroup8 => "conv_wsingle.wgsl",
            Shader::Factor => "factor.wgsl",
            Shader::Tc => "tc.wgsl",
            Shader::PosteriorFull => "posterior_full.wgsl",
            Shader::Condition => "condition.wgsl",
            Shader::IwaeTrain => "iwae_train.wgsl",
            Shader::PosteriorPlanar => "posterior_planar.wgsl",
            Shader::PosteriorIaf => "posterior_iaf.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::GemmSubgroup8 => include_str!("../../shaders/gemm_subgroup8.wgsl"),
            // The register-blocked kernel takes its C accessors from a small file in front.
            Shader::GemmRegblock => concat!(
                include_str!("../../shaders/gemm_regblock_c4.wgsl"),
                "\n",
                include_str!("../../shaders/gemm_regblock.wgsl")
            ),
            Shader::GemmRegblockScalarC => concat!(
                include_str!("../../shaders/gemm_regblock_c1.wgsl"),
                "\n",
                include_str!("../../shaders/gemm_regblock.wgsl")
            ),
            Shader::GemmTiled => include_str!("../../shaders/gemm_tiled.wgsl"),
            Shader::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Shader::Reparam => include_str!("../../shaders/reparam.wgsl"),
            Shader::Kl => include_str!("../../shaders/kl.wgsl"),
            Shader::Likelihood => include_str!("../../shaders/likelihood.wgsl"),
            Shader::Adam => include_str!("../../shaders/adam.wgsl"),
            Shader::Data => include_str!("../../shaders/data.wgsl"),
            Shader::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            // The convolution files share their geometry (conv_common.wgsl).
            Shader::ConvSubgroup8 => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_subgroup8.wgsl")
            ),
            Shader::ConvRegblock => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_regblock.wgsl")
            ),
            Shader::ConvTiled => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_tiled.wgsl")
            ),
            Shader::ConvAux => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_aux.wgsl")
            ),
            Shader::ConvNarrow => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_narrow_load.wgsl"),
                include_str!("../../shaders/conv_narrow.wgsl")
            ),
            Shader::ConvNarrowSubgroup8 => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_narrow_load8.wgsl"),
                include_str!("../../shaders/conv_narrow.wgsl")
            ),
            Shader::ConvSingle => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_narrow_load.wgsl"),
                include_str!("../../shaders/conv_single.wgsl")
            ),
            Shader::ConvSingleSubgroup8 => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_narrow_load8.wgsl"),
                include_str!("../../shaders/conv_single.wgsl")
            ),
            Shader::ConvWsingleSubgroup8 => concat!(
                include_str!("../../shaders/conv_common.wgsl"),
                include_str!("../../shaders/conv_wsingle.wgsl")
            ),
            Shader::Factor => include_str!("../../shaders/factor.wgsl"),
            Shader::Tc => include_str!("../../shaders/tc.wgsl"),
            Shader::Condition => include_str!("../../shaders/condition.wgsl"),
            Shader::PosteriorFull => include_str!("../../shaders/posterior_full.wgsl"),
            Shader::IwaeTrain => include_str!("../../shaders/iwae_train.wgsl"),
            Shader::PosteriorPlanar => include_str!("../../shaders/posterior_planar.wgsl"),
            Shader::PosteriorIaf => include_str!("../../shaders/posterior_iaf.wgsl"),
        }
    }

    /// Whether the file uses subgroup built-ins (needs `Features::SUBGROUP`).
    pub fn needs_subgroups(self) -> bool {
        matches!(
            self,
            Shader::GemmSubgroup8
                | Shader::ConvSubgroup8
                | Shader::ConvNarrowSubgroup8
                | Shader::ConvSingleSubgroup8
                | Shader::ConvWsingleSubgroup8
        )
    }

    /// WGSL extensions the file uses. [`KernelKey::wgsl`] emits an `enable` directive for each
    /// ahead of everything else, as WGSL requires directives before any declaration (so the
    /// files themselves, which come after the defines and `common.wgsl`, cannot carry them).
    /// Where the device's WGSL front end refuses a directive (wgpu 30's naga refuses
    /// `enable subgroups;`, see [`GpuContext::accepts_enable`]) the kernel is compiled without
    /// it.
    pub fn enables(self) -> &'static [&'static str] {
        if self.needs_subgroups() {
            &["subgroups"]
        } else {
            &[]
        }
    }
}

/// A compile-time constant prepended to a shader as `const NAME = value;`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Define {
    U32(u32),
    Bool(bool),
}

/// Identifies one compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub shader: Shader,
    pub entry: &'static str,
    pub defines: Vec<(&'static str, Define)>,
}

impl KernelKey {
    pub fn new(shader: Shader, entry: &'static str) -> Self {
        KernelKey {
            shader,
            entry,
            defines: Vec::new(),
        }
    }

    pub fn define(mut self, name: &'static str, value: Define) -> Self {
        self.defines.push((name, value));
        self
    }

    pub fn u32(self, name: &'static str, value: u32) -> Self {
        self.define(name, Define::U32(value))
    }

    pub fn flag(self, name: &'static str, value: bool) -> Self {
        self.define(name, Define::Bool(value))
    }

    /// The full WGSL text of this key as the WGSL specification wants it: `enable` directives,
    /// defines, common helpers, the file.
    pub fn wgsl(&self) -> String {
        self.wgsl_enabling(|_| true)
    }

    /// [`wgsl`](Self::wgsl) with only the `enable` directives for which `keep` is true.
    pub fn wgsl_enabling(&self, keep: impl Fn(&'static str) -> bool) -> String {
        let mut src = String::new();
        for &ext in self.shader.enables() {
            if keep(ext) {
                src.push_str(&format!("enable {ext};\n"));
            }
        }
        for (name, value) in &self.defines {
            match value {
                Define::U32(v) => src.push_str(&format!("const {name}: u32 = {v}u;\n")),
                Define::Bool(v) => src.push_str(&format!("const {name}: bool = {v};\n")),
            }
        }
        src.push_str(COMMON);
        src.push('\n');
        src.push_str(self.shader.source());
        src
    }

    pub fn label(&self) -> String {
        let mut s = format!("{}::{}", self.shader.file_name(), self.entry);
        for (name, value) in &self.defines {
            match value {
                Define::U32(v) => s.push_str(&format!(" {name}={v}")),
                Define::Bool(v) => s.push_str(&format!(" {name}={v}")),
            }
        }
        s
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: HashMap<KernelKey, Arc<wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub(crate) fn get(&self, key: &KernelKey) -> Option<Arc<wgpu::ComputePipeline>> {
        self.map.get(key).cloned()
    }
    pub(crate) fn insert(&mut self, key: KernelKey, p: Arc<wgpu::ComputePipeline>) {
        self.map.insert(key, p);
    }
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

pub(crate) fn compile(ctx: &GpuContext, key: &KernelKey) -> Result<wgpu::ComputePipeline> {
    let label = key.label();
    if key.shader.needs_subgroups() && !ctx.caps.subgroups {
        return Err(crate::Error::AdapterSelection(format!(
            "kernel {label} needs subgroup operations, which {} does not offer",
            ctx.info.name
        )));
    }
    let src = key.wgsl_enabling(|ext| ctx.accepts_enable(ext));
    ctx.scoped(&format!("compiling {label}"), || {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(src.as_str().into()),
        };
        let module = if ctx.shader_checks {
            ctx.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel in shaders/ clamps or guards each index it computes, and
            // the host wrappers check every operand's shape against the buffer it binds, so
            // the bounds checks and loop bounding that wgpu would insert never fire. They cost
            // up to 40% of the GEMM throughput on CPU adapters. `WGVAE_SHADER_CHECKS=1`
            // turns them back on.
            unsafe {
                ctx.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        ctx.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[],
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_directive(line: &str) -> bool {
        let l = line.trim_start();
        l.starts_with("enable ") || l.starts_with("requires ") || l.starts_with("diagnostic")
    }

    #[test]
    fn subgroup_kernel_source_starts_with_its_enable_directive() {
        let key = KernelKey::new(Shader::GemmSubgroup8, "gemm")
            .flag("TRANS_A", false)
            .u32("TM", 8);
        let src = key.wgsl();
        assert!(src.starts_with("enable subgroups;\n"), "{}", &src[..80]);
        // Directives first, then everything else: no directive after the first other line.
        let lines: Vec<&str> = src.lines().collect();
        let first_other = lines
            .iter()
            .position(|l| !is_directive(l))
            .expect("a kernel has more than directives");
        assert!(first_other >= 1);
        assert!(
            lines[first_other..].iter().all(|l| !is_directive(l)),
            "a directive after line {first_other}"
        );
        assert!(
            lines[first_other].starts_with("const TRANS_A"),
            "{}",
            lines[first_other]
        );
        // Withheld where the front end refuses it; nothing else changes.
        let without = key.wgsl_enabling(|_| false);
        assert!(without.lines().all(|l| !is_directive(l)));
        assert_eq!(without, lines[first_other..].join("\n") + "\n");
    }

    #[test]
    fn only_subgroup_kernels_enable_extensions() {
        for shader in Shader::ALL {
            let src = KernelKey::new(shader, "main").u32("X", 1).wgsl();
            let directives: Vec<&str> = src.lines().filter(|l| is_directive(l)).collect();
            if shader.needs_subgroups() {
                assert_eq!(directives, ["enable subgroups;"], "{shader:?}");
            } else {
                assert!(directives.is_empty(), "{shader:?}: {directives:?}");
            }
        }
    }
}
