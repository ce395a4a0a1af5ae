//! Figures -> health verdict, warnings and recommendations.

use crate::bindings::exports::fixsec::workspace::policy::{
    HealthReport, HealthStats, HealthStatus, Thresholds,
};

const MB: u64 = 1024 * 1024;

/// Below this many free bytes on the workspace disk the verdict is critical.
const CRITICAL_FREE_SPACE_BYTES: u64 = 1024 * MB;

/// The default policy's verdict.
///
/// Warning: a workspace over the per-workspace threshold, all together over
/// the total threshold, more workspaces than allowed, deletions pending.
/// Critical: twice the total or count threshold, or under 1 GiB free.
pub fn assess(stats: &HealthStats, t: &Thresholds) -> HealthReport {
    let mut warnings = Vec::new();
    let mut recommendations = Vec::new();
    let mut critical = false;

    let total_mb = stats.total_size_bytes as f64 / MB as f64;
    if stats.total_size_bytes > t.total_size_warning_mb * MB {
        warnings.push(format!(
            "High disk usage: workspaces take {total_mb:.1} MB, over the {} MB threshold",
            t.total_size_warning_mb
        ));
        recommendations.push(format!(
            "Run cleanup (POST /workspace/cleanup or `fixsec-workspace cleanup`) with a max age below {} hours",
            t.max_age_hours
        ));
        critical |= stats.total_size_bytes > 2 * t.total_size_warning_mb * MB;
    }
    if stats.total_workspaces > t.max_workspaces {
        warnings.push(format!(
            "Too many workspaces: {} exist, over the limit of {}",
            stats.total_workspaces, t.max_workspaces
        ));
        recommendations.push("Lower WORKSPACE_MAX_AGE_HOURS or run cleanup more often".to_string());
        critical |= stats.total_workspaces > 2 * t.max_workspaces;
    }
    for (name, size) in &stats.largest {
        warnings.push(format!(
            "Workspace {name} takes {:.1} MB, over the {} MB per-workspace threshold",
            *size as f64 / MB as f64,
            t.workspace_size_warning_mb
        ));
    }
    if !stats.largest.is_empty() {
        recommendations.push(
            "Prepare large repositories with a shallow depth (depth: 1) or raise WORKSPACE_SIZE_WARNING_MB"
                .to_string(),
        );
    }
    if stats.stale > 0 {
        recommendations.push(format!(
            "{} workspace(s) unused for over {} hours: run cleanup to reclaim their space",
            stats.stale, t.max_age_hours
        ));
    }
    if stats.without_metadata > 0 {
        recommendations.push(format!(
            "{} workspace(s) have no readable workspace.json: prepare them once to adopt them, or remove them by name",
            stats.without_metadata
        ));
    }
    if stats.pending_deletions > 0 {
        warnings.push(format!(
            "{} removed workspace(s) could not be deleted yet (files still in use)",
            stats.pending_deletions
        ));
        recommendations.push(
            "Close programs holding files in the workspace; the next cleanup retries the deletion"
                .to_string(),
        );
    }
    if let Some(free) = stats
        .free_space_bytes
        .filter(|&free| free < CRITICAL_FREE_SPACE_BYTES)
    {
        critical = true;
        warnings.push(format!(
            "Low disk space: {:.1} MB free on the workspace volume",
            free as f64 / MB as f64
        ));
        recommendations.push("Free disk space now: run cleanup or grow the volume".to_string());
    }

    let status = if critical {
        HealthStatus::Critical
    } else if warnings.is_empty() {
        HealthStatus::Healthy
    } else {
        HealthStatus::Warning
    };
    HealthReport {
        status,
        warnings,
        recommendations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            workspace_size_warning_mb: 1000,
            total_size_warning_mb: 5000,
            max_workspaces: 100,
            max_age_hours: 24.0,
        }
    }

    fn stats() -> HealthStats {
        HealthStats {
            total_workspaces: 3,
            total_size_bytes: 10 * MB,
            in_use: 0,
            largest: vec![],
            stale: 0,
            without_metadata: 0,
            pending_deletions: 0,
            free_space_bytes: Some(100 * 1024 * MB),
        }
    }

    #[test]
    fn small_and_tidy_is_healthy() {
        let r = assess(&stats(), &thresholds());
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn over_five_gb_warns_and_over_ten_is_critical() {
        let mut s = stats();
        s.total_size_bytes = 5001 * MB;
        let r = assess(&s, &thresholds());
        assert_eq!(r.status, HealthStatus::Warning);
        assert!(r.warnings[0].contains("High disk usage"));
        s.total_size_bytes = 10_001 * MB;
        assert_eq!(assess(&s, &thresholds()).status, HealthStatus::Critical);
    }

    #[test]
    fn too_many_workspaces_warns() {
        let mut s = stats();
        s.total_workspaces = 101;
        let r = assess(&s, &thresholds());
        assert_eq!(r.status, HealthStatus::Warning);
        assert!(r.warnings[0].contains("Too many workspaces"));
    }

    #[test]
    fn stale_workspaces_only_recommend() {
        let mut s = stats();
        s.stale = 2;
        let r = assess(&s, &thresholds());
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(r.recommendations[0].contains("2 workspace(s) unused"));
    }

    #[test]
    fn low_disk_is_critical() {
        let mut s = stats();
        s.free_space_bytes = Some(10 * MB);
        assert_eq!(assess(&s, &thresholds()).status, HealthStatus::Critical);
    }
}
