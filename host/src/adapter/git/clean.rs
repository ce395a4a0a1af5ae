//! The clean that ends every update (`git clean -ffdx`, but for the
//! ignored paths the policy keeps): one walk of the working tree against
//! the index, no file stat'ed or hashed (a status scan would do that for
//! all of them a second time right after the reset).
//!
//! Two passes, so that nothing a job wrote decides what is kept:
//!
//! 1. Walk: a tracked path is kept, a folder of tracked paths entered,
//!    `.git` left alone. A path the policy's list covers (not a link, not
//!    a `.gitignore` or `.gitattributes`) is set aside; an untracked folder
//!    on the way to a kept path is entered; anything else is deleted whole
//!    (links as links), untracked `.gitignore` files included.
//! 2. Judge what was set aside: with the job's ignore files gone, only the
//!    commit's rules (and `info/exclude`, which the hygiene reset) say what
//!    git ignores. An ignored path is kept whole; a folder that is not
//!    ignored itself (`target/**` ignores what is inside) is looked into;
//!    anything else goes. Folders entered for a kept path are removed when
//!    nothing was kept in them.

use super::keep::KeepIgnored;
use super::{GitError, SKIP_WORKTREE};
use git2::Repository;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a clean left: bytes of tracked files and of kept ignored paths.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cleaned {
    /// The tracked regular files on disk (the working tree's size once it
    /// is clean, but for what was kept).
    pub tracked_bytes: u64,
    /// The ignored paths `keep` named and the clean left.
    pub kept_bytes: u64,
}

/// Files that change how git reads the paths beside them: never kept, so
/// a job's rules neither decide what is ignored nor rewrite tracked files
/// on the next reset.
fn is_rules_file(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.eq_ignore_ascii_case(b".gitignore") || name.eq_ignore_ascii_case(b".gitattributes")
}

/// Remove untracked and ignored files and folders from the checkout at
/// `repo_dir`, but for the ignored paths `keep` names (see the module
/// docs). In a sparse checkout the paths it leaves off the disk count as
/// untracked, so what a job put outside the sparse set goes.
pub(super) fn clean(
    repo: &Repository,
    repo_dir: &Path,
    keep: &KeepIgnored,
) -> Result<Cleaned, GitError> {
    clean_passes(repo, repo_dir, keep, true)
}

/// The first pass alone, before a reset writes anything: what `keep`
/// does not cover goes (a job's `.gitattributes` would rewrite what the
/// reset writes), what it covers stays for the clean after the reset to
/// judge by the commit's rules (a `.gitignore` the job changed is only
/// written back by that reset).
pub(super) fn clean_before_reset(
    repo: &Repository,
    repo_dir: &Path,
    keep: &KeepIgnored,
) -> Result<(), GitError> {
    clean_passes(repo, repo_dir, keep, false).map(drop)
}

fn clean_passes(
    repo: &Repository,
    repo_dir: &Path,
    keep: &KeepIgnored,
    judge: bool,
) -> Result<Cleaned, GitError> {
    let sparse = super::shape_of(repo_dir).sparse;
    let index = repo
        .index()
        .map_err(|e| GitError::new("reading the index", e))?;
    let mut tracked: HashSet<Vec<u8>> = HashSet::with_capacity(index.len());
    let mut tracked_dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut cleaned = Cleaned::default();
    for entry in index.iter() {
        if sparse && entry.flags_extended & SKIP_WORKTREE != 0 {
            continue;
        }
        if entry.mode & 0o170000 == 0o100000 {
            cleaned.tracked_bytes += u64::from(entry.file_size);
        }
        let path = entry.path;
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                tracked_dirs.insert(path[..i].to_vec());
            }
        }
        tracked.insert(path);
    }

    let mut set_aside: Vec<PathBuf> = Vec::new();
    let mut entered: Vec<PathBuf> = Vec::new();
    let mut walk = walkdir::WalkDir::new(repo_dir)
        .min_depth(1)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| GitError::other(format!("walking the working tree: {e}")))?;
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
        if !keep.is_empty() && !entry.path_is_symlink() {
            if keep.covers(&rel) && !is_rules_file(entry.file_name()) {
                if is_dir {
                    walk.skip_current_dir();
                }
                set_aside.push(entry.into_path());
                continue;
            }
            if is_dir && keep.leads_to(&rel) {
                entered.push(entry.into_path());
                continue;
            }
        }
        if is_dir {
            walk.skip_current_dir();
        }
        remove(entry.path(), is_dir)?;
    }

    if !judge {
        return Ok(cleaned);
    }
    while let Some(path) = set_aside.pop() {
        let rel = relative_bytes(&path, repo_dir);
        if ignored(repo, &rel) {
            cleaned.kept_bytes += crate::adapter::fs::dir_size(&path);
            continue;
        }
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if !is_dir {
            remove(&path, false)?;
            continue;
        }
        // Not ignored itself: each thing inside is judged on its own, the
        // folder's own rules files gone first.
        let children: Vec<std::fs::DirEntry> = std::fs::read_dir(&path)
            .map_err(|e| GitError::io("reading", &path, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| GitError::io("reading", &path, e))?;
        for child in children {
            let link_or_rules = child.file_type().is_ok_and(|t| t.is_symlink())
                || is_rules_file(&child.file_name());
            if link_or_rules {
                remove(&child.path(), false)?;
            } else {
                set_aside.push(child.path());
            }
        }
        entered.push(path);
    }
    // Deepest first; a folder that still holds something stays.
    entered.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for dir in entered {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(cleaned)
}

fn remove(path: &Path, is_dir: bool) -> Result<(), GitError> {
    let removed = if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|e| GitError::io("removing untracked", path, e))
}

/// Whether git ignores the untracked path `rel` (`.gitignore` files,
/// `info/exclude`). Unreadable rules ignore nothing: the path goes.
fn ignored(repo: &Repository, rel: &[u8]) -> bool {
    std::str::from_utf8(rel)
        .ok()
        .and_then(|rel| repo.is_path_ignored(rel).ok())
        .unwrap_or(false)
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
