//! Per-row negative log-likelihoods with their gradients fused: Bernoulli with logits and
//! Gaussian with a fixed, shared or per-pixel log σ.

use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, KernelKey, Shader, Tensor};
use crate::ops::shape_err;

/// The floor of the Gaussian's log σ: ln 0.01 (mirrors `LOG_SIGMA_MIN` in
/// shaders/likelihood.wgsl). The kernel uses log σ = max(ls, LOG_SIGMA_MIN), and its gradient
/// for ls is that of the clamp (0 below the floor). Without it a learned σ on pixels that are
/// constant in the data (a black background) shrinks without end and the NLL falls without
/// bound; with it each pixel's NLL is at least LOG_SIGMA_MIN + ½ ln 2π ≈ −3.686 nats.
pub const LOG_SIGMA_MIN: f32 = -4.605_170_2;

/// Checks a fixed log σ: finite and not below [`LOG_SIGMA_MIN`] (where the kernel would
/// silently use the floor instead). The message names the value and the floor.
pub fn check_fixed_log_sigma(v: f32) -> std::result::Result<(), String> {
    if v.is_finite() && v >= LOG_SIGMA_MIN {
        Ok(())
    } else {
        Err(format!(
            "log σ {v} must be a finite number ≥ {LOG_SIGMA_MIN} (ln 0.01, the floor of σ)"
        ))
    }
}

/// Mirrors `LikParams` in shaders/likelihood.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LikParams {
    pub rows: u32,
    pub pixels: u32,
    pub batch: u32,
    pub write_grad: u32,
    pub grad_scale: f32,
    pub ls_mode: u32,
    pub ls_fixed: f32,
    pub use_weights: u32,
}

/// Gradients the Gaussian kernel writes: (∂/∂mean, per-element ∂/∂log σ when learned, scale).
pub type GaussianGrad<'a> = Option<(&'a Tensor<f32>, Option<&'a Tensor<f32>>, f32)>;

/// The Gaussian's log σ, fixed or learned; the kernel floors every value at
/// [`LOG_SIGMA_MIN`].
#[derive(Clone, Copy, Debug)]
pub enum LogSigma<'a> {
    Fixed(f32),
    /// one learned value, (1,)
    Shared(&'a Tensor<f32>),
    /// one learned value per pixel, (P,)
    PerPixel(&'a Tensor<f32>),
}

fn check(
    out: &Tensor<f32>,
    target: &Tensor<f32>,
    nll: &Tensor<f32>,
) -> Result<(usize, usize, usize)> {
    let (r, p) = out.dims2();
    let (b, pt) = target.dims2();
    if p != pt || b == 0 || r % b != 0 || nll.len() != r {
        return Err(shape_err(
            "likelihood",
            format!(
                "output {:?}, target {:?}, nll {:?}: expected (K·B, P), (B, P), (K·B,)",
                out.shape(),
                target.shape(),
                nll.shape()
            ),
        ));
    }
    Ok((r, p, b))
}

/// Checks row weights (B,) against the target rows.
fn check_weights(what: &'static str, weights: Option<&Tensor<f32>>, b: usize) -> Result<()> {
    match weights {
        Some(w) if w.len() != b => Err(shape_err(
            what,
            format!("row weights {:?} for {b} target rows", w.shape()),
        )),
        _ => Ok(()),
    }
}

fn groups(rows: usize) -> [u32; 3] {
    [rows.min(65535) as u32, 1, 1]
}

/// Prepares the Bernoulli NLL per row of `logits` (R, P) against `target` (B, P) (row r uses
/// target r % B) into `nll` (R,); with `grad = Some((g, s))`, g = s·(σ(logits) − target).
pub fn bernoulli(
    ctx: &GpuContext,
    label: &str,
    logits: &Tensor<f32>,
    target: &Tensor<f32>,
    nll: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
) -> Result<Dispatch> {
    bernoulli_weighted(ctx, label, logits, target, nll, grad, None)
}

/// [`bernoulli`] with row weights `w` (B,): the gradient of row r is s·w[r % B]·(σ − target),
/// exactly 0 where the weight is 0.
pub fn bernoulli_weighted(
    ctx: &GpuContext,
    label: &str,
    logits: &Tensor<f32>,
    target: &Tensor<f32>,
    nll: &Tensor<f32>,
    grad: Option<(&Tensor<f32>, f32)>,
    weights: Option<&Tensor<f32>>,
) -> Result<Dispatch> {
    let (r, p, b) = check(logits, target, nll)?;
    check_weights("bernoulli", weights, b)?;
    if let Some((g, _)) = grad
        && g.len() != logits.len()
    {
        return Err(shape_err(
            "bernoulli",
            format!("gradient {:?} vs {:?}", g.shape(), logits.shape()),
        ));
    }
    let params = LikParams {
        rows: r as u32,
        pixels: p as u32,
        batch: b as u32,
        write_grad: grad.is_some() as u32,
        grad_scale: grad.map(|g| g.1).unwrap_or(0.0),
        use_weights: weights.is_some() as u32,
        ..Default::default()
    };
    let grad_binding = grad
        .map(|g| g.0.binding())
        .unwrap_or(ctx.dummy.as_entire_binding());
    // Without weights the kernel never reads the slot; the target stands in.
    let weights = weights.unwrap_or(target).binding();
    // Rows of a multiple of 4 pixels take the vec4 kernel (the same terms, a quarter of the
    // loads and stores).
    let (entry, slots) = if p % 4 == 0 {
        ("bernoulli4", [10, 11, 12])
    } else {
        ("bernoulli", [0, 1, 3])
    };
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Likelihood, entry),
        label,
        &[
            (slots[0], logits.binding()),
            (slots[1], target.binding()),
            (2, nll.binding()),
            (slots[2], grad_binding),
            (7, weights),
        ],
        Some((4, &params)),
        groups(r),
    )
}

