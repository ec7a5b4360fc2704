//! `wgvae edit`: latent arithmetic. An attribute vector v is the mean posterior mean μ of one
//! group of inputs minus that of another (groups by class label, or by index); each chosen
//! input's code is moved along it, z = μᵢ + s·v for every strength s, and decoded into a PNG
//! grid (one row per input, one column per strength), optionally with the edited codes as
//! `.npy`. A conditional model encodes each input under its class label and decodes its
//! edits under the same label.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{decode, encode};
use crate::cli::open_context;
use crate::model::Vae;

/// Flags of `wgvae edit`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    wgvae edit --run runs/mnist --images t10k-images-idx3-ubyte.gz \
    --labels t10k-labels-idx1-ubyte.gz --from 1 --to 7 --out edit.png\n  \
    wgvae edit --run runs/sprites --sprites 200 --group-a 0-49 --group-b 50-99 \
    --inputs 100,101,102 --strengths=-1,0,1 --originals --out edit.png --npy edited.npy\n\n\
    The vector is v = mean μ(group A) − mean μ(group B), μ the posterior means; with labels, \
    group A is the inputs labelled --to and group B those labelled --from. Row i of the grid \
    is input i of --inputs (default the first 8), column j decodes μᵢ + sⱼ·v for strength sⱼ \
    of --strengths (default -2,-1,0,1,2); --originals puts the input itself first. --npy \
    writes the edited codes as an (inputs × strengths, D) float32 array in the grid's \
    row-major order, which `wgvae decode --latents` reads. Index lists are written 0,3,5-9 \
    (ranges inclusive). A conditional model (train --conditional) encodes every input under \
    its label (--labels, or the labels the inputs carry), also with --group-a/--group-b, and \
    decodes each row under the label of its input.")]
pub struct EditArgs {
    #[command(flatten)]
    pub input: super::RunInput,
    /// Class labels of the inputs (IDX labels file, .gz or raw, or a .npy array): the groups
    /// of --from/--to, and a conditional model's class of each input; default: the labels the
    /// inputs carry, if any
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Label of group B (the vector points away from it)
    #[arg(long, requires = "to", conflicts_with_all = ["group_a", "group_b"])]
    pub from: Option<u8>,
    /// Label of group A (the vector points towards it)
    #[arg(long, requires = "from")]
    pub to: Option<u8>,
    /// Indices of group A (e.g. 0,3,5-9); the vector points towards it
    #[arg(long, requires = "group_b", conflicts_with_all = ["from", "to"])]
    pub group_a: Option<IndexList>,
    /// Indices of group B; the vector points away from it
    #[arg(long, requires = "group_a")]
    pub group_b: Option<IndexList>,
    /// Indices of the inputs to edit, one grid row each, in this order (default: the first 8)
    #[arg(long)]
    pub inputs: Option<IndexList>,
    /// Strengths s of the edits z = μ + s·v, one grid column each
    #[arg(long, default_value = "-2,-1,0,1,2", allow_hyphen_values = true)]
    pub strengths: Strengths,
    /// Put each input itself in a first column
    #[arg(long)]
    pub originals: bool,
    /// Output PNG
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the edited codes here (.npy, float32)
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Replace existing output files
    #[arg(long)]
    pub force: bool,
}

/// Most rows (inputs) of an edit grid.
pub const MAX_INPUTS: usize = 256;
/// Most columns (strengths) of an edit grid.
pub const MAX_STRENGTHS: usize = 64;
/// Inputs edited when `--inputs` is not given.
pub const DEFAULT_INPUTS: usize = 8;

/// A list of indices, written `0,3,5-9` (ranges inclusive); kept as written (ranges are
/// expanded only after they are checked against the size of the set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexList {
    text: String,
    ranges: Vec<(usize, usize)>,
}

