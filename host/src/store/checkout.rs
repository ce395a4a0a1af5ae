//! Checkouts: fresh clones into `.staging/` swapped in whole, updates in
//! place, pushes, each behind the git queue and the transfer guard.

use super::Store;
use super::trash::staging_owner;
use crate::adapter::fs::dir_size;
use crate::adapter::git::{self, Extras, GitRef, Remote};
use crate::error::{Error, Result};
use crate::metrics::Operation;
use crate::names::WorkspaceName;

/// What a checkout of a workspace holds: which repository, at which ref,
/// how much history, and what comes with it. The policy's `clone` and
/// `update` imports name the first three; the request, the rest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckoutSpec<'a> {
    /// The clone URL, without credentials.
    pub url: &'a str,
    /// A branch, tag, commit or pull request's ref, unparsed (none: the
    /// remote's default branch).
    pub git_ref: Option<&'a str>,
    /// Commits of history to fetch (none: all).
    pub depth: Option<u32>,
    /// The repository network (fork family) whose mirror a clone may
    /// borrow objects from (none: the URL's own).
    pub network: Option<&'a str>,
    /// Submodules and LFS objects to add.
    pub extras: Extras,
    /// A partial clone's filter (checked: `git::parse_filter`).
    pub filter: Option<&'a str>,
    /// The directories of a sparse workspace (checked: `git::parse_sparse`).
    pub sparse: Option<&'a [String]>,
    /// The ignored paths an update's clean leaves (the policy's
    /// `keep-ignored`, checked).
    pub keep: &'a git::KeepIgnored,
}

impl CheckoutSpec<'_> {
    /// A partial clone or a sparse workspace: git's command line does it.
    fn shaped(&self) -> bool {
        self.filter.is_some() || self.sparse.is_some()
    }
}

