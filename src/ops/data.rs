//! Batch gather from the u8 data set on the GPU, and the GPU-resident step counter.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::shape_err;

/// `[global step, step at which the current epoch began, 0, 0]`, on the GPU. Kernels that need
/// the step (RNG, batch position, Adam's bias correction) read it here, so a training step needs
/// no upload; `advance` increments it at the end of each step.
pub struct StepState {
    pub tensor: Tensor<u32>,
}

impl StepState {
    pub fn new(ctx: &GpuContext, label: &str) -> Result<Self> {
        Ok(StepState {
            tensor: Tensor::zeros(ctx, label, &[4])?,
        })
    }
    /// Queues `[step, epoch_base]` (at epoch starts and on resume).
    pub fn set(&self, ctx: &GpuContext, step: u32, epoch_base: u32) -> Result<()> {
        self.tensor.write(ctx, &[step, epoch_base, 0, 0])
    }
    /// Reads `(step, epoch_base)` back.
    pub fn read(&self, ctx: &GpuContext) -> Result<(u32, u32)> {
        let v = self.tensor.read(ctx)?;
        Ok((v[0], v[1]))
    }
    /// Prepares `state[0] += 1`.
    pub fn advance(&self, ctx: &GpuContext) -> Result<Dispatch> {
        Dispatch::new::<u32>(
            ctx,
            &KernelKey::new(Shader::Data, "advance"),
            "advance step",
            &[(5, self.tensor.binding())],
            None,
            [1, 1, 1],
        )
    }
}

/// Mirrors `GatherParams` in shaders/data.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GatherParams {
    pub rows: u32,
    pub pixels: u32,
    pub base: u32,
    pub n_items: u32,
    pub use_state: u32,
    pub n_images: u32,
    pub write_weights: u32,
    pub binarize: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub _pad: [u32; 2],
}

/// The Philox counter word that keeps the binarising gather's draws apart from every other
/// stream (mirrors `BINARIZE_STREAM` in shaders/data.wgsl).
pub const BINARIZE_STREAM: u32 = 0x6269_6e00;

/// What a gather does besides copying bytes to floats.
#[derive(Clone, Copy, Default)]
pub struct GatherOptions<'a> {
    /// Add the batch offset of the current step, `(state[0] − state[1])·rows`, to `base`.
    pub state: Option<&'a StepState>,
    /// Write the row weights (rows,): 1/valid for the rows that hold an image, 0 for the rows
    /// past the end of `perm`.
    pub weights: Option<&'a Tensor<f32>>,
    /// Binarise with this seed: pixel p of row r becomes 1 with probability byte/255, drawn
    /// from Philox keyed by (seed, state[0] (0 without a state), r, p) — fresh every step.
    pub binarize: Option<u64>,
}

/// Prepares `x[r, p] = images[perm[pos + r], p] / 255` with `pos = base` (+ the batch offset
/// of the current step when `state` is given). Rows past `n_items` are zero.
/// `images` holds the data set as bytes (N, P); `perm` (n_items,) indexes it. `P` is
/// [`crate::data::Dataset::image_len`], `channels·height·width` with each image's channel planes
/// one after the other (CHW): the gather copies the bytes as they are, whatever the channel
/// count.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn gather(
    ctx: &GpuContext,
    label: &str,
    images: &Tensor<u8>,
    pixels: usize,
    perm: &Tensor<u32>,
    x: &Tensor<f32>,
    base: usize,
    state: Option<&StepState>,
) -> Result<Dispatch> {
    gather_with(
        ctx,
        label,
        images,
        pixels,
        perm,
        x,
        base,
        GatherOptions {
            state,
            ..Default::default()
        },
    )
}

