//! `.npy` loading: NumPy-written fixtures (tests/data/npy), channel layouts, the data directory
//! layout and its dispatch next to IDX, and one error per kind of bad file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use wgvae::data::npy::{
    self, MAGIC, parse_npy_header, read_npy_images, read_npy_labels, write_npy_f32, write_npy_i64,
    write_npy_u8,
};
use wgvae::data::{
    DataError, NPY_TEST_IMAGES, NPY_TEST_LABELS, NPY_TRAIN_IMAGES, NPY_TRAIN_LABELS, load_dir,
    load_idx_dir, load_images_file, load_npy_dir,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/npy")
        .join(name)
}

/// A fresh, empty directory under the system temp dir, unique per process and call.
fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wgvae-test-npy-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A version 1.0 file with the header dict `dict` (unpadded) followed by `payload`.
fn npy_bytes(dict: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&[1, 0]);
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.extend_from_slice(payload);
    b
}

fn dict(descr: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n")
}

/// Asserts that `err`'s message names the file and holds every one of `needles`.
fn assert_mentions(err: &DataError, path: &Path, needles: &[&str]) {
    let msg = err.to_string();
    let file = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(file.as_ref()), "no file name in: {msg}");
    for n in needles {
        assert!(msg.contains(n), "`{n}` missing from: {msg}");
    }
}

fn npy_field(err: &DataError) -> &'static str {
    match err {
        DataError::Npy { field, .. } => field,
        other => panic!("not an Npy error: {other}"),
    }
}

#[test]
fn numpy_fixtures_read_as_chw() {
    // (N, H, W, C) = (2, 2, 3, 3) bytes, element (i, y, x, c) = ((i*2 + y)*3 + x)*3 + c.
    let img = read_npy_images(&fixture("rgb-nhwc-u1.npy")).unwrap();
    assert_eq!((img.n, img.channels, img.height, img.width), (2, 3, 2, 3));
    let mut want = Vec::new();
    for i in 0..2 {
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..3 {
                    want.push((((i * 2 + y) * 3 + x) * 3 + c) as u8);
                }
            }
        }
    }
    assert_eq!(img.pixels, want);

    // (N, H, W) float32 k/11: one channel, bytes round(v*255).
    let img = read_npy_images(&fixture("gray-f4.npy")).unwrap();
    assert_eq!((img.n, img.channels, img.height, img.width), (3, 1, 2, 2));
    let want: Vec<u8> = (0..12)
        .map(|k| (f64::from(k as f32 / 11.0) * 255.0).round() as u8)
        .collect();
    assert_eq!(img.pixels, want);
    assert_eq!(img.pixels[11], 255);

    // (N, C, H, W) big-endian float64 k/11: kept as it is.
    let img = read_npy_images(&fixture("rgb-nchw-f8-be.npy")).unwrap();
    assert_eq!((img.n, img.channels, img.height, img.width), (1, 3, 2, 2));
    let want: Vec<u8> = (0..12)
        .map(|k| (k as f64 / 11.0 * 255.0).round() as u8)
        .collect();
    assert_eq!(img.pixels, want);

    // Format version 2.0 (a u32 header length).
    let img = read_npy_images(&fixture("v2-u1.npy")).unwrap();
    assert_eq!((img.n, img.channels, img.height, img.width), (2, 1, 2, 2));
    assert_eq!(img.pixels, (0..8).collect::<Vec<u8>>());

    assert_eq!(
        read_npy_labels(&fixture("labels-i8.npy")).unwrap(),
        vec![3, 0, 255]
    );

    // A Fortran-ordered image array is refused, naming the field.
    let path = fixture("fortran-u1.npy");
    let e = read_npy_images(&path).unwrap_err();
    assert_eq!(npy_field(&e), "fortran_order");
    assert_mentions(&e, &path, &["fortran_order", "ascontiguousarray"]);
}

