// ---- posterior_planar.wgsl: planar normalizing flows on a diagonal Gaussian base ----
//
// q (B, P), P = 2D + K(2D + 1), holds per row
//   [mu (D) | log sigma^2 (D) | for each flow k = 1..K: u_k (D), w_k (D), b_k (1)]
// (flow k starts at 2D + (k-1)(2D + 1)): with K = 0 it is exactly the diagonal posterior's row.
//
// z_0 = mu + sigma eps, eps (S, B, D) drawn as reparam.wgsl draws it (or given);
// z_k = z_{k-1} + uh_k tanh(w_k . z_{k-1} + b_k), with the invertibility fix
//   uh = u + (m(w.u) - w.u) w / max(|w|^2, DELTA),  m(a) = -1 + softplus(a),
// so that w.uh = m(w.u) > -1 whenever |w|^2 >= DELTA. DELTA = 1e-8 only keeps w = 0 finite
// (there the layer is the translation z + u tanh(b), det = 1); below it w.uh is
// (1 - |w|^2/DELTA) w.u + (|w|^2/DELTA) m(w.u), which is < -1 only if w.u < -1 as well, i.e.
// only for |u| > 1/|w| > 1e4. (The gradient treats the max as the branch it takes.)
// log|det dz_k/dz_{k-1}| = log|1 + uh . psi_k|, psi_k = (1 - tanh^2(w.z + b)) w, and
// w.uh is computed as w.u + c |w|^2, c = (m(w.u) - w.u) / max(|w|^2, DELTA).
// log q(z_K|x) = log N(z_0; mu, sigma^2) - sum_k log|det_k|.
//
// One invocation per draw (forward, log-weights) or per row (backward, looping over the
// samples so that each row of the gradient has one writer): D <= MAX_DIM, K <= MAX_FLOWS
// (checked on the host). The backward stores nothing between passes: walking the flows
// backwards it recomputes z_{k-1} from z_0 (O(K^2 D) per draw).

const MAX_DIM: u32 = 64u;
const DELTA: f32 = 1e-8;

struct PlanarParams {
    batch: u32,      // B
    dim: u32,        // D
    samples: u32,    // S
    flows: u32,      // K
    stride: u32,     // P = 2D + K(2D + 1)
    seed_lo: u32,
    seed_hi: u32,
    step: u32,       // added to state[0] when use_state == 1
    stream: u32,
    use_state: u32,
    draw: u32,       // forward: 1 draws eps in-shader and writes it, 0 reads it
    accumulate: u32, // backward: 1 adds into dq, 0 overwrites
    use_cw: u32,     // backward: 1 weights draw r's log-det sum by cw[r], 0: no log-det term
    volume: u32,     // backward: 1 adds sum_i log sigma_i to the weighted log-det sum
    write_ld: u32,   // forward: 1 writes the log-det sums, 0 leaves the slot alone
    use_dz: u32,     // backward: 1 takes dz_K, 0: no path through z_K
    cw_scale: f32,   // backward: the log-det weights are cw_scale * cw[r]
    recompute: u32,  // log-weights: 1 recomputes the log-det sums from q and eps
    write_grad: u32, // kl: 1 stores dq = 0 for the row (the KL's gradient weight is 0)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
}

@group(0) @binding(0) var<uniform> pp: PlanarParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;                // (B, P)
@group(0) @binding(2) var<storage, read_write> eps: array<f32>;       // (S, B, D)
@group(0) @binding(3) var<storage, read> state: array<u32>;           // the step state
@group(0) @binding(4) var<storage, read_write> z: array<f32>;         // (S, B, D)
@group(0) @binding(5) var<storage, read_write> logdet: array<f32>;    // (S, B)
@group(0) @binding(6) var<storage, read> eps_in: array<f32>;          // (S, B, D)
@group(0) @binding(7) var<storage, read> dz: array<f32>;              // (S, B, D)
@group(0) @binding(8) var<storage, read> cw: array<f32>;              // (S, B)
@group(0) @binding(9) var<storage, read_write> dq: array<f32>;        // (B, P)
@group(0) @binding(10) var<storage, read> nll_in: array<f32>;         // (S, B)
@group(0) @binding(11) var<storage, read> z_in: array<f32>;           // (S, B, D)
@group(0) @binding(12) var<storage, read> logdet_in: array<f32>;      // (S, B)
@group(0) @binding(13) var<storage, read_write> logw: array<f32>;     // (S, B)

fn flow_start(q0: u32, k: u32) -> u32 {
    return q0 + 2u * pp.dim + k * (2u * pp.dim + 1u);
}

// The scalars of flow k (0-based) of the row at q0: (w.u, |w|^2, c, w.uh).
fn flow_scalars(f0: u32) -> vec4<f32> {
    let d = pp.dim;
    var wu = 0.0;
    var ww = 0.0;
    for (var i = 0u; i < d; i++) {
        let w = q[f0 + d + i];
        wu += w * q[f0 + i];
        ww += w * w;
    }
    let m = -1.0 + softplus(wu);
    let c = (m - wu) / max(ww, DELTA);
    return vec4<f32>(wu, ww, c, wu + c * ww);
}

