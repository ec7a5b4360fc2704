//! Kernels of the inverse autoregressive flow posterior (`shaders/posterior_iaf.wgsl`): K steps
//! of a one-hidden-layer MADE with ELU on a diagonal Gaussian base z_0 = μ + σ ε,
//!
//! a = b1 + c1 h + (w1 ⊙ M1) z,  g = elu(a),  m = bm + (wm ⊙ M2) g,  s = bs + (ws ⊙ M2) g,
//! z' = σ(s) ⊙ z + (1 − σ(s)) ⊙ m,  log|det ∂z'/∂z| = Σ_i log σ(s_i),
//!
//! where h is the encoder's context. The masks M1, M2 make step t autoregressive in the order of
//! [`IafSizes::degree`] (reversed on every other step without moving data):
//! w1[j, i] is a connection iff deg_t(i) ≤ m_j, wm[i, j] and ws[i, j] iff m_j < deg_t(i), with
//! m_j = [`IafSizes::hidden_degree`]. Entries that are not connections are never read and their
//! gradient is always 0. log q(z_K | x) = log N(z_0; μ, σ²) − Σ_t Σ_i log σ(s_t,i).
//!
//! A row of q (B, P) is `[μ (D) | log σ² (D) | h (H)]`, P = 2D + H. The steps' weights are the
//! flow's own, shared by all rows, in one region: per step w1 (H, D), c1 (H, H), b1 (H),
//! wm (D, H), bm (D), ws (D, H), bs (D), row-major, each starting at a multiple of 64 floats
//! ([`IafSizes::own_offsets`]).
//!
//! Kernels: the forward (z_K, ε drawn in-shader as the planar flow and
//! [`crate::ops::reparam::reparam_forward`] draw it, or given), the IWAE log-weights and the
//! KL's single-draw estimate (both recomputing the chain from ε), and the backward at fixed ε in
//! two passes (rows, then own-weight elements, through a caller-given scratch tensor). The f64
//! twins are in [`crate::cpu::posterior_iaf`].

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, KernelKey, Program, Shader, Tensor, groups_for};
use crate::ops::posterior_planar::{KL_NOISE, LogDetWeight, Noise};
use crate::ops::shape_err;

/// Most latent dimensions the kernels take: one invocation keeps a draw's z in registers.
pub const MAX_LATENT: usize = 64;
/// Most flow steps the kernels take.
pub const MAX_FLOWS: usize = 16;
/// Most hidden units of each step's MADE.
pub const MAX_HIDDEN: usize = 256;

/// Own-weight tensors start at multiples of this many floats (256 bytes, a storage view's
/// alignment).
const ALIGN: usize = 64;

/// The sizes of an inverse autoregressive flow: D, K and H.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IafSizes {
    /// D, the latent size
    pub latent: usize,
    /// K, the number of steps
    pub flows: usize,
    /// H, each step's hidden units (and the context size)
    pub hidden: usize,
}

/// Offsets of a step's tensors relative to the step, the step's length (to the next step's w1)
/// and the region's length.
struct Layout {
    rel: [usize; 7],
    step: usize,
    len: usize,
}

fn round_up(x: usize) -> Option<usize> {
    Some(x.checked_add(ALIGN - 1)? / ALIGN * ALIGN)
}

