// elementwise.wgsl
