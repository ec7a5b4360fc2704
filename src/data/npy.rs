//! NumPy `.npy` files: greyscale or colour images, and class labels.
//!
//! # Format
//! A `.npy` file is the magic `\x93NUMPY`, a major and a minor version byte, the header length
//! (little-endian u16 for version 1, u32 for versions 2 and 3), the header — a Python dict literal
//! such as `{'descr': '<f4', 'fortran_order': False, 'shape': (60000, 32, 32, 3), }` padded with
//! spaces and ended by a newline — and then the elements, row-major (C order).
//!
//! # What the readers accept
//! Images ([`read_npy_images`]):
//! * `descr` `|u1` (bytes, taken as they are) or `<f4`/`>f4`/`<f8`/`>f8` (floats, which must be
//!   finite and in `[0, 1]`; each becomes the byte `round(v·255)`, halves away from zero);
//! * `shape` `(N, H, W)` (one channel), `(N, C, H, W)` with `C` 1 or 3 (kept as it is, CHW), or
//!   `(N, H, W, C)` with `C` 1 or 3 (transposed to CHW while reading). A 4-dimensional shape is
//!   taken as `(N, C, H, W)` when its second axis is 1 or 3 and as `(N, H, W, C)` otherwise, so
//!   an ambiguous shape such as `(N, 3, 3, 3)` or `(N, 1, 8, 3)` is read as `(N, C, H, W)`: save
//!   such arrays channels-first;
//! * `fortran_order` `False` (a Fortran-ordered image array is refused: save it with
//!   `np.ascontiguousarray`).
//!
//! Labels ([`read_npy_labels`]): shape `(N,)`, any integer `descr` of 1, 2, 4 or 8 bytes (e.g.
//! `|u1` or `<i8`), every value in `0..=255`.
//!
//! # Safety against bad files
//! Nothing is allocated from a size in the file before it was checked: the header length is at
//! most [`MAX_HEADER_LEN`] and must fit in the file; every product of the shape is computed with
//! checked arithmetic; the element bytes the header declares must be exactly the bytes that follow
//! it (a plain file is checked by its length before anything is read); and the bytes kept in
//! memory must fit [`super::idx::MAX_BYTES`] and the host's memory budget
//! ([`super::idx::host_memory_budget`]). Float files are converted in chunks, so their bytes are
//! never held whole. Every problem is a [`DataError`] naming the file and the header field or
//! value at fault.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::DataError;
use super::idx::{MAX_BYTES, host_memory_budget, read_full};

/// The first six bytes of every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Largest header (the dict literal and its padding) the reader accepts: 64 KiB.
pub const MAX_HEADER_LEN: usize = 1 << 16;
/// Nesting depth of the header literal beyond which it is refused.
const MAX_DEPTH: usize = 8;
/// Bytes of elements converted at a time.
const CHUNK: usize = 1 << 20;

/// Element type of a `.npy` array: the `descr` string, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    /// `b'u'` (unsigned), `b'i'` (signed) or `b'f'` (float).
    pub kind: u8,
    /// Bytes per element: 1, 2, 4 or 8.
    pub size: usize,
    /// Byte order of multi-byte elements.
    pub big_endian: bool,
}

impl Dtype {
    fn is_int(self) -> bool {
        self.kind == b'u' || self.kind == b'i'
    }
}

/// A checked `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// `(major, minor)` format version.
    pub version: (u8, u8),
    /// The `descr` string as written, e.g. `"<f4"`.
    pub descr: String,
    /// `descr`, decoded.
    pub dtype: Dtype,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
    /// Offset of the first element: magic, version, length field and header.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Number of elements (the product of `shape`), or `None` if it overflows u64.
    pub fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Bytes of elements the header declares, or `None` if that overflows u64.
    pub fn data_len(&self) -> Option<u64> {
        self.elements()?.checked_mul(self.dtype.size as u64)
    }
}

