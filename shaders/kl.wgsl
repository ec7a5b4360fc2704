// kl.wgsl
