// ---- posterior_iaf.wgsl: an inverse autoregressive flow on a diagonal Gaussian base ----
//
// q (B, P), P = 2D + H, holds per row [mu (D) | log sigma^2 (D) | h (H)] (h: the encoder's
// context). The flow's own weights w are shared by all rows: for each step t = 0..K-1 the
// tensors w1 (H, D), c1 (H, H), b1 (H), wm (D, H), bm (D), ws (D, H), bs (D), row-major, each
// starting at a multiple of 64 floats (offsets relative to the step: 0, o_c1, .., o_bs; step t
// at t * step_len).
//
// z_0 = mu + sigma eps, eps (S, B, D) drawn as reparam.wgsl draws it (or given); each step is a
// one-hidden-layer MADE with ELU,
//   a_j = b1_j + sum_c c1[j,c] h_c + sum_{i: deg(i) <= m_j} w1[j,i] z_i,   g_j = elu(a_j),
//   m_i = bm_i + sum_{j: m_j < deg(i)} wm[i,j] g_j,  s_i likewise with ws, bs,
//   z'_i = sigmoid(s_i) z_i + (1 - sigmoid(s_i)) m_i,  log|det| = sum_i log sigmoid(s_i),
// with deg_t(i) = i + 1 (t even) or D - i (t odd) and m_j = 1 + (j mod max(D - 1, 1)). Entries
// of w1, wm, ws that are not connections are never read.
// log q(z_K|x) = log N(z_0; mu, sigma^2) - sum_t sum_i log sigmoid(s_t,i).
//
// One invocation per draw (forward, log-weights), per row (KL; backward pass 1, looping over
// the row's S draws so each row of dq has one writer) or per own-weight element (backward
// pass 2). D <= MAX_DIM, K <= MAX_FLOWS, H <= MAX_HIDDEN (checked on the host; every loop
// bound is clamped here too). Pass 1 keeps per draw and step the frame
//   [z_prev (D) | g (H) | m, then dm (D) | s, then ds (D) | da (H)]
// in `scratch`; pass 2 sums the weight gradients' products over all draws from it.

const MAX_DIM: u32 = 64u;
const MAX_FLOWS: u32 = 16u;
const MAX_HIDDEN: u32 = 256u;

