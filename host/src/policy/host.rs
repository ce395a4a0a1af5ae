//! The host side of the WIT imports, and the per-call context they act in.
//!
//! Every name a policy passes is validated before it touches a path, and
//! git mutations are confined to the workspace the current prepare is for,
//! with the URL the caller asked for (so the caller's credentials can only
//! ever be sent where the caller meant them to go).

use super::HostState;
use super::bindings::fixsec::workspace::{git, log, removal, settings, types, workspace_fs};
use crate::adapter::git::{KeepIgnored, Remote};
use crate::error::{Error, ErrorKind};
use crate::model::{RemovalReport, WorkspaceSummary};
use crate::names::WorkspaceName;
use crate::store::CheckoutSpec;

type WitError = types::Error;

/// The export a call is running: which imports it may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Export {
    /// `workspace-name`: pure; clock, free space, settings and log only.
    #[default]
    WorkspaceName,
    /// `prepare`: may list, inspect, and change the workspace being prepared.
    Prepare,
    /// `cleanup`: may list and remove.
    Cleanup,
    /// `assess-health` (reached without a token): clock, free space,
    /// settings and log only.
    AssessHealth,
    /// `authorize-push`: a decision; clock, free space, settings and log
    /// only.
    AuthorizePush,
}

impl Export {
    fn as_str(self) -> &'static str {
        match self {
            Export::WorkspaceName => "workspace-name",
            Export::Prepare => "prepare",
            Export::Cleanup => "cleanup",
            Export::AssessHealth => "assess-health",
            Export::AuthorizePush => "authorize-push",
        }
    }
}

/// When a workspace was last used and prepared, as a cleanup's listing
/// showed it to the policy.
type SeenAt = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// What one policy call may do, and what the host saw it do.
#[derive(Default)]
pub(crate) struct CallContext {
    /// The export running.
    pub export: Export,
    /// A cleanup's age limit: a workspace the policy removes without having
    /// listed it must be at least this old.
    pub max_age_hours: Option<f64>,
    /// What the policy saw of each workspace it listed during a cleanup:
    /// a removal of one prepared or used since is refused.
    pub listed: std::collections::HashMap<String, SeenAt>,
    /// A limit of the host's own stopped an import (busy, storage,
    /// shutdown): the call's answer whatever the policy makes of it.
    pub host_stop: Option<Error>,
    /// The workspace a prepare is for: the only one git may change.
    pub preparing: Option<WorkspaceName>,
    /// The clean URL the caller asked for: the only one git may fetch.
    pub url: Option<String>,
    /// The repository network whose mirror a clone borrows from.
    pub network: Option<String>,
    /// Credentials and progress for that URL.
    pub remote: Remote,
    /// Submodules and LFS, as the caller asked.
    pub extras: crate::adapter::git::Extras,
    /// A partial clone's filter, as the caller asked (checked).
    pub filter: Option<String>,
    /// A sparse workspace's directories, as the caller asked (checked).
    pub sparse: Option<Vec<String>>,
    /// The policy cloned (so the workspace was not reused).
    pub cloned: bool,
    /// The policy updated an existing clone.
    pub updated: bool,
    /// Every removal performed during the call, as the host saw it.
    pub removals: Vec<RemovalReport>,
    /// The checkout's size, measured by the last clone or update.
    pub measured_size: Option<u64>,
    /// A push's prefetch: it updates or leaves the workspace, never clones
    /// it afresh (what the policy would clone over is the next job's
    /// prepare to heal).
    pub no_clone: bool,
}

impl CallContext {
    /// A context for preparing `name` from `url`.
    pub fn prepare(name: WorkspaceName, url: String, remote: Remote) -> Self {
        CallContext {
            export: Export::Prepare,
            preparing: Some(name),
            url: Some(url),
            remote,
            ..CallContext::default()
        }
    }
}

impl CallContext {
    /// A context for `export` (not prepare).
    pub fn for_export(export: Export) -> Self {
        CallContext {
            export,
            ..CallContext::default()
        }
    }

    /// A context for a cleanup with `max_age_hours`.
    pub fn cleanup(max_age_hours: f64) -> Self {
        CallContext {
            export: Export::Cleanup,
            max_age_hours: Some(max_age_hours),
            ..CallContext::default()
        }
    }

    /// Trap unless the running export may use `import`.
    fn allow(&self, import: &str, exports: &[Export]) -> wasmtime::Result<()> {
        if exports.contains(&self.export) {
            return Ok(());
        }
        Err(wasmtime::Error::msg(format!(
            "the policy called {import} from {}, which may not use it",
            self.export.as_str()
        )))
    }

    /// The checkout a `clone` or `update` import asks for: the policy's
    /// URL, ref and depth with the caller's network and extras.
    fn checkout<'a>(
        &'a self,
        url: &'a str,
        git_ref: Option<&'a str>,
        options: &git::FetchOptions,
        keep: &'a KeepIgnored,
    ) -> CheckoutSpec<'a> {
        CheckoutSpec {
            url,
            git_ref,
            depth: options.depth,
            network: self.network.as_deref(),
            extras: self.extras,
            filter: self.filter.as_deref(),
            sparse: self.sparse.as_deref(),
            keep,
        }
    }

    /// Remember a host limit an import hit, so the call answers with it.
    fn note_host_stop(&mut self, e: &Error) {
        if matches!(e.kind(), ErrorKind::Busy | ErrorKind::InsufficientStorage) {
            self.host_stop
                .get_or_insert_with(|| Error::new(e.kind(), e.message()));
        }
    }

    /// Why removing `name` (whose metadata is `meta`, read under its lock)
    /// would act on stale information; none when it may go.
    fn stale_removal(
        &self,
        name: &str,
        meta: Option<&crate::metadata::WorkspaceMetadata>,
    ) -> Option<String> {
        let meta = meta?;
        let now_seen = (Some(meta.last_used), Some(meta.last_prepared));
        match self.listed.get(name) {
            Some(seen) if *seen != now_seen => {
                Some("prepared or used since the policy listed it; kept".into())
            }
            Some(_) => None,
            None => {
                let hours = self.max_age_hours?;
                let age = chrono::Utc::now() - meta.last_used;
                (age.num_milliseconds() as f64 / 3_600_000.0 < hours).then(|| {
                    format!(
                        "used within the last {hours} hours (the policy had not listed it); kept"
                    )
                })
            }
        }
    }
}

