//! Prefetch: a push upstream brings an idle workspace of the pushed
//! branch to the new commit at once, through the policy's `prepare` as a
//! job's prepare would, so the next job's prepare finds it there and
//! fetches (nearly) nothing.
//!
//! Only what a job's prepare could have done anyway, and only when nobody
//! is affected: the workspace must exist on this node, be prepared from
//! the same URL, on the pushed branch, with the same credential (the
//! checkout is per principal), not be sparse (its set is the next
//! caller's to give), and not be in use (a prefetch never waits for a
//! lease or a lock), all checked under the workspace's lock. It does
//! not count as use: the cleanup's age still counts from the last job's
//! prepare.

use super::WorkspaceManager;
use super::prepare::Caller;
use crate::adapter::git;
use crate::error::{ErrorKind, Result};
use crate::metadata::WorkspaceMetadata;
use crate::model::{PrefetchOutcome, PrefetchRequest, PrepareRequest};
use std::time::Instant;

impl WorkspaceManager {
    /// Check a prefetch's repository name and URL without acting (a
    /// webhook answers at once and prefetches in the background).
    pub fn check_prefetch(&self, repo_full_name: &str, clone_url: &str) -> Result<()> {
        self.workspace_name(repo_full_name)?;
        self.checked_url(clone_url).map(drop)
    }

    /// Bring the workspace of `request.repo_full_name` to the pushed
    /// commit when it is idle and this push is its business (see the
    /// module docs); otherwise say why it was left. An error only for a
    /// bad request (name, URL) or a failure of the update itself.
    pub fn prefetch(&self, request: &PrefetchRequest) -> Result<PrefetchOutcome> {
        let started = Instant::now();
        let name = self.workspace_name(&request.repo_full_name)?;
        let url = self.checked_url(&request.clone_url)?;
        let left = |why: String| PrefetchOutcome {
            name: name.clone(),
            updated: false,
            head: None,
            skipped: Some(why),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let pushed = request
            .git_ref
            .as_deref()
            .map(|r| r.strip_prefix("refs/heads/").unwrap_or(r));
        let store = &self.store;
        let parsed = crate::names::WorkspaceName::parse(&name)
            .map_err(|e| crate::Error::policy(format!("unsafe workspace name {name:?}: {e}")))?;
        let Some(meta) = WorkspaceMetadata::read(&store.layout().metadata_path(&parsed)) else {
            return Ok(left("no workspace of it on this node".into()));
        };
        if !git::same_remote(&meta.clone_url, &url.public) {
            return Ok(left(format!(
                "the workspace holds {}, not {}",
                meta.clone_url, url.public
            )));
        }
        if let (Some(pushed), Some(branch)) = (pushed, meta.branch.as_deref())
            && pushed != branch
        {
            return Ok(left(format!(
                "the workspace is on {branch}; the push was to {pushed}"
            )));
        }
        // Prepared as the workspace was: its own spelling of the URL (so
        // its mirror is the same; the push may say `.git` where it did
        // not), its ref, depth, network, extras and filter; only the
        // credential is the push's.
        let Some(clone_url) = with_credential(&meta.clone_url, &url) else {
            return Ok(left(format!(
                "{} cannot carry the push's credential",
                meta.clone_url
            )));
        };
        let mut prepare = PrepareRequest::new(&request.repo_full_name, &clone_url);
        prepare.git_ref = meta.branch.clone();
        prepare.depth = meta.depth;
        prepare.filter = git::shape_of(&store.layout().repo_dir(&parsed)).filter;
        prepare.network = meta.prepared_with.network.clone();
        prepare.submodules = meta.prepared_with.submodules;
        prepare.lfs = meta.prepared_with.lfs;
        match self.prepare_inner(&prepare, None, Caller::Prefetch) {
            Ok(outcome) => {
                tracing::info!(workspace = %name, head = %outcome.head, "prefetched a push");
                Ok(PrefetchOutcome {
                    name,
                    updated: true,
                    head: Some(outcome.head),
                    skipped: None,
                    duration_ms: started.elapsed().as_millis() as u64,
                })
            }
            // What stops a prefetch is checked under the workspace's lock
            // ([`WorkspaceManager::prefetch_blocker`]), and says why.
            Err(e) if e.kind() == ErrorKind::InUse => Ok(left(e.message().to_string())),
            Err(e) if e.kind() == ErrorKind::Busy => Ok(left(format!("in use ({})", e.message()))),
            Err(e) => Err(e),
        }
    }
}

impl WorkspaceManager {
    /// Why a prefetch must leave `name` as it is, checked under its lock:
    /// leased, prepared with another credential than `url`'s, sparse (its
    /// set is the next caller's to give), or no longer on `branch`.
    pub(super) fn prefetch_blocker(
        &self,
        name: &crate::names::WorkspaceName,
        url: &crate::clone_url::CloneUrl,
        branch: &Option<String>,
    ) -> Option<String> {
        let store = &self.store;
        if let Some(holder) = store.locks().lease_holder(name) {
            return Some(format!("in use ({holder})"));
        }
        let repo_dir = store.layout().repo_dir(name);
        let principal = self.remote_for(url, None).principal_digest();
        if git::prepared_by(&repo_dir).as_deref() != Some(principal.as_str()) {
            return Some("the workspace was prepared with another credential".into());
        }
        if git::shape_of(&repo_dir).sparse {
            return Some("a sparse workspace's set is the next prepare's to give".into());
        }
        let meta = WorkspaceMetadata::read(&store.layout().metadata_path(name));
        if meta.is_none_or(|m| &m.branch != branch) {
            return Some("the workspace changed branch before the prefetch took it".into());
        }
        None
    }
}

/// `public` (a workspace's recorded URL) with the credential `url` carries;
/// `public` itself when it carries none. None when `public` cannot hold
/// one (an scp-like ssh address).
fn with_credential(public: &str, url: &crate::clone_url::CloneUrl) -> Option<String> {
    let Some(credentials) = &url.credentials else {
        return Some(public.to_string());
    };
    let mut parsed = url::Url::parse(public).ok()?;
    parsed.set_username(&credentials.username).ok()?;
    parsed.set_password(Some(&credentials.secret)).ok()?;
    Some(parsed.into())
}