/// The content of a `.npy` image file, in the layout of [`super::Dataset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyImages {
    pub n: usize,
    /// 1 or 3.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `(n, channels, height, width)` row-major bytes.
    pub pixels: Vec<u8>,
}

fn npy_err(path: &Path, field: &'static str, detail: impl Into<String>) -> DataError {
    DataError::Npy {
        path: path.to_path_buf(),
        field,
        detail: detail.into(),
    }
}

/// `(2, 3)` as numpy prints a shape (`(5,)` for one dimension).
pub fn shape_string(shape: &[u64]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

// ---- The header literal --------------------------------------------------------------------

/// A value of the header's Python literal.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    None,
    /// A non-negative integer (negative ones are refused while parsing).
    Int(u128),
    /// A tuple or list.
    Seq(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

impl Lit {
    fn kind(&self) -> &'static str {
        match self {
            Lit::Str(_) => "a string",
            Lit::Bool(_) => "a boolean",
            Lit::None => "None",
            Lit::Int(_) => "an integer",
            Lit::Seq(_) => "a tuple or list",
            Lit::Dict(_) => "a dict",
        }
    }
}

/// A recursive-descent parser of the Python literals numpy writes in headers.
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.at < self.s.len() && matches!(self.s[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.at).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {} of the header", self.at))
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(&format!("expected `{}`", c as char))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        match self.peek() {
            None => self.fail("unexpected end"),
            Some(b'\'' | b'"') => self.string().map(Lit::Str),
            Some(b'{') => self.dict(depth),
            Some(b'(') => self.seq(b')', depth),
            Some(b'[') => self.seq(b']', depth),
            Some(c) if c.is_ascii_digit() => self.int(),
            Some(b'-') => self.fail("negative number"),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self.at < self.s.len() && self.s[self.at].is_ascii_alphanumeric() {
                    self.at += 1;
                }
                match &self.s[start..self.at] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    word => {
                        self.at = start;
                        self.fail(&format!(
                            "unexpected word `{}`",
                            String::from_utf8_lossy(word)
                        ))
                    }
                }
            }
            Some(c) => self.fail(&format!("unexpected character `{}`", c.escape_ascii())),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.at];
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.at) {
                None => return self.fail("unterminated string"),
                Some(&c) if c == quote => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => match self.s.get(self.at + 1) {
                    None => return self.fail("unterminated string"),
                    Some(&c) => {
                        out.push(c);
                        self.at += 2;
                    }
                },
                Some(&c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
        String::from_utf8(out).or_else(|_| self.fail("string is not UTF-8"))
    }

    fn int(&mut self) -> Result<Lit, String> {
        let mut v: u128 = 0;
        while let Some(&c) = self.s.get(self.at).filter(|c| c.is_ascii_digit()) {
            v = match v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(c - b'0')))
            {
                Some(v) => v,
                None => return self.fail("integer too large"),
            };
            self.at += 1;
        }
        // Python 2 long suffix, written by old numpy versions.
        if matches!(self.s.get(self.at), Some(b'L' | b'l')) {
            self.at += 1;
        }
        Ok(Lit::Int(v))
    }

    /// Items separated by commas, a trailing comma allowed.
    fn seq(&mut self, close: u8, depth: usize) -> Result<Lit, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(Lit::Seq(items));
            }
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return self.fail(&format!("expected `,` or `{}`", close as char)),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Lit, String> {
        self.at += 1;
        let mut items: Vec<(String, Lit)> = Vec::new();
        loop {
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Lit::Dict(items));
                }
                Some(b'\'' | b'"') => {}
                _ => return self.fail("expected a string key or `}`"),
            }
            let key = self.string()?;
            if items.iter().any(|(k, _)| *k == key) {
                return self.fail(&format!("key '{key}' repeated"));
            }
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            items.push((key, value));
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                _ => return self.fail("expected `,` or `}`"),
            }
        }
    }
}

