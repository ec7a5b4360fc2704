// ---- likelihood.wgsl: per-row negative log-likelihoods with their gradients fused ----
//
// R rows of model output against B rows of targets: row r is scored against target row r % B
// (R = K * B when K latent samples share each input). One workgroup reduces one row with a
// fixed-order tree, so the result is the same bit for bit on every run.
// grad = grad_scale * dNLL/d(output) (grad_scale = 1 / B for the batch-mean loss); with
// `use_weights`, grad = grad_scale * w[r % B] * dNLL/d(output): the training step passes
// grad_scale = 1 / K and the gather's row weights w (1 / valid rows, 0 for padded rows), and a
// row of weight 0 gets a gradient of exactly 0.

struct LikParams {
    rows: u32,       // R
    pixels: u32,     // P
    batch: u32,      // B (target rows)
    write_grad: u32, // 1: write grad (and grad_ls for the Gaussian)
    grad_scale: f32,
    ls_mode: u32,    // Gaussian log sigma: 0 fixed (ls_fixed), 1 shared (ls[0]), 2 per pixel (ls[p])
    ls_fixed: f32,
    use_weights: u32, // 1: scale row r's gradient by row_w[r % B]
}

@group(0) @binding(0) var<storage, read> out: array<f32>;          // (R, P) logits or means
@group(0) @binding(1) var<storage, read> tgt: array<f32>;       // (B, P) in [0, 1]
@group(0) @binding(2) var<storage, read_write> nll: array<f32>;    // (R,)
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;   // (R, P)
@group(0) @binding(4) var<uniform> lp: LikParams;
@group(0) @binding(7) var<storage, read> row_w: array<f32>;      // (B,) row weights

// The gradient scale of output row r.
fn row_scale(r: u32) -> f32 {
    if (lp.use_weights == 1u) {
        return lp.grad_scale * row_w[r % lp.batch];
    }
    return lp.grad_scale;
}

// scale * g, and exactly 0 for a row of weight 0 (whatever g is).
fn scaled(scale: f32, g: f32) -> f32 {
    return select(scale * g, 0.0, scale == 0.0);
}


fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// Bernoulli with logits l: NLL = softplus(l) - x l (stable for any l); dNLL/dl = sigmoid(l) - x.
@compute @workgroup_size(64)
fn bernoulli(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var r = wg.x; r < lp.rows; r += nwg.x) {
        let t0 = (r % lp.batch) * lp.pixels;
        let o0 = r * lp.pixels;
        let scale = row_scale(r);
        var acc = 0.0;
        for (var p = lid; p < lp.pixels; p += 64u) {
            let l = out[o0 + p];
            let x = tgt[t0 + p];
            acc += softplus(l) - x * l;
            if (lp.write_grad == 1u) {
                grad[o0 + p] = scaled(scale, sigmoid(l) - x);
            }
        }
        let total = tree_sum(lid, acc);
        if (lid == 0u) {
            nll[r] = total;
        }
    }
}

@group(0) @binding(5) var<storage, read> ls: array<f32>;            // (1,) or (P,) log sigma
@group(0) @binding(6) var<storage, read_write> grad_ls: array<f32>; // (R, P) per-element dNLL/dls

const HALF_LOG_2PI: f32 = 0.9189385332046727;

// The floor of log sigma: ln 0.01 (mirrors ops::likelihood::LOG_SIGMA_MIN). Where the data are
// constant (a black background) a learned sigma would shrink without end and the NLL fall
// without bound; with the floor every pixel's NLL is at least LOG_SIGMA_MIN + log(2 pi) / 2.
const LOG_SIGMA_MIN: f32 = -4.605170185988091;

// Gaussian N(x; mu, sigma^2) with log sigma = max(ls, LOG_SIGMA_MIN):
// NLL = (x - mu)^2 / (2 sigma^2) + log sigma + log(2 pi) / 2.
// dNLL/dmu = (mu - x) / sigma^2;  dNLL/dls = 1 - (x - mu)^2 / sigma^2 above the floor and 0
// below it (the derivative of the clamp; summed over rows by the column/total reductions when
// log sigma is learned).
@compute @workgroup_size(64)
fn gaussian(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var r = wg.x; r < lp.rows; r += nwg.x) {
        let t0 = (r % lp.batch) * lp.pixels;
        let o0 = r * lp.pixels;
        let scale = row_scale(r);
        var acc = 0.0;
        for (var p = lid; p < lp.pixels; p += 64u) {
            var s_raw = lp.ls_fixed;
            if (lp.ls_mode == 1u) {
                s_raw = ls[0];
            } else if (lp.ls_mode == 2u) {
                s_raw = ls[p];
            }
            let s = max(s_raw, LOG_SIGMA_MIN);
            let inv_var = exp(-2.0 * s);
            let diff = out[o0 + p] - tgt[t0 + p];
            let q = diff * diff * inv_var;
            acc += 0.5 * q + s + HALF_LOG_2PI;
            if (lp.write_grad == 1u) {
                grad[o0 + p] = scaled(scale, diff * inv_var);
                if (lp.ls_mode != 0u) {
                    grad_ls[o0 + p] = scaled(scale, select(0.0, 1.0 - q, s_raw > LOG_SIGMA_MIN));
                }
            }
        }
        let total = tree_sum(lid, acc);
        if (lid == 0u) {
            nll[r] = total;
        }
    }
}
