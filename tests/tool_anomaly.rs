//! `wgvae anomaly` (per-input −log p(x) or −ELBO scores, AUROC, histogram) and
//! `wgvae train --classes` on the committed MNIST subset.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::tool::{mnist, text, train, wgvae};

fn scratch(name: &str) -> PathBuf {
    common::tool::scratch("anomaly", name)
}

fn images() -> PathBuf {
    mnist().join("t10k-images-idx3-ubyte.gz")
}

fn labels() -> PathBuf {
    mnist().join("t10k-labels-idx1-ubyte.gz")
}

/// Labels of a gzip IDX labels file (8-byte header).
fn read_labels(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut b = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut b)
        .unwrap();
    b[8..].to_vec()
}

fn anomaly(run: &Path, extra: &[&str]) -> Output {
    wgvae()
        .args(["anomaly", "--run"])
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

/// (label, score) rows of a scores CSV.
fn rows(path: &Path) -> Vec<(Option<u8>, f64)> {
    let body = std::fs::read_to_string(path).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("index,label,score"));
    lines
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 3, "{line}");
            assert_eq!(f[0].parse::<usize>().unwrap(), i);
            let label = (!f[1].is_empty()).then(|| f[1].parse().unwrap());
            (label, f[2].parse().unwrap())
        })
        .collect()
}

