// ---- tc.wgsl: the β-TCVAE minibatch decomposition of the KL (Chen et al. 2018), forward and
// backward ----
//
// Rows with weight w > 0 are the batch (M of them); rows with w = 0 are padding and are left
// out both as the sample i and as the posterior j. With L_ijd = log N(z_id; mu_jd, e^lv_jd),
// S_ij = sum_d L_ijd and c_ij the log importance weight of posterior j for sample i:
//
//   log q(z_i)      A_i = lse_j (S_ij + c_ij)
//   log prod_d q    P_i = sum_d B_id,   B_id = lse_j (L_ijd + c_ij)
//   log q(z_i|x_i)  Q_i = S_ii,          log p(z_i)  R_i = sum_d log N(z_id; 0, 1)
//   mi = Q - A,  tc = A - P,  dimkl = P - R   (they sum to Q - R)
//
// c_ij (N' = max(N, M): the data set holds at least the batch's distinct rows):
//   minibatch weighted sampling (MWS), and either estimator when M = 1: c_ij = -ln(M N');
//   minibatch stratified sampling (MSS), M >= 2, m = M - 1: c_ii = -ln N'; c_ij = ln((N' - m)
//   / (N' m)) for j the next valid row after i (cyclically); -ln m otherwise. Each row of
//   e^c sums to 1.
//
// Loss = sum_i w_i (alpha mi_i + beta tc_i + gamma dimkl_i); its gradient w.r.t. L_ijd is
//   G_ijd = a_i pi_ij + p_i rho_ijd + q_i [i = j]   with  a_i = w_i (beta - alpha),
//   p_i = w_i (gamma - beta), q_i = w_i alpha, pi_ij = e^(S_ij + c_ij - A_i),
//   rho_ijd = e^(L_ijd + c_ij - B_id);  plus w_i gamma z_id from -gamma R_i.
//
// Passes: tc_rows (one workgroup) counts M and links every valid row to its valid neighbours;
// tc_prepare turns the parameters into the constants of the log-densities, [mu | e^-lv |
// -(lv + ln 2 pi) / 2], so that the O(B^2 D) loops need no exp for them; tc_forward stores
// S (B, B) besides the terms, so that the backward passes need not sum over d again; then
// tc_backward_z and tc_backward_params. In the three O(B^2 D) kernels each invocation owns R
// rows and walks the other rows in order: every constant it loads serves R rows (loads, not
// arithmetic, bound these loops on CPU adapters), every sum has a fixed order, and there are no
// barriers, no float atomics and no (B, B, D) buffer. Per-dimension sums live in private arrays
// of R x CHUNK elements (CHUNK, a define, is min(D, 8)); the dimensions go CHUNK at a time.

const EMPTY: f32 = -3.0e38; // the running maximum of an empty log-sum-exp
const LN_2PI: f32 = 1.8378770664093453;
const R: u32 = 4u;   // rows per invocation in the O(B^2 D) kernels
const WGR: u32 = 16u; // their workgroup size
const WG: u32 = 64u; // the workgroup size of tc_rows and tc_prepare

struct TcParams {
    batch: u32,
    dim: u32,
    dataset_size: u32, // N
    estimator: u32,    // 0: MWS, 1: MSS
    alpha: f32,        // loss weight of mi (backward only)
    beta: f32,         // loss weight of tc
    gamma: f32,        // loss weight of dimkl
    accumulate: u32,   // backward: 1 adds the parameter gradient to dparams, 0 stores it
}

