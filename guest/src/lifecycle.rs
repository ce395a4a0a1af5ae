//! How an existing `repo/` is judged before prepare: reuse it or clone anew.

use crate::bindings::fixsec::workspace::types::RepoState;

/// What to do with what is on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A healthy clone of the same remote: update it in place.
    Reuse,
    /// Nothing there yet: clone.
    Clone,
    /// Something unusable is there: clone over it, for the reason given.
    Reclone(String),
}

/// Judge `state` for a prepare of `clone_url`.
pub fn plan(state: &RepoState, clone_url: &str) -> Plan {
    if !state.exists {
        return Plan::Clone;
    }
    if !state.is_repository {
        return Plan::Reclone(match &state.problem {
            Some(why) => format!("repo/ is not a usable git repository: {why}"),
            None => "repo/ is not a git repository".to_string(),
        });
    }
    if !state.healthy {
        let why = state.problem.as_deref().unwrap_or("unreadable");
        return Plan::Reclone(format!("broken repository: {why}"));
    }
    match state.remote_url.as_deref() {
        Some(url) if same_remote(url, clone_url) => Plan::Reuse,
        Some(url) => Plan::Reclone(format!("remote changed from {url} to {clone_url}")),
        None => Plan::Reclone("repository has no origin remote".to_string()),
    }
}

/// URLs that differ only by a trailing `/` or `.git` name the same remote.
fn same_remote(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> &str {
        let u = u.trim_end_matches('/');
        u.strip_suffix(".git").unwrap_or(u)
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(url: &str) -> RepoState {
        RepoState {
            exists: true,
            is_repository: true,
            healthy: true,
            remote_url: Some(url.into()),
            head: Some("abc".into()),
            branch: Some("main".into()),
            stale_locks: vec![],
            problem: None,
        }
    }

    #[test]
    fn same_remote_is_reused() {
        let s = healthy("https://h/o/r.git");
        assert_eq!(plan(&s, "https://h/o/r"), Plan::Reuse);
        assert_eq!(plan(&s, "https://h/o/r.git/"), Plan::Reuse);
    }

    #[test]
    fn foreign_remote_is_recloned() {
        let s = healthy("https://h/o/other.git");
        assert!(
            matches!(plan(&s, "https://h/o/r.git"), Plan::Reclone(r) if r.contains("remote changed"))
        );
    }

    #[test]
    fn broken_and_missing() {
        let mut s = healthy("u");
        s.healthy = false;
        s.problem = Some("HEAD missing".into());
        assert!(matches!(plan(&s, "u"), Plan::Reclone(r) if r.contains("HEAD missing")));
        s.is_repository = false;
        assert!(matches!(plan(&s, "u"), Plan::Reclone(_)));
        s.exists = false;
        assert_eq!(plan(&s, "u"), Plan::Clone);
    }
}
