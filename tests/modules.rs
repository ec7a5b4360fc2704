//! Every module on its own, and networks composed of them: the GPU forward pass against the f64
//! twin, and the GPU backward pass (parameter and input gradients, stored and accumulated)
//! against central finite differences of the twin's loss L = Σ G ⊙ y for a fixed random G.

mod common;

use common::{assert_close, contexts, data};
use wgvae::gpu::{GpuContext, Tensor};
use wgvae::model::{
    Arch, Conv, ConvKind, GpuParams, GradWrite, Linear, Module, ParamLayout, Sequential, VaeConfig,
};
use wgvae::ops::Activation;
use wgvae::ops::conv::{Conv2d, ConvTranspose2d};

/// A layout holding one network's parameters, and random values for them.
fn layout_of(net: &Sequential) -> (ParamLayout, Vec<f32>) {
    // The layout a VAE builds: the modules' declarations, in order.
    let mut layout = ParamLayout::default();
    for m in &net.modules {
        for d in m.params() {
            layout.push_tensor(&net.param_name(m.as_ref(), d.name), &d.shape);
        }
    }
    let values = data(5, layout.total, -0.6, 0.6);
    (layout, values)
}

/// Checks `net` (rows × its input features) on one context: forward against the twin, then the
/// gradients of L = Σ G ⊙ output against finite differences, with parameter gradients stored
/// and then accumulated onto a known prefill.
fn check_network(ctx: &GpuContext, net: &Sequential, rows: usize) {
    let (layout, values) = layout_of(net);
    let params = GpuParams::zeros(ctx, &layout, "p").unwrap();
    params.flat.write(ctx, &values).unwrap();
    let grads = GpuParams::zeros(ctx, &layout, "g").unwrap();
    let x_h = data(6, rows * net.in_features(), -1.0, 1.0);
    let x = Tensor::from_slice(ctx, "x", &[rows, net.in_features()], &x_h).unwrap();
    let outs = net.buffers(ctx, rows, "out").unwrap();
    let gouts = net.buffers(ctx, rows, "grad").unwrap();
    let dx = Tensor::zeros(ctx, "dx", &[rows, net.in_features()]).unwrap();

    // Forward.
    net.forward(ctx, &params, &layout, &x, &outs)
        .unwrap()
        .run(ctx)
        .unwrap();
    let p64: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    let x64: Vec<f64> = x_h.iter().map(|&v| v as f64).collect();
    let get = |pp: &[f64], name: &str| -> Vec<f64> {
        let s = layout.get(name).unwrap();
        pp[s.offset..s.offset + s.len()].to_vec()
    };
    let twin = |pp: &[f64], xx: &[f64]| -> Vec<Vec<f64>> {
        let owned: Vec<(String, Vec<f64>)> = layout
            .tensors
            .iter()
            .map(|t| (t.name.clone(), get(pp, &t.name)))
            .collect();
        let lookup = |name: &str| -> &[f64] {
            owned
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .unwrap()
        };
        net.cpu_forward(&lookup, xx, rows)
    };
    let want = twin(&p64, &x64);
    for (i, o) in outs.iter().enumerate() {
        assert_close(
            &format!("{} output {i}", net.name),
            &o.read(ctx).unwrap(),
            &want[i],
            1e-5,
            1e-4,
        );
    }

    // L = Σ G ⊙ y: the gradient before the last activation is G ⊙ act'(y).
    let last = net.modules.last().unwrap();
    let g_h = data(7, rows * net.out_features(), -1.0, 1.0);
    let y_last = want.last().unwrap();
    let du: Vec<f32> = g_h
        .iter()
        .zip(y_last)
        .map(|(&g, &y)| {
            (g as f64 * wgvae::cpu::activate_grad_from_output(last.activation(), y)) as f32
        })
        .collect();
    gouts.last().unwrap().write(ctx, &du).unwrap();
    net.backward(
        ctx,
        &params,
        &grads,
        &layout,
        GradWrite::Store,
        &x,
        &outs,
        &gouts,
        Some((&dx, GradWrite::Store)),
    )
    .unwrap()
    .run(ctx)
    .unwrap();
    let gpu_dp = grads.flat.read(ctx).unwrap();
    let gpu_dx = dx.read(ctx).unwrap();

    let loss = |pp: &[f64], xx: &[f64]| -> f64 {
        let y = twin(pp, xx).pop().unwrap();
        y.iter().zip(&g_h).map(|(a, &g)| a * g as f64).sum()
    };
    let h = 1e-6;
    let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
    for spec in &layout.tensors {
        for i in 0..spec.len() {
            let k = spec.offset + i;
            let want = fd(&|d| {
                let mut pp = p64.clone();
                pp[k] += d;
                loss(&pp, &x64)
            });
            let got = gpu_dp[k] as f64;
            assert!(
                (got - want).abs() <= 1e-4 + 2e-3 * want.abs(),
                "{}[{i}] on GEMM {}: GPU {got} vs finite difference {want}",
                spec.name,
                ctx.gemm_variant.name()
            );
        }
    }
    for (i, &got) in gpu_dx.iter().enumerate() {
        let want = fd(&|d| {
            let mut xx = x64.clone();
            xx[i] += d;
            loss(&p64, &xx)
        });
        assert!(
            (got as f64 - want).abs() <= 1e-4 + 2e-3 * want.abs(),
            "{} input gradient [{i}]: GPU {got} vs finite difference {want}",
            net.name
        );
    }

    // The twin's analytic backward agrees with the GPU.
    let owned: Vec<(String, Vec<f64>)> = layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), get(&p64, &t.name)))
        .collect();
    let lookup = |name: &str| -> &[f64] {
        owned
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .unwrap()
    };
    let du64: Vec<f64> = du.iter().map(|&v| v as f64).collect();
    let (named, dx_twin) = net.cpu_backward(&lookup, &x64, &want, &du64, rows);
    assert_close("twin input gradient", &gpu_dx, &dx_twin, 1e-5, 1e-3);
    for (name, g) in named {
        let s = layout.get(&name).unwrap();
        assert_close(
            &format!("twin {name}"),
            &gpu_dp[s.offset..s.offset + s.len()],
            &g,
            1e-5,
            1e-3,
        );
    }

    // Accumulating parameter gradients add onto what is there.
    let prefill = data(8, layout.total, -1.0, 1.0);
    grads.flat.write(ctx, &prefill).unwrap();
    net.backward(
        ctx,
        &params,
        &grads,
        &layout,
        GradWrite::Accumulate,
        &x,
        &outs,
        &gouts,
        None,
    )
    .unwrap()
    .run(ctx)
    .unwrap();
    let acc = grads.flat.read(ctx).unwrap();
    let want: Vec<f64> = prefill
        .iter()
        .zip(&gpu_dp)
        .map(|(&a, &b)| a as f64 + b as f64)
        .collect();
    for spec in &layout.tensors {
        let r = spec.offset..spec.offset + spec.len();
        assert_close(
            &format!("accumulated {}", spec.name),
            &acc[r.clone()],
            &want[r],
            1e-5,
            1e-4,
        );
    }
    eprintln!(
        "{}: {} modules, {} parameters, GEMM {}: gradients match",
        net.name,
        net.modules.len(),
        layout.count(),
        ctx.gemm_variant.name()
    );
}

