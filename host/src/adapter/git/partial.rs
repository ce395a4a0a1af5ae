//! Partial clones and sparse workspaces, through git's command line
//! ([`cli`](super::cli)): libgit2 can fetch neither a filtered pack nor
//! the blobs a filtered clone lacks, and has no sparse checkout.
//!
//! A shaped checkout is cloned by `git clone --filter --no-checkout`, made
//! sparse by `git sparse-checkout set --cone`, and written by `git reset
//! --hard`, which fetches the blobs the cone needs. On reuse the same
//! hygiene runs first (libgit2 opens such a repository: see
//! [`accept_shaped_repositories`]), then `git fetch`, the sparse set again
//! (or `disable` when the request has none) and `git checkout --force`;
//! the host's own clean follows (`clean` in the parent module), so the
//! policy's `keep-ignored` holds here too.

use super::cli::{Run, git_cli, needed};
use super::error::{GitError, GitFailure};
use super::refs::GitRef;
use super::remote::Remote;
use git2::Repository;
use std::path::Path;

/// The partial-clone filters a prepare may ask for.
pub fn parse_filter(filter: &str) -> Result<String, String> {
    let ok = match filter {
        "blob:none" | "tree:0" => true,
        f => f.strip_prefix("blob:limit=").is_some_and(|n| {
            let digits = n.trim_end_matches(['k', 'm', 'g']);
            !digits.is_empty()
                && digits.len() <= 12
                && digits.bytes().all(|b| b.is_ascii_digit())
                && n.len() - digits.len() <= 1
        }),
    };
    if ok {
        Ok(filter.to_string())
    } else {
        Err(format!(
            "filter {filter:?} is not one this host offers: use blob:none, tree:0 or \
             blob:limit=<n>[k|m|g]"
        ))
    }
}

/// Most directories a sparse prepare may name.
const MAX_SPARSE_DIRS: usize = 500;

/// The sparse directories of a prepare, checked (relative, no `..`, no
/// `.git`, no wildcard or control character, none starting with `-`) and
/// without trailing `/`.
pub fn parse_sparse(dirs: &[String]) -> Result<Vec<String>, String> {
    if dirs.is_empty() || dirs.len() > MAX_SPARSE_DIRS {
        return Err(format!(
            "sparse takes 1 to {MAX_SPARSE_DIRS} directories (omit it for the whole tree)"
        ));
    }
    let mut out = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let d = dir.trim_end_matches('/');
        let bad = d.is_empty()
            || d.len() > 1024
            || d.starts_with('/')
            || d.starts_with('-')
            || d.contains('\\')
            || d.chars()
                .any(|c| c.is_control() || matches!(c, '*' | '?' | '[' | ']' | '!' | '#'))
            || d.split('/')
                .any(|part| matches!(part, "" | "." | "..") || part.eq_ignore_ascii_case(".git"));
        if bad {
            return Err(format!(
                "sparse directory {dir:?} is not a plain relative directory path (like \
                 `pkg/api`): no leading `/` or `-`, no `..`, `.git`, wildcards or control \
                 characters"
            ));
        }
        out.push(d.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Let libgit2 open what git's command line makes: partial clones
/// (`extensions.partialclone`) beside the extensions it knows. Once per
/// process, before any repository is opened.
pub fn accept_shaped_repositories() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a process-wide option, set once before repositories are
        // opened by this host.
        if let Err(e) = unsafe { git2::opts::set_extensions(&["partialclone"]) } {
            tracing::warn!(error = %e, "libgit2 will not open partial clones");
        }
    });
}

/// What a checkout holds: the filter it was cloned with (from its
/// config), and whether it is sparse. Read before the hygiene, which
/// removes the sparse patterns (the update sets them again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// `remote.origin.partialclonefilter`, when the clone is partial.
    pub filter: Option<String>,
    /// `core.sparseCheckout` is on.
    pub sparse: bool,
}

