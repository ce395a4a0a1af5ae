//! A second job on a leased workspace gets a copy of its own at once,
//! where the file system shares blocks (reflinks): made from the leased
//! checkout in well under a second, reset to the prepared commit and
//! cleaned, leased to the second job, and removed when that lease is
//! released. Elsewhere the second job waits, as before.

use super::WorkspaceManager;
use crate::adapter::{git, reflink};
use crate::error::Result;
use crate::locks::WorkspaceGuard;
use crate::metadata::{METADATA_VERSION, WorkspaceMetadata};
use crate::model::{LeaseInfo, PrepareOutcome, PrepareRequest};
use crate::names::WorkspaceName;
use chrono::Utc;
use std::time::Instant;

/// Copies of one workspace at most (`<name>--p1` .. `--p8`).
const MAX_COPIES: u32 = 8;

impl WorkspaceManager {
    /// A copy of `name` for this request, when another job holds `name`'s
    /// lease, the request asked for one, the leased checkout was prepared
    /// by the same principal (`principal`) from the same URL, and the file
    /// system can share blocks. None: prepare as without `parallel` (wait).
    pub(super) fn parallel_copy(
        &self,
        name: &WorkspaceName,
        request: &PrepareRequest,
        clone_url: &str,
        principal: &str,
        started: Instant,
    ) -> Result<Option<PrepareOutcome>> {
        let store = &self.store;
        if !request.parallel
            || request.lease_seconds.is_none()
            || !reflink::SUPPORTED
            || git::git_cli().is_none()
            || store.locks().lease_holder(name).is_none()
        {
            return Ok(None);
        }
        let source = store.layout().repo_dir(name);
        let Some(meta) = WorkspaceMetadata::read(&store.layout().metadata_path(name)) else {
            return Ok(None);
        };
        // Another principal's checkout (its objects, branches, reflogs)
        // is never copied to this caller: it waits, then the policy
        // re-clones.
        if meta.clone_url != clone_url
            || git::prepared_by(&source).as_deref() != Some(principal)
            || meta.copy_of.is_some()
        {
            return Ok(None);
        }
        let Some((copy, _guard)) = self.free_copy_slot(name)? else {
            return Ok(None);
        };
        let staging = store
            .layout()
            .unique_in(store.layout().staging_dir(), &copy);
        std::fs::create_dir_all(store.layout().staging_dir())
            .map_err(|e| crate::Error::io("creating", store.layout().staging_dir(), e))?;
        if let Err(e) = reflink::reflink_tree(&source, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            if e.kind() != std::io::ErrorKind::Unsupported {
                tracing::warn!(workspace = %name, error = %e, "could not copy the leased workspace; waiting instead");
            }
            return Ok(None);
        }
        if let Err(e) = git::reset_copy(&staging, &meta.head, meta.branch.as_deref()) {
            let _ = std::fs::remove_dir_all(&staging);
            tracing::warn!(workspace = %name, error = %e, "could not reset the copy; waiting instead");
            return Ok(None);
        }
        let workspace = store.layout().workspace_dir(&copy);
        std::fs::create_dir_all(&workspace)
            .map_err(|e| crate::Error::io("creating", &workspace, e))?;
        let repo_dir = store.layout().repo_dir(&copy);
        std::fs::rename(&staging, &repo_dir)
            .map_err(|e| crate::Error::io("moving the copy into place at", &repo_dir, e))?;
        let now = Utc::now();
        WorkspaceMetadata {
            version: METADATA_VERSION,
            last_prepared: now,
            last_used: now,
            created: now,
            size_bytes: git::checkout_size(&repo_dir).unwrap_or(meta.size_bytes),
            copy_of: Some(name.to_string()),
            ..meta.clone()
        }
        .write(&store.layout().metadata_path(&copy))?;
        let ttl = std::time::Duration::from_secs(request.lease_seconds.unwrap_or(1));
        let holder = request
            .holder
            .as_deref()
            .unwrap_or("another caller's prepare");
        let (id, expires_at) = store.locks().add_lease(&copy, holder, Some(ttl));
        store.snapshots().invalidate();
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(workspace = %copy, of = %name, duration_ms, "a copy for a second job, sharing blocks");
        Ok(Some(PrepareOutcome {
            name: copy.to_string(),
            path: repo_dir,
            reused: true,
            head: meta.head,
            duration_ms,
            notes: vec![format!(
                "{name} is leased by another job: this is a copy of its own ({copy}), sharing \
                 its blocks, removed when this lease is released"
            )],
            lease: Some(LeaseInfo {
                id,
                expires_at: expires_at.unwrap_or(now),
            }),
        }))
    }

    /// The first copy name of `name` that is free, locked; a left-over
    /// copy there (no lease) is removed first.
    fn free_copy_slot(
        &self,
        name: &WorkspaceName,
    ) -> Result<Option<(WorkspaceName, WorkspaceGuard)>> {
        for k in 1..=MAX_COPIES {
            let Ok(copy) = WorkspaceName::parse(&format!("{name}--p{k}")) else {
                return Ok(None);
            };
            let Some(guard) = self.store.locks().try_lock_idle(&copy)? else {
                continue;
            };
            let dir = self.store.layout().workspace_dir(&copy);
            if std::fs::symlink_metadata(&dir).is_ok() {
                let report = self.store.remove_locked(&copy, guard, None, None);
                if !report.removed {
                    continue;
                }
                match self.store.locks().try_lock_idle(&copy)? {
                    Some(guard) => return Ok(Some((copy, guard))),
                    None => continue,
                }
            }
            return Ok(Some((copy, guard)));
        }
        Ok(None)
    }

    /// A released lease's copy goes with it (in the background).
    pub(super) fn remove_released_copy(&self, name: &WorkspaceName) {
        let meta = WorkspaceMetadata::read(&self.store.layout().metadata_path(name));
        if meta.and_then(|m| m.copy_of).is_some()
            && let Err(e) = self.remove_in_background(name.as_str())
        {
            tracing::warn!(workspace = %name, error = %e, "the copy stays for the next cleanup");
        }
    }
}
