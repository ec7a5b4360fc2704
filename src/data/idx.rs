//! The IDX file format of MNIST (also used by Fashion-MNIST, KMNIST, EMNIST), plain or gzip.
//!
//! An IDX file is a big-endian header followed by the raw payload:
//!
//! | bytes | field | images (`idx3-ubyte`) | labels (`idx1-ubyte`) |
//! | --- | --- | --- | --- |
//! | 0..4 | `magic` | `0x00000803` (u8, 3 dims) | `0x00000801` (u8, 1 dim) |
//! | 4..8 | `n` | number of images | number of labels |
//! | 8..12 | `rows` | image height | — |
//! | 12..16 | `cols` | image width | — |
//! | rest | payload | `(n, rows, cols)` row-major bytes | `(n,)` bytes |
//!
//! The third byte of `magic` is the element type (`0x08` = u8) and the fourth the number of
//! dimensions. A file whose first two bytes are `1f 8b` is gzip and is decompressed first,
//! whatever its name. Readers check the magic, reject zero dimensions, and require the payload
//! to be exactly as long as the header declares; they never panic, and they never allocate more
//! than the file (or its decompressed content, capped at [`MAX_BYTES`]) actually holds.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::DataError;

/// `magic` of a u8 tensor with 3 dimensions: images `(n, rows, cols)`.
pub const MAGIC_IMAGES: u32 = 0x0000_0803;
/// `magic` of a u8 tensor with 1 dimension: labels `(n,)`.
pub const MAGIC_LABELS: u32 = 0x0000_0801;
/// Header length of an image file: magic, n, rows, cols.
pub const IMAGES_HEADER_LEN: usize = 16;
/// Header length of a label file: magic, n.
pub const LABELS_HEADER_LEN: usize = 8;
/// Largest file, or decompressed gzip content, the readers accept: 2 GiB.
pub const MAX_BYTES: u64 = 1 << 31;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The content of an IDX image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// `(n, rows, cols)` row-major bytes.
    pub pixels: Vec<u8>,
}

/// Reads a file whole, decompressing it if it starts with the gzip magic bytes `1f 8b`.
///
/// Files (and decompressed content) larger than [`MAX_BYTES`] are refused with
/// [`DataError::TooLarge`] before more than `MAX_BYTES + 1` bytes are held in memory.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut raw = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| DataError::io(path, e))?;
    if raw.len() as u64 > MAX_BYTES {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            what: "the file",
            limit: MAX_BYTES,
        });
    }
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(raw.as_slice())
        .take(MAX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if out.len() as u64 > MAX_BYTES {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            what: "the decompressed gzip content",
            limit: MAX_BYTES,
        });
    }
    Ok(out)
}

/// Reads an IDX image file (plain or gzip): magic `0x00000803`.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx_images(path, bytes)
}

/// Reads an IDX label file (plain or gzip): magic `0x00000801`. Returns `(n,)` labels.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx_labels(path, bytes)
}

/// Big-endian u32 at `at`; the caller has checked that `bytes` is long enough.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_be_bytes(word)
}

/// Human description of an IDX `magic` value, for error messages.
fn describe_magic(magic: u32) -> String {
    let [z0, z1, ty, dims] = magic.to_be_bytes();
    if z0 != 0 || z1 != 0 {
        if [z0, z1] == GZIP_MAGIC {
            return "gzip data inside the decompressed content: doubly compressed?".to_string();
        }
        return "not an IDX file: the first two bytes must be zero".to_string();
    }
    let ty = match ty {
        0x08 => "u8",
        0x09 => "i8",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => return format!("unknown IDX element type 0x{ty:02x}"),
    };
    match (ty, dims) {
        ("u8", 1) => "IDX labels".to_string(),
        ("u8", 3) => "IDX images".to_string(),
        _ => format!("IDX {ty} tensor with {dims} dimensions"),
    }
}

/// Checks the 4-byte `magic` at the start of `bytes` (which the caller made sure is there).
fn check_magic(
    path: &Path,
    bytes: &[u8],
    expected: u32,
    expected_desc: &'static str,
) -> Result<(), DataError> {
    let found = be_u32(bytes, 0);
    if found != expected {
        return Err(DataError::Magic {
            path: path.to_path_buf(),
            found,
            found_desc: describe_magic(found),
            expected,
            expected_desc,
        });
    }
    Ok(())
}

