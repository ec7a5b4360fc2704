// adam.wgsl
