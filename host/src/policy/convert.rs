//! Conversions between the host's types and the WIT contract's, in one
//! place: errors both ways, workspace listings, repository state, removal
//! reports, health verdicts.

use super::bindings::exports::fixsec::workspace::policy as wit;
use super::bindings::fixsec::workspace::types;
use super::calls::PushQuestion;
use crate::adapter::git::RepoState;
use crate::error::{Error, ErrorKind};
use crate::model::{HealthStatus, RemovalReport, WorkspaceSummary};

/// A host error as the policy sees it: kind, and the message without the
/// kind's prefix (it gets one again on the way back).
impl From<Error> for types::Error {
    fn from(e: Error) -> Self {
        use types::ErrorKind as W;
        let kind = match e.kind() {
            ErrorKind::InvalidInput => W::InvalidInput,
            ErrorKind::Refused => W::Refused,
            ErrorKind::NotFound => W::NotFound,
            ErrorKind::InUse | ErrorKind::Busy => W::InUse,
            ErrorKind::Git | ErrorKind::Rejected => W::Git,
            ErrorKind::Io | ErrorKind::InsufficientStorage => W::Io,
            ErrorKind::Policy | ErrorKind::Config => W::Internal,
        };
        types::Error {
            kind,
            message: e.message().to_string(),
        }
    }
}

/// A policy's error as a host error.
impl From<types::Error> for Error {
    fn from(e: types::Error) -> Self {
        use types::ErrorKind as W;
        let kind = match e.kind {
            W::InvalidInput => ErrorKind::InvalidInput,
            W::Refused => ErrorKind::Refused,
            W::NotFound => ErrorKind::NotFound,
            W::InUse => ErrorKind::InUse,
            W::Git => ErrorKind::Git,
            W::Io => ErrorKind::Io,
            W::Internal => ErrorKind::Policy,
        };
        Error::new(kind, e.message)
    }
}

impl From<WorkspaceSummary> for types::WorkspaceInfo {
    fn from(s: WorkspaceSummary) -> Self {
        types::WorkspaceInfo {
            name: s.name,
            repo_full_name: s.repo_full_name,
            clone_url: s.clone_url,
            branch: s.branch,
            head: s.head,
            size_bytes: s.size_bytes,
            created: s.created.map(|t| t.timestamp()),
            last_prepared: s.last_prepared.map(|t| t.timestamp()),
            last_used: s.last_used.map(|t| t.timestamp()),
            in_use: s.in_use,
            has_metadata: s.has_metadata,
        }
    }
}

impl From<RepoState> for types::RepoState {
    fn from(s: RepoState) -> Self {
        types::RepoState {
            exists: s.exists,
            is_repository: s.is_repository,
            healthy: s.healthy,
            remote_url: s.remote_url,
            head: s.head,
            branch: s.branch,
            stale_locks: s.stale_locks,
            problem: s.problem,
        }
    }
}

impl From<&RemovalReport> for types::RemovalReport {
    fn from(r: &RemovalReport) -> Self {
        types::RemovalReport {
            name: r.name.clone(),
            removed: r.removed,
            skipped_in_use: r.skipped_in_use,
            attempts: r.attempts,
            bytes_freed: r.bytes_freed,
            remaining: r.remaining.clone(),
            error: r.error.clone(),
        }
    }
}

impl From<wit::HealthStatus> for HealthStatus {
    fn from(s: wit::HealthStatus) -> Self {
        match s {
            wit::HealthStatus::Healthy => HealthStatus::Healthy,
            wit::HealthStatus::Warning => HealthStatus::Warning,
            wit::HealthStatus::Critical => HealthStatus::Critical,
        }
    }
}

impl From<&PushQuestion> for wit::PushRequest {
    fn from(q: &PushQuestion) -> Self {
        wit::PushRequest {
            repo_full_name: q.repo_full_name.clone(),
            name: q.name.clone(),
            branch: q.branch.clone(),
            force: q.force,
            url: q.url.clone(),
            default_branch: q.default_branch.clone(),
        }
    }
}

impl From<&wit::PushRequest> for PushQuestion {
    fn from(r: &wit::PushRequest) -> Self {
        PushQuestion {
            repo_full_name: r.repo_full_name.clone(),
            name: r.name.clone(),
            branch: r.branch.clone(),
            force: r.force,
            url: r.url.clone(),
            default_branch: r.default_branch.clone(),
        }
    }
}
