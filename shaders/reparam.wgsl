// reparam.wgsl