struct IafParams {
    batch: u32,      // B
    dim: u32,        // D
    samples: u32,    // S
    flows: u32,      // K
    hidden: u32,     // H
    stride: u32,     // P = 2D + H
    seed_lo: u32,
    seed_hi: u32,
    step: u32,       // the RNG step, added to state[0] when use_state == 1
    stream: u32,
    use_state: u32,
    draw: u32,       // forward: 1 draws eps in-shader and writes it, 0 reads it
    accumulate: u32, // backward: 1 adds into dq and dw, 0 overwrites
    use_cw: u32,     // backward: 1 weights draw r's log-det sum by cw_scale * cw[r]
    volume: u32,     // backward: 1 adds sum_i log sigma_i to the weighted log-det sum
    use_dz: u32,     // backward: 1 takes dz_K, 0: no path through z_K
    cw_scale: f32,
    write_grad: u32, // kl: 1 stores dq = 0 for the row
    step_len: u32,   // floats from one step's w1 to the next one's
    region_len: u32, // floats of the own-weight region (end of the last step's bs)
    o_c1: u32,
    o_b1: u32,
    o_wm: u32,
    o_bm: u32,
    o_ws: u32,
    o_bs: u32,
    frame: u32,      // floats of a scratch frame, 2H + 3D
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> ip: IafParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;               // (B, P)
@group(0) @binding(2) var<storage, read> w: array<f32>;               // the own region
@group(0) @binding(3) var<storage, read_write> eps: array<f32>;      // (S, B, D)
@group(0) @binding(4) var<storage, read> state: array<u32>;          // the step state
@group(0) @binding(5) var<storage, read_write> z: array<f32>;        // (S, B, D)
@group(0) @binding(6) var<storage, read> eps_in: array<f32>;         // (S, B, D)
@group(0) @binding(7) var<storage, read> dz: array<f32>;             // (S, B, D)
@group(0) @binding(8) var<storage, read> cw: array<f32>;             // (S, B)
@group(0) @binding(9) var<storage, read_write> dq: array<f32>;       // (B, P)
@group(0) @binding(10) var<storage, read> nll_in: array<f32>;        // (S, B)
@group(0) @binding(11) var<storage, read> z_in: array<f32>;          // (S, B, D)
@group(0) @binding(12) var<storage, read_write> logw: array<f32>;    // (S, B)
@group(0) @binding(13) var<storage, read_write> kl_row: array<f32>;  // (B,)
@group(0) @binding(14) var<storage, read_write> kl_elem: array<f32>; // (B, D)
@group(0) @binding(15) var<storage, read_write> scratch: array<f32>; // (S B, K, frame)
@group(0) @binding(16) var<storage, read_write> dw: array<f32>;      // the own region

fn n_dim() -> u32 {
    return min(ip.dim, MAX_DIM);
}

fn n_flows() -> u32 {
    return min(ip.flows, MAX_FLOWS);
}

fn n_hidden() -> u32 {
    return min(ip.hidden, MAX_HIDDEN);
}

// The degree of latent dimension i in step t's order.
fn deg(t: u32, i: u32) -> u32 {
    if (t % 2u == 0u) {
        return i + 1u;
    }
    return ip.dim - i;
}

// The degree of hidden unit j: 1 + (j mod max(D - 1, 1)) (max(D, 2) - 1 never underflows).
fn hdeg(j: u32) -> u32 {
    return 1u + j % (max(ip.dim, 2u) - 1u);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Hidden unit j of step t (weights at wb) for the row whose parameters start at q0: g_j.
fn made_hidden(q0: u32, t: u32, wb: u32, j: u32, zz: ptr<function, array<f32, 64>>) -> f32 {
    let d = n_dim();
    let hh = n_hidden();
    var a = w[wb + ip.o_b1 + j];
    let c0 = wb + ip.o_c1 + j * ip.hidden;
    let h0 = q0 + 2u * ip.dim;
    for (var c = 0u; c < hh; c++) {
        a += w[c0 + c] * q[h0 + c];
    }
    let mj = hdeg(j);
    for (var i = 0u; i < d; i++) {
        if (deg(t, i) <= mj) {
            a += w[wb + j * ip.dim + i] * (*zz)[min(i, MAX_DIM - 1u)];
        }
    }
    return select(exp(a) - 1.0, a, a > 0.0);
}

// Adds hidden unit j's (value g) share to the shifts mm and the gate logits ss of step t.
fn add_outputs(
    t: u32,
    wb: u32,
    j: u32,
    g: f32,
    mm: ptr<function, array<f32, 64>>,
    ss: ptr<function, array<f32, 64>>,
) {
    let d = n_dim();
    let mj = hdeg(j);
    for (var i = 0u; i < d; i++) {
        if (mj < deg(t, i)) {
            let ii = min(i, MAX_DIM - 1u);
            (*mm)[ii] += w[wb + ip.o_wm + i * ip.hidden + j] * g;
            (*ss)[ii] += w[wb + ip.o_ws + i * ip.hidden + j] * g;
        }
    }
}

// The output biases of step t: mm = bm, ss = bs.
fn init_outputs(wb: u32, mm: ptr<function, array<f32, 64>>, ss: ptr<function, array<f32, 64>>) {
    let d = n_dim();
    for (var i = 0u; i < d; i++) {
        let ii = min(i, MAX_DIM - 1u);
        (*mm)[ii] = w[wb + ip.o_bm + i];
        (*ss)[ii] = w[wb + ip.o_bs + i];
    }
}

// Applies step t to zz in place for the row at q0; returns sum_i log sigmoid(s_i).
fn apply_step(q0: u32, t: u32, zz: ptr<function, array<f32, 64>>) -> f32 {
    let d = n_dim();
    let hh = n_hidden();
    let wb = t * ip.step_len;
    var mm: array<f32, 64>;
    var ss: array<f32, 64>;
    init_outputs(wb, &mm, &ss);
    for (var j = 0u; j < hh; j++) {
        add_outputs(t, wb, j, made_hidden(q0, t, wb, j, zz), &mm, &ss);
    }
    var ld = 0.0;
    for (var i = 0u; i < d; i++) {
        let ii = min(i, MAX_DIM - 1u);
        let s = ss[ii];
        (*zz)[ii] = sigmoid(s) * (*zz)[ii] + sigmoid(-s) * mm[ii];
        ld -= softplus(-s);
    }
    return ld;
}

// z_0 = mu + sigma eps_in of draw r (row at q0) into zz.
fn base_from_eps_in(q0: u32, r: u32, zz: ptr<function, array<f32, 64>>) {
    let d = n_dim();
    for (var i = 0u; i < d; i++) {
        (*zz)[min(i, MAX_DIM - 1u)] =
            q[q0 + i] + exp(0.5 * q[q0 + ip.dim + i]) * eps_in[r * ip.dim + i];
    }
}

// ---- forward: one invocation per draw r = s B + b ----
@compute @workgroup_size(64)
fn iaf_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = ip.samples * ip.batch;
    let d = n_dim();
    let kk = n_flows();
    var step = ip.step;
    if (ip.use_state == 1u) {
        step += state[0];
    }
    for (var r = gid.x; r < rows; r += nwg.x * 64u) {
        let q0 = (r % ip.batch) * ip.stride;
        var zz: array<f32, 64>;
        var n: array<f32, 4>;
        var block = 0xffffffffu;
        for (var i = 0u; i < d; i++) {
            let idx = r * ip.dim + i;
            var ei = 0.0;
            if (ip.draw == 1u) {
                let tb = idx / 4u;
                if (tb != block) {
                    let wd = philox4x32(vec4<u32>(tb, step, ip.stream, 0u), vec2<u32>(ip.seed_lo, ip.seed_hi));
                    let n01 = box_muller(u01(wd.x), u01(wd.y));
                    let n23 = box_muller(u01(wd.z), u01(wd.w));
                    n = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
                    block = tb;
                }
                ei = n[idx % 4u];
                eps[idx] = ei;
            } else {
                ei = eps[idx];
            }
            zz[min(i, MAX_DIM - 1u)] = q[q0 + i] + exp(0.5 * q[q0 + ip.dim + i]) * ei;
        }
        for (var t = 0u; t < kk; t++) {
            _ = apply_step(q0, t, &zz);
        }
        for (var i = 0u; i < d; i++) {
            z[r * ip.dim + i] = zz[min(i, MAX_DIM - 1u)];
        }
    }
}

// ---- IWAE log-weights: one invocation per draw ----
// log w = -nll + log N(z_K; 0, I) - log q(z_K|x)
//       = -nll + sum_i (eps_i^2 - z_i^2 + log sigma_i^2) / 2 + sum_t sum_i log sigmoid(s_t,i),
// the log-determinants recomputed from q, w and eps, z_K the given one.
@compute @workgroup_size(64)
fn iaf_log_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = ip.samples * ip.batch;
    let d = n_dim();
    let kk = n_flows();
    for (var r = gid.x; r < rows; r += nwg.x * 64u) {
        let q0 = (r % ip.batch) * ip.stride;
        var s = 0.0;
        for (var i = 0u; i < d; i++) {
            let e = eps_in[r * ip.dim + i];
            let zi = z_in[r * ip.dim + i];
            s += 0.5 * (e * e - zi * zi + q[q0 + ip.dim + i]);
        }
        var zz: array<f32, 64>;
        base_from_eps_in(q0, r, &zz);
        var ld = 0.0;
        for (var t = 0u; t < kk; t++) {
            ld += apply_step(q0, t, &zz);
        }
        logw[r] = s + ld - nll_in[r];
    }
}

