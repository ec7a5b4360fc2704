// likelihood.wgsl