/// Decodes a `descr` string such as `<f4` or `|u1`.
fn parse_descr(descr: &str) -> Result<Dtype, String> {
    let b = descr.as_bytes();
    let (order, rest) = match b.first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (Some(c), &b[1..]),
        _ => (None, b),
    };
    let unsupported = || {
        format!(
            "'{descr}' is not supported: use '|u1' (bytes) or '<f4' (float32) for images, an \
             integer type such as '|u1' or '<i8' for labels"
        )
    };
    let (&kind, digits) = rest.split_first().ok_or_else(unsupported)?;
    let size = match digits {
        b"1" => 1,
        b"2" => 2,
        b"4" => 4,
        b"8" => 8,
        _ => return Err(unsupported()),
    };
    let ok_kind = matches!(kind, b'u' | b'i') || (kind == b'f' && size >= 4);
    if !ok_kind {
        return Err(unsupported());
    }
    let big_endian = match order {
        Some(b'>') => true,
        Some(b'<') => false,
        Some(b'=') => cfg!(target_endian = "big"),
        // `|` (not applicable) or none: only for one-byte elements.
        _ if size == 1 => false,
        _ => return Err(format!("'{descr}' has no byte order (`<` or `>`)")),
    };
    Ok(Dtype {
        kind,
        size,
        big_endian,
    })
}

/// The fixed part of the header: `(version, header length, offset of the header)`.
fn parse_preamble(path: &Path, bytes: &[u8]) -> Result<((u8, u8), usize, usize), DataError> {
    let short = |need: usize| {
        npy_err(
            path,
            "magic",
            format!(
                "truncated: {} bytes, a .npy file starts with at least {need}",
                bytes.len()
            ),
        )
    };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC[..] {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(short(10));
        }
        let got = &bytes[..bytes.len().min(MAGIC.len())];
        return Err(npy_err(
            path,
            "magic",
            format!(
                "the file starts with b\"{}\", not b\"\\x93NUMPY\": not a .npy file",
                got.escape_ascii()
            ),
        ));
    }
    if bytes.len() < 8 {
        return Err(short(10));
    }
    let version = (bytes[6], bytes[7]);
    let (len, start) = match version.0 {
        1 => {
            if bytes.len() < 10 {
                return Err(short(10));
            }
            (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10)
        }
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(short(12));
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(len).unwrap_or(usize::MAX), 12)
        }
        major => {
            return Err(npy_err(
                path,
                "version",
                format!("{major}.{}: only versions 1, 2 and 3 exist", version.1),
            ));
        }
    };
    if len > MAX_HEADER_LEN {
        return Err(npy_err(
            path,
            "header length",
            format!("{len} bytes, more than the limit of {MAX_HEADER_LEN}"),
        ));
    }
    Ok((version, len, start))
}

