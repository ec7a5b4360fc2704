//! PNG grids: layout, pixel values, atomic writes and argument errors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use wgvae::Error;
use wgvae::image::{
    ImageShape, PAD_GREY, read_png, read_png_gray, save_grid_png, save_grid_png_chw, save_rows_png,
    save_rows_png_chw,
};

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

/// `n` images of `h x w` where image `i`, pixel `p` has value `((i * 7 + p) % 11) / 10`
/// (so some values are above 1 and get clamped).
fn pattern(n: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n * h * w)
        .map(|k| {
            let (i, p) = (k / (h * w), k % (h * w));
            ((i * 7 + p) % 11) as f32 / 10.0
        })
        .collect()
}

fn grey(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[test]
fn grid_layout_and_tile_pixels() {
    let dir = scratch("grid");
    let path = dir.join("grid.png");
    let (n, h, w, ncols, pad, scale) = (7, 3, 5, 3, 2, 2);
    let images = pattern(n, h, w);
    save_grid_png(&path, &images, n, h, w, ncols, pad, scale).unwrap();
    assert!(!dir.join("grid.png.tmp").exists());

    let (height, width, px) = read_png_gray(&path).unwrap();
    let rows = n.div_ceil(ncols);
    assert_eq!(width, ncols * w * scale + (ncols + 1) * pad);
    assert_eq!(height, rows * h * scale + (rows + 1) * pad);
    assert_eq!((height, width), (3 * 6 + 4 * 2, 3 * 10 + 4 * 2));
    let at = |y: usize, x: usize| px[y * width + x];

    // Every image lands at tile (i / ncols, i % ncols), each pixel as a scale x scale block.
    for i in 0..n {
        let (r, c) = (i / ncols, i % ncols);
        let (x0, y0) = (pad + c * (w * scale + pad), pad + r * (h * scale + pad));
        for y in 0..h * scale {
            for x in 0..w * scale {
                let v = images[i * h * w + (y / scale) * w + x / scale];
                assert_eq!(at(y0 + y, x0 + x), grey(v), "image {i} at ({y}, {x})");
            }
        }
    }
    // Padding lines and the two empty cells of the last row are grey.
    assert!((0..width).all(|x| at(0, x) == PAD_GREY && at(height - 1, x) == PAD_GREY));
    assert!((0..height).all(|y| at(y, 0) == PAD_GREY && at(y, pad + w * scale) == PAD_GREY));
    let last_row_y = pad + 2 * (h * scale + pad);
    assert!((pad + w * scale + pad..width).all(|x| at(last_row_y, x) == PAD_GREY));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn values_are_clamped_and_nan_is_black() {
    let dir = scratch("clamp");
    let path = dir.join("c.png");
    save_grid_png(&path, &[-3.0, 0.5, 7.0, f32::NAN], 1, 2, 2, 8, 0, 1).unwrap();
    let (h, w, px) = read_png_gray(&path).unwrap();
    assert_eq!((h, w), (2, 2));
    assert_eq!(px, vec![0, 128, 255, 0]);
    // Overwriting an existing file works.
    save_grid_png(&path, &[1.0; 4], 1, 2, 2, 1, 1, 1).unwrap();
    let (h, w, px) = read_png_gray(&path).unwrap();
    assert_eq!((h, w), (4, 4));
    assert_eq!(px[w + 1], 255);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rows_of_different_lengths() {
    let dir = scratch("rows");
    let path = dir.join("rows.png");
    let (h, w, pad, scale) = (2, 2, 1, 3);
    let inputs = vec![0.0; 3 * h * w];
    let outputs = vec![1.0; 2 * h * w];
    save_rows_png(&path, &[inputs, outputs], h, w, pad, scale).unwrap();
    let (height, width, px) = read_png_gray(&path).unwrap();
    assert_eq!(width, 3 * w * scale + 4 * pad);
    assert_eq!(height, 2 * h * scale + 3 * pad);
    let at = |y: usize, x: usize| px[y * width + x];
    assert_eq!(at(pad, pad), 0);
    let second_row = pad + h * scale + pad;
    assert_eq!(at(second_row, pad), 255);
    assert_eq!(at(second_row, pad + w * scale + pad), 255);
    // The third cell of the second row is empty.
    assert_eq!(at(second_row, pad + 2 * (w * scale + pad)), PAD_GREY);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_errors() {
    let dir = scratch("bad");
    let path = dir.join("bad.png");
    let img = vec![0.5; 4];
    let config = |r: wgvae::Result<()>| {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    };
    config(save_grid_png(&path, &img, 2, 2, 2, 1, 0, 1)); // wrong length
    config(save_grid_png(&path, &[], 0, 2, 2, 1, 0, 1)); // no images
    config(save_grid_png(&path, &img, 1, 2, 2, 0, 0, 1)); // zero columns
    config(save_grid_png(&path, &img, 1, 2, 2, 1, 0, 0)); // zero scale
    config(save_grid_png(&path, &[], 1, 0, 2, 1, 0, 1)); // zero height
    config(save_grid_png(&path, &img, usize::MAX, 2, 2, 1, 0, 1)); // overflowing n
    config(save_grid_png(&path, &img, 1, 2, 2, 1, usize::MAX, 1)); // overflowing pad
    config(save_grid_png(&path, &img, 1, 2, 2, 1, 0, 1 << 20)); // canvas too large
    config(save_rows_png(&path, &[vec![0.0; 3]], 2, 2, 0, 1)); // not a multiple
    config(save_rows_png(&path, &[vec![], vec![]], 2, 2, 0, 1)); // no images
    config(save_rows_png(&path, &[], 2, 2, 0, 1));
    config(save_rows_png(&path, std::slice::from_ref(&img), 0, 2, 0, 1));
    assert!(!path.exists());

    // An unwritable destination is an I/O error naming the path.
    let missing = dir.join("no-such-dir").join("x.png");
    let e = save_grid_png(&missing, &img, 1, 2, 2, 1, 0, 1).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    // Reading a non-PNG is an error too.
    std::fs::write(&path, b"not a png").unwrap();
    let e = read_png_gray(&path).unwrap_err();
    assert!(e.to_string().contains("bad.png"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rgb_grid_from_channel_planes() {
    let dir = scratch("rgb");
    let path = dir.join("rgb.png");
    // 5 images of 3x4x7 (odd sizes), 2 columns: the last row has one image and a grey cell.
    let (n, h, w, ncols, pad, scale) = (5, 4, 7, 2, 1, 3);
    let shape = ImageShape::rgb(h, w);
    let images = pattern(n, 3 * h, w); // (n, 3, h, w) values
    save_grid_png_chw(&path, &images, n, shape, ncols, pad, scale).unwrap();
    assert!(!dir.join("rgb.png.tmp").exists());

    let (height, width, channels, px) = read_png(&path).unwrap();
    assert_eq!(channels, 3);
    let rows = n.div_ceil(ncols);
    assert_eq!(width, ncols * w * scale + (ncols + 1) * pad);
    assert_eq!(height, rows * h * scale + (rows + 1) * pad);
    assert_eq!(px.len(), height * width * 3);
    let at = |y: usize, x: usize, c: usize| px[(y * width + x) * 3 + c];
    for i in 0..n {
        let (r, col) = (i / ncols, i % ncols);
        let (x0, y0) = (pad + col * (w * scale + pad), pad + r * (h * scale + pad));
        for c in 0..3 {
            for y in 0..h * scale {
                for x in 0..w * scale {
                    let v = images[((i * 3 + c) * h + y / scale) * w + x / scale];
                    assert_eq!(at(y0 + y, x0 + x, c), grey(v), "image {i}, channel {c}");
                }
            }
        }
    }
    // Padding and the empty cell are grey in every channel.
    let empty_x = pad + w * scale + pad;
    let last_y = pad + 2 * (h * scale + pad);
    for c in 0..3 {
        assert!((0..width).all(|x| at(0, x, c) == PAD_GREY));
        assert!((empty_x..width).all(|x| at(last_y, x, c) == PAD_GREY));
    }
    // The greyscale reader averages the three channels.
    let (gh, gw, g) = read_png_gray(&path).unwrap();
    assert_eq!((gh, gw), (height, width));
    let (y, x) = (pad, pad);
    let mean = (u16::from(at(y, x, 0)) + u16::from(at(y, x, 1)) + u16::from(at(y, x, 2)) + 1) / 3;
    assert_eq!(u16::from(g[y * width + x]), mean);

    // Rows of RGB images.
    let rows_path = dir.join("rows.png");
    let red = [vec![1.0; h * w], vec![0.0; 2 * h * w]].concat();
    let blue = [vec![0.0; 2 * h * w], vec![1.0; h * w]].concat();
    save_rows_png_chw(
        &rows_path,
        &[red.clone(), [red, blue.clone()].concat(), blue],
        shape,
        pad,
        1,
    )
    .unwrap();
    let (rh, rw, rc, rpx) = read_png(&rows_path).unwrap();
    assert_eq!((rh, rw, rc), (3 * h + 4 * pad, 2 * w + 3 * pad, 3));
    let pix = |y: usize, x: usize| &rpx[(y * rw + x) * 3..(y * rw + x) * 3 + 3];
    assert_eq!(pix(pad, pad), &[255, 0, 0]);
    assert_eq!(pix(pad, pad + w + pad), &[PAD_GREY; 3]); // row 0 has one image
    assert_eq!(pix(pad + h + pad, pad + w + pad), &[0, 0, 255]);
    assert_eq!(pix(pad + 2 * (h + pad), pad), &[0, 0, 255]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_channel_chw_is_the_greyscale_grid() {
    let dir = scratch("gray-chw");
    let (a, b) = (dir.join("a.png"), dir.join("b.png"));
    let images = pattern(3, 5, 3);
    save_grid_png(&a, &images, 3, 5, 3, 2, 1, 2).unwrap();
    save_grid_png_chw(&b, &images, 3, ImageShape::gray(5, 3), 2, 1, 2).unwrap();
    let (h, w, c, px) = read_png(&b).unwrap();
    assert_eq!(c, 1);
    assert_eq!((h, w, px), {
        let (h, w, px) = read_png_gray(&a).unwrap();
        (h, w, px)
    });
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn channel_counts_other_than_one_or_three_are_config_errors() {
    let dir = scratch("channels");
    let path = dir.join("c.png");
    for channels in [0, 2, 4] {
        let shape = ImageShape {
            channels,
            height: 2,
            width: 2,
        };
        let img = vec![0.5; channels * 4];
        for e in [
            save_grid_png_chw(&path, &img, 1, shape, 1, 0, 1).unwrap_err(),
            save_rows_png_chw(&path, std::slice::from_ref(&img), shape, 0, 1).unwrap_err(),
        ] {
            assert!(matches!(e, Error::Config(_)), "{e}");
            assert!(
                e.to_string().contains(&format!("{channels} channels")),
                "{e}"
            );
        }
    }
    // Wrong length for three channels (the length of one).
    let e = save_grid_png_chw(&path, &[0.5; 4], 1, ImageShape::rgb(2, 2), 1, 0, 1).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("3x2x2"), "{e}");
    // Overflowing image sizes.
    let huge = ImageShape::rgb(usize::MAX, 2);
    let e = save_grid_png_chw(&path, &[0.5; 4], 1, huge, 1, 0, 1).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    // An RGB canvas of 20000x20000 pixels: 1.2e9 bytes, over the limit of 2^30.
    let e =
        save_grid_png_chw(&path, &[0.5; 3], 1, ImageShape::rgb(1, 1), 1, 0, 20_000).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("1073741824 bytes"), "{e}");
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
