//! Kernels of the planar-flow posterior (`shaders/posterior_planar.wgsl`): K planar flows
//! z_k = z_{k−1} + û_k tanh(w_kᵀ z_{k−1} + b_k) on a diagonal Gaussian base z_0 = μ + σ ε.
//!
//! The parameters of a row are `[μ (D) | log σ² (D) | for each flow: u (D), w (D), b (1)]`,
//! P = 2D + K(2D + 1) values; with K = 0 a row is exactly the diagonal posterior's `[μ | log σ²]`.
//! û = u + (m(wᵀu) − wᵀu) w / max(‖w‖², δ), m(a) = −1 + softplus(a), δ = [`DELTA`], keeps each
//! flow invertible: wᵀû = m(wᵀu) > −1 whenever ‖w‖² ≥ δ. δ only keeps w = 0 finite (the flow is
//! then the translation z + u tanh(b)); below it wᵀû < −1 needs wᵀu < −1 too, i.e. ‖u‖ > 1/‖w‖ >
//! 10⁴. log q(z_K | x) = log N(z_0; μ, σ²) − Σ_k log|1 + û_kᵀ ψ_k|,
//! ψ_k = (1 − tanh²(w_kᵀ z_{k−1} + b_k)) w_k.
//!
//! Three kernels: the forward (z_K and Σ_k log|det_k| per draw, ε drawn in-shader or given),
//! the backward at fixed ε (dz_K and a per-draw weight on the log-determinants, recomputing the
//! chain from ε: nothing is stored between the passes) and the IWAE log-weights. The f64 twins
//! are in [`crate::cpu::posterior_planar`].

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor, groups_for};
use crate::ops::reparam::{RngStep, Stream};
use crate::ops::shape_err;

/// Most latent dimensions the kernels take: one invocation keeps a draw's z in registers.
pub const MAX_LATENT: usize = 64;
/// Most flows the kernels take (the backward recomputes the chain, O(K²D) per draw).
pub const MAX_FLOWS: usize = 32;
/// The guard in û's denominator max(‖w‖², δ) (mirrors `DELTA` in the shader).
pub const DELTA: f32 = 1e-8;

/// Values per row, 2D + K(2D + 1), or `None` when that overflows `usize`.
pub fn param_dim(latent: usize, flows: usize) -> Option<usize> {
    let two_d = latent.checked_mul(2)?;
    flows.checked_mul(two_d.checked_add(1)?)?.checked_add(two_d)
}

/// Offset in a row of flow k's (0-based) u; its w follows at +D and its b at +2D.
pub fn flow_offset(latent: usize, k: usize) -> usize {
    2 * latent + k * (2 * latent + 1)
}

/// Refuses sizes the kernels cannot take.
pub fn check_sizes(latent: usize, flows: usize) -> Result<()> {
    if latent == 0 || latent > MAX_LATENT {
        return Err(Error::Config(format!(
            "latent size {latent} (--latent): the planar-flow posterior (--posterior planar) \
             takes 1 to {MAX_LATENT} dimensions"
        )));
    }
    if flows > MAX_FLOWS {
        return Err(Error::Config(format!(
            "{flows} flows (--flows): the planar-flow posterior takes at most {MAX_FLOWS}"
        )));
    }
    Ok(())
}

/// Mirrors `PlanarParams` in shaders/posterior_planar.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PlanarParams {
    pub batch: u32,
    pub dim: u32,
    pub samples: u32,
    pub flows: u32,
    pub stride: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub stream: u32,
    pub use_state: u32,
    pub draw: u32,
    pub accumulate: u32,
    pub use_cw: u32,
    pub volume: u32,
    pub write_ld: u32,
    pub use_dz: u32,
    pub cw_scale: f32,
    pub recompute: u32,
    pub write_grad: u32,
    pub _pad: [u32; 5],
}

/// Checks q (B, P) for (latent, flows) and returns (B, P).
fn check_q(
    op: &'static str,
    q: &Tensor<f32>,
    latent: usize,
    flows: usize,
) -> Result<(usize, usize)> {
    check_sizes(latent, flows)?;
    let p = param_dim(latent, flows).unwrap_or(usize::MAX);
    let (b, cols) = q.dims2();
    if cols != p || q.is_empty() {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected (B, {p}) = [mu | log sigma^2 | (u, w, b) per flow] for \
                 D = {latent}, K = {flows}",
                q.label(),
                q.shape()
            ),
        ));
    }
    Ok((b, p))
}