@group(0) @binding(0) var<storage, read> post: array<f32>;            // (B, 2D) [mu | logvar]
@group(0) @binding(1) var<storage, read> zs: array<f32>;              // (B, D) one sample per row
@group(0) @binding(2) var<storage, read> row_w: array<f32>;           // (B,) weights, 0 = padding
@group(0) @binding(3) var<uniform> tp: TcParams;
// tc_forward's outputs
@group(0) @binding(4) var<storage, read_write> stats_out: array<f32>; // (B, 4 + D) [Q A P R | B_i.]
@group(0) @binding(5) var<storage, read_write> mi_out: array<f32>;    // (B,)
@group(0) @binding(6) var<storage, read_write> tc_out: array<f32>;    // (B,)
@group(0) @binding(7) var<storage, read_write> dkl_out: array<f32>;   // (B,)
@group(0) @binding(8) var<storage, read_write> pair_out: array<f32>;  // (B, B) S_ij, valid pairs
// the backward passes' views of them, and their outputs
@group(0) @binding(9) var<storage, read> stats: array<f32>;           // (B, 4 + D)
@group(0) @binding(10) var<storage, read> pair: array<f32>;           // (B, B)
@group(0) @binding(11) var<storage, read_write> dz: array<f32>;       // (B, D) += dLoss/dz
@group(0) @binding(12) var<storage, read_write> dpost: array<f32>;    // (B, 2D) (+)= dLoss/dparams
// tc_prepare's output and its readers' view
@group(0) @binding(13) var<storage, read_write> prec_out: array<f32>; // (B, 3D)
@group(0) @binding(14) var<storage, read> prec: array<f32>;           // (B, 3D) [mu | 1/var | c]
// tc_rows' output and its readers' view: per row [M, next valid row, previous valid row, 1 if
// valid]; next = previous = the row itself for a padded row or a batch of one
@group(0) @binding(15) var<storage, read_write> rows_out: array<u32>; // (B, 4)
@group(0) @binding(16) var<storage, read> rows: array<u32>;           // (B, 4)

var<workgroup> red_u: array<u32, 64>;

fn row_valid(r: u32) -> bool {
    return rows[r * 4u + 3u] == 1u;
}

fn lse_push(acc: vec2<f32>, x: f32) -> vec2<f32> {
    if (x > acc.x) {
        return vec2<f32>(x, acc.y * exp(acc.x - x) + 1.0);
    }
    return vec2<f32>(acc.x, acc.y + exp(x - acc.x));
}

// (c for the row itself, for its stratified neighbour, for any other row) for M valid rows.
fn log_weights(m_valid: u32) -> vec3<f32> {
    let mv = max(m_valid, 1u);
    let n = max(tp.dataset_size, mv);
    let ln_n = log(f32(n));
    if (tp.estimator == 1u && mv >= 2u) {
        let m = mv - 1u;
        let ln_m = log(f32(m));
        return vec3<f32>(-ln_n, log(f32(n - m)) - ln_n - ln_m, -ln_m);
    }
    let c = -log(f32(mv)) - ln_n;
    return vec3<f32>(c, c, c);
}

fn log_weight(lw: vec3<f32>, i: u32, j: u32, neighbour: bool) -> f32 {
    return select(select(lw.z, lw.y, neighbour), lw.x, i == j);
}

// rows_out: M and the cyclic links between valid rows. One workgroup.
@compute @workgroup_size(64)
fn tc_rows(@builtin(local_invocation_index) lid: u32) {
    let nb = tp.batch;
    var count = 0u;
    for (var j = lid; j < nb; j += WG) {
        count += select(0u, 1u, row_w[j] > 0.0);
    }
    red_u[lid] = count;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_u[lid] += red_u[lid + s];
        }
        workgroupBarrier();
    }
    let m_valid = red_u[0];
    for (var i = lid; i < nb; i += WG) {
        let ok = row_w[i] > 0.0;
        var next = i;
        var prev = i;
        if (ok) {
            // The gaps between valid rows add up to B, so these walks cost O(B) in all.
            for (var k = 1u; k < nb; k++) {
                if (row_w[(i + k) % nb] > 0.0) {
                    next = (i + k) % nb;
                    break;
                }
            }
            for (var k = 1u; k < nb; k++) {
                if (row_w[(i + nb - k) % nb] > 0.0) {
                    prev = (i + nb - k) % nb;
                    break;
                }
            }
        }
        rows_out[i * 4u] = m_valid;
        rows_out[i * 4u + 1u] = next;
        rows_out[i * 4u + 2u] = prev;
        rows_out[i * 4u + 3u] = select(0u, 1u, ok);
    }
}

