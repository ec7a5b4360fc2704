// ---- reduce.wgsl: deterministic reductions (fixed assignment of elements to invocations and a
// fixed-order tree; no float atomics), so results repeat bit for bit on one adapter ----

struct ReduceParams {
    rows: u32,
    cols: u32,
    scale: f32,      // result = scale * sum (1 / n for a mean)
    accumulate: u32, // 1: out += result, 0: out = result
    square: u32,     // 1: sum of squares
    out_index: u32,  // element of `out` the scalar reductions write
    groups: u32,     // number of partial sums (sum_partial / sum_final)
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> rp: ReduceParams;


fn store(i: u32, v: f32) {
    if (rp.accumulate == 1u) {
        y[i] += v;
    } else {
        y[i] = v;
    }
}

// x (rows, cols) -> y (cols,): sum over rows (bias gradients).
@compute @workgroup_size(64)
fn col_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var c = gid.x; c < rp.cols; c += nwg.x * 64u) {
        var s = 0.0;
        for (var r = 0u; r < rp.rows; r++) {
            s += x[r * rp.cols + c];
        }
        store(c, rp.scale * s);
    }
}

// x (rows, cols) -> y (rows,): sum over columns, one workgroup per row.
@compute @workgroup_size(64)
fn row_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var r = wg.x; r < rp.rows; r += nwg.x) {
        var s = 0.0;
        for (var c = lid; c < rp.cols; c += 64u) {
            s += x[r * rp.cols + c];
        }
        let total = tree_sum(lid, s);
        if (lid == 0u) {
            store(r, rp.scale * total);
        }
    }
}

// Stage 1 of a scalar reduction of x (n = rows * cols elements): workgroup g sums the
// contiguous chunk g of ceil(n / groups) elements (squared when `square`) into y[g].
@compute @workgroup_size(64)
fn sum_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = rp.rows * rp.cols;
    let chunk = (n + rp.groups - 1u) / rp.groups;
    let start = wg.x * chunk;
    let end = min(start + chunk, n);
    var s = 0.0;
    for (var i = start + lid; i < end; i += 64u) {
        let v = x[i];
        s += select(v, v * v, rp.square == 1u);
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) {
        y[wg.x] = total;
    }
}

// Stage 2: y[out_index] (+)= scale * sum of the `groups` partial sums in x.
@compute @workgroup_size(64)
fn sum_final(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < rp.groups; i += 64u) {
        s += x[i];
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) {
        store(rp.out_index, rp.scale * total);
    }
}

// x (K, B) -> y (B,): log(mean_k exp(x[k, b])) = logsumexp_k x[k, b] - log K (the IWAE bound
// from K log-weights). rows = K, cols = B.
@compute @workgroup_size(64)
fn logmeanexp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var b = gid.x; b < rp.cols; b += nwg.x * 64u) {
        var m = x[b];
        for (var k = 1u; k < rp.rows; k++) {
            m = max(m, x[k * rp.cols + b]);
        }
        var s = 0.0;
        for (var k = 0u; k < rp.rows; k++) {
            s += exp(x[k * rp.cols + b] - m);
        }
        store(b, rp.scale * (m + log(s) - log(f32(rp.rows))));
    }
}

// ---- loss bookkeeping of the training step ----
// metrics: [recon_sum, recon_comp, kl_sum, kl_comp, loss_sum, loss_comp, count, nonfinite]
// (Kahan-compensated running sums over an epoch). With `use_weights` only the rows of weight
// > 0 count (the gather's row weights: the padded rows of an epoch's last, partial batch are
// left out of the sums, the count and the non-finite check).

struct LossParams {
    rows: u32,
    beta: f32,
    use_weights: u32,
    // metric_accumulate: the term's slot
    slot: u32,
}

@group(0) @binding(3) var<storage, read> recon: array<f32>;         // (B,)
@group(0) @binding(4) var<storage, read> kl_b: array<f32>;          // (B,)
@group(0) @binding(5) var<storage, read_write> metrics: array<f32>; // (8,)
@group(0) @binding(6) var<uniform> lsp: LossParams;
@group(0) @binding(7) var<storage, read> row_w: array<f32>;         // (B,) row weights

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn kahan_add(i: u32, v: f32) {
    let y = v - metrics[i + 1u];
    let t = metrics[i] + y;
    metrics[i + 1u] = (t - metrics[i]) - y;
    metrics[i] = t;
}

@compute @workgroup_size(64)
fn loss_accumulate(@builtin(local_invocation_index) lid: u32) {
    var sr = 0.0;
    var sk = 0.0;
    var bad = 0.0;
    var n = 0.0;
    for (var i = lid; i < lsp.rows; i += 64u) {
        if (lsp.use_weights == 1u && !(row_w[i] > 0.0)) {
            continue;
        }
        n += 1.0;
        let r = recon[i];
        let k = kl_b[i];
        sr += r;
        sk += k;
        if (!is_finite(r) || !is_finite(k)) {
            bad = 1.0;
        }
    }
    let tr = tree_sum(lid, sr);
    let tk = tree_sum(lid, sk);
    let tb = tree_sum(lid, bad);
    let tn = tree_sum(lid, n);
    if (lid == 0u) {
        kahan_add(0u, tr);
        kahan_add(2u, tk);
        kahan_add(4u, tr + lsp.beta * tk);
        metrics[6] += tn;
        if (tb > 0.0 || !is_finite(tr) || !is_finite(tk)) {
            metrics[7] = 1.0;
        }
    }
}

// One named term of an objective: metrics = [count, nonfinite, (sum, comp) per term]. Adds the
// term's per-row values (`recon` here) into the Kahan sum of term `slot`; term 0 also counts
// the rows. Rows of weight 0 are left out with `use_weights`.
@compute @workgroup_size(64)
fn metric_accumulate(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    var bad = 0.0;
    var n = 0.0;
    for (var i = lid; i < lsp.rows; i += 64u) {
        if (lsp.use_weights == 1u && !(row_w[i] > 0.0)) {
            continue;
        }
        n += 1.0;
        let v = recon[i];
        s += v;
        if (!is_finite(v)) {
            bad = 1.0;
        }
    }
    let ts = tree_sum(lid, s);
    let tb = tree_sum(lid, bad);
    let tn = tree_sum(lid, n);
    if (lid == 0u) {
        kahan_add(2u + 2u * lsp.slot, ts);
        if (lsp.slot == 0u) {
            metrics[0] += tn;
        }
        if (tb > 0.0 || !is_finite(ts)) {
            metrics[1] = 1.0;
        }
    }
}
