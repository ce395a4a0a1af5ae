//! Keeping a reused clone as a fresh one would be: stale lock files
//! cleared, hooks and config a previous user left removed,
//! `core.longpaths` set.

use super::GitError;
use git2::Repository;
use std::path::Path;

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
pub(super) fn reset_git_dir(repo: &Repository) -> Result<(), GitError> {
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
