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
//! dimensions. A file whose first two bytes are `1f 8b` is gzip and is decompressed on the fly,
//! whatever its name. Readers check the magic, reject zero dimensions, and require the payload
//! to be exactly as long as the header declares; they never panic.
//!
//! The file readers stream: they read the header first (through the decompressor for gzip),
//! compute the declared payload size with checked arithmetic, refuse it if it exceeds
//! [`MAX_BYTES`] or the host's memory budget ([`host_memory_budget`]), then read exactly the
//! declared bytes plus one more to detect trailing data, and stop. So a small gzip file that
//! inflates to gigabytes is refused after a few bytes, and a reader never holds more than the
//! header, the declared payload and one byte. A plain file's payload buffer is allocated once
//! after its size was checked against the file's length; gzip content (whose length is unknown
//! until it is inflated) grows its buffer as bytes actually arrive.

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
/// [`DataError::TooLarge`] before more than `MAX_BYTES + 1` bytes are held in memory. The IDX
/// readers do not use it: they stream and stop after the declared size (see the module docs).
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

/// Bytes of host memory one file's payload may take: the run's host-memory budget
/// ([`crate::train::resources::host_budget`]: `WGVAE_HOST_MEMORY`, else 90% of the available
/// memory); [`MAX_BYTES`] if that variable cannot be read (the trainer reports it first).
pub fn host_memory_budget() -> u64 {
    crate::train::resources::host_budget().unwrap_or(MAX_BYTES)
}

/// First chunk of a gzip payload buffer; it doubles as bytes arrive, up to the declared size.
const GZIP_FIRST_CHUNK: usize = 1 << 20;

/// A file's content, decompressed on the fly if the file starts with the gzip magic bytes.
struct Source<'p> {
    path: &'p Path,
    reader: Box<dyn Read>,
    gzip: bool,
    /// The length of a plain regular file (for gzip or special files: unknown).
    plain_len: Option<u64>,
}

impl<'p> Source<'p> {
    fn open(path: &'p Path) -> Result<Self, DataError> {
        let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let file_len = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let mut magic = [0u8; 2];
        let got = read_full(&mut file, &mut magic).map_err(|e| DataError::io(path, e))?;
        let prefix = std::io::Cursor::new(magic[..got].to_vec());
        let gzip = magic[..got] == GZIP_MAGIC;
        let reader: Box<dyn Read> = if gzip {
            Box::new(MultiGzDecoder::new(prefix.chain(file)))
        } else {
            Box::new(prefix.chain(file))
        };
        Ok(Source {
            path,
            reader,
            gzip,
            plain_len: if gzip { None } else { file_len },
        })
    }

    fn read_error(&self, e: std::io::Error) -> DataError {
        if self.gzip {
            DataError::Gzip {
                path: self.path.to_path_buf(),
                detail: e.to_string(),
            }
        } else {
            DataError::io(self.path, e)
        }
    }

    /// Fills as much of `buf` as the content holds; returns how many bytes were read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        read_full(&mut self.reader, buf).map_err(|e| self.read_error(e))
    }

    /// Reads the payload a header declared: exactly `header.need` bytes, then one more to detect
    /// trailing data. Refuses sizes beyond [`MAX_BYTES`] or the host's memory budget first, and
    /// a plain file shorter than declared without reading it.
    fn read_payload(&mut self, header: &Header) -> Result<Vec<u8>, DataError> {
        let path = self.path;
        let truncated = |have: u128| DataError::Truncated {
            path: path.to_path_buf(),
            declared: header.declared.clone(),
            need: header.need,
            have,
        };
        let header_len = header.len as u64;
        if let Some(len) = self.plain_len {
            let have = u128::from(len.saturating_sub(header_len));
            if have < header.need {
                return Err(truncated(have));
            }
        }
        let too_large = |limit: u64, limit_desc| DataError::PayloadTooLarge {
            path: path.to_path_buf(),
            declared: header.declared.clone(),
            need: header.need,
            limit,
            limit_desc,
        };
        if header.need > u128::from(MAX_BYTES) {
            return Err(too_large(MAX_BYTES, "the loader's limit"));
        }
        let budget = host_memory_budget();
        if header.need > u128::from(budget) {
            return Err(too_large(budget, "the memory available on this host"));
        }
        let need = usize::try_from(header.need)
            .map_err(|_| too_large(usize::MAX as u64, "the address space"))?;
        // A plain file was checked to hold the payload: one allocation. Gzip content grows.
        let mut cap = if self.plain_len.is_some() {
            need
        } else {
            need.min(GZIP_FIRST_CHUNK)
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut filled = 0;
        loop {
            if buf.len() < cap {
                buf.try_reserve_exact(cap - buf.len()).map_err(|_| {
                    DataError::io(
                        path,
                        std::io::Error::new(
                            std::io::ErrorKind::OutOfMemory,
                            format!("cannot allocate {cap} bytes for the payload"),
                        ),
                    )
                })?;
                buf.resize(cap, 0);
            }
            let got = self.read_full(&mut buf[filled..])?;
            filled += got;
            if filled < buf.len() || filled == need {
                break;
            }
            cap = need.min(cap.saturating_mul(2));
        }
        if filled < need {
            return Err(truncated(filled as u128));
        }
        let mut one = [0u8; 1];
        if self.read_full(&mut one)? > 0 {
            let extra = self
                .plain_len
                .map(|len| len.saturating_sub(header_len).saturating_sub(need as u64));
            return Err(DataError::Trailing {
                path: path.to_path_buf(),
                extra: extra.filter(|&e| e > 0),
                item: header.item,
            });
        }
        Ok(buf)
    }
}

