//! [`WorkspaceManager`]: the library API (prepare, list, stats, cleanup,
//! health, remove, lease) over the host services and the policy engine.

use crate::adapter::fs::{child_dirs, dir_size, free_space};
use crate::adapter::git::{self, ProgressFn, Remote};
use crate::adapter::removal::{FsOps, RealFs, RemovalConfig, Remover};
use crate::clone_url::{CloneUrl, Transport};
use crate::config::{Config, PolicyLimits, PolicySource};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::locks::WorkspaceLocks;
use crate::metadata::{METADATA_VERSION, WorkspaceMetadata};
use crate::metrics::{Metrics, Operation};
use crate::model::*;
use crate::names::WorkspaceName;
use crate::policy::bindings::exports::fixsec::workspace::policy as wit;
use crate::policy::from_wit_error;
use crate::policy::{CallContext, Export, PolicyEngine};
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Suffix of a note in `.trash/` naming a workspace whose in-place deletion
/// did not finish (its folder could not be renamed into `.trash/`).
const IN_PLACE_NOTE_SUFFIX: &str = ".in-place";

/// The longest lease a prepare may take (a week).
pub const MAX_LEASE_SECONDS: u64 = 7 * 24 * 3600;

/// An operation running longer than this is reported by health (the guide's alert).
pub const LONG_OPERATION: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The side effects the policy's imports and the manager share.
#[derive(Debug)]
pub(crate) struct Services {
    pub config: Config,
    pub layout: Layout,
    pub locks: WorkspaceLocks,
    pub remover: Remover,
    pub metrics: Metrics,
    /// Background deletions still running (count, and a signal when one ends).
    pub background: Arc<(parking_lot::Mutex<usize>, parking_lot::Condvar)>,
    /// Recent stats and health answers.
    pub snapshots: Snapshots,
    /// The bounded queue in front of git network work.
    pub git_queue: crate::git_queue::GitQueue,
    /// Set at shutdown: transfers in flight stop at their next chunk.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// How old the figures behind `/metrics` may be. A scrape never waits for
/// a listing of every workspace more often than this.
pub const METRICS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a stats or health answer is reused. Probes and dashboards poll
/// far more often than workspaces change; every change made through this
/// manager refreshes the answers at once, changes by another process (a
/// CLI beside the server) show within this time.
pub const SNAPSHOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Stats and health answers with the change counter they were computed at.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    generation: std::sync::atomic::AtomicU64,
    stats: parking_lot::Mutex<Option<(Instant, u64, Stats)>>,
    health: parking_lot::Mutex<Option<(Instant, u64, HealthReport)>>,
}

impl Snapshots {
    /// Something changed: answers computed before are stale.
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The last answer if younger than `max_age`, changed since or not.
    fn get_recent<T: Clone>(
        &self,
        slot: &parking_lot::Mutex<Option<(Instant, u64, T)>>,
        max_age: std::time::Duration,
    ) -> Option<T> {
        slot.lock()
            .as_ref()
            .filter(|(at, _, _)| at.elapsed() < max_age)
            .map(|(_, _, v)| v.clone())
    }

    fn get<T: Clone>(&self, slot: &parking_lot::Mutex<Option<(Instant, u64, T)>>) -> Option<T> {
        let now_gen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        slot.lock()
            .as_ref()
            .filter(|(at, generation, _)| *generation == now_gen && at.elapsed() < SNAPSHOT_TTL)
            .map(|(_, _, v)| v.clone())
    }

