//! Folders of PNG and JPEG images as data sets (`--data DIR`): pixels, layouts, labels, the
//! seeded split and the errors.

use std::path::{Path, PathBuf};

use wgvae::data::folder::{self, MAX_CLASSES, test_count};
use wgvae::data::{DataError, load_dir};

mod common;

fn scratch(name: &str) -> PathBuf {
    common::tool::scratch("folder", name)
}

/// Writes a PNG of `w × h` pixels of `color` (8 bits unless `depth16`) from `data`.
fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    write_png_with(path, w, h, color, png::BitDepth::Eight, None, data);
}

fn write_png_with(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    data: &[u8],
) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
}

/// A 5 × 7 greyscale image whose pixels all depend on `seed` (row-major, 35 bytes).
fn grey(seed: u8) -> Vec<u8> {
    (0..35u8)
        .map(|i| seed.wrapping_mul(37).wrapping_add(i.wrapping_mul(7)))
        .collect()
}

/// A 5 × 7 RGB image (interleaved, 105 bytes).
fn rgb(seed: u8) -> Vec<u8> {
    (0..105u8)
        .map(|i| seed.wrapping_mul(53).wrapping_add(i.wrapping_mul(3)))
        .collect()
}

/// Interleaved HWC to planes (CHW).
fn chw(hwc: &[u8], ch: usize) -> Vec<u8> {
    let n = hwc.len() / ch;
    (0..ch)
        .flat_map(|c| (0..n).map(move |i| hwc[i * ch + c]))
        .collect()
}

fn grey_png(path: &Path, seed: u8) {
    write_png(path, 5, 7, png::ColorType::Grayscale, &grey(seed));
}

fn load_err(dir: &Path) -> String {
    let e = load_dir(dir).expect_err("loaded a bad folder");
    e.to_string()
}

#[test]
fn png_pixels_round_trip_in_train_and_test_folders() {
    let d = scratch("roundtrip");
    // Names out of creation order: the loader sorts them.
    for (name, seed) in [("b.png", 2u8), ("a.png", 1), ("c.PNG", 3)] {
        grey_png(&d.join("train").join(name), seed);
    }
    grey_png(&d.join("test/z.png"), 9);
    grey_png(&d.join("test/y.png"), 8);
    // Not images: skipped.
    std::fs::write(d.join("train/notes.txt"), "not an image").unwrap();
    std::fs::write(d.join("train/.hidden.png"), "not even a png").unwrap();
    std::fs::create_dir_all(d.join("test/.cache")).unwrap();
    let s = load_dir(&d).unwrap();
    assert_eq!((s.train.n, s.test.n), (3, 2));
    assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 7, 5));
    assert_eq!(s.train.pixels, [grey(1), grey(2), grey(3)].concat());
    assert_eq!(s.test.pixels, [grey(8), grey(9)].concat());
    assert_eq!(
        (s.train.labels.as_ref(), s.test.labels.as_ref()),
        (None, None)
    );
    s.train.check().unwrap();
    s.test.check().unwrap();
    assert_eq!(s.train.name, d.file_name().unwrap().to_string_lossy());
}

