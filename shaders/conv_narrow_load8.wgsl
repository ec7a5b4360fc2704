// ---- conv_narrow_load8.wgsl: the weights of one input channel, shared by an 8-lane subgroup --
//
// Prepended to conv_narrow.wgsl (and conv_single.wgsl, where c is a group of output channels)
// on adapters with 8-lane subgroups. The NN·KH·KW weights of
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
