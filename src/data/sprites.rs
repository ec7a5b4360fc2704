//! "sprites": a procedural data set after dSprites (Matthey et al., 2017), generated in memory.
//!
//! Each image is a 64×64 binary picture (pixels 0 or 255) of one white shape on black, fully
//! determined by five discrete factors, in this order (the order of [`combination`]):
//!
//! | factor | values | size |
//! | --- | --- | --- |
//! | `shape` | 0 square, 1 ellipse, 2 heart | 3 |
//! | `scale` | `linspace(0.5, 1.0, 6)` | 6 |
//! | `orientation` | `linspace(0, 2π, 40)` radians (0 and 2π both present, as in dSprites) | 40 |
//! | `pos_x` | `linspace(0, 1, 32)`, 0 = left | 32 |
//! | `pos_y` | `linspace(0, 1, 32)`, 0 = top | 32 |
//!
//! for [`N_COMBINATIONS`] = 3·6·40·32·32 = 737,280 combinations.
//!
//! # Geometry
//! Image coordinates are continuous, pixel `(row, col)` covering `[col, col+1) × [row, row+1)`.
//! The shape's centre is at `x = 11 + 42·pos_x`, `y = 11 + 42·pos_y` (so in `[11, 53]`), and
//! every shape fits in a circle of radius `9.5·scale` px around it, so even at scale 1 and the
//! extreme positions no foreground pixel lies in the outermost row or column of the frame.
//! In the shape's own frame `(u, v)` (`v` pointing up in the image, unit = `9.5·scale` px):
//!
//! - square: `|u| ≤ 1/√2` and `|v| ≤ 1/√2` (side 13.4 px at scale 1, 19 px corner to corner);
//! - ellipse: `u² + (v/0.5)² ≤ 1` (19 × 9.5 px at scale 1, long axis horizontal at angle 0);
//! - heart: `(x² + y² − 1)³ − x²y³ ≤ 0` with `x = 1.26·u`, `y = 1.26·v + 0.25` (point down).
//!
//! A shape at orientation `θ` is rotated by `θ` counter-clockwise as seen in the image. Each pixel
//! is tested at 2×2 sample points (offsets 0.25 and 0.75) and set to 255 when at least 2 of the 4
//! samples lie inside the shape.
//!
//! # Reproducibility
//! [`generate`] selects its combinations with a fixed algorithm that any version of this crate,
//! or a re-implementation in another language, reproduces bit for bit:
//!
//! 1. [`SplitMix64`] with its state initialised to the seed;
//! 2. a partial Fisher–Yates shuffle of `perm = [0, 1, …, 737279]`: for `i` in
//!    `0..n_train + n_test`, `j = i + below(737280 − i)` then swap `perm[i]` and `perm[j]`, where
//!    `below(b)` draws `x = next_u64()` until `x ≥ (2⁶⁴ mod b)` and returns `x mod b`;
//! 3. the first `n_train` entries of `perm` are the training set, the next `n_test` the test set,
//!    in that order; entry `k` decodes into factors with [`combination`].
//!
//! Rendering uses `f64` and the platform's `sin`/`cos`, which agree everywhere to an ulp or so;
//! a pixel could only differ if a sample point fell within that distance of a shape's edge.

use std::f64::consts::{FRAC_1_SQRT_2, TAU};

use super::{DataError, Dataset, Factors, Split};

/// Image height and width in pixels.
pub const SIZE: usize = 64;
/// Number of values of each factor: shape, scale, orientation, pos_x, pos_y.
pub const FACTOR_SIZES: [usize; 5] = [3, 6, 40, 32, 32];
/// Factor names, in the order of [`FACTOR_SIZES`].
pub const FACTOR_NAMES: [&str; 5] = ["shape", "scale", "orientation", "pos_x", "pos_y"];
/// Names of the shape classes (the labels of the data set).
pub const SHAPE_NAMES: [&str; 3] = ["square", "ellipse", "heart"];
/// Number of distinct factor combinations: 3·6·40·32·32.
pub const N_COMBINATIONS: usize = 737_280;

/// Centre of a shape at position 0, in pixels.
const CENTER_MIN: f64 = 11.0;
/// Distance between the centres at positions 0 and 1, in pixels.
const CENTER_SPAN: f64 = 42.0;
/// Radius of the circle that contains every shape at scale 1, in pixels.
const MAX_RADIUS: f64 = 9.5;
/// Heart curve coordinates per shape-frame unit, and the vertical offset that centres it.
const HEART_SCALE: f64 = 1.26;
const HEART_SHIFT: f64 = 0.25;

/// How [`generate`] draws its examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpritesConfig {
    pub n_train: usize,
    pub n_test: usize,
    /// Seed of the [`SplitMix64`] stream that picks the factor combinations.
    pub seed: u64,
}

