// ---- posterior_full.wgsl: the full-covariance Gaussian posterior q(z|x) = N(mu, L L^T) ----
//
// q (B, P), P = 2D + D(D-1)/2, holds per row
//   [mu (D) | v (D) | the strictly lower entries of L, row-major (D(D-1)/2)]
// with L_ii = exp(v_i / 2), i.e. v_i = log L_ii^2: with zero lower entries the first 2D values
// are exactly the diagonal posterior's [mu | log sigma^2]. Lower entry (i, j), j < i, sits at
// 2D + i(i-1)/2 + j.
//
// z = mu + L eps, eps (K, B, D) drawn exactly as reparam.wgsl draws it (element e of (K, B, D)
// is word e % 4 of Philox block e / 4, Box-Muller on the pairs), so that the diagonal special
// case draws the same eps and the same z. One invocation per (sample, row) keeps the row's eps
// in registers: D <= MAX_DIM (checked on the host).
//
// KL(q || N(0, I)) = (tr(L L^T) + mu^T mu - D - 2 sum_i log L_ii) / 2
//                  = sum_i (mu_i^2 + exp(v_i) - 1 - v_i) / 2 + sum_{j<i} L_ij^2 / 2
// d/dmu = mu, d/dv_i = (exp(v_i) - 1) / 2, d/dL_ij = L_ij.
// kl_elem (B, D) is the KL of each marginal q(z_i) = N(mu_i, S_ii), S = L L^T:
// (mu_i^2 + S_ii - 1 - log S_ii) / 2. The marginals' KLs do not sum to the joint KL (they
// leave out the total correlation of q); they are what reports rank dimensions by.
//
// log w = -nll + log N(z; 0, I) - log q(z|x),  log q = -|eps|^2/2 - sum_i log L_ii - D/2 log 2 pi
//       = -nll + sum_i (eps_i^2 - z_i^2 + v_i) / 2   (the log 2 pi terms cancel).

const MAX_DIM: u32 = 64u;

struct FullParams {
    batch: u32,       // B
    dim: u32,         // D
    samples: u32,     // K
    stride: u32,      // P = 2D + D(D-1)/2
    seed_lo: u32,
    seed_hi: u32,
    step: u32,        // added to state[0] when use_state == 1
    stream: u32,
    use_state: u32,
    accumulate: u32,  // sample backward: 1 adds into dq, 0 overwrites
    write_grad: u32,  // kl: 1 writes dq = gw * dKL (overwrite)
    use_weights: u32, // kl: 1 scales row b by row_w[b]
    grad_weight: f32, // kl: beta (times 1 / B without row weights)
    ramp: u32,        // kl: > 0 scales the gradient by min(1, (t + 1) / ramp), t = state[0]
    period: u32,      // kl: > 0 (with ramp): t = state[0] mod period
    cap_steps: u32,   // capacity: C(t) = c_max * min(1, t / cap_steps); 0: c_max throughout
    gamma: f32,       // capacity weight
    c_max: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> fp: FullParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;              // (B, P)
@group(0) @binding(2) var<storage, read_write> z: array<f32>;        // (K, B, D)
@group(0) @binding(3) var<storage, read_write> eps: array<f32>;      // (K, B, D)
@group(0) @binding(4) var<storage, read> state: array<u32>;          // the step state
@group(0) @binding(5) var<storage, read> dz: array<f32>;             // (K, B, D)
@group(0) @binding(6) var<storage, read> eps_in: array<f32>;         // (K, B, D)
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;       // (B, P)
@group(0) @binding(8) var<storage, read_write> kl_row: array<f32>;   // (B,)
@group(0) @binding(9) var<storage, read_write> kl_elem: array<f32>;  // (B, D)
@group(0) @binding(10) var<storage, read> row_w: array<f32>;         // (B,)
@group(0) @binding(11) var<storage, read> kl_in: array<f32>;         // (B,)
@group(0) @binding(12) var<storage, read_write> penalty: array<f32>; // (B,)
@group(0) @binding(13) var<storage, read> nll_in: array<f32>;        // (K, B)
@group(0) @binding(14) var<storage, read> z_in: array<f32>;          // (K, B, D)
@group(0) @binding(15) var<storage, read_write> logw: array<f32>;    // (K, B)

// Offset in a row of q of lower entry (i, 0) of L (i >= 1; row i has i lower entries).
fn lower_start(i: u32) -> u32 {
    return 2u * fp.dim + (i * (i - 1u)) / 2u;
}

// ---- sampling: one invocation per (sample, row) ----
@compute @workgroup_size(64)
fn full_sample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = fp.samples * fp.batch;
    var step = fp.step;
    if (fp.use_state == 1u) {
        step += state[0];
    }
    for (var r = gid.x; r < rows; r += nwg.x * 64u) {
        let q0 = (r % fp.batch) * fp.stride;
        var e: array<f32, 64>;
        var n: array<f32, 4>;
        var block = 0xffffffffu;
        for (var i = 0u; i < fp.dim; i++) {
            let idx = r * fp.dim + i;
            let t = idx / 4u;
            if (t != block) {
                let w = philox4x32(vec4<u32>(t, step, fp.stream, 0u), vec2<u32>(fp.seed_lo, fp.seed_hi));
                let n01 = box_muller(u01(w.x), u01(w.y));
                let n23 = box_muller(u01(w.z), u01(w.w));
                n = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
                block = t;
            }
            let ei = n[idx % 4u];
            e[min(i, MAX_DIM - 1u)] = ei;
            eps[idx] = ei;
            var off = 0.0;
            if (i > 0u) {
                let lo = q0 + lower_start(i);
                for (var j = 0u; j < i; j++) {
                    off += q[lo + j] * e[min(j, MAX_DIM - 1u)];
                }
            }
            z[idx] = (q[q0 + i] + exp(0.5 * q[q0 + fp.dim + i]) * ei) + off;
        }
    }
}

