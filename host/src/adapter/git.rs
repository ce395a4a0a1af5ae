//! git through libgit2 (git2): inspect, clone, update (fetch + hard reset +
//! clean) and stale-lock clearing. No git binary is needed.
//!
//! Credentials never enter a URL handed to libgit2: it is given the clean
//! URL, so `remote.origin.url` on disk is clean too, and asks for the
//! credential through its callback.

use crate::clone_url::Credentials;
use git2::build::{CheckoutBuilder, RepoBuilder};
use git2::{
    AutotagOption, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, RemoteCallbacks,
    Repository, ResetType,
};
use std::cell::Cell;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Transfer progress of a clone or fetch, as libgit2 reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Objects the remote will send.
    pub total_objects: usize,
    /// Objects received so far.
    pub received_objects: usize,
    /// Objects indexed so far.
    pub indexed_objects: usize,
    /// Bytes received so far.
    pub received_bytes: usize,
}

/// A callback for transfer progress (for example a progress bar).
pub type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// What a clone or update needs besides the repository: credentials, where
/// they may go, a progress observer and the transfer's bounds.
#[derive(Clone, Default)]
pub struct Remote {
    /// The credential taken out of the clone URL, if any.
    pub credentials: Option<Credentials>,
    /// The clone URL's host: the only host any credential is offered to.
    pub host: Option<String>,
    /// The deployment allows the service's own credentials (ssh-agent keys,
    /// the Windows logon) for this host (`WORKSPACE_SERVICE_CREDENTIAL_HOSTS`).
    pub service_credentials: bool,
    /// Called as objects arrive.
    pub progress: Option<Arc<ProgressFn>>,
    /// The URL is a local path: libgit2 cannot fetch shallow over it.
    pub local: bool,
    /// Cancellation and size bounds, checked as data arrives.
    pub guard: Option<Arc<TransferGuard>>,
}

/// Why a transfer was stopped by the host rather than failed by git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The service is shutting down.
    Cancelled,
    /// The transfer grew past the size limit, or would leave too little
    /// free space; the message says which.
    Storage(String),
}

/// Bounds a clone or fetch is held to while data arrives: a cancellation
/// flag (shutdown), a size limit and a free-space floor.
#[derive(Debug)]
pub struct TransferGuard {
    /// Set to stop every transfer (the service is shutting down).
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Largest number of bytes a transfer may receive.
    pub max_bytes: Option<u64>,
    /// Free bytes the disk at `disk` must keep.
    pub min_free_bytes: u64,
    /// A folder on the disk workspaces are written to.
    pub disk: std::path::PathBuf,
    stopped: parking_lot::Mutex<Option<Stop>>,
    next_free_check: std::sync::atomic::AtomicU64,
}

/// How often (in received bytes) free space is measured during a transfer.
const FREE_CHECK_EVERY: u64 = 8 << 20;

impl TransferGuard {
    /// A guard with these bounds.
    pub fn new(
        cancel: Arc<std::sync::atomic::AtomicBool>,
        max_bytes: Option<u64>,
        min_free_bytes: u64,
        disk: std::path::PathBuf,
    ) -> Self {
        TransferGuard {
            cancel,
            max_bytes,
            min_free_bytes,
            disk,
            stopped: parking_lot::Mutex::new(None),
            next_free_check: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Check before any transfer starts; `Err` says why not to start.
    pub fn check_start(&self) -> Result<(), Stop> {
        self.check(0)
            .map_err(|()| self.stopped().unwrap_or(Stop::Cancelled))
    }

    /// Whether the transfer may go on having received `received` bytes;
    /// records why not.
    fn check(&self, received: u64) -> Result<(), ()> {
        use std::sync::atomic::Ordering;
        let stop = if self.cancel.load(Ordering::Relaxed) {
            Some(Stop::Cancelled)
        } else if let Some(max) = self.max_bytes.filter(|m| received > *m) {
            Some(Stop::Storage(format!(
                "the transfer passed the size limit of {} MB (WORKSPACE_MAX_WORKSPACE_MB)",
                max >> 20
            )))
        } else if received >= self.next_free_check.load(Ordering::Relaxed) {
            self.next_free_check
                .store(received + FREE_CHECK_EVERY, Ordering::Relaxed);
            crate::adapter::fs::free_space(&self.disk)
                .filter(|free| *free < self.min_free_bytes)
                .map(|free| {
                    Stop::Storage(format!(
                        "only {} MB would be left free on the workspace disk, under the {} MB \
                         floor (WORKSPACE_MIN_FREE_MB); free space or run a cleanup",
                        free >> 20,
                        self.min_free_bytes >> 20
                    ))
                })
        } else {
            None
        };
        match stop {
            Some(s) => {
                self.stopped.lock().get_or_insert(s);
                Err(())
            }
            None => Ok(()),
        }
    }

    /// Why the transfer was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped.lock().clone()
    }
}

/// A git failure with its class, for error mapping.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct GitError {
    /// What failed, with what to do about it.
    pub message: String,
    /// The remote, branch or repository does not exist.
    pub not_found: bool,
    /// The host stopped the transfer (shutdown, size, free space).
    pub stopped: Option<Stop>,
}

