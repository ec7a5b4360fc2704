//! A folder of PNG and JPEG images as a data set.
//!
//! **Layouts.** `DIR/train/` and `DIR/test/` (both required when either exists) give the two
//! splits. Otherwise every image under `DIR` is one pool, split by a fixed-seed shuffle
//! ([`SPLIT_SEED`]) of the paths sorted by name: the first [`test_count`] images of the
//! shuffle (about 10%, at least one) are the test set, the rest the training set, each kept
//! in path order. The split depends only on the set of relative paths, not on the order the
//! file system lists them.
//!
//! **Labels.** Images sitting in subfolders (`DIR/cat/*.png`, or `DIR/train/cat/*.png` and
//! `DIR/test/cat/*.png`) are labelled by their folder: the class names (of both splits
//! together) sorted by name, the first being label 0, at most [`MAX_CLASSES`]. Images
//! directly in `DIR` (or in `DIR/train/` and `DIR/test/`) have no labels. A folder holding
//! both images and subfolders, a class folder without images, or folders nested deeper are
//! errors.
//!
//! **Files.** Names starting with `.` (files and folders) are skipped. A `.png`, `.jpg` or
//! `.jpeg` file (any case) is decoded by its content (PNG or JPEG signature), and a file that
//! does not decode is an error naming it. A file of another image format ([`UNSUPPORTED`]:
//! GIF, BMP, WebP, TIFF, …) is an error. Any other file (text, CSV, JSON, …) is ignored, unless
//! its first bytes are a PNG or JPEG signature, in which case it is read as that image.
//!
//! **Pixels.** Every image must have the same width and height (the error names the first
//! file that differs and both sizes). Greyscale images (with or without alpha) give one
//! channel; RGB, RGBA and palette images three (alpha is dropped, palettes expanded, 16-bit
//! samples reduced to their high byte). If any image is colour, the set is colour and the
//! greyscale images are replicated into the three channels. Sizes are computed with checked
//! arithmetic, and the whole set is checked against the host's memory budget
//! ([`super::idx::host_memory_budget`]) from the file headers before any pixel is decoded.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Split};

/// Most classes (labels are bytes).
pub const MAX_CLASSES: usize = 256;

/// Seed of the shuffle that splits a folder without `train/` and `test/`.
pub const SPLIT_SEED: u64 = 0x0f01_de75;

/// Extensions of the image files read (compared without regard to case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Extensions of image formats that are not read: such a file is an error, not skipped.
pub const UNSUPPORTED: [&str; 16] = [
    "gif", "bmp", "webp", "tif", "tiff", "pgm", "ppm", "pbm", "pnm", "avif", "heic", "heif", "ico",
    "jxl", "qoi", "tga",
];

const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_MAGIC: [u8; 3] = [0xff, 0xd8, 0xff];

/// Images in the test split when `n` images are split by the seeded shuffle: 10% rounded,
/// at least 1 and at most `n − 1`.
pub fn test_count(n: usize) -> usize {
    (n / 10 + usize::from(n % 10 >= 5)).clamp(1, n.saturating_sub(1).max(1))
}

fn err(path: &Path, detail: impl Into<String>) -> DataError {
    DataError::Folder {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// What a directory entry is to the loader.
enum Kind {
    Skip,
    Image,
    Folder,
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The first bytes of a file (up to 8).
fn head(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    Ok(buf[..got].to_vec())
}

fn classify(path: &Path) -> Result<Kind, DataError> {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    if hidden {
        return Ok(Kind::Skip);
    }
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        return Ok(Kind::Folder);
    }
    if !meta.is_file() {
        return Ok(Kind::Skip);
    }
    let ext = extension(path);
    if EXTENSIONS.contains(&ext.as_str()) {
        return Ok(Kind::Image);
    }
    if UNSUPPORTED.contains(&ext.as_str()) {
        return Err(err(
            path,
            format!(
                "a .{ext} image; wgvae reads PNG and JPEG images only (convert it, or move it \
                 out of the folder)"
            ),
        ));
    }
    let h = head(path)?;
    if h.starts_with(&PNG_MAGIC) || h.starts_with(&JPEG_MAGIC) {
        Ok(Kind::Image)
    } else {
        Ok(Kind::Skip)
    }
}

/// The non-hidden entries of `dir`, sorted by name, as (path, kind).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, Kind)>, DataError> {
    let mut paths = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        paths.push(e.map_err(|e| DataError::io(dir, e))?.path());
    }
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match classify(&p)? {
            Kind::Skip => {}
            kind => out.push((p, kind)),
        }
    }
    Ok(out)
}