// ---- the backward through the draw: one invocation per parameter (b, p) ----
// d mu_i = sum_s dz_i;  d v_i = sum_s dz_i eps_i L_ii / 2;  d L_ij = sum_s dz_i eps_j.
@compute @workgroup_size(64)
fn full_sample_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = fp.batch * fp.stride;
    let bd = fp.batch * fp.dim;
    for (var t = gid.x; t < total; t += nwg.x * 64u) {
        let b = t / fp.stride;
        let p = t % fp.stride;
        let z0 = b * fp.dim;
        var g = 0.0;
        if (p < fp.dim) {
            for (var s = 0u; s < fp.samples; s++) {
                g += dz[s * bd + z0 + p];
            }
        } else if (p < 2u * fp.dim) {
            let i = p - fp.dim;
            let half_l = 0.5 * exp(0.5 * q[t]);
            for (var s = 0u; s < fp.samples; s++) {
                let k = s * bd + z0 + i;
                g += dz[k] * eps_in[k] * half_l;
            }
        } else {
            // Lower entry m = i(i-1)/2 + j: find its row i.
            let m = p - 2u * fp.dim;
            var i = 1u;
            while ((i * (i + 1u)) / 2u <= m) {
                i++;
            }
            let j = m - (i * (i - 1u)) / 2u;
            for (var s = 0u; s < fp.samples; s++) {
                g += dz[s * bd + z0 + i] * eps_in[s * bd + z0 + j];
            }
        }
        if (fp.accumulate == 1u) {
            dq[t] += g;
        } else {
            dq[t] = g;
        }
    }
}

// ---- closed-form KL, per row ----

fn ramp_factor(t: u32, ramp: u32, period: u32) -> f32 {
    var tt = t;
    if (period > 0u) {
        tt = t % period;
    }
    return min(1.0, f32(tt + 1u) / f32(ramp));
}

// exp(x) - 1 - x without cancellation for small |x| (as in kl.wgsl).
fn exp_m1_mx(x: f32) -> f32 {
    if (abs(x) < 0.03) {
        return x * x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0))));
    }
    return exp(x) - 1.0 - x;
}

