//! git through libgit2 (git2): inspect, clone, update (fetch + hard reset +
//! clean); git's command line (`cli.rs`, 2.39.4+) writes large checkouts on
//! every core and does partial clones and sparse workspaces (`partial.rs`),
//! which libgit2 cannot. Without a usable git, everything else still works
//! on libgit2 alone.
//!
//! Credentials never enter a URL handed to libgit2: it is given the clean
//! URL, so `remote.origin.url` on disk is clean too, and asks for the
//! credential through its callback (`remote.rs` decides which, and for
//! which host). `hygiene.rs` keeps a reused clone as a fresh one would be.

mod budget;
mod clean;
mod cli;
mod error;
mod hygiene;
mod keep;
mod lfs;
mod maintenance;
pub mod mirror;
mod partial;
mod pristine;
mod push;
mod refs;
mod remote;
mod submodules;

pub use lfs::{LfsUrlCheck, pull as lfs_pull};
pub use push::{default_branch_at, push};
pub use refs::GitRef;
pub use submodules::{UrlCheck, remove_submodules, resolve_url, update_submodules};

pub use budget::{ExtrasBudget, ExtrasLimits};
pub use cli::{GitCli, git_cli};
pub use error::{GitError, GitFailure, Stop};
pub use hygiene::{
    check_prepared_by, clear_stale_locks, link_or_special_in_git_dir, prepared_by,
    record_prepared_by, stale_locks,
};
pub use keep::{KeepIgnored, MAX_ENTRIES as MAX_KEPT_PATHS};
pub use maintenance::{Maintained, maintain as maintain_mirror};
pub use partial::{
    Shape, accept_shaped_repositories, check_ref, clone_shaped, parse_filter, parse_sparse,
    shape_of,
};
pub use remote::{Progress, ProgressFn, Remote, TransferGuard, set_network_timeouts};

use clean::clean;
use git2::build::{CheckoutBuilder, RepoBuilder};
use git2::{Repository, ResetType};
use hygiene::{enable_long_paths, reset_git_dir};
use remote::fetch_options;
use std::cell::Cell;
use std::path::Path;

/// What a checkout brings besides the repository's own files; both off
/// unless a prepare asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// Submodules, recursively.
    pub submodules: bool,
    /// Git LFS objects in place of their pointer files.
    pub lfs: bool,
}

/// What `inspect` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoState {
    /// The folder exists.
    pub exists: bool,
    /// It opens as a git repository.
    pub is_repository: bool,
    /// HEAD, its commit and its tree are readable (the index is not read
    /// here: a broken one fails the update, and the policy re-clones).
    pub healthy: bool,
    /// `remote.origin.url`.
    pub remote_url: Option<String>,
    /// HEAD's commit.
    pub head: Option<String>,
    /// HEAD's branch.
    pub branch: Option<String>,
    /// Lock files left behind, relative to `.git/`.
    pub stale_locks: Vec<String>,
    /// Why it is not healthy.
    pub problem: Option<String>,
}

/// Look at `repo_dir` without changing anything.
pub fn inspect(repo_dir: &Path) -> RepoState {
    let mut state = RepoState {
        exists: std::fs::symlink_metadata(repo_dir).is_ok(),
        ..RepoState::default()
    };
    if !state.exists {
        return state;
    }
    if std::fs::symlink_metadata(repo_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        // Never opened through: a reset and clean would act on the target.
        state.problem = Some("repo/ is a symbolic link".into());
        return state;
    }
    if !repo_dir.is_dir() {
        state.problem = Some("repo/ is not a folder".into());
        return state;
    }
    if !std::fs::symlink_metadata(repo_dir.join(".git")).is_ok_and(|m| m.is_dir()) {
        // A `.git` file or link names another repository's git directory.
        state.problem = Some("repo/.git is not a folder of its own".into());
        return state;
    }
    if let Some(link) = hygiene::link_or_special_in_git_dir(&repo_dir.join(".git")) {
        state.problem = Some(format!(
            "repo/.git/{link} is a symbolic link or a special file (git makes neither there; \
             the host would write through a link, and block on a FIFO)"
        ));
        return state;
    }
    let repo = match Repository::open_ext(
        repo_dir,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    ) {
        Ok(r) => r,
        Err(e) => {
            state.problem = Some(e.message().to_string());
            return state;
        }
    };
    state.is_repository = true;
    state.stale_locks = stale_locks(repo.path());
    state.remote_url = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(str::to_string));
    let check = || -> Result<(String, Option<String>), git2::Error> {
        let head = repo.head()?;
        let branch = head
            .is_branch()
            .then(|| head.shorthand().ok().map(str::to_string))
            .flatten();
        let commit = head.peel_to_commit()?;
        commit.tree()?;
        // The index is not loaded here (it is large and checksummed on every
        // load); a broken one makes the update fail, and the policy re-clones.
        Ok((commit.id().to_string(), branch))
    };
    match check() {
        Ok((head, branch)) => {
            state.healthy = true;
            state.head = Some(head);
            state.branch = branch;
        }
        Err(e) => state.problem = Some(e.message().to_string()),
    }
    state
}

