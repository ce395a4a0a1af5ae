//! Per-workspace locks (invariant 2) and leases.
//!
//! A workspace lock is an in-process mutex plus an advisory lock on
//! `<base>/.locks/<name>.lock`, so two processes on one base directory (a
//! CLI beside the server) also take turns. The OS drops a file lock when
//! its process dies, so a crashed holder never blocks anyone for ever.
//! Prepare holds the lock; removal only ever *tries* it and skips a busy
//! workspace. A lease marks a workspace in use while a caller works in it.

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::names::WorkspaceName;
use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The lock registry of one base directory.
#[derive(Debug)]
pub struct WorkspaceLocks {
    layout: Layout,
    mutexes: Mutex<HashMap<WorkspaceName, Arc<Mutex<()>>>>,
    leases: Mutex<HashMap<u64, LeaseEntry>>,
    next_lease: AtomicU64,
}

/// One lease: on which workspace, and until when (none: until released).
#[derive(Debug, Clone)]
struct LeaseEntry {
    name: WorkspaceName,
    expires: Option<Instant>,
}

impl LeaseEntry {
    fn live(&self) -> bool {
        self.expires.is_none_or(|t| t > Instant::now())
    }
}

/// Proof that this process holds a workspace's lock; released on drop.
pub struct WorkspaceGuard {
    name: WorkspaceName,
    _file: File,
    _local: ArcMutexGuard<RawMutex, ()>,
}

impl std::fmt::Debug for WorkspaceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceGuard")
            .field("name", &self.name)
            .finish()
    }
}

impl WorkspaceGuard {
    /// The locked workspace.
    pub fn name(&self) -> &WorkspaceName {
        &self.name
    }
}

impl WorkspaceLocks {
    /// A registry for `layout`'s base directory.
    pub fn new(layout: Layout) -> Self {
        WorkspaceLocks {
            layout,
            mutexes: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            next_lease: AtomicU64::new(1),
        }
    }

    fn mutex(&self, name: &WorkspaceName) -> Arc<Mutex<()>> {
        self.mutexes.lock().entry(name.clone()).or_default().clone()
    }

    fn open_lock_file(&self, name: &WorkspaceName) -> Result<File> {
        let path = self.layout.lock_path(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))
    }

    /// Wait for the workspace's lock (in this process, then across processes).
    pub fn lock(&self, name: &WorkspaceName) -> Result<WorkspaceGuard> {
        let local = self.mutex(name).lock_arc();
        let file = self.open_lock_file(name)?;
        file.lock()
            .map_err(|e| Error::io("locking", self.layout.lock_path(name), e))?;
        Ok(WorkspaceGuard {
            name: name.clone(),
            _file: file,
            _local: local,
        })
    }

    /// Take the lock only if it is free and the workspace is not leased.
    pub fn try_lock_idle(&self, name: &WorkspaceName) -> Result<Option<WorkspaceGuard>> {
        if self.is_leased(name) {
            return Ok(None);
        }
        let Some(local) = self.mutex(name).try_lock_arc() else {
            return Ok(None);
        };
        let file = self.open_lock_file(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(WorkspaceGuard {
                name: name.clone(),
                _file: file,
                _local: local,
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(Error::io("locking", self.layout.lock_path(name), e))
            }
        }
    }

    /// Whether the workspace is being prepared or removed (here or in another
    /// process) or is leased.
    ///
    /// A read: it never creates a lock file (every holder creates one first,
    /// so a missing file means no other process holds the lock).
    pub fn is_busy(&self, name: &WorkspaceName) -> bool {
        if self.is_leased(name) || self.mutex(name).is_locked() {
            return true;
        }
        match OpenOptions::new()
            .write(true)
            .open(self.layout.lock_path(name))
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Ok(file) => !matches!(file.try_lock(), Ok(())),
            // Cannot open the lock file: report busy, the safe answer.
            Err(_) => true,
        }
    }

    /// Whether a live lease is held on the workspace in this process.
    pub fn is_leased(&self, name: &WorkspaceName) -> bool {
        let mut leases = self.leases.lock();
        leases.retain(|_, l| l.live());
        leases.values().any(|l| &l.name == name)
    }

    /// Add a lease, until `expires` (none: until released). Returns its id.
    pub(crate) fn add_lease(&self, name: &WorkspaceName, expires: Option<Instant>) -> u64 {
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        self.leases.lock().insert(
            id,
            LeaseEntry {
                name: name.clone(),
                expires,
            },
        );
        id
    }

    /// Release a lease by id. Returns the workspace it held, if it was live.
    pub(crate) fn release_lease(&self, id: u64) -> Option<WorkspaceName> {
        self.leases
            .lock()
            .remove(&id)
            .filter(LeaseEntry::live)
            .map(|l| l.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_or_leased_workspace_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        layout.ensure().unwrap();
        let locks = WorkspaceLocks::new(layout);
        let name = WorkspaceName::parse("a_1").unwrap();
        assert!(!locks.is_busy(&name));
        let guard = locks.lock(&name).unwrap();
        assert!(locks.is_busy(&name));
        assert!(locks.try_lock_idle(&name).unwrap().is_none());
        drop(guard);
        assert!(!locks.is_busy(&name));
        let id = locks.add_lease(&name, None);
        assert!(locks.is_busy(&name));
        assert_eq!(locks.release_lease(id), Some(name.clone()));
        assert!(!locks.is_busy(&name));
        assert_eq!(locks.release_lease(id), None);
        // A timed lease lapses by itself.
        locks.add_lease(
            &name,
            Some(Instant::now() + std::time::Duration::from_millis(30)),
        );
        assert!(locks.is_busy(&name));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!locks.is_busy(&name));
    }
}
