// ---- gemm_subgroup8.wgsl: C = op(A) · op(B) with a fused epilogue, tuned for CPU adapters ----
//
// Shapes (row-major):   C (M, N)
//   op(A) (M, K):       A is (M, K), or (K, M) when TRANS_A
//   op(B) (K, N):       B is (K, N), or (N, K) when TRANS_B
// The host puts `enable subgroups;` first (see `Shader::enables`): directives must precede the
// defines and common.wgsl that come before this file.
// Defines (prepended by the host): TRANS_A, TRANS_B: bool; EPILOGUE, ACT: u32;
//   TM: rows of C per workgroup (multiple of 4, at most 32); TNV: vec4 column groups per lane.
// Host-checked requirements: N % 4 == 0; TRANS_B => K % 4 == 0; TRANS_A => M % 4 == 0.
//
// A workgroup is one subgroup of 8 lanes and computes a TM x (32 * TNV) tile of C. Lane l owns
// the vec4 column groups g = wg.x * 8 * TNV + 8 * j + l (j < TNV). For each chunk of 8 values
// of k, lane l loads A(row, k0 + l) for the TM rows and subgroupShuffle hands every lane the
// value it needs, so no workgroup memory is used. On CPU adapters every lane of a non-uniform
// load costs one iteration of a scalar loop; sharing A this way divides those loads by 8, and
// TM * TNV vec4 accumulators give TM FMAs per loaded value of B.

// Epilogue codes (mirror `ops::gemm::Epilogue`).
const EPI_STORE: u32 = 0u;      // C = op(A) op(B)
const EPI_ACCUMULATE: u32 = 1u; // C += op(A) op(B)
const EPI_BIAS_ACT: u32 = 2u;   // C = act(op(A) op(B) + bias)
const EPI_ACT_GRAD: u32 = 3u;   // C = (op(A) op(B)) * act'(aux), act' taken from act's output aux

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    slope: f32, // LeakyReLU slope
}

@group(0) @binding(0) var<storage, read> a: array<f32>;                 // (M, K) or (K, M)
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;           // (K, N) or (N, K)
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;     // (M, N)
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;        // (N,)
@group(0) @binding(4) var<storage, read> aux: array<vec4<f32>>;         // (M, N)
@group(0) @binding(5) var<uniform> p: GemmParams;
@group(0) @binding(6) var<storage, read> a4: array<vec4<f32>>;          // A again, as vec4

