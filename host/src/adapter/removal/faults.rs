//! The fault injector: an [`FsOps`] that fails chosen deletions the way a
//! file held open does on Windows (error 32), for this crate's tests and a
//! deployment's own. One injector serves every such test, so they all
//! simulate the same thing.

use super::{FsOps, RealFs};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Which paths are "held open".
type Target = Box<dyn Fn(&Path) -> bool + Send + Sync>;

/// Fails `remove_file` on target paths: a counted number of times, for as
/// long as it is held, or every other call. Optionally, as on NTFS, a
/// folder holding a held file cannot be renamed either (Wine lets such a
/// rename through, so tests that need it set it: docs/RELIABILITY.md).
/// Everything else goes to the real filesystem.
pub struct FaultInjector {
    target: Target,
    remaining: AtomicU32,
    held: AtomicBool,
    alternate: AtomicBool,
    block_renames: AtomicBool,
    calls: AtomicU32,
}

impl FaultInjector {
    /// Target the paths `target` accepts; no fault until told.
    pub fn new(target: impl Fn(&Path) -> bool + Send + Sync + 'static) -> Self {
        FaultInjector {
            target: Box::new(target),
            remaining: AtomicU32::new(0),
            held: AtomicBool::new(false),
            alternate: AtomicBool::new(false),
            block_renames: AtomicBool::new(false),
            calls: AtomicU32::new(0),
        }
    }

    /// Target paths that end with `name` (a file name, or a relative path).
    pub fn named(name: &'static str) -> Self {
        Self::new(move |p| p.ends_with(name))
    }

    /// Fail the next `times` deletions of a target.
    pub fn failing(self, times: u32) -> Self {
        self.remaining.store(times, Ordering::SeqCst);
        self
    }

    /// Fail every other deletion of a target (the first one fails).
    pub fn alternating(self) -> Self {
        self.alternate.store(true, Ordering::SeqCst);
        self
    }

    /// Also refuse to rename a folder that holds a held target.
    pub fn blocking_renames(self) -> Self {
        self.block_renames.store(true, Ordering::SeqCst);
        self
    }

    /// Hold every target (fail for as long as this is set), or let go.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }

    /// Add `times` counted failures.
    pub fn fail_next(&self, times: u32) {
        self.remaining.fetch_add(times, Ordering::SeqCst);
    }

    /// Deletions of a target attempted so far.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn holding(&self) -> bool {
        self.held.load(Ordering::SeqCst) || self.remaining.load(Ordering::SeqCst) > 0
    }

    fn in_use() -> io::Error {
        io::Error::other(
            "The process cannot access the file because it is being used by another process (injected)",
        )
    }
}

impl FsOps for FaultInjector {
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if (self.target)(path) {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let counted = self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let alternate = self.alternate.load(Ordering::SeqCst) && call.is_multiple_of(2);
            if counted || alternate || self.held.load(Ordering::SeqCst) {
                return Err(Self::in_use());
            }
        }
        RealFs.remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.block_renames.load(Ordering::SeqCst)
            && self.holding()
            && walkdir::WalkDir::new(from)
                .follow_links(false)
                .into_iter()
                .flatten()
                .any(|e| (self.target)(e.path()))
        {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        RealFs.rename(from, to)
    }
}
