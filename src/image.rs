//! PNG grids of images (samples, reconstructions, traversals): greyscale, or RGB for colour
//! images.
//!
//! # Images
//! An image is `channels × h × w` values in `[0, 1]`, stored as its channel planes one after the
//! other (CHW, the layout of [`crate::data::Dataset`] and of the model's inputs and outputs):
//! value `(c, y, x)` is at `c·h·w + y·w + x`. One channel gives an 8-bit greyscale PNG, three
//! channels (R, G, B) an 8-bit RGB PNG; other counts are a [`Error::Config`] that names the count.
//! [`ImageShape`] carries the three sizes.
//!
//! # Layout
//! Tiles of `h·scale × w·scale` pixels (each source pixel repeated `scale × scale` times) are laid
//! out on a light grey ([`PAD_GREY`] in every channel) canvas with `pad` grey pixels around and
//! between them:
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

/// Largest canvas the writers accept, in bytes (1 GiB: `width·height·channels`).
const MAX_CANVAS_BYTES: usize = 1 << 30;

/// The size of one image: `channels` planes of `height × width` (CHW).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// 1 (grey) or 3 (R, G, B) for the PNG writers.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// One channel of `height × width`.
    pub fn gray(height: usize, width: usize) -> Self {
        ImageShape {
            channels: 1,
            height,
            width,
        }
    }

    /// Three channels (R, G, B) of `height × width`.
    pub fn rgb(height: usize, width: usize) -> Self {
        ImageShape {
            channels: 3,
            height,
            width,
        }
    }

    /// Values per image, `channels·height·width`, or `None` if the product overflows.
    pub fn len(&self) -> Option<usize> {
        self.channels
            .checked_mul(self.height)?
            .checked_mul(self.width)
    }

    /// Whether some size is zero.
    pub fn is_empty(&self) -> bool {
        self.channels == 0 || self.height == 0 || self.width == 0
    }
}

impl std::fmt::Display for ImageShape {
    /// `HxW` for one channel, `CxHxW` otherwise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.channels == 1 {
            write!(f, "{}x{}", self.height, self.width)
        } else {
            write!(f, "{}x{}x{}", self.channels, self.height, self.width)
        }
    }
}

/// The PNG colour type of `channels`, or a `Config` error naming the count.
fn color_type(what: &str, path: &Path, channels: usize) -> Result<png::ColorType> {
    match channels {
        1 => Ok(png::ColorType::Grayscale),
        3 => Ok(png::ColorType::Rgb),
        _ => Err(Error::Config(format!(
            "{what} {}: {channels} channels; PNG grids take 1 (grey) or 3 (R, G, B) channels",
            path.display()
        ))),
    }
}

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
    /// `(height, width, channels)` row-major, channels interleaved as PNG stores them.
    pixels: Vec<u8>,
    /// Tile image size.
    shape: ImageShape,
    pad: usize,
    scale: usize,
}

