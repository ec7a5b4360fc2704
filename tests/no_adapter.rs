//! Without an adapter the tests must fail, not skip, and say how to install one.

mod common;

use std::process::Command;

use wgvae::gpu::{ContextOptions, GpuContext};

const HINT: &str = "apt-get install mesa-vulkan-drivers";

#[test]
fn unknown_adapter_is_an_error_with_the_install_hint() {
    let opts = ContextOptions {
        adapter: Some("no-such-adapter-anywhere".into()),
        ..Default::default()
    };
    let err = GpuContext::with_options(&opts)
        .err()
        .expect("selection must fail")
        .to_string();
    assert!(err.contains("no-such-adapter-anywhere"), "{err}");
    assert!(err.contains(HINT), "{err}");
}

#[test]
fn bad_backend_name_is_an_error() {
    let err = wgvae::gpu::context::parse_backends("vulkan,quantum")
        .unwrap_err()
        .to_string();
    assert!(err.contains("quantum"), "{err}");
}

/// Runs `child_needs_a_context` in a child process whose Vulkan loader finds no driver: the
/// child must fail, and its output must carry the install hint.
#[test]
fn suite_fails_without_an_adapter() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_needs_a_context",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VK_ICD_FILENAMES", "/nonexistent/wgvae-no-driver.json")
        .env("VK_DRIVER_FILES", "/nonexistent/wgvae-no-driver.json")
        .env("WGVAE_BACKEND", "vulkan")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the child passed without a driver:\n{text}"
    );
    assert!(text.contains("wgvae tests need a GPU adapter"), "{text}");
    assert!(text.contains(HINT), "{text}");
    assert!(text.contains("1 failed"), "{text}");
}

/// The helper every GPU test starts with. Run alone by `suite_fails_without_an_adapter`.
#[test]
#[ignore = "run in a child process by suite_fails_without_an_adapter"]
fn child_needs_a_context() {
    let ctx = common::ctx();
    assert!(!ctx.info.name.is_empty());
}