#[test]
fn colour_alpha_palette_and_16_bit_images_convert() {
    let d = scratch("colour");
    // RGB, RGBA (alpha dropped), grey + alpha (alpha dropped, grey replicated), palette
    // (expanded), 16-bit grey (high byte), and a grey PNG named .jpg (read by content).
    write_png(
        &d.join("train/0-rgb.png"),
        5,
        7,
        png::ColorType::Rgb,
        &rgb(1),
    );
    let rgba: Vec<u8> = rgb(2)
        .chunks(3)
        .flat_map(|p| [p[0], p[1], p[2], 77])
        .collect();
    write_png(
        &d.join("train/1-rgba.png"),
        5,
        7,
        png::ColorType::Rgba,
        &rgba,
    );
    let ga: Vec<u8> = grey(3).iter().flat_map(|&g| [g, 200]).collect();
    write_png(
        &d.join("train/2-ga.png"),
        5,
        7,
        png::ColorType::GrayscaleAlpha,
        &ga,
    );
    let palette: Vec<u8> = (0..4u8)
        .flat_map(|i| [i * 60, 255 - i * 50, i * 10])
        .collect();
    let idx: Vec<u8> = (0..35u8).map(|i| i % 4).collect();
    write_png_with(
        &d.join("train/3-pal.png"),
        5,
        7,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some(palette.clone()),
        &idx,
    );
    let g16: Vec<u8> = grey(4).iter().flat_map(|&g| [g, 0xab]).collect();
    write_png_with(
        &d.join("test/4-g16.png"),
        5,
        7,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &g16,
    );
    grey_png(&d.join("test/5-grey.jpg"), 5);
    let s = load_dir(&d).unwrap();
    assert_eq!(
        (s.train.n, s.test.n, s.train.channels, s.test.channels),
        (4, 2, 3, 3)
    );
    let rep = |g: &[u8]| [g, g, g].concat();
    assert_eq!(s.train.image(0), chw(&rgb(1), 3).as_slice());
    assert_eq!(s.train.image(1), chw(&rgb(2), 3).as_slice());
    assert_eq!(s.train.image(2), rep(&grey(3)).as_slice());
    let pal_rgb: Vec<u8> = idx
        .iter()
        .flat_map(|&i| palette[i as usize * 3..i as usize * 3 + 3].to_vec())
        .collect();
    assert_eq!(s.train.image(3), chw(&pal_rgb, 3).as_slice());
    assert_eq!(s.test.image(0), rep(&grey(4)).as_slice());
    assert_eq!(s.test.image(1), rep(&grey(5)).as_slice());
}

#[test]
fn class_folders_give_labels_sorted_by_name() {
    let d = scratch("classes");
    grey_png(&d.join("train/dog/1.png"), 1);
    grey_png(&d.join("train/cat/1.png"), 2);
    grey_png(&d.join("train/cat/2.png"), 3);
    grey_png(&d.join("test/dog/1.png"), 4);
    // A class only in the test split still gets its place in the order.
    grey_png(&d.join("test/ant/1.png"), 5);
    let f = folder::load_folder(&d).unwrap();
    assert_eq!(f.classes, ["ant", "cat", "dog"]);
    assert_eq!(f.split.classes, f.classes);
    assert_eq!(f.split.train.labels, Some(vec![1, 1, 2]));
    assert_eq!(f.split.train.pixels, [grey(2), grey(3), grey(1)].concat());
    assert_eq!(f.split.test.labels, Some(vec![0, 2]));
    assert_eq!(f.split.test.pixels, [grey(5), grey(4)].concat());
    assert_eq!(load_dir(&d).unwrap(), f.split);
}

/// Writes 23 distinct images in two class folders, in the given creation order.
fn pool(d: &Path, order: &[usize]) {
    for &i in order {
        let class = if i % 3 == 0 { "x" } else { "y" };
        grey_png(&d.join(class).join(format!("{i:02}.png")), i as u8);
    }
}

#[test]
fn seeded_split_is_deterministic_disjoint_and_independent_of_listing_order() {
    let forward: Vec<usize> = (0..23).collect();
    let backward: Vec<usize> = (0..23).rev().collect();
    let (a, b) = (scratch("split-a"), scratch("split-b"));
    pool(&a, &forward);
    pool(&b, &backward);
    let sa = load_dir(&a).unwrap();
    assert_eq!(load_dir(&a).unwrap(), sa, "two loads of one folder differ");
    let sb = load_dir(&b).unwrap();
    assert_eq!(
        (sa.train.pixels, sa.test.pixels),
        (sb.train.pixels.clone(), sb.test.pixels.clone())
    );
    assert_eq!(
        (sb.train.n, sb.test.n),
        (23 - test_count(23), test_count(23))
    );
    assert_eq!(test_count(23), 2);
    // Every image is in exactly one split, with its folder's label.
    let seed_of = |px: &[u8]| (0..23u8).find(|&i| grey(i) == px).unwrap();
    let mut seen = Vec::new();
    for set in [&sb.train, &sb.test] {
        let labels = set.labels.as_ref().unwrap();
        for (i, &label) in labels.iter().enumerate() {
            let s = seed_of(set.image(i));
            assert_eq!(label, u8::from(s % 3 != 0), "image {s}");
            seen.push(s);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..23u8).collect::<Vec<_>>());
    // The held-out images are not simply the last ones in name order.
    let test: Vec<u8> = (0..sb.test.n).map(|i| seed_of(sb.test.image(i))).collect();
    assert_ne!(test, vec![21, 22], "the split is not shuffled");
}

