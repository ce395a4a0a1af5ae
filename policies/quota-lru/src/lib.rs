//! quota-lru: a fixsec-workspace policy that keeps the workspaces under a
//! disk budget instead of an age.
//!
//! - cleanup removes least-recently-used workspaces until the total is under
//!   `quota_mb`, never one in use, and always keeps the `keep_recent` most
//!   recently used ones;
//! - health is judged against the same budget: over 80 % is a warning, over
//!   the budget is critical;
//! - naming, prepare and push rules are the default policy's (so folders
//!   stay compatible).
//!
//! Settings (through the contract's `settings` import):
//! `quota_mb` (default 1024) and `keep_recent` (default 1).

use fixsec_policy_default::DefaultPolicy;
use fixsec_policy_default::bindings::exports::fixsec::workspace::policy::{
    CleanupOutcome, CleanupRequest, Guest, HealthReport, HealthStats, HealthStatus, PrepareOutcome,
    PrepareRequest, PushRequest, SkippedWorkspace, Thresholds,
};
use fixsec_policy_default::bindings::fixsec::workspace::types::{Error, ErrorKind, WorkspaceInfo};
use fixsec_policy_default::bindings::fixsec::workspace::{removal, settings, workspace_fs};

const MB: u64 = 1024 * 1024;

/// The policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Disk budget for all workspaces together.
    pub quota_bytes: u64,
    /// How many of the most recently used workspaces are always kept.
    pub keep_recent: usize,
}

impl Quota {
    /// Parse the settings; unset ones take their defaults.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let number = |key: &str, default: u64| -> Result<u64, Error> {
            match get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| Error {
                    kind: ErrorKind::InvalidInput,
                    message: format!("quota-lru: setting {key}={v:?} is not a whole number"),
                }),
            }
        };
        Ok(Quota {
            quota_bytes: number("quota_mb", 1024)? * MB,
            keep_recent: number("keep_recent", 1)? as usize,
        })
    }
}

/// The decision for one cleanup.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Workspaces to remove, oldest use first.
    pub remove: Vec<String>,
    /// Workspaces left, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Workspaces kept.
    pub kept: u32,
}

/// Least recently used first until the total fits the budget.
pub fn plan(workspaces: &[WorkspaceInfo], quota: Quota) -> Plan {
    let mut by_recency: Vec<&WorkspaceInfo> = workspaces.iter().collect();
    // Most recent first; unknown use counts as oldest.
    by_recency
        .sort_by_key(|w| std::cmp::Reverse(w.last_used.or(w.last_prepared).unwrap_or(i64::MIN)));
    let mut total: u64 = workspaces.iter().map(|w| w.size_bytes).sum();
    let mut out = Plan::default();
    for (rank, ws) in by_recency.iter().enumerate().rev() {
        if total <= quota.quota_bytes {
            out.kept += 1;
        } else if ws.in_use {
            out.skipped
                .push((ws.name.clone(), "in use (being prepared or leased)".into()));
        } else if rank < quota.keep_recent {
            out.skipped.push((
                ws.name.clone(),
                format!(
                    "one of the {} most recently used (keep_recent)",
                    quota.keep_recent
                ),
            ));
        } else {
            total = total.saturating_sub(ws.size_bytes);
            out.remove.push(ws.name.clone());
        }
    }
    out
}

/// Health against the budget.
pub fn assess(stats: &HealthStats, quota: Quota) -> HealthReport {
    let used = stats.total_size_bytes;
    let pct = if quota.quota_bytes == 0 {
        100.0
    } else {
        used as f64 * 100.0 / quota.quota_bytes as f64
    };
    let mut warnings = Vec::new();
    let mut recommendations = Vec::new();
    let status = if used > quota.quota_bytes {
        warnings.push(format!(
            "Over the disk budget: {:.1} MB used of {} MB ({pct:.0}%)",
            used as f64 / MB as f64,
            quota.quota_bytes / MB
        ));
        recommendations.push(
            "Run cleanup: it removes least recently used workspaces until the total fits".into(),
        );
        HealthStatus::Critical
    } else if pct > 80.0 {
        warnings.push(format!("Disk budget {pct:.0}% used"));
        recommendations.push("Raise quota_mb or run cleanup".into());
        HealthStatus::Warning
    } else {
        HealthStatus::Healthy
    };
    if stats.pending_deletions > 0 {
        warnings.push(format!(
            "{} removed workspace(s) could not be deleted yet",
            stats.pending_deletions
        ));
    }
    HealthReport {
        status,
        warnings,
        recommendations,
    }
}