impl GitError {
    fn new(action: &str, e: git2::Error) -> Self {
        let hint = match (e.class(), e.code()) {
            (_, ErrorCode::Auth) => {
                "; check the credentials in the clone URL (a token needs read access)"
            }
            (_, ErrorCode::NotFound) => "; check the repository URL and the branch name",
            (ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl | ErrorClass::Ssh, _) => {
                "; check the network and the URL, then retry"
            }
            (ErrorClass::Odb | ErrorClass::Object | ErrorClass::Index, _) => {
                "; the repository is corrupt: it will be cloned afresh"
            }
            _ => "",
        };
        let not_found = e.code() == ErrorCode::NotFound
            || e.message().contains("not found")
            || e.message()
                .contains("does not appear to be a git repository");
        GitError {
            // libgit2 on Windows ends system messages with "\r\n".
            message: format!("{action}: {}{hint}", e.message().trim_end()),
            not_found,
            stopped: None,
        }
    }

    fn io(action: &str, path: &Path, e: std::io::Error) -> Self {
        GitError {
            message: format!("{action} {}: {e}", path.display()),
            not_found: false,
            stopped: None,
        }
    }

    /// A failed transfer: the host's reason if it stopped it, else git's.
    /// A network failure's detail (connection errors, HTTP status codes)
    /// goes to the log only: in an answer it would let a caller map hosts
    /// and ports through this service.
    ///
    /// libgit2 reports a refused connection or a failed read as an OS
    /// error, like a failed write to the disk: before any checkout
    /// (`checkout_started` false) it is the network's.
    fn transfer(action: &str, e: git2::Error, remote: &Remote, checkout_started: bool) -> Self {
        let network = match e.class() {
            ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl | ErrorClass::Ssh => true,
            ErrorClass::Os => !checkout_started,
            _ => false,
        } && e.code() != ErrorCode::Auth;
        let (detail, class) = (e.message().trim_end().to_string(), e.class());
        let mut err = GitError::new(action, e);
        if network && !err.not_found {
            tracing::warn!(action, detail, ?class, "git network failure");
            err.message = format!(
                "{action}: the remote could not be reached or did not answer as a git server \
                 (git's detail is in the service log); check the URL and the network, then retry"
            );
        }
        if let Some(stop) = remote.guard.as_ref().and_then(|g| g.stopped()) {
            err.message = match &stop {
                Stop::Cancelled => format!("{action}: stopped, the service is shutting down"),
                Stop::Storage(why) => format!("{action}: stopped, {why}"),
            };
            err.stopped = Some(stop);
        }
        err
    }
}

/// libgit2's process-wide network timeouts (connect, and each read or
/// write). 0 in libgit2 means "wait for ever": a tarpit would hold a
/// thread until the process dies.
pub fn set_network_timeouts(connect: std::time::Duration, io: std::time::Duration) {
    let ms = |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: plain integer options; libgit2 reads them at each connection.
    let result = unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect))
            .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(ms(io)))
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot set libgit2's network timeouts");
    }
}

/// The host of a URL libgit2 asks credentials for (`scheme://...` or
/// scp-like `user@host:path`), lowercased.
fn url_host(url: &str) -> Option<String> {
    if let Ok(u) = url::Url::parse(url)
        && let Some(h) = u.host_str()
    {
        return Some(h.trim_matches(['[', ']']).to_ascii_lowercase());
    }
    let (before, _) = url.split_once(':')?;
    Some(before.rsplit('@').next()?.to_ascii_lowercase())
}