/// Clone `url` (clean, no credentials) at `git_ref` (none: the remote's
/// default branch) into `dest`, which must not exist. Returns HEAD's commit.
///
/// A branch is cloned directly. Anything else (a tag, a commit, a pull
/// request's ref) is reached from a clone of the default branch by the
/// same fetch and checkout an update does; so is a short name that turns
/// out to be a tag.
pub fn clone(
    url: &str,
    git_ref: Option<&GitRef>,
    depth: Option<u32>,
    remote: &Remote,
    dest: &Path,
) -> Result<String, GitError> {
    if depth.is_some() && remote.local {
        tracing::warn!(
            "depth ignored for a local URL: libgit2 cannot fetch shallow over the local transport"
        );
    }
    let branch = git_ref.map(GitRef::branch_name);
    if let Some(Some(b)) = branch {
        match clone_branch(url, Some(b), depth, remote, dest) {
            Err(e) if e.is_not_found() && matches!(git_ref, Some(GitRef::Name(_))) => {
                // Perhaps a tag: libgit2 cleans up after itself, but be sure.
                let _ = std::fs::remove_dir_all(dest);
            }
            done => return done,
        }
    }
    let head = clone_branch(url, None, depth, remote, dest)?;
    match git_ref {
        None => Ok(head),
        Some(r) => update(dest, url, Some(r), depth, &KeepIgnored::none(), remote)
            .map(|(head, _)| head)
            .map_err(|mut e| {
                e.message = format!("cloning {url}: {}", e.message);
                e
            }),
    }
}

fn clone_branch(
    url: &str,
    branch: Option<&str>,
    depth: Option<u32>,
    remote: &Remote,
    dest: &Path,
) -> Result<String, GitError> {
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch_options(remote, depth));
    // Local paths: copy (or hard-link) the object store as `git clone` does
    // for them, rather than packing every object through the transport.
    builder.clone_local(git2::build::CloneLocal::Auto);
    // Set before the checkout, which happens inside the clone.
    builder.remote_create(|repo, name, url| {
        enable_long_paths(repo)?;
        repo.remote(name, url)
    });
    if let Some(b) = branch {
        builder.branch(b);
    }
    GitError::check_start(remote, &format!("cloning {url}"))?;
    let checkout_started = std::rc::Rc::new(Cell::new(false));
    let mut checkout = CheckoutBuilder::new();
    let started = checkout_started.clone();
    checkout.progress(move |_, _, _| started.set(true));
    // With a usable git, the files are written afterwards on every core.
    let parallel = git_cli().is_some();
    if parallel {
        checkout.dry_run();
    }
    builder.with_checkout(checkout);
    let repo = builder.clone(url, dest).map_err(|e| {
        GitError::transfer(&format!("cloning {url}"), e, remote, checkout_started.get())
    })?;
    let head = head_commit(&repo)?;
    if parallel {
        let commit = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(|e| GitError::new("reading HEAD", e))?;
        reset_hard(&repo, dest, &commit)?;
    }
    Ok(head)
}

