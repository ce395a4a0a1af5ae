//! Retrying, honest deletion (invariant 5: "removed" means the path is gone).
//!
//! Windows refuses to delete a file another process holds open without
//! `FILE_SHARE_DELETE` (error 32) and a read-only file (error 5). Deletion
//! here clears read-only bits, never follows symbolic links, retries with
//! exponential backoff, and reports attempts, bytes freed and what is left.
//! The deleting and renaming calls go through [`FsOps`], so tests can
//! inject faults; reading (walks, metadata, permissions) uses std directly.

mod faults;

pub use faults::FaultInjector;

use backon::{BackoffBuilder, ExponentialBuilder};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The filesystem calls deletion makes: the seam for fault injection.
pub trait FsOps: Send + Sync {
    /// Remove a file or a symbolic link (never its target).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Remove an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Rename `from` to `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Delete a whole tree in one call, if the implementation has a fast
    /// way to; the default says it has none and the careful walk runs.
    fn remove_all(&self, path: &Path) -> io::Result<()> {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl FsOps for RealFs {
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// std's `remove_dir_all`: directory handles, `unlinkat`, no symlink
    /// following; as fast as `rm -rf`. Any error sends the caller to the
    /// careful walk (read-only bits, retries, an honest list of leftovers).
    fn remove_all(&self, path: &Path) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        }
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalConfig {
    /// Attempts in all (at least 1).
    pub max_retries: u32,
    /// Wait before the second attempt; doubles each time.
    pub initial_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for RemovalConfig {
    fn default() -> Self {
        RemovalConfig {
            max_retries: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
        }
    }
}

/// What one deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovalOutcome {
    /// The path no longer exists.
    pub removed: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Bytes of files deleted.
    pub bytes_freed: u64,
    /// Up to [`MAX_REMAINING_LISTED`] paths still present when it gave up.
    pub remaining: Vec<PathBuf>,
    /// The last error, with the path it concerned.
    pub error: Option<String>,
}

/// How many leftover paths a report names.
pub const MAX_REMAINING_LISTED: usize = 20;

/// Deletes trees with retries through a [`FsOps`].
#[derive(Clone)]
pub struct Remover {
    ops: Arc<dyn FsOps>,
    config: RemovalConfig,
}

impl std::fmt::Debug for Remover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remover")
            .field("config", &self.config)
            .finish()
    }
}

impl Remover {
    /// A remover over `ops` with `config`.
    pub fn new(ops: Arc<dyn FsOps>, config: RemovalConfig) -> Self {
        Remover { ops, config }
    }

