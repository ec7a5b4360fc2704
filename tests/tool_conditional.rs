//! A conditional VAE through the tools that encode or decode — `encode --images`, `decode`,
//! `reconstruct`, `interpolate`, `traverse` and `edit` — with `--labels FILE`, `--class C` or
//! the labels the inputs carry: each result is checked against the same codes decoded by
//! `decode` under the class the tool should have used, and every misuse of the flags fails with
//! a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::tool::{Png, extent, fails, mnist, npy_f32, ok, png, text, tile, wgvae};

/// Pixels on a side of a digit, and the PNGs' upscaling.
const H: usize = 28;
const SCALE: usize = 2;

/// The tests of this file: the last one to finish removes the trained runs.
const TESTS: usize = 9;

/// The trained runs every test shares.
struct Runs {
    dir: PathBuf,
    /// A conditional model of the MNIST subset (10 classes).
    cond: PathBuf,
    /// An unconditional model of the MNIST subset.
    plain: PathBuf,
    /// A conditional model of the sprites (3 classes: their shapes).
    sprites: PathBuf,
}

fn train_into(run: &Path, extra: &[&str]) {
    let out = wgvae()
        .args(["train", "--quiet", "--no-pictures", "--epochs", "1"])
        .args(["--hidden", "16", "--latent", "3", "--batch", "32", "--out"])
        .arg(run)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

static RUNS: OnceLock<Runs> = OnceLock::new();

fn runs() -> &'static Runs {
    RUNS.get_or_init(|| {
        let dir = common::tool::scratch("toolcond", "runs");
        let data = s(&mnist()).to_string();
        let runs = Runs {
            cond: dir.join("cond"),
            plain: dir.join("plain"),
            sprites: dir.join("sprites"),
            dir,
        };
        train_into(&runs.cond, &["--conditional", "--data", &data]);
        train_into(&runs.plain, &["--data", &data]);
        train_into(
            &runs.sprites,
            &["--conditional", "--n-train", "96", "--n-test", "16"],
        );
        runs
    })
}

/// Counts the finished tests (also when one fails); the last removes the runs.
struct Finish;

impl Drop for Finish {
    fn drop(&mut self) {
        static DONE: AtomicUsize = AtomicUsize::new(0);
        if DONE.fetch_add(1, Ordering::SeqCst) + 1 == TESTS
            && let Some(runs) = RUNS.get()
        {
            let _ = std::fs::remove_dir_all(&runs.dir);
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The 256 test digits of the MNIST subset.
fn test_images() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| mnist().join("t10k-images-idx3-ubyte.gz"))
}

/// Their labels.
fn test_labels_file() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| mnist().join("t10k-labels-idx1-ubyte.gz"))
}

fn test_labels() -> Vec<u8> {
    wgvae::data::idx::read_idx_labels(test_labels_file()).unwrap()
}

/// Writes `labels` as a raw IDX labels file.
fn write_idx(path: &Path, labels: &[u8]) {
    wgvae::data::idx::write_idx_labels(path, labels, false).unwrap();
}

/// Writes `labels` as a (n,) uint8 `.npy`.
fn write_npy(path: &Path, labels: &[u8]) {
    wgvae::data::npy::write_npy_u8(path, &[labels.len()], labels).unwrap();
}

/// Writes (n, 3) codes as a float32 `.npy`.
fn write_codes(path: &Path, z: &[f32]) {
    wgvae::data::npy::write_npy_f32(path, &[z.len() / 3, 3], z).unwrap();
}

/// μ and σ of `wgvae encode` of `run` with `args` (the inputs and labels), written to `out`.
fn encode(run: &Path, out: &Path, args: &[&str]) -> (Vec<f32>, Vec<f32>) {
    let mut a = vec!["encode", "--run", s(run), "--out", s(out), "--force"];
    a.extend_from_slice(args);
    ok(&a);
    (
        npy_f32(&out.join("mu.npy")).2,
        npy_f32(&out.join("sigma.npy")).2,
    )
}

/// The tiles of a grid of `rows` × `cols` digits, row-major.
fn tiles(img: &Png, rows: usize, cols: usize) -> Vec<Vec<u8>> {
    assert_eq!(
        (img.0, img.1),
        (extent(cols, H * SCALE), extent(rows, H * SCALE)),
        "grid size"
    );
    (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| tile(img, r, c, H, SCALE))
        .collect()
}

