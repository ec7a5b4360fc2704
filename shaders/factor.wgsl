// ---- factor.wgsl: FactorVAE's kernels: the per-dimension permutation of a batch of latents,
// the discriminator's two-class cross-entropy, and the total-correlation estimate ----
//
// Permutation. Every latent dimension d is permuted independently across the VALID rows of the
// batch (row weight w[b] > 0; rows of weight 0 pad a partial batch and take no part). Each
// element (b, d) gets a 32-bit key: word i % 4 of Philox4x32-10 with counter
// (i / 4, step, PERMUTE_STREAM, 0) and key (seed_lo, seed_hi), i = b * D + d, step = rp.step
// (+ state[0] with use_state), so a new training step gives a new permutation without an
// upload. The rank of (key, b) among the valid rows' (key, row) pairs of column d (ties broken
// by the row index) is where the value goes: to the rank-th valid row. Random keys make every
// bijection of the valid rows equally likely (up to ties, which the row index breaks). Padding
// rows of the output are written as 0. Mirrored bit for bit by `cpu::factor::permute_dims`.

const PERMUTE_STREAM: u32 = 0x7065726du; // "perm"; mirrors ops::factor::PERMUTE_STREAM

struct PermuteParams {
    batch: u32,     // B
    dim: u32,       // D
    seed_lo: u32,
    seed_hi: u32,
    step: u32,      // added to state[0] when use_state == 1
    use_state: u32,
    out_row0: u32,  // 0: out is (B, D) = z_perm; B: out is (2B, D) = [z; z_perm]
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> pz: array<f32>;            // (B, D) latents
@group(0) @binding(1) var<storage, read> pw: array<f32>;            // (B,) row weights
@group(0) @binding(2) var<storage, read_write> keys: array<u32>;    // (B, D) scratch
@group(0) @binding(3) var<storage, read> pstate: array<u32>;        // (4,) the step state
@group(0) @binding(4) var<uniform> pp: PermuteParams;
@group(0) @binding(5) var<storage, read> keys_in: array<u32>;       // (B, D) from permute_keys
@group(0) @binding(6) var<storage, read_write> pout: array<f32>;    // (B, D) or (2B, D)

// One invocation per block of 4 keys: one Philox draw serves 4 elements.
@compute @workgroup_size(64)
fn permute_keys(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var step = pp.step;
    if (pp.use_state == 1u) {
        step += pstate[0];
    }
    let total = pp.batch * pp.dim;
    let blocks = (total + 3u) / 4u;
    for (var t = gid.x; t < blocks; t += nwg.x * 64u) {
        let r = philox4x32(vec4<u32>(t, step, PERMUTE_STREAM, 0u), vec2<u32>(pp.seed_lo, pp.seed_hi));
        let words = array<u32, 4>(r.x, r.y, r.z, r.w);
        for (var e = 0u; e < 4u; e++) {
            let i = 4u * t + e;
            if (i < total) {
                keys[i] = words[e];
            }
        }
    }
}

// One invocation per element (b, d): O(B) to find its rank and its destination, so O(B^2 D)
// per batch, no workgroup memory, any B. Every output element has exactly one writer: a valid
// row is the destination of exactly one source, a padding row is written by its own
// invocation.
@compute @workgroup_size(64)
fn permute_dims(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = pp.batch * pp.dim;
    let row0 = pp.out_row0;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        let b = i / pp.dim;
        let d = i % pp.dim;
        let v = pz[i];
        if (row0 > 0u) {
            pout[i] = v;
        }
        if (!(pw[b] > 0.0)) {
            pout[(row0 + b) * pp.dim + d] = 0.0;
            continue;
        }
        let k = keys_in[i];
        var rank = 0u;
        for (var j = 0u; j < pp.batch; j++) {
            if (pw[j] > 0.0) {
                let kj = keys_in[j * pp.dim + d];
                if (kj < k || (kj == k && j < b)) {
                    rank += 1u;
                }
            }
        }
        // The rank-th valid row (rows are counted in order; the padding ones are skipped).
        var dest = 0u;
        var seen = 0u;
        for (var j = 0u; j < pp.batch; j++) {
            if (pw[j] > 0.0) {
                if (seen == rank) {
                    dest = j;
                    break;
                }
                seen += 1u;
            }
        }
        pout[(row0 + dest) * pp.dim + d] = v;
    }
}

