// ---- gemm_tiled.wgsl: C = op(A) · op(B) with a fused epilogue, workgroup-memory tiles ----
//
// Shapes (row-major):   C (M, N)
//   op(A) (M, K):       A is (M, K), or (K, M) when TRANS_A
//   op(B) (K, N):       B is (K, N), or (N, K) when TRANS_B
// Defines: TRANS_A, TRANS_B: bool; EPILOGUE, ACT: u32 (codes as in gemm_subgroup8.wgsl).
// Any shape. A 16x16 workgroup computes a 64x64 tile of C, 4x4 outputs per invocation, with
// 16-deep slices of A and B staged in workgroup memory. This is the kernel for real GPUs and
// the fallback for shapes the subgroup kernel does not take.

const EPI_STORE: u32 = 0u;
const EPI_ACCUMULATE: u32 = 1u;
const EPI_BIAS_ACT: u32 = 2u;
const EPI_ACT_GRAD: u32 = 3u;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
// Row strides of the tiles in workgroup memory, padded past BM / BN. An operand stored with its
// k dimension contiguous (A not transposed, B transposed) is written transposed: invocation e
// writes row e % BK, column e / BK, so a 32-lane wave writes 16 rows x 2 columns. With a stride
// of 64 all 16 rows start in the same bank (a 16-way conflict on 32 banks); with 66 row r starts
// in bank 2r and the two columns fill the odd banks, so the 32 writes hit 32 banks. The padding
// changes no read pattern: within a wave all reads share kk.
const SA: u32 = BM + 2u;
const SB: u32 = BN + 2u;

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    slope: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;             // (M, K) or (K, M)
@group(0) @binding(1) var<storage, read> b: array<f32>;             // (K, N) or (N, K)
@group(0) @binding(2) var<storage, read_write> c: array<f32>;       // (M, N)
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // (N,)
@group(0) @binding(4) var<storage, read> aux: array<f32>;           // (M, N)
@group(0) @binding(5) var<uniform> p: GemmParams;

var<workgroup> tile_a: array<f32, BK * SA>; // (BK, BM) with row stride SA: tile_a[kk * SA + m]
var<workgroup> tile_b: array<f32, BK * SB>; // (BK, BN) with row stride SB: tile_b[kk * SB + n]

fn load_a(row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[k * p.m + row];
    }
    return a[row * p.k + k];
}

fn load_b(k: u32, col: u32) -> f32 {
    if (k >= p.k || col >= p.n) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[col * p.k + k];
    }
    return b[k * p.n + col];
}

@compute @workgroup_size(16, 16)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 1024 elements of each tile, 4 per invocation. Consecutive invocations walk the
        // operand's contiguous dimension so global reads coalesce.
        for (var i = 0u; i < 4u; i++) {
            let e = li + 256u * i;
            if (TRANS_A) {
                tile_a[(e / BM) * SA + e % BM] = load_a(row0 + e % BM, k0 + e / BM);
            } else {
                tile_a[(e % BK) * SA + e / BK] = load_a(row0 + e / BK, k0 + e % BK);
            }
            if (TRANS_B) {
                tile_b[(e % BK) * SB + e / BK] = load_b(k0 + e % BK, col0 + e / BK);
            } else {
                tile_b[(e / BN) * SB + e % BN] = load_b(k0 + e / BN, col0 + e % BN);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = vec4<f32>(
                tile_a[kk * SA + lid.y * 4u],
                tile_a[kk * SA + lid.y * 4u + 1u],
                tile_a[kk * SA + lid.y * 4u + 2u],
                tile_a[kk * SA + lid.y * 4u + 3u],
            );
            let bv = vec4<f32>(
                tile_b[kk * SB + lid.x * 4u],
                tile_b[kk * SB + lid.x * 4u + 1u],
                tile_b[kk * SB + lid.x * 4u + 2u],
                tile_b[kk * SB + lid.x * 4u + 3u],
            );
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x * 4u + j;
            if (row < p.m && col < p.n) {
                let idx = row * p.n + col;
                var v = acc[i * 4u + j];
                if (EPILOGUE == EPI_ACCUMULATE) {
                    v += c[idx];
                } else if (EPILOGUE == EPI_BIAS_ACT) {
                    v = activate(ACT, p.slope, vec4<f32>(v + bias[col])).x;
                } else if (EPILOGUE == EPI_ACT_GRAD) {
                    v *= activate_grad_from_output(ACT, p.slope, vec4<f32>(aux[idx])).x;
                }
                c[idx] = v;
            }
        }
    }
}