    fn put<T>(
        &self,
        slot: &parking_lot::Mutex<Option<(Instant, u64, T)>>,
        generation: u64,
        value: T,
    ) {
        *slot.lock() = Some((Instant::now(), generation, value));
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Services {
    /// One workspace as listed, or none if its folder does not exist.
    pub fn summary(&self, name: &WorkspaceName) -> Option<WorkspaceSummary> {
        let dir = self.layout.workspace_dir(name);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        let meta = WorkspaceMetadata::read(&self.layout.metadata_path(name));
        // Sizes are kept up to date at prepare time; only a folder without
        // metadata (adopted from the original tool) is walked.
        let size_bytes = meta
            .as_ref()
            .map_or_else(|| dir_size(&self.layout.repo_dir(name)), |m| m.size_bytes);
        Some(WorkspaceSummary {
            name: name.to_string(),
            repo_full_name: meta.as_ref().map(|m| m.repo_full_name.clone()),
            clone_url: meta.as_ref().map(|m| m.clone_url.clone()),
            branch: meta.as_ref().and_then(|m| m.branch.clone()),
            head: meta.as_ref().map(|m| m.head.clone()),
            size_bytes,
            size_mb: to_mb(size_bytes),
            created: meta.as_ref().map(|m| m.created),
            last_prepared: meta.as_ref().map(|m| m.last_prepared),
            last_used: meta.as_ref().map(|m| m.last_used),
            in_use: self.locks.is_busy(name),
            has_metadata: meta.is_some(),
        })
    }

    /// Every workspace folder under the base directory.
    pub fn list(&self) -> Result<Vec<WorkspaceSummary>> {
        self.metrics.listing_scanned();
        let base = self.layout.base();
        let names = match child_dirs(base) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing workspaces in", base, e)),
        };
        Ok(names
            .iter()
            .filter_map(|n| WorkspaceName::parse(n).ok())
            .filter_map(|n| self.summary(&n))
            .collect())
    }

    /// Entries in `.trash/` still waiting for deletion: folders renamed
    /// there, and notes naming workspaces deleted in place but not finished.
    pub fn pending_deletions(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.layout.trash_dir())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Remove a workspace unless it is in use: rename it into `.trash/`
    /// (its name is free at once), then delete it with retries.
    pub fn remove_workspace(&self, name: &WorkspaceName) -> RemovalReport {
        self.remove_workspace_unless(name, |_| None)
    }

    /// [`remove_workspace`](Self::remove_workspace), unless `stale` — asked
    /// under the workspace's lock with its `workspace.json` read afresh —
    /// gives a reason to keep it (a cleanup decided on a listing that a
    /// prepare has since made wrong).
    pub fn remove_workspace_unless(
        &self,
        name: &WorkspaceName,
        stale: impl FnOnce(Option<&WorkspaceMetadata>) -> Option<String>,
    ) -> RemovalReport {
        let mut report = RemovalReport::new(name.as_str());
        let guard = match self.locks.try_lock_idle(name) {
            Ok(Some(g)) => g,
            Ok(None) => {
                report.skipped_in_use = true;
                report.error = Some("in use (being prepared or leased)".into());
                return report;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let dir = self.layout.workspace_dir(name);
        if std::fs::symlink_metadata(&dir).is_err() {
            report.removed = true;
            return report;
        }
        let meta = WorkspaceMetadata::read(&self.layout.metadata_path(name));
        if let Some(reason) = stale(meta.as_ref()) {
            tracing::info!(workspace = %name, reason, "removal skipped");
            report.skipped_in_use = true;
            report.error = Some(reason);
            return report;
        }
        let known_size = meta.map(|m| m.size_bytes);
        let trashed = self.move_to_trash(name, &dir);
        self.remove_locked(name, guard, trashed, known_size)
    }

    /// Delete a workspace whose lock `guard` holds: from `.trash/` when
    /// `trashed` says it was moved there, else in place. An in-place
    /// deletion that cannot finish leaves a note in `.trash/`, so the next
    /// cleanup finishes it.
    fn remove_locked(
        &self,
        name: &WorkspaceName,
        guard: crate::locks::WorkspaceGuard,
        trashed: Option<PathBuf>,
        known_size: Option<u64>,
    ) -> RemovalReport {
        let mut report = RemovalReport::new(name.as_str());
        let _timer = self.metrics.start(Operation::Remove, Some(name.as_str()));
        self.snapshots.invalidate();
        let in_place = trashed.is_none();
        let target = trashed.unwrap_or_else(|| self.layout.workspace_dir(name));
        let outcome = self.remover.remove_tree_sized(&target, known_size);
        if in_place && !outcome.removed {
            self.note_in_place_deletion(name);
        }
        // Released before its lock file goes (Windows keeps the name of an
        // open file until it is closed).
        drop(guard);
        self.snapshots.invalidate();
        self.metrics.removal(outcome.removed);
        report.removed = outcome.removed;
        report.attempts = outcome.attempts;
        report.bytes_freed = outcome.bytes_freed;
        report.error = outcome.error.map(|e| {
            format!(
                "{e}; what is left stays pending and every cleanup retries it \
                 (a file in use: close the program holding it)"
            )
        });
        report.remaining = outcome
            .remaining
            .iter()
            .map(|p| self.layout.relative(p).display().to_string())
            .collect();
        if report.removed {
            // The lock file stays: see `locks` (deleting it lets two
            // processes hold the lock).
            tracing::info!(workspace = %name, attempts = report.attempts, bytes = report.bytes_freed, "workspace removed");
        } else {
            tracing::warn!(workspace = %name, attempts = report.attempts, error = report.error.as_deref().unwrap_or_default(), "workspace removal incomplete");
        }
        report
    }

    /// Rename a workspace into `.trash/` (its name is free at once). `None`
    /// when that is impossible: on Windows, a handle open on anything inside
    /// the folder blocks renaming it. One try only: the deletion that
    /// follows is what waits for handles to close.
    fn move_to_trash(&self, name: &WorkspaceName, dir: &Path) -> Option<PathBuf> {
        let trash = self.layout.unique_in(self.layout.trash_dir(), name);
        match self.remover.rename_once(dir, &trash) {
            Ok(()) => Some(trash),
            Err(e) => {
                tracing::warn!(workspace = %name, error = %e, "cannot move workspace to trash; deleting in place");
                None
            }
        }
    }

    /// Leave `.trash/<name>.<pid>.<nanos>.in-place` for a workspace whose
    /// in-place deletion did not finish.
    fn note_in_place_deletion(&self, name: &WorkspaceName) {
        let mut note = self
            .layout
            .unique_in(self.layout.trash_dir(), name)
            .into_os_string();
        note.push(IN_PLACE_NOTE_SUFFIX);
        if let Err(e) = std::fs::write(&note, name.as_str()) {
            tracing::warn!(workspace = %name, error = %e, "cannot record the unfinished deletion; remove the workspace again");
        }
    }

    /// Finish (or forget) an unfinished in-place deletion noted in `note`.
    /// Returns the bytes freed, or `None` while the workspace is still there.
    fn finish_in_place_deletion(&self, note: &Path) -> Option<u64> {
        let name = std::fs::read_to_string(note)
            .ok()
            .and_then(|n| WorkspaceName::parse(n.trim()).ok());
        let Some(name) = name else {
            let _ = std::fs::remove_file(note);
            return Some(0);
        };
        // Being prepared or leased: someone is using the name again.
        let Ok(Some(_guard)) = self.locks.try_lock_idle(&name) else {
            return None;
        };
        let dir = self.layout.workspace_dir(&name);
        let freed = if WorkspaceMetadata::read(&self.layout.metadata_path(&name)).is_some() {
            // Prepared again since: that prepare replaced the leftovers.
            0
        } else {
            let outcome = self.remover.remove_tree(&dir);
            if !outcome.removed {
                return None;
            }
            outcome.bytes_freed
        };
        let _ = std::fs::remove_file(note);
        Some(freed)
    }

    /// Finish deletions left in `.trash/` by earlier removals, and delete
    /// staging folders left by crashed prepares (of workspaces not being
    /// prepared now).
    pub fn purge_trash(&self) -> (usize, u64) {
        self.snapshots.invalidate();
        let mut finished = 0;
        let mut freed = 0;
        let stale_staging: Vec<PathBuf> = std::fs::read_dir(self.layout.staging_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                // Stale when nobody holds its workspace's lock.
                staging_owner(p)
                    .is_some_and(|n| matches!(self.locks.try_lock_idle(&n), Ok(Some(_))))
            })
            .collect();
        for path in stale_staging {
            tracing::info!(path = %path.display(), "removing a crashed prepare's staging folder");
            freed += self.remover.remove_tree(&path).bytes_freed;
        }
        for path in self.pending_deletions() {
            if path.to_string_lossy().ends_with(IN_PLACE_NOTE_SUFFIX) {
                if let Some(bytes) = self.finish_in_place_deletion(&path) {
                    finished += 1;
                    freed += bytes;
                }
                continue;
            }
            let outcome = self.remover.remove_tree(&path);
            freed += outcome.bytes_freed;
            if outcome.removed {
                finished += 1;
            }
        }
        (finished, freed)
    }

    /// Clone into a staging folder, then swap it in as `repo/`. Returns the
    /// head commit and the checkout's size. Waits for a slot in the git
    /// queue; a clone over the size limit or the free-space floor is
    /// stopped and leaves nothing behind.
    pub fn clone_workspace(
        &self,
        name: &WorkspaceName,
        url: &str,
        branch: Option<&str>,
        depth: Option<u32>,
        remote: &Remote,
    ) -> Result<(String, u64)> {
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        let _timer = self.metrics.start(Operation::Clone, Some(name.as_str()));
        let staging = self.layout.unique_in(self.layout.staging_dir(), name);
        let head = match git::clone(url, branch, depth, remote, &staging) {
            Ok(head) => head,
            Err(e) => {
                self.remover.remove_tree(&staging);
                return Err(e.into());
            }
        };
        // The pack is bounded as it arrives; the checkout can be larger.
        if let Some(max) = self.config.max_workspace_bytes {
            let size = git::checkout_size(&staging).unwrap_or_else(|| dir_size(&staging));
            if size > max {
                self.remover.remove_tree(&staging);
                return Err(Error::InsufficientStorage(format!(
                    "the clone of {url} takes {} MB, over the {} MB limit \
                     (WORKSPACE_MAX_WORKSPACE_MB); nothing was kept",
                    size >> 20,
                    max >> 20
                )));
            }
        }
        let repo = self.layout.repo_dir(name);
        std::fs::create_dir_all(self.layout.workspace_dir(name))
            .map_err(|e| Error::io("creating workspace", self.layout.workspace_dir(name), e))?;
        if std::fs::symlink_metadata(&repo).is_ok() {
            let old = self.layout.unique_in(self.layout.trash_dir(), name);
            let moved = self.remover.rename(&repo, &old).is_ok();
            let outcome = self.remover.remove_tree(if moved { &old } else { &repo });
            if !moved && !outcome.removed {
                self.remover.remove_tree(&staging);
                return Err(Error::Filesystem(format!(
                    "cannot replace {}: {}; close the program holding it and prepare again",
                    repo.display(),
                    outcome.error.unwrap_or_default()
                )));
            }
        }
        self.remover
            .rename(&staging, &repo)
            .map_err(|(_, e)| Error::io("moving the new clone into place at", &repo, e))?;
        let size = git::checkout_size(&repo).unwrap_or_else(|| dir_size(&repo));
        Ok((head, size))
    }

    /// Fetch, hard-reset and clean `repo/` in place.
    pub fn update_workspace(
        &self,
        name: &WorkspaceName,
        url: &str,
        branch: Option<&str>,
        depth: Option<u32>,
        remote: &Remote,
    ) -> Result<(String, u64)> {
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        let _timer = self.metrics.start(Operation::Update, Some(name.as_str()));
        git::update(&self.layout.repo_dir(name), url, branch, depth, remote).map_err(Error::from)
    }

    /// Delete staging folders of `name` (and only of `name`) left by a
    /// crashed prepare. Requires `name`'s lock.
    fn clear_staging(&self, name: &WorkspaceName) {
        for path in std::fs::read_dir(self.layout.staging_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| staging_owner(p).as_ref() == Some(name))
        {
            self.remover.remove_tree(&path);
        }
    }

    fn stats(&self, list: &[WorkspaceSummary]) -> Stats {
        let total: u64 = list.iter().map(|w| w.size_bytes).sum();
        let mut workspaces: Vec<WorkspaceSize> = list
            .iter()
            .map(|w| WorkspaceSize {
                name: w.name.clone(),
                size_bytes: w.size_bytes,
                size_mb: to_mb(w.size_bytes),
            })
            .collect();
        workspaces.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.name.cmp(&b.name)));
        let pending_deletions = self.pending_deletions().len();
        self.metrics
            .set_totals(list.len(), total, pending_deletions);
        Stats {
            total_workspaces: list.len(),
            total_size_mb: to_mb(total),
            total_size_bytes: total,
            base_path: self.layout.base().display().to_string(),
            in_use: list.iter().filter(|w| w.in_use).count(),
            pending_deletions,
            free_space_bytes: free_space(self.layout.base()),
            workspaces,
        }
    }
}

