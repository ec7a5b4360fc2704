//! Writing files without losing anything: atomic replacement that follows symbolic links, and
//! writes through to special files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Symbolic links followed before giving up (a loop).
const MAX_LINKS: usize = 40;

/// Where a write to `path` lands: `path` itself, or the file its chain of symbolic links points
/// to (which may not exist yet).
pub fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::Config(format!(
        "{}: more than {MAX_LINKS} symbolic links in a chain (a loop?)",
        path.display()
    )))
}

/// Writes `bytes` to `path` so that no reader ever sees a partial file.
///
/// A symbolic link is followed, and the file it points to is replaced; the link stays a link.
/// A regular file (or a new one) is replaced atomically: a temporary file in the same
/// directory, synced, then renamed over it. Anything else that exists — a terminal,
/// `/dev/stdout`, a pipe — is written through, never replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = resolve_links(path)?;
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(Error::Config(format!(
                "{}: is a directory, not a file",
                path.display()
            )));
        }
        Ok(m) if !m.is_file() => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(|e| Error::io(&target, e))?;
            return f.write_all(bytes).map_err(|e| Error::io(&target, e));
        }
        _ => {}
    }
    let tmp = tmp_path(&target);
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&target, e));
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wgvae-fsio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_regular_files_and_keeps_links() {
        let d = dir("links");
        let file = d.join("out.json");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        #[cfg(unix)]
        {
            let link = d.join("link.json");
            std::os::unix::fs::symlink("out.json", &link).unwrap();
            write_atomic(&link, b"three").unwrap();
            assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
            assert_eq!(std::fs::read(&file).unwrap(), b"three");
            // A dangling link: the file it names is created.
            let dangling = d.join("dangling.json");
            std::os::unix::fs::symlink("new.json", &dangling).unwrap();
            write_atomic(&dangling, b"four").unwrap();
            assert!(
                dangling
                    .symlink_metadata()
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(std::fs::read(d.join("new.json")).unwrap(), b"four");
            // A loop is an error, not a hang.
            std::os::unix::fs::symlink("loop_b", d.join("loop_a")).unwrap();
            std::os::unix::fs::symlink("loop_a", d.join("loop_b")).unwrap();
            let e = write_atomic(&d.join("loop_a"), b"x").unwrap_err();
            assert!(e.to_string().contains("symbolic links"), "{e}");
            // A special file is written through, not replaced.
            write_atomic(Path::new("/dev/null"), b"five").unwrap();
            assert!(!Path::new("/dev/null").metadata().unwrap().is_file());
        }
        let e = write_atomic(&d, b"x").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
