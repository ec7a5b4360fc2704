// ---- conv_single.wgsl: gather convolution (OP_FWD) from ONE input channel, direct -------------
//
// conv_common.wgsl is prepended. out (B, N, GH, GW) = Σ over taps of src (B, 1, SH', SW') ·
// w (N, 1, KH, KW) (PyTorch's layout, read as is), then the epilogue. This is a first
// convolution of an encoder (and the input gradient of a decoder's output layer): with one
// input channel the implicit GEMM's depth is only KH·KW, so its per-row work (row decode, masked
// gathers, the scattered epilogue) outweighs the multiply-adds.
//
// Each invocation owns a TY x TX block of output pixels and a group of NN output channels
// (workgroup y): it loads the (TY − 1)·SH + KH by (TX − 1)·SW + KW patch of src those outputs
// reach once into registers and applies every channel's KH·KW weights to it, four output
// columns per vec4. Every loaded element feeds up to NN·KH·KW·TY·TX / (patch size)
// multiply-adds; the weights of the group are the same for every invocation and come from
// narrow_weights (conv_narrow_load.wgsl, or on 8-lane subgroups conv_narrow_load8.wgsl,
// prepended), called with the group index as its channel: w (N, 1, KH, KW) read as
// (N / NN, NN, KH, KW). NN divides N, so no group reads past the end of w.
// Defines: EPILOGUE, ACT; KH, KW, SH, SW (kernel, stride); NN (channels per group); TY, TX
//   (output block; TX a multiple of 4); PY, PX (patch size); SHARE, OWN_Y = min(TY·SH, PY),
//   OWN_X = min(TX·SW, PX) (load_patch, conv_narrow_load8.wgsl).
//   WG: invocations per workgroup (8 on CPU adapters, where conv_narrow_load8.wgsl needs one
//   8-lane subgroup per workgroup; 64 on GPUs).
// Grid: x = groups of WG blocks (one per invocation, numbered row-major over the output grid;
//   with SHARE 2 x 4 groups of blocks, row-major), y = channel group, z = image.
// The caller takes this kernel only when GW is a multiple of 4: every four columns of a block
// then lie in or out of the grid together and out and aux are read and written as vec4 (on
// lavapipe every store costs a loop over the lanes; with scalar stores this kernel was slower
// than the implicit GEMM at 14 x 14 outputs).

const NX4: u32 = TX / 4u;

@group(0) @binding(1) var<storage, read> w: array<f32>;           // (N, 1, KH, KW)
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N,)
@group(0) @binding(8) var<storage, read_write> out4: array<vec4<f32>>; // (B, N, GH, GW / 4)
@group(0) @binding(9) var<storage, read> aux4: array<vec4<f32>>;       // activation output

@compute @workgroup_size(WG)
fn single(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let b = wg.z;
    let g = wg.y;
    let blocks_x = (p.grid_w + TX - 1u) / TX;
    // SHARE: the 8 lanes are a 2 x 4 group of neighbouring blocks (lane = 4·ly + lx), which
    // share the overlaps of their patches (load_patch); otherwise blocks are numbered
    // row-major.
    let t = wg.x * WG + lane;
    let groups_x = (blocks_x + 3u) / 4u;
    let oy0 = select(t / blocks_x, (wg.x / groups_x) * 2u + lane / 4u, SHARE) * TY;
    let ox0 = select(t % blocks_x, (wg.x % groups_x) * 4u + lane % 4u, SHARE) * TX;
    // Patch origin in src.
    let sy0 = i32(oy0 * SH) - i32(p.ph);
    let sx0 = i32(ox0 * SW) - i32(p.pw);

    let sbase = b * p.src_h * p.src_w;
    var pt: array<array<f32, PX>, PY>;
    load_patch(&pt, sbase, sy0, sx0, lane);
    let wr = narrow_weights(g, lane);

    // acc[n][j][jq]: indexed by loop counters only, so Mesa unrolls every loop (see
    // gemm_subgroup8.wgsl).
    var acc: array<array<array<vec4<f32>, NX4>, TY>, NN>;
    for (var kh = 0u; kh < KH; kh++) {
        for (var kw = 0u; kw < KW; kw++) {
            for (var j = 0u; j < TY; j++) {
                let py = j * SH + kh;
                for (var jq = 0u; jq < NX4; jq++) {
                    let px = 4u * jq * SW + kw;
                    let sv = vec4<f32>(
                        pt[py][px],
                        pt[py][px + SW],
                        pt[py][px + 2u * SW],
                        pt[py][px + 3u * SW],
                    );
                    for (var n = 0u; n < NN; n++) {
                        acc[n][j][jq] = fma(sv, vec4<f32>(wr[n][kh][kw]), acc[n][j][jq]);
                    }
                }
            }
        }
    }

    let plane = p.grid_h * p.grid_w;
    for (var n = 0u; n < NN; n++) {
        let nn = g * NN + n;
        let obase = (b * p.n + nn) * plane;
        var bias_n: vec4<f32>;
        if (EPILOGUE == EPI_BIAS_ACT) {
            bias_n = vec4<f32>(bias[nn]);
        }
        for (var j = 0u; j < TY; j++) {
            let oy = oy0 + j;
            let row = obase + min(oy, p.grid_h - 1u) * p.grid_w;
            for (var jq = 0u; jq < NX4; jq++) {
                let q = (row + min(ox0 + 4u * jq, p.grid_w - 4u)) / 4u;
                var aux_v: vec4<f32>;
                if (EPILOGUE == EPI_ACT_GRAD) {
                    aux_v = aux4[q];
                }
                var v = epilogue4(EPILOGUE, ACT, acc[n][j][jq], bias_n, aux_v);
                if (oy < p.grid_h && ox0 + 4u * jq < p.grid_w) {
                    if (EPILOGUE == EPI_ACCUMULATE) {
                        v += out4[q];
                    }
                    out4[q] = v;
                }
            }
        }
    }
}
