// ---- conv_regblock.wgsl: implicit-GEMM convolutions, register-blocked, no subgroups ----------
//
// The products of conv_common.wgsl (prepended), laid out like gemm_regblock.wgsl, for adapters
// without 8-lane subgroups (CPU adapters of other SIMD widths).
// Defines: OP, EPILOGUE, ACT; TM: rows of C per invocation; TNV: vec4 column groups per
//   invocation; WX: invocations per workgroup; VEC_G, SPLIT as in conv_subgroup8.wgsl.
// Grid: x = row tiles, y = column tiles, z = phase (OP_DGRAD) or split (OP_WGRAD).
//
// Invocation x of workgroup (gx, gy) owns the TM rows gx·TM .. + TM and the vec4 column groups
// g = gy·WX·TNV + WX·j + x (j < TNV), and keeps that TM x 4·TNV tile of C in registers. All
// invocations of a workgroup share their rows and walk k together, so every gathered element
// A(row, k) has the same address in every invocation: one uniform load, with its decode and
// mask computed once. B is read as vec4 per invocation: 4·TNV loads per 4 values of k feed
// 16·TM·TNV multiply-adds. No workgroup memory, no barriers.

@group(0) @binding(1) var<storage, read> wp: array<vec4<f32>>;    // FWD/DGRAD: (phases, K_pad, N4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // FWD/DGRAD: (B, N, GH, GW);
                                                                  // WGRAD: dW (N, M) or (splits, M, N)
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N,)
@group(0) @binding(4) var<storage, read> aux: array<f32>;         // activation output, like out
@group(0) @binding(6) var<storage, read> g: array<f32>;           // WGRAD: (B, N, GH, GW)
@group(0) @binding(7) var<storage, read> g4: array<vec4<f32>>;    // g again, as vec4

@compute @workgroup_size(WX)
fn conv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let slice = slice_of(OP, wg.z);
    let f = slice.f;
    let M = slice.m;
    let K = slice.k_end;
    let row0 = wg.x * TM;
    if (row0 >= M) {
        return;
    }
    let N = p.n;
    let N4 = p.n4;
    let P = p.grid_h * p.grid_w;

    var groups: array<u32, TNV>;
    for (var j = 0u; j < TNV; j++) {
        groups[j] = min(wg.y * WX * TNV + WX * j + lid.x, N4 - 1u);
    }

    // Row parts of A and output offsets, the same for every invocation.
    var rinfo: array<vec3<i32>, TM>;
    var obase: array<u32, TM>;
    var cur = row_cursor(OP, f, row0);
    for (var r = 0u; r < TM; r++) {
        rinfo[r] = select(INVALID, row_part(OP, f, cur), row0 + r < M);
        obase[r] = out_base(OP, f, cur);
        cur = cursor_next(cur);
    }

    var acc: array<array<vec4<f32>, TNV>, TM>;
    for (var k0 = slice.k_begin; k0 < K; k0 += 4u) {
        // Depth parts of k0 .. k0 + 4 (uniform).
        var kinfo: array<vec3<i32>, 4>;
        for (var kk = 0u; kk < 4u; kk++) {
            kinfo[kk] = depth_part(OP, f, k0 + kk, K);
        }
        var av: array<array<f32, 4>, TM>;
        for (var r = 0u; r < TM; r++) {
            for (var kk = 0u; kk < 4u; kk++) {
                av[r][kk] = gather(rinfo[r] + kinfo[kk]);
            }
        }

        // bv[kk][j] = B(k0 + kk, 4 groups[j] .. 4 groups[j] + 4)
        var bv: array<array<vec4<f32>, TNV>, 4>;
        if (OP == OP_WGRAD) {
            // k0 .. k0 + 4 lie in one image (p_pad and k_split are multiples of 8).
            let b = k0 / p.p_pad;
            let pix0 = k0 % p.p_pad;
            for (var j = 0u; j < TNV; j++) {
                for (var i = 0u; i < 4u; i++) {
                    let n = min(4u * groups[j] + i, N - 1u);
                    let base = (b * N + n) * P + pix0;
                    if (VEC_G) {
                        let ok = pix0 < P;
                        let v = select(vec4<f32>(0.0), g4[select(0u, base / 4u, ok)], ok);
                        bv[0][j][i] = v.x;
                        bv[1][j][i] = v.y;
                        bv[2][j][i] = v.z;
                        bv[3][j][i] = v.w;
                    } else {
                        for (var kk = 0u; kk < 4u; kk++) {
                            let ok = pix0 + kk < P;
                            bv[kk][j][i] = select(0.0, g[select(0u, base + kk, ok)], ok);
                        }
                    }
                }
            }
        } else {
            for (var kk = 0u; kk < 4u; kk++) {
                for (var j = 0u; j < TNV; j++) {
                    bv[kk][j] = wp[(slice.wbase + k0 + kk) * N4 + groups[j]];
                }
            }
        }

        for (var kk = 0u; kk < 4u; kk++) {
            for (var r = 0u; r < TM; r++) {
                let s = vec4<f32>(av[r][kk]);
                for (var j = 0u; j < TNV; j++) {
                    acc[r][j] = fma(s, bv[kk][j], acc[r][j]);
                }
            }
        }
    }

    var bias_v: array<vec4<f32>, TNV>;
    if (OP != OP_WGRAD && EPILOGUE == EPI_BIAS_ACT) {
        for (var j = 0u; j < TNV; j++) {
            for (var i = 0u; i < 4u; i++) {
                bias_v[j][i] = bias[min(4u * groups[j] + i, N - 1u)];
            }
        }
    }
    let plane = P;
    if (OP == OP_WGRAD) {
        for (var r = 0u; r < TM; r++) {
            let m = row0 + r;
            for (var j = 0u; j < TNV; j++) {
                let gi = wg.y * WX * TNV + WX * j + lid.x;
                let v = acc[r][j];
                for (var i = 0u; i < 4u; i++) {
                    let n = 4u * gi + i;
                    if (m < M && n < N) {
                        if (SPLIT) {
                            out[(wg.z * M + m) * N + n] = v[i];
                        } else {
                            let idx = n * M + m;
                            var x = v[i];
                            if (EPILOGUE == EPI_ACCUMULATE) {
                                x += out[idx];
                            }
                            out[idx] = x;
                        }
                    }
                }
            }
        }
    } else {
        for (var r = 0u; r < TM; r++) {
            let o = obase[r];
            for (var j = 0u; j < TNV; j++) {
                let gi = wg.y * WX * TNV + WX * j + lid.x;
                var aux_v: vec4<f32>;
                if (EPILOGUE == EPI_ACT_GRAD && row0 + r < M) {
                    for (var i = 0u; i < 4u; i++) {
                        aux_v[i] = aux[o + min(4u * groups[j] + i, N - 1u) * plane];
                    }
                }
                let y = epilogue4(EPILOGUE, ACT, acc[r][j], bias_v[j], aux_v);
                for (var i = 0u; i < 4u; i++) {
                    let n = 4u * gi + i;
                    if (row0 + r < M && n < N) {
                        out[o + n * plane] = y[i];
                    }
                }
            }
        }
    }
}