fn linear(name: &str, inp: usize, out: usize, act: Activation) -> Box<dyn Module> {
    Box::new(Linear {
        name: name.into(),
        inp,
        out,
        act,
    })
}

fn conv2d(
    name: &str,
    (cin, cout): (usize, usize),
    k: (usize, usize),
    s: usize,
    p: usize,
    input: (usize, usize),
    act: Activation,
) -> Box<dyn Module> {
    let layer = Conv2d::new(cin, cout, k)
        .with_stride((s, s))
        .with_padding((p, p));
    Box::new(Conv::new(name, ConvKind::Forward(layer), input, act).unwrap())
}

#[allow(clippy::too_many_arguments)]
fn deconv(
    name: &str,
    (cin, cout): (usize, usize),
    k: (usize, usize),
    s: usize,
    p: usize,
    op: (usize, usize),
    input: (usize, usize),
    act: Activation,
) -> Box<dyn Module> {
    let layer = ConvTranspose2d::new(cin, cout, k)
        .with_stride((s, s))
        .with_padding((p, p))
        .with_output_padding(op);
    Box::new(Conv::new(name, ConvKind::Transposed(layer), input, act).unwrap())
}

#[test]
fn linear_alone() {
    for ctx in contexts() {
        for act in [Activation::Identity, Activation::Tanh] {
            let net = Sequential::new("n", vec![linear("fc", 5, 3, act)]);
            check_network(ctx, &net, 7);
        }
    }
}

