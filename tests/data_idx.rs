//! IDX loading: the committed MNIST subset, round trips, and one error per kind of corruption.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use wgvae::data::idx::{self, write_idx_images, write_idx_labels};
use wgvae::data::{DataError, Dataset, load_idx_dir, load_idx_images_file};

/// Sum of all pixel bytes of the 512 training images in tests/data/mnist-512.
const TRAIN_PIXEL_SUM: u64 = 13_128_713;
/// Sum of all pixel bytes of the 256 test images in tests/data/mnist-512.
const TEST_PIXEL_SUM: u64 = 7_281_298;
/// Sums of the labels of the same subsets.
const TRAIN_LABEL_SUM: u64 = 2_296;
const TEST_LABEL_SUM: u64 = 1_140;

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-512")
}

/// A fresh, empty directory under the system temp dir, unique per process and call.
fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wgvae-test-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pixel_sum(d: &Dataset) -> u64 {
    d.pixels.iter().map(|&v| u64::from(v)).sum()
}

fn write_raw(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX image file's bytes: header `magic, n, rows, cols` then `payload` bytes `0, 1, 2, ...`.
fn images_bytes(magic: u32, n: u32, rows: u32, cols: u32, payload: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [magic, n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..payload).map(|i| i as u8));
    b
}

/// Asserts that `err`'s message contains the file name and every one of `needles`.
fn assert_mentions(err: &DataError, path: &Path, needles: &[&str]) {
    let msg = err.to_string();
    let file = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*file), "`{msg}` does not name {file}");
    assert!(
        msg.contains(&*path.to_string_lossy()),
        "`{msg}` lacks the full path"
    );
    for n in needles {
        assert!(msg.contains(n), "`{msg}` does not contain `{n}`");
    }
}