/// Largest difference of two tiles' pixels.
fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

/// Mean difference of two tiles' pixels.
fn mean_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x.abs_diff(*y)))
        .sum::<f64>()
        / a.len() as f64
}

/// Two decodes of the same code agree up to rounding (the tools decode in different batch
/// sizes).
fn same(a: &[u8], b: &[u8], what: &str) {
    assert!(
        max_diff(a, b) <= 1,
        "{what}: max pixel difference {}",
        max_diff(a, b)
    );
}

/// Decodes of the same code under different classes are visibly different.
fn differ(a: &[u8], b: &[u8], what: &str) {
    assert!(
        mean_diff(a, b) > 2.0,
        "{what}: mean pixel difference {}",
        mean_diff(a, b)
    );
}

/// The tiles of `wgvae decode` of `z` ((n, 3)) with `flags` (--class C or --labels FILE):
/// the expected images, in the order of the codes.
fn decoded(run: &Path, dir: &Path, name: &str, z: &[f32], flags: &[&str]) -> Vec<Vec<u8>> {
    let n = z.len() / 3;
    let lat = dir.join(format!("want-{name}.npy"));
    let out = dir.join(format!("want-{name}.png"));
    write_codes(&lat, z);
    let mut a = vec![
        "decode",
        "--run",
        s(run),
        "--latents",
        s(&lat),
        "--out",
        s(&out),
    ];
    a.extend_from_slice(flags);
    a.push("--force");
    let printed = ok(&a);
    assert!(
        printed.contains(&format!("({n} decoded codes)")),
        "{printed}"
    );
    let cols = wgvae::tool::decode::grid_columns(n);
    let mut t = tiles(&png(&out), n.div_ceil(cols), cols);
    t.truncate(n);
    t
}

/// Rows `rows` of `m` ((n, 3)).
fn rows_of(m: &[f32], rows: impl IntoIterator<Item = usize>) -> Vec<f32> {
    rows.into_iter()
        .flat_map(|r| m[r * 3..(r + 1) * 3].to_vec())
        .collect()
}