/// What to answer libgit2's request for credentials for `url`.
///
/// The caller's credential goes only to the clone URL's own host; the
/// service's own (ssh-agent keys, the Windows logon via DEFAULT) only
/// where the deployment configured it. Anything else is refused, so a
/// redirect or a caller-chosen host never receives a secret.
fn credential_for(
    remote: &Remote,
    url: &str,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let refuse = |msg: String| Err(git2::Error::new(ErrorCode::Auth, ErrorClass::Http, msg));
    let asking = url_host(url);
    if asking.is_none() || asking != remote.host {
        return refuse(format!(
            "refusing to send credentials to {}, which is not the clone URL's host",
            asking.as_deref().unwrap_or("an unknown host")
        ));
    }
    if let Some(c) = &remote.credentials
        && allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
    {
        return Cred::userpass_plaintext(&c.username, &c.secret);
    }
    if allowed.contains(CredentialType::USERNAME) {
        return Cred::username(username_from_url.unwrap_or("git"));
    }
    if remote.service_credentials {
        if allowed.contains(CredentialType::SSH_KEY) {
            return Cred::ssh_key_from_agent(username_from_url.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::DEFAULT) {
            return Cred::default();
        }
    }
    refuse(
        "the remote asks for credentials: put a token in the clone URL \
         (https://TOKEN@host/owner/repo.git), or list the host in \
         WORKSPACE_SERVICE_CREDENTIAL_HOSTS to offer the service's own"
            .into(),
    )
}

/// What `inspect` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoState {
    /// The folder exists.
    pub exists: bool,
    /// It opens as a git repository.
    pub is_repository: bool,
    /// HEAD, its commit and tree, and the index are readable.
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
        let branch = head.shorthand().ok().map(str::to_string);
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

/// Lock files git leaves when it dies mid-operation, relative to `git_dir`.
/// While the host holds the workspace lock no git process of ours runs in
/// it, so any such file is stale.
pub fn stale_locks(git_dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(git_dir)
        .follow_links(false)
        .follow_root_links(false)
        .max_depth(6)
        .into_iter()
        .filter_entry(|e| e.file_name() != "objects")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(".lock"))
        .filter_map(|e| {
            e.path()
                .strip_prefix(git_dir)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect()
}

/// Delete the stale lock files in `repo_dir`'s git directory.
pub fn clear_stale_locks(repo_dir: &Path) -> Result<Vec<String>, GitError> {
    let git_dir = repo_dir.join(".git");
    let locks = stale_locks(&git_dir);
    for lock in &locks {
        let path = git_dir.join(lock);
        std::fs::remove_file(&path).map_err(|e| GitError::io("removing stale lock", &path, e))?;
    }
    Ok(locks)
}

fn fetch_options<'a>(remote: &'a Remote, depth: Option<u32>) -> FetchOptions<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let tries = Cell::new(0u32);
    callbacks.credentials(move |url, username_from_url, allowed| {
        // libgit2 asks again after a rejected credential: answer once, then fail.
        tries.set(tries.get() + 1);
        if tries.get() > 2 {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "authentication failed",
            ));
        }
        credential_for(remote, url, username_from_url, allowed)
    });
    let progress = remote.progress.clone();
    let guard = remote.guard.clone();
    if progress.is_some() || guard.is_some() {
        callbacks.transfer_progress(move |p| {
            if let Some(progress) = &progress {
                progress(Progress {
                    total_objects: p.total_objects(),
                    received_objects: p.received_objects(),
                    indexed_objects: p.indexed_objects(),
                    received_bytes: p.received_bytes(),
                });
            }
            // false aborts the transfer; the guard remembers why.
            guard
                .as_ref()
                .is_none_or(|g| g.check(p.received_bytes() as u64).is_ok())
        });
    }
    if let Some(guard) = remote.guard.clone() {
        // Also while the remote is still counting objects (no data yet).
        callbacks
            .sideband_progress(move |_| !guard.cancel.load(std::sync::atomic::Ordering::Relaxed));
    }
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks);
    // libgit2 follows an offsite redirect on the first request by default;
    // a redirect may not take the caller anywhere the allow-list did not check.
    fo.follow_redirects(git2::RemoteRedirect::None);
    if let Some(d) = depth.filter(|_| !remote.local) {
        fo.depth(i32::try_from(d).unwrap_or(i32::MAX));
    }
    fo
}