// Numerically stable logistic function.
fn sigmoid1(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// ---- the discriminator's loss ----
//
// logits (2B, 2): rows 0..B are D([z]) (class 0, "from q(z)"), rows B..2B are D([z_perm])
// (class 1, "permuted"). Per row b of the batch:
//   loss[b]     = (CE(logits[b], 0) + CE(logits[B + b], 1)) / 2,  CE(l, 0) = softplus(l1 - l0)
//   accuracy[b] = ([l0 >= l1 at row b] + [l1 > l0 at row B + b]) / 2  (a tie counts as class 0)
//   dlogits     = w[b] / 2 * (softmax - onehot) at both rows (stored), exactly 0 where w[b] = 0
// so Σ_b w[b] loss[b] is the loss (the mean over the valid rows when w = 1/valid) and dlogits
// is its gradient.

struct DiscLossParams {
    batch: u32, // B
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(7) var<storage, read> dl_logits: array<f32>;         // (2B, 2)
@group(0) @binding(8) var<storage, read> dl_w: array<f32>;              // (B,) row weights
@group(0) @binding(9) var<storage, read_write> dl_loss: array<f32>;     // (B,)
@group(0) @binding(10) var<storage, read_write> dl_acc: array<f32>;     // (B,)
@group(0) @binding(11) var<storage, read_write> dl_grad: array<f32>;    // (2B, 2)
@group(0) @binding(12) var<uniform> dlp: DiscLossParams;

@compute @workgroup_size(64)
fn disc_loss(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var b = gid.x; b < dlp.batch; b += nwg.x * 64u) {
        let ir = 2u * b;                // row b: z, class 0
        let ip = 2u * (dlp.batch + b);  // row B + b: z_perm, class 1
        let r0 = dl_logits[ir];
        let r1 = dl_logits[ir + 1u];
        let p0 = dl_logits[ip];
        let p1 = dl_logits[ip + 1u];
        dl_loss[b] = 0.5 * (softplus(r1 - r0) + softplus(p0 - p1));
        dl_acc[b] = 0.5 * (select(0.0, 1.0, r0 >= r1) + select(0.0, 1.0, p1 > p0));
        let gw = 0.5 * dl_w[b];
        let sr = sigmoid1(r1 - r0); // softmax class 1 at a real row: d/dl1 of CE(., 0)
        let sp = sigmoid1(p0 - p1); // softmax class 0 at a permuted row: d/dl0 of CE(., 1)
        let zero = gw == 0.0;
        dl_grad[ir] = select(-gw * sr, 0.0, zero);
        dl_grad[ir + 1u] = select(gw * sr, 0.0, zero);
        dl_grad[ip] = select(gw * sp, 0.0, zero);
        dl_grad[ip + 1u] = select(-gw * sp, 0.0, zero);
    }
}

// ---- the total-correlation estimate of the VAE's objective ----
//
// logits (B, 2) = D(z): tc[b] = l0 - l1 = log(D / (1 - D)) with D the softmax probability of
// class 0 ("from q(z)"); dlogits[b] = gamma * w[b] * (1, -1) (stored), exactly 0 where w[b] = 0.

struct TcParams {
    batch: u32, // B
    gamma: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(13) var<storage, read> tc_logits: array<f32>;        // (B, 2)
@group(0) @binding(14) var<storage, read> tc_w: array<f32>;             // (B,) row weights
@group(0) @binding(15) var<storage, read_write> tc_out: array<f32>;     // (B,)
@group(0) @binding(16) var<storage, read_write> tc_grad: array<f32>;    // (B, 2)
@group(0) @binding(17) var<uniform> tcp: TcParams;

@compute @workgroup_size(64)
fn tc_estimate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var b = gid.x; b < tcp.batch; b += nwg.x * 64u) {
        tc_out[b] = tc_logits[2u * b] - tc_logits[2u * b + 1u];
        let g = tcp.gamma * tc_w[b];
        let zero = g == 0.0;
        tc_grad[2u * b] = select(g, 0.0, zero);
        tc_grad[2u * b + 1u] = select(-g, 0.0, zero);
    }
}
