//! Helpers of the tests that run the `wgvae` binary on tiny trained models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, without backtraces (errors must read as one clear line).
pub fn wgvae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgvae"));
    c.env("RUST_BACKTRACE", "0");
    c
}

/// stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh directory for one test: `wgvae-<tag>-<name>-<pid>` in the temp directory.
pub fn scratch(tag: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgvae-{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The committed 512-digit MNIST subset.
pub fn mnist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-512")
}

/// Trains a tiny model (3 latent dimensions) into `dir/run`: on 96 sprites, or on the
/// committed MNIST subset.
pub fn train(dir: &Path, sprites: bool) -> PathBuf {
    let run = dir.join("run");
    let mut c = wgvae();
    c.args(["train", "--quiet", "--no-pictures", "--epochs", "1"])
        .args(["--hidden", "16", "--latent", "3", "--batch", "32", "--out"])
        .arg(&run);
    if sprites {
        c.args(["--n-train", "96", "--n-test", "16"]);
    } else {
        c.arg("--data").arg(mnist());
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    run
}

/// (shape, descr, payload) of a version 1 `.npy` file written by wgvae.
pub fn npy(path: &Path) -> (String, String, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = String::from_utf8(b[10..10 + hl].to_vec()).unwrap();
    let field = |key: &str| {
        let i = header.find(key).unwrap() + key.len();
        let rest = header[i..].trim_start_matches([':', ' ', '\'']);
        let end = if key == "'shape'" {
            rest.find(')').unwrap() + 1
        } else {
            rest.find('\'').unwrap()
        };
        rest[..end].to_string()
    };
    (field("'shape'"), field("'descr'"), b[10 + hl..].to_vec())
}

/// Little-endian f32 values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// (shape, descr, payload as f32) of a `.npy` file written by wgvae.
pub fn npy_f32(path: &Path) -> (String, String, Vec<f32>) {
    let (shape, descr, bytes) = npy(path);
    (shape, descr, f32s(&bytes))
}