/// Clone `url` (clean, no credentials) at `branch` into `dest`, which must
/// not exist. Returns HEAD's commit.
pub fn clone(
    url: &str,
    branch: Option<&str>,
    depth: Option<u32>,
    remote: &Remote,
    dest: &Path,
) -> Result<String, GitError> {
    if depth.is_some() && remote.local {
        tracing::warn!(
            "depth ignored for a local URL: libgit2 cannot fetch shallow over the local transport"
        );
    }
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
    if let Some(stop) = remote.guard.as_ref().and_then(|g| g.check_start().err()) {
        let mut err = GitError::transfer(
            &format!("cloning {url}"),
            git2::Error::from_str("not started"),
            remote,
            false,
        );
        err.stopped.get_or_insert(stop);
        return Err(err);
    }
    let checkout_started = std::rc::Rc::new(Cell::new(false));
    let mut checkout = CheckoutBuilder::new();
    let started = checkout_started.clone();
    checkout.progress(move |_, _, _| started.set(true));
    builder.with_checkout(checkout);
    let repo = builder.clone(url, dest).map_err(|e| {
        GitError::transfer(&format!("cloning {url}"), e, remote, checkout_started.get())
    })?;
    head_commit(&repo)
}

/// Set `core.longpaths` in the repository's own config, unless set already.
///
/// On Windows, libgit2 (like Git for Windows) refuses work-tree paths over
/// 260 characters without it; with it, they are written through `\\?\`
/// paths. Anyone running Git for Windows in the workspace later inherits it.
/// Other systems ignore the setting.
fn enable_long_paths(repo: &Repository) -> Result<(), git2::Error> {
    let mut config = repo.config()?;
    if config.get_bool("core.longpaths").unwrap_or(false) {
        return Ok(());
    }
    config.set_bool("core.longpaths", true)
}

/// Fetch `branch` (or HEAD's branch) from `url`, point the local branch and
/// HEAD at it, hard-reset the working tree and remove untracked and ignored
/// files. Returns HEAD's commit and the checkout's size in bytes.
pub fn update(
    repo_dir: &Path,
    url: &str,
    branch: Option<&str>,
    depth: Option<u32>,
    remote: &Remote,
) -> Result<(String, u64), GitError> {
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening repository", e))?;
    // A previous user of the workspace may have left hooks or config that
    // run commands or redirect fetches (core.hooksPath, core.fsmonitor,
    // url.*.insteadOf, include.path...): back to what a clone has.
    reset_git_dir(&repo)?;
    // Clones made before this setting existed (or by the original tool).
    enable_long_paths(&repo).map_err(|e| GitError::new("setting core.longpaths", e))?;
    let branch = match branch {
        Some(b) => b.to_string(),
        None => repo
            .head()
            .ok()
            .and_then(|h| h.shorthand().ok().map(str::to_string))
            .ok_or_else(|| GitError {
                message: "no branch given and HEAD names none".into(),
                not_found: true,
                stopped: None,
            })?,
    };
    let current = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(str::to_string));
    if current.as_deref() != Some(url) {
        repo.remote_set_url("origin", url)
            .map_err(|e| GitError::new("setting origin URL", e))?;
    }
    let mut origin = repo
        .find_remote("origin")
        .map_err(|e| GitError::new("finding origin", e))?;
    let mut fo = fetch_options(remote, depth);
    fo.download_tags(AutotagOption::None);
    // Drop the tracking ref first: a fetch of a branch deleted upstream
    // succeeds without updating it, and a stale one would be checked out.
    let tracking = format!("refs/remotes/origin/{branch}");
    if let Ok(mut old) = repo.find_reference(&tracking) {
        old.delete()
            .map_err(|e| GitError::new("dropping the old tracking branch", e))?;
    }
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    if let Some(stop) = remote.guard.as_ref().and_then(|g| g.check_start().err()) {
        return Err(GitError {
            message: match &stop {
                Stop::Cancelled => "fetch not started: the service is shutting down".into(),
                Stop::Storage(why) => format!("fetch not started: {why}"),
            },
            not_found: false,
            stopped: Some(stop),
        });
    }
    origin
        .fetch(&[refspec.as_str()], Some(&mut fo), None)
        .map_err(|e| {
            GitError::transfer(&format!("fetching {branch} from {url}"), e, remote, false)
        })?;
    let target = repo
        .find_reference(&tracking)
        .and_then(|r| r.peel_to_commit())
        .map_err(|e| GitError {
            message: format!(
                "branch {branch} not found at {url} ({}); check the branch name",
                e.message()
            ),
            not_found: true,
            stopped: None,
        })?;
    let local_ref = format!("refs/heads/{branch}");
    let already_there = repo
        .head()
        .ok()
        .filter(|h| h.name().ok() == Some(local_ref.as_str()))
        .and_then(|h| h.target())
        == Some(target.id());
    repo.reference(&local_ref, target.id(), true, "fixsec-workspace: update")
        .map_err(|e| GitError::new("moving the local branch", e))?;
    repo.set_head(&local_ref)
        .map_err(|e| GitError::new("moving HEAD", e))?;
    // Nothing new upstream and nothing changed here: the reset (a full
    // checkout scan plus an index rewrite) would change nothing.
    if !(already_there && tracked_files_pristine(&repo, &target)) {
        let mut checkout = CheckoutBuilder::new();
        checkout.force();
        repo.reset(target.as_object(), ResetType::Hard, Some(&mut checkout))
            .map_err(|e| GitError::new("resetting the working tree", e))?;
    }
    let tracked_bytes = clean(&repo, repo_dir)?;
    let size = tracked_bytes + crate::adapter::fs::dir_size(repo.path());
    Ok((target.id().to_string(), size))
}

