// ---- conv_tiled.wgsl: implicit-GEMM convolutions with workgroup-memory tiles ----------------
//
// The products of conv_common.wgsl (prepended), laid out like gemm_tiled.wgsl: the kernel for
// real GPUs. Defines: OP, EPILOGUE, ACT; SPLIT (OP_WGRAD) as in conv_subgroup8.wgsl.
// Grid: x = row tiles, y = column tiles, z = phase (OP_DGRAD) or split (OP_WGRAD).
//
// A 16x16 workgroup computes a 64x64 tile of C, 4x4 outputs per invocation, with 16-deep slices
// of A and B staged in workgroup memory. The gather happens in the tile load: consecutive
// invocations take consecutive rows of A (neighbouring output pixels, or neighbouring taps for
// OP_WGRAD) and consecutive columns of B, so the global reads of a slice coalesce.

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

@group(0) @binding(1) var<storage, read> wp: array<vec4<f32>>;    // FWD/DGRAD: (phases, K_pad, N4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // FWD/DGRAD: (B, N, GH, GW);
                                                                  // WGRAD: dW (N, M) or (splits, M, N)
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N,)
@group(0) @binding(4) var<storage, read> aux: array<f32>;         // activation output, like out
@group(0) @binding(6) var<storage, read> g: array<f32>;           // WGRAD: (B, N, GH, GW)

var<workgroup> tile_a: array<f32, 1024>; // (BK, BM): tile_a[kk * BM + m]
var<workgroup> tile_b: array<f32, 1024>; // (BK, BN): tile_b[kk * BN + n]

// A(m, k) of this dispatch slice (0 past M or K).
fn load_a(f: Phase, M: u32, K: u32, m: u32, k: u32) -> f32 {
    if (m >= M || k >= K) {
        return 0.0;
    }
    let P = p.grid_h * p.grid_w;
    if (OP == OP_FWD) {
        return gather(pixel_part(m / P, m % P) + tap_part(k));
    } else if (OP == OP_DGRAD) {
        return gather(row_part(OP, f, cursor_at(m, f.nh, f.nw)) + dgrad_tap(f, k));
    }
    let pix = k % p.p_pad;
    if (pix >= P) {
        return 0.0;
    }
    return gather(tap_part(m) + pixel_part(k / p.p_pad, pix));
}

// B(k, n) (0 past K or N).
fn load_b(wbase: u32, K: u32, k: u32, n: u32) -> f32 {
    if (k >= K || n >= p.n) {
        return 0.0;
    }
    if (OP == OP_WGRAD) {
        let P = p.grid_h * p.grid_w;
        let pix = k % p.p_pad;
        if (pix >= P) {
            return 0.0;
        }
        return g[((k / p.p_pad) * p.n + n) * P + pix];
    }
    return wp[(wbase + k) * p.n4 + n / 4u][n % 4u];
}

@compute @workgroup_size(16, 16)
fn conv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    var f: Phase;
    var M = p.m;
    var K = p.k;
    var k_begin = 0u;
    var wbase = 0u;
    if (OP == OP_DGRAD) {
        f = phase_info(wg.z);
        M = f.rows;
        K = f.depth;
        wbase = wg.z * p.k_pad;
    }
    if (OP == OP_WGRAD) {
        k_begin = wg.z * p.k_split;
        K = min(p.k, k_begin + p.k_split);
    }
    let row0 = wg.x * BM;
    let col0 = wg.y * BN;
    if (row0 >= M) {
        return;
    }
    var acc: array<f32, 16>;
    for (var k0 = k_begin; k0 < K; k0 += BK) {
        for (var i = 0u; i < 4u; i++) {
            let e = li + 256u * i;
            tile_a[e] = load_a(f, M, K, row0 + e % BM, k0 + e / BM);
            tile_b[e] = load_b(wbase, K, k0 + e / BN, col0 + e % BN);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = vec4<f32>(
                tile_a[kk * BM + lid.y * 4u],
                tile_a[kk * BM + lid.y * 4u + 1u],
                tile_a[kk * BM + lid.y * 4u + 2u],
                tile_a[kk * BM + lid.y * 4u + 3u],
            );
            let bv = vec4<f32>(
                tile_b[kk * BN + lid.x * 4u],
                tile_b[kk * BN + lid.x * 4u + 1u],
                tile_b[kk * BN + lid.x * 4u + 2u],
                tile_b[kk * BN + lid.x * 4u + 3u],
            );
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }

    let N = p.n;
    let c0 = col0 + lid.x * 4u;
    var bias_v: vec4<f32>;
    if (OP != OP_WGRAD && EPILOGUE == EPI_BIAS_ACT) {
        for (var j = 0u; j < 4u; j++) {
            bias_v[j] = bias[min(c0 + j, N - 1u)];
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid.y * 4u + i;
        if (m < M) {
            let v = vec4<f32>(acc[i * 4u], acc[i * 4u + 1u], acc[i * 4u + 2u], acc[i * 4u + 3u]);
            if (OP == OP_WGRAD) {
                for (var j = 0u; j < 4u; j++) {
                    let n = c0 + j;
                    if (n < N) {
                        if (SPLIT) {
                            out[(wg.z * M + m) * N + n] = v[j];
                        } else {
                            let idx = n * M + m;
                            var x = v[j];
                            if (EPILOGUE == EPI_ACCUMULATE) {
                                x += out[idx];
                            }
                            out[idx] = x;
                        }
                    }
                }
            } else {
                let o = out_base(OP, f, row_cursor(OP, f, m));
                let plane = p.grid_h * p.grid_w;
                var aux_v: vec4<f32>;
                if (EPILOGUE == EPI_ACT_GRAD) {
                    for (var j = 0u; j < 4u; j++) {
                        aux_v[j] = aux[o + min(c0 + j, N - 1u) * plane];
                    }
                }
                let y = epilogue4(EPILOGUE, ACT, v, bias_v, aux_v);
                for (var j = 0u; j < 4u; j++) {
                    let n = c0 + j;
                    if (n < N) {
                        out[o + n * plane] = y[j];
                    }
                }
            }
        }
    }
}