/// Parses and checks the header at the start of `bytes` (which must hold at least the whole
/// header; what follows it is ignored). `path` is only used in error messages.
pub fn parse_npy_header(path: &Path, bytes: &[u8]) -> Result<NpyHeader, DataError> {
    let (version, len, start) = parse_preamble(path, bytes)?;
    let end = start + len;
    let text = bytes.get(start..end).ok_or_else(|| {
        npy_err(
            path,
            "header length",
            format!(
                "says {len} bytes of header but only {} follow",
                bytes.len().saturating_sub(start)
            ),
        )
    })?;
    if version.0 < 3 && !text.is_ascii() {
        return Err(npy_err(
            path,
            "header",
            format!(
                "non-ASCII bytes in a version {}.{} header",
                version.0, version.1
            ),
        ));
    }
    let mut parser = Parser { s: text, at: 0 };
    let bad_header = |detail: String| npy_err(path, "header", detail);
    let dict = match parser.peek() {
        Some(b'{') => parser.value(0).map_err(bad_header)?,
        _ => return Err(bad_header("does not start with a dict `{`".to_string())),
    };
    if parser.peek().is_some() {
        return Err(bad_header(format!(
            "unexpected bytes after the dict at byte {}",
            parser.at
        )));
    }
    let Lit::Dict(items) = dict else {
        return Err(bad_header("is not a dict".to_string()));
    };
    if let Some((key, _)) = items
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "descr" | "fortran_order" | "shape"))
    {
        return Err(bad_header(format!(
            "unexpected key '{key}' (a .npy header holds 'descr', 'fortran_order' and 'shape')"
        )));
    }
    let get = |key: &'static str| -> Result<&Lit, DataError> {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| npy_err(path, key, "missing from the header"))
    };
    let descr = match get("descr")? {
        Lit::Str(s) => s.clone(),
        Lit::Seq(_) => {
            return Err(npy_err(
                path,
                "descr",
                "a structured (record) dtype is not supported: save a plain array",
            ));
        }
        other => {
            return Err(npy_err(
                path,
                "descr",
                format!("is {}, not a string", other.kind()),
            ));
        }
    };
    let dtype = parse_descr(&descr).map_err(|d| npy_err(path, "descr", d))?;
    let fortran_order = match get("fortran_order")? {
        Lit::Bool(b) => *b,
        other => {
            return Err(npy_err(
                path,
                "fortran_order",
                format!("is {}, not True or False", other.kind()),
            ));
        }
    };
    let shape = match get("shape")? {
        Lit::Seq(dims) => dims
            .iter()
            .map(|d| match d {
                Lit::Int(v) => u64::try_from(*v)
                    .map_err(|_| npy_err(path, "shape", format!("dimension {v} is too large"))),
                other => Err(npy_err(
                    path,
                    "shape",
                    format!("holds {}, not an integer", other.kind()),
                )),
            })
            .collect::<Result<Vec<u64>, _>>()?,
        other => {
            return Err(npy_err(
                path,
                "shape",
                format!("is {}, not a tuple", other.kind()),
            ));
        }
    };
    Ok(NpyHeader {
        version,
        descr,
        dtype,
        fortran_order,
        shape,
        data_offset: end,
    })
}

// ---- Reading -------------------------------------------------------------------------------

/// An open `.npy` file positioned at its first element.
struct Opened {
    file: File,
    header: NpyHeader,
    /// Length of a regular file; `None` for special files.
    file_len: Option<u64>,
}

/// Opens `path` and reads and checks its header.
fn open(path: &Path) -> Result<Opened, DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let io = |e| DataError::io(path, e);
    // Magic, version and a u16 length; two more length bytes for versions 2 and 3. Nothing
    // past the length field is read here, so `got <= start` and the file stands at the header.
    let mut pre = [0u8; 12];
    let mut got = read_full(&mut file, &mut pre[..10]).map_err(io)?;
    if got == 10 && matches!(pre[6], 2 | 3) {
        got += read_full(&mut file, &mut pre[10..]).map_err(io)?;
    }
    let (_, len, start) = parse_preamble(path, &pre[..got])?;
    let end = start + len;
    if let Some(flen) = file_len
        && flen < end as u64
    {
        return Err(npy_err(
            path,
            "header length",
            format!("says {len} bytes of header but the file has {flen} bytes in all"),
        ));
    }
    // `len` is at most MAX_HEADER_LEN: a small, bounded buffer.
    let mut head = vec![0u8; end];
    head[..got].copy_from_slice(&pre[..got]);
    let more = read_full(&mut file, &mut head[got..]).map_err(io)?;
    head.truncate(got + more);
    let header = parse_npy_header(path, &head)?;
    Ok(Opened {
        file,
        header,
        file_len,
    })
}

/// How the elements map to the output bytes.
#[derive(Clone, Copy)]
enum Layout {
    /// Element `e` goes to byte `e`.
    Same,
    /// `(N, H, W, C)` elements go to `(N, C, H, W)`: `plane = H·W`, `channels = C`.
    ChannelsLast { plane: usize, channels: usize },
}

