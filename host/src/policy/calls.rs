//! The policy's exports as the rest of the host calls them, as Zed's
//! extension host does: host types in, host types out, errors as
//! [`Error`]. The WIT records are built and read here and in `convert.rs`
//! only; the manager never sees a generated type.

use super::bindings::exports::fixsec::workspace::policy as wit;
use super::{CallContext, Export, PolicyEngine};
use crate::error::{Error, Result};
use crate::model::{HealthStatus, SkippedWorkspace, Thresholds};
use crate::store::Store;
use std::sync::Arc;

/// What `prepare` is asked.
#[derive(Debug, Clone)]
pub(crate) struct PrepareCall {
    /// `owner/repo` as the caller gave it.
    pub repo_full_name: String,
    /// The workspace's folder name.
    pub name: String,
    /// The clone URL without credentials.
    pub clone_url: String,
    /// The ref asked for; none: the remote's default branch.
    pub git_ref: Option<String>,
    /// Shallow depth, if asked.
    pub depth: Option<u32>,
}

/// What the policy's `prepare` answered (the host checks it on disk).
#[derive(Debug, Clone)]
pub(crate) struct PolicyPrepared {
    /// The policy says it reused the clone (the host checks what it saw;
    /// the head it names is read from disk, not from the policy).
    pub reused: bool,
    /// What it wants the caller told.
    pub notes: Vec<String>,
}

/// What the policy's `cleanup` decided; its removals are in the call's
/// context, done through the host.
#[derive(Debug, Clone)]
pub(crate) struct CleanupDecision {
    /// Workspaces young enough to keep.
    pub kept: u32,
    /// Workspaces left in place, and why.
    pub skipped: Vec<SkippedWorkspace>,
}

/// The figures `assess-health` judges.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthFigures {
    /// Workspaces on disk.
    pub total_workspaces: u32,
    /// Bytes the service uses (workspaces and mirrors).
    pub total_size_bytes: u64,
    /// Workspaces being prepared or leased.
    pub in_use: u32,
    /// Workspaces over the per-workspace threshold, with their sizes.
    pub largest: Vec<(String, u64)>,
    /// Workspaces unused for longer than the cleanup age.
    pub stale: u32,
    /// Workspaces without a readable `workspace.json`.
    pub without_metadata: u32,
    /// Removals not finished.
    pub pending_deletions: u32,
    /// Free bytes on the workspace disk, if known.
    pub free_space_bytes: Option<u64>,
}

/// The policy's health verdict.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    /// Healthy, warning or critical.
    pub status: HealthStatus,
    /// What is wrong.
    pub warnings: Vec<String>,
    /// What to do.
    pub recommendations: Vec<String>,
}

/// What `authorize-push` is asked: may this branch be pushed there?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushQuestion {
    /// `owner/repo` the workspace was prepared for.
    pub repo_full_name: String,
    /// The workspace's folder name.
    pub name: String,
    /// The branch to push.
    pub branch: String,
    /// With force.
    pub force: bool,
    /// The push target, without credentials.
    pub url: String,
    /// The default branch the push target advertises now, if any.
    pub default_branch: Option<String>,
}

impl PolicyEngine {
    /// `workspace-name`: the folder name for `repo_full_name` (unchecked;
    /// the manager validates it).
    pub(crate) fn call_workspace_name(&self, store: Arc<Store>, repo: &str) -> Result<String> {
        let (name, _) = self.call(
            store,
            CallContext::for_export(Export::WorkspaceName),
            "workspace-name",
            |p, s| p.workspace_name(s, repo),
        )?;
        name.map_err(Error::from)
    }

    /// `prepare`, with `call` as its context. The outer error is the call's
    /// (a trap, a limit); the inner one the policy's answer, returned with
    /// the context so a host limit hit during the call can take precedence.
    pub(crate) fn call_prepare(
        &self,
        store: Arc<Store>,
        call: CallContext,
        request: &PrepareCall,
    ) -> Result<(Result<PolicyPrepared>, CallContext)> {
        let request = wit::PrepareRequest {
            repo_full_name: request.repo_full_name.clone(),
            name: request.name.clone(),
            clone_url: request.clone_url.clone(),
            git_ref: request.git_ref.clone(),
            depth: request.depth,
        };
        let (outcome, ctx) = self.call(store, call, "prepare", |p, s| p.prepare(s, &request))?;
        let outcome = outcome.map_err(Error::from).map(|o| PolicyPrepared {
            reused: o.reused,
            notes: o.notes,
        });
        Ok((outcome, ctx))
    }

    /// `cleanup` at `max_age_hours`: the decision and the context holding
    /// the removals the policy made through the host.
    pub(crate) fn call_cleanup(
        &self,
        store: Arc<Store>,
        max_age_hours: f64,
    ) -> Result<(CleanupDecision, CallContext)> {
        let (outcome, ctx) = self.call(
            store,
            CallContext::cleanup(max_age_hours),
            "cleanup",
            |p, s| p.cleanup(s, wit::CleanupRequest { max_age_hours }),
        )?;
        let outcome = outcome.map_err(Error::from)?;
        let decision = CleanupDecision {
            kept: outcome.kept,
            skipped: outcome
                .skipped
                .into_iter()
                .map(|s| SkippedWorkspace {
                    name: s.name,
                    reason: s.reason,
                })
                .collect(),
        };
        Ok((decision, ctx))
    }

    /// `assess-health`: the verdict on `figures` against `thresholds`.
    pub(crate) fn call_assess_health(
        &self,
        store: Arc<Store>,
        figures: &HealthFigures,
        thresholds: &Thresholds,
    ) -> Result<Verdict> {
        let stats = wit::HealthStats {
            total_workspaces: figures.total_workspaces,
            total_size_bytes: figures.total_size_bytes,
            in_use: figures.in_use,
            largest: figures.largest.clone(),
            stale: figures.stale,
            without_metadata: figures.without_metadata,
            pending_deletions: figures.pending_deletions,
            free_space_bytes: figures.free_space_bytes,
        };
        let thresholds = wit::Thresholds {
            workspace_size_warning_mb: thresholds.workspace_size_warning_mb,
            total_size_warning_mb: thresholds.total_size_warning_mb,
            max_workspaces: thresholds.max_workspaces,
            max_age_hours: thresholds.max_age_hours,
        };
        let (verdict, _) = self.call(
            store,
            CallContext::for_export(Export::AssessHealth),
            "assess-health",
            |p, s| p.assess_health(s, &stats, thresholds),
        )?;
        Ok(Verdict {
            status: verdict.status.into(),
            warnings: verdict.warnings,
            recommendations: verdict.recommendations,
        })
    }

    /// `authorize-push`: `Ok` when the policy allows the push.
    pub(crate) fn call_authorize_push(
        &self,
        store: Arc<Store>,
        question: &PushQuestion,
    ) -> Result<()> {
        let request = wit::PushRequest::from(question);
        let (decision, _) = self.call(
            store,
            CallContext::for_export(Export::AuthorizePush),
            "authorize-push",
            |p, s| p.authorize_push(s, &request),
        )?;
        decision.map_err(Error::from)
    }
}