impl IafSizes {
    /// The names of a step's tensors, in layout order.
    pub const TENSORS: [&'static str; 7] = ["w1", "c1", "b1", "wm", "bm", "ws", "bs"];

    /// Values per row of q, 2D + H, or `None` when that overflows.
    pub fn param_dim(&self) -> Option<usize> {
        self.latent.checked_mul(2)?.checked_add(self.hidden)
    }

    /// Refuses sizes the kernels cannot take, naming the flag.
    pub fn check(&self) -> Result<()> {
        if self.latent == 0 || self.latent > MAX_LATENT {
            return Err(Error::Config(format!(
                "latent size {} (--latent): the inverse autoregressive flow (--posterior iaf) \
                 takes 1 to {MAX_LATENT} dimensions",
                self.latent
            )));
        }
        if self.flows == 0 || self.flows > MAX_FLOWS {
            return Err(Error::Config(format!(
                "{} flow steps (--flows): the inverse autoregressive flow (--posterior iaf) \
                 takes 1 to {MAX_FLOWS}",
                self.flows
            )));
        }
        if self.hidden == 0 || self.hidden > MAX_HIDDEN {
            return Err(Error::Config(format!(
                "{} hidden units (--iaf-hidden): the inverse autoregressive flow \
                 (--posterior iaf) takes 1 to {MAX_HIDDEN} per step",
                self.hidden
            )));
        }
        Ok(())
    }

    /// The shapes of one step's tensors, in layout order.
    fn shapes(&self) -> [Vec<usize>; 7] {
        let (d, h) = (self.latent, self.hidden);
        [
            vec![h, d],
            vec![h, h],
            vec![h],
            vec![d, h],
            vec![d],
            vec![d, h],
            vec![d],
        ]
    }

    fn layout(&self) -> Option<Layout> {
        let (d, h) = (self.latent, self.hidden);
        let hd = h.checked_mul(d)?;
        let sizes = [hd, h.checked_mul(h)?, h, hd, d, hd, d];
        let mut rel = [0usize; 7];
        for k in 1..7 {
            rel[k] = round_up(rel[k - 1].checked_add(sizes[k - 1])?)?;
        }
        let end = rel[6].checked_add(d)?;
        let step = round_up(end)?;
        let len = match self.flows {
            0 => 0,
            k => (k - 1).checked_mul(step)?.checked_add(end)?,
        };
        Some(Layout { rel, step, len })
    }

    /// The own tensors ("t.name", shape) of every step t, in layout order.
    pub fn own_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let shapes = self.shapes();
        (0..self.flows)
            .flat_map(|t| {
                Self::TENSORS
                    .iter()
                    .zip(shapes.clone())
                    .map(move |(name, shape)| (format!("{t}.{name}"), shape))
            })
            .collect()
    }

    /// Per step the offsets of its seven tensors relative to the region's start, and the
    /// region's length (the end of the last step's bs); `None` when that overflows.
    pub fn own_offsets(&self) -> Option<(Vec<[usize; 7]>, usize)> {
        let l = self.layout()?;
        let mut out = Vec::with_capacity(self.flows);
        for t in 0..self.flows {
            let base = t.checked_mul(l.step)?;
            let mut o = [0usize; 7];
            for (k, r) in l.rel.iter().enumerate() {
                o[k] = base.checked_add(*r)?;
            }
            out.push(o);
        }
        Some((out, l.len))
    }

    /// Floats of one draw's scratch frame per step: 2H + 3D.
    fn frame(&self) -> Option<usize> {
        self.hidden
            .checked_mul(2)?
            .checked_add(self.latent.checked_mul(3)?)
    }

    /// Floats of the backward's scratch for `batch` rows of `samples` draws: S·B·K·(2H + 3D).
    pub fn scratch_len(&self, batch: usize, samples: usize) -> Option<usize> {
        samples
            .checked_mul(batch)?
            .checked_mul(self.flows)?
            .checked_mul(self.frame()?)
    }

    /// m_j = 1 + (j mod max(D − 1, 1)), the degree of hidden unit j.
    pub fn hidden_degree(&self, j: usize) -> usize {
        1 + j % self.latent.saturating_sub(1).max(1)
    }

    /// deg_t(i): i + 1 on even steps, D − i on odd ones.
    pub fn degree(&self, t: usize, i: usize) -> usize {
        if t.is_multiple_of(2) {
            i + 1
        } else {
            self.latent - i
        }
    }
}

