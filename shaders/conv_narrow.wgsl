// ---- conv_narrow.wgsl: transposed convolution (OP_DGRAD) into at most 4 channels, direct ------
//
// conv_common.wgsl is prepended. out (B, N, GH, GW) with N ≤ 4 = Σ over c and taps of src
// (B, C, SH', SW') · w (C, N, KH, KW) (PyTorch's layout, read as is), then the epilogue. This is
// the output layer of a decoder (and the input gradient of a first convolution): with so few
// columns, the implicit GEMM would load each gathered element for one or a few multiply-adds.
//
// Output pixels are grouped in "quads" of SH x SW, one pixel per phase (rh, rw) =
// ((y + ph) mod SH, (x + pw) mod SW). Each invocation owns TQY x TQX quads, i.e. a TQY x TQX
// block of every phase's grid, and all N channels: per input channel c it loads the PY x PX
// patch of src those outputs reach once into registers, with the c-th weights, and applies each
// phase's taps (kh ≡ rh, kw ≡ rw) to it, four quad columns per vec4. Every loaded element feeds
// up to KH·KW·N multiply-adds and no multiply-add is spent on a tap outside its phase.
//
// Phase rh's outputs are rows ih0(rh) + j·SH, j = 0, 1, ..., and output row ih0 + j·SH meets
// tap kh = rh + th·SH at src row ph/SH + QH(rh) + j − th, where ih0 and QH depend only on
// RPH = ph mod SH: every register index below is a compile-time constant once Mesa unrolls.
//
// SHARE (8-lane subgroups, patches no more than twice a block along each axis): the lanes are
// a 2 x 4 group of neighbouring blocks, which share the overlaps of their patches (load_patch,
// conv_narrow_load8.wgsl; OWN_Y = TQY, OWN_X = TQX). A patch holds ~1.9x the elements of its
// block for the 4x4 stride-2 layers.
//
// The weights of channel c come from narrow_weights (conv_narrow_load.wgsl, or on 8-lane
// subgroups conv_narrow_load8.wgsl, prepended).
// Defines: EPILOGUE, ACT; KH, KW, SH, SW (kernel, stride); RPH, RPW (padding mod stride); NN
//   (N); TQY, TQX (quads per invocation; TQX a multiple of 4); PY, PX (patch size); DYB, DXB
//   (1024 + the smallest QH + j − th over the block, per axis); SHARE (see above).
//   WG: invocations per workgroup (8 on CPU adapters, where conv_narrow_load8.wgsl needs one
//   8-lane subgroup per workgroup; 64 on GPUs).
// Grid: x = groups of WG blocks (one per invocation, numbered row-major over the image; with
//   SHARE 2 x 4 groups of blocks, row-major), z = image.

const NQ4: u32 = TQX / 4u;
const DYMIN: i32 = i32(DYB) - 1024;
const DXMIN: i32 = i32(DXB) - 1024;

@group(0) @binding(1) var<storage, read> w: array<f32>;           // (C, N, KH, KW)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // (B, N, GH, GW)
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N,)
@group(0) @binding(4) var<storage, read> aux: array<f32>;         // activation output, like out

// First output row (column) of phase r: (r − pad) mod s, with rp = pad mod s.
fn first_out(r: u32, rp: u32, s: u32) -> u32 {
    return (r + s - rp) % s;
}

// QH of phase r: (first_out + rp − r) / s, 0 or 1.
fn q_off(r: u32, rp: u32, s: u32) -> u32 {
    return (first_out(r, rp, s) + rp - r) / s;
}