impl Default for SpritesConfig {
    fn default() -> Self {
        SpritesConfig {
            n_train: 20_000,
            n_test: 2_000,
            seed: 0,
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): the small, fixed pseudo-random generator behind the
/// data set's selection. `next_u64` adds `0x9E3779B97F4A7C15` to the state and returns
/// `mix(state)` with the standard constants.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` without modulo bias: draws `x` until `x >= 2^64 mod bound`, then
    /// returns `x mod bound`.
    ///
    /// # Panics
    /// If `bound == 0`.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below(0)");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let x = self.next_u64();
            if x >= threshold {
                return x % bound;
            }
        }
    }
}

/// The factor indices `[shape, scale, orientation, pos_x, pos_y]` of combination `index`
/// (mixed radix, `pos_y` fastest, as in dSprites).
///
/// # Panics
/// If `index >= N_COMBINATIONS`.
pub fn combination(index: usize) -> [usize; 5] {
    assert!(
        index < N_COMBINATIONS,
        "sprites combination {index} out of range 0..{N_COMBINATIONS}"
    );
    let mut rest = index;
    let mut out = [0; 5];
    for f in (0..5).rev() {
        out[f] = rest % FACTOR_SIZES[f];
        rest /= FACTOR_SIZES[f];
    }
    out
}

/// The inverse of [`combination`].
///
/// # Panics
/// If a factor index is out of range.
pub fn combination_index(factors: [usize; 5]) -> usize {
    let mut index = 0;
    for (f, (&v, &size)) in factors.iter().zip(&FACTOR_SIZES).enumerate() {
        assert!(
            v < size,
            "sprites factor `{}` index {v} out of range 0..{size}",
            FACTOR_NAMES[f]
        );
        index = index * size + v;
    }
    index
}

/// Scale of scale index `i`: `0.5 + 0.1·i`, i.e. `linspace(0.5, 1.0, 6)`.
pub fn scale_value(i: usize) -> f64 {
    0.5 + 0.5 * i as f64 / (FACTOR_SIZES[1] - 1) as f64
}

/// Orientation of orientation index `i` in radians: `linspace(0, 2π, 40)`.
pub fn orientation_value(i: usize) -> f64 {
    TAU * i as f64 / (FACTOR_SIZES[2] - 1) as f64
}

/// Position of position index `i`: `linspace(0, 1, 32)`.
pub fn position_value(i: usize) -> f64 {
    i as f64 / (FACTOR_SIZES[3] - 1) as f64
}

/// Factor values `[shape, scale, orientation, pos_x, pos_y]` of a combination; the shape is its
/// class index as a float.
pub fn factor_values(c: [usize; 5]) -> [f32; 5] {
    [
        c[0] as f32,
        scale_value(c[1]) as f32,
        orientation_value(c[2]) as f32,
        position_value(c[3]) as f32,
        position_value(c[4]) as f32,
    ]
}

/// Whether the shape-frame point `(u, v)` (unit = the shape's circumradius) is inside `shape`.
#[inline]
fn inside(shape: usize, u: f64, v: f64) -> bool {
    match shape {
        0 => u.abs() <= FRAC_1_SQRT_2 && v.abs() <= FRAC_1_SQRT_2,
        1 => u * u + 4.0 * v * v <= 1.0,
        _ => {
            let x = HEART_SCALE * u;
            let y = HEART_SCALE * v + HEART_SHIFT;
            let x2 = x * x;
            let r = x2 + y * y - 1.0;
            r * r * r - x2 * y * y * y <= 0.0
        }
    }
}

/// Renders combination `c` into `out`: `(64, 64)` row-major, 0 or 255. `out` is overwritten.
fn render_into(c: [usize; 5], out: &mut [u8]) {
    out.fill(0);
    let [shape, scale_idx, orient_idx, x_idx, y_idx] = c;
    let radius = MAX_RADIUS * scale_value(scale_idx);
    let (sin, cos) = orientation_value(orient_idx).sin_cos();
    let cx = CENTER_MIN + CENTER_SPAN * position_value(x_idx);
    let cy = CENTER_MIN + CENTER_SPAN * position_value(y_idx);
    let inv = 1.0 / radius;
    // Only pixels that touch the bounding circle can be foreground.
    let lo = |c: f64| ((c - radius).floor().max(0.0)) as usize;
    let hi = |c: f64| ((c + radius).ceil().min(SIZE as f64)) as usize;
    for row in lo(cy)..hi(cy) {
        for col in lo(cx)..hi(cx) {
            let mut hits = 0;
            for oy in [0.25, 0.75] {
                // v points up in the image.
                let dy = cy - (row as f64 + oy);
                for ox in [0.25, 0.75] {
                    let dx = col as f64 + ox - cx;
                    // Rotate the sample by -θ into the shape's frame.
                    let u = (dx * cos + dy * sin) * inv;
                    let v = (dy * cos - dx * sin) * inv;
                    hits += usize::from(inside(shape, u, v));
                }
            }
            if hits >= 2 {
                out[row * SIZE + col] = 255;
            }
        }
    }
}