/// The number after `key` in `text`.
fn figure(text: &str, key: &str) -> f64 {
    let i = text
        .find(key)
        .unwrap_or_else(|| panic!("no `{key}` in {text}"))
        + key.len();
    let rest = text[i..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` in {text}"))
}

#[test]
fn scores_auroc_and_histogram() {
    let d = scratch("scores");
    let run = train(&d, false);
    let want = read_labels(&labels());
    let n = want.len();
    let mut means = Vec::new();
    for (tag, flags) in [("elbo", &["--elbo"][..]), ("iwae", &["--k", "5"][..])] {
        let csv = d.join(format!("{tag}.csv"));
        let png = d.join(format!("{tag}.png"));
        let out = anomaly(
            &run,
            &[
                "--images",
                images().to_str().unwrap(),
                "--labels",
                labels().to_str().unwrap(),
                "--normal",
                "0-4",
                "--out",
                csv.to_str().unwrap(),
                "--hist",
                png.to_str().unwrap(),
            ]
            .into_iter()
            .chain(flags.iter().copied())
            .collect::<Vec<_>>(),
        );
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        let r = rows(&csv);
        assert_eq!(r.len(), n);
        assert!(r.iter().all(|(_, s)| s.is_finite() && *s > 0.0), "{tag}");
        let got: Vec<u8> = r.iter().map(|(l, _)| l.unwrap()).collect();
        assert_eq!(got, want);
        let auroc = figure(&t, "AUROC");
        assert!((0.0..=1.0).contains(&auroc), "{t}");
        // The printed group means agree with the CSV.
        let group_mean = |normal: bool| {
            let v: Vec<f64> = r
                .iter()
                .filter(|(l, _)| (l.unwrap() <= 4) == normal)
                .map(|(_, s)| *s)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(
            (figure(&t, "mean score") - group_mean(true)).abs() < 1e-2,
            "{t}"
        );
        let other = &t[t.find("other classes").unwrap()..];
        assert!(
            (figure(other, "mean score") - group_mean(false)).abs() < 1e-2,
            "{t}"
        );
        let (w, h, _, px) = wgvae::image::read_png(&png).unwrap();
        assert!(w > 100 && h > 100 && !px.is_empty());
        means.push(r.iter().map(|(_, s)| s).sum::<f64>() / n as f64);
        // Refuses to replace the CSV without --force.
        let again = anomaly(
            &run,
            &[
                "--images",
                images().to_str().unwrap(),
                "--out",
                csv.to_str().unwrap(),
                "--elbo",
            ],
        );
        assert!(!again.status.success());
        assert!(text(&again).contains("--force"), "{}", text(&again));
    }
    // −log p̂ from 5 importance samples is a tighter bound than the −ELBO: lower on average.
    assert!(
        means[1] <= means[0] + 0.05,
        "IWAE {} vs ELBO {}",
        means[1],
        means[0]
    );

    // Without labels: an empty label column, no AUROC.
    let csv = d.join("plain.csv");
    let out = anomaly(
        &run,
        &[
            "--images",
            images().to_str().unwrap(),
            "--k",
            "2",
            "--out",
            csv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("AUROC"));
    let r = rows(&csv);
    assert_eq!(r.len(), n);
    assert!(r.iter().all(|(l, s)| l.is_none() && s.is_finite()));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let d = scratch("errors");
    let run = train(&d, false);
    let out_csv = d.join("s.csv");
    let img = images();
    let lab = labels();
    let train_labels = mnist().join("train-labels-idx1-ubyte.gz");
    let missing = d.join("missing-labels.gz");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--labels", train_labels.to_str().unwrap(), "--elbo"],
            "512 labels",
        ),
        (
            vec!["--labels", lab.to_str().unwrap(), "--normal", "0,12"],
            "--normal 0,12: class(es) 12 do not occur",
        ),
        (
            vec!["--labels", lab.to_str().unwrap(), "--normal", "0-9"],
            "no anomalous class",
        ),
        (vec!["--k", "0"], "--k 0"),
        (vec!["--k", "-3"], "--k"),
        (
            vec!["--labels", missing.to_str().unwrap()],
            "missing-labels.gz",
        ),
        (vec!["--normal", "1"], "--labels"),
        (
            vec!["--labels", lab.to_str().unwrap(), "--normal", "1-x"],
            "`x` in `1-x`",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--images", img.to_str().unwrap()];
        args.extend(["--out", out_csv.to_str().unwrap()]);
        args.extend(extra.iter().copied());
        let out = anomaly(&run, &args);
        let t = text(&out);
        assert!(!out.status.success(), "{extra:?}: {t}");
        assert!(t.contains(want), "{extra:?}: want `{want}` in {t}");
        assert!(!t.contains("panicked"), "{t}");
        assert!(!out_csv.exists(), "{extra:?} wrote the CSV");
    }
    let nope = d.join("nope-images.gz");
    let out = anomaly(
        &run,
        &[
            "--images",
            nope.to_str().unwrap(),
            "--out",
            out_csv.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("nope-images.gz"), "{}", text(&out));
    let out = anomaly(
        &d.join("no-run"),
        &[
            "--images",
            img.to_str().unwrap(),
            "--out",
            out_csv.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("no-run"), "{}", text(&out));
}

#[test]
fn train_on_some_classes_only() {
    let d = scratch("classes");
    let run = d.join("run");
    let train_with = |extra: &[&str]| {
        wgvae()
            .args(["train", "--no-pictures", "--epochs", "1"])
            .args(["--hidden", "16", "--latent", "3", "--batch", "32", "--data"])
            .arg(mnist())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = train_with(&["--classes", "0-4", "--out", run.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let kept = read_labels(&mnist().join("train-labels-idx1-ubyte.gz"))
        .iter()
        .filter(|&&l| l <= 4)
        .count();
    assert!(kept > 0 && kept < 512);
    // The test set stays whole.
    let n_test = read_labels(&labels()).len();
    assert!(
        t.contains(&format!("data: {kept} train / {n_test} test images")),
        "{t}"
    );
    // One epoch of ceil(kept / 32) steps.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"].as_u64(), Some(kept.div_ceil(32) as u64));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["run"]["classes"], serde_json::json!([0, 1, 2, 3, 4]));
    // Resume keeps the recorded classes.
    let out = wgvae()
        .args(["train", "--no-pictures", "--epochs", "1", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"].as_u64(), Some(2 * kept.div_ceil(32) as u64));

    // Images without labels files cannot be filtered.
    let unlabelled = d.join("unlabelled");
    std::fs::create_dir_all(&unlabelled).unwrap();
    for f in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::copy(mnist().join(f), unlabelled.join(f)).unwrap();
    }
    let out = wgvae()
        .args([
            "train",
            "--quiet",
            "--no-pictures",
            "--epochs",
            "1",
            "--data",
        ])
        .arg(&unlabelled)
        .args(["--classes", "0-4", "--out"])
        .arg(d.join("unlabelled-run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--classes: the training set") && text(&out).contains("no labels"),
        "{}",
        text(&out)
    );
    let out = train_with(&[
        "--classes",
        "200",
        "--out",
        d.join("none").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--classes"), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}
