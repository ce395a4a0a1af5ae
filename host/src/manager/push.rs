//! Push: a workspace's branch to a remote with the caller's credential,
//! once the policy allows it.

use super::WorkspaceManager;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::WorkspaceMetadata;
use crate::metrics::Operation;
use crate::model::{PushOutcome, PushRequest};
use crate::names::WorkspaceName;
use crate::policy::PushQuestion;
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
    ///   the workspace's content (what a credential fetched, and a job's
    ///   commits) there: it goes only with the credential that last
    ///   prepared the workspace ([`Error::Refused`] otherwise), so a
    ///   user's `repo_full_name` cannot ship another tenant's checkout or
    ///   undisclosed work to a repository of theirs.
    /// - A push the remote refuses is [`Error::Rejected`]; one the policy
    ///   refuses is [`Error::Refused`].
    pub fn push(&self, name: &str, request: &PushRequest) -> Result<PushOutcome> {
        let timer = self.store.metrics().start(Operation::Push, Some(name));
        self.counted_as(&timer, self.push_inner(name, request))
    }

    /// `Ok` when `push_url` is the repository the checkout at `repo_dir`
    /// was cloned from (however spelt), or when `remote` (the push's
    /// credential) is the principal that last prepared the checkout: only
    /// then may its content (a job's commits on top of what that
    /// credential fetched) go to another repository.
    fn check_push_carries_own_work(
        &self,
        name: &WorkspaceName,
        repo_dir: &std::path::Path,
        push_url: &str,
        remote: &crate::adapter::git::Remote,
    ) -> Result<()> {
        use crate::adapter::git;
        let origin = git::inspect(repo_dir).remote_url.unwrap_or_default();
        if git::same_remote(&origin, push_url) {
            return Ok(());
        }
        if git::check_prepared_by(repo_dir, remote, false).is_ok() {
            return Ok(());
        }
        Err(Error::refused(format!(
            "{name} was cloned from {origin} and last prepared with another credential than this \
             push's; its content goes to another repository ({push_url}) only with the \
             credential that prepared it: prepare it with this credential first, or push to \
             {origin}"
        )))
    }

    fn push_inner(&self, name: &str, request: &PushRequest) -> Result<PushOutcome> {
        let started = Instant::now();
        let name = WorkspaceName::parse(name)?;
        let branch = &request.branch;
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}"))
            || branch.starts_with('-')
        {
            return Err(Error::invalid_input(format!(
                "{branch:?} is not a valid branch name"
            )));
        }
        let url = self.checked_url(&request.url)?;
        let store = &self.store;
        // Locked before anything about the workspace is read: a prepare
        // with another URL cannot change it between the checks and the push.
        let _guard = store.locks().lock(&name, store.config().lock_wait)?;
        let Some(meta) = WorkspaceMetadata::read(&store.layout().metadata_path(&name)) else {
            return Err(Error::not_found(format!(
                "workspace {name} does not exist; prepare it first"
            )));
        };
        let remote = self.remote_for(&url, None);
        self.check_push_carries_own_work(
            &name,
            &store.layout().repo_dir(&name),
            &url.public,
            &remote,
        )?;
        // The target's own default branch, as it answers this credential
        // now: a refspec or a job could have moved `origin/HEAD` here.
        let default_branch = store.push_target_default_branch(&name, &url.public, &remote)?;
        let question = PushQuestion {
            repo_full_name: meta.repo_full_name,
            name: name.to_string(),
            branch: branch.clone(),
            force: request.force,
            url: url.public.clone(),
            default_branch,
        };
        self.policy()
            .call_authorize_push(store.clone(), &question)
            .map_err(|e| match e.kind() {
                // A policy's "no" names the rule; keep it the caller's to read.
                ErrorKind::Refused => {
                    Error::refused(format!("the policy refuses the push: {}", e.message()))
                }
                _ => e,
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
