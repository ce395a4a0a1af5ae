//! Per-workspace locks (invariant 2) and leases.
//!
//! A workspace lock is an in-process mutex plus an advisory lock on
//! `<base>/.locks/<name>.lock`, so two processes on one base directory (a
//! CLI beside the server) also take turns. The OS drops a file lock when
//! its process dies, so a crashed holder never blocks anyone for ever.
//! Prepare holds the lock; removal only ever *tries* it and skips a busy
//! workspace. A lease marks a workspace in use while a caller works in it.
//!
//! Lock files are never deleted: a process waiting on an open lock file
//! whose name was unlinked would get a lock nobody else sees, while a
//! third process locks a new file of the same name. As a second line of
//! defence, a lock taken on a file that no longer is the one at its path
//! (someone deleted or replaced it) is dropped and taken again.

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::names::WorkspaceName;
use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lock registry of one base directory.
#[derive(Debug)]
pub struct WorkspaceLocks {
    layout: Layout,
    /// Where the lock files are: `<base>/.locks`, or the mirrors' own.
    lock_dir: std::path::PathBuf,
    mutexes: Mutex<HashMap<WorkspaceName, Arc<Mutex<()>>>>,
    /// Serializes id choice among this process's threads.
    leases: Mutex<()>,
    /// The leases this process took (also on disk).
    own: Mutex<HashMap<u64, LeaseEntry>>,
}

/// One lease, as stored in `<base>/.leases/<id>.json`: on which
/// workspace, who holds it, until when (none: until released, or until
/// the process that took it ends), and that process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LeaseEntry {
    name: WorkspaceName,
    holder: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pid: u32,
    created: chrono::DateTime<chrono::Utc>,
}

/// Who holds a lease on a workspace, for an "in use" answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's label (the prepare's `holder`, or what took the lease).
    pub holder: String,
    /// When the lease lapses; none: when its holder releases it.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.until {
            Some(t) => write!(f, "leased by {} until {}", self.holder, t.to_rfc3339()),
            None => write!(f, "leased by {} until it is released", self.holder),
        }
    }
}

/// How often a wait for a lock held by another process polls.
const POLL: Duration = Duration::from_millis(25);

/// An open-ended lease of a process whose liveness cannot be checked (off
/// Linux) counts for this long at most.
const UNCHECKED_LEASE_MAX: chrono::Duration = chrono::Duration::hours(24);

