//! Components built against the frozen 0.1.0 and 0.2.0 contracts
//! (`wit/v0.1/`, `wit/v0.2/`).
//!
//! As in Zed's extension host, every contract version the host accepts has
//! its own bindings, and the older ones are served by the current code:
//! their import traits delegate to the current implementations (the shared
//! types are the same Rust types, through bindgen's `with`), and their
//! exports are reached through [`Instance`], which converts the records
//! that differ. What an older contract lacks gets today's behaviour then:
//! `authorize-push` (0.1) follows [`default_push_rule`], and
//! `keep-ignored` (0.1, 0.2) is empty, so an update keeps no ignored path.

use super::HostState;
use super::bindings::exports::fixsec::workspace::policy as current;
use super::bindings::fixsec::workspace::types;
use super::calls::PushQuestion;
use wasmtime::Store;

type WitResult<T> = wasmtime::Result<Result<T, types::Error>>;

/// An instantiated policy of any contract version the host loads.
pub(crate) enum Instance {
    /// `fixsec:workspace@0.3.x`.
    Current(super::bindings::WorkspacePolicy),
    /// `fixsec:workspace@0.2.x`.
    V0_2(super::bindings_v0_2::WorkspacePolicy),
    /// `fixsec:workspace@0.1.x`.
    V0_1(super::bindings_v0_1::WorkspacePolicy),
}

/// The push rule for policies without `authorize-push` (0.1.x), and the
/// default policy's unless its settings say more: any branch but the
/// remote's default branch, with or without force.
pub fn default_push_rule(question: &PushQuestion) -> crate::error::Result<()> {
    if question.default_branch.as_deref() == Some(question.branch.as_str()) {
        return Err(crate::error::Error::refused(format!(
            "{} is the remote's default branch; push a topic branch and open a pull request",
            question.branch
        )));
    }
    Ok(())
}

impl Instance {
    /// `workspace-name`.
    pub fn workspace_name(&self, s: &mut Store<HostState>, repo: &str) -> WitResult<String> {
        match self {
            Instance::Current(i) => i.fixsec_workspace_policy().call_workspace_name(s, repo),
            Instance::V0_2(i) => i.fixsec_workspace_policy().call_workspace_name(s, repo),
            Instance::V0_1(i) => i.fixsec_workspace_policy().call_workspace_name(s, repo),
        }
    }

    /// `prepare`.
    pub fn prepare(
        &self,
        s: &mut Store<HostState>,
        r: &current::PrepareRequest,
    ) -> WitResult<current::PrepareOutcome> {
        match self {
            Instance::Current(i) => i.fixsec_workspace_policy().call_prepare(s, r),
            Instance::V0_2(i) => {
                let r = v0_2::PrepareRequest {
                    repo_full_name: r.repo_full_name.clone(),
                    name: r.name.clone(),
                    clone_url: r.clone_url.clone(),
                    git_ref: r.git_ref.clone(),
                    depth: r.depth,
                };
                let out = i.fixsec_workspace_policy().call_prepare(s, &r)?;
                Ok(out.map(v0_2::outcome))
            }
            Instance::V0_1(i) => {
                let r = v0_1::PrepareRequest {
                    repo_full_name: r.repo_full_name.clone(),
                    name: r.name.clone(),
                    clone_url: r.clone_url.clone(),
                    branch: r.git_ref.clone(),
                    depth: r.depth,
                };
                let out = i.fixsec_workspace_policy().call_prepare(s, &r)?;
                Ok(out.map(v0_1::outcome))
            }
        }
    }

    /// `cleanup`.
    pub fn cleanup(
        &self,
        s: &mut Store<HostState>,
        r: current::CleanupRequest,
    ) -> WitResult<current::CleanupOutcome> {
        match self {
            Instance::Current(i) => i.fixsec_workspace_policy().call_cleanup(s, r),
            Instance::V0_2(i) => v0_2::cleanup(i, s, r),
            Instance::V0_1(i) => v0_1::cleanup(i, s, r),
        }
    }

    /// `assess-health`.
    pub fn assess_health(
        &self,
        s: &mut Store<HostState>,
        st: &current::HealthStats,
        t: current::Thresholds,
    ) -> wasmtime::Result<current::HealthReport> {
        match self {
            Instance::Current(i) => i.fixsec_workspace_policy().call_assess_health(s, st, t),
            Instance::V0_2(i) => v0_2::assess_health(i, s, st, t),
            Instance::V0_1(i) => v0_1::assess_health(i, s, st, t),
        }
    }

    /// `authorize-push`; [`default_push_rule`] for a 0.1.x policy.
    pub fn authorize_push(
        &self,
        s: &mut Store<HostState>,
        r: &current::PushRequest,
    ) -> WitResult<()> {
        match self {
            Instance::Current(i) => i.fixsec_workspace_policy().call_authorize_push(s, r),
            Instance::V0_2(i) => {
                let r = v0_2::PushRequest {
                    repo_full_name: r.repo_full_name.clone(),
                    name: r.name.clone(),
                    branch: r.branch.clone(),
                    force: r.force,
                    url: r.url.clone(),
                    default_branch: r.default_branch.clone(),
                };
                i.fixsec_workspace_policy().call_authorize_push(s, &r)
            }
            Instance::V0_1(_) => {
                Ok(default_push_rule(&PushQuestion::from(r)).map_err(types::Error::from))
            }
        }
    }
}

