//! [`WorkspaceManager`]: the library API (prepare, list, stats, cleanup,
//! health, remove, lease) over the workspace store and the policy engine.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the facade: policy in force, list, stats, cleanup, removal |
//! | `prepare.rs` | naming, locking, the policy's `prepare`, checking the result |
//! | `health.rs` | health verdict, metrics |
//! | `lease.rs` | leases |
//! | `builder.rs` | configuration into a manager |

mod builder;
mod health;
mod lease;
mod parallel;
mod prefetch;
mod prepare;
mod push;

pub use builder::WorkspaceManagerBuilder;
pub use lease::Lease;

use crate::adapter::fs::{child_dirs, dir_size};
use crate::adapter::removal::RealFs;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::WorkspaceMetadata;
use crate::metrics::Operation;
use crate::model::*;
use crate::names::WorkspaceName;
use crate::policy::PolicyEngine;
use crate::store::Store;
use std::path::Path;
use std::sync::Arc;

/// The longest lease a prepare may take (a week).
pub const MAX_LEASE_SECONDS: u64 = 7 * 24 * 3600;

/// An operation running longer than this is reported by health (the guide's alert).
pub const LONG_OPERATION: std::time::Duration = std::time::Duration::from_secs(5 * 60);

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
    pub(super) store: Arc<Store>,
    /// Swapped whole by a reload; each call takes its own `Arc`, so calls in
    /// flight finish on the policy they started with.
    policy: Arc<parking_lot::RwLock<Arc<PolicyEngine>>>,
    /// The component bytes and label, for a manager built from bytes.
    pub(super) policy_bytes: Option<Arc<(Vec<u8>, String)>>,
    /// Prefetches of one workspace take turns and fold (prefetch.rs).
    prefetch_turns: Arc<prefetch::PrefetchTurns>,
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
        self.store.config()
    }

    /// The base directory (absolute).
    pub fn base_path(&self) -> &Path {
        self.store.layout().base()
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

    /// Load the policy again from where this manager got it (the
    /// configured file after it changed; the same bytes for a manager
    /// built from bytes) and swap it in. Calls in flight finish on the old
    /// one. A file that does not load or does not speak the contract is
    /// `Refused` (the operator's input to fix, not a fault of the running
    /// service) and the old policy stays.
    pub fn reload_policy(&self) -> Result<PolicyInfo> {
        let config = self.store.config();
        let fresh = match &self.policy_bytes {
            Some(built) => PolicyEngine::from_bytes(&built.0, &built.1, config.policy_limits),
            None => PolicyEngine::load_cached(
                &config.policy,
                config.policy_limits,
                Some(&self.store.layout().policy_cache_dir()),
            ),
        }
        .map_err(|e| match e.kind() {
            ErrorKind::Config => Error::refused(format!("{}; the old policy stays", e.message())),
            _ => e,
        })?;
        Ok(self.swap_policy(fresh))
    }

    fn swap_policy(&self, fresh: PolicyEngine) -> PolicyInfo {
        self.store.snapshots().invalidate();
        let info = fresh.info();
        let old = std::mem::replace(&mut *self.policy.write(), Arc::new(fresh));
        tracing::info!(from = %old.info().digest, to = %info.digest, source = %info.source, "policy swapped");
        info
    }

    /// Count an error by kind in the metrics, and pass the result on.
    /// [`counted`](Self::counted), and a failure recorded with `timer`'s
    /// operation in the recent list.
    fn counted_as<T>(
        &self,
        timer: &crate::metrics::OperationTimer<'_>,
        result: Result<T>,
    ) -> Result<T> {
        if let Err(e) = &result {
            timer.fail(e);
        }
        self.counted(result)
    }

    fn counted<T>(&self, result: Result<T>) -> Result<T> {
        // Every counted operation may have changed the disk or what is in use.
        self.store.snapshots().invalidate();
        if let Err(e) = &result {
            self.store.metrics().error(e.kind());
        }
        result
    }

    /// Every workspace with its metadata.
    pub fn list(&self) -> Result<Vec<WorkspaceSummary>> {
        self.store.list()
    }

    /// One workspace by folder name; `Ok(None)` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<WorkspaceSummary>> {
        let name = WorkspaceName::parse(name)?;
        Ok(self.store.summary(&name))
    }

    /// Totals and per-workspace sizes, from sizes recorded at prepare time
    /// (an answer at most [`SNAPSHOT_TTL`](crate::SNAPSHOT_TTL) old, fresh after any change made
    /// through this manager).
    pub fn stats(&self) -> Result<Stats> {
        let snapshots = self.store.snapshots();
        if let Some(stats) = snapshots.get(&snapshots.stats) {
            return Ok(stats);
        }
        self.refresh_stats()
    }

    /// Stats computed now (reading every workspace's recorded size), kept as
    /// the snapshot later [`stats`](Self::stats) calls reuse.
    pub fn refresh_stats(&self) -> Result<Stats> {
        let snapshots = self.store.snapshots();
        let generation = snapshots.generation();
        let list = self.store.list()?;
        let stats = self.store.stats(&list);
        snapshots.put(&snapshots.stats, generation, stats.clone());
        Ok(stats)
    }

    /// Remove workspaces unused for longer than `max_age_hours` (default from
    /// the configuration), as the policy selects them; never one in use.
    pub fn cleanup(&self, max_age_hours: Option<f64>) -> Result<CleanupReport> {
        let timer = self.store.metrics().start(Operation::Cleanup, None);
        let result = self.counted_as(&timer, self.cleanup_inner(max_age_hours));
        let clean = result.as_ref().is_ok_and(|r| r.failed.is_empty());
        self.store.metrics().cleanup_run(clean);
        result
    }

    fn cleanup_inner(&self, max_age_hours: Option<f64>) -> Result<CleanupReport> {
        let max_age_hours = max_age_hours.unwrap_or(self.store.config().max_age_hours);
        if !max_age_hours.is_finite() || max_age_hours < 0.0 {
            return Err(Error::invalid_input(format!(
                "max_age_hours must be a number >= 0, got {max_age_hours}"
            )));
        }
        let (pending_finished, pending_freed) = self.store.purge_trash();
        let (outcome, ctx) = self
            .policy()
            .call_cleanup(self.store.clone(), max_age_hours)?;
        let mut report = CleanupReport {
            cleaned_workspaces: 0,
            max_age_hours,
            bytes_freed: pending_freed,
            removed: Vec::new(),
            failed: Vec::new(),
            skipped: outcome.skipped,
            kept: outcome.kept,
            pending_deletions_finished: pending_finished,
            mirrors_removed: Vec::new(),
            mirrors_maintained: Vec::new(),
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
        // After the workspaces: one removed now stops borrowing now.
        report.mirrors_removed = self.store.clean_mirrors(max_age_hours);
        report.mirrors_maintained = self
            .store
            .maintain_mirrors(self.store.config().mirror_maintenance);
        tracing::info!(
            cleaned = report.cleaned_workspaces,
            failed = report.failed.len(),
            skipped = report.skipped.len(),
            bytes_freed = report.bytes_freed,
            "cleanup finished"
        );
        Ok(report)
    }

    /// Remove one workspace by name. `NotFound` when absent, `InUse` when
    /// being prepared or leased; otherwise the honest report.
    pub fn remove(&self, name: &str) -> Result<RemovalReport> {
        self.counted(self.remove_inner(name))
    }

    fn remove_inner(&self, name: &str) -> Result<RemovalReport> {
        let name = WorkspaceName::parse(name)?;
        if self.store.summary(&name).is_none() {
            return Err(Error::not_found(format!("no workspace named {name}")));
        }
        let report = self.store.remove_workspace(&name);
        if report.skipped_in_use {
            return Err(self.in_use(&name));
        }
        Ok(report)
    }

    /// `InUse` for `name`, naming the lease holder when there is one.
    fn in_use(&self, name: &WorkspaceName) -> Error {
        Error::in_use(match self.store.locks().lease_holder(name) {
            Some(holder) => format!("{name} ({holder})"),
            None => name.to_string(),
        })
    }

    /// Remove one workspace, answering as soon as its name is free: the
    /// folder is renamed into `.trash/` and deleted by a background thread
    /// (with the same retries). The report says `pending_deletion`; stats
    /// count the deletion as pending until it is done, and a deletion that
    /// fails stays in `.trash/` for the next cleanup. `NotFound` and `InUse`
    /// as for [`remove`](Self::remove).
    pub fn remove_in_background(&self, name: &str) -> Result<RemovalReport> {
        let name = WorkspaceName::parse(name)?;
        let store = &self.store;
        let Some(guard) = store.locks().try_lock_idle(&name)? else {
            return Err(self.in_use(&name));
        };
        let dir = store.layout().workspace_dir(&name);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Err(Error::not_found(format!("no workspace named {name}")));
        }
        let known_size =
            WorkspaceMetadata::read(&store.layout().metadata_path(&name)).map(|m| m.size_bytes);
        let Some(target) = store.move_to_trash(&name, &dir) else {
            // Cannot rename (Windows: a handle inside): delete in place now,
            // holding the lock, so no prepare of the name races the deletion.
            let report = store.remove_locked(&name, guard, None, known_size);
            return Ok(report);
        };
        drop(guard);
        Store::delete_in_background(store, name.clone(), target, known_size);
        Ok(RemovalReport {
            pending_deletion: true,
            ..RemovalReport::new(name.as_str())
        })
    }

    /// Block until every background deletion of this manager has finished.
    pub fn wait_for_background_deletions(&self) {
        self.store.wait_for_background_deletions();
    }

    /// Walk every workspace again (symbolic links not followed), record the
    /// sizes found in `workspace.json`, and return the fresh stats. Stats
    /// normally use the sizes recorded at prepare time; this is for when
    /// something else wrote into the workspaces.
    pub fn rescan_sizes(&self) -> Result<Stats> {
        let store = &self.store;
        store.snapshots().invalidate();
        let names: Vec<WorkspaceName> = child_dirs(store.layout().base())
            .map_err(|e| Error::io("listing workspaces in", store.layout().base(), e))?
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
                        let size = dir_size(&store.layout().repo_dir(name));
                        let path = store.layout().metadata_path(name);
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
}