/// Mirrors `IafParams` in shaders/posterior_iaf.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct IafParams {
    pub batch: u32,
    pub dim: u32,
    pub samples: u32,
    pub flows: u32,
    pub hidden: u32,
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
    pub use_dz: u32,
    pub cw_scale: f32,
    pub write_grad: u32,
    pub step_len: u32,
    pub region_len: u32,
    pub o_c1: u32,
    pub o_b1: u32,
    pub o_wm: u32,
    pub o_bm: u32,
    pub o_ws: u32,
    pub o_bs: u32,
    pub frame: u32,
    pub _pad: u32,
}

/// The checked sizes of an operation: B, P and the params without the per-op fields.
struct Checked {
    b: usize,
    p: usize,
    region: usize,
    params: IafParams,
}

fn to_u32(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| shape_err(op, format!("{what} = {n}: too large for the kernels")))
}

/// Checks the sizes, q (B, P) and the own region w; returns B, P, the region's length and the
/// uniform parameters' common part.
fn check_common(
    op: &'static str,
    q: &Tensor<f32>,
    w: &Tensor<f32>,
    sizes: IafSizes,
    samples: usize,
) -> Result<Checked> {
    sizes.check()?;
    let (d, h) = (sizes.latent, sizes.hidden);
    let p = sizes.param_dim().unwrap_or(usize::MAX);
    let (b, cols) = q.dims2();
    if cols != p || q.is_empty() {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected (B, {p}) = [mu | log sigma^2 | context h] for D = {d}, \
                 H = {h}",
                q.label(),
                q.shape()
            ),
        ));
    }
    let l = sizes
        .layout()
        .ok_or_else(|| shape_err(op, format!("{sizes:?}: the own weights' size overflows")))?;
    if w.len() < l.len {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected at least {} elements (the flow's own weights for D = {d}, \
                 K = {}, H = {h})",
                w.label(),
                w.shape(),
                l.len,
                sizes.flows
            ),
        ));
    }
    if samples == 0 {
        return Err(shape_err(op, "samples must be at least 1".into()));
    }
    let sbd = samples
        .checked_mul(b)
        .and_then(|sb| sb.checked_mul(d))
        .filter(|&n| n <= u32::MAX as usize);
    if sbd.is_none() {
        return Err(shape_err(
            op,
            format!("{samples} samples of {b} rows: too many"),
        ));
    }
    let frame = sizes.frame().unwrap_or(usize::MAX);
    let params = IafParams {
        batch: to_u32(op, "B", b)?,
        dim: d as u32,
        samples: to_u32(op, "S", samples)?,
        flows: sizes.flows as u32,
        hidden: h as u32,
        stride: p as u32,
        step_len: to_u32(op, "the step length", l.step)?,
        region_len: to_u32(op, "the own weights' length", l.len)?,
        o_c1: l.rel[1] as u32,
        o_b1: l.rel[2] as u32,
        o_wm: l.rel[3] as u32,
        o_bm: l.rel[4] as u32,
        o_ws: l.rel[5] as u32,
        o_bs: l.rel[6] as u32,
        frame: to_u32(op, "the frame", frame)?,
        ..Default::default()
    };
    to_u32(op, "B·P", b.saturating_mul(p))?;
    Ok(Checked {
        b,
        p,
        region: l.len,
        params,
    })
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

/// Prepares the forward: z_K (S, B, D) from q (B, P), the own weights w and ε (S, B, D), draw s
/// of row b in row s·B + b. With [`Noise::Draw`] ε is drawn in-shader into `eps` exactly as
/// [`crate::ops::posterior_planar::planar_forward`] draws it.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn iaf_forward(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    w: &Tensor<f32>,
    sizes: IafSizes,
    eps: &Tensor<f32>,
    z: &Tensor<f32>,
    samples: usize,
    noise: Noise<'_>,
) -> Result<Dispatch> {
    let op = "iaf_forward";
    let Checked { b, mut params, .. } = check_common(op, q, w, sizes, samples)?;
    let sb = samples * b;
    check_len(op, z, sb * sizes.latent, "S·B·D")?;
    check_len(op, eps, sb * sizes.latent, "S·B·D")?;
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
        &KernelKey::new(Shader::PosteriorIaf, "iaf_forward"),
        label,
        &[
            (1, q.binding()),
            (2, w.binding()),
            (3, eps.binding()),
            (4, state_binding),
            (5, z.binding()),
        ],
        Some((0, &params)),
        groups_for(sb, 64),
    )
}

