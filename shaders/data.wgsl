// data.wgsl
