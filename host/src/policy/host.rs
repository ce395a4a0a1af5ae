//! The host side of the WIT imports, and the per-call context they act in.
//!
//! Every name a policy passes is validated before it touches a path, and
//! git mutations are confined to the workspace the current prepare is for,
//! with the URL the caller asked for (so the caller's credentials can only
//! ever be sent where the caller meant them to go).

use super::HostState;
use super::bindings::fixsec::workspace::{git, log, removal, settings, types, workspace_fs};
use crate::adapter::git::Remote;
use crate::error::Error;
use crate::model::{RemovalReport, WorkspaceSummary};
use crate::names::WorkspaceName;

type WitError = types::Error;

/// What one policy call may do, and what the host saw it do.
#[derive(Default)]
pub(crate) struct CallContext {
    /// The workspace a prepare is for: the only one git may change.
    pub preparing: Option<WorkspaceName>,
    /// The clean URL the caller asked for: the only one git may fetch.
    pub url: Option<String>,
    /// Credentials and progress for that URL.
    pub remote: Remote,
    /// The policy cloned (so the workspace was not reused).
    pub cloned: bool,
    /// The policy updated an existing clone.
    pub updated: bool,
    /// Every removal performed during the call, as the host saw it.
    pub removals: Vec<RemovalReport>,
    /// The checkout's size, measured by the last clone or update.
    pub measured_size: Option<u64>,
}

impl CallContext {
    /// A context for preparing `name` from `url`.
    pub fn prepare(name: WorkspaceName, url: String, remote: Remote) -> Self {
        CallContext {
            preparing: Some(name),
            url: Some(url),
            remote,
            ..CallContext::default()
        }
    }
}

/// A name from the policy, validated; an unsafe one ends the call (trap).
fn checked(name: &str) -> wasmtime::Result<WorkspaceName> {
    WorkspaceName::parse(name).map_err(|e| wasmtime::Error::msg(e.to_string()))
}

pub(crate) fn to_wit_error(e: Error) -> WitError {
    use crate::error::ErrorKind as K;
    use types::ErrorKind as W;
    let kind = match e.kind() {
        K::InvalidInput => W::InvalidInput,
        K::Refused => W::Refused,
        K::NotFound => W::NotFound,
        K::InUse => W::InUse,
        K::Git => W::Git,
        K::Io => W::Io,
        K::Policy | K::Config => W::Internal,
    };
    WitError {
        kind,
        message: e.to_string(),
    }
}

/// A policy's error as a host error.
pub(crate) fn from_wit_error(e: WitError) -> Error {
    use types::ErrorKind as W;
    let m = e.message;
    match e.kind {
        W::InvalidInput => Error::InvalidInput(m),
        W::Refused => Error::Refused(m),
        W::NotFound => Error::NotFound(m),
        W::InUse => Error::InUse(m),
        W::Git => Error::Git(m.strip_prefix("git: ").unwrap_or(&m).to_string()),
        W::Io => Error::Filesystem(m),
        W::Internal => Error::Policy(m),
    }
}