/// Fetch `git_ref` (none: the remote's default branch, as `origin/HEAD`
/// recorded it) from `url`, check it out (a branch as the local branch,
/// anything else detached), hard-reset the working tree and remove
/// untracked and ignored files but the ignored paths `keep` names.
/// Returns HEAD's commit and the checkout's size in bytes.
pub fn update(
    repo_dir: &Path,
    url: &str,
    git_ref: Option<&GitRef>,
    depth: Option<u32>,
    keep: &KeepIgnored,
    remote: &Remote,
) -> Result<(String, u64), GitError> {
    let repo = open_for_update(repo_dir, url, remote)?;
    let wanted = &wanted_or_default(&repo, git_ref)?;
    let refs::Checkout { commit, branch } = refs::fetch(&repo, wanted, url, depth, remote)?;
    let target = repo
        .find_commit(commit)
        .map_err(|e| GitError::new("reading the fetched commit", e))?;
    let head = repo.head().ok();
    let already_there = head.as_ref().and_then(|h| h.target()) == Some(commit)
        && match &branch {
            Some(b) => {
                head.as_ref().and_then(|h| h.name().ok()) == Some(&*format!("refs/heads/{b}"))
            }
            None => repo.head_detached().unwrap_or(false),
        };
    drop(head);
    match &branch {
        Some(b) => {
            let local_ref = format!("refs/heads/{b}");
            repo.reference(&local_ref, commit, true, "fixsec-workspace: update")
                .map_err(|e| GitError::new("moving the local branch", e))?;
            repo.set_head(&local_ref)
                .map_err(|e| GitError::new("moving HEAD", e))?;
        }
        None => repo
            .set_head_detached(commit)
            .map_err(|e| GitError::new("detaching HEAD", e))?,
    }
    // Nothing new upstream and nothing changed here: the reset (a full
    // checkout scan plus an index rewrite) would change nothing. Else what
    // a job changed goes first, so the reset writes it whatever its stat
    // data says (pristine.rs), and so does what it left untracked: a
    // `.gitattributes` of its own would rewrite what the reset writes.
    let changed = pristine::changed_paths(&repo)?;
    let untouched = changed.as_ref().is_some_and(pristine::Changed::is_empty);
    if !(already_there && untouched && pristine::index_matches(&repo, &target)) {
        if let Some(changed) = &changed {
            changed.remove(repo_dir)?;
        }
        clean::clean_before_reset(&repo, repo_dir, keep)?;
        reset_hard(&repo, repo_dir, &target)?;
    }
    let cleaned = clean(&repo, repo_dir, keep)?;
    let size =
        cleaned.tracked_bytes + cleaned.kept_bytes + crate::adapter::fs::dir_size(repo.path());
    Ok((target.id().to_string(), size))
}

/// The checkout at `repo_dir`, ready for a fetch from `url`: its git
/// directory back to what a clone has (hooks, config, content overrides),
/// long paths on, and its origin `url` (a spelling of the same URL is
/// updated; any other remote is refused, so it is cloned afresh).
fn open_for_update(repo_dir: &Path, url: &str, remote: &Remote) -> Result<Repository, GitError> {
    if let Some(link) = hygiene::link_or_special_in_git_dir(&repo_dir.join(".git")) {
        return Err(GitError::other(format!(
            ".git/{link} is a symbolic link or a special file (git makes neither there; the \
             hygiene would act through a link, or block on a FIFO); the checkout is cloned \
             afresh rather than reused"
        )));
    }
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening repository", e))?;
    // A previous user of the workspace may have left hooks or config that
    // run commands or redirect fetches (core.hooksPath, core.fsmonitor,
    // url.*.insteadOf, include.path...): back to what a clone has.
    reset_git_dir(&repo, remote.mirror.as_deref())?;
    hygiene::clear_hidden_flags(&repo)?;
    // Clones made before this setting existed (or by the original tool).
    enable_long_paths(&repo).map_err(|e| GitError::new("setting core.longpaths", e))?;
    let current = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(str::to_string));
    // The objects here came from `current`: another URL (another tenant's
    // repository, perhaps) must not find them. Only a spelling of the same
    // URL (a trailing `/` or `.git`) is updated in place.
    match current.as_deref() {
        Some(c) if c == url => {}
        Some(c) if same_remote(c, url) => repo
            .remote_set_url("origin", url)
            .map_err(|e| GitError::new("setting origin URL", e))?,
        other => {
            return Err(GitError::other(format!(
                "the workspace holds a clone of {}, not of {url}; it is cloned afresh \
                 rather than reused",
                other.unwrap_or("no remote")
            )));
        }
    }
    Ok(repo)
}

