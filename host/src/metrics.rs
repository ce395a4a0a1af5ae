//! Prometheus metrics of one manager (prometheus-client), encoded in the
//! text exposition format by [`Metrics::encode`] for `GET /metrics`.
//!
//! Names (prefix `fixsec_workspace_`): `workspaces`, `size_bytes`,
//! `pending_deletions`, `operation_duration_seconds{operation}` (prepare,
//! clone, update, remove, cleanup), `operations_in_flight`,
//! `oldest_operation_seconds`, `cleanup_runs_total`,
//! `cleanup_failures_since_success`, `removed_workspaces_total`,
//! `removal_failures_total`, `errors_total{kind}`, `git_operations_running`,
//! `git_operations_queued`, `git_operations_rejected_total`,
//! `listing_scans_total` (full reads of every `workspace.json`),
//! `mirror_fetches_total{outcome}` (fetched, shared with a concurrent
//! prepare, failed), `mirror_received_bytes_total`, `mirror_size_bytes`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The operations whose durations are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A whole prepare (naming, locking, policy, git, metadata).
    Prepare,
    /// A fresh clone into staging.
    Clone,
    /// Fetch + reset + clean of an existing clone.
    Update,
    /// Removal of one workspace.
    Remove,
    /// A whole cleanup run.
    Cleanup,
    /// A push of a workspace's branch.
    Push,
}

impl Operation {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Prepare => "prepare",
            Operation::Clone => "clone",
            Operation::Update => "update",
            Operation::Remove => "remove",
            Operation::Cleanup => "cleanup",
            Operation::Push => "push",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// A long operation still running, for the "over 5 minutes" alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningOperation {
    /// What it is.
    pub operation: &'static str,
    /// Which workspace, if one.
    pub workspace: Option<String>,
    /// How long it has been running.
    pub elapsed: Duration,
}

/// An operation in flight: what, on which workspace, since when.
type InFlight = (Operation, Option<String>, Instant);

/// The metrics registry and the live state behind the gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    workspaces: Gauge,
    size_bytes: Gauge,
    pending_deletions: Gauge,
    durations: Family<OperationLabel, Histogram>,
    in_flight: Gauge,
    oldest_operation_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    cleanup_runs: Counter,
    cleanup_failures_since_success: Gauge,
    removed: Counter,
    removal_failures: Counter,
    errors: Family<KindLabel, Counter>,
    /// The git queue's gauges (shared with [`crate::git_queue::GitQueue`]).
    pub(crate) git_queue: crate::git_queue::QueueGauges,
    listing_scans: Counter,
    mirror_fetches: Family<OutcomeLabel, Counter>,
    mirror_received_bytes: Counter,
    mirror_size_bytes: Gauge,
    running: parking_lot::Mutex<HashMap<u64, InFlight>>,
    next_id: AtomicU64,
    recent: parking_lot::Mutex<std::collections::VecDeque<RecentOperation>>,
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~5.5 min
    Histogram::new(exponential_buckets(0.005, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fixsec_workspace");
        let m = Metrics {
            workspaces: Gauge::default(),
            size_bytes: Gauge::default(),
            pending_deletions: Gauge::default(),
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
            oldest_operation_seconds: Gauge::default(),
            cleanup_runs: Counter::default(),
            cleanup_failures_since_success: Gauge::default(),
            removed: Counter::default(),
            removal_failures: Counter::default(),
            errors: Family::default(),
            git_queue: Default::default(),
            listing_scans: Counter::default(),
            mirror_fetches: Family::default(),
            mirror_received_bytes: Counter::default(),
            mirror_size_bytes: Gauge::default(),
            running: parking_lot::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            recent: Default::default(),
            registry: Registry::default(),
        };
        registry.register("workspaces", "Workspaces on disk", m.workspaces.clone());
        registry.register(
            "size_bytes",
            "Bytes on disk of all workspaces",
            m.size_bytes.clone(),
        );
        registry.register(
            "pending_deletions",
            "Removed workspaces whose deletion is not finished",
            m.pending_deletions.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Duration of workspace operations",
            m.durations.clone(),
        );
        registry.register(
            "operations_in_flight",
            "Operations running now",
            m.in_flight.clone(),
        );
        registry.register(
            "oldest_operation_seconds",
            "Age of the longest-running operation now in flight",
            m.oldest_operation_seconds.clone(),
        );
        registry.register("cleanup_runs", "Cleanup runs", m.cleanup_runs.clone());
        registry.register(
            "cleanup_failures_since_success",
            "Cleanup runs that failed (or left a failed removal) since the last clean one",
            m.cleanup_failures_since_success.clone(),
        );
        registry.register(
            "removed_workspaces",
            "Workspaces removed",
            m.removed.clone(),
        );
        registry.register(
            "removal_failures",
            "Workspace removals that left files on disk",
            m.removal_failures.clone(),
        );
        registry.register(
            "errors",
            "Failed operations by error kind",
            m.errors.clone(),
        );
        registry.register(
            "git_operations_running",
            "git network operations (clone, fetch) holding a slot",
            m.git_queue.running.clone(),
        );
        registry.register(
            "git_operations_queued",
            "git network operations waiting for a slot",
            m.git_queue.queued.clone(),
        );
        registry.register(
            "git_operations_rejected",
            "git network operations refused as busy (queue full or waited too long)",
            m.git_queue.rejected.clone(),
        );
        registry.register(
            "listing_scans",
            "Full listings of the base directory (every workspace.json read)",
            m.listing_scans.clone(),
        );
        registry.register(
            "mirror_fetches",
            "Mirror updates before a clone: fetched, shared (a concurrent prepare had just fetched), failed",
            m.mirror_fetches.clone(),
        );
        registry.register(
            "mirror_received_bytes",
            "Bytes received by mirror updates",
            m.mirror_received_bytes.clone(),
        );
        registry.register(
            "mirror_size_bytes",
            "Bytes on disk of all object mirrors",
            m.mirror_size_bytes.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// Tracks one operation in flight; records its duration when dropped.
#[derive(Debug)]
pub struct OperationTimer<'a> {
    metrics: &'a Metrics,
    id: u64,
    operation: Operation,
    started: Instant,
    workspace: Option<String>,
    error: parking_lot::Mutex<Option<String>>,
}

impl OperationTimer<'_> {
    /// Record that the operation failed (kept with it in the recent list).
    pub fn fail(&self, error: &crate::Error) {
        *self.error.lock() = Some(error.to_string());
    }
}

/// A finished operation, for the dashboard's recent list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentOperation {
    /// `prepare`, `clone`, `update`, `push`, `remove`, `cleanup`.
    pub operation: &'static str,
    /// The workspace (or repository) it was for.
    pub workspace: Option<String>,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// Why it failed, if it did (as far as the host knows).
    pub error: Option<String>,
}