/// Compares the payload length with the declared one and strips the header in place.
fn take_payload(
    path: &Path,
    mut bytes: Vec<u8>,
    header_len: usize,
    need: u128,
    declared: impl FnOnce() -> String,
    item: &'static str,
) -> Result<Vec<u8>, DataError> {
    let have = bytes.len().saturating_sub(header_len) as u128;
    if have < need {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            declared: declared(),
            need,
            have,
        });
    }
    if have > need {
        return Err(DataError::Trailing {
            path: path.to_path_buf(),
            extra: (have - need) as u64,
            item,
        });
    }
    bytes.drain(..header_len);
    Ok(bytes)
}

/// Parses the content of an IDX image file; `path` is only used in error messages.
pub fn parse_idx_images(path: &Path, bytes: Vec<u8>) -> Result<IdxImages, DataError> {
    let truncated_header = |len| DataError::TruncatedHeader {
        path: path.to_path_buf(),
        kind: "images",
        len,
        need: IMAGES_HEADER_LEN,
    };
    if bytes.len() < 4 {
        return Err(truncated_header(bytes.len()));
    }
    check_magic(path, &bytes, MAGIC_IMAGES, "IDX images")?;
    if bytes.len() < IMAGES_HEADER_LEN {
        return Err(truncated_header(bytes.len()));
    }
    let n = be_u32(&bytes, 4);
    let rows = be_u32(&bytes, 8);
    let cols = be_u32(&bytes, 12);
    for (field, value) in [("n", n), ("rows", rows), ("cols", cols)] {
        if value == 0 {
            return Err(DataError::ZeroDimension {
                path: path.to_path_buf(),
                field,
            });
        }
    }
    // Three u32 factors always fit in u128: no overflow, and nothing is allocated from it.
    let need = u128::from(n) * u128::from(rows) * u128::from(cols);
    let pixels = take_payload(
        path,
        bytes,
        IMAGES_HEADER_LEN,
        need,
        || format!("{n} images of {rows}x{cols}"),
        "image",
    )?;
    // The payload length equals `need` and fits in memory, so these conversions are lossless.
    Ok(IdxImages {
        n: n as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels,
    })
}

/// Parses the content of an IDX label file; `path` is only used in error messages.
pub fn parse_idx_labels(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    let truncated_header = |len| DataError::TruncatedHeader {
        path: path.to_path_buf(),
        kind: "labels",
        len,
        need: LABELS_HEADER_LEN,
    };
    if bytes.len() < 4 {
        return Err(truncated_header(bytes.len()));
    }
    check_magic(path, &bytes, MAGIC_LABELS, "IDX labels")?;
    if bytes.len() < LABELS_HEADER_LEN {
        return Err(truncated_header(bytes.len()));
    }
    let n = be_u32(&bytes, 4);
    if n == 0 {
        return Err(DataError::ZeroDimension {
            path: path.to_path_buf(),
            field: "n",
        });
    }
    take_payload(
        path,
        bytes,
        LABELS_HEADER_LEN,
        u128::from(n),
        || format!("{n} labels"),
        "label",
    )
}

