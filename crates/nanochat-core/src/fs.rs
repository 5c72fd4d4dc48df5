//! Crash-safe file writes: write a temporary file beside the target, fsync it, rename it over
//! the target, fsync the directory. A reader sees the old file or the new one, never a mix;
//! a crash leaves at most a `.{name}.partial` file behind.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// An I/O failure, with the operation and the path it concerned.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}")]
pub struct IoError {
    /// What was being done ("create", "read", "rename" …).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// Wraps an `io::Error` with context.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The temporary path used while writing `path`: `.{file name}.partial` in the same folder
/// (same filesystem, so the final rename is atomic).
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Whether a file name is a partial write left by an interrupted writer.
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}

/// Writes a temporary file with `write`, fsyncs it and returns its path; the caller renames
/// it into place with [`publish`].
pub fn write_partial(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, IoError> {
    let tmp = partial_path(path);
    let file = File::create(&tmp).map_err(|e| IoError::new("create", &tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w).map_err(|e| IoError::new("write", &tmp, e))?;
    let file = w
        .into_inner()
        .map_err(|e| IoError::new("write", &tmp, e.into_error()))?;
    file.sync_all()
        .map_err(|e| IoError::new("fsync", &tmp, e))?;
    Ok(tmp)
}

/// Renames a finished temporary file over its target.
pub fn publish(tmp: &Path, path: &Path) -> Result<(), IoError> {
    fs::rename(tmp, path).map_err(|e| IoError::new("rename into place", path, e))
}

/// Fsyncs a directory so that renames in it survive a power loss (no-op where unsupported).
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(|e| IoError::new("open", dir, e))?;
        d.sync_all().map_err(|e| IoError::new("fsync", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Atomically replaces `path` with the bytes produced by `write`.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), IoError> {
    let tmp = write_partial(path, write)?;
    publish(&tmp, path)?;
    sync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Atomically replaces `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Reads a whole file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, IoError> {
    fs::read(path).map_err(|e| IoError::new("read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains(".a.json.partial"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(is_partial(".a.json.partial"));
    }
}