/// [`gather`] with row weights (see [`GatherOptions`]).
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn gather_with(
    ctx: &GpuContext,
    label: &str,
    images: &Tensor<u8>,
    pixels: usize,
    perm: &Tensor<u32>,
    x: &Tensor<f32>,
    base: usize,
    opts: GatherOptions<'_>,
) -> Result<Dispatch> {
    let (rows, p) = x.dims2();
    if p != pixels || pixels == 0 || images.is_empty() || !images.len().is_multiple_of(pixels) {
        return Err(shape_err(
            "gather",
            format!(
                "{}: batch {:?} vs {pixels} pixels per image, data set of {} bytes",
                label,
                x.shape(),
                images.len()
            ),
        ));
    }
    if let Some(w) = opts.weights
        && w.len() != rows
    {
        return Err(shape_err(
            "gather",
            format!(
                "{label}: row weights {:?} for a batch of {rows} rows",
                w.shape()
            ),
        ));
    }
    let n_images = images.len() / pixels;
    let params = GatherParams {
        rows: rows as u32,
        pixels: pixels as u32,
        base: base as u32,
        n_items: perm.len() as u32,
        use_state: opts.state.is_some() as u32,
        n_images: n_images as u32,
        write_weights: opts.weights.is_some() as u32,
        binarize: opts.binarize.is_some() as u32,
        seed_lo: opts.binarize.unwrap_or(0) as u32,
        seed_hi: (opts.binarize.unwrap_or(0) >> 32) as u32,
        _pad: [0; 2],
    };
    let state_binding = match opts.state {
        Some(s) => s.tensor.binding(),
        None => ctx.dummy.as_entire_binding(),
    };
    // Without weights the (never written) slot gets a scratch buffer of its own: a buffer may
    // not be bound read-only and read-write in one dispatch.
    let scratch;
    let w_binding = match opts.weights {
        Some(w) => w.binding(),
        None => {
            scratch = Tensor::<f32>::zeros(ctx, "unused row weights", &[4])?;
            scratch.binding()
        }
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Data, "gather"),
        label,
        &[
            (0, images.binding()),
            (1, perm.binding()),
            (2, x.binding()),
            (3, state_binding),
            (6, w_binding),
        ],
        Some((4, &params)),
        groups_for(rows * pixels.div_ceil(4), 64),
    )
}

/// How the training images become Bernoulli targets. Grey levels in (0, 1) are not outcomes of
/// a Bernoulli likelihood, so a Bernoulli VAE trained on them bounds no log-likelihood;
/// binarising makes the data binary.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Binarize {
    /// Grey levels byte/255 as they are.
    #[default]
    None,
    /// Each training pixel drawn once, x ~ Bernoulli(byte/255), on the host from a seeded
    /// stream; the same binary training set every epoch.
    Fixed,
    /// Drawn afresh every time an image is gathered for a step, on the GPU (Philox keyed by
    /// seed, step, row and pixel).
    Dynamic,
}

impl Binarize {
    /// Parses `none`, `fixed` or `dynamic` (any case); the error names the flag and the value.
    pub fn parse(s: &str) -> std::result::Result<Binarize, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Binarize::None),
            "fixed" => Ok(Binarize::Fixed),
            "dynamic" => Ok(Binarize::Dynamic),
            _ => Err(format!("--binarize `{s}`: use none, fixed or dynamic")),
        }
    }

    /// The flag value: `none`, `fixed` or `dynamic`.
    pub fn name(self) -> &'static str {
        match self {
            Binarize::None => "none",
            Binarize::Fixed => "fixed",
            Binarize::Dynamic => "dynamic",
        }
    }
}

/// The host stream of [`binarize_bytes`] for a fixed binary training set.
pub const FIXED_TRAIN_STREAM: u64 = 0xB1_0000_0001;
/// The host stream of [`binarize_bytes`] for the binary test set.
pub const TEST_STREAM: u64 = 0xB1_0000_0002;
/// The seed of the binary test set: one fixed set for every run, whatever its training seed,
/// so that test figures of different runs bound the likelihood of the same binary images.
pub const TEST_SEED: u64 = 0x7E57;

/// The integer threshold of a byte: a 24-bit uniform u is below it with probability
/// round(byte·2^24/255)/2^24 ≈ byte/255 (exactly 0 for 0 and 1 for 255).
pub fn binarize_threshold(byte: u8) -> u32 {
    (byte as u32 * (1 << 24) + 127) / 255
}

/// Binarises grey levels once on the host: each byte becomes 255 with probability byte/255,
/// else 0, from `HostRng::derive(seed, stream)` (24 random bits per pixel).
pub fn binarize_bytes(pixels: &mut [u8], seed: u64, stream: u64) {
    let mut rng = crate::rng::HostRng::derive(seed, stream);
    for v in pixels {
        let u = (rng.next_u64() >> 40) as u32;
        *v = if u < binarize_threshold(*v) { 255 } else { 0 };
    }
}

/// Applies `mode` to a loaded split: with `Fixed` the training images are binarised once from
/// `seed`; with `Fixed` or `Dynamic` the test images are binarised once from [`TEST_SEED`], the
/// same binary test set for every run (so test figures bound the likelihood of binary images).
/// `Dynamic` leaves the training bytes grey: the gather draws them afresh every step.
pub fn binarize_split(split: &mut crate::data::Split, mode: Binarize, seed: u64) {
    if mode == Binarize::Fixed {
        binarize_bytes(&mut split.train.pixels, seed, FIXED_TRAIN_STREAM);
    }
    if mode != Binarize::None {
        binarize_bytes(&mut split.test.pixels, TEST_SEED, TEST_STREAM);
    }
}
