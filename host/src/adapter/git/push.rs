//! Push a workspace's branch with the caller's credential.
//!
//! The credential never touches the disk: the push goes through an
//! anonymous remote (nothing written to `.git/config`) and libgit2 gets
//! the credential from the callback, for the URL's own scheme, host and
//! port only, with redirects refused. libgit2 runs no hooks, and the
//! workspace's own config is not read (code run in the workspace could
//! have added `url.<internal>.insteadOf=<public>`), so nothing in the
//! workspace (which a scanned repository's content may have shaped)
//! decides where the push goes.

use super::error::GitError;
use super::remote::{Remote, fetch_options, push_options};
use git2::{AutotagOption, ErrorCode, Repository};
use std::cell::RefCell;
use std::path::Path;

/// Push the local branch `branch` of `repo_dir` to the branch of the same
/// name at `url` (clean, no credentials); `force` allows a push that is
/// not a fast-forward. Returns the commit pushed.
pub fn push(
    repo_dir: &Path,
    url: &str,
    branch: &str,
    force: bool,
    remote: &Remote,
) -> Result<String, GitError> {
    let repo = open_without_config(repo_dir)?;
    let local = format!("refs/heads/{branch}");
    let commit = repo
        .find_reference(&local)
        .and_then(|r| r.peel_to_commit())
        .map_err(|_| {
            GitError::not_found(format!(
                "branch {branch} does not exist in the workspace; create it and commit before pushing"
            ))
        })?
        .id();
    let action = format!("pushing {branch} to {url}");
    GitError::check_start(remote, &action)?;
    let mut target = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::new("preparing the push", e))?;
    let rejected = RefCell::new(Vec::new());
    let mut options = push_options(remote, &rejected);
    let spec = format!("{}{local}:{local}", if force { "+" } else { "" });
    let pushed = target.push(&[spec.as_str()], Some(&mut options));
    drop(options);
    if let Err(e) = pushed {
        return Err(match e.code() {
            // libgit2 checks fast-forwards itself before sending anything.
            ErrorCode::NotFastForward => GitError::rejected(format!(
                "{action}: not a fast-forward of the remote branch; fetch and rebase, or push \
                 with force if the policy allows it"
            )),
            ErrorCode::Auth => GitError::credential_refused(&action, "write", e, remote),
            _ => GitError::transfer(&action, e, remote, false),
        });
    }
    let rejected = rejected.into_inner();
    if !rejected.is_empty() {
        return Err(GitError::rejected(format!(
            "{action}: the remote rejected {} (a protected branch or a server hook); nothing \
             changed there",
            rejected.join("; ")
        )));
    }
    Ok(commit.to_string())
}

/// The repository at `repo_dir` with an empty configuration in place of
/// its own (and of the user's and the system's): nothing a job wrote into
/// `.git/config` (`insteadOf`, `pushInsteadOf`, proxies) applies.
fn open_without_config(repo_dir: &Path) -> Result<Repository, GitError> {
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening repository", e))?;
    let empty = git2::Config::new().map_err(|e| GitError::new("preparing the push", e))?;
    repo.set_config(&empty)
        .map_err(|e| GitError::new("preparing the push", e))?;
    Ok(repo)
}

/// Connect to `url` as `remote` and read what it advertises, fetching
/// nothing (a pattern that matches no reference), through `repo` with no
/// configuration of its own.
fn read_advertisement<'r>(
    repo: &'r Repository,
    url: &str,
    remote: &Remote,
) -> Result<git2::Remote<'r>, git2::Error> {
    let mut target = repo.remote_anonymous(url)?;
    let mut fo = fetch_options(remote, None);
    fo.download_tags(AutotagOption::None);
    target.fetch(
        &["refs/fixsec-none/*:refs/fixsec-none/*"],
        Some(&mut fo),
        None,
    )?;
    Ok(target)
}

/// The default branch `url` advertises now to `remote`'s credential (what
/// the push rule protects), read from the push target itself: never from
/// the workspace, whose `origin/HEAD` a prepare or a job could move.
/// `Ok(None)` when the remote names none (an empty repository).
pub fn default_branch_at(
    repo_dir: &Path,
    url: &str,
    remote: &Remote,
) -> Result<Option<String>, GitError> {
    let repo = open_without_config(repo_dir)?;
    let action = format!("reading the default branch of {url}");
    GitError::check_start(remote, &action)?;
    let target = read_advertisement(&repo, url, remote).map_err(|e| match e.code() {
        ErrorCode::Auth => GitError::credential_refused(&action, "read and write", e, remote),
        _ => GitError::transfer(&action, e, remote, false),
    })?;
    let branch = target
        .default_branch()
        .ok()
        .and_then(|b| b.as_str().ok().map(str::to_string))
        .and_then(|b| b.strip_prefix("refs/heads/").map(str::to_string));
    Ok(branch)
}
