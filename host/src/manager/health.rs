//! Health verdict and metrics.

use super::{LONG_OPERATION, WorkspaceManager};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::model::*;
use crate::policy::HealthFigures;
use crate::store::METRICS_MAX_AGE;
use chrono::Utc;

impl WorkspaceManager {
    /// The policy's verdict on the current figures (a snapshot like
    /// [`stats`](Self::stats)).
    pub fn health(&self) -> Result<HealthReport> {
        if let Some(h) = self.cached_health() {
            return Ok(h);
        }
        let snapshots = self.store.snapshots();
        let generation = snapshots.generation();
        let report = self.health_now()?;
        snapshots.put(&snapshots.health, generation, report.clone());
        Ok(report)
    }

    /// The health snapshot if it is still fresh: never blocks (no disk,
    /// no policy call), so a probe can be answered on any thread.
    pub fn cached_health(&self) -> Option<HealthReport> {
        let snapshots = self.store.snapshots();
        snapshots.get(&snapshots.health)
    }

    fn health_now(&self) -> Result<HealthReport> {
        let config = self.store.config();
        let list = self.store.list()?;
        let stats = self.store.stats(&list);
        let now = Utc::now();
        let max_age = chrono::Duration::seconds((config.max_age_hours * 3600.0) as i64);
        let size_limit = config.size_warning_mb * 1024 * 1024;
        let figures = HealthFigures {
            total_workspaces: stats.total_workspaces as u32,
            // The disk the service uses: workspaces and the mirrors they
            // borrow from.
            total_size_bytes: stats.total_size_bytes + stats.mirrors.size_bytes,
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
        let thresholds = crate::model::Thresholds {
            workspace_size_warning_mb: config.size_warning_mb,
            total_size_warning_mb: config.total_size_warning_mb,
            max_workspaces: config.max_workspaces,
            max_age_hours: config.max_age_hours,
        };
        let verdict = self.assess(&figures, &thresholds)?;
        let mut status = verdict.status;
        let mut warnings = verdict.warnings;
        let mut recommendations = verdict.recommendations;
        // The guide's operational alerts, from what this process observed.
        let failures = self.store.metrics().cleanup_failures_since_success();
        if failures > 0 {
            warnings.push(format!(
                "Cleanup failures: {failures} cleanup run(s) failed or left workspaces on disk since the last clean run"
            ));
            recommendations.push(
                "Check the last cleanup report's `failed` entries: files held open, or permissions"
                    .into(),
            );
        }
        for op in self.store.metrics().running_longer_than(LONG_OPERATION) {
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
            thresholds,
            workspace_stats: stats,
            warnings,
            recommendations,
        })
    }

    /// The policy's verdict on given figures (health, and the conformance checks).
    pub(crate) fn assess(
        &self,
        figures: &HealthFigures,
        thresholds: &crate::model::Thresholds,
    ) -> Result<crate::policy::Verdict> {
        self.policy()
            .call_assess_health(self.store.clone(), figures, thresholds)
    }

    /// The manager's metrics (for `GET /metrics` or an embedder's registry).
    pub fn metrics(&self) -> &Metrics {
        self.store.metrics()
    }

    /// The last finished operations (prepares, clones, updates, pushes,
    /// removals, cleanups), newest first, with durations and failures.
    pub fn recent_operations(&self) -> Vec<crate::metrics::RecentOperation> {
        self.store.metrics().recent()
    }

    /// The metrics in Prometheus text format. The disk gauges come from
    /// the last stats (at most [`METRICS_MAX_AGE`] old): a scrape does not
    /// read every `workspace.json` each time.
    pub fn encode_metrics(&self) -> Result<String> {
        let snapshots = self.store.snapshots();
        if snapshots
            .get_recent(&snapshots.stats, METRICS_MAX_AGE)
            .is_none()
        {
            self.refresh_stats()?;
        }
        Ok(self.store.metrics().encode())
    }

    /// Start draining: `/readyz` answers 503 so a load balancer stops
    /// sending new work, while requests keep being served. Irreversible.
    pub fn begin_draining(&self) {
        self.store.begin_draining();
    }

    /// Whether the service is draining (readiness fails).
    pub fn is_draining(&self) -> bool {
        self.store.is_draining()
    }

    /// Stop git transfers in flight at their next chunk of data, and any
    /// about to start (shutdown, after the grace period). Irreversible.
    pub fn cancel_git_operations(&self) {
        self.store.cancel_transfers();
    }
}
