// ---- elementwise.wgsl: small maps over a flat array ----

struct MapParams {
    n: u32,
    op: u32,    // 0 sigmoid, 1 fill with `value`, 2 scale by `value`
    value: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;        // (n,)
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;  // (n,)
@group(0) @binding(2) var<uniform> mp: MapParams;

@compute @workgroup_size(64)
fn map(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < mp.n; i += nwg.x * 64u) {
        switch mp.op {
            case 0u: {
                let x = src[i];
                dst[i] = select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0);
            }
            case 1u: { dst[i] = mp.value; }
            default: { dst[i] = mp.value * src[i]; }
        }
    }
}