impl IndexList {
    /// The indices in the order written (repeats kept), each checked to be below `n`; `flag`
    /// names the list in the error.
    pub fn expand(&self, flag: &str, n: usize) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for &(a, b) in &self.ranges {
            if b >= n {
                bail!(
                    "{flag} {}: index {b} is out of range; the set has {n} inputs (indices 0 to {})",
                    self.text,
                    n.saturating_sub(1)
                );
            }
            out.extend(a..=b);
        }
        Ok(out)
    }
}

impl FromStr for IndexList {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let index = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{t}` in `{s}` is not an index (a whole number from 0)"))
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            if part.trim().is_empty() {
                return Err(format!(
                    "`{s}`: empty item; write indices as 0,3,5-9 (ranges inclusive)"
                ));
            }
            let range = match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (index(a)?, index(b)?);
                    if a > b {
                        return Err(format!("`{part}` in `{s}`: the range runs backwards"));
                    }
                    (a, b)
                }
                None => {
                    let i = index(part)?;
                    (i, i)
                }
            };
            ranges.push(range);
        }
        Ok(IndexList {
            text: s.to_string(),
            ranges,
        })
    }
}

impl fmt::Display for IndexList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Edit strengths, written `-2,-1,0,1,2`: finite numbers, 1 to [`MAX_STRENGTHS`] of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Strengths(pub Vec<f32>);

impl FromStr for Strengths {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let v: f32 = part
                .trim()
                .parse()
                .map_err(|_| format!("`{part}` in `{s}` is not a number"))?;
            if !v.is_finite() {
                return Err(format!("`{part}` in `{s}`: strengths must be finite"));
            }
            out.push(v);
        }
        if out.len() > MAX_STRENGTHS {
            return Err(format!(
                "`{s}`: {} strengths; at most {MAX_STRENGTHS}",
                out.len()
            ));
        }
        Ok(Strengths(out))
    }
}

/// What `edit` computed and wrote.
#[derive(Clone, Debug)]
pub struct Edit {
    /// How group A was chosen ("label 7" or "--group-a 0-9").
    pub group_a: String,
    pub group_b: String,
    pub n_a: usize,
    pub n_b: usize,
    /// The attribute vector (D,).
    pub vector: Vec<f32>,
    /// Its Euclidean norm.
    pub norm: f64,
    /// The inputs edited (rows of the grid).
    pub inputs: Vec<usize>,
    pub strengths: Vec<f32>,
    /// The edited codes, (inputs × strengths, D) row-major.
    pub codes: Vec<f32>,
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "group A ({}): {} inputs; group B ({}): {} inputs",
            self.group_a, self.n_a, self.group_b, self.n_b
        )?;
        writeln!(
            f,
            "attribute vector v = mean μ(A) − mean μ(B): norm {:.4}",
            self.norm
        )?;
        write!(
            f,
            "edited {} inputs at {} strengths",
            self.inputs.len(),
            self.strengths.len()
        )
    }
}

/// The members of groups A and B (sorted, without repeats) and how each was chosen.
fn groups(args: &EditArgs, set: &crate::data::Dataset) -> Result<[(Vec<usize>, String); 2]> {
    let sorted = |mut v: Vec<usize>| {
        v.sort_unstable();
        v.dedup();
        v
    };
    let [a, b] = match (args.from, args.to, &args.group_a, &args.group_b) {
        (Some(from), Some(to), None, None) => {
            // `run` gave the set the labels of --labels, if any.
            let labels = match &set.labels {
                Some(l) => l.clone(),
                None => bail!(
                    "--from/--to: the inputs carry no labels; give --labels FILE, or pick the \
                     groups by index with --group-a and --group-b"
                ),
            };
            let source = args
                .labels
                .as_ref()
                .map_or("the inputs' labels".to_string(), |p| {
                    format!("--labels {}", p.display())
                });
            let members = |flag: &str, label: u8| -> Result<(Vec<usize>, String)> {
                let m: Vec<usize> = (0..set.n).filter(|&i| labels[i] == label).collect();
                if m.is_empty() {
                    let mut present: Vec<u8> = labels.clone();
                    present.sort_unstable();
                    present.dedup();
                    let present: Vec<String> = present.iter().map(|l| l.to_string()).collect();
                    bail!(
                        "{flag} {label}: no input has this label in {source} (labels present: {})",
                        present.join(",")
                    );
                }
                Ok((m, format!("label {label}")))
            };
            [members("--to", to)?, members("--from", from)?]
        }
        (None, None, Some(ga), Some(gb)) => {
            let a = sorted(ga.expand("--group-a", set.n)?);
            let b = sorted(gb.expand("--group-b", set.n)?);
            [
                (a, format!("--group-a {ga}")),
                (b, format!("--group-b {gb}")),
            ]
        }
        _ => bail!(
            "give the groups either by label (--from LABEL --to LABEL, with --labels FILE) or \
             by index (--group-a LIST --group-b LIST)"
        ),
    };
    Ok([a, b])
}

/// Mean of the rows `rows` of `mu` ((n, d) row-major), in f64.
fn mean_rows(mu: &[f32], d: usize, rows: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut sum = vec![0.0f64; d];
    let mut count = 0usize;
    for r in rows {
        for (s, &m) in sum.iter_mut().zip(&mu[r * d..(r + 1) * d]) {
            *s += f64::from(m);
        }
        count += 1;
    }
    sum.iter().map(|s| s / count.max(1) as f64).collect()
}

pub fn run(args: &EditArgs) -> Result<Edit> {
    let strengths = &args.strengths.0;
    decode::prepare_file(&args.out, "--out", args.force)?;
    if let Some(npy) = &args.npy {
        decode::prepare_file(npy, "--npy", args.force)?;
        if npy == &args.out {
            bail!("--npy {}: the same file as --out", npy.display());
        }
    }
    let (ck, mut set) = args.input.load()?;
    if set.n == 0 {
        bail!("the inputs hold no images");
    }
    // The labels of --labels replace those the inputs carry: a conditional model encodes and
    // decodes under them; --from/--to pick the groups by them.
    match ck.model.classes {
        Some(_) => decode::input_labels(
            ck.model.classes,
            &mut set,
            args.labels.as_deref(),
            &args.input.run,
            "edit",
        )?,
        None => {
            if let Some(path) = &args.labels {
                if args.from.is_none() {
                    bail!(
                        "--labels {}: the run in {} is not a conditional model (it was trained \
                         without --conditional), and --group-a/--group-b pick the groups by \
                         index; --labels is only for --from/--to or a conditional model",
                        path.display(),
                        args.input.run.display()
                    );
                }
                set.labels = Some(decode::read_counted_labels(
                    path,
                    set.n,
                    "images",
                    "the inputs are",
                )?);
            }
        }
    }
    let [(a, name_a), (b, name_b)] = groups(args, &set)?;
    for (flag, g) in [("--group-a", &a), ("--group-b", &b)] {
        if g.is_empty() {
            bail!("{flag}: the group is empty");
        }
    }
    let inputs = match &args.inputs {
        Some(list) => list.expand("--inputs", set.n)?,
        None => (0..set.n.min(DEFAULT_INPUTS)).collect(),
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        bail!(
            "--inputs: {} inputs; must be between 1 and {MAX_INPUTS}",
            inputs.len()
        );
    }

    // Encode each input needed once: the union of the groups and the edited inputs.
    let mut needed: Vec<usize> = a.iter().chain(&b).chain(&inputs).copied().collect();
    needed.sort_unstable();
    needed.dedup();
    let row_of = |i: usize| needed.binary_search(&i).unwrap_or(0);
    let ctx = open_context()?;
    let vae = Vae::new(&ctx, &ck.model, &ck.params)?;
    let d = vae.cfg.latent;
    let (mu, _, _) = encode::encode_set(&ctx, &vae, &set.subset(&needed), 0)?;

    let mean_a = mean_rows(&mu, d, a.iter().map(|&i| row_of(i)));
    let mean_b = mean_rows(&mu, d, b.iter().map(|&i| row_of(i)));
    let v64: Vec<f64> = mean_a.iter().zip(&mean_b).map(|(x, y)| x - y).collect();
    let norm = v64.iter().map(|x| x * x).sum::<f64>().sqrt();
    let vector: Vec<f32> = v64.iter().map(|&x| x as f32).collect();

    let mut codes = Vec::with_capacity(inputs.len() * strengths.len() * d);
    for &i in &inputs {
        let m = &mu[row_of(i) * d..(row_of(i) + 1) * d];
        for &s in strengths {
            codes.extend(m.iter().zip(&vector).map(|(&x, &v)| x + s * v));
        }
    }
    // A conditional model decodes each row under the label of its input.
    let row_labels: Option<Vec<u32>> = match (&vae.condition, &set.labels) {
        (Some(_), Some(l)) => Some(
            inputs
                .iter()
                .flat_map(|&i| std::iter::repeat_n(u32::from(l[i]), strengths.len()))
                .collect(),
        ),
        _ => None,
    };
    let decoded = decode::decode_codes(&ctx, &vae, &codes, row_labels.as_deref())?;

    // The grid, row by row: the input (with --originals), then its edits.
    let cols = strengths.len() + usize::from(args.originals);
    let p = vae.cfg.input_dim();
    let mut grid = Vec::with_capacity(inputs.len() * cols * p);
    for (r, &i) in inputs.iter().enumerate() {
        if args.originals {
            grid.extend(set.to_f32(i));
        }
        let per_row = strengths.len() * p;
        grid.extend_from_slice(&decoded[r * per_row..(r + 1) * per_row]);
    }
    decode::create_parent(&args.out)?;
    crate::image::save_grid_png_chw(
        &args.out,
        &grid,
        inputs.len() * cols,
        decode::image_shape(&vae),
        cols,
        2,
        decode::png_scale(&vae),
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(npy) = &args.npy {
        decode::create_parent(npy)?;
        crate::data::npy::write_npy_f32(npy, &[inputs.len() * strengths.len(), d], &codes)
            .with_context(|| format!("writing {}", npy.display()))?;
    }
    Ok(Edit {
        group_a: name_a,
        group_b: name_b,
        n_a: a.len(),
        n_b: b.len(),
        vector,
        norm,
        inputs,
        strengths: strengths.clone(),
        codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_parse_and_expand() {
        let l: IndexList = "0,3,5-7, 3".parse().unwrap();
        assert_eq!(l.expand("--inputs", 8).unwrap(), vec![0, 3, 5, 6, 7, 3]);
        let e = l.expand("--inputs", 7).unwrap_err().to_string();
        assert!(
            e.contains("--inputs 0,3,5-7, 3") && e.contains("index 7"),
            "{e}"
        );
        assert!(e.contains("7 inputs"), "{e}");
        for bad in ["", "1,,2", "a", "3-1", "-1", "1-"] {
            assert!(bad.parse::<IndexList>().is_err(), "{bad:?} parsed");
        }
        // A huge range is refused before anything is expanded.
        let big: IndexList = "0-18446744073709551615".parse().unwrap();
        assert!(big.expand("--group-a", 10).is_err());
    }

    #[test]
    fn strengths_parse() {
        let s: Strengths = "-2,-0.5,0,1.5".parse().unwrap();
        assert_eq!(s.0, vec![-2.0, -0.5, 0.0, 1.5]);
        for bad in ["", "1,,2", "x", "inf", "NaN"] {
            assert!(bad.parse::<Strengths>().is_err(), "{bad:?} parsed");
        }
        let many = vec!["1"; MAX_STRENGTHS + 1].join(",");
        assert!(many.parse::<Strengths>().is_err());
    }

    #[test]
    fn mean_rows_averages_the_chosen_rows() {
        let mu = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(mean_rows(&mu, 2, [0, 2].into_iter()), vec![3.0, 4.0]);
    }
}
