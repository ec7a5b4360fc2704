//! `wgvae edit` on a tiny model trained on the committed MNIST subset: the grid's size and
//! first column, the edited codes against `wgvae encode`'s posterior means, and the errors.

use std::path::Path;

mod common;

use common::tool::{extent, fails, mnist, npy_f32, ok, png, scratch, tile, train};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|x| x.as_str()).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The mean of the rows `rows` of `mu` ((n, d)) in f64.
fn mean(mu: &[f32], d: usize, rows: &[usize]) -> Vec<f64> {
    let mut m = vec![0.0f64; d];
    for &r in rows {
        for k in 0..d {
            m[k] += mu[r * d + k] as f64 / rows.len() as f64;
        }
    }
    m
}

/// Every code of `codes` ((inputs × strengths, d)) is μ_input + s·v within `tol`.
fn check_codes(
    codes: &[f32],
    mu: &[f32],
    d: usize,
    inputs: &[usize],
    strengths: &[f64],
    v: &[f64],
) {
    assert_eq!(codes.len(), inputs.len() * strengths.len() * d);
    for (r, &i) in inputs.iter().enumerate() {
        for (c, &st) in strengths.iter().enumerate() {
            let row = &codes[(r * strengths.len() + c) * d..][..d];
            for k in 0..d {
                let want = mu[i * d + k] as f64 + st * v[k];
                assert!(
                    (row[k] as f64 - want).abs() < 1e-4,
                    "input {i}, strength {st}, dim {k}: {} vs μ + s·v = {want}",
                    row[k]
                );
            }
        }
    }
}