/// [`update`] for a partial clone or a sparse workspace, through git's
/// command line: fetch `git_ref` (none: the default branch) with the
/// clone's own filter, make `sparse` the set on disk (none: the whole
/// tree; `shape` is the checkout's, read before the hygiene removes the
/// sparse patterns), check out, clean (but for what `keep` names; the
/// clean's first pass also runs before the checkout). Returns HEAD's
/// commit and the checkout's size.
#[allow(clippy::too_many_arguments)]
pub fn update_shaped(
    repo_dir: &Path,
    url: &str,
    git_ref: Option<&GitRef>,
    depth: Option<u32>,
    sparse: Option<&[String]>,
    shape: &Shape,
    keep: &KeepIgnored,
    remote: &Remote,
) -> Result<(String, u64), GitError> {
    let was_sparse = shape.sparse;
    let repo = open_for_update(repo_dir, url, remote)?;
    let wanted = &wanted_or_default(&repo, git_ref)?;
    // What a job left untracked goes before git writes anything (its own
    // `.gitattributes` would rewrite what the checkout writes), and again
    // after it, as the new commit's rules judge.
    clean::clean_before_reset(&repo, repo_dir, keep)?;
    let head = partial::update_shaped(&repo, repo_dir, wanted, depth, sparse, was_sparse, remote)?;
    let cleaned = clean(&repo, repo_dir, keep)?;
    // The index's files plus what was kept; a walk (when the index cannot
    // be read) counts both.
    let size = checkout_size(repo_dir)
        .map(|s| s + cleaned.kept_bytes)
        .unwrap_or_else(|| crate::adapter::fs::dir_size(repo_dir));
    Ok((head, size))
}

/// Put a copy of another checkout (made while a job may be working in it)
/// back to `head`, on `branch` when that is a branch here, else detached:
/// the copied lock files go, tracked files are reset (by git's command
/// line, which rewrites only files whose content differs, so a copy that
/// shares blocks keeps sharing them) and everything else is cleaned.
pub fn reset_copy(repo_dir: &Path, head: &str, branch: Option<&str>) -> Result<(), GitError> {
    let git = git_cli().ok_or_else(|| cli::needed("a copy for a second job"))?;
    if let Some(link) = hygiene::link_or_special_in_git_dir(&repo_dir.join(".git")) {
        return Err(GitError::other(format!(
            "the copy's .git/{link} is a symbolic link or a special file the first job left; \
             no copy is made"
        )));
    }
    clear_stale_locks(repo_dir)?;
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening the copy", e))?;
    // What the first job hid from git (skip-worktree, assume-unchanged) is
    // reset like any other tracked file.
    hygiene::clear_hidden_flags(&repo)?;
    let commit = git2::Oid::from_str(head)
        .and_then(|oid| repo.find_commit(oid))
        .map_err(|e| GitError::new("finding the prepared commit in the copy", e))?;
    let local = branch
        .map(|b| format!("refs/heads/{b}"))
        .filter(|r| repo.find_reference(r).is_ok());
    match local {
        Some(r) => repo
            .reference(
                &r,
                commit.id(),
                true,
                "fixsec-workspace: a copy for a second job",
            )
            .and_then(|_| repo.set_head(&r)),
        None => repo.set_head_detached(commit.id()),
    }
    .map_err(|e| GitError::new("moving the copy's HEAD", e))?;
    let run = cli::Run {
        action: "resetting the copy".into(),
        dir: repo_dir,
        remote: None,
        watch: None,
    };
    // The copied index's stat data names the source's files. A copy keeps
    // their modification times and sizes; its inode numbers and change
    // times are new. The copy's own config checks only what it kept, so
    // neither the reset here nor the job's first `git status` reads (or,
    // for the reset, writes again) every file: shared blocks stay shared.
    let config_path = repo_dir.join(".git").join("config");
    git2::Config::open(&config_path)
        .and_then(|mut c| {
            c.set_str("core.checkStat", "minimal")?;
            c.set_bool("core.trustctime", false)
        })
        .map_err(|e| GitError::new("writing the copy's config", e))?;
    // What the first job left untracked (its own `.gitattributes` would
    // rewrite what the reset writes) goes first.
    clean::clean_before_reset(&repo, repo_dir, &KeepIgnored::none())?;
    git.run(&run, &["reset", "--quiet", "--hard"])?;
    if shape_of(repo_dir).sparse {
        // The flags cleared above, set again from the sparse patterns.
        git.run(&run, &["sparse-checkout", "reapply"])?;
    }
    // A job may be writing its caches in the source while it is copied:
    // the copy keeps none of them.
    reread_index(&repo)?;
    clean(&repo, repo_dir, &KeepIgnored::none())?;
    Ok(())
}