/// Config keys a reused clone keeps; every other key in `.git/config` is
/// removed (a previous user's `core.hooksPath`, `core.fsmonitor`,
/// `core.sshCommand`, `url.*.insteadOf`, `include.path`, filters...).
fn kept_config_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "core.repositoryformatversion"
            | "core.filemode"
            | "core.bare"
            | "core.logallrefupdates"
            | "core.ignorecase"
            | "core.precomposeunicode"
            | "core.symlinks"
            | "core.longpaths"
            | "extensions.objectformat"
            | "remote.origin.url"
            | "remote.origin.fetch"
    ) || (name.starts_with("branch.") && (name.ends_with(".remote") || name.ends_with(".merge")))
}

/// Remove hooks (all but git's `*.sample` files) and config keys a clone
/// would not have from the repository's git directory.
fn reset_git_dir(repo: &Repository) -> Result<(), GitError> {
    let hooks = repo.path().join("hooks");
    if let Ok(entries) = std::fs::read_dir(&hooks) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "sample") {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| GitError::io("removing a hook left in", &path, e))?;
        }
    }
    let path = repo.path().join("config");
    let config =
        git2::Config::open(&path).map_err(|e| GitError::new("opening the repository config", e))?;
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut foreign: Vec<String> = Vec::new();
    {
        let mut entries = config
            .entries(None)
            .map_err(|e| GitError::new("reading the repository config", e))?;
        while let Some(entry) = entries.next() {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.name() else { continue };
            if kept_config_key(name) {
                kept.push((
                    name.to_string(),
                    entry.value().unwrap_or_default().to_string(),
                ));
            } else {
                foreign.push(name.to_string());
            }
        }
    }
    drop(config);
    if foreign.is_empty() {
        return Ok(());
    }
    // Rebuilt from the kept entries (removing keys one by one would leave
    // their empty sections behind), then swapped in whole.
    let fresh = repo.path().join("config.fixsec-new");
    let _ = std::fs::remove_file(&fresh);
    {
        let mut rebuilt = git2::Config::open(&fresh)
            .map_err(|e| GitError::new("writing the repository config", e))?;
        for (name, value) in &kept {
            rebuilt
                .set_multivar(name, "^$", value)
                .map_err(|e| GitError::new(&format!("writing config {name}"), e))?;
        }
    }
    std::fs::rename(&fresh, &path).map_err(|e| GitError::io("replacing", &path, e))?;
    foreign.sort();
    foreign.dedup();
    tracing::info!(keys = ?foreign, "removed config left in a reused clone");
    Ok(())
}

/// Whether the index equals `commit`'s tree and every tracked file in the
/// working tree equals the index (stat data, and content where stat data
/// cannot tell). Untracked files do not count: the clean removes them.
fn tracked_files_pristine(repo: &Repository, commit: &git2::Commit) -> bool {
    let check = || -> Result<bool, git2::Error> {
        let index = repo.index()?;
        let tree = commit.tree()?;
        let staged = repo.diff_tree_to_index(Some(&tree), Some(&index), None)?;
        if staged.deltas().len() > 0 {
            return Ok(false);
        }
        let mut opts = git2::DiffOptions::new();
        opts.include_untracked(false)
            .include_ignored(false)
            .ignore_submodules(true);
        let unstaged = repo.diff_index_to_workdir(Some(&index), Some(&mut opts))?;
        Ok(unstaged.deltas().len() == 0)
    };
    check().unwrap_or(false)
}