    /// The waits between attempts: `max_retries - 1` of them, growing.
    fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.initial_delay)
            .with_max_delay(self.config.max_delay)
            .with_max_times(self.config.max_retries.saturating_sub(1) as usize)
            .build()
    }

    /// Rename `from` to `to` once, through the [`FsOps`] seam.
    pub fn rename_once(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.ops.rename(from, to)
    }

    /// Rename `from` to `to`, retrying like a deletion. Returns attempts made
    /// and the last error when it never succeeded.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<u32, (u32, io::Error)> {
        let mut attempts = 0;
        let mut delays = self.delays();
        loop {
            attempts += 1;
            match self.ops.rename(from, to) {
                Ok(()) => return Ok(attempts),
                Err(e) => match delays.next() {
                    Some(d) => std::thread::sleep(d),
                    None => return Err((attempts, e)),
                },
            }
        }
    }

    /// Delete `path` (a file, a link or a tree) with retries. The outcome
    /// says `removed` only when `path` is really gone.
    pub fn remove_tree(&self, path: &Path) -> RemovalOutcome {
        self.remove_tree_sized(path, None)
    }

    /// [`remove_tree`](Self::remove_tree), with the tree's size already
    /// known (recorded at prepare time): then the fast path is tried first,
    /// and `bytes_freed` is that size less what is left (a fast path that
    /// fails part-way, as on a read-only file under Wine, has already
    /// deleted files the careful walk then cannot count).
    pub fn remove_tree_sized(&self, path: &Path, known_size: Option<u64>) -> RemovalOutcome {
        let mut outcome = self.remove_tree_counted(path, known_size);
        if let Some(size) = known_size {
            outcome.bytes_freed = if outcome.removed {
                size
            } else {
                size.saturating_sub(crate::adapter::fs::dir_size(path))
            };
        }
        outcome
    }

    fn remove_tree_counted(&self, path: &Path, known_size: Option<u64>) -> RemovalOutcome {
        let mut outcome = RemovalOutcome::default();
        // A link (or a file) at the root is removed as itself: a walk from
        // it would follow it and delete its target's contents.
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
            return self.remove_entry(path);
        }
        if let Some(size) = known_size {
            outcome.attempts = 1;
            match self.ops.remove_all(path) {
                Ok(()) if !exists_no_follow(path) => {
                    outcome.removed = true;
                    outcome.bytes_freed = size;
                    return outcome;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    outcome.removed = true;
                    return outcome;
                }
                // Unsupported, locked, read-only...: the careful walk below.
                _ => outcome.attempts = 0,
            }
        }
        let mut delays = self.delays();
        loop {
            outcome.attempts += 1;
            match self.attempt(path, &mut outcome.bytes_freed) {
                Ok(()) if !exists_no_follow(path) => {
                    outcome.removed = true;
                    outcome.error = None;
                    return outcome;
                }
                Ok(()) => outcome.error = Some(format!("{} still exists", path.display())),
                Err(e) => outcome.error = Some(e),
            }
            match delays.next() {
                Some(d) => {
                    tracing::debug!(
                        path = %path.display(),
                        attempt = outcome.attempts,
                        error = outcome.error.as_deref().unwrap_or_default(),
                        "deletion incomplete, retrying in {d:?}"
                    );
                    std::thread::sleep(d);
                }
                None => break,
            }
        }
        outcome.remaining = walk_remaining(path);
        outcome
    }

    /// Delete one non-folder entry (a file or a link, never its target),
    /// with retries.
    fn remove_entry(&self, path: &Path) -> RemovalOutcome {
        let mut outcome = RemovalOutcome::default();
        let len = std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        let mut delays = self.delays();
        loop {
            outcome.attempts += 1;
            match self.ops.remove_file(path) {
                Ok(()) => {
                    outcome.removed = true;
                    outcome.bytes_freed = len;
                    outcome.error = None;
                    return outcome;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    outcome.removed = true;
                    outcome.error = None;
                    return outcome;
                }
                Err(e) => outcome.error = Some(format!("{}: {e}", path.display())),
            }
            match delays.next() {
                Some(d) => std::thread::sleep(d),
                None => break,
            }
        }
        outcome.remaining = vec![path.to_path_buf()];
        outcome
    }

    /// One pass: delete everything deletable, depth first. Returns the first
    /// error met (the pass goes on past it, so one locked file does not keep
    /// the rest of the tree on disk).
    fn attempt(&self, path: &Path, freed: &mut u64) -> Result<(), String> {
        let mut first_error: Option<String> = None;
        // A path beyond the OS limit (PATH_MAX) was met.
        let mut too_long = false;
        let mut note = |e: String| {
            if first_error.is_none() {
                first_error = Some(e);
            }
        };
        let walker = walkdir::WalkDir::new(path)
            .follow_links(false)
            .follow_root_links(false)
            .contents_first(true);
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    match e.io_error().map(io::Error::kind) {
                        Some(io::ErrorKind::NotFound) => continue,
                        Some(io::ErrorKind::InvalidFilename) => too_long = true,
                        _ => {}
                    }
                    // Most often an unreadable folder: make it ours and retry next pass.
                    if let Some(p) = e.path() {
                        make_writable(p, true);
                    }
                    note(format!("{e}"));
                    continue;
                }
            };
            let p = entry.path();
            let is_dir = entry.file_type().is_dir();
            let len = if entry.file_type().is_file() {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            };
            let remove = |ops: &dyn FsOps| {
                if is_dir {
                    ops.remove_dir(p)
                } else {
                    ops.remove_file(p)
                }
            };
            let mut result = remove(self.ops.as_ref());
            if matches!(&result, Err(e) if e.kind() == io::ErrorKind::PermissionDenied) {
                // Read-only file (Windows) or read-only parent folder (Unix): fix and retry once.
                make_writable(p, is_dir);
                if let Some(parent) = p.parent() {
                    make_writable(parent, true);
                }
                result = remove(self.ops.as_ref());
            }
            match result {
                Ok(()) => *freed += len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    too_long |= e.kind() == io::ErrorKind::InvalidFilename;
                    note(format!("{}: {e}", p.display()));
                }
            }
        }
        match first_error {
            // Paths beyond PATH_MAX: std's remove_dir_all works relative to
            // open directory handles (and never follows links), so it can.
            // What it frees there is not counted in bytes_freed.
            Some(e) if too_long => {
                std::fs::remove_dir_all(path).map_err(|e2| format!("{e}; then {e2}"))
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Default for Remover {
    fn default() -> Self {
        Remover::new(Arc::new(RealFs), RemovalConfig::default())
    }
}

fn exists_no_follow(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn walk_remaining(path: &Path) -> Vec<PathBuf> {
    if !exists_no_follow(path) {
        return Vec::new();
    }
    walkdir::WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false)
        .contents_first(true)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .take(MAX_REMAINING_LISTED)
        .collect()
}

/// Clear the read-only attribute (Windows) or add owner write (and, for
/// folders, read and search) permission (Unix). Best effort.
fn make_writable(path: &Path, is_dir: bool) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let mut perms = meta.permissions();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = perms.mode() | 0o200 | if is_dir { 0o500 } else { 0 };
        perms.set_mode(mode);
    }
    #[cfg(not(unix))]
    {
        let _ = is_dir;
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
    }
    let _ = std::fs::set_permissions(path, perms);
}

#[cfg(test)]
mod tests;