#[test]
fn jpeg_grey_and_colour_decode() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/folder");
    let d = scratch("jpeg");
    for f in ["grey-5x7.jpg", "rgb-5x7.jpg"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let f = folder::load_folder(&d).unwrap();
    let s = f.split;
    assert_eq!((s.train.n, s.test.n, s.train.channels), (1, 1, 3));
    assert_eq!((s.train.height, s.train.width), (7, 5));
    // Which file went to which split is the seeded rule's choice; identify them by content.
    let images = [s.train.image(0), s.test.image(0)];
    let plane = 35;
    let is_grey = |im: &[u8]| im[..plane] == im[plane..2 * plane] && im[..plane] == im[2 * plane..];
    let g = images.iter().find(|im| is_grey(im)).expect("no grey image");
    let c = images
        .iter()
        .find(|im| !is_grey(im))
        .expect("no colour image");
    // The committed JPEGs encode these gradients at quality 100 (see tests/data/folder).
    for y in 0..7 {
        for x in 0..5 {
            let i = y * 5 + x;
            let want_g = 20 + 30 * x + 10 * y;
            let want_c = [40 + 30 * x, 200 - 20 * y, 100];
            assert!(
                (g[i] as i32 - want_g as i32).abs() <= 3,
                "grey ({x}, {y}): {}",
                g[i]
            );
            for ch in 0..3 {
                let got = c[ch * plane + i] as i32;
                assert!(
                    (got - want_c[ch] as i32).abs() <= 4,
                    "rgb ({x}, {y}) channel {ch}: {got}"
                );
            }
        }
    }
    // A grey JPEG alone is a one-channel set.
    let d1 = scratch("jpeg-grey");
    std::fs::copy(src.join("grey-5x7.jpg"), d1.join("a.jpeg")).unwrap();
    std::fs::copy(src.join("grey-5x7.jpg"), d1.join("b.JPG")).unwrap();
    let s = load_dir(&d1).unwrap();
    assert_eq!((s.train.channels, s.train.n + s.test.n), (1, 2));
}

