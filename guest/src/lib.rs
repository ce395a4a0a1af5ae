//! The default fixsec-workspace policy, compiled to a WebAssembly component.
//!
//! - naming: the original FixSec scheme (`facebook/react` ->
//!   `facebook_react_4f32b4cf`), extended safely to any input ([`naming`]);
//! - prepare: reuse a healthy clone of the same remote (clear stale locks,
//!   fetch, hard reset, clean but for the caches the settings keep,
//!   [`caches`]), re-clone anything else, and fall back to a fresh clone
//!   when an update fails for a reason a clone can cure ([`lifecycle`]);
//! - cleanup: remove workspaces unused for longer than the age, never one in
//!   use ([`cleanup`]);
//! - health: thresholds -> verdict ([`health`]);
//! - push: any branch but the default one, narrowed by settings ([`push`]).
//!
//! The decisions are plain Rust, tested natively; the glue below drives them
//! through the host's imports.

pub mod caches;
pub mod cleanup;
pub mod health;
pub mod lifecycle;
pub mod naming;
pub mod push;

/// Settings for the decisions' unit tests: `get` over fixed pairs.
#[cfg(test)]
mod test_settings {
    pub fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

/// Bindings generated from `wit/workspace.wit`.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "workspace-policy",
        path: "../wit",
        // Other policies (policies/quota-lru) reuse these bindings and this
        // crate's decisions, and export their own implementation with it.
        export_macro_name: "export_policy",
        pub_export_macro: true,
    });
}

use bindings::exports::fixsec::workspace::policy::{
    CleanupOutcome, CleanupRequest, Guest, HealthReport, HealthStats, PrepareOutcome,
    PrepareRequest, PushRequest, SkippedWorkspace, Thresholds,
};
use bindings::fixsec::workspace::git::{self, FetchOptions};
use bindings::fixsec::workspace::log::{Level, log};
use bindings::fixsec::workspace::types::{Error, ErrorKind};
use bindings::fixsec::workspace::{removal, settings, workspace_fs};

/// The default policy.
pub struct DefaultPolicy;

impl Guest for DefaultPolicy {
    fn workspace_name(repo_full_name: String) -> Result<String, Error> {
        naming::workspace_name(&repo_full_name).map_err(|e| Error {
            kind: ErrorKind::InvalidInput,
            message: e.to_string(),
        })
    }

    fn prepare(request: PrepareRequest) -> Result<PrepareOutcome, Error> {
        let name = &request.name;
        let options = FetchOptions {
            depth: request.depth,
            keep_ignored: caches::keep_for(&request.repo_full_name, settings::get),
        };
        let state = git::inspect(name);
        let mut notes = Vec::new();
        match lifecycle::plan(&state, &request.clone_url) {
            lifecycle::Plan::Reuse => {
                if !state.stale_locks.is_empty() {
                    let cleared = git::clear_stale_locks(name)?;
                    notes.push(format!(
                        "cleared {cleared} stale lock file(s): {}",
                        state.stale_locks.join(", ")
                    ));
                }
                match git::update(
                    name,
                    &request.clone_url,
                    request.git_ref.as_deref(),
                    &options,
                ) {
                    Ok(head) => {
                        return Ok(PrepareOutcome {
                            reused: true,
                            head,
                            notes,
                        });
                    }
                    // A fresh clone cures no mistake in the request or the
                    // settings (a keep_ignored path the host refuses, say).
                    Err(e) if e.kind == ErrorKind::InvalidInput => {
                        return Err(Error {
                            kind: e.kind,
                            message: format!(
                                "{} (check the policy setting {}; nothing was changed)",
                                e.message,
                                caches::SETTING
                            ),
                        });
                    }
                    Err(e) => {
                        log(
                            Level::Warn,
                            &format!("{name}: update failed, cloning afresh: {}", e.message),
                        );
                        notes.push(format!("update failed ({}), cloned afresh", e.message));
                    }
                }
            }
            lifecycle::Plan::Clone => {}
            lifecycle::Plan::Reclone(reason) => {
                log(Level::Info, &format!("{name}: re-cloning: {reason}"));
                notes.push(format!("re-cloned: {reason}"));
            }
        }
        let head = git::clone(
            name,
            &request.clone_url,
            request.git_ref.as_deref(),
            &options,
        )?;
        Ok(PrepareOutcome {
            reused: false,
            head,
            notes,
        })
    }

    fn cleanup(request: CleanupRequest) -> Result<CleanupOutcome, Error> {
        if !request.max_age_hours.is_finite() || request.max_age_hours < 0.0 {
            return Err(Error {
                kind: ErrorKind::InvalidInput,
                message: format!(
                    "max_age_hours must be a finite number >= 0, got {}",
                    request.max_age_hours
                ),
            });
        }
        let now = workspace_fs::now();
        let mut skipped = Vec::new();
        let mut kept = 0;
        for ws in workspace_fs::list_workspaces()? {
            match cleanup::verdict(&ws, now, request.max_age_hours) {
                cleanup::Verdict::Remove => {
                    // The host records the report and refuses workspaces in use.
                    let report = removal::remove_workspace(&ws.name);
                    if !report.removed && !report.skipped_in_use {
                        log(
                            Level::Warn,
                            &format!(
                                "{}: removal failed: {}",
                                ws.name,
                                report.error.unwrap_or_default()
                            ),
                        );
                    }
                }
                cleanup::Verdict::Keep => kept += 1,
                cleanup::Verdict::Skip(reason) => skipped.push(SkippedWorkspace {
                    name: ws.name,
                    reason,
                }),
            }
        }
        Ok(CleanupOutcome { skipped, kept })
    }

    fn assess_health(stats: HealthStats, thresholds: Thresholds) -> HealthReport {
        health::assess(&stats, &thresholds)
    }

    fn authorize_push(request: PushRequest) -> Result<(), Error> {
        let push = push::Push {
            branch: &request.branch,
            force: request.force,
            default_branch: request.default_branch.as_deref(),
        };
        push::authorize(push, settings::get).map_err(|message| Error {
            kind: ErrorKind::Refused,
            message,
        })
    }
}

// Exported only in the component (natively the WIT export names are not
// valid symbols), and only when this crate is the policy rather than a
// library of another one (feature `export`, on by default).
#[cfg(all(target_arch = "wasm32", feature = "export"))]
bindings::export_policy!(DefaultPolicy with_types_in bindings);