/// For an older contract (`$bindings`, its version's bindings module):
/// its exports' records that are unchanged since, converted (module
/// `$version`), and its imports, served by the current implementations.
/// Every older version shares these shapes; what differs is written out in
/// [`Instance`].
macro_rules! older_contract {
    ($version:ident, $bindings:ident) => {
        mod $version {
            use super::{WitResult, current};
            use crate::policy::HostState;
            use crate::policy::$bindings::WorkspacePolicy;
            pub(super) use crate::policy::$bindings::exports::fixsec::workspace::policy::*;
            use wasmtime::Store;

            pub(super) fn outcome(o: PrepareOutcome) -> current::PrepareOutcome {
                current::PrepareOutcome {
                    reused: o.reused,
                    head: o.head,
                    notes: o.notes,
                }
            }

            pub(super) fn cleanup(
                i: &WorkspacePolicy,
                s: &mut Store<HostState>,
                r: current::CleanupRequest,
            ) -> WitResult<current::CleanupOutcome> {
                let r = CleanupRequest {
                    max_age_hours: r.max_age_hours,
                };
                let out = i.fixsec_workspace_policy().call_cleanup(s, r)?;
                Ok(out.map(|o| current::CleanupOutcome {
                    kept: o.kept,
                    skipped: o
                        .skipped
                        .into_iter()
                        .map(|k| current::SkippedWorkspace {
                            name: k.name,
                            reason: k.reason,
                        })
                        .collect(),
                }))
            }

            pub(super) fn assess_health(
                i: &WorkspacePolicy,
                s: &mut Store<HostState>,
                st: &current::HealthStats,
                t: current::Thresholds,
            ) -> wasmtime::Result<current::HealthReport> {
                let st = HealthStats {
                    total_workspaces: st.total_workspaces,
                    total_size_bytes: st.total_size_bytes,
                    in_use: st.in_use,
                    largest: st.largest.clone(),
                    stale: st.stale,
                    without_metadata: st.without_metadata,
                    pending_deletions: st.pending_deletions,
                    free_space_bytes: st.free_space_bytes,
                };
                let t = Thresholds {
                    workspace_size_warning_mb: t.workspace_size_warning_mb,
                    total_size_warning_mb: t.total_size_warning_mb,
                    max_workspaces: t.max_workspaces,
                    max_age_hours: t.max_age_hours,
                };
                let r = i.fixsec_workspace_policy().call_assess_health(s, &st, t)?;
                Ok(current::HealthReport {
                    status: match r.status {
                        HealthStatus::Healthy => current::HealthStatus::Healthy,
                        HealthStatus::Warning => current::HealthStatus::Warning,
                        HealthStatus::Critical => current::HealthStatus::Critical,
                    },
                    warnings: r.warnings,
                    recommendations: r.recommendations,
                })
            }

            mod imports {
                use crate::policy::HostState;
                use crate::policy::bindings::fixsec::workspace as now;
                use crate::policy::bindings::fixsec::workspace::types;
                use crate::policy::$bindings::fixsec::workspace as then;

                type WitResult<T> = wasmtime::Result<Result<T, types::Error>>;

                impl then::workspace_fs::Host for HostState {
                    fn list_workspaces(&mut self) -> WitResult<Vec<types::WorkspaceInfo>> {
                        now::workspace_fs::Host::list_workspaces(self)
                    }
                    fn get_workspace(
                        &mut self,
                        name: String,
                    ) -> WitResult<Option<types::WorkspaceInfo>> {
                        now::workspace_fs::Host::get_workspace(self, name)
                    }
                    fn now(&mut self) -> wasmtime::Result<i64> {
                        now::workspace_fs::Host::now(self)
                    }
                    fn free_space_bytes(&mut self) -> wasmtime::Result<Option<u64>> {
                        now::workspace_fs::Host::free_space_bytes(self)
                    }
                }

                /// Before 0.3.0 an update kept no ignored path.
                fn options(o: then::git::FetchOptions) -> now::git::FetchOptions {
                    now::git::FetchOptions {
                        depth: o.depth,
                        keep_ignored: Vec::new(),
                    }
                }

                impl then::git::Host for HostState {
                    fn inspect(&mut self, name: String) -> wasmtime::Result<types::RepoState> {
                        now::git::Host::inspect(self, name)
                    }
                    fn clone(
                        &mut self,
                        name: String,
                        url: String,
                        git_ref: Option<String>,
                        o: then::git::FetchOptions,
                    ) -> WitResult<String> {
                        now::git::Host::clone(self, name, url, git_ref, options(o))
                    }
                    fn update(
                        &mut self,
                        name: String,
                        url: String,
                        git_ref: Option<String>,
                        o: then::git::FetchOptions,
                    ) -> WitResult<String> {
                        now::git::Host::update(self, name, url, git_ref, options(o))
                    }
                    fn clear_stale_locks(&mut self, name: String) -> WitResult<u32> {
                        now::git::Host::clear_stale_locks(self, name)
                    }
                }

                impl then::removal::Host for HostState {
                    fn remove_workspace(
                        &mut self,
                        name: String,
                    ) -> wasmtime::Result<types::RemovalReport> {
                        now::removal::Host::remove_workspace(self, name)
                    }
                }

                impl then::settings::Host for HostState {
                    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                        now::settings::Host::get(self, key)
                    }
                    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
                        now::settings::Host::all(self)
                    }
                }

                impl then::log::Host for HostState {
                    fn log(
                        &mut self,
                        level: then::log::Level,
                        message: String,
                    ) -> wasmtime::Result<()> {
                        use now::log::Level as L;
                        use then::log::Level as T;
                        let level = match level {
                            T::Trace => L::Trace,
                            T::Debug => L::Debug,
                            T::Info => L::Info,
                            T::Warn => L::Warn,
                            T::Error => L::Error,
                        };
                        now::log::Host::log(self, level, message)
                    }
                }
            }
        }
    };
}

older_contract!(v0_2, bindings_v0_2);
older_contract!(v0_1, bindings_v0_1);
