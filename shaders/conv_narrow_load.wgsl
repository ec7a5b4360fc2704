// ---- conv_narrow_load.wgsl: weights and input patches for conv_narrow.wgsl -------------------
//
// Prepended to conv_narrow.wgsl (and conv_single.wgsl, where c is a group of output channels)
// for adapters without 8-lane subgroups: every invocation loads the NN·KH·KW weights of channel
// c and its input patch itself (w is declared in the kernel it is prepended to).

fn narrow_weights(c: u32, lane: u32) -> array<array<array<f32, KW>, KH>, NN> {
    var wr: array<array<array<f32, KW>, KH>, NN>;
    let wbase = c * NN * KH * KW;
    for (var n = 0u; n < NN; n++) {
        for (var kh = 0u; kh < KH; kh++) {
            for (var kw = 0u; kw < KW; kw++) {
                wr[n][kh][kw] = w[wbase + (n * KH + kh) * KW + kw];
            }
        }
    }
    return wr;
}


// Fills the PY x PX patch of src (image base `base`) at (sy0, sx0), 0 outside the image.
// Without subgroups the lanes never share (SHARE is false): each loads its whole patch.
fn load_patch(
    pt: ptr<function, array<array<f32, PX>, PY>>,
    base: u32,
    sy0: i32,
    sx0: i32,
    lane: u32,
) {
    for (var i = 0u; i < PY; i++) {
        for (var j = 0u; j < PX; j++) {
            (*pt)[i][j] = src_or_zero(base, sy0 + i32(i), sx0 + i32(j));
        }
    }
}