impl Canvas {
    /// A grey canvas for `rows × cols` tiles of `shape` images, or a `Config` error if a size is
    /// zero or the canvas would be too large. The channel count is checked by the caller.
    fn new(rows: usize, cols: usize, shape: ImageShape, pad: usize, scale: usize) -> Result<Self> {
        let ImageShape {
            channels,
            height: h,
            width: w,
        } = shape;
        if shape.is_empty() || scale == 0 || rows == 0 || cols == 0 {
            return Err(Error::Config(format!(
                "image grid: sizes must be positive (channels {channels}, h {h}, w {w}, scale \
                 {scale}, {rows} rows, {cols} columns)"
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
                    .and_then(|p| p.checked_mul(channels))
                    .is_some_and(|b| b <= MAX_CANVAS_BYTES)
                    && u32::try_from(width).is_ok()
                    && u32::try_from(height).is_ok() =>
            {
                (width, height)
            }
            _ => {
                return Err(Error::Config(format!(
                    "image grid: {rows}x{cols} tiles of {shape} at scale {scale} with pad {pad} \
                     exceed the limit of {MAX_CANVAS_BYTES} bytes"
                )));
            }
        };
        Ok(Canvas {
            width,
            height,
            pixels: vec![PAD_GREY; width * height * channels],
            shape,
            pad,
            scale,
        })
    }

    /// Draws `image` (`(channels, h, w)` row-major values in `[0, 1]`) as tile `(r, c)`; the
    /// caller guarantees `r < rows`, `c < cols` and `image.len() == channels·h·w`.
    fn blit(&mut self, r: usize, c: usize, image: &[f32]) {
        let ImageShape {
            channels: ch,
            height: h,
            width: w,
        } = self.shape;
        let (th, tw) = (h * self.scale, w * self.scale);
        let x0 = self.pad + c * (tw + self.pad);
        let y0 = self.pad + r * (th + self.pad);
        let plane = h * w;
        // One output line of the tile: `tw` pixels of `ch` interleaved bytes.
        let mut line = vec![0u8; tw * ch];
        for y in 0..h {
            for x in 0..w {
                for k in 0..ch {
                    let v = to_u8(image[k * plane + y * w + x]);
                    for s in 0..self.scale {
                        line[(x * self.scale + s) * ch + k] = v;
                    }
                }
            }
            for sy in 0..self.scale {
                let start = ((y0 + y * self.scale + sy) * self.width + x0) * ch;
                self.pixels[start..start + tw * ch].copy_from_slice(&line);
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        write_png_atomic(
            path,
            self.width,
            self.height,
            self.shape.channels,
            &self.pixels,
        )
    }
}

/// Saves `n` greyscale images as a grid: [`save_grid_png_chw`] with one channel.
///
/// `images`: `(n, h, w)` row-major values in `[0, 1]` (clamped).
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
    save_grid_png_chw(path, images, n, ImageShape::gray(h, w), ncols, pad, scale)
}

/// Saves `n` images as a grid of `min(ncols, n)` columns and `ceil(n / ncols)` rows (see the
/// module documentation for the layout): a greyscale PNG for one channel, RGB for three.
///
/// `images`: `(n, channels, h, w)` row-major values in `[0, 1]` (clamped), each image its
/// channel planes (CHW). `scale` is an integer nearest-neighbour upscaling factor (1 = none).
/// The PNG is written to `path.with_extension("png.tmp")` and renamed to `path`.
///
/// Errors: [`Error::Config`] for a channel count other than 1 or 3, zero sizes or
/// `images.len() != n·channels·h·w`; [`Error::Io`] if the file cannot be written.
pub fn save_grid_png_chw(
    path: &Path,
    images: &[f32],
    n: usize,
    shape: ImageShape,
    ncols: usize,
    pad: usize,
    scale: usize,
) -> Result<()> {
    color_type("image grid", path, shape.channels)?;
    if n == 0 || ncols == 0 {
        return Err(Error::Config(format!(
            "image grid {}: need at least one image and one column (n {n}, ncols {ncols})",
            path.display()
        )));
    }
    let len = shape.len().filter(|&l| l > 0).ok_or_else(|| {
        Error::Config(format!(
            "image grid {}: image size {shape} must be positive and fit in memory",
            path.display()
        ))
    })?;
    if n.checked_mul(len) != Some(images.len()) {
        return Err(Error::Config(format!(
            "image grid {}: {} values for {n} images of {shape}",
            path.display(),
            images.len()
        )));
    }
    let cols = ncols.min(n);
    let rows = n.div_ceil(cols);
    let mut canvas = Canvas::new(rows, cols, shape, pad, scale)?;
    for (i, image) in images.chunks_exact(len).enumerate() {
        canvas.blit(i / cols, i % cols, image);
    }
    canvas.save(path)
}

/// Saves a grid of greyscale images whose rows may hold different numbers of images:
/// [`save_rows_png_chw`] with one channel.
pub fn save_rows_png(
    path: &Path,
    rows: &[Vec<f32>],
    h: usize,
    w: usize,
    pad: usize,
    scale: usize,
) -> Result<()> {
    save_rows_png_chw(path, rows, ImageShape::gray(h, w), pad, scale)
}

/// Saves a grid whose rows may hold different numbers of images: row `r` is `rows[r]`, `n_r`
/// images of `shape` concatenated (`(n_r, channels, h, w)` row-major, CHW). The grid has
/// `rows.len()` rows and `max n_r` columns; shorter rows end in grey cells. Same layout, value
/// mapping, colour types and atomic write as [`save_grid_png_chw`].
///
/// Errors: [`Error::Config`] for a channel count other than 1 or 3, if a row's length is not a
/// multiple of `channels·h·w`, if there are no images at all, or for zero sizes; [`Error::Io`] if
/// the file cannot be written.
pub fn save_rows_png_chw(
    path: &Path,
    rows: &[Vec<f32>],
    shape: ImageShape,
    pad: usize,
    scale: usize,
) -> Result<()> {
    color_type("image rows", path, shape.channels)?;
    let len = shape.len().filter(|&l| l > 0).ok_or_else(|| {
        Error::Config(format!(
            "image rows {}: image size {shape} must be positive",
            path.display()
        ))
    })?;
    let mut cols = 0;
    for (r, row) in rows.iter().enumerate() {
        if row.len() % len != 0 {
            return Err(Error::Config(format!(
                "image rows {}: row {r} has {} values, not a multiple of {shape}",
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
    let mut canvas = Canvas::new(rows.len(), cols, shape, pad, scale)?;
    for (r, row) in rows.iter().enumerate() {
        for (c, image) in row.chunks_exact(len).enumerate() {
            canvas.blit(r, c, image);
        }
    }
    canvas.save(path)
}

/// Writes an 8-bit greyscale (1 channel) or RGB (3 channels) PNG (`pixels`: `(height, width,
/// channels)` row-major) through `path.with_extension("png.tmp")`, renamed into place.
fn write_png_atomic(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<()> {
    let color = color_type("PNG", path, channels)?;
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
            enc.set_color(color);
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

/// Reads a PNG as 8 bits per sample: returns `(height, width, channels, bytes)` with `bytes`
/// `(height, width, channels)` row-major, the samples of a pixel interleaved as the PNG stores
/// them. `channels` is 1 (grey), 2 (grey, alpha), 3 (R, G, B) or 4 (R, G, B, alpha): 16-bit
/// images are reduced to 8 bits and palette images expanded to RGB(A) first.
///
/// Errors: [`Error::Io`] naming the file if it cannot be read or is not a readable PNG.
pub fn read_png(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
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
    let row_len = width
        .checked_mul(channels)
        .filter(|&l| l <= info.line_size)
        .ok_or_else(|| {
            bad(format!(
                "{width}x{height} rows do not fit the decoded lines"
            ))
        })?;
    let mut bytes = Vec::with_capacity(row_len.saturating_mul(height));
    for row in buf.chunks(info.line_size).take(height) {
        bytes.extend_from_slice(&row[..row_len.min(row.len())]);
    }
    if Some(bytes.len()) != row_len.checked_mul(height) {
        return Err(bad(format!(
            "decoded {} bytes for a {width}x{height} image of {channels} channels",
            bytes.len()
        )));
    }
    Ok((height, width, channels, bytes))
}

/// Reads a PNG as 8-bit grey: returns `(height, width, pixels)` with `pixels` `(height, width)`
/// row-major. Colour images are converted with the mean of R, G and B; alpha is dropped and
/// 16-bit and palette images are reduced to 8-bit first.
pub fn read_png_gray(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let (height, width, channels, bytes) = read_png(path)?;
    let pixels = bytes
        .chunks_exact(channels)
        .map(|px| match channels {
            1 | 2 => px[0],
            _ => ((u16::from(px[0]) + u16::from(px[1]) + u16::from(px[2]) + 1) / 3) as u8,
        })
        .collect();
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
        let mut c = Canvas::new(2, 3, ImageShape::gray(2, 1), 1, 2).unwrap();
        assert_eq!((c.width, c.height), (3 * 2 + 4, 2 * 4 + 3));
        c.blit(1, 2, &[1.0, 0.0]);
        // Tile (1, 2) starts at x = 1 + 2*(2+1) = 7, y = 1 + 1*(4+1) = 6.
        assert_eq!(&c.pixels[6 * 10 + 7..6 * 10 + 9], &[255, 255]);
        assert_eq!(&c.pixels[8 * 10 + 7..8 * 10 + 9], &[0, 0]);
        assert_eq!(c.pixels[6 * 10 + 6], PAD_GREY);
    }

    #[test]
    fn rgb_canvas_interleaves_channel_planes() {
        // One 1x2 RGB image: planes R = [1, 0], G = [0, 1], B = [0.5, 0].
        let mut c = Canvas::new(1, 1, ImageShape::rgb(1, 2), 1, 1).unwrap();
        assert_eq!((c.width, c.height), (4, 3));
        assert_eq!(c.pixels.len(), 4 * 3 * 3);
        c.blit(0, 0, &[1.0, 0.0, 0.0, 1.0, 0.5, 0.0]);
        let at = |y: usize, x: usize| &c.pixels[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        assert_eq!(at(1, 1), &[255, 0, 128]);
        assert_eq!(at(1, 2), &[0, 255, 0]);
        assert_eq!(at(0, 0), &[PAD_GREY; 3]);
        assert_eq!(at(1, 3), &[PAD_GREY; 3]);
    }
}
