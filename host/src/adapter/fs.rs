//! Sizing and listing on disk. Symbolic links are never followed.

use backon::{BlockingRetryable, ExponentialBuilder};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Replace `path` with `data` atomically: a temporary file beside it, named
/// uniquely per writer (process and call), renamed over it, so a reader or
/// a crash sees the old file or the new one, never half of one. The rename
/// is retried while Windows says the file is in use; the temporary file is
/// removed if it fails.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, data)?;
    retry_while_in_use(|| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Run `op`, retrying for about half a second while Windows says the file
/// is in use: replacing or opening a file that another thread or process
/// (a reader, a virus scanner) has open fails there for a moment with
/// error 5 or 32 (found by the Windows suite under Wine). Other errors, and
/// every error elsewhere, return at once.
pub fn retry_while_in_use<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    op.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .with_max_times(10),
    )
    .sleep(std::thread::sleep)
    .when(is_in_use)
    .call()
}

/// `ERROR_ACCESS_DENIED` or `ERROR_SHARING_VIOLATION` on Windows.
fn is_in_use(e: &io::Error) -> bool {
    cfg!(windows) && (e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(32))
}

/// Bytes of all regular files under `path`, without following symbolic links.
/// Unreadable entries are skipped (sizing is advisory, never fatal).
///
/// `std::fs::read_dir` entries are stat'ed relative to their open directory
/// (`fstatat`), as `du` does, rather than by full path; types come from the
/// directory listing, so only regular files are stat'ed at all.
pub fn dir_size(path: &Path) -> u64 {
    let root = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => path.to_path_buf(),
        Ok(m) if m.is_file() => return m.len(),
        _ => return 0,
    };
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Free bytes on the filesystem holding `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    fs4::available_space(path).ok()
}

/// Names of the folders directly under `base`, skipping the host's own
/// dot-folders. Not yet validated.
pub fn child_dirs(base: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base)? {
        let entry = entry?;
        // file_type() does not follow links: a symlink to a folder is not a workspace.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn size_does_not_follow_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![0u8; 10_000]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"12345").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("to_dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), dir.path().join("to_file")).unwrap();
        assert_eq!(dir_size(dir.path()), 5);
    }
}
