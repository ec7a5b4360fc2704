// ---- gemm_regblock.wgsl: C = op(A) · op(B), register-blocked, no workgroup memory ----------
//
// Shapes (row-major):   C (M, N)
//   op(A) (M, K):       A is (M, K), or (K, M) when TRANS_A
//   op(B) (K, N):       B is (K, N), or (N, K) when TRANS_B
// Defines (prepended by the host): TRANS_A, TRANS_B: bool; EPILOGUE, ACT: u32 (codes as in
//   gemm_subgroup8.wgsl); TM: rows of C per invocation (multiple of 4); TNV: vec4 column groups
//   per invocation; WX: invocations per workgroup; VEC_A: A's contiguous dimension (K, or M
//   when TRANS_A) is a multiple of 4, so A is read as vec4 through `a4`; VEC_B: likewise for B
//   (N, or K when TRANS_B) through `b4`; K_TAIL: K is not a multiple of 4.
// Any shape: rows and columns past C's edge are clamped for loads and dropped at the store,
// the last K % 4 values of k run through a scalar tail loop, and an operand whose contiguous
// dimension is not a multiple of 4 is read with scalar loads. C and aux are declared, with
// their accessors load_c4 / store_c4 / load_aux4, by the file the host puts in front of this
// one: gemm_regblock_c4.wgsl (vec4 access, N a multiple of 4) or gemm_regblock_c1.wgsl
// (scalar access, any N).
//
// For CPU adapters without 8-lane subgroups. Invocation x of workgroup (gx, gy) owns the TM rows
// row0 = gy * TM .. + TM and the vec4 column groups g = gx * WX * TNV + WX * j + x (j < TNV),
// and keeps that TM x 4 TNV tile of C in registers for the whole K loop. Per 4 values of k it
// loads TM vec4 of A and 4 TNV vec4 of B (TN and NT operands are transposed in registers) for
// 16 TM TNV FMAs. On CPU adapters every lane of a non-uniform load costs one iteration of a
// scalar loop, so loads, not FMAs, set the speed; workgroup barriers are coroutine switches.
// This kernel has neither workgroup memory nor barriers, and each vec4 load feeds 4 TNV (A) or
// TM (B) vec4 FMAs. The invocations of a workgroup share their rows, so A's addresses are the
// same across the workgroup and a driver can load them once.
//
// Every private array is indexed by loop counters with constant bounds (acc[r][j], av[r][kk],
// bv[kk][j]), never by a computed index: Mesa then unrolls every loop and keeps the arrays in
// registers. A loop left rolled makes the array dynamically indexed and moves it to memory.

const EPI_STORE: u32 = 0u;
const EPI_ACCUMULATE: u32 = 1u;
const EPI_BIAS_ACT: u32 = 2u;
const EPI_ACT_GRAD: u32 = 3u;

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    slope: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;             // (M, K) or (K, M)
@group(0) @binding(1) var<storage, read> b: array<f32>;             // (K, N) or (N, K)
// @binding(2) C (M, N) and @binding(4) aux (M, N): see the header.
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // (N,)
@group(0) @binding(5) var<uniform> p: GemmParams;
@group(0) @binding(6) var<storage, read> a4: array<vec4<f32>>;      // A again, as vec4
@group(0) @binding(7) var<storage, read> b4: array<vec4<f32>>;      // B again, as vec4

