//! The conditional VAE: the label kernels against their f64 twins, the `Concat` module's and a
//! composed conditional VAE's gradients against central differences, a tiny conditional run
//! on the committed MNIST subset through the binary, and the errors of its flags.

mod common;

use std::path::Path;

use common::tool::{mnist, scratch, text, wgvae};
use common::{assert_close, contexts, ctx, data};
use wgvae::cpu;
use wgvae::gpu::{GpuContext, Program, Tensor};
use wgvae::model::condition::{self, Concat};
use wgvae::model::{
    Arch, GpuParams, GradWrite, Linear, Module, ParamLayout, Sequential, Vae, VaeConfig,
};
use wgvae::ops::Activation;
use wgvae::ops::condition::{concat_backward, concat_forward, gather_labels, onehot};
use wgvae::ops::data::StepState;
use wgvae::ops::reparam::{RngStep, Stream};
use wgvae::train::checkpoint::Checkpoint;

fn run(ctx: &GpuContext, d: wgvae::gpu::Dispatch) {
    let mut p = Program::new();
    p.push(d);
    p.run(ctx).unwrap();
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn label_kernels_match_twins() {
    let ctx = ctx();
    // Decoder-like buffer: K = 3 samples of B = 5 inputs, F = 13 features, C = 6 classes
    // (width 13 + 6 = 19, rounded up to 20); label 7 ≥ C gives a zero row.
    let (b, k, f, c) = (5, 3, 13, 6);
    let width = condition::width(f, c).unwrap();
    assert_eq!(width, 20);
    let rows = b * k;
    let labels_h = [2u32, 0, 5, 7, 3];
    let labels = Tensor::from_slice(ctx, "labels", &[b], &labels_h).unwrap();
    let y0 = data(1, rows * width, -1.0, 1.0);
    let y = Tensor::from_slice(ctx, "y", &[rows, width], &y0).unwrap();
    run(ctx, onehot(ctx, "onehot", &labels, &y, f, c).unwrap());
    let mut want = f64s(&y0);
    cpu::condition::onehot(&labels_h, &mut want, rows, width, f, c);
    assert_close("onehot", &y.read(ctx).unwrap(), &want, 0.0, 0.0);
    // Row s·B + b holds input b's one-hot label, zeros after it, x's columns untouched.
    let got = y.read(ctx).unwrap();
    for r in 0..rows {
        let row = &got[r * width..(r + 1) * width];
        assert_eq!(&row[..f], &y0[r * width..r * width + f]);
        let ones: Vec<usize> = (f..width).filter(|&j| row[j] == 1.0).collect();
        let l = labels_h[r % b] as usize;
        assert_eq!(ones, if l < c { vec![f + l] } else { vec![] }, "row {r}");
    }

    // The concatenation's copies on 67 rows (not a multiple of the 64-wide workgroup).
    let rows = 67;
    let x_h = data(2, rows * f, -1.0, 1.0);
    let x = Tensor::from_slice(ctx, "x", &[rows, f], &x_h).unwrap();
    let y0 = data(3, rows * width, -1.0, 1.0);
    let y = Tensor::from_slice(ctx, "y", &[rows, width], &y0).unwrap();
    run(ctx, concat_forward(ctx, "concat", &x, &y).unwrap());
    let mut want = f64s(&y0);
    cpu::condition::concat_forward(&f64s(&x_h), &mut want, rows, f, width);
    assert_close("concat_forward", &y.read(ctx).unwrap(), &want, 0.0, 0.0);

    let du_h = data(4, rows * width, -1.0, 1.0);
    let du = Tensor::from_slice(ctx, "du", &[rows, width], &du_h).unwrap();
    let prod_h = data(5, rows * f, -0.9, 0.9);
    let prod = Tensor::from_slice(ctx, "producer", &[rows, f], &prod_h).unwrap();
    let dx0 = data(6, rows * f, -1.0, 1.0);
    let acts = [
        None,
        Some(Activation::Tanh),
        Some(Activation::LeakyRelu(0.2)),
    ];
    for accumulate in [false, true] {
        for act in acts {
            let dx = Tensor::from_slice(ctx, "dx", &[rows, f], &dx0).unwrap();
            let producer = act.map(|a| (&prod, a));
            run(
                ctx,
                concat_backward(ctx, "d concat", &du, &dx, accumulate, producer).unwrap(),
            );
            let mut want = f64s(&dx0);
            let prod64 = f64s(&prod_h);
            cpu::condition::concat_backward(
                &f64s(&du_h),
                &mut want,
                rows,
                f,
                width,
                accumulate,
                act.map(|a| (prod64.as_slice(), a)),
            );
            assert_close(
                &format!("concat_backward accumulate={accumulate} {act:?}"),
                &dx.read(ctx).unwrap(),
                &want,
                1e-7,
                1e-6,
            );
        }
    }
}

#[test]
fn label_gather_matches_twin() {
    let ctx = ctx();
    let n = 70;
    let labels_h: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    let wide: Vec<u32> = labels_h.iter().map(|&v| v as u32).collect();
    let labels = Tensor::from_slice(ctx, "labels", &[n], &wide).unwrap();
    let order: Vec<u32> = (0..n as u32).rev().collect();
    let perm = Tensor::from_slice(ctx, "perm", &[n], &order).unwrap();
    let rows = 33;
    let out = Tensor::from_slice(ctx, "out", &[rows], &vec![99u32; rows]).unwrap();
    // Third step of an epoch: positions 66.., 4 valid rows, then zeros.
    let state = StepState::new(ctx, "state").unwrap();
    state.set(ctx, 9, 7).unwrap();
    run(
        ctx,
        gather_labels(ctx, "g", &labels, &perm, &out, 0, Some(&state)).unwrap(),
    );
    let want = cpu::condition::gather_labels(&labels_h, &order, 66, rows);
    assert_eq!(out.read(ctx).unwrap(), want);
    assert_eq!(want[..4], [3, 2, 1, 0].map(|i| (i * 7 % 10) as u32));
    assert!(want[4..].iter().all(|&v| v == 0));
    // Without a state: from `base`.
    run(
        ctx,
        gather_labels(ctx, "g", &labels, &perm, &out, 5, None).unwrap(),
    );
    let want = cpu::condition::gather_labels(&labels_h, &order, 5, rows);
    assert_eq!(out.read(ctx).unwrap(), want);
}

/// Replaces a network's conditioning module by one whose CPU twin writes `labels`.
fn relabel(net: &mut Sequential, classes: usize, labels: &[u32]) {
    let i = net
        .modules
        .iter()
        .position(|m| m.name() == condition::NAME)
        .expect("a conditioning module");
    let f = net.modules[i].in_features();
    net.modules[i] = Box::new(Concat::new(f, classes).with_cpu_labels(labels.to_vec()));
}

/// Linear(7→6, tanh) → Concat(6, 3 classes → 12) → Linear(12→5): GPU forward (labels written by
/// the one-hot kernel) against the twin, and the gradients of L = Σ G ⊙ y at every parameter
/// and the input against central differences of the twin.
#[test]
fn concat_in_a_network_gradient_check() {
    for ctx in contexts() {
        let (rows, classes) = (9, 3);
        let labels_h: Vec<u32> = (0..rows as u32).map(|r| (r * 2) % 3).collect();
        let build = |with_labels: bool| {
            let cond = Concat::new(6, classes);
            let cond = if with_labels {
                cond.with_cpu_labels(labels_h.clone())
            } else {
                cond
            };
            Sequential::new(
                "net",
                vec![
                    Box::new(Linear {
                        name: "fc1".into(),
                        inp: 7,
                        out: 6,
                        act: Activation::Tanh,
                    }) as Box<dyn Module>,
                    Box::new(cond),
                    Box::new(Linear {
                        name: "fc2".into(),
                        inp: 12,
                        out: 5,
                        act: Activation::Identity,
                    }),
                ],
            )
        };
        let net = build(false);
        let twin_net = build(true);
        assert_eq!(net.modules[1].out_features(), 12);
        let mut layout = ParamLayout::default();
        for m in &net.modules {
            for d in m.params() {
                layout.push_tensor(&net.param_name(m.as_ref(), d.name), &d.shape);
            }
        }
        let values = data(7, layout.total, -0.6, 0.6);
        let params = GpuParams::zeros(ctx, &layout, "p").unwrap();
        params.flat.write(ctx, &values).unwrap();
        let grads = GpuParams::zeros(ctx, &layout, "g").unwrap();
        let x_h = data(8, rows * 7, -1.0, 1.0);
        let x = Tensor::from_slice(ctx, "x", &[rows, 7], &x_h).unwrap();
        let labels = Tensor::from_slice(ctx, "labels", &[rows], &labels_h).unwrap();
        let outs = net.buffers(ctx, rows, "out").unwrap();
        let gouts = net.buffers(ctx, rows, "grad").unwrap();
        let dx = Tensor::zeros(ctx, "dx", &[rows, 7]).unwrap();
        let mut p = Program::new();
        p.push(onehot(ctx, "labels", &labels, &outs[1], 6, classes).unwrap());
        p.extend(net.forward(ctx, &params, &layout, &x, &outs).unwrap());
        p.run(ctx).unwrap();

        let lookup_in = |pp: &[f64], name: &str| -> Vec<f64> {
            let s = layout.get(name).unwrap();
            pp[s.offset..s.offset + s.len()].to_vec()
        };
        let twin = |pp: &[f64], xx: &[f64]| -> Vec<Vec<f64>> {
            let owned: Vec<(String, Vec<f64>)> = layout
                .tensors
                .iter()
                .map(|t| (t.name.clone(), lookup_in(pp, &t.name)))
                .collect();
            let get = |name: &str| -> &[f64] {
                owned
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_slice())
                    .unwrap()
            };
            twin_net.cpu_forward(&get, xx, rows)
        };
        let p64 = f64s(&values);
        let x64 = f64s(&x_h);
        let want = twin(&p64, &x64);
        for (i, o) in outs.iter().enumerate() {
            assert_close(
                &format!("output {i}"),
                &o.read(ctx).unwrap(),
                &want[i],
                1e-5,
                1e-4,
            );
        }

        // L = Σ G ⊙ y; the last activation is the identity, so du = G.
        let g_h = data(9, rows * 5, -1.0, 1.0);
        gouts[2].write(ctx, &g_h).unwrap();
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
        let gpu = grads.flat.read(ctx).unwrap();
        let gpu_dx = dx.read(ctx).unwrap();
        let g64 = f64s(&g_h);
        let loss = |pp: &[f64], xx: &[f64]| -> f64 {
            let y = twin(pp, xx).pop().unwrap();
            y.iter().zip(&g64).map(|(a, b)| a * b).sum()
        };
        let h = 1e-6;
        let check = |what: String, got: f32, up: f64, down: f64| {
            let fd = (up - down) / (2.0 * h);
            let err = (got as f64 - fd).abs();
            assert!(
                err <= 1e-5 + 1e-3 * fd.abs(),
                "{what}: GPU {got} vs finite difference {fd}"
            );
        };
        for spec in &layout.tensors {
            for i in 0..spec.len() {
                let k = spec.offset + i;
                let mut pp = p64.clone();
                pp[k] += h;
                let up = loss(&pp, &x64);
                pp[k] -= 2.0 * h;
                let down = loss(&pp, &x64);
                check(format!("{}[{i}]", spec.name), gpu[k], up, down);
            }
        }
        for i in 0..x64.len() {
            let mut xx = x64.clone();
            xx[i] += h;
            let up = loss(&p64, &xx);
            xx[i] -= 2.0 * h;
            let down = loss(&p64, &xx);
            check(format!("dx[{i}]"), gpu_dx[i], up, down);
        }
    }
}