/// `encode --images --labels`: each input is encoded under its own label (a label changed in
/// either GPU batch changes that input's code alone), the same through IDX and `.npy` files and
/// through a subset of the inputs; without `--labels` or with other labels it refuses.
#[test]
fn encode_images_under_their_labels() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "encode");
    // The 512 training digits: two GPU batches of 256.
    let images = mnist().join("train-images-idx3-ubyte.gz");
    let labels_file = mnist().join("train-labels-idx1-ubyte.gz");
    let labels = wgvae::data::idx::read_idx_labels(&labels_file).unwrap();
    assert_eq!(labels.len(), 512);
    let enc = |name: &str, labels: &Path| {
        encode(
            &runs.cond,
            &d.join(name),
            &["--images", s(&images), "--labels", s(labels)],
        )
    };
    let (mu, sigma) = enc("idx", &labels_file);
    assert_eq!(mu.len(), 512 * 3);
    assert!(mu.iter().chain(&sigma).all(|v| v.is_finite()));
    let as_npy = d.join("labels.npy");
    write_npy(&as_npy, &labels);
    let (mu_npy, sigma_npy) = enc("npy", &as_npy);
    assert_eq!((&mu, &sigma), (&mu_npy, &sigma_npy));

    // Another class for input 5 (first batch) and input 300 (second batch).
    let mut other = labels.clone();
    for i in [5, 300] {
        other[i] = (other[i] + 1) % 10;
    }
    let other_file = d.join("other.idx");
    write_idx(&other_file, &other);
    let (mu2, _) = enc("other", &other_file);
    for i in 0..512 {
        let (a, b) = (&mu[i * 3..i * 3 + 3], &mu2[i * 3..i * 3 + 3]);
        if i == 5 || i == 300 {
            let dist: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            assert!(
                dist.sqrt() > 1e-3,
                "input {i}: its label changed, μ did not"
            );
        } else {
            assert_eq!(a, b, "input {i}: its label did not change, μ did");
        }
    }

    // The same two inputs alone (a .npy of images, a batch of 2) give the same codes.
    let idx = wgvae::data::idx::read_idx_images(&images).unwrap();
    let p = idx.rows * idx.cols;
    let pick: Vec<u8> = [5usize, 300]
        .iter()
        .flat_map(|&i| idx.pixels[i * p..(i + 1) * p].to_vec())
        .collect();
    let sub = d.join("two.npy");
    wgvae::data::npy::write_npy_u8(&sub, &[2, idx.rows, idx.cols], &pick).unwrap();
    let sub_labels = d.join("two-labels.npy");
    write_npy(&sub_labels, &[other[5], other[300]]);
    let (mu_sub, _) = encode(
        &runs.cond,
        &d.join("sub"),
        &["--images", s(&sub), "--labels", s(&sub_labels)],
    );
    let want = rows_of(&mu2, [5, 300]);
    for (k, (a, b)) in mu_sub.iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-5, "μ[{k}]: {a} alone, {b} in the set");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `decode --class C` decodes every code under C (the same images as `sample --class C` of
/// those codes); `--labels FILE` code i under label i: all 3 is `--class 3`, alternating 3 and 7
/// gives the `--class 3` and `--class 7` images in turn.
#[test]
fn decode_with_a_class_or_labels() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "decode");
    let z: Vec<f32> = (0..6 * 3)
        .map(|k| ((k * 7 % 11) as f32 - 5.0) / 3.0)
        .collect();
    let three = decoded(&runs.cond, &d, "three", &z, &["--class", "3"]);
    let seven = decoded(&runs.cond, &d, "seven", &z, &["--class", "7"]);
    for i in 0..6 {
        differ(&three[i], &seven[i], &format!("code {i} under 3 and 7"));
    }
    let all3 = d.join("all3.idx");
    write_idx(&all3, &[3; 6]);
    let by_labels = decoded(&runs.cond, &d, "all3", &z, &["--labels", s(&all3)]);
    assert_eq!(by_labels, three, "--labels all 3 vs --class 3");
    let mixed = d.join("mixed.npy");
    write_npy(&mixed, &[3, 7, 3, 7, 3, 7]);
    let alternating = decoded(&runs.cond, &d, "mixed", &z, &["--labels", s(&mixed)]);
    for i in 0..6 {
        let want = if i % 2 == 0 { &three[i] } else { &seven[i] };
        assert_eq!(
            &alternating[i],
            want,
            "code {i} under label {}",
            [3, 7][i % 2]
        );
    }

    // `sample --class 3` decodes its codes under class 3 too.
    let (sz, spng) = (d.join("sampled.npy"), d.join("sampled.png"));
    ok(&[
        "sample",
        "--run",
        s(&runs.cond),
        "--class",
        "3",
        "--n",
        "4",
        "--out-npy",
        s(&sz),
        "--out-png",
        s(&spng),
    ]);
    let (_, _, codes) = npy_f32(&sz);
    let sampled = tiles(&png(&spng), 1, 4);
    let redecoded = decoded(&runs.cond, &d, "redecoded", &codes, &["--class", "3"]);
    for i in 0..4 {
        same(&sampled[i], &redecoded[i], &format!("sampled code {i}"));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `reconstruct --labels`: rows of 16 inputs above their reconstructions, each the decode of
/// the input's μ (encoded under its label) under the same label, or under `--class`.
#[test]
fn reconstruct_under_labels_or_another_class() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "reconstruct");
    let labels = test_labels();
    let (mu, _) = encode(
        &runs.cond,
        &d.join("enc"),
        &[
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
        ],
    );
    let (start, n) = (3, 20);
    let mu_n = rows_of(&mu, start..start + n);
    let own_file = d.join("own.idx");
    write_idx(&own_file, &labels[start..start + n]);
    let want_own = decoded(&runs.cond, &d, "own", &mu_n, &["--labels", s(&own_file)]);
    let want_3 = decoded(&runs.cond, &d, "as3", &mu_n, &["--class", "3"]);
    let inputs = wgvae::data::idx::read_idx_images(test_images()).unwrap();

    let recon = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut a = vec![
            "reconstruct",
            "--run",
            s(&runs.cond),
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
            "--start",
            "3",
            "--n",
            "20",
            "--out",
            s(&out),
        ];
        a.extend_from_slice(extra);
        let printed = ok(&a);
        assert!(
            printed.contains("(20 inputs and reconstructions)"),
            "{printed}"
        );
        // 20 inputs: rows of 16 and 4, each above its reconstructions.
        tiles(&png(&out), 4, 16)
    };
    let grid = recon("own.png", &[]);
    let grid3 = recon("as3.png", &["--class", "3"]);
    for i in 0..n {
        let (r, c) = (2 * (i / 16), i % 16);
        let input: Vec<u8> = inputs.pixels[(start + i) * H * H..(start + i + 1) * H * H].to_vec();
        assert_eq!(grid[r * 16 + c], input, "input {i}");
        same(
            &grid[(r + 1) * 16 + c],
            &want_own[i],
            &format!("reconstruction {i}"),
        );
        same(
            &grid3[(r + 1) * 16 + c],
            &want_3[i],
            &format!("reconstruction {i} as 3"),
        );
        if labels[start + i] != 3 {
            differ(
                &grid[(r + 1) * 16 + c],
                &grid3[(r + 1) * 16 + c],
                &format!("reconstruction {i} (label {}) and as 3", labels[start + i]),
            );
        }
    }
    // Past the 4th input of the second row, the picture is empty.
    assert!(grid[3 * 16 + 4].iter().all(|&v| v == grid[3 * 16 + 4][0]));
    let _ = std::fs::remove_dir_all(&d);
}