/// Checks the declared sizes of `opened` for an output of `out_len` bytes (`declared` describes
/// it, e.g. "10 images of 3x32x32 ('|u1')"; `item` names one element for the trailing-data
/// error) and returns the element count. A plain file must hold exactly the declared bytes.
fn check_sizes(
    path: &Path,
    opened: &Opened,
    declared: &str,
    item: &'static str,
    out_len: u64,
) -> Result<usize, DataError> {
    let h = &opened.header;
    let need = h.data_len().ok_or_else(|| {
        npy_err(
            path,
            "shape",
            format!(
                "{} of {}-byte elements is more than 2^64 bytes",
                shape_string(&h.shape),
                h.dtype.size
            ),
        )
    })?;
    if let Some(flen) = opened.file_len {
        let have = flen.saturating_sub(h.data_offset as u64);
        if have < need {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                declared: declared.to_string(),
                need: u128::from(need),
                have: u128::from(have),
            });
        }
        if have > need {
            return Err(DataError::Trailing {
                path: path.to_path_buf(),
                extra: Some(have - need),
                item,
            });
        }
    }
    let too_large = |limit: u64, limit_desc| DataError::PayloadTooLarge {
        path: path.to_path_buf(),
        declared: declared.to_string(),
        need: u128::from(out_len),
        limit,
        limit_desc,
    };
    if out_len > MAX_BYTES {
        return Err(too_large(MAX_BYTES, "the loader's limit"));
    }
    let budget = host_memory_budget();
    if out_len > budget {
        return Err(too_large(budget, "the memory available on this host"));
    }
    usize::try_from(out_len).map_err(|_| too_large(usize::MAX as u64, "the address space"))
}

/// Reads the elements of `opened` (whose sizes [`check_sizes`] accepted: `count` elements),
/// converts each with `convert` (given the element's bytes and its index in the file) and places
/// it by `layout`; then checks that no byte follows.
fn read_elements(
    path: &Path,
    mut opened: Opened,
    count: usize,
    declared: &str,
    item: &'static str,
    layout: Layout,
    convert: impl Fn(&[u8], usize) -> Result<u8, DataError>,
) -> Result<Vec<u8>, DataError> {
    let size = opened.header.dtype.size;
    let mut out: Vec<u8> = Vec::new();
    out.try_reserve_exact(count).map_err(|_| {
        DataError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {count} bytes for the elements"),
            ),
        )
    })?;
    out.resize(count, 0);
    let per_chunk = (CHUNK / size).max(1);
    let mut buf = vec![0u8; per_chunk.min(count).max(1) * size];
    // Position of the next element in (image, channel, pixel) for `ChannelsLast`.
    let (mut img, mut ch, mut px) = (0usize, 0usize, 0usize);
    let mut done = 0;
    while done < count {
        let k = per_chunk.min(count - done);
        let chunk = &mut buf[..k * size];
        let got = read_full(&mut opened.file, chunk).map_err(|e| DataError::io(path, e))?;
        if got < chunk.len() {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                declared: declared.to_string(),
                need: (count as u128) * (size as u128),
                have: (done as u128) * (size as u128) + got as u128,
            });
        }
        for (j, elem) in chunk.chunks_exact(size).enumerate() {
            let e = done + j;
            let v = convert(elem, e)?;
            match layout {
                Layout::Same => out[e] = v,
                Layout::ChannelsLast { plane, channels } => {
                    out[(img * channels + ch) * plane + px] = v;
                    ch += 1;
                    if ch == channels {
                        ch = 0;
                        px += 1;
                        if px == plane {
                            px = 0;
                            img += 1;
                        }
                    }
                }
            }
        }
        done += k;
    }
    let mut one = [0u8; 1];
    if read_full(&mut opened.file, &mut one).map_err(|e| DataError::io(path, e))? > 0 {
        let extra = opened.file_len.map(|len| {
            len.saturating_sub(opened.header.data_offset as u64)
                .saturating_sub((count as u64).saturating_mul(size as u64))
        });
        return Err(DataError::Trailing {
            path: path.to_path_buf(),
            extra: extra.filter(|&e| e > 0),
            item,
        });
    }
    Ok(out)
}

