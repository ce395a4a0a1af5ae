//! Keeping a reused clone as a fresh one would be: stale lock files
//! cleared, hooks, config and content overrides (replace refs, grafts,
//! attributes, foreign alternates) a previous user left removed,
//! `core.longpaths` set.

use super::GitError;
use super::remote::Remote;
use super::{ASSUME_VALID, SKIP_WORKTREE};
use git2::Repository;
use std::path::Path;

/// The first symbolic link or special file (a FIFO, a socket, a device)
/// in `git_dir` (relative to it), if any.
///
/// git makes none there. A FIFO at `index` or `config` would block the
/// prepare that reads it, with the workspace's lock held. And the host
/// writes and deletes inside the git
/// directory (config, index, hooks, `info/`, alternates): through a link a
/// job left (`hooks -> ../../..`) that would act on whatever it points at,
/// another tenant's workspace included. A checkout with one is not reused
/// ([`inspect`](super::inspect) calls it unhealthy; an update refuses it)
/// but cloned afresh, and the removal deletes links as links. The loose
/// object folders (`objects/ab/`) are not walked: git only reads there,
/// and every object read is checked against its id.
pub fn link_or_special_in_git_dir(git_dir: &Path) -> Option<String> {
    let loose = |name: &std::ffi::OsStr| {
        let name = name.as_encoded_bytes();
        name.len() == 2 && name.iter().all(u8::is_ascii_hexdigit)
    };
    walkdir::WalkDir::new(git_dir)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 2 && e.file_type().is_dir() && loose(e.file_name())))
        .filter_map(Result::ok)
        .find(|e| e.path_is_symlink() || !(e.file_type().is_file() || e.file_type().is_dir()))
        .map(|e| {
            e.path()
                .strip_prefix(git_dir)
                .unwrap_or(e.path())
                .to_string_lossy()
                .into_owned()
        })
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

/// Set `core.longpaths` in the repository's own config, unless set already.
///
/// On Windows, libgit2 (like Git for Windows) refuses work-tree paths over
/// 260 characters without it; with it, they are written through `\\?\`
/// paths. Anyone running Git for Windows in the workspace later inherits it.
/// Other systems ignore the setting.
pub(super) fn enable_long_paths(repo: &Repository) -> Result<(), git2::Error> {
    let mut config = repo.config()?;
    if config.get_bool("core.longpaths").unwrap_or(false) {
        return Ok(());
    }
    config.set_bool("core.longpaths", true)
}

/// Config keys a reused clone keeps; every other key in `.git/config` is
/// removed (a previous user's `core.hooksPath`, `core.fsmonitor`,
/// `core.sshCommand`, `url.*.insteadOf`, `include.path`, filters...).
fn kept_config_key(name: &str) -> bool {
    // Section and key names are case-insensitive, a subsection is not:
    // `remote.ORIGIN.url` is another remote than `origin`.
    let name = match (name.split_once('.'), name.rsplit_once('.')) {
        (Some((section, _)), Some((rest, key))) if rest.len() > section.len() => format!(
            "{}{}.{}",
            section.to_ascii_lowercase(),
            &rest[section.len()..],
            key.to_ascii_lowercase()
        ),
        _ => name.to_ascii_lowercase(),
    };
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
            // A partial clone's own (its filter, and where missing objects
            // come from: the origin, whose URL the update sets).
            | "remote.origin.promisor"
            | "remote.origin.partialclonefilter"
            | "extensions.partialclone"
            // A sparse checkout's (its settings live in config.worktree,
            // which the hygiene removes and the update writes again).
            | "extensions.worktreeconfig"
    ) || (name.starts_with("branch.") && (name.ends_with(".remote") || name.ends_with(".merge")))
}

