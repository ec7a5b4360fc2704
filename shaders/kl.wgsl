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
    warmup: u32,      // > 0: scale the gradient by min(1, (state[0] + 1) / warmup)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> enc: array<f32>;             // (B, 2D) [mu | logvar]
@group(0) @binding(1) var<storage, read_write> kl_sample: array<f32>; // (B,)
@group(0) @binding(2) var<storage, read_write> kl_elem: array<f32>;   // (B, D)
@group(0) @binding(3) var<storage, read_write> genc: array<f32>;      // (B, 2D)
@group(0) @binding(4) var<uniform> kp: KlParams;
@group(0) @binding(10) var<storage, read> row_w: array<f32>;       // (B,) row weights
@group(0) @binding(11) var<storage, read> kl_state: array<u32>;    // the step state (warm-up)

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
        if (kp.warmup > 0u) {
            // KL warm-up: step t (0-based, from the GPU step state) weighs the KL gradient by
            // min(1, (t + 1) / warmup).
            gw *= min(1.0, f32(kl_state[0] + 1u) / f32(kp.warmup));
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