// ---- the KL's single-draw Monte Carlo estimate, per row ----
// kl_row[b] = log q(z_K) - log N(z_K; 0, I) at one draw eps ~ Philox(seed, step, stream) (eps of
// row b: elements b D .. of that stream), i.e.
//   sum_i (z_i^2 - eps_i^2 - log sigma_i^2) / 2 - sum_t sum_i log sigmoid(s_t,i);
// kl_elem[b, i] = (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2) / 2, the base Gaussian's KL.
// With write_grad == 1 the row's dq is stored as 0 (the own weights' share is zeroed by the
// host).
@compute @workgroup_size(64)
fn iaf_kl(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = n_dim();
    let kk = n_flows();
    for (var b = gid.x; b < ip.batch; b += nwg.x * 64u) {
        let q0 = b * ip.stride;
        var zz: array<f32, 64>;
        var n: array<f32, 4>;
        var block = 0xffffffffu;
        var s = 0.0;
        for (var i = 0u; i < d; i++) {
            let idx = b * ip.dim + i;
            let tb = idx / 4u;
            if (tb != block) {
                let wd = philox4x32(vec4<u32>(tb, ip.step, ip.stream, 0u), vec2<u32>(ip.seed_lo, ip.seed_hi));
                let n01 = box_muller(u01(wd.x), u01(wd.y));
                let n23 = box_muller(u01(wd.z), u01(wd.w));
                n = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
                block = tb;
            }
            let ei = n[idx % 4u];
            let mu = q[q0 + i];
            let lv = q[q0 + ip.dim + i];
            zz[min(i, MAX_DIM - 1u)] = mu + exp(0.5 * lv) * ei;
            s -= 0.5 * (ei * ei + lv);
            kl_elem[idx] = 0.5 * (mu * mu + exp(lv) - 1.0 - lv);
        }
        for (var t = 0u; t < kk; t++) {
            s -= apply_step(q0, t, &zz);
        }
        for (var i = 0u; i < d; i++) {
            let zi = zz[min(i, MAX_DIM - 1u)];
            s += 0.5 * zi * zi;
        }
        kl_row[b] = s;
        if (ip.write_grad == 1u) {
            for (var p = 0u; p < ip.stride; p++) {
                dq[q0 + p] = 0.0;
            }
        }
    }
}

