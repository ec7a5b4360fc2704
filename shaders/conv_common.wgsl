// ---- conv_common.wgsl: geometry of the implicit-GEMM convolutions (prepended to every conv_*) --
//
// Every convolution kernel computes a product C (M, N) = A (M, K) · B (K, N) in which A is
// gathered on the fly from an NCHW image `src` (B, C, SH, SW); no im2col matrix ever exists in
// memory. Three products cover the forward and backward passes of Conv2d and ConvTranspose2d
// (see src/ops/conv.rs for which layer pass uses which):
//
//   OP_FWD   "gather convolution": out (B, N, GH, GW), GH x GW the output grid.
//            rows  m = (b, oh, ow)              M = B·GH·GW
//            depth k = (c, kh, kw)              K = C·KH·KW
//            A(m, k) = src[b, c, oh·sh − ph + kh, ow·sw − pw + kw]   (0 outside the image)
//            B(k, n) = packed weights (K_pad, N4) vec4, packed by conv_aux.wgsl::pack
//   OP_DGRAD "transposed convolution": out (B, N, GH, GW) where the convolution maps GH x GW to
//            src's SH x SW. It is split by output phase (ih + ph) mod sh, (iw + pw) mod sw
//            (workgroup z): in one phase only the taps kh ≡ (ih + ph) mod sh contribute, so no
//            multiply-add is spent on the zeros a stride leaves.
//            rows  m = (b, jh, jw), ih = ih_first + jh·sh        M = B·nh·nw per phase
//            depth k = (c, th, tw), kh = rh + th·sh               K = C·taps_h·taps_w per phase
//            A(m, k) = src[b, c, qh − th, qw − tw], qh = (ih + ph − rh) / sh  (0 outside)
//            B(k, n) = packed weights of the phase (K_pad, N4) vec4
//   OP_WGRAD weight gradient: C (C·KH·KW, N) = Σ over pixels, g (B, N, GH, GW) dense.
//            rows  m = (c, kh, kw)              M = C·KH·KW
//            depth k = (b, pixel of g)          K = B·p_pad (pixels past GH·GW are zero)
//            A(m, k) = src[b, c, oh·sh − ph + kh, ow·sw − pw + kw]
//            B(k, n) = g[b, n, oh, ow]
//            Written as dW[n, m] (PyTorch's layout) or, split over k (workgroup z), as partial
//            sums (splits, M, N) that conv_aux.wgsl::wgrad_reduce adds in a fixed order.
//
// A(m, k) = src[row(m) + tap(k)]: the row and the depth each contribute a vec3<i32>
// (address, y, x) and the element is valid when the sum's (y, x) lies in [0, SH) x [0, SW).
// A row or depth index past the end gets INVALID, whose y is so negative that every sum with it
// fails the test, so one comparison masks padding, ragged tiles and the K tail alike.

const OP_FWD: u32 = 0u;
const OP_DGRAD: u32 = 1u;
const OP_WGRAD: u32 = 2u;

// Epilogue codes (mirror `ops::conv`): what happens to a product before it is stored.
const EPI_STORE: u32 = 0u;      // out = P
const EPI_ACCUMULATE: u32 = 1u; // out += P
const EPI_BIAS_ACT: u32 = 2u;   // out = act(P + bias[n])
const EPI_ACT_GRAD: u32 = 3u;   // out = P · act'(aux), act' taken from the activation's output

const INVALID: vec3<i32> = vec3<i32>(0, -1073741824, 0);

// Mirrors `ops::conv::ConvParams`.
struct ConvParams {
    batch: u32,    // B
    src_c: u32,    // C: channels of the gathered image
    src_h: u32,    // SH
    src_w: u32,    // SW
    n: u32,        // N: columns (output channels)
    n4: u32,       // ceil(N / 4): vec4 groups per row of packed weights
    grid_h: u32,   // GH: FWD/DGRAD output rows, WGRAD rows of g
    grid_w: u32,   // GW
    kh: u32,       // kernel height KH
    kw: u32,       // kernel width KW
    sh: u32,       // stride
    sw: u32,
    ph: u32,       // padding
    pw: u32,
    m: u32,        // FWD: B·GH·GW; WGRAD: C·KH·KW; DGRAD: unused (per phase)
    k: u32,        // FWD: C·KH·KW; WGRAD: B·p_pad; DGRAD: unused (per phase)
    k_pad: u32,    // rows of one phase's packed weights (multiple of 16)
    p_pad: u32,    // WGRAD: GH·GW rounded up to a multiple of 8
    k_split: u32,  // WGRAD: depth covered by one split (multiple of 8)
    splits: u32,   // WGRAD: number of splits (workgroups along z)
    epilogue: u32, // EPI_* (the kernels with an EPILOGUE define use the define)
    act: u32,      // ACT_* (common.wgsl; likewise ACT)
    slope: f32,    // LeakyReLU slope
    op: u32,       // OP_* (conv_aux.wgsl::pack)
}