// post (B, 2D) -> prec_out (B, 3D): [mu | e^-lv | -(lv + ln 2 pi) / 2], one invocation per
// element.
@compute @workgroup_size(64)
fn tc_prepare(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let nd = tp.dim;
    for (var e = gid.x; e < tp.batch * nd; e += nwg.x * WG) {
        let j = e / nd;
        let d = e % nd;
        let lv = post[j * 2u * nd + nd + d];
        prec_out[j * 3u * nd + d] = post[j * 2u * nd + d];
        prec_out[j * 3u * nd + nd + d] = exp(-lv);
        prec_out[j * 3u * nd + 2u * nd + d] = -0.5 * (lv + LN_2PI);
    }
}

// Forward: invocation g owns rows i0 + r = g R + r (r < R; rows past the batch are clamped for
// loading and write nothing).
@compute @workgroup_size(16)
fn tc_forward(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let nb = tp.batch;
    let nd = tp.dim;
    let sw = nd + 4u;
    let lw = log_weights(rows[0]);
    for (var i0 = gid.x * R; i0 < nb; i0 += nwg.x * WGR * R) {
        var ii: array<u32, R>;
        var next: array<u32, R>;
        var zc: array<f32, R * CHUNK>; // the first CHUNK dimensions of z
        for (var r = 0u; r < R; r++) {
            let i = min(i0 + r, nb - 1u);
            ii[r] = i;
            next[r] = rows[i * 4u + 1u];
            for (var k = 0u; k < CHUNK; k++) {
                zc[r * CHUNK + k] = zs[i * nd + min(k, nd - 1u)];
            }
        }

        // S_ij (stored) and A_i.
        var acc: array<vec2<f32>, R>;
        for (var r = 0u; r < R; r++) {
            acc[r] = vec2<f32>(EMPTY, 0.0);
        }
        for (var j = 0u; j < nb; j++) {
            if (!row_valid(j)) {
                continue;
            }
            var s: array<f32, R>;
            for (var d = 0u; d < nd; d++) {
                let base = j * 3u * nd + d;
                let mu = prec[base];
                let iv = prec[base + nd];
                let c = prec[base + 2u * nd];
                if (d < CHUNK) {
                    for (var r = 0u; r < R; r++) {
                        let t = zc[r * CHUNK + d] - mu;
                        s[r] += c - 0.5 * t * t * iv;
                    }
                } else {
                    for (var r = 0u; r < R; r++) {
                        let t = zs[ii[r] * nd + d] - mu;
                        s[r] += c - 0.5 * t * t * iv;
                    }
                }
            }
            for (var r = 0u; r < R; r++) {
                if (i0 + r < nb) {
                    pair_out[ii[r] * nb + j] = s[r];
                }
                acc[r] = lse_push(acc[r], s[r] + log_weight(lw, ii[r], j, j == next[r]));
            }
        }

        // B_id, and the sums P_i, Q_i, R_i.
        var p: array<f32, R>;
        var q: array<f32, R>;
        var pz: array<f32, R>;
        for (var d = 0u; d < nd; d++) {
            var z: array<f32, R>;
            var accd: array<vec2<f32>, R>;
            for (var r = 0u; r < R; r++) {
                z[r] = zs[ii[r] * nd + d];
                accd[r] = vec2<f32>(EMPTY, 0.0);
            }
            for (var j = 0u; j < nb; j++) {
                if (!row_valid(j)) {
                    continue;
                }
                let base = j * 3u * nd + d;
                let mu = prec[base];
                let iv = prec[base + nd];
                let c = prec[base + 2u * nd];
                for (var r = 0u; r < R; r++) {
                    let t = z[r] - mu;
                    let x = c - 0.5 * t * t * iv + log_weight(lw, ii[r], j, j == next[r]);
                    accd[r] = lse_push(accd[r], x);
                }
            }
            for (var r = 0u; r < R; r++) {
                let i = ii[r];
                let bd = accd[r].x + log(accd[r].y);
                if (i0 + r < nb) {
                    stats_out[i * sw + 4u + d] = select(0.0, bd, row_valid(i));
                }
                p[r] += bd;
                let t = z[r] - prec[i * 3u * nd + d];
                q[r] += prec[i * 3u * nd + 2u * nd + d] - 0.5 * t * t * prec[i * 3u * nd + nd + d];
                pz[r] += -0.5 * (z[r] * z[r] + LN_2PI);
            }
        }
        for (var r = 0u; r < R; r++) {
            let i = ii[r];
            if (i0 + r >= nb) {
                break;
            }
            let ok = row_valid(i);
            let a = acc[r].x + log(acc[r].y);
            stats_out[i * sw] = select(0.0, q[r], ok);
            stats_out[i * sw + 1u] = select(0.0, a, ok);
            stats_out[i * sw + 2u] = select(0.0, p[r], ok);
            stats_out[i * sw + 3u] = select(0.0, pz[r], ok);
            mi_out[i] = select(0.0, q[r] - a, ok);
            tc_out[i] = select(0.0, a - p[r], ok);
            dkl_out[i] = select(0.0, p[r] - pz[r], ok);
        }
    }
}