// ---- backward pass 1: one invocation per row b, looping over its S draws ----
// dq (+)= d/dq sum_s [dz_K . z_K + c_sb (sum_t sum_i log sigmoid(s_t,i) (+ sum_i log sigma_i))]
// at fixed eps; leaves each draw's frames (z_prev, g, dm, ds, da per step) in scratch.
@compute @workgroup_size(64)
fn iaf_backward_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = n_dim();
    let kk = n_flows();
    let hh = n_hidden();
    // Frame offsets: z_prev at 0, g at og, m/dm at om, s/ds at os, da at oa.
    let og = ip.dim;
    let om = ip.dim + ip.hidden;
    let os = 2u * ip.dim + ip.hidden;
    let oa = 3u * ip.dim + ip.hidden;
    for (var b = gid.x; b < ip.batch; b += nwg.x * 64u) {
        let q0 = b * ip.stride;
        let h0 = q0 + 2u * ip.dim;
        if (ip.accumulate == 0u) {
            for (var p = 0u; p < ip.stride; p++) {
                dq[q0 + p] = 0.0;
            }
        }
        for (var smp = 0u; smp < ip.samples; smp++) {
            let r = smp * ip.batch + b;
            var cr = 0.0;
            if (ip.use_cw == 1u) {
                cr = ip.cw_scale * cw[r];
            }
            // The forward, keeping z_prev, g, m and s of every step.
            var zz: array<f32, 64>;
            var mm: array<f32, 64>;
            var ss: array<f32, 64>;
            base_from_eps_in(q0, r, &zz);
            for (var t = 0u; t < kk; t++) {
                let wb = t * ip.step_len;
                let f0 = (r * ip.flows + t) * ip.frame;
                init_outputs(wb, &mm, &ss);
                for (var j = 0u; j < hh; j++) {
                    let g = made_hidden(q0, t, wb, j, &zz);
                    scratch[f0 + og + j] = g;
                    add_outputs(t, wb, j, g, &mm, &ss);
                }
                for (var i = 0u; i < d; i++) {
                    let ii = min(i, MAX_DIM - 1u);
                    let s = ss[ii];
                    scratch[f0 + i] = zz[ii];
                    scratch[f0 + om + i] = mm[ii];
                    scratch[f0 + os + i] = s;
                    zz[ii] = sigmoid(s) * zz[ii] + sigmoid(-s) * mm[ii];
                }
            }
            // Backwards through the steps; gz = dL/dz_t (z_K first). mm and ss now hold dm, ds.
            var gz: array<f32, 64>;
            for (var i = 0u; i < d; i++) {
                var g = 0.0;
                if (ip.use_dz == 1u) {
                    g = dz[r * ip.dim + i];
                }
                gz[min(i, MAX_DIM - 1u)] = g;
            }
            for (var tt = kk; tt > 0u; tt--) {
                let t = tt - 1u;
                let wb = t * ip.step_len;
                let f0 = (r * ip.flows + t) * ip.frame;
                for (var i = 0u; i < d; i++) {
                    let ii = min(i, MAX_DIM - 1u);
                    let zp = scratch[f0 + i];
                    let m = scratch[f0 + om + i];
                    let s = scratch[f0 + os + i];
                    let sig = sigmoid(s);
                    let one_m = sigmoid(-s);
                    let dm = gz[ii] * one_m;
                    let ds = gz[ii] * (zp - m) * sig * one_m + cr * one_m;
                    mm[ii] = dm;
                    ss[ii] = ds;
                    scratch[f0 + om + i] = dm;
                    scratch[f0 + os + i] = ds;
                    gz[ii] *= sig;
                }
                for (var j = 0u; j < hh; j++) {
                    let mj = hdeg(j);
                    var dg = 0.0;
                    for (var i = 0u; i < d; i++) {
                        if (mj < deg(t, i)) {
                            let ii = min(i, MAX_DIM - 1u);
                            dg += w[wb + ip.o_wm + i * ip.hidden + j] * mm[ii]
                                + w[wb + ip.o_ws + i * ip.hidden + j] * ss[ii];
                        }
                    }
                    let g = scratch[f0 + og + j];
                    // elu'(a) = 1 for a > 0 (there g = a > 0), exp(a) = g + 1 otherwise.
                    let da = dg * select(g + 1.0, 1.0, g > 0.0);
                    scratch[f0 + oa + j] = da;
                    for (var i = 0u; i < d; i++) {
                        if (deg(t, i) <= mj) {
                            gz[min(i, MAX_DIM - 1u)] += w[wb + j * ip.dim + i] * da;
                        }
                    }
                }
                // The context: dh_c += sum_j c1[j, c] da_j.
                for (var c = 0u; c < hh; c++) {
                    var acc = 0.0;
                    for (var j = 0u; j < hh; j++) {
                        acc += w[wb + ip.o_c1 + j * ip.hidden + c] * scratch[f0 + oa + j];
                    }
                    dq[h0 + c] += acc;
                }
            }
            // z_0 = mu + sigma eps.
            for (var i = 0u; i < d; i++) {
                let ii = min(i, MAX_DIM - 1u);
                let sigma = exp(0.5 * q[q0 + ip.dim + i]);
                dq[q0 + i] += gz[ii];
                var dlv = 0.5 * gz[ii] * eps_in[r * ip.dim + i] * sigma;
                if (ip.volume == 1u) {
                    dlv += 0.5 * cr;
                }
                dq[q0 + ip.dim + i] += dlv;
            }
        }
    }
}