// Applies flow k to zz in place; returns log|det|.
fn apply_flow(q0: u32, k: u32, zz: ptr<function, array<f32, 64>>) -> f32 {
    let d = pp.dim;
    let f0 = flow_start(q0, k);
    let s = flow_scalars(f0);
    var a = q[f0 + 2u * d];
    for (var i = 0u; i < d; i++) {
        a += q[f0 + d + i] * (*zz)[min(i, MAX_DIM - 1u)];
    }
    let h = tanh(a);
    for (var i = 0u; i < d; i++) {
        let uh = q[f0 + i] + s.z * q[f0 + d + i];
        (*zz)[min(i, MAX_DIM - 1u)] += uh * h;
    }
    return log(abs(1.0 + (1.0 - h * h) * s.w));
}

// ---- forward: one invocation per draw r = s B + b ----
@compute @workgroup_size(64)
fn planar_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = pp.samples * pp.batch;
    var step = pp.step;
    if (pp.use_state == 1u) {
        step += state[0];
    }
    for (var r = gid.x; r < rows; r += nwg.x * 64u) {
        let q0 = (r % pp.batch) * pp.stride;
        var zz: array<f32, 64>;
        var n: array<f32, 4>;
        var block = 0xffffffffu;
        for (var i = 0u; i < pp.dim; i++) {
            let idx = r * pp.dim + i;
            var ei = 0.0;
            if (pp.draw == 1u) {
                let t = idx / 4u;
                if (t != block) {
                    let w = philox4x32(vec4<u32>(t, step, pp.stream, 0u), vec2<u32>(pp.seed_lo, pp.seed_hi));
                    let n01 = box_muller(u01(w.x), u01(w.y));
                    let n23 = box_muller(u01(w.z), u01(w.w));
                    n = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
                    block = t;
                }
                ei = n[idx % 4u];
                eps[idx] = ei;
            } else {
                ei = eps[idx];
            }
            zz[min(i, MAX_DIM - 1u)] = q[q0 + i] + exp(0.5 * q[q0 + pp.dim + i]) * ei;
        }
        var ld = 0.0;
        for (var k = 0u; k < pp.flows; k++) {
            ld += apply_flow(q0, k, &zz);
        }
        for (var i = 0u; i < pp.dim; i++) {
            z[r * pp.dim + i] = zz[min(i, MAX_DIM - 1u)];
        }
        if (pp.write_ld == 1u) {
            logdet[r] = ld;
        }
    }
}

// ---- backward: one invocation per row b, looping over its S draws ----
// dq (+)= d/dq sum_s [dz_K . z_K + cw_sb (sum_k log|det_k| (+ sum_i log sigma_i))] at fixed eps.
@compute @workgroup_size(64)
fn planar_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = pp.dim;
    for (var b = gid.x; b < pp.batch; b += nwg.x * 64u) {
        let q0 = b * pp.stride;
        if (pp.accumulate == 0u) {
            for (var p = 0u; p < pp.stride; p++) {
                dq[q0 + p] = 0.0;
            }
        }
        for (var s = 0u; s < pp.samples; s++) {
            let r = s * pp.batch + b;
            var cr = 0.0;
            if (pp.use_cw == 1u) {
                cr = pp.cw_scale * cw[r];
            }
            var gz: array<f32, 64>;
            var zt: array<f32, 64>;
            for (var i = 0u; i < d; i++) {
                var g = 0.0;
                if (pp.use_dz == 1u) {
                    g = dz[r * d + i];
                }
                gz[min(i, MAX_DIM - 1u)] = g;
            }
            for (var kk = pp.flows; kk > 0u; kk--) {
                let k = kk - 1u;
                // z_{k-1}: z_0, then flows 0 .. k-1 (0-based).
                for (var i = 0u; i < d; i++) {
                    zt[min(i, MAX_DIM - 1u)] = q[q0 + i] + exp(0.5 * q[q0 + d + i]) * eps_in[r * d + i];
                }
                for (var j = 0u; j < k; j++) {
                    _ = apply_flow(q0, j, &zt);
                }
                let f0 = flow_start(q0, k);
                let sc = flow_scalars(f0);
                let c = sc.z;
                let wuh = sc.w;
                var a = q[f0 + 2u * d];
                var dh = 0.0;
                for (var i = 0u; i < d; i++) {
                    let w = q[f0 + d + i];
                    a += w * zt[min(i, MAX_DIM - 1u)];
                    dh += gz[min(i, MAX_DIM - 1u)] * (q[f0 + i] + c * w);
                }
                let h = tanh(a);
                let g = 1.0 - h * h;
                let det = 1.0 + g * wuh;
                // log|det|: d/d det = 1 / det.
                let dg = cr * wuh / det;
                let dwuh = cr * g / det;
                let da = (dh - 2.0 * h * dg) * g;
                // d uh_i = gz_i h + dwuh w_i; dc = sum_i d uh_i w_i.
                var dc = 0.0;
                for (var i = 0u; i < d; i++) {
                    let w = q[f0 + d + i];
                    dc += (gz[min(i, MAX_DIM - 1u)] * h + dwuh * w) * w;
                }
                let n = max(sc.y, DELTA);
                let sig = 1.0 / (1.0 + exp(-sc.x));
                let dwu = dc * (sig - 1.0) / n;
                let dn = select(0.0, -dc * c / n, sc.y >= DELTA);
                for (var i = 0u; i < d; i++) {
                    let ii = min(i, MAX_DIM - 1u);
                    let u = q[f0 + i];
                    let w = q[f0 + d + i];
                    let uh = u + c * w;
                    let duh = gz[ii] * h + dwuh * w;
                    dq[f0 + i] += duh + dwu * w;
                    dq[f0 + d + i] += dwuh * uh + da * zt[ii] + c * duh + dwu * u + 2.0 * dn * w;
                    gz[ii] += da * w;
                }
                dq[f0 + 2u * d] += da;
            }
            // z_0 = mu + sigma eps.
            for (var i = 0u; i < d; i++) {
                let ii = min(i, MAX_DIM - 1u);
                let sigma = exp(0.5 * q[q0 + d + i]);
                dq[q0 + i] += gz[ii];
                var dlv = 0.5 * gz[ii] * eps_in[r * d + i] * sigma;
                if (pp.volume == 1u) {
                    dlv += 0.5 * cr;
                }
                dq[q0 + d + i] += dlv;
            }
        }
    }
}

