//! Property tests of everything wgvae reads from users' files: IDX data (plain and gzip),
//! checkpoints, and the run configuration a checkpoint carries. Valid inputs are built, then
//! mutated at random — truncated, bytes flipped, inserted or deleted, header fields and JSON
//! numbers replaced by huge or nonsensical values (2³²+1, 2⁶⁴−1, 1e308, −1, "NaN", …) — and each
//! reader must return (never panic), allocate at most [`BOUND_FIXED`] + [`BOUND_PER_BYTE`] × the
//! input's size, and when it accepts an input, return something consistent.
//!
//! A counting global allocator measures the allocation: each case records the peak of live
//! heap bytes above what was live before it. The test functions hold one global lock for their
//! whole run, so the measurements of parallel test threads never mix.
//!
//! Cases per input kind: proptest's default of 256, or `PROPTEST_CASES`. The long mode:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release --test fuzz_inputs
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

use wgvae::data::DataError;
use wgvae::data::idx::{
    self, MAGIC_IMAGES, MAGIC_LABELS, parse_idx_images, parse_idx_labels, read_idx_images,
    read_idx_labels,
};
use wgvae::model::{GaussianSigma, Likelihood, VaeConfig};
use wgvae::ops::Activation;
use wgvae::train::checkpoint::{Checkpoint, TrainState};
use wgvae::train::{DataSource, ModelSpec, TrainConfig};

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

/// Live heap bytes, and their peak since the last reset.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only byte counts are recorded.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A moving realloc holds both blocks for a moment: count the new one in full first.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Every case may allocate this much plus [`BOUND_PER_BYTE`] × its input's size.
const BOUND_FIXED: usize = 64 << 20;
const BOUND_PER_BYTE: usize = 4;

/// Serializes the test functions: measurements never overlap another thread's work.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns its result with the peak of heap bytes it held above the live ones.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn check_bound(what: &str, input_len: usize, peak: usize) -> Result<(), TestCaseError> {
    let bound = BOUND_FIXED + BOUND_PER_BYTE * input_len;
    prop_assert!(
        peak <= bound,
        "{what}: a {input_len}-byte input made the reader hold {peak} heap bytes (bound {bound})"
    );
    Ok(())
}

/// Counts of outcomes by kind, printed after a run to show which paths the cases reached.
#[derive(Default)]
struct Tally(Mutex<std::collections::BTreeMap<String, usize>>);

impl Tally {
    fn add(&self, what: impl Into<String>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(what.into()).or_default() += 1;
    }

    /// The start of an error message after the file name: what kind of refusal it is.
    fn add_error(&self, msg: &str, path: &str) {
        let rest = msg.split_once(path).map_or(msg, |(_, r)| r);
        let rest = rest.trim_start_matches(':').trim();
        let kind: String = rest
            .split(['`', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
            .next()
            .unwrap_or(rest)
            .chars()
            .take(40)
            .collect();
        self.add(format!("refused: {}", kind.trim()));
    }

    fn print(&self, name: &str) {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in v.iter().take(12) {
            eprintln!("  {name}: {n:>6}  {k}");
        }
    }
}

/// proptest's configuration: `PROPTEST_CASES` or 256 cases, no regression files.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `test` on `strategy`'s cases and reports the count and the time.
fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    let t = Instant::now();
    let cases = runner.config().cases;
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {cases} cases in {:.2} s",
        t.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Numbers that break naive size arithmetic, as 32-bit header words.
const WEIRD_U32: [u32; 10] = [
    0,
    1,
    2,
    28,
    0x803,
    0x801,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    u32::MAX,
];

/// Integers spread evenly over their number of bits (0 to 63): mid-sized values that pass
/// overflow checks but would need gigabytes if trusted.
fn log_uniform() -> impl Strategy<Value = u64> {
    (0u32..64).prop_flat_map(|bits| 0..=(u64::MAX >> (63 - bits)))
}

/// Values that replace a JSON number (or any leaf) in metadata and run configurations.
fn weird_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(serde_json::json!(4_294_967_297u64)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e308)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-0.0)),
        Just(serde_json::json!(1e39)),
        Just(serde_json::json!(4e9)),
        Just(serde_json::json!(2_147_483_648u64)),
        Just(serde_json::json!(9_007_199_254_740_993u64)),
        Just(serde_json::json!(0.5)),
        Just(serde_json::json!("NaN")),
        Just(serde_json::json!("inf")),
        Just(serde_json::json!("")),
        Just(Value::Null),
        Just(serde_json::json!(true)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([4_294_967_297u64, 4_294_967_297u64])),
        Just(serde_json::json!(65_537)),
        Just(serde_json::json!(1_000_003)),
        Just(serde_json::json!(268_435_457)),
        log_uniform().prop_map(|v| serde_json::json!(v)),
        any::<i64>().prop_map(|v| serde_json::json!(v)),
        any::<f64>()
            .prop_map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
    ]
}