/// The images of one root (a whole folder, or its `train/` or `test/`): loose images, or
/// images in class folders as (class name, images).
enum Root {
    Loose(Vec<PathBuf>),
    Classes(Vec<(String, Vec<PathBuf>)>),
}

fn read_root(dir: &Path) -> Result<Root, DataError> {
    let all = entries(dir)?;
    let images: Vec<PathBuf> = all
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Image))
        .map(|(p, _)| p.clone())
        .collect();
    let folders: Vec<PathBuf> = all
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Folder))
        .map(|(p, _)| p.clone())
        .collect();
    match (images.first(), folders.first()) {
        (None, None) => Err(err(dir, "no PNG or JPEG images in this folder")),
        (Some(i), Some(f)) => Err(err(
            dir,
            format!(
                "holds both images ({}) and folders ({}); put every image in a class folder, \
                 or none",
                i.display(),
                f.display()
            ),
        )),
        (Some(_), None) => Ok(Root::Loose(images)),
        (None, Some(_)) => {
            let mut classes = Vec::with_capacity(folders.len());
            for f in folders {
                let mut imgs = Vec::new();
                for (p, kind) in entries(&f)? {
                    match kind {
                        Kind::Image => imgs.push(p),
                        _ => {
                            return Err(err(
                                &p,
                                "a folder inside a class folder; images are read from class \
                                 folders one level deep only",
                            ));
                        }
                    }
                }
                if imgs.is_empty() {
                    return Err(err(&f, "class folder without PNG or JPEG images"));
                }
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                classes.push((name, imgs));
            }
            Ok(Root::Classes(classes))
        }
    }
}

