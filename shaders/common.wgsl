// ---- common.wgsl: helpers prepended to every kernel file ----------------------------------

// Activation codes (mirror `ops::Activation` in src/ops/mod.rs).
const ACT_IDENTITY: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_LEAKY_RELU: u32 = 2u;
const ACT_TANH: u32 = 3u;
const ACT_SIGMOID: u32 = 4u;

fn activate(code: u32, slope: f32, x: vec4<f32>) -> vec4<f32> {
    switch code {
        case 1u: { return max(x, vec4<f32>(0.0)); }
        case 2u: { return select(x * slope, x, x > vec4<f32>(0.0)); }
        case 3u: { return tanh(x); }
        case 4u: { return 1.0 / (1.0 + exp(-x)); }
        default: { return x; }
    }
}

// Derivative of the activation expressed through its output y = act(x). For LeakyReLU this
// needs y > 0 <=> x > 0, i.e. slope > 0: the host refuses slopes outside (0, 1]
// (`Activation::validate`).
fn activate_grad_from_output(code: u32, slope: f32, y: vec4<f32>) -> vec4<f32> {
    switch code {
        case 1u: { return select(vec4<f32>(0.0), vec4<f32>(1.0), y > vec4<f32>(0.0)); }
        case 2u: { return select(vec4<f32>(slope), vec4<f32>(1.0), y > vec4<f32>(0.0)); }
        case 3u: { return 1.0 - y * y; }
        case 4u: { return y * (1.0 - y); }
        default: { return vec4<f32>(1.0); }
    }
}

// Philox4x32-10 (Salmon et al., SC'11): counter-based, so draw i of stream (seed, step) is a
// pure function of (seed, step, i). Mirrored bit for bit by `rng::philox4x32` in src/rng.rs.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    // 32x32 -> 64-bit product from 16-bit halves (WGSL has no 64-bit integers).
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    let cross = (lo_lo >> 16u) + (hi_lo & 0xffffu) + (lo_hi & 0xffffu);
    let hi = hi_hi + (hi_lo >> 16u) + (lo_hi >> 16u) + (cross >> 16u);
    let lo = (cross << 16u) | (lo_lo & 0xffffu);
    return vec2<u32>(hi, lo);
}

fn philox4x32(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Uniform in (0, 1]: never 0, so log() is finite.
fn u01(x: u32) -> f32 {
    return (f32(x >> 8u) + 1.0) * (1.0 / 16777216.0);
}

// Two independent N(0,1) draws from two uniforms in (0, 1] (Box-Muller). The angle
// 2 pi (u2 - 1/2) is uniform on (-pi, pi], the range on which WGSL specifies the accuracy of
// sin and cos (u2 - 1/2 is exact in f32: u2 is a multiple of 2^-24). Mirrored by
// `rng::box_muller` in src/rng.rs; the integer Philox words are bit-identical across
// adapters, eps itself (after log, sqrt, sin, cos) agrees only to float accuracy.
fn box_muller(u1: f32, u2: f32) -> vec2<f32> {
    let r = sqrt(-2.0 * log(u1));
    let t = 6.283185307179586 * (u2 - 0.5);
    return vec2<f32>(r * cos(t), r * sin(t));
}

// Numerically stable log(1 + exp(x)).
fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

// Sum of v over the 64 invocations of a workgroup (workgroup size 64), in a fixed order, so
// the result is the same bit for bit on every run. Every invocation gets the total.
var<workgroup> partial: array<f32, 64>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
