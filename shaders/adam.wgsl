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

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>; // (n,) as vec4
@group(0) @binding(1) var<storage, read> grads: array<vec4<f32>>;        // (n,)
@group(0) @binding(2) var<storage, read_write> m1: array<vec4<f32>>;     // (n,)
@group(0) @binding(3) var<storage, read_write> m2: array<vec4<f32>>;     // (n,)
@group(0) @binding(4) var<storage, read> state: array<u32>;              // (4,)
@group(0) @binding(5) var<storage, read> norm_sq: array<f32>;            // (1,)
@group(0) @binding(6) var<uniform> ap: AdamParams;

// Four parameters per invocation (vec4 loads: on CPU adapters each lane of a load costs a
// scalar loop iteration, so vec4 quarters them). The last group may hold fewer than four:
// its extra components are read from the 16-byte padding of the binding and written back
// unchanged.
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
    let groups = (ap.n + 3u) / 4u;
    for (var i = gid.x; i < groups; i += nwg.x * 64u) {
        let live = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(ap.n);
        let g = grads[i] * g_scale;
        let m_old = m1[i];
        let v_old = m2[i];
        let p_old = params[i];
        let m = ap.beta1 * m_old + (1.0 - ap.beta1) * g;
        let v = ap.beta2 * v_old + (1.0 - ap.beta2) * g * g;
        var p = p_old - ap.lr * ap.weight_decay * p_old;
        p -= ap.lr * (m / bc1) / (sqrt(v / bc2) + ap.eps);
        m1[i] = select(m_old, m, live);
        m2[i] = select(v_old, v, live);
        params[i] = select(p_old, p, live);
    }
}