/// Whether `dir` looks like a folder of images: it has a `train/` or `test/` folder, or an
/// image file ([`EXTENSIONS`]) directly or in a subfolder. Errors only if `dir` cannot be
/// listed.
pub fn is_image_folder(dir: &Path) -> Result<bool, DataError> {
    if dir.join("train").is_dir() || dir.join("test").is_dir() {
        return Ok(true);
    }
    let is_image = |p: &Path| p.is_file() && EXTENSIONS.contains(&extension(p).as_str());
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        if is_image(&p) {
            return Ok(true);
        }
        if p.is_dir()
            && let Ok(inner) = std::fs::read_dir(&p)
        {
            for f in inner.flatten() {
                if is_image(&f.path()) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// An image file to read, with its label.
struct Item {
    path: PathBuf,
    label: Option<u8>,
}

/// The label of each class name (sorted), checked against [`MAX_CLASSES`].
fn label_map(dir: &Path, names: &[&str]) -> Result<Vec<String>, DataError> {
    let mut classes: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() > MAX_CLASSES {
        return Err(err(
            dir,
            format!(
                "{} class folders; at most {MAX_CLASSES} (labels are bytes)",
                classes.len()
            ),
        ));
    }
    Ok(classes)
}

fn items(root: &Root, classes: &[String]) -> Vec<Item> {
    match root {
        Root::Loose(paths) => paths
            .iter()
            .map(|p| Item {
                path: p.clone(),
                label: None,
            })
            .collect(),
        Root::Classes(list) => list
            .iter()
            .flat_map(|(name, paths)| {
                // The map holds every name, and at most 256 of them.
                let label = classes.binary_search(name).unwrap_or(0) as u8;
                paths.iter().map(move |p| Item {
                    path: p.clone(),
                    label: Some(label),
                })
            })
            .collect(),
    }
}

/// Width, height and channels (1 or 3) of an image, from its header.
struct Header {
    width: usize,
    height: usize,
    channels: usize,
}

fn png_decoder(path: &Path) -> Result<png::Decoder<BufReader<File>>, DataError> {
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let limit = usize::try_from(super::idx::host_memory_budget()).unwrap_or(usize::MAX);
    let mut d = png::Decoder::new_with_limits(BufReader::new(f), png::Limits { bytes: limit });
    d.set_transformations(png::Transformations::normalize_to_color8());
    Ok(d)
}

fn png_channels(c: png::ColorType) -> usize {
    match c {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => 1,
        _ => 3,
    }
}

fn is_png(path: &Path) -> Result<bool, DataError> {
    let h = head(path)?;
    if h.starts_with(&PNG_MAGIC) {
        Ok(true)
    } else if h.starts_with(&JPEG_MAGIC) {
        Ok(false)
    } else {
        Err(err(
            path,
            "neither a PNG nor a JPEG file (unknown signature)",
        ))
    }
}

fn jpeg_options() -> zune_jpeg::zune_core::options::DecoderOptions {
    zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
}

fn header(path: &Path) -> Result<Header, DataError> {
    if is_png(path)? {
        let mut d = png_decoder(path)?;
        let info = d
            .read_header_info()
            .map_err(|e| err(path, format!("not a readable PNG: {e}")))?;
        Ok(Header {
            width: info.width as usize,
            height: info.height as usize,
            channels: png_channels(info.color_type),
        })
    } else {
        let f = File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut d = zune_jpeg::JpegDecoder::new_with_options(BufReader::new(f), jpeg_options());
        d.decode_headers()
            .map_err(|e| err(path, format!("not a readable JPEG: {e:?}")))?;
        let info = d
            .info()
            .ok_or_else(|| err(path, "not a readable JPEG: no frame header"))?;
        Ok(Header {
            width: usize::from(info.width),
            height: usize::from(info.height),
            channels: if info.components == 1 { 1 } else { 3 },
        })
    }
}

/// Decodes `path` into `out` (`channels` planes of `height × width`, CHW); the image must
/// have the size of `want`.
fn decode_into(path: &Path, want: &Header, out: &mut [u8]) -> Result<(), DataError> {
    let plane = want.width * want.height;
    let (pixels, src_ch) = if is_png(path)? {
        let mut reader = png_decoder(path)?
            .read_info()
            .map_err(|e| err(path, format!("not a readable PNG: {e}")))?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| err(path, "PNG too large for this host"))?;
        let mut buf = vec![0u8; size];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| err(path, format!("not a readable PNG: {e}")))?;
        if (info.width as usize, info.height as usize) != (want.width, want.height) {
            return Err(err(path, "the image changed while the folder was read"));
        }
        buf.truncate(info.buffer_size());
        let samples = info.color_type.samples();
        // Rows may be padded to `line_size`; keep `width × samples` bytes of each.
        let row = want.width * samples;
        let mut px = Vec::with_capacity(plane * samples);
        for r in 0..want.height {
            let start = r * info.line_size;
            let line = buf
                .get(start..start + row)
                .ok_or_else(|| err(path, "PNG frame shorter than its header says"))?;
            px.extend_from_slice(line);
        }
        // Keep grey or RGB, drop alpha.
        let keep = png_channels(info.color_type);
        let px: Vec<u8> = if samples == keep {
            px
        } else {
            px.chunks_exact(samples)
                .flat_map(|s| s[..keep].to_vec())
                .collect()
        };
        (px, keep)
    } else {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let cursor = zune_jpeg::zune_core::bytestream::ZCursor::new(bytes.as_slice());
        let mut probe = zune_jpeg::JpegDecoder::new_with_options(cursor, jpeg_options());
        probe
            .decode_headers()
            .map_err(|e| err(path, format!("not a readable JPEG: {e:?}")))?;
        let components = probe.info().map_or(0, |i| i.components);
        let (space, ch) = if components == 1 {
            (zune_jpeg::zune_core::colorspace::ColorSpace::Luma, 1)
        } else {
            (zune_jpeg::zune_core::colorspace::ColorSpace::RGB, 3)
        };
        // A decoder set up for that output from the start.
        let cursor = zune_jpeg::zune_core::bytestream::ZCursor::new(bytes.as_slice());
        let options = jpeg_options().jpeg_set_out_colorspace(space);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(cursor, options);
        d.decode_headers()
            .map_err(|e| err(path, format!("not a readable JPEG: {e:?}")))?;
        if d.dimensions() != Some((want.width, want.height)) {
            return Err(err(path, "the image changed while the folder was read"));
        }
        let size = d
            .output_buffer_size()
            .ok_or_else(|| err(path, "JPEG too large for this host"))?;
        let mut px = vec![0u8; size];
        d.decode_into(&mut px)
            .map_err(|e| err(path, format!("not a readable JPEG: {e:?}")))?;
        (px, ch)
    };
    if pixels.len() != plane * src_ch {
        return Err(err(
            path,
            format!(
                "decoded {} bytes, expected {} for {}x{} pixels of {src_ch} channel(s)",
                pixels.len(),
                plane * src_ch,
                want.width,
                want.height
            ),
        ));
    }
    // HWC to CHW; a grey image in a colour set fills every channel.
    let channels = out.len() / plane.max(1);
    for c in 0..channels {
        let sc = if src_ch == 1 { 0 } else { c };
        for (o, i) in out[c * plane..(c + 1) * plane].iter_mut().zip(0..plane) {
            *o = pixels[i * src_ch + sc];
        }
    }
    Ok(())
}

/// Reads the headers of `items` (all splits, in order), checks that the sizes agree and that
/// the set fits the memory budget. Returns the common header (channels 3 if any is colour).
fn common_header(dir: &Path, items: &[&Item]) -> Result<Header, DataError> {
    // In name order, so that the file named is the first that differs from the first.
    let mut items = items.to_vec();
    items.sort_by(|a, b| a.path.cmp(&b.path));
    let first = items
        .first()
        .ok_or_else(|| err(dir, "no PNG or JPEG images in this folder"))?;
    let h0 = header(&first.path)?;
    let mut channels = h0.channels;
    for it in &items[1..] {
        let h = header(&it.path)?;
        if (h.width, h.height) != (h0.width, h0.height) {
            return Err(err(
                &it.path,
                format!(
                    "{}x{} pixels (width x height), but {} is {}x{}; every image must have the \
                     same size",
                    h.width,
                    h.height,
                    first.path.display(),
                    h0.width,
                    h0.height
                ),
            ));
        }
        channels = channels.max(h.channels);
    }
    let declared = format!(
        "{} images of {channels}x{}x{}",
        items.len(),
        h0.height,
        h0.width
    );
    let need = (items.len() as u128)
        .checked_mul(channels as u128)
        .and_then(|v| v.checked_mul(h0.height as u128))
        .and_then(|v| v.checked_mul(h0.width as u128));
    let budget = super::idx::host_memory_budget();
    match need {
        Some(need) if need <= u128::from(budget) && usize::try_from(need).is_ok() => {}
        _ => {
            return Err(DataError::PayloadTooLarge {
                path: dir.to_path_buf(),
                declared,
                need: need.unwrap_or(u128::MAX),
                limit: budget,
                limit_desc: "the memory available on this host",
            });
        }
    }
    Ok(Header {
        width: h0.width,
        height: h0.height,
        channels,
    })
}

/// Decodes `items` into a data set of the common size `h`.
fn decode_set(name: &str, items: &[Item], h: &Header) -> Result<Dataset, DataError> {
    let len = h.channels * h.height * h.width;
    let mut pixels = vec![0u8; items.len() * len];
    for (it, out) in items.iter().zip(pixels.chunks_exact_mut(len.max(1))) {
        decode_into(&it.path, h, out)?;
    }
    let labels = if items.iter().all(|i| i.label.is_some()) {
        Some(items.iter().map(|i| i.label.unwrap_or(0)).collect())
    } else {
        None
    };
    Ok(Dataset {
        name: name.to_string(),
        n: items.len(),
        channels: h.channels,
        height: h.height,
        width: h.width,
        pixels,
        labels,
        factors: None,
    })
}

/// A folder data set and its class names (label `i` is `classes[i]`; empty without labels).
#[derive(Debug, Clone, PartialEq)]
pub struct FolderSet {
    pub split: Split,
    pub classes: Vec<String>,
}

/// Loads a folder of images (see the module documentation for the layouts and rules).
pub fn load_folder(dir: &Path) -> Result<FolderSet, DataError> {
    super::check_dir(dir, "PNG or JPEG images")?;
    let name = super::dir_name(dir);
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let (train, test, classes) = if train_dir.is_dir() || test_dir.is_dir() {
        for (p, other) in [(&train_dir, &test_dir), (&test_dir, &train_dir)] {
            if !p.is_dir() {
                return Err(err(
                    dir,
                    format!(
                        "has {} but no {} folder; give both, or neither (then about 10% of \
                         the images are held out for testing)",
                        other.display(),
                        p.display()
                    ),
                ));
            }
        }
        for (p, _) in entries(dir)? {
            if p != train_dir && p != test_dir {
                return Err(err(
                    &p,
                    "next to the train/ and test/ folders; only those two are read (move or \
                     remove it)",
                ));
            }
        }
        let (tr, te) = (read_root(&train_dir)?, read_root(&test_dir)?);
        let classes = match (&tr, &te) {
            (Root::Loose(_), Root::Loose(_)) => Vec::new(),
            (Root::Classes(a), Root::Classes(b)) => {
                let names: Vec<&str> = a.iter().chain(b).map(|(n, _)| n.as_str()).collect();
                label_map(dir, &names)?
            }
            _ => {
                return Err(err(
                    dir,
                    "one of train/ and test/ has class folders and the other loose images; \
                     use the same layout in both",
                ));
            }
        };
        (items(&tr, &classes), items(&te, &classes), classes)
    } else {
        let root = read_root(dir)?;
        let classes = match &root {
            Root::Loose(_) => Vec::new(),
            Root::Classes(list) => {
                let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
                label_map(dir, &names)?
            }
        };
        let mut all = items(&root, &classes);
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let n = all.len();
        if n < 2 {
            return Err(err(
                dir,
                format!(
                    "{n} image; at least 2 are needed to hold one out for testing (or give \
                     train/ and test/ folders)"
                ),
            ));
        }
        let n32 = u32::try_from(n).map_err(|_| err(dir, format!("{n} images; too many")))?;
        let perm = crate::rng::HostRng::new(SPLIT_SEED).permutation(n32 as usize);
        let mut is_test = vec![false; n];
        for &i in &perm[..test_count(n)] {
            is_test[i as usize] = true;
        }
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (item, t) in all.into_iter().zip(is_test) {
            if t { &mut test } else { &mut train }.push(item);
        }
        (train, test, classes)
    };
    let both: Vec<&Item> = train.iter().chain(&test).collect();
    let h = common_header(dir, &both)?;
    let split = Split {
        train: decode_set(&name, &train, &h)?,
        test: decode_set(&name, &test, &h)?,
        classes: classes.clone(),
    };
    Ok(FolderSet { split, classes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_percent_held_out_at_least_one() {
        assert_eq!(test_count(2), 1);
        assert_eq!(test_count(9), 1);
        assert_eq!(test_count(14), 1);
        assert_eq!(test_count(15), 2);
        assert_eq!(test_count(100), 10);
        assert_eq!(test_count(1000), 100);
    }
}
