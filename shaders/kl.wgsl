// ---- kl.wgsl: closed-form KL(N(mu, sigma^2) || N(0, I)) per sample and per dimension, with
// its gradient fused ----
//
// kl_bd = (mu^2 + sigma^2 - 1 - log sigma^2) / 2
// d/dmu = mu,  d/dlogvar = (sigma^2 - 1) / 2, both scaled by grad_weight (beta / B for the
// batch mean); with `use_weights` by grad_weight * w[b] (training: beta times the gather's row
// weights, 1 / valid rows or 0 for a padded row, whose gradient is then exactly 0).

struct KlParams {
    batch: u32,
    dim: u32,
    grad_weight: f32,
    write_grad: u32,  // 1: genc = grad_weight * dKL (overwrite)
    use_weights: u32, // 1: scale row b by row_w[b]
    ramp: u32,        // > 0: scale the gradient by min(1, (t + 1) / ramp), t = state[0]
    period: u32,      // > 0 (with ramp): t = state[0] mod period (cyclical annealing)
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> enc: array<f32>;             // (B, 2D) [mu | logvar]
@group(0) @binding(1) var<storage, read_write> kl_sample: array<f32>; // (B,)
@group(0) @binding(2) var<storage, read_write> kl_elem: array<f32>;   // (B, D)
@group(0) @binding(3) var<storage, read_write> genc: array<f32>;      // (B, 2D)
@group(0) @binding(4) var<uniform> kp: KlParams;
@group(0) @binding(10) var<storage, read> row_w: array<f32>;       // (B,) row weights
@group(0) @binding(11) var<storage, read> kl_state: array<u32>;    // the step state (ramp)

// The KL's weight factor at step t of a ramp: min(1, (t' + 1) / ramp) with t' = t, or
// t mod period for a cyclical schedule (every period starts again from 1 / ramp).
fn ramp_factor(t: u32, ramp: u32, period: u32) -> f32 {
    var tt = t;
    if (period > 0u) {
        tt = t % period;
    }
    return min(1.0, f32(tt + 1u) / f32(ramp));
}

// exp(x) - 1 - x without cancellation for small |x|.
fn exp_m1_mx(x: f32) -> f32 {
    if (abs(x) < 0.03) {
        return x * x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0))));
    }
    return exp(x) - 1.0 - x;
}

@compute @workgroup_size(64)
fn kl(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var b = gid.x; b < kp.batch; b += nwg.x * 64u) {
        var gw = kp.grad_weight;
        if (kp.ramp > 0u) {
            // KL warm-up or cyclical annealing: step t (0-based, from the GPU step state)
            // weighs the KL gradient by ramp_factor(t).
            gw *= ramp_factor(kl_state[0], kp.ramp, kp.period);
        }
        if (kp.use_weights == 1u) {
            gw *= row_w[b];
        }
        var sum = 0.0;
        for (var d = 0u; d < kp.dim; d++) {
            let im = b * 2u * kp.dim + d;
            let il = im + kp.dim;
            let mu = enc[im];
            let lv = enc[il];
            let k = 0.5 * (mu * mu + exp_m1_mx(lv));
            kl_elem[b * kp.dim + d] = k;
            sum += k;
            if (kp.write_grad == 1u) {
                genc[im] = select(gw * mu, 0.0, gw == 0.0);
                genc[il] = select(gw * 0.5 * (exp(lv) - 1.0), 0.0, gw == 0.0);
            }
        }
        kl_sample[b] = sum;
    }
}

// ---- controlled capacity: gamma * |KL - C(t)| ----
// KL is the batch's weighted mean sum_b w_b kl_b (the row weights: 1 / valid rows, 0 for a
// padded row) and C(t) = c_max * min(1, t / steps) rises linearly over `steps` steps (t from the
// step state; steps = 0: C = c_max from the start). Every row gets the same penalty
// gamma * |KL - C(t)| (so that its weighted mean is the penalty) and the gradient
// genc = gamma * sign(KL - C(t)) * w_b * dKL_b / denc (overwrite; 0 where KL = C(t)). Every
// workgroup sums the batch's KL itself (a fixed-order tree sum, the same in every workgroup),
// so that one dispatch does it all. Run after `kl`, which wrote kl_sample.

struct CapacityParams {
    batch: u32,
    dim: u32,
    steps: u32,
    _pad0: u32,
    gamma: f32,
    c_max: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(12) var<uniform> cp: CapacityParams;
@group(0) @binding(13) var<storage, read> kl_in: array<f32>;          // (B,) from `kl`
@group(0) @binding(14) var<storage, read_write> penalty: array<f32>;  // (B,)

@compute @workgroup_size(64)
fn kl_capacity(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var part = 0.0;
    for (var b = lid.x; b < cp.batch; b += 64u) {
        part += row_w[b] * kl_in[b];
    }
    let kl_mean = tree_sum(lid.x, part);
    let t = kl_state[0];
    var c = cp.c_max;
    if (cp.steps > 0u) {
        c = cp.c_max * min(1.0, f32(t) / f32(cp.steps));
    }
    let diff = kl_mean - c;
    let pen = cp.gamma * abs(diff);
    let coef = cp.gamma * sign(diff);
    for (var b = wid.x * 64u + lid.x; b < cp.batch; b += nwg.x * 64u) {
        penalty[b] = pen;
        let gw = coef * row_w[b];
        for (var d = 0u; d < cp.dim; d++) {
            let im = b * 2u * cp.dim + d;
            let il = im + cp.dim;
            genc[im] = select(gw * enc[im], 0.0, gw == 0.0);
            genc[il] = select(gw * 0.5 * (exp(enc[il]) - 1.0), 0.0, gw == 0.0);
        }
    }
}

// ---- importance weights for the IWAE bound ----
// log w[s, b] = log p(x_b | z_sb) + log p(z_sb) - log q(z_sb | x_b)
//             = -nll[s, b] + sum_d (eps^2 - z^2 + logvar) / 2
// (the log 2 pi terms of p and q cancel; z = mu + sigma eps so log q needs only eps).

struct IwaeParams {
    batch: u32,
    dim: u32,
    samples: u32,
    _pad: u32,
}

@group(0) @binding(5) var<storage, read> nll_in: array<f32>;      // (K, B)
@group(0) @binding(6) var<storage, read> z_in: array<f32>;        // (K, B, D)
@group(0) @binding(7) var<storage, read> eps_in: array<f32>;      // (K, B, D)
@group(0) @binding(8) var<storage, read_write> logw: array<f32>;  // (K, B)
@group(0) @binding(9) var<uniform> ip: IwaeParams;

@compute @workgroup_size(64)
fn iwae_log_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = ip.samples * ip.batch;
    for (var r = gid.x; r < total; r += nwg.x * 64u) {
        let b = r % ip.batch;
        var s = 0.0;
        for (var d = 0u; d < ip.dim; d++) {
            let e = eps_in[r * ip.dim + d];
            let z = z_in[r * ip.dim + d];
            let lv = enc[b * 2u * ip.dim + ip.dim + d];
            s += 0.5 * (e * e - z * z + lv);
        }
        logw[r] = s - nll_in[r];
    }
}