/// The workspace a staging folder `<name>.<pid>.<nanos>` belongs to.
fn staging_owner(path: &Path) -> Option<WorkspaceName> {
    path.file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.rsplitn(3, '.').nth(2))
        .and_then(|n| WorkspaceName::parse(n).ok())
}

impl From<git::GitError> for Error {
    fn from(e: git::GitError) -> Self {
        match e.stopped {
            Some(git::Stop::Cancelled) => Error::Busy(e.message),
            Some(git::Stop::Storage(_)) => Error::InsufficientStorage(e.message),
            None if e.not_found => Error::NotFound(e.message),
            None => Error::Git(e.message),
        }
    }
}

/// Whether `host` is one of `list` (exactly, or under a `.suffix` entry).
pub(crate) fn host_listed(host: &str, list: &[String]) -> bool {
    list.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        host == a || (a.starts_with('.') && host.ends_with(&a))
    })
}

/// Persistent, named git workspaces, one per repository, with the policy
/// in a sandboxed WebAssembly component. Cheap to clone; share it freely.
///
/// ```no_run
/// use fixsec_workspace::{PrepareRequest, WorkspaceManager};
///
/// # fn main() -> Result<(), fixsec_workspace::Error> {
/// let manager = WorkspaceManager::builder()
///     .base_path("backend/workspace")
///     .build()?;
/// let ws = manager.prepare(
///     &PrepareRequest::new("facebook/react", "https://github.com/facebook/react.git")
///         .branch("main")
///         .depth(1),
/// )?;
/// println!("{} at {} (reused: {})", ws.name, ws.path.display(), ws.reused);
/// let report = manager.cleanup(Some(24.0))?;
/// println!("removed {} old workspaces", report.cleaned_workspaces);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WorkspaceManager {
    services: Arc<Services>,
    /// Swapped whole by a reload; each call takes its own `Arc`, so calls in
    /// flight finish on the policy they started with.
    policy: Arc<parking_lot::RwLock<Arc<PolicyEngine>>>,
}