#[test]
fn writer_matches_numpy_byte_for_byte() {
    let dir = scratch("writer");
    let path = dir.join("w.npy");
    let data: Vec<u8> = (0..36).collect();
    write_npy_u8(&path, &[2, 2, 3, 3], &data).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(fixture("rgb-nhwc-u1.npy")).unwrap()
    );
    write_npy_i64(&path, &[3], &[3, 0, 255]).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(fixture("labels-i8.npy")).unwrap()
    );
    let floats: Vec<f32> = (0..12).map(|k| k as f32 / 11.0).collect();
    write_npy_f32(&path, &[3, 2, 2], &floats).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(fixture("gray-f4.npy")).unwrap()
    );
    // A shape that does not match the data is refused.
    let e = write_npy_u8(&path, &[2, 5], &data).unwrap_err();
    assert!(matches!(e, DataError::InvalidArgument { .. }), "{e}");
    let e = write_npy_u8(&path, &[usize::MAX, 3], &data).unwrap_err();
    assert!(matches!(e, DataError::InvalidArgument { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn channel_axis_is_chosen_by_size() {
    let dir = scratch("axes");
    let path = dir.join("x.npy");
    let read = |shape: &[usize]| {
        let len: usize = shape.iter().product();
        let data: Vec<u8> = (0..len).map(|k| (k % 251) as u8).collect();
        write_npy_u8(&path, shape, &data).unwrap();
        let img = read_npy_images(&path).unwrap();
        (
            (img.n, img.channels, img.height, img.width),
            img.pixels,
            data,
        )
    };
    // (N, H, W, 3): transposed, odd sizes so that any index mix-up shows.
    let (dims, got, data) = read(&[3, 5, 7, 3]);
    assert_eq!(dims, (3, 3, 5, 7));
    for i in 0..3 {
        for c in 0..3 {
            for p in 0..35 {
                assert_eq!(
                    got[(i * 3 + c) * 35 + p],
                    data[(i * 35 + p) * 3 + c],
                    "image {i}, channel {c}, pixel {p}"
                );
            }
        }
    }
    // (N, 3, H, W) and (N, 1, H, W): as they are.
    let (dims, got, data) = read(&[2, 3, 5, 7]);
    assert_eq!(dims, (2, 3, 5, 7));
    assert_eq!(got, data);
    let (dims, got, data) = read(&[2, 1, 5, 7]);
    assert_eq!(dims, (2, 1, 5, 7));
    assert_eq!(got, data);
    // (N, H, W, 1): one channel, the same bytes.
    let (dims, got, data) = read(&[2, 5, 7, 1]);
    assert_eq!(dims, (2, 1, 5, 7));
    assert_eq!(got, data);
    // Ambiguous (N, 3, 3, 3): read as (N, C, H, W), as documented.
    let (dims, got, data) = read(&[2, 3, 3, 3]);
    assert_eq!(dims, (2, 3, 3, 3));
    assert_eq!(got, data);
    // Neither axis is a channel count; too few or too many dimensions.
    for shape in [&[2, 4, 5, 6][..], &[2, 4, 5, 2], &[6, 5], &[1, 1, 1, 1, 1]] {
        let len: usize = shape.iter().product();
        write_npy_u8(&path, shape, &vec![0; len]).unwrap();
        let e = read_npy_images(&path).unwrap_err();
        assert_eq!(npy_field(&e), "shape", "{shape:?}: {e}");
        assert_mentions(&e, &path, &["shape"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_files_are_errors_naming_the_file_and_field() {
    let dir = scratch("bad");
    let path = dir.join("bad.npy");
    let write = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();

    // Truncated: 2 images of 2x2 need 8 bytes; 7 follow.
    write(&npy_bytes(&dict("|u1", "(2, 2, 2)"), &[0; 7]));
    let e = read_npy_images(&path).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                need: 8,
                have: 7,
                ..
            }
        ),
        "{e}"
    );
    assert_mentions(&e, &path, &["2 images of 2x2"]);
    // One byte too many.
    write(&npy_bytes(&dict("|u1", "(2, 2, 2)"), &[0; 9]));
    let e = read_npy_images(&path).unwrap_err();
    assert!(
        matches!(e, DataError::Trailing { extra: Some(1), .. }),
        "{e}"
    );
    // Truncated inside the header, and inside the magic.
    let full = npy_bytes(&dict("|u1", "(2, 2, 2)"), &[0; 8]);
    for cut in [3, 9, 30] {
        write(&full[..cut]);
        let e = read_npy_images(&path).unwrap_err();
        assert!(matches!(e, DataError::Npy { .. }), "cut {cut}: {e}");
        assert_mentions(&e, &path, &[]);
    }
    // Header lengths 0 and 1 (shorter than any dict), with bytes after them.
    for len in [0u8, 1] {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0, len, 0, b'{', b'}', 0, 0]);
        write(&b);
        let e = read_npy_images(&path).unwrap_err();
        assert_eq!(npy_field(&e), "header", "{e}");
    }
    // Not a .npy file at all.
    write(b"\x00\x00\x08\x03 an IDX file, say");
    let e = read_npy_images(&path).unwrap_err();
    assert_eq!(npy_field(&e), "magic");

    // Wrong dtypes: int64 or complex images, float labels.
    write(&npy_bytes(&dict("<i8", "(1, 1, 1)"), &[0; 8]));
    let e = read_npy_images(&path).unwrap_err();
    assert_eq!(npy_field(&e), "descr");
    assert_mentions(&e, &path, &["'<i8'", "'|u1'", "'<f4'"]);
    write(&npy_bytes(&dict("<c8", "(1, 1, 1)"), &[0; 8]));
    assert_eq!(npy_field(&read_npy_images(&path).unwrap_err()), "descr");
    write(&npy_bytes(&dict("<f4", "(1,)"), &[0; 4]));
    let e = read_npy_labels(&path).unwrap_err();
    assert_eq!(npy_field(&e), "descr");

    // Absurd shapes are compared, never allocated: 2^40 images.
    write(&npy_bytes(
        &dict("|u1", "(1099511627776, 28, 28)"),
        &[0; 16],
    ));
    let e = read_npy_images(&path).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert_mentions(&e, &path, &["1099511627776 images of 28x28"]);
    write(&npy_bytes(
        &dict("<f4", "(1099511627776, 3, 1048576, 1048576)"),
        &[0; 16],
    ));
    let e = read_npy_images(&path).unwrap_err();
    assert_eq!(npy_field(&e), "shape");
    assert_mentions(&e, &path, &["2^64"]);
    write(&npy_bytes(&dict("|u1", "(1099511627776,)"), &[0; 16]));
    assert!(matches!(
        read_npy_labels(&path).unwrap_err(),
        DataError::Truncated { .. }
    ));
    // A zero dimension.
    write(&npy_bytes(&dict("|u1", "(0, 2, 2)"), &[]));
    let e = read_npy_images(&path).unwrap_err();
    assert_eq!(npy_field(&e), "shape");
    assert_mentions(&e, &path, &["zero dimension"]);
    // A header length past the end of the file.
    let mut b = npy_bytes(&dict("|u1", "(1, 1, 1)"), &[0]);
    b[8] = 0xff;
    write(&b);
    let e = read_npy_images(&path).unwrap_err();
    assert_eq!(npy_field(&e), "header length");

    // Floats outside [0, 1] or not finite, named by element and image.
    for (bad, shown) in [(1.5f32, "1.5"), (-0.25, "-0.25"), (f32::NAN, "NaN")] {
        let mut v = vec![0.5f32; 8];
        v[5] = bad;
        write_npy_f32(&path, &[2, 2, 2], &v).unwrap();
        let e = read_npy_images(&path).unwrap_err();
        assert_eq!(npy_field(&e), "data");
        assert_mentions(&e, &path, &["element 5 (image 1)", shown, "[0, 1]"]);
    }
    // Labels outside 0..=255 (too large, negative), and not one-dimensional.
    write_npy_i64(&path, &[3], &[1, 256, 2]).unwrap();
    let e = read_npy_labels(&path).unwrap_err();
    assert_mentions(&e, &path, &["label 1 is 256"]);
    write_npy_i64(&path, &[3], &[1, 2, -1]).unwrap();
    let e = read_npy_labels(&path).unwrap_err();
    assert_mentions(&e, &path, &["label 2 is -1"]);
    write_npy_i64(&path, &[3, 1], &[1, 2, 3]).unwrap();
    assert_eq!(npy_field(&read_npy_labels(&path).unwrap_err()), "shape");
    // A missing file is an I/O error naming it.
    let missing = dir.join("none.npy");
    let e = read_npy_images(&missing).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert_mentions(&e, &missing, &[]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn header_parser_is_exposed_and_checked() {
    let b = std::fs::read(fixture("rgb-nchw-f8-be.npy")).unwrap();
    let h = parse_npy_header(Path::new("f.npy"), &b).unwrap();
    assert_eq!(h.descr, ">f8");
    assert_eq!(h.shape, vec![1, 3, 2, 2]);
    assert_eq!(h.data_offset + 12 * 8, b.len());
    assert_eq!(npy::shape_string(&h.shape), "(1, 3, 2, 2)");
    assert_eq!(npy::shape_string(&[5]), "(5,)");
}

#[test]
fn npy_directory_and_dispatch() {
    let dir = scratch("dir");
    let (h, w) = (5, 7);
    let train: Vec<f32> = (0..4 * h * w * 3)
        .map(|k| (k % 256) as f32 / 255.0)
        .collect();
    write_npy_f32(&dir.join(NPY_TRAIN_IMAGES), &[4, h, w, 3], &train).unwrap();
    let test: Vec<u8> = (0..2 * 3 * h * w).map(|k| (k * 3 % 256) as u8).collect();
    write_npy_u8(&dir.join(NPY_TEST_IMAGES), &[2, 3, h, w], &test).unwrap();
    write_npy_i64(&dir.join(NPY_TRAIN_LABELS), &[4], &[0, 1, 2, 9]).unwrap();

    for split in [load_npy_dir(&dir).unwrap(), load_dir(&dir).unwrap()] {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(split.train.name, name);
        assert_eq!(
            (
                split.train.n,
                split.train.channels,
                split.train.height,
                split.train.width
            ),
            (4, 3, h, w)
        );
        assert_eq!(split.train.image_len(), 3 * h * w);
        split.train.check().unwrap();
        split.test.check().unwrap();
        // NHWC floats k/255 become byte k at (i, c, y, x) from element ((i*H + y)*W + x)*3 + c.
        let t = &split.train;
        for i in 0..4 {
            for c in 0..3 {
                for p in 0..h * w {
                    let k = (i * h * w + p) * 3 + c;
                    assert_eq!(t.image(i)[c * h * w + p], (k % 256) as u8);
                }
            }
        }
        assert_eq!(split.train.labels, Some(vec![0, 1, 2, 9]));
        assert_eq!(split.test.pixels, test);
        assert_eq!(split.test.labels, None);
    }

    // A label count that differs from the image count.
    write_npy_u8(&dir.join(NPY_TEST_LABELS), &[3], &[1, 2, 3]).unwrap();
    let e = load_dir(&dir).unwrap_err();
    assert!(matches!(e, DataError::LabelCount { .. }), "{e}");
    std::fs::remove_file(dir.join(NPY_TEST_LABELS)).unwrap();

    // Test images of another size.
    write_npy_u8(&dir.join(NPY_TEST_IMAGES), &[2, h, w], &test[..2 * h * w]).unwrap();
    let e = load_npy_dir(&dir).unwrap_err();
    assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e}");
    assert_mentions(&e, &dir.join(NPY_TEST_IMAGES), &["3x5x7", "5x7"]);

    // No test images.
    std::fs::remove_file(dir.join(NPY_TEST_IMAGES)).unwrap();
    let e = load_dir(&dir).unwrap_err();
    assert!(matches!(e, DataError::MissingNpyFile { .. }), "{e}");
    assert!(e.to_string().ends_with("no test-images.npy file"), "{e}");

    // An empty directory names both layouts; a file is not a directory.
    let empty = scratch("empty");
    let e = load_dir(&empty).unwrap_err();
    assert!(matches!(e, DataError::NoDataSet { .. }), "{e}");
    assert_mentions(
        &e,
        &empty,
        &["train-images-idx3-ubyte[.gz]", "train-images.npy"],
    );
    let e = load_dir(&dir.join(NPY_TRAIN_IMAGES)).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");

    // The IDX directory still loads through the same entry point, one channel.
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-512");
    let split = load_dir(&mnist).unwrap();
    assert_eq!(split, load_idx_dir(&mnist).unwrap());
    assert_eq!((split.train.channels, split.train.height), (1, 28));

    // Single files: .npy by its magic bytes, else IDX.
    let single = load_images_file(&dir.join(NPY_TRAIN_IMAGES)).unwrap();
    assert_eq!(single.name, "train-images");
    assert_eq!((single.n, single.channels), (4, 3));
    let idx = load_images_file(&mnist.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(
        (idx.n, idx.channels, idx.name.as_str()),
        (256, 1, "t10k-images-idx3-ubyte")
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn dataset_check_names_the_field() {
    let dir = scratch("check");
    write_npy_u8(&dir.join(NPY_TRAIN_IMAGES), &[2, 3, 2, 2], &[7; 24]).unwrap();
    write_npy_u8(&dir.join(NPY_TEST_IMAGES), &[1, 3, 2, 2], &[9; 12]).unwrap();
    let mut d = load_npy_dir(&dir).unwrap().train;
    d.check().unwrap();
    d.channels = 0;
    assert!(
        d.check()
            .unwrap_err()
            .to_string()
            .contains("`channels` is 0")
    );
    d.channels = 1;
    assert!(
        d.check()
            .unwrap_err()
            .to_string()
            .contains("`pixels` holds 24 bytes")
    );
    d.channels = usize::MAX;
    assert!(
        d.check()
            .unwrap_err()
            .to_string()
            .contains("more than usize::MAX")
    );
    d.channels = 3;
    d.labels = Some(vec![1]);
    assert!(
        d.check()
            .unwrap_err()
            .to_string()
            .contains("1 labels for 2 images")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_files_never_panic() {
    // Every fixture with bytes replaced, inserted or cut at SplitMix64-drawn places, read as
    // images and as labels: a result or an error, never a panic, and a valid result only of
    // the declared size.
    let dir = scratch("fuzz");
    let path = dir.join("f.npy");
    let mut state = 0x00d1_ce5e_ed00_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let names = [
        "rgb-nhwc-u1.npy",
        "gray-f4.npy",
        "rgb-nchw-f8-be.npy",
        "labels-i8.npy",
        "v2-u1.npy",
    ];
    let mut errors = 0;
    for round in 0..600 {
        let mut b = std::fs::read(fixture(names[round % names.len()])).unwrap();
        for _ in 0..1 + next() % 3 {
            let at = (next() % b.len() as u64) as usize;
            match next() % 4 {
                0 => b[at] = next() as u8,
                1 => {
                    let syntax = b"0123456789(),' {}:TFx\n";
                    b[at] = syntax[(next() % syntax.len() as u64) as usize]
                }
                2 => b.insert(at, next() as u8),
                _ => b.truncate(at),
            }
            if b.is_empty() {
                break;
            }
        }
        std::fs::write(&path, &b).unwrap();
        match read_npy_images(&path) {
            Ok(img) => assert_eq!(
                img.pixels.len(),
                img.n * img.channels * img.height * img.width
            ),
            Err(e) => {
                errors += 1;
                assert!(e.to_string().contains("f.npy"), "{e}");
            }
        }
        if let Ok(labels) = read_npy_labels(&path) {
            assert!(!labels.is_empty());
        }
        if b.is_empty() {
            continue;
        }
    }
    assert!(
        errors > 100,
        "only {errors} of 600 damaged files were refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