/// The twin's loss (1/B) Σ_b [(1/K) Σ_s nll_sb + β KL_b] of a conditional Bernoulli VAE.
#[allow(clippy::too_many_arguments)]
fn twin_loss(
    cfg: &VaeConfig,
    params: &[f64],
    x: &[f32],
    labels: &[u32],
    batch: usize,
    samples: usize,
    eps: &[f32],
    beta: f64,
) -> (f64, Vec<f64>, Vec<f64>) {
    let layout = cfg.layout();
    let get = |name: &str| -> &[f64] {
        let s = layout.get(name).unwrap();
        &params[s.offset..s.offset + s.len()]
    };
    let (mut enc, mut dec) = cfg.networks().unwrap();
    let classes = cfg.classes.unwrap();
    relabel(&mut enc, classes, labels);
    relabel(&mut dec, classes, labels);
    let q = cfg.posterior();
    let xs = f64s(x);
    let enc_out = enc.cpu_forward(&get, &xs, batch).pop().unwrap();
    let kb = batch * samples;
    let z = q.cpu_sample(&enc_out, &f64s(eps), batch, samples);
    let kl = q.cpu_kl(&enc_out, batch);
    let out = dec.cpu_forward(&get, &z, kb).pop().unwrap();
    let pdim = cfg.input_dim();
    let mut nll = vec![0.0; kb];
    for r in 0..kb {
        for p in 0..pdim {
            let o = out[r * pdim + p];
            let t = x[(r % batch) * pdim + p] as f64;
            nll[r] += o.max(0.0) + (-o.abs()).exp().ln_1p() - t * o;
        }
    }
    let mut loss = 0.0;
    for b in 0..batch {
        let recon: f64 = (0..samples).map(|s| nll[s * batch + b]).sum::<f64>() / samples as f64;
        loss += (recon + beta * kl[b]) / batch as f64;
    }
    (loss, nll, kl)
}

