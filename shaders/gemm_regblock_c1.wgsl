// ---- gemm_regblock_c1.wgsl: C and aux of gemm_regblock.wgsl as scalars (any N) -------------

@group(0) @binding(2) var<storage, read_write> c: array<f32>;           // (M, N)
@group(0) @binding(4) var<storage, read> aux: array<f32>;               // (M, N)

// C(row, 4g .. 4g + 4); row < M and 4g < N. Columns past N repeat column N - 1.
fn load_c4(row: u32, g: u32) -> vec4<f32> {
    let last = p.n - 1u;
    var v: vec4<f32>;
    for (var i = 0u; i < 4u; i++) {
        v[i] = c[row * p.n + min(4u * g + i, last)];
    }
    return v;
}

fn load_aux4(row: u32, g: u32) -> vec4<f32> {
    let last = p.n - 1u;
    var v: vec4<f32>;
    for (var i = 0u; i < 4u; i++) {
        v[i] = aux[row * p.n + min(4u * g + i, last)];
    }
    return v;
}

// Stores the columns of v that lie before N.
fn store_c4(row: u32, g: u32, v: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let col = 4u * g + i;
        if (col < p.n) {
            c[row * p.n + col] = v[i];
        }
    }
}
