//! Random numbers. [`philox4x32`] is the CPU twin of the counter-based generator in
//! `shaders/common.wgsl`; [`HostRng`] drives host-side choices (initial weights, shuffles),
//! seeded so that a run is reproducible.
//!
//! # What is reproducible across adapters
//!
//! The in-shader ε of the reparameterization is Philox4x32-10 on 32-bit integers, then
//! [`u01`] and [`box_muller`] in f32. Only the integer Philox stream is bit-identical on every
//! adapter (and equal to [`philox4x32`] here). ε itself passes through `log`, `sqrt`, `sin` and
//! `cos`, whose f32 results WGSL specifies only to within an error bound, so ε (and everything
//! computed from it) agrees across adapters, drivers and this f64 twin only to float accuracy
//! (a few ulp), not bit for bit. On one adapter and driver, the same (seed, step, stream)
//! gives the same ε on every run.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3").
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// Uniform in (0, 1] from the top 24 bits (mirrors `u01` in WGSL).
pub fn u01(x: u32) -> f64 {
    ((x >> 8) as f64 + 1.0) / 16_777_216.0
}

/// Box–Muller: two N(0,1) draws from two uniforms in (0, 1] (mirrors `box_muller` in WGSL).
/// The angle 2π(u2 − ½) is uniform on (−π, π], where WGSL specifies sin and cos.
pub fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * (u2 - 0.5);
    (r * t.cos(), r * t.sin())
}

/// Host-side randomness (initial weights, shuffles, splits, metric draws): PCG64 MCG
/// (`rand_pcg::Pcg64Mcg`, "pcg64_fast"), whose output stream rand_pcg documents as
/// deterministic and portable and tests against reference vectors, seeded by
/// `SeedableRng::seed_from_u64` (a change of which rand_core counts as value-breaking). Ranges,
/// floats and shuffles are rand's (`random_range`, `random`, `SliceRandom::shuffle`), whose
/// values rand keeps within a minor version; Cargo.lock pins it. The same seed therefore gives
/// the same weights and batches on every machine.
#[derive(Clone, Debug)]
pub struct HostRng {
    rng: Pcg64Mcg,
}

impl HostRng {
    pub fn new(seed: u64) -> Self {
        HostRng {
            rng: Pcg64Mcg::seed_from_u64(seed),
        }
    }

    /// A generator for a named purpose, independent of others made from the same seed.
    pub fn derive(seed: u64, stream: u64) -> Self {
        HostRng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// Uniform integer in [0, n) (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n)
    }

    /// N(0, 1).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        box_muller(u1, u2).0
    }

    /// Uniform in [lo, hi) as f32 values.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * self.uniform() as f32)
            .collect()
    }

    /// A uniformly random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        p.shuffle(&mut self.rng);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    /// The angle is 2π(u2 − ½) ∈ (−π, π]: u2 = 1 gives −r, u2 = ½ gives +r, u2 = ¾ gives +r·i.
    #[test]
    fn box_muller_angle_is_centred() {
        let u1 = 0.25f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let close = |(a, b): (f64, f64), (x, y): (f64, f64)| {
            assert!(
                (a - x).abs() < 1e-6 && (b - y).abs() < 1e-6,
                "({a}, {b}) vs ({x}, {y})"
            );
        };
        close(box_muller(u1, 1.0), (-r, 0.0));
        close(box_muller(u1, 0.5), (r, 0.0));
        close(box_muller(u1, 0.75), (0.0, r));
        close(box_muller(u1, u01(0)), (-r, 0.0));
    }

    /// The host stream is part of what a seed means (initial weights, batches, splits): these
    /// values pin it, so a dependency update that changed it would fail here rather than
    /// silently change every run.
    #[test]
    fn host_stream_is_pinned() {
        let mut r = HostRng::new(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            first,
            [
                0x5603_f242_407d_eca2,
                0xd684_5f75_e9e2_1acd,
                0x5a22_d8b7_6f39_f418
            ]
        );
        let mut r = HostRng::derive(7, 3);
        assert_eq!(r.below(1000), 41);
        assert_eq!(r.uniform(), 0.4079140424594697);
        assert_eq!(r.permutation(8), [3, 1, 4, 5, 0, 7, 2, 6]);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = HostRng::new(7);
        let mut p = r.permutation(1000);
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
