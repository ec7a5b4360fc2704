//! `wgvae metrics`: MIG, DCI and SAP of latent codes saved as `.npy` against ground-truth factors
//! saved as `.npy`, and the readers of those two arrays.
//!
//! # The arrays
//! - latents: a 2-D array `(N, R)`, any numeric `descr` the crate's `.npy` parser accepts
//!   (`<f4`, `<f8`, integers; either byte order), every value finite;
//! - factors: a 2-D array `(N, F)` of whole numbers `≥ 0`: an integer `descr`, or floats that
//!   hold whole numbers (at most 2⁵³);
//! - both C-ordered or Fortran-ordered, with at least one row and column, and the same `N`.
//!
//! As for every reader of the crate, nothing is allocated from a size in the file before it was
//! checked (checked products; the payload must be exactly the bytes the header declares and fit
//! the loader's limit and the host's memory budget), and every problem is an error that names
//! the file and the header field, or the row and column of the bad value.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::{ArrayConfig, ArrayMetrics, GbtConfig, Matrix, evaluate_arrays};
use crate::data::DataError;
use crate::data::idx::{MAX_BYTES, host_memory_budget, read_full};
use crate::data::npy::{Dtype, MAX_HEADER_LEN, NpyHeader, parse_npy_header, shape_string};
use crate::error::Result;

/// Largest `--bins`.
pub const MAX_BINS: usize = 1 << 16;

/// Flags of `wgvae metrics`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "\
MIG is computed on all used rows; DCI and SAP train their predictors on a seeded 2/3 of them \
and score on the rest. Inputs larger than --max-rows are subsampled by the same seeded shuffle.

Example:
  wgvae metrics --latents mu.npy --factors factors.npy --json metrics.json")]
pub struct MetricsArgs {
    /// (N, R) .npy array of latent codes, one row per example (float or integer, finite)
    #[arg(long)]
    pub latents: PathBuf,
    /// (N, F) .npy array of the examples' discrete factor values (whole numbers >= 0)
    #[arg(long)]
    pub factors: PathBuf,
    /// Also write the figures as JSON here (an existing file is kept unless --force)
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace an existing --json file
    #[arg(long, visible_alias = "overwrite")]
    pub force: bool,
    /// Histogram bins of the codes (MIG; SAP uses at least this many)
    #[arg(long, default_value_t = super::DEFAULT_BINS, allow_negative_numbers = true)]
    pub bins: usize,
    /// Use at most this many rows (a seeded subsample of larger inputs)
    #[arg(long, default_value_t = super::DEFAULT_MAX_ROWS, allow_negative_numbers = true)]
    pub max_rows: usize,
    /// Boosting rounds of the DCI classifiers
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub dci_rounds: usize,
    /// Seed of the shuffle that subsamples and splits the rows
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
}

/// `wgvae metrics`: reads the arrays, prints the figures, writes the JSON.
pub fn run(args: &MetricsArgs) -> anyhow::Result<ArrayMetrics> {
    if args.bins == 0 || args.bins > MAX_BINS {
        bail!("--bins {}: must be in 1..={MAX_BINS}", args.bins);
    }
    if args.max_rows < 2 {
        bail!("--max-rows {}: must be at least 2", args.max_rows);
    }
    if args.dci_rounds == 0 || args.dci_rounds > 10_000 {
        bail!("--dci-rounds {}: must be in 1..=10000", args.dci_rounds);
    }
    if let Some(json) = &args.json {
        refuse_existing(json, args.force)?;
    }
    let codes = read_latents(&args.latents)?;
    let factors = read_factors(&args.factors)?;
    if codes.rows() != factors.rows() {
        bail!(
            "{}: {} rows but {}: {} rows; the latents and factors must have one row per example",
            args.latents.display(),
            codes.rows(),
            args.factors.display(),
            factors.rows()
        );
    }
    if codes.rows() < 2 {
        bail!(
            "{}: {} row; the metrics need at least 2 (a training and a test row)",
            args.latents.display(),
            codes.rows()
        );
    }
    let cfg = ArrayConfig {
        bins: args.bins,
        max_rows: args.max_rows,
        seed: args.seed,
        gbt: GbtConfig {
            rounds: args.dci_rounds,
            ..GbtConfig::default()
        },
        ..ArrayConfig::default()
    };
    let m = evaluate_arrays(&codes, &factors, &cfg).with_context(|| {
        format!(
            "metrics of {} against {}",
            args.latents.display(),
            args.factors.display()
        )
    })?;
    print_table(args, &m, &factors);
    if let Some(path) = &args.json {
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "latents": args.latents.display().to_string(),
            "factors": args.factors.display().to_string(),
            "seed": args.seed,
            "bins": args.bins,
            "dci_rounds": args.dci_rounds,
            "metrics": m,
        }))?;
        crate::fsio::write_atomic(path, &body)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(m)
}

