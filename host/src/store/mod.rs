//! The workspace store: what is on disk under the base directory and the
//! shared side effects (locks, removal, metrics, snapshots, the git queue)
//! that the manager and the policy's imports both act through.
//!
//! It knows nothing of the policy: the policy engine depends on the store,
//! the manager on both.

mod checkout;
mod mirrors;
mod snapshots;
mod trash;

pub(crate) use checkout::{CheckoutSpec, parse_ref};
pub(crate) use snapshots::Snapshots;
pub use snapshots::{METRICS_MAX_AGE, SNAPSHOT_TTL};

use crate::adapter::fs::{child_dirs, dir_size, free_space};
use crate::adapter::removal::Remover;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::locks::WorkspaceLocks;
use crate::metadata::WorkspaceMetadata;
use crate::metrics::Metrics;
use crate::model::*;
use crate::names::WorkspaceName;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The side effects the policy's imports and the manager share: the
/// base directory's layout and locks, git behind its queue, removal,
/// metrics and recent answers. One per manager, shared by every call.
#[derive(Debug)]
pub(crate) struct Store {
    config: Config,
    layout: Layout,
    locks: WorkspaceLocks,
    /// The object mirrors' locks (`<base>/.mirrors/.locks`).
    mirror_locks: WorkspaceLocks,
    remover: Remover,
    metrics: Metrics,
    /// Background deletions still running (count, and a signal when one ends).
    background: Arc<(parking_lot::Mutex<usize>, parking_lot::Condvar)>,
    /// Recent stats and health answers.
    snapshots: Snapshots,
    /// The bounded queue in front of git network work.
    git_queue: crate::git_queue::GitQueue,
    /// Set at shutdown: transfers in flight stop at their next chunk.
    cancel: Arc<AtomicBool>,
    /// Set when the service begins to drain: readiness fails, work goes on.
    draining: AtomicBool,
    /// The base directory's principal key ([`Layout::principal_key_path`]).
    principal_key: Option<Arc<[u8; 32]>>,
    /// Credentials served to stock git in leased workspaces, by lease id,
    /// with when the lease lapses (stopped when it is released).
    served: parking_lot::Mutex<std::collections::HashMap<u64, ServedUntil>>,
}

/// A credential served for a lease, with when the lease lapses.
type ServedUntil = (
    chrono::DateTime<chrono::Utc>,
    crate::adapter::credential_cache::ServedCredential,
);

/// The principal key at `path`: read, or made (32 random bytes, mode 0600)
/// when missing. None, with a warning, when neither works (each process
/// then uses a key of its own: checkouts are re-cloned across processes,
/// never handed to another principal).
fn load_principal_key(path: &std::path::Path) -> Option<Arc<[u8; 32]>> {
    let read = || {
        let bytes = std::fs::read(path).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice()).ok().map(Arc::new)
    };
    if let Some(key) = read() {
        return Some(key);
    }
    // Written whole beside it, then linked into place: a process that
    // reads the path sees a whole key or none, and of two processes making
    // one at once, the second link fails and it reads the first's.
    let made = (|| -> std::io::Result<Arc<[u8; 32]>> {
        let key: [u8; 32] = rand::random();
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut file, &key)?;
        file.as_file().sync_all()?;
        #[cfg(unix)]
        std::fs::set_permissions(
            file.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        std::fs::hard_link(file.path(), path)?;
        Ok(Arc::new(key))
    })();
    if let Ok(key) = made {
        return Some(key);
    }
    if let Some(key) = read() {
        return Some(key);
    }
    tracing::warn!(path = %path.display(), "no usable principal key; using one of this process");
    None
}

impl Store {
    /// The store for `config` in `layout` (already created), removing
    /// through `fs_ops`.
    pub fn new(
        config: Config,
        layout: Layout,
        fs_ops: Arc<dyn crate::adapter::removal::FsOps>,
    ) -> Self {
        let metrics = Metrics::default();
        Store {
            locks: WorkspaceLocks::new(layout.clone()),
            mirror_locks: WorkspaceLocks::for_mirrors(layout.clone()),
            remover: Remover::new(fs_ops, config.removal),
            git_queue: crate::git_queue::GitQueue::new(config.git, metrics.git_queue.clone()),
            cancel: Default::default(),
            draining: Default::default(),
            served: Default::default(),
            principal_key: load_principal_key(&layout.principal_key_path()),
            metrics,
            background: Default::default(),
            snapshots: Snapshots::default(),
            layout,
            config,
        }
    }

    /// The configuration the manager was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where everything lives under the base directory.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The workspaces' locks and leases.
    pub fn locks(&self) -> &WorkspaceLocks {
        &self.locks
    }

    /// The counters and gauges the service exports.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Recent stats and health answers, dropped when something changes.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The base directory's principal key: what a prepared-by record is
    /// made with.
    pub fn principal_key(&self) -> Option<Arc<[u8; 32]>> {
        self.principal_key.clone()
    }

    /// The bounds of one transfer: shutdown, the size limit and the
    /// free-space floor of the base directory.
    pub fn transfer_guard(&self) -> crate::adapter::git::TransferGuard {
        crate::adapter::git::TransferGuard::new(
            self.cancel.clone(),
            self.config.max_workspace_bytes,
            self.config.min_free_bytes,
            self.layout.base().to_path_buf(),
        )
    }

    /// Stop transfers in flight at their next chunk, and any about to
    /// start. Irreversible.
    pub fn cancel_transfers(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Mark the service draining (readiness fails). Irreversible.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the service is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Keep `served` running for lease `lease_id` until `until`; lapsed
    /// leases' credentials are dropped on the way.
    pub fn serve_for_lease(
        &self,
        lease_id: u64,
        until: chrono::DateTime<chrono::Utc>,
        served: crate::adapter::credential_cache::ServedCredential,
    ) {
        let mut all = self.served.lock();
        // Lapsed leases: their daemons forgot at their timeout; drop the rest.
        let now = chrono::Utc::now();
        all.retain(|_, (until, _)| *until > now);
        all.insert(lease_id, (until, served));
    }

    /// Stop serving the credential of lease `lease_id`, if one is served.
    pub fn stop_serving(&self, lease_id: u64) {
        let served = self.served.lock().remove(&lease_id);
        drop(served);
    }

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
        let lease = self.locks.lease_holder(name);
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
            // One read of the leases serves both fields.
            in_use: lease.is_some() || self.locks.is_locked(name),
            leased_by: lease.as_ref().map(|l| l.holder.clone()),
            leased_until: lease.and_then(|l| l.until),
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
    pub(crate) fn stats(&self, list: &[WorkspaceSummary]) -> Stats {
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
            mirrors: self.mirror_stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::load_principal_key;

    /// One key per base, the same for every process that loads it, only
    /// the service's user may read it; a file that is not a key is never
    /// replaced (nor used).
    #[test]
    fn the_principal_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".principal-key");
        let first = load_principal_key(&path).unwrap();
        assert_eq!(load_principal_key(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(load_principal_key(&path), None);
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }
}
