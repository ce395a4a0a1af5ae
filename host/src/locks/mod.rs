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
//!
//! Leases are files, `<base>/.leases/<id>.json`, so every process on the
//! base sees them. A timed lease lives until its time (wall clock). An
//! open-ended one lives as long as the process that took it, and that is
//! judged by a lock, not by a PID: the first time a process takes an
//! open-ended lease it creates `<base>/.leases/owners/<token>.lock` (a
//! random token) and holds an exclusive lock on it for as long as it holds
//! unreleased open-ended leases (or a registry) on the base, even once
//! the manager that took them is dropped; its open-ended leases name that
//! token. The lease is
//! dead exactly when another process can take that lock, which the OS
//! allows once the holder exits, however it ends. PIDs do not do this
//! across containers and PID namespaces sharing a volume: a holder that is
//! PID 1 in its container would keep `/proc/1` alive for ever beside us,
//! and a holder in another namespace has no `/proc` entry here, so its
//! lease would look dead and cleanup could remove a workspace in use. The
//! PID rule is kept only for lease files that name no owner (from older
//! versions, or when no owner file could be made).
//!
//! Files under `.leases` are read defensively: only regular files of at
//! most `LEASE_FILE_MAX` (64 KiB) are opened, without following links and
//! without waiting (a FIFO or a link to `/dev/zero` must not hang every
//! listing), and anything else is ignored with a warning and left in place.

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::names::WorkspaceName;
use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

/// The lock registry of one base directory.
#[derive(Debug)]
pub struct WorkspaceLocks {
    layout: Layout,
    /// Where the lock files are: `<base>/.locks`, or the mirrors' own.
    lock_dir: PathBuf,
    mutexes: Mutex<HashMap<WorkspaceName, Arc<Mutex<()>>>>,
    /// Serializes id choice among this process's threads.
    leases: Mutex<()>,
    /// The leases this process took (also on disk).
    own: Mutex<HashMap<u64, LeaseEntry>>,
    /// This process's lease owner for the base, once this registry took an
    /// open-ended lease (shared with every registry of the same base).
    owner: Mutex<Option<Arc<Owner>>>,
    /// What the last listing ignored under `.leases` (warned about only
    /// when it changes).
    ignored: Mutex<BTreeSet<String>>,
}

/// One lease, as stored in `<base>/.leases/<id>.json`: on which
/// workspace, who holds it, until when (none: until released, or until
/// the process that took it ends), that process, and (open-ended leases)
/// the token of that process's owner lock file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LeaseEntry {
    name: WorkspaceName,
    holder: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The taking process's PID, as it sees it; only decides liveness for
    /// an open-ended lease that names no owner.
    pid: u32,
    created: chrono::DateTime<chrono::Utc>,
    /// The owner token (16 lowercase hex digits) of the process that took
    /// an open-ended lease: it lives while `.leases/owners/<token>.lock`
    /// is locked. None for timed leases and files of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
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

/// An open-ended lease that names no owner, of a process whose liveness
/// cannot be checked (off Linux), counts for this long at most.
const UNCHECKED_LEASE_MAX: chrono::Duration = chrono::Duration::hours(24);

/// The largest lease file read (a lease is a few hundred bytes); larger
/// files under `.leases` are ignored.
pub(crate) const LEASE_FILE_MAX: u64 = 64 * 1024;

/// Open flags that make opening a file under `.leases` safe: never wait
/// (a FIFO with no writer would block an open for reading) and never
/// follow a link in the last component. Values from the C headers, as the
/// crate does not depend on `libc`; 0 where unknown (the type checks
/// before and after opening still apply).
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "riscv64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
))]
const SAFE_OPEN_FLAGS: i32 = 0o4000 | 0o400000;
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "powerpc",
        target_arch = "powerpc64"
    )
))]
const SAFE_OPEN_FLAGS: i32 = 0o4000 | 0o100000;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
const SAFE_OPEN_FLAGS: i32 = 0x4 | 0x100;
#[cfg(all(
    unix,
    not(any(
        all(
            any(target_os = "linux", target_os = "android"),
            any(
                target_arch = "x86",
                target_arch = "x86_64",
                target_arch = "riscv64",
                target_arch = "s390x",
                target_arch = "loongarch64",
                target_arch = "aarch64",
                target_arch = "arm",
                target_arch = "powerpc",
                target_arch = "powerpc64"
            )
        ),
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))
))]
const SAFE_OPEN_FLAGS: i32 = 0;