/// A whole conditional VAE (MLP, and convolutions before the label), GPU gradients of every
/// parameter against central differences of the twin's loss.
#[test]
fn conditional_vae_gradient_check() {
    let mlp = VaeConfig {
        enc_hidden: vec![6],
        dec_hidden: vec![4],
        latent: 2,
        activation: Activation::Tanh,
        classes: Some(3),
        ..VaeConfig::classic(1, 5)
    };
    let conv = VaeConfig {
        arch: Arch::Conv {
            channels: vec![2],
            kernel: 4,
            stride: 2,
            padding: 1,
            mlp_decoder: false,
        },
        enc_hidden: vec![5],
        dec_hidden: vec![],
        latent: 2,
        activation: Activation::Tanh,
        classes: Some(4),
        ..VaeConfig::classic(6, 6)
    };
    for ctx in contexts() {
        for cfg in [&mlp, &conv] {
            let (batch, samples, beta) = (4, 2, 1.5);
            let classes = cfg.classes.unwrap();
            let init = cfg.init_params(11);
            let vae = Vae::new(ctx, cfg, &init).unwrap();
            let c = vae.condition.unwrap();
            assert_eq!(c.decoder, 0);
            assert_eq!(c.encoder, if cfg.arch == Arch::Mlp { 0 } else { 1 });
            let act = vae.activations(ctx, batch, samples).unwrap();
            let g = vae.gradients(ctx, &act).unwrap();
            let x_h = data(12, batch * cfg.input_dim(), 0.0, 1.0);
            act.x.write(ctx, &x_h).unwrap();
            let labels: Vec<u32> = (0..batch as u32)
                .map(|b| (b * 3 + 1) % classes as u32)
                .collect();
            act.set_labels(ctx, &labels, classes).unwrap();
            let mut p = vae
                .forward_program(
                    ctx,
                    &act,
                    Some(&g),
                    beta,
                    99,
                    RngStep::Fixed(3),
                    Stream::Train,
                )
                .unwrap();
            p.extend(vae.backward_program(ctx, &act, &g).unwrap());
            p.run(ctx).unwrap();
            let gpu = g.params.flat.read(ctx).unwrap();
            let eps = act.eps.read(ctx).unwrap();
            let params = f64s(&init);
            let (_, nll, kl) = twin_loss(
                cfg,
                &params,
                &x_h,
                &labels,
                batch,
                samples,
                &eps,
                beta as f64,
            );
            assert_close("nll", &act.nll.read(ctx).unwrap(), &nll, 1e-4, 1e-5);
            assert_close("kl", &act.kl.read(ctx).unwrap(), &kl, 1e-5, 1e-5);
            // The labels matter: other labels give another loss.
            let other: Vec<u32> = labels.iter().map(|&l| (l + 1) % classes as u32).collect();
            let (l0, _, _) = twin_loss(
                cfg,
                &params,
                &x_h,
                &labels,
                batch,
                samples,
                &eps,
                beta as f64,
            );
            let (l1, _, _) = twin_loss(
                cfg,
                &params,
                &x_h,
                &other,
                batch,
                samples,
                &eps,
                beta as f64,
            );
            assert!((l0 - l1).abs() > 1e-4, "labels do not change the loss");
            let h = 1e-5;
            let layout = cfg.layout();
            for spec in &layout.tensors {
                for i in 0..spec.len() {
                    let k = spec.offset + i;
                    let mut pp = params.clone();
                    pp[k] += h;
                    let up =
                        twin_loss(cfg, &pp, &x_h, &labels, batch, samples, &eps, beta as f64).0;
                    pp[k] -= 2.0 * h;
                    let down =
                        twin_loss(cfg, &pp, &x_h, &labels, batch, samples, &eps, beta as f64).0;
                    let fd = (up - down) / (2.0 * h);
                    let err = (gpu[k] as f64 - fd).abs();
                    assert!(
                        err <= 2e-5 + 1e-3 * fd.abs(),
                        "{} {}[{i}]: GPU {} vs finite difference {fd}",
                        cfg.arch.name(),
                        spec.name,
                        gpu[k]
                    );
                }
            }
        }
    }
}