#[test]
fn bad_folders_and_files_are_named() {
    // Different sizes: the second file in name order is named with both sizes.
    let d = scratch("sizes");
    grey_png(&d.join("a.png"), 1);
    write_png(&d.join("b.png"), 7, 5, png::ColorType::Grayscale, &grey(2));
    let e = load_err(&d);
    assert!(
        e.contains("b.png") && e.contains("7x5") && e.contains("a.png") && e.contains("5x7"),
        "{e}"
    );

    // A corrupt PNG, a truncated one, and a .png that is no image at all.
    let d = scratch("corrupt");
    grey_png(&d.join("a.png"), 1);
    let mut bytes = std::fs::read(d.join("a.png")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(d.join("b.png"), &bytes).unwrap();
    let e = load_err(&d);
    assert!(e.contains("b.png") && e.contains("PNG"), "{e}");
    std::fs::write(d.join("b.png"), &bytes[..n / 2]).unwrap();
    let e = load_err(&d);
    assert!(e.contains("b.png"), "{e}");
    std::fs::write(d.join("b.png"), "hello").unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("b.png") && e.contains("neither a PNG nor a JPEG"),
        "{e}"
    );
    // A broken JPEG.
    std::fs::write(d.join("b.png"), [0xff, 0xd8, 0xff, 0xe0, 0, 16, 1, 2]).unwrap();
    let e = load_err(&d);
    assert!(e.contains("b.png") && e.contains("JPEG"), "{e}");

    // An image format that is not read.
    let d = scratch("gif");
    grey_png(&d.join("a.png"), 1);
    grey_png(&d.join("b.png"), 2);
    std::fs::write(d.join("c.gif"), "GIF89a").unwrap();
    let e = load_err(&d);
    assert!(e.contains("c.gif") && e.contains("PNG and JPEG"), "{e}");

    // An empty folder, and empty train/ and test/ folders.
    let d = scratch("empty");
    let e = load_err(&d);
    assert!(
        e.contains(&*d.to_string_lossy()) && e.contains("no data set"),
        "{e}"
    );
    let e = folder::load_folder(&d).unwrap_err().to_string();
    assert!(
        e.contains(&*d.to_string_lossy()) && e.contains("no PNG or JPEG"),
        "{e}"
    );
    std::fs::create_dir_all(d.join("train")).unwrap();
    std::fs::create_dir_all(d.join("test")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("train") && e.contains("no PNG or JPEG"), "{e}");

    // train/ without test/.
    let d = scratch("half");
    grey_png(&d.join("train/a.png"), 1);
    let e = load_err(&d);
    assert!(e.contains("test") && e.contains("give both"), "{e}");

    // A class folder without images; images next to class folders; nesting.
    let d = scratch("layout");
    grey_png(&d.join("cat/a.png"), 1);
    std::fs::create_dir_all(d.join("dog")).unwrap();
    std::fs::write(d.join("dog/readme.txt"), "x").unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("dog") && e.contains("class folder without"),
        "{e}"
    );
    grey_png(&d.join("dog/b.png"), 2);
    grey_png(&d.join("loose.png"), 3);
    let e = load_err(&d);
    assert!(e.contains("loose.png") && e.contains("both images"), "{e}");
    std::fs::remove_file(d.join("loose.png")).unwrap();
    grey_png(&d.join("dog/deeper/c.png"), 4);
    let e = load_err(&d);
    assert!(e.contains("deeper") && e.contains("one level deep"), "{e}");

    // One image cannot be split.
    let d = scratch("single");
    grey_png(&d.join("a.png"), 1);
    let e = load_err(&d);
    assert!(e.contains("1 image") && e.contains("at least 2"), "{e}");

    // More classes than labels hold.
    let d = scratch("many");
    for c in 0..=MAX_CLASSES {
        grey_png(&d.join(format!("c{c:03}/a.png")), c as u8);
    }
    let e = load_dir(&d).unwrap_err();
    assert!(matches!(e, DataError::Folder { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("257 class folders") && e.contains("256"), "{e}");
}

#[test]
fn wgvae_trains_on_a_folder() {
    let d = scratch("train");
    for i in 0..20u8 {
        let class = if i % 2 == 0 { "even" } else { "odd" };
        grey_png(&d.join("data").join(class).join(format!("{i}.png")), i);
    }
    let out = common::tool::wgvae()
        .args(["train", "--no-pictures", "--epochs", "1"])
        .args(["--hidden", "8", "--latent", "2", "--batch", "4", "--data"])
        .arg(d.join("data"))
        .arg("--out")
        .arg(d.join("run"))
        .output()
        .unwrap();
    let text = common::tool::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(d.join("run/checkpoint.safetensors").is_file());
    assert!(
        text.contains("labels from class folders: 0 even, 1 odd"),
        "{text}"
    );
    // The run records the class names: label i is classes[i].
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/config.json")).unwrap()).unwrap();
    assert_eq!(config["classes"], serde_json::json!(["even", "odd"]));
}

#[test]
fn damaged_jpegs_and_pngs_give_errors_not_panics() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/folder/rgb-5x7.jpg");
    let jpeg = std::fs::read(src).unwrap();
    let d = scratch("damaged");
    grey_png(&d.join("a.png"), 1);
    let png_bytes = std::fs::read(d.join("a.png")).unwrap();
    let mut errors = 0;
    for (name, good) in [("b.jpg", &jpeg), ("b.png", &png_bytes)] {
        for i in 0..good.len() {
            // Every byte flipped, and every length cut short.
            let mut flipped = good.clone();
            flipped[i] ^= 0xa5;
            for bytes in [flipped, good[..i].to_vec()] {
                std::fs::write(d.join(name), &bytes).unwrap();
                if let Err(e) = load_dir(&d) {
                    let e = e.to_string();
                    assert!(e.contains(name) || e.contains("a.png"), "{e}");
                    errors += 1;
                }
            }
        }
        std::fs::remove_file(d.join(name)).unwrap();
    }
    assert!(errors > 100, "only {errors} damaged files were refused");
}