/// Prepares the IWAE log-weights log w (S, B) = −nll + log N(z_K; 0, I) − log q(z_K|x) from q,
/// the own weights, nll (S·B,), and z_K and ε of [`iaf_forward`]; the log-determinants are
/// recomputed from q, w and ε.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn iaf_log_weights(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    w: &Tensor<f32>,
    sizes: IafSizes,
    nll: &Tensor<f32>,
    z: &Tensor<f32>,
    eps: &Tensor<f32>,
    logw: &Tensor<f32>,
    samples: usize,
) -> Result<Dispatch> {
    let op = "iaf_log_weights";
    let Checked { b, params, .. } = check_common(op, q, w, sizes, samples)?;
    let sb = samples * b;
    check_len(op, nll, sb, "S·B")?;
    check_len(op, logw, sb, "S·B")?;
    check_len(op, z, sb * sizes.latent, "S·B·D")?;
    check_len(op, eps, sb * sizes.latent, "S·B·D")?;
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorIaf, "iaf_log_weights"),
        label,
        &[
            (1, q.binding()),
            (2, w.binding()),
            (6, eps.binding()),
            (10, nll.binding()),
            (11, z.binding()),
            (12, logw.binding()),
        ],
        Some((0, &params)),
        groups_for(sb, 64),
    )
}

/// Prepares the KL per row (B,) as a single-draw Monte Carlo estimate log q(z_K) − log N(z_K;
/// 0, I) at the fixed noise [`KL_NOISE`] (ε of row b: elements b·D.. of that stream), and the
/// base Gaussian's KL per dimension (B, D). With `grad = Some((dq, dw))` 0 is stored into dq
/// (B, P) and into the whole own region of dw: the flow's KL has no closed-form gradient,
/// training takes it through the draw and log q.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn iaf_kl(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    w: &Tensor<f32>,
    sizes: IafSizes,
    kl: &Tensor<f32>,
    kl_elem: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, &Tensor<f32>)>,
) -> Result<Program> {
    let op = "iaf_kl";
    let Checked {
        b,
        p,
        region,
        params,
    } = check_common(op, q, w, sizes, 1)?;
    check_len(op, kl, b, "B")?;
    check_len(op, kl_elem, b * sizes.latent, "B·D")?;
    let mut prog = Program::new();
    if let Some((dq, dw)) = grad {
        check_len(op, dq, b * p, "B·P, the shape of q")?;
        if dw.len() < region {
            return Err(shape_err(
                op,
                format!(
                    "{} {:?}: expected at least {region} elements (the own weights' gradient)",
                    dw.label(),
                    dw.shape()
                ),
            ));
        }
        let own = Tensor::view(dw, dw.label(), 0, &[region])?;
        prog.push(crate::ops::elementwise::fill(
            ctx,
            &format!("{label} (own weights' zero gradient)"),
            &own,
            0.0,
        )?);
    }
    let (seed, step, stream) = KL_NOISE;
    let params = IafParams {
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        step,
        stream: stream as u32,
        write_grad: grad.is_some() as u32,
        ..params
    };
    prog.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorIaf, "iaf_kl"),
        label,
        &[
            (1, q.binding()),
            (2, w.binding()),
            (
                9,
                match grad {
                    Some((g, _)) => g.binding(),
                    // Never written without the flag.
                    None => ctx.dummy.as_entire_binding(),
                },
            ),
            (13, kl.binding()),
            (14, kl_elem.binding()),
        ],
        Some((0, &params)),
        groups_for(b, 64),
    )?);
    Ok(prog)
}

