//! `wgvae anomaly`: score every input of an image file by how unlikely the model finds it —
//! the importance-sampled −log p(x) with k samples (the −IWAE bound, batched on the GPU), or
//! the cheaper −ELBO — and, given class labels and the classes the model saw as normal, how
//! well the score separates the other classes (AUROC) with a histogram of the two groups.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cli::{images_for_run, open_context};
use crate::eval::Evaluator;
use crate::model::Vae;
use crate::train::checkpoint::{self, Checkpoint};

/// A set of class labels (0..=255), written `0-8`, `0,1,2` or `0-3,7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSet(pub Vec<u8>);

impl ClassSet {
    pub fn contains(&self, label: u8) -> bool {
        self.0.binary_search(&label).is_ok()
    }
}

impl FromStr for ClassSet {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let class = |t: &str| {
            t.trim().parse::<u8>().map_err(|_| {
                format!("`{t}` in `{s}` is not a class label (a whole number 0 to 255)")
            })
        };
        let mut out = Vec::new();
        for part in s.split(',') {
            if part.trim().is_empty() {
                return Err(format!(
                    "`{s}`: empty item; write classes as 0-8, 0,1,2 or 0-3,7"
                ));
            }
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (class(a)?, class(b)?);
                    if a > b {
                        return Err(format!("`{part}` in `{s}`: the range runs backwards"));
                    }
                    out.extend(a..=b);
                }
                None => out.push(class(part)?),
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(ClassSet(out))
    }
}

impl fmt::Display for ClassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Flags of `wgvae anomaly`.
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example (a model trained with --classes 0-8, scored on all ten digits):\n  \
    wgvae anomaly --run runs/mnist-0-8 --images t10k-images-idx3-ubyte.gz \\\n    \
    --labels t10k-labels-idx1-ubyte.gz --normal 0-8 --out scores.csv --hist scores.png\n\n\
    Writes a CSV `index,label,score` (score in nats, higher = more anomalous; the label column \
    is empty without --labels). With --labels and --normal, prints the AUROC of the score for \
    \"the other classes are anomalous\" and the mean score of each group."
)]
pub struct AnomalyArgs {
    /// Run directory holding checkpoint.safetensors
    #[arg(long)]
    pub run: PathBuf,
    /// Image file (IDX, .gz or raw, or a .npy array of images)
    #[arg(long)]
    pub images: PathBuf,
    /// Class labels of the images (IDX labels file, .gz or raw, or a .npy array)
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The classes that are normal (e.g. 0-8 or 0,1,2); the others are anomalous. Needs --labels
    #[arg(long, requires = "labels")]
    pub normal: Option<ClassSet>,
    /// Importance samples per input for −log p(x) (default 100)
    #[arg(long, allow_negative_numbers = true, conflicts_with = "elbo")]
    pub k: Option<usize>,
    /// Score by the −ELBO instead (one sample; cheaper, a looser bound)
    #[arg(long)]
    pub elbo: bool,
    /// The scores as CSV
    #[arg(long)]
    pub out: PathBuf,
    /// A histogram of the scores (normal vs anomalous with --normal) as PNG
    #[arg(long)]
    pub hist: Option<PathBuf>,
    /// Replace existing output files
    #[arg(long)]
    pub force: bool,
    /// Seed of the samples
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
}

/// Default importance samples.
pub const DEFAULT_K: usize = 100;

/// Images per −ELBO batch (the IWAE batches are sized by memory, see [`Evaluator::new`]).
const BATCH: usize = 500;

/// The separation of normal and anomalous inputs.
#[derive(Clone, Debug)]
pub struct Separation {
    pub normal: ClassSet,
    pub n_normal: usize,
    pub n_anomalous: usize,
    pub auroc: f64,
    pub mean_normal: f64,
    pub mean_anomalous: f64,
}

/// What `anomaly` computed and wrote.
#[derive(Clone, Debug)]
pub struct AnomalyReport {
    /// "−log p(x), IWAE k = 100" or "−ELBO".
    pub score_name: String,
    pub scores: Vec<f32>,
    pub mean: f64,
    pub separation: Option<Separation>,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for AnomalyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scored {} inputs by {} (nats; higher = more anomalous): mean {:.3}",
            self.scores.len(),
            self.score_name,
            self.mean
        )?;
        if let Some(s) = &self.separation {
            writeln!(
                f,
                "normal classes {}: {} inputs, mean score {:.3}",
                s.normal, s.n_normal, s.mean_normal
            )?;
            writeln!(
                f,
                "other classes: {} inputs, mean score {:.3}",
                s.n_anomalous, s.mean_anomalous
            )?;
            writeln!(f, "AUROC {:.4}", s.auroc)?;
        }
        for p in &self.files {
            writeln!(f, "wrote {}", p.display())?;
        }
        Ok(())
    }
}