pub(crate) fn to_wit_info(s: WorkspaceSummary) -> types::WorkspaceInfo {
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

fn to_wit_removal(r: &RemovalReport) -> types::RemovalReport {
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

impl HostState {
    /// The name, if it is the workspace being prepared and `url` the one asked for.
    fn mutable_target(&self, name: &str, url: Option<&str>) -> wasmtime::Result<WorkspaceName> {
        let name = checked(name)?;
        if self.call.preparing.as_ref() != Some(&name) {
            return Err(wasmtime::Error::msg(format!(
                "the policy tried to change workspace {name}, but only the workspace being prepared ({}) may be changed",
                self.call
                    .preparing
                    .as_ref()
                    .map_or("none", WorkspaceName::as_str)
            )));
        }
        if let Some(url) = url
            && self.call.url.as_deref() != Some(url)
        {
            return Err(wasmtime::Error::msg(format!(
                "the policy tried to fetch {url}, but the caller asked for {}",
                self.call.url.as_deref().unwrap_or("no URL")
            )));
        }
        Ok(name)
    }
}

impl types::Host for HostState {}

impl workspace_fs::Host for HostState {
    fn list_workspaces(&mut self) -> wasmtime::Result<Result<Vec<types::WorkspaceInfo>, WitError>> {
        Ok(self
            .services
            .list()
            .map(|l| l.into_iter().map(to_wit_info).collect())
            .map_err(to_wit_error))
    }

    fn get_workspace(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<types::WorkspaceInfo>, WitError>> {
        let name = checked(&name)?;
        Ok(Ok(self.services.summary(&name).map(to_wit_info)))
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(chrono::Utc::now().timestamp())
    }

    fn free_space_bytes(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(crate::adapter::fs::free_space(self.services.layout.base()))
    }
}

impl git::Host for HostState {
    fn inspect(&mut self, name: String) -> wasmtime::Result<types::RepoState> {
        let name = checked(&name)?;
        let s = crate::adapter::git::inspect(&self.services.layout.repo_dir(&name));
        Ok(types::RepoState {
            exists: s.exists,
            is_repository: s.is_repository,
            healthy: s.healthy,
            remote_url: s.remote_url,
            head: s.head,
            branch: s.branch,
            stale_locks: s.stale_locks,
            problem: s.problem,
        })
    }

    fn clone(
        &mut self,
        name: String,
        url: String,
        branch: Option<String>,
        options: git::FetchOptions,
    ) -> wasmtime::Result<Result<String, WitError>> {
        let name = self.mutable_target(&name, Some(&url))?;
        self.call.cloned = true;
        let result = self.services.clone_workspace(
            &name,
            &url,
            branch.as_deref(),
            options.depth,
            &self.call.remote,
        );
        Ok(result
            .map(|(head, size)| {
                self.call.measured_size = Some(size);
                head
            })
            .map_err(to_wit_error))
    }

    fn update(
        &mut self,
        name: String,
        url: String,
        branch: Option<String>,
        options: git::FetchOptions,
    ) -> wasmtime::Result<Result<String, WitError>> {
        let name = self.mutable_target(&name, Some(&url))?;
        let result = self
            .services
            .update_workspace(
                &name,
                &url,
                branch.as_deref(),
                options.depth,
                &self.call.remote,
            )
            .map(|(head, size)| {
                self.call.measured_size = Some(size);
                head
            })
            .map_err(to_wit_error);
        self.call.updated |= result.is_ok();
        Ok(result)
    }

    fn clear_stale_locks(&mut self, name: String) -> wasmtime::Result<Result<u32, WitError>> {
        let name = self.mutable_target(&name, None)?;
        let repo = self.services.layout.repo_dir(&name);
        Ok(crate::adapter::git::clear_stale_locks(&repo)
            .map(|cleared| {
                tracing::info!(workspace = %name, locks = ?cleared, "cleared stale git locks");
                cleared.len() as u32
            })
            .map_err(|e| to_wit_error(Error::Git(e.message))))
    }
}

impl removal::Host for HostState {
    fn remove_workspace(&mut self, name: String) -> wasmtime::Result<types::RemovalReport> {
        let name = checked(&name)?;
        let report = self.services.remove_workspace(&name);
        let wit = to_wit_removal(&report);
        self.call.removals.push(report);
        Ok(wit)
    }
}

impl settings::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.services.config.policy_settings.get(&key).cloned())
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .services
            .config
            .policy_settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Longest policy log line kept.
const MAX_LOG_LINE: usize = 4096;

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let cut = (0..=MAX_LOG_LINE)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push('…');
        }
        match level {
            log::Level::Trace => tracing::trace!(target: "policy", "{message}"),
            log::Level::Debug => tracing::debug!(target: "policy", "{message}"),
            log::Level::Info => tracing::info!(target: "policy", "{message}"),
            log::Level::Warn => tracing::warn!(target: "policy", "{message}"),
            log::Level::Error => tracing::error!(target: "policy", "{message}"),
        }
        Ok(())
    }
}
