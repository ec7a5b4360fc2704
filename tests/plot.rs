//! Charts of a run: PNG files of the right size with something drawn on them, atomic writes,
//! and clear errors for bad metrics files. No GPU is needed.

use std::path::{Path, PathBuf};

use wgvae::plot::{HEIGHT, WIDTH, bar_chart_png, line_chart_png, panels_height, run_charts};

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgvae-plot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decodes an 8-bit RGB PNG: (width, height, pixels).
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{}", path.display());
    let px = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

/// The chart at `path` has the chart size (`terms.png`: two panels), is not blank, and has
/// pixels close to `colour`.
fn assert_chart(path: &Path, colour: [u8; 3]) -> Vec<[u8; 3]> {
    let (w, h, px) = decode(path);
    let panels = if path.ends_with("terms.png") { 2 } else { 1 };
    assert_eq!((w, h), (WIDTH, panels_height(panels)), "{}", path.display());
    assert!(
        px.iter().any(|p| *p != px[0]),
        "{}: every pixel has the same colour",
        path.display()
    );
    let near = |p: &[u8; 3]| {
        p.iter()
            .zip(colour)
            .all(|(a, b)| (i32::from(*a) - i32::from(b)).abs() <= 8)
    };
    let n = px.iter().filter(|p| near(p)).count();
    assert!(
        n >= 50,
        "{}: only {n} pixels of colour {colour:?}",
        path.display()
    );
    px
}

const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];
const RED: [u8; 3] = [214, 39, 40];

fn metrics_line(epoch: usize, iwae: Option<f64>, kl: &[f64]) -> String {
    let e = epoch as f64;
    serde_json::json!({
        "epoch": epoch,
        "step": epoch * 46,
        "train_loss": 280.0 / e + 90.0,
        "train_recon": 260.0 / e + 80.0,
        "train_kl": 10.0 + e,
        "train_tc": -1.5 + 0.2 * e,
        "test_neg_elbo": 200.0 / e + 95.0,
        "test_recon": 190.0 / e + 85.0,
        "test_kl": 9.0 + e,
        "test_neg_iwae": iwae,
        "iwae_k": iwae.map(|_| 50),
        "active_units": 4 + epoch,
        "test_kl_per_dim": kl,
        "train_seconds": 10.0,
        "samples_per_second": 600.0,
    })
    .to_string()
}