#[test]
fn edits_by_label_and_by_index_and_refuses_bad_groups() {
    let d = scratch("edit", "mnist");
    let run = train(&d, false);
    let run = s(&run);
    let images = mnist().join("t10k-images-idx3-ubyte.gz");
    let labels_path = mnist().join("t10k-labels-idx1-ubyte.gz");
    let (images, labels_s) = (s(&images).to_string(), s(&labels_path).to_string());
    let (images, labels_s) = (images.as_str(), labels_s.as_str());
    let set = wgvae::data::load_images_file(Path::new(images)).unwrap();
    let labels = wgvae::data::idx::read_idx_labels(&labels_path).unwrap();
    assert_eq!((set.n, labels.len()), (256, 256));

    // The posterior means of every input, as `encode` writes them.
    let enc = d.join("enc");
    ok(&["encode", "--run", run, "--images", images, "--out", s(&enc)]);
    let (shape, _, mu) = npy_f32(&enc.join("mu.npy"));
    assert_eq!(shape, "(256, 3)");
    let dim = 3;

    // By label: v = mean μ(label 7) − mean μ(label 1).
    let (out, npy) = (d.join("label.png"), d.join("label.npy"));
    let base = [
        "edit", "--run", run, "--images", images, "--labels", labels_s, "--from", "1", "--to", "7",
    ];
    let inputs = [0usize, 5, 9];
    let strengths = [-2.0f64, 0.0, 1.5];
    let printed = ok(&[
        &base[..],
        &[
            "--inputs",
            "0,5,9",
            "--strengths=-2,0,1.5",
            "--originals",
            "--out",
            s(&out),
            "--npy",
            s(&npy),
        ],
    ]
    .concat());
    let sevens: Vec<usize> = (0..256).filter(|&i| labels[i] == 7).collect();
    let ones: Vec<usize> = (0..256).filter(|&i| labels[i] == 1).collect();
    assert!(
        printed.contains(&format!("group A (label 7): {} inputs", sevens.len()))
            && printed.contains(&format!("group B (label 1): {} inputs", ones.len())),
        "{printed}"
    );
    let v: Vec<f64> = mean(&mu, dim, &sevens)
        .iter()
        .zip(mean(&mu, dim, &ones))
        .map(|(a, b)| a - b)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm > 1e-3, "the 7s and 1s have the same mean code: {v:?}");
    assert!(
        printed.contains(&format!("norm {norm:.4}")),
        "|v| = {norm}: {printed}"
    );
    let (shape, descr, codes) = npy_f32(&npy);
    assert_eq!((shape.as_str(), descr.as_str()), ("(9, 3)", "<f4"));
    check_codes(&codes, &mu, dim, &inputs, &strengths, &v);
    // 3 rows of 1 + 3 columns of 28-pixel digits drawn at twice their size; the first column
    // is the inputs themselves, the others differ from them.
    let grid = png(&out);
    assert_eq!((grid.0, grid.1, grid.2), (extent(4, 56), extent(3, 56), 1));
    for (r, &i) in inputs.iter().enumerate() {
        assert_eq!(
            tile(&grid, r, 0, 28, 2),
            set.image(i),
            "row {r}: not input {i}"
        );
        assert_ne!(
            tile(&grid, r, 1, 28, 2),
            tile(&grid, r, 3, 28, 2),
            "row {r}"
        );
    }

    // By index sets, defaults for inputs (the first 8) and strengths (-2..2), no originals.
    let (out2, npy2) = (d.join("index.png"), d.join("index.npy"));
    let printed = ok(&[
        "edit",
        "--run",
        run,
        "--images",
        images,
        "--group-a",
        "0-9,3",
        "--group-b",
        "10,12,20-25",
        "--out",
        s(&out2),
        "--npy",
        s(&npy2),
    ]);
    assert!(
        printed.contains("group A (--group-a 0-9,3): 10 inputs")
            && printed.contains("group B (--group-b 10,12,20-25): 8 inputs"),
        "{printed}"
    );
    let a: Vec<usize> = (0..10).collect();
    let b = [10usize, 12, 20, 21, 22, 23, 24, 25];
    let v2: Vec<f64> = mean(&mu, dim, &a)
        .iter()
        .zip(mean(&mu, dim, &b))
        .map(|(x, y)| x - y)
        .collect();
    let (shape, _, codes) = npy_f32(&npy2);
    assert_eq!(shape, "(40, 3)");
    let first8: Vec<usize> = (0..8).collect();
    check_codes(&codes, &mu, dim, &first8, &[-2.0, -1.0, 0.0, 1.0, 2.0], &v2);
    let grid = png(&out2);
    assert_eq!((grid.0, grid.1, grid.2), (extent(5, 56), extent(8, 56), 1));

    // Outputs are not replaced without --force.
    let again = [
        "edit",
        "--run",
        run,
        "--images",
        images,
        "--group-a",
        "0",
        "--group-b",
        "1",
        "--out",
        s(&out2),
    ];
    fails(&again, &["--out", "already exists", "--force"]);
    ok(&[&again[..], &["--force"]].concat());

    // Errors name the flag and the value.
    let fresh = d.join("never.png");
    let by_index = |a: &str, b: &str| -> Vec<String> {
        [
            "edit",
            "--run",
            run,
            "--images",
            images,
            "--group-a",
            a,
            "--group-b",
            b,
            "--out",
            s(&fresh),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    fails(
        &strs(&by_index("0-3", "4,256")),
        &["--group-b 4,256", "index 256", "256 inputs"],
    );
    fails(&strs(&by_index("", "1")), &["--group-a"]);
    fails(&strs(&by_index("5-2", "1")), &["--group-a", "backwards"]);
    fails(
        &[&strs(&by_index("0", "1"))[..], &["--inputs", "2,300"]].concat(),
        &["--inputs 2,300", "index 300", "256 inputs"],
    );
    fails(
        &[
            "edit",
            "--run",
            run,
            "--images",
            images,
            "--labels",
            labels_s,
            "--from",
            "1",
            "--to",
            "11",
            "--out",
            s(&fresh),
        ],
        &[
            "--to 11",
            "no input has this label",
            "labels present: 0,1,2,3,4,5,6,7,8,9",
        ],
    );
    fails(
        &[
            "edit",
            "--run",
            run,
            "--images",
            images,
            "--from",
            "1",
            "--to",
            "7",
            "--out",
            s(&fresh),
        ],
        &["--from/--to", "--labels"],
    );
    let train_labels = mnist().join("train-labels-idx1-ubyte.gz");
    fails(
        &[
            "edit",
            "--run",
            run,
            "--images",
            images,
            "--labels",
            s(&train_labels),
            "--from",
            "1",
            "--to",
            "7",
            "--out",
            s(&fresh),
        ],
        &["--labels", "512 labels", "256 images"],
    );
    let missing = d.join("no-such-labels");
    fails(
        &[
            "edit",
            "--run",
            run,
            "--images",
            images,
            "--labels",
            s(&missing),
            "--from",
            "1",
            "--to",
            "7",
            "--out",
            s(&fresh),
        ],
        &["--labels", "no-such-labels"],
    );
    fails(
        &[&strs(&by_index("0", "1"))[..], &["--strengths", "1,x"]].concat(),
        &["--strengths", "`x`"],
    );
    let no_run = d.join("no-run");
    fails(
        &[
            "edit",
            "--run",
            s(&no_run),
            "--images",
            images,
            "--group-a",
            "0",
            "--group-b",
            "1",
            "--out",
            s(&fresh),
        ],
        &["no-run", "checkpoint.safetensors"],
    );
    // A model of 28x28 digits does not take 64x64 sprites.
    fails(
        &[
            "edit",
            "--run",
            run,
            "--sprites",
            "20",
            "--group-a",
            "0",
            "--group-b",
            "1",
            "--out",
            s(&fresh),
        ],
        &["--sprites", "28x28"],
    );
    assert!(!fresh.exists(), "a failed edit wrote {}", fresh.display());
}