/// This process's lease owner for one base directory: an exclusive lock
/// held on `.leases/owners/<token>.lock`. Dropped (the file deleted, then
/// the lock released) once no registry of that base and no unreleased
/// open-ended lease of this process holds it.
#[derive(Debug)]
struct Owner {
    token: String,
    path: PathBuf,
    /// Holds the lock; closed after `drop` deleted the file.
    _file: File,
}

/// Every base's owner in this process, by owners folder, so registries of
/// one base share one.
static OWNERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Owner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// An open-ended lease of this process: its base's owners folder, its id.
type HeldLease = (PathBuf, u64);

/// The open-ended leases this process took and has not released, by
/// owners folder and lease id, each holding its owner: an open-ended lease
/// lives until it is released or this process ends, even once every
/// registry of its base is dropped (a caller that builds a manager per
/// request, as a web handler may, keeps its leases).
static HELD: LazyLock<Mutex<HashMap<HeldLease, Arc<Owner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The tokens of this process's live owners: their leases are live without
/// touching their files.
static OWN_TOKENS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

impl Owner {
    /// Sweep the owner files of processes that are gone, then create and
    /// lock a file of a fresh token (kept only once locked and still the
    /// file at its path: a sweep in another process may delete a file
    /// between its creation and its lock).
    fn create(dir: &Path) -> Result<Owner> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        sweep_owners(dir);
        for _ in 0..8 {
            let token = format!("{:016x}", rand::random::<u64>());
            let path = owner_path(dir, &token);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, SAFE_OPEN_FLAGS);
            let file = match options.open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("creating lease owner file", &path, e)),
            };
            match lock_if_current(file, &path) {
                Ok(Attempt::Locked(file)) => {
                    OWN_TOKENS.lock().insert(token.clone());
                    return Ok(Owner {
                        token,
                        path,
                        _file: file,
                    });
                }
                // Swept meanwhile (whoever holds it deletes it): another token.
                Ok(Attempt::Held | Attempt::Stale) => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
        Err(Error::io(
            "creating lease owner file in",
            dir,
            std::io::Error::other("no file stayed locked after 8 tries"),
        ))
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        OWN_TOKENS.lock().remove(&self.token);
        // Deleted while still locked: no other process can take the lock
        // on it and keep a file that is no longer at its path.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `token` may name an owner file: exactly 16 lowercase hex digits
/// (it becomes a path).
fn valid_token(token: &str) -> bool {
    token.len() == 16
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<owners>/<token>.lock`; `token` must be valid.
fn owner_path(dir: &Path, token: &str) -> PathBuf {
    dir.join(format!("{token}.lock"))
}

/// Delete the owner files under `dir` whose lock another process no
/// longer holds (left by processes that crashed); others are kept.
fn sweep_owners(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(token) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".lock"))
            .filter(|t| valid_token(t))
        {
            // Deletes the file when it can be locked.
            let _ = owner_state(dir, token);
        }
    }
}

/// Whether the owner of a token lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnerState {
    /// This process's own, or its file is locked by another handle.
    Live,
    /// Its file is missing, or could be locked (it is deleted then).
    Dead,
    /// Its file could not be checked (why): counted live.
    Unchecked(String),
}

/// The state of the owner `token` (valid) under `dir`. An owner found dead
/// has its file deleted while this holds its lock.
fn owner_state(dir: &Path, token: &str) -> OwnerState {
    if OWN_TOKENS.lock().contains(token) {
        return OwnerState::Live;
    }
    let path = owner_path(dir, token);
    for _ in 0..3 {
        let file = match open_checked(&path, None) {
            Ok(file) => file,
            Err(Skip::Missing) => return OwnerState::Dead,
            Err(Skip::Refused(why)) => return OwnerState::Unchecked(why),
        };
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => return OwnerState::Live,
            Err(TryLockError::Error(e)) => {
                return OwnerState::Unchecked(format!("cannot lock it: {e}"));
            }
            Ok(()) if same_file(&file, &path) => {
                let _ = std::fs::remove_file(&path);
                // `file` (and its lock) is closed only now.
                return OwnerState::Dead;
            }
            Ok(()) if std::fs::symlink_metadata(&path).is_err() => return OwnerState::Dead,
            // Replaced since it was opened: check the new one.
            Ok(()) => continue,
        }
    }
    OwnerState::Unchecked("replaced while being checked".to_string())
}

/// Owner states found in one listing, and notes on those that could not
/// be checked.
struct OwnerCheck {
    dir: PathBuf,
    seen: HashMap<String, OwnerState>,
    notes: BTreeSet<String>,
}

impl OwnerCheck {
    fn new(dir: PathBuf) -> Self {
        OwnerCheck {
            dir,
            seen: HashMap::new(),
            notes: BTreeSet::new(),
        }
    }

    fn state(&mut self, token: &str) -> OwnerState {
        if let Some(state) = self.seen.get(token) {
            return state.clone();
        }
        let state = owner_state(&self.dir, token);
        if let OwnerState::Unchecked(why) = &state {
            self.notes.insert(format!(
                "owners/{token}.lock: {why} (its leases count as live)"
            ));
        }
        self.seen.insert(token.to_string(), state.clone());
        state
    }
}

/// Whether a lease lives.
#[derive(Debug, PartialEq, Eq)]
enum Liveness {
    Live,
    Dead,
    /// Neither: the file is left alone (why).
    Ignored(String),
}

impl LeaseEntry {
    /// A timed lease lives until it lapses (wall clock, so across
    /// restarts). An open-ended one lives while its owner's lock file is
    /// locked (whatever PID or PID namespace its process has); one that
    /// names no owner, while a process of its PID runs here (Linux; only
    /// this process and for [`UNCHECKED_LEASE_MAX`] elsewhere).
    fn liveness(&self, owners: &mut OwnerCheck) -> Liveness {
        match (self.expires_at, &self.owner) {
            (Some(t), _) if t > chrono::Utc::now() => Liveness::Live,
            (Some(_), _) => Liveness::Dead,
            (None, Some(token)) if !valid_token(token) => {
                Liveness::Ignored("names an owner that is not a token".to_string())
            }
            (None, Some(token)) => match owners.state(token) {
                OwnerState::Dead => Liveness::Dead,
                OwnerState::Live | OwnerState::Unchecked(_) => Liveness::Live,
            },
            (None, None) if self.pid_alive() => Liveness::Live,
            (None, None) => Liveness::Dead,
        }
    }

    /// The PID rule, for an open-ended lease that names no owner.
    fn pid_alive(&self) -> bool {
        if cfg!(target_os = "linux") {
            process_alive(self.pid)
        } else {
            self.pid == std::process::id()
                || chrono::Utc::now() - self.created < UNCHECKED_LEASE_MAX
        }
    }
}

/// Why a file under `.leases` was not read.
#[derive(Debug)]
enum Skip {
    /// It is not there (any more).
    Missing,
    /// It is not a regular file, too large, or could not be opened or read.
    Refused(String),
}

/// What kind of file `t` is, for a warning.
fn kind(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Whether `meta` is of a regular file of at most `max_len` bytes.
fn check_meta(meta: &std::fs::Metadata, max_len: Option<u64>) -> std::result::Result<(), Skip> {
    let t = meta.file_type();
    if !t.is_file() {
        return Err(Skip::Refused(format!("{} (not read)", kind(t))));
    }
    if let Some(max) = max_len
        && meta.len() > max
    {
        return Err(Skip::Refused(format!("larger than {max} bytes (not read)")));
    }
    Ok(())
}

/// Open `path` for reading only if it is a regular file (of at most
/// `max_len` bytes): checked before opening (no link followed), opened
/// without following a link or waiting, and checked again once open.
fn open_checked(path: &Path, max_len: Option<u64>) -> std::result::Result<File, Skip> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Skip::Missing),
        Err(e) => return Err(Skip::Refused(format!("cannot examine it: {e}"))),
    };
    check_meta(&meta, max_len)?;
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, SAFE_OPEN_FLAGS);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Skip::Missing),
        Err(e) => return Err(Skip::Refused(format!("cannot open it: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| Skip::Refused(format!("cannot examine it: {e}")))?;
    check_meta(&meta, max_len)?;
    Ok(file)
}

/// The bytes of a lease file, read defensively (see [`open_checked`]) and
/// at most [`LEASE_FILE_MAX`] of them.
fn read_lease_file(path: &Path) -> std::result::Result<Vec<u8>, Skip> {
    let file = open_checked(path, Some(LEASE_FILE_MAX))?;
    let mut bytes = Vec::new();
    file.take(LEASE_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Skip::Refused(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > LEASE_FILE_MAX {
        return Err(Skip::Refused(format!(
            "larger than {LEASE_FILE_MAX} bytes (not read)"
        )));
    }
    Ok(bytes)
}

/// The id of a lease file's name: exactly `<id>.json`.
fn lease_id(file_name: &str) -> Option<u64> {
    let id = file_name.strip_suffix(".json")?.parse::<u64>().ok()?;
    (format!("{id}.json") == file_name).then_some(id)
}

/// Proof that this process holds a workspace's lock; released on drop.
pub struct WorkspaceGuard {
    name: WorkspaceName,
    file: File,
    _local: ArcMutexGuard<RawMutex, ()>,
}

impl Drop for WorkspaceGuard {
    /// Unlocked before it is closed: a child process another thread is
    /// starting holds a copy of every descriptor until it runs its
    /// program, and closing ours alone would leave the lock held by that
    /// copy (a removal right after a prepare found it "in use").
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
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

    fn with_lock_dir(layout: Layout, lock_dir: PathBuf) -> Self {
        WorkspaceLocks {
            layout,
            lock_dir,
            mutexes: Mutex::new(HashMap::new()),
            leases: Mutex::new(()),
            own: Mutex::new(HashMap::new()),
            owner: Mutex::new(None),
            ignored: Mutex::new(BTreeSet::new()),
        }
    }

    fn mutex(&self, name: &WorkspaceName) -> Arc<Mutex<()>> {
        self.mutexes.lock().entry(name.clone()).or_default().clone()
    }

    fn lock_path(&self, name: &WorkspaceName) -> PathBuf {
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
            Error::busy(format!(
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
                    file,
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
            file,
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
    #[cfg(test)]
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
            Ok(file) => match file.try_lock() {
                Ok(()) => {
                    // Unlocked at once (see WorkspaceGuard's drop); Wine
                    // reports an error for a lock it did release.
                    let _ = file.unlock();
                    false
                }
                Err(_) => true,
            },
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

    /// Every live lease on disk; dead ones (lapsed, or of an owner whose
    /// lock could be taken, with its owner file) are deleted on the way.
    /// Files that are not regular, are too large, or name an invalid owner
    /// are ignored and left in place, with a warning when that set changes.
    fn live_leases(&self) -> Vec<(u64, LeaseEntry)> {
        let dir = self.layout.leases_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut owners = OwnerCheck::new(self.layout.lease_owners_dir());
        let mut ignored = BTreeSet::new();
        let mut live = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Some(id) = lease_id(file_name) else {
                continue;
            };
            let path = entry.path();
            let bytes = match read_lease_file(&path) {
                Ok(bytes) => bytes,
                // Released meanwhile.
                Err(Skip::Missing) => continue,
                Err(Skip::Refused(why)) => {
                    ignored.insert(format!("{file_name}: {why}"));
                    continue;
                }
            };
            let Ok(lease) = serde_json::from_slice::<LeaseEntry>(&bytes) else {
                ignored.insert(format!("{file_name}: not a lease"));
                continue;
            };
            match lease.liveness(&mut owners) {
                Liveness::Live => live.push((id, lease)),
                Liveness::Dead => {
                    let _ = std::fs::remove_file(&path);
                }
                Liveness::Ignored(why) => {
                    ignored.insert(format!("{file_name}: {why}"));
                }
            }
        }
        ignored.append(&mut owners.notes);
        self.report_ignored(&dir, ignored);
        live
    }

    /// Warn about what a listing ignored, once per change of that set.
    fn report_ignored(&self, dir: &Path, ignored: BTreeSet<String>) {
        let mut last = self.ignored.lock();
        if *last == ignored {
            return;
        }
        if !ignored.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                files = ?ignored,
                "ignoring files under the leases folder that cannot be read safely as leases \
                 (left in place; an owner file that cannot be checked keeps its leases live)"
            );
        }
        *last = ignored;
    }

    fn lease_file(&self, id: u64) -> PathBuf {
        self.layout.leases_dir().join(format!("{id}.json"))
    }

    /// This process's lease owner for the base, created (with a sweep of
    /// dead owners' files) on first use and shared with every registry of
    /// the same base; none, with a warning, when no owner file can be made.
    fn owner(&self) -> Option<Arc<Owner>> {
        let mut slot = self.owner.lock();
        if let Some(owner) = slot.as_ref() {
            return Some(owner.clone());
        }
        let dir = self.layout.lease_owners_dir();
        let mut owners = OWNERS.lock();
        owners.retain(|_, owner| owner.strong_count() > 0);
        let owner = match owners.get(&dir).and_then(Weak::upgrade) {
            Some(owner) => owner,
            None => match Owner::create(&dir) {
                Ok(owner) => {
                    let owner = Arc::new(owner);
                    owners.insert(dir, Arc::downgrade(&owner));
                    owner
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "could not create a lease owner file; open-ended leases fall back \
                         to the PID rule (wrong across containers and PID namespaces)"
                    );
                    return None;
                }
            },
        };
        *slot = Some(owner.clone());
        Some(owner)
    }

    /// Add a lease held by `holder` for `ttl` (none: until released, or
    /// until this process ends). Returns its id (random, so one caller
    /// cannot release another's) and when it lapses. The lease is a file
    /// under `<base>/.leases`: other processes see it, and a timed lease
    /// outlives a restart of the process that took it. An open-ended lease
    /// names this process's owner token, so it lives while this process
    /// holds the owner's lock (until the lease is released, by any
    /// registry, or the process ends), whatever its PID looks like from
    /// another container.
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
        let _ = std::fs::create_dir_all(self.layout.leases_dir());
        let owner_handle = match expires_at {
            Some(_) => None,
            None => self.owner(),
        };
        let owner = owner_handle.as_ref().map(|o| o.token.clone());
        let entry = LeaseEntry {
            name: name.clone(),
            holder: holder.to_string(),
            expires_at,
            pid: std::process::id(),
            created: chrono::Utc::now(),
            owner,
        };
        let _registry = self.leases.lock();
        let id = loop {
            // Ids are shown to callers as JSON numbers: keep them exact in
            // JavaScript's doubles (53 bits), and never 0.
            let id = rand::random::<u64>() >> 11;
            if id != 0 && std::fs::symlink_metadata(self.lease_file(id)).is_err() {
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
        if let Some(owner) = owner_handle {
            let mut held = HELD.lock();
            // Leases another process released: their owner need not stay.
            held.retain(|(dir, id), _| {
                dir != &self.layout.lease_owners_dir() || self.lease_file(*id).exists()
            });
            held.insert((self.layout.lease_owners_dir(), id), owner);
        }
        (id, expires_at)
    }

    /// Release a lease by id, whichever process took it. Returns the
    /// workspace it held, if it was live. The regular file named by the id
    /// is removed (even when it is not a lease); anything else there (a
    /// FIFO, a link, a folder) is left, with a warning, and never opened.
    pub(crate) fn release_lease(&self, id: u64) -> Option<WorkspaceName> {
        let own = self.own.lock().remove(&id);
        let path = self.lease_file(id);
        let on_disk = read_lease_file(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseEntry>(&b).ok());
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => {
                let _ = std::fs::remove_file(&path);
            }
            Ok(meta) => tracing::warn!(
                path = %path.display(),
                kind = kind(meta.file_type()),
                "left a file named by a released lease id that is not a regular file"
            ),
            Err(_) => {}
        }
        let mut owners = OwnerCheck::new(self.layout.lease_owners_dir());
        let name = on_disk
            .or(own)
            .filter(|l| l.liveness(&mut owners) == Liveness::Live)
            .map(|l| l.name);
        if !owners.notes.is_empty() {
            tracing::warn!(owners = ?owners.notes, "could not check a lease owner");
        }
        // Once judged live or not: its owner may go now. Dropped outside
        // the map's lock (an owner's drop deletes its file).
        let held = HELD.lock().remove(&(self.layout.lease_owners_dir(), id));
        drop(held);
        name
    }
}

/// Whether the process `pid` still runs (on Linux, from /proc; elsewhere
/// only this process is known to run). Only for leases that name no
/// owner: a PID says nothing across PID namespaces.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        return Path::new(&format!("/proc/{pid}")).exists();
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
fn lock_if_current(file: File, path: &Path) -> Result<Attempt> {
    match file.try_lock() {
        Ok(()) if same_file(&file, path) => Ok(Attempt::Locked(file)),
        Ok(()) => Ok(Attempt::Stale),
        Err(TryLockError::WouldBlock) => Ok(Attempt::Held),
        Err(TryLockError::Error(e)) => Err(Error::io("locking", path, e)),
    }
}

/// Whether `file` (open) is the file now at `path`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Windows does not delete a file another process holds open.
#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests;
