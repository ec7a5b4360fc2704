//! Subcommands of `wgvae` that work on a trained run: each a thin layer over the library.

pub mod anomaly;
pub mod decode;
pub mod edit;
pub mod encode;
pub mod interpolate;
pub mod reconstruct;
pub mod sample;
pub mod score;
pub mod traverse;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use crate::data::Dataset;
use crate::train::checkpoint::{self, Checkpoint};

/// A trained run and the inputs a subcommand works on: an image file, or built-in sprites.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(false)))]
pub struct RunInput {
    /// Run directory holding checkpoint.safetensors
    #[arg(long)]
    pub run: PathBuf,
    /// Image file (IDX, .gz or raw, or a .npy array of images)
    #[arg(long, group = "input")]
    pub images: Option<PathBuf>,
    /// This many built-in sprites (distinct factor combinations drawn from --sprites-seed),
    /// with their ground-truth factors
    #[arg(long, group = "input", allow_negative_numbers = true)]
    pub sprites: Option<usize>,
    /// --sprites: seed of the factor combinations
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub sprites_seed: u64,
}

impl RunInput {
    /// The run's checkpoint and the inputs, checked against its model (size, channels, the
    /// run's binarisation).
    pub fn load(&self) -> Result<(Checkpoint, Dataset)> {
        let ck_path = self.run.join(checkpoint::FILE_NAME);
        let ck = Checkpoint::load(&ck_path)?;
        let set = match (&self.images, self.sprites) {
            (Some(path), _) => crate::cli::images_for_run(&ck, &ck_path, path)?.0,
            (None, Some(n)) => encode::sprites_for_run(&ck, &ck_path, n, self.sprites_seed)?,
            (None, None) => bail!("give --images FILE or --sprites N"),
        };
        Ok((ck, set))
    }
}

/// Reads a labels file given with `flag`: a .npy array when it starts with the NumPy magic,
/// IDX (plain or gzip) otherwise. Errors name the flag and the file.
pub fn read_labels(path: &Path, flag: &str) -> Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Read;
    let what = || format!("{flag} {}", path.display());
    let mut head = [0u8; 6];
    let mut f = std::fs::File::open(path).with_context(what)?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(what),
        }
    }
    let labels = if head[..got] == crate::data::npy::MAGIC[..] {
        crate::data::npy::read_npy_labels(path)
    } else {
        crate::data::idx::read_idx_labels(path)
    };
    labels.with_context(what)
}

/// Gives `set` the labels in `path` (read by [`read_labels`]), which must be one per image.
pub fn attach_labels(set: &mut Dataset, path: &Path, flag: &str) -> Result<()> {
    let labels = read_labels(path, flag)?;
    if labels.len() != set.n {
        bail!(
            "{flag} {}: {} labels for {} images in `{}`",
            path.display(),
            labels.len(),
            set.n,
            set.name
        );
    }
    set.labels = Some(labels);
    Ok(())
}

/// Refuses to replace existing `files` in `dir` unless `force`; creates `dir`. Returns the
/// full paths of the files.
pub fn prepare_outputs(dir: &Path, files: &[&str], force: bool) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    if !force {
        let existing: Vec<String> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); pass --force to replace",
                existing.join(", ")
            );
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(paths)
}