/// Area under the ROC curve of `scores` for telling `positive` inputs from the others (a
/// higher score = more likely positive): the Mann–Whitney statistic from ranks, ties given
/// their average rank. `None` when either group is empty or a score is not finite.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = scores.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j + 2) as f64 / 2.0;
        let pos_here = order[i..=j].iter().filter(|&&k| positive[k]).count();
        rank_sum += mean_rank * pos_here as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Refuses to replace `path` unless `force`; creates its directory.
fn prepare(path: &Path, flag: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{flag} {}: the file exists; pass --force to replace it",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{flag}: creating {}", dir.display()))?;
    }
    Ok(())
}

pub fn run(args: &AnomalyArgs) -> Result<AnomalyReport> {
    let k = match (args.elbo, args.k) {
        (true, _) => 0,
        (false, k) => k.unwrap_or(DEFAULT_K),
    };
    if !args.elbo && !(1..=crate::train::MAX_COUNT).contains(&k) {
        bail!("--k {k}: must be between 1 and {}", crate::train::MAX_COUNT);
    }
    let ck_path = args.run.join(checkpoint::FILE_NAME);
    let ck = Checkpoint::load(&ck_path)?;
    let (mut set, _) = images_for_run(&ck, &ck_path, &args.images)?;
    let labels = match &args.labels {
        Some(path) => {
            let labels = super::read_labels(path, "--labels")?;
            if labels.len() != set.n {
                bail!(
                    "--labels {}: {} labels, but --images {} has {} images; the counts must match",
                    path.display(),
                    labels.len(),
                    args.images.display(),
                    set.n
                );
            }
            Some(labels)
        }
        None => None,
    };
    if let (Some(normal), Some(labels)) = (&args.normal, &labels) {
        let missing: Vec<String> = normal
            .0
            .iter()
            .filter(|&&c| !labels.contains(&c))
            .map(|c| c.to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "--normal {normal}: class(es) {} do not occur in --labels {}",
                missing.join(", "),
                args.labels.as_deref().unwrap_or(Path::new("")).display()
            );
        }
        if labels.iter().all(|&l| normal.contains(l)) {
            bail!("--normal {normal}: every input's label is normal; no anomalous class to score");
        }
    }
    prepare(&args.out, "--out", args.force)?;
    if let Some(h) = &args.hist {
        prepare(h, "--hist", args.force)?;
    }

    // A conditional model scores each input under its own label (the evaluator refuses it
    // without --labels).
    if ck.model.classes.is_some() {
        set.labels = labels.clone();
    }
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let ev = Evaluator::new(&ctx, &vae, &set, BATCH, k, args.seed)?;
    let (neg_elbo, neg_iwae) = ev.per_image(&ctx, !args.elbo)?;
    let (scores, score_name) = match neg_iwae {
        Some(s) => (s, format!("−log p(x), IWAE k = {k}")),
        None => (neg_elbo, "−ELBO".to_string()),
    };
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!(
            "{}: input {i} got a non-finite score ({}); the model in {} may have diverged",
            args.images.display(),
            scores[i],
            ck_path.display()
        );
    }
    let mean = mean_of(scores.iter().copied());

    let separation = match (&args.normal, &labels) {
        (Some(normal), Some(labels)) => {
            let anomalous: Vec<bool> = labels.iter().map(|&l| !normal.contains(l)).collect();
            let auroc = auroc(&scores, &anomalous)
                .context("the AUROC needs finite scores and inputs of both groups")?;
            let pick = |want: bool| {
                scores
                    .iter()
                    .zip(&anomalous)
                    .filter(move |(_, a)| **a == want)
                    .map(|(s, _)| *s)
            };
            Some(Separation {
                normal: normal.clone(),
                n_normal: pick(false).count(),
                n_anomalous: pick(true).count(),
                auroc,
                mean_normal: mean_of(pick(false)),
                mean_anomalous: mean_of(pick(true)),
            })
        }
        _ => None,
    };

    write_csv(&args.out, &scores, labels.as_deref())?;
    let mut files = vec![args.out.clone()];
    if let Some(h) = &args.hist {
        let groups: Vec<(String, Vec<f32>)> = match (&separation, &labels) {
            (Some(s), Some(labels)) => {
                let split = |want: bool| -> Vec<f32> {
                    scores
                        .iter()
                        .zip(labels)
                        .filter(|(_, l)| s.normal.contains(**l) != want)
                        .map(|(v, _)| *v)
                        .collect()
                };
                vec![
                    (format!("normal ({})", s.normal), split(false)),
                    ("anomalous (other classes)".to_string(), split(true)),
                ]
            }
            _ => vec![("all inputs".to_string(), scores.clone())],
        };
        histogram_png(
            h,
            &format!("Anomaly scores: {score_name}"),
            "score (nats)",
            &groups,
            HIST_BINS,
        )?;
        files.push(h.clone());
    }
    Ok(AnomalyReport {
        score_name,
        scores,
        mean,
        separation,
        files,
    })
}