@compute @workgroup_size(WX)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let M = p.m;
    let N = p.n;
    let K = p.k;
    let M4 = M / 4u;
    let K4 = K / 4u;
    let N4 = (N + 3u) / 4u;
    let row0 = wg.y * TM;

    // Rows and vec4 column groups of this invocation, clamped so every load is in bounds.
    var rows: array<u32, TM>;
    for (var r = 0u; r < TM; r++) {
        rows[r] = min(row0 + r, M - 1u);
    }
    var groups: array<u32, TNV>;
    for (var j = 0u; j < TNV; j++) {
        groups[j] = min(wg.x * WX * TNV + WX * j + lid.x, N4 - 1u);
    }

    var acc: array<array<vec4<f32>, TNV>, TM>;
    let k_main = K & ~3u;
    for (var k0 = 0u; k0 < k_main; k0 += 4u) {
        // av[r][kk] = op(A)(row r, k0 + kk)
        var av: array<array<f32, 4>, TM>;
        if (TRANS_A) {
            if (VEC_A) {
                for (var kk = 0u; kk < 4u; kk++) {
                    for (var q = 0u; q < TM / 4u; q++) {
                        let v = a4[(k0 + kk) * M4 + min(row0 / 4u + q, M4 - 1u)];
                        av[4u * q][kk] = v.x;
                        av[4u * q + 1u][kk] = v.y;
                        av[4u * q + 2u][kk] = v.z;
                        av[4u * q + 3u][kk] = v.w;
                    }
                }
            } else {
                for (var kk = 0u; kk < 4u; kk++) {
                    for (var r = 0u; r < TM; r++) {
                        av[r][kk] = a[(k0 + kk) * M + rows[r]];
                    }
                }
            }
        } else {
            if (VEC_A) {
                for (var r = 0u; r < TM; r++) {
                    let v = a4[rows[r] * K4 + k0 / 4u];
                    av[r][0] = v.x;
                    av[r][1] = v.y;
                    av[r][2] = v.z;
                    av[r][3] = v.w;
                }
            } else {
                for (var r = 0u; r < TM; r++) {
                    for (var kk = 0u; kk < 4u; kk++) {
                        av[r][kk] = a[rows[r] * K + k0 + kk];
                    }
                }
            }
        }

        // bv[kk][j] = op(B)(k0 + kk, 4 groups[j] .. 4 groups[j] + 4)
        var bv: array<array<vec4<f32>, TNV>, 4>;
        if (TRANS_B) {
            for (var j = 0u; j < TNV; j++) {
                for (var i = 0u; i < 4u; i++) {
                    let col = min(4u * groups[j] + i, N - 1u);
                    if (VEC_B) {
                        let v = b4[col * K4 + k0 / 4u];
                        bv[0][j][i] = v.x;
                        bv[1][j][i] = v.y;
                        bv[2][j][i] = v.z;
                        bv[3][j][i] = v.w;
                    } else {
                        for (var kk = 0u; kk < 4u; kk++) {
                            bv[kk][j][i] = b[col * K + k0 + kk];
                        }
                    }
                }
            }
        } else {
            for (var kk = 0u; kk < 4u; kk++) {
                for (var j = 0u; j < TNV; j++) {
                    if (VEC_B) {
                        bv[kk][j] = b4[(k0 + kk) * N4 + groups[j]];
                    } else {
                        bv[kk][j] = load_b_row(k0 + kk, groups[j]);
                    }
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

    // The last K % 4 values of k, one at a time with scalar loads.
    for (var k = k_main; K_TAIL && k < K; k++) {
        var bv: array<vec4<f32>, TNV>;
        for (var j = 0u; j < TNV; j++) {
            if (TRANS_B) {
                var v: vec4<f32>;
                for (var i = 0u; i < 4u; i++) {
                    v[i] = b[min(4u * groups[j] + i, N - 1u) * K + k];
                }
                bv[j] = v;
            } else {
                bv[j] = load_b_row(k, groups[j]);
            }
        }
        for (var r = 0u; r < TM; r++) {
            var s: f32;
            if (TRANS_A) {
                s = a[k * M + rows[r]];
            } else {
                s = a[rows[r] * K + k];
            }
            for (var j = 0u; j < TNV; j++) {
                acc[r][j] = fma(vec4<f32>(s), bv[j], acc[r][j]);
            }
        }
    }

    // Epilogue. Bias values depend only on the column group: load them once.
    var bias_v: array<vec4<f32>, TNV>;
    if (EPILOGUE == EPI_BIAS_ACT) {
        for (var j = 0u; j < TNV; j++) {
            var v: vec4<f32>;
            for (var i = 0u; i < 4u; i++) {
                v[i] = bias[min(4u * groups[j] + i, N - 1u)];
            }
            bias_v[j] = v;
        }
    }
    for (var r = 0u; r < TM; r++) {
        let row = row0 + r;
        for (var j = 0u; j < TNV; j++) {
            let g = wg.x * WX * TNV + WX * j + lid.x;
            var v = acc[r][j];
            if (EPILOGUE == EPI_ACCUMULATE) {
                v += load_c4(rows[r], groups[j]);
            } else if (EPILOGUE == EPI_BIAS_ACT) {
                v = activate(ACT, p.slope, v + bias_v[j]);
            } else if (EPILOGUE == EPI_ACT_GRAD) {
                v *= activate_grad_from_output(ACT, p.slope, load_aux4(rows[r], groups[j]));
            }
            if (row < M && g < N4) {
                store_c4(row, g, v);
            }
        }
    }
}

// B(k, 4g .. 4g + 4) of a (K, N) B with scalar loads; columns past N repeat column N - 1.
fn load_b_row(k: u32, g: u32) -> vec4<f32> {
    let base = k * p.n;
    let last = p.n - 1u;
    return vec4<f32>(
        b[base + min(4u * g, last)],
        b[base + min(4u * g + 1u, last)],
        b[base + min(4u * g + 2u, last)],
        b[base + min(4u * g + 3u, last)],
    );
}