// ---- backward pass 2: one invocation per own-weight element ----
// dw (+)= the sum over all S B draws of the products in the frames of pass 1:
//   w1[j,i]: da_j z_prev_i,  c1[j,c]: da_j h_c,  b1[j]: da_j,
//   wm[i,j]: dm_i g_j,  bm[i]: dm_i,  ws[i,j]: ds_i g_j,  bs[i]: ds_i;
// 0 at non-connections; padding between the tensors is never written.
@compute @workgroup_size(64)
fn iaf_backward_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = ip.samples * ip.batch;
    let hd = ip.hidden * ip.dim;
    let og = ip.dim;
    let om = ip.dim + ip.hidden;
    let os = 2u * ip.dim + ip.hidden;
    let oa = 3u * ip.dim + ip.hidden;
    for (var e = gid.x; e < ip.region_len; e += nwg.x * 64u) {
        let t = e / ip.step_len;
        let rel = e % ip.step_len;
        if (t >= n_flows()) {
            continue;
        }
        // The frame offsets fa, fb of the two factors (one_b: the second factor is 1; fh: it is
        // the context h_fb of the draw's row), and whether the entry is a connection.
        var fa = 0u;
        var fb = 0u;
        var one_b = false;
        var fh = false;
        var conn = true;
        if (rel < hd) {
            let j = rel / ip.dim;
            let i = rel % ip.dim;
            fa = oa + j;
            fb = i;
            conn = deg(t, i) <= hdeg(j);
        } else if (rel >= ip.o_c1 && rel < ip.o_c1 + ip.hidden * ip.hidden) {
            let k = rel - ip.o_c1;
            fa = oa + k / ip.hidden;
            fb = k % ip.hidden;
            fh = true;
        } else if (rel >= ip.o_b1 && rel < ip.o_b1 + ip.hidden) {
            fa = oa + (rel - ip.o_b1);
            one_b = true;
        } else if (rel >= ip.o_wm && rel < ip.o_wm + hd) {
            let k = rel - ip.o_wm;
            let i = k / ip.hidden;
            let j = k % ip.hidden;
            fa = om + i;
            fb = og + j;
            conn = hdeg(j) < deg(t, i);
        } else if (rel >= ip.o_bm && rel < ip.o_bm + ip.dim) {
            fa = om + (rel - ip.o_bm);
            one_b = true;
        } else if (rel >= ip.o_ws && rel < ip.o_ws + hd) {
            let k = rel - ip.o_ws;
            let i = k / ip.hidden;
            let j = k % ip.hidden;
            fa = os + i;
            fb = og + j;
            conn = hdeg(j) < deg(t, i);
        } else if (rel >= ip.o_bs && rel < ip.o_bs + ip.dim) {
            fa = os + (rel - ip.o_bs);
            one_b = true;
        } else {
            // Padding.
            continue;
        }
        var v = 0.0;
        if (conn) {
            for (var r = 0u; r < rows; r++) {
                let f0 = (r * ip.flows + t) * ip.frame;
                var y = 1.0;
                if (fh) {
                    y = q[(r % ip.batch) * ip.stride + 2u * ip.dim + fb];
                } else if (!one_b) {
                    y = scratch[f0 + fb];
                }
                v += scratch[f0 + fa] * y;
            }
        }
        if (ip.accumulate == 1u) {
            dw[e] += v;
        } else {
            dw[e] = v;
        }
    }
}