/// Builds a [`WorkspaceManager`]; starts from [`Config::default`] (or a
/// given config) and overrides what it is told.
pub struct WorkspaceManagerBuilder {
    config: Config,
    policy_bytes: Option<(Vec<u8>, String)>,
    fs_ops: Arc<dyn FsOps>,
}

impl WorkspaceManagerBuilder {
    /// Start from `config`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// Change any setting of the configuration built so far (limits,
    /// timeouts, waits).
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }
    /// Where workspaces live.
    pub fn base_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.base_path = path.into();
        self
    }
    /// Load the policy from a `.wasm` component file.
    pub fn policy_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.policy = PolicySource::File(path.into());
        self
    }
    /// Load the policy from component bytes.
    pub fn policy_bytes(mut self, bytes: Vec<u8>, label: impl Into<String>) -> Self {
        self.policy_bytes = Some((bytes, label.into()));
        self
    }
    /// Accept local paths and `file://` URLs.
    pub fn allow_local_urls(mut self, allow: bool) -> Self {
        self.config.allow_local_urls = allow;
        self
    }
    /// Let clone hosts resolve to loopback, private and link-local
    /// addresses (tests, on-premises git servers).
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.config.allow_private_networks = allow;
        self
    }
    /// Default cleanup age.
    pub fn max_age_hours(mut self, hours: f64) -> Self {
        self.config.max_age_hours = hours;
        self
    }
    /// Deletion retries and backoff.
    pub fn removal(mut self, removal: RemovalConfig) -> Self {
        self.config.removal = removal;
        self
    }
    /// Per-call policy limits.
    pub fn policy_limits(mut self, limits: PolicyLimits) -> Self {
        self.config.policy_limits = limits;
        self
    }
    /// The filesystem calls deletion goes through (fault injection in tests).
    pub fn fs_ops(mut self, ops: Arc<dyn FsOps>) -> Self {
        self.fs_ops = ops;
        self
    }

    /// Load and check the policy, create the base directory, and build.
    pub fn build(self) -> Result<WorkspaceManager> {
        let layout = Layout::new(&self.config.base_path)?;
        layout.ensure()?;
        let policy = match &self.policy_bytes {
            Some((bytes, label)) => {
                PolicyEngine::from_bytes(bytes, label, self.config.policy_limits)?
            }
            None => PolicyEngine::load_cached(
                &self.config.policy,
                self.config.policy_limits,
                Some(&layout.policy_cache_dir()),
            )?,
        };
        git::set_network_timeouts(self.config.git.connect_timeout, self.config.git.io_timeout);
        let metrics = Metrics::default();
        let services = Services {
            locks: WorkspaceLocks::new(layout.clone()),
            remover: Remover::new(self.fs_ops, self.config.removal),
            git_queue: crate::git_queue::GitQueue::new(self.config.git, metrics.git_queue.clone()),
            cancel: Default::default(),
            metrics,
            background: Default::default(),
            snapshots: Snapshots::default(),
            layout,
            config: self.config,
        };
        Ok(WorkspaceManager {
            services: Arc::new(services),
            policy: Arc::new(parking_lot::RwLock::new(Arc::new(policy))),
        })
    }
}

/// A caller's hold on a workspace: while it lives, cleanup and remove skip
/// the workspace. Dropping it records the use in `workspace.json`.
#[derive(Debug)]
pub struct Lease {
    services: Arc<Services>,
    name: WorkspaceName,
    id: u64,
}

impl Lease {
    /// The leased workspace.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        touch_last_used(&self.services, &self.name);
        self.services.locks.release_lease(self.id);
        self.services.snapshots.invalidate();
    }
}

fn touch_last_used(services: &Services, name: &WorkspaceName) {
    let path = services.layout.metadata_path(name);
    if let Some(mut meta) = WorkspaceMetadata::read(&path) {
        meta.last_used = Utc::now();
        if let Err(e) = meta.write(&path) {
            tracing::warn!(workspace = %name, error = %e, "could not record last use");
        }
    }
}

impl WorkspaceManager {
    /// A builder starting from the defaults.
    pub fn builder() -> WorkspaceManagerBuilder {
        WorkspaceManagerBuilder {
            config: Config::default(),
            policy_bytes: None,
            fs_ops: Arc::new(RealFs),
        }
    }

    /// Build from a configuration.
    pub fn from_config(config: Config) -> Result<Self> {
        Self::builder().config(config).build()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.services.config
    }

    /// The base directory (absolute).
    pub fn base_path(&self) -> &Path {
        self.services.layout.base()
    }

    /// The policy in force now.
    fn policy(&self) -> Arc<PolicyEngine> {
        self.policy.read().clone()
    }