@group(0) @binding(0) var<storage, read> src: array<f32>; // the gathered image (B, C, SH, SW)
@group(0) @binding(5) var<uniform> p: ConvParams;

// src[base + sy·SW + sx], or 0 outside the image (the direct kernels' patch loads).
fn src_or_zero(base: u32, sy: i32, sx: i32) -> f32 {
    let ok = u32(sy) < p.src_h && u32(sx) < p.src_w;
    return select(0.0, src[select(0u, base + u32(sy) * p.src_w + u32(sx), ok)], ok);
}

// One output phase of OP_DGRAD.
struct Phase {
    rows: u32,   // B·nh·nw
    depth: u32,  // C·taps_h·taps_w
    nh: u32,     // output rows of the phase
    nw: u32,     // output columns of the phase
    plane: u32,  // nh·nw
    taps_w: u32,
    taps: u32,   // taps_h·taps_w
    rh: u32,     // (ih + ph) mod sh of the phase
    rw: u32,
    ih0: u32,    // first output row of the phase
    iw0: u32,
    qh0: u32,    // qh of that row: (ih0 + ph − rh) / sh
    qw0: u32,
}

// Count of i in [first, len) with i ≡ first (mod s).
fn count_from(first: u32, len: u32, s: u32) -> u32 {
    if (first >= len) {
        return 0u;
    }
    return (len - first + s - 1u) / s;
}

fn phase_info(z: u32) -> Phase {
    var f: Phase;
    f.rh = z / p.sw;
    f.rw = z % p.sw;
    f.ih0 = (f.rh + p.sh - p.ph % p.sh) % p.sh;
    f.iw0 = (f.rw + p.sw - p.pw % p.sw) % p.sw;
    f.nh = count_from(f.ih0, p.grid_h, p.sh);
    f.nw = count_from(f.iw0, p.grid_w, p.sw);
    f.plane = f.nh * f.nw;
    f.rows = p.batch * f.plane;
    let taps_h = count_from(f.rh, p.kh, p.sh);
    f.taps_w = count_from(f.rw, p.kw, p.sw);
    f.taps = taps_h * f.taps_w;
    f.depth = p.src_c * f.taps;
    f.qh0 = (f.ih0 + p.ph - f.rh) / p.sh;
    f.qw0 = (f.iw0 + p.pw - f.rw) / p.sw;
    return f;
}

// The part of a product that workgroup z computes: one output phase of OP_DGRAD (its rows,
// depth and packed weights), one split of the depth of OP_WGRAD, all of OP_FWD.
struct Slice {
    f: Phase,     // OP_DGRAD: the phase
    m: u32,       // rows M
    k_begin: u32, // depth range [k_begin, k_end)
    k_end: u32,
    wbase: u32,   // OP_FWD / OP_DGRAD: first row of the slice's packed weights
}

fn slice_of(op: u32, z: u32) -> Slice {
    var s: Slice;
    s.m = p.m;
    s.k_end = p.k;
    if (op == OP_DGRAD) {
        s.f = phase_info(z);
        s.m = s.f.rows;
        s.k_end = s.f.depth;
        s.wbase = z * p.k_pad;
    } else if (op == OP_WGRAD) {
        s.k_begin = z * p.k_split;
        s.k_end = min(p.k, s.k_begin + p.k_split);
    }
    return s;
}

// The row part of A(m, k) for OP_FWD (m = output pixel) and OP_WGRAD (k = pixel of g): the
// image origin of pixel `pix` of the GH x GW grid in image b.
fn pixel_part(b: u32, pix: u32) -> vec3<i32> {
    let oh = pix / p.grid_w;
    let ow = pix % p.grid_w;
    let y = i32(oh * p.sh) - i32(p.ph);
    let x = i32(ow * p.sw) - i32(p.pw);
    let base = i32(b * p.src_c * p.src_h * p.src_w) + y * i32(p.src_w) + x;
    return vec3<i32>(base, y, x);
}

// The tap part for OP_FWD (k) and OP_WGRAD (m): tap t = (c, kh, kw).
fn tap_part(t: u32) -> vec3<i32> {
    let kk = p.kh * p.kw;
    let c = t / kk;
    let r = t % kk;
    let kh = r / p.kw;
    let kw = r % p.kw;
    return vec3<i32>(i32(c * p.src_h * p.src_w + kh * p.src_w + kw), i32(kh), i32(kw));
}

// OP_DGRAD depth k = (c, th, tw) of phase f: offset (c, −th, −tw).
fn dgrad_tap(f: Phase, k: u32) -> vec3<i32> {
    let c = k / f.taps;
    let r = k % f.taps;
    let th = i32(r / f.taps_w);
    let tw = i32(r % f.taps_w);
    let off = i32(c * p.src_h * p.src_w) - th * i32(p.src_w) - tw;
    return vec3<i32>(off, -th, -tw);
}