/// `edits` in one case of five, none otherwise: byte-level damage mostly stops a reader at its
/// first check, so it is kept rare enough for most cases to reach the deeper ones.
fn rarely<T: std::fmt::Debug + Clone + 'static>(
    edits: impl Strategy<Value = Vec<T>> + 'static,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![4 => Just(Vec::new()), 1 => edits]
}

/// A byte-level mutation.
#[derive(Clone, Debug)]
enum Edit {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Overwrite 4 bytes at a 4-aligned position among the first 16 (an IDX header word).
    HeaderWord(usize, u32),
    /// Overwrite the first 8 bytes (a safetensors header length) with this little-endian value.
    Len64(u64),
    AppendZeros(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), 1..64usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        (
            0..4usize,
            prop_oneof![
                prop::sample::select(WEIRD_U32.to_vec()),
                any::<u32>(),
                (0u32..32).prop_flat_map(|bits| 0..=(u32::MAX >> (31 - bits)))
            ]
        )
            .prop_map(|(w, v)| Edit::HeaderWord(w, v)),
        prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 32),
            Just(100_000_001u64),
            Just(0),
            any::<u64>()
        ]
        .prop_map(Edit::Len64),
        (1..100_000usize).prop_map(Edit::AppendZeros),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match e {
        Edit::Truncate(i) => {
            let n = at(i, bytes.len());
            bytes.truncate(n);
        }
        Edit::Flip(i, x) => {
            if !bytes.is_empty() {
                let k = i.index(bytes.len());
                bytes[k] ^= x;
            }
        }
        Edit::Insert(i, b) => {
            let k = at(i, bytes.len());
            bytes.splice(k..k, b.iter().copied());
        }
        Edit::Delete(i, n) => {
            let k = at(i, bytes.len());
            let end = (k + n).min(bytes.len());
            bytes.drain(k..end);
        }
        Edit::HeaderWord(w, v) => {
            if bytes.len() >= 4 * w + 4 {
                bytes[4 * w..4 * w + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        Edit::Len64(v) => {
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&v.to_le_bytes());
            }
        }
        Edit::AppendZeros(n) => bytes.resize(bytes.len() + n, 0),
    }
}

/// JSON pointers of the leaves of `v` (only numbers if `numbers`).
fn leaves(v: &Value, at: String, numbers: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = k.replace('~', "~0").replace('/', "~1");
                leaves(x, format!("{at}/{key}"), numbers, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), numbers, out);
            }
        }
        Value::Number(_) => out.push(at),
        _ if !numbers => out.push(at),
        _ => {}
    }
}