#[test]
fn loads_committed_mnist_subset() {
    let split = load_idx_dir(&mnist_dir()).unwrap();
    for (d, n, sum, label_sum) in [
        (&split.train, 512, TRAIN_PIXEL_SUM, TRAIN_LABEL_SUM),
        (&split.test, 256, TEST_PIXEL_SUM, TEST_LABEL_SUM),
    ] {
        assert_eq!(d.name, "mnist-512");
        assert_eq!((d.n, d.channels, d.height, d.width), (n, 1, 28, 28));
        assert_eq!(d.pixels.len(), n * 784);
        assert_eq!(d.image_len(), 784);
        d.check().unwrap();
        let labels = d.labels.as_ref().unwrap();
        assert_eq!(labels.len(), n);
        assert!(labels.iter().all(|&l| l <= 9));
        // Classes are interleaved 0, 1, ..., 9, 0, 1, ... in the source set.
        assert_eq!(&labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(pixel_sum(d), sum);
        assert_eq!(labels.iter().map(|&l| u64::from(l)).sum::<u64>(), label_sum);
        assert!(d.factors.is_none());
    }
    let img = split.train.to_f32(0);
    assert_eq!(img.len(), 784);
    assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn plain_and_gzip_roundtrip() {
    let split = load_idx_dir(&mnist_dir()).unwrap();
    let d = split.test.subset(&[5, 0, 255]);
    let dir = scratch("roundtrip");
    for gz in [false, true] {
        let images = dir.join(format!("images-{gz}"));
        let labels = dir.join(format!("labels-{gz}"));
        write_idx_images(&images, d.n, 28, 28, &d.pixels, gz).unwrap();
        write_idx_labels(&labels, d.labels.as_ref().unwrap(), gz).unwrap();
        let raw = std::fs::read(&images).unwrap();
        assert_eq!(raw.starts_with(&[0x1f, 0x8b]), gz);
        if !gz {
            assert_eq!(raw.len(), 16 + 3 * 784);
            assert_eq!(&raw[..4], &[0, 0, 8, 3]);
        }
        let back = load_idx_images_file(&images).unwrap();
        assert_eq!(back.name, format!("images-{gz}"));
        assert_eq!((back.n, back.height, back.width), (3, 28, 28));
        assert_eq!(back.pixels, d.pixels);
        assert_eq!(
            &idx::read_idx_labels(&labels).unwrap(),
            d.labels.as_ref().unwrap()
        );
    }
    // A whole directory written uncompressed loads like the gzip one.
    let plain = scratch("plain-dir");
    for (ds, img, lab) in [
        (
            &split.train,
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
        ),
        (
            &split.test,
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ),
    ] {
        write_idx_images(&plain.join(img), ds.n, 28, 28, &ds.pixels, false).unwrap();
        write_idx_labels(&plain.join(lab), ds.labels.as_ref().unwrap(), false).unwrap();
    }
    let again = load_idx_dir(&plain).unwrap();
    assert_eq!(again.train.pixels, split.train.pixels);
    assert_eq!(again.test.labels, split.test.labels);
    assert!(!plain.join("train-images-idx3-ubyte.tmp").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&plain);
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = scratch("gzip-by-magic");
    let bytes = images_bytes(0x803, 2, 2, 3, 12);
    let gz_no_ext = dir.join("images");
    let plain_gz_ext = dir.join("images.gz");
    write_raw(&gz_no_ext, &gzip(&bytes));
    write_raw(&plain_gz_ext, &bytes);
    let a = load_idx_images_file(&gz_no_ext).unwrap();
    let b = load_idx_images_file(&plain_gz_ext).unwrap();
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(b.name, "images");
    assert_eq!((a.n, a.channels, a.height, a.width), (2, 1, 2, 3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_files_are_reported_with_file_and_field() {
    let dir = scratch("corrupt");
    let case = |name: &str, bytes: &[u8]| -> (PathBuf, DataError) {
        let path = dir.join(name);
        write_raw(&path, bytes);
        let err = load_idx_images_file(&path).unwrap_err();
        (path, err)
    };

    // A label file where images are expected.
    let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 20];
    labels.extend([0u8; 20]);
    let (p, e) = case("wrong-magic", &labels);
    assert!(matches!(e, DataError::Magic { found: 0x801, .. }), "{e}");
    assert_mentions(
        &e,
        &p,
        &["`magic`", "0x00000801 (IDX labels)", "expected 0x00000803"],
    );

    // Not an IDX file at all (PNG signature).
    let (p, e) = case("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    assert_mentions(&e, &p, &["`magic`", "0x89504e47", "not an IDX file"]);

    let (p, e) = case("truncated", &images_bytes(0x803, 6000, 28, 28, 1000));
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert_mentions(
        &e,
        &p,
        &["truncated: header says 6000 images of 28x28 (4704000 bytes) but only 1000 bytes follow"],
    );

    let (p, e) = case("trailing", &images_bytes(0x803, 2, 2, 2, 8 + 12));
    assert!(
        matches!(
            e,
            DataError::Trailing {
                extra: Some(12),
                ..
            }
        ),
        "{e}"
    );
    assert_mentions(&e, &p, &["12 trailing bytes after the last image"]);

    for (field, dims) in [
        ("n", [0, 28, 28]),
        ("rows", [5, 0, 28]),
        ("cols", [5, 28, 0]),
    ] {
        let (p, e) = case(
            &format!("zero-{field}"),
            &images_bytes(0x803, dims[0], dims[1], dims[2], 0),
        );
        assert!(matches!(e, DataError::ZeroDimension { .. }), "{e}");
        assert_mentions(&e, &p, &[&format!("header field `{field}` is 0")]);
    }

    for len in [0, 3, 4, 10, 15] {
        let mut b = images_bytes(0x803, 1, 1, 1, 1);
        b.truncate(len);
        let (p, e) = case(&format!("short-header-{len}"), &b);
        assert!(matches!(e, DataError::TruncatedHeader { .. }), "{e}");
        assert_mentions(
            &e,
            &p,
            &[&format!("truncated header: {len} bytes"), "needs 16 bytes"],
        );
    }

    // Declared sizes far beyond the file are compared, never allocated.
    let (p, e) = case(
        "huge",
        &images_bytes(0x803, u32::MAX, u32::MAX, u32::MAX, 3),
    );
    assert_mentions(&e, &p, &["4294967295 images of 4294967295x4294967295"]);

    // A gzip stream with a damaged body, one cut short, and one that is only the magic bytes.
    let good = gzip(&images_bytes(0x803, 4, 8, 8, 256));
    let mut flipped = good.clone();
    for b in &mut flipped[12..20] {
        *b ^= 0x5a;
    }
    let cut = &good[..good.len() / 2];
    for (name, bytes) in [
        ("flipped.gz", &flipped[..]),
        ("cut.gz", cut),
        ("magic-only.gz", &[0x1f, 0x8b][..]),
    ] {
        let (p, e) = case(name, bytes);
        assert!(matches!(e, DataError::Gzip { .. }), "{name}: {e}");
        assert_mentions(&e, &p, &["not a valid gzip stream: "]);
    }

    // The same errors from gzip content: truncated, and trailing (whose count is not known
    // because nothing past the first extra byte is inflated).
    let (p, e) = case(
        "truncated.gz",
        &gzip(&images_bytes(0x803, 6000, 28, 28, 1000)),
    );
    assert!(matches!(e, DataError::Truncated { have: 1000, .. }), "{e}");
    assert_mentions(
        &e,
        &p,
        &["header says 6000 images of 28x28 (4704000 bytes)"],
    );
    let (p, e) = case("trailing.gz", &gzip(&images_bytes(0x803, 2, 2, 2, 8 + 12)));
    assert!(matches!(e, DataError::Trailing { extra: None, .. }), "{e}");
    assert_mentions(
        &e,
        &p,
        &[
            "trailing bytes (the decompressed content goes on past the size the header declares) after the last image",
        ],
    );
    // A gzip header declaring more than the loader accepts is refused before any payload is
    // inflated.
    let (p, e) = case(
        "huge.gz",
        &gzip(&images_bytes(0x803, u32::MAX, u32::MAX, 1, 3)),
    );
    assert!(matches!(e, DataError::PayloadTooLarge { .. }), "{e}");
    assert_mentions(
        &e,
        &p,
        &[
            "header says 4294967295 images of 4294967295x1 (18446744065119617025 bytes)",
            "more than the loader's limit (2147483648 bytes)",
        ],
    );

    // Labels: zero count and trailing bytes.
    let lab = dir.join("labels-zero");
    write_raw(&lab, &[0, 0, 8, 1, 0, 0, 0, 0]);
    let e = idx::read_idx_labels(&lab).unwrap_err();
    assert_mentions(&e, &lab, &["header field `n` is 0"]);
    let lab = dir.join("labels-trailing");
    write_raw(&lab, &[0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]);
    let e = idx::read_idx_labels(&lab).unwrap_err();
    assert_mentions(&e, &lab, &["1 trailing bytes after the last label"]);
    let lab = dir.join("labels-trailing.gz");
    write_raw(&lab, &gzip(&[0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]));
    let e = idx::read_idx_labels(&lab).unwrap_err();
    assert!(matches!(e, DataError::Trailing { extra: None, .. }), "{e}");
    let lab = dir.join("labels-short");
    write_raw(&lab, &[0, 0, 8, 1, 0, 0]);
    let e = idx::read_idx_labels(&lab).unwrap_err();
    assert_mentions(&e, &lab, &["truncated header: 6 bytes", "needs 8 bytes"]);

    let _ = std::fs::remove_dir_all(&dir);
}

/// Concatenated gzip members (one stream, as `gzip -c a b > c` writes): the first holds `header`
/// then 16 MiB of zeros, each further one 16 MiB of zeros. Cheap to build, `members` × 16 MiB to
/// inflate.
fn gzip_bomb(header: &[u8], members: usize) -> Vec<u8> {
    let zeros = vec![0u8; 16 << 20];
    let mut first = header.to_vec();
    first.extend_from_slice(&zeros);
    let mut out = gzip(&first);
    let member = gzip(&zeros);
    for _ in 1..members {
        out.extend_from_slice(&member);
    }
    out
}

#[test]
fn gzip_bomb_is_refused_after_the_declared_size() {
    let dir = scratch("bomb");
    // 1 GiB of zeros after a header declaring one 1x1 image, in about 1 MB of gzip.
    let path = dir.join("bomb-images.gz");
    let bomb = gzip_bomb(&images_bytes(0x803, 1, 1, 1, 0), 64);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    write_raw(&path, &bomb);
    let t = std::time::Instant::now();
    let e = load_idx_images_file(&path).unwrap_err();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        matches!(
            e,
            DataError::Trailing {
                extra: None,
                item: "image",
                ..
            }
        ),
        "{e}"
    );
    assert_mentions(&e, &path, &["trailing bytes", "after the last image"]);
    // Inflating the gibibyte takes seconds; stopping after 2 bytes of payload takes milliseconds.
    eprintln!("gzip bomb refused in {:.1} ms", secs * 1e3);
    assert!(
        secs < 0.5,
        "took {secs} s: the stream was inflated past the declared size"
    );
    // Labels likewise.
    let path = dir.join("bomb-labels.gz");
    write_raw(&path, &gzip_bomb(&[0, 0, 8, 1, 0, 0, 0, 1], 64));
    let e = idx::read_idx_labels(&path).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Trailing {
                extra: None,
                item: "label",
                ..
            }
        ),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn directory_errors() {
    // Missing directory.
    let missing = std::env::temp_dir().join(format!("wgvae-test-missing-{}", std::process::id()));
    let e = load_idx_dir(&missing).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");

    // A file where the directory should be.
    let dir = scratch("dir-errors");
    let file = dir.join("not-a-dir");
    write_raw(&file, b"x");
    let e = load_idx_dir(&file).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");

    // Empty directory: the training images are missing.
    let e = load_idx_dir(&dir).unwrap_err();
    assert!(matches!(e, DataError::MissingFile { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("{}: no train-images-idx3-ubyte[.gz] file", dir.display())
    );

    // Train images present, test images missing.
    let px = vec![7u8; 3 * 4];
    write_idx_images(&dir.join("train-images-idx3-ubyte.gz"), 3, 2, 2, &px, true).unwrap();
    let e = load_idx_dir(&dir).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("no t10k-images-idx3-ubyte[.gz] file"),
        "{e}"
    );

    // Labels with the wrong count: both files named.
    write_idx_images(&dir.join("t10k-images-idx3-ubyte"), 3, 2, 2, &px, false).unwrap();
    let split = load_idx_dir(&dir).unwrap();
    assert_eq!(split.train.labels, None);
    assert_eq!(split.train.name, dir.file_name().unwrap().to_string_lossy());
    write_idx_labels(&dir.join("t10k-labels-idx1-ubyte"), &[1, 2], false).unwrap();
    let e = load_idx_dir(&dir).unwrap_err();
    assert!(matches!(e, DataError::LabelCount { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte: 3 images"), "{msg}");
    assert!(msg.contains("t10k-labels-idx1-ubyte: 2 labels"), "{msg}");

    // A corrupt label file is reported, not ignored.
    write_raw(
        &dir.join("t10k-labels-idx1-ubyte"),
        &[0, 0, 8, 3, 0, 0, 0, 3],
    );
    let e = load_idx_dir(&dir).unwrap_err();
    assert!(matches!(e, DataError::Magic { .. }), "{e}");
    assert!(e.to_string().contains("t10k-labels-idx1-ubyte"), "{e}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writers_reject_bad_arguments() {
    let dir = scratch("writers");
    let p = dir.join("bad");
    let e = write_idx_images(&p, 2, 28, 28, &[0; 100], false).unwrap_err();
    assert!(matches!(e, DataError::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("1568 bytes"), "{e}");
    let e = write_idx_images(&p, 0, 28, 28, &[], false).unwrap_err();
    assert!(e.to_string().contains("`n` is 0"), "{e}");
    let e = write_idx_labels(&p, &[], true).unwrap_err();
    assert!(e.to_string().contains("`n` is 0"), "{e}");
    assert!(!p.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regenerates tests/data/mnist-512 from the shared 7,996-digit set (`../shared/data/mnist-8k`
/// relative to the crate root): the first 512 training and first 256 test digits with their
/// labels, as gzip IDX files. Run with `cargo test --release --test data_idx -- --ignored`.
#[test]
#[ignore = "regenerates committed test data from ../shared/data/mnist-8k"]
fn regenerate_mnist_512() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = load_idx_dir(&root.join("../shared/data/mnist-8k")).unwrap();
    let out = mnist_dir();
    std::fs::create_dir_all(&out).unwrap();
    for (ds, keep, img, lab) in [
        (
            &source.train,
            512,
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
        ),
        (
            &source.test,
            256,
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
    ] {
        let indices: Vec<usize> = (0..keep).collect();
        let sub = ds.subset(&indices);
        write_idx_images(
            &out.join(img),
            sub.n,
            sub.height,
            sub.width,
            &sub.pixels,
            true,
        )
        .unwrap();
        write_idx_labels(&out.join(lab), sub.labels.as_ref().unwrap(), true).unwrap();
        println!("{img}: pixel sum {}", pixel_sum(&sub));
    }
}