fn quota() -> Result<Quota, Error> {
    Quota::from_settings(settings::get)
}

/// The quota-lru policy.
pub struct QuotaLru;

impl Guest for QuotaLru {
    fn workspace_name(repo_full_name: String) -> Result<String, Error> {
        DefaultPolicy::workspace_name(repo_full_name)
    }

    fn prepare(request: PrepareRequest) -> Result<PrepareOutcome, Error> {
        DefaultPolicy::prepare(request)
    }

    fn cleanup(_request: CleanupRequest) -> Result<CleanupOutcome, Error> {
        let quota = quota()?;
        let plan = plan(&workspace_fs::list_workspaces()?, quota);
        for name in &plan.remove {
            removal::remove_workspace(name);
        }
        Ok(CleanupOutcome {
            skipped: plan
                .skipped
                .into_iter()
                .map(|(name, reason)| SkippedWorkspace { name, reason })
                .collect(),
            kept: plan.kept,
        })
    }

    fn assess_health(stats: HealthStats, _thresholds: Thresholds) -> HealthReport {
        match quota() {
            Ok(q) => assess(&stats, q),
            Err(e) => HealthReport {
                status: HealthStatus::Warning,
                warnings: vec![e.message],
                recommendations: vec!["Fix WORKSPACE_POLICY_SETTINGS".into()],
            },
        }
    }

    fn authorize_push(request: PushRequest) -> Result<(), Error> {
        DefaultPolicy::authorize_push(request)
    }
}

#[cfg(target_arch = "wasm32")]
fixsec_policy_default::bindings::export_policy!(QuotaLru with_types_in fixsec_policy_default::bindings);

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str, mb: u64, last_used: i64, in_use: bool) -> WorkspaceInfo {
        WorkspaceInfo {
            name: name.into(),
            repo_full_name: None,
            clone_url: None,
            branch: None,
            head: None,
            size_bytes: mb * MB,
            created: Some(last_used),
            last_prepared: Some(last_used),
            last_used: Some(last_used),
            in_use,
            has_metadata: true,
        }
    }

    #[test]
    fn removes_least_recently_used_until_under_quota() {
        let all = [
            ws("a", 40, 1, false),
            ws("b", 40, 2, false),
            ws("c", 40, 3, false),
        ];
        let p = plan(
            &all,
            Quota {
                quota_bytes: 50 * MB,
                keep_recent: 1,
            },
        );
        assert_eq!(p.remove, ["a", "b"]);
        assert_eq!(p.kept, 1);
    }

    #[test]
    fn never_removes_in_use_or_the_most_recent() {
        let all = [
            ws("a", 40, 1, true),
            ws("b", 40, 2, false),
            ws("c", 40, 3, false),
        ];
        let p = plan(
            &all,
            Quota {
                quota_bytes: 0,
                keep_recent: 1,
            },
        );
        assert_eq!(p.remove, ["b"]);
        assert_eq!(p.skipped.len(), 2);
        assert!(
            p.skipped
                .iter()
                .any(|(n, r)| n == "a" && r.contains("in use"))
        );
        assert!(
            p.skipped
                .iter()
                .any(|(n, r)| n == "c" && r.contains("keep_recent"))
        );
    }

    #[test]
    fn under_quota_removes_nothing() {
        let all = [ws("a", 1, 1, false), ws("b", 1, 2, false)];
        let p = plan(
            &all,
            Quota {
                quota_bytes: 10 * MB,
                keep_recent: 0,
            },
        );
        assert!(p.remove.is_empty());
        assert_eq!(p.kept, 2);
    }

    #[test]
    fn settings_parse_with_defaults_and_errors() {
        let q = Quota::from_settings(|_| None).unwrap();
        assert_eq!(
            q,
            Quota {
                quota_bytes: 1024 * MB,
                keep_recent: 1
            }
        );
        let q = Quota::from_settings(|k| (k == "quota_mb").then(|| "5".to_string())).unwrap();
        assert_eq!(q.quota_bytes, 5 * MB);
        assert!(Quota::from_settings(|_| Some("lots".into())).is_err());
    }
}
