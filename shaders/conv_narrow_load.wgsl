// ---- conv_narrow_load.wgsl: the weights of one input channel for conv_narrow.wgsl ------------
//
// Prepended to conv_narrow.wgsl for adapters without 8-lane subgroups: every invocation loads
// the NN·KH·KW weights of channel c itself (w (C, N, KH, KW) is declared in conv_narrow.wgsl).

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
