//! What a job changed in the tracked paths, judged before a reuse's
//! reset: whether the reset can be skipped, and what it must write again.
//!
//! On Unix this is git's own refresh (`ie_match_stat`): one `lstat` per
//! index entry, compared with the stat fields git compares (type, exec
//! bit, size, mtime, ctime, inode, owner; not the device), on up to four
//! cores; and every folder on a tracked path must be a real folder, a
//! submodule's place a folder or nothing. Elsewhere libgit2's diff names
//! what changed (no folder check). This runs on the libgit2 update path;
//! git's command line (shaped workspaces, copies) does its own refresh
//! and skips index paths outside the checkout itself.
//!
//! libgit2's diff of the index against the working tree read every
//! folder and stat'ed every entry on one thread (45 of a warm prepare's
//! 70 ms on the benchmark's 16,000-file checkout), and its checkout
//! trusts modification times: an edit that put the old time back
//! survived a reset, and a tracked folder swapped for a link to its moved
//! self lost its files to the clean. So what this finds changed is
//! removed before the reset, which then writes it from the commit.
//!
//! A racily clean entry (stamped in the index's own clock tick) is judged
//! by its content, as git does; anything else in doubt (a conflict, an
//! index flag) counts as changed: a wrong "changed" costs one file's
//! rewrite, never correctness. The index judged is the one the last
//! prepare wrote (the store puts it back when its bytes differ, K17).
//! Nothing is read or removed through a link: files below a folder that
//! is not a real folder are not looked at, the link itself is
//! removed. (A job still running while the next prepare holds the
//! workspace could swap a folder between the look and the removal; jobs
//! end with their lease, as for the clean.)

use super::GitError;
use git2::{Index, IndexEntry, Repository};
#[cfg(unix)]
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Tracked paths the working tree no longer holds as the index recorded
/// them, relative to the checkout.
#[derive(Debug, Default)]
pub(super) struct Changed {
    /// Non-folders (links, files) where a tracked folder or a
    /// submodule's place should be.
    not_folders: Vec<PathBuf>,
    /// Tracked files whose stat data differs, or is in doubt.
    files: Vec<PathBuf>,
}

impl Changed {
    /// Nothing changed: the working tree is the index.
    pub(super) fn is_empty(&self) -> bool {
        self.not_folders.is_empty() && self.files.is_empty()
    }