/// Remove untracked and ignored files and folders (`git clean -ffdx`).
///
/// One walk of the working tree against the index: a tracked path is kept,
/// a folder holding tracked paths is entered, anything else is deleted
/// whole (links as links). No file is stat'ed or hashed, which a status
/// scan would do for all of them a second time right after the reset.
///
/// Returns the bytes of the tracked regular files (the working tree's size
/// once it is clean), from the same index read.
fn clean(repo: &Repository, repo_dir: &Path) -> Result<u64, GitError> {
    let index = repo
        .index()
        .map_err(|e| GitError::new("reading the index", e))?;
    let mut tracked: HashSet<Vec<u8>> = HashSet::with_capacity(index.len());
    let mut tracked_dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut tracked_bytes = 0u64;
    for entry in index.iter() {
        if entry.mode & 0o170000 == 0o100000 {
            tracked_bytes += u64::from(entry.file_size);
        }
        let path = entry.path;
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                tracked_dirs.insert(path[..i].to_vec());
            }
        }
        tracked.insert(path);
    }
    let mut walk = walkdir::WalkDir::new(repo_dir)
        .min_depth(1)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| GitError {
            message: format!("walking the working tree: {e}"),
            not_found: false,
            stopped: None,
        })?;
        let rel = relative_bytes(entry.path(), repo_dir);
        let is_dir = entry.file_type().is_dir();
        if rel == b".git" || tracked.contains(&rel) {
            // The git directory, a tracked file, or a submodule: keep, do not enter.
            if is_dir {
                walk.skip_current_dir();
            }
            continue;
        }
        if is_dir && tracked_dirs.contains(&rel) {
            continue;
        }
        let result = if is_dir {
            walk.skip_current_dir();
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
        result.map_err(|e| GitError::io("removing untracked", entry.path(), e))?;
    }
    Ok(tracked_bytes)
}

/// `path` relative to `root`, with `/` separators, as index paths are.
fn relative_bytes(path: &Path, root: &Path) -> Vec<u8> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        rel.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        rel.to_string_lossy().replace('\\', "/").into_bytes()
    }
}

/// Bytes of a clean checkout: the regular files the index records (after a
/// reset and clean the working tree is exactly those) plus the git
/// directory. Equal to walking the tree, without stat'ing every file.
pub fn checkout_size(repo_dir: &Path) -> Option<u64> {
    let repo = Repository::open(repo_dir).ok()?;
    let index = repo.index().ok()?;
    let files: u64 = index
        .iter()
        .filter(|e| e.mode & 0o170000 == 0o100000)
        .map(|e| u64::from(e.file_size))
        .sum();
    Some(files + crate::adapter::fs::dir_size(repo.path()))
}

fn head_commit(repo: &Repository) -> Result<String, GitError> {
    repo.head()
        .and_then(|h| h.peel_to_commit())
        .map(|c| c.id().to_string())
        .map_err(|e| GitError::new("reading HEAD", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(service_credentials: bool) -> Remote {
        Remote {
            credentials: Some(Credentials {
                username: "x-access-token".into(),
                secret: "SECRET".into(),
            }),
            host: Some("git.example".into()),
            service_credentials,
            ..Remote::default()
        }
    }

    /// Item 8: the service's own credentials (ssh-agent keys, the Windows
    /// logon) are offered only where the deployment said; the caller's
    /// only to the clone URL's host (item 3).
    #[test]
    fn credentials_go_only_where_they_belong() {
        let plain = CredentialType::USER_PASS_PLAINTEXT;
        let key = CredentialType::SSH_KEY;
        let logon = CredentialType::DEFAULT;
        let caller = remote(false);
        assert!(credential_for(&caller, "https://git.example/o/r.git", None, plain).is_ok());
        for (url, allowed) in [
            ("https://elsewhere.example/o/r.git", plain),
            ("https://git.example.evil/o/r.git", plain),
            ("ssh://git@git.example/o/r.git", key),
            ("https://git.example/o/r.git", logon),
            ("git@git.example:o/r.git", key),
        ] {
            let err = credential_for(&caller, url, Some("git"), allowed)
                .err()
                .unwrap_or_else(|| panic!("{url} {allowed:?} got a credential"));
            assert_eq!(err.code(), ErrorCode::Auth);
        }
        let trusted = remote(true);
        assert!(credential_for(&trusted, "https://git.example/o/r.git", None, logon).is_ok());
        // Never to another host, configured or not.
        assert!(credential_for(&trusted, "https://other.example/r.git", None, logon).is_err());
    }
}
