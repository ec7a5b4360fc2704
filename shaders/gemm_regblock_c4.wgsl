// ---- gemm_regblock_c4.wgsl: C and aux of gemm_regblock.wgsl as vec4 (N a multiple of 4) ----

@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;     // (M, N)
@group(0) @binding(4) var<storage, read> aux: array<vec4<f32>>;         // (M, N)

// C(row, 4g .. 4g + 4); row < M and 4g < N.
fn load_c4(row: u32, g: u32) -> vec4<f32> {
    return c[row * (p.n / 4u) + g];
}

fn load_aux4(row: u32, g: u32) -> vec4<f32> {
    return aux[row * (p.n / 4u) + g];
}

fn store_c4(row: u32, g: u32, v: vec4<f32>) {
    c[row * (p.n / 4u) + g] = v;
}