/// `interpolate`: I and J encoded under their labels, the path decoded under I's label (not
/// J's), or under `--class`.
#[test]
fn interpolate_under_the_first_label_or_a_class() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "interpolate");
    let labels = test_labels();
    let (mu, _) = encode(
        &runs.cond,
        &d.join("enc"),
        &[
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
        ],
    );
    // Two inputs of different labels, neither 7, nor (for I) the label of input 0.
    let from = (1..256)
        .find(|&i| labels[i] != 7 && labels[i] != labels[0])
        .unwrap();
    let to = (0..256)
        .find(|&i| labels[i] != 7 && labels[i] != labels[from])
        .unwrap();
    let steps = 5;
    let (a, b) = (&mu[from * 3..from * 3 + 3], &mu[to * 3..to * 3 + 3]);
    let path: Vec<f32> = (0..steps)
        .flat_map(|k| wgvae::latent::lerp(a, b, k as f32 / (steps - 1) as f32))
        .collect();
    let class = |l: u8| l.to_string();
    let (lf, lt) = (class(labels[from]), class(labels[to]));
    let want_from = decoded(&runs.cond, &d, "from", &path, &["--class", &lf]);
    let want_to = decoded(&runs.cond, &d, "to", &path, &["--class", &lt]);
    let want_7 = decoded(&runs.cond, &d, "seven", &path, &["--class", "7"]);
    let strip = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let (f, t) = (from.to_string(), to.to_string());
        let mut args = vec![
            "interpolate",
            "--run",
            s(&runs.cond),
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
            "--from",
            &f,
            "--to",
            &t,
            "--steps",
            "5",
            "--linear",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        ok(&args);
        tiles(&png(&out), 1, steps + 2)
    };
    let own = strip("own.png", &[]);
    let seven = strip("seven.png", &["--class", "7"]);
    for k in 0..steps {
        same(&own[k + 1], &want_from[k], &format!("step {k}"));
        same(&seven[k + 1], &want_7[k], &format!("step {k} as 7"));
        differ(&own[k + 1], &seven[k + 1], &format!("step {k}: own and 7"));
    }
    // The end of the path is J's code under I's label, not J's own reconstruction.
    differ(
        &own[steps],
        &want_to[steps - 1],
        "the last step under J's label",
    );
    // The codes of the path (what the picture decodes) are those of I and J each encoded
    // under its own label: through the library, which returns them.
    let args = wgvae::tool::interpolate::InterpolateArgs {
        input: wgvae::tool::RunInput {
            run: runs.cond.clone(),
            images: Some(test_images().to_path_buf()),
            sprites: None,
            sprites_seed: 1,
        },
        labels: Some(test_labels_file().to_path_buf()),
        class: None,
        from,
        to,
        steps,
        linear: true,
        out: d.join("library.png"),
        force: false,
    };
    let z = wgvae::tool::interpolate::run(&args).unwrap();
    assert_eq!(z.len(), path.len());
    for (k, (got, want)) in z.iter().zip(&path).enumerate() {
        assert!((got - want).abs() < 1e-5, "path code {k}: {got} vs {want}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `traverse`: the rows by decreasing KL of the labelled posteriors, each code decoded under
/// the traversed input's label, or under `--class`.
#[test]
fn traverse_under_the_input_label_or_a_class() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "traverse");
    let labels = test_labels();
    let (mu, sigma) = encode(
        &runs.cond,
        &d.join("enc"),
        &[
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
        ],
    );
    // An input labelled neither 7 nor as input 0.
    let index = (1..256)
        .find(|&i| labels[i] != 7 && labels[i] != labels[0])
        .unwrap();
    let order = wgvae::viz::dims_by_kl(&mu, &sigma, 3);
    let steps = 5;
    let mut codes = Vec::new();
    for &(k, _) in &order {
        for st in 0..steps {
            let mut z = mu[index * 3..index * 3 + 3].to_vec();
            z[k] = -3.0 + 6.0 * st as f32 / (steps - 1) as f32;
            codes.extend(z);
        }
    }
    let own_class = labels[index].to_string();
    let want_own = decoded(&runs.cond, &d, "own", &codes, &["--class", &own_class]);
    let want_7 = decoded(&runs.cond, &d, "seven", &codes, &["--class", "7"]);
    let grid = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let i = index.to_string();
        let mut args = vec![
            "traverse",
            "--run",
            s(&runs.cond),
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
            "--index",
            &i,
            "--steps",
            "5",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let printed = ok(&args);
        // The order and the KL of the labelled posteriors.
        for (row, (k, kl)) in order.iter().enumerate() {
            let line = format!("row {row}: z{k} (KL {kl:.3} nats)");
            assert!(printed.contains(&line), "{line} not in {printed}");
        }
        tiles(&png(&out), 3, steps)
    };
    let own = grid("own.png", &[]);
    let seven = grid("seven.png", &["--class", "7"]);
    for t in 0..3 * steps {
        same(&own[t], &want_own[t], &format!("tile {t}"));
        same(&seven[t], &want_7[t], &format!("tile {t} as 7"));
        differ(&own[t], &seven[t], &format!("tile {t}: own and 7"));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `edit` of a conditional model: inputs encoded under their labels (also with groups by
/// index), each row's edits decoded under its input's label.
#[test]
fn edit_encodes_and_decodes_under_labels() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "edit");
    let labels = test_labels();
    let (mu, _) = encode(
        &runs.cond,
        &d.join("enc"),
        &[
            "--images",
            s(test_images()),
            "--labels",
            s(test_labels_file()),
        ],
    );
    let (out, codes) = (d.join("edit.png"), d.join("edit.npy"));
    let printed = ok(&[
        "edit",
        "--run",
        s(&runs.cond),
        "--images",
        s(test_images()),
        "--labels",
        s(test_labels_file()),
        "--group-a",
        "0-9",
        "--group-b",
        "10-19",
        "--inputs",
        "0,1,2",
        "--strengths=-1,0,1",
        "--npy",
        s(&codes),
        "--out",
        s(&out),
    ]);
    assert!(
        printed.contains("edited 3 inputs at 3 strengths"),
        "{printed}"
    );
    let (shape, _, z) = npy_f32(&codes);
    assert_eq!(shape, "(9, 3)");
    // v = mean μ(0..10) − mean μ(10..20) of the labelled posteriors; row i: μᵢ + s·v.
    let mean = |r: std::ops::Range<usize>| -> Vec<f32> {
        (0..3)
            .map(|k| r.clone().map(|i| mu[i * 3 + k]).sum::<f32>() / r.len() as f32)
            .collect()
    };
    let (ma, mb) = (mean(0..10), mean(10..20));
    for i in 0..3 {
        for (j, st) in [-1.0f32, 0.0, 1.0].into_iter().enumerate() {
            for k in 0..3 {
                let want = mu[i * 3 + k] + st * (ma[k] - mb[k]);
                let got = z[(i * 3 + j) * 3 + k];
                assert!(
                    (got - want).abs() < 1e-4,
                    "input {i}, s {st}, z{k}: {got} vs {want}"
                );
            }
        }
    }
    let row_labels = d.join("rows.idx");
    let per_code: Vec<u8> = (0..3).flat_map(|i| [labels[i]; 3]).collect();
    write_idx(&row_labels, &per_code);
    let want = decoded(&runs.cond, &d, "want", &z, &["--labels", s(&row_labels)]);
    let got = tiles(&png(&out), 3, 3);
    for t in 0..9 {
        same(&got[t], &want[t], &format!("edit {t}"));
    }
    // Groups by label work as well.
    let printed = ok(&[
        "edit",
        "--run",
        s(&runs.cond),
        "--images",
        s(test_images()),
        "--labels",
        s(test_labels_file()),
        "--from",
        "1",
        "--to",
        "7",
        "--out",
        s(&d.join("by-label.png")),
    ]);
    assert!(printed.contains("group A (label 7)"), "{printed}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Built-in sprites carry their labels (the shape): every tool uses them without `--labels`,
/// and gives the same result as with those labels in a file, another result with others.
#[test]
fn sprites_use_the_labels_they_carry() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "sprites");
    let split = wgvae::data::sprites::generate(&wgvae::data::sprites::SpritesConfig {
        n_train: 0,
        n_test: 12,
        seed: 1,
    })
    .unwrap();
    let carried = split.test.labels.unwrap();
    assert!(carried.iter().any(|&l| l != carried[0]));
    let (same_file, other_file) = (d.join("same.npy"), d.join("other.npy"));
    write_npy(&same_file, &carried);
    let shifted: Vec<u8> = carried.iter().map(|&l| (l + 1) % 3).collect();
    write_npy(&other_file, &shifted);
    let run = s(&runs.sprites);
    let (mu, _) = encode(&runs.sprites, &d.join("e0"), &["--sprites", "12"]);
    let (mu_same, _) = encode(
        &runs.sprites,
        &d.join("e1"),
        &["--sprites", "12", "--labels", s(&same_file)],
    );
    let (mu_other, _) = encode(
        &runs.sprites,
        &d.join("e2"),
        &["--sprites", "12", "--labels", s(&other_file)],
    );
    assert_eq!(mu, mu_same);
    assert!(mu.iter().zip(&mu_other).any(|(a, b)| (a - b).abs() > 1e-3));
    let tools: [&[&str]; 4] = [
        &["reconstruct", "--n", "12"],
        &["interpolate", "--from", "0", "--to", "1"],
        &["traverse", "--index", "2"],
        &["edit", "--group-a", "0-3", "--group-b", "4-7"],
    ];
    for tool in tools {
        let out = |name: &str| d.join(format!("{}-{name}.png", tool[0]));
        let run_it = |name: &str, extra: &[&str]| {
            let mut a = tool.to_vec();
            let path = out(name);
            a.extend(["--run", run, "--sprites", "12", "--out", s(&path)]);
            a.extend_from_slice(extra);
            ok(&a);
            std::fs::read(out(name)).unwrap()
        };
        let carried_png = run_it("carried", &[]);
        assert_eq!(
            carried_png,
            run_it("same", &["--labels", s(&same_file)]),
            "{}",
            tool[0]
        );
        assert_ne!(
            carried_png,
            run_it("other", &["--labels", s(&other_file)]),
            "{}",
            tool[0]
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A conditional model: no labels, a wrong count, a class or label out of range — each a
/// clear error naming the flag and the value, and nothing written.
#[test]
fn conditional_errors_name_the_flag() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "errors");
    let run = s(&runs.cond);
    let img = s(test_images());
    let out = d.join("out.png");
    let o = s(&out);
    let enc = d.join("enc");
    let tools: [&[&str]; 5] = [
        &["reconstruct", "--run", run, "--images", img, "--out", o],
        &["traverse", "--run", run, "--images", img, "--out", o],
        &[
            "interpolate",
            "--run",
            run,
            "--images",
            img,
            "--from",
            "0",
            "--to",
            "1",
            "--out",
            o,
        ],
        &[
            "edit",
            "--run",
            run,
            "--images",
            img,
            "--group-a",
            "0",
            "--group-b",
            "1",
            "--out",
            o,
        ],
        &["encode", "--run", run, "--images", img, "--out", s(&enc)],
    ];
    let train_labels = mnist().join("train-labels-idx1-ubyte.gz");
    let mut bad = test_labels();
    bad[4] = 12;
    let bad_file = d.join("bad.npy");
    write_npy(&bad_file, &bad);
    for tool in tools {
        fails(tool, &["conditional model (10 classes)", "--labels FILE"]);
        fails(
            &[tool, &["--labels", s(&train_labels)]].concat(),
            &["--labels", "512 labels", "256 images"],
        );
        fails(
            &[tool, &["--labels", s(&bad_file)]].concat(),
            &["--labels", "bad.npy", "input 4 has label 12", "0 to 9"],
        );
        if tool[0] != "edit" && tool[0] != "encode" {
            let labelled = [tool, &["--labels", s(test_labels_file())]].concat();
            for c in ["10", "-1"] {
                fails(
                    &[&labelled[..], &["--class", c]].concat(),
                    &[&format!("--class {c}"), "0 to 9"],
                );
            }
        }
    }

    let z = d.join("z.npy");
    write_codes(&z, &[0.5; 12]);
    let decode = ["decode", "--run", run, "--latents", s(&z), "--out", o];
    fails(
        &decode,
        &[
            "conditional model (10 classes)",
            "--class C",
            "--labels FILE",
        ],
    );
    let five = d.join("five.idx");
    write_idx(&five, &[1; 5]);
    fails(
        &[&decode[..], &["--labels", s(&five)]].concat(),
        &["--labels", "five.idx", "5 labels", "4 codes"],
    );
    let wide = d.join("wide.npy");
    write_npy(&wide, &[1, 2, 3, 10]);
    fails(
        &[&decode[..], &["--labels", s(&wide)]].concat(),
        &["--labels", "code 3 has label 10", "0 to 9"],
    );
    fails(
        &[&decode[..], &["--class", "10"]].concat(),
        &["--class 10", "0 to 9"],
    );
    fails(
        &[&decode[..], &["--class", "1", "--labels", s(&five)]].concat(),
        &["--class", "--labels"],
    );
    assert!(!out.exists(), "a failed tool wrote {}", out.display());
    assert!(!enc.join("mu.npy").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// An unconditional model refuses `--labels` (except for `edit`'s groups by label) and
/// `--class`, naming the flag.
#[test]
fn unconditional_model_refuses_the_flags() {
    let _finish = Finish;
    let runs = runs();
    let d = common::tool::scratch("toolcond", "plain");
    let run = s(&runs.plain);
    let img = s(test_images());
    let lab = s(test_labels_file());
    let out = d.join("out.png");
    let o = s(&out);
    let tools: [&[&str]; 3] = [
        &["reconstruct", "--run", run, "--images", img, "--out", o],
        &["traverse", "--run", run, "--images", img, "--out", o],
        &[
            "interpolate",
            "--run",
            run,
            "--images",
            img,
            "--from",
            "0",
            "--to",
            "1",
            "--out",
            o,
        ],
    ];
    let not_cond = "is not a conditional model";
    for tool in tools {
        fails(
            &[tool, &["--labels", lab]].concat(),
            &["--labels", not_cond],
        );
        fails(&[tool, &["--class", "3"]].concat(), &["--class", not_cond]);
    }
    let enc = d.join("enc");
    fails(
        &[
            "encode",
            "--run",
            run,
            "--images",
            img,
            "--labels",
            lab,
            "--out",
            s(&enc),
        ],
        &["--labels", not_cond],
    );
    fails(
        &[
            "edit",
            "--run",
            run,
            "--images",
            img,
            "--labels",
            lab,
            "--group-a",
            "0",
            "--group-b",
            "1",
            "--out",
            o,
        ],
        &["--labels", not_cond, "--group-a"],
    );
    let z = d.join("z.npy");
    write_codes(&z, &[0.5; 6]);
    let decode = ["decode", "--run", run, "--latents", s(&z), "--out", o];
    fails(
        &[&decode[..], &["--class", "3"]].concat(),
        &["--class", not_cond],
    );
    fails(
        &[&decode[..], &["--labels", lab]].concat(),
        &["--labels", not_cond],
    );
    assert!(!out.exists() && !enc.join("mu.npy").exists());
    // Without the flags the same tools work, and edit still groups by --labels.
    ok(&[&decode[..], &["--force"]].concat());
    ok(&[
        "edit", "--run", run, "--images", img, "--labels", lab, "--from", "1", "--to", "7",
        "--out", o, "--force",
    ]);
    let _ = std::fs::remove_dir_all(&d);
}