/// How many finished operations the recent list keeps.
pub const RECENT_OPERATIONS: usize = 100;

impl Drop for OperationTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&OperationLabel {
                operation: self.operation.as_str().to_string(),
            })
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.running.lock().remove(&self.id);
        self.metrics.in_flight.dec();
        let elapsed = self.started.elapsed();
        let mut recent = self.metrics.recent.lock();
        if recent.len() == RECENT_OPERATIONS {
            recent.pop_front();
        }
        recent.push_back(RecentOperation {
            operation: self.operation.as_str(),
            workspace: self.workspace.take(),
            started_at: chrono::Utc::now()
                - chrono::Duration::from_std(elapsed).unwrap_or_default(),
            duration_ms: elapsed.as_millis() as u64,
            error: self.error.lock().take(),
        });
    }
}

impl Metrics {
    /// The last finished operations (at most 100), newest first.
    pub fn recent(&self) -> Vec<RecentOperation> {
        self.recent.lock().iter().rev().cloned().collect()
    }

    /// Start timing `operation` (on `workspace`).
    pub fn start(&self, operation: Operation, workspace: Option<&str>) -> OperationTimer<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        self.running
            .lock()
            .insert(id, (operation, workspace.map(str::to_string), started));
        self.in_flight.inc();
        OperationTimer {
            metrics: self,
            id,
            operation,
            started,
            workspace: workspace.map(str::to_string),
            error: parking_lot::Mutex::new(None),
        }
    }

    /// Count a failed operation by its error kind.
    pub fn error(&self, kind: crate::ErrorKind) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.as_str().to_string(),
            })
            .inc();
    }

    /// Record a removal's outcome.
    pub fn removal(&self, removed: bool) {
        if removed {
            self.removed.inc();
        } else {
            self.removal_failures.inc();
        }
    }

    /// Record a cleanup run: `clean` when nothing failed.
    pub fn cleanup_run(&self, clean: bool) {
        self.cleanup_runs.inc();
        if clean {
            self.cleanup_failures_since_success.set(0);
        } else {
            self.cleanup_failures_since_success.inc();
        }
    }

    /// Cleanup runs that failed since the last clean one.
    pub fn cleanup_failures_since_success(&self) -> i64 {
        self.cleanup_failures_since_success.get()
    }

    /// Operations running for longer than `threshold`.
    pub fn running_longer_than(&self, threshold: Duration) -> Vec<RunningOperation> {
        self.running
            .lock()
            .values()
            .filter(|(_, _, started)| started.elapsed() > threshold)
            .map(|(op, ws, started)| RunningOperation {
                operation: op.as_str(),
                workspace: ws.clone(),
                elapsed: started.elapsed(),
            })
            .collect()
    }

    /// A full listing of the base directory was made.
    pub(crate) fn listing_scanned(&self) {
        self.listing_scans.inc();
    }

    /// Full listings made so far.
    pub fn listing_scans(&self) -> u64 {
        self.listing_scans.get()
    }

    /// Set the gauges that describe the disk.
    pub fn set_totals(&self, workspaces: usize, size_bytes: u64, pending_deletions: usize) {
        self.workspaces.set(workspaces as i64);
        self.size_bytes.set(size_bytes as i64);
        self.pending_deletions.set(pending_deletions as i64);
    }

    /// A mirror update's outcome (`fetched`, `shared`, `failed`) and the
    /// bytes it received.
    pub(crate) fn mirror_fetch(&self, outcome: &'static str, received_bytes: u64) {
        self.mirror_fetches
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.mirror_received_bytes.inc_by(received_bytes);
    }

    /// The mirrors' size, from the last stats.
    pub(crate) fn set_mirror_size(&self, bytes: u64) {
        self.mirror_size_bytes.set(bytes as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let oldest = self
            .running
            .lock()
            .values()
            .map(|(_, _, s)| s.elapsed().as_secs_f64())
            .fold(0.0, f64::max);
        self.oldest_operation_seconds.set(oldest);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