/// Refuses a `--json` path that names an existing regular file (through links) unless `force`.
/// Special files such as `/dev/stdout` are written through and need no `--force`.
fn refuse_existing(path: &Path, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.is_file()
    {
        bail!(
            "--json {}: the file exists; pass --force to replace it",
            path.display()
        );
    }
    Ok(())
}

fn print_table(args: &MetricsArgs, m: &ArrayMetrics, factors: &Matrix<u64>) {
    println!(
        "{}: {} rows x {} codes; {}: {} factors; {} rows used ({} train / {} test), seed {}",
        args.latents.display(),
        m.rows_total,
        m.codes,
        args.factors.display(),
        m.factors,
        m.rows,
        m.train_rows,
        m.test_rows,
        args.seed
    );
    println!("{:<28} {:>8}", "metric", "score");
    println!("{:<28} {:>8.4}", "MIG", m.mig.score);
    println!(
        "{:<28} {:>8.4}",
        "DCI disentanglement", m.dci.disentanglement
    );
    println!("{:<28} {:>8.4}", "DCI completeness", m.dci.completeness);
    println!(
        "{:<28} {:>8.4}  (train {:.4})",
        "DCI informativeness (test)", m.dci.informativeness_test, m.dci.informativeness_train
    );
    println!(
        "{:<28} {:>8.4}  (from plain accuracies: {:.4})",
        "SAP", m.sap.score, m.sap.score_unadjusted
    );
    println!();
    println!(
        "{:>6} {:>7} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "factor", "values", "entropy", "MIG gap", "best code", "DCI acc", "SAP gap"
    );
    for j in 0..m.factors {
        let mut values = factors.column(j);
        values.sort_unstable();
        values.dedup();
        let best = (0..m.codes)
            .max_by(|&a, &b| m.mig.mutual_info[a][j].total_cmp(&m.mig.mutual_info[b][j]))
            .unwrap_or(0);
        let show = |v: Option<f64>| match v {
            Some(g) => format!("{g:.4}"),
            None => "-".to_string(),
        };
        println!(
            "{:>6} {:>7} {:>8.4} {:>8} {:>9} {:>8} {:>8}",
            j,
            values.len(),
            m.mig.entropy[j],
            show(m.mig.per_factor[j]),
            best,
            show(m.dci.accuracy_per_factor[j]),
            show(m.sap.per_factor[j])
        );
    }
}

// ---- Reading 2-D arrays ----------------------------------------------------------------------

fn npy_err(path: &Path, field: &'static str, detail: impl Into<String>) -> crate::Error {
    DataError::Npy {
        path: path.to_path_buf(),
        field,
        detail: detail.into(),
    }
    .into()
}