fn check_len(op: &'static str, t: &Tensor<f32>, want: usize, what: &str) -> Result<()> {
    if t.len() != want {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected {want} elements ({what})",
                t.label(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

fn check_samples(op: &'static str, samples: usize, b: usize, latent: usize) -> Result<usize> {
    if samples == 0 {
        return Err(shape_err(op, "samples must be at least 1".into()));
    }
    samples
        .checked_mul(b)
        .filter(|sb| {
            sb.checked_mul(latent)
                .is_some_and(|n| n <= u32::MAX as usize)
        })
        .ok_or_else(|| shape_err(op, format!("{samples} samples of {b} rows: too many")))
}

fn base(b: usize, latent: usize, flows: usize, p: usize, samples: usize) -> PlanarParams {
    PlanarParams {
        batch: b as u32,
        dim: latent as u32,
        samples: samples as u32,
        flows: flows as u32,
        stride: p as u32,
        ..Default::default()
    }
}

/// Where the forward's ε comes from.
#[derive(Clone, Copy)]
pub enum Noise<'a> {
    /// Read from the ε tensor.
    Given,
    /// Drawn in-shader into the ε tensor, as [`crate::ops::reparam::reparam_forward`] draws it
    /// for (seed, step, stream), so that with K = 0 the draw is the diagonal posterior's.
    Draw {
        seed: u64,
        step: RngStep<'a>,
        stream: Stream,
    },
}

/// The uniform fields of a [`Noise`] and the step state a kernel binds for it.
pub(crate) struct NoiseFields<'a> {
    pub draw: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub stream: u32,
    pub use_state: u32,
    pub state: Option<&'a crate::ops::data::StepState>,
}

impl<'a> Noise<'a> {
    /// The uniform fields that select the noise (all 0 for [`Noise::Given`]).
    pub(crate) fn fields(self) -> NoiseFields<'a> {
        let mut f = NoiseFields {
            draw: 0,
            seed_lo: 0,
            seed_hi: 0,
            step: 0,
            stream: 0,
            use_state: 0,
            state: None,
        };
        if let Noise::Draw { seed, step, stream } = self {
            f.draw = 1;
            f.seed_lo = seed as u32;
            f.seed_hi = (seed >> 32) as u32;
            f.stream = stream as u32;
            match step {
                RngStep::Fixed(s) => f.step = s,
                RngStep::State(st) => {
                    f.use_state = 1;
                    f.state = Some(st);
                }
            }
        }
        f
    }
}

/// Prepares the forward: z_K (S, B, D) and, when `logdet` is given, Σ_k log|det_k| (S·B,) from
/// q (B, P) and ε (S, B, D), draw s of row b in row s·B + b.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn planar_forward(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    flows: usize,
    eps: &Tensor<f32>,
    z: &Tensor<f32>,
    logdet: Option<&Tensor<f32>>,
    samples: usize,
    noise: Noise<'_>,
) -> Result<Dispatch> {
    let op = "planar_forward";
    let (b, p) = check_q(op, q, latent, flows)?;
    let sb = check_samples(op, samples, b, latent)?;
    check_len(op, z, sb * latent, "S·B·D")?;
    check_len(op, eps, sb * latent, "S·B·D")?;
    if let Some(ld) = logdet {
        check_len(op, ld, sb, "S·B")?;
    }
    let mut params = base(b, latent, flows, p, samples);
    params.write_ld = logdet.is_some() as u32;
    let n = noise.fields();
    (params.draw, params.seed_lo, params.seed_hi) = (n.draw, n.seed_lo, n.seed_hi);
    (params.step, params.stream, params.use_state) = (n.step, n.stream, n.use_state);
    let state_binding = match n.state {
        Some(s) => s.tensor.binding(),
        // Never read without the step state; q (read-only here too) stands in.
        None => q.binding(),
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorPlanar, "planar_forward"),
        label,
        &[
            (1, q.binding()),
            (2, eps.binding()),
            (3, state_binding),
            (4, z.binding()),
            (
                5,
                match logdet {
                    Some(ld) => ld.binding(),
                    // Never written without the flag.
                    None => ctx.dummy.as_entire_binding(),
                },
            ),
        ],
        Some((0, &params)),
        groups_for(sb, 64),
    )
}

/// The weight of each draw's log-determinant term in [`planar_backward`].
#[derive(Clone, Copy)]
pub struct LogDetWeight<'a> {
    /// c (S·B,): draw r's Σ_k log|det_k| enters the differentiated sum as
    /// scale·c_r·Σ_k log|det_k|
    pub weights: &'a Tensor<f32>,
    /// a factor on every weight (−1 turns the log-determinants into log q's share)
    pub scale: f32,
    /// also weight Σ_i log σ_i by c_r, so that the term is c_r·(−log q(z_K|x)) up to a
    /// constant at fixed ε
    pub volume: bool,
}

