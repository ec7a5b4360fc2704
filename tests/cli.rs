//! The `wgvae` binary end to end: train, then evaluate the checkpoint on an IDX file; bad
//! input ends with a clear message and a failing exit code, not a panic.

use std::path::PathBuf;
use std::process::Command;

fn wgvae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgvae"))
}

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-512")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn train_then_eval_with_json() {
    let run = std::env::temp_dir().join(format!("wgvae-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let out = wgvae()
        .args([
            "train",
            "--epochs",
            "1",
            "--batch",
            "64",
            "--hidden",
            "64",
            "--latent",
            "8",
            "--no-pictures",
            "--quiet",
        ])
        .arg("--data")
        .arg(data())
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "train failed:\n{}", text(&out));
    assert!(run.join("checkpoint.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    let json = run.join("eval.json");
    let out = wgvae()
        .args(["eval", "--iwae-k", "4", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(data().join("t10k-images-idx3-ubyte.gz"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "eval failed:\n{}", text(&out));
    assert!(text(&out).contains("256 images"), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r = &v["report"];
    assert_eq!(r["n"], 256);
    assert_eq!(r["iwae_k"], 4);
    assert!(r["neg_elbo"].as_f64().unwrap() > 50.0);
    assert_eq!(r["kl_per_dim"].as_array().unwrap().len(), 8);

    // A label file is not an image file: the error names the file and the header field.
    let out = wgvae()
        .args(["eval", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(data().join("t10k-labels-idx1-ubyte.gz"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("t10k-labels-idx1-ubyte.gz") && t.contains("magic"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    let _ = std::fs::remove_dir_all(run);
}

#[test]
fn bad_flags_are_refused_without_a_panic() {
    let out = wgvae()
        .args(["train", "--lr=0", "--quiet"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("--lr") && !t.contains("panicked"), "{t}");
    let out = wgvae()
        .args(["train", "--activation", "swish"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("swish"), "{}", text(&out));
}
