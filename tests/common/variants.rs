//! A context per kernel family, for the tests that run every family (GEMM and convolutions).
//! Included next to `common` with `#[path = "common/variants.rs"] mod variants;`.

use std::sync::OnceLock;

use wgvae::gpu::{ContextOptions, GemmVariant, GpuContext};

/// A context created with `variant` forced, so every family runs through the same path the
/// library takes when it chooses one. The tiled and register-blocked families run on every
/// adapter, so failing to create them fails the test; the subgroup family is required on
/// lavapipe (8-lane subgroups) and skipped (`None`) only on adapters without 8-lane subgroups.
pub fn variant_ctx(variant: GemmVariant) -> Option<&'static GpuContext> {
    static TILED: OnceLock<GpuContext> = OnceLock::new();
    static REGBLOCK: OnceLock<GpuContext> = OnceLock::new();
    static SUBGROUP8: OnceLock<Option<GpuContext>> = OnceLock::new();
    let make = || {
        let opts = ContextOptions {
            gemm: Some(variant),
            ..ContextOptions::from_env().unwrap_or_else(|e| panic!("wgvae tests: {e}"))
        };
        GpuContext::with_options(&opts)
    };
    let must = |r: wgvae::Result<GpuContext>| match r {
        Ok(c) => c,
        Err(e) => panic!(
            "creating a context with the {} kernels: {e}",
            variant.name()
        ),
    };
    match variant {
        GemmVariant::Tiled => Some(TILED.get_or_init(|| must(make()))),
        GemmVariant::Regblock => Some(REGBLOCK.get_or_init(|| must(make()))),
        GemmVariant::Subgroup8 => SUBGROUP8
            .get_or_init(|| {
                let info = &crate::common::ctx().info;
                let lavapipe = info.backend == wgpu::Backend::Vulkan
                    && info.device_type == wgpu::DeviceType::Cpu;
                match make() {
                    Ok(c) => Some(c),
                    Err(e) if lavapipe => {
                        panic!("lavapipe ({info}) must run the subgroup8 kernels: {e}")
                    }
                    Err(e) => {
                        eprintln!("subgroup8 kernels not available on {info}: {e}");
                        None
                    }
                }
            })
            .as_ref(),
    }
}
