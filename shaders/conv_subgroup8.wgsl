// ---- conv_subgroup8.wgsl: implicit-GEMM convolutions for CPU adapters with 8-lane subgroups ----
//
// The products of conv_common.wgsl (prepended), laid out like gemm_subgroup8.wgsl.
// Defines: OP (OP_FWD, OP_DGRAD, OP_WGRAD); EPILOGUE, ACT (EPI_*, ACT_*); TM: rows of C per
//   workgroup (16, 32, or 64 for OP_WGRAD with TNV = 1); TNV: vec4 column groups per lane;
//   VEC_G (OP_WGRAD): GH·GW is a multiple of 4, so g is read as vec4; SPLIT (OP_WGRAD): write
//   partial sums (splits, M, N) instead of dW; VEC_OUT (OP_FWD): GH·GW is a multiple of 4, so
//   every 4 rows from a multiple of 4 are 4 consecutive pixels of one image and the epilogue
//   reads aux and writes out as vec4 (a quarter of the memory operations; with a depth of 16 —
//   one input channel, 4x4 taps — the scalar stores cost more than the multiply-adds).
// Grid: x = row tiles, y = column tiles, z = phase (OP_DGRAD) or split (OP_WGRAD).
//
// A workgroup is one subgroup of 8 lanes and computes a TM x (32·TNV) tile of C. Lane l owns the
// vec4 column groups g = wg.y·8·TNV + 8j + l (j < TNV). The gathered operand is A: the TM rows'
// image origins are decoded once per workgroup (uniform), and for each chunk of 8 values of k
// lane l decodes depth k0 + l once and gathers A(row0 + r, k0 + l) for the TM rows, one masked
// scalar load each; subgroupShuffle then hands every lane the value it needs. So each gathered
// element is loaded once per workgroup and feeds 32·TNV multiply-adds. B is read as vec4 with
// no masks: the packed weights (phases, K_pad, N4) are zero past K and N (conv_aux.wgsl::pack);
// for OP_WGRAD, B is g, of which lane l reads 8 consecutive pixels of each of its 4 channels
// (two vec4) and transposes them in registers, as the TRANS_B path of the GEMM does.
//
// Every private array is indexed by loop counters with constant bounds, so Mesa unrolls every
// loop and keeps the arrays in registers (see gemm_subgroup8.wgsl).

@group(0) @binding(1) var<storage, read> wp: array<vec4<f32>>;    // FWD/DGRAD: (phases, K_pad, N4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // FWD/DGRAD: (B, N, GH, GW);
                                                                  // WGRAD: dW (N, M) or (splits, M, N)
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N,)
@group(0) @binding(4) var<storage, read> aux: array<f32>;         // activation output, like out
@group(0) @binding(6) var<storage, read> g: array<f32>;           // WGRAD: (B, N, GH, GW)
@group(0) @binding(7) var<storage, read> g4: array<vec4<f32>>;    // g again, as vec4
@group(0) @binding(8) var<storage, read_write> out4: array<vec4<f32>>; // VEC_OUT: out as vec4
@group(0) @binding(9) var<storage, read> aux4: array<vec4<f32>>;       // VEC_OUT: aux as vec4

