// ---- adam.wgsl: Adam / AdamW with bias correction over every parameter in one dispatch ----
//
// All parameters live in one buffer (and their gradients and moments in three more), so one
// dispatch updates the whole model. The step number comes from the GPU step state: this is
// step t = state[0] + 1 (state[0] counts finished steps). With clipping on, the gradient is
// scaled by min(1, clip / ||g||) where ||g||^2 was reduced into norm_sq[0] earlier in the step.

struct AdamParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32, // decoupled (AdamW); 0 for Adam
    clip: f32,         // global-norm clip threshold; 0 = off
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> params: array<f32>; // (n,)
@group(0) @binding(1) var<storage, read> grads: array<f32>;        // (n,)
@group(0) @binding(2) var<storage, read_write> m1: array<f32>;     // (n,)
@group(0) @binding(3) var<storage, read_write> m2: array<f32>;     // (n,)
@group(0) @binding(4) var<storage, read> state: array<u32>;        // (4,)
@group(0) @binding(5) var<storage, read> norm_sq: array<f32>;      // (1,)
@group(0) @binding(6) var<uniform> ap: AdamParams;

@compute @workgroup_size(64)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = f32(state[0] + 1u);
    let bc1 = 1.0 - pow(ap.beta1, t);
    let bc2 = 1.0 - pow(ap.beta2, t);
    var g_scale = 1.0;
    if (ap.clip > 0.0) {
        let norm = sqrt(norm_sq[0]);
        if (norm > ap.clip) {
            g_scale = ap.clip / norm;
        }
    }
    for (var i = gid.x; i < ap.n; i += nwg.x * 64u) {
        let g = grads[i] * g_scale;
        let m = ap.beta1 * m1[i] + (1.0 - ap.beta1) * g;
        let v = ap.beta2 * m2[i] + (1.0 - ap.beta2) * g * g;
        m1[i] = m;
        m2[i] = v;
        var p = params[i];
        p -= ap.lr * ap.weight_decay * p;
        p -= ap.lr * (m / bc1) / (sqrt(v / bc2) + ap.eps);
        params[i] = p;
    }
}