// ---- IWAE log-weights: one invocation per draw ----
// log w = -nll + log N(z_K; 0, I) - log q(z_K|x)
//       = -nll + sum_i (eps_i^2 - z_i^2 + log sigma_i^2) / 2 + sum_k log|det_k|.
@compute @workgroup_size(64)
fn planar_log_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = pp.samples * pp.batch;
    for (var r = gid.x; r < total; r += nwg.x * 64u) {
        let q0 = (r % pp.batch) * pp.stride;
        var s = 0.0;
        for (var i = 0u; i < pp.dim; i++) {
            let e = eps_in[r * pp.dim + i];
            let zz = z_in[r * pp.dim + i];
            s += 0.5 * (e * e - zz * zz + q[q0 + pp.dim + i]);
        }
        var ld = 0.0;
        if (pp.recompute == 1u) {
            var zz: array<f32, 64>;
            for (var i = 0u; i < pp.dim; i++) {
                zz[min(i, MAX_DIM - 1u)] = q[q0 + i] + exp(0.5 * q[q0 + pp.dim + i]) * eps_in[r * pp.dim + i];
            }
            for (var k = 0u; k < pp.flows; k++) {
                ld += apply_flow(q0, k, &zz);
            }
        } else {
            ld = logdet_in[r];
        }
        logw[r] = s + ld - nll_in[r];
    }
}

// ---- the KL's single-draw Monte Carlo estimate, per row ----
// The flow has no closed-form KL. kl_row[b] = log q(z_K) - log N(z_K; 0, I) at one draw
// eps ~ Philox(seed, step, stream) (fixed by the host), i.e.
//   sum_i (z_i^2 - eps_i^2 - log sigma_i^2) / 2 - sum_k log|det_k|;
// kl_elem[b, i] is the base Gaussian's KL per dimension, (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2)/2.
// With write_grad == 1 the row's gradient is stored as 0: the flow's KL enters a training
// gradient only through the sample and log q path (the importance-weighted objective).
@group(0) @binding(14) var<storage, read_write> kl_row: array<f32>;  // (B,)
@group(0) @binding(15) var<storage, read_write> kl_elem: array<f32>; // (B, D)

@compute @workgroup_size(64)
fn planar_kl(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = pp.dim;
    for (var b = gid.x; b < pp.batch; b += nwg.x * 64u) {
        let q0 = b * pp.stride;
        var zz: array<f32, 64>;
        var n: array<f32, 4>;
        var block = 0xffffffffu;
        var s = 0.0;
        for (var i = 0u; i < d; i++) {
            let idx = b * d + i;
            let t = idx / 4u;
            if (t != block) {
                let w = philox4x32(vec4<u32>(t, pp.step, pp.stream, 0u), vec2<u32>(pp.seed_lo, pp.seed_hi));
                let n01 = box_muller(u01(w.x), u01(w.y));
                let n23 = box_muller(u01(w.z), u01(w.w));
                n = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
                block = t;
            }
            let ei = n[idx % 4u];
            let mu = q[q0 + i];
            let lv = q[q0 + d + i];
            zz[min(i, MAX_DIM - 1u)] = mu + exp(0.5 * lv) * ei;
            s -= 0.5 * (ei * ei + lv);
            kl_elem[idx] = 0.5 * (mu * mu + exp(lv) - 1.0 - lv);
        }
        for (var k = 0u; k < pp.flows; k++) {
            s -= apply_flow(q0, k, &zz);
        }
        for (var i = 0u; i < d; i++) {
            let zi = zz[min(i, MAX_DIM - 1u)];
            s += 0.5 * zi * zi;
        }
        kl_row[b] = s;
        if (pp.write_grad == 1u) {
            for (var p = 0u; p < pp.stride; p++) {
                dq[q0 + p] = 0.0;
            }
        }
    }
}
