// ---- conv_wsingle.wgsl: weight gradient (OP_WGRAD) from ONE gathered channel, direct ---------
//
// conv_common.wgsl is prepended. Partial sums part (splits, KH·KW, N) of
// dW[n, kh, kw] = Σ over images and pixels (oh, ow) of g's grid of
// g[b, n, oh, ow] · src[b, 0, oh·SH − ph + kh, ow·SW − pw + kw] (0 outside the image), which
// conv_aux.wgsl::wgrad_reduce adds in split order into dW (N, 1, KH, KW). This is the weight
// gradient of an encoder's first convolution (src = x, g = dy) and of a decoder's last
// transposed convolution (src = dy, g = x): with one gathered channel the implicit GEMM has only
// KH·KW rows, and every gathered element costs it a row decode and a masked load for one row.
//
// One 8-lane subgroup per workgroup. Lane l owns NL channels, (8·wg.y + l)·NL + 0 .. NL − 1,
// and all their KH·KW taps in registers; the lanes walk the same pixel blocks. Per block of
// TY x TX pixels of g's grid, the (TY − 1)·SH + KH by (TX − 1)·SW + KW patch of src those pixels
// reach is the same for every lane: the lanes load it together, ⌈PY·PX / 8⌉ elements each, and
// subgroupShuffle hands each lane all of it. Then each of the lane's g values (NL·TY·TX loads)
// meets its KH·KW patch elements in registers. On lavapipe every load is a loop over the lanes,
// so the patch's share of the loads is an eighth of what each lane loading it would cost.
// Workgroup x is a split: units (image, block) k_split·x .. k_split·(x + 1) − 1, in order, so
// results repeat bit for bit.
// Defines: KH, KW, SH, SW (kernel, stride); NL (channels per lane); TY, TX (pixel block);
//   PY, PX (patch size).
// Grid: x = split, y = group of 8·NL channels.

const NPL: u32 = (PY * PX + 7u) / 8u;

@group(0) @binding(2) var<storage, read_write> part: array<f32>; // (splits, KH·KW, N)
@group(0) @binding(6) var<storage, read> g: array<f32>;          // (B, N, GH, GW)

@compute @workgroup_size(8)
fn wsingle(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let blocks_x = (p.grid_w + TX - 1u) / TX;
    let blocks = ((p.grid_h + TY - 1u) / TY) * blocks_x;
    let units = p.batch * blocks;
    let u0 = wg.x * p.k_split;
    let u1 = min(u0 + p.k_split, units);
    let plane = p.grid_h * p.grid_w;
    let n0 = (wg.y * 8u + lane) * NL;

    // acc[nl][kh][kw]: indexed by loop counters only, so Mesa unrolls every loop (see
    // gemm_subgroup8.wgsl).
    var acc: array<array<array<f32, KW>, KH>, NL>;
    for (var u = u0; u < u1; u++) {
        let b = u / blocks;
        let blk = u % blocks;
        let oy0 = (blk / blocks_x) * TY;
        let ox0 = (blk % blocks_x) * TX;
        let sy0 = i32(oy0 * SH) - i32(p.ph);
        let sx0 = i32(ox0 * SW) - i32(p.pw);
        let sbase = b * p.src_h * p.src_w;
        var pl: array<f32, NPL>;
        for (var i = 0u; i < NPL; i++) {
            // Elements past the patch (spare lanes of the last load) read rows below it and are
            // never used.
            let e = 8u * i + lane;
            pl[i] = src_or_zero(sbase, sy0 + i32(e / PX), sx0 + i32(e % PX));
        }
        var pt: array<array<f32, PX>, PY>;
        for (var r = 0u; r < PY; r++) {
            for (var c = 0u; c < PX; c++) {
                let e = r * PX + c;
                pt[r][c] = subgroupShuffle(pl[e / 8u], e % 8u);
            }
        }
        for (var nl = 0u; nl < NL; nl++) {
            let n = n0 + nl;
            let gbase = (b * p.n + min(n, p.n - 1u)) * plane;
            for (var j = 0u; j < TY; j++) {
                let oy = oy0 + j;
                for (var i = 0u; i < TX; i++) {
                    let ox = ox0 + i;
                    let ok = n < p.n && oy < p.grid_h && ox < p.grid_w;
                    let gv = select(0.0, g[select(0u, gbase + oy * p.grid_w + ox, ok)], ok);
                    for (var kh = 0u; kh < KH; kh++) {
                        for (var kw = 0u; kw < KW; kw++) {
                            let x = pt[j * SH + kh][i * SW + kw];
                            acc[nl][kh][kw] = fma(gv, x, acc[nl][kh][kw]);
                        }
                    }
                }
            }
        }
    }

    for (var nl = 0u; nl < NL; nl++) {
        let n = n0 + nl;
        if (n < p.n) {
            for (var kh = 0u; kh < KH; kh++) {
                for (var kw = 0u; kw < KW; kw++) {
                    part[(wg.x * KH * KW + kh * KW + kw) * p.n + n] = acc[nl][kh][kw];
                }
            }
        }
    }
}
