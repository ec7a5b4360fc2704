// ---- iwae_train.wgsl: the importance-weighted bound (IWAE, Burda et al. 2016) as a training
// objective ----
//
// Per input b with K draws z_sb (row r = s·B + b), log w_sb = log p(x_b|z_sb) + log p(z_sb)
// − log q(z_sb|x_b) and the loss L = Σ_b w_b [log K − logsumexp_s log w_sb] (w = the row
// weights). With the normalised importance weights ω_sb = softmax_s(log w_sb):
//   ∂L/∂nll_sb = w_b ω_sb,  ∂L/∂log p(z_sb) = −w_b ω_sb,  ∂L/∂log q(z_sb|x_b) = w_b ω_sb.
//
// `iwae_softmax`  per input: ω (K·B), wω = w_b ω_sb (K·B), the loss log K − logsumexp (B) and
//                 the mean reconstruction NLL over the K draws (B).
// `iwae_rescale`  g[r, j] *= scale · ω[r] for a (K·B, cols) gradient: the likelihood kernel
//                 stored w_b·(1/K)·∂nll, scale = K turns it into w_b ω_sb ∂nll.
// `iwae_prior_dz` dz[r, j] += wω[r] · z[r, j], the gradient of −log p(z) = ½|z|² + const.
// `iwae_logdet_backward` the fixed-ε gradient of log q(z(ε), params) of a Gaussian posterior,
//                 −Σ_i log L_ii = −½ Σ_i v_i: params[b, offset + i] += −½ Σ_s coef[s·B + b]
//                 (coef = ∂L/∂log q = wω).
// Mirrored by `cpu::iwae_train`.

struct IwParams {
    batch: u32,   // B
    samples: u32, // K
    cols: u32,    // rescale: columns; prior_dz: D; logdet: D
    stride: u32,  // logdet: parameters per row
    offset: u32,  // logdet: first log-scale parameter
    scale: f32,   // rescale: the factor (K)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> sm_logw: array<f32>;        // (K·B,)
@group(0) @binding(1) var<storage, read> sm_nll: array<f32>;         // (K·B,)
@group(0) @binding(2) var<storage, read> sm_w: array<f32>;           // (B,) row weights
@group(0) @binding(3) var<storage, read_write> sm_omega: array<f32>; // (K·B,)
@group(0) @binding(4) var<storage, read_write> sm_wo: array<f32>;    // (K·B,)
@group(0) @binding(5) var<storage, read_write> sm_loss: array<f32>;  // (B,)
@group(0) @binding(6) var<storage, read_write> sm_recon: array<f32>; // (B,)

@group(0) @binding(10) var<storage, read_write> rs_g: array<f32>;    // (K·B, cols)
@group(0) @binding(11) var<storage, read> rs_omega: array<f32>;      // (K·B,)

@group(0) @binding(20) var<storage, read_write> pz_dz: array<f32>;   // (K·B, D)
@group(0) @binding(21) var<storage, read> pz_z: array<f32>;          // (K·B, D)
@group(0) @binding(22) var<storage, read> pz_wo: array<f32>;         // (K·B,)

@group(0) @binding(30) var<storage, read_write> ld_dparams: array<f32>; // (B, stride)
@group(0) @binding(31) var<storage, read> ld_coef: array<f32>;          // (K·B,)

@group(0) @binding(40) var<uniform> ip: IwParams;

@compute @workgroup_size(64)
fn iwae_softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let bsz = ip.batch;
    for (var b = gid.x; b < bsz; b += nwg.x * 64u) {
        var m = sm_logw[b];
        var nll = 0.0;
        for (var s = 0u; s < ip.samples; s++) {
            m = max(m, sm_logw[s * bsz + b]);
            nll += sm_nll[s * bsz + b];
        }
        var sum = 0.0;
        for (var s = 0u; s < ip.samples; s++) {
            sum += exp(sm_logw[s * bsz + b] - m);
        }
        let inv = 1.0 / sum;
        let w = sm_w[b];
        for (var s = 0u; s < ip.samples; s++) {
            let r = s * bsz + b;
            let o = exp(sm_logw[r] - m) * inv;
            sm_omega[r] = o;
            sm_wo[r] = w * o;
        }
        let k = f32(ip.samples);
        sm_loss[b] = log(k) - (m + log(sum));
        sm_recon[b] = nll / k;
    }
}

@compute @workgroup_size(64)
fn iwae_rescale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = ip.samples * ip.batch * ip.cols;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        rs_g[i] = rs_g[i] * (ip.scale * rs_omega[i / ip.cols]);
    }
}

@compute @workgroup_size(64)
fn iwae_prior_dz(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = ip.samples * ip.batch * ip.cols;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        pz_dz[i] += pz_wo[i / ip.cols] * pz_z[i];
    }
}

@compute @workgroup_size(64)
fn iwae_logdet_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = ip.batch * ip.cols;
    for (var i = gid.x; i < total; i += nwg.x * 64u) {
        let b = i / ip.cols;
        let d = i % ip.cols;
        var c = 0.0;
        for (var s = 0u; s < ip.samples; s++) {
            c += ld_coef[s * ip.batch + b];
        }
        let at = b * ip.stride + ip.offset + d;
        ld_dparams[at] += -0.5 * c;
    }
}