/// Prepares the Gaussian NLL per row of `mean` (R, P). With `grad = Some((g, g_ls, s))`:
/// g = s·∂NLL/∂mean and, for a learned log σ, g_ls (R, P) = s·∂NLL/∂log σ per element (reduce
/// it over rows for per-pixel σ, or over everything for a shared σ).
pub fn gaussian(
    ctx: &GpuContext,
    label: &str,
    mean: &Tensor<f32>,
    target: &Tensor<f32>,
    log_sigma: LogSigma<'_>,
    nll: &Tensor<f32>,
    grad: GaussianGrad<'_>,
) -> Result<Dispatch> {
    gaussian_weighted(ctx, label, mean, target, log_sigma, nll, grad, None)
}

/// [`gaussian`] with row weights `w` (B,): both gradients of row r are scaled by s·w[r % B],
/// exactly 0 where the weight is 0.
#[allow(clippy::too_many_arguments)] // one argument per kernel binding
pub fn gaussian_weighted(
    ctx: &GpuContext,
    label: &str,
    mean: &Tensor<f32>,
    target: &Tensor<f32>,
    log_sigma: LogSigma<'_>,
    nll: &Tensor<f32>,
    grad: GaussianGrad<'_>,
    weights: Option<&Tensor<f32>>,
) -> Result<Dispatch> {
    let (r, p, b) = check(mean, target, nll)?;
    check_weights("gaussian", weights, b)?;
    let (ls_mode, ls_fixed, ls) = match log_sigma {
        LogSigma::Fixed(v) => (0, v, None),
        LogSigma::Shared(t) => (1, 0.0, Some(t)),
        LogSigma::PerPixel(t) => (2, 0.0, Some(t)),
    };
    if let Some(t) = ls
        && t.len() != if ls_mode == 1 { 1 } else { p }
    {
        return Err(shape_err(
            "gaussian",
            format!("log sigma {:?} for {p} pixels", t.shape()),
        ));
    }
    if let Some((g, gls, _)) = grad {
        let ok = g.len() == mean.len() && gls.is_none_or(|t| t.len() == mean.len());
        if !ok || (ls_mode != 0 && gls.is_none()) {
            return Err(shape_err(
                "gaussian",
                format!(
                    "gradients must be {:?} (and one for a learned log sigma)",
                    mean.shape()
                ),
            ));
        }
    }
    let params = LikParams {
        rows: r as u32,
        pixels: p as u32,
        batch: b as u32,
        write_grad: grad.is_some() as u32,
        grad_scale: grad.map(|g| g.2).unwrap_or(0.0),
        ls_mode,
        ls_fixed,
        use_weights: weights.is_some() as u32,
    };
    // Unused read-write slots each get a scratch buffer of their own (one buffer may not be
    // bound read-write twice in a dispatch); unused read-only slots share the context's dummy.
    let scratch_g = Tensor::<f32>::zeros(ctx, "unused gaussian grad", &[4])?;
    let scratch_ls = Tensor::<f32>::zeros(ctx, "unused gaussian grad_ls", &[4])?;
    let (g, gls) = match grad {
        Some((g, gls, _)) => (g.binding(), gls.unwrap_or(&scratch_ls).binding()),
        None => (scratch_g.binding(), scratch_ls.binding()),
    };
    let dummy = || ctx.dummy.as_entire_binding();
    Dispatch::new(
        ctx,
        &KernelKey::new(Shader::Likelihood, "gaussian"),
        label,
        &[
            (0, mean.binding()),
            (1, target.binding()),
            (2, nll.binding()),
            (3, g),
            (5, ls.map(|t| t.binding()).unwrap_or(dummy())),
            (6, gls),
            // Without weights the kernel never reads the slot; the target stands in.
            (7, weights.unwrap_or(target).binding()),
        ],
        Some((4, &params)),
        groups(r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sigma_floor_is_ln_one_hundredth() {
        assert_eq!(LOG_SIGMA_MIN, 0.01f64.ln() as f32);
        assert!(check_fixed_log_sigma(LOG_SIGMA_MIN).is_ok());
        assert!(check_fixed_log_sigma(-0.5).is_ok());
        for bad in [-4.61, -10.0, f32::NEG_INFINITY, f32::NAN] {
            let e = check_fixed_log_sigma(bad).unwrap_err();
            assert!(e.contains("-4.60517") && e.contains("ln 0.01"), "{e}");
        }
    }
}
