//! GEMM kernels against the f64 CPU twin, every kernel family, all transposes and epilogues,
//! on shapes that are not multiples of the tiles.

mod common;
#[path = "common/variants.rs"]
mod variants;

use std::sync::Mutex;

use common::{assert_close, ctx, data};
use variants::variant_ctx;
use wgvae::cpu::{self, CpuEpilogue};
use wgvae::gpu::{GemmVariant, GpuContext, Tensor};
use wgvae::ops::Activation;
use wgvae::ops::gemm::{Epilogue, Trans, gemm, gemm_with, subgroup8_fits};

/// Tolerance: inputs are in [-1, 1], so each of the K products is below 1 in magnitude and f32
/// accumulation error grows like sqrt(K)·2⁻²⁴ per term in the worst case K·2⁻²⁴; 4e-6·K
/// leaves a margin over the worst case without letting a wrong index (error ~1) pass.
fn tol(k: usize) -> (f64, f64) {
    (4e-6 * k as f64 + 1e-6, 1e-5)
}

fn run_case(ctx: &GpuContext, (m, k, n): (usize, usize, usize), trans: Trans, epi: &str) {
    // wgpu's OpenGL backend gives up (panics) when a thread waits more than a few seconds for
    // the GL context another thread holds, which a slow kernel compile on a CPU adapter does:
    // on OpenGL the cases run one at a time.
    static GL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = (ctx.info.backend == wgpu::Backend::Gl)
        .then(|| GL.lock().unwrap_or_else(|e| e.into_inner()));
    let seed = (m * 1_000_003 + k * 1009 + n) as u64;
    let a_host = data(seed, m * k, -1.0, 1.0);
    let b_host = data(seed + 1, k * n, -1.0, 1.0);
    let bias_host = data(seed + 2, n, -1.0, 1.0);
    let old_host = data(seed + 3, m * n, -1.0, 1.0);
    // Activation outputs with exact zeros so the ReLU mask matters.
    let out_host: Vec<f32> = data(seed + 4, m * n, -1.0, 1.0)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let (a_shape, b_shape) = (
        if trans.a() { [k, m] } else { [m, k] },
        if trans.b() { [n, k] } else { [k, n] },
    );
    let a = Tensor::from_slice(ctx, "A", &a_shape, &a_host).unwrap();
    let b = Tensor::from_slice(ctx, "B", &b_shape, &b_host).unwrap();
    let c = Tensor::from_slice(ctx, "C", &[m, n], &old_host).unwrap();
    let bias = Tensor::from_slice(ctx, "bias", &[n], &bias_host).unwrap();
    let out = Tensor::from_slice(ctx, "act out", &[m, n], &out_host).unwrap();
    let (gpu_epi, cpu_epi) = match epi {
        "store" => (Epilogue::Store, CpuEpilogue::Store),
        "acc" => (Epilogue::Accumulate, CpuEpilogue::Accumulate(&old_host)),
        "relu" => (
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::Relu,
            },
            CpuEpilogue::BiasAct(&bias_host, Activation::Relu),
        ),
        "leaky" => (
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::LeakyRelu(0.1),
            },
            CpuEpilogue::BiasAct(&bias_host, Activation::LeakyRelu(0.1)),
        ),
        "tanh" => (
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::Tanh,
            },
            CpuEpilogue::BiasAct(&bias_host, Activation::Tanh),
        ),
        "sigmoid" => (
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::Sigmoid,
            },
            CpuEpilogue::BiasAct(&bias_host, Activation::Sigmoid),
        ),
        "identity" => (
            Epilogue::BiasAct {
                bias: &bias,
                act: Activation::Identity,
            },
            CpuEpilogue::BiasAct(&bias_host, Activation::Identity),
        ),
        "relu_grad" => (
            Epilogue::ActGrad {
                output: &out,
                act: Activation::Relu,
            },
            CpuEpilogue::ActGrad(&out_host, Activation::Relu),
        ),
        "leaky_grad" => (
            Epilogue::ActGrad {
                output: &out,
                act: Activation::LeakyRelu(0.1),
            },
            CpuEpilogue::ActGrad(&out_host, Activation::LeakyRelu(0.1)),
        ),
        "tanh_grad" => (
            Epilogue::ActGrad {
                output: &out,
                act: Activation::Tanh,
            },
            CpuEpilogue::ActGrad(&out_host, Activation::Tanh),
        ),
        "sigmoid_grad" => (
            Epilogue::ActGrad {
                output: &out,
                act: Activation::Sigmoid,
            },
            CpuEpilogue::ActGrad(&out_host, Activation::Sigmoid),
        ),
        _ => unreachable!(),
    };
    let d = gemm(ctx, "gemm", &a, &b, &c, trans, gpu_epi).unwrap();
    let mut p = wgvae::gpu::Program::new();
    p.push(d);
    p.run(ctx).unwrap();
    let got = c.read(ctx).unwrap();
    let want = cpu::gemm(&a_host, &b_host, m, k, n, trans, cpu_epi);
    let (atol, rtol) = tol(k);
    assert_close(
        &format!(
            "{} {trans:?} {epi} M={m} K={k} N={n}",
            ctx.gemm_variant.name()
        ),
        &got,
        &want,
        atol,
        rtol,
    );
}

/// Sizes that are not multiples of any tile (1, 7, 33, 129: odd; 12, 36: multiples of 4 but
/// not of 8 or of the column tiles), with 400 from the VAE. Every family sees both sides of its
/// vec4 conditions (multiples of 4 or not) on every dimension, K below, at and past its 4-deep
/// (and 8- or 16-deep) steps, and M, N below and past its row and column tiles. 784 is covered
/// by the epilogue and VAE-shape tests.
const SIZES: [usize; 7] = [1, 7, 12, 33, 36, 129, 400];