// The depth part of A(·, k) of product `op` (phase f for OP_DGRAD): INVALID at or past k_end,
// and for OP_WGRAD on the padding pixels past GH·GW of each image.
fn depth_part(op: u32, f: Phase, k: u32, k_end: u32) -> vec3<i32> {
    if (k >= k_end) {
        return INVALID;
    }
    if (op == OP_FWD) {
        return tap_part(k);
    } else if (op == OP_DGRAD) {
        return dgrad_tap(f, k);
    }
    let pix = k % p.p_pad;
    if (pix >= p.grid_h * p.grid_w) {
        return INVALID;
    }
    return pixel_part(k / p.p_pad, pix);
}

// A row index m decoded as (a, y, x) over an (·, ny, nx) grid — FWD: (b, oh, ow) over the
// output grid; DGRAD: (b, jh, jw) over the phase's grid; WGRAD: (c, kh, kw) over the taps —
// and advanced one row at a time, so a tile's rows cost one division, not one per row.
struct Cursor {
    a: u32,
    y: u32,
    x: u32,
    ny: u32,
    nx: u32,
}

fn cursor_at(m: u32, ny: u32, nx: u32) -> Cursor {
    let plane = ny * nx;
    let r = m % plane;
    return Cursor(m / plane, r / nx, r % nx, ny, nx);
}

fn cursor_next(c: Cursor) -> Cursor {
    var n = c;
    n.x += 1u;
    if (n.x == n.nx) {
        n.x = 0u;
        n.y += 1u;
    }
    if (n.y == n.ny) {
        n.y = 0u;
        n.a += 1u;
    }
    return n;
}

// The first row of a tile of product `op` (phase f for OP_DGRAD).
fn row_cursor(op: u32, f: Phase, m: u32) -> Cursor {
    if (op == OP_FWD) {
        return cursor_at(m, p.grid_h, p.grid_w);
    } else if (op == OP_DGRAD) {
        return cursor_at(m, f.nh, f.nw);
    }
    return cursor_at(m, p.kh, p.kw);
}

// The row part of A at cursor c.
fn row_part(op: u32, f: Phase, c: Cursor) -> vec3<i32> {
    if (op == OP_FWD) {
        let y = i32(c.y * p.sh) - i32(p.ph);
        let x = i32(c.x * p.sw) - i32(p.pw);
        let base = i32(c.a * p.src_c * p.src_h * p.src_w) + y * i32(p.src_w) + x;
        return vec3<i32>(base, y, x);
    } else if (op == OP_DGRAD) {
        let qh = f.qh0 + c.y;
        let qw = f.qw0 + c.x;
        let base = c.a * p.src_c * p.src_h * p.src_w + qh * p.src_w + qw;
        return vec3<i32>(i32(base), i32(qh), i32(qw));
    }
    let off = c.a * p.src_h * p.src_w + c.y * p.src_w + c.x;
    return vec3<i32>(i32(off), i32(c.y), i32(c.x));
}

// OP_FWD / OP_DGRAD: index of channel 0 of the output pixel at cursor c (channel n is at
// + n·GH·GW).
fn out_base(op: u32, f: Phase, c: Cursor) -> u32 {
    let plane = p.grid_h * p.grid_w;
    if (op == OP_DGRAD) {
        let ih = f.ih0 + c.y * p.sh;
        let iw = f.iw0 + c.x * p.sw;
        return c.a * p.n * plane + ih * p.grid_w + iw;
    }
    return c.a * p.n * plane + c.y * p.grid_w + c.x;
}

// The element of src at row part + tap part, 0 outside the image.
fn gather(a: vec3<i32>) -> f32 {
    let ok = u32(a.y) < p.src_h && u32(a.z) < p.src_w;
    let v = src[select(0u, u32(a.x), ok)];
    return select(0.0, v, ok);
}

// The epilogue `epi` (EPI_*) with activation `act` (ACT_*) on four outputs (aux_v: the
// activation output at the same places, for EPI_ACT_GRAD; bias_v: their biases). The kernels
// pass their EPILOGUE and ACT defines, so only the code of one activation is compiled: with the
// choice made at run time, lavapipe evaluated every activation for every output.
fn epilogue4(epi: u32, act: u32, v: vec4<f32>, bias_v: vec4<f32>, aux_v: vec4<f32>) -> vec4<f32> {
    if (epi == EPI_BIAS_ACT) {
        return activate(act, p.slope, v + bias_v);
    } else if (epi == EPI_ACT_GRAD) {
        return v * activate_grad_from_output(act, p.slope, aux_v);
    }
    return v;
}