/// Renders one sprite: `(64, 64)` row-major bytes, 0 (background) or 255 (shape).
///
/// # Panics
/// If a factor index is out of range (see [`FACTOR_SIZES`]).
pub fn render(
    shape: usize,
    scale_idx: usize,
    orient_idx: usize,
    x_idx: usize,
    y_idx: usize,
) -> Vec<u8> {
    let c = [shape, scale_idx, orient_idx, x_idx, y_idx];
    combination_index(c); // range check
    let mut out = vec![0u8; SIZE * SIZE];
    render_into(c, &mut out);
    out
}

/// The combination indices [`generate`] uses: `n_train` training then `n_test` test indices, all
/// distinct (see the module documentation for the algorithm).
pub fn select(cfg: &SpritesConfig) -> Result<Vec<usize>, DataError> {
    let total = cfg
        .n_train
        .checked_add(cfg.n_test)
        .filter(|&t| t <= N_COMBINATIONS)
        .ok_or_else(|| DataError::Config {
            name: "sprites",
            detail: format!(
                "n_train + n_test = {} + {} exceeds the {N_COMBINATIONS} distinct factor combinations",
                cfg.n_train, cfg.n_test
            ),
        })?;
    let mut perm: Vec<u32> = (0..N_COMBINATIONS as u32).collect();
    let mut rng = SplitMix64::new(cfg.seed);
    for i in 0..total {
        let j = i + rng.below((N_COMBINATIONS - i) as u64) as usize;
        perm.swap(i, j);
    }
    Ok(perm[..total].iter().map(|&k| k as usize).collect())
}

/// Renders the combinations `indices` into a data set named `"sprites"`, with labels (the shape)
/// and factors. Uses up to `available_parallelism` threads; the result does not depend on it.
fn build(indices: &[usize]) -> Dataset {
    let n = indices.len();
    let img = SIZE * SIZE;
    let mut pixels = vec![0u8; n * img];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per_thread = n.div_ceil(threads).max(256);
    std::thread::scope(|s| {
        for (chunk, idx) in pixels
            .chunks_mut(per_thread * img)
            .zip(indices.chunks(per_thread))
        {
            s.spawn(move || {
                for (out, &k) in chunk.chunks_exact_mut(img).zip(idx) {
                    render_into(combination(k), out);
                }
            });
        }
    });
    let mut values = Vec::with_capacity(n * 5);
    let mut classes = Vec::with_capacity(n * 5);
    let mut labels = Vec::with_capacity(n);
    for &k in indices {
        let c = combination(k);
        values.extend_from_slice(&factor_values(c));
        classes.extend(c.iter().map(|&v| v as u32));
        labels.push(c[0] as u8);
    }
    Dataset {
        name: "sprites".to_string(),
        n,
        channels: 1,
        height: SIZE,
        width: SIZE,
        pixels,
        labels: Some(labels),
        factors: Some(Factors {
            names: FACTOR_NAMES.iter().map(|s| s.to_string()).collect(),
            sizes: FACTOR_SIZES.to_vec(),
            values,
            classes,
        }),
    }
}

/// Generates the data set: `n_train + n_test` distinct factor combinations drawn from the seed
/// (train and test disjoint), rendered as 64×64 binary images with labels = shape index and
/// full [`Factors`]. Same config → identical bytes.
///
/// Fails with [`DataError::Config`] if `n_train + n_test` exceeds [`N_COMBINATIONS`].
pub fn generate(cfg: &SpritesConfig) -> Result<Split, DataError> {
    let indices = select(cfg)?;
    let (train, test) = indices.split_at(cfg.n_train);
    Ok(Split {
        train: build(train),
        test: build(test),
        classes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_roundtrip() {
        for k in [0, 1, 31, 32, 1023, 1024, 40_959, 40_960, N_COMBINATIONS - 1] {
            assert_eq!(combination_index(combination(k)), k);
        }
        assert_eq!(combination(N_COMBINATIONS - 1), [2, 5, 39, 31, 31]);
        assert_eq!(combination(1), [0, 0, 0, 0, 1]);
        assert_eq!(FACTOR_SIZES.iter().product::<usize>(), N_COMBINATIONS);
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation by S. Vigna).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = SplitMix64::new(7);
        for b in [1, 2, 3, 1000, u64::MAX] {
            assert!(r.below(b) < b);
        }
    }

    #[test]
    fn heart_fits_its_circle() {
        // Dense polar scan just outside the unit circle: nothing there is inside the heart.
        for i in 0..3600 {
            let a = TAU * i as f64 / 3600.0;
            for r in [1.0, 1.05, 1.2, 1.5] {
                assert!(!inside(2, r * a.cos(), r * a.sin()), "angle {a} radius {r}");
            }
        }
        assert!(inside(2, 0.0, 0.0));
    }
}