// dq of row b = gw * dKL_b (overwrite; exactly 0 where gw is 0).
fn store_kl_grad(b: u32, gw: f32) {
    let q0 = b * fp.stride;
    for (var p = 0u; p < fp.stride; p++) {
        let x = q[q0 + p];
        var g = gw * x;
        if (p >= fp.dim && p < 2u * fp.dim) {
            g = gw * 0.5 * (exp(x) - 1.0);
        }
        dq[q0 + p] = select(g, 0.0, gw == 0.0);
    }
}

@compute @workgroup_size(64)
fn full_kl(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var b = gid.x; b < fp.batch; b += nwg.x * 64u) {
        let q0 = b * fp.stride;
        var sum = 0.0;
        for (var i = 0u; i < fp.dim; i++) {
            let mu = q[q0 + i];
            let v = q[q0 + fp.dim + i];
            var o = 0.0; // sum_{j<i} L_ij^2
            if (i > 0u) {
                let lo = q0 + lower_start(i);
                for (var j = 0u; j < i; j++) {
                    o += q[lo + j] * q[lo + j];
                }
            }
            let k = 0.5 * (mu * mu + exp_m1_mx(v));
            sum += k + 0.5 * o;
            // Marginal: S_ii = exp(v) + o, so S_ii - 1 - log S_ii = exp(v) - 1 - v + o
            // - log(1 + o exp(-v)).
            let x = o * exp(-v);
            var lg = log(1.0 + x);
            if (x < 1e-3) {
                lg = x * (1.0 - x * (0.5 - x * (1.0 / 3.0)));
            }
            var ke = k + 0.5 * (o - lg);
            if (x > 1e6) {
                let sii = exp(v) + o;
                ke = 0.5 * (mu * mu + sii - 1.0 - log(sii));
            }
            kl_elem[b * fp.dim + i] = ke;
        }
        kl_row[b] = sum;
        if (fp.write_grad == 1u) {
            var gw = fp.grad_weight;
            if (fp.ramp > 0u) {
                gw *= ramp_factor(state[0], fp.ramp, fp.period);
            }
            if (fp.use_weights == 1u) {
                gw *= row_w[b];
            }
            store_kl_grad(b, gw);
        }
    }
}

// ---- controlled capacity gamma * |KL - C(t)| (as kl_capacity in kl.wgsl) ----
// KL = sum_b w_b kl_b, every workgroup sums it itself in a fixed order; every row gets the
// penalty, and dq = gamma * sign(KL - C(t)) * w_b * dKL_b (overwrite). Run after full_kl.
@compute @workgroup_size(64)
fn full_kl_capacity(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var part = 0.0;
    for (var b = lid.x; b < fp.batch; b += 64u) {
        part += row_w[b] * kl_in[b];
    }
    let kl_mean = tree_sum(lid.x, part);
    var c = fp.c_max;
    if (fp.cap_steps > 0u) {
        c = fp.c_max * min(1.0, f32(state[0]) / f32(fp.cap_steps));
    }
    let diff = kl_mean - c;
    let pen = fp.gamma * abs(diff);
    let coef = fp.gamma * sign(diff);
    for (var b = wid.x * 64u + lid.x; b < fp.batch; b += nwg.x * 64u) {
        penalty[b] = pen;
        store_kl_grad(b, coef * row_w[b]);
    }
}

// ---- IWAE log-weights: one invocation per (sample, row) ----
@compute @workgroup_size(64)
fn full_log_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = fp.samples * fp.batch;
    for (var r = gid.x; r < total; r += nwg.x * 64u) {
        let q0 = (r % fp.batch) * fp.stride;
        var s = 0.0;
        for (var i = 0u; i < fp.dim; i++) {
            let e = eps_in[r * fp.dim + i];
            let zz = z_in[r * fp.dim + i];
            s += 0.5 * (e * e - zz * zz + q[q0 + fp.dim + i]);
        }
        logw[r] = s - nll_in[r];
    }
}