/// Files in a git directory that change what git shows without changing
/// the objects: grafts rewrite parents, attributes pick filters and diff
/// drivers, exclude hides files from `status`, sparse-checkout hides paths,
/// HTTP alternates fetch objects from elsewhere. A fresh clone has none of
/// them (its `info/exclude` holds only comments).
const CONTENT_CHANGING_FILES: &[&str] = &[
    "info/grafts",
    "info/attributes",
    "info/exclude",
    "info/sparse-checkout",
    "config.worktree",
    "objects/info/http-alternates",
    // A commit graph names each commit's tree: a forged one makes `git
    // log`, `diff` and `status` lie.
    "objects/info/commit-graph",
    "objects/info/commit-graphs",
];

/// Remove what a previous user of a reused clone may have left that makes
/// git show other content than the commit's (replace refs, grafts,
/// attributes, excludes, foreign alternates), so `git show HEAD:f` and the
/// file on disk agree again. An alternates line is kept only where it
/// names the objects of `mirror` (compared by identity, so any spelling of
/// the base path): the one mirror this checkout's remote may borrow from.
/// A checkout that needed a dropped line fails its update for missing
/// objects, and is cloned afresh.
fn reset_content_overrides(repo: &Repository, mirror: Option<&Path>) -> Result<(), GitError> {
    let git_dir = repo.path();
    if git_dir.join("commondir").exists() {
        return Err(GitError::new(
            "checking the git directory",
            git2::Error::from_str(
                "it names another repository's (a commondir file): not a clone this host made",
            ),
        ));
    }
    let replaced: Vec<String> = repo
        .references_glob("refs/replace/*")
        .map_err(|e| GitError::new("listing replace references", e))?
        .flatten()
        .filter_map(|r| r.name().ok().map(str::to_string))
        .collect();
    for name in &replaced {
        if let Ok(mut r) = repo.find_reference(name) {
            r.delete()
                .map_err(|e| GitError::new("removing a replace reference", e))?;
        }
    }
    let mut removed: Vec<&str> = Vec::new();
    for file in CONTENT_CHANGING_FILES {
        let path = git_dir.join(file);
        if std::fs::symlink_metadata(&path).is_ok() {
            let gone = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.map_err(|e| GitError::io("removing", &path, e))?;
            removed.push(file);
        }
    }
    let lines = super::mirror::alternates_lines(git_dir);
    if !lines.is_empty() {
        let own = mirror.and_then(|m| super::mirror::folder_id(&m.join("objects")));
        let ours = |line: &String| {
            own.is_some()
                && super::mirror::folder_id(&super::mirror::alternate_path(git_dir, line)) == own
        };
        let kept: Vec<&String> = lines.iter().filter(|l| ours(l)).collect();
        if kept.len() != lines.len() {
            let file = git_dir.join("objects").join("info").join("alternates");
            let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
            let written = if text.is_empty() {
                std::fs::remove_file(&file)
            } else {
                std::fs::write(&file, text)
            };
            written.map_err(|e| GitError::io("rewriting", &file, e))?;
            removed.push("objects/info/alternates (foreign lines)");
        }
    }
    if !replaced.is_empty() || !removed.is_empty() {
        tracing::info!(replace_refs = ?replaced, files = ?removed, "removed content overrides left in a reused clone");
    }
    Ok(())
}

/// Clear the index flags that hide a tracked file from the reset: a job's
/// `update-index --assume-unchanged` or `--skip-worktree` would keep its
/// own content in a file the next prepare claims is the commit's. (A
/// sparse checkout's flags are set again by its update.) An index libgit2
/// cannot read is left to the update, which fails and is cloned afresh.
pub(super) fn clear_hidden_flags(repo: &Repository) -> Result<(), GitError> {
    let (Ok(mut index), Ok(odb)) = (repo.index(), repo.odb()) else {
        return Ok(());
    };
    // A partial clone's sparse checkout has entries whose blobs were never
    // fetched (libgit2 would refuse to add them again): those are the
    // sparse patterns' to set, and the shaped update sets them.
    let hidden: Vec<git2::IndexEntry> = index
        .iter()
        .filter(|e| e.flags & ASSUME_VALID != 0 || e.flags_extended & SKIP_WORKTREE != 0)
        .filter(|e| odb.exists(e.id))
        .collect();
    if hidden.is_empty() {
        return Ok(());
    }
    for mut entry in hidden {
        entry.flags &= !ASSUME_VALID;
        entry.flags_extended &= !SKIP_WORKTREE;
        index
            .add(&entry)
            .map_err(|e| GitError::new("clearing a hidden file's index flags", e))?;
    }
    index
        .write()
        .map_err(|e| GitError::new("writing the index", e))
}