    /// What policy is loaded ("default policy" or its file).
    pub fn policy_label(&self) -> String {
        self.policy().label().to_string()
    }

    /// Which policy is loaded, with the digest of its bytes.
    pub fn policy_info(&self) -> PolicyInfo {
        self.policy().info()
    }

    /// Load the configured policy again (after its file changed) and swap
    /// it in. Calls in flight finish on the old one. A file that does not
    /// load or does not speak the contract is refused and the old policy
    /// stays.
    pub fn reload_policy(&self) -> Result<PolicyInfo> {
        let config = &self.services.config;
        let fresh = PolicyEngine::load_cached(
            &config.policy,
            config.policy_limits,
            Some(&self.services.layout.policy_cache_dir()),
        )?;
        Ok(self.swap_policy(fresh))
    }

    /// Swap in a policy loaded from `path` (as the configured one would be).
    pub fn load_policy_file(&self, path: &Path) -> Result<PolicyInfo> {
        let fresh = PolicyEngine::load(
            &PolicySource::File(path.to_path_buf()),
            self.services.config.policy_limits,
        )?;
        Ok(self.swap_policy(fresh))
    }

    fn swap_policy(&self, fresh: PolicyEngine) -> PolicyInfo {
        self.services.snapshots.invalidate();
        let info = fresh.info();
        let old = std::mem::replace(&mut *self.policy.write(), Arc::new(fresh));
        tracing::info!(from = %old.info().digest, to = %info.digest, source = %info.source, "policy swapped");
        info
    }

    /// The workspace name the policy gives `repo_full_name`, validated.
    pub fn workspace_name(&self, repo_full_name: &str) -> Result<String> {
        self.checked_name(repo_full_name).map(|n| n.to_string())
    }

    fn checked_name(&self, repo_full_name: &str) -> Result<WorkspaceName> {
        self.checked_name_with(&self.policy(), repo_full_name)
    }

    /// The name `policy` gives (an operation takes the policy once, so a
    /// reload in between cannot mix two policies' answers).
    fn checked_name_with(
        &self,
        policy: &PolicyEngine,
        repo_full_name: &str,
    ) -> Result<WorkspaceName> {
        let (name, _) = policy.call(
            self.services.clone(),
            CallContext::for_export(Export::WorkspaceName),
            "workspace-name",
            |p, s| p.call_workspace_name(s, repo_full_name),
        )?;
        let name = name.map_err(from_wit_error)?;
        WorkspaceName::parse(&name).map_err(|e| {
            Error::Policy(format!(
                "{} returned an unsafe workspace name for {repo_full_name:?}: {e}",
                policy.label()
            ))
        })
    }

