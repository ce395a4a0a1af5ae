//! Sizing and listing on disk. Symbolic links are never followed.

use std::path::Path;

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
