//! Greyscale PNG grids of images (samples, reconstructions, traversals).
//!
//! # Layout
//! Tiles of `h·scale × w·scale` pixels (each source pixel repeated `scale × scale` times) are laid
//! out on a light grey ([`PAD_GREY`]) canvas with `pad` grey pixels around and between them:
//!
//! ```text
//! width  = cols·(w·scale) + (cols + 1)·pad
//! height = rows·(h·scale) + (rows + 1)·pad
//! ```
//!
//! Tile `(r, c)` starts at `x = pad + c·(w·scale + pad)`, `y = pad + r·(h·scale + pad)`. Cells
//! without an image stay grey. Values are clamped to `[0, 1]` and written as `round(v·255)`;
//! NaN is written as 0.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Grey level of the padding and of empty cells.
pub const PAD_GREY: u8 = 128;

/// Largest canvas the writers accept, in pixels (1 GiB of greyscale).
const MAX_CANVAS_PIXELS: usize = 1 << 30;

/// A value in `[0, 1]` (clamped; NaN → 0) as a grey level.
fn to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// A canvas being filled with tiles.
struct Canvas {
    width: usize,
    height: usize,
    /// `(height, width)` row-major grey levels.
    pixels: Vec<u8>,
    h: usize,
    w: usize,
    pad: usize,
    scale: usize,
}

impl Canvas {
    /// A grey canvas for `rows × cols` tiles of `h × w` images, or a `Config` error if a size is
    /// zero or the canvas would be too large.
    fn new(rows: usize, cols: usize, h: usize, w: usize, pad: usize, scale: usize) -> Result<Self> {
        if h == 0 || w == 0 || scale == 0 || rows == 0 || cols == 0 {
            return Err(Error::Config(format!(
                "image grid: sizes must be positive (h {h}, w {w}, scale {scale}, {rows} rows, \
                 {cols} columns)"
            )));
        }
        let side = |n: usize, len: usize| -> Option<usize> {
            n.checked_mul(len.checked_mul(scale)?)?
                .checked_add(n.checked_add(1)?.checked_mul(pad)?)
        };
        let dims = side(cols, w).zip(side(rows, h));
        let (width, height) = match dims {
            Some((width, height))
                if width
                    .checked_mul(height)
                    .is_some_and(|p| p <= MAX_CANVAS_PIXELS)
                    && u32::try_from(width).is_ok()
                    && u32::try_from(height).is_ok() =>
            {
                (width, height)
            }
            _ => {
                return Err(Error::Config(format!(
                    "image grid: {rows}x{cols} tiles of {h}x{w} at scale {scale} with pad {pad} \
                     exceed the limit of {MAX_CANVAS_PIXELS} pixels"
                )));
            }
        };
        Ok(Canvas {
            width,
            height,
            pixels: vec![PAD_GREY; width * height],
            h,
            w,
            pad,
            scale,
        })
    }