    /// The workspace's lock, once no other caller holds a lease on it:
    /// waits up to the configured lease wait, then answers `InUse` with
    /// who holds the lease and until when. A leased tree is never reset,
    /// cleaned or re-cloned under its holder.
    fn lock_unleased(&self, name: &WorkspaceName) -> Result<crate::locks::WorkspaceGuard> {
        let services = &self.services;
        let deadline = Instant::now() + services.config.lease_wait;
        loop {
            let guard = services.locks.lock(name, services.config.lock_wait)?;
            let Some(holder) = services.locks.lease_holder(name) else {
                return Ok(guard);
            };
            drop(guard);
            if Instant::now() >= deadline {
                return Err(Error::InUse(format!("{name} ({holder})")));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Prepare the workspace of a repository: reuse and update its clone, or
    /// clone afresh. Serialized per workspace, parallel across workspaces.
    pub fn prepare(&self, request: &PrepareRequest) -> Result<PrepareOutcome> {
        self.prepare_with_progress(request, None)
    }

    /// [`prepare`](Self::prepare), reporting transfer progress to `progress`.
    pub fn prepare_with_progress(
        &self,
        request: &PrepareRequest,
        progress: Option<Arc<ProgressFn>>,
    ) -> Result<PrepareOutcome> {
        let _timer = self
            .services
            .metrics
            .start(Operation::Prepare, Some(&request.repo_full_name));
        self.counted(self.prepare_inner(request, progress))
    }

    /// Count an error by kind in the metrics, and pass the result on.
    fn counted<T>(&self, result: Result<T>) -> Result<T> {
        // Every counted operation may have changed the disk or what is in use.
        self.services.snapshots.invalidate();
        if let Err(e) = &result {
            self.services.metrics.error(e.kind());
        }
        result
    }

    fn prepare_inner(
        &self,
        request: &PrepareRequest,
        progress: Option<Arc<ProgressFn>>,
    ) -> Result<PrepareOutcome> {
        let started = Instant::now();
        if let Some(b) = &request.default_branch
            && !git2::Reference::is_valid_name(&format!("refs/heads/{b}"))
        {
            return Err(Error::InvalidInput(format!(
                "{b:?} is not a valid branch name"
            )));
        }
        if request
            .lease_seconds
            .is_some_and(|s| s == 0 || s > MAX_LEASE_SECONDS)
        {
            return Err(Error::InvalidInput(format!(
                "lease_seconds must be between 1 and {MAX_LEASE_SECONDS}"
            )));
        }
        if request
            .holder
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.len() > 200 || h.chars().any(char::is_control))
        {
            return Err(Error::InvalidInput(
                "holder must be 1 to 200 characters without control characters".into(),
            ));
        }
        if request.depth == Some(0) {
            return Err(Error::InvalidInput(
                "depth must be at least 1 (omit it for full history)".into(),
            ));
        }
        let config = &self.services.config;
        let url = CloneUrl::parse(&request.clone_url, config.allow_local_urls)?;
        url.check_host(&config.allowed_hosts)?;
        url.check_addresses(config.allow_private_networks)?;
        if url.credentials_in_clear() {
            tracing::warn!(url = %url.public, "credentials are sent unencrypted over this transport; use https");
        }
        let policy = self.policy();
        let name = self.checked_name_with(&policy, &request.repo_full_name)?;
        let services = &self.services;
        services.layout.ensure()?;
        let _guard = self.lock_unleased(&name)?;
        services.snapshots.invalidate(); // now in use
        services.clear_staging(&name);

        let remote = Remote {
            credentials: url.credentials.clone(),
            service_credentials: url
                .host
                .as_deref()
                .is_some_and(|h| host_listed(h, &config.service_credential_hosts)),
            host: url.host.clone(),
            progress,
            local: url.transport == Transport::Local,
            guard: Some(Arc::new(git::TransferGuard::new(
                services.cancel.clone(),
                config.max_workspace_bytes,
                config.min_free_bytes,
                services.layout.base().to_path_buf(),
            ))),
        };
        let call = CallContext::prepare(name.clone(), url.public.clone(), remote);
        let wit_request = wit::PrepareRequest {
            repo_full_name: request.repo_full_name.clone(),
            name: name.to_string(),
            clone_url: url.public.clone(),
            branch: request.default_branch.clone(),
            depth: request.depth,
        };
        let (outcome, mut ctx) = policy.call(services.clone(), call, "prepare", |p, s| {
            p.call_prepare(s, &wit_request)
        })?;
        // A host limit (queue, disk, shutdown) is the answer, whatever the
        // policy made of it.
        if let Some(stop) = ctx.host_stop.take() {
            return Err(stop);
        }
        let outcome = outcome.map_err(from_wit_error)?;

        // Trust the disk, not the policy's word.
        let repo_dir = services.layout.repo_dir(&name);
        let state = git::inspect(&repo_dir);
        let head = match (state.healthy, state.head) {
            (true, Some(head)) => head,
            _ => {
                return Err(Error::Policy(format!(
                    "{} reported a prepared workspace, but {} is not a healthy repository: {}",
                    policy.label(),
                    repo_dir.display(),
                    state.problem.unwrap_or_else(|| "it is missing".into())
                )));
            }
        };
        if state.remote_url.as_deref() != Some(url.public.as_str()) {
            return Err(Error::Policy(format!(
                "{} left a clone of {:?} where {} was asked for",
                policy.label(),
                state.remote_url,
                url.public
            )));
        }
        let reused = ctx.updated && !ctx.cloned;
        if outcome.reused != reused {
            tracing::warn!(workspace = %name, "policy's reused={} disagrees with what the host saw", outcome.reused);
        }

        let now = Utc::now();
        let meta_path = services.layout.metadata_path(&name);
        let previous = WorkspaceMetadata::read(&meta_path);
        let meta = WorkspaceMetadata {
            version: METADATA_VERSION,
            repo_full_name: request.repo_full_name.clone(),
            clone_url: url.public.clone(),
            branch: request.default_branch.clone().or(state.branch),
            depth: request.depth,
            head: head.clone(),
            created: previous
                .as_ref()
                .filter(|_| reused)
                .map_or(now, |p| p.created),
            last_prepared: now,
            last_used: now,
            // Measured by the clone or update that just ran; a policy that
            // did neither (a reuse without update) gets a walk.
            size_bytes: ctx.measured_size.unwrap_or_else(|| dir_size(&repo_dir)),
        };
        meta.write(&meta_path)?;
        // Taken before the lock is released: no cleanup can slip in between.
        let lease = request.lease_seconds.map(|secs| {
            let ttl = std::time::Duration::from_secs(secs);
            let holder = request
                .holder
                .as_deref()
                .unwrap_or("another caller's prepare");
            let (id, expires_at) = services.locks.add_lease(&name, holder, Some(ttl));
            LeaseInfo {
                id,
                expires_at: expires_at.unwrap_or(now),
            }
        });
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(workspace = %name, reused, head = %head, duration_ms, "workspace prepared");
        Ok(PrepareOutcome {
            name: name.to_string(),
            path: repo_dir,
            reused,
            head,
            duration_ms,
            notes: outcome.notes,
            lease,
        })
    }

    /// Every workspace with its metadata.
    pub fn list(&self) -> Result<Vec<WorkspaceSummary>> {
        self.services.list()
    }

    /// One workspace by folder name; `Ok(None)` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<WorkspaceSummary>> {
        let name = WorkspaceName::parse(name)?;
        Ok(self.services.summary(&name))
    }

    /// Totals and per-workspace sizes, from sizes recorded at prepare time
    /// (an answer at most [`SNAPSHOT_TTL`] old, fresh after any change made
    /// through this manager).
    pub fn stats(&self) -> Result<Stats> {
        let snapshots = &self.services.snapshots;
        if let Some(stats) = snapshots.get(&snapshots.stats) {
            return Ok(stats);
        }
        self.refresh_stats()
    }

    /// Stats computed now (reading every workspace's recorded size), kept as
    /// the snapshot later [`stats`](Self::stats) calls reuse.
    pub fn refresh_stats(&self) -> Result<Stats> {
        let snapshots = &self.services.snapshots;
        let generation = snapshots.generation();
        let list = self.services.list()?;
        let stats = self.services.stats(&list);
        snapshots.put(&snapshots.stats, generation, stats.clone());
        Ok(stats)
    }

    /// Remove workspaces unused for longer than `max_age_hours` (default from
    /// the configuration), as the policy selects them; never one in use.
    pub fn cleanup(&self, max_age_hours: Option<f64>) -> Result<CleanupReport> {
        let _timer = self.services.metrics.start(Operation::Cleanup, None);
        let result = self.counted(self.cleanup_inner(max_age_hours));
        let clean = result.as_ref().is_ok_and(|r| r.failed.is_empty());
        self.services.metrics.cleanup_run(clean);
        result
    }

    fn cleanup_inner(&self, max_age_hours: Option<f64>) -> Result<CleanupReport> {
        let max_age_hours = max_age_hours.unwrap_or(self.services.config.max_age_hours);
        if !max_age_hours.is_finite() || max_age_hours < 0.0 {
            return Err(Error::InvalidInput(format!(
                "max_age_hours must be a number >= 0, got {max_age_hours}"
            )));
        }
        let (pending_finished, pending_freed) = self.services.purge_trash();
        let request = wit::CleanupRequest { max_age_hours };
        let (outcome, ctx) = self.policy().call(
            self.services.clone(),
            CallContext::cleanup(max_age_hours),
            "cleanup",
            |p, s| p.call_cleanup(s, request),
        )?;
        let outcome = outcome.map_err(from_wit_error)?;
        let mut report = CleanupReport {
            cleaned_workspaces: 0,
            max_age_hours,
            bytes_freed: pending_freed,
            removed: Vec::new(),
            failed: Vec::new(),
            skipped: outcome
                .skipped
                .into_iter()
                .map(|s| SkippedWorkspace {
                    name: s.name,
                    reason: s.reason,
                })
                .collect(),
            kept: outcome.kept,
            pending_deletions_finished: pending_finished,
        };
        for r in ctx.removals {
            report.bytes_freed += r.bytes_freed;
            if r.removed {
                report.removed.push(r);
            } else if r.skipped_in_use {
                report.skipped.push(SkippedWorkspace {
                    reason: r
                        .error
                        .unwrap_or_else(|| "in use (being prepared or leased)".into()),
                    name: r.name,
                });
            } else {
                report.failed.push(r);
            }
        }
        report.cleaned_workspaces = report.removed.len();
        tracing::info!(
            cleaned = report.cleaned_workspaces,
            failed = report.failed.len(),
            skipped = report.skipped.len(),
            bytes_freed = report.bytes_freed,
            "cleanup finished"
        );
        Ok(report)
    }

    /// The policy's verdict on the current figures (a snapshot like
    /// [`stats`](Self::stats)).
    pub fn health(&self) -> Result<HealthReport> {
        let snapshots = &self.services.snapshots;
        if let Some(h) = snapshots.get(&snapshots.health) {
            return Ok(h);
        }
        let generation = snapshots.generation();
        let report = self.health_now()?;
        snapshots.put(&snapshots.health, generation, report.clone());
        Ok(report)
    }

    fn health_now(&self) -> Result<HealthReport> {
        let config = &self.services.config;
        let list = self.services.list()?;
        let stats = self.services.stats(&list);
        let now = Utc::now();
        let max_age = chrono::Duration::seconds((config.max_age_hours * 3600.0) as i64);
        let size_limit = config.size_warning_mb * 1024 * 1024;
        let wit_stats = wit::HealthStats {
            total_workspaces: stats.total_workspaces as u32,
            total_size_bytes: stats.total_size_bytes,
            in_use: stats.in_use as u32,
            largest: list
                .iter()
                .filter(|w| w.size_bytes > size_limit)
                .map(|w| (w.name.clone(), w.size_bytes))
                .collect(),
            stale: list
                .iter()
                .filter(|w| w.last_used.is_some_and(|t| now - t > max_age))
                .count() as u32,
            without_metadata: list.iter().filter(|w| !w.has_metadata).count() as u32,
            pending_deletions: stats.pending_deletions as u32,
            free_space_bytes: stats.free_space_bytes,
        };
        let thresholds = wit::Thresholds {
            workspace_size_warning_mb: config.size_warning_mb,
            total_size_warning_mb: config.total_size_warning_mb,
            max_workspaces: config.max_workspaces,
            max_age_hours: config.max_age_hours,
        };
        let verdict = self.assess(&wit_stats, thresholds)?;
        let mut status = verdict.0;
        let verdict = verdict.1;
        let mut warnings = verdict.warnings;
        let mut recommendations = verdict.recommendations;
        // The guide's operational alerts, from what this process observed.
        let failures = self.services.metrics.cleanup_failures_since_success();
        if failures > 0 {
            warnings.push(format!(
                "Cleanup failures: {failures} cleanup run(s) failed or left workspaces on disk since the last clean run"
            ));
            recommendations.push(
                "Check the last cleanup report's `failed` entries: files held open, or permissions"
                    .into(),
            );
        }
        for op in self.services.metrics.running_longer_than(LONG_OPERATION) {
            warnings.push(format!(
                "Long-running operation: {} of {} has run for {} s",
                op.operation,
                op.workspace.as_deref().unwrap_or("all workspaces"),
                op.elapsed.as_secs()
            ));
        }
        if status == HealthStatus::Healthy && !warnings.is_empty() {
            status = HealthStatus::Warning;
        }
        if !warnings.is_empty() && recommendations.is_empty() {
            recommendations.push("See the warnings above".into());
        }
        Ok(HealthReport {
            status,
            policy: self.policy_info(),
            workspace_stats: stats,
            warnings,
            recommendations,
        })
    }

    /// The policy's verdict on given figures (health, and the conformance checks).
    pub(crate) fn assess(
        &self,
        stats: &wit::HealthStats,
        thresholds: wit::Thresholds,
    ) -> Result<(HealthStatus, wit::HealthReport)> {
        let (verdict, _) = self.policy().call(
            self.services.clone(),
            CallContext::for_export(Export::AssessHealth),
            "assess-health",
            |p, s| p.call_assess_health(s, stats, thresholds),
        )?;
        let status = match verdict.status {
            wit::HealthStatus::Healthy => HealthStatus::Healthy,
            wit::HealthStatus::Warning => HealthStatus::Warning,
            wit::HealthStatus::Critical => HealthStatus::Critical,
        };
        Ok((status, verdict))
    }

    /// The manager's metrics (for `GET /metrics` or an embedder's registry).
    pub fn metrics(&self) -> &Metrics {
        &self.services.metrics
    }

    /// The metrics in Prometheus text format. The disk gauges come from
    /// the last stats (at most [`METRICS_MAX_AGE`] old): a scrape does not
    /// read every `workspace.json` each time.
    pub fn encode_metrics(&self) -> Result<String> {
        let snapshots = &self.services.snapshots;
        if snapshots
            .get_recent(&snapshots.stats, METRICS_MAX_AGE)
            .is_none()
        {
            self.refresh_stats()?;
        }
        Ok(self.services.metrics.encode())
    }

    /// Stop git transfers in flight at their next chunk of data, and any
    /// about to start (shutdown, after the grace period). Irreversible.
    pub fn cancel_git_operations(&self) {
        self.services
            .cancel
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Remove one workspace by name. `NotFound` when absent, `InUse` when
    /// being prepared or leased; otherwise the honest report.
    pub fn remove(&self, name: &str) -> Result<RemovalReport> {
        self.counted(self.remove_inner(name))
    }

    fn remove_inner(&self, name: &str) -> Result<RemovalReport> {
        let name = WorkspaceName::parse(name)?;
        if self.services.summary(&name).is_none() {
            return Err(Error::NotFound(format!("no workspace named {name}")));
        }
        let report = self.services.remove_workspace(&name);
        if report.skipped_in_use {
            return Err(Error::InUse(name.to_string()));
        }
        Ok(report)
    }

    /// Remove one workspace, answering as soon as its name is free: the
    /// folder is renamed into `.trash/` and deleted by a background thread
    /// (with the same retries). The report says `pending_deletion`; stats
    /// count the deletion as pending until it is done, and a deletion that
    /// fails stays in `.trash/` for the next cleanup. `NotFound` and `InUse`
    /// as for [`remove`](Self::remove).
    pub fn remove_in_background(&self, name: &str) -> Result<RemovalReport> {
        let name = WorkspaceName::parse(name)?;
        let services = &self.services;
        let Some(guard) = services.locks.try_lock_idle(&name)? else {
            return Err(Error::InUse(name.to_string()));
        };
        let dir = services.layout.workspace_dir(&name);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Err(Error::NotFound(format!("no workspace named {name}")));
        }
        let known_size =
            WorkspaceMetadata::read(&services.layout.metadata_path(&name)).map(|m| m.size_bytes);
        let Some(target) = services.move_to_trash(&name, &dir) else {
            // Cannot rename (Windows: a handle inside): delete in place now,
            // holding the lock, so no prepare of the name races the deletion.
            let report = services.remove_locked(&name, guard, None, known_size);
            return Ok(report);
        };
        drop(guard);
        *services.background.0.lock() += 1;
        let background = services.clone();
        let thread_name = name.clone();
        std::thread::spawn(move || {
            let outcome = background.remover.remove_tree_sized(&target, known_size);
            background.metrics.removal(outcome.removed);
            if outcome.removed {
                tracing::info!(workspace = %thread_name, bytes = outcome.bytes_freed, "background deletion finished");
            } else {
                tracing::warn!(workspace = %thread_name, error = outcome.error.as_deref().unwrap_or_default(), "background deletion incomplete; the next cleanup retries");
            }
            background.snapshots.invalidate();
            let (count, done) = &*background.background;
            *count.lock() -= 1;
            done.notify_all();
        });
        Ok(RemovalReport {
            pending_deletion: true,
            ..RemovalReport::new(name.as_str())
        })
    }

    /// Block until every background deletion of this manager has finished.
    pub fn wait_for_background_deletions(&self) {
        let (count, done) = &*self.services.background;
        let mut n = count.lock();
        while *n > 0 {
            done.wait(&mut n);
        }
    }

    /// Walk every workspace again (symbolic links not followed), record the
    /// sizes found in `workspace.json`, and return the fresh stats. Stats
    /// normally use the sizes recorded at prepare time; this is for when
    /// something else wrote into the workspaces.
    pub fn rescan_sizes(&self) -> Result<Stats> {
        let services = &self.services;
        services.snapshots.invalidate();
        let names: Vec<WorkspaceName> = child_dirs(services.layout.base())
            .map_err(|e| Error::io("listing workspaces in", services.layout.base(), e))?
            .iter()
            .filter_map(|n| WorkspaceName::parse(n).ok())
            .collect();
        // One walk per workspace, spread over the cores.
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let first_error = parking_lot::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(name) = names.get(i) else { break };
                        let size = dir_size(&services.layout.repo_dir(name));
                        let path = services.layout.metadata_path(name);
                        if let Some(mut meta) =
                            WorkspaceMetadata::read(&path).filter(|m| m.size_bytes != size)
                        {
                            meta.size_bytes = size;
                            if let Err(e) = meta.write(&path) {
                                first_error.lock().get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner() {
            return Err(e);
        }
        self.refresh_stats()
    }

    /// Hold a workspace while working in it; cleanup and remove skip it
    /// until the lease is dropped.
    pub fn lease(&self, name: &str) -> Result<Lease> {
        let name = WorkspaceName::parse(name)?;
        // Wait out a prepare or removal in progress, then mark it leased.
        let guard = self
            .services
            .locks
            .lock(&name, self.services.config.lock_wait)?;
        if self.services.summary(&name).is_none() {
            return Err(Error::NotFound(format!("no workspace named {name}")));
        }
        let (id, _) = self.services.locks.add_lease(
            &name,
            &format!("a library lease (process {})", std::process::id()),
            None,
        );
        self.services.snapshots.invalidate();
        drop(guard);
        touch_last_used(&self.services, &name);
        Ok(Lease {
            services: self.services.clone(),
            name,
            id,
        })
    }

    /// Release a timed lease taken by a prepare with `lease_seconds`.
    /// `NotFound` when the id is unknown or the lease has lapsed.
    pub fn release_lease(&self, id: u64) -> Result<String> {
        let name = self
            .services
            .locks
            .release_lease(id)
            .ok_or_else(|| Error::NotFound(format!("no live lease with id {id}")))?;
        self.services.snapshots.invalidate();
        touch_last_used(&self.services, &name);
        Ok(name.to_string())
    }
}