/// A 2-D array's header and element bytes, read with every size checked first.
struct Raw {
    header: NpyHeader,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl Raw {
    /// Row and column of element `e` (in file order).
    fn position(&self, e: usize) -> (usize, usize) {
        if self.header.fortran_order {
            (e % self.rows, e / self.rows)
        } else {
            (e / self.cols, e % self.cols)
        }
    }

    /// Converts every element and places it row-major.
    fn convert<T: Copy + Default>(
        &self,
        path: &Path,
        conv: impl Fn(&[u8]) -> std::result::Result<T, String>,
    ) -> Result<Matrix<T>> {
        let size = self.header.dtype.size;
        let mut out = vec![T::default(); self.rows * self.cols];
        for (e, elem) in self.bytes.chunks_exact(size).enumerate() {
            let (r, c) = self.position(e);
            out[r * self.cols + c] = conv(elem)
                .map_err(|d| npy_err(path, "data", format!("row {r}, column {c} {d}")))?;
        }
        Matrix::new(self.rows, self.cols, out)
    }
}

/// Reads the header and the element bytes of a 2-D `.npy` array; `what` names its content in
/// messages ("latents", "factors").
fn read_raw(path: &Path, what: &str) -> Result<Raw> {
    let io = |e| crate::Error::from(DataError::io(path, e));
    let mut file = File::open(path).map_err(io)?;
    let file_len = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    // The longest preamble (12 bytes) and header: a bounded buffer.
    let mut head = vec![0u8; 12 + MAX_HEADER_LEN];
    let got = read_full(&mut file, &mut head).map_err(io)?;
    head.truncate(got);
    let header = parse_npy_header(path, &head)?;
    let (rows, cols) = match header.shape[..] {
        [r, c] => (r, c),
        [c] if what == VECTOR => (1, c),
        _ => {
            return Err(npy_err(
                path,
                "shape",
                format!(
                    "{} has {} dimensions; {what} are a 2-D array (N, {})",
                    shape_string(&header.shape),
                    header.shape.len(),
                    if what == "factors" { "F" } else { "R" }
                ),
            ));
        }
    };
    if rows == 0 || cols == 0 {
        return Err(npy_err(
            path,
            "shape",
            format!(
                "{} has a zero dimension; {what} need at least one row and one column",
                shape_string(&header.shape)
            ),
        ));
    }
    let declared = format!("{rows}x{cols} {what} ('{}')", header.descr);
    let need = header.data_len().ok_or_else(|| {
        npy_err(
            path,
            "shape",
            format!(
                "{} of {}-byte elements is more than 2^64 bytes",
                shape_string(&header.shape),
                header.dtype.size
            ),
        )
    })?;
    // The matrix in memory: 8 bytes per element (at least the bytes in the file).
    let out_len = header
        .elements()
        .and_then(|e| e.checked_mul(8))
        .unwrap_or(u64::MAX);
    let too_large = |limit: u64, limit_desc| -> crate::Error {
        DataError::PayloadTooLarge {
            path: path.to_path_buf(),
            declared: declared.clone(),
            need: u128::from(out_len),
            limit,
            limit_desc,
        }
        .into()
    };
    if out_len > MAX_BYTES {
        return Err(too_large(MAX_BYTES, "the loader's limit"));
    }
    let budget = host_memory_budget();
    if out_len > budget {
        return Err(too_large(budget, "the memory available on this host"));
    }
    let offset = header.data_offset;
    if let Some(flen) = file_len {
        let have = flen.saturating_sub(offset as u64);
        if have < need {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                declared,
                need: u128::from(need),
                have: u128::from(have),
            }
            .into());
        }
        if have > need {
            return Err(DataError::Trailing {
                path: path.to_path_buf(),
                extra: Some(have - need),
                item: "element",
            }
            .into());
        }
    }
    // Both fit in usize: `out_len` (≥ need) passed the limits above.
    let (need, rows, cols) = (need as usize, rows as usize, cols as usize);
    let mut bytes: Vec<u8> = Vec::new();
    bytes.try_reserve_exact(need).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("cannot allocate {need} bytes for the elements"),
        ))
    })?;
    let in_head = head.get(offset..).unwrap_or(&[]);
    let trailing = |extra: Option<u64>| -> crate::Error {
        DataError::Trailing {
            path: path.to_path_buf(),
            extra,
            item: "element",
        }
        .into()
    };
    if in_head.len() > need {
        return Err(trailing(Some((in_head.len() - need) as u64)));
    }
    bytes.extend_from_slice(in_head);
    let start = bytes.len();
    bytes.resize(need, 0);
    let more = read_full(&mut file, &mut bytes[start..]).map_err(io)?;
    if start + more < need {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            declared,
            need: need as u128,
            have: (start + more) as u128,
        }
        .into());
    }
    let mut one = [0u8; 1];
    if read_full(&mut file, &mut one).map_err(io)? > 0 {
        return Err(trailing(None));
    }
    Ok(Raw {
        header,
        rows,
        cols,
        bytes,
    })
}