/// `path` with `.tmp` appended to its file name (`a.gz` → `a.gz.tmp`).
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `header` then `payload` to `path` (gzip-compressed if `gzip`) through a temporary file
/// that is renamed into place, so a reader never sees a half-written file.
fn write_atomic(path: &Path, header: &[u8], payload: &[u8], gzip: bool) -> Result<(), DataError> {
    let tmp = tmp_path(path);
    let result = (|| -> Result<(), DataError> {
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let mut out = BufWriter::new(file);
        let io = |e| DataError::io(&tmp, e);
        if gzip {
            let mut enc = GzEncoder::new(&mut out, Compression::default());
            enc.write_all(header).map_err(io)?;
            enc.write_all(payload).map_err(io)?;
            enc.finish().map_err(io)?;
        } else {
            out.write_all(header).map_err(io)?;
            out.write_all(payload).map_err(io)?;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A dimension as the u32 the IDX header stores, or an [`DataError::InvalidArgument`].
fn header_dim(path: &Path, field: &str, value: usize) -> Result<u32, DataError> {
    match u32::try_from(value) {
        Ok(0) | Err(_) => Err(DataError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!("`{field}` is {value}; IDX dimensions must be in 1..=4294967295"),
        }),
        Ok(v) => Ok(v),
    }
}

/// Writes `n` images of `rows x cols` bytes (`pixels`: `(n, rows, cols)` row-major) as an IDX
/// image file, gzip-compressed if `gzip` (the name is not changed: pass a `.gz` path yourself).
///
/// The file is written to `<path>.tmp` and renamed into place.
pub fn write_idx_images(
    path: &Path,
    n: usize,
    rows: usize,
    cols: usize,
    pixels: &[u8],
    gzip: bool,
) -> Result<(), DataError> {
    let n32 = header_dim(path, "n", n)?;
    let rows32 = header_dim(path, "rows", rows)?;
    let cols32 = header_dim(path, "cols", cols)?;
    let need = n.checked_mul(rows).and_then(|v| v.checked_mul(cols));
    if need != Some(pixels.len()) {
        return Err(DataError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!(
                "{n} images of {rows}x{cols} need {} bytes but the pixel buffer has {}",
                need.map_or_else(|| "more than usize::MAX".to_string(), |v| v.to_string()),
                pixels.len()
            ),
        });
    }
    let mut header = [0u8; IMAGES_HEADER_LEN];
    for (i, v) in [MAGIC_IMAGES, n32, rows32, cols32].into_iter().enumerate() {
        header[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    write_atomic(path, &header, pixels, gzip)
}

/// Writes `(n,)` labels as an IDX label file, gzip-compressed if `gzip`, through `<path>.tmp`.
pub fn write_idx_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<(), DataError> {
    let n32 = header_dim(path, "n", labels.len())?;
    let mut header = [0u8; LABELS_HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC_LABELS.to_be_bytes());
    header[4..].copy_from_slice(&n32.to_be_bytes());
    write_atomic(path, &header, labels, gzip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("mem.idx")
    }

    fn images_bytes(n: u32, rows: u32, cols: u32, payload: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [MAGIC_IMAGES, n, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..payload).map(|i| i as u8));
        b
    }

    #[test]
    fn parses_valid_images() {
        let img = parse_idx_images(p(), images_bytes(2, 3, 4, 24)).unwrap();
        assert_eq!((img.n, img.rows, img.cols), (2, 3, 4));
        assert_eq!(img.pixels, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_bad_headers_without_panicking() {
        for len in 0..IMAGES_HEADER_LEN {
            let mut b = images_bytes(1, 1, 1, 1);
            b.truncate(len);
            assert!(parse_idx_images(p(), b).is_err(), "len {len}");
        }
        let err = parse_idx_images(p(), images_bytes(2, 3, 4, 23)).unwrap_err();
        assert!(matches!(
            err,
            DataError::Truncated {
                need: 24,
                have: 23,
                ..
            }
        ));
        let err = parse_idx_images(p(), images_bytes(2, 3, 4, 25)).unwrap_err();
        assert!(matches!(err, DataError::Trailing { extra: 1, .. }));
        let err = parse_idx_images(p(), images_bytes(2, 0, 4, 0)).unwrap_err();
        assert!(matches!(
            err,
            DataError::ZeroDimension { field: "rows", .. }
        ));
        // Huge declared sizes are compared, never allocated.
        let err = parse_idx_images(p(), images_bytes(u32::MAX, u32::MAX, 2, 5)).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        let err = parse_idx_images(p(), images_bytes(u32::MAX, u32::MAX, u32::MAX, 5)).unwrap_err();
        assert!(
            err.to_string()
                .contains("4294967295 images of 4294967295x4294967295"),
            "{err}"
        );
    }

    #[test]
    fn magic_is_described() {
        assert_eq!(describe_magic(MAGIC_LABELS), "IDX labels");
        assert_eq!(
            describe_magic(0x0000_0D02),
            "IDX f32 tensor with 2 dimensions"
        );
        assert!(describe_magic(0x8950_4e47).starts_with("not an IDX file"));
        let mut labels = MAGIC_LABELS.to_be_bytes().to_vec();
        labels.extend_from_slice(&[0, 0, 0, 1, 5]);
        assert_eq!(parse_idx_labels(p(), labels.clone()).unwrap(), vec![5]);
        let err = parse_idx_images(p(), labels).unwrap_err().to_string();
        assert!(err.contains("0x00000801 (IDX labels)"), "{err}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A SplitMix64 stream of short random inputs around the header boundaries.
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| (next() % 4) as u8).collect();
            if len >= 4 && next() % 2 == 0 {
                b[..4].copy_from_slice(&MAGIC_IMAGES.to_be_bytes());
            }
            let _ = parse_idx_images(p(), b.clone());
            let _ = parse_idx_labels(p(), b);
        }
    }
}
