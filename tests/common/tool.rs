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

/// Runs `wgvae` with `args` and returns its output.
pub fn call(args: &[&str]) -> Output {
    wgvae().args(args).output().unwrap()
}

/// Runs `wgvae` with `args`, which must succeed; returns stdout and stderr together.
pub fn ok(args: &[&str]) -> String {
    let out = call(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// Runs `wgvae` with `args`, which must fail without a panic, with a message holding every
/// one of `needles`.
pub fn fails(args: &[&str], needles: &[&str]) {
    let out = call(args);
    let t = text(&out);
    assert!(!out.status.success(), "{args:?} succeeded: {t}");
    assert!(!t.contains("panicked"), "{args:?} panicked: {t}");
    for n in needles {
        assert!(t.contains(n), "{args:?}: {n:?} not in {t}");
    }
}

/// A decoded PNG: (width, height, channels, pixels).
pub type Png = (usize, usize, usize, Vec<u8>);

/// (width, height, channels, pixels) of a PNG, decoded with the png crate.
pub fn png(path: &Path) -> Png {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let ch = info.color_type.samples();
    (info.width as usize, info.height as usize, ch, buf)
}

/// Width or height of a grid of `n` tiles of `side` pixels, padding 2.
pub fn extent(n: usize, side: usize) -> usize {
    n * side + (n + 1) * 2
}

/// The pixels of greyscale tile (r, c) of a grid of `h`-pixel images drawn at `scale`
/// (padding 2), sampled once per source pixel.
pub fn tile(img: &Png, r: usize, c: usize, h: usize, scale: usize) -> Vec<u8> {
    let (w, _, ch, px) = img;
    assert_eq!(*ch, 1);
    let side = h * scale;
    let (x0, y0) = (2 + c * (side + 2), 2 + r * (side + 2));
    (0..h)
        .flat_map(|y| (0..h).map(move |x| (y, x)))
        .map(|(y, x)| px[(y0 + y * scale) * w + x0 + x * scale])
        .collect()
}

/// `wgvae eval --iwae-k k` of `run` on `images`, read back from its `--json` file:
/// (−ELBO, −IWAE).
pub fn eval_bounds(run: &Path, images: &Path, k: usize) -> (f64, f64) {
    let json = run.join("eval-bounds.json");
    let out = wgvae()
        .args(["eval", "--iwae-k", &k.to_string(), "--run"])
        .arg(run)
        .arg("--images")
        .arg(images)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let get = |key: &str| v["report"][key].as_f64().unwrap();
    (get("neg_elbo"), get("neg_iwae"))
}