// dz_i += sum_j G_ijd dL_ijd/dz_id + w_i gamma z_id; invocation g owns rows i = g R + r.
@compute @workgroup_size(16)
fn tc_backward_z(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let nb = tp.batch;
    let nd = tp.dim;
    let sw = nd + 4u;
    let lw = log_weights(rows[0]);
    for (var i0 = gid.x * R; i0 < nb; i0 += nwg.x * WGR * R) {
        var ii: array<u32, R>;
        var next: array<u32, R>;
        var ok: array<bool, R>;
        var wr: array<f32, R>;
        var ar: array<f32, R>;
        for (var r = 0u; r < R; r++) {
            let i = min(i0 + r, nb - 1u);
            ii[r] = i;
            next[r] = rows[i * 4u + 1u];
            ok[r] = i0 + r < nb && row_valid(i);
            wr[r] = select(0.0, row_w[i], ok[r]);
            ar[r] = stats[i * sw + 1u];
        }
        for (var d0 = 0u; d0 < nd; d0 += CHUNK) {
            var z: array<f32, R * CHUNK>;
            var bd: array<f32, R * CHUNK>;
            var g: array<f32, R * CHUNK>;
            for (var r = 0u; r < R; r++) {
                for (var k = 0u; k < CHUNK; k++) {
                    let d = min(d0 + k, nd - 1u);
                    z[r * CHUNK + k] = zs[ii[r] * nd + d];
                    bd[r * CHUNK + k] = stats[ii[r] * sw + 4u + d];
                }
            }
            for (var j = 0u; j < nb; j++) {
                if (!row_valid(j)) {
                    continue;
                }
                var cw: array<f32, R>;
                var coef: array<f32, R>;
                for (var r = 0u; r < R; r++) {
                    cw[r] = log_weight(lw, ii[r], j, j == next[r]);
                    let soft = exp(pair[ii[r] * nb + j] + cw[r] - ar[r]);
                    coef[r] = wr[r] * ((tp.beta - tp.alpha) * soft + select(0.0, tp.alpha, ii[r] == j));
                }
                for (var k = 0u; k < CHUNK; k++) {
                    let d = d0 + k;
                    if (d >= nd) {
                        break;
                    }
                    let base = j * 3u * nd + d;
                    let mu = prec[base];
                    let iv = prec[base + nd];
                    let c = prec[base + 2u * nd];
                    for (var r = 0u; r < R; r++) {
                        let t = z[r * CHUNK + k] - mu;
                        let l = c - 0.5 * t * t * iv;
                        let rho = exp(l + cw[r] - bd[r * CHUNK + k]);
                        let gk = coef[r] + wr[r] * (tp.gamma - tp.beta) * rho;
                        if (gk != 0.0) {
                            g[r * CHUNK + k] -= gk * t * iv;
                        }
                    }
                }
            }
            for (var r = 0u; r < R; r++) {
                for (var k = 0u; k < CHUNK; k++) {
                    if (ok[r] && d0 + k < nd) {
                        let e = r * CHUNK + k;
                        dz[ii[r] * nd + d0 + k] += g[e] + wr[r] * tp.gamma * z[e];
                    }
                }
            }
        }
    }
}

