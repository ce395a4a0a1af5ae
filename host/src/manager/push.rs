//! Push: a workspace's branch to a remote with the caller's credential,
//! once the policy allows it.

use super::WorkspaceManager;
use crate::error::{Error, Result};
use crate::metadata::WorkspaceMetadata;
use crate::metrics::Operation;
use crate::model::{PushOutcome, PushRequest};
use crate::names::WorkspaceName;
use crate::policy::bindings::exports::fixsec::workspace::policy as wit;
use crate::policy::{CallContext, Export};
use std::time::Instant;

impl WorkspaceManager {
    /// Push `request.branch` of workspace `name` to `request.url`.
    ///
    /// - The URL passes the same checks as a clone URL (allow-list,
    ///   network rules); its credential goes to libgit2 through the
    ///   callback only, for that URL's host only, never to disk or a log.
    /// - The policy decides whether the branch may be pushed, and with
    ///   force (`authorize-push`; a 0.1.x policy follows
    ///   [`default_push_rule`](crate::policy::default_push_rule)).
    /// - Takes the workspace's lock, so it never runs beside a prepare of
    ///   the same workspace; a lease does not stop it (a push changes no
    ///   file, and the lease holder is the one pushing).
    /// - A push to another repository than the workspace's own carries
    ///   the workspace's content (cloned with someone's credential) there:
    ///   it goes only if the push's credential may read the workspace's
    ///   clone URL too ([`Error::Refused`] otherwise), so a user's
    ///   `repo_full_name` cannot ship another tenant's checkout to a
    ///   repository of theirs.
    /// - A push the remote refuses is [`Error::Rejected`]; one the policy
    ///   refuses is [`Error::Refused`].
    pub fn push(&self, name: &str, request: &PushRequest) -> Result<PushOutcome> {
        let timer = self.store.metrics.start(Operation::Push, Some(name));
        self.counted_as(&timer, self.push_inner(name, request))
    }

    /// `Ok` when `push_url` is the workspace's own repository (`clone_url`,
    /// however spelt), or when `remote` (the push's credential) may read
    /// `clone_url`.
    fn check_source_readable(
        &self,
        name: &WorkspaceName,
        clone_url: &str,
        push_url: &str,
        remote: &crate::adapter::git::Remote,
    ) -> Result<()> {
        if crate::adapter::git::same_remote(clone_url, push_url) {
            return Ok(());
        }
        let source = self.checked_url(clone_url)?;
        match self.store.check_readable(name, &source.public, remote) {
            Err(Error::NotFound(why)) => Err(Error::Refused(format!(
                "the push would carry {name}'s content, cloned from {clone_url}, to {push_url}, \
                 but this credential cannot read {clone_url} ({why}); push with a credential \
                 that reads both, or to {clone_url} itself"
            ))),
            other => other,
        }
    }

    fn push_inner(&self, name: &str, request: &PushRequest) -> Result<PushOutcome> {
        let started = Instant::now();
        let name = WorkspaceName::parse(name)?;
        let branch = &request.branch;
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}"))
            || branch.starts_with('-')
        {
            return Err(Error::InvalidInput(format!(
                "{branch:?} is not a valid branch name"
            )));
        }
        let url = self.checked_url(&request.url)?;
        let store = &self.store;
        let Some(meta) = WorkspaceMetadata::read(&store.layout.metadata_path(&name)) else {
            return Err(Error::NotFound(format!(
                "workspace {name} does not exist; prepare it first"
            )));
        };
        let _guard = store.locks.lock(&name, store.config.lock_wait)?;
        let remote = self.remote_for(&url, None);
        self.check_source_readable(&name, &meta.clone_url, &url.public, &remote)?;
        // The target's own default branch, as it answers this credential
        // now: a refspec or a job could have moved `origin/HEAD` here.
        let default_branch = store.push_target_default_branch(&name, &url.public, &remote)?;
        let policy = self.policy();
        let decision_request = wit::PushRequest {
            repo_full_name: meta.repo_full_name,
            name: name.to_string(),
            branch: branch.clone(),
            force: request.force,
            url: url.public.clone(),
            default_branch,
        };
        let (decision, _) = policy.call(
            store.clone(),
            CallContext::for_export(Export::AuthorizePush),
            "authorize-push",
            |p, s| p.authorize_push(s, &decision_request),
        )?;
        decision.map_err(|e| match Error::from(e) {
            // A policy's "no" names the rule; keep it the caller's to read.
            Error::Refused(m) => Error::Refused(format!("the policy refuses the push: {m}")),
            other => other,
        })?;
        let commit = store.push_workspace(&name, &url.public, branch, request.force, &remote)?;
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(workspace = %name, branch, url = %url.public, commit, force = request.force, duration_ms, "branch pushed");
        Ok(PushOutcome {
            name: name.to_string(),
            branch: branch.clone(),
            commit,
            url: url.public,
            forced: request.force,
            duration_ms,
        })
    }
}
