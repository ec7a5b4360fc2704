// ---- data.wgsl: batch gather from the u8 data set on the GPU, and the step counter ----------
//
// The training set lives on the GPU as bytes, packed four to a u32 word: image i, value p is
// byte i * P + p, with P = C * H * W values per image laid out as channel planes (CHW; C = 1
// for greyscale). The kernel treats every value alike — copy, scale or binarise one byte — so
// it needs no channel count, and P need not be a multiple of 4 (images straddle words). `perm` is the epoch's order of the images (uploaded once per epoch). The
// step state holds [global step, step at which the current epoch began, 0, 0].
//
// Row weights: a batch that runs past the end of `perm` (the last batch of an epoch when the
// batch size does not divide the data set) has valid = n_items - position < rows real rows.
// With `write_weights` the kernel writes w[r] = 1 / valid for r < valid and 0 for the padded
// rows; the likelihood, KL and loss-bookkeeping kernels scale by w, so the step's loss is the
// mean over its valid rows and padded rows contribute nothing.

// Binarisation (`binarize`): every time an image is gathered, pixel p of batch row r becomes
// 1 with probability byte / 255, else 0: the top 24 bits of a Philox4x32-10 draw are compared
// with the integer threshold round(byte * 2^24 / 255), so byte 0 always gives 0 and 255 always
// gives 1. The draw is word p % 4 of Philox(counter (p / 4, step, BINARIZE_STREAM, r), key
// seed): a pure function of (seed, step, row, pixel), independent of the reparameterisation's
// streams (counter (i / 4, step, 0..2, 0)). Mirrored by `cpu::data::gather_weighted`.

const BINARIZE_STREAM: u32 = 0x62696e00u; // "bin\0"; mirrors ops::data::BINARIZE_STREAM

struct GatherParams {
    rows: u32,          // rows of the batch
    pixels: u32,        // P
    base: u32,          // first position in `perm` (added to the state-derived offset)
    n_items: u32,       // positions past this are zero rows
    use_state: u32,     // 1: position = base + (state[0] - state[1]) * rows + row
    n_images: u32,      // N; indices in perm are clamped below it
    write_weights: u32, // 1: write the row weights w
    binarize: u32,      // 1: x ~ Bernoulli(byte / 255), keyed by (seed, state[0], row, pixel)
    seed_lo: u32,
    seed_hi: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> images: array<u32>;   // (N, P) bytes, packed
@group(0) @binding(1) var<storage, read> perm: array<u32>;     // (n_items,)
@group(0) @binding(2) var<storage, read_write> x: array<f32>;  // (rows, P) in [0, 1]
@group(0) @binding(3) var<storage, read> state: array<u32>;    // (4,)
@group(0) @binding(4) var<uniform> gp: GatherParams;
@group(0) @binding(6) var<storage, read_write> w: array<f32>;  // (rows,) row weights

// One invocation per (row, group of 4 pixels): one Philox draw serves the 4 pixels.
@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var pos0 = gp.base;
    var step = 0u;
    if (gp.use_state == 1u) {
        pos0 += (state[0] - state[1]) * gp.rows;
        step = state[0];
    }
    if (gp.write_weights == 1u) {
        var valid = 0u;
        if (pos0 < gp.n_items) {
            valid = min(gp.n_items - pos0, gp.rows);
        }
        let share = 1.0 / f32(max(valid, 1u));
        for (var r = gid.x; r < gp.rows; r += nwg.x * 64u) {
            w[r] = select(0.0, share, r < valid);
        }
    }
    let quads = (gp.pixels + 3u) / 4u;
    let total = gp.rows * quads;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        let r = i / quads;
        let q = i % quads;
        let pos = pos0 + r;
        var item = 0u;
        if (pos < gp.n_items) {
            item = min(perm[pos], gp.n_images - 1u);
        }
        var bits = vec4<u32>(0u);
        if (gp.binarize == 1u) {
            bits = philox4x32(vec4<u32>(q, step, BINARIZE_STREAM, r), vec2<u32>(gp.seed_lo, gp.seed_hi));
        }
        for (var k = 0u; k < 4u; k++) {
            let p = q * 4u + k;
            if (p >= gp.pixels) {
                break;
            }
            var v = 0.0;
            if (pos < gp.n_items) {
                let byte = item * gp.pixels + p;
                let b = (images[byte / 4u] >> ((byte % 4u) * 8u)) & 0xffu;
                if (gp.binarize == 1u) {
                    let threshold = (b * 16777216u + 127u) / 255u;
                    v = select(0.0, 1.0, (bits[k] >> 8u) < threshold);
                } else {
                    v = f32(b) * (1.0 / 255.0);
                }
            }
            x[r * gp.pixels + p] = v;
        }
    }
}

@group(0) @binding(5) var<storage, read_write> state_rw: array<u32>; // (4,)

// Marks the end of a training step: state[0] += 1.
@compute @workgroup_size(1)
fn advance() {
    state_rw[0] = state_rw[0] + 1u;
}