    /// Remove what changed, so the reset writes it from the commit
    /// (libgit2's checkout would keep a file whose time was put back).
    /// Links are removed as links; what is gone already is fine.
    pub(super) fn remove(&self, workdir: &Path) -> Result<(), GitError> {
        for rel in self.not_folders.iter().chain(&self.files) {
            // Only plain parts ([`changed_paths`] refused anything else).
            if !rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            let path = workdir.join(rel);
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(e) => Err(e),
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(GitError::io("removing a changed tracked path", &path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether the index records exactly `commit`'s tree (nothing staged).
pub(super) fn index_matches(repo: &Repository, commit: &git2::Commit) -> bool {
    let check = || -> Result<bool, git2::Error> {
        let index = repo.index()?;
        let tree = commit.tree()?;
        let staged = repo.diff_tree_to_index(Some(&tree), Some(&index), None)?;
        Ok(staged.deltas().len() == 0)
    };
    check().unwrap_or(false)
}

/// What changed in the tracked paths of `repo`'s working tree since its
/// index was written; None when that cannot be told (no index, no
/// working tree): the reset alone decides then.
///
/// An index naming a path no checkout can hold (absolute, empty, with an
/// empty, `.`, `..` or `.git` part: libgit2 reads `/etc/x` and `` from a
/// hand-written index) is an error, and the checkout is cloned afresh:
/// nothing is looked at or removed for it.
pub(super) fn changed_paths(repo: &Repository) -> Result<Option<Changed>, GitError> {
    let (Ok(index), Some(workdir)) = (repo.index(), repo.workdir()) else {
        return Ok(None);
    };
    if let Some(bad) = index.iter().find(|e| !checkout_path(&e.path)) {
        return Err(GitError::other(format!(
            "the index names {:?}, which is no path inside a checkout (a job rewrote \
             .git/index); the checkout is cloned afresh rather than reused",
            String::from_utf8_lossy(&bad.path)
        )));
    }
    Ok(changed_in(repo, workdir, &index))
}

/// Whether the index path `path` names a place inside the checkout: a
/// relative path of plain parts (none empty, `.`, `..` or `.git` in any
/// case), no NUL.
fn checkout_path(path: &[u8]) -> bool {
    !path.is_empty()
        && !path.contains(&0)
        && path.split(|b| *b == b'/').all(|part| {
            !part.is_empty() && part != b"." && part != b".." && !part.eq_ignore_ascii_case(b".git")
        })
}

/// The index entry flags that make a path's stat data meaningless here:
/// a merge stage, assume-valid, intent-to-add or skip-worktree.
fn unusual(entry: &IndexEntry) -> bool {
    const STAGE: u16 = 0x3000;
    const INTENT_TO_ADD: u16 = 1 << 13;
    entry.flags & (STAGE | super::ASSUME_VALID) != 0
        || entry.flags_extended & (INTENT_TO_ADD | super::SKIP_WORKTREE) != 0
}

#[cfg(unix)]
fn changed_in(repo: &Repository, workdir: &Path, index: &Index) -> Option<Changed> {
    use std::os::unix::fs::MetadataExt;
    let written = std::fs::metadata(repo.path().join("index")).ok()?;
    // An entry stamped at or after the index was written may have changed
    // within the same tick without its stat data showing it ("racily
    // clean", in git's words).
    let written = (written.mtime(), written.mtime_nsec());
    let entries: Vec<IndexEntry> = index.iter().collect();
    let mut changed = Changed::default();

    // Folders first, shallowest first; nothing below one that is not a
    // real folder is looked at (it would be read through a link).
    let mut folders: Vec<&[u8]> = entries
        .iter()
        .flat_map(|e| {
            let path = &e.path[..];
            path.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'/')
                .map(move |(i, _)| &path[..i])
        })
        .collect();
    folders.sort_unstable();
    folders.dedup();
    let mut bad: HashSet<&[u8]> = HashSet::new();
    for folder in folders {
        if below_any(folder, &bad) {
            continue;
        }
        let real = std::fs::symlink_metadata(joined(workdir, folder)).is_ok_and(|m| m.is_dir());
        if !real {
            bad.insert(folder);
            changed.not_folders.push(relative(folder));
        }
    }

    let same = |entry: &IndexEntry| {
        if unusual(entry) {
            return false;
        }
        let Ok(meta) = std::fs::symlink_metadata(joined(workdir, &entry.path)) else {
            return false;
        };
        let (mtime, ctime) = (entry.mtime, entry.ctime);
        let kind = match entry.mode & 0o170000 {
            0o100000 => {
                meta.file_type().is_file()
                    && (entry.mode & 0o100 != 0) == (meta.mode() & 0o100 != 0)
            }
            0o120000 => meta.file_type().is_symlink(),
            _ => false,
        };
        let stat_same = kind
            && meta.size() as u32 == entry.file_size
            && meta.mtime() as u32 == mtime.seconds() as u32
            && meta.mtime_nsec() as u32 == mtime.nanoseconds()
            && meta.ctime() as u32 == ctime.seconds() as u32
            && meta.ctime_nsec() as u32 == ctime.nanoseconds()
            && meta.ino() as u32 == entry.ino
            && meta.uid() == entry.uid
            && meta.gid() == entry.gid;
        let racy = (i64::from(mtime.seconds()), i64::from(mtime.nanoseconds())) >= written;
        // Racily clean (written in the index's own clock tick, which is a
        // few milliseconds): its content decides, as in git. A file with
        // a filter (CRLF, LFS) hashes otherwise and is written again.
        stat_same
            && (!racy
                || (meta.file_type().is_file()
                    && git2::Oid::hash_file(git2::ObjectType::Blob, joined(workdir, &entry.path))
                        .is_ok_and(|id| id == entry.id)))
    };
    let outside_bad = |e: &&IndexEntry| !below_any(&e.path, &bad);
    // A submodule is its own repository, its update its own; but its place
    // is a real folder or nothing (a link there led the submodule's
    // hygiene into another repository).
    for gitlink in entries
        .iter()
        .filter(|e| e.mode & 0o170000 == 0o160000)
        .filter(outside_bad)
    {
        let here = std::fs::symlink_metadata(joined(workdir, &gitlink.path));
        if here.is_ok_and(|m| !m.is_dir()) {
            changed.not_folders.push(relative(&gitlink.path));
        }
    }
    let looked_at: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| e.mode & 0o170000 != 0o160000)
        .filter(outside_bad)
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = looked_at.len().div_ceil(threads).max(1);
    let differ = |part: &[&IndexEntry]| -> Vec<PathBuf> {
        part.iter()
            .filter(|e| !same(e))
            .map(|e| relative(&e.path))
            .collect()
    };
    // A part whose thread cannot be started (a process limit) is done here.
    let found: Vec<Vec<PathBuf>> = std::thread::scope(|s| {
        let running: Vec<_> = looked_at
            .chunks(chunk)
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || differ(part))
                    .map_err(|_| part)
            })
            .collect();
        running
            .into_iter()
            .map(|t| match t {
                Ok(t) => t.join().ok(),
                Err(part) => Some(differ(part)),
            })
            .collect::<Option<Vec<_>>>()
    })?;
    changed.files = found.into_iter().flatten().collect();
    changed.files.dedup();
    Some(changed)
}

/// Elsewhere libgit2's diff of the index against the working tree names
/// the changed files.
#[cfg(not(unix))]
fn changed_in(repo: &Repository, _workdir: &Path, index: &Index) -> Option<Changed> {
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(false)
        .include_ignored(false)
        .ignore_submodules(true);
    let diff = repo
        .diff_index_to_workdir(Some(index), Some(&mut opts))
        .ok()?;
    let mut files: Vec<PathBuf> = diff
        .deltas()
        .filter_map(|d| d.old_file().path().map(Path::to_path_buf))
        .collect();
    files.extend(
        index
            .iter()
            .filter(unusual)
            .map(|e| PathBuf::from(String::from_utf8_lossy(&e.path).into_owned())),
    );
    Some(Changed {
        not_folders: Vec::new(),
        files,
    })
}

/// Whether the index path `path` is one of `folders` or below one.
#[cfg(unix)]
fn below_any(path: &[u8], folders: &HashSet<&[u8]>) -> bool {
    !folders.is_empty()
        && (folders.contains(path)
            || path
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'/' && folders.contains(&path[..i])))
}

/// The index path `rel` (`/` separated) as a relative path.
#[cfg(unix)]
fn relative(rel: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(rel))
}

/// `root` joined with the index path `rel`.
#[cfg(unix)]
fn joined(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(relative(rel))
}
