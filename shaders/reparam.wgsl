// ---- reparam.wgsl: z = mu + sigma * eps with eps ~ N(0, I) drawn in-shader, and its backward ----
//
// enc (B, 2D) holds [mu | log sigma^2] per row, as the encoder's last layer writes it.
// Samples are laid out (K, B, D): sample s of row b is row s * B + b of z.
// eps element i comes from Philox4x32-10 with counter (i / 4, step, stream, 0) and key
// (seed_lo, seed_hi): word i % 4 of that block, paired by Box-Muller with its neighbour.
// So the same (seed, step, stream) gives the same Philox words on every adapter, bit for bit,
// and any other (seed, step) gives another stream. eps itself goes through f32 log, sqrt, sin
// and cos, which WGSL specifies only to within an error bound: across adapters it agrees to
// float accuracy, not bit for bit.

struct ReparamParams {
    batch: u32,     // B
    dim: u32,       // D
    samples: u32,   // K
    seed_lo: u32,
    seed_hi: u32,
    step: u32,      // added to state[0] when use_state == 1
    stream: u32,    // separates the draws of different uses of one (seed, step)
    use_state: u32,
    accumulate: u32, // backward: 1 adds into genc, 0 overwrites
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> enc: array<f32>;          // (B, 2D)
@group(0) @binding(1) var<storage, read_write> z: array<f32>;      // (K, B, D)
@group(0) @binding(2) var<storage, read_write> eps: array<f32>;    // (K, B, D)
@group(0) @binding(3) var<storage, read> state: array<u32>;        // (4,)
@group(0) @binding(4) var<uniform> rp: ReparamParams;

@compute @workgroup_size(64)
fn reparam_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let bd = rp.batch * rp.dim;
    let total = rp.samples * bd;
    var step = rp.step;
    if (rp.use_state == 1u) {
        step += state[0];
    }
    let blocks = (total + 3u) / 4u;
    for (var t = gid.x; t < blocks; t += nwg.x * 64u) {
        let r = philox4x32(vec4<u32>(t, step, rp.stream, 0u), vec2<u32>(rp.seed_lo, rp.seed_hi));
        let n01 = box_muller(u01(r.x), u01(r.y));
        let n23 = box_muller(u01(r.z), u01(r.w));
        let n = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
        for (var e = 0u; e < 4u; e++) {
            let i = 4u * t + e;
            if (i < total) {
                let rem = i % bd;
                let b = rem / rp.dim;
                let d = rem % rp.dim;
                let mu = enc[b * 2u * rp.dim + d];
                let lv = enc[b * 2u * rp.dim + rp.dim + d];
                eps[i] = n[e];
                z[i] = mu + exp(0.5 * lv) * n[e];
            }
        }
    }
}

@group(0) @binding(5) var<storage, read> dz: array<f32>;           // (K, B, D)
@group(0) @binding(6) var<storage, read> eps_in: array<f32>;       // (K, B, D)
@group(0) @binding(7) var<storage, read_write> genc: array<f32>;   // (B, 2D)

// d mu = sum_s dz;  d logvar = sum_s dz * eps * sigma / 2.
@compute @workgroup_size(64)
fn reparam_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let bd = rp.batch * rp.dim;
    for (var i = gid.x; i < bd; i += nwg.x * 64u) {
        let b = i / rp.dim;
        let d = i % rp.dim;
        let lv = enc[b * 2u * rp.dim + rp.dim + d];
        let half_sigma = 0.5 * exp(0.5 * lv);
        var gmu = 0.0;
        var glv = 0.0;
        for (var s = 0u; s < rp.samples; s++) {
            let j = s * bd + i;
            gmu += dz[j];
            glv += dz[j] * eps_in[j] * half_sigma;
        }
        let im = b * 2u * rp.dim + d;
        let il = im + rp.dim;
        if (rp.accumulate == 1u) {
            genc[im] += gmu;
            genc[il] += glv;
        } else {
            genc[im] = gmu;
            genc[il] = glv;
        }
    }
}