fn write_metrics(dir: &Path, epochs: usize) {
    let kl = [2.5, 0.01, 1.25, 0.0, 3.75, 0.5, 0.002];
    let text: String = (1..=epochs)
        .map(|e| {
            let iwae = (e == epochs).then_some(100.0);
            metrics_line(e, iwae, &kl) + "\n"
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn run_charts_writes_every_chart() {
    let dir = scratch("run");
    write_metrics(&dir, 12);
    let files = run_charts(&dir).unwrap();
    assert_eq!(
        names(&files),
        [
            "curves.png",
            "terms.png",
            "active_units.png",
            "kl_per_dim.png"
        ]
    );
    for f in &files {
        assert_eq!(f.parent(), Some(dir.as_path()));
        // Every line chart has its first series in blue and the second in orange.
        assert_chart(f, BLUE);
    }
    for f in &files[..2] {
        assert_chart(f, ORANGE);
    }
    assert_eq!(panels_height(1), HEIGHT);
    assert!(panels_height(2) > HEIGHT);
    // Written atomically: nothing but the metrics and the charts is left behind.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "active_units.png",
            "curves.png",
            "kl_per_dim.png",
            "metrics.jsonl",
            "terms.png"
        ]
    );
    // Charts are redrawn in place on a second call.
    assert_eq!(run_charts(&dir).unwrap(), files);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_charts_with_one_epoch_and_without_kl_per_dim() {
    let dir = scratch("one");
    let mut line: serde_json::Value = serde_json::from_str(&metrics_line(1, None, &[])).unwrap();
    line.as_object_mut().unwrap().remove("test_kl_per_dim");
    std::fs::write(dir.join("metrics.jsonl"), format!("{line}\n\n")).unwrap();
    let files = run_charts(&dir).unwrap();
    assert_eq!(
        names(&files),
        ["curves.png", "terms.png", "active_units.png"]
    );
    for f in &files {
        // A single epoch still shows as a marker.
        assert_chart(f, BLUE);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bar_chart_with_negative_values() {
    let dir = scratch("neg");
    let path = dir.join("bars.png");
    let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    bar_chart_png(
        &path,
        "Mixed signs",
        &labels,
        &[1.5, -0.75, 0.25, f64::NAN],
        "value",
    )
    .unwrap();
    assert_chart(&path, BLUE);
    assert_chart(&path, RED);
    // All negative: the bars hang from zero.
    bar_chart_png(&path, "Negative", &labels[..2], &[-1.0, -3.0], "value").unwrap();
    let px = assert_chart(&path, RED);
    assert!(!px.contains(&BLUE), "no bar is positive");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Heights in pixels of the runs of columns holding `colour`, left to right.
fn bar_heights(px: &[[u8; 3]], colour: [u8; 3]) -> Vec<usize> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut bars = Vec::new();
    let mut current = 0;
    for x in 0..w {
        let n = (0..h).filter(|y| px[y * w + x] == colour).count();
        if n > 0 {
            current = current.max(n);
        } else if current > 0 {
            bars.push(current);
            current = 0;
        }
    }
    if current > 0 {
        bars.push(current);
    }
    bars
}

#[test]
fn bar_heights_follow_the_values_in_order() {
    let dir = scratch("heights");
    let path = dir.join("bars.png");
    let values = [1.0, 3.0, 2.0, 4.0, 0.5];
    let labels: Vec<String> = (0..values.len()).map(|i| format!("z{i}")).collect();
    bar_chart_png(&path, "Heights", &labels, &values, "value").unwrap();
    let (_, _, px) = decode(&path);
    let heights = bar_heights(&px, BLUE);
    assert_eq!(heights.len(), values.len(), "{heights:?}");
    // Heights are proportional to the values (the axis starts at zero).
    let per_unit = heights[3] as f64 / 4.0;
    for (h, v) in heights.iter().zip(values) {
        assert!(
            (*h as f64 - v * per_unit).abs() <= 2.0,
            "bar heights {heights:?} for values {values:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bar_chart_with_a_single_bar_and_with_many() {
    let dir = scratch("single");
    let path = dir.join("one.png");
    bar_chart_png(&path, "One bar", &["z0".to_string()], &[0.5], "KL (nats)").unwrap();
    assert_chart(&path, BLUE);
    let huge = dir.join("huge.png");
    let two = ["a".to_string(), "b".to_string()];
    bar_chart_png(&huge, "Huge", &two, &[1e308, -1e308], "v").unwrap();
    decode(&huge);
    let zero = dir.join("zero.png");
    bar_chart_png(&zero, "Zero", &["z0".to_string()], &[0.0], "KL (nats)").unwrap();
    decode(&zero);
    let many = dir.join("many.png");
    let labels: Vec<String> = (0..200).map(|i| format!("z{i}")).collect();
    let values: Vec<f64> = (0..200).map(|i| f64::from(i % 7)).collect();
    bar_chart_png(&many, "Many bars", &labels, &values, "KL (nats)").unwrap();
    assert_chart(&many, BLUE);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bar_chart_rejects_mismatched_or_empty_input() {
    let dir = scratch("badbars");
    let path = dir.join("bad.png");
    let e = bar_chart_png(&path, "t", &["a".to_string()], &[1.0, 2.0], "v").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.png") && msg.contains("1 labels for 2 values"),
        "{msg}"
    );
    let e = bar_chart_png(&path, "t", &[], &[], "v").unwrap_err();
    assert!(e.to_string().contains("no bars"), "{e}");
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn line_chart_skips_nan_points() {
    let dir = scratch("lines");
    let path = dir.join("lines.png");
    let series = vec![
        (
            "with a gap".to_string(),
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0), (3.0, 2.0)],
        ),
        (
            "second".to_string(),
            vec![(0.0, -1.0), (f64::NAN, 0.0), (3.0, 0.5)],
        ),
    ];
    line_chart_png(&path, "Gaps", "x", &series, "y").unwrap();
    assert_chart(&path, BLUE);
    assert_chart(&path, ORANGE);
    // Extreme ranges draw (without ticks where `f64` cannot place them) rather than fail.
    let extreme = vec![
        ("wide".to_string(), vec![(0.0, -1e308), (1.0, 1e308)]),
        ("far".to_string(), vec![(2.0, 1e300), (3.0, 1e300 + 1e285)]),
    ];
    line_chart_png(&path, "Extremes", "x", &extreme, "y").unwrap();
    decode(&path);
    let nothing = vec![("nan".to_string(), vec![(0.0, f64::NAN)])];
    let e = line_chart_png(&path, "Empty", "x", &nothing, "y").unwrap_err();
    assert!(e.to_string().contains("no finite points"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `run_charts`' error for a metrics file holding `text`.
fn metrics_error(name: &str, text: Option<&str>) -> String {
    let dir = scratch(name);
    if let Some(t) = text {
        std::fs::write(dir.join("metrics.jsonl"), t).unwrap();
    }
    let msg = run_charts(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("metrics.jsonl"),
        "the error names the file: {msg}"
    );
    let pngs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 0, "no chart is written from a bad file");
    std::fs::remove_dir_all(&dir).unwrap();
    msg
}

#[test]
fn bad_metrics_files_give_errors_naming_the_file() {
    let msg = metrics_error("missing", None);
    assert!(msg.contains("cannot read"), "{msg}");

    let good = metrics_line(1, None, &[1.0]);
    let msg = metrics_error("badjson", Some(&format!("{good}\n{{\"epoch\": 2,\n")));
    assert!(msg.contains("line 2 is not JSON"), "{msg}");

    let msg = metrics_error("empty", Some(""));
    assert!(msg.contains("no epochs"), "{msg}");
    let msg = metrics_error("blank", Some("\n  \n"));
    assert!(msg.contains("no epochs"), "{msg}");

    let msg = metrics_error("array", Some("[1, 2]\n"));
    assert!(msg.contains("line 1 is not a JSON object"), "{msg}");

    let msg = metrics_error("noepoch", Some("{\"train_loss\": 1.0}\n"));
    assert!(msg.contains("line 1: field `epoch`"), "{msg}");

    let msg = metrics_error(
        "badfield",
        Some(&format!(
            "{good}\n{good}\n{{\"epoch\": 3, \"test_kl\": \"x\"}}\n"
        )),
    );
    assert!(msg.contains("line 3: field `test_kl`"), "{msg}");

    let msg = metrics_error(
        "badkl",
        Some("{\"epoch\": 1, \"test_kl_per_dim\": [1.0, \"a\"]}\n"),
    );
    assert!(msg.contains("line 1: field `test_kl_per_dim`"), "{msg}");
}

#[test]
fn cli_plot_writes_and_lists_the_charts() {
    let dir = scratch("cli");
    write_metrics(&dir, 5);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgvae"))
        .arg("plot")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    for name in [
        "curves.png",
        "terms.png",
        "active_units.png",
        "kl_per_dim.png",
    ] {
        let path = dir.join(name);
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        assert_chart(&path, BLUE);
    }

    // A directory without metrics: a one-line error naming the file, exit status 1.
    let empty = scratch("cli-empty");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgvae"))
        .arg("plot")
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("metrics.jsonl"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}