/// The shape of the checkout at `repo_dir` (default: none, when it cannot
/// be read).
pub fn shape_of(repo_dir: &Path) -> Shape {
    let git_dir = repo_dir.join(".git");
    let read = |file: &str, key: &str| {
        git2::Config::open(&git_dir.join(file))
            .ok()
            .and_then(|c| c.get_string(key).ok())
    };
    let sparse = ["config", "config.worktree"]
        .iter()
        .any(|f| read(f, "core.sparsecheckout").is_some_and(|v| v == "true"));
    Shape {
        filter: read("config", "remote.origin.partialclonefilter"),
        sparse,
    }
}

/// The ref as git's command line takes it, for a shaped checkout: a
/// branch or tag name, or none (the default branch). Others are refused
/// before anything is written ([`check_ref`]).
fn ref_name(git_ref: Option<&GitRef>) -> Option<&str> {
    match git_ref {
        Some(GitRef::Name(n) | GitRef::Branch(n) | GitRef::Tag(n)) => Some(n),
        _ => None,
    }
}

/// Whether a shaped prepare can check out `git_ref`.
pub fn check_ref(git_ref: Option<&GitRef>) -> Result<(), String> {
    match git_ref {
        None | Some(GitRef::Name(_) | GitRef::Branch(_) | GitRef::Tag(_)) => Ok(()),
        Some(_) => Err(
            "filter and sparse take a branch or a tag as ref (or none, for the default \
             branch); prepare a commit id, pull request or refspec without them"
                .into(),
        ),
    }
}

/// Clone `url` into `dest` (which must not exist) with `filter` and only
/// `sparse` on disk, at `git_ref`. Returns HEAD's commit.
pub fn clone_shaped(
    url: &str,
    git_ref: Option<&GitRef>,
    depth: Option<u32>,
    filter: Option<&str>,
    sparse: Option<&[String]>,
    remote: &Remote,
    dest: &Path,
) -> Result<String, GitError> {
    let git = git_cli().ok_or_else(|| needed("a partial clone or a sparse workspace"))?;
    check_ref(git_ref).map_err(GitError::other)?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    let action = format!("cloning {url}");
    let filter_arg = filter.map(|f| format!("--filter={f}"));
    let depth_arg = depth.map(|d| format!("--depth={d}"));
    let mut args = vec!["clone", "--quiet", "--no-checkout", "--template="];
    args.extend(filter_arg.as_deref());
    args.extend(depth_arg.as_deref());
    if let Some(name) = ref_name(git_ref) {
        args.extend(["--branch", name]);
    }
    let dest_arg = dest.display().to_string();
    args.extend(["--", url, &dest_arg]);
    let run = Run {
        action: action.clone(),
        dir: parent,
        remote: Some(remote),
        watch: Some(dest.join(".git")),
    };
    git.run(&run, &args)
        .map_err(|e| not_found_ref(e, git_ref))?;
    // Blobs the cone needs arrive in the git directory; the working tree
    // is measured once it is written (walking it here would cost more
    // than the checkout).
    let run = Run { dir: dest, ..run };
    if let Some(dirs) = sparse {
        let mut args = vec!["sparse-checkout", "set", "--cone", "--"];
        args.extend(dirs.iter().map(String::as_str));
        git.run(&run, &args)?;
    }
    // HEAD names the branch (or the tag's commit, detached): write what
    // the cone holds of it, fetching those blobs.
    git.run(&run, &["reset", "--quiet", "--hard"])?;
    head_of(dest)
}