fn train_conditional(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let out = wgvae()
        .args([
            "train",
            "--quiet",
            "--no-pictures",
            "--epochs",
            "1",
            "--conditional",
        ])
        .args(["--hidden", "16", "--latent", "3", "--batch", "32", "--data"])
        .arg(mnist())
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    run
}

#[test]
fn conditional_run_records_classes_and_samples_each_class() {
    let dir = scratch("cond", "run");
    let run = train_conditional(&dir);
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.model.classes, Some(10));
    assert_eq!(
        ck.run.get("conditional"),
        Some(&serde_json::Value::Bool(true))
    );
    // The label enters both networks: fc1 of the encoder takes 784 + 10 (→ 796) inputs, the
    // decoder's 3 + 10 (→ 16).
    let fc1 = ck.model.layout();
    assert_eq!(fc1.get("encoder.fc1.weight").unwrap().shape, vec![796, 16]);
    assert_eq!(fc1.get("decoder.fc1.weight").unwrap().shape, vec![16, 16]);

    // sample --class: one row per class.
    let png = dir.join("s.png");
    let npy = dir.join("z.npy");
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&run)
        .args(["--class", "3", "7", "--n", "4", "--out-png"])
        .arg(&png)
        .arg("--out-npy")
        .arg(&npy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sampled 8 codes"), "{}", text(&out));
    let (shape, _, z) = common::tool::npy_f32(&npy);
    assert_eq!(shape, "(8, 3)");
    assert!(z.iter().all(|v| v.is_finite()));
    // Both rows decode the same 4 codes.
    assert_eq!(z[..12], z[12..]);
    assert!(z[..3] != z[3..6]);
    let img = image_size(&png);
    // 4 columns and 2 rows of 28×28 images scaled 2×, 2-pixel gaps.
    assert_eq!(img, (4 * 56 + 5 * 2, 2 * 56 + 3 * 2), "{}", png.display());

    // The same z under two classes decodes to different images; under one class, the same.
    let ctx = ctx();
    let vae = Vae::new(ctx, &ck.model, &ck.params).unwrap();
    let code = &z[..3];
    let zz: Vec<f32> = [code, code, code].concat();
    let imgs = wgvae::tool::sample::decode_with_labels(ctx, &vae, &zz, &[3, 7, 3]).unwrap();
    let p = 784;
    let diff = |a: usize, b: usize| {
        imgs[a * p..(a + 1) * p]
            .iter()
            .zip(&imgs[b * p..(b + 1) * p])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        diff(0, 1) > 1e-3,
        "classes 3 and 7 decode alike: {}",
        diff(0, 1)
    );
    assert_eq!(diff(0, 2), 0.0);

    // Evaluation uses the test labels; without them it refuses.
    let split = wgvae::data::load_dir(&mnist()).unwrap();
    let ev = wgvae::eval::Evaluator::new(ctx, &vae, &split.test, 64, 0, 0).unwrap();
    let report = ev.run(ctx, vae.cfg.latent).unwrap();
    assert!(report.neg_elbo.is_finite() && report.neg_elbo > 0.0);
    let mut unlabelled = split.test.clone();
    unlabelled.labels = None;
    let err = wgvae::eval::Evaluator::new(ctx, &vae, &unlabelled, 64, 0, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("conditional model") && err.contains("labels"),
        "{err}"
    );

    // `wgvae eval` takes the labels with --labels, and refuses without them.
    let images = mnist().join("t10k-images-idx3-ubyte.gz");
    let labels = mnist().join("t10k-labels-idx1-ubyte.gz");
    let out = wgvae()
        .args(["eval", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(&images)
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("-ELBO"), "{}", text(&out));
    let out = wgvae()
        .args(["eval", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(&images)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("--labels") && !t.contains("panicked"),
        "{t}"
    );

    // Tools that would encode or decode without labels refuse.
    let lat = dir.join("one.npy");
    std::fs::copy(&npy, &lat).unwrap();
    let out = wgvae()
        .args(["decode", "--run"])
        .arg(&run)
        .arg("--latents")
        .arg(&lat)
        .arg("--out")
        .arg(dir.join("d.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("conditional model"), "{}", text(&out));
    let out = wgvae()
        .args(["encode", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(mnist().join("t10k-images-idx3-ubyte.gz"))
        .arg("--out")
        .arg(dir.join("enc"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("conditional model"), "{}", text(&out));

    // --resume rebuilds the same conditional model.
    let out = wgvae()
        .args([
            "train",
            "--quiet",
            "--no-pictures",
            "--epochs",
            "1",
            "--resume",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The built-in sprites carry labels (their shape): a conditional sprites model trains, draws
/// its 3 classes, and `encode` encodes each sprite under its own label.
#[test]
fn conditional_sprites_encode_with_their_labels() {
    let dir = scratch("cond", "sprites");
    let run = dir.join("run");
    let out = wgvae()
        .args([
            "train",
            "--quiet",
            "--no-pictures",
            "--epochs",
            "1",
            "--conditional",
        ])
        .args(["--hidden", "16", "--latent", "3", "--batch", "32"])
        .args(["--n-train", "96", "--n-test", "16", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.model.classes, Some(3));
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&run)
        .args(["--n", "2", "--out-png"])
        .arg(dir.join("s.png"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sampled 6 codes"), "{}", text(&out));
    let out = wgvae()
        .args(["encode", "--run"])
        .arg(&run)
        .args(["--sprites", "20", "--out"])
        .arg(dir.join("enc"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (shape, _, mu) = common::tool::npy_f32(&dir.join("enc").join("mu.npy"));
    assert_eq!(shape, "(20, 3)");
    assert!(mu.iter().all(|v| v.is_finite()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A configuration's classes are checked (0 and more than 256 are refused), and the
/// conditioning modules sit where the design puts them.
#[test]
fn classes_are_validated_and_placed() {
    for bad in [0, 257, usize::MAX] {
        let cfg = VaeConfig {
            classes: Some(bad),
            ..VaeConfig::classic(28, 28)
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(&format!("classes {bad}")), "{e}");
    }
    let cfg = VaeConfig {
        classes: Some(10),
        ..VaeConfig::conv(28, 28)
    };
    cfg.validate().unwrap();
    let (enc, dec) = cfg.networks().unwrap();
    let names = |n: &Sequential| {
        n.modules
            .iter()
            .map(|m| m.name().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&enc), ["conv1", "conv2", "cond", "fc1", "fc2"]);
    assert_eq!(names(&dec)[..2], ["cond", "fc1"]);
    // 64·7·7 + 10 = 3146 → 3148; latent 10 + 10 = 20.
    assert_eq!(enc.modules[2].out_features(), 3148);
    assert_eq!(dec.modules[0].out_features(), 20);
    // An unconditional configuration has no conditioning module, and its JSON no `classes`.
    let plain = VaeConfig::classic(28, 28);
    let (enc, dec) = plain.networks().unwrap();
    assert!(!names(&enc).contains(&"cond".to_string()));
    assert!(!names(&dec).contains(&"cond".to_string()));
    assert!(!serde_json::to_string(&plain).unwrap().contains("classes"));
}

/// (width, height) of a PNG from its IHDR chunk.
fn image_size(path: &Path) -> (usize, usize) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[1..4], b"PNG");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    (be(16), be(20))
}

#[test]
fn conditional_flag_errors() {
    let dir = scratch("cond", "errors");
    // --conditional on data without labels.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::copy(mnist().join(f), bare.join(f)).unwrap();
    }
    let out = wgvae()
        .args([
            "train",
            "--quiet",
            "--no-pictures",
            "--epochs",
            "1",
            "--conditional",
        ])
        .arg("--data")
        .arg(&bare)
        .arg("--out")
        .arg(dir.join("r0"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("--conditional") && t.contains("has no labels"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");

    // --class out of range for a conditional model.
    let run = train_conditional(&dir);
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&run)
        .args(["--class", "12", "--out-png"])
        .arg(dir.join("x.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("--class 12") && t.contains("0 to 9"), "{t}");

    // --from aggregate of a conditional model.
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&run)
        .args(["--from", "aggregate", "--images"])
        .arg(mnist().join("t10k-images-idx3-ubyte.gz"))
        .arg("--out-png")
        .arg(dir.join("x.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("conditional model"), "{}", text(&out));

    // --class on an unconditional model.
    let plain = common::tool::train(&dir.join("plain"), false);
    let out = wgvae()
        .args(["sample", "--run"])
        .arg(&plain)
        .args(["--class", "1", "--out-png"])
        .arg(dir.join("y.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("--class") && t.contains("not a conditional model"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_conditional_mlp_encoder_computes_no_unused_input_gradient() {
    // The label concatenation comes first in an MLP encoder; nothing upstream takes a
    // gradient, so its backward and fc1's input gradient are skipped: the encoder's backward is
    // as long as an unconditional one's.
    let ctx = ctx();
    let lengths: Vec<usize> = [Some(10), None]
        .into_iter()
        .map(|classes| {
            let cfg = VaeConfig {
                classes,
                ..VaeConfig::classic(7, 7)
            };
            let vae = Vae::new(ctx, &cfg, &cfg.init_params(1)).unwrap();
            let act = vae.activations(ctx, 3, 1).unwrap();
            let g = vae.gradients(ctx, &act).unwrap();
            let p = vae
                .encoder
                .backward(
                    ctx,
                    &vae.params,
                    &g.params,
                    &vae.layout,
                    GradWrite::Store,
                    &act.x,
                    &act.enc,
                    &g.enc,
                    None,
                )
                .unwrap();
            p.len()
        })
        .collect();
    assert_eq!(lengths[0], lengths[1], "conditional vs unconditional");
}
