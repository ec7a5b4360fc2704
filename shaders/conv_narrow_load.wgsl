// ---- conv_narrow_load.wgsl: the weights of one input channel for conv_narrow.wgsl ------------
//
// Prepended to conv_narrow.wgsl (and conv_single.wgsl, where c is a group of output channels)
// for adapters without 8-lane subgroups: every invocation loads the NN·KH·KW weights of channel
// c itself (w is declared in the kernel it is prepended to).

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