/// A structural mutation of a JSON document.
#[derive(Clone, Debug)]
enum JsonEdit {
    /// Replace a number (or, if none, any leaf) with a weird value.
    Number(Index, Value),
    /// Replace any leaf with a weird value.
    Leaf(Index, Value),
    /// Remove a key of an object (or an element of an array) somewhere.
    Remove(Index),
    /// Add a key at the top level.
    Add(String, Value),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => (any::<Index>(), weird_json()).prop_map(|(i, v)| JsonEdit::Number(i, v)),
        1 => (any::<Index>(), weird_json()).prop_map(|(i, v)| JsonEdit::Leaf(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::Remove),
        1 => ("[a-z_]{1,8}", weird_json()).prop_map(|(k, v)| JsonEdit::Add(k, v)),
    ]
}

fn apply_json(doc: &mut Value, e: &JsonEdit) {
    let pick = |doc: &Value, i: &Index, numbers: bool| {
        let mut ptrs = Vec::new();
        leaves(doc, String::new(), numbers, &mut ptrs);
        if ptrs.is_empty() && numbers {
            leaves(doc, String::new(), false, &mut ptrs);
        }
        (!ptrs.is_empty()).then(|| ptrs[i.index(ptrs.len())].clone())
    };
    match e {
        JsonEdit::Number(i, v) | JsonEdit::Leaf(i, v) => {
            let numbers = matches!(e, JsonEdit::Number(..));
            match pick(doc, i, numbers) {
                Some(p) if p.is_empty() => *doc = v.clone(),
                Some(p) => {
                    if let Some(slot) = doc.pointer_mut(&p) {
                        *slot = v.clone();
                    }
                }
                None => *doc = v.clone(),
            }
        }
        JsonEdit::Remove(i) => {
            if let Some(p) = pick(doc, i, false).filter(|p| !p.is_empty()) {
                let (parent, last) = p.rsplit_once('/').unwrap_or(("", &p));
                let last = last.replace("~1", "/").replace("~0", "~");
                match doc.pointer_mut(parent) {
                    Some(Value::Object(m)) => {
                        m.remove(&last);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(k) = last.parse::<usize>()
                            && k < a.len()
                        {
                            a.remove(k);
                        }
                    }
                    _ => {}
                }
            }
        }
        JsonEdit::Add(k, v) => {
            if let Value::Object(m) = doc {
                m.insert(k.clone(), v.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IDX files.

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgvae-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

#[derive(Clone, Debug)]
struct IdxCase {
    labels: bool,
    dims: [u32; 3],
    gzip: bool,
    /// Edits of the content (before compression).
    content: Vec<Edit>,
    /// Edits of the file bytes (after compression, if any).
    file: Vec<Edit>,
}

fn idx_case() -> impl Strategy<Value = IdxCase> {
    (
        any::<bool>(),
        [1..6u32, 1..9u32, 1..9u32],
        any::<bool>(),
        prop::collection::vec(edit(), 0..4),
        prop::collection::vec(edit(), 0..3),
    )
        .prop_map(|(labels, dims, gzip, content, mut file)| {
            if !gzip {
                // A plain file has one stage.
                file.clear();
            }
            IdxCase {
                labels,
                dims,
                gzip,
                content,
                file,
            }
        })
}

/// The content of a valid IDX file of `case`'s kind and dimensions.
fn idx_content(case: &IdxCase) -> Vec<u8> {
    let [n, rows, cols] = case.dims;
    let mut b = Vec::new();
    if case.labels {
        b.extend_from_slice(&MAGIC_LABELS.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
    } else {
        for v in [MAGIC_IMAGES, n, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..n * rows * cols).map(|i| (i * 37) as u8));
    }
    b
}

/// An IDX reader's result, comparable across the streaming and in-memory paths.
fn idx_outcome(labels: bool, path: &Path, content: Option<Vec<u8>>) -> Result<Vec<u8>, DataError> {
    match (labels, content) {
        (true, None) => read_idx_labels(path),
        (true, Some(c)) => parse_idx_labels(path, c),
        (false, None) => read_idx_images(path).map(|i| {
            let mut v = Vec::new();
            for d in [i.n, i.rows, i.cols] {
                v.extend_from_slice(&(d as u64).to_le_bytes());
            }
            v.extend_from_slice(&i.pixels);
            v
        }),
        (false, Some(c)) => parse_idx_images(path, c).map(|i| {
            let mut v = Vec::new();
            for d in [i.n, i.rows, i.cols] {
                v.extend_from_slice(&(d as u64).to_le_bytes());
            }
            v.extend_from_slice(&i.pixels);
            v
        }),
    }
}

#[test]
fn idx_files_never_panic_and_allocate_a_bounded_amount() {
    let _serial = serial();
    let dir = scratch_dir();
    let path = dir.join("case.idx");
    let tally = Tally::default();
    run("idx", idx_case(), |case| {
        let mut content = idx_content(&case);
        for e in &case.content {
            apply(&mut content, e);
        }
        let mut file = if case.gzip {
            gzip(&content)
        } else {
            content.clone()
        };
        for e in &case.file {
            apply(&mut file, e);
        }
        std::fs::write(&path, &file).expect("write the case");
        let (streamed, peak) = measured(|| idx_outcome(case.labels, &path, None));
        check_bound("idx", file.len(), peak)?;
        match &streamed {
            Ok(_) => tally.add("accepted"),
            Err(e) => tally.add(format!("refused: {}", error_kind(e))),
        }
        if let Ok(v) = &streamed {
            // Accepted: the dimensions (images) or count (labels) describe the payload exactly.
            if !case.labels {
                let d: Vec<u64> = v[..24]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                prop_assert_eq!((d[0] * d[1] * d[2]) as usize, v.len() - 24);
            }
        }
        // The in-memory parser of the whole decompressed content agrees with the stream.
        let whole = if file.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(file.as_slice())
                .take(64 << 20)
                .read_to_end(&mut out)
                .ok()
                .map(|_| out)
        } else {
            Some(file.clone())
        };
        if let Some(whole) = whole {
            let (in_memory, peak) =
                measured(|| idx_outcome(case.labels, &path, Some(whole.clone())));
            check_bound("idx in memory", whole.len(), peak)?;
            match (&streamed, &in_memory) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Ok(_), Err(e)) => prop_assert!(false, "stream accepted what parsing refuses: {e}"),
                (Err(e), Ok(_)) => prop_assert!(false, "stream refused a valid file: {e}"),
                // A plain file's errors are the same; a gzip stream stops early, so its trailing
                // count is unknown and damage past the declared size goes unseen.
                (Err(a), Err(b)) if !case.gzip => prop_assert_eq!(a.to_string(), b.to_string()),
                (Err(_), Err(_)) => {}
            }
        } else {
            prop_assert!(streamed.is_err() || case.gzip);
        }
        Ok(())
    });
    tally.print("idx");
    let _ = std::fs::remove_dir_all(&dir);
}

fn error_kind(e: &DataError) -> &'static str {
    match e {
        DataError::Io { .. } => "Io",
        DataError::Gzip { .. } => "Gzip",
        DataError::TooLarge { .. } => "TooLarge",
        DataError::TruncatedHeader { .. } => "TruncatedHeader",
        DataError::Magic { .. } => "Magic",
        DataError::ZeroDimension { .. } => "ZeroDimension",
        DataError::Truncated { .. } => "Truncated",
        DataError::Trailing { .. } => "Trailing",
        DataError::PayloadTooLarge { .. } => "PayloadTooLarge",
        _ => "other",
    }
}

/// Concatenated gzip members: `header` then 16 MiB of zeros, then `more` members of 16 MiB of
/// zeros each.
fn gzip_bomb(header: &[u8], more: usize) -> Vec<u8> {
    let zeros = vec![0u8; 16 << 20];
    let mut first = header.to_vec();
    first.extend_from_slice(&zeros);
    let mut out = gzip(&first);
    let member = gzip(&zeros);
    for _ in 0..more {
        out.extend_from_slice(&member);
    }
    out
}

#[test]
fn gzip_bomb_and_lying_headers_hold_little_memory() {
    let _serial = serial();
    let dir = scratch_dir().join("bomb");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let header = |n: u32, rows: u32, cols: u32| {
        let mut b = Vec::new();
        for v in [MAGIC_IMAGES, n, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    };
    // One 1x1 image declared, 1 GiB of zeros following: refused at the second payload byte.
    let bomb = dir.join("bomb.gz");
    std::fs::write(&bomb, gzip_bomb(&header(1, 1, 1), 63)).expect("write");
    let t = Instant::now();
    let (res, peak) = measured(|| read_idx_images(&bomb));
    let secs = t.elapsed().as_secs_f64();
    let e = res.expect_err("a bomb must be refused");
    assert!(matches!(e, DataError::Trailing { extra: None, .. }), "{e}");
    eprintln!(
        "gzip bomb: refused in {:.2} ms holding {peak} heap bytes",
        secs * 1e3
    );
    assert!(peak < 1 << 20, "the bomb made the reader hold {peak} bytes");
    assert!(secs < 0.5, "took {secs} s");

    // 2 GiB declared (within the loader's limit) but only 16 MiB present: the buffer grows with
    // the bytes that arrive, not with the declaration.
    let liar = dir.join("liar.gz");
    std::fs::write(&liar, gzip_bomb(&header(32_768, 256, 256), 0)).expect("write");
    let (res, peak) = measured(|| read_idx_images(&liar));
    let e = res.expect_err("truncated");
    match &e {
        DataError::Truncated { need, have, .. } => {
            assert_eq!((*need, *have), (1 << 31, 16 << 20), "{e}");
        }
        // A host with less than 2 GiB available refuses before reading.
        DataError::PayloadTooLarge { .. } => {}
        _ => panic!("{e}"),
    }
    eprintln!("lying gzip header (2 GiB declared, 16 MiB present): {e}; held {peak} heap bytes");
    // The buffer doubles as bytes arrive (1, 2, 4, 8, 16, then 32 MiB when 16 MiB came in and
    // more might follow), and the count includes both blocks of a moving reallocation.
    assert!(
        peak < (3 << 24) + (2 << 20),
        "held {peak} bytes for 16 MiB of content"
    );

    // More than the loader accepts: refused before any payload is inflated.
    let huge = dir.join("huge.gz");
    std::fs::write(&huge, gzip(&header(u32::MAX, u32::MAX, u32::MAX))).expect("write");
    let (res, peak) = measured(|| read_idx_images(&huge));
    assert!(
        matches!(res, Err(DataError::PayloadTooLarge { .. })),
        "{res:?}"
    );
    assert!(peak < 1 << 20, "held {peak} bytes");
    assert!(idx::host_memory_budget() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

fn models() -> Vec<VaeConfig> {
    let mut a = VaeConfig::classic(3, 5);
    a.enc_hidden = vec![7];
    a.dec_hidden = vec![6, 4];
    a.latent = 2;
    let mut b = a.clone();
    b.activation = Activation::LeakyRelu(0.2);
    b.likelihood = Likelihood::Gaussian {
        log_sigma: GaussianSigma::LearnedPerPixel,
    };
    let mut c = VaeConfig::classic(2, 2);
    c.enc_hidden = vec![];
    c.dec_hidden = vec![3];
    c.latent = 1;
    c.likelihood = Likelihood::Gaussian {
        log_sigma: GaussianSigma::Fixed(-1.5),
    };
    vec![a, b, c]
}

fn run_config() -> TrainConfig {
    TrainConfig {
        data: DataSource::Sprites {
            n_train: 64,
            n_test: 16,
            seed: 1,
        },
        model: ModelSpec {
            enc_hidden: vec![7],
            dec_hidden: vec![6, 4],
            latent: 2,
            ..ModelSpec::default()
        },
        epochs: 2,
        batch: 8,
        out: PathBuf::from("runs/fuzz"),
        eval_batch: 16,
        ..TrainConfig::default()
    }
}

fn valid_checkpoint(model: usize, seed: u64, moments: bool) -> Checkpoint {
    let model = models()[model % 3].clone();
    let params = model.init_params(seed);
    let layout = model.layout();
    let moment = |scale: f32| -> Vec<f32> {
        let mut v = vec![0.0f32; layout.total];
        for s in &layout.tensors {
            for (k, x) in v[s.offset..s.offset + s.len()].iter_mut().enumerate() {
                *x = scale * ((k as f32 + seed as f32) * 0.37).sin().abs();
            }
        }
        v
    };
    Checkpoint {
        model,
        run: serde_json::to_value(run_config()).expect("run config serializes"),
        state: TrainState { epoch: 2, step: 16 },
        params,
        adam_m: moments.then(|| moment(-1e-2)),
        adam_v: moments.then(|| moment(1e-4)),
        groups: Vec::new(),
    }
}

/// A tensor-level mutation.
#[derive(Clone, Debug)]
enum TensorEdit {
    Drop(Index),
    Rename(Index, String),
    /// New shape; the data is resized to match it.
    Shape(Index, Vec<usize>),
    Dtype(Index, Dtype),
    Value(Index, Index, f32),
}

fn tensor_edit() -> impl Strategy<Value = TensorEdit> {
    prop_oneof![
        any::<Index>().prop_map(TensorEdit::Drop),
        (
            any::<Index>(),
            prop_oneof![
                Just("optimizer.adam_m".to_string()),
                Just("optimizer.adam_v.encoder.fc1.weight".to_string()),
                "[a-z._]{1,12}"
            ]
        )
            .prop_map(|(i, n)| TensorEdit::Rename(i, n)),
        (
            any::<Index>(),
            prop::collection::vec(
                prop::sample::select(vec![0usize, 1, 2, 3, 4, 7, 15, 64]),
                0..4
            )
        )
            .prop_map(|(i, s)| TensorEdit::Shape(i, s)),
        (
            any::<Index>(),
            prop::sample::select(vec![
                Dtype::F16,
                Dtype::F64,
                Dtype::I32,
                Dtype::U8,
                Dtype::BF16
            ])
        )
            .prop_map(|(i, d)| TensorEdit::Dtype(i, d)),
        (
            any::<Index>(),
            any::<Index>(),
            prop::sample::select(vec![
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                -1.0,
                -0.0,
                -1e-30,
                f32::MAX,
                f32::MIN_POSITIVE / 2.0
            ])
        )
            .prop_map(|(t, k, v)| TensorEdit::Value(t, k, v)),
    ]
}

#[derive(Clone, Debug)]
struct CheckpointCase {
    model: usize,
    seed: u64,
    moments: bool,
    /// Field (`format`, `model`, `run`, `state`) and edit of a metadata value.
    meta: Vec<(usize, JsonEdit)>,
    /// Metadata fields removed, or set to raw text.
    meta_raw: Vec<(usize, Option<String>)>,
    tensors: Vec<TensorEdit>,
    /// Edits of the safetensors header JSON (tensor table included), length prefix fixed up.
    header: Vec<JsonEdit>,
    bytes: Vec<Edit>,
}

fn checkpoint_case() -> impl Strategy<Value = CheckpointCase> {
    (
        0..3usize,
        0..1000u64,
        any::<bool>(),
        prop::collection::vec((0..4usize, json_edit()), 0..3),
        prop::collection::vec((0..5usize, prop::option::of("[ -~]{0,24}")), 0..2),
        prop::collection::vec(tensor_edit(), 0..3),
        rarely(prop::collection::vec(json_edit(), 1..3)),
        rarely(prop::collection::vec(edit(), 1..3)),
    )
        .prop_map(
            |(model, seed, moments, meta, meta_raw, tensors, header, bytes)| CheckpointCase {
                model,
                seed,
                moments,
                meta,
                meta_raw,
                tensors,
                header,
                bytes,
            },
        )
}

const META_FIELDS: [&str; 5] = ["format", "model", "run", "state", "extra"];

type Owned = (String, Dtype, Vec<usize>, Vec<u8>);

/// The bytes of the mutated checkpoint of `case`.
fn checkpoint_bytes(case: &CheckpointCase) -> Vec<u8> {
    let good = valid_checkpoint(case.model, case.seed, case.moments)
        .to_bytes()
        .expect("a valid checkpoint serializes");
    let st = SafeTensors::deserialize(&good).expect("valid");
    let (_, header) = SafeTensors::read_metadata(&good).expect("valid");
    let mut meta = header.metadata().clone().expect("metadata");
    let mut ts: Vec<Owned> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    ts.sort_by(|a, b| a.0.cmp(&b.0));
    for (field, e) in &case.meta {
        let key = META_FIELDS[*field];
        let mut doc: Value = meta
            .get(key)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        apply_json(&mut doc, e);
        meta.insert(key.to_string(), doc.to_string());
    }
    for (field, raw) in &case.meta_raw {
        let key = META_FIELDS[*field].to_string();
        match raw {
            Some(text) => meta.insert(key, text.clone()),
            None => meta.remove(&key),
        };
    }
    for e in &case.tensors {
        if ts.is_empty() {
            break;
        }
        match e {
            TensorEdit::Drop(i) => {
                ts.remove(i.index(ts.len()));
            }
            TensorEdit::Rename(i, n) => {
                let k = i.index(ts.len());
                if !ts.iter().any(|t| &t.0 == n) {
                    ts[k].0 = n.clone();
                }
            }
            TensorEdit::Shape(i, s) => {
                let k = i.index(ts.len());
                let size = ts[k].1.bitsize() / 8;
                ts[k].2 = s.clone();
                ts[k].3.resize(s.iter().product::<usize>() * size, 0x3f);
            }
            TensorEdit::Dtype(i, d) => {
                let k = i.index(ts.len());
                let n: usize = ts[k].2.iter().product();
                ts[k].1 = *d;
                ts[k].3.resize(n * d.bitsize() / 8, 0);
            }
            TensorEdit::Value(t, i, v) => {
                let k = t.index(ts.len());
                let data = &mut ts[k].3;
                if data.len() >= 4 {
                    let at = 4 * i.index(data.len() / 4);
                    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    let views: Vec<_> = ts
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("data matches the shape"),
            )
        })
        .collect();
    let mut bytes = safetensors::serialize(views, Some(meta)).expect("serializes");
    if !case.header.is_empty() {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let mut doc: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header JSON");
        for e in &case.header {
            apply_json(&mut doc, e);
        }
        let text = doc.to_string().into_bytes();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&bytes[8 + n..]);
        bytes = out;
    }
    for e in &case.bytes {
        apply(&mut bytes, e);
    }
    bytes
}

fn all_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn checkpoints_never_panic_and_allocate_a_bounded_amount() {
    let _serial = serial();
    let path = Path::new("fuzz/checkpoint.safetensors");
    // The unmutated checkpoints load.
    for m in 0..3 {
        for moments in [false, true] {
            let bytes = valid_checkpoint(m, 5, moments)
                .to_bytes()
                .expect("serializes");
            Checkpoint::from_bytes(path, &bytes).expect("a valid checkpoint loads");
        }
    }
    let tally = Tally::default();
    run("checkpoint", checkpoint_case(), |case| {
        let bytes = checkpoint_bytes(&case);
        let (res, peak) = measured(|| Checkpoint::from_bytes(path, &bytes));
        check_bound("checkpoint", bytes.len(), peak)?;
        match res {
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("fuzz/checkpoint.safetensors"), "{msg}");
                tally.add_error(&msg, "fuzz/checkpoint.safetensors");
            }
            Ok(ck) => {
                tally.add("accepted");
                // Accepted: everything in it is consistent and round-trips bit-exactly.
                prop_assert!(ck.model.validate().is_ok());
                prop_assert!(ck.state.validate().is_ok());
                let layout = ck.model.layout();
                prop_assert_eq!(ck.params.len(), layout.total);
                prop_assert!(ck.params.iter().all(|v| v.is_finite()));
                prop_assert_eq!(ck.adam_m.is_some(), ck.adam_v.is_some());
                if let (Some(m), Some(v)) = (&ck.adam_m, &ck.adam_v) {
                    prop_assert_eq!(m.len(), layout.total);
                    prop_assert_eq!(v.len(), layout.total);
                    prop_assert!(m.iter().all(|x| x.is_finite()));
                    prop_assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
                }
                let again = Checkpoint::from_bytes(path, &ck.to_bytes().expect("re-serializes"))
                    .expect("re-loads");
                prop_assert_eq!(all_bits(&again.params), all_bits(&ck.params));
                prop_assert_eq!(&again.model, &ck.model);
                prop_assert_eq!(&again.state, &ck.state);
                // The run configuration inside is checked by the trainer's reader.
                let (_, peak) = measured(|| TrainConfig::from_run_json(path, &ck.run).map(|_| ()));
                check_bound("checkpoint run", bytes.len(), peak)?;
            }
        }
        Ok(())
    });
    tally.print("checkpoint");
}

// ---------------------------------------------------------------------------------------------
// Run configurations.

#[derive(Clone, Debug)]
struct RunCase {
    idx_data: bool,
    json: Vec<JsonEdit>,
    text: Vec<Edit>,
}

fn run_case() -> impl Strategy<Value = RunCase> {
    (
        any::<bool>(),
        prop::collection::vec(json_edit(), 0..4),
        rarely(prop::collection::vec(edit(), 1..3)),
    )
        .prop_map(|(idx_data, json, text)| RunCase {
            idx_data,
            json,
            text,
        })
}

#[test]
fn run_configs_never_panic_and_allocate_a_bounded_amount() {
    let _serial = serial();
    let path = Path::new("fuzz/checkpoint.safetensors");
    let base = |idx_data: bool| {
        let mut cfg = run_config();
        if idx_data {
            cfg.data = DataSource::Idx {
                dir: PathBuf::from("data/mnist"),
            };
            cfg.model.likelihood = Likelihood::Gaussian {
                log_sigma: GaussianSigma::Fixed(0.0),
            };
        }
        serde_json::to_value(cfg).expect("serializes")
    };
    for idx_data in [false, true] {
        TrainConfig::from_run_json(path, &base(idx_data)).expect("a valid run configuration");
    }
    let tally = Tally::default();
    run("run config", run_case(), |case| {
        let mut doc = base(case.idx_data);
        for e in &case.json {
            apply_json(&mut doc, e);
        }
        let mut text = doc.to_string().into_bytes();
        for e in &case.text {
            apply(&mut text, e);
        }
        let (res, peak) = measured(|| {
            let doc: Value = serde_json::from_slice(&text).ok()?;
            Some(TrainConfig::from_run_json(path, &doc))
        });
        check_bound("run config", text.len(), peak)?;
        match res {
            None => tally.add("not JSON"),
            Some(Err(e)) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("fuzz/checkpoint.safetensors"), "{msg}");
                tally.add_error(&msg, "fuzz/checkpoint.safetensors");
            }
            Some(Ok(cfg)) => {
                tally.add("accepted");
                // Accepted here means accepted as flags too, and the architecture it implies for
                // MNIST-sized images has computable sizes.
                prop_assert!(cfg.validate().is_ok());
                let model = cfg.model.for_images(1, 28, 28);
                let _ = model.param_count_checked();
                let _ = model.validate();
            }
        }
        Ok(())
    });
    tally.print("run config");
}