/// Every shape of SIZES³ up to 4M multiply-adds (the subgroup family: those it takes; it hands
/// the others to the tiled kernel, which has its own sweep).
fn sweep(variant: GemmVariant, trans: Trans) {
    let Some(ctx) = variant_ctx(variant) else {
        return;
    };
    let mut ran = 0;
    for &m in &SIZES {
        for &k in &SIZES {
            for &n in &SIZES {
                if m * k * n > 4_000_000
                    || (variant == GemmVariant::Subgroup8 && !subgroup8_fits(m, k, n, trans))
                {
                    continue;
                }
                run_case(ctx, (m, k, n), trans, "store");
                ran += 1;
            }
        }
    }
    let least = if variant == GemmVariant::Subgroup8 {
        50
    } else {
        300
    };
    assert!(ran >= least, "only {ran} shapes ran");
}

#[test]
fn tiled_nn_sweep() {
    sweep(GemmVariant::Tiled, Trans::NN);
}
#[test]
fn tiled_nt_sweep() {
    sweep(GemmVariant::Tiled, Trans::NT);
}
#[test]
fn tiled_tn_sweep() {
    sweep(GemmVariant::Tiled, Trans::TN);
}
#[test]
fn regblock_nn_sweep() {
    sweep(GemmVariant::Regblock, Trans::NN);
}
#[test]
fn regblock_nt_sweep() {
    sweep(GemmVariant::Regblock, Trans::NT);
}
#[test]
fn regblock_tn_sweep() {
    sweep(GemmVariant::Regblock, Trans::TN);
}
#[test]
fn subgroup8_nn_sweep() {
    sweep(GemmVariant::Subgroup8, Trans::NN);
}
#[test]
fn subgroup8_nt_sweep() {
    sweep(GemmVariant::Subgroup8, Trans::NT);
}
#[test]
fn subgroup8_tn_sweep() {
    sweep(GemmVariant::Subgroup8, Trans::TN);
}

/// Every epilogue, every transpose, every family, on shapes where the vec4 conditions hold and
/// where they do not (the subgroup family takes the first kind and hands the second to the
/// tiled kernel). Each epilogue runs NN both ways and NT / TN one way each, alternating, so
/// every (epilogue, transpose) pair is covered aligned or not and the number of pipelines
/// compiled stays small; the accumulate and ReLU epilogues also run on shapes past the tiles.
fn epilogues(variant: GemmVariant) {
    let Some(ctx) = variant_ctx(variant) else {
        return;
    };
    let epilogues = [
        "acc",
        "identity",
        "relu",
        "leaky",
        "tanh",
        "sigmoid",
        "relu_grad",
        "leaky_grad",
        "tanh_grad",
        "sigmoid_grad",
    ];
    for (i, epi) in epilogues.into_iter().enumerate() {
        let aligned = i % 2 == 0;
        let mut shapes = vec![
            (33, 20, 36, Trans::NN),
            (33, 21, 37, Trans::NN),
            if aligned {
                (7, 12, 40, Trans::NT)
            } else {
                (13, 9, 30, Trans::NT)
            },
            if aligned {
                (36, 129, 12, Trans::TN)
            } else {
                (37, 11, 10, Trans::TN)
            },
        ];
        if epi == "acc" || epi == "relu" {
            shapes.extend([(65, 400, 136, Trans::NN), (1, 400, 784, Trans::NN)]);
        }
        for (m, k, n, t) in shapes {
            run_case(ctx, (m, k, n), t, epi);
        }
    }
}

#[test]
fn epilogues_tiled() {
    epilogues(GemmVariant::Tiled);
}
#[test]
fn epilogues_regblock() {
    epilogues(GemmVariant::Regblock);
}
#[test]
fn epilogues_subgroup8() {
    epilogues(GemmVariant::Subgroup8);
}

#[test]
fn vae_shapes() {
    // The classic VAE at batch 128: forward, input-gradient and weight-gradient products.
    let ctx = ctx();
    for &(m, k, n, t) in &[
        (128, 784, 400, Trans::NN),
        (128, 400, 40, Trans::NN),
        (128, 20, 400, Trans::NN),
        (128, 400, 784, Trans::NN),
        (128, 784, 400, Trans::NT),
        (128, 40, 400, Trans::NT),
        (784, 128, 400, Trans::TN),
        (400, 128, 784, Trans::TN),
        (20, 128, 400, Trans::TN),
    ] {
        run_case(ctx, (m, k, n), t, "store");
    }
}

#[test]
fn shape_errors_are_reported() {
    let ctx = ctx();
    let a = Tensor::<f32>::zeros(ctx, "A", &[3, 5]).unwrap();
    let b = Tensor::<f32>::zeros(ctx, "B", &[4, 6]).unwrap();
    let c = Tensor::<f32>::zeros(ctx, "C", &[3, 6]).unwrap();
    let err = gemm_with(
        ctx,
        GemmVariant::Tiled,
        "bad",
        &a,
        &b,
        &c,
        Trans::NN,
        Epilogue::Store,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("inner dimensions"), "{err}");
    let b2 = Tensor::<f32>::zeros(ctx, "B", &[5, 6]).unwrap();
    let c2 = Tensor::<f32>::zeros(ctx, "C", &[3, 7]).unwrap();
    let err = gemm_with(
        ctx,
        GemmVariant::Tiled,
        "bad",
        &a,
        &b2,
        &c2,
        Trans::NN,
        Epilogue::Store,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("expected (3, 6)"), "{err}");
}
