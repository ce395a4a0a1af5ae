//! Checkouts: fresh clones into `.staging/` swapped in whole, updates in
//! place, pushes, each behind the git queue and the transfer guard.

use super::Store;
use super::trash::staging_owner;
use crate::adapter::fs::dir_size;
use crate::adapter::git::{self, Extras, GitRef, Remote};
use crate::error::{Error, Result};
use crate::metrics::Operation;
use crate::names::WorkspaceName;

impl Store {
    /// Clone `git_ref` (none: the default branch) into a staging folder,
    /// borrowing objects from `network`'s mirror when mirrors apply
    /// (`mirrors.rs`), then swap it in as `repo/`. Returns the
    /// head commit and the checkout's size. Waits for a slot in the git
    /// queue; a clone over the size limit or the free-space floor is
    /// stopped and leaves nothing behind. Requires `name`'s lock.
    #[allow(clippy::too_many_arguments)] // one call site: the policy's `clone` import
    pub fn clone_workspace(
        &self,
        name: &WorkspaceName,
        network: Option<&str>,
        url: &str,
        git_ref: Option<&str>,
        depth: Option<u32>,
        remote: &Remote,
        extras: Extras,
    ) -> Result<(String, u64)> {
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        let timer = self.metrics.start(Operation::Clone, Some(name.as_str()));
        let staging = self.layout.unique_in(self.layout.staging_dir(), name);
        let git_ref = parse_ref(git_ref)?;
        let cloned = match network.filter(|_| self.uses_mirror(depth, remote)) {
            Some(network) => {
                self.clone_through_mirror(network, url, git_ref.as_ref(), remote, &staging)
            }
            None => git::clone(url, git_ref.as_ref(), depth, remote, &staging).map_err(Error::from),
        }
        .and_then(|head| {
            self.add_extras(&staging, url, remote, extras)
                .map(|()| head)
        });
        let head = match cloned {
            Ok(head) => head,
            Err(e) => {
                timer.fail(&e);
                self.remover.remove_tree(&staging);
                return Err(e);
            }
        };
        // The pack is bounded as it arrives; the checkout can be larger.
        if let Some(max) = self.config.max_workspace_bytes {
            let size = git::checkout_size(&staging).unwrap_or_else(|| dir_size(&staging));
            if size > max {
                self.remover.remove_tree(&staging);
                return Err(Error::InsufficientStorage(format!(
                    "the clone of {url} takes {} MB, over the {} MB limit \
                     (WORKSPACE_MAX_WORKSPACE_MB); nothing was kept",
                    size >> 20,
                    max >> 20
                )));
            }
        }
        let repo = self.layout.repo_dir(name);
        std::fs::create_dir_all(self.layout.workspace_dir(name))
            .map_err(|e| Error::io("creating workspace", self.layout.workspace_dir(name), e))?;
        if std::fs::symlink_metadata(&repo).is_ok() {
            let old = self.layout.unique_in(self.layout.trash_dir(), name);
            let moved = self.remover.rename(&repo, &old).is_ok();
            let outcome = self.remover.remove_tree(if moved { &old } else { &repo });
            if !moved && !outcome.removed {
                self.remover.remove_tree(&staging);
                return Err(Error::filesystem(format!(
                    "cannot replace {}: {}; close the program holding it and prepare again",
                    repo.display(),
                    outcome.error.unwrap_or_default()
                )));
            }
        }
        self.remover
            .rename(&staging, &repo)
            .map_err(|(_, e)| Error::io("moving the new clone into place at", &repo, e))?;
        let size = git::checkout_size(&repo).unwrap_or_else(|| dir_size(&repo));
        Ok((head, size))
    }

    /// Fetch `git_ref` (none: the default branch), check it out,
    /// hard-reset and clean `repo/` in place, then add what `extras`
    /// asks. Requires `name`'s lock.
    pub fn update_workspace(
        &self,
        name: &WorkspaceName,
        url: &str,
        git_ref: Option<&str>,
        depth: Option<u32>,
        remote: &Remote,
        extras: Extras,
    ) -> Result<(String, u64)> {
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        let timer = self.metrics.start(Operation::Update, Some(name.as_str()));
        let git_ref = parse_ref(git_ref)?;
        let repo = self.layout.repo_dir(name);
        let updated = git::update(&repo, url, git_ref.as_ref(), depth, remote)
            .map_err(Error::from)
            .and_then(|u| self.add_extras(&repo, url, remote, extras).map(|()| u));
        if let Err(e) = &updated {
            timer.fail(e);
        }
        updated
    }

    /// Submodules and LFS objects into the checkout at `repo`, as asked.
    fn add_extras(
        &self,
        repo: &std::path::Path,
        url: &str,
        remote: &Remote,
        extras: Extras,
    ) -> Result<()> {
        if extras.submodules {
            let count = git::update_submodules(repo, url, remote, &|raw: &str| {
                self.checked_submodule_url(raw)
            })?;
            tracing::info!(repo = %repo.display(), count, "submodules checked out");
        }
        if extras.lfs {
            git::lfs_pull(repo, url, remote)?;
        }
        Ok(())
    }

    /// A submodule's URL (already resolved), held to the rules a clone URL
    /// is: the repository's content chose it, not the caller. Any
    /// credential in it is dropped.
    fn checked_submodule_url(&self, raw: &str) -> std::result::Result<String, String> {
        let config = &self.config;
        let url = crate::clone_url::CloneUrl::parse(raw, config.allow_local_urls)
            .and_then(|u| u.check_host(&config.allowed_hosts).map(|()| u))
            .and_then(|u| u.check_addresses(config.allow_private_networks).map(|()| u))
            .map_err(|e| format!("refused: {}", e.detail()))?;
        Ok(url.public)
    }

    /// Push `branch` of `name` to `url` with `remote`'s credential, behind
    /// the git queue. Requires `name`'s lock.
    pub fn push_workspace(
        &self,
        name: &WorkspaceName,
        url: &str,
        branch: &str,
        force: bool,
        remote: &Remote,
    ) -> Result<String> {
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        git::push(&self.layout.repo_dir(name), url, branch, force, remote).map_err(Error::from)
    }

    /// Delete staging folders of `name` (and only of `name`) left by a
    /// crashed prepare. Requires `name`'s lock.
    pub(crate) fn clear_staging(&self, name: &WorkspaceName) {
        for path in std::fs::read_dir(self.layout.staging_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| staging_owner(p).as_ref() == Some(name))
        {
            self.remover.remove_tree(&path);
        }
    }
}

/// A ref as the caller or the policy wrote it, checked.
pub(crate) fn parse_ref(git_ref: Option<&str>) -> Result<Option<GitRef>> {
    git_ref
        .map(GitRef::parse)
        .transpose()
        .map_err(|e| Error::InvalidInput(format!("{e}; see `ref` in the API documentation")))
}

impl From<git::GitError> for Error {
    fn from(e: git::GitError) -> Self {
        match e.stopped {
            Some(git::Stop::Cancelled) => Error::Busy(e.message),
            Some(git::Stop::Storage(_)) => Error::InsufficientStorage(e.message),
            None if e.not_found => Error::NotFound(e.message),
            None if e.rejected => Error::Rejected(e.message),
            None => Error::Git(e.message),
        }
    }
}
