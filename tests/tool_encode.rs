//! `wgvae encode`: posterior means, standard deviations, draws and sprite factors as `.npy`.

use std::path::PathBuf;

mod common;

use common::tool::{f32s, mnist, npy, text, train, wgvae};

fn scratch(name: &str) -> PathBuf {
    common::tool::scratch("encode", name)
}

#[test]
fn sprites_are_encoded_with_their_factors() {
    let d = scratch("sprites");
    let run = train(&d, true);
    let out_dir = d.join("latents");
    let encode = |extra: &[&str]| {
        wgvae()
            .args(["encode", "--sprites", "50", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&out_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = encode(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("encoded 50 inputs into 3 latent"),
        "{}",
        text(&out)
    );
    let (shape, descr, mu) = npy(&out_dir.join("mu.npy"));
    assert_eq!((shape.as_str(), descr.as_str()), ("(50, 3)", "<f4"));
    let mu = f32s(&mu);
    let sigma = f32s(&npy(&out_dir.join("sigma.npy")).2);
    let z = f32s(&npy(&out_dir.join("z.npy")).2);
    assert_eq!((mu.len(), sigma.len(), z.len()), (150, 150, 150));
    assert!(sigma.iter().all(|&s| s > 0.0 && s.is_finite()));
    // z = μ + σ·ε with ε standard normal: the standardised draws look like N(0, 1).
    let eps: Vec<f64> = (0..150)
        .map(|i| ((z[i] - mu[i]) / sigma[i]) as f64)
        .collect();
    let mean = eps.iter().sum::<f64>() / 150.0;
    let var = eps.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / 149.0;
    assert!(
        mean.abs() < 0.3 && (0.6..1.5).contains(&var),
        "ε mean {mean}, var {var}"
    );
    let (fshape, fdescr, f) = npy(&out_dir.join("factors.npy"));
    assert_eq!((fshape.as_str(), fdescr.as_str()), ("(50, 5)", "<i8"));
    let classes: Vec<i64> = f
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for row in classes.chunks(5) {
        for (k, &c) in row.iter().enumerate() {
            assert!((0..wgvae::data::sprites::FACTOR_SIZES[k] as i64).contains(&c));
        }
    }
    // The same as the training data's generator gives for that seed.
    let want = wgvae::data::sprites::generate(&wgvae::data::sprites::SpritesConfig {
        n_train: 0,
        n_test: 50,
        seed: 1,
    })
    .unwrap();
    let want: Vec<i64> = want
        .test
        .factors
        .unwrap()
        .classes
        .iter()
        .map(|&c| c as i64)
        .collect();
    assert_eq!(classes, want);
    assert_eq!(npy(&out_dir.join("factor_values.npy")).0, "(50, 5)");

    // Existing files are kept unless --force; the draws depend on --seed only.
    let again = encode(&[]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("mu.npy") && text(&again).contains("--force"),
        "{}",
        text(&again)
    );
    let forced = encode(&["--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(
        f32s(&npy(&out_dir.join("z.npy")).2),
        z,
        "same seed, same draws"
    );
    let other = encode(&["--force", "--seed", "7"]);
    assert!(other.status.success(), "{}", text(&other));
    assert_eq!(
        f32s(&npy(&out_dir.join("mu.npy")).2),
        mu,
        "μ does not depend on the seed"
    );
    assert_ne!(
        f32s(&npy(&out_dir.join("z.npy")).2),
        z,
        "another seed, other draws"
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn image_files_are_encoded_and_bad_requests_named() {
    let d = scratch("images");
    let run = train(&d, false);
    let out_dir = d.join("latents");
    let images = mnist().join("t10k-images-idx3-ubyte.gz");
    let out = wgvae()
        .args(["encode", "--run"])
        .arg(&run)
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (shape, _, _) = npy(&out_dir.join("z.npy"));
    assert!(shape.ends_with(", 3)"), "{shape}");
    assert!(
        !out_dir.join("factors.npy").exists(),
        "MNIST has no factors"
    );

    let fail = |args: &[&std::ffi::OsStr], want: &str| {
        let out = wgvae().arg("encode").args(args).output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{args:?} accepted:\n{t}");
        assert!(t.contains(want), "{args:?}: message lacks `{want}`:\n{t}");
        assert!(!t.contains("panicked"), "{t}");
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let o = out_dir.join("x");
    let (run_s, o_s) = (run.clone().into_os_string(), o.clone().into_os_string());
    // Sprites on a 28x28 model; a run without a checkpoint; a missing image file; no input.
    fail(
        &[
            &os("--run"),
            &run_s,
            &os("--sprites"),
            &os("10"),
            &os("--out"),
            &o_s,
        ],
        "1x64x64",
    );
    fail(
        &[
            &os("--run"),
            d.as_os_str(),
            &os("--sprites"),
            &os("10"),
            &os("--out"),
            &o_s,
        ],
        "checkpoint.safetensors",
    );
    fail(
        &[
            &os("--run"),
            &run_s,
            &os("--images"),
            &os("nope.idx"),
            &os("--out"),
            &o_s,
        ],
        "nope.idx",
    );
    fail(&[&os("--run"), &run_s, &os("--out"), &o_s], "--sprites");
    assert!(!o.exists(), "nothing written on error");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn traversals_of_any_checkpoint_by_decreasing_kl() {
    let d = scratch("traverse");
    let run = train(&d, true);
    let png = d.join("t.png");
    let traverse = |extra: &[&str]| {
        wgvae()
            .args(["traverse", "--sprites", "20", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&png)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = traverse(&["--index", "2", "--steps", "5"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // One row per latent dimension (3), by decreasing KL.
    let kls: Vec<f64> = t
        .lines()
        .filter(|l| l.trim_start().starts_with("row "))
        .map(|l| {
            let kl = l.split("(KL ").nth(1).unwrap();
            kl.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(kls.len(), 3, "{t}");
    assert!(kls.windows(2).all(|w| w[0] >= w[1]), "{kls:?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap().info().clone();
    assert!(
        info.height > 3 * 64 && info.height < 4 * 64,
        "{}",
        info.height
    );
    assert!(info.width > 5 * 64 && info.width < 6 * 64, "{}", info.width);
    for (extra, want) in [
        (&["--index", "2"][..], "--force"),
        (
            &["--index", "20", "--force"][..],
            "--index 20: the set has 20",
        ),
        (&["--steps", "1", "--force"][..], "--steps 1"),
    ] {
        let out = traverse(extra);
        assert!(!out.status.success(), "{extra:?} accepted");
        assert!(text(&out).contains(want), "{extra:?}: {}", text(&out));
    }
    let _ = std::fs::remove_dir_all(d);
}