/// The element as a u64 bit pattern (`elem.len()` ≤ 8).
fn bits(elem: &[u8], big_endian: bool) -> u64 {
    let mut word = [0u8; 8];
    if big_endian {
        word[8 - elem.len()..].copy_from_slice(elem);
        u64::from_be_bytes(word)
    } else {
        word[..elem.len()].copy_from_slice(elem);
        u64::from_le_bytes(word)
    }
}

/// An element of any supported dtype as a number: integers exactly (as i128), floats as f64.
enum Num {
    Int(i128),
    Float(f64),
}

fn number(elem: &[u8], dtype: Dtype) -> Num {
    let b = bits(elem, dtype.big_endian);
    let width = 8 * elem.len() as u32;
    match dtype.kind {
        b'f' if elem.len() == 4 => Num::Float(f64::from(f32::from_bits(b as u32))),
        b'f' => Num::Float(f64::from_bits(b)),
        b'i' => {
            // Sign-extend from the element's width.
            let shift = 64 - width;
            Num::Int(i128::from(((b << shift) as i64) >> shift))
        }
        _ => Num::Int(i128::from(b)),
    }
}

/// What [`read_raw`] reads when a 1-D array is welcome (as one row).
const VECTOR: &str = "vector";

/// Reads an `(N, R)` array of latent codes as f64 (see the module docs).
pub fn read_latents(path: &Path) -> Result<Matrix<f64>> {
    read_finite(path, "latents")
}

/// Reads a 2-D array of finite numbers (any float or integer dtype) as f64; `what` names its
/// content in messages.
pub fn read_matrix(path: &Path, what: &str) -> Result<Matrix<f64>> {
    read_finite(path, what)
}

/// Reads a 1-D array of finite numbers as f64 (a 2-D one of one row or one column also
/// works).
pub fn read_vector(path: &Path) -> Result<Vec<f64>> {
    let m = read_finite(path, VECTOR)?;
    if m.rows() != 1 && m.cols() != 1 {
        return Err(npy_err(
            path,
            "shape",
            format!(
                "{}x{} is not a vector: give a 1-D array",
                m.rows(),
                m.cols()
            ),
        ));
    }
    Ok(m.data().to_vec())
}

fn read_finite(path: &Path, what: &str) -> Result<Matrix<f64>> {
    let raw = read_raw(path, what)?;
    let dtype = raw.header.dtype;
    raw.convert(path, |elem| match number(elem, dtype) {
        Num::Float(v) if v.is_finite() => Ok(v),
        Num::Float(v) => Err(format!("is {v}; {what} must be finite")),
        Num::Int(v) => Ok(v as f64),
    })
}

/// Largest float factor value taken as a whole number: 2⁵³.
const MAX_FLOAT_FACTOR: f64 = 9_007_199_254_740_992.0;

/// Reads an `(N, F)` array of factor values as u64 (see the module docs).
pub fn read_factors(path: &Path) -> Result<Matrix<u64>> {
    let raw = read_raw(path, "factors")?;
    let dtype = raw.header.dtype;
    raw.convert(path, |elem| match number(elem, dtype) {
        Num::Int(v) => u64::try_from(v)
            .map_err(|_| format!("is {v}; factor values must be whole numbers >= 0")),
        Num::Float(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= MAX_FLOAT_FACTOR => {
            Ok(v as u64)
        }
        Num::Float(v) => Err(format!(
            "is {v}; factor values must be whole numbers >= 0 (at most 2^53 as floats): \
             discretise continuous factors first"
        )),
    })
}