// d mu_jd, d logvar_jd = sum_i G_ijd dL_ijd/d(mu_jd, lv_jd); invocation g owns rows j = g R + r.
@compute @workgroup_size(16)
fn tc_backward_params(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let nb = tp.batch;
    let nd = tp.dim;
    let sw = nd + 4u;
    let lw = log_weights(rows[0]);
    for (var j0 = gid.x * R; j0 < nb; j0 += nwg.x * WGR * R) {
        var jj: array<u32, R>;
        // Row j is the stratified neighbour of exactly one row: the valid row before it.
        var prev: array<u32, R>;
        var ok: array<bool, R>;
        var any_ok = false;
        for (var r = 0u; r < R; r++) {
            let j = min(j0 + r, nb - 1u);
            jj[r] = j;
            prev[r] = rows[j * 4u + 2u];
            ok[r] = j0 + r < nb && row_valid(j);
            any_ok = any_ok || ok[r];
        }
        for (var d0 = 0u; d0 < nd; d0 += CHUNK) {
            var mu: array<f32, R * CHUNK>;
            var iv: array<f32, R * CHUNK>;
            var cc: array<f32, R * CHUNK>;
            var g_mu: array<f32, R * CHUNK>;
            var g_lv: array<f32, R * CHUNK>;
            for (var r = 0u; r < R; r++) {
                for (var k = 0u; k < CHUNK; k++) {
                    let base = jj[r] * 3u * nd + min(d0 + k, nd - 1u);
                    mu[r * CHUNK + k] = prec[base];
                    iv[r * CHUNK + k] = prec[base + nd];
                    cc[r * CHUNK + k] = prec[base + 2u * nd];
                }
            }
            // Rows of padding only: no terms (zeros are stored).
            for (var i = 0u; i < select(0u, nb, any_ok); i++) {
                if (!row_valid(i)) {
                    continue;
                }
                let wi = row_w[i];
                let a_i = stats[i * sw + 1u];
                var cw: array<f32, R>;
                var coef: array<f32, R>;
                for (var r = 0u; r < R; r++) {
                    cw[r] = log_weight(lw, i, jj[r], i == prev[r]);
                    let soft = exp(pair[i * nb + jj[r]] + cw[r] - a_i);
                    coef[r] = wi * ((tp.beta - tp.alpha) * soft + select(0.0, tp.alpha, i == jj[r]));
                }
                let p_i = wi * (tp.gamma - tp.beta);
                for (var k = 0u; k < CHUNK; k++) {
                    let d = d0 + k;
                    if (d >= nd) {
                        break;
                    }
                    let z = zs[i * nd + d];
                    let bd = stats[i * sw + 4u + d];
                    for (var r = 0u; r < R; r++) {
                        let e = r * CHUNK + k;
                        let t = z - mu[e];
                        let u = t * iv[e];
                        let gk = coef[r] + p_i * exp(cc[e] - 0.5 * t * u + cw[r] - bd);
                        if (gk != 0.0) {
                            g_mu[e] += gk * u;
                            g_lv[e] += gk * 0.5 * (t * u - 1.0);
                        }
                    }
                }
            }
            for (var r = 0u; r < R; r++) {
                for (var k = 0u; k < CHUNK; k++) {
                    if (j0 + r >= nb || d0 + k >= nd) {
                        continue;
                    }
                    let e = r * CHUNK + k;
                    let at = jj[r] * 2u * nd + d0 + k;
                    if (tp.accumulate == 0u) {
                        dpost[at] = select(0.0, g_mu[e], ok[r]);
                        dpost[at + nd] = select(0.0, g_lv[e], ok[r]);
                    } else if (ok[r]) {
                        dpost[at] += g_mu[e];
                        dpost[at + nd] += g_lv[e];
                    }
                }
            }
        }
    }
}