impl Store {
    /// Clone `spec` into a staging folder, borrowing objects from its
    /// network's mirror when mirrors apply (`mirrors.rs`), then swap it in
    /// as `repo/`. Returns the head commit and the checkout's size. Waits
    /// for a slot in the git queue; a clone over the size limit or the
    /// free-space floor is stopped and leaves nothing behind. Requires
    /// `name`'s lock.
    pub fn clone_workspace(
        &self,
        name: &WorkspaceName,
        spec: &CheckoutSpec<'_>,
        remote: &Remote,
    ) -> Result<(String, u64)> {
        let CheckoutSpec { url, depth, .. } = *spec;
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        let timer = self.metrics.start(Operation::Clone, Some(name.as_str()));
        let staging = self.layout.unique_in(self.layout.staging_dir(), name);
        let git_ref = parse_ref(spec.git_ref)?;
        // A shaped clone fetches less than a mirror would hold: no mirror.
        let mirror = self
            .mirror_key(spec.network, url)
            .filter(|_| !spec.shaped() && self.uses_mirror(depth, remote));
        let cloned = match mirror {
            Some(key) => self.clone_through_mirror(&key, url, git_ref.as_ref(), remote, &staging),
            None if spec.shaped() => git::clone_shaped(
                url,
                git_ref.as_ref(),
                depth,
                spec.filter,
                spec.sparse,
                remote,
                &staging,
            )
            .map_err(Error::from),
            None => git::clone(url, git_ref.as_ref(), depth, remote, &staging).map_err(Error::from),
        }
        .and_then(|head| {
            self.add_extras(&staging, url, remote, spec.extras)?;
            git::record_prepared_by(&staging, remote)?;
            Ok(head)
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
                return Err(Error::insufficient_storage(format!(
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
        self.keep_prepared_index(name);
        Ok((head, size))
    }

    /// Fetch `spec`'s ref, check it out, hard-reset and clean `repo/` in
    /// place, then add its extras. A checkout another principal prepared is
    /// refused (the policy clones afresh). Requires `name`'s lock.
    pub fn update_workspace(
        &self,
        name: &WorkspaceName,
        spec: &CheckoutSpec<'_>,
        remote: &Remote,
    ) -> Result<(String, u64)> {
        let CheckoutSpec { url, depth, .. } = *spec;
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        let timer = self.metrics.start(Operation::Update, Some(name.as_str()));
        let git_ref = parse_ref(spec.git_ref)?;
        let repo = self.layout.repo_dir(name);
        // What another principal's prepare left (submodules, a job's
        // branches and objects) is not this caller's to see. A clone the
        // original tool left (no workspace.json, no principal recorded)
        // is adopted as it is.
        let adopt_unrecorded = !self.layout.metadata_path(name).exists();
        // A clone with another filter holds other objects than asked: it
        // is cloned afresh. A sparse one, or a shaped request, goes
        // through git's command line.
        let shape = git::shape_of(&repo);
        let updated = self
            .restore_prepared_index(name)
            .and_then(|()| {
                git::check_prepared_by(&repo, remote, adopt_unrecorded).map_err(Error::from)
            })
            .and_then(|()| {
                let updated = match shape.filter.as_deref() == spec.filter {
                    false => Err(git::GitError::other(format!(
                        "the checkout was cloned with filter {}, and {} is asked; it is cloned \
                     afresh",
                        shape.filter.as_deref().unwrap_or("none"),
                        spec.filter.unwrap_or("none")
                    ))),
                    true if spec.shaped() || shape.sparse => git::update_shaped(
                        &repo,
                        url,
                        git_ref.as_ref(),
                        depth,
                        spec.sparse,
                        &shape,
                        spec.keep,
                        remote,
                    ),
                    true => git::update(&repo, url, git_ref.as_ref(), depth, spec.keep, remote),
                };
                updated.map_err(Error::from)
            })
            .and_then(|u| {
                self.add_extras(&repo, url, remote, spec.extras)?;
                git::record_prepared_by(&repo, remote)?;
                self.keep_prepared_index(name);
                Ok(u)
            });
        if let Err(e) = &updated {
            timer.fail(e);
        }
        updated
    }

    /// Keep a copy of the index this prepare wrote outside the checkout
    /// (`index.prepared`, with the index's modification time, which git's
    /// racy-clean rule reads): its stat data is what the next prepare
    /// judges the working tree by, and `.git/index` is the job's to
    /// rewrite (K17 in RELIABILITY.md). Best effort: without a copy the
    /// next prepare trusts `.git/index`, as before.
    fn keep_prepared_index(&self, name: &WorkspaceName) {
        let index = self.layout.repo_dir(name).join(".git").join("index");
        let kept = self.layout.prepared_index_path(name);
        let (Ok(bytes), Ok(written)) = (
            std::fs::read(&index),
            std::fs::metadata(&index).and_then(|m| m.modified()),
        ) else {
            let _ = std::fs::remove_file(&kept);
            return;
        };
        let same = std::fs::metadata(&kept).is_ok_and(|m| m.modified().ok() == Some(written))
            && std::fs::read(&kept).is_ok_and(|k| k == bytes);
        if same {
            return;
        }
        let saved = crate::adapter::fs::write_atomically(&kept, &bytes).and_then(|()| {
            std::fs::File::options()
                .write(true)
                .open(&kept)?
                .set_modified(written)
        });
        if let Err(e) = saved {
            tracing::warn!(workspace = %name, error = %e, "could not keep a copy of the index");
            let _ = std::fs::remove_file(&kept);
        }
    }

    /// Put the index the last prepare wrote back in place when
    /// `.git/index`'s bytes differ from it (a job's `git add`, a `git
    /// status` that refreshed it, or a hand-written one carrying a
    /// tampered file's stat data), so
    /// the update judges every tracked file by the host's stat data.
    ///
    /// Written beside the copy, outside the checkout, and renamed into
    /// the git directory (nothing is opened inside it for writing), with
    /// the copy's modification time. A copy that cannot be put back fails
    /// the update (the checkout is cloned afresh): the job's index is
    /// never trusted, nor kept as the next copy.
    fn restore_prepared_index(&self, name: &WorkspaceName) -> Result<()> {
        let kept = self.layout.prepared_index_path(name);
        let Ok(kept_meta) = std::fs::symlink_metadata(&kept) else {
            return Ok(());
        };
        let git_dir = self.layout.repo_dir(name).join(".git");
        // Only into a git directory of its own holding no link (the
        // update refuses those and the checkout is cloned afresh).
        if !std::fs::symlink_metadata(&git_dir).is_ok_and(|m| m.is_dir())
            || git::link_or_special_in_git_dir(&git_dir).is_some()
        {
            return Ok(());
        }
        let index = git_dir.join("index");
        let failed = |e: std::io::Error| {
            Error::filesystem(format!(
                "cannot put the prepared index back over {} ({e}); the checkout is cloned afresh",
                index.display()
            ))
        };
        if !kept_meta.is_file() {
            return Err(failed(std::io::Error::other(
                "index.prepared is not a file",
            )));
        }
        let bytes = std::fs::read(&kept).map_err(failed)?;
        // The job's index is read only when it could be the copy (its
        // length), so a huge sparse file costs nothing.
        let same = std::fs::symlink_metadata(&index)
            .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
            && std::fs::read(&index).is_ok_and(|now| now == bytes);
        if same {
            return Ok(());
        }
        tracing::info!(workspace = %name, "the job changed .git/index; the prepared one is put back");
        let staged = self.layout.workspace_dir(name).join("index.restoring");
        crate::adapter::fs::write_atomically(&staged, &bytes)
            .and_then(|()| {
                let written = kept_meta.modified()?;
                std::fs::File::options()
                    .write(true)
                    .open(&staged)?
                    .set_modified(written)
            })
            .and_then(|()| std::fs::rename(&staged, &index))
            .map_err(|e| {
                let _ = std::fs::remove_file(&staged);
                failed(e)
            })
    }

    /// Submodules and LFS objects into the checkout at `repo`, as asked,
    /// within the extras limits (count, bytes, time). Submodules that a
    /// failure stopped half-way are taken out again, so the checkout is the
    /// superproject alone rather than half of its submodules.
    fn add_extras(
        &self,
        repo: &std::path::Path,
        url: &str,
        remote: &Remote,
        extras: Extras,
    ) -> Result<()> {
        let budget = git::ExtrasBudget::new(self.config.extras);
        if extras.submodules {
            let updated = git::update_submodules(
                repo,
                url,
                remote,
                &|raw: &str| self.checked_submodule_url(raw),
                &budget,
            );
            match updated {
                Ok(count) => {
                    tracing::info!(repo = %repo.display(), count, "submodules checked out")
                }
                Err(e) => {
                    if let Err(undo) = git::remove_submodules(repo) {
                        tracing::warn!(repo = %repo.display(), error = %undo, "could not take half-done submodules out");
                    }
                    return Err(e.into());
                }
            }
        }
        if extras.lfs {
            let bytes = git::lfs_pull(repo, url, remote, &budget, &|u: &url::Url| {
                self.checked_lfs_url(u)
            })?;
            tracing::info!(repo = %repo.display(), bytes, "LFS objects checked out");
        }
        Ok(())
    }

    /// A URL the repository's content chose (a submodule's), held to the
    /// rules a clone URL is. Any credential in it is dropped.
    fn checked_extra_url(&self, raw: &str) -> Result<crate::clone_url::CloneUrl> {
        let config = &self.config;
        let url = crate::clone_url::CloneUrl::parse(raw, config.allow_local_urls)?;
        url.check_host(&config.allowed_hosts)?;
        Ok(url)
    }

    /// A submodule's URL (already resolved), held to the rules a clone URL
    /// is: the repository's content chose it, not the caller.
    fn checked_submodule_url(&self, raw: &str) -> std::result::Result<String, String> {
        self.checked_extra_url(raw)
            .and_then(|u| {
                u.check_addresses(self.config.allow_private_networks)
                    .map(|()| u)
            })
            .map(|u| u.public)
            .map_err(|e| format!("refused: {}", e.message()))
    }

    /// An LFS URL (the batch endpoint, or a download the LFS server
    /// named), held to the clone URL's rules; the addresses to connect to.
    fn checked_lfs_url(
        &self,
        url: &url::Url,
    ) -> std::result::Result<Vec<std::net::SocketAddr>, String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("refused: {} is not an http(s) URL", url.scheme()));
        }
        self.checked_extra_url(url.as_str())
            .and_then(|u| u.resolve_checked(self.config.allow_private_networks))
            .map_err(|e| format!("refused: {}", e.message()))
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

    /// The default branch the push target `url` advertises to `remote`'s
    /// credential, behind the git queue. Requires `name`'s lock.
    pub fn push_target_default_branch(
        &self,
        name: &WorkspaceName,
        url: &str,
        remote: &Remote,
    ) -> Result<Option<String>> {
        let _slot = self
            .git_queue
            .enter(remote.host.as_deref().unwrap_or_default())?;
        git::default_branch_at(&self.layout.repo_dir(name), url, remote).map_err(Error::from)
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
        .map_err(|e| Error::invalid_input(format!("{e}; see `ref` in the API documentation")))
}
