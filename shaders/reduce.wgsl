// reduce.wgsl