#[test]
fn conv2d_alone() {
    for ctx in contexts() {
        // Odd kernel, stride 2, padding 1, 3 → 2 channels on 5×6 images, batch 3.
        let net = Sequential::new(
            "c",
            vec![conv2d(
                "conv",
                (3, 2),
                (3, 3),
                2,
                1,
                (5, 6),
                Activation::Tanh,
            )],
        );
        check_network(ctx, &net, 3);
        // 1×1 kernel, stride 1, no padding, one channel, batch 1.
        let net = Sequential::new(
            "c1",
            vec![conv2d(
                "conv",
                (1, 3),
                (1, 1),
                1,
                0,
                (3, 4),
                Activation::Identity,
            )],
        );
        check_network(ctx, &net, 1);
    }
}

#[test]
fn conv_transpose2d_alone() {
    for ctx in contexts() {
        // 4×4 stride 2 padding 1 with output padding (1, 0): 3×2 → 7×4, 2 → 3 channels.
        let net = Sequential::new(
            "d",
            vec![deconv(
                "deconv",
                (2, 3),
                (4, 4),
                2,
                1,
                (1, 0),
                (3, 2),
                Activation::Sigmoid,
            )],
        );
        check_network(ctx, &net, 2);
    }
}

#[test]
fn composed_conv_encoder_and_decoder() {
    // The fused activation derivative crosses module kinds: conv → conv → linear, and
    // linear → deconv → deconv, with ReLU-family activations between them.
    let lrelu = Activation::LeakyRelu(0.1);
    for ctx in contexts() {
        let enc = Sequential::new(
            "encoder",
            vec![
                conv2d("conv1", (1, 3), (3, 3), 2, 1, (7, 6), lrelu),
                conv2d("conv2", (3, 2), (3, 3), 2, 1, (4, 3), Activation::Tanh),
                linear("fc1", 2 * 2 * 2, 5, Activation::Identity),
            ],
        );
        check_network(ctx, &enc, 3);
        let dec = Sequential::new(
            "decoder",
            vec![
                linear("fc1", 3, 8, lrelu),
                deconv(
                    "deconv1",
                    (2, 3),
                    (3, 3),
                    2,
                    1,
                    (1, 0),
                    (2, 2),
                    Activation::Tanh,
                ),
                deconv(
                    "deconv2",
                    (3, 1),
                    (3, 3),
                    2,
                    1,
                    (0, 1),
                    (4, 3),
                    Activation::Identity,
                ),
            ],
        );
        check_network(ctx, &dec, 2);
    }
}

#[test]
fn conv_vae_networks_mirror_the_encoder() {
    // 64×64: four 4×4 stride-2 convolutions 32, 32, 64, 64; 28×28: 32, 64; every decoder
    // output size equals the matching encoder input size.
    for (side, chans, flat) in [
        (64, vec![32, 32, 64, 64], 64 * 4 * 4),
        (28, vec![32, 64], 64 * 7 * 7),
    ] {
        let cfg = VaeConfig::conv(side, side);
        assert_eq!(
            cfg.arch,
            Arch::Conv {
                channels: chans.clone(),
                kernel: 4,
                stride: 2,
                padding: 1,
                mlp_decoder: false,
            }
        );
        cfg.validate().unwrap();
        let (enc, dec) = cfg.networks().unwrap();
        assert_eq!(enc.in_features(), side * side);
        assert_eq!(enc.modules[chans.len()].in_features(), flat);
        assert_eq!(enc.out_features(), 2 * cfg.latent);
        assert_eq!(dec.in_features(), cfg.latent);
        assert_eq!(dec.out_features(), side * side);
        for (e, d) in enc.modules[..chans.len()]
            .iter()
            .zip(dec.modules.iter().rev())
        {
            assert_eq!(
                e.in_features(),
                d.out_features(),
                "{} vs {}",
                e.name(),
                d.name()
            );
        }
        let names: Vec<String> = cfg
            .layout()
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect();
        assert!(
            names.contains(&"encoder.conv1.weight".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"decoder.deconv1.weight".to_string()),
            "{names:?}"
        );
    }
    // 7×7 after two stride-2 layers of a 28×28 image needs output padding on the way back; an
    // impossible geometry is an error naming the layer.
    let mut bad = VaeConfig::conv(28, 28);
    bad.arch = Arch::Conv {
        channels: vec![4; 6],
        kernel: 4,
        stride: 2,
        padding: 1,
        mlp_decoder: false,
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("encoder.conv"), "{e}");
}