    /// Draws `image` (`(h, w)` row-major values in `[0, 1]`) as tile `(r, c)`; the caller
    /// guarantees `r < rows`, `c < cols` and `image.len() == h·w`.
    fn blit(&mut self, r: usize, c: usize, image: &[f32]) {
        let (th, tw) = (self.h * self.scale, self.w * self.scale);
        let x0 = self.pad + c * (tw + self.pad);
        let y0 = self.pad + r * (th + self.pad);
        for (y, src_row) in image.chunks_exact(self.w).enumerate() {
            let line: Vec<u8> = src_row
                .iter()
                .flat_map(|&v| std::iter::repeat_n(to_u8(v), self.scale))
                .collect();
            for sy in 0..self.scale {
                let start = (y0 + y * self.scale + sy) * self.width + x0;
                self.pixels[start..start + tw].copy_from_slice(&line);
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        write_png_atomic(path, self.width, self.height, &self.pixels)
    }
}

/// Saves `n` images as a grid of `min(ncols, n)` columns and `ceil(n / ncols)` rows (see the
/// module documentation for the layout).
///
/// `images`: `(n, h, w)` row-major values in `[0, 1]` (clamped). `scale` is an integer
/// nearest-neighbour upscaling factor (1 = none). The PNG is written to
/// `path.with_extension("png.tmp")` and renamed to `path`.
///
/// Errors: [`Error::Config`] for zero sizes or `images.len() != n·h·w`; [`Error::Io`] if the file
/// cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn save_grid_png(
    path: &Path,
    images: &[f32],
    n: usize,
    h: usize,
    w: usize,
    ncols: usize,
    pad: usize,
    scale: usize,
) -> Result<()> {
    if n == 0 || ncols == 0 {
        return Err(Error::Config(format!(
            "image grid {}: need at least one image and one column (n {n}, ncols {ncols})",
            path.display()
        )));
    }
    let expected = n.checked_mul(h).and_then(|v| v.checked_mul(w));
    if expected != Some(images.len()) {
        return Err(Error::Config(format!(
            "image grid {}: {} values for {n} images of {h}x{w}",
            path.display(),
            images.len()
        )));
    }
    let cols = ncols.min(n);
    let rows = n.div_ceil(cols);
    let mut canvas = Canvas::new(rows, cols, h, w, pad, scale)?;
    for (i, image) in images.chunks_exact(h * w).enumerate() {
        canvas.blit(i / cols, i % cols, image);
    }
    canvas.save(path)
}

/// Saves a grid whose rows may hold different numbers of images: row `r` is `rows[r]`, `n_r`
/// images of `h × w` concatenated (`(n_r, h, w)` row-major). The grid has `rows.len()` rows and
/// `max n_r` columns; shorter rows end in grey cells. Same layout, value mapping and atomic
/// write as [`save_grid_png`].
///
/// Errors: [`Error::Config`] if a row's length is not a multiple of `h·w`, if there are no images
/// at all, or for zero sizes; [`Error::Io`] if the file cannot be written.
pub fn save_rows_png(
    path: &Path,
    rows: &[Vec<f32>],
    h: usize,
    w: usize,
    pad: usize,
    scale: usize,
) -> Result<()> {
    let len = h.checked_mul(w).filter(|&l| l > 0).ok_or_else(|| {
        Error::Config(format!(
            "image rows {}: image size {h}x{w} must be positive",
            path.display()
        ))
    })?;
    let mut cols = 0;
    for (r, row) in rows.iter().enumerate() {
        if row.len() % len != 0 {
            return Err(Error::Config(format!(
                "image rows {}: row {r} has {} values, not a multiple of {h}x{w}",
                path.display(),
                row.len()
            )));
        }
        cols = cols.max(row.len() / len);
    }
    if cols == 0 {
        return Err(Error::Config(format!(
            "image rows {}: no images to draw ({} rows)",
            path.display(),
            rows.len()
        )));
    }
    let mut canvas = Canvas::new(rows.len(), cols, h, w, pad, scale)?;
    for (r, row) in rows.iter().enumerate() {
        for (c, image) in row.chunks_exact(len).enumerate() {
            canvas.blit(r, c, image);
        }
    }
    canvas.save(path)
}

/// Writes an 8-bit greyscale PNG (`pixels`: `(height, width)` row-major) through
/// `path.with_extension("png.tmp")`, renamed into place.
fn write_png_atomic(path: &Path, width: usize, height: usize, pixels: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("png.tmp");
    let result = (|| -> Result<()> {
        let (w32, h32) = match (u32::try_from(width), u32::try_from(height)) {
            (Ok(w), Ok(h)) => (w, h),
            _ => {
                return Err(Error::Config(format!(
                    "{}: {width}x{height} is too large for a PNG",
                    path.display()
                )));
            }
        };
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::new(file);
        {
            let mut enc = png::Encoder::new(&mut out, w32, h32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let png_err = |e: png::EncodingError| match e {
                png::EncodingError::IoError(e) => Error::io(&tmp, e),
                other => Error::io(&tmp, std::io::Error::other(other)),
            };
            let mut writer = enc.write_header().map_err(png_err)?;
            writer.write_image_data(pixels).map_err(png_err)?;
            writer.finish().map_err(png_err)?;
        }
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a PNG as 8-bit grey: returns `(height, width, pixels)` with `pixels` `(height, width)`
/// row-major. Colour images are converted with the mean of R, G and B; alpha is dropped and
/// 16-bit and palette images are reduced to 8-bit first.
pub fn read_png_gray(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let bad = |detail: String| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, detail),
        )
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let decode_err = |e: png::DecodingError| match e {
        png::DecodingError::IoError(e) => Error::io(path, e),
        other => bad(format!("not a readable PNG: {other}")),
    };
    let mut reader = decoder.read_info().map_err(decode_err)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("PNG too large to decode".to_string()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(decode_err)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(bad("palette PNG was not expanded".to_string()));
        }
    };
    let mut pixels = Vec::with_capacity(width * height);
    for row in buf.chunks(info.line_size).take(height) {
        for px in row.chunks_exact(channels).take(width) {
            let grey = match channels {
                1 | 2 => px[0],
                _ => ((u16::from(px[0]) + u16::from(px[1]) + u16::from(px[2]) + 1) / 3) as u8,
            };
            pixels.push(grey);
        }
    }
    if pixels.len() != width * height {
        return Err(bad(format!(
            "decoded {} pixels for a {width}x{height} image",
            pixels.len()
        )));
    }
    Ok((height, width, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_mapping() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(f32::NAN), 0);
        assert_eq!(to_u8(0.5), 128);
        assert_eq!(to_u8(2.0), 255);
    }

    #[test]
    fn canvas_layout() {
        let mut c = Canvas::new(2, 3, 2, 1, 1, 2).unwrap();
        assert_eq!((c.width, c.height), (3 * 2 + 4, 2 * 4 + 3));
        c.blit(1, 2, &[1.0, 0.0]);
        // Tile (1, 2) starts at x = 1 + 2*(2+1) = 7, y = 1 + 1*(4+1) = 6.
        assert_eq!(&c.pixels[6 * 10 + 7..6 * 10 + 9], &[255, 255]);
        assert_eq!(&c.pixels[8 * 10 + 7..8 * 10 + 9], &[0, 0]);
        assert_eq!(c.pixels[6 * 10 + 6], PAD_GREY);
    }
}
