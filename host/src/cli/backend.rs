//! What the commands act on: this machine's base directory (a
//! [`WorkspaceManager`] in the process), or a service over HTTP
//! (`--server`, [`super::remote::Remote`]). One trait, so every command
//! prints the same way whichever it is.

use crate::adapter::git::ProgressFn;
use crate::error::Result;
use crate::model::*;
use crate::{PrepareRequest, PushRequest, WorkspaceManager};
use std::sync::Arc;

/// The operations the CLI's workspace commands need.
pub(super) trait Backend {
    /// Where the workspaces are: a base directory or a server URL.
    fn location(&self) -> String;
    /// The folder name of a repository's workspace.
    fn workspace_name(&self, repo: &str) -> Result<String>;
    /// Prepare, reporting transfer progress where the backend can.
    fn prepare(
        &self,
        request: &PrepareRequest,
        progress: Option<Arc<ProgressFn>>,
    ) -> Result<PrepareOutcome>;
    /// Push a branch of a workspace.
    fn push(&self, name: &str, request: &PushRequest) -> Result<PushOutcome>;
    /// Every workspace.
    fn list(&self) -> Result<Vec<WorkspaceSummary>>;
    /// Totals.
    fn stats(&self) -> Result<Stats>;
    /// Remove old workspaces.
    fn cleanup(&self, max_age_hours: Option<f64>) -> Result<CleanupReport>;
    /// The health verdict.
    fn health(&self) -> Result<HealthReport>;
    /// Remove one workspace.
    fn remove(&self, name: &str) -> Result<RemovalReport>;
}

impl Backend for WorkspaceManager {
    fn location(&self) -> String {
        self.base_path().display().to_string()
    }
    fn workspace_name(&self, repo: &str) -> Result<String> {
        WorkspaceManager::workspace_name(self, repo)
    }
    fn prepare(
        &self,
        request: &PrepareRequest,
        progress: Option<Arc<ProgressFn>>,
    ) -> Result<PrepareOutcome> {
        self.prepare_with_progress(request, progress)
    }
    fn push(&self, name: &str, request: &PushRequest) -> Result<PushOutcome> {
        WorkspaceManager::push(self, name, request)
    }
    fn list(&self) -> Result<Vec<WorkspaceSummary>> {
        WorkspaceManager::list(self)
    }
    fn stats(&self) -> Result<Stats> {
        WorkspaceManager::stats(self)
    }
    fn cleanup(&self, max_age_hours: Option<f64>) -> Result<CleanupReport> {
        WorkspaceManager::cleanup(self, max_age_hours)
    }
    fn health(&self) -> Result<HealthReport> {
        WorkspaceManager::health(self)
    }
    fn remove(&self, name: &str) -> Result<RemovalReport> {
        WorkspaceManager::remove(self, name)
    }
}