/// The element bytes as a u64 (integers; `size` ≤ 8).
fn int_bits(elem: &[u8], big_endian: bool) -> u64 {
    let mut word = [0u8; 8];
    if big_endian {
        word[8 - elem.len()..].copy_from_slice(elem);
        u64::from_be_bytes(word)
    } else {
        word[..elem.len()].copy_from_slice(elem);
        u64::from_le_bytes(word)
    }
}

/// The element as an f64 (floats of 4 or 8 bytes).
fn float_value(elem: &[u8], big_endian: bool) -> f64 {
    let bits = int_bits(elem, big_endian);
    if elem.len() == 4 {
        f64::from(f32::from_bits(bits as u32))
    } else {
        f64::from_bits(bits)
    }
}

/// Reads a `.npy` image file: see the module docs for the accepted `descr`, `shape` and
/// `fortran_order`. The images come back CHW, one or three channels.
pub fn read_npy_images(path: &Path) -> Result<NpyImages, DataError> {
    let opened = open(path)?;
    let h = &opened.header;
    let dtype = h.dtype;
    if !(dtype.kind == b'f' || (dtype.kind == b'u' && dtype.size == 1)) {
        return Err(npy_err(
            path,
            "descr",
            format!(
                "'{}' is not an image type: use '|u1' (bytes 0..=255) or '<f4' (floats in [0, 1])",
                h.descr
            ),
        ));
    }
    let shape = &h.shape;
    let is_channels = |d: u64| d == 1 || d == 3;
    let (n, c, height, width, channels_last) = match shape[..] {
        [n, y, x] => (n, 1, y, x, false),
        [n, c, y, x] if is_channels(c) => (n, c, y, x, false),
        [n, y, x, c] if is_channels(c) => (n, c, y, x, true),
        [_, _, _, _] => {
            return Err(npy_err(
                path,
                "shape",
                format!(
                    "{}: neither axis 1 (N, C, H, W) nor axis 3 (N, H, W, C) is a channel \
                     count of 1 or 3",
                    shape_string(shape)
                ),
            ));
        }
        _ => {
            return Err(npy_err(
                path,
                "shape",
                format!(
                    "{} has {} dimensions: images are (N, H, W), (N, C, H, W) or (N, H, W, C)",
                    shape_string(shape),
                    shape.len()
                ),
            ));
        }
    };
    if shape.contains(&0) {
        return Err(npy_err(
            path,
            "shape",
            format!(
                "{} has a zero dimension; every dimension must be at least 1",
                shape_string(shape)
            ),
        ));
    }
    if h.fortran_order {
        return Err(npy_err(
            path,
            "fortran_order",
            "True: Fortran-ordered images are not supported; save a C-ordered array \
             (np.ascontiguousarray)",
        ));
    }
    let size_desc = if c == 1 {
        format!("{height}x{width}")
    } else {
        format!("{c}x{height}x{width}")
    };
    let declared = format!("{n} images of {size_desc} ('{}')", h.descr);
    // Overflow of the element count was refused above (as u64); the output has one byte each.
    let out_len = h.elements().ok_or_else(|| {
        npy_err(
            path,
            "shape",
            format!("{} has more than 2^64 elements", shape_string(shape)),
        )
    })?;
    let count = check_sizes(path, &opened, &declared, "image", out_len)?;
    // Every dimension is at most `count`, which fits in usize.
    let (n, c, height, width) = (n as usize, c as usize, height as usize, width as usize);
    let layout = if channels_last && c > 1 {
        Layout::ChannelsLast {
            plane: height * width,
            channels: c,
        }
    } else {
        Layout::Same
    };
    let pixels = if dtype.kind == b'u' {
        read_elements(path, opened, count, &declared, "image", layout, |b, _| {
            Ok(b[0])
        })?
    } else {
        let big = dtype.big_endian;
        read_elements(path, opened, count, &declared, "image", layout, |b, e| {
            let v = float_value(b, big);
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok((v * 255.0).round() as u8)
            } else {
                Err(npy_err(
                    path,
                    "data",
                    format!(
                        "element {e} (image {}) is {v}; float images must hold finite values \
                         in [0, 1]",
                        e / (c * height * width)
                    ),
                ))
            }
        })?
    };
    Ok(NpyImages {
        n,
        channels: c,
        height,
        width,
        pixels,
    })
}