/// A name from the policy, validated; an unsafe one ends the call (trap).
fn checked(name: &str) -> wasmtime::Result<WorkspaceName> {
    WorkspaceName::parse(name).map_err(|e| wasmtime::Error::msg(e.to_string()))
}

impl HostState {
    /// Record what a cleanup's policy saw of a workspace.
    fn seen(&mut self, s: &WorkspaceSummary) {
        if self.call.export == Export::Cleanup {
            self.call
                .listed
                .insert(s.name.clone(), (s.last_used, s.last_prepared));
        }
    }

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
        self.call
            .allow("list-workspaces", &[Export::Prepare, Export::Cleanup])?;
        Ok(match self.store.list() {
            Ok(list) => Ok(list
                .into_iter()
                .map(|s| {
                    self.seen(&s);
                    s.into()
                })
                .collect()),
            Err(e) => Err(e.into()),
        })
    }

    fn get_workspace(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<types::WorkspaceInfo>, WitError>> {
        self.call
            .allow("get-workspace", &[Export::Prepare, Export::Cleanup])?;
        let name = checked(&name)?;
        Ok(Ok(self.store.summary(&name).map(|s| {
            self.seen(&s);
            s.into()
        })))
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(chrono::Utc::now().timestamp())
    }

    fn free_space_bytes(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(crate::adapter::fs::free_space(self.store.layout().base()))
    }
}

impl git::Host for HostState {
    fn inspect(&mut self, name: String) -> wasmtime::Result<types::RepoState> {
        self.call.allow("git.inspect", &[Export::Prepare])?;
        let name = checked(&name)?;
        let s = crate::adapter::git::inspect(&self.store.layout().repo_dir(&name));
        Ok(s.into())
    }

    fn clone(
        &mut self,
        name: String,
        url: String,
        branch: Option<String>,
        options: git::FetchOptions,
    ) -> wasmtime::Result<Result<String, WitError>> {
        let name = self.mutable_target(&name, Some(&url))?;
        if self.call.no_clone {
            return Ok(Err(Error::refused(
                "a push's prefetch updates a workspace or leaves it; it never clones afresh \
                 (the next prepare will)",
            )
            .into()));
        }
        // Checked here too (a clone keeps nothing), so a bad list shows on
        // the first prepare rather than on the first reuse.
        let keep = match KeepIgnored::parse(&options.keep_ignored) {
            Ok(keep) => keep,
            Err(e) => return Ok(Err(Error::invalid_input(e).into())),
        };
        self.call.cloned = true;
        let spec = self.call.checkout(&url, branch.as_deref(), &options, &keep);
        let result = self.store.clone_workspace(&name, &spec, &self.call.remote);
        Ok(match result {
            Ok((head, size)) => {
                self.call.measured_size = Some(size);
                Ok(head)
            }
            Err(e) => {
                self.call.note_host_stop(&e);
                Err(e.into())
            }
        })
    }

    fn update(
        &mut self,
        name: String,
        url: String,
        branch: Option<String>,
        options: git::FetchOptions,
    ) -> wasmtime::Result<Result<String, WitError>> {
        let name = self.mutable_target(&name, Some(&url))?;
        let keep = match KeepIgnored::parse(&options.keep_ignored) {
            Ok(keep) => keep,
            Err(e) => return Ok(Err(Error::invalid_input(e).into())),
        };
        let spec = self.call.checkout(&url, branch.as_deref(), &options, &keep);
        let result = match self.store.update_workspace(&name, &spec, &self.call.remote) {
            Ok((head, size)) => {
                self.call.measured_size = Some(size);
                Ok(head)
            }
            Err(e) => {
                self.call.note_host_stop(&e);
                Err(e.into())
            }
        };
        self.call.updated |= result.is_ok();
        Ok(result)
    }

    fn clear_stale_locks(&mut self, name: String) -> wasmtime::Result<Result<u32, WitError>> {
        let name = self.mutable_target(&name, None)?;
        let repo = self.store.layout().repo_dir(&name);
        Ok(crate::adapter::git::clear_stale_locks(&repo)
            .map(|cleared| {
                tracing::info!(workspace = %name, locks = ?cleared, "cleared stale git locks");
                cleared.len() as u32
            })
            .map_err(|e| Error::from(e).into()))
    }
}

impl removal::Host for HostState {
    fn remove_workspace(&mut self, name: String) -> wasmtime::Result<types::RemovalReport> {
        self.call
            .allow("removal.remove-workspace", &[Export::Cleanup])?;
        let name = checked(&name)?;
        // Decided on a listing that may be stale: re-checked under the lock.
        let call = &self.call;
        let report = self
            .store
            .remove_workspace_unless(&name, |meta| call.stale_removal(name.as_str(), meta));
        let wit = types::RemovalReport::from(&report);
        self.call.removals.push(report);
        Ok(wit)
    }
}

impl settings::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.store.config().policy_settings.get(&key).cloned())
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .store
            .config()
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
