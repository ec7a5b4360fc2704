//! `wgvae sample`, `reconstruct`, `decode` and `interpolate` on tiny trained models.

use std::path::{Path, PathBuf};

mod common;

use common::tool::{extent, fails, mnist, npy_f32, ok, png, tile, train};

fn scratch(name: &str) -> PathBuf {
    common::tool::scratch("generate", name)
}

/// An image of a data set as the PNG writers store it.
fn as_bytes(image: &[f32]) -> Vec<u8> {
    image
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// Writes `(rows, cols)` float64 values as a version 1 `.npy`.
fn write_npy_f64(path: &Path, rows: usize, cols: usize, v: &[f64]) {
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    for x in v {
        b.extend(x.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sprites_model_samples_reconstructs_decodes_and_interpolates() {
    let d = scratch("sprites");
    let run = train(&d, true);
    let run = s(&run);
    let side = wgvae::data::sprites::SIZE;
    let scale = if side <= 32 { 2 } else { 1 };
    let px = side * scale;
    let sprites = wgvae::data::sprites::generate(&wgvae::data::sprites::SpritesConfig {
        n_train: 0,
        n_test: 20,
        seed: 1,
    })
    .unwrap()
    .test;

    // Prior samples: a grid of ceil(sqrt(10)) = 4 columns, 3 rows, and the codes used.
    let (a_png, z_npy) = (d.join("a.png"), d.join("z.npy"));
    let base = ["sample", "--run", run, "--n", "10", "--seed", "3"];
    ok(&[&base[..], &["--out-png", s(&a_png), "--out-npy", s(&z_npy)]].concat());
    let a = png(&a_png);
    assert_eq!((a.0, a.1, a.2), (extent(4, px), extent(3, px), 1));
    let (shape, descr, z) = npy_f32(&z_npy);
    assert_eq!((shape.as_str(), descr.as_str()), ("(10, 3)", "<f4"));
    let mean = z.iter().map(|&v| v as f64).sum::<f64>() / 30.0;
    let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 29.0;
    assert!(
        mean.abs() < 0.6 && (0.4..2.0).contains(&var),
        "prior z: mean {mean} var {var}"
    );

    // The same codes decoded by `decode` give the same picture.
    let b_png = d.join("b.png");
    ok(&[
        "decode",
        "--run",
        run,
        "--latents",
        s(&z_npy),
        "--out",
        s(&b_png),
    ]);
    assert_eq!(
        png(&b_png),
        a,
        "decode of the sampled codes differs from sample's grid"
    );
    // The same codes as float64 too.
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let z64_npy = d.join("z64.npy");
    write_npy_f64(&z64_npy, 10, 3, &z64);
    ok(&[
        "decode",
        "--run",
        run,
        "--latents",
        s(&z64_npy),
        "--out",
        s(&b_png),
        "--force",
    ]);
    assert_eq!(
        png(&b_png),
        a,
        "float64 codes decode like their float32 values"
    );

    // Same seed, same codes; another seed, other codes; T = 0 is the prior's mean.
    ok(&[&base[..], &["--out-npy", s(&z_npy), "--force"]].concat());
    assert_eq!(npy_f32(&z_npy).2, z);
    ok(&[
        "sample",
        "--run",
        run,
        "--n",
        "10",
        "--seed",
        "4",
        "--out-npy",
        s(&z_npy),
        "--force",
    ]);
    assert_ne!(npy_f32(&z_npy).2, z);
    ok(&[
        "sample",
        "--run",
        run,
        "--n",
        "10",
        "--temperature",
        "0.5",
        "--seed",
        "3",
        "--out-npy",
        s(&z_npy),
        "--force",
    ]);
    let half = npy_f32(&z_npy).2;
    for (h, v) in half.iter().zip(&z) {
        assert!(
            (h - 0.5 * v).abs() < 1e-6,
            "T = 0.5 scales the prior draws: {h} vs {v}"
        );
    }

    // Aggregated posterior at T = 0: every code is the posterior mean of some input, the same
    // as `encode` gives.
    let enc = d.join("enc");
    ok(&["encode", "--run", run, "--sprites", "20", "--out", s(&enc)]);
    let mu = npy_f32(&enc.join("mu.npy")).2;
    let agg = d.join("agg.npy");
    ok(&[
        "sample",
        "--run",
        run,
        "--from",
        "aggregate",
        "--sprites",
        "20",
        "--n",
        "40",
        "--temperature",
        "0",
        "--out-npy",
        s(&agg),
    ]);
    let za = npy_f32(&agg).2;
    assert_eq!(za.len(), 120);
    let mut picked = std::collections::BTreeSet::new();
    for row in za.chunks(3) {
        let i = mu.chunks(3).position(|m| m == row);
        let Some(i) = i else {
            panic!("aggregate code {row:?} at T = 0 is no posterior mean");
        };
        picked.insert(i);
    }
    assert!(
        picked.len() >= 10,
        "40 uniform picks of 20 inputs hit only {picked:?}"
    );
    // At T = 1 the codes spread around the means: z − μᵢ are not all zero.
    ok(&[
        "sample",
        "--run",
        run,
        "--from",
        "aggregate",
        "--sprites",
        "20",
        "--n",
        "40",
        "--out-npy",
        s(&agg),
        "--force",
    ]);
    let z1 = npy_f32(&agg).2;
    assert!(z1.chunks(3).all(|row| mu.chunks(3).all(|m| m != row)));

    // The fitted Gaussian: codes with the mean and spread of the posterior means.
    let gz = d.join("gauss.npy");
    ok(&[
        "sample",
        "--run",
        run,
        "--from",
        "gaussian",
        "--sprites",
        "20",
        "--n",
        "2000",
        "--out-npy",
        s(&gz),
    ]);
    let zg = npy_f32(&gz).2;
    for k in 0..3 {
        let col = |v: &[f32]| -> (f64, f64) {
            let x: Vec<f64> = v.chunks(3).map(|r| r[k] as f64).collect();
            let m = x.iter().sum::<f64>() / x.len() as f64;
            let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
            (m, var)
        };
        let ((mm, mv), (gm, gv)) = (col(&mu), col(&zg));
        assert!(
            (gm - mm).abs() < 0.15 * mv.sqrt() + 1e-4,
            "dim {k}: mean {gm} vs {mm}"
        );
        assert!(
            gv > 0.8 * mv && gv < 1.25 * mv,
            "dim {k}: variance {gv} vs {mv}"
        );
    }

    // Reconstructions of inputs 2..20: rows of 16 and 2 inputs, each above its reconstructions.
    let rec = d.join("rec.png");
    ok(&[
        "reconstruct",
        "--run",
        run,
        "--sprites",
        "20",
        "--start",
        "2",
        "--n",
        "18",
        "--out",
        s(&rec),
    ]);
    let r = png(&rec);
    assert_eq!((r.0, r.1), (extent(16, px), extent(4, px)));
    assert_eq!(tile(&r, 0, 0, side, scale), as_bytes(&sprites.to_f32(2)));
    assert_eq!(tile(&r, 0, 15, side, scale), as_bytes(&sprites.to_f32(17)));
    assert_eq!(tile(&r, 2, 1, side, scale), as_bytes(&sprites.to_f32(19)));
    assert_ne!(tile(&r, 1, 0, side, scale), tile(&r, 0, 0, side, scale));
    fails(
        &[
            "reconstruct",
            "--run",
            run,
            "--sprites",
            "20",
            "--start",
            "10",
            "--n",
            "11",
            "--out",
            s(&d.join("r2.png")),
        ],
        &["--start 10", "20 inputs"],
    );

    // Interpolation: input 0, 6 decoded codes, input 5.
    let int = d.join("int.png");
    ok(&[
        "interpolate",
        "--run",
        run,
        "--sprites",
        "20",
        "--from",
        "0",
        "--to",
        "5",
        "--steps",
        "6",
        "--out",
        s(&int),
    ]);
    let i = png(&int);
    assert_eq!((i.0, i.1), (extent(8, px), extent(1, px)));
    assert_eq!(tile(&i, 0, 0, side, scale), as_bytes(&sprites.to_f32(0)));
    assert_eq!(tile(&i, 0, 7, side, scale), as_bytes(&sprites.to_f32(5)));
    let lin = d.join("lin.png");
    ok(&[
        "interpolate",
        "--run",
        run,
        "--sprites",
        "20",
        "--from",
        "0",
        "--to",
        "5",
        "--steps",
        "6",
        "--linear",
        "--out",
        s(&lin),
    ]);
    let l = png(&lin);
    assert_eq!((l.0, l.1), (i.0, i.1));
    fails(
        &[
            "interpolate",
            "--run",
            run,
            "--sprites",
            "20",
            "--from",
            "99",
            "--to",
            "1",
            "--out",
            s(&d.join("i2.png")),
        ],
        &["--from 99", "20 inputs"],
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn mnist_model_pictures_and_bad_requests() {
    let d = scratch("mnist");
    let run = train(&d, false);
    let run = s(&run);
    let images = mnist().join("t10k-images-idx3-ubyte.gz");
    let images = s(&images);
    let px = 28 * 2;

    // Gaussian samples from the test images' means: 5 images in 3 columns, 2 rows.
    let g = d.join("g.png");
    ok(&[
        "sample",
        "--run",
        run,
        "--from",
        "gaussian",
        "--images",
        images,
        "--n",
        "5",
        "--out-png",
        s(&g),
    ]);
    let gp = png(&g);
    assert_eq!((gp.0, gp.1, gp.2), (extent(3, px), extent(2, px), 1));
    let p = d.join("p.png");
    ok(&["sample", "--run", run, "--n", "16", "--out-png", s(&p)]);
    assert_eq!((png(&p).0, png(&p).1), (extent(4, px), extent(4, px)));

    let rec = d.join("rec.png");
    ok(&[
        "reconstruct",
        "--run",
        run,
        "--images",
        images,
        "--n",
        "3",
        "--out",
        s(&rec),
    ]);
    assert_eq!((png(&rec).0, png(&rec).1), (extent(3, px), extent(2, px)));
    let int = d.join("int.png");
    ok(&[
        "interpolate",
        "--run",
        run,
        "--images",
        images,
        "--from",
        "1",
        "--to",
        "2",
        "--out",
        s(&int),
    ]);
    assert_eq!((png(&int).0, png(&int).1), (extent(10, px), extent(1, px)));

    // An existing --out is kept unless --force.
    fails(
        &[
            "interpolate",
            "--run",
            run,
            "--images",
            images,
            "--from",
            "1",
            "--to",
            "2",
            "--out",
            s(&int),
        ],
        &[s(&int), "--force"],
    );
    ok(&[
        "interpolate",
        "--run",
        run,
        "--images",
        images,
        "--from",
        "2",
        "--to",
        "1",
        "--out",
        s(&int),
        "--force",
    ]);
    fails(
        &["sample", "--run", run, "--n", "4", "--out-png", s(&p)],
        &[s(&p), "--force"],
    );

    // Codes of the wrong size: the file and both sizes are named.
    let wrong = d.join("wrong.npy");
    write_npy_f64(&wrong, 4, 5, &[0.0; 20]);
    fails(
        &[
            "decode",
            "--run",
            run,
            "--latents",
            s(&wrong),
            "--out",
            s(&d.join("w.png")),
        ],
        &[s(&wrong), "size 5", "3 latent dimensions"],
    );
    fails(
        &[
            "decode",
            "--run",
            run,
            "--latents",
            s(&d.join("none.npy")),
            "--out",
            s(&d.join("w.png")),
        ],
        &["--latents", "none.npy"],
    );
    assert!(!d.join("w.png").exists());

    // A run without a checkpoint.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let ck = empty.join("checkpoint.safetensors");
    fails(
        &[
            "sample",
            "--run",
            s(&empty),
            "--n",
            "4",
            "--out-png",
            s(&d.join("x.png")),
        ],
        &[s(&ck)],
    );
    fails(
        &[
            "decode",
            "--run",
            s(&empty),
            "--latents",
            s(&wrong),
            "--out",
            s(&d.join("x.png")),
        ],
        &[s(&ck)],
    );
    fails(
        &[
            "reconstruct",
            "--run",
            s(&empty),
            "--images",
            images,
            "--out",
            s(&d.join("x.png")),
        ],
        &[s(&ck)],
    );
    fails(
        &[
            "interpolate",
            "--run",
            s(&empty),
            "--images",
            images,
            "--from",
            "0",
            "--to",
            "1",
            "--out",
            s(&d.join("x.png")),
        ],
        &[s(&ck)],
    );
    // A checkpoint for another image size.
    fails(
        &[
            "reconstruct",
            "--run",
            run,
            "--sprites",
            "10",
            "--out",
            s(&d.join("x.png")),
        ],
        &["--sprites", "28"],
    );

    // Bad flags.
    fails(
        &["sample", "--run", run, "--n", "4"],
        &["--out-png", "--out-npy"],
    );
    fails(
        &[
            "sample",
            "--run",
            run,
            "--n",
            "0",
            "--out-png",
            s(&d.join("x.png")),
        ],
        &["--n 0"],
    );
    fails(
        &[
            "sample",
            "--run",
            run,
            "--n",
            "70000",
            "--out-png",
            s(&d.join("x.png")),
        ],
        &["--n 70000"],
    );
    fails(
        &[
            "sample",
            "--run",
            run,
            "--temperature",
            "-1",
            "--out-png",
            s(&d.join("x.png")),
        ],
        &["--temperature -1"],
    );
    fails(
        &[
            "sample",
            "--run",
            run,
            "--from",
            "aggregate",
            "--out-png",
            s(&d.join("x.png")),
        ],
        &["--images", "--sprites"],
    );
    fails(
        &[
            "interpolate",
            "--run",
            run,
            "--images",
            images,
            "--from",
            "0",
            "--to",
            "1",
            "--steps",
            "1",
            "--out",
            s(&d.join("x.png")),
        ],
        &["--steps 1"],
    );
    assert!(!d.join("x.png").exists());
    let _ = std::fs::remove_dir_all(d);
}
