//! Which workspaces an age-based cleanup removes.

use crate::bindings::fixsec::workspace::types::WorkspaceInfo;

/// The decision for one workspace.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Older than the cleanup age: remove it.
    Remove,
    /// Young enough: keep it.
    Keep,
    /// Leave it, for the reason given.
    Skip(String),
}

/// Decide about `ws` at time `now` (unix seconds) with the given age limit.
///
/// Age is measured from `last-used` in `workspace.json`, never from a folder's
/// mtime, and a workspace in use is never selected.
pub fn verdict(ws: &WorkspaceInfo, now: i64, max_age_hours: f64) -> Verdict {
    if ws.in_use {
        return Verdict::Skip("in use (being prepared or leased)".to_string());
    }
    let Some(last_used) = ws.last_used.or(ws.last_prepared) else {
        return Verdict::Skip(
            "age unknown: no workspace.json; prepare it once to adopt it, or remove it by name"
                .to_string(),
        );
    };
    // `>=`: an age of 0 hours removes every idle workspace, even one used this second.
    let age_seconds = (now - last_used) as f64;
    if age_seconds >= max_age_hours * 3600.0 {
        Verdict::Remove
    } else {
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(last_used: Option<i64>, in_use: bool) -> WorkspaceInfo {
        WorkspaceInfo {
            name: "a_12345678".into(),
            repo_full_name: Some("a".into()),
            clone_url: None,
            branch: None,
            head: None,
            size_bytes: 0,
            created: last_used,
            last_prepared: last_used,
            last_used,
            in_use,
            has_metadata: last_used.is_some(),
        }
    }

    #[test]
    fn old_is_removed_young_is_kept() {
        let now = 1_000_000;
        assert_eq!(
            verdict(&ws(Some(now - 25 * 3600), false), now, 24.0),
            Verdict::Remove
        );
        assert_eq!(
            verdict(&ws(Some(now - 23 * 3600), false), now, 24.0),
            Verdict::Keep
        );
    }

    #[test]
    fn in_use_is_never_removed_however_old() {
        let v = verdict(&ws(Some(0), true), 1_000_000_000, 0.0);
        assert!(matches!(v, Verdict::Skip(r) if r.contains("in use")));
    }

    #[test]
    fn unknown_age_is_skipped() {
        assert!(matches!(
            verdict(&ws(None, false), 10, 0.0),
            Verdict::Skip(_)
        ));
    }

    #[test]
    fn zero_age_removes_everything_idle() {
        let now = 100;
        assert_eq!(
            verdict(&ws(Some(now - 1), false), now, 0.0),
            Verdict::Remove
        );
    }
}
