//! PNG grids: layout, pixel values, atomic writes and argument errors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use wgvae::Error;
use wgvae::image::{PAD_GREY, read_png_gray, save_grid_png, save_rows_png};

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