/// Fetch `git_ref` into the shaped checkout at `repo_dir` (its own filter
/// applies), check it out, make the sparse set `sparse` (none: the whole
/// tree, turning off the sparse checkout it had when `was_sparse`). The
/// git directory's hygiene has already run; the caller cleans. Returns
/// HEAD's commit.
pub fn update_shaped(
    repo: &Repository,
    repo_dir: &Path,
    git_ref: &GitRef,
    depth: Option<u32>,
    sparse: Option<&[String]>,
    was_sparse: bool,
    remote: &Remote,
) -> Result<String, GitError> {
    let git = git_cli().ok_or_else(|| needed("updating a partial clone or a sparse workspace"))?;
    check_ref(Some(git_ref)).map_err(GitError::other)?;
    let name = ref_name(Some(git_ref)).unwrap_or_default();
    let run = Run {
        action: format!("fetching {name}"),
        dir: repo_dir,
        remote: Some(remote),
        watch: Some(repo_dir.join(".git")),
    };
    let depth_arg = depth.map(|d| format!("--depth={d}"));
    let fetch = |spec: &str| {
        let mut args = vec!["fetch", "--quiet", "--prune", "--no-tags", "--force"];
        args.extend(depth_arg.as_deref());
        args.extend(["origin", spec]);
        git.run(&run, &args)
    };
    let branch = format!("+refs/heads/{name}:refs/remotes/origin/{name}");
    let tag = format!("+refs/tags/{name}:refs/tags/{name}");
    let target = match git_ref {
        GitRef::Tag(_) => fetch(&tag).map(|_| format!("refs/tags/{name}")),
        GitRef::Branch(_) => fetch(&branch).map(|_| format!("refs/remotes/origin/{name}")),
        _ => match fetch(&branch) {
            Ok(_) => Ok(format!("refs/remotes/origin/{name}")),
            Err(e) if e.failure == GitFailure::NotFound => {
                fetch(&tag).map(|_| format!("refs/tags/{name}"))
            }
            Err(e) => Err(e),
        },
    }
    .map_err(|e| not_found_ref(e, Some(git_ref)))?;
    let run = Run {
        action: format!("checking out {name}"),
        ..run
    };
    // The cone first, so the checkout fetches only the blobs it needs.
    match sparse {
        Some(dirs) => {
            let mut args = vec!["sparse-checkout", "set", "--cone", "--"];
            args.extend(dirs.iter().map(String::as_str));
            git.run(&run, &args)?;
        }
        None if was_sparse => {
            git.run(&run, &["sparse-checkout", "disable"])?;
        }
        None => {}
    }
    if target.starts_with("refs/remotes/") {
        git.run(
            &run,
            &["checkout", "--quiet", "--force", "-B", name, &target],
        )?;
    } else {
        git.run(
            &run,
            &["checkout", "--quiet", "--force", "--detach", &target],
        )?;
    }
    super::reread_index(repo)?;
    head_of(repo_dir)
}

/// A missing branch or tag, said as the libgit2 path says it.
fn not_found_ref(e: GitError, git_ref: Option<&GitRef>) -> GitError {
    match (e.failure == GitFailure::NotFound, ref_name(git_ref)) {
        (true, Some(name)) => GitError::not_found(format!(
            "{}; check the branch or tag name {name:?}",
            e.message
        )),
        _ => e,
    }
}

fn head_of(repo_dir: &Path) -> Result<String, GitError> {
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening the clone", e))?;
    repo.head()
        .and_then(|h| h.peel_to_commit())
        .map(|c| c.id().to_string())
        .map_err(|e| GitError::new("reading HEAD", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_the_ones_offered() {
        for ok in ["blob:none", "tree:0", "blob:limit=1m", "blob:limit=500"] {
            assert_eq!(parse_filter(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "blob:limit=",
            "blob:limit=1mm",
            "sparse:oid=abc",
            "combine:a+b",
            "--upload-pack=x",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sparse_directories_are_plain_relative_paths() {
        assert_eq!(
            parse_sparse(&["pkg/b/".into(), "pkg/a".into(), "pkg/a".into()]).unwrap(),
            ["pkg/a", "pkg/b"]
        );
        for bad in [
            "", "/etc", "../x", "a/../b", ".git", "a/.GIT/b", "-x", "a*", "a\\b", "a\nb",
        ] {
            assert!(parse_sparse(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(parse_sparse(&[]).is_err());
    }
}