/// Reads until `buf` is full or the reader is at its end; returns the bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads an IDX image file (plain or gzip): magic `0x00000803`. Streams: see the module docs.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut src = Source::open(path)?;
    let mut raw = [0u8; IMAGES_HEADER_LEN];
    let got = src.read_full(&mut raw)?;
    let header = parse_header(path, &raw[..got], Kind::Images)?;
    let pixels = src.read_payload(&header)?;
    let [n, rows, cols] = header.dims;
    // The payload was read, so its size fits in memory: these conversions are lossless.
    Ok(IdxImages {
        n: n as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels,
    })
}

/// Reads an IDX label file (plain or gzip): magic `0x00000801`. Returns `(n,)` labels. Streams:
/// see the module docs.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut src = Source::open(path)?;
    let mut raw = [0u8; LABELS_HEADER_LEN];
    let got = src.read_full(&mut raw)?;
    let header = parse_header(path, &raw[..got], Kind::Labels)?;
    src.read_payload(&header)
}

/// Which IDX file a reader expects.
#[derive(Clone, Copy)]
enum Kind {
    Images,
    Labels,
}

/// A checked IDX header.
struct Header {
    /// Header bytes.
    len: usize,
    /// `[n, rows, cols]` for images, `[n, 1, 1]` for labels.
    dims: [u32; 3],
    /// Payload bytes the header declares (three u32 factors always fit in u128).
    need: u128,
    /// e.g. "6000 images of 28x28" or "6000 labels".
    declared: String,
    /// "image" or "label", for the trailing-data error.
    item: &'static str,
}

/// Checks the magic and dimensions of the header at the start of `bytes` (which may hold the
/// header only, or be shorter than one) and computes the declared payload size.
fn parse_header(path: &Path, bytes: &[u8], kind: Kind) -> Result<Header, DataError> {
    let (magic, desc, len, kind_name) = match kind {
        Kind::Images => (MAGIC_IMAGES, "IDX images", IMAGES_HEADER_LEN, "images"),
        Kind::Labels => (MAGIC_LABELS, "IDX labels", LABELS_HEADER_LEN, "labels"),
    };
    let truncated_header = |got| DataError::TruncatedHeader {
        path: path.to_path_buf(),
        kind: kind_name,
        len: got,
        need: len,
    };
    if bytes.len() < 4 {
        return Err(truncated_header(bytes.len()));
    }
    check_magic(path, bytes, magic, desc)?;
    if bytes.len() < len {
        return Err(truncated_header(bytes.len()));
    }
    let n = be_u32(bytes, 4);
    let (dims, fields): ([u32; 3], &[&'static str]) = match kind {
        Kind::Images => (
            [n, be_u32(bytes, 8), be_u32(bytes, 12)],
            &["n", "rows", "cols"],
        ),
        Kind::Labels => ([n, 1, 1], &["n"]),
    };
    for (&field, &value) in fields.iter().zip(&dims) {
        if value == 0 {
            return Err(DataError::ZeroDimension {
                path: path.to_path_buf(),
                field,
            });
        }
    }
    let [n, rows, cols] = dims;
    Ok(Header {
        len,
        dims,
        // Three u32 factors always fit in u128: no overflow, and nothing is allocated from it.
        need: u128::from(n) * u128::from(rows) * u128::from(cols),
        declared: match kind {
            Kind::Images => format!("{n} images of {rows}x{cols}"),
            Kind::Labels => format!("{n} labels"),
        },
        item: match kind {
            Kind::Images => "image",
            Kind::Labels => "label",
        },
    })
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

/// Compares the in-memory payload length with the declared one and strips the header in place.
fn take_payload(path: &Path, mut bytes: Vec<u8>, header: &Header) -> Result<Vec<u8>, DataError> {
    let have = bytes.len().saturating_sub(header.len) as u128;
    if have < header.need {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            declared: header.declared.clone(),
            need: header.need,
            have,
        });
    }
    if have > header.need {
        return Err(DataError::Trailing {
            path: path.to_path_buf(),
            extra: Some((have - header.need) as u64),
            item: header.item,
        });
    }
    bytes.drain(..header.len);
    Ok(bytes)
}

/// Parses the (decompressed) content of an IDX image file held in memory; `path` is only used in
/// error messages.
pub fn parse_idx_images(path: &Path, bytes: Vec<u8>) -> Result<IdxImages, DataError> {
    let header = parse_header(path, &bytes, Kind::Images)?;
    let pixels = take_payload(path, bytes, &header)?;
    let [n, rows, cols] = header.dims;
    // The payload length equals `need` and fits in memory, so these conversions are lossless.
    Ok(IdxImages {
        n: n as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels,
    })
}

/// Parses the (decompressed) content of an IDX label file held in memory; `path` is only used in
/// error messages.
pub fn parse_idx_labels(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    let header = parse_header(path, &bytes, Kind::Labels)?;
    take_payload(path, bytes, &header)
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
        assert!(matches!(err, DataError::Trailing { extra: Some(1), .. }));
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
