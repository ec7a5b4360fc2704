// ---- conv_aux.wgsl: weight packing, split-sum reduction and bias gradients of the convolutions -
//
// conv_common.wgsl is prepended; `src` (binding 0) is each entry point's input and `p` its
// parameters. No defines: one pipeline per entry point.

@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(6) var<storage, read> src4: array<vec4<f32>>; // src again, as vec4

// Packs PyTorch-layout weights src into the B operand of OP_FWD or OP_DGRAD (p.op):
// dst (phases, K_pad, 4·N4), zero past each phase's depth and past N, so the product kernels
// read it as vec4 without masks.
//   OP_FWD:   src (N, C, KH, KW); dst[k, n] = src[n, k], k = (c, kh, kw)          (1 phase)
//   OP_DGRAD: src (C, N, KH, KW); dst[z, k, n] = src[c, n, rh + th·sh, rw + tw·sw],
//             k = (c, th, tw) of phase z = (rh, rw)                             (sh·sw phases)
@compute @workgroup_size(64)
fn pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let width = 4u * p.n4;
    let phases = select(1u, p.sh * p.sw, p.op == OP_DGRAD);
    let total = phases * p.k_pad * width;
    let kk = p.kh * p.kw;
    for (var e = gid.x; e < total; e += nwg.x * 64u) {
        let n = e % width;
        let rest = e / width;
        let k = rest % p.k_pad;
        let z = rest / p.k_pad;
        var v = 0.0;
        if (n < p.n) {
            if (p.op == OP_DGRAD) {
                let f = phase_info(z);
                if (k < f.depth) {
                    let c = k / f.taps;
                    let t = k % f.taps;
                    let kh = f.rh + (t / f.taps_w) * p.sh;
                    let kw = f.rw + (t % f.taps_w) * p.sw;
                    v = src[(c * p.n + n) * kk + kh * p.kw + kw];
                }
            } else if (k < p.k) {
                v = src[n * p.k + k];
            }
        }
        dst[e] = v;
    }
}

// dW (N, M) (+)= Σ over the splits of the partial sums src (splits, M, N), in split order.
@compute @workgroup_size(64)
fn wgrad_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.m * p.n;
    for (var e = gid.x; e < total; e += nwg.x * 64u) {
        let n = e / p.m;
        let m = e % p.m;
        var s = 0.0;
        for (var sp = 0u; sp < p.splits; sp++) {
            s += src[(sp * p.m + m) * p.n + n];
        }
        if (p.epilogue == EPI_ACCUMULATE) {
            s += dst[e];
        }
        dst[e] = s;
    }
}

// db (N,) (+)= Σ over images and pixels of src (B, N, GH, GW): one workgroup per channel, each
// invocation sums a fixed strided subset, then a fixed-order tree (tree_sum, common.wgsl).
@compute @workgroup_size(64)
fn bias_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let plane = p.grid_h * p.grid_w;
    for (var n = wg.x; n < p.n; n += nwg.x) {
        var s = 0.0;
        for (var b = 0u; b < p.batch; b++) {
            let base = (b * p.n + n) * plane;
            if (plane % 4u == 0u) {
                for (var q = lid; q < plane / 4u; q += 64u) {
                    let v = src4[base / 4u + q];
                    s += (v.x + v.y) + (v.z + v.w);
                }
            } else {
                for (var i = lid; i < plane; i += 64u) {
                    s += src[base + i];
                }
            }
        }
        var total = tree_sum(lid, s);
        if (lid == 0u) {
            if (p.epilogue == EPI_ACCUMULATE) {
                total += dst[n];
            }
            dst[n] = total;
        }
    }
}