/// Prepares the backward at fixed ε: with L = Σ_r [dz_r·z_K,r + c_r (Σ_t Σ_i log σ(s_t,i) +
/// [volume] Σ_i ½ log σ²_i)], c_r = scale·weights[r], dq (B, P) and the own weights' tensors in
/// dw (the region; its padding is never written) are stored (`accumulate = false`) or added to.
/// `dz = None`: no path through z_K; `logdet = None`: no log-determinant term. Two dispatches:
/// one invocation per row (the chain kept in `scratch`, [`IafSizes::scratch_len`] floats at
/// least), then one per own-weight element summing over all S·B draws.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn iaf_backward(
    ctx: &GpuContext,
    label: &str,
    q: &Tensor<f32>,
    w: &Tensor<f32>,
    sizes: IafSizes,
    eps: &Tensor<f32>,
    dz: Option<&Tensor<f32>>,
    logdet: Option<LogDetWeight<'_>>,
    dq: &Tensor<f32>,
    dw: &Tensor<f32>,
    scratch: &Tensor<f32>,
    samples: usize,
    accumulate: bool,
) -> Result<Program> {
    let op = "iaf_backward";
    let Checked {
        b,
        p,
        region,
        params,
    } = check_common(op, q, w, sizes, samples)?;
    let sb = samples * b;
    let d = sizes.latent;
    if let Some(dz) = dz {
        check_len(op, dz, sb * d, "S·B·D")?;
    }
    check_len(op, eps, sb * d, "S·B·D")?;
    check_len(op, dq, b * p, "B·P, the shape of q")?;
    if dw.len() < region {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected at least {region} elements (the own weights' gradient)",
                dw.label(),
                dw.shape()
            ),
        ));
    }
    if let Some(lw) = logdet {
        check_len(op, lw.weights, sb, "S·B log-determinant weights")?;
    }
    let need = sizes
        .scratch_len(b, samples)
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| {
            shape_err(
                op,
                format!("{samples} samples of {b} rows: the scratch is too large"),
            )
        })?;
    if scratch.len() < need {
        return Err(shape_err(
            op,
            format!(
                "{} {:?}: expected at least {need} elements (the scratch, S·B·K·(2H + 3D))",
                scratch.label(),
                scratch.shape()
            ),
        ));
    }
    let params = IafParams {
        accumulate: accumulate as u32,
        use_cw: logdet.is_some() as u32,
        cw_scale: logdet.map_or(0.0, |lw| lw.scale),
        volume: logdet.is_some_and(|lw| lw.volume) as u32,
        use_dz: dz.is_some() as u32,
        ..params
    };
    let mut prog = Program::new();
    prog.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorIaf, "iaf_backward_rows"),
        &format!("{label} (rows)"),
        &[
            (1, q.binding()),
            (2, w.binding()),
            (6, eps.binding()),
            // Without dz the kernel never reads the slot; q stands in.
            (7, dz.unwrap_or(q).binding()),
            // Without weights the kernel never reads the slot; q stands in.
            (8, logdet.map_or(q, |lw| lw.weights).binding()),
            (9, dq.binding()),
            (15, scratch.binding()),
        ],
        Some((0, &params)),
        groups_for(b, 64),
    )?);
    prog.push(Dispatch::new(
        ctx,
        &KernelKey::new(Shader::PosteriorIaf, "iaf_backward_weights"),
        &format!("{label} (own weights)"),
        &[
            (1, q.binding()),
            (15, scratch.binding()),
            (16, dw.binding()),
        ],
        Some((0, &params)),
        groups_for(region, 64),
    )?);
    Ok(prog)
}