@compute @workgroup_size(8)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let M = p.m;
    let N4 = p.n / 4u;
    let K = p.k;
    let K4 = K / 4u;
    let M4 = M / 4u;
    let row0 = wg.y * TM;

    // Vec4 column groups of this lane, clamped so every load is in bounds; columns past N are
    // computed from valid data and dropped at the store.
    var cols: array<u32, TNV>;
    for (var j = 0u; j < TNV; j++) {
        cols[j] = min(wg.x * 8u * TNV + 8u * j + lane, N4 - 1u);
    }

    // Every private array is indexed by loop counters directly (acc[r][j], not acc[r * TNV + j]):
    // Mesa's NIR then unrolls each such loop whatever its size. A loop it leaves rolled makes
    // the array dynamically indexed, which moves all accumulators to memory (measured 7x slower
    // on lavapipe once the epilogue read a bias).
    var acc: array<array<vec4<f32>, TNV>, TM>;
    for (var k0 = 0u; k0 < K; k0 += 8u) {
        // Lane l holds A(row0 + r, k0 + l) for r < TM; zero past K.
        var av: array<f32, TM>;
        let ka = k0 + lane;
        let k_ok = ka < K;
        let kc = min(ka, K - 1u);
        if (TRANS_A) {
            for (var q = 0u; q < TM / 4u; q++) {
                let v = a4[kc * M4 + min(row0 / 4u + q, M4 - 1u)];
                let vz = select(vec4<f32>(0.0), v, k_ok);
                av[4u * q] = vz.x;
                av[4u * q + 1u] = vz.y;
                av[4u * q + 2u] = vz.z;
                av[4u * q + 3u] = vz.w;
            }
        } else {
            for (var r = 0u; r < TM; r++) {
                let row = min(row0 + r, M - 1u);
                av[r] = select(0.0, a[row * K + kc], k_ok);
            }
        }

        // TRANS_B: B(k, n) = B[n][k]; read 4 consecutive k of each of the lane's columns.
        // bt[j][i][q] = B[4 cols[j] + i][k0 + 4q .. k0 + 4q + 4]
        var bt: array<array<array<vec4<f32>, 2>, 4>, TNV>;
        if (TRANS_B) {
            for (var j = 0u; j < TNV; j++) {
                for (var i = 0u; i < 4u; i++) {
                    for (var q = 0u; q < 2u; q++) {
                        let kq = k0 / 4u + q;
                        let v = b[(4u * cols[j] + i) * K4 + min(kq, K4 - 1u)];
                        bt[j][i][q] = select(vec4<f32>(0.0), v, kq < K4);
                    }
                }
            }
        }

        let kn = min(8u, K - k0);
        for (var kk = 0u; kk < 8u; kk++) {
            if (kk < kn) {
                var bv: array<vec4<f32>, TNV>;
                for (var j = 0u; j < TNV; j++) {
                    if (TRANS_B) {
                        let q = kk / 4u;
                        let e = kk % 4u;
                        bv[j] = vec4<f32>(bt[j][0][q][e], bt[j][1][q][e], bt[j][2][q][e], bt[j][3][q][e]);
                    } else {
                        bv[j] = b[(k0 + kk) * N4 + cols[j]];
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
    }

    // Epilogue. Bias values depend only on the column group: load them once.
    var bias_v: array<vec4<f32>, TNV>;
    if (EPILOGUE == EPI_BIAS_ACT) {
        for (var j = 0u; j < TNV; j++) {
            bias_v[j] = bias[cols[j]];
        }
    }
    for (var r = 0u; r < TM; r++) {
        let row = row0 + r;
        for (var j = 0u; j < TNV; j++) {
            let g = wg.x * 8u * TNV + 8u * j + lane;
            let idx = min(row, M - 1u) * N4 + cols[j];
            var v = acc[r][j];
            if (EPILOGUE == EPI_ACCUMULATE) {
                v += c[idx];
            } else if (EPILOGUE == EPI_BIAS_ACT) {
                v = epilogue_act(v + bias_v[j]);
            } else if (EPILOGUE == EPI_ACT_GRAD) {
                v *= epilogue_act_grad(aux[idx]);
            }
            if (row < M && g < N4) {
                c[idx] = v;
            }
        }
    }
}

// The activation chosen by the ACT define (folded at compile time).
fn epilogue_act(x: vec4<f32>) -> vec4<f32> {
    if (ACT == ACT_RELU) {
        return max(x, vec4<f32>(0.0));
    } else if (ACT == ACT_LEAKY_RELU) {
        return select(x * p.slope, x, x > vec4<f32>(0.0));
    } else if (ACT == ACT_TANH) {
        return tanh(x);
    } else if (ACT == ACT_SIGMOID) {
        return 1.0 / (1.0 + exp(-x));
    }
    return x;
}

fn epilogue_act_grad(y: vec4<f32>) -> vec4<f32> {
    if (ACT == ACT_RELU) {
        return select(vec4<f32>(0.0), vec4<f32>(1.0), y > vec4<f32>(0.0));
    } else if (ACT == ACT_LEAKY_RELU) {
        return select(vec4<f32>(p.slope), vec4<f32>(1.0), y > vec4<f32>(0.0));
    } else if (ACT == ACT_TANH) {
        return 1.0 - y * y;
    } else if (ACT == ACT_SIGMOID) {
        return y * (1.0 - y);
    }
    return vec4<f32>(1.0);
}