impl LeaseEntry {
    /// A timed lease lives until it lapses (wall clock, so across
    /// restarts); an open-ended one while the process that took it runs.
    fn live(&self) -> bool {
        match self.expires_at {
            Some(t) => t > chrono::Utc::now(),
            None if cfg!(target_os = "linux") => process_alive(self.pid),
            None => {
                self.pid == std::process::id()
                    || chrono::Utc::now() - self.created < UNCHECKED_LEASE_MAX
            }
        }
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

impl WorkspaceLocks {
    /// A registry for `layout`'s base directory.
    pub fn new(layout: Layout) -> Self {
        let lock_dir = layout.locks_dir();
        Self::with_lock_dir(layout, lock_dir)
    }

    /// A registry for the mirrors of `layout`'s base directory (lock files
    /// in `<base>/.mirrors/.locks`, so a mirror and a workspace of the same
    /// name never share a lock). Leases are for workspaces only.
    pub fn for_mirrors(layout: Layout) -> Self {
        let lock_dir = layout.mirror_locks_dir();
        Self::with_lock_dir(layout, lock_dir)
    }

    fn with_lock_dir(layout: Layout, lock_dir: std::path::PathBuf) -> Self {
        WorkspaceLocks {
            layout,
            lock_dir,
            mutexes: Mutex::new(HashMap::new()),
            leases: Mutex::new(()),
            own: Mutex::new(HashMap::new()),
        }
    }

    fn mutex(&self, name: &WorkspaceName) -> Arc<Mutex<()>> {
        self.mutexes.lock().entry(name.clone()).or_default().clone()
    }

    fn lock_path(&self, name: &WorkspaceName) -> std::path::PathBuf {
        self.lock_dir.join(format!("{name}.lock"))
    }

    fn open_lock_file(&self, name: &WorkspaceName) -> Result<File> {
        let path = self.lock_path(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))
    }

    /// Wait up to `wait` for the workspace's lock (in this process, then
    /// across processes); `Busy` when it is still held then.
    pub fn lock(&self, name: &WorkspaceName, wait: Duration) -> Result<WorkspaceGuard> {
        let deadline = Instant::now() + wait;
        let busy = || {
            Error::Busy(format!(
                "workspace {name} has been busy (prepared or removed by another caller) for \
                 {wait:?} (WORKSPACE_LOCK_WAIT_SECONDS); retry later"
            ))
        };
        let local = self
            .mutex(name)
            .try_lock_arc_until(deadline)
            .ok_or_else(busy)?;
        loop {
            if let Some(file) = self.try_lock_file(name)? {
                return Ok(WorkspaceGuard {
                    name: name.clone(),
                    _file: file,
                    _local: local,
                });
            }
            if Instant::now() >= deadline {
                return Err(busy());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Take the lock only if it is free and the workspace is not leased.
    pub fn try_lock_idle(&self, name: &WorkspaceName) -> Result<Option<WorkspaceGuard>> {
        if self.is_leased(name) {
            return Ok(None);
        }
        let Some(local) = self.mutex(name).try_lock_arc() else {
            return Ok(None);
        };
        Ok(self.try_lock_file(name)?.map(|file| WorkspaceGuard {
            name: name.clone(),
            _file: file,
            _local: local,
        }))
    }

    /// Try the cross-process lock once: the file locked, and still the
    /// file at its path once locked.
    fn try_lock_file(&self, name: &WorkspaceName) -> Result<Option<File>> {
        let path = self.lock_path(name);
        for _ in 0..3 {
            match lock_if_current(self.open_lock_file(name)?, &path)? {
                Attempt::Locked(file) => return Ok(Some(file)),
                Attempt::Held => return Ok(None),
                // Deleted or replaced while we opened it: lock the new one.
                Attempt::Stale => continue,
            }
        }
        Ok(None)
    }

    /// Whether the workspace is being prepared or removed (here or in another
    /// process) or is leased.
    ///
    /// A read: it never creates a lock file (every holder creates one first,
    /// so a missing file means no other process holds the lock).
    pub fn is_busy(&self, name: &WorkspaceName) -> bool {
        self.is_leased(name) || self.is_locked(name)
    }

    /// Whether the workspace's lock is held (a prepare or removal, here or
    /// in another process); leases aside. Never creates a lock file.
    pub fn is_locked(&self, name: &WorkspaceName) -> bool {
        if self.mutex(name).is_locked() {
            return true;
        }
        match OpenOptions::new().write(true).open(self.lock_path(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Ok(file) => !matches!(file.try_lock(), Ok(())),
            // Cannot open the lock file: report busy, the safe answer.
            Err(_) => true,
        }
    }

    /// Whether a live lease is held on the workspace, by any process.
    pub fn is_leased(&self, name: &WorkspaceName) -> bool {
        self.lease_holder(name).is_some()
    }

    /// Who holds a live lease on the workspace, if anyone (the lease that
    /// lasts longest when there are several). Leases are read from
    /// `<base>/.leases`, so one taken by the server is seen by the CLI.
    pub fn lease_holder(&self, name: &WorkspaceName) -> Option<LeaseHolder> {
        self.live_leases()
            .into_iter()
            .filter(|(_, l)| &l.name == name)
            .max_by_key(|(_, l)| l.expires_at.map_or(i64::MAX, |t| t.timestamp()))
            .map(|(_, l)| LeaseHolder {
                holder: l.holder,
                until: l.expires_at,
            })
    }

    /// Every live lease on disk; lapsed ones (and those of a process that
    /// is gone) are deleted on the way.
    fn live_leases(&self) -> Vec<(u64, LeaseEntry)> {
        let dir = self.layout.leases_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut live = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(lease) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<LeaseEntry>(&b).ok())
            else {
                continue;
            };
            if lease.live() {
                live.push((id, lease));
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        live
    }

    fn lease_file(&self, id: u64) -> std::path::PathBuf {
        self.layout.leases_dir().join(format!("{id}.json"))
    }

    /// Add a lease held by `holder` for `ttl` (none: until released, or
    /// until this process ends). Returns its id (random, so one caller
    /// cannot release another's) and when it lapses. The lease is a file
    /// under `<base>/.leases`: other processes see it, and a timed lease
    /// outlives a restart of the process that took it.
    pub(crate) fn add_lease(
        &self,
        name: &WorkspaceName,
        holder: &str,
        ttl: Option<Duration>,
    ) -> (u64, Option<chrono::DateTime<chrono::Utc>>) {
        let expires_at = ttl.and_then(|t| {
            chrono::Duration::from_std(t)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_add_signed(d))
        });
        let entry = LeaseEntry {
            name: name.clone(),
            holder: holder.to_string(),
            expires_at,
            pid: std::process::id(),
            created: chrono::Utc::now(),
        };
        let _ = std::fs::create_dir_all(self.layout.leases_dir());
        let _registry = self.leases.lock();
        let id = loop {
            // Ids are shown to callers as JSON numbers: keep them exact in
            // JavaScript's doubles (53 bits), and never 0.
            let id = rand::random::<u64>() >> 11;
            if id != 0 && !self.lease_file(id).exists() {
                break id;
            }
        };
        if let Err(e) = crate::adapter::fs::write_atomically(
            &self.lease_file(id),
            &serde_json::to_vec(&entry).expect("a lease serializes"),
        ) {
            // Still held in this process; other processes will not see it.
            tracing::warn!(workspace = %name, error = %e, "could not record the lease on disk");
        }
        self.own.lock().insert(id, entry);
        (id, expires_at)
    }

    /// Release a lease by id, whichever process took it. Returns the
    /// workspace it held, if it was live.
    pub(crate) fn release_lease(&self, id: u64) -> Option<WorkspaceName> {
        let own = self.own.lock().remove(&id);
        let path = self.lease_file(id);
        let on_disk = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseEntry>(&b).ok());
        let _ = std::fs::remove_file(&path);
        on_disk.or(own).filter(LeaseEntry::live).map(|l| l.name)
    }
}

/// Whether the process `pid` still runs (on Linux, from /proc; elsewhere
/// only this process is known to run).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        return std::path::Path::new(&format!("/proc/{pid}")).exists();
    }
    false
}

/// What one try at an opened lock file gave.
#[derive(Debug)]
enum Attempt {
    /// Locked, and it is the file at the path.
    Locked(File),
    /// Someone else holds it.
    Held,
    /// Locked, but the path names another file now (the lock was dropped).
    Stale,
}

/// Lock `file` (opened from `path`) if free, and keep the lock only if the
/// file is still the one at `path`.
fn lock_if_current(file: File, path: &std::path::Path) -> Result<Attempt> {
    match file.try_lock() {
        Ok(()) if same_file(&file, path) => Ok(Attempt::Locked(file)),
        Ok(()) => Ok(Attempt::Stale),
        Err(TryLockError::WouldBlock) => Ok(Attempt::Held),
        Err(TryLockError::Error(e)) => Err(Error::io("locking", path, e)),
    }
}

/// Whether `file` (open) is the file now at `path`.
#[cfg(unix)]
fn same_file(file: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Windows does not delete a file another process holds open.
#[cfg(not(unix))]
fn same_file(_file: &File, path: &std::path::Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn registry() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        layout.ensure().unwrap();
        (dir, layout)
    }

    #[test]
    fn a_held_or_leased_workspace_is_busy() {
        let (_dir, layout) = registry();
        let locks = WorkspaceLocks::new(layout);
        let name = WorkspaceName::parse("a_1").unwrap();
        assert!(!locks.is_busy(&name));
        let guard = locks.lock(&name, WAIT).unwrap();
        assert!(locks.is_busy(&name));
        assert!(locks.try_lock_idle(&name).unwrap().is_none());
        drop(guard);
        assert!(!locks.is_busy(&name));
        let (id, _) = locks.add_lease(&name, "tester", None);
        assert!(locks.is_busy(&name));
        assert_eq!(
            locks.lease_holder(&name).unwrap().to_string(),
            "leased by tester until it is released"
        );
        assert_eq!(locks.release_lease(id), Some(name.clone()));
        assert!(!locks.is_busy(&name));
        assert_eq!(locks.release_lease(id), None);
        // A timed lease lapses by itself.
        locks.add_lease(&name, "tester", Some(Duration::from_millis(30)));
        assert!(locks.is_busy(&name));
        assert!(locks.lease_holder(&name).unwrap().until.is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!locks.is_busy(&name));
        assert!(locks.lease_holder(&name).is_none());
    }

    #[test]
    fn lease_ids_are_not_guessable_from_each_other() {
        let (_dir, layout) = registry();
        let locks = WorkspaceLocks::new(layout);
        let name = WorkspaceName::parse("a_1").unwrap();
        let ids: Vec<u64> = (0..32)
            .map(|_| locks.add_lease(&name, "t", None).0)
            .collect();
        let sequential = ids.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert_eq!(sequential, 0, "{ids:?}");
        assert!(ids.iter().any(|id| *id > 1 << 40), "{ids:?}");
        assert!(ids.iter().all(|id| *id < 1 << 53));
    }

    /// Another process's lock (a second registry opens the file afresh,
    /// as a process does) makes a bounded wait end busy, not hang.
    #[test]
    fn waiting_for_a_lock_held_elsewhere_ends_busy() {
        let (_dir, layout) = registry();
        let here = WorkspaceLocks::new(layout.clone());
        let elsewhere = WorkspaceLocks::new(layout);
        let name = WorkspaceName::parse("a_1").unwrap();
        let _held = elsewhere.lock(&name, WAIT).unwrap();
        let started = Instant::now();
        let err = here.lock(&name, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Busy, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A lock file replaced between a locker's open and its lock: the lock
    /// on the orphaned file is not kept (it would be held beside whoever
    /// locks the new file).
    #[cfg(unix)]
    #[test]
    fn a_lock_on_a_replaced_file_is_not_kept() {
        let (_dir, layout) = registry();
        let name = WorkspaceName::parse("a_1").unwrap();
        let path = layout.lock_path(&name);
        let locks = WorkspaceLocks::new(layout);
        let opened = locks.open_lock_file(&name).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            lock_if_current(opened, &path).unwrap(),
            Attempt::Stale
        ));
        // The registry itself ends on the file now at the path.
        let guard = locks.try_lock_idle(&name).unwrap().unwrap();
        assert!(same_file(&guard._file, &path));
    }
}