/// `git_ref`, or the remote's default branch (as `origin/HEAD` recorded
/// it) when none is asked.
fn wanted_or_default(repo: &Repository, git_ref: Option<&GitRef>) -> Result<GitRef, GitError> {
    git_ref
        .cloned()
        .map_or_else(|| refs::default_branch(repo), Ok)
}

/// Files changed past which a reset is written by git's command line on
/// every core rather than by libgit2 on one.
const PARALLEL_RESET_FILES: usize = 1_000;

/// Reset the index and working tree to `target` (HEAD already names it):
/// a fresh checkout or a large change by git's command line with
/// `checkout.workers` on every core (libgit2 has no parallel checkout),
/// anything smaller, or everything when there is no usable git, by
/// libgit2. Local work only: every object is already here.
fn reset_hard(repo: &Repository, repo_dir: &Path, target: &git2::Commit) -> Result<(), GitError> {
    let large = || -> Result<bool, git2::Error> {
        let index = repo.index()?;
        if index.is_empty() {
            return Ok(true);
        }
        let diff = repo.diff_tree_to_index(Some(&target.tree()?), Some(&index), None)?;
        Ok(diff.deltas().len() > PARALLEL_RESET_FILES)
    };
    if let Some(git) = git_cli()
        && large().unwrap_or(false)
    {
        let run = cli::Run {
            action: "checking out the working tree".into(),
            dir: repo_dir,
            remote: None,
            watch: None,
        };
        git.run(
            &run,
            &["reset", "--quiet", "--hard", &target.id().to_string()],
        )?;
        return reread_index(repo);
    }
    let mut checkout = CheckoutBuilder::new();
    checkout.force();
    repo.reset(target.as_object(), ResetType::Hard, Some(&mut checkout))
        .map_err(|e| GitError::new("resetting the working tree", e))
}

/// URLs that differ only by a trailing `/` or `.git` name the same remote
/// (as the default policy judges them).
pub fn same_remote(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> &str {
        let u = u.trim_end_matches('/');
        u.strip_suffix(".git").unwrap_or(u)
    }
    norm(a) == norm(b)
}

/// The index entry flag of a path a sparse checkout leaves off the disk.
pub(super) const SKIP_WORKTREE: u16 = 1 << 14;

/// The index entry flag `git update-index --assume-unchanged` sets: git
/// then trusts the entry without looking at the file.
pub(super) const ASSUME_VALID: u16 = 0x8000;

/// Bytes of a clean checkout: the regular files the index records (after a
/// reset and clean the working tree is exactly those; a sparse checkout's
/// skipped paths are not on disk and not counted) plus the git
/// directory. Equal to walking the tree, without stat'ing every file.
pub fn checkout_size(repo_dir: &Path) -> Option<u64> {
    let repo = Repository::open(repo_dir).ok()?;
    let index = repo.index().ok()?;
    let files: u64 = index
        .iter()
        .filter(|e| e.mode & 0o170000 == 0o100000 && e.flags_extended & SKIP_WORKTREE == 0)
        .map(|e| u64::from(e.file_size))
        .sum();
    Some(files + crate::adapter::fs::dir_size(repo.path()))
}

/// libgit2 keeps the index it read before git's command line wrote a new
/// one: read it again.
fn reread_index(repo: &Repository) -> Result<(), GitError> {
    repo.index()
        .and_then(|mut index| index.read(true))
        .map_err(|e| GitError::new("reading the index git wrote", e))
}

fn head_commit(repo: &Repository) -> Result<String, GitError> {
    repo.head()
        .and_then(|h| h.peel_to_commit())
        .map(|c| c.id().to_string())
        .map_err(|e| GitError::new("reading HEAD", e))
}