/// Remove hooks (all but git's `*.sample` files), config keys a clone
/// would not have, and content overrides ([`reset_content_overrides`])
/// from the repository's git directory.
pub(super) fn reset_git_dir(repo: &Repository, mirror: Option<&Path>) -> Result<(), GitError> {
    reset_content_overrides(repo, mirror)?;
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
    // One value each for what names where objects come from: git's fetch
    // takes the first `remote.origin.url`, libgit2 (which checks it) the
    // last. The last stays; lazy fetches go to `origin` or nowhere.
    let single = |n: &str| {
        matches!(
            n.to_ascii_lowercase().as_str(),
            "remote.origin.url"
                | "remote.origin.promisor"
                | "remote.origin.partialclonefilter"
                | "extensions.partialclone"
        )
    };
    let mut seen = std::collections::HashSet::new();
    for i in (0..kept.len()).rev() {
        let (name, value) = &kept[i];
        let lower = name.to_ascii_lowercase();
        let dropped = (single(name) && !seen.insert(lower.clone()))
            || (lower == "extensions.partialclone" && value != "origin");
        if dropped {
            foreign.push(kept.remove(i).0);
        }
    }
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

/// The file in a checkout's git directory that names (by
/// [`Remote::principal_digest`]) who last prepared it.
const PREPARED_BY: &str = "fixsec-fetched-by";

/// The digest of the principal whose prepare last fetched what the
/// checkout at `repo_dir` holds, if recorded.
pub fn prepared_by(repo_dir: &Path) -> Option<String> {
    let marker = repo_dir.join(".git").join(PREPARED_BY);
    std::fs::read_to_string(marker)
        .ok()
        .map(|m| m.trim().to_string())
}

/// `Ok` when the checkout at `repo_dir` was last prepared by `remote`'s
/// principal (the same credential, under the base's principal key), or,
/// with `adopt_unrecorded`, when no principal is recorded at all (a clone
/// the original tool left). Anything else is an error that makes the
/// default policy clone afresh: a checkout holds more than its clone URL
/// serves (a job's local branches, reflogs, stashes and unreachable
/// objects; submodules, which may be other repositories and which libgit2
/// checks out without asking their remote when it has the commit), and
/// none of it may pass to another caller.
pub fn check_prepared_by(
    repo_dir: &Path,
    remote: &Remote,
    adopt_unrecorded: bool,
) -> Result<(), GitError> {
    match prepared_by(repo_dir) {
        None if adopt_unrecorded => Ok(()),
        Some(digest) if digest == remote.principal_digest() => Ok(()),
        _ => Err(GitError::other(
            "the checkout was last prepared with another credential; it is cloned afresh \
             rather than handed over",
        )),
    }
}

/// After a prepare succeeded: record that `remote`'s principal prepared
/// the checkout at `repo_dir` (see [`check_prepared_by`]).
pub fn record_prepared_by(repo_dir: &Path, remote: &Remote) -> Result<(), GitError> {
    let marker = repo_dir.join(".git").join(PREPARED_BY);
    crate::adapter::fs::write_atomically(&marker, remote.principal_digest().as_bytes())
        .map_err(|e| GitError::io("writing", &marker, e))
}