@compute @workgroup_size(8)
fn conv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
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

    // Vec4 column groups of this lane, clamped so every load is in bounds; columns past N are
    // computed and dropped at the store.
    var cols: array<u32, TNV>;
    for (var j = 0u; j < TNV; j++) {
        cols[j] = min(wg.y * 8u * TNV + 8u * j + lane, N4 - 1u);
    }

    // Row parts of A and output offsets, the same for every lane.
    var rinfo: array<vec3<i32>, TM>;
    var obase: array<u32, TM>;
    var cur = row_cursor(OP, f, row0);
    for (var r = 0u; r < TM; r++) {
        rinfo[r] = select(INVALID, row_part(OP, f, cur), row0 + r < M);
        obase[r] = out_base(OP, f, cur);
        cur = cursor_next(cur);
    }

    var acc: array<array<vec4<f32>, TNV>, TM>;
    for (var k0 = slice.k_begin; k0 < K; k0 += 8u) {
        // Depth part of this lane's k; INVALID past K (and past GH·GW for OP_WGRAD).
        let kinfo = depth_part(OP, f, k0 + lane, K);
        var av: array<f32, TM>;
        for (var r = 0u; r < TM; r++) {
            av[r] = gather(rinfo[r] + kinfo);
        }

        // OP_WGRAD: bt[j][i][q] = g[b, 4 cols[j] + i, pix0 + 4q .. pix0 + 4q + 4] (0 past GH·GW).
        // k0 .. k0 + 8 lie in one image: p_pad and k_split are multiples of 8.
        var bt: array<array<array<vec4<f32>, 2>, 4>, TNV>;
        // OP_FWD / OP_DGRAD: bw[kk][j] = packed weights (k0 + kk, group cols[j]).
        var bw: array<array<vec4<f32>, TNV>, 8>;
        if (OP != OP_WGRAD) {
            for (var kk = 0u; kk < 8u; kk++) {
                for (var j = 0u; j < TNV; j++) {
                    bw[kk][j] = wp[(slice.wbase + k0 + kk) * N4 + cols[j]];
                }
            }
        }
        if (OP == OP_WGRAD) {
            let b = k0 / p.p_pad;
            let pix0 = k0 % p.p_pad;
            for (var j = 0u; j < TNV; j++) {
                for (var i = 0u; i < 4u; i++) {
                    let n = min(4u * cols[j] + i, N - 1u);
                    let base = (b * N + n) * P + pix0;
                    if (VEC_G) {
                        for (var q = 0u; q < 2u; q++) {
                            let ok = pix0 + 4u * q < P;
                            let v = g4[select(0u, base / 4u + q, ok)];
                            bt[j][i][q] = select(vec4<f32>(0.0), v, ok);
                        }
                    } else {
                        for (var q = 0u; q < 2u; q++) {
                            for (var e = 0u; e < 4u; e++) {
                                let ok = pix0 + 4u * q + e < P;
                                let v = g[select(0u, base + 4u * q + e, ok)];
                                bt[j][i][q][e] = select(0.0, v, ok);
                            }
                        }
                    }
                }
            }
        }

        for (var kk = 0u; kk < 8u; kk++) {
            var bv: array<vec4<f32>, TNV>;
            for (var j = 0u; j < TNV; j++) {
                if (OP == OP_WGRAD) {
                    let q = kk / 4u;
                    let e = kk % 4u;
                    bv[j] = vec4<f32>(bt[j][0][q][e], bt[j][1][q][e], bt[j][2][q][e], bt[j][3][q][e]);
                } else {
                    bv[j] = bw[kk][j];
                }
            }
            for (var r = 0u; r < TM; r++) {
                let s = subgroupShuffle(av[r], kk);
                for (var j = 0u; j < TNV; j++) {
                    acc[r][j] = fma(vec4<f32>(s), bv[j], acc[r][j]);
                }
            }
        }
    }

    // Epilogue. Bias values depend only on the column group: load them once.
    var bias_v: array<vec4<f32>, TNV>;
    if (OP != OP_WGRAD && EPILOGUE == EPI_BIAS_ACT) {
        for (var j = 0u; j < TNV; j++) {
            for (var i = 0u; i < 4u; i++) {
                bias_v[j][i] = bias[min(4u * cols[j] + i, N - 1u)];
            }
        }
    }
    let plane = P;
    if (OP == OP_WGRAD) {
        for (var r = 0u; r < TM; r++) {
            let m = row0 + r;
            for (var j = 0u; j < TNV; j++) {
                let gi = wg.y * 8u * TNV + 8u * j + lane;
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
    } else if (VEC_OUT) {
        // Rows 4q .. 4q + 3 of channel n: out4[(obase[4q] + n·plane) / 4]. M and row0 are
        // multiples of 4, so the 4 rows are valid together.
        for (var q = 0u; q < TM / 4u; q++) {
            let o = obase[4u * q];
            let ok = row0 + 4u * q < M;
            for (var j = 0u; j < TNV; j++) {
                let gi = wg.y * 8u * TNV + 8u * j + lane;
                for (var i = 0u; i < 4u; i++) {
                    let n = 4u * gi + i;
                    let v = vec4<f32>(
                        acc[4u * q][j][i],
                        acc[4u * q + 1u][j][i],
                        acc[4u * q + 2u][j][i],
                        acc[4u * q + 3u][j][i],
                    );
                    let idx = (o + min(n, N - 1u) * plane) / 4u;
                    var aux_v: vec4<f32>;
                    if (EPILOGUE == EPI_ACT_GRAD && ok) {
                        aux_v = aux4[idx];
                    }
                    let y = epilogue4(EPILOGUE, ACT, v, vec4<f32>(bias_v[j][i]), aux_v);
                    if (ok && n < N) {
                        out4[idx] = y;
                    }
                }
            }
        }
    } else {
        for (var r = 0u; r < TM; r++) {
            let o = obase[r];
            for (var j = 0u; j < TNV; j++) {
                let gi = wg.y * 8u * TNV + 8u * j + lane;
                var aux_v: vec4<f32>;
                if (EPILOGUE == EPI_ACT_GRAD && row0 + r < M) {
                    for (var i = 0u; i < 4u; i++) {
                        aux_v[i] = aux[o + min(4u * cols[j] + i, N - 1u) * plane];
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
