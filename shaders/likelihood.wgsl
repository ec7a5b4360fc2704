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


// The Bernoulli NLL and its derivative at logit l for target x from one exp:
// e = exp(−|l|); softplus(l) = max(l, 0) + ln(1 + e); σ(l) = 1 / (1 + e) for l ≥ 0 and
// e / (1 + e) below (both stable for any l). Returns (NLL, dNLL/dl) = (softplus(l) − x l,
// σ(l) − x).
fn bernoulli_terms(l: f32, x: f32) -> vec2<f32> {
    let e = exp(-abs(l));
    let nll = max(l, 0.0) + log(1.0 + e) - x * l;
    return vec2<f32>(nll, select(e, 1.0, l >= 0.0) / (1.0 + e) - x);
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
            let t = bernoulli_terms(out[o0 + p], tgt[t0 + p]);
            acc += t.x;
            if (lp.write_grad == 1u) {
                grad[o0 + p] = scaled(scale, t.y);
            }
        }
        let total = tree_sum(lid, acc);
        if (lid == 0u) {
            nll[r] = total;
        }
    }
}

// The same rows as `bernoulli` read and written as vec4, for P a multiple of 4 (the host picks
// it then; every row then starts on a vec4). On CPU adapters each load and store costs a loop
// over the lanes, so four pixels per access quarter that cost (bench_kernels on lavapipe, batch
// 128: 7.0-8.4 ms against 9.5-16 ms for 4096 pixels, 2.0-2.2 against 2.5 for 784). Each
// invocation sums its pixels in vec4 lanes and adds the four at the end, so the per-row order
// is fixed and results repeat bit for bit.
@group(0) @binding(10) var<storage, read> out4: array<vec4<f32>>;        // (R, P / 4)
@group(0) @binding(11) var<storage, read> tgt4: array<vec4<f32>>;        // (B, P / 4)
@group(0) @binding(12) var<storage, read_write> grad4: array<vec4<f32>>; // (R, P / 4)

@compute @workgroup_size(64)
fn bernoulli4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let q_row = lp.pixels / 4u;
    for (var r = wg.x; r < lp.rows; r += nwg.x) {
        let t0 = (r % lp.batch) * q_row;
        let o0 = r * q_row;
        let scale = row_scale(r);
        var acc = vec4<f32>(0.0);
        for (var q = lid; q < q_row; q += 64u) {
            let l = out4[o0 + q];
            let x = tgt4[t0 + q];
            let t = mat4x2<f32>(
                bernoulli_terms(l.x, x.x),
                bernoulli_terms(l.y, x.y),
                bernoulli_terms(l.z, x.z),
                bernoulli_terms(l.w, x.w),
            );
            acc += vec4<f32>(t[0].x, t[1].x, t[2].x, t[3].x);
            if (lp.write_grad == 1u) {
                let g = vec4<f32>(t[0].y, t[1].y, t[2].y, t[3].y);
                grad4[o0 + q] = select(scale * g, vec4<f32>(0.0), scale == 0.0);
            }
        }
        let total = tree_sum(lid, (acc.x + acc.y) + (acc.z + acc.w));
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