@compute @workgroup_size(WG)
fn narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let b = wg.z;
    let N = p.n;
    let quads_w = (p.grid_w + SW - 1u) / SW;
    let blocks_x = (quads_w + TQX - 1u) / TQX;
    // Block (by, bx). SHARE: the 8 lanes are a 2 x 4 group of neighbouring blocks
    // (lane = 4·ly + lx); otherwise blocks are numbered row-major over the image.
    let ly = lane / 4u;
    let lx = lane % 4u;
    let t = wg.x * WG + lane;
    let groups_x = (blocks_x + 3u) / 4u;
    let by = select(t / blocks_x, (wg.x / groups_x) * 2u + ly, SHARE);
    let bx = select(t % blocks_x, (wg.x % groups_x) * 4u + lx, SHARE);
    let j0 = by * TQY;
    let i0 = bx * TQX;
    // Patch origin in src.
    let sy0 = i32(j0 + p.ph / SH) + DYMIN;
    let sx0 = i32(i0 + p.pw / SW) + DXMIN;

    // acc[rh][rw][n][j][jq]: indexed by loop counters only, so Mesa unrolls every loop (see
    // gemm_subgroup8.wgsl).
    var acc: array<array<array<array<array<vec4<f32>, NQ4>, TQY>, NN>, SW>, SH>;
    for (var c = 0u; c < p.src_c; c++) {
        let cbase = (b * p.src_c + c) * p.src_h * p.src_w;
        var pt: array<array<f32, PX>, PY>;
        load_patch(&pt, cbase, sy0, sx0, lane);
        let wr = narrow_weights(c, lane);
        for (var rh = 0u; rh < SH; rh++) {
            for (var rw = 0u; rw < SW; rw++) {
                for (var th = 0u; th < (KH + SH - 1u) / SH; th++) {
                    let kh = rh + th * SH;
                    for (var tw = 0u; tw < (KW + SW - 1u) / SW; tw++) {
                        let kw = rw + tw * SW;
                        if (kh < KH && kw < KW) {
                            for (var j = 0u; j < TQY; j++) {
                                let py = i32(q_off(rh, RPH, SH) + j) - i32(th) - DYMIN;
                                for (var jq = 0u; jq < NQ4; jq++) {
                                    let px = i32(q_off(rw, RPW, SW) + 4u * jq) - i32(tw) - DXMIN;
                                    let sv = vec4<f32>(
                                        pt[py][px],
                                        pt[py][px + 1],
                                        pt[py][px + 2],
                                        pt[py][px + 3],
                                    );
                                    for (var n = 0u; n < NN; n++) {
                                        acc[rh][rw][n][j][jq] = fma(
                                            sv,
                                            vec4<f32>(wr[n][kh][kw]),
                                            acc[rh][rw][n][j][jq],
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    let plane = p.grid_h * p.grid_w;
    for (var rh = 0u; rh < SH; rh++) {
        for (var rw = 0u; rw < SW; rw++) {
            for (var n = 0u; n < NN; n++) {
                let obase = (b * N + n) * plane;
                let bias_n = vec4<f32>(bias[min(n, N - 1u)]);
                for (var j = 0u; j < TQY; j++) {
                    let oy = first_out(rh, RPH, SH) + (j0 + j) * SH;
                    for (var jq = 0u; jq < NQ4; jq++) {
                        var ox: vec4<u32>;
                        for (var e = 0u; e < 4u; e++) {
                            ox[e] = first_out(rw, RPW, SW) + (i0 + 4u * jq + e) * SW;
                        }
                        var aux_v: vec4<f32>;
                        if (EPILOGUE == EPI_ACT_GRAD && oy < p.grid_h && n < N) {
                            for (var e = 0u; e < 4u; e++) {
                                aux_v[e] = aux[obase + oy * p.grid_w + min(ox[e], p.grid_w - 1u)];
                            }
                        }
                        let v = epilogue4(EPILOGUE, ACT, acc[rh][rw][n][j][jq], bias_n, aux_v);
                        for (var e = 0u; e < 4u; e++) {
                            if (n < N && oy < p.grid_h && ox[e] < p.grid_w) {
                                out[obase + oy * p.grid_w + ox[e]] = v[e];
                            }
                        }
                    }
                }
            }
        }
    }
}