fn mean_of(v: impl Iterator<Item = f32>) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for x in v {
        sum += x as f64;
        n += 1;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

fn write_csv(path: &Path, scores: &[f32], labels: Option<&[u8]>) -> Result<()> {
    let mut body = Vec::with_capacity(scores.len() * 16 + 32);
    writeln!(body, "index,label,score")?;
    for (i, s) in scores.iter().enumerate() {
        match labels {
            Some(l) => writeln!(body, "{i},{},{s}", l[i])?,
            None => writeln!(body, "{i},,{s}")?,
        }
    }
    checkpoint::write_atomic(path, &body).with_context(|| format!("writing {}", path.display()))
}

/// Bins of the histogram.
const HIST_BINS: usize = 40;

/// A histogram of each group of values on shared bins over the range of all of them, as step
/// outlines in one colour per group; each group's bars give the share of its own values in the
/// bin, so groups of different sizes compare.
pub fn histogram_png(
    path: &Path,
    title: &str,
    x_label: &str,
    groups: &[(String, Vec<f32>)],
    bins: usize,
) -> Result<()> {
    let all = groups.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v as f64), hi.max(v as f64))
    });
    if !lo.is_finite() || !hi.is_finite() || bins == 0 {
        bail!("{}: no finite values to draw", path.display());
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let series: Vec<(String, Vec<(f64, f64)>)> = groups
        .iter()
        .map(|(name, values)| {
            let mut counts = vec![0usize; bins];
            for &v in values {
                let b = (((v as f64 - lo) / width) as usize).min(bins - 1);
                counts[b] += 1;
            }
            let total = values.len().max(1) as f64;
            let mut pts = vec![(lo, 0.0)];
            for (b, &c) in counts.iter().enumerate() {
                let (x0, x1) = (lo + b as f64 * width, lo + (b + 1) as f64 * width);
                let y = c as f64 / total;
                pts.extend([(x0, y), (x1, y)]);
            }
            pts.push((lo + bins as f64 * width, 0.0));
            (format!("{name}, n = {}", values.len()), pts)
        })
        .collect();
    crate::plot::line_chart_png(path, title, x_label, &series, "share of the group per bin")
        .with_context(|| format!("drawing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_by_ranks_with_ties() {
        // Positives 0.9, 0.5, 0.5; negatives 0.5, 0.1. Pairs (pos > neg = 1, tie = ½):
        // 0.9: 1 + 1; 0.5: ½ + 1; 0.5: ½ + 1 → 5 of 6.
        let s = [0.9, 0.5, 0.5, 0.5, 0.1];
        let p = [true, true, true, false, false];
        let a = auroc(&s, &p).unwrap();
        assert!((a - 5.0 / 6.0).abs() < 1e-12, "{a}");
        // Perfect separation, reversed, and all tied.
        assert_eq!(auroc(&[3.0, 4.0, 1.0], &[true, true, false]), Some(1.0));
        assert_eq!(auroc(&[3.0, 4.0, 1.0], &[false, false, true]), Some(0.0));
        assert_eq!(auroc(&[2.0, 2.0, 2.0], &[true, false, false]), Some(0.5));
        // Pairwise count on a larger case agrees with the rank formula.
        let s: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32).collect();
        let p: Vec<bool> = (0..50).map(|i| (i * 13) % 3 == 0).collect();
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for i in 0..50 {
            for j in 0..50 {
                if p[i] && !p[j] {
                    pairs += 1.0;
                    wins += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auroc(&s, &p).unwrap() - wins / pairs).abs() < 1e-12);
        assert_eq!(auroc(&[1.0, 2.0], &[true, true]), None);
        assert_eq!(auroc(&[f32::NAN, 2.0], &[true, false]), None);
    }

    #[test]
    fn class_sets() {
        assert_eq!(
            "0-8".parse::<ClassSet>().unwrap().0,
            (0..=8).collect::<Vec<u8>>()
        );
        assert_eq!("2,0,1,1".parse::<ClassSet>().unwrap().0, vec![0, 1, 2]);
        assert_eq!("0-2,7".parse::<ClassSet>().unwrap().0, vec![0, 1, 2, 7]);
        for bad in ["", "a", "3-1", "0,,1", "256", "-1"] {
            assert!(bad.parse::<ClassSet>().is_err(), "{bad}");
        }
    }
}