/// Reads a `.npy` label file: shape `(N,)`, an integer `descr`, every value in `0..=255`.
pub fn read_npy_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let opened = open(path)?;
    let h = &opened.header;
    let dtype = h.dtype;
    if !dtype.is_int() {
        return Err(npy_err(
            path,
            "descr",
            format!(
                "'{}' is not an integer type: labels are e.g. '|u1' or '<i8'",
                h.descr
            ),
        ));
    }
    let n = match h.shape[..] {
        [0] => {
            return Err(npy_err(
                path,
                "shape",
                "(0,): no labels; every dimension must be at least 1",
            ));
        }
        [n] => n,
        _ => {
            return Err(npy_err(
                path,
                "shape",
                format!("{}: labels are one dimension (N,)", shape_string(&h.shape)),
            ));
        }
    };
    // One dimension: C and Fortran order are the same layout.
    let declared = format!("{n} labels ('{}')", h.descr);
    let count = check_sizes(path, &opened, &declared, "label", n)?;
    let signed = dtype.kind == b'i';
    let big = dtype.big_endian;
    let size = dtype.size;
    read_elements(
        path,
        opened,
        count,
        &declared,
        "label",
        Layout::Same,
        |b, e| {
            let bits = int_bits(b, big);
            let negative = signed && (bits >> (8 * size - 1)) & 1 == 1;
            match u8::try_from(bits) {
                Ok(v) if !negative => Ok(v),
                _ => {
                    let shown = if negative {
                        // Sign-extend to show the value as written.
                        let shift = 64 - 8 * size as u32;
                        (((bits << shift) as i64) >> shift).to_string()
                    } else {
                        bits.to_string()
                    };
                    Err(npy_err(
                        path,
                        "data",
                        format!("label {e} is {shown}; labels must be in 0..=255"),
                    ))
                }
            }
        },
    )
}

// ---- Writing -------------------------------------------------------------------------------

/// The bytes of a version 1.0 header for `descr` and `shape`, padded with spaces to a multiple
/// of 64 bytes and ended by a newline, as numpy writes it.
fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_string(&shape)
    );
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - MAGIC.len() - 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes a C-ordered array: `descr` (e.g. `"|u1"`), `shape`, and its element bytes, through
/// `<path>.tmp` renamed into place.
fn write_npy(
    path: &Path,
    descr: &str,
    shape: &[usize],
    elem: usize,
    data: &[u8],
) -> Result<(), DataError> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count.and_then(|c| c.checked_mul(elem)) != Some(data.len()) {
        return Err(DataError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!(
                "shape {:?} of {elem}-byte elements does not match {} bytes of data",
                shape,
                data.len()
            ),
        });
    }
    let header = header_bytes(descr, shape);
    if header.len() > MAX_HEADER_LEN {
        return Err(DataError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!("a shape of {} dimensions is too long", shape.len()),
        });
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> Result<(), DataError> {
        let io = |e| DataError::io(&tmp, e);
        let mut out = BufWriter::new(File::create(&tmp).map_err(io)?);
        out.write_all(&header).map_err(io)?;
        out.write_all(data).map_err(io)?;
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

/// Writes bytes as a `|u1` array of `shape` (e.g. `[n, 3, h, w]` images or `[n]` labels).
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<(), DataError> {
    write_npy(path, "|u1", shape, 1, data)
}

/// Writes floats as a little-endian `<f4` array of `shape`.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), DataError> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path, "<f4", shape, 4, &bytes)
}

