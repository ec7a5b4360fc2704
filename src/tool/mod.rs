//! Subcommands of `wgvae` that work on a trained run: each a thin layer over the library.

pub mod encode;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

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
