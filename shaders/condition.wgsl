// ---- condition.wgsl: the class label of a conditional VAE --------------------------------
//
// A conditional VAE feeds a one-hot class label y to the encoder and the decoder by
// concatenation: the `Concat` module's output is a (rows, F + C) buffer whose first F columns
// are its input x (copied by `concat_forward`) and whose next C columns hold the one-hot label
// (written by `onehot` from a (batch,) u32 label tensor; row r takes label[r % batch], so the
// K·B rows of a decoder buffer, sample s of input b in row s·B + b, take input b's label).
// `onehot` writes every column from F to the row's end: the label's C, then zeros (the width
// is rounded up to a multiple of 4 for the GEMM kernels). A label ≥ C gives an all-zero row
// (the host checks labels before they reach the GPU).
// `concat_backward` carries the gradient of the first F columns back to x (the label columns
// have no gradient), stored or accumulated, with the producer's activation derivative fused.
// `gather_labels` is the training gather's companion: the labels of the batch's images, at the
// same positions of the epoch order as the image gather. Mirrored by `cpu::condition`.

struct OneHotParams {
    rows: u32,    // rows of y
    batch: u32,   // labels; row r takes label[r % batch]
    width: u32,   // row stride of y, F + C
    offset: u32,  // first label column, F
    classes: u32, // C
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct ConcatParams {
    rows: u32,
    features: u32,     // F: columns of x
    width: u32,        // row stride of y / du, F + C
    accumulate: u32,   // backward: 1 adds to dx
    has_producer: u32, // backward: 1 multiplies by act'(producer output)
    act: u32,          // backward: the producer's activation code
    slope: f32,        // backward: its LeakyReLU slope
    _pad0: u32,
}

struct LabelGatherParams {
    rows: u32,      // rows of the batch
    base: u32,      // first position in `perm` (added to the state-derived offset)
    n_items: u32,   // positions past this get label 0 (their rows have weight 0)
    use_state: u32, // 1: position = base + (state[0] - state[1]) * rows + row
    n_labels: u32,  // N; indices in perm are clamped below it
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> oh_labels: array<u32>;     // (batch,)
@group(0) @binding(1) var<storage, read_write> oh_y: array<f32>;    // (rows, width)
@group(0) @binding(2) var<uniform> ohp: OneHotParams;

// One invocation per element of columns offset.. of a row.
@compute @workgroup_size(64)
fn onehot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let slots = ohp.width - ohp.offset;
    let total = ohp.rows * slots;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        let r = i / slots;
        let c = i % slots;
        let label = oh_labels[r % ohp.batch];
        oh_y[r * ohp.width + ohp.offset + c] = select(0.0, 1.0, c < ohp.classes && label == c);
    }
}

@group(0) @binding(3) var<storage, read> cf_x: array<f32>;          // (rows, F)
@group(0) @binding(4) var<storage, read_write> cf_y: array<f32>;    // (rows, width)
@group(0) @binding(5) var<uniform> cp: ConcatParams;

// y[r, j] = x[r, j] for j < F; the label columns are left alone.
@compute @workgroup_size(64)
fn concat_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = cp.rows * cp.features;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        let r = i / cp.features;
        let j = i % cp.features;
        cf_y[r * cp.width + j] = cf_x[i];
    }
}

@group(0) @binding(6) var<storage, read> cb_du: array<f32>;         // (rows, width)
@group(0) @binding(7) var<storage, read_write> cb_dx: array<f32>;   // (rows, F)
@group(0) @binding(8) var<uniform> cbp: ConcatParams;
@group(0) @binding(9) var<storage, read> cb_prod: array<f32>;       // (rows, F) producer output

// dx[r, j] (=|+=) du[r, j] · act'(producer[r, j]) for j < F.
@compute @workgroup_size(64)
fn concat_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = cbp.rows * cbp.features;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        let r = i / cbp.features;
        let j = i % cbp.features;
        var g = cb_du[r * cbp.width + j];
        if (cbp.has_producer == 1u) {
            g *= activate_grad_from_output(cbp.act, cbp.slope, vec4<f32>(cb_prod[i])).x;
        }
        if (cbp.accumulate == 1u) {
            cb_dx[i] = cb_dx[i] + g;
        } else {
            cb_dx[i] = g;
        }
    }
}

@group(0) @binding(10) var<storage, read> lg_labels: array<u32>;     // (N,) the data set's labels
@group(0) @binding(11) var<storage, read> lg_perm: array<u32>;       // (n_items,)
@group(0) @binding(12) var<storage, read_write> lg_out: array<u32>;  // (rows,)
@group(0) @binding(13) var<storage, read> lg_state: array<u32>;      // (4,)
@group(0) @binding(14) var<uniform> lgp: LabelGatherParams;

// out[r] = labels[perm[pos + r]], positions as in data.wgsl's `gather`.
@compute @workgroup_size(64)
fn gather_labels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var pos0 = lgp.base;
    if (lgp.use_state == 1u) {
        pos0 += (lg_state[0] - lg_state[1]) * lgp.rows;
    }
    for (var r = gid.x; r < lgp.rows; r += nwg.x * 64u) {
        let pos = pos0 + r;
        var label = 0u;
        if (pos < lgp.n_items) {
            label = lg_labels[min(lg_perm[pos], lgp.n_labels - 1u)];
        }
        lg_out[r] = label;
    }
}