/// Writes integers as a little-endian `<i8` array of `shape` (numpy's default integer type).
pub fn write_npy_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<(), DataError> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path, "<i8", shape, 8, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("mem.npy")
    }

    fn with_dict(dict: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b
    }

    #[test]
    fn header_round_trip() {
        let b = header_bytes("<f4", &[7, 3, 5]);
        assert_eq!(b.len() % 64, 0);
        assert_eq!(*b.last().unwrap(), b'\n');
        let h = parse_npy_header(p(), &b).unwrap();
        assert_eq!(h.shape, vec![7, 3, 5]);
        assert_eq!(h.descr, "<f4");
        assert!(!h.fortran_order);
        assert_eq!(h.data_offset, b.len());
        assert_eq!(h.elements(), Some(105));
        let one = parse_npy_header(p(), &header_bytes("|u1", &[9])).unwrap();
        assert_eq!(one.shape, vec![9]);
    }

    #[test]
    fn literal_variants() {
        let h = parse_npy_header(
            p(),
            &with_dict("{\"shape\": [2L, 3],'fortran_order':True ,\n 'descr':'>f8'}\n"),
        )
        .unwrap();
        assert_eq!(h.shape, vec![2, 3]);
        assert!(h.fortran_order);
        assert_eq!(
            h.dtype,
            Dtype {
                kind: b'f',
                size: 8,
                big_endian: true
            }
        );
        let h = parse_npy_header(
            p(),
            &with_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (), }"),
        )
        .unwrap();
        assert!(h.shape.is_empty());
    }

    #[test]
    fn header_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}",
                "descr",
            ),
            (
                "{'descr': '<f2', 'fortran_order': False, 'shape': (1,)}",
                "descr",
            ),
            (
                "{'descr': 'f4', 'fortran_order': False, 'shape': (1,)}",
                "descr",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                "descr",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
                "fortran_order",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
                "header",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ('a',)}",
                "shape",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': 3}",
                "shape",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
                "shape",
            ),
            ("{'descr': '<f4', 'fortran_order': False}", "shape"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                "header",
            ),
            ("{'descr': '<f4', 'descr': '<f4'}", "header"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
                "header",
            ),
            ("['descr']", "header"),
            ("{'descr': '<f4", "header"),
            ("{'a': ((((((((((((1,),),),),),),),),),),)}", "header"),
        ];
        for (dict, field) in cases {
            let e = parse_npy_header(p(), &with_dict(dict)).unwrap_err();
            assert!(
                matches!(&e, DataError::Npy { field: f, .. } if f == field),
                "{dict}: {e}"
            );
            assert!(e.to_string().starts_with("mem.npy: "), "{e}");
        }
    }

    #[test]
    fn preamble_errors() {
        let e = parse_npy_header(p(), b"\x93NUM").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = parse_npy_header(p(), b"PK\x03\x04rest").unwrap_err();
        assert!(e.to_string().contains("not a .npy file"), "{e}");
        let mut b = with_dict("{}");
        b[6] = 4;
        let e = parse_npy_header(p(), &b).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Npy {
                    field: "version",
                    ..
                }
            ),
            "{e}"
        );
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = parse_npy_header(p(), &b).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Npy {
                    field: "header length",
                    ..
                }
            ),
            "{e}"
        );
        let mut b = with_dict("{}");
        b[8] = 200;
        let e = parse_npy_header(p(), &b).unwrap_err();
        assert!(e.to_string().contains("only 2 follow"), "{e}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A SplitMix64 stream of short inputs built from header-like fragments.
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let pieces: &[&str] = &[
            "{",
            "}",
            "(",
            ")",
            "[",
            "]",
            ",",
            ":",
            "'",
            "\"",
            "\\",
            "descr",
            "shape",
            "fortran_order",
            "True",
            "False",
            "None",
            "<f4",
            "|u1",
            "3",
            "18446744073709551616",
            " ",
            "\n",
            "-",
            "L",
            "\u{e9}",
        ];
        for _ in 0..5000 {
            let n = (next() % 24) as usize;
            let dict: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let mut b = with_dict(&dict);
            if next() % 4 == 0 {
                let cut = (next() % (b.len() as u64 + 1)) as usize;
                b.truncate(cut);
            }
            let _ = parse_npy_header(p(), &b);
        }
    }
}
