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

/// A fresh temporary directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgvae-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `wgvae train` of a tiny model on the committed MNIST subset, with `extra` flags (which
/// replace the defaults of the same name).
fn train_small(cwd: &std::path::Path, extra: &[&std::ffi::OsStr]) -> std::process::Output {
    let base = [
        ("--epochs", "1"),
        ("--batch", "64"),
        ("--hidden", "32"),
        ("--latent", "4"),
    ];
    let mut cmd = wgvae();
    cmd.current_dir(cwd)
        .args(["train", "--no-pictures", "--quiet"]);
    for (flag, value) in base {
        if !extra.iter().any(|e| *e == flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// A scratch directory holding `run/`, a tiny model trained on the committed MNIST subset.
fn trained_run(name: &str) -> (PathBuf, PathBuf) {
    let d = scratch(name);
    let run = d.join("run");
    let out = train_small(
        &d,
        &[
            os("--data"),
            data().as_os_str(),
            os("--out"),
            run.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    (d, run)
}

#[test]
fn a_fresh_run_never_replaces_another_run() {
    let (d, run) = trained_run("replace");
    let data = data();
    let ck = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    // A second fresh run into the same directory (one that would diverge) is refused before
    // it touches anything, and says how to continue or replace the run.
    let second = train_small(
        &d,
        &[
            os("--data"),
            data.as_os_str(),
            os("--out"),
            run.as_os_str(),
            os("--lr"),
            os("1e30"),
        ],
    );
    assert!(!second.status.success());
    let t = text(&second);
    assert!(
        t.contains("--resume") && t.contains("--overwrite") && !t.contains("panicked"),
        "{t}"
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint.safetensors")).unwrap(),
        ck
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);
    // Asked to, it replaces the run; when that run diverges, it says that no checkpoint of it
    // was written, and no file of the old run is left to be mistaken for it.
    let third = train_small(
        &d,
        &[
            os("--data"),
            data.as_os_str(),
            os("--out"),
            run.as_os_str(),
            os("--lr"),
            os("1e30"),
            os("--overwrite"),
        ],
    );
    assert!(!third.status.success());
    let t = text(&third);
    assert!(t.contains("no checkpoint was written"), "{t}");
    assert!(!run.join("checkpoint.safetensors").exists());
    assert!(!run.join("metrics.jsonl").exists());
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn without_out_each_run_gets_its_own_directory() {
    let d = scratch("default-out");
    let data = data();
    for _ in 0..2 {
        let out = train_small(&d, &[os("--data"), data.as_os_str()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(d.join("runs/mnist-512/checkpoint.safetensors").exists());
    assert!(d.join("runs/mnist-512-2/checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn bad_values_are_refused_naming_their_flag() {
    let d = scratch("values");
    let data = data();
    // (extra flags, what the message must contain). Negative numbers need no `=`.
    let cases: &[(&[&str], &str)] = &[
        (&["--clip", "-1"], "--clip -1"),
        (&["--clip", "NaN"], "--clip NaN"),
        (&["--weight-decay", "-1"], "--weight-decay -1"),
        (&["--weight-decay", "NaN"], "--weight-decay NaN"),
        (
            &["--likelihood", "gaussian", "--log-sigma", "NaN"],
            "--log-sigma NaN",
        ),
        (&["--lr", "-1"], "--lr -1"),
        (&["--beta", "inf"], "--beta inf"),
        (&["--batch", "0"], "--batch 0"),
        (&["--batch", "-3"], "--batch"),
        (&["--epochs", "0"], "--epochs 0"),
        (&["--activation", "leaky_relu:-0.5"], "--activation"),
        (&["--latent", "100000"], "--latent"),
        (&["--hidden", "10000000"], "--hidden"),
        (&["--batch", "100000"], "--batch"),
        (&["--iwae-k", "99999999999"], "--iwae-k"),
        (
            &["--arch", "conv", "--conv-channels", "8,8,8,8,8"],
            "--conv-channels",
        ),
        (
            &["--arch", "conv", "--conv-channels", "0"],
            "--conv-channels 0",
        ),
        (&["--arch", "conv", "--conv-kernel", "1"], "--conv-kernel 1"),
        (&["--mlp-decoder"], "--arch conv only"),
        (
            &["--gamma", "5"],
            "--objective capacity, tc-vae or factor-vae only",
        ),
        (&["--alpha", "2"], "--objective tc-vae only"),
        (&["--objective", "tc-vae", "--alpha", "-1"], "--alpha -1"),
        (
            &["--objective", "tc-vae", "--kl-warmup", "10"],
            "--kl-warmup 10",
        ),
        (&["--objective", "tc-vae", "--tc-estimator", "xyz"], "xyz"),
        (&["--disc-layers", "3"], "--objective factor-vae only"),
        (&["--capacity", "3"], "--objective capacity only"),
        (
            &["--objective", "factor-vae", "--disc-width", "0"],
            "--disc-width 0",
        ),
        (
            &["--objective", "factor-vae", "--disc-lr", "-1"],
            "--disc-lr -1",
        ),
        (
            &["--objective", "factor-vae", "--disc-layers", "100000"],
            "--disc-layers 100000",
        ),
        (
            &["--objective", "factor-vae", "--gamma", "NaN"],
            "--gamma NaN",
        ),
        (&["--kl-cycle-ratio", "0.3"], "--kl-cycles only"),
        (&["--kl-cycles", "0"], "--kl-cycles 0"),
        (
            &["--kl-cycles", "2", "--kl-cycle-ratio", "0"],
            "--kl-cycle-ratio 0",
        ),
        (&["--kl-cycles", "2", "--kl-warmup", "5"], "--kl-warmup 5"),
        (
            &["--objective", "capacity", "--capacity", "-1"],
            "--capacity -1",
        ),
        (&["--objective", "capacity", "--gamma", "0"], "--gamma 0"),
        (&["--objective", "tc"], "--objective"),
    ];
    for (flags, want) in cases {
        let run = d.join("run");
        let mut args = vec![os("--data"), data.as_os_str(), os("--out"), run.as_os_str()];
        args.extend(flags.iter().map(|f| os(f)));
        let out = train_small(&d, &args);
        let t = text(&out);
        assert!(!out.status.success(), "{flags:?} was accepted:\n{t}");
        assert!(t.contains(want), "{flags:?}: message lacks `{want}`:\n{t}");
        assert!(!t.contains("panicked"), "{flags:?}:\n{t}");
        assert!(
            !run.join("metrics.jsonl").exists(),
            "{flags:?} wrote metrics"
        );
    }
    let _ = std::fs::remove_dir_all(d);
}

#[cfg(unix)]
#[test]
fn paths_that_are_not_utf8_are_refused_before_any_work() {
    use std::os::unix::ffi::OsStrExt;
    let d = scratch("utf8");
    let bad = d.join(std::ffi::OsStr::from_bytes(b"run\xff"));
    let out = train_small(
        &d,
        &[os("--out"), bad.as_os_str(), os("--n-train"), os("200")],
    );
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("--out") && t.contains("UTF-8") && !t.contains("panicked"),
        "{t}"
    );
    assert!(!bad.exists());
    let _ = std::fs::remove_dir_all(d);
}

#[cfg(unix)]
#[test]
fn eval_json_writes_through_a_symlink() {
    let (d, run) = trained_run("symlink");
    let data = data();
    std::fs::write(d.join("real.json"), "{}").unwrap();
    let link = d.join("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let out = wgvae()
        .args(["eval", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(data.join("t10k-images-idx3-ubyte.gz"))
        .arg("--json")
        .arg(&link)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("real.json")).unwrap()).unwrap();
    assert_eq!(v["report"]["n"], 256);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_missing_file_is_named_with_its_os_error_once() {
    let out = wgvae()
        .args(["eval", "--run", "no-such-run", "--images", "no-such.gz"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("no-such-run/checkpoint.safetensors"), "{t}");
    assert_eq!(t.matches("os error 2").count(), 1, "{t}");
}

#[test]
fn resume_names_ignored_flags_and_the_recorded_data_directory() {
    let d = scratch("resume");
    let copy = d.join("data");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(data()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    // Trained with a relative data directory; the run records where it is.
    let out = train_small(&d, &[os("--data"), os("data"), os("--out"), os("run")]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::rename(&copy, d.join("moved")).unwrap();
    let resume = |extra: &[&str]| {
        wgvae()
            .current_dir(&d)
            .args(["train", "--resume", "run", "--epochs", "1", "--quiet"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let out = resume(&[]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("data directory") && t.contains("run.data.dir") && t.contains("--data"),
        "{t}"
    );
    // Pointed at the moved data, it continues; flags it does not apply are named.
    let out = resume(&["--data", "moved", "--lr", "0.5", "--batch", "7"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ignoring --lr, --batch"), "{t}");
    let lines = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    // Adding zero epochs is refused rather than doing nothing.
    let out = wgvae()
        .current_dir(&d)
        .args(["train", "--resume", "run", "--epochs", "0"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("--epochs 0"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(d);
}

/// Rewrites one metadata entry (a JSON document) of a safetensors file, as an editor would.
fn edit_metadata(bytes: &[u8], key: &str, edit: &dyn Fn(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = &mut header["__metadata__"][key];
    let mut doc: serde_json::Value = serde_json::from_str(meta.as_str().unwrap()).unwrap();
    edit(&mut doc);
    *meta = serde_json::Value::String(doc.to_string());
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn stored_values_out_of_range_name_the_file_and_field() {
    let (d, run) = trained_run("stored");
    let ck = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, &str, Edit, &str); 4] = [
        (
            "beta1",
            "run",
            |v| v["adam"]["beta1"] = serde_json::json!(1.0),
            "`run.adam.beta1` is 1",
        ),
        (
            "lr",
            "run",
            |v| v["adam"]["lr"] = serde_json::json!(-1.0),
            "`run.adam.lr` is -1",
        ),
        (
            "epoch",
            "state",
            |v| v["epoch"] = serde_json::json!(u64::MAX),
            "`state`",
        ),
        (
            "hidden",
            "model",
            |v| v["enc_hidden"] = serde_json::json!([4_000_000_000u64]),
            "`model`",
        ),
    ];
    for (name, key, edit, want) in cases {
        let dir = d.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("checkpoint.safetensors"),
            edit_metadata(&ck, key, &edit),
        )
        .unwrap();
        let out = wgvae()
            .current_dir(&d)
            .args(["train", "--resume", name, "--epochs", "1", "--quiet"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{name}: accepted:\n{t}");
        assert!(
            t.contains(want) && t.contains("checkpoint.safetensors") && !t.contains("panicked"),
            "{name}: {t}"
        );
        // A stored value is not blamed on a flag the user did not pass.
        assert!(
            !t.contains("--lr -1") && !t.contains("note:"),
            "{name}: {t}"
        );
    }
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn the_host_memory_budget_is_checked_before_generating_data() {
    let d = scratch("budget");
    let out = wgvae()
        .current_dir(&d)
        .args(["train", "--quiet", "--no-pictures", "--n-train", "5000"])
        .env("WGVAE_HOST_MEMORY", "1M")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("host memory") && t.contains("WGVAE_HOST_MEMORY") && t.contains("--n-train"),
        "{t}"
    );
    let out = wgvae()
        .current_dir(&d)
        .args(["train", "--quiet"])
        .env("WGVAE_HOST_MEMORY", "lots")
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("WGVAE_HOST_MEMORY=`lots`"),
        "{}",
        text(&out)
    );
    assert!(!d.join("runs").exists());
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn sprites_runs_report_the_factor_probe() {
    let d = scratch("probe");
    let out = wgvae()
        .current_dir(&d)
        .args([
            "train",
            "--epochs",
            "1",
            "--n-train",
            "256",
            "--n-test",
            "64",
            "--batch",
            "64",
            "--hidden",
            "32",
            "--latent",
            "4",
            "--no-pictures",
            "--out",
            "run",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("probe (linear / 5-NN, 32 fit / 32 scored)"),
        "{t}"
    );
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    let m: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let probe = &m["probe"];
    assert_eq!(probe["n_score"], 32, "{probe}");
    let names: Vec<&str> = probe["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for want in ["pos_x", "pos_y", "scale", "orientation_cos1"] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert!(probe["shape"]["chance"].as_f64().unwrap() > 0.0, "{probe}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn eval_binarises_images_for_a_model_trained_on_binary_images() {
    let d = scratch("bin-eval");
    let data = data();
    let out = train_small(
        &d,
        &[
            os("--data"),
            data.as_os_str(),
            os("--out"),
            os("run"),
            os("--binarize"),
            os("dynamic"),
            // Fewer images than one batch: one step of 512 weighted rows per epoch.
            os("--batch"),
            os("1000"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let eval = |run: &str| {
        wgvae()
            .current_dir(&d)
            .args(["eval", "--run", run, "--json", "e.json", "--images"])
            .arg(data.join("t10k-images-idx3-ubyte.gz"))
            .output()
            .unwrap()
    };
    let out = eval("run");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("--binarize dynamic"), "{t}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("e.json")).unwrap()).unwrap();
    assert_eq!(v["binarized"], true);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn info_lists_the_adapters_and_marks_the_one_used() {
    let out = wgvae().arg("info").output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let listed: Vec<&str> = t
        .lines()
        .filter(|l| l.len() > 2 && l[2..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(!listed.is_empty(), "{t}");
    assert_eq!(
        listed.iter().filter(|l| l.starts_with('*')).count(),
        1,
        "{t}"
    );
    assert!(
        t.contains("storage binding") && t.contains("the one wgvae uses"),
        "{t}"
    );
    // An index past the list is named with the list.
    let out = wgvae()
        .arg("info")
        .env("WGVAE_ADAPTER", "99")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("WGVAE_ADAPTER=99"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}