/// Prepares the backward at fixed ε: dq (B, P) (+)= ∂/∂q Σ_sb [dz_K·z_K + c_sb Σ_k log|det_k|]
/// (with `dz = None` only the log-determinant path, with `logdet = None` only the dz path).
/// The chain is recomputed from q and ε.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn planar_backward(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    flows: usize,
    eps: &Tensor<f32>,
    dz: Option<&Tensor<f32>>,
    logdet: Option<LogDetWeight<'_>>,
    dq: &Tensor<f32>,
    samples: usize,
    accumulate: bool,
) -> Result<Dispatch> {
    let op = "planar_backward";
    let (b, p) = check_q(op, q, latent, flows)?;
    let sb = check_samples(op, samples, b, latent)?;
    if let Some(dz) = dz {
        check_len(op, dz, sb * latent, "S·B·D")?;
    }
    check_len(op, eps, sb * latent, "S·B·D")?;
    check_len(op, dq, b * p, "B·P, the shape of q")?;
    if let Some(w) = logdet {
        check_len(op, w.weights, sb, "S·B log-determinant weights")?;
    }
    let params = PlanarParams {
        accumulate: accumulate as u32,
        use_cw: logdet.is_some() as u32,
        cw_scale: logdet.map_or(0.0, |w| w.scale),
        volume: logdet.is_some_and(|w| w.volume) as u32,
        use_dz: dz.is_some() as u32,
        ..base(b, latent, flows, p, samples)
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorPlanar, "planar_backward"),
        label,
        &[
            (1, q.binding()),
            (6, eps.binding()),
            // Without dz the kernel never reads the slot; q stands in.
            (7, dz.unwrap_or(q).binding()),
            // Without weights the kernel never reads the slot; q stands in.
            (8, logdet.map_or(q, |w| w.weights).binding()),
            (9, dq.binding()),
        ],
        Some((0, &params)),
        groups_for(b, 64),
    )
}

/// Prepares the IWAE log-weights log w (S, B) = −nll + log N(z_K; 0, I) − log q(z_K|x) from q,
/// nll (S·B,), and z_K, ε, Σ_k log|det_k| of [`planar_forward`] (`logdet = None`: the kernel
/// recomputes the log-determinants from q and ε).
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn planar_log_weights(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    flows: usize,
    nll: &Tensor<f32>,
    z: &Tensor<f32>,
    eps: &Tensor<f32>,
    logdet: Option<&Tensor<f32>>,
    logw: &Tensor<f32>,
    samples: usize,
) -> Result<Dispatch> {
    let op = "planar_log_weights";
    let (b, p) = check_q(op, q, latent, flows)?;
    let sb = check_samples(op, samples, b, latent)?;
    check_len(op, nll, sb, "S·B")?;
    if let Some(ld) = logdet {
        check_len(op, ld, sb, "S·B")?;
    }
    check_len(op, logw, sb, "S·B")?;
    check_len(op, z, sb * latent, "S·B·D")?;
    check_len(op, eps, sb * latent, "S·B·D")?;
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorPlanar, "planar_log_weights"),
        label,
        &[
            (1, q.binding()),
            (6, eps.binding()),
            (10, nll.binding()),
            (11, z.binding()),
            // Recomputed without it; q stands in.
            (12, logdet.unwrap_or(q).binding()),
            (13, logw.binding()),
        ],
        Some((
            0,
            &PlanarParams {
                recompute: logdet.is_none() as u32,
                ..base(b, latent, flows, p, samples)
            },
        )),
        groups_for(sb, 64),
    )
}

/// The noise of the KL's Monte Carlo estimate: a fixed draw per row (seed, step, stream).
pub const KL_NOISE: (u64, u32, Stream) = (0x6b6c_706c_616e_6172, 0, Stream::Eval);

/// Prepares the KL per row (B,) as a single-draw Monte Carlo estimate log q(z_K) − log N(z_K;
/// 0, I) at the fixed noise [`KL_NOISE`] (ε of row b: elements b·D.. of that stream), and the
/// base Gaussian's KL per dimension (B, D). With `grad` the row's gradient is stored as 0:
/// the flow's KL has no closed-form gradient, training takes it through the draw and log q.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn planar_kl(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    latent: usize,
    flows: usize,
    kl: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<&Tensor<f32>>,
) -> Result<Dispatch> {
    let op = "planar_kl";
    let (b, p) = check_q(op, q, latent, flows)?;
    check_len(op, kl, b, "B")?;
    check_len(op, kl_elem, b * latent, "B·D")?;
    if let Some(g) = grad {
        check_len(op, g, b * p, "B·P, the shape of q")?;
    }
    let (seed, step, stream) = KL_NOISE;
    let params = PlanarParams {
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        step,
        stream: stream as u32,
        write_grad: grad.is_some() as u32,
        ..base(b, latent, flows, p, 1)
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorPlanar, "planar_kl"),
        label,
        &[
            (1, q.binding()),
            (
                9,
                match grad {
                    Some(g) => g.binding(),
                    None => ctx.dummy.as_entire_binding(),
                },
            ),
            (14, kl.binding()),
            (15, kl_elem.binding()),
        ],
        Some((0, &params)),
        groups_for(b, 64),
    )
}
