// ---- conv_narrow_load8.wgsl: weights and input patches shared by an 8-lane subgroup --------
//
// Prepended to conv_narrow.wgsl and conv_single.wgsl on adapters with 8-lane subgroups.
//
// narrow_weights (in conv_single.wgsl c is a group of output channels): the NN·KH·KW weights of
// channel c are the same for every invocation; on CPU adapters each loaded element costs one
// iteration of a scalar loop per lane, so the 8 lanes load them together, ⌈NN·KH·KW / 8⌉ each,
// and subgroupShuffle hands every lane all of them (for one output channel and a 4x4 kernel: 2
// loads instead of 16 per input channel, 1.3x faster on lavapipe).

const NWL: u32 = (NN * KH * KW + 7u) / 8u;

fn narrow_weights(c: u32, lane: u32) -> array<array<array<f32, KW>, KH>, NN> {
    let nkk = NN * KH * KW;
    let wbase = c * nkk;
    var wl: array<f32, NWL>;
    for (var i = 0u; i < NWL; i++) {
        let e = 8u * i + lane;
        wl[i] = w[wbase + min(e, nkk - 1u)];
    }
    var wr: array<array<array<f32, KW>, KH>, NN>;
    for (var n = 0u; n < NN; n++) {
        for (var kh = 0u; kh < KH; kh++) {
            for (var kw = 0u; kw < KW; kw++) {
                let e = (n * KH + kh) * KW + kw;
                wr[n][kh][kw] = subgroupShuffle(wl[e / 8u], e % 8u);
            }
        }
    }
    return wr;
}


// Fills the PY x PX patch of src (image base `base`) at (sy0, sx0), 0 outside the image.
// SHARE: the 8 lanes are a 2 x 4 group of neighbouring blocks (lane = 4·ly + lx) whose patches
// start OWN_Y rows and OWN_X columns apart and reach at most into their neighbours' corners
// (PY ≤ 2·OWN_Y, PX ≤ 2·OWN_X). Each lane loads only the OWN_Y x OWN_X corner of its patch; the
// rest is the corner of the lane below, to the right or below-right, handed over by
// subgroupShuffle, and loaded only by lanes on the group's bottom or right edge. On lavapipe
// every load is a loop over the lanes while a shuffle is a few register moves (the 32 -> 1
// channel transposed layer ran 1.1-1.3x faster).
fn load_patch(
    pt: ptr<function, array<array<f32, PX>, PY>>,
    base: u32,
    sy0: i32,
    sx0: i32,
    lane: u32,
) {
    if (!SHARE) {
        for (var i = 0u; i < PY; i++) {
            for (var j = 0u; j < PX; j++) {
                (*pt)[i][j] = src_or_zero(base, sy0 + i32(i), sx0 + i32(j));
            }
        }
        return;
    }
    var own: array<array<f32, OWN_X>, OWN_Y>;
    for (var i = 0u; i < OWN_Y; i++) {
        for (var j = 0u; j < OWN_X; j++) {
            own[i][j] = src_or_zero(base, sy0 + i32(i), sx0 + i32(j));
        }
    }
    for (var i = 0u; i < PY; i++) {
        for (var j = 0u; j < PX; j++) {
            if (i < OWN_Y && j < OWN_X) {
                (*pt)[i][j] = own[i][j];
            } else {
                let down = i >= OWN_Y;
                let right = j >= OWN_X;
                let v = own[select(i, i - OWN_Y, down)][select(j, j - OWN_X, right)];
                let from_lane = lane + select(0u, 4u, down) + select(0u, 1u, right);
                (*pt)[i][j] = subgroupShuffle(v, min(from_lane, 7u));
                if ((down && lane >= 4u) || (right && lane % 4u == 3u)) {
                    (*pt)[i][j] = src_or_zero(base, sy0 + i32(i), sx0 + i32(j));
                }
            }
        }
    }
}
